//! Three-path equality (HQQ and GPTQ) with run-time ISA selection switched off, so
//! the portable loops (what a CPU without AVX-512 runs) are tested on machines that have it.
//! A separate test binary: the switch is process-wide.

mod common;

use common::{Rng, layer};
use half::{bf16, f16};
use quant_kernels::gptq::{self, GptqLayout, ZeroFormat};
use quant_kernels::hqq::{self, Axis, HqqLayout};
use quant_kernels::pack::Word;
use quant_kernels::{B1, B2, B3, B4, B8, Elem, Packing, Parallelism, lanes};

fn check<P: Packing, S: Elem, O: Elem>(rows: usize, cols: usize, g: usize, axis: Axis, seed: u64) {
    let layout = HqqLayout::new(rows, cols, g, axis).unwrap();
    let (pr, pc) = layout.packed_shape(P::BITS).unwrap();
    let mut rng = Rng(seed);
    let words: Vec<P::Word> =
        (0..pr * pc).map(|_| P::Word::from_bits(rng.next_u64() as u32 & 0x3fff_ffff)).collect();
    let s: Vec<S> = (0..layout.groups()).map(|_| S::from_f32(rng.f32_in(-0.1, 0.1))).collect();
    let z: Vec<S> = (0..layout.groups()).map(|_| S::from_f32(rng.f32_in(0.0, 16.0))).collect();
    let mut naive = vec![O::default(); layout.numel()];
    hqq::dequantize_reference_into::<P, S, O>(&words, &s, &z, &layout, &mut naive).unwrap();
    for par in [Parallelism::Serial, Parallelism::Rayon] {
        let mut fast = vec![O::default(); layout.numel()];
        hqq::dequantize_into::<P, S, O>(&words, &s, &z, &layout, &mut fast, par).unwrap();
        let same = fast.iter().zip(&naive).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
        assert!(same, "{}-bit {rows}x{cols} g{g} {axis:?} {par:?} {}->{}", P::BITS.get(), S::DTYPE, O::DTYPE);
    }
}

fn widths<S: Elem, O: Elem>(rows: usize, cols: usize, g: usize, axis: Axis) {
    check::<B8, S, O>(rows, cols, g, axis, 1);
    check::<B4, S, O>(rows, cols, g, axis, 2);
    check::<B3, S, O>(rows, cols, g, axis, 3);
    check::<B2, S, O>(rows, cols, g, axis, 4);
    check::<B1, S, O>(rows, cols, g, axis, 5);
}

#[test]
fn baseline_paths_equal_the_reference() {
    lanes::force_baseline(true);
    assert_eq!(lanes::isa(), lanes::Isa::Baseline);
    for (rows, cols, g) in [(24, 40, 8), (64, 72, 24), (16, 4104, 4104), (256, 1024, 64), (96, 2080, 320)] {
        for axis in [Axis::Zero, Axis::One] {
            widths::<f32, f32>(rows, cols, g, axis);
            widths::<f16, f16>(rows, cols, g, axis);
            widths::<bf16, bf16>(rows, cols, g, axis);
            widths::<f16, f32>(rows, cols, g, axis);
            widths::<f32, bf16>(rows, cols, g, axis);
        }
    }
}

#[test]
fn baseline_gptq_equals_the_reference() {
    lanes::force_baseline(true);
    for bits in [2u8, 3, 4, 8] {
        let l = GptqLayout::new(256, 1056, bits, 64).unwrap();
        let x = layer(&l, true, &mut Rng(bits as u64));
        let s: Vec<f16> = x.scales.iter().map(|&v| f16::from_f32(v)).collect();
        let mut naive = vec![f16::ZERO; l.k() * l.n()];
        gptq::gptq_dequantize_reference_into(
            &x.qweight,
            &s,
            &x.qzeros,
            Some(&x.g_idx),
            ZeroFormat::V1,
            &l,
            &mut naive,
        )
        .unwrap();
        for par in [Parallelism::Serial, Parallelism::Rayon] {
            let fast: Vec<f16> =
                gptq::gptq_dequantize(&x.qweight, &s, &x.qzeros, Some(&x.g_idx), ZeroFormat::V1, &l, par)
                    .unwrap();
            assert!(fast.iter().zip(&naive).all(|(a, b)| a.to_bits() == b.to_bits()), "{bits}-bit {par:?}");
        }
    }
}

#[test]
fn baseline_awq_and_fp8_equal_the_reference() {
    use quant_kernels::awq::{self, AwqLayout};
    use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
    lanes::force_baseline(true);
    let mut rng = Rng(11);
    let l = AwqLayout::new(256, 1056, 64).unwrap();
    let qw: Vec<i32> = (0..256 * 1056 / 8).map(|_| rng.next_u64() as i32).collect();
    let qz: Vec<i32> = (0..4 * 1056 / 8).map(|_| rng.next_u64() as i32).collect();
    let s: Vec<f16> = (0..4 * 1056).map(|_| f16::from_f32(rng.f32_in(-0.05, 0.05))).collect();
    let mut naive = vec![f16::ZERO; 256 * 1056];
    awq::awq_dequantize_reference_into(&qw, &s, &qz, &l, &mut naive).unwrap();
    for par in [Parallelism::Serial, Parallelism::Rayon] {
        let fast: Vec<f16> = awq::awq_dequantize(&qw, &s, &qz, &l, par).unwrap();
        assert!(fast.iter().zip(&naive).all(|(a, b)| a.to_bits() == b.to_bits()), "awq {par:?}");
    }
    let fl = Fp8Layout::block(300, 260, 128, 128).unwrap();
    let codes: Vec<u8> = (0..300 * 260).map(|_| rng.next_u64() as u8).collect();
    let fs: Vec<f32> = (0..9).map(|_| rng.f32_in(1e-4, 1e-2)).collect();
    for f in [Fp8Format::E4M3, Fp8Format::E5M2] {
        let mut naive = vec![bf16::ZERO; 300 * 260];
        fp8::fp8_dequantize_reference_into(&codes, &fs, f, &fl, &mut naive).unwrap();
        let fast: Vec<bf16> = fp8::fp8_dequantize(&codes, &fs, f, &fl, Parallelism::Rayon).unwrap();
        assert!(fast.iter().zip(&naive).all(|(a, b)| a.to_bits() == b.to_bits()), "fp8 {f:?}");
    }
}

/// The fused multiply on the baseline ISA (no FMA, 4-lane SSE2 or scalar loops) meets the same
/// bound as the dispatched one (see `matmul.rs`), and threaded == serial.
#[test]
fn baseline_matmul_meets_the_bound() {
    use quant_kernels::hqq::{HqqConfig, quantize_hqq};
    use quant_kernels::{QuantLinear, QuantWeight};
    lanes::force_baseline(true);
    let mut rng = Rng(8);
    let l = GptqLayout::new(256, 96, 3, 64).unwrap();
    let x = layer(&l, true, &mut rng);
    let g = gptq::GptqLayer {
        layout: l,
        format: ZeroFormat::V1,
        qweight: x.qweight,
        qzeros: x.qzeros,
        scales: quant_kernels::FloatVec::F32(x.scales),
        g_idx: Some(x.g_idx),
        bias: None,
    };
    let w: Vec<f32> = (0..64 * 96).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let h = quantize_hqq(&w, 64, 96, &HqqConfig::new(4, 32, Axis::Zero)).unwrap();
    for q in [QuantLinear::from_gptq(g).unwrap(), QuantLinear::new(QuantWeight::Hqq(h.into()), None).unwrap()]
    {
        let xs: Vec<f32> = (0..7 * q.in_features()).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        let (r, m) = (q.forward_reference(&xs, 7).unwrap(), q.magnitude_reference(&xs, 7).unwrap());
        let y: Vec<f32> = q.forward(&xs, 7, Parallelism::Rayon).unwrap();
        let s: Vec<f32> = q.forward(&xs, 7, Parallelism::Serial).unwrap();
        assert_eq!(y, s);
        for ((&v, &r), &m) in y.iter().zip(&r).zip(&m) {
            assert!((v as f64 - r).abs() <= 1e-5 * m, "{v} vs {r} (magnitude {m})");
        }
    }
}
