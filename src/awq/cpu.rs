//! The fast AWQ dequantization: per row, the interleaved words are spread to one code per lane
//! (a small L1 scratch), then the shared affine loop runs with per-column zeros (the group's,
//! unpacked once per call) and scales; rayon over row chunks.

use super::{AwqLayout, unpack_interleaved};
use crate::elem::{Elem, TILE};
use crate::lanes::{self, Kernel, affine_lanes};
use crate::par::{self, Parallelism};

pub(crate) fn dequant<S: Elem, O: Elem>(
    l: &AwqLayout,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[S],
    out: &mut [O],
    par: Parallelism,
) {
    let zeros = unpack_interleaved(qzeros, l.n()); // [G, N]
    let zeros_s: Vec<S> = zeros.iter().map(|&z| S::from_f32(z as f32)).collect();
    let mut zf = vec![0f32; 0];
    let mut sf = vec![0f32; 0];
    #[cfg(target_arch = "x86_64")]
    let v4 = lanes::v4::token().is_some();
    #[cfg(not(target_arch = "x86_64"))]
    let v4 = false;
    if !v4 {
        zf = zeros.iter().map(|&z| z as f32).collect();
        sf = vec![0f32; scales.len()];
        S::slice_to_f32(scales, &mut sf);
    }
    par::row_chunks(out, l.n(), par, |row0, out| {
        lanes::dispatch(Rows { l, qweight, zeros_s: &zeros_s, scales, zf: &zf, sf: &sf, row0, out })
    });
}

struct Rows<'a, S, O> {
    l: &'a AwqLayout,
    qweight: &'a [i32],
    zeros_s: &'a [S],
    scales: &'a [S],
    zf: &'a [f32],
    sf: &'a [f32],
    row0: usize,
    out: &'a mut [O],
}

impl<S: Elem, O: Elem> Kernel for Rows<'_, S, O> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Self { l, qweight, zeros_s, scales, zf, sf, row0, out } = self;
        let (n, words) = (l.n(), l.packed_cols());
        let mut codes = vec![0i32; n];
        let mut scratch = [0f32; TILE];
        for (i, dst) in out.chunks_exact_mut(n).enumerate() {
            let k = row0 + i;
            let g = k / l.group_size();
            for (c8, &w) in codes.chunks_exact_mut(8).zip(&qweight[k * words..(k + 1) * words]) {
                let w = w as u32;
                for (j, c) in c8.iter_mut().enumerate() {
                    *c = ((w >> (4 * super::AWQ_REVERSE_ORDER[j])) & 15) as i32;
                }
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(v4) = lanes::v4::token() {
                let (z, s) = (&zeros_s[g * n..(g + 1) * n], &scales[g * n..(g + 1) * n]);
                lanes::v4::affine_lanes(v4, &codes, 0, 15, z, s, dst);
                continue;
            }
            let _ = (zeros_s, scales);
            let (z, s) = (&zf[g * n..(g + 1) * n], &sf[g * n..(g + 1) * n]);
            for t0 in (0..n).step_by(TILE) {
                let m = TILE.min(n - t0);
                O::store_tile(&mut dst[t0..t0 + m], &mut scratch, |buf| {
                    affine_lanes(&codes[t0..], |q: i32| q as u32, &z[t0..t0 + m], &s[t0..t0 + m], buf)
                });
            }
        }
    }
}
