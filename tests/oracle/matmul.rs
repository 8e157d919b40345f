//! The fused multiply (`QuantLinear::forward`) against its oracle (the scheme's naive reference
//! dequantizer, then a triple loop in f64), for every scheme and width over a table of shapes
//! (1x1, odd, K not a multiple of the group, K = 16384) and batches 1, 2, 7, 32, 128.
//!
//! Bound: |y - y_ref| <= 1e-5 * (sum_k |x[b,k] W[o,k]| + |bias[o]|) for every output, i.e. a
//! relative error of 1e-5 against the magnitude of the terms summed (relative to |y| itself no
//! f32 sum can promise anything when the terms cancel). Also: serial == threaded bit for bit, a
//! row's result does not depend on the batch it is in, and bad shapes are typed errors (the
//! narrower ISAs' bound is checked in `isa_caps.rs`).

use crate::common;
use quant_kernels::error::KernelError;

use common::{Rng, layer};
use half::{bf16, f16};
use quant_kernels::awq::{AwqLayer, AwqLayout};
use quant_kernels::fp8::{self, Fp8Format, Fp8Layer, Fp8Layout};
use quant_kernels::gptq::{GptqLayer, GptqLayout, ZeroFormat};
use quant_kernels::hqq::HqqWeight;
use quant_kernels::hqq::{Axis, HqqConfig, quantize_hqq};
use quant_kernels::intx::{self, Granularity};
use quant_kernels::{Error, FloatVec, Parallelism};
use quant_kernels::{QuantLinear, QuantWeight};

const BOUND: f64 = 1e-5;

fn activations(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f32_in(-1.0, 1.0)).collect()
}

/// Check `layer` at `batches` against the oracle; serial == threaded; batch invariance.
fn check(name: &str, layer: &QuantLinear, batches: &[usize], rng: &mut Rng) {
    let (out, inp) = (layer.out_features(), layer.in_features());
    let max_b = *batches.iter().max().unwrap();
    let x = activations(rng, max_b * inp);
    // The oracle once for the largest batch; smaller batches are its first rows.
    let reference = layer.forward_reference(&x, max_b).unwrap();
    let magnitude = layer.magnitude_reference(&x, max_b).unwrap();
    for &b in batches {
        let xs = &x[..b * inp];
        let y: Vec<f32> = layer.forward(xs, b, Parallelism::RAYON).unwrap();
        let serial: Vec<f32> = layer.forward(xs, b, Parallelism::SERIAL).unwrap();
        assert!(
            y.iter().zip(&serial).all(|(a, s)| a.to_bits() == s.to_bits()),
            "{name}: threaded != serial at batch {b}"
        );
        for (i, (&v, (&r, &m))) in y.iter().zip(reference.iter().zip(&magnitude)).enumerate() {
            let err = (v as f64 - r).abs();
            assert!(
                err <= BOUND * m + f64::MIN_POSITIVE,
                "{name} [{out}x{inp}] batch {b}: y[{}, {}] = {v}, reference {r}, error {err:e} > {BOUND:e} * {m}",
                i / out.max(1),
                i % out.max(1)
            );
        }
    }
    // The last row alone gives the same bits as in the full batch.
    if max_b > 1 {
        let full: Vec<f32> = layer.forward(&x, max_b, Parallelism::RAYON).unwrap();
        let last: Vec<f32> = layer.forward(&x[(max_b - 1) * inp..], 1, Parallelism::SERIAL).unwrap();
        assert!(
            full[(max_b - 1) * out..].iter().zip(&last).all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: batch row result depends on the batch"
        );
    }
}

const BATCHES: &[usize] = &[1, 2, 7, 32];
const BIG_BATCHES: &[usize] = &[1, 2, 7, 32, 128];

fn bias(rng: &mut Rng, n: usize) -> Option<FloatVec> {
    Some(FloatVec::F16((0..n).map(|_| f16::from_f32(rng.f32_in(-0.5, 0.5))).collect()))
}

#[test]
fn hqq_every_width_axis_and_shape() {
    let mut rng = Rng(1);
    let mut ran = 0;
    // (rows, cols, group): 1x1, odd, layouts whose planes hold whole rows and ones that do not
    // (5x6 g10 axis 0: code [10, 3]), groups not dividing the row (7x12 g8, axis 1).
    let shapes = [
        (1, 1, 1),
        (8, 8, 8),
        (5, 6, 10),
        (7, 12, 8),
        (12, 20, 6),
        (33, 65, 33),
        (64, 300, 64),
        (96, 512, 128),
    ];
    for bits in [1u8, 2, 3, 4, 8] {
        for axis in [Axis::Zero, Axis::One] {
            for &(rows, cols, g) in &shapes {
                let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
                let mut cfg = HqqConfig::new(bits, g, axis);
                cfg.optimization_steps = Some(2);
                let Ok(q) = quantize_hqq(&w, rows, cols, &cfg, Parallelism::RAYON) else { continue };
                let (s16, z16) = q.params_as::<f16>();
                let name = format!("hqq {bits}-bit {axis:?} g{g}");
                let f32_layer = QuantLinear::new(QuantWeight::Hqq(HqqWeight::from(q.clone())), None).unwrap();
                check(&name, &f32_layer, BATCHES, &mut rng);
                let h =
                    HqqWeight { scales: FloatVec::F16(s16), zeros: FloatVec::F16(z16), ..HqqWeight::from(q) };
                let f16_layer = QuantLinear::new(QuantWeight::Hqq(h), bias(&mut rng, rows)).unwrap();
                check(&format!("{name} f16 params + bias"), &f16_layer, &[1, 7], &mut rng);
                ran += 1;
            }
        }
    }
    assert!(ran >= 50, "only {ran} HQQ cases ran");
}

/// Shapes the batch-1 register path serves (inputs a multiple of 16; axis 0 with whole rows
/// per zero/scale span, axis 1 with groups of 16k inputs): batch 1 goes through it, larger
/// batches through the tile path, and `check` requires identical bits for a row either way.
#[test]
fn hqq_register_gemv_equals_the_tile_path() {
    let mut rng = Rng(11);
    for bits in [1u8, 2, 3, 4, 8] {
        for (axis, g) in [(Axis::Zero, 16), (Axis::Zero, 80), (Axis::One, 16), (Axis::One, 64)] {
            let (rows, cols) = (80, 256);
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
            let mut cfg = HqqConfig::new(bits, g, axis);
            cfg.optimization_steps = Some(1);
            let Ok(q) = quantize_hqq(&w, rows, cols, &cfg, Parallelism::RAYON) else { continue };
            let name = format!("hqq register gemv {bits}-bit {axis:?} g{g}");
            let (s16, z16) = q.params_as::<f16>();
            let layer = QuantLinear::new(QuantWeight::Hqq(HqqWeight::from(q.clone())), None).unwrap();
            check(&name, &layer, &[1, 3], &mut rng);
            let h = HqqWeight { scales: FloatVec::F16(s16), zeros: FloatVec::F16(z16), ..HqqWeight::from(q) };
            let layer = QuantLinear::new(QuantWeight::Hqq(h), bias(&mut rng, rows)).unwrap();
            check(&format!("{name} f16"), &layer, &[1, 5], &mut rng);
        }
    }
}

pub(crate) fn gptq_layer(
    k: usize,
    n: usize,
    bits: u8,
    g: i64,
    act: bool,
    format: ZeroFormat,
    rng: &mut Rng,
) -> GptqLayer {
    let l = GptqLayout::new(k, n, bits, g).unwrap();
    let x = layer(&l, act, rng);
    GptqLayer {
        layout: l,
        format,
        qweight: x.qweight,
        qzeros: x.qzeros,
        scales: FloatVec::F16(x.scales.iter().map(|&v| f16::from_f32(v)).collect()),
        g_idx: act.then_some(x.g_idx),
        bias: None,
    }
}

#[test]
fn gptq_every_width_act_order_and_format() {
    let mut rng = Rng(2);
    // (K, N, group): per column, K not a multiple of the group (96 / 40), N not a multiple of 32.
    for bits in [2u8, 3, 4, 8] {
        for (k, n, g) in [(32, 32, -1i64), (96, 64, 40), (128, 160, 32), (256, 96, 128)] {
            for act in [false, true] {
                for format in [ZeroFormat::V1, ZeroFormat::V2] {
                    let mut layer = gptq_layer(k, n, bits, g, act, format, &mut rng);
                    layer.bias = bias(&mut rng, n);
                    let q = QuantLinear::from_gptq(layer).unwrap();
                    check(&format!("gptq {bits}-bit g{g} act {act} {format:?}"), &q, BATCHES, &mut rng);
                }
            }
        }
    }
}

#[test]
fn gptq_and_hqq_batch_128_and_k_16384() {
    let mut rng = Rng(3);
    let q = QuantLinear::from_gptq(gptq_layer(512, 96, 4, 128, true, ZeroFormat::V2, &mut rng)).unwrap();
    check("gptq 4-bit act-order", &q, BIG_BATCHES, &mut rng);
    let q = QuantLinear::from_gptq(gptq_layer(16384, 32, 4, 128, false, ZeroFormat::V1, &mut rng)).unwrap();
    check("gptq 4-bit K16384", &q, &[1, 3], &mut rng);
    let w: Vec<f32> = (0..8 * 16384).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let hq = quantize_hqq(&w, 8, 16384, &HqqConfig::new(4, 64, Axis::Zero), Parallelism::RAYON).unwrap();
    let q = QuantLinear::new(QuantWeight::Hqq(hq.into()), None).unwrap();
    check("hqq 4-bit K16384", &q, &[1, 3], &mut rng);
    let w: Vec<f32> = (0..128 * 256).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let hq = quantize_hqq(&w, 128, 256, &HqqConfig::new(4, 64, Axis::One), Parallelism::RAYON).unwrap();
    let q = QuantLinear::new(QuantWeight::Hqq(hq.into()), None).unwrap();
    check("hqq 4-bit axis 1", &q, BIG_BATCHES, &mut rng);
}

#[test]
fn awq_layers() {
    let mut rng = Rng(4);
    for (k, n, g) in [(32, 8, 32), (64, 40, 16), (256, 264, 128)] {
        let l = AwqLayout::new(k, n, g).unwrap();
        let qweight = (0..k * n / 8).map(|_| rng.next_u64() as i32).collect();
        let qzeros = (0..l.groups() * n / 8).map(|_| rng.next_u64() as i32).collect();
        let scales =
            FloatVec::Bf16((0..l.groups() * n).map(|_| bf16::from_f32(rng.f32_in(-0.02, 0.02))).collect());
        let layer = AwqLayer { layout: l, qweight, qzeros, scales, bias: bias(&mut rng, n) };
        let q = QuantLinear::from_awq(layer).unwrap();
        check(&format!("awq {k}x{n} g{g}"), &q, BIG_BATCHES, &mut rng);
    }
}

#[test]
fn fp8_formats_and_scale_blocks() {
    let mut rng = Rng(5);
    for format in [Fp8Format::E4M3, Fp8Format::E5M2] {
        for (rows, cols, block) in
            [(1, 1, None), (17, 33, None), (300, 260, Some((128, 128))), (40, 70, Some((16, 32)))]
        {
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-2.0, 2.0)).collect();
            let layout = match block {
                Some((br, bc)) => Fp8Layout::block(rows, cols, br, bc).unwrap(),
                None => Fp8Layout::per_tensor(rows, cols).unwrap(),
            };
            let (codes, scales) =
                fp8::fp8_quantize(&w, format, &layout, quant_kernels::Parallelism::SERIAL).unwrap();
            let layer =
                Fp8Layer { layout, experts: 1, format, codes, scales: FloatVec::F32(scales), bias: None };
            let q = QuantLinear::from_fp8(layer).unwrap();
            check(&format!("fp8 {format:?} {rows}x{cols} {block:?}"), &q, BATCHES, &mut rng);
        }
    }
}

#[test]
fn int8_int4_and_dense() {
    let mut rng = Rng(6);
    for (rows, cols) in [(1, 1), (3, 17), (40, 300)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        for g in [Granularity::PerTensor, Granularity::PerChannel] {
            let t = intx::quantize_int8(&w, rows, cols, g, quant_kernels::Parallelism::SERIAL).unwrap();
            check(
                &format!("int8 {g:?} {rows}x{cols}"),
                &QuantLinear::new(QuantWeight::Int8(t), None).unwrap(),
                BATCHES,
                &mut rng,
            );
        }
        let w16: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
        let d = QuantWeight::dense(rows, cols, w16);
        check(
            &format!("dense {rows}x{cols}"),
            &QuantLinear::new(d, bias(&mut rng, rows)).unwrap(),
            BIG_BATCHES,
            &mut rng,
        );
    }
    // Odd group counts stay on the int4 row decoder; even ones run as HQQ 4-bit axis 1.
    for (rows, cols, g) in [(1, 2, 2), (5, 12, 4), (33, 256, 64), (48, 512, 32)] {
        let w: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        let t = intx::quantize_int4(&w, rows, cols, g, quant_kernels::Parallelism::SERIAL).unwrap();
        let layer = QuantLinear::new(QuantWeight::Int4(t.clone()), None).unwrap();
        check(&format!("int4 {rows}x{cols} g{g}"), &layer, BATCHES, &mut rng);
        assert_eq!(layer.into_weight().unwrap(), QuantWeight::Int4(t), "int4 {rows}x{cols} g{g}: restored");
    }
}

#[test]
fn input_and_output_dtypes() {
    let mut rng = Rng(7);
    let q = QuantLinear::from_gptq(gptq_layer(128, 64, 4, 32, false, ZeroFormat::V2, &mut rng)).unwrap();
    let x: Vec<f32> = activations(&mut rng, 3 * 128);
    let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let xw: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
    // f16 input == its f32 widening; f16/bf16 output == the f32 result rounded once.
    let y32: Vec<f32> = q.forward(&xw, 3, Parallelism::SERIAL).unwrap();
    let yh: Vec<f32> = q.forward(&xh, 3, Parallelism::SERIAL).unwrap();
    assert_eq!(y32, yh);
    let y16: Vec<f16> = q.forward(&xw, 3, Parallelism::SERIAL).unwrap();
    let yb: Vec<bf16> = q.forward(&xw, 3, Parallelism::SERIAL).unwrap();
    assert!(y32.iter().zip(&y16).all(|(a, b)| f16::from_f32(*a) == *b));
    assert!(y32.iter().zip(&yb).all(|(a, b)| bf16::from_f32(*a) == *b));
}

#[test]
fn bad_shapes_are_typed_errors() {
    let mut rng = Rng(9);
    let q = QuantLinear::from_gptq(gptq_layer(64, 32, 4, 32, false, ZeroFormat::V2, &mut rng)).unwrap();
    let err = q.forward::<f32, f32>(&[0.0; 63], 1, Parallelism::SERIAL).unwrap_err();
    assert_eq!(err, Error::Kernel(KernelError::LengthMismatch { what: "x", expected: 64, got: 63 }));
    let mut y = [0f32; 31];
    let err = q.forward_into(&[0f32; 64], 1, &mut y, Parallelism::SERIAL).unwrap_err();
    assert_eq!(err, Error::Kernel(KernelError::LengthMismatch { what: "y", expected: 32, got: 31 }));
    // A bias of the wrong length, a truncated qweight, a g_idx out of range, stacked experts.
    let l = gptq_layer(64, 32, 4, 32, false, ZeroFormat::V2, &mut rng);
    let err = QuantLinear::new(QuantWeight::Gptq(l.clone()), Some(vec![0f32; 31].into())).unwrap_err();
    assert_eq!(err, Error::Kernel(KernelError::LengthMismatch { what: "bias", expected: 32, got: 31 }));
    let mut short = l.clone();
    short.qweight.pop();
    assert!(matches!(
        QuantLinear::from_gptq(short),
        Err(Error::Kernel(KernelError::LengthMismatch { what: "qweight", .. }))
    ));
    let mut bad = l;
    bad.g_idx = Some(vec![5; 64]);
    assert!(matches!(QuantLinear::from_gptq(bad), Err(Error::Kernel(KernelError::GroupIndex { .. }))));
    let layout = Fp8Layout::per_tensor(2, 2).unwrap();
    let f = Fp8Layer {
        layout,
        experts: 2,
        format: Fp8Format::E4M3,
        codes: vec![0; 8],
        scales: FloatVec::F32(vec![1.0; 2]),
        bias: None,
    };
    assert_eq!(
        QuantLinear::from_fp8(f).unwrap_err(),
        Error::Kernel(KernelError::StackedExperts { experts: 2 })
    );
    // Zero batch is fine and empty.
    assert!(q.forward::<f32, f32>(&[], 0, Parallelism::RAYON).unwrap().is_empty());
}

#[test]
fn into_weight_gives_back_the_original_tensors() {
    let mut rng = Rng(10);
    for bits in [2u8, 3, 4, 8] {
        let g = gptq_layer(96, 64, bits, 32, true, ZeroFormat::V1, &mut rng);
        let back = QuantLinear::new(QuantWeight::Gptq(g.clone()), None).unwrap().into_weight().unwrap();
        assert_eq!(back, QuantWeight::Gptq(g), "{bits}-bit");
    }
    let l = AwqLayout::new(64, 40, 16).unwrap();
    let a = AwqLayer {
        layout: l,
        qweight: (0..64 * 5).map(|_| rng.next_u64() as i32).collect(),
        qzeros: (0..4 * 5).map(|_| rng.next_u64() as i32).collect(),
        scales: FloatVec::F32((0..4 * 40).map(|_| rng.f32_in(-0.02, 0.02)).collect()),
        bias: None,
    };
    assert_eq!(
        QuantLinear::new(QuantWeight::Awq(a.clone()), None).unwrap().into_weight().unwrap(),
        QuantWeight::Awq(a)
    );
}
