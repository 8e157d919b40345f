//! Tensor parallelism: shards (dense and packed GPTQ, bit-exact against sharding the
//! dequantized whole), the in-process communicator (deterministic sums, errors instead of
//! hangs), column/row-parallel layers against the single-device forward for world sizes 1, 2,
//! 3, 4, a two-layer MLP on the tiny GPTQ checkpoint, and KV-head sharding.

use crate::common;
use quant_kernels::error::{KernelError, TpError};

use common::{Rng, float_vec, hqq_weight, layer};
use half::f16;
use quant_kernels::QuantScheme;
use quant_kernels::dense::DenseWeight;
use quant_kernels::gptq::{GptqCheckpoint, GptqLayer, GptqLayout, ZeroFormat};
use quant_kernels::tp::{
    ColumnParallelLinear, Comm, LocalComm, RowParallelLinear, Shard, kv_head_shard, n_kv_groups,
};
use quant_kernels::{Error, FloatVec, Parallelism};
use quant_kernels::{QuantLinear, QuantWeight};
use std::time::Duration;

fn gptq(k: usize, n: usize, bits: u8, g: i64, act: bool, rng: &mut Rng) -> GptqLayer {
    let l = GptqLayout::new(k, n, bits, g).unwrap();
    let x = layer(&l, act, rng);
    GptqLayer {
        layout: l,
        format: ZeroFormat::V1,
        qweight: x.qweight,
        qzeros: x.qzeros,
        scales: FloatVec::F16(x.scales.iter().map(|&v| f16::from_f32(v)).collect()),
        g_idx: act.then_some(x.g_idx),
        bias: Some(FloatVec::F32((0..n).map(|i| i as f32 * 0.01).collect())),
    }
}

/// `[out, in]` f32 of a GPTQ layer.
fn dense(g: &GptqLayer) -> Vec<f32> {
    g.dequantize::<f32>(Parallelism::SERIAL).unwrap()
}

#[test]
fn packed_gptq_shards_equal_shards_of_the_dequantized_whole() {
    let mut rng = Rng(11);
    let mut ran = 0;
    for bits in [2u8, 3, 4, 8] {
        for (k, n, g) in [(128, 128, 32i64), (256, 96, 64), (192, 64, -1)] {
            for act in [false, true] {
                let layer = gptq(k, n, bits, g, act, &mut rng);
                let whole = dense(&layer);
                for world in [1usize, 2, 4, 3] {
                    for dim in [0usize, 1] {
                        for rank in 0..world {
                            let shard = Shard::Simple { dim, rank, world_size: world };
                            let Ok(part) = layer.shard(&shard) else { continue };
                            let (expected, _, _) = shard.apply(&whole, n, k).unwrap();
                            let got = dense(&part);
                            assert!(
                                got.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()),
                                "{bits}-bit {k}x{n} g{g} act {act} dim {dim} {rank}/{world}"
                            );
                            ran += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(ran > 200, "only {ran} shards checked");
}

#[test]
fn bad_shards_are_typed_errors() {
    let mut rng = Rng(12);
    let layer = gptq(128, 64, 4, 32, false, &mut rng);
    // 64 outputs over 3 ranks; 128 inputs split at 48 (not a group of 32).
    assert_eq!(
        layer.shard(&Shard::Simple { dim: 0, rank: 0, world_size: 3 }).unwrap_err(),
        Error::Tp(TpError::ShardUneven { len: 64, world_size: 3 })
    );
    assert_eq!(
        layer.shard(&Shard::Offset { dim: 1, offset: 48, len: 32 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "group", at: 48, multiple: 32 })
    );
    assert_eq!(
        layer.shard(&Shard::Offset { dim: 0, offset: 4, len: 8 }).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "zero-point pack word", at: 4, multiple: 8 })
    );
    // Act-order along the inputs: any word row, every group kept (tests/tp/shard.rs).
    let act =
        gptq(128, 64, 4, 32, true, &mut rng).shard(&Shard::Offset { dim: 1, offset: 8, len: 64 }).unwrap();
    assert_eq!((act.layout.k(), act.layout.groups()), (64, 4));
    assert_eq!(
        Shard::Simple { dim: 2, rank: 0, world_size: 1 }.range(4).unwrap_err(),
        Error::Tp(TpError::ShardDim(2))
    );
    assert_eq!(
        Shard::Simple { dim: 0, rank: 2, world_size: 2 }.range(4).unwrap_err(),
        Error::Tp(TpError::ShardRank { rank: 2, world_size: 2 })
    );
    assert_eq!(
        Shard::Offset { dim: 0, offset: 3, len: 2 }.range(4).unwrap_err(),
        Error::Tp(TpError::ShardRange { offset: 3, len: 2, dim_len: 4 })
    );
}

/// Run `f(comm)` on every rank of a new group, one thread each.
fn on_ranks<T: Send>(world: usize, f: impl Fn(&LocalComm) -> T + Sync) -> Vec<T> {
    let ranks = LocalComm::group_with_timeout(world, Duration::from_secs(20));
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = ranks.into_iter().map(|c| s.spawn(move || f(&c))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn all_reduce_is_the_rank_order_sum_on_every_rank() {
    for world in [1usize, 2, 3, 4] {
        let data = |r: usize| -> Vec<f32> {
            (0..1000).map(|i| ((i * 7 + r * 13) % 101) as f32 * 0.37 - 11.0).collect()
        };
        let mut expected = data(0);
        for r in 1..world {
            for (e, x) in expected.iter_mut().zip(data(r)) {
                *e += x;
            }
        }
        for _ in 0..3 {
            let got = on_ranks(world, |c| {
                let mut v = data(c.rank());
                c.all_reduce_sum(&mut v).unwrap();
                let gathered = c.all_gather(&[c.rank() as f32]).unwrap();
                let mut b = vec![c.rank() as f32; 3];
                c.broadcast(&mut b, world - 1).unwrap();
                c.barrier().unwrap();
                (v, gathered, b)
            });
            for (v, gathered, b) in got {
                assert!(v.iter().zip(&expected).all(|(a, e)| a.to_bits() == e.to_bits()));
                assert_eq!(gathered, (0..world).map(|r| r as f32).collect::<Vec<_>>());
                assert_eq!(b, vec![(world - 1) as f32; 3]);
            }
        }
    }
}

/// Rank-order sum `((x0 + x1) + x2) + ...` of `data(0..world)`.
fn rank_order_sum(world: usize, data: impl Fn(usize) -> Vec<f32>) -> Vec<f32> {
    let mut sum = data(0);
    for r in 1..world {
        sum.iter_mut().zip(data(r)).for_each(|(e, x)| *e += x);
    }
    sum
}

#[test]
fn large_all_reduces_take_the_chunked_path_with_the_same_bits() {
    use quant_kernels::tp::CHUNKED_ALL_REDUCE_MIN as MIN;
    // Values of very different magnitudes, so another summation order gives other bits.
    let data = |r: usize, len: usize, salt: usize| -> Vec<f32> {
        let mut rng = Rng((r * 7919 + len * 31 + salt) as u64 + 1);
        (0..len).map(|_| rng.f32_in(-0.5, 0.5) * [1e-3f32, 1.0, 1e4][rng.below(3) as usize]).collect()
    };
    for world in [2usize, 3, 4] {
        // Lengths not divisible by the world size, the threshold itself, just below it (the
        // whole-buffer path), a shrink and regrow of the group's kept buffers, and buffers of
        // several segments (a segment is at most 1 Mi values summed over the ranks) with a
        // short last one.
        let lens = [MIN + 7, MIN, MIN - 1, 3 * MIN + 1, MIN + 2, (5 << 20) / 2 + 12345, 2 * MIN + 5];
        let got = on_ranks(world, |c| {
            lens.iter()
                .enumerate()
                .map(|(salt, &len)| {
                    let mut v = data(c.rank(), len, salt);
                    // Ranks arrive in varying orders.
                    if (c.rank() + salt) % 3 == 0 {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    c.all_reduce_sum(&mut v).unwrap();
                    v
                })
                .collect::<Vec<_>>()
        });
        for (salt, &len) in lens.iter().enumerate() {
            let want = rank_order_sum(world, |r| data(r, len, salt));
            // The order matters for these values: a reversed sum differs somewhere.
            let reversed = {
                let mut s = data(world - 1, len, salt);
                for r in (0..world - 1).rev() {
                    s.iter_mut().zip(data(r, len, salt)).for_each(|(e, x)| *e += x);
                }
                s
            };
            if world > 2 {
                assert!(reversed.iter().zip(&want).any(|(a, b)| a.to_bits() != b.to_bits()));
            }
            for (rank, per_rank) in got.iter().enumerate() {
                let v = &per_rank[salt];
                assert!(
                    v.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "world {world} rank {rank} len {len}"
                );
            }
        }
    }
    // Lengths on both sides of the threshold meet in the same exchange: a length error on
    // every rank, and the group still works afterwards.
    let r = on_ranks(2, |c| {
        let mut v = vec![1.0; if c.rank() == 0 { MIN } else { MIN - 1 }];
        let first = c.all_reduce_sum(&mut v);
        let unchanged = v.iter().all(|&x| x == 1.0);
        let mut w = vec![c.rank() as f32 + 1.0; MIN + 3];
        let second = c.all_reduce_sum(&mut w).map(|_| w.iter().all(|&x| x == 3.0));
        (first, unchanged, second)
    });
    for (first, unchanged, second) in r {
        assert!(matches!(first, Err(Error::Tp(TpError::CommLength { .. }))), "{first:?}");
        assert!(unchanged, "a failed all-reduce left the buffer changed");
        assert_eq!(second, Ok(true));
    }
    // Another collective against a large all-reduce: a mismatch on every rank.
    let r = on_ranks(2, |c| if c.rank() == 0 { c.barrier() } else { c.all_reduce_sum(&mut vec![1.0; MIN]) });
    assert!(r.iter().all(|e| matches!(e, Err(Error::Tp(TpError::CommMismatch { .. })))), "{r:?}");
}

#[test]
fn mismatches_and_failures_are_errors_on_every_rank_not_hangs() {
    // Different lengths: every rank fails.
    let r = on_ranks(3, |c| c.all_reduce_sum(&mut vec![0.0; 4 + c.rank()]));
    assert!(r.iter().all(|e| matches!(e, Err(Error::Tp(TpError::CommLength { .. })))), "{r:?}");
    // Different collectives: every rank fails.
    let r = on_ranks(2, |c| if c.rank() == 0 { c.barrier() } else { c.all_reduce_sum(&mut [1.0]) });
    assert!(r.iter().all(|e| matches!(e, Err(Error::Tp(TpError::CommMismatch { .. })))), "{r:?}");
    // A rank that returns early (its communicator dropped): the others get an error.
    let ranks = LocalComm::group_with_timeout(3, Duration::from_secs(20));
    let r: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = ranks
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    if c.rank() == 1 {
                        return Err(Error::Tp(TpError::ShardDim(9))); // this rank fails before the collective
                    }
                    c.all_reduce_sum(&mut [1.0])
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        matches!(r[0], Err(Error::Tp(TpError::CommPeerGone { rank: 1 })))
            && matches!(r[2], Err(Error::Tp(TpError::CommPeerGone { rank: 1 })))
    );
    // A rank that never arrives but stays alive: a timeout.
    let ranks = LocalComm::group_with_timeout(2, Duration::from_millis(200));
    let r: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = ranks
            .into_iter()
            .map(|c| {
                s.spawn(move || {
                    if c.rank() == 1 {
                        std::thread::sleep(Duration::from_millis(600));
                        return Ok(());
                    }
                    c.barrier()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(matches!(r[0], Err(Error::Tp(TpError::CommTimeout { rank: 0, .. }))), "{r:?}");
}

/// `|got - want| <= 1e-5 * magnitude` per output (magnitude = sum of |terms| + |bias|).
fn within(got: &[f32], want: &[f32], magnitude: &[f64], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, ((a, b), m)) in got.iter().zip(want).zip(magnitude).enumerate() {
        assert!(((a - b).abs() as f64) <= 1e-5 * m, "{what}: [{i}] {a} vs {b} (magnitude {m})");
    }
}

#[test]
fn parallel_layers_equal_the_single_device_forward() {
    let mut rng = Rng(13);
    let (inp, out, batch) = (256usize, 192usize, 3usize);
    let x: Vec<f32> = (0..batch * inp).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let dense_w: Vec<f32> = (0..out * inp).map(|_| rng.f32_in(-0.1, 0.1)).collect();
    let bias = FloatVec::F32((0..out).map(|i| i as f32 * 0.001).collect());
    let weights =
        [QuantWeight::dense(out, inp, dense_w), QuantWeight::Gptq(gptq(inp, out, 4, 64, false, &mut rng))];
    for w in &weights {
        let single = QuantLinear::new(w.clone(), Some(bias.clone())).unwrap();
        let want: Vec<f32> = single.forward(&x, batch, Parallelism::SERIAL).unwrap();
        let magnitude = single.magnitude_reference(&x, batch).unwrap();
        for world in [1usize, 2, 3, 4] {
            // Column-parallel: each rank's outputs are the single-device ones, bit for bit.
            let runs = on_ranks(world, |c| {
                let col = ColumnParallelLinear::new(w, Some(&bias), c.rank(), world)?;
                col.forward_gathered(c, &x, batch, Parallelism::SERIAL)
            });
            for r in runs {
                match r {
                    Ok(y) => assert_eq!(y, want, "column world {world}"),
                    Err(e) => assert!(
                        world == 3
                            && matches!(
                                e,
                                Error::Tp(TpError::ShardUneven { .. })
                                    | Error::Tp(TpError::ShardBoundary { .. })
                            ),
                        "{e}"
                    ),
                }
            }
            // Row-parallel: each rank multiplies its input slice; the sum is within 1e-5, and
            // repeated runs are bit-identical.
            let row_run = || {
                on_ranks(world, |c| {
                    let row = RowParallelLinear::new(w, Some(&bias), c.rank(), world)?;
                    let per = inp / world;
                    let xs: Vec<f32> = x
                        .chunks_exact(inp)
                        .flat_map(|r| r[c.rank() * per..(c.rank() + 1) * per].to_vec())
                        .collect();
                    row.forward(c, &xs, batch, Parallelism::SERIAL)
                })
            };
            let (a, b) = (row_run(), row_run());
            for (ya, yb) in a.iter().zip(&b) {
                match (ya, yb) {
                    (Ok(ya), Ok(yb)) => {
                        within(ya, &want, &magnitude, &format!("row world {world}"));
                        assert_eq!(ya, yb, "row world {world}: not deterministic");
                    }
                    (Err(e), _) => assert!(world == 3, "{e}"),
                    _ => panic!("one run failed, the other did not"),
                }
            }
        }
    }
}

#[test]
fn merged_qkv_shards_each_part() {
    let mut rng = Rng(14);
    let inp = 64;
    let parts: Vec<QuantWeight> =
        [128usize, 64, 64].iter().map(|&n| QuantWeight::Gptq(gptq(inp, n, 4, 32, false, &mut rng))).collect();
    let x: Vec<f32> = (0..inp).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let single: Vec<Vec<f32>> = parts
        .iter()
        .map(|w| QuantLinear::new(w.clone(), None).unwrap().forward(&x, 1, Parallelism::SERIAL).unwrap())
        .collect();
    let world = 2;
    let ys = on_ranks(world, |c| {
        let refs: Vec<(&QuantWeight, Option<&FloatVec>)> = parts.iter().map(|w| (w, None)).collect();
        ColumnParallelLinear::new_merged(&refs, None, c.rank(), world)
            .unwrap()
            .forward(&x, 1, Parallelism::SERIAL)
            .unwrap()
    });
    for (r, y) in ys.iter().enumerate() {
        // Rank r holds [q_r; k_r; v_r].
        let mut want = Vec::new();
        for s in &single {
            let per = s.len() / world;
            want.extend_from_slice(&s[r * per..(r + 1) * per]);
        }
        assert_eq!(*y, want);
    }
}

#[test]
fn two_layer_mlp_on_the_tiny_gptq_checkpoint() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gptq_checkpoints/tiny-llama-gptq-8bit-single");
    let ck = GptqCheckpoint::open(&dir).unwrap();
    let p = "model.layers.0.mlp";
    let gate = QuantWeight::Gptq(ck.load(&format!("{p}.gate_proj")).unwrap());
    let up = QuantWeight::Gptq(ck.load(&format!("{p}.up_proj")).unwrap());
    let down = QuantWeight::Gptq(ck.load(&format!("{p}.down_proj")).unwrap());
    let hidden = 64;
    let batch = 2;
    let mut rng = Rng(15);
    let x: Vec<f32> = (0..batch * hidden).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let silu = |v: f32| v / (1.0 + (-v).exp());
    let mlp = |c: &dyn Comm, world: usize| -> quant_kernels::Result<Vec<f32>> {
        let (g, u) = (
            ColumnParallelLinear::new(&gate, None, c.rank(), world)?,
            ColumnParallelLinear::new(&up, None, c.rank(), world)?,
        );
        let d = RowParallelLinear::new(&down, None, c.rank(), world)?;
        let (gy, uy) =
            (g.forward(&x, batch, Parallelism::SERIAL)?, u.forward(&x, batch, Parallelism::SERIAL)?);
        let h: Vec<f32> = gy.iter().zip(&uy).map(|(&a, &b)| silu(a) * b).collect();
        d.forward(c, &h, batch, Parallelism::SERIAL)
    };
    let one = on_ranks(1, |c| mlp(c, 1).unwrap()).remove(0);
    assert!(one.iter().any(|v| v.abs() > 1e-3), "the MLP output is all zeros");
    // The error scale of the last sum: |h| . |W_down| on one device.
    let single = |w: &QuantWeight| QuantLinear::new(w.clone(), None).unwrap();
    let (gy, uy): (Vec<f32>, Vec<f32>) = (
        single(&gate).forward(&x, batch, Parallelism::SERIAL).unwrap(),
        single(&up).forward(&x, batch, Parallelism::SERIAL).unwrap(),
    );
    let h: Vec<f32> = gy.iter().zip(&uy).map(|(&a, &b)| silu(a) * b).collect();
    let magnitude = single(&down).magnitude_reference(&h, batch).unwrap();
    for world in [2usize, 4] {
        for y in on_ranks(world, |c| mlp(c, world).unwrap()) {
            within(&y, &one, &magnitude, &format!("mlp world {world}"));
        }
    }
}

#[test]
fn kv_heads_split_or_replicate() {
    // 8 KV heads over 4 ranks: two heads each.
    for r in 0..4 {
        let s = kv_head_shard(8, 16, r, 4).unwrap();
        assert_eq!(s.range(128).unwrap(), r * 32..(r + 1) * 32);
    }
    // 2 KV heads over 8 ranks: each head on 4 consecutive ranks.
    let heads: Vec<_> = (0..8).map(|r| kv_head_shard(2, 16, r, 8).unwrap().range(32).unwrap()).collect();
    assert_eq!(heads, [0..16, 0..16, 0..16, 0..16, 16..32, 16..32, 16..32, 16..32]);
    assert_eq!(kv_head_shard(2, 16, 0, 1).unwrap().range(32).unwrap(), 0..32);
    assert_eq!(n_kv_groups(2, 32, 8).unwrap(), 4);
    assert_eq!(n_kv_groups(8, 32, 2).unwrap(), 4);
    // Neither divides, or zero heads: errors (mistral.rs would divide by zero or mis-shard).
    assert_eq!(
        kv_head_shard(3, 16, 0, 4).unwrap_err(),
        Error::Tp(TpError::KvHeads { kv_heads: 3, world_size: 4 })
    );
    assert_eq!(
        kv_head_shard(0, 16, 0, 2).unwrap_err(),
        Error::Tp(TpError::KvHeads { kv_heads: 0, world_size: 2 })
    );
    assert!(n_kv_groups(2, 30, 4).is_err());
    assert_eq!(
        kv_head_shard(2, 16, 4, 4).unwrap_err(),
        Error::Tp(TpError::ShardRank { rank: 4, world_size: 4 })
    );
}

use quant_kernels::awq::{AwqLayer, AwqLayout};
use quant_kernels::fp8::{Fp8Format, Fp8Layer};
use quant_kernels::hqq::Axis;
use quant_kernels::intx::{self, Granularity};

fn awq_layer(k: usize, n: usize, gs: usize, dtype: usize, rng: &mut Rng) -> AwqLayer {
    let l = AwqLayout::new(k, n, gs).unwrap();
    AwqLayer {
        layout: l,
        qweight: (0..k * n / 8).map(|_| rng.next_u64() as i32).collect(),
        qzeros: (0..l.groups() * n / 8).map(|_| rng.next_u64() as i32).collect(),
        scales: float_vec((0..l.groups() * n).map(|_| rng.f32_in(-0.05, 0.05)).collect(), dtype),
        bias: Some(FloatVec::F32((0..n).map(|i| i as f32).collect())),
    }
}

/// FP8 codes without infinities or NaNs (exponent's top bit clear), so forwards are finite.
/// `scale`: the per-tensor scale (`block` = `None`), random when `None`.
fn fp8_layer(
    rows: usize,
    cols: usize,
    block: Option<(usize, usize)>,
    format: Fp8Format,
    scale: Option<f32>,
    rng: &mut Rng,
) -> Fp8Layer {
    // No NaN codes (exponent bit 6 cleared): forwards are compared with a dense layer.
    let mut scale = |rng: &mut Rng| scale.unwrap_or_else(|| rng.f32_in(0.001, 0.1));
    common::fp8_layer(rows, cols, block, 1, format, 0b1011_1111, &mut scale, cols, rng)
}

/// `new_merged(parts)` on rank `rank` of `world`, against the parts' dequantized wholes: its
/// local weight dequantizes to the rank's rows of each part, stacked, bit for bit, and its
/// forward is the forward of a dense layer of those rows (within 1e-5 of the magnitude).
/// `None` when sharding some part fails, after checking `new_merged` fails with that error.
fn check_merged(
    parts: &[QuantWeight],
    biases: Option<&[FloatVec]>,
    rank: usize,
    world: usize,
    x: &[f32],
    batch: usize,
    what: &str,
) -> Option<QuantLinear> {
    let refs: Vec<(&QuantWeight, Option<&FloatVec>)> =
        parts.iter().enumerate().map(|(i, w)| (w, biases.map(|b| &b[i]))).collect();
    let merged = ColumnParallelLinear::new_merged(&refs, None, rank, world);
    let shard = Shard::Simple { dim: 0, rank, world_size: world };
    if let Some(e) = parts.iter().find_map(|w| w.shard(&shard).err()) {
        assert_eq!(merged.unwrap_err(), e, "{what}: rank {rank}/{world}: the part's shard error");
        return None;
    }
    let merged = merged.unwrap_or_else(|e| panic!("{what}: rank {rank}/{world}: {e}"));
    let (mut rows, mut inp, mut want_w, mut want_b) = (0, 0, Vec::new(), Vec::new());
    for (i, w) in parts.iter().enumerate() {
        let whole = QuantLinear::new(w.clone(), None).unwrap();
        let out = whole.out_features();
        inp = whole.in_features();
        let r = shard.range(out).unwrap();
        want_w.extend_from_slice(&whole.dequantize(Parallelism::SERIAL).unwrap()[r.start * inp..r.end * inp]);
        if let Some(b) = biases {
            want_b.extend_from_slice(&b[i].to_f32()[r.clone()]);
        }
        rows += r.len();
    }
    let local = merged.local();
    assert_eq!(local.scheme(), parts[0].scheme(), "{what}");
    assert_eq!((local.out_features(), local.in_features()), (rows, inp), "{what}");
    let got = local.dequantize(Parallelism::SERIAL).unwrap();
    assert!(
        got.len() == want_w.len() && got.iter().zip(&want_w).all(|(a, b)| a.to_bits() == b.to_bits()),
        "{what}: rank {rank}/{world}: the merged weight dequantizes differently"
    );
    let dense =
        QuantLinear::new(QuantWeight::dense(rows, inp, want_w), biases.map(|_| FloatVec::F32(want_b)))
            .unwrap();
    let want: Vec<f32> = dense.forward(x, batch, Parallelism::SERIAL).unwrap();
    let magnitude = dense.magnitude_reference(x, batch).unwrap();
    let y: Vec<f32> = merged.forward(x, batch, Parallelism::SERIAL).unwrap();
    within(&y, &want, &magnitude, &format!("{what}: rank {rank}/{world} forward"));
    Some(merged.local().clone())
}

#[test]
fn merged_column_parallel_layers_for_every_scheme() {
    let mut rng = Rng(16);
    let (inp, batch) = (64usize, 2usize);
    let outs = [96usize, 48, 48]; // q, k, v
    let x: Vec<f32> = (0..batch * inp).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let merged = |parts: &[QuantWeight], rank, world| {
        let refs: Vec<(&QuantWeight, Option<&FloatVec>)> = parts.iter().map(|w| (w, None)).collect();
        ColumnParallelLinear::new_merged(&refs, None, rank, world)
    };
    let mut cases: Vec<(String, Vec<QuantWeight>)> = Vec::new();
    for bits in [8u8, 4, 3, 2, 1] {
        // Axis 1: parts quantized separately (groups of half a row, a row, two rows).
        for g in [32usize, 64, 128] {
            let parts = outs
                .iter()
                .map(|&o| {
                    QuantWeight::Hqq(
                        hqq_weight(o, inp, g, Axis::One, bits, g + bits as usize, &mut rng).unwrap(),
                    )
                })
                .collect();
            cases.push((format!("hqq {bits}-bit axis 1 g{g}"), parts));
        }
        // Axis 0: the parts of one weight (each keeps every strided group); M = 64 or 128.
        for g in [192usize, 96] {
            let whole = hqq_weight(192, inp, g, Axis::Zero, bits, g + bits as usize, &mut rng).unwrap();
            let parts: Vec<QuantWeight> = [0..96, 96..144, 144..192]
                .map(|r| {
                    QuantWeight::Hqq(
                        whole.shard(&Shard::Offset { dim: 0, offset: r.start, len: r.len() }).unwrap(),
                    )
                })
                .into();
            // On one rank the stack is the whole again, layout and all.
            assert_eq!(
                merged(&parts, 0, 1).unwrap().local().clone().into_weight().unwrap(),
                QuantWeight::Hqq(whole)
            );
            cases.push((format!("hqq {bits}-bit axis 0 g{g}"), parts));
        }
    }
    for dtype in 0..3 {
        let parts = outs.iter().map(|&o| QuantWeight::Awq(awq_layer(inp, o, 32, dtype, &mut rng))).collect();
        cases.push((format!("awq dtype {dtype}"), parts));
    }
    for format in [Fp8Format::E4M3, Fp8Format::E5M2] {
        for block in [Some((8, 32)), Some((16, 16)), None] {
            let parts = outs
                .iter()
                .map(|&o| {
                    QuantWeight::Fp8(fp8_layer(
                        o,
                        inp,
                        block,
                        format,
                        block.is_none().then_some(0.037),
                        &mut rng,
                    ))
                })
                .collect();
            cases.push((format!("fp8 {format:?} {block:?}"), parts));
        }
    }
    // int8 per-tensor: separate scales (-> per-channel) and one scale (each part's max is 1).
    let values = |o: usize, rng: &mut Rng, peak: bool| -> Vec<f32> {
        let mut v: Vec<f32> = (0..o * inp).map(|_| rng.f32_in(-0.5, 0.5)).collect();
        v[0] = if peak { 1.0 } else { rng.f32_in(0.6, 0.9) };
        v
    };
    let int8 = |o: usize, g: Granularity, peak: bool, rng: &mut Rng| {
        QuantWeight::Int8(
            intx::quantize_int8(&values(o, rng, peak), o, inp, g, quant_kernels::Parallelism::SERIAL)
                .unwrap(),
        )
    };
    use Granularity::{PerChannel, PerTensor};
    for (name, grans, peak) in [
        ("int8 per-tensor", [PerTensor; 3], false),
        ("int8 per-tensor, one scale", [PerTensor; 3], true),
        ("int8 per-channel", [PerChannel; 3], false),
        ("int8 mixed", [PerChannel, PerTensor, PerTensor], true),
    ] {
        let parts = outs.iter().zip(grans).map(|(&o, g)| int8(o, g, peak, &mut rng)).collect();
        cases.push((name.to_string(), parts));
    }
    for group in [16usize, 64] {
        let parts = outs
            .iter()
            .map(|&o| {
                QuantWeight::Int4(
                    intx::quantize_int4(
                        &values(o, &mut rng, false),
                        o,
                        inp,
                        group,
                        quant_kernels::Parallelism::SERIAL,
                    )
                    .unwrap(),
                )
            })
            .collect();
        cases.push((format!("int4 g{group}"), parts));
    }

    let mut worlds_ok = [0usize; 4];
    for (i, (name, parts)) in cases.iter().enumerate() {
        let biases: Vec<FloatVec> =
            outs.iter().map(|&o| float_vec((0..o).map(|_| rng.f32_in(-1.0, 1.0)).collect(), i)).collect();
        let biases = (i % 2 == 0).then_some(&biases[..]);
        for world in [1usize, 2, 3] {
            let locals: Vec<Option<QuantLinear>> =
                (0..world).map(|rank| check_merged(parts, biases, rank, world, &x, batch, name)).collect();
            if locals.iter().all(Option::is_some) {
                worlds_ok[world] += 1;
            } else {
                // Only where a part's own shard cannot be cut (checked in `check_merged`).
                assert_eq!(world, 2, "{name}: world {world}");
            }
            if let Some(Some(local)) = locals.first() {
                // One per-tensor int8 scale stays per-tensor; anything else becomes per-channel.
                if let QuantWeight::Int8(t) = local.clone().into_weight().unwrap() {
                    let one = name.as_str() == "int8 per-tensor, one scale";
                    assert_eq!(t.granularity, if one { PerTensor } else { PerChannel }, "{name}");
                }
            }
        }
    }
    assert_eq!((worlds_ok[1], worlds_ok[3]), (cases.len(), cases.len()));
    // World 2 cuts k and v at 24 rows: not on a 16-row FP8 block (2 cases), 12 1-bit HQQ code rows (2).
    assert!(worlds_ok[2] + 4 >= cases.len(), "world 2: {} of {}", worlds_ok[2], cases.len());

    // Errors. Parts of different schemes.
    let q = int8(96, PerTensor, false, &mut rng);
    let k = QuantWeight::Int4(
        intx::quantize_int4(&values(48, &mut rng, false), 48, inp, 16, quant_kernels::Parallelism::SERIAL)
            .unwrap(),
    );
    assert_eq!(
        merged(&[q.clone(), k, q.clone()], 0, 1).unwrap_err(),
        Error::Kernel(KernelError::Fuse { what: "scheme", part: 1 })
    );
    // FP8 per-tensor parts with different scales: no one scale without requantizing.
    let fp8_parts: Vec<QuantWeight> = outs
        .iter()
        .map(|&o| QuantWeight::Fp8(fp8_layer(o, inp, None, Fp8Format::E4M3, None, &mut rng)))
        .collect();
    assert_eq!(
        merged(&fp8_parts, 0, 1).unwrap_err(),
        Error::Kernel(KernelError::Fuse { what: "fp8 per-tensor scale", part: 1 })
    );
    assert_eq!(
        merged(&fp8_parts, 1, 2).unwrap_err(),
        Error::Kernel(KernelError::Fuse { what: "fp8 per-tensor scale", part: 1 })
    );
    // FP8 formats, block sizes, and a part that ends inside a scale block (the last may).
    let fp8 =
        |o, block, format, rng: &mut Rng| QuantWeight::Fp8(fp8_layer(o, inp, block, format, Some(1.0), rng));
    let e4 = Fp8Format::E4M3;
    let (a, b) = (fp8(48, Some((8, 32)), e4, &mut rng), fp8(48, Some((8, 32)), Fp8Format::E5M2, &mut rng));
    assert_eq!(
        merged(&[a.clone(), b], 0, 1).unwrap_err(),
        Error::Kernel(KernelError::Fuse { what: "fp8 format", part: 1 })
    );
    let (c, d) = (fp8(48, Some((16, 32)), e4, &mut rng), fp8(48, None, e4, &mut rng));
    assert_eq!(
        merged(&[a.clone(), c], 0, 1).unwrap_err(),
        Error::Kernel(KernelError::Fuse { what: "fp8 scale block size", part: 1 })
    );
    assert_eq!(
        merged(&[a.clone(), d], 0, 1).unwrap_err(),
        Error::Kernel(KernelError::Fuse { what: "fp8 scale block size", part: 1 })
    );
    let short = fp8(44, Some((8, 32)), e4, &mut rng);
    assert_eq!(
        merged(&[a.clone(), short.clone(), a.clone()], 0, 1).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "fp8 scale block", at: 92, multiple: 8 })
    );
    assert!(
        check_merged(&[a.clone(), a.clone(), short], None, 0, 1, &x, batch, "fp8 partial last").is_some()
    );
    // HQQ: axis-0 parts quantized separately (their strided groups would mix), widths, axes.
    let hqq = |o, g, axis, bits, rng: &mut Rng| {
        QuantWeight::Hqq(hqq_weight(o, inp, g, axis, bits, 0, rng).unwrap())
    };
    let (h0, h1) = (hqq(96, 96, Axis::Zero, 4, &mut rng), hqq(48, 48, Axis::Zero, 4, &mut rng)); // M = 64 each
    assert_eq!(
        merged(&[h0, h1], 0, 1).unwrap_err(),
        Error::Kernel(KernelError::Fuse { what: "hqq axis-0 scales and zeros", part: 1 })
    );
    let (h0, h1) = (hqq(96, 32, Axis::Zero, 4, &mut rng), hqq(48, 32, Axis::Zero, 4, &mut rng));
    assert_eq!(
        merged(&[h0, h1], 0, 1).unwrap_err(),
        Error::Kernel(KernelError::Fuse { what: "hqq axis-0 code columns", part: 1 })
    );
    let (h0, h1) = (hqq(96, 64, Axis::One, 4, &mut rng), hqq(48, 64, Axis::One, 2, &mut rng));
    assert_eq!(
        merged(&[h0.clone(), h1], 0, 1).unwrap_err(),
        Error::Kernel(KernelError::Fuse { what: "bits", part: 1 })
    );
    let h1 = hqq(48, 64, Axis::Zero, 4, &mut rng);
    assert_eq!(
        merged(&[h0.clone(), h1], 0, 1).unwrap_err(),
        Error::Kernel(KernelError::Fuse { what: "hqq axis", part: 1 })
    );
    let h1 = hqq(48, 32, Axis::One, 4, &mut rng);
    assert_eq!(
        merged(&[h0.clone(), h1], 0, 1).unwrap_err(),
        Error::Kernel(KernelError::Fuse { what: "group size", part: 1 })
    );
    // Parts with other inputs, in every scheme.
    let narrow: [(QuantWeight, QuantWeight, &str); 6] = [
        (h0, QuantWeight::Hqq(hqq_weight(48, 32, 64, Axis::One, 4, 0, &mut rng).unwrap()), "inputs"),
        (
            QuantWeight::Awq(awq_layer(inp, 96, 32, 0, &mut rng)),
            QuantWeight::Awq(awq_layer(32, 48, 32, 0, &mut rng)),
            "K",
        ),
        (a, QuantWeight::Fp8(fp8_layer(48, 32, Some((8, 32)), e4, Some(1.0), &mut rng)), "inputs"),
        (
            q,
            QuantWeight::Int8(
                intx::quantize_int8(&[0.5; 48 * 32], 48, 32, PerTensor, quant_kernels::Parallelism::SERIAL)
                    .unwrap(),
            ),
            "inputs",
        ),
        (
            QuantWeight::Int4(
                intx::quantize_int4(
                    &values(96, &mut rng, false),
                    96,
                    inp,
                    16,
                    quant_kernels::Parallelism::SERIAL,
                )
                .unwrap(),
            ),
            QuantWeight::Int4(
                intx::quantize_int4(&[0.5; 48 * 32], 48, 32, 16, quant_kernels::Parallelism::SERIAL).unwrap(),
            ),
            "inputs",
        ),
        (
            QuantWeight::dense(96, inp, vec![0.0; 96 * inp]),
            QuantWeight::dense(48, 32, vec![0.0; 48 * 32]),
            "inputs",
        ),
    ];
    for (wide, narrow, what) in narrow {
        let scheme = wide.scheme();
        assert_eq!(
            merged(&[wide.clone(), wide, narrow], 0, 1).unwrap_err(),
            Error::Kernel(KernelError::Fuse { what, part: 2 }),
            "{scheme}"
        );
    }
}

#[test]
fn merged_dense_parts_keep_their_dtype() {
    let part = |rows: usize, v: f32| QuantWeight::dense(rows, 4, vec![f16::from_f32(v); rows * 4]);
    let (q, k) = (part(4, 1.5), part(2, -2.0));
    let merged = ColumnParallelLinear::new_merged(&[(&q, None), (&k, None)], None, 0, 1).unwrap();
    let QuantWeight::Dense(DenseWeight { rows, cols, w }) = merged.local().clone().into_weight().unwrap()
    else {
        panic!()
    };
    assert_eq!((rows, cols), (6, 4));
    let FloatVec::F16(w) = w else { panic!("f16 parts stacked as {:?}", w.dtype()) };
    assert_eq!(w.iter().map(|x| x.to_f32()).collect::<Vec<_>>(), [[1.5; 16].as_slice(), &[-2.0; 8]].concat());
}
