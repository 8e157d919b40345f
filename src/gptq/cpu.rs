//! The fast GPTQ dequantization: row chunks over rayon (whole word rows each); each row is one
//! affine pass over N with per-column zero and scale (the row's group), like HQQ's axis 0.
//!
//! AVX-512, 2/4/8 bits: all `32 / bits` rows packed in one word row are decoded together, each
//! word vector loaded once; the zero points are decoded from `qzeros` in the same loop (once
//! per word vector when the rows share a group), so no `[G, N]` table is built. Codes and
//! zeros are widened by OR-ing them into the mantissa of `2^23` (`lanes::v4::MAGIC`), which
//! gives the same `q - z` as a conversion. Otherwise (3 bits, other ISAs, a chunk edge inside a
//! word row) the zeros are unpacked once and the shared row loops run; 3-bit rows whose field
//! straddles two words are first funnel-shifted into a scratch row.

use std::sync::OnceLock;

use super::layout::{self, locate};
use super::{GptqLayout, ZeroFormat};
use crate::elem::{Elem, TILE};
use crate::lanes::{self, ColumnParams, Kernel, Simd};
use crate::par::{self, Parallelism};

/// `layout`, `qweight`, `qzeros`, `scales` and `out` have been checked against each other;
/// `rows_group[k]` is row `k`'s group (< G).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dequant<S: Elem, O: Elem>(
    layout: &GptqLayout,
    qweight: &[i32],
    qzeros: &[i32],
    format: ZeroFormat,
    rows_group: &[u32],
    scales: &[S],
    out: &mut [O],
    par: Parallelism,
) {
    let n = layout.n();
    // The unpacked zeros, built (once, G x N: small next to K x N) only if a path needs them.
    let params = OnceLock::new();
    let src = Sources { layout, qweight, qzeros, format, rows_group, scales, par, params: &params };
    let align = layout::codes_per_block(layout.bits());
    par::row_chunks_aligned(out, n, align, par, |row0, out| {
        lanes::dispatch(par, Rows { src: &src, row0, out })
    });
}

struct Sources<'a, S> {
    layout: &'a GptqLayout,
    qweight: &'a [i32],
    qzeros: &'a [i32],
    format: ZeroFormat,
    rows_group: &'a [u32],
    scales: &'a [S],
    par: Parallelism,
    params: &'a OnceLock<ColumnParams<'a, S>>,
}

impl<'a, S: Elem> Sources<'a, S> {
    fn params(&self) -> &ColumnParams<'a, S> {
        self.params.get_or_init(|| {
            let zeros = layout::unpack_zeros(self.qzeros, self.layout, self.format);
            ColumnParams::new(zeros.into_iter(), self.scales, self.layout.n(), self.par)
        })
    }
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
        let (layout, qweight, rows_group) = (src.layout, src.qweight, src.rows_group);
        let (n, bits) = (layout.n(), layout.bits());
        let mask = (1u32 << bits) - 1;
        #[cfg(target_arch = "x86_64")]
        if let Some(v4) = simd.v4().filter(|_| bits != 3) {
            let per = 32 / bits as usize;
            let (first, end) = (row0, row0 + out.len() / n);
            let mut rest = &mut *out;
            let mut k = first;
            while k < end {
                let (word_row, j0) = (k / per, k % per);
                let count = (per - j0).min(end - k);
                let (here, tail) = rest.split_at_mut(count * n);
                rest = tail;
                let words = &qweight[word_row * n..(word_row + 1) * n];
                let groups = &rows_group[k..k + count];
                let shared = groups.iter().all(|&g| g == groups[0]);
                if count == per && n.is_multiple_of(16) {
                    // A whole word row (every row but possibly a chunk's edges).
                    match bits {
                        2 => word_row_v4::<2, 16, S, O>(v4, src, words, groups, shared, here),
                        4 => word_row_v4::<4, 8, S, O>(v4, src, words, groups, shared, here),
                        _ => word_row_v4::<8, 4, S, O>(v4, src, words, groups, shared, here),
                    }
                } else {
                    let params = src.params();
                    let group_params = |p: usize| params.row(groups[p] as usize);
                    let first_shift = (bits as usize * j0) as u32;
                    lanes::v4::affine_planes(
                        v4,
                        words,
                        count,
                        first_shift,
                        bits as u32,
                        group_params,
                        shared,
                        here,
                        n,
                    );
                }
                k += count;
            }
            return;
        }
        let params = src.params();
        let mut straddle = vec![0i32; if bits == 3 { n } else { 0 }];
        let mut scratch = [0f32; TILE];
        for (i, dst) in out.chunks_exact_mut(n).enumerate() {
            let k = row0 + i;
            let g = rows_group[k] as usize;
            let (word_row, shift) = locate(k, bits);
            let mut src = &qweight[word_row * n..(word_row + 1) * n];
            let mut shift = shift;
            if shift + bits as u32 > 32 {
                // 3-bit code split across words `word_row` and `word_row + 1`: join the halves.
                let hi = &qweight[(word_row + 1) * n..(word_row + 2) * n];
                for ((t, &lo), &hi) in straddle.iter_mut().zip(src).zip(hi) {
                    *t = (((lo as u32) >> shift) | ((hi as u32) << (32 - shift))) as i32;
                }
                src = &straddle;
                shift = 0;
            }
            params.affine_row(simd, g, src, shift, mask, dst, &mut scratch);
        }
    }
}

/// All `P = 32 / BITS` rows of one word row: row `p` (`out[p * n..][..n]`, group
/// `groups[p]`) gets `((words[i] >> BITS*p) & mask - z[i]) * s[i]`, the zeros decoded from
/// `qzeros` per 16 columns (v1: the word plus one per field, wrapping, as GPTQModel converts
/// them). With `shared` (one group for all `P` rows, i.e. no act-order inside the word row) the
/// zero and scale vectors are built once per word vector. The plane loop is unrolled.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn word_row_v4<const BITS: u32, const P: usize, S: Elem, O: Elem>(
    v4: lanes::v4::V4,
    src: &Sources<'_, S>,
    words: &[i32],
    groups: &[u32],
    shared: bool,
    out: &mut [O],
) {
    let n = words.len();
    let zc = src.layout.qzeros_shape().1;
    let inc = if src.format == ZeroFormat::V1 { layout::v1_word_increment(BITS as u8) } else { 0 };
    let zeros: [&[i32]; P] = std::array::from_fn(|p| {
        let g = groups[p] as usize;
        &src.qzeros[g * zc..(g + 1) * zc]
    });
    let scales: [&[S]; P] = std::array::from_fn(|p| {
        let g = groups[p] as usize;
        &src.scales[g * n..(g + 1) * n]
    });
    if shared {
        planes_v4::<BITS, P, true, S, O>(v4, words, zeros, inc, scales, out)
    } else {
        planes_v4::<BITS, P, false, S, O>(v4, words, zeros, inc, scales, out)
    }
}

/// The 16 zero points of columns `c..c + 16` (`c` a multiple of 16) from a `qzeros` row,
/// magic-biased (see `lanes::v4::MAGIC`).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn zeros16<const BITS: u32>(
    v4: lanes::v4::V4,
    zrow: &[i32],
    c: usize,
    inc: core::arch::x86_64::__m512i,
    shifts: core::arch::x86_64::__m512i,
    mask: core::arch::x86_64::__m512i,
) -> core::arch::x86_64::__m512 {
    let f = v4.avx512f;
    // 16 fields of BITS bits span BITS / 2 words.
    let w = match BITS {
        2 => lanes::v4::spread_words::<1>(v4, &zrow[c / 16..]),
        4 => lanes::v4::spread_words::<2>(v4, &zrow[c / 8..]),
        _ => lanes::v4::spread_words::<4>(v4, &zrow[c / 4..]),
    };
    lanes::v4::magic_fields(v4, f._mm512_add_epi32(w, inc), shifts, mask)
}

/// The kernel of [`word_row_v4`] (`n % 16 == 0`, `out`: the `P` rows, `P * n` values);
/// `SHARED`: every row uses `zeros[0]` / `scales[0]`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn planes_v4<const BITS: u32, const P: usize, const SHARED: bool, S: Elem, O: Elem>(
    v4: lanes::v4::V4,
    words: &[i32],
    zeros: [&[i32]; P],
    inc: u32,
    scales: [&[S]; P],
    out: &mut [O],
) {
    let f = v4.avx512f;
    let mask = (1u32 << BITS) - 1;
    let (mk, vinc) = (f._mm512_set1_epi32(mask as i32), f._mm512_set1_epi32(inc as i32));
    // Lane i of a 16-column zero vector: field i % (32 / BITS) of its word.
    let zshifts: [u32; 16] = std::array::from_fn(|i| BITS * (i as u32 % (32 / BITS)));
    let zshifts: core::arch::x86_64::__m512i = bytemuck::cast(zshifts);
    let (w16, _) = pulp::as_arrays::<16, i32>(words);
    let nv = w16.len();
    let (s0, _) = pulp::as_arrays::<16, S>(&scales[0][..16 * nv]);
    // Vector v of row p is out16[p * nv + v]: one base pointer for all rows.
    let (base, ahead) = (out.as_ptr(), lanes::v4::WRITE_AHEAD / std::mem::size_of::<O>());
    let (out16, _) = pulp::as_arrays_mut::<16, O>(&mut out[..P * 16 * nv]);
    for (v, w) in w16.iter().enumerate() {
        let wide: core::arch::x86_64::__m512i = bytemuck::cast(*w);
        let c = 16 * v;
        let zc = zeros16::<BITS>(v4, zeros[0], c, vinc, zshifts, mk);
        let sc = S::load16(v4, &s0[v]);
        for p in 0..P {
            let (z, s) = if SHARED || p == 0 {
                (zc, sc)
            } else {
                let (s, _) = pulp::as_arrays::<16, S>(&scales[p][c..c + 16]);
                (zeros16::<BITS>(v4, zeros[p], c, vinc, zshifts, mk), S::load16(v4, &s[0]))
            };
            let q = lanes::v4::magic_fields(v4, wide, f._mm512_set1_epi32((BITS as usize * p) as i32), mk);
            lanes::v4::prefetch_write(v4, base, 16 * (p * nv + v) + ahead);
            O::store16(v4, f._mm512_mul_ps(f._mm512_sub_ps(q, z), s), &mut out16[p * nv + v]);
        }
    }
}
