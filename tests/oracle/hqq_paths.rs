//! The three HQQ dequantization paths (naive reference, SIMD on one thread, SIMD + rayon) give
//! identical bits for every width x scale dtype x output dtype x axis over a table of shapes:
//! empty, 1x1, odd sizes, packed axes that are not multiples of 8 or of the pack factor, column
//! counts above the tile size, and 4096x4096. Shapes a width cannot pack give the same typed
//! error on every path.

use crate::common;
use quant_kernels::error::KernelError;

use common::Rng;
use half::{bf16, f16};
use quant_kernels::hqq::{self, Axis, HqqLayout};
use quant_kernels::pack::Word;
use quant_kernels::{B1, B2, B3, B4, B8, Elem, Error, Packing, Parallelism};

/// (rows, cols, group size); each is tried with axis 0 and axis 1.
const SHAPES: &[(usize, usize, usize)] = &[
    (0, 64, 64),
    (64, 0, 8),
    (1, 1, 1),
    (3, 5, 15),
    (7, 13, 7),
    (24, 40, 8),
    (40, 21, 105),
    (17, 48, 16),
    (64, 72, 24),
    (1, 4100, 4100), // axis 1: one row longer than a tile
    (16, 4100, 4100),
    (33, 4104, 8),
    (40, 3000, 48),
    (96, 2050, 320),
];

fn bits_eq<O: Elem>(a: &[O], b: &[O]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_f32().to_bits() == y.to_f32().to_bits())
}

/// Random codes/scales/zeros for `layout`, packed with width `P`; `None` when `P` cannot pack
/// that code matrix (then every path must return the same error).
struct Input<P: Packing> {
    words: Vec<P::Word>,
    scales: Vec<f32>,
    zeros: Vec<f32>,
}

fn input<P: Packing>(layout: &HqqLayout, rng: &mut Rng) -> Result<Input<P>, Error> {
    let (r, c) = layout.code_shape();
    let max = P::BITS.max_code() as u64 + 1;
    let codes: Vec<u8> = (0..r * c).map(|_| rng.below(max) as u8).collect();
    let packed = hqq::pack_hqq(&codes, r, c, P::BITS.get())?;
    let words = match packed.words {
        hqq::PackedWords::U8(w) => w.into_iter().map(|x| P::Word::from_bits(x as u32)).collect(),
        hqq::PackedWords::I32(w) => w.into_iter().map(|x| P::Word::from_bits(x as u32)).collect(),
    };
    let g = layout.groups();
    let scales = (0..g).map(|_| rng.f32_in(-0.05, 0.05)).collect();
    let zeros = (0..g).map(|_| rng.f32_in(0.0, max as f32)).collect();
    Ok(Input { words, scales, zeros })
}

fn three_paths<P: Packing, S: Elem, O: Elem>(inp: &Input<P>, layout: &HqqLayout) {
    let s: Vec<S> = inp.scales.iter().map(|&x| S::from_f32(x)).collect();
    let z: Vec<S> = inp.zeros.iter().map(|&x| S::from_f32(x)).collect();
    let n = layout.numel();
    let mut naive = vec![O::default(); n];
    hqq::dequantize_reference_into::<P, S, O>(&inp.words, &s, &z, layout, &mut naive).unwrap();
    for par in [Parallelism::SERIAL, Parallelism::RAYON] {
        let mut fast = vec![O::default(); n];
        hqq::dequantize_into::<P, S, O>(&inp.words, &s, &z, layout, &mut fast, par).unwrap();
        assert!(
            bits_eq(&fast, &naive),
            "{}-bit {:?} {}x{} g{} {:?} {}->{}",
            P::BITS.get(),
            par,
            layout.rows(),
            layout.cols(),
            layout.group_size(),
            layout.axis(),
            S::DTYPE,
            O::DTYPE
        );
    }
}

fn all_dtypes<P: Packing>(inp: &Input<P>, layout: &HqqLayout) {
    three_paths::<P, f32, f32>(inp, layout);
    three_paths::<P, f32, f16>(inp, layout);
    three_paths::<P, f32, bf16>(inp, layout);
    three_paths::<P, f16, f32>(inp, layout);
    three_paths::<P, f16, f16>(inp, layout);
    three_paths::<P, f16, bf16>(inp, layout);
    three_paths::<P, bf16, f32>(inp, layout);
    three_paths::<P, bf16, f16>(inp, layout);
    three_paths::<P, bf16, bf16>(inp, layout);
}

/// Every path rejects a code matrix the width cannot pack with the same error.
fn same_error<P: Packing>(layout: &HqqLayout, err: &Error) {
    let (r, c) = layout.code_shape();
    let words = vec![P::Word::default(); r.div_ceil(P::PER_WORD) * c];
    let params = vec![0f32; layout.groups()];
    let mut out = vec![0f32; layout.numel()];
    let e1 = hqq::dequantize_reference_into::<P, f32, f32>(&words, &params, &params, layout, &mut out);
    let e2 =
        hqq::dequantize_into::<P, f32, f32>(&words, &params, &params, layout, &mut out, Parallelism::SERIAL);
    let e3 =
        hqq::dequantize_into::<P, f32, f32>(&words, &params, &params, layout, &mut out, Parallelism::RAYON);
    assert_eq!(e1.as_ref(), Err(err));
    assert_eq!(e2.as_ref(), Err(err));
    assert_eq!(e3.as_ref(), Err(err));
}

fn shape_table<P: Packing>() {
    let (mut ran, mut rejected) = (0, 0);
    for (i, &(rows, cols, g)) in SHAPES.iter().enumerate() {
        for axis in [Axis::Zero, Axis::One] {
            let layout = HqqLayout::new(rows, cols, g, axis).unwrap();
            for seed in 0..3u64 {
                let mut rng = Rng(seed * 1000 + i as u64);
                match input::<P>(&layout, &mut rng) {
                    Ok(inp) => {
                        all_dtypes(&inp, &layout);
                        ran += 1;
                    }
                    Err(e) => {
                        assert!(matches!(e, Error::Kernel(KernelError::PackRows { .. })), "{e}");
                        same_error::<P>(&layout, &e);
                        rejected += 1;
                    }
                }
            }
        }
    }
    eprintln!(
        "{}-bit: {ran} shape/axis/seed cases x 9 dtype pairs equal, {rejected} rejected",
        P::BITS.get()
    );
    assert!(ran >= 30, "too few shapes ran for {}-bit", P::BITS.get());
}

/// 4096x4096, both axes, group 64 (and 128 on axis 1), the common dtype pairs.
fn large<P: Packing>() {
    for (g, axis) in [(64, Axis::Zero), (64, Axis::One), (128, Axis::One)] {
        let layout = HqqLayout::new(4096, 4096, g, axis).unwrap();
        let inp = input::<P>(&layout, &mut Rng(42)).unwrap();
        three_paths::<P, f16, f16>(&inp, &layout);
        three_paths::<P, f32, f32>(&inp, &layout);
        three_paths::<P, bf16, bf16>(&inp, &layout);
        three_paths::<P, f16, f32>(&inp, &layout);
    }
}

#[test]
fn paths_equal_8bit() {
    shape_table::<B8>();
    large::<B8>();
}
#[test]
fn paths_equal_4bit() {
    shape_table::<B4>();
    large::<B4>();
}
#[test]
fn paths_equal_3bit() {
    shape_table::<B3>();
    large::<B3>();
}
#[test]
fn paths_equal_2bit() {
    shape_table::<B2>();
    large::<B2>();
}
#[test]
fn paths_equal_1bit() {
    shape_table::<B1>();
    large::<B1>();
}

/// Wrong lengths are typed errors on every entry point, never panics.
#[test]
fn bad_lengths_are_errors() {
    let layout = HqqLayout::new(8, 16, 8, Axis::Zero).unwrap(); // code [8, 16], packed 4-bit [4, 16]
    let (w, p, mut out) = (vec![0u8; 64], vec![0f32; 16], vec![0f32; 128]);
    let ok = hqq::dequantize_4bit_into(&w, &p, &p, &layout, &mut out, Parallelism::RAYON);
    assert_eq!(ok, Ok(()));
    let e = hqq::dequantize_4bit_into(&w[..63], &p, &p, &layout, &mut out, Parallelism::RAYON);
    assert_eq!(e, Err(Error::Kernel(KernelError::LengthMismatch { what: "packed", expected: 64, got: 63 })));
    let e = hqq::dequantize_4bit_into(&w, &p[..15], &p, &layout, &mut out, Parallelism::RAYON);
    assert_eq!(e, Err(Error::Kernel(KernelError::LengthMismatch { what: "scales", expected: 16, got: 15 })));
    let e = hqq::dequantize_4bit_into(&w, &p, &p[..1], &layout, &mut out, Parallelism::RAYON);
    assert_eq!(e, Err(Error::Kernel(KernelError::LengthMismatch { what: "zeros", expected: 16, got: 1 })));
    let e = hqq::dequantize_4bit_into(&w, &p, &p, &layout, &mut out[..127], Parallelism::RAYON);
    assert_eq!(e, Err(Error::Kernel(KernelError::LengthMismatch { what: "out", expected: 128, got: 127 })));
    assert_eq!(
        HqqLayout::new(3, 5, 0, Axis::Zero),
        Err(Error::Kernel(KernelError::GroupSize { group: 0, len: 15 }))
    );
    assert_eq!(
        HqqLayout::new(3, 5, 4, Axis::One),
        Err(Error::Kernel(KernelError::GroupSize { group: 4, len: 15 }))
    );
    assert_eq!(
        HqqLayout::new(usize::MAX, 2, 1, Axis::One),
        Err(Error::Kernel(KernelError::ShapeOverflow { rows: usize::MAX, cols: 2 }))
    );
    assert_eq!(Axis::try_from(2), Err(Error::Kernel(KernelError::UnsupportedAxis(2))));
    // 3-bit: 8 code rows pad to 10, one packed row of 16 words.
    assert!(hqq::dequantize_3bit::<f32, f32>(&[0i32; 16], &p, &p, &layout, Parallelism::RAYON).is_ok());
    let e = hqq::dequantize_3bit::<f32, f32>(&[0i32; 15], &p, &p, &layout, Parallelism::RAYON);
    assert_eq!(e, Err(Error::Kernel(KernelError::LengthMismatch { what: "packed", expected: 16, got: 15 })));
}
