//! The naive AWQ oracle: AutoAWQ's `dequantize_gemm` one weight at a time: find the word of
//! column n, take the nibble its interleave assigns, `(q - z) * s` in f32, one rounding.

use super::AwqLayout;
use crate::elem::Elem;

pub(crate) fn dequant<S: Elem, O: Elem>(
    l: &AwqLayout,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[S],
    out: &mut [O],
) {
    // Nibble holding column j of a word: position of j in [0, 2, 4, 6, 1, 3, 5, 7].
    let nibble = |j: usize| [0usize, 2, 4, 6, 1, 3, 5, 7].iter().position(|&c| c == j).unwrap_or(0);
    let (k_dim, n_dim, words) = (l.k(), l.n(), l.n() / 8);
    for k in 0..k_dim {
        let g = k / l.group_size();
        for n in 0..n_dim {
            let shift = 4 * nibble(n % 8);
            let q = (qweight[k * words + n / 8] as u32 >> shift) & 15;
            let z = (qzeros[g * words + n / 8] as u32 >> shift) & 15;
            out[k * n_dim + n] = O::from_f32((q as f32 - z as f32) * scales[g * n_dim + n].to_f32());
        }
    }
}
