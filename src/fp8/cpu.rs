//! The fast FP8 dequantization: rows in parallel; each row's scale runs (one scale per
//! `block_cols` columns) decode the codes and multiply by a splat scale.
//!
//! AVX-512: 16 codes at a time become `f16` bit patterns (E5M2 is the top byte of an `f16`;
//! E4M3's fields shifted into an `f16` give the value times `2^-8`, subnormals included),
//! widened exactly by `vcvtph2ps`, times 256 (exact), then times the scale: the same `f32`
//! product as `decode(code) * scale`. E4M3's NaN codes are patched to the reference's NaN.
//! Elsewhere: branch-free bit construction per code, vectorized by the compiler.

use super::{Fp8Format, Fp8Layout};
use crate::elem::{Elem, TILE};
use crate::lanes::{self, Kernel, Simd};
use crate::par::{self, Parallelism};

pub(crate) fn dequant<S: Elem, O: Elem>(
    codes: &[u8],
    format: Fp8Format,
    scales: &[S],
    l: &Fp8Layout,
    out: &mut [O],
    par: Parallelism,
) {
    let mut sf = vec![0f32; scales.len()];
    S::slice_to_f32(scales, &mut sf);
    par::row_chunks(out, l.cols(), par, |row0, out| match format {
        Fp8Format::E4M3 => lanes::dispatch(par, Rows::<O, 3, 7, true> { codes, scales: &sf, l, row0, out }),
        Fp8Format::E5M2 => lanes::dispatch(par, Rows::<O, 2, 15, false> { codes, scales: &sf, l, row0, out }),
    });
}

/// Branch-free decode (vectorizes): the same bits as [`Fp8Format::decode`], built from the
/// code's fields; `MB` mantissa bits, exponent bias `BIAS`, `E4M3` selects the NaN-only special.
#[inline(always)]
pub(crate) fn decode<const MB: u32, const BIAS: i32, const E4M3: bool>(code: u8) -> f32 {
    let c = code as u32;
    let sign = (c >> 7) << 31;
    let emax = (1u32 << (7 - MB)) - 1;
    let e = (c >> MB) & emax;
    let m = c & ((1 << MB) - 1);
    let normal = sign | ((e + 127).wrapping_sub(BIAS as u32) << 23) | (m << (23 - MB));
    let sub = (m as f32 * f32::from_bits(((127 + 1 - BIAS - MB as i32) as u32) << 23)).to_bits() | sign;
    let special = if E4M3 { e == emax && m == (1 << MB) - 1 } else { e == emax };
    let special_bits =
        if !E4M3 && m == 0 { sign | 0x7f80_0000 } else { sign | 0x7fc0_0000 | (m << (23 - MB)) };
    f32::from_bits(if special {
        special_bits
    } else if e == 0 {
        sub
    } else {
        normal
    })
}

struct Rows<'a, O, const MB: u32, const BIAS: i32, const E4M3: bool> {
    codes: &'a [u8],
    scales: &'a [f32],
    l: &'a Fp8Layout,
    row0: usize,
    out: &'a mut [O],
}

impl<O: Elem, const MB: u32, const BIAS: i32, const E4M3: bool> Kernel for Rows<'_, O, MB, BIAS, E4M3> {
    type Output = ();
    #[inline(always)]
    fn run(self, simd: Simd) {
        let Self { codes, scales, l, row0, out } = self;
        #[cfg(target_arch = "x86_64")]
        if let Some(v4) = simd.v4() {
            return rows_v4::<O, E4M3>(v4, codes, scales, l, row0, out);
        }
        let (cols, (br, bc), (_, sc)) = (l.cols(), l.block_size(), l.scale_shape());
        let mut scratch = [0f32; TILE];
        for (i, dst) in out.chunks_exact_mut(cols).enumerate() {
            let r = row0 + i;
            let src = &codes[r * cols..(r + 1) * cols];
            let srow = &scales[(r / br) * sc..(r / br + 1) * sc];
            for t0 in (0..cols).step_by(TILE) {
                let m = TILE.min(cols - t0);
                O::store_tile(&mut dst[t0..t0 + m], &mut scratch, |buf| {
                    for (b0, s) in (t0 / bc * bc..t0 + m).step_by(bc).zip(&srow[t0 / bc..]) {
                        let (lo, hi) = (b0.max(t0), (b0 + bc).min(t0 + m));
                        for (o, &c) in buf[lo - t0..hi - t0].iter_mut().zip(&src[lo..hi]) {
                            *o = decode::<MB, BIAS, E4M3>(c) * s;
                        }
                    }
                });
            }
        }
    }
}

/// The AVX-512 rows: `E4M3` or E5M2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rows_v4<O: Elem, const E4M3: bool>(
    v4: lanes::v4::V4,
    codes: &[u8],
    scales: &[f32],
    l: &Fp8Layout,
    row0: usize,
    out: &mut [O],
) {
    let (cols, (br, bc), (_, sc)) = (l.cols(), l.block_size(), l.scale_shape());
    for (i, dst) in out.chunks_exact_mut(cols).enumerate() {
        let r = row0 + i;
        let src = &codes[r * cols..(r + 1) * cols];
        let srow = &scales[(r / br) * sc..(r / br + 1) * sc];
        for ((src, dst), &s) in src.chunks(bc).zip(dst.chunks_mut(bc)).zip(srow) {
            // E4M3 decodes to value / 256 (E5M2 to the value): fold the 256 into the scale
            // when that product is exact (finite, or the scale itself is not finite).
            let s256 = s * 256.0;
            if !E4M3 {
                block_v4::<O, false>(v4, src, s, 1.0, dst);
            } else if s256.is_finite() || !s.is_finite() {
                block_v4::<O, true>(v4, src, s256, 1.0, dst);
            } else {
                block_v4::<O, true>(v4, src, s, 256.0, dst);
            }
            let full = src.len() - src.len() % 16;
            for (&c, o) in src[full..].iter().zip(&mut dst[full..]) {
                let v = if E4M3 { decode::<3, 7, true>(c) } else { decode::<2, 15, false>(c) };
                *o = O::from_f32(v * s);
            }
        }
    }
}

/// The whole 16-code vectors of one scale block: `decode(code) * scale`, computed as
/// `(h * pre) * s` with `h` the code's `f16` pattern (E4M3: value / 256, `pre` 256 or folded into
/// `s` as 1.0 by the caller; the 1.0 multiplication is skipped).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn block_v4<O: Elem, const E4M3: bool>(v4: lanes::v4::V4, src: &[u8], s: f32, pre: f32, dst: &mut [O]) {
    let f = v4.avx512f;
    let (m3f80, m8000) = (v4.avx._mm256_set1_epi16(0x3F80), v4.avx._mm256_set1_epi16(0x8000u16 as i16));
    let nan_bits = f._mm512_set1_epi32(0x4000_0000);
    let (sv, prev) = (f._mm512_set1_ps(s), f._mm512_set1_ps(pre));
    let (c16, _) = pulp::as_arrays::<16, u8>(src);
    let ahead = lanes::v4::WRITE_AHEAD / std::mem::size_of::<O>();
    let base = dst.as_ptr();
    let (o16, _) = pulp::as_arrays_mut::<16, O>(dst);
    for (v, (c, o)) in c16.iter().zip(o16.iter_mut()).enumerate() {
        lanes::v4::prefetch_write(v4, base, 16 * v + ahead);
        let x = v4.avx2._mm256_cvtepu8_epi16(bytemuck::cast(*c));
        let v = if E4M3 {
            // sign to bit 15, the 7 magnitude bits to 13..7: an f16 of value / 256
            let mag = v4.avx2._mm256_and_si256(v4.avx2._mm256_slli_epi16::<7>(x), m3f80);
            let h = f._mm256_ternarylogic_epi32::<0xEA>(v4.avx2._mm256_slli_epi16::<8>(x), m8000, mag);
            let nan = v4.avx512bw._mm256_cmpeq_epi16_mask(mag, m3f80);
            let v = f._mm512_cvtph_ps(h);
            // 0x7f / 0xff: 1.875 (0x3FF0_0000) -> 0x7FF0_0000, the reference's NaN
            let v = f._mm512_castsi512_ps(f._mm512_mask_or_epi32(
                f._mm512_castps_si512(v),
                nan,
                f._mm512_castps_si512(v),
                nan_bits,
            ));
            if pre == 1.0 { v } else { f._mm512_mul_ps(v, prev) }
        } else {
            f._mm512_cvtph_ps(v4.avx2._mm256_slli_epi16::<8>(x))
        };
        O::store16(v4, f._mm512_mul_ps(v, sv), o);
    }
}
