//! The `f32` lanes SIMD code runs on: run-time ISA dispatch and the affine inner loops.
//!
//! A user who embeds the crate builds it without special `RUSTFLAGS`, so the ISA is chosen at
//! run time: `dispatch` runs a `Kernel` inside a function compiled for the best instruction
//! set the CPU reports (through `pulp`: AVX-512 = x86-64-v4, AVX2+FMA = x86-64-v3, or the
//! baseline), and the plain loops below, inlined into it, are vectorized for that ISA by the
//! compiler. [`Isa::detect`] names the best ISA; a call's [`Parallelism::max_isa`] caps it.
//!
//! The loops compute `(q - z) * s` as a subtraction and a multiplication, each rounded to `f32`:
//! no fused multiply-add, so every ISA gives the same bits as the scalar reference.

use crate::par::{Isa, Parallelism};

/// The instruction set a dispatched kernel runs under, as a value the kernel branches on: its
/// explicit AVX-512 loops take the `V4` token from here (never from a detection of their own),
/// so [`Parallelism::max_isa`] caps them like the compiler-vectorized loops.
#[derive(Clone, Copy)]
pub(crate) enum Simd {
    /// The build's baseline.
    Baseline,
    /// x86-64-v3.
    #[cfg(target_arch = "x86_64")]
    V3(pulp::x86::V3),
    /// x86-64-v4.
    #[cfg(target_arch = "x86_64")]
    V4(pulp::x86::V4),
}

impl Simd {
    /// The AVX-512 token when the kernel runs under x86-64-v4.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(crate) fn v4(self) -> Option<pulp::x86::V4> {
        match self {
            Simd::V4(v4) => Some(v4),
            _ => None,
        }
    }

    /// The AVX2 token when the kernel runs under x86-64-v3 or v4.
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    pub(crate) fn v3(self) -> Option<pulp::x86::V3> {
        match self {
            Simd::V3(v3) => Some(v3),
            Simd::V4(v4) => Some(*v4),
            Simd::Baseline => None,
        }
    }
}

/// A unit of work to run under `dispatch`. Implementations mark `run` `#[inline(always)]` so
/// that its loops are compiled inside the ISA-specific function.
pub(crate) trait Kernel {
    /// What the kernel returns.
    type Output;
    /// Do the work; `simd` names the instruction set this copy of the code was compiled for.
    fn run(self, simd: Simd) -> Self::Output;
}

/// A kernel and a zero-sized ISA token: the same size as the kernel, so that pulp still passes
/// a kernel of up to 8 words in registers.
struct Dispatched<K, T>(K, T);

impl<K: Kernel, T: Copy + Into<Simd>> pulp::WithSimd for Dispatched<K, T> {
    type Output = K::Output;
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) -> K::Output {
        self.0.run(self.1.into())
    }
}

/// The baseline's zero-sized token.
#[derive(Clone, Copy)]
struct BaselineToken;

impl From<BaselineToken> for Simd {
    #[inline(always)]
    fn from(_: BaselineToken) -> Simd {
        Simd::Baseline
    }
}

#[cfg(target_arch = "x86_64")]
impl From<pulp::x86::V3> for Simd {
    #[inline(always)]
    fn from(v3: pulp::x86::V3) -> Simd {
        Simd::V3(v3)
    }
}

#[cfg(target_arch = "x86_64")]
impl From<pulp::x86::V4> for Simd {
    #[inline(always)]
    fn from(v4: pulp::x86::V4) -> Simd {
        Simd::V4(v4)
    }
}

/// Run `k` compiled for the widest instruction set this CPU has and `par` allows
/// ([`Parallelism::isa`]). The one place kernels get an ISA from.
#[inline]
pub(crate) fn dispatch<K: Kernel>(par: Parallelism, k: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    match par.isa() {
        Isa::X86V4Avx512 => {
            if let Some(v4) = pulp::x86::V4::try_new() {
                return pulp::Simd::vectorize(v4, Dispatched(k, v4));
            }
        }
        Isa::X86V3Avx2 => {
            if let Some(v3) = pulp::x86::V3::try_new() {
                return pulp::Simd::vectorize(v3, Dispatched(k, v3));
            }
        }
        Isa::Baseline => {}
    }
    #[cfg(target_arch = "x86_64")]
    return pulp::Simd::vectorize(pulp::Scalar::new(), Dispatched(k, BaselineToken));
    // Elsewhere every ISA is the baseline (NEON on aarch64): pulp's own pick.
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = par;
        pulp::Arch::new().dispatch(Dispatched(k, BaselineToken))
    }
}

/// `out[i] = (decode(words[i]) - zero[i]) * scale[i]`: per-lane zero and scale.
#[inline(always)]
pub(crate) fn affine_lanes<W: Copy>(
    words: &[W],
    decode: impl Fn(W) -> u32,
    zero: &[f32],
    scale: &[f32],
    out: &mut [f32],
) {
    let n = out.len();
    let (words, zero, scale) = (&words[..n], &zero[..n], &scale[..n]);
    for i in 0..n {
        out[i] = (decode(words[i]) as f32 - zero[i]) * scale[i];
    }
}

/// `out[i] = (decode(words[i]) - zero) * scale`: one zero and scale for the whole slice.
#[inline(always)]
pub(crate) fn affine_splat<W: Copy>(
    words: &[W],
    decode: impl Fn(W) -> u32,
    zero: f32,
    scale: f32,
    out: &mut [f32],
) {
    let n = out.len();
    let words = &words[..n];
    for i in 0..n {
        out[i] = (decode(words[i]) as f32 - zero) * scale;
    }
}

/// Per-column zeros and scales of a `[groups, n]` parameter matrix (GPTQ, AWQ): the zeros in
/// the scales' type for the AVX-512 path (exact: integer zero points <= 256), and both widened
/// to `f32` for the portable path, built only when that path will run.
pub(crate) struct ColumnParams<'a, S> {
    n: usize,
    zeros: Vec<S>,
    scales: &'a [S],
    zf: Vec<f32>,
    sf: Vec<f32>,
}

impl<'a, S: crate::elem::Elem> ColumnParams<'a, S> {
    /// `zeros` and `scales` are `[groups, n]` row-major.
    /// `par` must be what the kernels that use these parameters are dispatched with.
    pub(crate) fn new(zeros: impl Iterator<Item = u32>, scales: &'a [S], n: usize, par: Parallelism) -> Self {
        let avx512 = par.isa() == Isa::X86V4Avx512;
        // Integer zero points are exact in every dtype; convert them as one slice (SIMD).
        let zf: Vec<f32> = zeros.map(|z| z as f32).collect();
        let mut zs = vec![S::default(); zf.len()];
        S::slice_from_f32(&zf, &mut zs);
        let (zf, sf) = if avx512 {
            (Vec::new(), Vec::new())
        } else {
            let mut sf = vec![0f32; scales.len()];
            S::slice_to_f32(scales, &mut sf);
            (zf, sf)
        };
        Self { n, zeros: zs, scales, zf, sf }
    }

    /// Group `g`'s zeros and scales in the scales' type.
    #[inline(always)]
    pub(crate) fn row(&self, g: usize) -> (&[S], &[S]) {
        let n = self.n;
        (&self.zeros[g * n..(g + 1) * n], &self.scales[g * n..(g + 1) * n])
    }

    /// `dst[i] = ((src[i] >> shift) & mask - z[g][i]) * s[g][i]` with the best loop `simd` has.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn affine_row<W: crate::pack::Word, O: crate::elem::Elem>(
        &self,
        simd: Simd,
        g: usize,
        src: &[W],
        shift: u32,
        mask: u32,
        dst: &mut [O],
        scratch: &mut [f32; crate::elem::TILE],
    ) {
        #[cfg(target_arch = "x86_64")]
        if let Some(v4) = simd.v4() {
            let (z, s) = self.row(g);
            return v4::affine_lanes(v4, src, shift, mask, z, s, dst);
        }
        let n = self.n;
        let (z, s) = (&self.zf[g * n..(g + 1) * n], &self.sf[g * n..(g + 1) * n]);
        let tile = crate::elem::TILE;
        for t0 in (0..dst.len()).step_by(tile) {
            let m = tile.min(dst.len() - t0);
            O::store_tile(&mut dst[t0..t0 + m], scratch, |buf| {
                affine_lanes(
                    &src[t0..],
                    |w: W| (w.bits() >> shift) & mask,
                    &z[t0..t0 + m],
                    &s[t0..t0 + m],
                    buf,
                )
            });
        }
    }
}

/// The x86-64-v4 (AVX-512) loops: 16 `f32` lanes per register, codes widened from their words,
/// zeros/scales loaded and outputs stored in their own dtype (`vcvtph2ps` / `vcvtps2ph` for
/// `f16`), so no widened copies or scratch tiles. Same operations and roundings as the portable
/// loops above: `(q - z) * s` as a subtraction and a multiplication.
#[cfg(target_arch = "x86_64")]
pub(crate) mod v4 {
    use crate::elem::Elem;
    use crate::pack::Word;
    pub(crate) use pulp::x86::V4;

    /// The first 16 elements as an array (the caller guarantees at least 16).
    #[inline(always)]
    fn lanes16<T>(x: &[T]) -> &[T; 16] {
        pulp::as_arrays::<16, T>(&x[..16]).0.first().unwrap_or_else(|| unreachable!())
    }

    /// The first 16 elements as a mutable array (the caller guarantees at least 16).
    #[inline(always)]
    fn lanes16_mut<T>(x: &mut [T]) -> &mut [T; 16] {
        pulp::as_arrays_mut::<16, T>(&mut x[..16]).0.first_mut().unwrap_or_else(|| unreachable!())
    }

    /// `out[i] = ((words[i] >> shift) & mask - zero[i]) * scale[i]`, per-lane zero and scale.
    #[inline(always)]
    pub(crate) fn affine_lanes<W: Word, S: Elem, O: Elem>(
        v4: V4,
        words: &[W],
        shift: u32,
        mask: u32,
        zero: &[S],
        scale: &[S],
        out: &mut [O],
    ) {
        let n = out.len();
        let (w16, wt) = pulp::as_arrays::<16, W>(&words[..n]);
        let (z16, zt) = pulp::as_arrays::<16, S>(&zero[..n]);
        let (s16, st) = pulp::as_arrays::<16, S>(&scale[..n]);
        let (o16, ot) = pulp::as_arrays_mut::<16, O>(out);
        let f = v4.avx512f;
        let (sh, mk) = (f._mm512_set1_epi32(shift as i32), f._mm512_set1_epi32(mask as i32));
        for (((w, z), s), o) in w16.iter().zip(z16).zip(s16).zip(o16.iter_mut()) {
            let q = f._mm512_and_si512(f._mm512_srlv_epi32(W::widen16(v4, w), sh), mk);
            let y =
                f._mm512_mul_ps(f._mm512_sub_ps(f._mm512_cvtepi32_ps(q), S::load16(v4, z)), S::load16(v4, s));
            O::store16(v4, y, o);
        }
        for (((w, z), s), o) in wt.iter().zip(zt).zip(st).zip(ot.iter_mut()) {
            *o = O::from_f32((((w.bits() >> shift) & mask) as f32 - z.to_f32()) * s.to_f32());
        }
    }

    /// Several planes of the same words at once: for plane `p < planes`, row `p` of `out`
    /// (`out[p * stride..][..words.len()]`) gets `((words[i] >> (first_shift + p*bits)) &
    /// mask - z_p[i]) * s_p[i]` with `(z_p, s_p) = params(p)`. Each word vector is loaded once;
    /// with `shared` (every plane in the same group) so is each zero and scale vector,
    /// `params(0)`'s.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn affine_planes<'p, W: Word, S: Elem + 'p, O: Elem>(
        v4: V4,
        words: &[W],
        planes: usize,
        first_shift: u32,
        bits: u32,
        params: impl Fn(usize) -> (&'p [S], &'p [S]),
        shared: bool,
        out: &mut [O],
        stride: usize,
    ) {
        let n = words.len();
        debug_assert!(planes == 0 || out.len() >= (planes - 1) * stride + n);
        let full = n - n % 16;
        let f = v4.avx512f;
        let mask = (1u32 << bits) - 1;
        let mk = f._mm512_set1_epi32(mask as i32);
        let (w16, _) = pulp::as_arrays::<16, W>(&words[..full]);
        // No closures around the loads: a closure is not compiled with the caller's target
        // features, so an intrinsic in it would become an out-of-line call.
        // Every plane's parameter rows, looked up once per call, not once per vector.
        const MAX_PLANES: usize = 16;
        debug_assert!(planes <= MAX_PLANES);
        let mut rows = [params(0); MAX_PLANES];
        for (p, r) in rows.iter_mut().enumerate().take(planes).skip(1) {
            *r = params(p);
        }
        let (z0, s0) = rows[0];
        for (v, w) in w16.iter().enumerate() {
            let wide = W::widen16(v4, w);
            let at = 16 * v;
            let (zc, sc) = (S::load16(v4, lanes16(&z0[at..])), S::load16(v4, lanes16(&s0[at..])));
            for (p, &(z, s)) in rows.iter().enumerate().take(planes) {
                let shift = first_shift + bits * p as u32;
                let q = f._mm512_and_si512(f._mm512_srlv_epi32(wide, f._mm512_set1_epi32(shift as i32)), mk);
                let (z, s) = if shared || p == 0 {
                    (zc, sc)
                } else {
                    (S::load16(v4, lanes16(&z[at..])), S::load16(v4, lanes16(&s[at..])))
                };
                let y = f._mm512_mul_ps(f._mm512_sub_ps(f._mm512_cvtepi32_ps(q), z), s);
                O::store16(v4, y, lanes16_mut(&mut out[p * stride + at..]));
            }
        }
        for p in 0..planes {
            let shift = first_shift + bits * p as u32;
            let (z, s) = params(p);
            for i in full..n {
                let q = (words[i].bits() >> shift) & mask;
                out[p * stride + i] = O::from_f32((q as f32 - z[i].to_f32()) * s[i].to_f32());
            }
        }
    }

    /// How far ahead (bytes) the dequantization kernels ask for their output lines.
    pub(crate) const WRITE_AHEAD: usize = 1024;

    /// Ask for the cache line holding element `at` of the slice starting at `base` (`at` may be
    /// past the end: a prefetch reads nothing and cannot fault) with intent to write (`prefetchw`), so that the line's
    /// ownership request starts before the store reaches it; measured faster for streams of
    /// output lines. A no-op on CPUs without `PRFCHW`.
    #[inline(always)]
    pub(crate) fn prefetch_write<T>(v4: V4, base: *const T, at: usize) {
        let p = base.wrapping_add(at);
        v4.sse._mm_prefetch::<{ core::arch::x86_64::_MM_HINT_ET0 }>(p.cast::<i8>());
    }

    /// `2^23` as `f32` bits: OR-ing an integer `q < 2^23` into the mantissa gives the float
    /// `2^23 + q`, and `(2^23 + q) - (2^23 + z)` is `q - z` exactly: the same bits as
    /// `q as f32 - z as f32`, without an integer -> float conversion per lane.
    pub(crate) const MAGIC: u32 = 0x4B00_0000;

    /// `W` consecutive words (1, 2 or 4) spread over the 16 lanes: lane `i` holds
    /// `words[i * W / 16]`, ready for a per-lane shift to its field. The word loads are
    /// broadcasts, so this reads exactly `W` words.
    #[inline(always)]
    pub(crate) fn spread_words<const W: usize>(v4: V4, words: &[i32]) -> core::arch::x86_64::__m512i {
        let f = v4.avx512f;
        let w = &words[..W];
        match W {
            1 => f._mm512_set1_epi32(w[0]),
            2 => f._mm512_mask_blend_epi32(0xff00, f._mm512_set1_epi32(w[0]), f._mm512_set1_epi32(w[1])),
            _ => {
                let lo =
                    f._mm512_mask_blend_epi32(0x00f0, f._mm512_set1_epi32(w[0]), f._mm512_set1_epi32(w[1]));
                let hi =
                    f._mm512_mask_blend_epi32(0xf000, f._mm512_set1_epi32(w[2]), f._mm512_set1_epi32(w[3]));
                f._mm512_mask_blend_epi32(0xff00, lo, hi)
            }
        }
    }

    /// `((x >> shifts) & mask) | MAGIC` per lane, as `f32`: the magic-biased fields of `x`.
    #[inline(always)]
    pub(crate) fn magic_fields(
        v4: V4,
        x: core::arch::x86_64::__m512i,
        shifts: core::arch::x86_64::__m512i,
        mask: core::arch::x86_64::__m512i,
    ) -> core::arch::x86_64::__m512 {
        let f = v4.avx512f;
        let magic = f._mm512_set1_epi32(MAGIC as i32);
        // ternary logic 0xEA: (a & b) | c
        f._mm512_castsi512_ps(f._mm512_ternarylogic_epi32::<0xEA>(
            f._mm512_srlv_epi32(x, shifts),
            mask,
            magic,
        ))
    }

    /// `out[i] = ((words[i] >> shift) & mask - zero) * scale`: one zero and scale.
    #[inline(always)]
    pub(crate) fn affine_splat<W: Word, O: Elem>(
        v4: V4,
        words: &[W],
        shift: u32,
        mask: u32,
        zero: f32,
        scale: f32,
        out: &mut [O],
    ) {
        let n = out.len();
        let (w16, wt) = pulp::as_arrays::<16, W>(&words[..n]);
        let (o16, ot) = pulp::as_arrays_mut::<16, O>(out);
        let f = v4.avx512f;
        let (sh, mk) = (f._mm512_set1_epi32(shift as i32), f._mm512_set1_epi32(mask as i32));
        let (z, s) = (f._mm512_set1_ps(zero), f._mm512_set1_ps(scale));
        for (w, o) in w16.iter().zip(o16.iter_mut()) {
            let q = f._mm512_and_si512(f._mm512_srlv_epi32(W::widen16(v4, w), sh), mk);
            O::store16(v4, f._mm512_mul_ps(f._mm512_sub_ps(f._mm512_cvtepi32_ps(q), z), s), o);
        }
        for (w, o) in wt.iter().zip(ot.iter_mut()) {
            *o = O::from_f32((((w.bits() >> shift) & mask) as f32 - zero) * scale);
        }
    }
}
#[cfg(target_arch = "x86_64")]
const _: () = assert!(std::mem::size_of::<pulp::x86::V4>() == 0 && std::mem::size_of::<pulp::x86::V3>() == 0);
