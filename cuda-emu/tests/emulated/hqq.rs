//! ptx/hqq.cu, run on the CPU through the shim, equals the crate's naive reference bit for bit
//! for every width x element type x axis over a shape table and several 1-D and 2-D launch shapes
//! (so the vector and 1-wide paths, the axis-0 row chunks and the grid-stride loops are exercised).

use half::{bf16, f16};
use quant_kernels::hqq::{self, Axis, HqqLayout};
use quant_kernels::pack::Word;
use quant_kernels::{B1, B2, B3, B4, B8, Elem, Packing};
use quant_kernels_cuda_emu::{
    EmuElem, HqqShape, LAUNCHES_2D, SplitMix as Rng, hqq_dequant_3b, hqq_dequant_u8,
};

fn case<P: Packing, T: Elem + EmuElem>(rows: usize, cols: usize, g: usize, axis: Axis, seed: u64) -> bool {
    let layout = HqqLayout::new(rows, cols, g, axis).unwrap();
    let Ok((pr, pc)) = layout.packed_shape(P::BITS) else { return false };
    let (cr, _) = layout.code_shape();
    let mut rng = Rng(seed);
    let words: Vec<P::Word> =
        (0..pr * pc).map(|_| P::Word::from_bits(rng.next_u64() as u32 & 0x3fff_ffff)).collect();
    let s: Vec<T> = (0..layout.groups()).map(|_| <T as Elem>::from_f32(rng.f32_in(-0.1, 0.1))).collect();
    let z: Vec<T> = (0..layout.groups()).map(|_| <T as Elem>::from_f32(rng.f32_in(0.0, 16.0))).collect();
    let mut want = vec![<T as Elem>::from_f32(0.0); layout.numel()];
    hqq::dequantize_reference_into::<P, T, T>(&words, &s, &z, &layout, &mut want).unwrap();
    let shape = HqqShape {
        rows: cr,
        cols: pc,
        prows: pr,
        axis: if axis == Axis::Zero { 0 } else { 1 },
        groups: layout.groups(),
    };
    let bits: Vec<u32> = words.iter().map(|w| w.bits()).collect();
    for (grid, block) in LAUNCHES_2D.into_iter().chain([(64, 128)]) {
        let got: Vec<T> = if P::BITS.get() == 3 {
            let w: Vec<i32> = bits.iter().map(|&b| b as i32).collect();
            hqq_dequant_3b(&w, &s, &z, shape, grid, block)
        } else {
            let w: Vec<u8> = bits.iter().map(|&b| b as u8).collect();
            hqq_dequant_u8(P::BITS.get(), &w, &s, &z, shape, grid, block)
        };
        let same = got.iter().zip(&want).all(|(a, b)| a.to_f32().to_bits() == b.to_f32().to_bits());
        assert!(
            same,
            "{}-bit {rows}x{cols} g{g} {axis:?} {} grid {grid} block {block}",
            P::BITS.get(),
            T::DTYPE
        );
    }
    true
}

fn widths<T: Elem + EmuElem>(rows: usize, cols: usize, g: usize, axis: Axis) -> usize {
    [
        case::<B8, T>(rows, cols, g, axis, 1),
        case::<B4, T>(rows, cols, g, axis, 2),
        case::<B3, T>(rows, cols, g, axis, 3),
        case::<B2, T>(rows, cols, g, axis, 4),
        case::<B1, T>(rows, cols, g, axis, 5),
    ]
    .iter()
    .filter(|&&ran| ran)
    .count()
}

#[test]
fn hqq_kernel_source_equals_the_reference() {
    let mut ran = 0;
    for (rows, cols, g) in
        [(1, 1, 1), (7, 13, 7), (24, 40, 8), (17, 48, 16), (40, 21, 105), (64, 72, 24), (33, 120, 8)]
    {
        for axis in [Axis::Zero, Axis::One] {
            ran += widths::<f32>(rows, cols, g, axis);
            ran += widths::<f16>(rows, cols, g, axis);
            ran += widths::<bf16>(rows, cols, g, axis);
        }
    }
    assert!(ran >= 120, "only {ran} cases ran");
}
