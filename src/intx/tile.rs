//! int8 and int4 row decoders for the multiply kernel ([`crate::matmul`]).

use super::{Granularity, Int4Tensor, Int8Tensor};
use crate::matmul::kernel::RowDecoder;

/// A validated [`Int8Tensor`]: `q * scale`.
pub(crate) struct Int8Tiles<'a>(pub &'a Int8Tensor);

impl RowDecoder for Int8Tiles<'_> {
    fn rows(&self) -> usize {
        self.0.rows
    }

    #[inline(always)]
    fn decode_row(&self, r: usize, k0: usize, k1: usize, dst: &mut [f32]) {
        let t = self.0;
        let s = if t.granularity == Granularity::PerTensor { t.scales[0] } else { t.scales[r] };
        for (o, &q) in dst.iter_mut().zip(&t.q[r * t.cols + k0..r * t.cols + k1]) {
            *o = q as f32 * s;
        }
    }
}

/// A validated [`Int4Tensor`]: `(q - zero) * scale` per group of a row.
pub(crate) struct Int4Tiles<'a>(pub &'a Int4Tensor);

impl RowDecoder for Int4Tiles<'_> {
    fn rows(&self) -> usize {
        self.0.rows
    }

    #[inline(always)]
    fn decode_row(&self, r: usize, k0: usize, k1: usize, dst: &mut [f32]) {
        let t = self.0;
        let f0 = r * t.cols;
        let mut k = k0;
        while k < k1 {
            let g = (f0 + k) / t.group;
            let end = (k + t.group - (f0 + k) % t.group).min(k1);
            let (z, s) = (t.zeros[g] as f32, t.scales[g]);
            for (kk, o) in (k..end).zip(&mut dst[k - k0..end - k0]) {
                let f = f0 + kk;
                let q = (t.packed[f / 2] >> (4 * (f % 2))) & 15;
                *o = (q as f32 - z) * s;
            }
            k = end;
        }
    }
}
