//! The fast FP8 dequantization: a 256-entry decode table per call, rows in parallel, each row's
//! scale runs (one scale per `block_cols` columns) as a table gather times a splat scale.

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
    let table = format.table();
    let mut sf = vec![0f32; scales.len()];
    S::slice_to_f32(scales, &mut sf);
    par::row_chunks(out, l.cols(), par, |row0, out| {
        lanes::dispatch(Rows { codes, table: &table, scales: &sf, l, row0, out })
    });
}

struct Rows<'a, O> {
    codes: &'a [u8],
    table: &'a [f32; 256],
    scales: &'a [f32],
    l: &'a Fp8Layout,
    row0: usize,
    out: &'a mut [O],
}

impl<O: Elem> Kernel for Rows<'_, O> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Self { codes, table, scales, l, row0, out } = self;
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
                            *o = table[c as usize] * s;
                        }
                    }
                });
            }
        }
    }
}
