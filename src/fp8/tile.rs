//! FP8's row decoder for the multiply kernel ([`crate::matmul`]): each row's scale runs (one
//! scale per `block_cols` inputs) decoded with the same branch-free bit construction as the
//! dequantizer, times the splat scale.

use super::{Fp8Format, Fp8Layer, Fp8Layout};
use crate::error::{Error, KernelError, Result};
use crate::matmul::kernel::{self, Multiply, RowDecoder, Rows16, Scratch};
use crate::par::Parallelism;
use crate::scheme::QuantScheme;

/// A one-expert FP8 layer with its scale grid widened to `f32`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Prepared {
    layer: Fp8Layer,
    scales: Vec<f32>,
}

impl Multiply for Fp8Layer {
    type Prepared = Prepared;

    fn prepare(self) -> Result<Prepared> {
        if self.experts != 1 {
            return Err(Error::Kernel(KernelError::StackedExperts { experts: self.experts }));
        }
        let l = self.layout;
        let scales = self.scales.to_f32();
        super::check(&l, self.codes.len(), &scales, l.rows() * l.cols())?;
        Ok(Prepared { layer: self, scales })
    }

    fn restore(p: Prepared) -> Self {
        p.layer
    }

    fn prepared_bytes(p: &Prepared) -> usize {
        p.layer.stored_bytes()
    }

    fn products_into(
        p: &Prepared,
        x: &[f32],
        batch: usize,
        par: Parallelism,
        y: &mut [f32],
        s: &mut Scratch,
    ) {
        let (codes, scales, layout) = (&p.layer.codes[..], &p.scales[..], &p.layer.layout);
        let (out, k) = (layout.rows(), layout.cols());
        match p.layer.format {
            Fp8Format::E4M3 => kernel::gemm_into(
                &Rows16(&Tiles::<3, 7, true> { codes, scales, layout }),
                out,
                k,
                x,
                batch,
                par,
                y,
                s,
            ),
            Fp8Format::E5M2 => kernel::gemm_into(
                &Rows16(&Tiles::<2, 15, false> { codes, scales, layout }),
                out,
                k,
                x,
                batch,
                par,
                y,
                s,
            ),
        }
    }
}

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
