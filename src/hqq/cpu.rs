//! The fast HQQ dequantization: SIMD inner loops (ISA chosen at run time) over tiles, rayon over
//! disjoint parts of the output.
//!
//! Plane `j` of the packed matrix decodes to code rows `j*P .. (j+1)*P` (`P` = packed rows), so
//! code row `r` reads packed row `r % P` at shift `P::shift(r / P)`: one division per row, none
//! per element.
//!
//! * axis 1 (zero/scale per code row): rows are short (`g`), so consecutive rows of one plane are
//!   processed as one contiguous tile, rayon over chunks of rows.
//! * axis 0 (zero/scale per code column): rows are long (`numel / g`), so each thread takes a
//!   column stripe of every row, widens a span of zeros/scales once for all rows, and decodes
//!   every plane of a packed tile while it is in L1.

use super::{Axis, Geometry};
use crate::elem::{Elem, TILE};
use crate::lanes::{self, Kernel, Simd, affine_lanes, affine_splat};
use crate::pack::Packing;
use crate::par::{self, Parallelism};

/// Columns whose zeros/scales an axis-0 kernel widens at once (2 x 64 KiB of `f32`).
const SPAN: usize = 16 * 1024;

pub(crate) fn dequant<P: Packing, S: Elem, O: Elem>(
    geo: &Geometry,
    words: &[P::Word],
    scales: &[S],
    zeros: &[S],
    out: &mut [O],
    par: Parallelism,
) {
    debug_assert_eq!(out.len(), geo.rows * geo.cols);
    match geo.axis {
        Axis::One => par::row_chunks(out, geo.cols, par, |row0, out| {
            lanes::dispatch(par, RowParams::<P, S, O> { geo, words, scales, zeros, row0, out })
        }),
        Axis::Zero => par::col_stripes(out, geo.cols, TILE, par, |col0, rows| {
            lanes::dispatch(par, ColParams::<P, S, O> { geo, words, scales, zeros, col0, rows })
        }),
    }
}

/// Axis 1: rows `row0..` of the code matrix, one zero/scale per row, `out` contiguous.
struct RowParams<'a, P: Packing, S, O> {
    geo: &'a Geometry,
    words: &'a [P::Word],
    scales: &'a [S],
    zeros: &'a [S],
    row0: usize,
    out: &'a mut [O],
}

impl<P: Packing, S: Elem, O: Elem> Kernel for RowParams<'_, P, S, O> {
    type Output = ();
    #[inline(always)]
    fn run(self, simd: Simd) {
        let Self { geo, words, scales, zeros, row0, out } = self;
        let (c, prows) = (geo.cols, geo.prows);
        let nrows = out.len() / c;
        #[cfg(target_arch = "x86_64")]
        if let Some(v4) = simd.v4() {
            // AVX-512: each row decoded straight into `out`, its zero/scale in registers.
            let (mut z, mut s) = ([0f32; TILE], [0f32; TILE]);
            let mut r = 0;
            while r < nrows {
                let row = row0 + r;
                let (plane, p) = (row / prows, row % prows);
                let end = nrows.min(r + TILE).min((plane + 1) * prows - row0);
                let k = end - r;
                S::slice_to_f32(&zeros[row..row + k], &mut z[..k]);
                S::slice_to_f32(&scales[row..row + k], &mut s[..k]);
                let src = words[p * c..(p + k) * c].chunks_exact(c);
                for (i, (src, dst)) in src.zip(out[r * c..end * c].chunks_exact_mut(c)).enumerate() {
                    lanes::v4::affine_splat(v4, src, P::shift(plane), P::MASK, z[i], s[i], dst);
                }
                r = end;
            }
            return;
        }
        // Rows per tile: as many whole rows as fit, or one row cut into column tiles.
        let per_tile = (TILE / c).max(1);
        let (mut z, mut s) = ([0f32; TILE], [0f32; TILE]);
        let mut scratch = [0f32; TILE];
        let mut r = 0;
        while r < nrows {
            let row = row0 + r;
            let (plane, p) = (row / prows, row % prows);
            let end = nrows.min(r + per_tile).min((plane + 1) * prows - row0);
            let k = end - r;
            S::slice_to_f32(&zeros[row..row + k], &mut z[..k]);
            S::slice_to_f32(&scales[row..row + k], &mut s[..k]);
            let shift = P::shift(plane);
            let decode = |w| P::extract(w, shift);
            if c <= TILE {
                let src = &words[p * c..(p + k) * c];
                O::store_tile(&mut out[r * c..end * c], &mut scratch, |buf| {
                    for (i, (dst, src)) in buf.chunks_exact_mut(c).zip(src.chunks_exact(c)).enumerate() {
                        affine_splat(src, decode, z[i], s[i], dst);
                    }
                });
            } else {
                let (src, dst) = (&words[p * c..(p + 1) * c], &mut out[r * c..end * c]);
                for (src, dst) in src.chunks(TILE).zip(dst.chunks_mut(TILE)) {
                    O::store_tile(dst, &mut scratch, |buf| affine_splat(src, decode, z[0], s[0], buf));
                }
            }
            r = end;
        }
    }
}

/// Axis 0: columns `col0..` of every code row, one zero/scale per column.
struct ColParams<'a, 'b, P: Packing, S, O> {
    geo: &'a Geometry,
    words: &'a [P::Word],
    scales: &'a [S],
    zeros: &'a [S],
    col0: usize,
    rows: &'a mut [&'b mut [O]],
}

impl<P: Packing, S: Elem, O: Elem> Kernel for ColParams<'_, '_, P, S, O> {
    type Output = ();
    #[inline(always)]
    fn run(self, simd: Simd) {
        let Self { geo, words, scales, zeros, col0, rows } = self;
        let (c, prows) = (geo.cols, geo.prows);
        let width = rows.first().map_or(0, |r| r.len());
        #[cfg(target_arch = "x86_64")]
        if let Some(v4) = simd.v4() {
            // AVX-512: zeros/scales read in their own dtype (no widened copy), outputs stored
            // in theirs. Span by span (L2-sized), each code row's span is one write stream.
            for t0 in (0..width).step_by(SPAN) {
                let n = SPAN.min(width - t0);
                let g0 = col0 + t0;
                let (z, s) = (&zeros[g0..g0 + n], &scales[g0..g0 + n]);
                for p in 0..prows {
                    let src = &words[p * c + g0..p * c + g0 + n];
                    for plane in 0..P::PER_WORD {
                        let Some(dst) = rows.get_mut(plane * prows + p) else { break };
                        let dst = &mut dst[t0..t0 + n];
                        lanes::v4::affine_lanes(v4, src, P::shift(plane), P::MASK, z, s, dst);
                    }
                }
            }
            return;
        }
        // Zeros/scales are widened once per span of columns (L2-sized). Then, packed row by
        // packed row and tile by tile, the tile of words is decoded once per plane while it and
        // the tile of zeros/scales sit in L1: one read stream and `PER_WORD` write streams.
        // f32 zeros/scales are used in place; f16/bf16 ones are widened span by span.
        let direct = S::as_f32(zeros).zip(S::as_f32(scales));
        let span = if direct.is_some() { width } else { SPAN.min(width) };
        let mut buf = vec![0f32; if direct.is_some() { 0 } else { 2 * span }];
        let mut scratch = [0f32; TILE];
        for t0 in (0..width).step_by(span.max(1)) {
            let n = span.min(width - t0);
            let g0 = col0 + t0;
            let (z, s): (&[f32], &[f32]) = match direct {
                Some((z, s)) => (&z[g0..g0 + n], &s[g0..g0 + n]),
                None => {
                    let (z, s) = buf.split_at_mut(span);
                    S::slice_to_f32(&zeros[g0..g0 + n], &mut z[..n]);
                    S::slice_to_f32(&scales[g0..g0 + n], &mut s[..n]);
                    (&z[..n], &s[..n])
                }
            };
            for p in 0..prows {
                let words = &words[p * c + g0..p * c + g0 + n];
                for k in (0..n).step_by(TILE) {
                    let m = TILE.min(n - k);
                    let src = &words[k..k + m];
                    for plane in 0..P::PER_WORD {
                        let Some(dst) = rows.get_mut(plane * prows + p) else { break };
                        let shift = P::shift(plane);
                        O::store_tile(&mut dst[t0 + k..t0 + k + m], &mut scratch, |buf| {
                            affine_lanes(src, |w| P::extract(w, shift), &z[k..k + m], &s[k..k + m], buf)
                        });
                    }
                }
            }
        }
    }
}
