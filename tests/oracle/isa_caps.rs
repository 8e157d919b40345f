//! Every kernel under every instruction-set cap ([`Parallelism::max_isa`]): the narrower loops
//! (what a CPU without AVX-512, or without AVX2, runs) equal the reference on machines that
//! have the wider ones. The cap is per call, so these run beside every other test.

use crate::common;

use common::{Rng, layer};
use half::{bf16, f16};
use quant_kernels::gptq::{self, GptqLayout, ZeroFormat};
use quant_kernels::hqq::{self, Axis, HqqLayout};
use quant_kernels::pack::Word;
use quant_kernels::{B1, B2, B3, B4, B8, Elem, Isa, Packing, Parallelism};

/// Every cap, serial and threaded.
fn pars() -> impl Iterator<Item = Parallelism> {
    [Isa::Baseline, Isa::X86V3Avx2, Isa::X86V4Avx512]
        .into_iter()
        .flat_map(|isa| [Parallelism::SERIAL.max_isa(isa), Parallelism::RAYON.max_isa(isa)])
}

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
    for par in pars() {
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
fn hqq_equals_the_reference_under_every_cap() {
    assert_eq!(Parallelism::RAYON.max_isa(Isa::Baseline).isa(), Isa::Baseline);
    assert!(Parallelism::SERIAL.max_isa(Isa::X86V3Avx2).isa() <= Isa::X86V3Avx2);
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
fn gptq_equals_the_reference_under_every_cap() {
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
        for par in pars() {
            let fast: Vec<f16> =
                gptq::gptq_dequantize(&x.qweight, &s, &x.qzeros, Some(&x.g_idx), ZeroFormat::V1, &l, par)
                    .unwrap();
            assert!(fast.iter().zip(&naive).all(|(a, b)| a.to_bits() == b.to_bits()), "{bits}-bit {par:?}");
        }
    }
}

#[test]
fn awq_and_fp8_equal_the_reference_under_every_cap() {
    use quant_kernels::awq::{self, AwqLayout};
    use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
    let mut rng = Rng(11);
    let l = AwqLayout::new(256, 1056, 64).unwrap();
    let qw: Vec<i32> = (0..256 * 1056 / 8).map(|_| rng.next_u64() as i32).collect();
    let qz: Vec<i32> = (0..4 * 1056 / 8).map(|_| rng.next_u64() as i32).collect();
    let s: Vec<f16> = (0..4 * 1056).map(|_| f16::from_f32(rng.f32_in(-0.05, 0.05))).collect();
    let mut naive = vec![f16::ZERO; 256 * 1056];
    awq::awq_dequantize_reference_into(&qw, &s, &qz, &l, &mut naive).unwrap();
    for par in pars() {
        let fast: Vec<f16> = awq::awq_dequantize(&qw, &s, &qz, &l, par).unwrap();
        assert!(fast.iter().zip(&naive).all(|(a, b)| a.to_bits() == b.to_bits()), "awq {par:?}");
    }
    let fl = Fp8Layout::block(300, 260, 128, 128).unwrap();
    let codes: Vec<u8> = (0..300 * 260).map(|_| rng.next_u64() as u8).collect();
    let fs: Vec<f32> = (0..9).map(|_| rng.f32_in(1e-4, 1e-2)).collect();
    for f in [Fp8Format::E4M3, Fp8Format::E5M2] {
        let mut naive = vec![bf16::ZERO; 300 * 260];
        fp8::fp8_dequantize_reference_into(&codes, &fs, f, &fl, &mut naive).unwrap();
        for par in pars() {
            let fast: Vec<bf16> = fp8::fp8_dequantize(&codes, &fs, f, &fl, par).unwrap();
            assert!(fast.iter().zip(&naive).all(|(a, b)| a.to_bits() == b.to_bits()), "fp8 {f:?} {par:?}");
        }
    }
}

/// The fused multiply under every cap (the baseline: no FMA, 4-lane SSE2 loops) meets the same
/// bound as the uncapped one (see `matmul.rs`), at batch 1 (AVX-512's register GEMV) and 7, and
/// threaded == serial under each.
#[test]
fn matmul_meets_the_bound_under_every_cap() {
    use quant_kernels::hqq::{HqqConfig, quantize_hqq};
    use quant_kernels::{QuantLinear, QuantWeight};
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
    let h = quantize_hqq(&w, 64, 96, &HqqConfig::new(4, 32, Axis::Zero), Parallelism::RAYON).unwrap();
    for q in [QuantLinear::from_gptq(g).unwrap(), QuantLinear::new(QuantWeight::Hqq(h.into()), None).unwrap()]
    {
        for batch in [1, 7] {
            let xs: Vec<f32> = (0..batch * q.in_features()).map(|_| rng.f32_in(-1.0, 1.0)).collect();
            let (r, m) =
                (q.forward_reference(&xs, batch).unwrap(), q.magnitude_reference(&xs, batch).unwrap());
            for isa in [Isa::Baseline, Isa::X86V3Avx2, Isa::X86V4Avx512] {
                let y: Vec<f32> = q.forward(&xs, batch, Parallelism::RAYON.max_isa(isa)).unwrap();
                let s: Vec<f32> = q.forward(&xs, batch, Parallelism::SERIAL.max_isa(isa)).unwrap();
                assert_eq!(y, s, "{isa}");
                for ((&v, &r), &m) in y.iter().zip(&r).zip(&m) {
                    assert!((v as f64 - r).abs() <= 1e-5 * m, "{isa}: {v} vs {r} (magnitude {m})");
                }
            }
        }
    }
}

/// The read baseline sums every word once, whatever the order, cap and length (tails of each
/// order's blocks, empty chunks of the pool).
#[test]
fn pure_read_sums_every_word_in_both_orders() {
    use quant_kernels::matmul::{ReadOrder, pure_read, pure_read_in};
    let mut rng = Rng(7);
    for len in [0usize, 1, 7, 31, 32, 33, 127, 129, 1000, 4097, 70_001] {
        let words: Vec<u64> = (0..len).map(|_| rng.next_u64()).collect();
        let want = words.iter().fold(0u64, |a, &v| a.wrapping_add(v));
        for par in pars() {
            for order in ReadOrder::ALL {
                assert_eq!(pure_read_in(&words, order, par), want, "{len} words, {order:?}, {par:?}");
            }
            assert_eq!(pure_read(&words, par), want, "{len} words, {par:?}");
        }
    }
}
