//! The fused multiply (`QuantLinear::forward`) from packed 4-bit weights, next to a memcpy of
//! the weight's bytes with the same threads, measured in the same run.
//!
//! * `gemv_*`: batch 1. Throughput = bytes of the weight as stored (codes + f16 scales + zeros
//!   (+ g_idx)); memcpy counts its size twice (read + write), as BENCHMARKING.md defines.
//!   Also timed: dequantize to f32 then a dense GEMV of our own (the unfused way), and the
//!   dense f32 GEMV alone on a pre-dequantized weight, and `read`: a threaded pure read (sum)
//!   of the weight's bytes, the ceiling of an op that only reads (throughput = bytes read).
//! * `batch_*`: batches 1..128 on 4096x4096 (elements = multiply-adds, so criterion's
//!   "elements/s" is half the FLOP/s): fused 4-bit vs a dense f32 GEMM (ndarray/matrixmultiply,
//!   threaded: run with `MATMUL_NUM_THREADS=2`) of the same shape. Where the fused path falls
//!   behind is the crossover the README reports.
//!
//! ```text
//! MATMUL_NUM_THREADS=2 cargo bench --bench matmul
//! cargo bench --bench matmul -- --quick gemv
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::f16;
use quant_kernels::gptq::{GptqLayer, GptqLayout, ZeroFormat};
use quant_kernels::hqq::HqqWeight;
use quant_kernels::hqq::{Axis, HqqLayout, Packed, PackedWords};
use quant_kernels::matmul::q8::{self, IntWeight};
use quant_kernels::matmul::{Activations, ReadOrder};
use quant_kernels::{B4, Bits, FloatVec, Isa, Packing, Parallelism};
use quant_kernels::{QuantLinear, QuantWeight};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// HQQ 4-bit, group 64, axis 0 (hqq's and mistral.rs's default), f16 scales and zeros.
fn hqq4(out: usize, inp: usize) -> QuantLinear {
    hqq4_axis(out, inp, Axis::Zero)
}

/// HQQ 4-bit, group 64, on `axis`, f16 scales and zeros.
fn hqq4_axis(out: usize, inp: usize, axis: Axis) -> QuantLinear {
    let layout = HqqLayout::new(out, inp, 64, axis).unwrap();
    let (r, c) = layout.code_shape();
    let pr = B4::packed_rows(r).unwrap();
    let mut x = XorShift(0x2545_f491_4f6c_dd1d);
    let words = (0..pr * c).map(|_| x.next() as u8).collect();
    let n = layout.groups();
    let scales = FloatVec::F16((0..n).map(|i| f16::from_f32(0.001 + (i % 97) as f32 * 1e-4)).collect());
    let zeros = FloatVec::F16((0..n).map(|i| f16::from_f32((i % 13) as f32 * 0.5 + 1.0)).collect());
    let packed = Packed { bits: Bits::B4, rows: r, cols: c, words: PackedWords::U8(words) };
    QuantLinear::new(QuantWeight::Hqq(HqqWeight { layout, packed, scales, zeros }), None).unwrap()
}

/// GPTQ 4-bit, group 128, f16 scales, `act_order` a pseudo-random g_idx.
fn gptq4(out: usize, inp: usize, act_order: bool) -> QuantLinear {
    let l = GptqLayout::new(inp, out, 4, 128).unwrap();
    let (qr, qc) = l.qweight_shape();
    let (zr, zc) = l.qzeros_shape();
    let mut x = XorShift(0x9e37_79b9_7f4a_7c15);
    let qweight = (0..qr * qc).map(|_| x.next() as i32).collect();
    let qzeros = (0..zr * zc).map(|_| x.next() as i32).collect();
    let scales =
        FloatVec::F16((0..l.groups() * l.n()).map(|i| f16::from_f32(1e-3 * (1 + i % 31) as f32)).collect());
    let mut g_idx = l.default_g_idx();
    if act_order {
        for i in (1..g_idx.len()).rev() {
            g_idx.swap(i, (x.next() % (i as u64 + 1)) as usize);
        }
    }
    let layer = GptqLayer {
        layout: l,
        format: ZeroFormat::V2,
        qweight,
        qzeros,
        scales,
        g_idx: act_order.then_some(g_idx),
        bias: None,
    };
    QuantLinear::from_gptq(layer).unwrap()
}

/// 4-bit codes with an f16 scale and zero point per 64 inputs in the quantized-activation
/// layout (`matmul::q8`): the same information as HQQ 4-bit g64 axis 1.
fn q4_weight(out: usize, inp: usize) -> IntWeight {
    let mut x = XorShift(0x2545_f491_4f6c_dd1d);
    let codes: Vec<u8> = (0..out * inp).map(|_| (x.next() & 15) as u8).collect();
    let n = out * inp / 64;
    let scales: Vec<f32> = (0..n).map(|i| f16::from_f32(0.001 + (i % 97) as f32 * 1e-4).to_f32()).collect();
    let zeros: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.5 + 1.0).collect();
    IntWeight::from_codes(4, &codes, &scales, &zeros, out, inp, 64).unwrap()
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// Copies of a layer so that one pass over all of them exceeds the last-level cache: each timed
/// multiply reads a layer that is not cached, as in a model's forward pass. 256 MiB: this VM's
/// cache still serves a 75 MB rotation at 42 GB/s.
const ROTATION_BYTES: usize = 256 << 20;

fn copies(bytes: usize) -> usize {
    ROTATION_BYTES.div_ceil(bytes.max(1)).max(2)
}

/// memcpy of one `bytes` chunk of a rotation of `copies(bytes)` chunks, on one thread and split
/// into the tasks the kernels use.
fn memcpy(g: &mut Group<'_>, bytes: usize) {
    let n = copies(bytes);
    let src = vec![1u8; bytes * n];
    let mut dst = vec![0u8; bytes * n];
    g.throughput(Throughput::Bytes(2 * bytes as u64));
    let mut i = 0;
    g.bench_function(BenchmarkId::new("memcpy", "serial"), |b| {
        b.iter(|| {
            i = (i + 1) % n;
            dst[i * bytes..(i + 1) * bytes].copy_from_slice(black_box(&src[i * bytes..(i + 1) * bytes]))
        })
    });
    let chunk = bytes.div_ceil(Parallelism::RAYON.tasks(bytes));
    g.bench_function(BenchmarkId::new("memcpy", "threaded"), |b| {
        b.iter(|| {
            i = (i + 1) % n;
            dst[i * bytes..(i + 1) * bytes]
                .par_chunks_mut(chunk)
                .zip(black_box(&src[i * bytes..(i + 1) * bytes]).par_chunks(chunk))
                .for_each(|(d, s)| d.copy_from_slice(s))
        })
    });
    // A pure read of the same bytes (`matmul::pure_read_in`, vector adds), threaded, in both
    // orders (four streams per task; front to back): the faster is the ceiling a batch-1 GEMV,
    // which only reads, could reach. Throughput counts the bytes read once.
    let words: Vec<u64> = (0..bytes * n / 8).map(|i| i as u64).collect();
    let per = bytes / 8;
    g.throughput(Throughput::Bytes(bytes as u64));
    for (order, label) in
        [(ReadOrder::FourStreams, "threaded"), (ReadOrder::Sequential, "threaded_sequential")]
    {
        g.bench_function(BenchmarkId::new("read", label), |b| {
            b.iter(|| {
                i = (i + 1) % n;
                let w = &words[i * per..(i + 1) * per];
                black_box(quant_kernels::matmul::pure_read_in(w, order, Parallelism::RAYON))
            })
        });
    }
    g.throughput(Throughput::Bytes(2 * bytes as u64));
}

/// Batch-1 multiply over a rotation of `layers` (one per iteration); with `dequant`, also the
/// unfused way (that dequantizer to f32, then a dense GEMV of our own) and the dense GEMV alone.
fn gemv_case(
    g: &mut Group<'_>,
    name: &str,
    layers: &[QuantLinear],
    dequant: Option<&dyn Fn(usize) -> Vec<f32>>,
) {
    let (out, inp) = (layers[0].out_features(), layers[0].in_features());
    let x: Vec<f32> = (0..inp).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
    let mut y = vec![0f32; out];
    g.throughput(Throughput::Bytes(layers[0].weight_bytes() as u64));
    let mut i = 0;
    // AVX-VNNI (256-bit) where the CPU has it, forced by capping the ISA at x86-64-v3.
    let v3 = Parallelism::RAYON.max_isa(Isa::X86V3Avx2);
    for (label, par) in
        [("serial", Parallelism::SERIAL), ("threaded", Parallelism::RAYON), ("threaded_x86-64-v3", v3)]
    {
        g.bench_function(BenchmarkId::new(name, label), |b| {
            b.iter(|| {
                i = (i + 1) % layers.len();
                layers[i].forward_into(black_box(&x), 1, &mut y, par).unwrap()
            })
        });
    }
    let Some(dequant) = dequant else { return };
    g.bench_function(BenchmarkId::new(format!("{name}_dequant_then_dense"), "threaded"), |b| {
        b.iter(|| {
            i = (i + 1) % layers.len();
            let w = FloatVec::F32(dequant(i));
            let d = QuantLinear::new(QuantWeight::dense(out, inp, w), None).unwrap();
            d.forward_into(black_box(&x), 1, &mut y, Parallelism::RAYON).unwrap()
        })
    });
    let dense: Vec<QuantLinear> = (0..copies(4 * out * inp))
        .map(|_| {
            let w = FloatVec::F32(dequant(0));
            QuantLinear::new(QuantWeight::dense(out, inp, w), None).unwrap()
        })
        .collect();
    g.bench_function(BenchmarkId::new(format!("{name}_dense_f32_gemv"), "threaded"), |b| {
        b.iter(|| {
            i = (i + 1) % dense.len();
            dense[i].forward_into(black_box(&x), 1, &mut y, Parallelism::RAYON).unwrap()
        })
    });
}

/// The quantized-activation core over a rotation of `weights`: the activations quantized to
/// int8 (per call, included in the time) and the integer-dot GEMV.
fn q8_case(g: &mut Group<'_>, name: &str, weights: &[IntWeight]) {
    let (out, inp) = (weights[0].rows(), weights[0].k());
    let x: Vec<f32> = (0..inp).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
    let mut y = vec![0f32; out];
    g.throughput(Throughput::Bytes(weights[0].stored_bytes() as u64));
    let mut i = 0;
    // AVX-VNNI (256-bit) where the CPU has it, forced by capping the ISA at x86-64-v3.
    let v3 = Parallelism::RAYON.max_isa(Isa::X86V3Avx2);
    for (label, par) in
        [("serial", Parallelism::SERIAL), ("threaded", Parallelism::RAYON), ("threaded_x86-64-v3", v3)]
    {
        g.bench_function(BenchmarkId::new(name, label), |b| {
            b.iter(|| {
                i = (i + 1) % weights.len();
                let xq = q8::quantize_activations(black_box(&x), 1, inp, par).unwrap();
                q8::multiply(&weights[i], &xq, &mut y, par).unwrap()
            })
        });
    }
}

fn gemv(c: &mut Criterion) {
    eprintln!("ISA: {}, rayon threads: {}", Isa::detect(), rayon::current_num_threads());
    let sizes: Vec<(usize, usize)> = match std::env::var("QK_GEMV_SIZES") {
        Ok(v) => v
            .split(',')
            .filter_map(|p| p.split_once('x'))
            .filter_map(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .collect(),
        Err(_) => vec![(4096, 4096), (4096, 14336)],
    };
    for (out, inp) in sizes {
        let mut g = c.benchmark_group(format!("gemv_{out}x{inp}"));
        g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        let hqq: Vec<QuantLinear> = (0..copies(out * inp / 2)).map(|_| hqq4(out, inp)).collect();
        memcpy(&mut g, hqq[0].weight_bytes());
        let unfused = out == inp;
        // The unfused baseline dequantizes from the scheme's own tensors.
        let hqq_weights: Vec<QuantWeight> = hqq.iter().map(|q| q.clone().into_weight().unwrap()).collect();
        let hqq_dequant = |i: usize| match &hqq_weights[i] {
            QuantWeight::Hqq(h) => match (&h.scales, &h.zeros, &h.packed.words) {
                (FloatVec::F16(s), FloatVec::F16(z), PackedWords::U8(w)) => {
                    quant_kernels::hqq::dequantize::<B4, f16, f32>(w, s, z, &h.layout, Parallelism::RAYON)
                        .unwrap()
                }
                _ => unreachable!(),
            },
            _ => unreachable!(),
        };
        gemv_case(
            &mut g,
            "hqq_4bit_g64",
            &hqq,
            unfused.then_some(&hqq_dequant as &dyn Fn(usize) -> Vec<f32>),
        );
        drop(hqq);
        let hqq1: Vec<QuantLinear> =
            (0..copies(out * inp / 2)).map(|_| hqq4_axis(out, inp, Axis::One)).collect();
        gemv_case(&mut g, "hqq_4bit_g64_axis1", &hqq1, None);
        drop(hqq1);
        let q4 = q4_weight(out, inp);
        let q4s: Vec<IntWeight> = (0..copies(q4.stored_bytes())).map(|_| q4.clone()).collect();
        q8_case(&mut g, "q4_g64_int8_activations", &q4s);
        drop(q4s);
        let gptq: Vec<QuantLinear> = (0..copies(out * inp / 2)).map(|_| gptq4(out, inp, false)).collect();
        let gptq_weights: Vec<QuantWeight> = gptq.iter().map(|q| q.clone().into_weight().unwrap()).collect();
        // GPTQ dequantizes to `[K, N]`; the dense GEMV then runs over that buffer as if it
        // were `[N, K]` (a GEMV written for `[K, N]` reads the same bytes at the same speed),
        // so the baseline is not charged for a transpose it would not need.
        let gptq_dequant = |i: usize| match &gptq_weights[i] {
            QuantWeight::Gptq(l) => l.dequantize_kn(Parallelism::RAYON).unwrap(),
            _ => unreachable!(),
        };
        gemv_case(
            &mut g,
            "gptq_4bit_g128",
            &gptq,
            unfused.then_some(&gptq_dequant as &dyn Fn(usize) -> Vec<f32>),
        );
        drop(gptq);
        // The same GPTQ layers on the int8-activation path (`Activations::Int8`).
        let gptq_int8: Vec<QuantLinear> = (0..copies(out * inp / 2))
            .map(|_| gptq4(out, inp, false).with_activations(Activations::Int8).unwrap())
            .collect();
        gemv_case(&mut g, "gptq_4bit_g128_int8_activations", &gptq_int8, None);
        drop(gptq_int8);
        if unfused {
            let act: Vec<QuantLinear> = (0..copies(out * inp / 2)).map(|_| gptq4(out, inp, true)).collect();
            gemv_case(&mut g, "gptq_4bit_g128_act_order", &act, None);
        }
        g.finish();
    }
}

/// Batches 1-128 from one layer per scheme (at batch 8 and up the multiply is compute-bound, so
/// the weight is not rotated), both paths, next to an `f32` GEMM of the dequantized weight
/// (`ndarray`/`matrixmultiply`, 4096 x 4096 only): 4096 x 4096 and 14336 outputs of 4096 inputs
/// (an up projection; `scripts/bench_llamacpp.sh`'s `4096x14336`).
fn batches(c: &mut Criterion) {
    for (out, inp) in [(4096, 4096), (14336, 4096)] {
        let square = out == inp;
        let hqq = hqq4(out, inp);
        let hqq1_int8 = hqq4_axis(out, inp, Axis::One).with_activations(Activations::Int8).unwrap();
        let gptq = gptq4(out, inp, false);
        let gptq_int8 = gptq.clone().with_activations(Activations::Int8).unwrap();
        let wt = square.then(|| {
            ndarray::Array2::from_shape_vec((out, inp), hqq.dequantize(Parallelism::RAYON).unwrap()).unwrap()
        });
        let mut g = c.benchmark_group(format!("batch_{out}x{inp}"));
        g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
        let sizes: &[usize] = if square { &[1, 2, 4, 8, 16, 32, 64, 128] } else { &[1, 8, 32, 128] };
        for &batch in sizes {
            let x: Vec<f32> = (0..batch * inp).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
            let mut y = vec![0f32; batch * out];
            g.throughput(Throughput::Elements((batch * out * inp) as u64));
            let mut cases = vec![("gptq_4bit_g128", &gptq), ("gptq_4bit_g128_int8_activations", &gptq_int8)];
            cases.push(("hqq_4bit_g64_axis1_int8_activations", &hqq1_int8));
            if square {
                cases.push(("hqq_4bit_g64", &hqq));
            }
            for (name, q) in cases {
                g.bench_function(BenchmarkId::new(name, batch), |b| {
                    b.iter(|| q.forward_into(black_box(&x), batch, &mut y, Parallelism::RAYON).unwrap())
                });
            }
            if let Some(w) = &wt {
                let xa = ndarray::Array2::from_shape_vec((batch, inp), x.clone()).unwrap();
                g.bench_function(BenchmarkId::new("dense_f32_matrixmultiply", batch), |b| {
                    b.iter(|| black_box(&xa).dot(&w.t()))
                });
            }
        }
        g.finish();
    }
}

criterion_group!(benches, gemv, batches);
criterion_main!(benches);
