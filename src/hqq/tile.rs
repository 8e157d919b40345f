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

use super::{Axis, HqqLayout, HqqWeight, PackedWords};
use crate::elem::{Elem, FloatVec};
use crate::error::Result;
use crate::lanes::{self, affine_lanes, affine_splat};
use crate::matmul::kernel::{self, Decoder, Form, KT, MAX_ROWS, Multiply, Scratch};
use crate::matmul::q8::{ColumnWeight, Int8Weight, IntWeight};
use crate::pack::{B1, B2, B3, B4, B8, Bits, Packing, Word};
use crate::par::Parallelism;
use crate::scheme::QuantScheme;

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

    /// The plane-0 row of row set `s` (aligned case, `s < rows_per_plane`).
    ///
    /// Axis 0 with `C` a multiple of `in`: rows `r` and `r + C / in` read the same zero/scale
    /// columns, and plane 0 holds `P * C / in` rows. Sets are then taken residue by residue
    /// (`s -> (s % P) * (C / in) + s / P`), so the sets of one block share their parameter
    /// spans and read them from L1 instead of once per set from a 1 MB table that does not
    /// stay cached. Which rows form a block never changes a row's summation order.
    #[inline(always)]
    fn set_row(&self, s: usize) -> usize {
        if self.axis == Axis::Zero && self.inp > 0 && self.c.is_multiple_of(self.inp) && self.prows > 0 {
            (s % self.prows) * (self.c / self.inp) + s / self.prows
        } else {
            s
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl<P: Packing, S: Elem> Tiles<'_, P, S> {
    /// Row sets `set..set + NS` of the block whose first set is `first` (see
    /// [`Decoder::gemv_v4`]); their sums go to their tile slots in `out`.
    #[inline(always)]
    fn gemv_pass<const NS: usize, const PW: usize>(
        &self,
        v4: pulp::x86::V4,
        set: usize,
        first: usize,
        x: &[f32],
        out: &mut [f32; MAX_ROWS],
    ) {
        use crate::matmul::kernel::{L, sum_lanes};
        use core::arch::x86_64::__m512;
        let f = v4.avx512f;
        debug_assert_eq!(PW, P::PER_WORD);
        let (inp, c, planes) = (self.inp, self.c, PW);
        let mk = f._mm512_set1_epi32(P::MASK as i32);
        let codes: [f32; L] = std::array::from_fn(|i| (i as u32 & P::MASK) as f32);
        let codes: __m512 = bytemuck::cast(codes);
        let mut shifts = [f._mm512_setzero_si512(); PW];
        for (j, sh) in shifts.iter_mut().enumerate() {
            *sh = f._mm512_set1_epi32(P::shift(j) as i32);
        }
        let rows: [usize; NS] = std::array::from_fn(|i| self.set_row(set + i));
        let words: [&[P::Word]; NS] =
            std::array::from_fn(|i| &self.words[rows[i] * inp..(rows[i] + 1) * inp]);
        let mut acc = [[f._mm512_setzero_ps(); PW]; NS];
        // Each set streams its own run of words; once per cache line, ask for the line
        // `AHEAD` bytes on (the hardware prefetcher alone leaves the loads waiting for DRAM,
        // measured). A prefetch reads nothing and cannot fault, past the end too.
        const AHEAD: usize = 1024;
        let line = 64 / std::mem::size_of::<P::Word>();
        macro_rules! prefetch {
            ($si:expr, $k:expr) => {
                if $k % line == 0 {
                    let p = words[$si].as_ptr().wrapping_add($k + AHEAD / std::mem::size_of::<P::Word>());
                    v4.sse._mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
                }
            };
        }
        match self.axis {
            Axis::One => {
                // A row's groups are consecutive in the zero/scale vectors (plane `j` at
                // `+ j * P`): 16 of them are widened with one vector load, and each group's
                // value is broadcast from its lane (`vpermps`), exact as a scalar widening.
                let ng = inp / c;
                let first: [usize; NS] = std::array::from_fn(|i| rows[i] * inp / c);
                let mut table = [[f._mm512_setzero_ps(); PW]; NS];
                let mut zv = [[f._mm512_setzero_ps(); PW]; NS];
                let mut sv = [[f._mm512_setzero_ps(); PW]; NS];
                for gi in 0..ng {
                    let (lane, vector) = (gi % L, gi - gi % L + L <= ng);
                    if vector && lane == 0 {
                        for si in 0..NS {
                            for j in 0..planes {
                                let at = first[si] + gi + j * self.prows;
                                zv[si][j] = S::load16(v4, lanes16(&self.zeros[at..]));
                                sv[si][j] = S::load16(v4, lanes16(&self.scales[at..]));
                            }
                        }
                    }
                    let pick = f._mm512_set1_epi32(lane as i32);
                    for si in 0..NS {
                        for j in 0..planes {
                            let (z, s) = if vector {
                                (
                                    f._mm512_permutexvar_ps(pick, zv[si][j]),
                                    f._mm512_permutexvar_ps(pick, sv[si][j]),
                                )
                            } else {
                                let ij = first[si] + gi + j * self.prows;
                                (
                                    f._mm512_set1_ps(self.zeros[ij].to_f32()),
                                    f._mm512_set1_ps(self.scales[ij].to_f32()),
                                )
                            };
                            table[si][j] = f._mm512_mul_ps(f._mm512_sub_ps(codes, z), s);
                        }
                    }
                    let g0 = gi * c;
                    for k in (g0..g0 + c).step_by(L) {
                        let xv: __m512 = bytemuck::cast(*lanes16(&x[k..]));
                        for si in 0..NS {
                            prefetch!(si, k);
                            let wide = P::Word::widen16(v4, lanes16(&words[si][k..]));
                            for j in 0..planes {
                                let idx = f._mm512_srlv_epi32(wide, shifts[j]);
                                let w = f._mm512_permutexvar_ps(idx, table[si][j]);
                                acc[si][j] = f._mm512_fmadd_ps(xv, w, acc[si][j]);
                            }
                        }
                    }
                }
            }
            Axis::Zero => {
                let col0: [usize; NS] = std::array::from_fn(|i| (rows[i] * inp) % c);
                let shared = col0.iter().all(|&c0| c0 == col0[0]);
                // A macro, not a closure: a closure is not compiled with the caller's target
                // features, so its intrinsics would become out-of-line calls.
                macro_rules! params {
                    ($at:expr) => {
                        (
                            S::load16(v4, lanes16(&self.zeros[$at..])),
                            S::load16(v4, lanes16(&self.scales[$at..])),
                        )
                    };
                }
                for k in (0..inp).step_by(L) {
                    let xv: __m512 = bytemuck::cast(*lanes16(&x[k..]));
                    let (mut z, mut s) = params!(col0[0] + k);
                    for si in 0..NS {
                        prefetch!(si, k);
                        if si > 0 && !shared {
                            (z, s) = params!(col0[si] + k);
                        }
                        let wide = P::Word::widen16(v4, lanes16(&words[si][k..]));
                        for j in 0..planes {
                            let q = f._mm512_cvtepi32_ps(
                                f._mm512_and_si512(f._mm512_srlv_epi32(wide, shifts[j]), mk),
                            );
                            let w = f._mm512_mul_ps(f._mm512_sub_ps(q, z), s);
                            acc[si][j] = f._mm512_fmadd_ps(xv, w, acc[si][j]);
                        }
                    }
                }
            }
        }
        // Tile order: sets in block order, last plane first.
        for si in 0..NS {
            for j in 0..planes {
                out[(set + si - first) * planes + planes - 1 - j] = sum_lanes(&bytemuck::cast(acc[si][j]));
            }
        }
    }
}

impl<P: Packing, S: Elem> Decoder for Tiles<'_, P, S> {
    const FORM: Form = Form::Rows;

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
                for s in b * Self::SETS..((b + 1) * Self::SETS).min(rpp) {
                    let r = self.set_row(s);
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

    /// Aligned layouts only (every plane holds whole rows, all present), inputs a multiple of
    /// 16, and per axis: 1 — groups a multiple of 16 inputs that never straddle a row, at most
    /// 4 bits (a group's 16 possible weights fit one register, looked up by code); 0 — each
    /// row's zero/scale columns contiguous (`C` a multiple of `in`).
    fn has_gemv(&self) -> bool {
        let Some(rpp) = self.rows_per_plane() else { return false };
        let ok_axis = match self.axis {
            Axis::One => P::BITS.get() <= 4 && self.c.is_multiple_of(16) && self.inp.is_multiple_of(self.c),
            Axis::Zero => self.c.is_multiple_of(self.inp),
        };
        ok_axis && rpp * P::PER_WORD == self.out && self.inp.is_multiple_of(16) && self.prows > 0
    }

    /// Row `r` of plane 0 reads words `r * in..(r + 1) * in` (the code matrix's flat order),
    /// plane `j` the code at `P::shift(j)` of the same words. Several row sets run side by
    /// side (several independent memory streams, one activation load for all). Axis 1: for each
    /// group, one register per plane and set holds the group's 16 weights `((i & MASK) - z) *
    /// s` (the tile path's subtraction and multiplication), picked by the shifted code
    /// (`vpermps` reads the low 4 bits). Axis 0: `(code - z) * s` per lane as the tile path,
    /// each zero/scale vector loaded once for the sets that share it (see `set_row`).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn gemv_v4(&self, v4: pulp::x86::V4, b: usize, x: &[f32], out: &mut [f32; MAX_ROWS]) {
        let first = b * Self::SETS;
        let end = (first + Self::SETS).min(self.out / P::PER_WORD);
        let mut set = first;
        // Sets per pass: at most 16 accumulators (axis 0) or 8 tables + 8 accumulators (axis
        // 1); `PW` is `P::PER_WORD` as a constant, so the register arrays have exact sizes.
        macro_rules! passes {
            ($ns:literal, $pw:literal) => {{
                let n = if end - set >= $ns { $ns } else { 1 };
                if n == $ns {
                    self.gemv_pass::<$ns, $pw>(v4, set, first, x, out)
                } else {
                    self.gemv_pass::<1, $pw>(v4, set, first, x, out)
                }
                n
            }};
        }
        while set < end {
            let n = match (self.axis, P::PER_WORD) {
                (_, 1) => passes!(8, 1),
                (Axis::Zero, 2) => passes!(8, 2),
                (Axis::One, 2) => passes!(4, 2),
                (Axis::Zero, 4) => passes!(4, 4),
                (Axis::One, 4) => passes!(2, 4),
                (Axis::Zero, 8) => passes!(2, 8),
                (Axis::One, 8) => passes!(1, 8),
                _ => passes!(1, 10),
            };
            set += n;
        }
    }
    #[inline(always)]
    fn decode(&self, simd: crate::lanes::Simd, b: usize, k0: usize, k1: usize, tile: &mut [f32]) {
        // (first row, planes decoded with it) for each row set.
        let (first, sets, planes) = match self.rows_per_plane() {
            Some(_) => (b * Self::SETS, Self::SETS, P::PER_WORD),
            None => (b * 16, 16, 1),
        };
        let mut slot = 0;
        let mut zs = [0f32; 2 * KT];
        for set in first..first + sets {
            let r = match self.rows_per_plane() {
                Some(rpp) if set < rpp => self.set_row(set),
                _ => set,
            };
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
                        if let Some(v4) = simd.v4() {
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
                            if let Some(v4) = simd.v4() {
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

/// The first 16 elements as an array (the caller guarantees at least 16).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn lanes16<T>(x: &[T]) -> &[T; 16] {
    pulp::as_arrays::<16, T>(&x[..16]).0.first().unwrap_or_else(|| unreachable!())
}

impl Multiply for HqqWeight {
    /// Scales and zeros in one dtype.
    type Prepared = HqqWeight;

    fn prepare(mut self) -> Result<Self> {
        self.validate()?;
        if self.scales.dtype() != self.zeros.dtype() {
            self.scales = FloatVec::F32(self.scales.to_f32());
            self.zeros = FloatVec::F32(self.zeros.to_f32());
        }
        Ok(self)
    }

    fn restore(p: Self) -> Self {
        p
    }

    fn prepared_bytes(p: &Self) -> usize {
        p.stored_bytes()
    }

    fn products_into(h: &Self, x: &[f32], batch: usize, par: Parallelism, y: &mut [f32], sc: &mut Scratch) {
        match (&h.scales, &h.zeros) {
            (FloatVec::F32(s), FloatVec::F32(z)) => gemm_into(h, s, z, x, batch, par, y, sc),
            (FloatVec::F16(s), FloatVec::F16(z)) => gemm_into(h, s, z, x, batch, par, y, sc),
            (FloatVec::Bf16(s), FloatVec::Bf16(z)) => gemm_into(h, s, z, x, batch, par, y, sc),
            // `prepare` made the dtypes equal; widening again is exact.
            (s, z) => gemm_into(h, &s.to_f32(), &z.to_f32(), x, batch, par, y, sc),
        }
    }

    /// Axis 1: groups of a multiple of 32 inputs dividing a row. Axis 0: rows a multiple of the
    /// group size (then row `o`'s parameters depend on `o % (rows / group)` and the input: a
    /// [`ColumnWeight`](crate::matmul::q8::ColumnWeight)), the group size a multiple of 16 and
    /// rows of a multiple of 32 inputs.
    fn int8_weight(h: &Self) -> Result<Int8Weight> {
        let l = &h.layout;
        let refuse = |why| Err(kernel::int8_refused(Self::NAME, why));
        // 1- to 3-bit codes fit the kernel's 4-bit fields.
        let bits = if h.packed.bits == Bits::B8 { 8 } else { 4 };
        let (rows, cols, g) = (l.rows(), l.cols(), l.group_size());
        // Both axes: the unpacked code matrix in order is the weight's codes, row-major.
        let codes = |h: &Self| super::unpack_hqq(&h.packed);
        let (scales, zeros) = (h.scales.to_f32(), h.zeros.to_f32());
        if l.axis() == Axis::Zero {
            // Group j = (o * cols + k) % (rows * cols / g) = (o % (rows / g)) * cols + k.
            if !rows.is_multiple_of(g) || !g.is_multiple_of(16) || !cols.is_multiple_of(32) {
                return refuse(
                    "on axis 0 it takes rows a multiple of the group size, itself a multiple of 16, \
                     and rows of a multiple of 32 inputs",
                );
            }
            let codes = codes(h)?;
            return ColumnWeight::from_rows(bits, rows, cols, rows / g, &scales, &zeros, |o, c| {
                c.copy_from_slice(&codes[o * cols..(o + 1) * cols]);
                Ok(())
            })
            .map(Into::into);
        }
        if !g.is_multiple_of(32) || !cols.is_multiple_of(g) {
            return refuse("its groups are not a multiple of 32 inputs dividing a row");
        }
        let codes = codes(h)?;
        let per_row = cols / g;
        IntWeight::from_rows(bits, rows, cols, g, |r, c, s, z| {
            c.copy_from_slice(&codes[r * cols..(r + 1) * cols]);
            s.copy_from_slice(&scales[r * per_row..(r + 1) * per_row]);
            z.copy_from_slice(&zeros[r * per_row..(r + 1) * per_row]);
            Ok(())
        })
        .map(Into::into)
    }
}

/// [`kernel::gemm_into`] over the weight's width, scales and zeros of type `S`.
#[allow(clippy::too_many_arguments)]
fn gemm_into<S: Elem>(
    h: &HqqWeight,
    scales: &[S],
    zeros: &[S],
    x: &[f32],
    batch: usize,
    par: Parallelism,
    y: &mut [f32],
    sc: &mut Scratch,
) {
    let l = &h.layout;
    #[allow(clippy::too_many_arguments)]
    fn run<P: Packing, S: Elem>(
        words: &[P::Word],
        scales: &[S],
        zeros: &[S],
        l: &HqqLayout,
        x: &[f32],
        batch: usize,
        par: Parallelism,
        y: &mut [f32],
        sc: &mut Scratch,
    ) {
        let (r, c) = l.code_shape();
        let prows = P::packed_rows(r).unwrap_or(0);
        let d =
            Tiles::<P, S> { words, scales, zeros, out: l.rows(), inp: l.cols(), c, prows, axis: l.axis() };
        kernel::gemm_into(&d, l.rows(), l.cols(), x, batch, par, y, sc)
    }
    match (&h.packed.words, h.packed.bits) {
        (PackedWords::U8(w), Bits::B8) => run::<B8, S>(w, scales, zeros, l, x, batch, par, y, sc),
        (PackedWords::U8(w), Bits::B4) => run::<B4, S>(w, scales, zeros, l, x, batch, par, y, sc),
        (PackedWords::U8(w), Bits::B2) => run::<B2, S>(w, scales, zeros, l, x, batch, par, y, sc),
        (PackedWords::U8(w), Bits::B1) => run::<B1, S>(w, scales, zeros, l, x, batch, par, y, sc),
        (PackedWords::I32(w), Bits::B3) => run::<B3, S>(w, scales, zeros, l, x, batch, par, y, sc),
        _ => unreachable!("`prepare` validated the width against the words"),
    }
}
