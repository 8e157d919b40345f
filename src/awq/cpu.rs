//! The fast AWQ dequantization, rayon over row chunks. AVX-512: two words are broadcast to 16
//! lanes and shifted by the interleave's bit positions, straight into the affine step. Portable:
//! the words are spread to one code per lane in a small L1 scratch, then the shared row loop.

use super::{AwqLayout, unpack_interleaved};
use crate::elem::{Elem, TILE};
use crate::lanes::{self, ColumnParams, Kernel};
use crate::par::{self, Parallelism};

pub(crate) fn dequant<S: Elem, O: Elem>(
    l: &AwqLayout,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[S],
    out: &mut [O],
    par: Parallelism,
) {
    let zeros = unpack_interleaved(qzeros, l.n()); // [G, N]
    let params = ColumnParams::new(zeros.iter().map(|&z| z as u32), scales, l.n());
    par::row_chunks(out, l.n(), par, |row0, out| {
        lanes::dispatch(Rows { l, qweight, params: &params, row0, out })
    });
}

struct Rows<'a, 'b, S, O> {
    l: &'a AwqLayout,
    qweight: &'a [i32],
    params: &'a ColumnParams<'b, S>,
    row0: usize,
    out: &'a mut [O],
}

impl<S: Elem, O: Elem> Kernel for Rows<'_, '_, S, O> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Self { l, qweight, params, row0, out } = self;
        let (n, words) = (l.n(), l.packed_cols());
        let mut codes = vec![0i32; n];
        let mut scratch = [0f32; TILE];
        // Bit position of column 8c + j within word c.
        let shifts8: [u32; 8] = std::array::from_fn(|j| 4 * super::AWQ_REVERSE_ORDER[j] as u32);
        for (i, dst) in out.chunks_exact_mut(n).enumerate() {
            let k = row0 + i;
            #[cfg(target_arch = "x86_64")]
            if let Some(v4) = lanes::v4::token() {
                let (z, s) = params.row(k / l.group_size());
                lanes::v4::affine_interleaved4(v4, &qweight[k * words..(k + 1) * words], shifts8, z, s, dst);
                continue;
            }
            let _ = shifts8;
            for (c8, &w) in codes.chunks_exact_mut(8).zip(&qweight[k * words..(k + 1) * words]) {
                let w = w as u32;
                for (j, c) in c8.iter_mut().enumerate() {
                    *c = ((w >> (4 * super::AWQ_REVERSE_ORDER[j])) & 15) as i32;
                }
            }
            params.affine_row(k / l.group_size(), &codes, 0, 15, dst, &mut scratch);
        }
    }
}
