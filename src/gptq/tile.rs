//! GPTQ's tile decoder for the multiply kernel ([`crate::matmul`]) and how a layer is prepared
//! for it; AWQ layers use it too after their lossless conversion ([`crate::awq::awq_to_gptq`]).
//!
//! GPTQ stores `[K, N]` with codes packed along K, so output row `n` of `W = [N, K]` is column
//! `n` of qweight. A block is 32 neighbouring columns; input `k` of all 32 is one contiguous
//! span of words (`qweight[k * bits / 32, n0..n0 + 32]`, plus the next word row where a 3-bit
//! field straddles), decoded with the lanes across columns ([`Form::Cols`]). The block's zeros
//! and scales for every group are widened once (`[G, 32]`), so act-order (`g_idx`) costs one
//! more indexed row per input.

use super::layout::{field, locate};
use super::{GptqLayer, GptqLayout};
use crate::elem::Elem;
use crate::error::Result;
use crate::matmul::kernel::{self, Decoder, Form, MAX_ROWS, Multiply, Scratch};
use crate::matmul::q8::{Int8Weight, IntWeight};
use crate::par::Parallelism;
use crate::scheme::QuantScheme;

/// `qweight` `[K * bits / 32, N]` re-laid block by block, `[ceil(N / 32), K * bits / 32, 32]`
/// (the last block zero-padded): each block's words are one contiguous run, read front to back
/// by the multiply. Reading the row-major layout 32 columns at a time strides by a whole row
/// (16 KiB at N = 4096) per word and runs 2-3x slower (measured).
pub(crate) fn block_words(qweight: &[i32], layout: &GptqLayout) -> Vec<i32> {
    let (wr, n) = layout.qweight_shape();
    let blocks = n.div_ceil(MAX_ROWS);
    let mut out = vec![0i32; blocks * wr * MAX_ROWS];
    for (b, dst) in out.chunks_exact_mut(wr * MAX_ROWS).enumerate() {
        let (n0, nb) = (b * MAX_ROWS, MAX_ROWS.min(n - b * MAX_ROWS));
        for (r, d) in dst.chunks_exact_mut(MAX_ROWS).enumerate() {
            d[..nb].copy_from_slice(&qweight[r * n + n0..r * n + n0 + nb]);
        }
    }
    out
}

/// The inverse of [`block_words`].
pub(crate) fn unblock_words(blocked: &[i32], layout: &GptqLayout) -> Vec<i32> {
    let (wr, n) = layout.qweight_shape();
    let mut out = vec![0i32; wr * n];
    for (b, src) in blocked.chunks_exact(wr * MAX_ROWS).enumerate() {
        let (n0, nb) = (b * MAX_ROWS, MAX_ROWS.min(n - b * MAX_ROWS));
        for (r, s) in src.chunks_exact(MAX_ROWS).enumerate() {
            out[r * n + n0..r * n + n0 + nb].copy_from_slice(&s[..nb]);
        }
    }
    out
}

/// Zeros and scales re-laid like [`block_words`] and widened to `f32`:
/// `[ceil(N / 32), G, 32]` each, so a block's parameters are one contiguous run.
pub(crate) fn block_params<S: Elem>(
    zeros: &[u32],
    scales: &[S],
    layout: &GptqLayout,
) -> (Vec<f32>, Vec<f32>) {
    let (n, g) = (layout.n(), layout.groups());
    let blocks = n.div_ceil(MAX_ROWS);
    let (mut z, mut s) = (vec![0f32; blocks * g * MAX_ROWS], vec![0f32; blocks * g * MAX_ROWS]);
    for b in 0..blocks {
        let (n0, nb) = (b * MAX_ROWS, MAX_ROWS.min(n - b * MAX_ROWS));
        for gi in 0..g {
            let at = (b * g + gi) * MAX_ROWS;
            for (d, &v) in z[at..at + nb].iter_mut().zip(&zeros[gi * n + n0..gi * n + n0 + nb]) {
                *d = v as f32;
            }
            S::slice_to_f32(&scales[gi * n + n0..gi * n + n0 + nb], &mut s[at..at + nb]);
        }
    }
    (z, s)
}

/// A GPTQ layer as [`crate::QuantLinear`] keeps it (AWQ layers too, converted losslessly).
/// `layer.qweight` is moved into `blocked` ([`block_words`]); the group of each input and the
/// true zero points and scales are laid out per block ([`block_params`]). Act-order (`perm`):
/// `blocked` and `groups` hold the rows sorted by group ([`super::sort`]), row `k'` being the
/// layer's row `perm[k']`, and the inputs are gathered the same way; `layer.g_idx` stays the
/// checkpoint's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Prepared {
    layer: GptqLayer,
    blocked: Vec<i32>,
    groups: Vec<u32>,
    zeros: Vec<f32>,
    scales: Vec<f32>,
    perm: Option<Vec<u32>>,
}

impl Multiply for GptqLayer {
    type Prepared = Prepared;

    /// Validate (the layer's own bias is not part of the weight and is not checked), then sort
    /// act-order rows by group, so that the kernels decode a group once per run of its rows
    /// instead of nearly once per row, and re-lay the words block by block.
    fn prepare(mut self) -> Result<Prepared> {
        let l = self.layout;
        let c = crate::with_float_vec!(&self.scales, s => super::check(
            &l, &self.qweight, &self.qzeros, s, self.g_idx.as_deref(), self.format, l.k() * l.n()
        ))?;
        // (`check` validated the words' length and every group; without g_idx the groups are
        // k / group_size, already in order.)
        let (words, groups, perm) = if c.rows_group.windows(2).all(|w| w[0] <= w[1]) {
            (std::mem::take(&mut self.qweight), c.rows_group, None)
        } else {
            let perm = super::sort::order_by_group(&c.rows_group, l.groups());
            let words = super::sort::repack_rows(&std::mem::take(&mut self.qweight), &perm, &l);
            let groups = perm.iter().map(|&p| c.rows_group[p as usize]).collect();
            (words, groups, Some(perm))
        };
        let blocked = block_words(&words, &l);
        let (zeros, scales) = crate::with_float_vec!(&self.scales, s => block_params(&c.zeros, s, &l));
        Ok(Prepared { layer: self, blocked, groups, zeros, scales, perm })
    }

    /// Words un-blocked and act-order rows put back in place.
    fn restore(p: Prepared) -> Self {
        let mut layer = p.layer;
        layer.qweight = unblock_words(&p.blocked, &layer.layout);
        if let Some(perm) = &p.perm {
            // `perm` is the permutation `prepare` built for this layout.
            let back = super::sort::inverse(perm);
            layer.qweight = super::sort::repack_rows(&layer.qweight, &back, &layer.layout);
        }
        layer
    }

    fn prepared_bytes(p: &Prepared) -> usize {
        // `layer.qweight` is empty: its words are in `blocked` (padded to whole blocks).
        let (wr, n) = p.layer.layout.qweight_shape();
        p.layer.stored_bytes() + 4 * wr * n
    }

    fn products_into(
        p: &Prepared,
        x: &[f32],
        batch: usize,
        par: Parallelism,
        y: &mut [f32],
        s: &mut Scratch,
    ) {
        let l = &p.layer.layout;
        let d =
            Tiles { layout: l, blocked: &p.blocked, zeros: &p.zeros, scales: &p.scales, groups: &p.groups };
        kernel::gemm_into(&d, l.n(), l.k(), x, batch, par, y, s)
    }

    fn input_order(p: &Prepared) -> Option<&[u32]> {
        p.perm.as_deref()
    }

    /// Layers whose (sorted) groups are `group_size` inputs each, a multiple of 32.
    fn int8_weight(p: &Prepared) -> Result<Int8Weight> {
        let l = &p.layer.layout;
        let refuse = |why| Err(kernel::int8_refused(Self::NAME, why));
        // 2- and 3-bit codes fit the kernel's 4-bit fields.
        let bits = if l.bits() == 8 { 8 } else { 4 };
        let (k, n) = (l.k(), l.n());
        let gs = l.group_size().unwrap_or(k);
        if gs == 0 || !gs.is_multiple_of(32) || !k.is_multiple_of(gs) {
            return refuse("its groups are not a multiple of 32 inputs dividing them");
        }
        if p.groups.iter().enumerate().any(|(i, &g)| g as usize != i / gs) {
            return refuse("its sorted groups are not group_size inputs each");
        }
        let words = unblock_words(&p.blocked, l);
        let zeros = super::layout::unpack_zeros(&p.layer.qzeros, l, p.layer.format);
        let scales = p.layer.scales.to_f32();
        IntWeight::from_rows(bits, n, k, gs, |r, c, s, z| {
            for (kk, c) in c.iter_mut().enumerate() {
                *c = field(|j| words[j * n + r] as u32, kk, l.bits()) as u8;
            }
            for (g, (s, z)) in s.iter_mut().zip(z.iter_mut()).enumerate() {
                (*s, *z) = (scales[g * n + r], zeros[g * n + r] as f32);
            }
            Ok(())
        })
        .map(Into::into)
    }
}

/// One validated GPTQ weight seen as `[N, K]` tiles.
pub(crate) struct Tiles<'a> {
    pub layout: &'a GptqLayout,
    /// [`block_words`] of qweight.
    pub blocked: &'a [i32],
    /// [`block_params`].
    pub zeros: &'a [f32],
    pub scales: &'a [f32],
    /// Group of each input.
    pub groups: &'a [u32],
}

impl Decoder for Tiles<'_> {
    const FORM: Form = Form::Cols;

    fn blocks(&self) -> usize {
        self.layout.n().div_ceil(MAX_ROWS)
    }

    fn block_rows(&self, b: usize, rows: &mut [usize; MAX_ROWS]) -> usize {
        let n0 = b * MAX_ROWS;
        let nb = MAX_ROWS.min(self.layout.n() - n0);
        for (t, r) in rows.iter_mut().enumerate().take(nb) {
            *r = n0 + t;
        }
        nb
    }

    /// 2, 4 and 8 bits (3-bit fields straddle words: tile path).
    fn has_gemv(&self) -> bool {
        matches!(self.layout.bits(), 2 | 4 | 8)
    }

    /// The block's 32 columns as two registers: each word row is loaded once, each of its
    /// `32 / bits` inputs decoded with the tile path's operations (`(code - z) * s`, zeros and
    /// scales reloaded only when the group changes) and added into the accumulator of its
    /// phase `k % 2` with one fused multiply-add, as the tile path's `axpy` does.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn gemv_v4(&self, v4: pulp::x86::V4, b: usize, x: &[f32], out: &mut [f32; MAX_ROWS]) {
        match self.layout.bits() {
            2 => self.gemv_bits::<2, 16>(v4, b, x, out),
            4 => self.gemv_bits::<4, 8>(v4, b, x, out),
            _ => self.gemv_bits::<8, 4>(v4, b, x, out),
        }
    }

    #[inline(always)]
    fn decode(&self, _simd: crate::lanes::Simd, b: usize, k0: usize, k1: usize, tile: &mut [f32]) {
        let bits = self.layout.bits();
        let pg = self.layout.groups() * MAX_ROWS;
        let (pz, ps) = (&self.zeros[b * pg..(b + 1) * pg], &self.scales[b * pg..(b + 1) * pg]);
        let mask = (1u32 << bits) - 1;
        let wrows = self.layout.qweight_shape().0;
        let words = &self.blocked[b * wrows * MAX_ROWS..(b + 1) * wrows * MAX_ROWS];
        if bits != 3 {
            // Whole word rows (k0 and k1 are multiples of 32 / bits): each row of 32 words is
            // loaded once for its 32 / bits inputs.
            let per = 32 / bits as usize;
            for wr in k0 / per..k1 / per {
                let w: [i32; MAX_ROWS] = *lanes32(&words[wr * MAX_ROWS..]);
                for j in 0..per {
                    let k = wr * per + j;
                    let g = self.groups[k] as usize * MAX_ROWS;
                    let (z, s) = (lanes32(&pz[g..]), lanes32(&ps[g..]));
                    let dst: &mut [f32; MAX_ROWS] = lanes32_mut(&mut tile[(k - k0) * MAX_ROWS..]);
                    let shift = j as u32 * bits as u32;
                    for i in 0..MAX_ROWS {
                        dst[i] = ((((w[i] as u32) >> shift) & mask) as f32 - z[i]) * s[i];
                    }
                }
            }
            return;
        }
        for k in k0..k1 {
            let (wr, shift) = locate(k, bits);
            let g = self.groups[k] as usize * MAX_ROWS;
            let (z, s) = (lanes32(&pz[g..]), lanes32(&ps[g..]));
            let dst = lanes32_mut(&mut tile[(k - k0) * MAX_ROWS..]);
            let lo = lanes32(&words[wr * MAX_ROWS..]);
            if shift + bits as u32 <= 32 {
                for i in 0..MAX_ROWS {
                    dst[i] = ((((lo[i] as u32) >> shift) & mask) as f32 - z[i]) * s[i];
                }
            } else {
                let hi = lanes32(&words[(wr + 1) * MAX_ROWS..]);
                for i in 0..MAX_ROWS {
                    let q = (((lo[i] as u32) >> shift) | ((hi[i] as u32) << (32 - shift))) & mask;
                    dst[i] = (q as f32 - z[i]) * s[i];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Tiles<'_> {
    /// [`Decoder::gemv_v4`] for `BITS`-bit codes, `PER = 32 / BITS` per word.
    #[inline(always)]
    fn gemv_bits<const BITS: u32, const PER: usize>(
        &self,
        v4: pulp::x86::V4,
        b: usize,
        x: &[f32],
        out: &mut [f32; MAX_ROWS],
    ) {
        use core::arch::x86_64::{__m512, __m512i};
        /// Word rows of prefetch distance (8 x 128 bytes).
        const AHEAD: usize = 8;
        debug_assert_eq!(BITS as usize * PER, 32);
        let f = v4.avx512f;
        let pg = self.layout.groups() * MAX_ROWS;
        let (pz, ps) = (&self.zeros[b * pg..(b + 1) * pg], &self.scales[b * pg..(b + 1) * pg]);
        let wrows = self.layout.qweight_shape().0;
        let words = &self.blocked[b * wrows * MAX_ROWS..(b + 1) * wrows * MAX_ROWS];
        let mk = f._mm512_set1_epi32(((1u32 << BITS) - 1) as i32);
        let mut acc = [[f._mm512_setzero_ps(); 2]; 2];
        let mut current = u32::MAX;
        let (mut z, mut s): ([__m512; 2], [__m512; 2]) =
            ([f._mm512_setzero_ps(); 2], [f._mm512_setzero_ps(); 2]);
        for wr in 0..wrows {
            // Ask for the word row `AHEAD` rows on (two cache lines) now: the decode of a row
            // takes long enough that the hardware prefetcher alone leaves the loads waiting
            // for DRAM. A prefetch reads nothing and cannot fault, past the end too.
            let ahead = words.as_ptr().wrapping_add((wr + AHEAD) * MAX_ROWS).cast::<i8>();
            v4.sse._mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ahead);
            v4.sse._mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(ahead.wrapping_add(64));
            let w: [__m512i; 2] = bytemuck::cast(*lanes32(&words[wr * MAX_ROWS..]));
            for j in 0..PER {
                let k = wr * PER + j;
                let g = self.groups[k];
                if g != current {
                    current = g;
                    let at = g as usize * MAX_ROWS;
                    (z, s) = (bytemuck::cast(*lanes32(&pz[at..])), bytemuck::cast(*lanes32(&ps[at..])));
                }
                let xk = f._mm512_set1_ps(x[k]);
                let sh = f._mm512_set1_epi32((j as u32 * BITS) as i32);
                for h in 0..2 {
                    let q = f._mm512_cvtepi32_ps(f._mm512_and_si512(f._mm512_srlv_epi32(w[h], sh), mk));
                    let wv = f._mm512_mul_ps(f._mm512_sub_ps(q, z[h]), s[h]);
                    // `k % 2 == j % 2`: PER is even.
                    acc[j % 2][h] = f._mm512_fmadd_ps(wv, xk, acc[j % 2][h]);
                }
            }
        }
        let (a0, a1): ([f32; MAX_ROWS], [f32; MAX_ROWS]) = (bytemuck::cast(acc[0]), bytemuck::cast(acc[1]));
        for t in 0..MAX_ROWS {
            out[t] = a0[t] + a1[t];
        }
    }
}

#[inline(always)]
fn lanes32<T>(x: &[T]) -> &[T; MAX_ROWS] {
    pulp::as_arrays::<MAX_ROWS, T>(&x[..MAX_ROWS]).0.first().unwrap_or_else(|| unreachable!())
}

#[inline(always)]
fn lanes32_mut(x: &mut [f32]) -> &mut [f32; MAX_ROWS] {
    pulp::as_arrays_mut::<MAX_ROWS, f32>(&mut x[..MAX_ROWS]).0.first_mut().unwrap_or_else(|| unreachable!())
}
