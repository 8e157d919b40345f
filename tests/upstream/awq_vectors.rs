//! AWQ against AutoAWQ 0.2.9 (`WQLinear_GEMM.from_linear` packing, `dequantize_gemm`), and the
//! lossless AWQ <-> GPTQ conversion both ways.
//!
//! Fixtures: `tests/fixtures/awq/awq_gemm_*.safetensors`, unchanged copies of the project's
//! upstream vectors (`vectors/awq/`, written by gen_awq.py; see its MANIFEST.md).

use crate::common;
use quant_kernels::error::KernelError;

use common::{Rng, T, fixture};
use half::{bf16, f16};
use quant_kernels::awq::{self, AwqLayout};
use quant_kernels::gptq::{self, GptqLayout, ZeroFormat};
use quant_kernels::{Elem, Error, Parallelism};
use safetensors::SafeTensors;

fn all_paths<S: Elem, O: Elem>(qw: &[i32], qz: &[i32], s: &[S], l: &AwqLayout) -> Vec<O> {
    let mut naive = vec![O::default(); l.k() * l.n()];
    awq::awq_dequantize_reference_into(qw, s, qz, l, &mut naive).unwrap();
    for par in [Parallelism::SERIAL, Parallelism::RAYON] {
        let fast: Vec<O> = awq::awq_dequantize(qw, s, qz, l, par).unwrap();
        assert!(fast.iter().zip(&naive).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits()));
    }
    naive
}

#[test]
fn every_case_matches_autoawq_and_converts_losslessly() {
    let mut n_cases = 0;
    for name in [
        "awq_gemm_b4_g32_K128_N64",
        "awq_gemm_b4_g64_K128_N64",
        "awq_gemm_b4_g64_K256_N32",
        "awq_gemm_b4_g128_K128_N64",
    ] {
        let bytes = fixture(&format!("awq/{name}.safetensors"));
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let num = |k: &str| meta[k].parse::<usize>().unwrap();
        let l = AwqLayout::new(num("K"), num("N"), num("group_size")).unwrap();
        let qw = T::get(&st, "qweight").i32s();
        let qz = T::get(&st, "qzeros").i32s();
        let scales = T::get(&st, "scales").f16s();
        let codes = T::get(&st, "codes").u8s();
        let zeros = T::get(&st, "zeros").u8s();
        assert_eq!(awq::unpack_interleaved(&qw, l.n()), codes, "{name}: codes");
        assert_eq!(awq::unpack_interleaved(&qz, l.n()), zeros, "{name}: zeros");
        assert_eq!(awq::pack_interleaved(&codes), qw, "{name}: packing");
        let want32 = T::get(&st, "W_deq").f32s();
        let got: Vec<f32> = all_paths(&qw, &qz, &scales, &l);
        assert!(got.iter().zip(&want32).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: f32");
        let got16: Vec<f16> = all_paths(&qw, &qz, &scales, &l);
        assert_eq!(got16, T::get(&st, "W_deq_f16").f16s(), "{name}: f16");
        let gotb: Vec<bf16> = all_paths(&qw, &qz, &scales, &l);
        assert!(gotb.iter().zip(&want32).all(|(a, b)| *a == bf16::from_f32(*b)), "{name}: bf16");

        // AWQ -> GPTQ (v2): the same weights; and back: the same bytes.
        let g = awq::awq_to_gptq(&qw, &qz, &l).unwrap();
        let via: Vec<f32> = gptq::gptq_dequantize(
            &g.qweight,
            &scales,
            &g.qzeros,
            None,
            ZeroFormat::V2,
            &g.layout,
            Parallelism::RAYON,
        )
        .unwrap();
        assert!(via.iter().zip(&want32).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: via GPTQ");
        let (qw2, qz2, l2) = awq::gptq_to_awq(&g.qweight, &g.qzeros, &g.layout, ZeroFormat::V2).unwrap();
        assert_eq!((qw2, qz2, l2), (qw.clone(), qz.clone(), l), "{name}: round trip");
        n_cases += 1;
    }
    assert_eq!(n_cases, 4);
}

/// GPTQ (v1 and v2, no act-order) -> AWQ -> same weights, over random layers (v1 words with
/// stored 15s carry into the next field, as GPTQModel reads them: still the same weights).
#[test]
fn gptq_to_awq_keeps_weights() {
    for (k, n, g) in [(64, 32, 32), (256, 96, 64), (128, 8, 128)] {
        let l = GptqLayout::new(k, n, 4, g).unwrap();
        let mut x = common::layer(&l, false, &mut Rng(k as u64));
        x.qzeros[0] = 0x0000_000F; // a stored 15: +1 carries into the next field (GPTQModel)
        let s: Vec<f16> = x.scales.iter().map(|&v| f16::from_f32(v)).collect();
        for f in [ZeroFormat::V1, ZeroFormat::V2] {
            let want: Vec<f32> =
                gptq::gptq_dequantize(&x.qweight, &s, &x.qzeros, None, f, &l, Parallelism::SERIAL).unwrap();
            let (qw, qz, a) = awq::gptq_to_awq(&x.qweight, &x.qzeros, &l, f).unwrap();
            let got: Vec<f32> = awq::awq_dequantize(&qw, &s, &qz, &a, Parallelism::SERIAL).unwrap();
            assert_eq!(got, want, "K{k} N{n} {f:?}");
        }
    }
    let l = GptqLayout::new(8, 8, 3, -1);
    assert!(l.is_err(), "3-bit needs K % 32");
    let l = GptqLayout::new(32, 32, 8, -1).unwrap();
    assert_eq!(
        awq::gptq_to_awq(&[0; 256], &[0; 8], &l, ZeroFormat::V2),
        Err(Error::Kernel(KernelError::UnsupportedBits(8)))
    );
}

#[test]
fn awq_paths_equal_and_errors_are_typed() {
    // N % 16 != 0 (row loop), group % 4 != 0 and chunks cutting 4-row blocks (single rows),
    // 4-row blocks of one group, and the benchmark shape.
    for (k, n, g) in [(1, 8, 1), (64, 40, 16), (132, 512, 6), (136, 512, 8), (12, 48, 12), (4096, 4096, 128)]
    {
        let l = AwqLayout::new(k, n, g).unwrap();
        let mut rng = Rng(k as u64 + n as u64);
        let qw: Vec<i32> = (0..k * n / 8).map(|_| rng.next_u64() as i32).collect();
        let qz: Vec<i32> = (0..l.groups() * n / 8).map(|_| rng.next_u64() as i32).collect();
        let s: Vec<f16> = (0..l.groups() * n).map(|_| f16::from_f32(rng.f32_in(-0.05, 0.05))).collect();
        let _: Vec<f16> = all_paths(&qw, &qz, &s, &l);
        let _: Vec<f32> = all_paths(&qw, &qz, &s, &l);
    }
    assert_eq!(
        AwqLayout::new(64, 12, 16),
        Err(Error::Kernel(KernelError::NotMultiple { what: "N", value: 12, multiple: 8 }))
    );
    assert_eq!(AwqLayout::new(64, 16, 24), Err(Error::Kernel(KernelError::GroupSize { group: 24, len: 64 })));
    let l = AwqLayout::new(16, 16, 8).unwrap();
    let e = awq::awq_dequantize::<f32, f32>(&[0; 31], &[0.0; 32], &[0; 4], &l, Parallelism::SERIAL);
    assert_eq!(e, Err(Error::Kernel(KernelError::LengthMismatch { what: "qweight", expected: 32, got: 31 })));
}
