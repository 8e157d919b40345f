//! GPTQ: the naive reference, SIMD on one thread and SIMD + rayon give identical bits for every
//! width x dtype pair x (plain | act-order) x (v1 | v2) over a shape table (incl. 4096x4096);
//! bad lengths, shapes and g_idx values are typed errors.

use crate::common;
use quant_kernels::error::KernelError;

use common::{Layer, Rng, layer};
use half::{bf16, f16};
use quant_kernels::gptq::{self, GptqLayout, ZeroFormat};
use quant_kernels::{Elem, Error, Parallelism};

fn three_paths<S: Elem, O: Elem>(x: &Layer, l: &GptqLayout, f: ZeroFormat) {
    let s: Vec<S> = x.scales.iter().map(|&v| S::from_f32(v)).collect();
    let mut naive = vec![O::default(); l.k() * l.n()];
    gptq::gptq_dequantize_reference_into(&x.qweight, &s, &x.qzeros, Some(&x.g_idx), f, l, &mut naive)
        .unwrap();
    for par in [Parallelism::SERIAL, Parallelism::RAYON] {
        let fast: Vec<O> =
            gptq::gptq_dequantize(&x.qweight, &s, &x.qzeros, Some(&x.g_idx), f, l, par).unwrap();
        let same = fast.iter().zip(&naive).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
        assert!(
            same,
            "{}-bit K{} N{} g{:?} {f:?} {par:?} {}->{}",
            l.bits(),
            l.k(),
            l.n(),
            l.group_size(),
            S::DTYPE,
            O::DTYPE
        );
    }
}

#[test]
fn paths_equal_over_shapes() {
    let mut ran = 0;
    for bits in [2u8, 3, 4, 8] {
        for (k, n, g) in
            [(32, 32, -1i64), (32, 32, 32), (64, 96, 16), (96, 64, 40), (128, 160, 128), (256, 4128, 64)]
        {
            let l = GptqLayout::new(k, n, bits, g).unwrap();
            for (seed, act) in [(1u64, false), (2, true)] {
                let x = layer(&l, act, &mut Rng(seed * 100 + bits as u64));
                for f in [ZeroFormat::V1, ZeroFormat::V2] {
                    three_paths::<f16, f16>(&x, &l, f);
                    three_paths::<f16, f32>(&x, &l, f);
                    three_paths::<f32, f32>(&x, &l, f);
                    three_paths::<bf16, bf16>(&x, &l, f);
                    three_paths::<f16, bf16>(&x, &l, f);
                    ran += 1;
                }
            }
        }
    }
    assert_eq!(ran, 4 * 6 * 4);
}

#[test]
fn paths_equal_when_n_is_not_whole_vectors() {
    // N not a multiple of 16: the AVX-512 whole-word-row kernel does not apply, the row loops do.
    for (bits, k, n) in [(4u8, 64, 40), (4, 48, 8), (8, 64, 36), (8, 32, 4)] {
        let l = GptqLayout::new(k, n, bits, 16).unwrap();
        for (seed, act) in [(3u64, false), (4, true)] {
            let x = layer(&l, act, &mut Rng(seed * 100 + bits as u64));
            for f in [ZeroFormat::V1, ZeroFormat::V2] {
                three_paths::<f16, f16>(&x, &l, f);
                three_paths::<f32, f32>(&x, &l, f);
            }
        }
    }
}

#[test]
fn paths_equal_4096() {
    for (bits, act) in [(4u8, false), (4, true), (3, true), (8, false)] {
        let l = GptqLayout::new(4096, 4096, bits, 128).unwrap();
        let x = layer(&l, act, &mut Rng(bits as u64));
        three_paths::<f16, f16>(&x, &l, ZeroFormat::V1);
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    assert_eq!(GptqLayout::new(64, 64, 5, 32), Err(Error::Kernel(KernelError::UnsupportedBits(5))));
    assert_eq!(GptqLayout::new(64, 64, 4, 0), Err(Error::Kernel(KernelError::InvalidGroupSize(0))));
    assert_eq!(GptqLayout::new(64, 64, 4, -2), Err(Error::Kernel(KernelError::InvalidGroupSize(-2))));
    assert_eq!(
        GptqLayout::new(48, 64, 3, 16),
        Err(Error::Kernel(KernelError::NotMultiple { what: "K", value: 48, multiple: 32 }))
    );
    assert_eq!(
        GptqLayout::new(64, 20, 4, 16),
        Err(Error::Kernel(KernelError::NotMultiple { what: "N", value: 20, multiple: 8 }))
    );
    let l = GptqLayout::new(64, 32, 4, 32).unwrap();
    let x = layer(&l, false, &mut Rng(9));
    let s: Vec<f16> = x.scales.iter().map(|&v| f16::from_f32(v)).collect();
    let run = |qw: &[i32], qz: &[i32], s: &[f16], g: Option<&[i32]>| {
        gptq::gptq_dequantize::<f16, f32>(qw, s, qz, g, ZeroFormat::V1, &l, Parallelism::RAYON).map(|_| ())
    };
    assert_eq!(run(&x.qweight, &x.qzeros, &s, None), Ok(()));
    assert_eq!(
        run(&x.qweight[1..], &x.qzeros, &s, None),
        Err(Error::Kernel(KernelError::LengthMismatch { what: "qweight", expected: 256, got: 255 }))
    );
    assert_eq!(
        run(&x.qweight, &x.qzeros[1..], &s, None),
        Err(Error::Kernel(KernelError::LengthMismatch { what: "qzeros", expected: 8, got: 7 }))
    );
    assert_eq!(
        run(&x.qweight, &x.qzeros, &s[1..], None),
        Err(Error::Kernel(KernelError::LengthMismatch { what: "scales", expected: 64, got: 63 }))
    );
    let mut g = x.g_idx.clone();
    assert_eq!(
        run(&x.qweight, &x.qzeros, &s, Some(&g[1..])),
        Err(Error::Kernel(KernelError::LengthMismatch { what: "g_idx", expected: 64, got: 63 }))
    );
    g[5] = 2;
    assert_eq!(
        run(&x.qweight, &x.qzeros, &s, Some(&g)),
        Err(Error::Kernel(KernelError::GroupIndex { index: 5, value: 2, groups: 2 }))
    );
    g[5] = -1;
    assert_eq!(
        run(&x.qweight, &x.qzeros, &s, Some(&g)),
        Err(Error::Kernel(KernelError::GroupIndex { index: 5, value: -1, groups: 2 }))
    );
}
