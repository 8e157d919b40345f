//! HQQ's tile decoder for the multiply kernel ([`crate::matmul`]).
//!
//! Weight row `o`, input `k` is flat element `f = o * in + k` of the code matrix `[R, C]`
//! (code row `f / C`, column `f % C`), which sits in packed row `(f / C) % P`, plane
//! `(f / C) / P`. A run of inputs is a run of code columns until a code row ends.
//!
//! When every plane holds whole weight rows (`P * C` a multiple of `in`: true for every layer
//! whose row count is a multiple of the group size), row `r` of plane 0 and row
//! `r + j * P * C / in` of plane `j` read the same words at the same columns. A block is then a
//! few such row sets, decoded together: each packed word and (axis 0) each zero/scale span is
//! read once for all planes. Otherwise a block is 16 consecutive rows decoded one by one.

use super::Axis;
use crate::elem::Elem;
use crate::lanes::{self, affine_lanes, affine_splat};
use crate::matmul::kernel::{Decoder, Form, KT, MAX_ROWS};
use crate::pack::Packing;

/// One validated HQQ weight seen as `[out, in]` tiles.
pub(crate) struct Tiles<'a, P: Packing, S> {
    pub words: &'a [P::Word],
    pub scales: &'a [S],
    pub zeros: &'a [S],
    pub out: usize,
    pub inp: usize,
    /// Code-matrix columns.
    pub c: usize,
    /// Packed rows.
    pub prows: usize,
    pub axis: Axis,
}

impl<P: Packing, S: Elem> Tiles<'_, P, S> {
    /// Weight rows per plane when every plane holds whole rows.
    fn rows_per_plane(&self) -> Option<usize> {
        let plane = self.prows * self.c;
        (self.inp > 0 && plane.is_multiple_of(self.inp)).then(|| plane / self.inp)
    }

    /// Row sets per block in the aligned case: `PER_WORD` rows each, at most `MAX_ROWS` rows.
    const SETS: usize = if MAX_ROWS / P::PER_WORD > 8 { 8 } else { MAX_ROWS / P::PER_WORD };
}

impl<P: Packing, S: Elem> Decoder for Tiles<'_, P, S> {
    const FORM: Form = Form::Rows;
    type State = ();

    fn blocks(&self) -> usize {
        match self.rows_per_plane() {
            Some(rpp) => rpp.div_ceil(Self::SETS),
            None => self.out.div_ceil(16),
        }
    }

    fn block_rows(&self, b: usize, rows: &mut [usize; MAX_ROWS]) -> usize {
        let mut n = 0;
        match self.rows_per_plane() {
            Some(rpp) => {
                for r in b * Self::SETS..((b + 1) * Self::SETS).min(rpp) {
                    // Last plane first: slot `p` of a full set is at shift `p * BITS`.
                    for j in (0..P::PER_WORD).rev() {
                        let o = j * rpp + r;
                        if o < self.out {
                            rows[n] = o;
                            n += 1;
                        }
                    }
                }
            }
            None => {
                for o in b * 16..((b + 1) * 16).min(self.out) {
                    rows[n] = o;
                    n += 1;
                }
            }
        }
        n
    }

    fn begin(&self, _: usize, _: &mut ()) {}

    #[inline(always)]
    fn decode(&self, b: usize, _: &(), k0: usize, k1: usize, tile: &mut [f32]) {
        // (first row, planes decoded with it) for each row set.
        let (first, sets, planes) = match self.rows_per_plane() {
            Some(_) => (b * Self::SETS, Self::SETS, P::PER_WORD),
            None => (b * 16, 16, 1),
        };
        let mut slot = 0;
        let mut zs = [0f32; 2 * KT];
        for r in first..first + sets {
            let f0 = r * self.inp + k0;
            // Rows of this set that exist (3-bit padding, last block).
            let mut members = [(0usize, 0usize); 16];
            let mut m = 0;
            let mut t = slot;
            for j in (0..planes).rev() {
                let o = match self.rows_per_plane() {
                    Some(rpp) if r < rpp => j * rpp + r,
                    Some(_) => break,
                    None => r,
                };
                if o >= self.out {
                    continue;
                }
                members[m] = (t, j);
                m += 1;
                t += 1;
            }
            if m == 0 {
                continue;
            }
            slot = t;
            // Runs of code columns.
            let mut f = f0;
            let mut off = 0;
            let len = k1 - k0;
            while off < len {
                let (i, col) = (f / self.c, f % self.c);
                let run = (self.c - col).min(len - off);
                let src = &self.words[(i % self.prows) * self.c + col..][..run];
                match self.axis {
                    Axis::Zero => {
                        #[cfg(target_arch = "x86_64")]
                        if let Some(v4) = lanes::v4::token() {
                            let (z, s) = (&self.zeros[col..col + run], &self.scales[col..col + run]);
                            if m == P::PER_WORD && planes == P::PER_WORD {
                                // Every plane: each word vector and zero/scale vector loaded once.
                                let dst = &mut tile[members[0].0 * KT + off..];
                                let bits = P::BITS.get() as u32;
                                lanes::v4::affine_planes(v4, src, m, 0, bits, |_| (z, s), true, dst, KT);
                                f += run;
                                off += run;
                                continue;
                            }
                            for &(t, j) in &members[..m] {
                                let shift = P::shift(i / self.prows + j);
                                let dst = &mut tile[t * KT + off..t * KT + off + run];
                                lanes::v4::affine_lanes(v4, src, shift, P::MASK, z, s, dst);
                            }
                            f += run;
                            off += run;
                            continue;
                        }
                        let (zf, sf) = zs.split_at_mut(KT);
                        let (z, s): (&[f32], &[f32]) = match (S::as_f32(self.zeros), S::as_f32(self.scales)) {
                            (Some(z), Some(s)) => (&z[col..col + run], &s[col..col + run]),
                            _ => {
                                S::slice_to_f32(&self.zeros[col..col + run], &mut zf[..run]);
                                S::slice_to_f32(&self.scales[col..col + run], &mut sf[..run]);
                                (&zf[..run], &sf[..run])
                            }
                        };
                        for &(t, j) in &members[..m] {
                            let shift = P::shift(i / self.prows + j);
                            let dst = &mut tile[t * KT + off..t * KT + off + run];
                            affine_lanes(src, |w| P::extract(w, shift), z, s, dst);
                        }
                    }
                    Axis::One => {
                        for &(t, j) in &members[..m] {
                            let ij = i + j * self.prows;
                            let (z, s) = (self.zeros[ij].to_f32(), self.scales[ij].to_f32());
                            let shift = P::shift(ij / self.prows);
                            let dst = &mut tile[t * KT + off..t * KT + off + run];
                            #[cfg(target_arch = "x86_64")]
                            if let Some(v4) = lanes::v4::token() {
                                lanes::v4::affine_splat(v4, src, shift, P::MASK, z, s, dst);
                                continue;
                            }
                            affine_splat(src, |w| P::extract(w, shift), z, s, dst);
                        }
                    }
                }
                f += run;
                off += run;
            }
        }
    }
}
