//! The naive HQQ oracle: one weight at a time, no SIMD, no threads, no code shared with the fast
//! path. It follows hqq's `Quantizer.dequantize` literally: find the weight's place in the code
//! matrix, find its packed word and shift from the BitPack layout of its width, then
//! `(q - zero) * scale` in `f32` and one rounding to the output type.
//!
//! Called through [`super::dequantize_reference_into`], which validates the arguments.

use super::{Axis, HqqLayout};
use crate::elem::Elem;

/// `out[i]` for every weight `i`; `words` are the packed words widened to `u32`.
pub(crate) fn dequant<S: Elem, O: Elem>(
    bits: u8,
    words: &[u32],
    scales: &[S],
    zeros: &[S],
    layout: &HqqLayout,
    out: &mut [O],
) {
    let (rows, cols) = layout.code_shape();
    // hqq: 3-bit pads the rows to a multiple of 10, the others need an exact multiple.
    let (per_word, used_bits) = match bits {
        3 => (10, 30),
        b => (8 / b as usize, 8),
    };
    let step = rows.div_ceil(per_word); // rows of one slice (= packed rows)
    let mask = (1u32 << bits) - 1;
    for (i, o) in out.iter_mut().enumerate() {
        let (r, c) = (i / cols, i % cols);
        let slice = r / step;
        let shift = used_bits - bits as usize * (slice + 1);
        let q = (words[(r % step) * cols + c] >> shift) & mask;
        let group = match layout.axis() {
            Axis::Zero => c,
            Axis::One => r,
        };
        let w = (q as f32 - zeros[group].to_f32()) * scales[group].to_f32();
        *o = O::from_f32(w);
    }
}
