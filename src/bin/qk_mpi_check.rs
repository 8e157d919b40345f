//! Checks `tp::MpiComm` on every rank; run it under `mpirun -np N` (`tests/mpi.rs` does, for 2
//! and 4 ranks):
//!
//! * every collective, with several chunk sizes (different on each rank), gives the values it
//!   should, and the same bits or the same error as [`LocalComm`] running the same calls in
//!   `N` threads of this process;
//! * mismatches (lengths, collectives, roots, a root outside the world) are errors on every
//!   rank, and the ranks stay in step afterwards;
//! * a column-parallel -> row-parallel MLP (dense and GPTQ weights) is bit-identical to the
//!   same MLP over `LocalComm`, and within 1e-5 (relative) of the single-device forward.
//!
//! Prints `rank R/N ok` per rank and exits 0; on a failure prints `rank R/N FAILED: ...` and
//! aborts the whole job (so no rank waits forever for one that gave up).

use half::f16;
use mpi::traits::Communicator;
use quant_kernels::error::TpError;
use quant_kernels::gptq::{GptqLayer, GptqLayout, ZeroFormat};
use quant_kernels::tp::{ColumnParallelLinear, Comm, LocalComm, MpiComm, RowParallelLinear};
use quant_kernels::{Error, FloatVec, Parallelism};
use quant_kernels::{QuantLinear, QuantWeight};
use std::time::Duration;

type Check = std::result::Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// SplitMix64, the generator of the in-process tests (`tests/common`).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// A random GPTQ layer (`k` inputs, `n` outputs, V1 zeros, f16 scales), as `tests/tp/layers.rs`.
fn gptq(k: usize, n: usize, bits: u8, g: i64, rng: &mut Rng) -> quant_kernels::Result<GptqLayer> {
    let layout = GptqLayout::new(k, n, bits, g)?;
    let (qr, qc) = layout.qweight_shape();
    let (zr, zc) = layout.qzeros_shape();
    Ok(GptqLayer {
        layout,
        format: ZeroFormat::V1,
        qweight: (0..qr * qc).map(|_| rng.next_u64() as i32).collect(),
        qzeros: (0..zr * zc).map(|_| rng.next_u64() as i32).collect(),
        scales: FloatVec::F16(
            (0..layout.groups() * n).map(|_| f16::from_f32(rng.f32_in(-0.02, 0.02))).collect(),
        ),
        g_idx: None,
        bias: None,
    })
}

/// Run `f(comm)` on every rank of an in-process group, one thread each.
fn on_local_ranks<T: Send>(world: usize, f: impl Fn(&LocalComm) -> T + Sync) -> Vec<T> {
    let ranks = LocalComm::group_with_timeout(world, Duration::from_secs(60));
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = ranks.into_iter().map(|c| s.spawn(move || f(&c))).collect();
        // A panic ends the job through the hook set in `main`.
        handles.into_iter().map(|h| h.join().expect("a LocalComm rank panicked")).collect()
    })
}

/// Bits of a result, so results compare exactly (NaN included).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

type Outcome = quant_kernels::Result<Vec<u32>>;

/// Test data of rank `r`: `len` values.
fn data(r: usize, len: usize, salt: usize) -> Vec<f32> {
    (0..len).map(|i| ((i * 7 + r * 13 + salt) % 101) as f32 * 0.37 - 11.0 + 1e-3 * r as f32).collect()
}

/// Values per rank of the all-gathers (some empty).
fn gather_len(r: usize, round: usize) -> usize {
    [3usize, 0, 17, 1, 40, 0, 9][(r + round) % 7]
}

/// The same sequence of collectives on every rank: results and errors, in order.
fn collectives(c: &dyn Comm) -> Vec<Outcome> {
    let (rank, n) = (c.rank(), c.world_size());
    let mut out: Vec<Outcome> = Vec::new();
    for (salt, len) in [(0usize, 1000usize), (5, 1), (9, 0), (3, 37)] {
        let mut v = data(rank, len, salt);
        out.push(c.all_reduce_sum(&mut v).map(|_| bits(&v)));
    }
    for round in 0..3 {
        let local = data(rank, gather_len(rank, round), round);
        out.push(c.all_gather(&local).map(|v| bits(&v)));
    }
    for root in 0..n {
        let mut v = data(rank, 23, root);
        out.push(c.broadcast(&mut v, root).map(|_| bits(&v)));
    }
    out.push(c.barrier().map(|_| Vec::new()));
    // Mismatches (with more than one rank): errors on every rank, then the ranks are in step.
    let mut v = vec![1.0; 4 + rank];
    out.push(c.all_reduce_sum(&mut v).map(|_| bits(&v)));
    let mut v = vec![1.0; 4 + rank % 2];
    out.push(c.broadcast(&mut v, 0).map(|_| bits(&v)));
    out.push(if rank == 0 {
        c.barrier().map(|_| Vec::new())
    } else {
        c.all_gather(&[1.0]).map(|v| bits(&v))
    });
    let mut v = vec![1.0; 3];
    out.push(c.broadcast(&mut v, rank % 2).map(|_| bits(&v)));
    let mut v = vec![1.0; 3];
    out.push(c.broadcast(&mut v, n).map(|_| bits(&v))); // the same bad root on every rank
    let mut v = data(rank, 50, 1);
    out.push(c.all_reduce_sum(&mut v).map(|_| bits(&v)));
    out
}

/// What [`collectives`] must return on `rank` of `n`, worked out without communication.
fn expected_collectives(rank: usize, n: usize) -> Vec<Outcome> {
    let sum = |len: usize, salt: usize| -> Vec<u32> {
        let mut s = data(0, len, salt);
        for r in 1..n {
            for (a, b) in s.iter_mut().zip(data(r, len, salt)) {
                *a += b;
            }
        }
        bits(&s)
    };
    let mut out: Vec<Outcome> = Vec::new();
    for (salt, len) in [(0usize, 1000usize), (5, 1), (9, 0), (3, 37)] {
        out.push(Ok(sum(len, salt)));
    }
    for round in 0..3 {
        out.push(Ok((0..n).flat_map(|r| bits(&data(r, gather_len(r, round), round))).collect()));
    }
    for root in 0..n {
        out.push(Ok(bits(&data(root, 23, root))));
    }
    out.push(Ok(Vec::new()));
    let first_other = |pred: &dyn Fn(usize) -> bool| (0..n).find(|&r| pred(r));
    // Lengths 4 + r: the first rank whose length differs from this rank's.
    out.push(match first_other(&|r| r != rank) {
        Some(r) => Err(Error::Tp(TpError::CommLength { rank: r, expected: 4 + rank, got: 4 + r })),
        None => Ok(bits(&[1.0; 4])),
    });
    out.push(match first_other(&|r| r % 2 != rank % 2) {
        Some(r) => Err(Error::Tp(TpError::CommLength { rank: r, expected: 4 + rank % 2, got: 4 + r % 2 })),
        None => Ok(bits(&[1.0; 4])),
    });
    out.push(match (rank, n) {
        (_, 1) => Ok(Vec::new()),
        (0, _) => Err(Error::Tp(TpError::CommMismatch { rank: 1, what: "all_gather", expected: "barrier" })),
        _ => Err(Error::Tp(TpError::CommMismatch { rank: 0, what: "barrier", expected: "all_gather" })),
    });
    out.push(match first_other(&|r| r % 2 != rank % 2) {
        Some(r) => {
            Err(Error::Tp(TpError::CommMismatch { rank: r, what: "broadcast", expected: "broadcast" }))
        }
        None => Ok(bits(&[1.0; 3])),
    });
    out.push(Err(Error::Tp(TpError::ShardRank { rank: n, world_size: n })));
    out.push(Ok(sum(50, 1)));
    out
}

/// How two outcomes differ, briefly (`None`: they are equal).
fn differ(a: &Outcome, b: &Outcome) -> Option<String> {
    match (a, b) {
        (Ok(x), Ok(y)) if x.len() != y.len() => Some(format!("{} values vs {}", x.len(), y.len())),
        (Ok(x), Ok(y)) => x
            .iter()
            .zip(y)
            .position(|(p, q)| p != q)
            .map(|i| format!("[{i}] {} vs {} (bits)", f32::from_bits(x[i]), f32::from_bits(y[i]))),
        (Err(x), Err(y)) if x == y => None,
        (Err(x), Err(y)) => Some(format!("error {x:?} vs error {y:?}")),
        (Ok(x), Err(y)) => Some(format!("{} values vs error {y:?}", x.len())),
        (Err(x), Ok(y)) => Some(format!("error {x:?} vs {} values", y.len())),
    }
}

fn check_collectives(mpi: &MpiComm, what: &str) -> Check {
    let (rank, n) = (mpi.rank(), mpi.world_size());
    let got = collectives(mpi);
    let want = expected_collectives(rank, n);
    let local = on_local_ranks(n, |c| collectives(c)).swap_remove(rank);
    ensure!(got.len() == want.len() && got.len() == local.len(), "{what}: {} outcomes", got.len());
    for (i, ((g, w), l)) in got.iter().zip(&want).zip(&local).enumerate() {
        if let Some(d) = differ(g, w) {
            return Err(format!("{what}: collective {i}: MpiComm vs expected: {d}"));
        }
        if let Some(d) = differ(g, l) {
            return Err(format!("{what}: collective {i}: MpiComm vs LocalComm: {d}"));
        }
    }
    // A bad root on one rank only: every rank reports it (LocalComm would make the others wait).
    let mut v = vec![0.0; 2];
    let root = if rank + 1 == n { n + 5 } else { 0 };
    let e = mpi.broadcast(&mut v, root);
    ensure!(
        e == Err(Error::Tp(TpError::ShardRank { rank: n + 5, world_size: n })),
        "{what}: bad root on one rank: {e:?}"
    );
    ensure!(mpi.barrier().is_ok(), "{what}: barrier after the errors");
    Ok(())
}

/// Weights and input of the MLP, the same on every rank.
struct Mlp {
    gate: QuantWeight,
    up: QuantWeight,
    down: QuantWeight,
    gate_bias: FloatVec,
    down_bias: FloatVec,
    x: Vec<f32>,
    batch: usize,
}

const INP: usize = 256;
/// Splits over 1, 2, 3, 4, 6 ranks on GPTQ group (32) and pack-word boundaries.
const MID: usize = 384;
const OUT: usize = 192;
const BATCH: usize = 3;

impl Mlp {
    fn new(gptq_weights: bool, seed: u64) -> quant_kernels::Result<Self> {
        let mut rng = Rng(seed);
        let mut weight = |out: usize, inp: usize| -> quant_kernels::Result<QuantWeight> {
            Ok(if gptq_weights {
                QuantWeight::Gptq(gptq(inp, out, 4, 32, &mut rng)?)
            } else {
                let w: Vec<f32> = (0..out * inp).map(|_| rng.f32_in(-0.1, 0.1)).collect();
                QuantWeight::dense(out, inp, w)
            })
        };
        let (gate, up, down) = (weight(MID, INP)?, weight(MID, INP)?, weight(OUT, MID)?);
        let mut rng = Rng(seed ^ 0xabcd);
        Ok(Self {
            gate,
            up,
            down,
            gate_bias: FloatVec::F32((0..MID).map(|_| rng.f32_in(-0.05, 0.05)).collect()),
            down_bias: FloatVec::F32((0..OUT).map(|_| rng.f32_in(-0.05, 0.05)).collect()),
            x: (0..BATCH * INP).map(|_| rng.f32_in(-1.0, 1.0)).collect(),
            batch: BATCH,
        })
    }

    fn silu_mul(g: &[f32], u: &[f32]) -> Vec<f32> {
        g.iter().zip(u).map(|(&a, &b)| a / (1.0 + (-a).exp()) * b).collect()
    }

    /// `down(silu(gate(x)) * up(x))`, gate/up column-parallel, down row-parallel; also the
    /// gathered gate outputs.
    fn forward(&self, c: &dyn Comm) -> quant_kernels::Result<(Vec<f32>, Vec<f32>)> {
        let (r, n, p) = (c.rank(), c.world_size(), Parallelism::SERIAL);
        let gate = ColumnParallelLinear::new(&self.gate, Some(&self.gate_bias), r, n)?;
        let up = ColumnParallelLinear::new(&self.up, None, r, n)?;
        let down = RowParallelLinear::new(&self.down, Some(&self.down_bias), r, n)?;
        let h = Self::silu_mul(&gate.forward(&self.x, self.batch, p)?, &up.forward(&self.x, self.batch, p)?);
        let y = down.forward(c, &h, self.batch, p)?;
        Ok((y, gate.forward_gathered(c, &self.x, self.batch, p)?))
    }

    /// The single-device forward, the gate outputs, and the error scale of the last sum.
    fn single(&self) -> quant_kernels::Result<(Vec<f32>, Vec<f32>, Vec<f64>)> {
        let p = Parallelism::SERIAL;
        let gate = QuantLinear::new(self.gate.clone(), Some(self.gate_bias.clone()))?;
        let up = QuantLinear::new(self.up.clone(), None)?;
        let down = QuantLinear::new(self.down.clone(), Some(self.down_bias.clone()))?;
        let g: Vec<f32> = gate.forward(&self.x, self.batch, p)?;
        let h = Self::silu_mul(&g, &up.forward::<f32, f32>(&self.x, self.batch, p)?);
        Ok((down.forward(&h, self.batch, p)?, g, down.magnitude_reference(&h, self.batch)?))
    }
}

fn check_mlp(mpi: &MpiComm) -> Check {
    let (rank, n) = (mpi.rank(), mpi.world_size());
    for (gptq_weights, name) in [(false, "dense"), (true, "gptq 4-bit")] {
        let mlp = Mlp::new(gptq_weights, 21).map_err(|e| format!("{name}: build: {e}"))?;
        let (y, gathered) = mlp.forward(mpi).map_err(|e| format!("{name}: MpiComm forward: {e}"))?;
        let local = on_local_ranks(n, |c| mlp.forward(c));
        for (r, l) in local.iter().enumerate() {
            let (ly, _) = l.as_ref().map_err(|e| format!("{name}: LocalComm rank {r}: {e}"))?;
            ensure!(bits(ly) == bits(&y), "{name}: LocalComm rank {r} differs from MpiComm rank {rank}");
        }
        let (want, gate, magnitude) = mlp.single().map_err(|e| format!("{name}: single device: {e}"))?;
        ensure!(bits(&gathered) == bits(&gate), "{name}: gathered gate outputs differ from one device");
        ensure!(y.len() == want.len(), "{name}: {} outputs, expected {}", y.len(), want.len());
        ensure!(y.iter().any(|v| v.abs() > 1e-3), "{name}: the output is all zeros");
        for (i, ((a, b), m)) in y.iter().zip(&want).zip(&magnitude).enumerate() {
            let close = ((a - b).abs() as f64) <= 1e-5 * m; // false for NaN
            ensure!(close, "{name}: [{i}] {a} vs single device {b} (magnitude {m})");
        }
    }
    Ok(())
}

fn run(comm: MpiComm) -> (MpiComm, Check) {
    let rank = comm.rank();
    let r = (|| {
        ensure!(
            matches!(MpiComm::init(), Err(Error::Tp(TpError::MpiInitialized))),
            "a second MpiComm::init did not fail"
        );
        check_collectives(&comm, "default chunk")?;
        check_mlp(&comm)
    })();
    if r.is_err() {
        return (comm, r);
    }
    // Small chunks, different on every rank (each collective uses the smallest): many rounds.
    let comm = comm.with_max_chunk(3 + rank);
    let r = check_collectives(&comm, "chunks of 3 + rank");
    (comm, r)
}

fn main() {
    // A panic on one rank must not leave the others waiting in a collective: end the job.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        mpi::topology::SimpleCommunicator::world().abort(101);
    }));
    let comm = match MpiComm::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("MPI init failed: {e}");
            std::process::exit(1);
        }
    };
    let (rank, n) = (comm.rank(), comm.world_size());
    let (comm, result) = run(comm);
    match result {
        Ok(()) => {
            // Nobody ends before every rank passed (the job's exit status covers the rest).
            if let Err(e) = comm.barrier() {
                eprintln!("rank {rank}/{n} FAILED: final barrier: {e}");
                comm.abort(1);
            }
            println!("rank {rank}/{n} ok");
        }
        Err(e) => {
            eprintln!("rank {rank}/{n} FAILED: {e}");
            comm.abort(1);
        }
    }
}
