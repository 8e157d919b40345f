//! The int8 path for weights whose scale and zero point vary along the inputs (HQQ's axis 0).
//!
//! Rows fall in `classes` classes, row `o` in class `o % classes`, and the rows of a class share
//! one scale `s[c, k]` and zero point `z[c, k]` per input `k`. Then
//!
//! `y_o = sum_k (q_ok - m_c) u_ck - C_c`, `u_ck = s_ck x_k`, `C_c = sum_k (z_ck - m_c) s_ck x_k`
//!
//! for any constant `m_c`; here the class's mean zero point (rounded to `f16`), so that the
//! codes the quantized `u` multiplies are as centred as `q - z`. Per class the activations are
//! scaled by the class's scales and quantized as [`super::q8::quantize_activations`] does, the
//! codes multiply them on the integer kernels (as an [`IntWeight`] of scale 1 and zero point
//! `m_c`), and `C_c` (32 `f32` lanes over the row, their sum in `f64`) is subtracted. The
//! activation work is `classes * k` per token: `1 / (rows / classes)` of the weight's (1/64 for
//! HQQ's groups of 64).
//!
//! Error: the quantized `u` moves an output by at most `sum_blocks (d / 2) sum_k |q_ok - m_c|`,
//! `d` the scale of the class's block of `u`; [`ColumnWeight::error_bound`] adds the `f32`
//! rounding on the way.

use super::q8::{BLOCK, Dot, IntWeight, Q8Activations, QuantOut, Scaled, TILE, quantize_blocks};
use crate::error::{Error, KernelError, Result, expect_len};
use crate::par::Parallelism;
use rayon::prelude::*;

/// Integer codes `[rows, k]` whose scales and zero points are per class of rows and input (see
/// the module docs): `w[o, k] = (q[o, k] - z[o % classes, k]) * s[o % classes, k]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnWeight {
    /// The codes with the rows of each class together (row `c * per_class + i` is weight row
    /// `c + i * classes`): one group per row, scale 1, zero point `mean[c]`.
    codes: IntWeight,
    classes: usize,
    /// Per class, the mean zero point rounded to `f16`.
    mean: Vec<f32>,
    /// `[classes, k]`.
    scales: Vec<f32>,
    /// `[classes, k]`.
    zeros: Vec<f32>,
}

impl ColumnWeight {
    /// From `bits`-bit codes (4 or 8), filled row by row by `row(o, codes)` (`k` codes, each
    /// `< 2^bits`), and `[classes, k]` scales and zero points (finite). `rows` must be a multiple
    /// of `classes` whose quotient is a multiple of 16 (a class is whole tiles), `k` a positive
    /// multiple of [`BLOCK`].
    ///
    /// ```
    /// use quant_kernels::matmul::q8::ColumnWeight;
    /// // 32 rows in 2 classes; class 0 scales input k by 1 + k, class 1 by 0.5; zero points 1.
    /// let scales: Vec<f32> = (0..32).map(|k| 1.0 + k as f32).chain([0.5; 32]).collect();
    /// let w = ColumnWeight::from_rows(4, 32, 32, 2, &scales, &[1.0; 64], |_, c| Ok(c.fill(3)))?;
    /// assert_eq!(w.dequantize()[..2], [2.0, 4.0]); // (3 - 1) * (1 + k), row 0
    /// assert_eq!(w.dequantize()[32], 1.0); // row 1 is in class 1
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn from_rows(
        bits: u32,
        rows: usize,
        k: usize,
        classes: usize,
        scales: &[f32],
        zeros: &[f32],
        mut row: impl FnMut(usize, &mut [u8]) -> Result<()>,
    ) -> Result<Self> {
        if classes == 0 || !rows.is_multiple_of(classes) || !(rows / classes).is_multiple_of(TILE) {
            return Err(Error::Kernel(KernelError::NotMultiple {
                what: "rows per class",
                value: rows.checked_div(classes).unwrap_or(0),
                multiple: TILE,
            }));
        }
        if k == 0 {
            return Err(Error::Kernel(KernelError::NotMultiple {
                what: "inputs",
                value: 0,
                multiple: BLOCK,
            }));
        }
        let n = classes
            .checked_mul(k)
            .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: classes, cols: k }))?;
        expect_len("scales", n, scales.len())?;
        expect_len("zeros", n, zeros.len())?;
        if let Some(i) = scales.iter().chain(zeros).position(|v| !v.is_finite()) {
            return Err(Error::Kernel(KernelError::NonFinite { index: i % n }));
        }
        let per_class = rows / classes;
        let mean: Vec<f32> = zeros
            .chunks_exact(k)
            .map(|z| half::f16::from_f64(z.iter().map(|&z| z as f64).sum::<f64>() / k as f64).to_f32())
            .collect();
        let codes = IntWeight::from_rows(bits, rows, k, k, |r, c, s, z| {
            (s[0], z[0]) = (1.0, mean[r / per_class]);
            row(r % per_class * classes + r / per_class, c)
        })?;
        Ok(Self { codes, classes, mean, scales: scales.to_vec(), zeros: zeros.to_vec() })
    }

    /// Outputs.
    pub fn rows(&self) -> usize {
        self.codes.rows()
    }

    /// Inputs.
    pub fn k(&self) -> usize {
        self.codes.k()
    }

    /// Classes of rows.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Code width: 4 or 8.
    pub fn bits(&self) -> u32 {
        self.codes.bits()
    }

    /// Class `c`'s `m_c` (see the module docs): the mean of its zero points, rounded to `f16`.
    pub fn class_zero(&self, c: usize) -> f32 {
        self.mean[c]
    }

    /// Bytes as stored (codes, scales, zero points): what one multiply reads.
    pub fn stored_bytes(&self) -> usize {
        self.codes.stored_bytes() + 4 * (self.scales.len() + self.zeros.len())
    }

    /// The row of `codes` holding weight row `o`.
    fn code_row(&self, o: usize) -> usize {
        o % self.classes * (self.rows() / self.classes) + o / self.classes
    }

    /// The weight `[rows, k]` in `f32`.
    pub fn dequantize(&self) -> Vec<f32> {
        let k = self.k();
        let mut out = vec![0f32; self.rows() * k];
        for (o, row) in out.chunks_exact_mut(k).enumerate() {
            let c = o % self.classes;
            let codes = self.codes_of(o);
            let (s, z) = (&self.scales[c * k..][..k], &self.zeros[c * k..][..k]);
            for (((w, &q), &s), &z) in row.iter_mut().zip(&codes).zip(s).zip(z) {
                *w = (q - z) * s;
            }
        }
        out
    }

    /// Row `o`'s codes as `f32`.
    fn codes_of(&self, o: usize) -> Vec<f32> {
        let m = self.mean[o % self.classes];
        let mut row = vec![0f32; self.k()];
        self.codes.dequantize_row(self.code_row(o), &mut row);
        row.iter().map(|&v| v + m).collect() // (q - m) * 1 + m, exact for codes and f16 m
    }

    /// The bound on `|y - y_ref|` for output `o` of activation row `t` of [`multiply_columns`]
    /// on `x` (`[batch, k]`), `y_ref` the exact product with `f32` activations:
    /// `sum_blocks (d / 2) sum_k |q_ok - m|` from quantizing `u = s x`, plus `(k / 32 + 4) eps M`
    /// for `f32` rounding, `M = sum_k (|q_ok| + |m|) (|s x_k| + d / 2) + sum_k |(z - m) s x_k|`. A
    /// row or output past the shapes, or activations of another length, is a typed error.
    pub fn error_bound(&self, x: &[f32], t: usize, o: usize) -> Result<f64> {
        let k = self.k();
        let batch = x.len().checked_div(k).unwrap_or(0);
        expect_len("activations", batch * k, x.len())?;
        for (what, index, len) in [("activation row", t, batch), ("output", o, self.rows())] {
            if index >= len {
                return Err(Error::Kernel(KernelError::IndexOutOfRange { what, index, len }));
            }
        }
        let c = o % self.classes;
        let (s, z) = (&self.scales[c * k..][..k], &self.zeros[c * k..][..k]);
        let u: Vec<f32> = x[t * k..][..k].iter().zip(s).map(|(&x, &s)| x * s).collect();
        let q = super::q8::quantize_activations(&u, 1, k, Parallelism::SERIAL)?;
        let codes = self.codes_of(o);
        let mean = self.mean[c] as f64;
        let (mut bound, mut m) = (0f64, 0f64);
        for (b, &d) in q.scales.iter().enumerate() {
            let d = d as f64;
            for kk in b * BLOCK..(b + 1) * BLOCK {
                let (q, sx) = (codes[kk] as f64, s[kk] as f64 * x[t * k + kk] as f64);
                bound += d / 2.0 * (q - mean).abs();
                m += (q.abs() + mean.abs()) * (sx.abs() + d / 2.0) + ((z[kk] as f64 - mean) * sx).abs();
            }
        }
        Ok(bound + (k / BLOCK + 4) as f64 * f32::EPSILON as f64 * m)
    }
}

/// One task's buffers for [`multiply_columns`]: a class's quantized scaled activations, and
/// per token `E` and `C_c`.
#[derive(Debug, Default)]
pub(crate) struct ColumnScratch {
    q: Q8Activations,
    xe: Vec<f32>,
    c: Vec<f64>,
}

/// `y = x W^T` (`y`: `[batch, rows]`) for `x`: `[batch, k]` in `f32`, each class's scaled
/// activations quantized to `int8` per block (see the module docs). Classes split over the pool
/// as `par` allows (the same bits either way).
///
/// ```
/// use quant_kernels::matmul::q8::{multiply_columns, ColumnWeight};
/// use quant_kernels::Parallelism;
/// // 16 rows, one class: w[o, k] = (2 - 1) * 0.25 for every row and input.
/// let w = ColumnWeight::from_rows(4, 16, 32, 1, &[0.25; 32], &[1.0; 32], |_, c| Ok(c.fill(2)))?;
/// let mut y = [0f32; 16];
/// multiply_columns(&w, &[2.0; 32], 1, &mut y, Parallelism::SERIAL)?;
/// assert_eq!(y, [16.0; 16]); // 32 * 0.25 * 2
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn multiply_columns(
    w: &ColumnWeight,
    x: &[f32],
    batch: usize,
    y: &mut [f32],
    par: Parallelism,
) -> Result<()> {
    multiply_columns_with(w, x, batch, y, par, &mut Vec::new(), &mut Vec::new())
}

/// [`multiply_columns`] with buffers kept by the caller (grown, never shrunk).
pub(crate) fn multiply_columns_with(
    w: &ColumnWeight,
    x: &[f32],
    batch: usize,
    y: &mut [f32],
    par: Parallelism,
    out: &mut Vec<f32>,
    slots: &mut Vec<ColumnScratch>,
) -> Result<()> {
    let (rows, k, classes) = (w.rows(), w.k(), w.classes);
    let overflow = |cols| Error::Kernel(KernelError::ShapeOverflow { rows: batch, cols });
    expect_len("x", batch.checked_mul(k).ok_or(overflow(k))?, x.len())?;
    let n = batch.checked_mul(rows).ok_or(overflow(rows))?;
    expect_len("output", n, y.len())?;
    if n == 0 {
        return Ok(());
    }
    let per_class = rows / classes;
    let class_out = per_class * batch; // a class's outputs, `[tiles, batch, TILE]`
    if out.len() < n {
        out.resize(n, 0.0);
    }
    let out = &mut out[..n];
    let per = classes.div_ceil(par.tasks(rows.saturating_mul(k) * batch.min(8)).max(1)).max(1);
    let chunks = classes.div_ceil(per);
    if slots.len() < chunks {
        slots.resize_with(chunks, ColumnScratch::default);
    }
    let dot = Dot::choose(par);
    // Within a task everything is serial: the classes are the parallelism.
    let serial = Parallelism::SERIAL.max_isa(par.isa());
    let job = |(i, (o, slot)): (usize, (&mut [f32], &mut ColumnScratch))| -> Result<()> {
        for (j, o) in o.chunks_mut(class_out).enumerate() {
            let c = i * per + j;
            let (s, z) = (&w.scales[c * k..][..k], &w.zeros[c * k..][..k]);
            slot.q.reset(batch, k);
            slot.c.clear();
            slot.c.resize(batch, 0.0);
            let Q8Activations { codes, scales, sums, .. } = &mut slot.q;
            let scaled = Scaled { s, z, m: w.mean[c], c: &mut slot.c };
            if let Some(index) = quantize_blocks(serial, x, QuantOut { codes, scales, sums }, Some(scaled)) {
                return Err(Error::Kernel(KernelError::NonFinite { index }));
            }
            w.codes.multiply_tiles(dot, par, &slot.q, &mut slot.xe, c * per_class / TILE, o);
            for (t, &ct) in slot.c.iter().enumerate() {
                let ct = ct as f32;
                for tile in o.chunks_exact_mut(batch * TILE) {
                    tile[t * TILE..][..TILE].iter_mut().for_each(|v| *v -= ct);
                }
            }
        }
        Ok(())
    };
    let mut work = out.chunks_mut(per * class_out).zip(slots.iter_mut()).enumerate();
    if chunks > 1 {
        work.par_bridge().try_for_each(job)?;
    } else {
        work.try_for_each(job)?;
    }
    // Class-major tiles to `[batch, rows]`, whole tokens' rows per task.
    let out = &*out;
    crate::par::row_chunks(y, rows, par, |t0, ys| {
        for (t, yt) in ys.chunks_mut(rows).enumerate() {
            for (o, v) in yt.iter_mut().enumerate() {
                let r = w.code_row(o);
                *v = out[(r / TILE * batch + t0 + t) * TILE + r % TILE];
            }
        }
    });
    Ok(())
}
