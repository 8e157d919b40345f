//! The naive GPTQ oracle: one weight at a time, following GPTQModel's `dequantize_weight`
//! literally (`scales[g] * (q - z[g])`), no SIMD, no threads, and its own field extraction.

use super::{GptqLayout, ZeroFormat};
use crate::elem::Elem;

/// Bits `[first, first + bits)` of the little-endian word stream `words(0), words(1), ...`.
fn bits_of(words: impl Fn(usize) -> u32, first: usize, bits: usize) -> u32 {
    let mut v = 0u32;
    for b in 0..bits {
        let at = first + b;
        v |= ((words(at / 32) >> (at % 32)) & 1) << b;
    }
    v
}

pub(crate) fn dequant<S: Elem, O: Elem>(
    layout: &GptqLayout,
    qweight: &[i32],
    rows_group: &[u32],
    qzeros: &[i32],
    format: ZeroFormat,
    scales: &[S],
    out: &mut [O],
) {
    let (k_dim, n_dim, bits) = (layout.k(), layout.n(), layout.bits() as usize);
    let zcols = layout.qzeros_shape().1;
    for k in 0..k_dim {
        let g = rows_group[k] as usize;
        for n in 0..n_dim {
            let q = bits_of(|r| qweight[r * n_dim + n] as u32, k * bits, bits);
            let z = match format {
                ZeroFormat::V2 => bits_of(|c| qzeros[g * zcols + c] as u32, n * bits, bits),
                // GPTQModel: +1 in every field of each 2/4/8-bit word (wrapping word add, carries
                // included); 3-bit: +1 per field.
                ZeroFormat::V1 if bits == 3 => {
                    (bits_of(|c| qzeros[g * zcols + c] as u32, n * bits, bits) + 1) & 7
                }
                ZeroFormat::V1 => {
                    let one: u32 = (0..32 / bits).map(|f| 1u32 << (f * bits)).sum();
                    bits_of(|c| (qzeros[g * zcols + c] as u32).wrapping_add(one), n * bits, bits)
                }
            };
            let s = scales[g * n_dim + n].to_f32();
            out[k * n_dim + n] = O::from_f32((q as f32 - z as f32) * s);
        }
    }
}
