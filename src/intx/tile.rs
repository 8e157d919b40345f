//! int8 and int4 row decoders for the multiply kernel ([`crate::matmul`]).

use super::{Granularity, Int4Tensor, Int8Tensor};
use crate::elem::FloatVec;
use crate::error::Result;
use crate::hqq::{Axis, HqqLayout, HqqWeight, pack_hqq};
use crate::matmul::kernel::{self, Multiply, RowDecoder, Rows16, Scratch};
use crate::matmul::q8::{Int8Weight, IntWeight};
use crate::par::Parallelism;
use crate::scheme::QuantScheme;

impl Multiply for Int8Tensor {
    type Prepared = Int8Tensor;

    fn prepare(self) -> Result<Self> {
        self.check(self.q.len())?;
        Ok(self)
    }

    fn restore(p: Self) -> Self {
        p
    }

    fn prepared_bytes(p: &Self) -> usize {
        p.stored_bytes()
    }

    fn products_into(p: &Self, x: &[f32], batch: usize, par: Parallelism, y: &mut [f32], s: &mut Scratch) {
        kernel::gemm_into(&Rows16(&Int8Tiles(p)), p.rows, p.cols, x, batch, par, y, s)
    }

    /// Rows of a multiple of 32 inputs: one group per row, codes `q + 128` with zero point 128.
    fn int8_weight(p: &Self) -> Result<Int8Weight> {
        if p.cols == 0 || !p.cols.is_multiple_of(32) {
            return Err(kernel::int8_refused(Self::NAME, "its rows are not a multiple of 32 inputs"));
        }
        let per_tensor = p.granularity == Granularity::PerTensor;
        IntWeight::from_rows(8, p.rows, p.cols, p.cols, |r, c, s, z| {
            for (c, &q) in c.iter_mut().zip(&p.q[r * p.cols..(r + 1) * p.cols]) {
                *c = (q as i16 + 128) as u8;
            }
            (s[0], z[0]) = (if per_tensor { p.scales[0] } else { p.scales[r] }, 128.0);
            Ok(())
        })
        .map(Into::into)
    }
}

/// An [`Int4Tensor`] as [`QuantLinear`](crate::matmul::QuantLinear) keeps it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Int4Prepared {
    /// Re-laid as HQQ 4-bit on axis 1 (the same `(q - zero) * scale` per group of a row, the
    /// zero points as `f32`), to run on HQQ's decoders and its batch-1 register path.
    Hqq(HqqWeight),
    /// As given, on the int4 row decoder: when the groups are an odd count, which HQQ's 4-bit
    /// packing (two code rows per byte row) cannot hold.
    Rows(Int4Tensor),
}

impl Int4Prepared {
    fn hqq(t: &Int4Tensor) -> Result<Option<HqqWeight>> {
        let groups = t.rows * t.cols / t.group;
        if !groups.is_multiple_of(2) {
            return Ok(None);
        }
        let codes = super::unpack_int4(&t.packed, t.rows * t.cols)?;
        Ok(Some(HqqWeight {
            layout: HqqLayout::new(t.rows, t.cols, t.group, Axis::One)?,
            packed: pack_hqq(&codes, groups, t.group, 4)?,
            scales: FloatVec::F32(t.scales.clone()),
            zeros: FloatVec::F32(t.zeros.iter().map(|&z| z as f32).collect()),
        }))
    }
}

impl Multiply for Int4Tensor {
    type Prepared = Int4Prepared;

    fn prepare(self) -> Result<Int4Prepared> {
        self.check(self.rows.saturating_mul(self.cols))?;
        Ok(match Int4Prepared::hqq(&self)? {
            Some(h) => Int4Prepared::Hqq(<HqqWeight as Multiply>::prepare(h)?),
            None => Int4Prepared::Rows(self),
        })
    }

    fn restore(p: Int4Prepared) -> Self {
        let h = match p {
            Int4Prepared::Rows(t) => return t,
            Int4Prepared::Hqq(h) => h,
        };
        let l = h.layout;
        let packed = match crate::hqq::unpack_hqq(&h.packed).and_then(|c| super::pack_int4(&c)) {
            Ok(p) => p,
            Err(_) => unreachable!("the codes came from a validated int4 tensor"),
        };
        // The zero points were exact integers in 0..16; the scales were f32 all along.
        let zeros = h.zeros.to_f32().iter().map(|&z| z as u8).collect();
        Int4Tensor {
            rows: l.rows(),
            cols: l.cols(),
            group: l.group_size(),
            packed,
            scales: h.scales.to_f32(),
            zeros,
        }
    }

    fn prepared_bytes(p: &Int4Prepared) -> usize {
        match p {
            Int4Prepared::Hqq(h) => HqqWeight::prepared_bytes(h),
            Int4Prepared::Rows(t) => t.stored_bytes(),
        }
    }

    fn products_into(
        p: &Int4Prepared,
        x: &[f32],
        batch: usize,
        par: Parallelism,
        y: &mut [f32],
        s: &mut Scratch,
    ) {
        match p {
            Int4Prepared::Hqq(h) => HqqWeight::products_into(h, x, batch, par, y, s),
            Int4Prepared::Rows(t) => {
                kernel::gemm_into(&Rows16(&Int4Tiles(t)), t.rows, t.cols, x, batch, par, y, s)
            }
        }
    }

    /// Groups of a multiple of 32 inputs (they divide a row).
    fn int8_weight(p: &Int4Prepared) -> Result<Int8Weight> {
        let group = match p {
            Int4Prepared::Hqq(h) => h.layout.group_size(),
            Int4Prepared::Rows(t) => t.group,
        };
        if !group.is_multiple_of(32) {
            return Err(kernel::int8_refused(Self::NAME, "its groups are not a multiple of 32 inputs"));
        }
        let t = match p {
            Int4Prepared::Hqq(h) => return HqqWeight::int8_weight(h),
            Int4Prepared::Rows(t) => t,
        };
        let codes = super::unpack_int4(&t.packed, t.rows * t.cols)?;
        let per_row = t.cols / t.group;
        IntWeight::from_rows(4, t.rows, t.cols, t.group, |r, c, s, z| {
            c.copy_from_slice(&codes[r * t.cols..(r + 1) * t.cols]);
            s.copy_from_slice(&t.scales[r * per_row..(r + 1) * per_row]);
            for (z, &q) in z.iter_mut().zip(&t.zeros[r * per_row..(r + 1) * per_row]) {
                *z = q as f32;
            }
            Ok(())
        })
        .map(Into::into)
    }
}

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
            // Validated groups are even and divide the row, and the kernel's input blocks
            // are even: whole bytes, both nibbles per byte (a loop LLVM vectorizes).
            let (a, b) = (f0 + k, f0 + end);
            debug_assert!(a % 2 == 0 && b % 2 == 0);
            for (o, &byte) in dst[k - k0..end - k0].chunks_exact_mut(2).zip(&t.packed[a / 2..b / 2]) {
                o[0] = ((byte & 15) as f32 - z) * s;
                o[1] = ((byte >> 4) as f32 - z) * s;
            }
            k = end;
        }
    }
}
