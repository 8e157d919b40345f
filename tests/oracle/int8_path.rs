//! `QuantLinear` with `Activations::Int8` against the f64 oracle, one harness over a table of
//! schemes and shapes (GPTQ 2/3/4/8-bit plain and act-order with v1/v2 zeros, AWQ, HQQ 1-4- and
//! 8-bit axis 1 with f16 and bf16 parameters, HQQ 2/4/8-bit axis 0, int4 with f32 scales, int8 per channel and per
//! tensor), batches 1 to 33, every kernel (AVX-512
//! VNNI and AVX-VNNI where the CPU has them, and the portable one, forced by capping the ISA).
//!
//! Bound per output: `|y - y_ref| <= int8_error_bound + rounding`, the activation quantization's
//! documented bound plus f32 rounding of the per-block terms (`2 (k / 32 + 8) eps` of the terms'
//! magnitude). Also: serial == threaded bit for bit, a row's result does not depend on the batch
//! it is in, the error stays within llama.cpp's measured 6e-3 of max|y| for 8-bit activations,
//! and weights the path does not take are typed refusals.

use crate::common::Rng;
use half::{bf16, f16};
use quant_kernels::awq::{AwqLayer, AwqLayout};
use quant_kernels::error::KernelError;
use quant_kernels::gptq::ZeroFormat;
use quant_kernels::hqq::{Axis, HqqConfig, HqqWeight, quantize_hqq};
use quant_kernels::intx;
use quant_kernels::matmul::{Activations, q8};
use quant_kernels::{Error, FloatVec, Parallelism, QuantLinear, QuantWeight};

use crate::q8::paths;

fn check(name: &str, f32_layer: QuantLinear, batches: &[usize], rng: &mut Rng) {
    let layer = f32_layer.with_activations(Activations::Int8).unwrap();
    assert_eq!(layer.activations(), Activations::Int8);
    let (out, inp) = (layer.out_features(), layer.in_features());
    let max_b = *batches.iter().max().unwrap();
    let x: Vec<f32> = (0..max_b * inp).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let reference = layer.forward_reference(&x, max_b).unwrap();
    let magnitude = layer.magnitude_reference(&x, max_b).unwrap();
    let bound = layer.int8_error_bound(&x, max_b).unwrap().unwrap();
    let rounding = 2.0 * (inp / q8::BLOCK + 8) as f64 * f32::EPSILON as f64;
    for (path, serial, threaded) in paths() {
        let full: Vec<f32> = layer.forward(&x, max_b, threaded).unwrap();
        for &b in batches {
            let y: Vec<f32> = layer.forward(&x[..b * inp], b, threaded).unwrap();
            let ys: Vec<f32> = layer.forward(&x[..b * inp], b, serial).unwrap();
            let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&ys), "{name} {path}: threaded != serial at batch {b}");
            assert_eq!(bits(&y), bits(&full[..b * out]), "{name} {path}: rows depend on the batch ({b})");
        }
        let max_y = reference.iter().fold(0f64, |m, v| m.max(v.abs()));
        let mut worst = 0f64;
        for (i, &v) in full.iter().enumerate() {
            let err = (v as f64 - reference[i]).abs();
            let allowed = bound[i] + rounding * magnitude[i] + f64::MIN_POSITIVE;
            assert!(
                err <= allowed,
                "{name} {path} [{out}x{inp}] y[{}, {}] = {v}, reference {}, error {err:e} > {allowed:e}",
                i / out,
                i % out,
                reference[i]
            );
            worst = worst.max(err);
        }
        // llama.cpp's figure is over wide layers; with two or three blocks per output one
        // block's rounding can be a large share of a small max|y| (the bound above still holds).
        if inp >= 128 {
            assert!(worst <= 6e-3 * max_y, "{name} {path}: error {worst:e} of max|y| {max_y:e}");
        }
    }
}

fn gptq(k: usize, n: usize, g: i64, act: bool, format: ZeroFormat, rng: &mut Rng) -> QuantLinear {
    gptq_bits(k, n, 4, g, act, format, rng)
}

fn gptq_bits(
    k: usize,
    n: usize,
    bits: u8,
    g: i64,
    act: bool,
    format: ZeroFormat,
    rng: &mut Rng,
) -> QuantLinear {
    let mut layer = crate::matmul::gptq_layer(k, n, bits, g, act, format, rng);
    layer.bias = Some(FloatVec::F32((0..n).map(|_| rng.f32_in(-0.5, 0.5)).collect()));
    QuantLinear::from_gptq(layer).unwrap()
}

#[test]
fn gptq_and_awq_with_int8_activations() {
    let mut rng = Rng(91);
    // (K, N, group): one group, partial last tile of 16 outputs, act-order, K = 4096.
    for (k, n, g) in [(64, 16, -1i64), (128, 40, 32), (256, 104, 128), (4096, 64, 128)] {
        for act in [false, true] {
            for format in [ZeroFormat::V1, ZeroFormat::V2] {
                let q = gptq(k, n, g, act, format, &mut rng);
                check(&format!("gptq g{g} act {act} {format:?} {k}x{n}"), q, &[1, 2, 5, 9], &mut rng);
            }
        }
    }
    // 2- and 3-bit codes in the kernel's 4-bit fields (3-bit fields straddle GPTQ's words);
    // 8-bit codes in its 8-bit layout.
    for bits in [2u8, 3, 8] {
        for (k, n, g, act, format) in
            [(128, 64, 32, false, ZeroFormat::V1), (256, 96, 64, true, ZeroFormat::V2)]
        {
            let q = gptq_bits(k, n, bits, g, act, format, &mut rng);
            check(&format!("gptq {bits}-bit g{g} act {act} {format:?} {k}x{n}"), q, &[1, 3, 9], &mut rng);
        }
    }
    for (k, n, g) in [(64, 8, 32), (256, 264, 128)] {
        let l = AwqLayout::new(k, n, g).unwrap();
        let qweight = (0..k * n / 8).map(|_| rng.next_u64() as i32).collect();
        let qzeros = (0..l.groups() * n / 8).map(|_| rng.next_u64() as i32).collect();
        let scales =
            FloatVec::Bf16((0..l.groups() * n).map(|_| bf16::from_f32(rng.f32_in(0.001, 0.02))).collect());
        let layer = AwqLayer { layout: l, qweight, qzeros, scales, bias: None };
        check(&format!("awq {k}x{n} g{g}"), QuantLinear::from_awq(layer).unwrap(), &[1, 4, 33], &mut rng);
    }
}

#[test]
fn hqq_axis1_and_int4_with_int8_activations() {
    let mut rng = Rng(92);
    for (rows, cols, g) in [(16, 64, 64), (70, 256, 32), (48, 1024, 128)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        let h: HqqWeight = quantize_hqq(&w, rows, cols, &HqqConfig::new(4, g, Axis::One), Parallelism::RAYON)
            .unwrap()
            .into();
        // f32 parameters as quantized, then the same rounded to f16 and to bf16.
        for dtype in ["f32", "f16", "bf16"] {
            let mut h = h.clone();
            let conv = |v: &FloatVec| match dtype {
                "f16" => FloatVec::F16(v.to_f32().iter().map(|&v| f16::from_f32(v)).collect()),
                "bf16" => FloatVec::Bf16(v.to_f32().iter().map(|&v| bf16::from_f32(v)).collect()),
                _ => v.clone(),
            };
            (h.scales, h.zeros) = (conv(&h.scales), conv(&h.zeros));
            let q = QuantLinear::new(QuantWeight::Hqq(h), None).unwrap();
            check(&format!("hqq axis 1 g{g} {dtype} {rows}x{cols}"), q, &[1, 3, 8], &mut rng);
        }
        let t = intx::quantize_int4(&w, rows, cols, g, Parallelism::SERIAL).unwrap();
        let q = QuantLinear::new(QuantWeight::Int4(t), None).unwrap();
        check(&format!("int4 g{g} {rows}x{cols}"), q, &[1, 6], &mut rng);
    }
    // An odd number of int4 groups (9) stays on int4's own form, not HQQ's.
    let w: Vec<f32> = (0..3 * 96).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let t = intx::quantize_int4(&w, 3, 96, 32, Parallelism::SERIAL).unwrap();
    check("int4 g32 3x96", QuantLinear::new(QuantWeight::Int4(t), None).unwrap(), &[1, 6], &mut rng);
    // 1- to 3-bit HQQ codes in the kernel's 4-bit fields, 8-bit ones in its 8-bit layout.
    for bits in [1u8, 2, 3, 8] {
        let (rows, cols, g) = (40, 256, 64);
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        let h =
            quantize_hqq(&w, rows, cols, &HqqConfig::new(bits, g, Axis::One), Parallelism::RAYON).unwrap();
        let q = QuantLinear::new(QuantWeight::Hqq(h.into()), None).unwrap();
        check(&format!("hqq {bits}-bit axis 1 g{g} {rows}x{cols}"), q, &[1, 5], &mut rng);
    }
}

/// Axis 0: scales and zero points per input, shared by every `rows / group`-th row; the
/// activations are scaled per class of rows before they are quantized.
#[test]
fn hqq_axis0_with_int8_activations() {
    let mut rng = Rng(95);
    // (bits, rows, cols, group): one class, 4 classes of 32 rows, 3 classes of 64, K = 4096.
    for (bits, rows, cols, g) in
        [(4u8, 64, 256, 64), (4, 128, 256, 32), (8, 192, 512, 64), (2, 48, 128, 16), (4, 128, 4096, 64)]
    {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        let h: HqqWeight =
            quantize_hqq(&w, rows, cols, &HqqConfig::new(bits, g, Axis::Zero), Parallelism::RAYON)
                .unwrap()
                .into();
        for dtype in ["f32", "bf16"] {
            let mut h = h.clone();
            if dtype == "bf16" {
                let conv =
                    |v: &FloatVec| FloatVec::Bf16(v.to_f32().iter().map(|&v| bf16::from_f32(v)).collect());
                (h.scales, h.zeros) = (conv(&h.scales), conv(&h.zeros));
            }
            let q = QuantLinear::new(QuantWeight::Hqq(h), None).unwrap();
            check(&format!("hqq {bits}-bit axis 0 g{g} {dtype} {rows}x{cols}"), q, &[1, 3, 10], &mut rng);
        }
    }
}

#[test]
fn int8_weights_with_int8_activations() {
    let mut rng = Rng(94);
    for (rows, cols) in [(16, 32), (50, 256), (24, 4096)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        for gran in [intx::Granularity::PerChannel, intx::Granularity::PerTensor] {
            let mut t = intx::quantize_int8(&w, rows, cols, gran, Parallelism::SERIAL).unwrap();
            t.q[0] = -128; // the one code quantize_int8 never makes, still a valid int8
            let q = QuantLinear::new(QuantWeight::Int8(t), None).unwrap();
            check(&format!("int8 {gran:?} {rows}x{cols}"), q, &[1, 4, 9], &mut rng);
        }
    }
}

#[test]
fn int8_activations_refuse_what_they_cannot_take() {
    let mut rng = Rng(93);
    let refused = |q: QuantLinear| {
        matches!(
            q.with_activations(Activations::Int8),
            Err(Error::Kernel(KernelError::Int8Activations { .. }))
        )
    };
    assert!(refused(gptq(96, 32, 48, false, ZeroFormat::V1, &mut rng)), "groups of 48");
    let w: Vec<f32> = (0..32 * 64).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let h = quantize_hqq(&w, 32, 64, &HqqConfig::new(4, 64, Axis::Zero), Parallelism::RAYON).unwrap();
    assert!(refused(QuantLinear::new(QuantWeight::Hqq(h.into()), None).unwrap()), "HQQ axis 0, 32 rows, g64");
    let t = intx::quantize_int8(&w[..48 * 32], 32, 48, intx::Granularity::PerChannel, Parallelism::SERIAL)
        .unwrap();
    let q = QuantLinear::new(QuantWeight::Int8(t), None).unwrap();
    assert_eq!(q.int8_error_bound(&w[..48], 1).unwrap(), None);
    assert!(refused(q), "int8 rows of 48 inputs");
    let f = quant_kernels::fp8::Fp8Layer {
        layout: quant_kernels::fp8::Fp8Layout::per_tensor(2, 32).unwrap(),
        experts: 1,
        format: quant_kernels::fp8::Fp8Format::E4M3,
        codes: vec![0x38; 64],
        scales: FloatVec::F32(vec![1.0]),
        bias: None,
    };
    assert!(refused(QuantLinear::from_fp8(f).unwrap()), "FP8");
    // Back to f32: the exact path again, bit for bit.
    let q = gptq(128, 16, 32, true, ZeroFormat::V2, &mut rng);
    let x: Vec<f32> = (0..128).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let exact: Vec<f32> = q.forward(&x, 1, Parallelism::RAYON).unwrap();
    let q = q.with_activations(Activations::Int8).unwrap().with_activations(Activations::F32).unwrap();
    assert_eq!(q.forward::<f32, f32>(&x, 1, Parallelism::RAYON).unwrap(), exact);
    // Non-finite activations are an error on this path (a NaN has no int8 code).
    let q = q.with_activations(Activations::Int8).unwrap();
    let mut bad = x.clone();
    bad[7] = f32::NAN;
    assert!(matches!(
        q.forward::<f32, f32>(&bad, 1, Parallelism::RAYON),
        Err(Error::Kernel(KernelError::NonFinite { .. }))
    ));
}

/// Dropping the scheme's own weight keeps the int8 path's bits and its memory only; what
/// needs the scheme's form is a typed error, and a layer on the `f32` path is refused.
#[test]
fn dropping_the_scheme_weight_keeps_the_int8_path() {
    let mut rng = Rng(96);
    let w: Vec<f32> = (0..128 * 256).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let axis0 = quantize_hqq(&w, 128, 256, &HqqConfig::new(4, 32, Axis::Zero), Parallelism::RAYON).unwrap();
    let layers = [
        ("gptq act-order", gptq(256, 40, 64, true, ZeroFormat::V1, &mut rng)),
        ("hqq axis 0", QuantLinear::new(QuantWeight::Hqq(axis0.into()), None).unwrap()),
        (
            "int4",
            QuantLinear::new(
                QuantWeight::Int4(intx::quantize_int4(&w, 128, 256, 64, Parallelism::SERIAL).unwrap()),
                None,
            )
            .unwrap(),
        ),
    ];
    fn dropped_error<T>(r: Result<T, Error>) -> bool {
        matches!(r, Err(Error::Kernel(KernelError::SchemeWeightDropped { .. })))
    }
    for (name, f32_layer) in layers {
        let inp = f32_layer.in_features();
        let x: Vec<f32> = (0..3 * inp).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        let mut kept = f32_layer.clone();
        assert!(
            matches!(kept.drop_scheme_weight(), Err(Error::Kernel(KernelError::DropOnF32Path { .. }))),
            "{name}"
        );
        assert_eq!(kept, f32_layer, "{name}: a refused drop leaves the layer as it was");
        let kept = kept.with_activations(Activations::Int8).unwrap();
        let mut dropped = kept.clone();
        dropped.drop_scheme_weight().unwrap();
        dropped.drop_scheme_weight().unwrap(); // a second drop changes nothing
        assert!(kept.has_scheme_weight() && !dropped.has_scheme_weight(), "{name}");
        assert_eq!(dropped.weight_bytes(), kept.weight_bytes(), "{name}");
        assert_eq!((dropped.scheme(), dropped.activations()), (kept.scheme(), Activations::Int8), "{name}");
        for (_, serial, threaded) in paths() {
            for par in [serial, threaded] {
                let a: Vec<f32> = kept.forward(&x, 3, par).unwrap();
                let b: Vec<f32> = dropped.forward(&x, 3, par).unwrap();
                assert_eq!(
                    a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{name}"
                );
            }
        }
        assert_eq!(dropped.int8_error_bound(&x, 3).unwrap(), kept.int8_error_bound(&x, 3).unwrap(), "{name}");
        let before = dropped.clone();
        assert!(dropped_error(dropped.set_activations(Activations::F32)), "{name}");
        assert_eq!(dropped, before, "{name}: a refused switch leaves the layer as it was");
        dropped.set_activations(Activations::Int8).unwrap();
        assert!(dropped_error(dropped.dequantize(Parallelism::SERIAL)), "{name}");
        assert!(dropped_error(dropped.forward_reference(&x, 3)), "{name}");
        assert!(dropped_error(dropped.magnitude_reference(&x, 3)), "{name}");
        assert!(dropped_error(dropped.clone().into_weight()), "{name}");
        assert_eq!(kept.into_weight().unwrap(), f32_layer.into_weight().unwrap(), "{name}");
    }
}
