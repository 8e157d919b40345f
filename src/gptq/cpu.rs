//! The fast GPTQ dequantization: row by row over K (rayon over row chunks); each row is one
//! affine pass over N with per-column zero and scale (the row's group), like HQQ's axis 0.
//! 3-bit rows whose field straddles two words are first funnel-shifted into a scratch row.

use super::layout::locate;
use super::{Checked, GptqLayout};
use crate::elem::{Elem, TILE};
use crate::lanes::{self, ColumnParams, Kernel};
use crate::par::{self, Parallelism};

pub(crate) fn dequant<S: Elem, O: Elem>(
    layout: &GptqLayout,
    qweight: &[i32],
    c: &Checked,
    scales: &[S],
    out: &mut [O],
    par: Parallelism,
) {
    let n = layout.n();
    // G x N values, small next to K x N.
    let params = ColumnParams::new(c.zeros.iter().copied(), scales, n);
    par::row_chunks(out, n, par, |row0, out| {
        lanes::dispatch(Rows { layout, qweight, rows_group: &c.rows_group, params: &params, row0, out })
    });
}

struct Rows<'a, 'b, S, O> {
    layout: &'a GptqLayout,
    qweight: &'a [i32],
    rows_group: &'a [u32],
    params: &'a ColumnParams<'b, S>,
    row0: usize,
    out: &'a mut [O],
}

impl<S: Elem, O: Elem> Kernel for Rows<'_, '_, S, O> {
    type Output = ();
    #[inline(always)]
    fn run(self) {
        let Self { layout, qweight, rows_group, params, row0, out } = self;
        let (n, bits) = (layout.n(), layout.bits());
        let mask = (1u32 << bits) - 1;
        #[cfg(target_arch = "x86_64")]
        if let Some(v4) = lanes::v4::token().filter(|_| bits != 3) {
            // AVX-512, 2/4/8-bit: the rows packed in one word row are decoded together, each word
            // vector loaded once for all of them; when those rows share a group (no act-order),
            // so are the zero and scale vectors.
            let per = 32 / bits as usize;
            let (first, end) = (row0, row0 + out.len() / n);
            let mut rest = &mut *out;
            let mut k = first;
            while k < end {
                let (word_row, j0) = (k / per, k % per);
                let count = (per - j0).min(end - k);
                let (here, tail) = rest.split_at_mut(count * n);
                rest = tail;
                let src = &qweight[word_row * n..(word_row + 1) * n];
                let first_shift = (bits as usize * j0) as u32;
                let groups = &rows_group[k..k + count];
                let shared = groups.iter().all(|&g| g == groups[0]);
                let group_params = |p: usize| params.row(groups[p] as usize);
                lanes::v4::affine_planes(
                    v4,
                    src,
                    count,
                    first_shift,
                    bits as u32,
                    group_params,
                    shared,
                    here,
                    n,
                );
                k += count;
            }
            return;
        }
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
            params.affine_row(g, src, shift, mask, dst, &mut scratch);
        }
    }
}
