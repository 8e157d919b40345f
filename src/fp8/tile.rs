//! FP8's tile decoder for the multiply kernel ([`crate::matmul`]): blocks of 16 rows of the
//! `[out, in]` codes, each row's scale runs (one scale per `block_cols` inputs) decoded with the
//! same branch-free bit construction as the dequantizer, times the splat scale.

use super::Fp8Layout;
use crate::matmul::kernel::{Decoder, Form, KT, MAX_ROWS};

/// Rows per block.
const ROWS: usize = 16;

/// One validated FP8 weight (`MB` mantissa bits, exponent bias `BIAS`, `E4M3` specials).
pub(crate) struct Tiles<'a, const MB: u32, const BIAS: i32, const E4M3: bool> {
    pub codes: &'a [u8],
    /// The scale grid widened to `f32`.
    pub scales: &'a [f32],
    pub layout: &'a Fp8Layout,
}

impl<const MB: u32, const BIAS: i32, const E4M3: bool> Decoder for Tiles<'_, MB, BIAS, E4M3> {
    const FORM: Form = Form::Rows;
    type State = ();

    fn blocks(&self) -> usize {
        self.layout.rows().div_ceil(ROWS)
    }

    fn block_rows(&self, b: usize, rows: &mut [usize; MAX_ROWS]) -> usize {
        let n = ROWS.min(self.layout.rows() - b * ROWS);
        for (t, r) in rows.iter_mut().enumerate().take(n) {
            *r = b * ROWS + t;
        }
        n
    }

    fn begin(&self, _: usize, _: &mut ()) {}

    #[inline(always)]
    fn decode(&self, b: usize, _: &(), k0: usize, k1: usize, tile: &mut [f32]) {
        let (cols, (br, bc), (_, sc)) =
            (self.layout.cols(), self.layout.block_size(), self.layout.scale_shape());
        let n = ROWS.min(self.layout.rows() - b * ROWS);
        for t in 0..n {
            let r = b * ROWS + t;
            let src = &self.codes[r * cols..(r + 1) * cols];
            let srow = &self.scales[(r / br) * sc..(r / br + 1) * sc];
            let mut k = k0;
            while k < k1 {
                let end = ((k / bc + 1) * bc).min(k1);
                let s = srow[k / bc];
                for (o, &c) in tile[t * KT + k - k0..t * KT + end - k0].iter_mut().zip(&src[k..end]) {
                    *o = super::cpu::decode::<MB, BIAS, E4M3>(c) * s;
                }
                k = end;
            }
        }
    }
}
