//! The fast AWQ dequantization, rayon over row chunks.
//!
//! AVX-512: blocks of [`BLOCK`] rows of one group are decoded together; per 16 columns the
//! zero and scale vectors are built once for the block (the zeros straight from `qzeros`), and
//! each row's two words are broadcast to 16 lanes and shifted by the interleave's bit
//! positions. Codes and zeros are widened by OR-ing them into the mantissa of `2^23`
//! (`lanes::v4::MAGIC`): the same `q - z` as a conversion. Portable: the words are spread to
//! one code per lane in a small L1 scratch, then the shared row loop.

use super::{AwqLayout, unpack_interleaved};
use crate::elem::{Elem, TILE};
use std::sync::OnceLock;

use crate::lanes::{self, ColumnParams, Kernel, Simd};
use crate::par::{self, Isa, Parallelism};

/// Rows decoded together by the AVX-512 path when the group size allows.
const BLOCK: usize = 4;

pub(crate) fn dequant<S: Elem, O: Elem>(
    l: &AwqLayout,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[S],
    out: &mut [O],
    par: Parallelism,
) {
    let blocks = par.isa() == Isa::X86V4Avx512 && l.n().is_multiple_of(16);
    let align = if blocks && l.group_size().is_multiple_of(BLOCK) { BLOCK } else { 1 };
    // The unpacked zeros, built (once) only if the portable path runs.
    let params = OnceLock::new();
    let src = Sources { l, qweight, qzeros, scales, par, params: &params };
    par::row_chunks_aligned(out, l.n(), align, par, |row0, out| {
        lanes::dispatch(par, Rows { src: &src, row0, out })
    });
}

struct Sources<'a, S> {
    l: &'a AwqLayout,
    qweight: &'a [i32],
    qzeros: &'a [i32],
    scales: &'a [S],
    par: Parallelism,
    params: &'a OnceLock<ColumnParams<'a, S>>,
}

struct Rows<'a, 'b, S, O> {
    src: &'a Sources<'b, S>,
    row0: usize,
    out: &'a mut [O],
}

impl<S: Elem, O: Elem> Kernel for Rows<'_, '_, S, O> {
    type Output = ();
    #[inline(always)]
    fn run(self, simd: Simd) {
        let Self { src, row0, out } = self;
        let Sources { l, qweight, qzeros, scales, par, params } = *src;
        #[cfg(target_arch = "x86_64")]
        if let Some(v4) = simd.v4().filter(|_| l.n().is_multiple_of(16)) {
            return blocks_v4(v4, l, qweight, qzeros, scales, row0, out);
        }
        let params = params.get_or_init(|| {
            let zeros = unpack_interleaved(qzeros, l.n()); // [G, N]
            ColumnParams::new(zeros.iter().map(|&z| z as u32), scales, l.n(), par)
        });
        let (n, words) = (l.n(), l.packed_cols());
        let mut codes = vec![0i32; n];
        let mut scratch = [0f32; TILE];
        for (i, dst) in out.chunks_exact_mut(n).enumerate() {
            let k = row0 + i;
            for (c8, &w) in codes.chunks_exact_mut(8).zip(&qweight[k * words..(k + 1) * words]) {
                let w = w as u32;
                for (j, c) in c8.iter_mut().enumerate() {
                    *c = ((w >> (4 * super::AWQ_REVERSE_ORDER[j])) & 15) as i32;
                }
            }
            params.affine_row(simd, k / l.group_size(), &codes, 0, 15, dst, &mut scratch);
        }
    }
}

/// The AVX-512 path (`n % 16 == 0`): rows `row0..` of `out` in blocks of [`BLOCK`] rows of
/// one group where the chunk allows, single rows elsewhere.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn blocks_v4<S: Elem, O: Elem>(
    v4: lanes::v4::V4,
    l: &AwqLayout,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[S],
    row0: usize,
    out: &mut [O],
) {
    let (n, words, gs) = (l.n(), l.packed_cols(), l.group_size());
    let end = row0 + out.len() / n;
    let mut rest = &mut *out;
    let mut k = row0;
    while k < end {
        let g = k / gs;
        let whole = k.is_multiple_of(BLOCK) && gs.is_multiple_of(BLOCK) && end - k >= BLOCK;
        let rows = if whole { BLOCK } else { 1 };
        let (here, tail) = rest.split_at_mut(rows * n);
        rest = tail;
        let w = &qweight[k * words..(k + rows) * words];
        let (z, s) = (&qzeros[g * words..(g + 1) * words], &scales[g * n..(g + 1) * n]);
        if whole {
            rows_v4::<BLOCK, S, O>(v4, w, z, s, here);
        } else {
            rows_v4::<1, S, O>(v4, w, z, s, here);
        }
        k += rows;
    }
}

/// `R` rows of one group: row `r` (`out[r * n..][..n]`) from `words[r * n / 8..][..n / 8]`,
/// `(q - z) * s` with the group's `zeros` (packed, interleaved) and `scales` (`n` values).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rows_v4<const R: usize, S: Elem, O: Elem>(
    v4: lanes::v4::V4,
    words: &[i32],
    zeros: &[i32],
    scales: &[S],
    out: &mut [O],
) {
    let f = v4.avx512f;
    let nv = scales.len() / 16;
    let wpr = 2 * nv; // words per row
    // Lane i (column 16v + i) sits in word 2v + i / 8 at bit 4 * AWQ_REVERSE_ORDER[i % 8].
    let sh: [u32; 16] = std::array::from_fn(|i| 4 * super::AWQ_REVERSE_ORDER[i % 8] as u32);
    let sh: core::arch::x86_64::__m512i = bytemuck::cast(sh);
    let mk = f._mm512_set1_epi32(15);
    let (s16, _) = pulp::as_arrays::<16, S>(scales);
    let (out16, _) = pulp::as_arrays_mut::<16, O>(&mut out[..R * 16 * nv]);
    for (v, s) in s16.iter().enumerate() {
        let z = lanes::v4::magic_fields(v4, lanes::v4::spread_words::<2>(v4, &zeros[2 * v..]), sh, mk);
        let s = S::load16(v4, s);
        for r in 0..R {
            let w = lanes::v4::spread_words::<2>(v4, &words[r * wpr + 2 * v..]);
            let q = lanes::v4::magic_fields(v4, w, sh, mk);
            O::store16(v4, f._mm512_mul_ps(f._mm512_sub_ps(q, z), s), &mut out16[r * nv + v]);
        }
    }
}
