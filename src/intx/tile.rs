//! int8 and int4 tile decoders for the multiply kernel ([`crate::matmul`]): blocks of 16 rows
//! of the `[rows, cols]` codes.

use super::{Granularity, Int4Tensor, Int8Tensor};
use crate::matmul::kernel::{Decoder, Form, KT, MAX_ROWS};

/// Rows per block.
const ROWS: usize = 16;

fn rows_of(total: usize, b: usize, rows: &mut [usize; MAX_ROWS]) -> usize {
    let n = ROWS.min(total - b * ROWS);
    for (t, r) in rows.iter_mut().enumerate().take(n) {
        *r = b * ROWS + t;
    }
    n
}

/// A validated [`Int8Tensor`]: `q * scale`.
pub(crate) struct Int8Tiles<'a>(pub &'a Int8Tensor);

impl Decoder for Int8Tiles<'_> {
    const FORM: Form = Form::Rows;
    type State = ();

    fn blocks(&self) -> usize {
        self.0.rows.div_ceil(ROWS)
    }

    fn block_rows(&self, b: usize, rows: &mut [usize; MAX_ROWS]) -> usize {
        rows_of(self.0.rows, b, rows)
    }

    fn begin(&self, _: usize, _: &mut ()) {}

    #[inline(always)]
    fn decode(&self, b: usize, _: &(), k0: usize, k1: usize, tile: &mut [f32]) {
        let t8 = self.0;
        let cols = t8.cols;
        for t in 0..ROWS.min(t8.rows - b * ROWS) {
            let r = b * ROWS + t;
            let s = if t8.granularity == Granularity::PerTensor { t8.scales[0] } else { t8.scales[r] };
            let src = &t8.q[r * cols + k0..r * cols + k1];
            for (o, &q) in tile[t * KT..t * KT + k1 - k0].iter_mut().zip(src) {
                *o = q as f32 * s;
            }
        }
    }
}

/// A validated [`Int4Tensor`]: `(q - zero) * scale` per group of a row.
pub(crate) struct Int4Tiles<'a>(pub &'a Int4Tensor);

impl Decoder for Int4Tiles<'_> {
    const FORM: Form = Form::Rows;
    type State = ();

    fn blocks(&self) -> usize {
        self.0.rows.div_ceil(ROWS)
    }

    fn block_rows(&self, b: usize, rows: &mut [usize; MAX_ROWS]) -> usize {
        rows_of(self.0.rows, b, rows)
    }

    fn begin(&self, _: usize, _: &mut ()) {}

    #[inline(always)]
    fn decode(&self, b: usize, _: &(), k0: usize, k1: usize, tile: &mut [f32]) {
        let t4 = self.0;
        let (cols, group) = (t4.cols, t4.group);
        for t in 0..ROWS.min(t4.rows - b * ROWS) {
            let f0 = (b * ROWS + t) * cols;
            let mut k = k0;
            while k < k1 {
                let g = (f0 + k) / group;
                let end = (k + group - (f0 + k) % group).min(k1);
                let (z, s) = (t4.zeros[g] as f32, t4.scales[g]);
                for (kk, o) in (k..end).zip(&mut tile[t * KT + k - k0..t * KT + end - k0]) {
                    let f = f0 + kk;
                    let q = (t4.packed[f / 2] >> (4 * (f % 2))) & 15;
                    *o = (q as f32 - z) * s;
                }
                k = end;
            }
        }
    }
}
