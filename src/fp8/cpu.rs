//! The fast FP8 dequantization: rows in parallel; each row's scale runs (one scale per
//! `block_cols` columns) decode the codes with branch-free bit construction (vectorized for the
//! dispatched ISA) and multiply by a splat scale.

use super::{Fp8Format, Fp8Layout};
use crate::elem::{Elem, TILE};
use crate::lanes::{self, Kernel};
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
        Fp8Format::E4M3 => lanes::dispatch(Rows::<O, 3, 7, true> { codes, scales: &sf, l, row0, out }),
        Fp8Format::E5M2 => lanes::dispatch(Rows::<O, 2, 15, false> { codes, scales: &sf, l, row0, out }),
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
    fn run(self) {
        let Self { codes, scales, l, row0, out } = self;
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
