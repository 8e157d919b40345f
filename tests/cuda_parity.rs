//! GPU kernels (feature `cuda`).
//!
//! * CPU-only: every entry the Rust launch table names is a `.entry` of the embedded PTX with the
//!   expected parameter count, and the PTX targets the stated ISA version and architecture.
//! * On a GPU (skipped with a printed reason when no driver or device is present): the real
//!   kernels equal the CPU reference for every width x element type x axis over a shape table.
#![cfg(feature = "cuda")]

mod common;

use common::{Rng, layer};
use half::{bf16, f16};
use quant_kernels::cuda::{self, CudaElem, Gpu, PtxFile};
use quant_kernels::error::{CudaError, KernelError};
use quant_kernels::gptq::{self, GptqLayout, ZeroFormat};
use quant_kernels::hqq::{self, Axis, HqqLayout};
use quant_kernels::pack::Word;
use quant_kernels::{B1, B2, B3, B4, B8, Error, Packing};

/// `(name, number of .param)` of every `.entry` in a PTX text.
fn ptx_entries(ptx: &str) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let mut lines = ptx.lines();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.trim().strip_prefix(".visible .entry ") {
            let name = rest.trim_end_matches('(').to_owned();
            let mut params = 0;
            for l in lines.by_ref() {
                let l = l.trim();
                if l.starts_with(".param") {
                    params += 1;
                }
                if l.starts_with(')') {
                    break;
                }
            }
            out.push((name, params));
        }
    }
    out
}

#[test]
fn launch_table_matches_the_embedded_ptx() {
    for file in PtxFile::ALL {
        let ptx = file.source();
        assert!(ptx.contains("\n.version 8.4\n"), "{file:?}: PTX ISA must be 8.4 (NVRTC 12.4)");
        assert!(ptx.contains("\n.target sm_80\n"), "{file:?}: minimum architecture sm_80");
        // The driver JIT-compiles a whole module the first time one of its entries loads.
        assert!(ptx.len() < 2 << 20, "{file:?}: {} bytes of PTX, over 2 MiB: split the module", ptx.len());
        let entries = ptx_entries(ptx);
        let wanted = file.entries();
        assert!(!wanted.is_empty());
        for (name, params) in wanted {
            let found = entries.iter().find(|(n, _)| *n == name);
            assert_eq!(found.map(|e| e.1), Some(params), "{file:?}: entry {name}");
        }
    }
}

#[test]
fn no_driver_is_an_error_not_a_panic() {
    match Gpu::new(0) {
        Ok(_) => assert!(cuda::driver_present()),
        Err(Error::Cuda(CudaError::CudaUnavailable)) => assert!(!cuda::driver_present()),
        Err(Error::Cuda(CudaError::Cuda(e))) => eprintln!("driver present, no usable device: {e:?}"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// The GPU, or `None` (the test skips, saying why) when there is none; with `QK_REQUIRE_GPU` set
/// (scripts/gpu_check.sh run) a missing GPU fails the test instead.
fn gpu() -> Option<Gpu> {
    match Gpu::new(0) {
        Ok(g) => Some(g),
        Err(e) if std::env::var_os("QK_REQUIRE_GPU").is_some() => panic!("QK_REQUIRE_GPU is set but: {e}"),
        Err(e) => {
            eprintln!("skipping GPU parity: {e}");
            None
        }
    }
}

fn parity<P: Packing, T: CudaElem>(gpu: &Gpu, rows: usize, cols: usize, g: usize, axis: Axis, seed: u64)
where
    P::Word: quant_kernels::cuda::DeviceRepr,
{
    let layout = HqqLayout::new(rows, cols, g, axis).unwrap();
    let Ok((pr, pc)) = layout.packed_shape(P::BITS) else { return };
    let mut rng = Rng(seed);
    let words: Vec<P::Word> =
        (0..pr * pc).map(|_| P::Word::from_bits(rng.next_u64() as u32 & 0x3fff_ffff)).collect();
    let s: Vec<T> = (0..layout.groups()).map(|_| T::from_f32(rng.f32_in(-0.1, 0.1))).collect();
    let z: Vec<T> = (0..layout.groups()).map(|_| T::from_f32(rng.f32_in(0.0, 16.0))).collect();
    let mut want = vec![T::default(); layout.numel()];
    hqq::dequantize_reference_into::<P, T, T>(&words, &s, &z, &layout, &mut want).unwrap();
    let got = cuda::hqq_dequant_cuda_host::<P, T>(gpu, &words, &s, &z, &layout).unwrap();
    let same = got.iter().zip(&want).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
    assert!(same, "{}-bit {rows}x{cols} g{g} {axis:?} {}", P::BITS.get(), T::DTYPE);
}

fn all_widths<T: CudaElem>(gpu: &Gpu, rows: usize, cols: usize, g: usize, axis: Axis) {
    parity::<B8, T>(gpu, rows, cols, g, axis, 1);
    parity::<B4, T>(gpu, rows, cols, g, axis, 2);
    parity::<B3, T>(gpu, rows, cols, g, axis, 3);
    parity::<B2, T>(gpu, rows, cols, g, axis, 4);
    parity::<B1, T>(gpu, rows, cols, g, axis, 5);
}

#[test]
fn hqq_dequant_matches_the_cpu_reference() {
    let Some(gpu) = gpu() else { return };
    eprintln!("GPU: {}", gpu.name().unwrap_or_default());
    for (rows, cols, g) in [
        (0, 64, 64),
        (1, 1, 1),
        (7, 13, 7),
        (24, 40, 8),
        (17, 48, 16),
        (16, 4104, 4104),
        (96, 2080, 320),
        (4096, 4096, 64),
    ] {
        for axis in [Axis::Zero, Axis::One] {
            all_widths::<f32>(&gpu, rows, cols, g, axis);
            all_widths::<f16>(&gpu, rows, cols, g, axis);
            all_widths::<bf16>(&gpu, rows, cols, g, axis);
        }
    }
    // Wrong lengths are rejected before any launch.
    let layout = HqqLayout::new(8, 16, 8, Axis::Zero).unwrap();
    let e = cuda::hqq_dequant_cuda_host::<B4, f32>(&gpu, &[0u8; 63], &[0.0; 16], &[0.0; 16], &layout);
    assert_eq!(e, Err(Error::Kernel(KernelError::LengthMismatch { what: "packed", expected: 64, got: 63 })));
}

fn gptq_parity<T: CudaElem>(gpu: &Gpu, k: usize, n: usize, bits: u8, g: i64, act: bool, f: ZeroFormat) {
    let l = GptqLayout::new(k, n, bits, g).unwrap();
    let x = layer(&l, act, &mut Rng(k as u64 + bits as u64));
    let s: Vec<T> = x.scales.iter().map(|&v| T::from_f32(v)).collect();
    let mut want = vec![T::default(); k * n];
    gptq::gptq_dequantize_reference_into(&x.qweight, &s, &x.qzeros, Some(&x.g_idx), f, &l, &mut want)
        .unwrap();
    let got = cuda::gptq_dequantize_cuda_host(gpu, &x.qweight, &s, &x.qzeros, Some(&x.g_idx), f, &l).unwrap();
    let same = got.iter().zip(&want).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
    assert!(same, "gptq {bits}-bit K{k} N{n} g{g} act {act} {f:?} {}", T::DTYPE);
}

#[test]
fn gptq_dequant_matches_the_cpu_reference() {
    let Some(gpu) = gpu() else { return };
    // 8-bit with N = 36: the kernel's 4-column path.
    let table = [2u8, 3, 4, 8]
        .into_iter()
        .flat_map(|b| {
            [(32, 32, -1i64), (64, 96, 16), (128, 160, 128), (4096, 4096, 128)].map(|(k, n, g)| (b, k, n, g))
        })
        .chain([(8u8, 64usize, 36usize, 16i64)]);
    for (bits, k, n, g) in table {
        {
            for (act, f) in [(false, ZeroFormat::V1), (true, ZeroFormat::V2), (true, ZeroFormat::V1)] {
                gptq_parity::<f32>(&gpu, k, n, bits, g, act, f);
                gptq_parity::<f16>(&gpu, k, n, bits, g, act, f);
                gptq_parity::<bf16>(&gpu, k, n, bits, g, act, f);
            }
        }
    }
    // A g_idx value outside 0..G never reaches the device.
    let l = GptqLayout::new(64, 32, 4, 32).unwrap();
    let mut g_idx = l.default_g_idx();
    g_idx[3] = 7;
    let e = cuda::DeviceGIdx::upload(&gpu, Some(&g_idx), &l).unwrap_err();
    assert_eq!(e, Error::Kernel(KernelError::GroupIndex { index: 3, value: 7, groups: 2 }));
}

/// |got - want| <= 1e-5 * sum |w x| (f32 accumulation against the f64 reference).
fn close(got: &[f32], want: &[f64], scale: &[f64], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, ((g, w), s)) in got.iter().zip(want).zip(scale).enumerate() {
        assert!((*g as f64 - w).abs() <= 1e-5 * s + 1e-30, "{what}[{i}]: {g} vs {w} (scale {s})");
    }
}

fn hqq_gemv_case<T: CudaElem>(gpu: &Gpu, rows: usize, cols: usize, g: usize) {
    let layout = HqqLayout::new(rows, cols, g, Axis::One).unwrap();
    let (pr, pc) = layout.packed_shape(quant_kernels::Bits::B4).unwrap();
    let mut rng = Rng((rows * cols) as u64);
    let words: Vec<u8> = (0..pr * pc).map(|_| rng.next_u64() as u8).collect();
    let s: Vec<T> = (0..layout.groups()).map(|_| T::from_f32(rng.f32_in(-0.1, 0.1))).collect();
    let z: Vec<T> = (0..layout.groups()).map(|_| T::from_f32(rng.f32_in(0.0, 15.0))).collect();
    let x: Vec<f32> = (0..cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let mut w = vec![0f32; rows * cols];
    hqq::dequantize_reference_into::<B4, T, f32>(&words, &s, &z, &layout, &mut w).unwrap();
    let want: Vec<f64> =
        w.chunks(cols).map(|r| r.iter().zip(&x).map(|(a, b)| *a as f64 * *b as f64).sum()).collect();
    let scale: Vec<f64> =
        w.chunks(cols).map(|r| r.iter().zip(&x).map(|(a, b)| (*a as f64 * *b as f64).abs()).sum()).collect();
    let got = cuda::hqq_gemv_cuda_host(gpu, &words, &s, &z, &layout, &x).unwrap();
    close(&got, &want, &scale, &format!("hqq gemv {rows}x{cols} g{g} {}", T::DTYPE));
}

fn gptq_gemv_case<T: CudaElem>(gpu: &Gpu, k: usize, n: usize, g: i64, act: bool, f: ZeroFormat) {
    let l = GptqLayout::new(k, n, 4, g).unwrap();
    let x_ = layer(&l, act, &mut Rng(k as u64 ^ n as u64));
    let s: Vec<T> = x_.scales.iter().map(|&v| T::from_f32(v)).collect();
    let mut rng = Rng(7);
    let x: Vec<f32> = (0..k).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let mut w = vec![0f32; k * n];
    gptq::gptq_dequantize_reference_into(&x_.qweight, &s, &x_.qzeros, Some(&x_.g_idx), f, &l, &mut w)
        .unwrap();
    let want: Vec<f64> = (0..n).map(|c| (0..k).map(|r| w[r * n + c] as f64 * x[r] as f64).sum()).collect();
    let scale: Vec<f64> =
        (0..n).map(|c| (0..k).map(|r| (w[r * n + c] as f64 * x[r] as f64).abs()).sum()).collect();
    let got =
        cuda::gptq_gemv_cuda_host(gpu, &x_.qweight, &x_.qzeros, &s, Some(&x_.g_idx), &l, f, &x).unwrap();
    close(&got, &want, &scale, &format!("gptq gemv K{k} N{n} g{g} act {act} {}", T::DTYPE));
    if act {
        // Rows sorted by group, inputs gathered on the device: the same products.
        let (perm, sorted) = gptq::sort::group_order(&x_.g_idx, &l).unwrap();
        let qs = gptq::sort::permute_rows(&x_.qweight, &perm, &l).unwrap();
        let dperm = cuda::DevicePerm::upload(gpu, &perm).unwrap();
        let g_idx = cuda::DeviceGIdx::upload(gpu, Some(&sorted), &l).unwrap();
        let (qw, qz, sd, xd) = (
            gpu.upload(&qs).unwrap(),
            gpu.upload(&x_.qzeros).unwrap(),
            gpu.upload(&s).unwrap(),
            gpu.upload(&x).unwrap(),
        );
        let mut xs = gpu.zeros::<f32>(k).unwrap();
        let mut partial = gpu.zeros::<f32>(cuda::gptq_gemv_scratch_len(&l)).unwrap();
        let mut y = gpu.zeros::<f32>(n).unwrap();
        cuda::permute_inputs_cuda(gpu, &xd, &dperm, &mut xs).unwrap();
        cuda::gptq_gemv_cuda(gpu, &qw, &qz, &sd, &g_idx, &l, f, &xs, &mut partial, &mut y).unwrap();
        let got = gpu.download(&y).unwrap();
        close(&got, &want, &scale, &format!("sorted gptq gemv K{k} N{n} g{g} {}", T::DTYPE));
    }
}

#[test]
fn fused_gemv_matches_the_f64_reference() {
    let Some(gpu) = gpu() else { return };
    for (rows, cols, g) in [(2, 64, 64), (6, 40, 8), (30, 96, 32), (4096, 4096, 64), (4096, 14336, 64)] {
        hqq_gemv_case::<f16>(&gpu, rows, cols, g);
        hqq_gemv_case::<f32>(&gpu, rows, cols, g);
        hqq_gemv_case::<bf16>(&gpu, rows, cols, g);
    }
    for (k, n, g) in [(8, 8, -1i64), (64, 96, 16), (136, 40, 32), (4096, 4096, 128), (14336, 4096, 128)] {
        for (act, f) in [(false, ZeroFormat::V1), (true, ZeroFormat::V2)] {
            gptq_gemv_case::<f16>(&gpu, k, n, g, act, f);
            gptq_gemv_case::<bf16>(&gpu, k, n, g, act, f);
        }
    }
    let l = HqqLayout::new(8, 64, 64, Axis::Zero).unwrap();
    let e = cuda::hqq_gemv_cuda_host::<f32>(&gpu, &[0; 256], &[0.0; 8], &[0.0; 8], &l, &[0.0; 64]);
    assert_eq!(e, Err(Error::Kernel(KernelError::UnsupportedAxis(0))));
}

#[test]
fn awq_dequant_matches_the_cpu_reference() {
    use quant_kernels::awq::{self, AwqLayout};
    let Some(gpu) = gpu() else { return };
    for (k, n, g) in [(1, 8, 1), (64, 40, 16), (128, 64, 32), (4096, 4096, 128)] {
        let l = AwqLayout::new(k, n, g).unwrap();
        let mut rng = Rng(k as u64 * 3 + n as u64);
        let qw: Vec<i32> = (0..k * n / 8).map(|_| rng.next_u64() as i32).collect();
        let qz: Vec<i32> = (0..l.groups() * n / 8).map(|_| rng.next_u64() as i32).collect();
        let sf: Vec<f32> = (0..l.groups() * n).map(|_| rng.f32_in(-0.05, 0.05)).collect();
        fn one<T: CudaElem>(gpu: &Gpu, qw: &[i32], qz: &[i32], sf: &[f32], l: &AwqLayout) {
            let s: Vec<T> = sf.iter().map(|&v| T::from_f32(v)).collect();
            let mut want = vec![T::default(); l.k() * l.n()];
            awq::awq_dequantize_reference_into(qw, &s, qz, l, &mut want).unwrap();
            let got = cuda::awq_dequantize_cuda_host(gpu, qw, &s, qz, l).unwrap();
            let same = got.iter().zip(&want).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
            assert!(same, "awq K{} N{} {}", l.k(), l.n(), T::DTYPE);
        }
        one::<f32>(&gpu, &qw, &qz, &sf, &l);
        one::<f16>(&gpu, &qw, &qz, &sf, &l);
        one::<bf16>(&gpu, &qw, &qz, &sf, &l);
    }
}

#[test]
fn fp8_dequant_matches_the_cpu_reference() {
    use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
    let Some(gpu) = gpu() else { return };
    for (rows, cols, br, bc) in
        [(1, 1, 128, 128), (300, 260, 128, 128), (7, 13, 4, 4), (5, 24, 2, 3), (4096, 4096, 128, 128)]
    {
        let l = Fp8Layout::block(rows, cols, br, bc).unwrap();
        let mut rng = Rng((rows * cols) as u64);
        let codes: Vec<u8> = (0..rows * cols).map(|_| rng.next_u64() as u8).collect();
        let (sr, sc) = l.scale_shape();
        let scales: Vec<f32> = (0..sr * sc).map(|_| rng.f32_in(1e-4, 1e-2)).collect();
        for f in [Fp8Format::E4M3, Fp8Format::E5M2] {
            fn one<T: CudaElem>(gpu: &Gpu, codes: &[u8], f: Fp8Format, s: &[f32], l: &Fp8Layout) {
                let mut want = vec![T::default(); codes.len()];
                fp8::fp8_dequantize_reference_into(codes, s, f, l, &mut want).unwrap();
                let got: Vec<T> = cuda::fp8_dequantize_cuda_host(gpu, codes, s, f, l).unwrap();
                // Bit-exact, except that a NaN code gives a NaN whose payload the GPU canonicalizes
                // (its FMUL returns 0x7fffffff), where the CPU keeps torch's payload.
                let same = got.iter().zip(&want).all(|(a, b)| {
                    let (a, b) = (a.to_f32(), b.to_f32());
                    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
                });
                assert!(same, "fp8 {f:?} {}x{} {}", l.rows(), l.cols(), T::DTYPE);
            }
            one::<f32>(&gpu, &codes, f, &scales, &l);
            one::<f16>(&gpu, &codes, f, &scales, &l);
            one::<bf16>(&gpu, &codes, f, &scales, &l);
        }
    }
}

/// `DeviceQuantLinear` (the fused GEMV family, every scheme and width; the tensor-core GEMM from
/// 16 rows where the scheme has one) against the f64 product of the scheme's dequantization
/// oracle, for batches of 1, 3, 8, 11 (two GEMV passes), 16, 40 and 70 rows (70 also off the wide
/// GEMM where the layer has it; 300 on small act-order GEMM layers: two launches), plus bias
/// where the layer has one. The GEMV within 1e-5 of sum |w x|; the GEMM within gemm.cuh's f16 bound.
/// Per weight, a bound on |s| (|q| + |z|) (scale, code, zero point): |w(q_max) - w(0)| + |w(0)|,
/// from the dequantization with every code at its largest value and at zero; FP8 (no zero
/// point) |w|.
fn code_magnitudes(w: &quant_kernels::QuantWeight) -> Vec<f32> {
    use quant_kernels::QuantWeight;
    use quant_kernels::hqq::PackedWords;
    let (out, inp) = w.shape();
    let dequant = |w: &QuantWeight| {
        let mut d = vec![0f32; out * inp];
        w.dequantize_reference_into(&mut d).unwrap();
        d
    };
    let filled = |all_ones: bool| {
        let mut f = w.clone();
        match &mut f {
            QuantWeight::Hqq(h) => match &mut h.packed.words {
                PackedWords::U8(v) => v.fill(if all_ones { 0xff } else { 0 }),
                PackedWords::I32(v) => v.fill(if all_ones { -1 } else { 0 }),
            },
            QuantWeight::Gptq(l) => l.qweight.fill(if all_ones { -1 } else { 0 }),
            QuantWeight::Awq(l) => l.qweight.fill(if all_ones { -1 } else { 0 }),
            _ => return None,
        }
        Some(dequant(&f))
    };
    match (filled(true), filled(false)) {
        (Some(hi), Some(lo)) => hi.iter().zip(&lo).map(|(a, b)| (a - b).abs() + b.abs()).collect(),
        _ => dequant(w).iter().map(|v| v.abs()).collect(),
    }
}

fn device_linear_case(gpu: &Gpu, w: quant_kernels::QuantWeight, what: &str) {
    let (out, inp) = w.shape();
    let mut dense = vec![0f32; out * inp];
    w.dequantize_reference_into(&mut dense).unwrap();
    let bias: Option<Vec<f32>> = match &w {
        quant_kernels::QuantWeight::Gptq(l) => l.bias.as_ref().map(|b| b.to_f32()),
        quant_kernels::QuantWeight::Awq(l) => l.bias.as_ref().map(|b| b.to_f32()),
        quant_kernels::QuantWeight::Fp8(l) => l.bias.as_ref().map(|b| b.to_f32()),
        _ => None,
    };
    let mag = code_magnitudes(&w);
    let mut layer = cuda::DeviceQuantLinear::new(gpu, &w).unwrap_or_else(|e| panic!("{what}: {e}"));
    let mut rng = Rng(out as u64 * 13 + inp as u64);
    let gemm = layer.has_gemm();
    // Every batch on the layer's own GEMM family; where that is the group-scaled one, batches 1
    // and 5 on it too (set_gemm_min_batch), then GEMM batches on the rounding family.
    let own = layer.gemm_kind();
    // Runs (batch, family, GEMM from, x beyond f16's range in some rows, wide GEMM from, most
    // slices of K).
    let (wide, any) = (cuda::GEMM_WIDE_MIN_BATCH, usize::MAX);
    let mut runs: Vec<(usize, Option<cuda::GemmKind>, usize, bool, usize, usize)> =
        [1usize, 3, 8, 11, 16, 40, 70].map(|b| (b, own, cuda::GEMM_MIN_BATCH, false, wide, any)).to_vec();
    if gemm {
        runs.push((40, own, cuda::GEMM_MIN_BATCH, true, wide, any));
    }
    if gemm && what.contains("act true") && inp <= 256 {
        // Act-order GEMM launches take 256 rows: a second launch, its rows gathered from 256 on.
        runs.push((300, own, cuda::GEMM_MIN_BATCH, false, wide, any));
    }
    if layer.has_wide_gemm() {
        // Batch 70 on the wide GEMM with x beyond f16, and on the 32-row tiles.
        runs.extend([
            (70, own, cuda::GEMM_MIN_BATCH, true, wide, any),
            (70, own, cuda::GEMM_MIN_BATCH, false, usize::MAX, any),
        ]);
    }
    if own == Some(cuda::GemmKind::GroupScaled) {
        runs.extend([1, 5].map(|b| (b, own, 1, false, wide, any)));
        // Split K capped (set_gemm_max_slices): one slice, and an odd count.
        runs.extend([1, 3].map(|s| (16, own, cuda::GEMM_MIN_BATCH, false, wide, s)));
        runs.extend(
            [(16, false), (40, false), (40, true)]
                .map(|(b, big)| (b, Some(cuda::GemmKind::Rounded), cuda::GEMM_MIN_BATCH, big, wide, any)),
        );
    } else if gemm {
        // `new` takes the group-scaled family wherever the layer allows it.
        assert!(
            matches!(
                layer.set_gemm_kind(gpu, cuda::GemmKind::GroupScaled),
                Err(Error::Cuda(CudaError::NoKernel(_)))
            ),
            "{what}"
        );
    }
    for (batch, kind, from, big, wide_from, slices) in runs {
        if let Some(kind) = kind {
            layer.set_gemm_kind(gpu, kind).unwrap();
        }
        layer.set_gemm_min_batch(from);
        layer.set_gemm_wide_min_batch(wide_from);
        layer.set_gemm_max_slices(slices);
        let on_gemm = gemm && batch >= from;
        // The plan names the entry the batch runs, and split K stays within one wave.
        let plan = layer.gemm_plan(batch);
        assert_eq!(plan.is_some(), on_gemm, "{what} batch {batch}");
        if let Some(p) = &plan {
            let grouped = layer.gemm_kind() == Some(cuda::GemmKind::GroupScaled);
            let wide_run = grouped && layer.has_wide_gemm() && p.rows >= wide_from;
            assert_eq!(p.entry.contains("_gemmw_"), wide_run, "{what} batch {batch}: {p:?}");
            assert!(
                p.kslices == 1 || (grouped && p.tiles * p.kslices <= p.wave && p.kslices <= slices),
                "{what} batch {batch}: {p:?}"
            );
        }
        let mut x: Vec<f32> = (0..batch * inp).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        if big {
            // The GEMMs' scaled re-runs: f16 would round these to infinities.
            for (i, v) in x.iter_mut().enumerate() {
                if (i / inp) % 3 == 1 && i % 5 == 0 {
                    *v *= [1e5, -3e6, 2f32.powi(30)][i % 3];
                }
            }
        }
        let xmax = x.iter().fold(0f64, |a, v| a.max(v.abs() as f64));
        let got = layer.forward_host(gpu, &x, batch).unwrap();
        let (mut want, mut scale) = (Vec::new(), Vec::new());
        for b in 0..batch {
            for o in 0..out {
                let row = &dense[o * inp..(o + 1) * inp];
                let xb = &x[b * inp..(b + 1) * inp];
                let bo = bias.as_ref().map_or(0.0, |v| v[o] as f64);
                want.push(row.iter().zip(xb).map(|(a, c)| *a as f64 * *c as f64).sum::<f64>() + bo);
                scale.push(
                    row.iter().zip(xb).map(|(a, c)| (*a as f64 * *c as f64).abs()).sum::<f64>() + bo.abs(),
                );
            }
        }
        if on_gemm && layer.gemm_kind() == Some(cuda::GemmKind::GroupScaled) {
            // ptx/gemm.cuh's group-scaled bound: x's f16 rounding, its subnormals, and the f32
            // group sums, bounded through |s| (|q| + |z|) <= mag.
            let u = 2f64.powi(-11);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                let (b, o) = (i / out, i % out);
                let xb = &x[b * inp..(b + 1) * inp];
                let (row, mrow) = (&dense[o * inp..(o + 1) * inp], &mag[o * inp..(o + 1) * inp]);
                let w1: f64 = row.iter().map(|v| v.abs() as f64).sum();
                let t: f64 = mrow.iter().zip(xb).map(|(m, c)| *m as f64 * c.abs() as f64).sum();
                let bound = u * scale[i]
                    + 2f64.powi(-25) * w1
                    + 2.0 * inp as f64 * 2f64.powi(-24) * (1.0 + 2.0 * u) * t
                    + 2f64.powi(-39) * xmax * w1;
                assert!((*g as f64 - w).abs() <= bound, "{what} gemmg batch {batch} [{i}]: {g} vs {w}");
            }
        } else if on_gemm {
            let u = 2f64.powi(-11);
            for (i, ((g, w), s)) in got.iter().zip(&want).zip(&scale).enumerate() {
                let o = i % out;
                let w1: f64 = dense[o * inp..(o + 1) * inp].iter().map(|v| v.abs() as f64).sum();
                let bound = (2.0 * u + u * u + inp as f64 * 2f64.powi(-24)) * s
                    + inp as f64 * 2f64.powi(-25) * xmax
                    + 2f64.powi(-39) * xmax * w1;
                assert!((*g as f64 - w).abs() <= bound, "{what} gemm batch {batch} [{i}]: {g} vs {w}");
            }
        } else {
            close(&got, &want, &scale, &format!("{what} batch {batch}"));
        }
    }
}

#[test]
fn device_quant_linear_matches_the_f64_reference() {
    use quant_kernels::awq::{AwqLayer, AwqLayout};
    use quant_kernels::fp8::Fp8Format;
    use quant_kernels::intx::{self, Granularity};
    use quant_kernels::{Parallelism, QuantWeight};
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(99);
    // One large layer per scheme (the launch geometry of a real model); small ones for the rest.
    for (out, inp, g) in [(64, 256, 64), (48, 96, 32), (1024, 4096, 64)] {
        for bits in [8u8, 4, 3, 2, 1] {
            for axis in [Axis::One, Axis::Zero] {
                for dtype in 0..3 {
                    if out == 1024 && (dtype != 1 || (bits != 4 && bits != 3)) {
                        continue;
                    }
                    let Some(h) = common::hqq_weight(out, inp, g, axis, bits, dtype, &mut rng) else {
                        continue;
                    };
                    device_linear_case(
                        &gpu,
                        QuantWeight::Hqq(h),
                        &format!("hqq {bits}b {out}x{inp} {axis:?} {dtype}"),
                    );
                }
            }
        }
    }
    for (k, n, g) in [(256usize, 64usize, 32i64), (128, 96, -1), (4096, 1024, 128)] {
        for bits in [2u8, 3, 4, 8] {
            for act in [false, true] {
                let mut l = common::gptq_layer_f32(GptqLayout::new(k, n, bits, g).unwrap(), act, &mut rng);
                l.bias = Some(quant_kernels::FloatVec::F32((0..n).map(|i| i as f32 * 0.01).collect()));
                device_linear_case(&gpu, QuantWeight::Gptq(l), &format!("gptq {bits}b K{k} N{n} act {act}"));
            }
        }
    }
    for (k, n, gs) in [(128usize, 64usize, 32usize), (96, 32, 12), (4096, 1024, 128)] {
        let layout = AwqLayout::new(k, n, gs).unwrap();
        let qweight = (0..k * n / 8).map(|_| rng.next_u64() as i32).collect();
        let qzeros = (0..k / gs * n / 8).map(|_| rng.next_u64() as i32).collect();
        let scales = common::float_vec((0..k / gs * n).map(|_| rng.f32_in(-0.02, 0.02)).collect(), 1);
        let l = AwqLayer { layout, qweight, qzeros, scales, bias: None };
        device_linear_case(&gpu, QuantWeight::Awq(l), &format!("awq K{k} N{n} g{gs}"));
    }
    for (format, mask) in [(Fp8Format::E4M3, 0x7e), (Fp8Format::E5M2, 0x7b)] {
        for block in [Some((128, 128)), None, Some((3, 12))] {
            let l = common::fp8_layer(
                256,
                512,
                block,
                1,
                format,
                mask,
                &mut |r| r.f32_in(1e-3, 1e-2),
                0,
                &mut rng,
            );
            device_linear_case(&gpu, QuantWeight::Fp8(l), &format!("fp8 {format:?} {block:?}"));
        }
    }
    let wf: Vec<f32> = (0..512 * 1024).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    for gran in [Granularity::PerChannel, Granularity::PerTensor] {
        let t = intx::quantize_int8(&wf, 512, 1024, gran, Parallelism::SERIAL).unwrap();
        device_linear_case(&gpu, QuantWeight::Int8(t), &format!("int8 {gran:?}"));
    }
    for group in [32, 6] {
        let t = intx::quantize_int4(&wf[..512 * 96], 512, 96, group, Parallelism::SERIAL).unwrap();
        device_linear_case(&gpu, QuantWeight::Int4(t), &format!("int4 g{group}"));
    }
    let dense = QuantWeight::dense(4, 8, vec![0f32; 32]);
    assert_eq!(
        cuda::DeviceQuantLinear::new(&gpu, &dense).unwrap_err(),
        Error::Cuda(CudaError::NoKernel("dense weights"))
    );
}

/// Layers on one `Gpu` share its scratch (gathered act-order inputs, partial sums, split-K
/// counters): interleaved forward calls equal each layer's results on a `Gpu` of its own bit for
/// bit (every path sums in a fixed order, so a result does not depend on what ran before it).
/// The first layer (3-bit GPTQ: the GEMV's partial sums and counters, no GEMM) reserves little;
/// the larger ones grow every buffer of the scratch while its first call, which uses them, may
/// still be running (the old buffers are freed in stream order).
#[test]
fn layers_sharing_a_gpu_s_scratch_equal_layers_alone() {
    use quant_kernels::QuantWeight;
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng(7);
    let small = common::gptq_layer_f32(GptqLayout::new(512, 256, 3, 128).unwrap(), false, &mut rng);
    // Act-order GPTQ: gathered inputs before its partial sums, column-skeleton counters, split K.
    let act = common::gptq_layer_f32(GptqLayout::new(4096, 1024, 4, 128).unwrap(), true, &mut rng);
    let hqq = QuantWeight::Hqq(common::hqq_weight(1024, 4096, 64, Axis::One, 4, 1, &mut rng).unwrap());
    let weights = [QuantWeight::Gptq(small), QuantWeight::Gptq(act), hqq];
    let batches = [1usize, 3, 16, 70, 8];
    let xs: Vec<Vec<Vec<f32>>> = weights
        .iter()
        .map(|w| {
            batches.iter().map(|&b| (0..b * w.shape().1).map(|_| rng.f32_in(-1.0, 1.0)).collect()).collect()
        })
        .collect();
    // Each layer alone, on a Gpu of its own.
    let alone: Vec<Vec<Vec<f32>>> = weights
        .iter()
        .zip(&xs)
        .map(|(w, xw)| {
            let own = Gpu::new(0).unwrap();
            let mut l = cuda::DeviceQuantLinear::new(&own, w).unwrap();
            batches.iter().zip(xw).map(|(&b, x)| l.forward_host(&own, x, b).unwrap()).collect()
        })
        .collect();
    // The small layer's call queued, not waited for; then the larger layers grow the scratch.
    let mut layers = vec![cuda::DeviceQuantLinear::new(&gpu, &weights[0]).unwrap()];
    assert!(!layers[0].has_gemm());
    let (b, x0) = (batches[3], gpu.upload(&xs[0][3]).unwrap());
    let mut y0 = gpu.zeros::<f32>(b * 256).unwrap();
    layers[0].forward_into(&gpu, &x0, b, &mut y0).unwrap();
    for w in &weights[1..] {
        layers.push(cuda::DeviceQuantLinear::new(&gpu, w).unwrap());
    }
    assert!(gpu.download(&y0).unwrap() == alone[0][3], "the queued call");
    for (bi, &b) in batches.iter().enumerate() {
        for (li, l) in layers.iter_mut().enumerate().rev() {
            let got = l.forward_host(&gpu, &xs[li][bi], b).unwrap();
            assert!(got == alone[li][bi], "layer {li} batch {b}");
        }
    }
}
