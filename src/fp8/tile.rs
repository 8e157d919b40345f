//! FP8's row decoder for the multiply kernel ([`crate::matmul`]): each row's scale runs (one
//! scale per `block_cols` inputs) decoded with the same branch-free bit construction as the
//! dequantizer, times the splat scale.

use super::Fp8Layout;
use crate::matmul::kernel::RowDecoder;

/// One validated FP8 weight (`MB` mantissa bits, exponent bias `BIAS`, `E4M3` specials).
pub(crate) struct Tiles<'a, const MB: u32, const BIAS: i32, const E4M3: bool> {
    pub codes: &'a [u8],
    /// The scale grid widened to `f32`.
    pub scales: &'a [f32],
    pub layout: &'a Fp8Layout,
}

impl<const MB: u32, const BIAS: i32, const E4M3: bool> RowDecoder for Tiles<'_, MB, BIAS, E4M3> {
    fn rows(&self) -> usize {
        self.layout.rows()
    }

    #[inline(always)]
    fn decode_row(&self, r: usize, k0: usize, k1: usize, dst: &mut [f32]) {
        let (cols, (br, bc), (_, sc)) =
            (self.layout.cols(), self.layout.block_size(), self.layout.scale_shape());
        let src = &self.codes[r * cols..(r + 1) * cols];
        let srow = &self.scales[(r / br) * sc..(r / br + 1) * sc];
        let mut k = k0;
        while k < k1 {
            let end = ((k / bc + 1) * bc).min(k1);
            let s = srow[k / bc];
            for (o, &c) in dst[k - k0..end - k0].iter_mut().zip(&src[k..end]) {
                *o = super::cpu::decode::<MB, BIAS, E4M3>(c) * s;
            }
            k = end;
        }
    }
}
