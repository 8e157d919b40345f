//! `qk bench [--quick] [--json]`: each kernel's throughput next to a memcpy of its output size
//! measured in the same run (threaded, same chunking), the ISA named. Every op and baseline
//! cycles through copies of its buffers adding up to at least [`ROTATE_BYTES`], so that each
//! call finds its data in DRAM, as a model's forward pass does, not in this VM's large cache.

use crate::CliError;
use half::f16;
use quant_kernels::{Isa, Parallelism};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Bytes every timed op and baseline cycles through (copies of its inputs and outputs): past the
/// last-level cache of the machines we measure on (this VM's cache still serves a 75 MB
/// rotation at 42 GB/s).
pub const ROTATE_BYTES: usize = 256 << 20;

/// Copies of a set of buffers of `bytes` bytes that add up to at least [`ROTATE_BYTES`].
fn copies(bytes: usize) -> usize {
    ROTATE_BYTES.div_ceil(bytes.max(1)).max(1)
}

/// One measurement, in the record format of the CLI issue.
struct Record {
    op: &'static str,
    scheme: &'static str,
    variant: &'static str,
    bits: u8,
    rows: usize,
    cols: usize,
    out: &'static str,
    /// Rows of the activations (1 for a GEMV and everything that is not a multiply).
    batch: usize,
    /// Bytes the op reads plus writes.
    bytes: usize,
    /// Bytes of the op's output (the memcpy baseline copies this many; for a GEMV, the
    /// weight's bytes).
    out_bytes: usize,
    time: Duration,
}

pub fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up: page faults, caches
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// [`best`] of a fallible run: the first error, if any, instead of a time.
pub fn timed(runs: usize, mut f: impl FnMut() -> quant_kernels::Result<()>) -> Result<Duration, CliError> {
    let mut err = None;
    let time = best(runs, || {
        if let Err(e) = f() {
            err = Some(e);
        }
    });
    err.map_or(Ok(time), |e| Err(e.into()))
}

/// A 4096x4096 -> f16 dequantization record.
fn dequant_record(
    scheme: &'static str,
    variant: &'static str,
    bits: u8,
    n: usize,
    bytes: usize,
    time: Duration,
) -> Record {
    Record {
        op: "dequant",
        scheme,
        variant,
        bits,
        rows: 4096,
        cols: n / 4096,
        out: "f16",
        batch: 1,
        bytes,
        out_bytes: 2 * n,
        time,
    }
}

/// A threaded copy of `bytes` bytes, chunked as the kernels chunk their outputs, each call on
/// the next of a rotation of source/destination pairs.
fn memcpy_time(bytes: usize, runs: usize) -> Duration {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> =
        (0..copies(2 * bytes)).map(|_| (vec![1u8; bytes.max(1)], vec![2u8; bytes.max(1)])).collect();
    let chunk = bytes.div_ceil(Parallelism::RAYON.tasks(bytes / 2).max(1)).max(1);
    let mut next = 0;
    best(runs, || {
        let k = pairs.len();
        let (src, dst) = &mut pairs[next % k];
        next += 1;
        dst.par_chunks_mut(chunk)
            .zip(black_box(&*src).par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s))
    })
}

/// The fastest threaded read of `bytes` bytes ([`quant_kernels::matmul::pure_read_in`], the faster
/// of its orders on this CPU), each call on the next of a rotation of copies: the bound a batch-1
/// GEMV of that many weight bytes cannot beat.
fn read_time(bytes: usize, runs: usize) -> Duration {
    use quant_kernels::matmul::{ReadOrder, pure_read_in};
    let words = bytes.div_ceil(8).max(1);
    let bufs: Vec<Vec<u64>> =
        (0..copies(8 * words)).map(|c| (0..words as u64).map(|i| i ^ c as u64).collect()).collect();
    let mut next = 0;
    ReadOrder::ALL
        .into_iter()
        .map(|order| {
            best(runs, || {
                let buf = &bufs[next % bufs.len()];
                next += 1;
                black_box(pure_read_in(buf, order, Parallelism::RAYON));
            })
        })
        .min()
        .unwrap_or_default()
}

/// [`timed`] over a rotation: call `i` runs `f` on `sets[i % sets.len()]`.
fn timed_rotating<T>(
    runs: usize,
    sets: &mut [T],
    mut f: impl FnMut(&mut T) -> quant_kernels::Result<()>,
) -> Result<Duration, CliError> {
    let mut next = 0;
    timed(runs, || {
        let k = sets.len();
        let r = f(&mut sets[next % k]);
        next += 1;
        r
    })
}

fn words(n: usize, seed: u32) -> Vec<i32> {
    (0..n).map(|i| (i as u32).wrapping_mul(2654435761).wrapping_add(seed) as i32).collect()
}

/// The arguments of `qk bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Fewer repetitions.
    #[arg(long)]
    pub(crate) quick: bool,
    /// One JSON record per line (no table).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Run every measurement; `quick` takes fewer repetitions.
pub fn bench(quick: bool, json: bool) -> Result<(), CliError> {
    use quant_kernels::awq::{self, AwqLayout};
    use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
    use quant_kernels::gptq::{self, GptqLayout, ZeroFormat};
    use quant_kernels::hqq::{self, Axis, HqqConfig, HqqLayout};
    let runs = if quick { 3 } else { 10 };
    let (rows, cols) = (4096usize, 4096usize);
    let n = rows * cols;
    let mut records = Vec::new();
    // One output buffer per copy of a dequantization's inputs.
    let outputs = |input_bytes: usize| -> Vec<Vec<f16>> {
        (0..copies(input_bytes + 2 * n)).map(|_| vec![f16::ZERO; n]).collect()
    };

    // HQQ 4-bit g64 -> f16, both axes.
    let g = 64;
    let hw: Vec<u8> = (0..n / 2).map(|i| (i.wrapping_mul(2654435761) >> 7) as u8).collect();
    let hp: Vec<f16> = (0..n / g).map(|i| f16::from_f32(0.001 * (i % 97) as f32)).collect();
    for (axis, variant) in [(Axis::Zero, "g64_axis0"), (Axis::One, "g64_axis1")] {
        let l = HqqLayout::new(rows, cols, g, axis)?;
        let mut sets: Vec<_> = outputs(n / 2 + 4 * (n / g))
            .into_iter()
            .map(|o| (hw.clone(), hp.clone(), hp.clone(), o))
            .collect();
        let time = timed_rotating(runs, &mut sets, |(w, s, z, out)| {
            hqq::dequantize_into::<quant_kernels::B4, f16, f16>(w, s, z, &l, out, Parallelism::RAYON)
        })?;
        records.push(dequant_record("hqq", variant, 4, n, n / 2 + 4 * (n / g) + 2 * n, time));
    }

    // GPTQ 4-bit g128 -> f16, plain and act-order.
    let gl = GptqLayout::new(rows, cols, 4, 128)?;
    let (qr, qc) = gl.qweight_shape();
    let (zr, zc) = gl.qzeros_shape();
    let (qw, qz) = (words(qr * qc, 0), words(zr * zc, 7));
    let sc: Vec<f16> = (0..gl.groups() * cols).map(|i| f16::from_f32(1e-3 * (i % 31) as f32)).collect();
    let plain = gl.default_g_idx();
    // Act-order: a permutation that puts rows of different groups into every word row.
    let act: Vec<i32> = (0..rows).map(|k| plain[(k * 37) % rows]).collect();
    for (g_idx, variant) in [(&plain, "g128"), (&act, "g128_act_order")] {
        let bytes = 4 * (qw.len() + qz.len() + rows) + 2 * sc.len() + 2 * n;
        let mut sets: Vec<_> = outputs(bytes - 2 * n)
            .into_iter()
            .map(|o| (qw.clone(), qz.clone(), sc.clone(), g_idx.clone(), o))
            .collect();
        let time = timed_rotating(runs, &mut sets, |(qw, qz, sc, g_idx, out)| {
            let f = ZeroFormat::V1;
            gptq::gptq_dequantize_into(qw, sc, qz, Some(g_idx), f, &gl, out, Parallelism::RAYON)
        })?;
        records.push(dequant_record("gptq", variant, 4, n, bytes, time));
    }

    // AWQ 4-bit g128 and FP8 E4M3 128x128 blocks -> f16.
    let al = AwqLayout::new(rows, cols, 128)?;
    let (aw, az) = (words(n / 8, 3), words(al.groups() * cols / 8, 5));
    let asc: Vec<f16> = (0..al.groups() * cols).map(|i| f16::from_f32(1e-3 * (i % 31) as f32)).collect();
    let bytes = 4 * (aw.len() + az.len()) + 2 * asc.len() + 2 * n;
    let mut sets: Vec<_> =
        outputs(bytes - 2 * n).into_iter().map(|o| (aw.clone(), az.clone(), asc.clone(), o)).collect();
    let time = timed_rotating(runs, &mut sets, |(aw, az, asc, out)| {
        awq::awq_dequantize_into(aw, asc, az, &al, out, Parallelism::RAYON)
    })?;
    drop(sets);
    records.push(dequant_record("awq", "g128", 4, n, bytes, time));
    let fl = Fp8Layout::block(rows, cols, 128, 128)?;
    let codes: Vec<u8> = (0..n).map(|i| (i as u32).wrapping_mul(2654435761) as u8 & 0x7e).collect();
    let fs: Vec<f32> = (0..32 * 32).map(|i| 1e-3 * (i % 31) as f32).collect();
    let mut sets: Vec<_> =
        outputs(n + 4 * fs.len()).into_iter().map(|o| (codes.clone(), fs.clone(), o)).collect();
    let time = timed_rotating(runs, &mut sets, |(codes, fs, out)| {
        fp8::fp8_dequantize_into(codes, fs, Fp8Format::E4M3, &fl, out, Parallelism::RAYON)
    })?;
    drop(sets);
    records.push(dequant_record("fp8", "e4m3_block128", 8, n, n + 4 * fs.len() + 2 * n, time));

    // The multiply from the packed weights (HQQ 4-bit g64 axis 0, GPTQ 4-bit g128), f32 in and
    // out: batch 1 (GEMV; bytes = the weight as stored, the memcpy baseline copies that many)
    // and batches 8, 32, 128, each call on the next of a rotation of copies of the layer.
    // One 4-bit g64 HQQ weight per axis over the same words and parameters.
    let hqq_weight = |axis: Axis| -> quant_kernels::Result<quant_kernels::hqq::HqqWeight> {
        let layout = HqqLayout::new(rows, cols, g, axis)?;
        let (cr, cc) = layout.code_shape();
        Ok(quant_kernels::hqq::HqqWeight {
            layout,
            packed: hqq::Packed {
                bits: quant_kernels::Bits::B4,
                rows: cr,
                cols: cc,
                words: hqq::PackedWords::U8(hw.clone()),
            },
            scales: quant_kernels::FloatVec::F16(hp.clone()),
            zeros: quant_kernels::FloatVec::F16(hp.clone()),
        })
    };
    let gptq_layer = gptq::GptqLayer {
        layout: gl,
        format: ZeroFormat::V1,
        qweight: qw.clone(),
        qzeros: qz.clone(),
        scales: quant_kernels::FloatVec::F16(sc.clone()),
        g_idx: None,
        bias: None,
    };
    use quant_kernels::matmul::Activations;
    use quant_kernels::{QuantLinear, QuantWeight};
    let gptq_int8 = QuantLinear::from_gptq(gptq_layer.clone())?.with_activations(Activations::Int8)?;
    let hqq_axis0 = QuantLinear::new(QuantWeight::Hqq(hqq_weight(Axis::Zero)?), None)?;
    let hqq_axis1 = QuantLinear::new(QuantWeight::Hqq(hqq_weight(Axis::One)?), None)?;
    let mut weight_bytes = 0;
    for (layer, scheme, variant) in [
        (hqq_axis0.clone(), "hqq", "g64_axis0"),
        (hqq_axis0.with_activations(Activations::Int8)?, "hqq", "g64_axis0_int8_activations"),
        (hqq_axis1.clone(), "hqq", "g64_axis1"),
        (hqq_axis1.with_activations(Activations::Int8)?, "hqq", "g64_axis1_int8_activations"),
        (QuantLinear::from_gptq(gptq_layer)?, "gptq", "g128"),
        (gptq_int8, "gptq", "g128_int8_activations"),
    ] {
        let bytes = layer.weight_bytes();
        weight_bytes = weight_bytes.max(bytes);
        let layers: Vec<QuantLinear> = (0..copies(bytes)).map(|_| layer.clone()).collect();
        for batch in [1usize, 8, 32, 128] {
            let x: Vec<f32> = (0..batch * cols).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
            let mut y = vec![0f32; batch * rows];
            let mut next = 0;
            let time = timed(runs, || {
                let l = &layers[next % layers.len()];
                next += 1;
                l.forward_into(&x, batch, &mut y, Parallelism::RAYON)
            })?;
            records.push(Record {
                op: if batch == 1 { "gemv" } else { "gemm" },
                scheme,
                variant,
                bits: 4,
                rows,
                cols,
                out: "f32",
                batch,
                bytes,
                out_bytes: bytes,
                time,
            });
        }
    }
    // The bound of those GEMVs: a pure threaded read of as many bytes.
    records.push(Record {
        op: "read",
        scheme: "none",
        variant: "4_streams_per_thread",
        bits: 0,
        rows,
        cols,
        out: "u64",
        batch: 1,
        bytes: weight_bytes,
        out_bytes: weight_bytes,
        time: read_time(weight_bytes, runs),
    });

    // HQQ quantization, 4-bit g64 axis 0, 10 optimizer steps.
    let w: Vec<f32> = (0..n)
        .map(|i| 0.02 * (((i as u32).wrapping_mul(2654435761) >> 8) as f32 / (1u32 << 24) as f32 - 0.5))
        .collect();
    let config = HqqConfig { optimization_steps: Some(10), ..HqqConfig::new(4, 64, Axis::Zero) };
    let time = timed(if quick { 1 } else { 3 }, || {
        hqq::quantize_hqq(&w, rows, cols, &config, Parallelism::RAYON).map(|_| ())
    })?;
    let out_bytes = n / 2 + 8 * (n / 64);
    records.push(Record {
        op: "quantize",
        scheme: "hqq",
        variant: "g64_axis0_10_steps",
        bits: 4,
        rows,
        cols,
        out: "u8",
        batch: 1,
        bytes: 4 * n + out_bytes,
        out_bytes,
        time,
    });

    let threads = rayon::current_num_threads();
    let isa = Isa::detect().to_string();
    if !json {
        out!(
            "qk bench: {rows}x{cols}, threads {threads}, ISA {isa}; memcpy = threaded copy of the op's output size (multiply, read: of the weight's size), same run; every op and baseline cycles through {} MiB of copies",
            ROTATE_BYTES >> 20
        );
        out!(
            "{:<9} {:<6} {:<20} {:>4} {:>5} {:>10} {:>9} {:>9} {:>12} {:>8}",
            "op",
            "scheme",
            "variant",
            "bits",
            "batch",
            "time ms",
            "GB/s",
            "GFLOP/s",
            "memcpy GB/s",
            "ratio"
        );
    }
    let mut memcpy_cache: Vec<(usize, f64)> = Vec::new();
    for r in &records {
        let memcpy_gbps = match memcpy_cache.iter().find(|(b, _)| *b == r.out_bytes) {
            Some(&(_, g)) => g,
            None => {
                let t = memcpy_time(r.out_bytes, runs);
                let g = 2.0 * r.out_bytes as f64 / t.as_secs_f64() / 1e9;
                memcpy_cache.push((r.out_bytes, g));
                g
            }
        };
        let gbps = r.bytes as f64 / r.time.as_secs_f64() / 1e9;
        let multiply = matches!(r.op, "gemv" | "gemm");
        let gflops = 2.0 * (r.rows * r.cols * r.batch) as f64 / r.time.as_secs_f64() / 1e9;
        if json {
            let mut v = serde_json::json!({
                "op": r.op, "scheme": r.scheme, "variant": r.variant, "bits": r.bits, "rows": r.rows,
                "cols": r.cols, "batch": r.batch, "out": r.out, "threads": threads, "isa": isa,
                "gbps": gbps, "memcpy_gbps": memcpy_gbps, "ms": r.time.as_secs_f64() * 1e3,
            });
            if matches!(r.op, "gemv" | "gemm") {
                v["gflops"] =
                    serde_json::json!(2.0 * (r.rows * r.cols * r.batch) as f64 / r.time.as_secs_f64() / 1e9);
            }
            out!("{v}");
        } else {
            let gflops = if multiply { format!("{gflops:.1}") } else { "-".into() };
            out!(
                "{:<9} {:<6} {:<20} {:>4} {:>5} {:>10.3} {:>9.1} {:>9} {:>12.1} {:>7.0}%",
                r.op,
                r.scheme,
                r.variant,
                r.bits,
                r.batch,
                r.time.as_secs_f64() * 1e3,
                gbps,
                gflops,
                memcpy_gbps,
                100.0 * gbps / memcpy_gbps
            );
        }
    }
    Ok(())
}
