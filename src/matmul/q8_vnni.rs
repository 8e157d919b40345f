//! The AVX-512 VNNI kernel of [`super::q8::gemv_q4_q8`]: 64 multiply-adds of unsigned 4-bit
//! codes by `int8` activations per `vpdpbusd`. With the CUDA module, the crate's only code with
//! `unsafe`: one call into a `#[target_feature]` function, made only with a [`Vnni`] token
//! (which exists only after run-time detection), and unaligned loads from slices whose bounds
//! were checked by slicing first.
#![allow(unsafe_code)]

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

/// What one call computes: outputs `y` (rows `r0..`) of one activation row.
pub(crate) struct RowsArgs<'a> {
    /// The weight's packed codes (`rows * k / 2`, see [`super::q8::Q4Weight`]).
    pub packed: &'a [u8],
    pub k: usize,
    pub group: usize,
    pub scales: &'a [f32],
    pub zeros: &'a [f32],
    /// The activation row's codes (`k`).
    pub xq: &'a [i8],
    /// Per pair of blocks: lanes 0-7 the first block's scale, lanes 8-15 the second's.
    pub pair_scales: &'a [[f32; 16]],
    /// Per group: `sum_{blocks b in g} d_b * sum_b` (the zero point's factor).
    pub group_sums: &'a [f32],
    pub r0: usize,
}

/// [`rows_avx512`] behind the token.
pub(crate) fn rows(token: Vnni, a: &RowsArgs<'_>, y: &mut [f32]) {
    let _ = token;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a `Vnni` token exists only when the CPU reports AVX-512 F, BW and VNNI
    // (`Vnni::detect`), the features `rows_avx512` is compiled for.
    unsafe {
        rows_avx512(a, y)
    }
}

/// `y[i] = sum_g s_g * (sum_{b in g} d_b * dot_b) - sum_g s_g z_g E_g` for rows `r0 + i`, the
/// block dot products by `vpdpbusd`, two accumulators of 16 `f32` lanes per row (no division in
/// the loop: groups of 64 or more inputs are walked group by group).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
fn rows_avx512(a: &RowsArgs<'_>, y: &mut [f32]) {
    let (k, group) = (a.k, a.group);
    let groups = k / group;
    for (i, out) in y.iter_mut().enumerate() {
        let r = a.r0 + i;
        let packed = &a.packed[r * k / 2..(r + 1) * k / 2];
        let (s, z) = (&a.scales[r * groups..(r + 1) * groups], &a.zeros[r * groups..(r + 1) * groups]);
        let mut acc = [_mm512_setzero_ps(); 2];
        if group >= 64 {
            let per = group / 64;
            for (g, (wg, xg)) in packed.chunks_exact(group / 2).zip(a.xq.chunks_exact(group)).enumerate() {
                let sv = _mm512_set1_ps(s[g]);
                for (j, (w, x)) in wg.chunks_exact(32).zip(xg.chunks_exact(64)).enumerate() {
                    let t = pair(w, x, &a.pair_scales[g * per + j]);
                    acc[j & 1] = _mm512_fmadd_ps(t.0, _mm512_mul_ps(t.1, sv), acc[j & 1]);
                }
            }
        } else {
            // Groups of 32: the pair's two blocks have their own scales.
            for (p, (w, x)) in packed.chunks_exact(32).zip(a.xq.chunks_exact(64)).enumerate() {
                let sv = _mm512_mask_mov_ps(_mm512_set1_ps(s[2 * p]), 0xff00, _mm512_set1_ps(s[2 * p + 1]));
                let t = pair(w, x, &a.pair_scales[p]);
                acc[p & 1] = _mm512_fmadd_ps(t.0, _mm512_mul_ps(t.1, sv), acc[p & 1]);
            }
        }
        let zterm: f32 = (0..groups).map(|g| s[g] * z[g] * a.group_sums[g]).sum();
        *out = _mm512_reduce_add_ps(_mm512_add_ps(acc[0], acc[1])) - zterm;
    }
}

/// Two blocks' dot products (lanes 0-7: the first block's partial sums, 8-15: the second's) as
/// `f32`, and their activation scales by lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
fn pair(w: &[u8], x: &[i8], d: &[f32; 16]) -> (__m512, __m512) {
    let (w, x): (&[u8; 32], &[i8; 64]) =
        (w.try_into().expect("32 code bytes"), x.try_into().expect("64 codes"));
    // SAFETY: `w` is 32 bytes, `x` 64 and `d` 16 f32 values (array references); the loads are
    // unaligned.
    let (v, xv, dv) = unsafe {
        (
            _mm256_loadu_si256(w.as_ptr().cast()),
            _mm512_loadu_si512(x.as_ptr().cast()),
            _mm512_loadu_ps(d.as_ptr()),
        )
    };
    let low = _mm256_set1_epi8(0x0f);
    let lo = _mm256_and_si256(v, low);
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
    // Block 0: low then high nibbles of bytes 0-15; block 1: of bytes 16-31.
    let b0 = _mm256_permute2x128_si256::<0x20>(lo, hi);
    let b1 = _mm256_permute2x128_si256::<0x31>(lo, hi);
    let codes = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(b0), b1);
    (_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(_mm512_setzero_si512(), codes, xv)), dv)
}
