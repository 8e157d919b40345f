//! The integer-dot kernels of [`super::q8::multiply`]: AVX-512 VNNI and AVX-VNNI (the
//! 256-bit VEX form on AVX2 machines). Per 64-byte load of a tile's 4-bit codes (16 rows × 8
//! inputs; two 32-byte halves of 8 rows each in the 256-bit kernel), two masks and a shift give
//! 4 codes per row for each of two `vpdpbusd`s by 4 broadcast activation bytes; 8-bit codes are
//! two loads of 16 rows × 4 inputs, used as they are. Also the AVX-512 activation quantizer. With the CUDA module, the
//! crate's only code with `unsafe`: calls into `#[target_feature]` functions, made only with a
//! [`Vnni`] or [`AvxVnni`] token (which exist only after run-time detection), and unaligned loads
//! at offsets bounded by slices taken (and so checked) on entry.
#![allow(unsafe_code)]

use super::q8::{Args, BLOCK, TILE};
#[cfg(target_arch = "x86_64")]
use core::arch::x86_64::*;

/// Proof that the CPU runs AVX-512 F/BW and VNNI (the OS saving AVX-512 state included, as
/// `is_x86_feature_detected!` checks).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vnni(());

impl Vnni {
    /// The token when the CPU has the instructions.
    pub(crate) fn detect() -> Option<Vnni> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vnni")
        {
            return Some(Vnni(()));
        }
        None
    }
}

/// Proof that the CPU runs AVX2, FMA, F16C and AVX-VNNI.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AvxVnni(());

impl AvxVnni {
    /// The token when the CPU has the instructions.
    pub(crate) fn detect() -> Option<AvxVnni> {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
            && is_x86_feature_detected!("avxvnni")
        {
            return Some(AvxVnni(()));
        }
        None
    }
}

/// Bytes ahead of the loads that each tile's stream is prefetched.
const PREFETCH: usize = 1024;

/// Tiles `tile0..` of the weight for every activation row into `out` (`[tiles, batch, TILE]`).
pub(crate) fn tiles(token: Vnni, a: &Args<'_>, tile0: usize, out: &mut [f32]) {
    let _ = token;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a `Vnni` token exists only when the CPU reports AVX-512 F, BW and VNNI
    // (`Vnni::detect`), the features `tiles_avx512` is compiled for.
    unsafe {
        match (a.param_bytes == 64, a.bits == 8) {
            (true, false) => tiles_avx512::<true, false>(a, tile0, out),
            (false, false) => tiles_avx512::<false, false>(a, tile0, out),
            (true, true) => tiles_avx512::<true, true>(a, tile0, out),
            (false, true) => tiles_avx512::<false, true>(a, tile0, out),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (a, tile0, out);
}

/// Passes of 4 tiles by 1 token at batch 1 (four weight streams), else of 1 tile by up to 8
/// tokens (each 64-byte load feeds 16 `vpdpbusd`s; the tile's codes stay in L1/L2 between
/// passes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn tiles_avx512<const F16: bool, const WIDE: bool>(a: &Args<'_>, tile0: usize, out: &mut [f32]) {
    let per_tile = a.batch * TILE;
    if a.batch == 1 {
        let mut rest = out;
        let mut tile = tile0;
        while !rest.is_empty() {
            let r = if rest.len() >= 4 * per_tile { 4 } else { 1 };
            let (o, tail) = rest.split_at_mut(r * per_tile);
            match r {
                4 => pass::<4, 1, F16, WIDE>(a, tile, 0, o),
                _ => pass::<1, 1, F16, WIDE>(a, tile, 0, o),
            }
            (rest, tile) = (tail, tile + r);
        }
        return;
    }
    for (i, o) in out.chunks_exact_mut(per_tile).enumerate() {
        let mut t = 0;
        while t < a.batch {
            let n = (a.batch - t).min(8);
            match n {
                8 => pass::<1, 8, F16, WIDE>(a, tile0 + i, t, o),
                7 => pass::<1, 7, F16, WIDE>(a, tile0 + i, t, o),
                6 => pass::<1, 6, F16, WIDE>(a, tile0 + i, t, o),
                5 => pass::<1, 5, F16, WIDE>(a, tile0 + i, t, o),
                4 => pass::<1, 4, F16, WIDE>(a, tile0 + i, t, o),
                3 => pass::<1, 3, F16, WIDE>(a, tile0 + i, t, o),
                2 => pass::<1, 2, F16, WIDE>(a, tile0 + i, t, o),
                _ => pass::<1, 1, F16, WIDE>(a, tile0 + i, t, o),
            }
            t += n;
        }
    }
}

/// The 16 scales (`ZERO` false) or zero points of one tile and group as `f32` lanes, from the
/// group's parameter bytes `p`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn lanes<const F16: bool, const ZERO: bool>(p: &[u8]) -> __m512 {
    if F16 {
        let p: &[u8; 32] = p[32 * ZERO as usize..][..32].try_into().expect("16 f16 values");
        // SAFETY: `p` is 32 bytes (16 f16 values); the load is unaligned.
        _mm512_cvtph_ps(unsafe { _mm256_loadu_si256(p.as_ptr().cast()) })
    } else {
        let p: &[u8; 64] = p[64 * ZERO as usize..][..64].try_into().expect("16 f32 values");
        // SAFETY: `p` is 64 bytes (16 f32 values); the load is unaligned.
        unsafe { _mm512_loadu_ps(p.as_ptr().cast()) }
    }
}

/// Tiles `tile0..tile0 + R` by tokens `t0..t0 + T`: per block, the `i32` dot products of each
/// tile and token in 16 row lanes, then `G += f32(dot) * d_b`; per group `acc += s (G - z E_g)`
/// (the arithmetic every kernel and pass shape shares, so a result does not depend on the
/// batch or the ISA). `out` holds the `R` tiles' `[batch, TILE]` outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)] // r and t index several arrays together
fn pass<const R: usize, const T: usize, const F16: bool, const WIDE: bool>(
    a: &Args<'_>,
    tile0: usize,
    t0: usize,
    out: &mut [f32],
) {
    let (k, group) = (a.k, a.group);
    let (groups, blocks, per_group) = (k / group, k / BLOCK, group / BLOCK);
    let stride = a.group_stride();
    let tile_bytes = groups * stride;
    // Every offset below is < these slices' lengths (a group's codes are per_group * 4 * cb
    // bytes after its parameters; k activation codes per token): slicing here checks the
    // ends once.
    let w = &a.data[tile0 * tile_bytes..(tile0 + R) * tile_bytes];
    let xq = &a.xq[t0 * k..(t0 + T) * k];
    let xd = &a.xd[t0 * blocks..(t0 + T) * blocks];
    let xe = &a.xe[t0 * groups..(t0 + T) * groups];
    assert_eq!(out.len(), R * a.batch * TILE);
    let xp = xq.as_ptr();
    let mask = _mm512_set1_epi8(0x0f);
    let cb = if WIDE { 128 } else { 64 }; // code bytes per chunk of 8 inputs
    // A run-time trip count keeps the step loop rolled: fully unrolled, the compiler hoists
    // every step's loads and spills (measured 1.3x slower).
    let steps = core::hint::black_box(BLOCK / 8);
    // With 4 or more tokens a stream is read 4-8x slower: prefetch further ahead to cover the
    // same DRAM latency (batch 8 on 4096x4096: 660 -> 570 us).
    let ahead = if T >= 4 { 4 * PREFETCH } else { PREFETCH };
    let mut acc = [[_mm512_setzero_ps(); T]; R];
    for g in 0..groups {
        let wg: [&[u8]; R] = core::array::from_fn(|r| &w[r * tile_bytes + g * stride..][..stride]);
        let mut sum = [[_mm512_setzero_ps(); T]; R];
        for bl in 0..per_group {
            let b = g * per_group + bl;
            let mut dot = [[_mm512_setzero_si512(); T]; R];
            for c in 0..steps {
                let (wo, xo) = (a.param_bytes + (bl * BLOCK / 8 + c) * cb, b * BLOCK + c * 8);
                for r in 0..R {
                    // SAFETY: wo + cb <= param_bytes + per_group * 4 * cb = stride, so the cb
                    // bytes lie inside `wg[r]`; the loads are unaligned.
                    let v = unsafe { _mm512_loadu_si512(wg[r].as_ptr().add(wo).cast()) };
                    if PREFETCH > 0 {
                        // A hint only: an address past the weight is never dereferenced.
                        _mm_prefetch::<_MM_HINT_T0>(wg[r].as_ptr().wrapping_add(wo + ahead).cast());
                    }
                    let (lo, hi) = if WIDE {
                        if PREFETCH > 0 {
                            _mm_prefetch::<_MM_HINT_T0>(wg[r].as_ptr().wrapping_add(wo + 64 + ahead).cast());
                        }
                        // SAFETY: as above (the second 64 of the chunk's 128 bytes).
                        (v, unsafe { _mm512_loadu_si512(wg[r].as_ptr().add(wo + 64).cast()) })
                    } else {
                        (_mm512_and_si512(v, mask), _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask))
                    };
                    for t in 0..T {
                        // SAFETY: t < T and xo + 8 <= k, so both 4-byte reads lie inside `xq`
                        // (T rows of k codes); the reads are unaligned.
                        let (x0, x1) = unsafe {
                            let p = xp.add(t * k + xo);
                            (p.cast::<i32>().read_unaligned(), p.add(4).cast::<i32>().read_unaligned())
                        };
                        dot[r][t] = _mm512_dpbusd_epi32(dot[r][t], lo, _mm512_set1_epi32(x0));
                        dot[r][t] = _mm512_dpbusd_epi32(dot[r][t], hi, _mm512_set1_epi32(x1));
                    }
                }
            }
            for r in 0..R {
                for t in 0..T {
                    // SAFETY: t < T and b < blocks: inside `xd` (T rows of `blocks` scales).
                    let d = _mm512_set1_ps(unsafe { *xd.get_unchecked(t * blocks + b) });
                    sum[r][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot[r][t]), d, sum[r][t]);
                }
            }
        }
        for r in 0..R {
            let (s, z) = (lanes::<F16, false>(wg[r]), lanes::<F16, true>(wg[r]));
            for t in 0..T {
                // SAFETY: t < T and g < groups: inside `xe` (T rows of `groups` sums).
                let e = _mm512_set1_ps(unsafe { *xe.get_unchecked(t * groups + g) });
                acc[r][t] = _mm512_fmadd_ps(s, _mm512_fnmadd_ps(z, e, sum[r][t]), acc[r][t]);
            }
        }
    }
    for r in 0..R {
        for t in 0..T {
            let o: &mut [f32; TILE] =
                (&mut out[(r * a.batch + t0 + t) * TILE..][..TILE]).try_into().expect("16 outputs");
            // SAFETY: `o` is 16 f32 values; the store is unaligned.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr(), acc[r][t]) };
        }
    }
}

/// One call's activations to `int8` blocks on AVX-512 (the token proves AVX-512 F and BW):
/// the same codes, scales and sums as the portable quantizer (the same `f32` operations per
/// value). With `scaled`, each row of `k` values is first multiplied by `scaled.s` per input
/// and `c[row] = sum_lanes f64(sum_k (z - m) u)` is accumulated as the portable
/// `ScaleQuantize` does (32 `f32` lanes of fused multiply-adds, then the lanes in order in
/// `f64`). The index of the first non-finite (scaled) value, if any.
pub(crate) fn quantize(
    token: Vnni,
    x: &[f32],
    q: super::q8::QuantOut<'_>,
    scaled: Option<super::q8::Scaled<'_>>,
) -> Option<usize> {
    let _ = token;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a `Vnni` token exists only when the CPU reports AVX-512 F, BW and VNNI
    // (`Vnni::detect`), the features `quantize_avx512` is compiled for.
    unsafe {
        match scaled {
            Some(sc) => quantize_avx512::<true>(x, q, sc),
            None => quantize_avx512::<false>(x, q, super::q8::Scaled { s: &[], z: &[], m: 0.0, c: &mut [] }),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (x, q, scaled);
        unreachable!("no Vnni token off x86-64")
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn quantize_avx512<const SCALED: bool>(
    x: &[f32],
    q: super::q8::QuantOut<'_>,
    sc: super::q8::Scaled<'_>,
) -> Option<usize> {
    let super::q8::QuantOut { codes, scales, sums } = q;
    let k = sc.s.len();
    let per_row = k / BLOCK;
    let (zero, lo, hi) = (_mm512_setzero_ps(), _mm512_set1_ps(-127.0), _mm512_set1_ps(127.0));
    let round = _mm512_set1_ps(super::q8::ROUND);
    let round_bits = _mm512_set1_epi32(super::q8::ROUND.to_bits() as i32);
    let m = _mm512_set1_ps(sc.m);
    let mut cacc = [zero; 2];
    let blocks =
        x.chunks_exact(BLOCK).zip(codes.chunks_exact_mut(BLOCK)).zip(scales.iter_mut().zip(sums.iter_mut()));
    for (b, ((xb, qb), (d, sum))) in blocks.enumerate() {
        let xb: &[f32; BLOCK] = xb.try_into().expect("whole blocks");
        let qb: &mut [i8; BLOCK] = qb.try_into().expect("whole blocks");
        // SAFETY: `xb` is 32 f32 values; both 16-lane loads are unaligned.
        let mut v = unsafe { [_mm512_loadu_ps(xb.as_ptr()), _mm512_loadu_ps(xb.as_ptr().add(16))] };
        if SCALED {
            let at = b % per_row * BLOCK;
            let (s, z): (&[f32; BLOCK], &[f32; BLOCK]) = (
                sc.s[at..at + BLOCK].try_into().expect("a block of scales"),
                sc.z[at..at + BLOCK].try_into().expect("a block of zero points"),
            );
            for h in 0..2 {
                // SAFETY: `s` and `z` are 32 f32 values; the loads are unaligned.
                let (s, z) = unsafe {
                    (_mm512_loadu_ps(s.as_ptr().add(16 * h)), _mm512_loadu_ps(z.as_ptr().add(16 * h)))
                };
                v[h] = _mm512_mul_ps(v[h], s);
                cacc[h] = _mm512_fmadd_ps(_mm512_sub_ps(z, m), v[h], cacc[h]);
            }
            if b % per_row == per_row - 1 {
                let mut lanes = [0f32; 32];
                // SAFETY: `lanes` is 32 f32 values; the stores are unaligned.
                unsafe {
                    _mm512_storeu_ps(lanes.as_mut_ptr(), cacc[0]);
                    _mm512_storeu_ps(lanes.as_mut_ptr().add(16), cacc[1]);
                }
                sc.c[b / per_row] = lanes.iter().map(|&v| v as f64).sum();
                cacc = [zero; 2];
            }
        }
        // `v * 0` is NaN exactly for a NaN or an infinity.
        let bad = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(_mm512_mul_ps(v[0], zero), _mm512_mul_ps(v[1], zero));
        if bad != 0 {
            let mut u = [0f32; BLOCK];
            // SAFETY: `u` is 32 f32 values; the stores are unaligned.
            unsafe {
                _mm512_storeu_ps(u.as_mut_ptr(), v[0]);
                _mm512_storeu_ps(u.as_mut_ptr().add(16), v[1]);
            }
            return u.iter().position(|v| !v.is_finite()).map(|i| b * BLOCK + i);
        }
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_abs_ps(v[1])));
        if amax == 0.0 {
            (*qb, *d, *sum) = ([0; BLOCK], 0.0, 0);
            continue;
        }
        *d = amax / 127.0;
        let inv = _mm512_set1_ps(127.0 / amax);
        let codes = v.map(|v| {
            let r = _mm512_add_ps(_mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(v, inv), lo), hi), round);
            _mm512_sub_epi32(_mm512_castps_si512(r), round_bits)
        });
        *sum = _mm512_reduce_add_epi32(_mm512_add_epi32(codes[0], codes[1]));
        // SAFETY: `qb` is 32 bytes; each 16-byte store is unaligned.
        unsafe {
            _mm_storeu_si128(qb.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(codes[0]));
            _mm_storeu_si128(qb.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(codes[1]));
        }
    }
    None
}

/// [`tiles`] with 256-bit AVX-VNNI: one tile by up to 2 tokens per pass (16 vector registers:
/// 8 accumulators, 4 unpacked code vectors, the mask and 2 broadcasts).
pub(crate) fn tiles_256(token: AvxVnni, a: &Args<'_>, tile0: usize, out: &mut [f32]) {
    let _ = token;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: an `AvxVnni` token exists only when the CPU reports AVX2, FMA, F16C and
    // AVX-VNNI (`AvxVnni::detect`), the features `tiles_avx2` is compiled for.
    unsafe {
        match (a.param_bytes == 64, a.bits == 8) {
            (true, false) => tiles_avx2::<true, false>(a, tile0, out),
            (false, false) => tiles_avx2::<false, false>(a, tile0, out),
            (true, true) => tiles_avx2::<true, true>(a, tile0, out),
            (false, true) => tiles_avx2::<false, true>(a, tile0, out),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (a, tile0, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
fn tiles_avx2<const F16: bool, const WIDE: bool>(a: &Args<'_>, tile0: usize, out: &mut [f32]) {
    for (i, o) in out.chunks_exact_mut(a.batch * TILE).enumerate() {
        let mut t = 0;
        while t < a.batch {
            if a.batch - t >= 2 {
                pass_256::<2, F16, WIDE>(a, tile0 + i, t, o);
                t += 2;
            } else {
                pass_256::<1, F16, WIDE>(a, tile0 + i, t, o);
                t += 1;
            }
        }
    }
}

/// The scales (`ZERO` false) or zero points of one tile and group as two vectors of 8 `f32`
/// lanes (rows 0-7, 8-15).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[inline]
fn lanes_256<const F16: bool, const ZERO: bool>(p: &[u8]) -> [__m256; 2] {
    if F16 {
        let p: &[u8; 32] = p[32 * ZERO as usize..][..32].try_into().expect("16 f16 values");
        // SAFETY: `p` is 32 bytes (16 f16 values); both 16-byte loads are unaligned.
        unsafe {
            [
                _mm256_cvtph_ps(_mm_loadu_si128(p.as_ptr().cast())),
                _mm256_cvtph_ps(_mm_loadu_si128(p.as_ptr().add(16).cast())),
            ]
        }
    } else {
        let p: &[u8; 64] = p[64 * ZERO as usize..][..64].try_into().expect("16 f32 values");
        // SAFETY: `p` is 64 bytes (16 f32 values); both 32-byte loads are unaligned.
        unsafe { [_mm256_loadu_ps(p.as_ptr().cast()), _mm256_loadu_ps(p.as_ptr().add(32).cast())] }
    }
}

/// One tile by tokens `t0..t0 + T` with 256-bit vectors: [`pass`]'s arithmetic (the same bits), each 64-byte
/// chunk as two halves of 8 rows. `out` holds the tile's `[batch, TILE]` outputs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c,avxvnni")]
#[allow(clippy::needless_range_loop)] // t and h index several arrays together
fn pass_256<const T: usize, const F16: bool, const WIDE: bool>(
    a: &Args<'_>,
    tile: usize,
    t0: usize,
    out: &mut [f32],
) {
    let (k, group) = (a.k, a.group);
    let (groups, blocks, per_group) = (k / group, k / BLOCK, group / BLOCK);
    let stride = a.group_stride();
    // As in `pass`: every offset below is inside these slices, checked once here.
    let w = &a.data[tile * groups * stride..(tile + 1) * groups * stride];
    let xq = &a.xq[t0 * k..(t0 + T) * k];
    let xd = &a.xd[t0 * blocks..(t0 + T) * blocks];
    let xe = &a.xe[t0 * groups..(t0 + T) * groups];
    assert_eq!(out.len(), a.batch * TILE);
    let xp = xq.as_ptr();
    let mask = _mm256_set1_epi8(0x0f);
    let cb = if WIDE { 128 } else { 64 }; // as in `pass`
    let steps = core::hint::black_box(BLOCK / 8); // as in `pass`
    let mut acc = [[_mm256_setzero_ps(); 2]; T];
    for g in 0..groups {
        let wg = &w[g * stride..][..stride];
        let mut sum = [[_mm256_setzero_ps(); 2]; T];
        for bl in 0..per_group {
            let b = g * per_group + bl;
            let mut dot = [[_mm256_setzero_si256(); 2]; T];
            for c in 0..steps {
                let (wo, xo) = (a.param_bytes + (bl * BLOCK / 8 + c) * cb, b * BLOCK + c * 8);
                // SAFETY: wo + cb <= stride, so every 32-byte quarter or half of the chunk lies
                // inside `wg`; the loads are unaligned.
                let v = unsafe {
                    let p = wg.as_ptr().add(wo);
                    [_mm256_loadu_si256(p.cast()), _mm256_loadu_si256(p.add(32).cast())]
                };
                if PREFETCH > 0 {
                    // A hint only: an address past the weight is never dereferenced.
                    _mm_prefetch::<_MM_HINT_T0>(wg.as_ptr().wrapping_add(wo + PREFETCH).cast());
                }
                let (lo, hi) = if WIDE {
                    if PREFETCH > 0 {
                        _mm_prefetch::<_MM_HINT_T0>(wg.as_ptr().wrapping_add(wo + 64 + PREFETCH).cast());
                    }
                    // SAFETY: as above (the second 64 of the chunk's 128 bytes).
                    let h = unsafe {
                        let p = wg.as_ptr().add(wo + 64);
                        [_mm256_loadu_si256(p.cast()), _mm256_loadu_si256(p.add(32).cast())]
                    };
                    (v, h)
                } else {
                    (
                        v.map(|v| _mm256_and_si256(v, mask)),
                        v.map(|v| _mm256_and_si256(_mm256_srli_epi16::<4>(v), mask)),
                    )
                };
                for t in 0..T {
                    // SAFETY: t < T and xo + 8 <= k, so both 4-byte reads lie inside `xq`; the
                    // reads are unaligned.
                    let (x0, x1) = unsafe {
                        let p = xp.add(t * k + xo);
                        (p.cast::<i32>().read_unaligned(), p.add(4).cast::<i32>().read_unaligned())
                    };
                    let (x0, x1) = (_mm256_set1_epi32(x0), _mm256_set1_epi32(x1));
                    for h in 0..2 {
                        dot[t][h] = _mm256_dpbusd_avx_epi32(dot[t][h], lo[h], x0);
                        dot[t][h] = _mm256_dpbusd_avx_epi32(dot[t][h], hi[h], x1);
                    }
                }
            }
            for t in 0..T {
                let d = _mm256_set1_ps(xd[t * blocks + b]);
                for h in 0..2 {
                    sum[t][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot[t][h]), d, sum[t][h]);
                }
            }
        }
        let (s, z) = (lanes_256::<F16, false>(wg), lanes_256::<F16, true>(wg));
        for t in 0..T {
            let e = _mm256_set1_ps(xe[t * groups + g]);
            for h in 0..2 {
                acc[t][h] = _mm256_fmadd_ps(s[h], _mm256_fnmadd_ps(z[h], e, sum[t][h]), acc[t][h]);
            }
        }
    }
    for t in 0..T {
        let o: &mut [f32; TILE] = (&mut out[(t0 + t) * TILE..][..TILE]).try_into().expect("16 outputs");
        // SAFETY: `o` is 16 f32 values; both 8-lane stores are unaligned.
        unsafe {
            _mm256_storeu_ps(o.as_mut_ptr(), acc[t][0]);
            _mm256_storeu_ps(o.as_mut_ptr().add(8), acc[t][1]);
        }
    }
}
