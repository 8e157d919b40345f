//! HQQ dequantization throughput, 4096x4096 (and 4096x14336 for 4-bit), next to a memcpy of the
//! output size measured in the same run with the same threads.
//!
//! `Throughput::Bytes` = bytes read (packed codes + f16 scales and zeros) + bytes written
//! (output); memcpy counts its size twice (read + write). See BENCHMARKING.md of the project.
//! Every case and baseline cycles through copies of its inputs and output adding up to at least
//! [`ROTATION_BYTES`], one copy per iteration, so that each call reads and writes DRAM.
//!
//! ```text
//! cargo bench --bench dequant                 # full run (~3 min on 2 cores)
//! cargo bench --bench dequant -- --quick      # CI-sized run
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use half::{bf16, f16};
use quant_kernels::hqq::{self, Axis, HqqLayout};
use quant_kernels::pack::Word;
use quant_kernels::{B1, B2, B3, B4, B8, Elem, Isa, Packing, Parallelism};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

/// Bytes each case cycles through: past the last-level cache (this VM's cache still serves a
/// 75 MB rotation at 42 GB/s, and a 32 MiB output was partly cached), and over 4x a GPU's L2
/// (H100 50 MB, H200 60 MB on the die).
const ROTATION_BYTES: usize = 256 << 20;

/// Sets of buffers (inputs and output) used one per iteration, in turn.
struct Rotation<T> {
    sets: Vec<T>,
    next: usize,
}

impl<T> Rotation<T> {
    /// Copies made by `make` of a set of `bytes` bytes, adding up to at least `ROTATION_BYTES`.
    fn new(bytes: usize, make: impl FnMut(usize) -> T) -> Self {
        let n = ROTATION_BYTES.div_ceil(bytes.max(1)).max(2);
        Rotation { sets: (0..n).map(make).collect(), next: 0 }
    }

    fn next(&mut self) -> &mut T {
        let i = self.next % self.sets.len();
        self.next += 1;
        &mut self.sets[i]
    }
}

#[derive(Clone)]
struct Input<P: Packing> {
    layout: HqqLayout,
    words: Vec<P::Word>,
    scales: Vec<f16>,
    zeros: Vec<f16>,
}

fn input<P: Packing>(rows: usize, cols: usize, g: usize, axis: Axis) -> Input<P> {
    let layout = HqqLayout::new(rows, cols, g, axis).unwrap();
    let (pr, pc) = layout.packed_shape(P::BITS).unwrap();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let words = (0..pr * pc)
        .map(|_| P::Word::from_bits(next() as u32 & if P::PER_WORD == 10 { 0x3fff_ffff } else { 0xff }))
        .collect();
    let n = layout.groups();
    let scales = (0..n).map(|i| f16::from_f32(0.001 + (i % 97) as f32 * 1e-4)).collect();
    let zeros = (0..n).map(|i| f16::from_f32((i % 13) as f32 * 0.5)).collect();
    Input { layout, words, scales, zeros }
}

fn bytes_read<P: Packing>(inp: &Input<P>) -> usize {
    inp.words.len() * std::mem::size_of::<P::Word>() + 2 * inp.scales.len() * 2
}

fn dequant_case<P: Packing, O: Elem>(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    inp: &Input<P>,
) {
    let n = inp.layout.numel();
    let bytes = bytes_read(inp) + n * std::mem::size_of::<O>();
    let mut rot = Rotation::new(bytes, |_| (inp.clone(), vec![O::from_f32(1.0); n]));
    g.throughput(Throughput::Bytes(bytes as u64));
    for (label, par) in [("serial", Parallelism::SERIAL), ("threaded", Parallelism::RAYON)] {
        g.bench_function(BenchmarkId::new(name, label), |b| {
            b.iter(|| {
                let (inp, out) = rot.next();
                hqq::dequantize_into::<P, f16, O>(
                    black_box(&inp.words),
                    &inp.scales,
                    &inp.zeros,
                    &inp.layout,
                    black_box(out),
                    par,
                )
                .unwrap()
            })
        });
    }
}

/// memcpy of `bytes`, on one thread and split into the same number of tasks the kernels use,
/// over a rotation of source/destination pairs.
fn memcpy_case(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, bytes: usize) {
    let mut rot = Rotation::new(2 * bytes, |_| (vec![1u8; bytes], vec![2u8; bytes]));
    g.throughput(Throughput::Bytes(2 * bytes as u64));
    g.bench_function(BenchmarkId::new("memcpy", "serial"), |b| {
        b.iter(|| {
            let (src, dst) = rot.next();
            dst.copy_from_slice(black_box(src))
        })
    });
    let chunk = bytes.div_ceil(Parallelism::RAYON.tasks(bytes));
    g.bench_function(BenchmarkId::new("memcpy", "threaded"), |b| {
        b.iter(|| {
            let (src, dst) = rot.next();
            dst.par_chunks_mut(chunk)
                .zip(black_box(&*src).par_chunks(chunk))
                .for_each(|(d, s)| d.copy_from_slice(s))
        })
    });
}

fn out_group<O: Elem>(c: &mut Criterion) {
    let (rows, cols) = (4096, 4096);
    let mut g = c.benchmark_group(format!("dequant_4096x4096_to_{}", O::DTYPE));
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    memcpy_case(&mut g, rows * cols * std::mem::size_of::<O>());
    dequant_case::<B8, O>(&mut g, "8bit_g64_ax0", &input::<B8>(rows, cols, 64, Axis::Zero));
    dequant_case::<B4, O>(&mut g, "4bit_g64_ax0", &input::<B4>(rows, cols, 64, Axis::Zero));
    dequant_case::<B4, O>(&mut g, "4bit_g64_ax1", &input::<B4>(rows, cols, 64, Axis::One));
    dequant_case::<B3, O>(&mut g, "3bit_g64_ax0", &input::<B3>(rows, cols, 64, Axis::Zero));
    dequant_case::<B2, O>(&mut g, "2bit_g64_ax0", &input::<B2>(rows, cols, 64, Axis::Zero));
    dequant_case::<B1, O>(&mut g, "1bit_g64_ax0", &input::<B1>(rows, cols, 64, Axis::Zero));
    g.finish();
}

fn model_shape(c: &mut Criterion) {
    let (rows, cols) = (4096, 14336);
    let mut g = c.benchmark_group("dequant_4096x14336_to_f16");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    memcpy_case(&mut g, rows * cols * 2);
    dequant_case::<B4, f16>(&mut g, "4bit_g64_ax0", &input::<B4>(rows, cols, 64, Axis::Zero));
    dequant_case::<B4, bf16>(&mut g, "4bit_g64_ax0_bf16", &input::<B4>(rows, cols, 64, Axis::Zero));
    g.finish();
}

/// Act-order `g_idx`: a fixed pseudo-random permutation of the plain assignment (as desc_act
/// checkpoints have: neighbouring rows in unrelated groups).
fn act_order(l: &quant_kernels::gptq::GptqLayout) -> Vec<i32> {
    let mut act = l.default_g_idx();
    let mut x = 0x9e37_79b9u64;
    for i in (1..act.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        act.swap(i, (x % (i as u64 + 1)) as usize);
    }
    act
}

/// GPTQ 4096x4096, 4-bit, group 128 -> f16 (plain and act-order), next to memcpy.
fn gptq_group(c: &mut Criterion) {
    use quant_kernels::gptq::{self, GptqLayout, ZeroFormat};
    let l = GptqLayout::new(4096, 4096, 4, 128).unwrap();
    let (qr, qc) = l.qweight_shape();
    let (zr, zc) = l.qzeros_shape();
    let qweight: Vec<i32> = (0..qr * qc).map(|i| (i as u32).wrapping_mul(2654435761) as i32).collect();
    let qzeros: Vec<i32> = (0..zr * zc).map(|i| (i as u32).wrapping_mul(40503) as i32).collect();
    let scales: Vec<f16> = (0..l.groups() * l.n()).map(|i| f16::from_f32(1e-3 * (i % 31) as f32)).collect();
    let plain = l.default_g_idx();
    let act = act_order(&l);
    let n = l.k() * l.n();
    let mut g = c.benchmark_group("gptq_4096x4096_to_f16");
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    memcpy_case(&mut g, 2 * n);
    let bytes = 4 * (qweight.len() + qzeros.len() + plain.len()) + 2 * scales.len() + 2 * n;
    let mut rot =
        Rotation::new(bytes, |_| (qweight.clone(), qzeros.clone(), scales.clone(), vec![f16::ONE; n]));
    g.throughput(Throughput::Bytes(bytes as u64));
    for (name, g_idx) in [("4bit_g128", &plain), ("4bit_g128_act_order", &act)] {
        for (label, par) in [("serial", Parallelism::SERIAL), ("threaded", Parallelism::RAYON)] {
            g.bench_function(BenchmarkId::new(name, label), |b| {
                b.iter(|| {
                    let (qweight, qzeros, scales, out) = rot.next();
                    gptq::gptq_dequantize_into(
                        black_box(qweight),
                        scales,
                        qzeros,
                        Some(g_idx),
                        ZeroFormat::V1,
                        &l,
                        black_box(out),
                        par,
                    )
                    .unwrap()
                })
            });
        }
    }
    g.finish();
}

/// AWQ (4-bit g128, f16 scales) and FP8 (E4M3, 128x128 f32 block scales) 4096x4096 -> f16.
fn awq_fp8_group(c: &mut Criterion) {
    use quant_kernels::awq::{self, AwqLayout};
    use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
    let n = 4096 * 4096;
    let mut g = c.benchmark_group("awq_fp8_4096x4096_to_f16");
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    memcpy_case(&mut g, 2 * n);
    let l = AwqLayout::new(4096, 4096, 128).unwrap();
    let qw: Vec<i32> = (0..n / 8).map(|i| (i as u32).wrapping_mul(2654435761) as i32).collect();
    let qz: Vec<i32> = (0..32 * 512).map(|i| (i as u32).wrapping_mul(40503) as i32).collect();
    let sc: Vec<f16> = (0..32 * 4096).map(|i| f16::from_f32(1e-3 * (i % 31) as f32)).collect();
    let bytes = 4 * (qw.len() + qz.len()) + 2 * sc.len() + 2 * n;
    let mut rot = Rotation::new(bytes, |_| (qw.clone(), qz.clone(), sc.clone(), vec![f16::ONE; n]));
    g.throughput(Throughput::Bytes(bytes as u64));
    for (label, par) in [("serial", Parallelism::SERIAL), ("threaded", Parallelism::RAYON)] {
        g.bench_function(BenchmarkId::new("awq_4bit_g128", label), |b| {
            b.iter(|| {
                let (qw, qz, sc, out) = rot.next();
                awq::awq_dequantize_into(black_box(qw), sc, qz, &l, black_box(out), par).unwrap()
            })
        });
    }
    drop(rot);
    let fl = Fp8Layout::block(4096, 4096, 128, 128).unwrap();
    let codes: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    let fs = vec![0.01f32; 32 * 32];
    let bytes = n + 4 * fs.len() + 2 * n;
    let mut rot = Rotation::new(bytes, |_| (codes.clone(), fs.clone(), vec![f16::ONE; n]));
    g.throughput(Throughput::Bytes(bytes as u64));
    for (label, par) in [("serial", Parallelism::SERIAL), ("threaded", Parallelism::RAYON)] {
        g.bench_function(BenchmarkId::new("fp8_e4m3_block128", label), |b| {
            b.iter(|| {
                let (codes, fs, out) = rot.next();
                fp8::fp8_dequantize_into(black_box(codes), fs, Fp8Format::E4M3, &fl, black_box(out), par)
                    .unwrap()
            })
        });
    }
    g.finish();
}

/// The naive oracle, to show the serial SIMD path's factor over it.
fn reference(c: &mut Criterion) {
    let inp = input::<B4>(4096, 4096, 64, Axis::Zero);
    let n = inp.layout.numel();
    let mut out = vec![f16::ZERO; n];
    let mut g = c.benchmark_group("dequant_4096x4096_reference");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Bytes((bytes_read(&inp) + 2 * n) as u64));
    g.bench_function(BenchmarkId::new("4bit_g64_ax0_f16", "naive"), |b| {
        b.iter(|| {
            hqq::dequantize_reference_into::<B4, f16, f16>(
                &inp.words,
                &inp.scales,
                &inp.zeros,
                &inp.layout,
                &mut out,
            )
            .unwrap()
        })
    });
    g.finish();
}

/// GPU kernels (feature `cuda`): 4096x4096 dequantization with f16 (and f32) scales/zeros and
/// output of the same type, next to a device-to-device copy of the output size; timed with a
/// stream synchronization inside `iter_custom`. Skipped with a message when no GPU is present.
/// `iters` calls of `f` between two synchronizations of `gpu`'s stream.
#[cfg(feature = "cuda")]
fn gpu_timed(gpu: &quant_kernels::cuda::Gpu, iters: u64, mut f: impl FnMut()) -> Duration {
    gpu.synchronize().unwrap();
    let start = std::time::Instant::now();
    for _ in 0..iters {
        f();
    }
    gpu.synchronize().unwrap();
    start.elapsed()
}

#[cfg(feature = "cuda")]
fn cuda_group(c: &mut Criterion) {
    use quant_kernels::cuda::{CudaElem, Gpu, hqq_dequant_cuda};
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => return eprintln!("CUDA benches skipped: {e}"),
    };
    eprintln!("GPU: {}", gpu.name().unwrap_or_default());
    fn case<P: Packing, T: CudaElem>(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        gpu: &Gpu,
        name: &str,
        axis: Axis,
    ) where
        P::Word: quant_kernels::cuda::DeviceRepr,
    {
        let inp = input::<P>(4096, 4096, 64, axis);
        let s: Vec<T> = inp.scales.iter().map(|x| T::from_f32(x.to_f32())).collect();
        let z: Vec<T> = inp.zeros.iter().map(|x| T::from_f32(x.to_f32())).collect();
        let n = inp.layout.numel();
        let t = std::mem::size_of::<T>();
        let bytes = inp.words.len() * std::mem::size_of::<P::Word>() + 2 * inp.scales.len() * t + n * t;
        let mut sets = Rotation::new(bytes, |_| {
            (
                gpu.upload(&inp.words).unwrap(),
                gpu.upload(&s).unwrap(),
                gpu.upload(&z).unwrap(),
                gpu.zeros::<T>(n).unwrap(),
            )
        });
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(BenchmarkId::new(name, "cuda"), |b| {
            b.iter_custom(|iters| {
                gpu_timed(gpu, iters, || {
                    let (w, s, z, out) = sets.next();
                    hqq_dequant_cuda::<P, T>(gpu, w, s, z, &inp.layout, out).unwrap();
                })
            })
        });
    }
    let mut g = c.benchmark_group("dequant_4096x4096_cuda");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(1));
    for (elem, bytes) in [("f16", 2usize), ("f32", 4)] {
        let n = 4096 * 4096 * bytes;
        let mut pairs = Rotation::new(2 * n, |_| (gpu.zeros::<u8>(n).unwrap(), gpu.zeros::<u8>(n).unwrap()));
        g.throughput(Throughput::Bytes(2 * n as u64));
        g.bench_function(BenchmarkId::new(format!("memcpy_dtod_{elem}"), "cuda"), |b| {
            b.iter_custom(|iters| {
                gpu_timed(&gpu, iters, || {
                    let (src, dst) = pairs.next();
                    gpu.stream().memcpy_dtod(src, dst).unwrap();
                })
            })
        });
    }
    case::<B8, f16>(&mut g, &gpu, "8bit_g64_ax0_f16", Axis::Zero);
    case::<B4, f16>(&mut g, &gpu, "4bit_g64_ax0_f16", Axis::Zero);
    case::<B4, f16>(&mut g, &gpu, "4bit_g64_ax1_f16", Axis::One);
    case::<B3, f16>(&mut g, &gpu, "3bit_g64_ax0_f16", Axis::Zero);
    case::<B2, f16>(&mut g, &gpu, "2bit_g64_ax0_f16", Axis::Zero);
    case::<B1, f16>(&mut g, &gpu, "1bit_g64_ax0_f16", Axis::Zero);
    case::<B4, bf16>(&mut g, &gpu, "4bit_g64_ax0_bf16", Axis::Zero);
    case::<B4, f32>(&mut g, &gpu, "4bit_g64_ax0_f32", Axis::Zero);

    // GPTQ 4-bit, group 128, -> f16, plain and act-order.
    use quant_kernels::cuda::{DeviceGIdx, gptq_dequantize_cuda};
    use quant_kernels::gptq::{GptqLayout, ZeroFormat};
    let l = GptqLayout::new(4096, 4096, 4, 128).unwrap();
    let (qr, qc) = l.qweight_shape();
    let (zr, zc) = l.qzeros_shape();
    let qw: Vec<i32> = (0..qr * qc).map(|i| (i as u32).wrapping_mul(2654435761) as i32).collect();
    let qz: Vec<i32> = (0..zr * zc).map(|i| (i as u32).wrapping_mul(40503) as i32).collect();
    let sc: Vec<f16> = (0..l.groups() * l.n()).map(|i| f16::from_f32(1e-3 * (i % 31) as f32)).collect();
    let act = act_order(&l);
    let bytes = 4 * (qw.len() + qz.len() + l.k()) + 2 * sc.len() + 2 * l.k() * l.n();
    let mut sets = Rotation::new(bytes, |_| {
        (
            gpu.upload(&qw).unwrap(),
            gpu.upload(&qz).unwrap(),
            gpu.upload(&sc).unwrap(),
            gpu.zeros::<f16>(l.k() * l.n()).unwrap(),
        )
    });
    g.throughput(Throughput::Bytes(bytes as u64));
    for (name, g_idx) in [("gptq_4bit_g128_f16", None), ("gptq_4bit_g128_act_order_f16", Some(&act[..]))] {
        let gi = DeviceGIdx::upload(&gpu, g_idx, &l).unwrap();
        g.bench_function(BenchmarkId::new(name, "cuda"), |b| {
            b.iter_custom(|iters| {
                gpu_timed(&gpu, iters, || {
                    let (qw, qz, sc, out) = sets.next();
                    gptq_dequantize_cuda(&gpu, qw, sc, qz, &gi, ZeroFormat::V1, &l, out).unwrap();
                })
            })
        });
    }
    // FP8 E4M3 with 128x128 block scales -> bf16 (the usual load dtype).
    {
        use quant_kernels::cuda::fp8_dequantize_cuda;
        use quant_kernels::fp8::{Fp8Format, Fp8Layout};
        let l = Fp8Layout::block(4096, 4096, 128, 128).unwrap();
        let codes: Vec<u8> = (0..4096 * 4096).map(|i| (i % 251) as u8).collect();
        let bytes = codes.len() + 4 * 32 * 32 + 2 * codes.len();
        let mut sets = Rotation::new(bytes, |_| {
            (
                gpu.upload(&codes).unwrap(),
                gpu.upload(&vec![0.01f32; 32 * 32]).unwrap(),
                gpu.zeros::<bf16>(codes.len()).unwrap(),
            )
        });
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(BenchmarkId::new("fp8_e4m3_block128_bf16", "cuda"), |b| {
            b.iter_custom(|iters| {
                gpu_timed(&gpu, iters, || {
                    let (codes, sc, out) = sets.next();
                    fp8_dequantize_cuda(&gpu, codes, sc, Fp8Format::E4M3, &l, out).unwrap();
                })
            })
        });
    }
    // AWQ 4-bit, group 128, -> f16.
    {
        use quant_kernels::awq::AwqLayout;
        use quant_kernels::cuda::awq_dequantize_cuda;
        let l = AwqLayout::new(4096, 4096, 128).unwrap();
        let aw: Vec<i32> = (0..4096 * 512).map(|i| (i as u32).wrapping_mul(2654435761) as i32).collect();
        let az: Vec<i32> = (0..32 * 512).map(|i| (i as u32).wrapping_mul(40503) as i32).collect();
        let asc = vec![f16::from_f32(0.01); 32 * 4096];
        let bytes = 4 * (aw.len() + az.len()) + 2 * asc.len() + 2 * 4096 * 4096;
        let mut sets = Rotation::new(bytes, |_| {
            (
                gpu.upload(&aw).unwrap(),
                gpu.upload(&az).unwrap(),
                gpu.upload(&asc).unwrap(),
                gpu.zeros::<f16>(4096 * 4096).unwrap(),
            )
        });
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(BenchmarkId::new("awq_4bit_g128_f16", "cuda"), |b| {
            b.iter_custom(|iters| {
                gpu_timed(&gpu, iters, || {
                    let (aw, az, asc, out) = sets.next();
                    awq_dequantize_cuda(&gpu, aw, asc, az, &l, out).unwrap();
                })
            })
        });
    }
    g.finish();
}

/// `DeviceQuantLinear` (every scheme's fused GEMV; the tensor-core GEMM from 16 rows, both
/// families where the layer has both, GPTQ's wide GEMM from 64 rows and its 32-row tiles there)
/// on a 4096-output x 14336-input layer at batch 1, 8, 16, 64 and 256 (the act-order layer at 1
/// and 16), next to cuBLAS's f16 GEMM of the dequantized
/// weight and a device copy of the weight's bytes, in the same run. Each cycles through copies
/// of its layer (weights, copy buffers) adding up to [`ROTATION_BYTES`].
/// `Throughput::Bytes` = the weight's stored bytes (codes + parameters); the copy counts its size
/// twice (read + write).
#[cfg(feature = "cuda")]
fn cuda_linear_group(c: &mut Criterion) {
    use quant_kernels::cuda::{Cublas, DeviceQuantLinear, GemmKind, Gpu};
    use quant_kernels::{FloatVec, QuantWeight};
    let gpu = match Gpu::new(0) {
        Ok(g) => g,
        Err(e) => return eprintln!("CUDA linear benches skipped: {e}"),
    };
    let (out, inp) = (4096usize, 14336usize);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut weights: Vec<(&str, QuantWeight)> = Vec::new();
    {
        let i = input::<B4>(out, inp, 64, Axis::One);
        let (cr, cc) = i.layout.code_shape();
        let packed = hqq::Packed {
            bits: quant_kernels::Bits::B4,
            rows: cr,
            cols: cc,
            words: hqq::PackedWords::U8(i.words),
        };
        let w = hqq::HqqWeight {
            layout: i.layout,
            packed,
            scales: FloatVec::F16(i.scales),
            zeros: FloatVec::F16(i.zeros),
        };
        weights.push(("hqq_4bit_g64_ax1_f16", QuantWeight::Hqq(w)));
    }
    for bits in [4u8, 8] {
        use quant_kernels::gptq::{GptqLayer, GptqLayout, ZeroFormat};
        let l = GptqLayout::new(inp, out, bits, 128).unwrap();
        let (qr, qc) = l.qweight_shape();
        let (zr, zc) = l.qzeros_shape();
        let layer = GptqLayer {
            layout: l,
            format: ZeroFormat::V1,
            qweight: (0..qr * qc).map(|_| next() as i32).collect(),
            qzeros: (0..zr * zc).map(|_| next() as i32).collect(),
            scales: FloatVec::F16((0..l.groups() * out).map(|_| f16::from_f32(0.01)).collect()),
            g_idx: None,
            bias: None,
        };
        weights.push((
            if bits == 4 { "gptq_4bit_g128_f16" } else { "gptq_8bit_g128_f16" },
            QuantWeight::Gptq(layer.clone()),
        ));
        if bits == 4 {
            // desc_act: a pseudo-random g_idx, as real checkpoints have (sorted by group at load,
            // the inputs gathered per call).
            let layer = GptqLayer { g_idx: Some(act_order(&l)), ..layer };
            weights.push(("gptq_4bit_g128_act_order_f16", QuantWeight::Gptq(layer)));
        }
    }
    {
        use quant_kernels::awq::{AwqLayer, AwqLayout};
        let l = AwqLayout::new(inp, out, 128).unwrap();
        let layer = AwqLayer {
            layout: l,
            qweight: (0..inp * out / 8).map(|_| next() as i32).collect(),
            qzeros: (0..inp / 128 * out / 8).map(|_| next() as i32).collect(),
            scales: FloatVec::F16(vec![f16::from_f32(0.01); inp / 128 * out]),
            bias: None,
        };
        weights.push(("awq_4bit_g128_f16", QuantWeight::Awq(layer)));
    }
    {
        use quant_kernels::fp8::{Fp8Format, Fp8Layer, Fp8Layout};
        let l = Fp8Layout::block(out, inp, 128, 128).unwrap();
        let (sr, sc) = l.scale_shape();
        let layer = Fp8Layer {
            layout: l,
            experts: 1,
            format: Fp8Format::E4M3,
            codes: (0..out * inp).map(|_| (next() as u8) & 0x7e).collect(),
            scales: FloatVec::F32(vec![1e-2; sr * sc]),
            bias: None,
        };
        weights.push(("fp8_e4m3_block128", QuantWeight::Fp8(layer)));
    }
    {
        use quant_kernels::intx::{Granularity, Int4Tensor, Int8Tensor};
        let q = (0..out * inp).map(|_| ((next() % 255) as i32 - 127) as i8).collect();
        let t = Int8Tensor {
            rows: out,
            cols: inp,
            granularity: Granularity::PerChannel,
            q,
            scales: vec![1e-3; out],
        };
        weights.push(("int8_per_channel", QuantWeight::Int8(t)));
        let t = Int4Tensor {
            rows: out,
            cols: inp,
            group: 32,
            packed: (0..out * inp / 2).map(|_| next() as u8).collect(),
            scales: vec![1e-2; out * inp / 32],
            zeros: (0..out * inp / 32).map(|_| (next() % 16) as u8).collect(),
        };
        weights.push(("int4_g32", QuantWeight::Int4(t)));
    }
    let mut g = c.benchmark_group("linear_4096x14336_cuda");
    g.sample_size(20).warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(1));
    {
        // The device copy of the 4-bit weight's bytes (out * in / 2).
        let n = out * inp / 2;
        let mut pairs = Rotation::new(2 * n, |_| (gpu.zeros::<u8>(n).unwrap(), gpu.zeros::<u8>(n).unwrap()));
        g.throughput(Throughput::Bytes(2 * n as u64));
        g.bench_function(BenchmarkId::new("memcpy_dtod_4bit_bytes", "cuda"), |b| {
            b.iter_custom(|iters| {
                gpu_timed(&gpu, iters, || {
                    let (src, dst) = pairs.next();
                    gpu.stream().memcpy_dtod(src, dst).unwrap();
                })
            })
        });
    }
    const BATCHES: [usize; 5] = [1, 8, 16, 64, 256];
    // One bench of `batch` rows through the rotation's layers (x and y stay: a model's
    // activations are fresh in L2, its weights are not).
    fn bench_layers(
        g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
        gpu: &Gpu,
        id: String,
        layers: &mut Rotation<DeviceQuantLinear>,
        batch: usize,
    ) {
        let l0 = &layers.sets[0];
        // The GEMM's geometry beside the times (scripts/gpu_table.py reads it).
        if let Some(p) = l0.gemm_plan(batch) {
            let (warps, (tr, tc)) = (p.tiles * p.kslices, p.tile);
            eprintln!(
                "  plan {id}: {} {tr}x{tc} tiles {} x {} slices = {warps} warps, wave {}",
                p.entry, p.tiles, p.kslices, p.wave
            );
        }
        let xd = gpu.upload(&vec![0.5f32; batch * l0.in_features()]).unwrap();
        let mut yd = gpu.zeros::<f32>(batch * l0.out_features()).unwrap();
        g.bench_function(BenchmarkId::new(id, "cuda"), |b| {
            b.iter_custom(|iters| {
                gpu_timed(gpu, iters, || layers.next().forward_into(gpu, &xd, batch, &mut yd).unwrap())
            })
        });
    }
    for (name, w) in &weights {
        // Enough copies of the layer that each call reads its weight from DRAM, not L2.
        let mut layers = Rotation::new(w.stored_bytes(), |_| DeviceQuantLinear::new(&gpu, w).unwrap());
        let kind = layers.sets[0].gemm_kind();
        eprintln!("{name}: GEMM {kind:?}, {} copies", layers.sets.len());
        g.throughput(Throughput::Bytes(w.stored_bytes() as u64));
        let act_order = name.contains("act_order");
        // Act-order: decode, a short prompt and a long one (256 rows: one gather, one GEMM).
        for batch in BATCHES.into_iter().filter(|&b| !act_order || b == 1 || b == 16 || b == 256) {
            bench_layers(&mut g, &gpu, format!("{name}_batch{batch}"), &mut layers, batch);
        }
        // Batches 64 and 256 on the 32-row tiles instead of the wide GEMM, where the layer has
        // it; batches 1 and 8 on the group-scaled GEMM instead of the GEMV, and the other GEMM
        // family on the same layer (the rounding kernel), where the layer has them.
        if layers.sets[0].has_wide_gemm() && !act_order {
            layers.sets.iter_mut().for_each(|l| l.set_gemm_wide_min_batch(usize::MAX));
            for batch in [64, 256] {
                bench_layers(&mut g, &gpu, format!("{name}_narrow_batch{batch}"), &mut layers, batch);
            }
            layers
                .sets
                .iter_mut()
                .for_each(|l| l.set_gemm_wide_min_batch(quant_kernels::cuda::GEMM_WIDE_MIN_BATCH));
        }
        if kind == Some(GemmKind::GroupScaled) && !act_order {
            layers.sets.iter_mut().for_each(|l| l.set_gemm_min_batch(1));
            for batch in [1, 8] {
                bench_layers(&mut g, &gpu, format!("{name}_gemm_batch{batch}"), &mut layers, batch);
            }
            layers.sets.iter_mut().for_each(|l| l.set_gemm_min_batch(quant_kernels::cuda::GEMM_MIN_BATCH));
            // Batch 16 with K split into fewer slices than the rule's (16 here): what split K's
            // partial sums cost against the GPU it fills.
            for slices in [4, 8] {
                layers.sets.iter_mut().for_each(|l| l.set_gemm_max_slices(slices));
                bench_layers(&mut g, &gpu, format!("{name}_slices{slices}_batch16"), &mut layers, 16);
            }
            layers.sets.iter_mut().for_each(|l| l.set_gemm_max_slices(usize::MAX));
            for l in layers.sets.iter_mut() {
                l.set_gemm_min_batch(quant_kernels::cuda::GEMM_MIN_BATCH);
                l.set_gemm_kind(&gpu, GemmKind::Rounded).unwrap();
            }
            for batch in BATCHES.into_iter().filter(|&b| b >= quant_kernels::cuda::GEMM_MIN_BATCH) {
                bench_layers(&mut g, &gpu, format!("{name}_rounded_batch{batch}"), &mut layers, batch);
            }
        }
    }
    match Cublas::new(&gpu) {
        Ok(blas) => {
            let wf: Vec<f16> = weights[0].1.dequantize(Parallelism::RAYON).unwrap();
            let mut wds = Rotation::new(2 * wf.len(), |_| gpu.upload(&wf).unwrap());
            g.throughput(Throughput::Bytes(2 * (out * inp) as u64));
            for batch in BATCHES {
                let xd = gpu.upload(&vec![f16::from_f32(0.5); batch * inp]).unwrap();
                let mut yd = gpu.zeros::<f16>(batch * out).unwrap();
                g.bench_function(BenchmarkId::new(format!("cublas_f16_batch{batch}"), "cuda"), |b| {
                    b.iter_custom(|iters| {
                        gpu_timed(&gpu, iters, || {
                            blas.gemm_f16(wds.next(), &xd, &mut yd, batch, out, inp).unwrap()
                        })
                    })
                });
            }
        }
        Err(e) => eprintln!("cuBLAS baseline skipped: {e}"),
    }
    g.finish();
}

#[cfg(not(feature = "cuda"))]
fn cuda_group(_: &mut Criterion) {}

#[cfg(not(feature = "cuda"))]
fn cuda_linear_group(_: &mut Criterion) {}

fn announce(_: &mut Criterion) {
    eprintln!("ISA: {}; rayon threads: {}", Isa::detect(), rayon::current_num_threads());
}

criterion_group!(
    benches,
    announce,
    out_group::<f16>,
    out_group::<f32>,
    model_shape,
    gptq_group,
    awq_fp8_group,
    reference,
    cuda_group,
    cuda_linear_group
);
criterion_main!(benches);
