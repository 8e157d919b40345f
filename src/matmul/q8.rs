//! Integer dot products on quantized activations, the core of the quantized-activation
//! multiply: activations quantized to `int8` once per call in blocks of [`BLOCK`] (an `f32`
//! scale `d = max|x| / 127` and the block's code sum per block), weights as 4-bit codes with a
//! float scale `s` and zero point `z` per group of inputs, and per output
//!
//! `sum_k (q_k - z) s x_k ~= s * sum_blocks d * (sum_k q_k xq_k - z * sum_k xq_k)`,
//!
//! where the inner sums are exact `i32` arithmetic and the scales apply once per block.
//!
//! This is the first step of that path: the activation quantizer, a 4-bit weight layout
//! ([`Q4Weight`]: per block of 32 inputs, 16 bytes, byte `j` holding inputs `j` (low nibble)
//! and `j + 16` (high)) and a GEMV over it: AVX-512 VNNI (`vpdpbusd`) where the CPU has it and
//! the call's [`Parallelism`] allows x86-64-v4, else portable code compiled under the best
//! instruction set ([`kernel`] names the one a call uses). It is not yet a path of
//! [`super::QuantLinear`] (the exact `f32` path is the only one there); no AMX yet.
//!
//! Error: with `d = max|x| / 127` per block (stored in `f32`, no clamping), every activation is
//! within `d / 2` of `xq * d`, so an output differs from the `f32`-activation result by at most
//! `sum_blocks (d / 2) * sum_k |w_k|` (`w_k = (q_k - z) s`), plus `f32` rounding of the
//! per-block terms; [`error_bound`] computes it.

use super::q8_vnni::{self, Vnni};
use crate::error::{Error, KernelError, Result, expect_len};
use crate::par::{Isa, Parallelism};
use rayon::prelude::*;

/// Activations per quantization block (and the weight layout's block along the inputs).
pub const BLOCK: usize = 32;

/// Activations quantized per block of [`BLOCK`]: `x ~= codes * scales[block]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Q8Activations {
    /// Rows (tokens).
    pub batch: usize,
    /// Values per row (a multiple of [`BLOCK`]).
    pub k: usize,
    /// `batch * k` codes in `-127..=127`.
    pub codes: Vec<i8>,
    /// `batch * k / BLOCK` scales `max|x| / 127` (0 for an all-zero block).
    pub scales: Vec<f32>,
    /// `batch * k / BLOCK` sums of the block's codes.
    pub sums: Vec<i32>,
}

fn not_multiple(what: &'static str, value: usize, multiple: usize) -> Error {
    Error::Kernel(KernelError::NotMultiple { what, value, multiple })
}

/// Quantize `x` (`[batch, k]`, `k` a multiple of [`BLOCK`]) to `int8` per block: `d = max|x| /
/// 127`, `q = round(x / d)` (ties to even), so `|x - q d| <= d / 2`.
///
/// ```
/// use quant_kernels::matmul::q8::quantize_activations;
/// let mut x = vec![0.0f32; 32];
/// x[0] = 1.27;
/// x[1] = -0.5;
/// let q = quantize_activations(&x, 1, 32)?;
/// assert_eq!((q.codes[0], q.codes[1], q.scales[0], q.sums[0]), (127, -50, 0.01, 77));
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn quantize_activations(x: &[f32], batch: usize, k: usize) -> Result<Q8Activations> {
    if !k.is_multiple_of(BLOCK) {
        return Err(not_multiple("activation length", k, BLOCK));
    }
    let n = batch.checked_mul(k).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: batch, cols: k }))?;
    expect_len("activations", n, x.len())?;
    if let Some(index) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::Kernel(KernelError::NonFinite { index }));
    }
    let blocks = n / BLOCK;
    let (mut codes, mut scales, mut sums) = (vec![0i8; n], vec![0f32; blocks], vec![0i32; blocks]);
    for (((xb, qb), d), sum) in
        x.chunks_exact(BLOCK).zip(codes.chunks_exact_mut(BLOCK)).zip(&mut scales).zip(&mut sums)
    {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        if amax == 0.0 {
            continue;
        }
        *d = amax / 127.0;
        let inv = 127.0 / amax;
        let mut s = 0i32;
        for (q, &v) in qb.iter_mut().zip(xb) {
            // |v * inv| <= 127 up to one rounding; the clamp only catches that rounding.
            *q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
            s += *q as i32;
        }
        *sum = s;
    }
    Ok(Q8Activations { batch, k, codes, scales, sums })
}

/// 4-bit weights `[rows, k]` for the integer path: per row and block of 32 inputs, 16 bytes
/// (byte `j`: input `j` in the low nibble, input `j + 16` in the high one), and per row and
/// group of `group` inputs (a multiple of [`BLOCK`]) a float scale and zero point:
/// `w = (q - z) * s`.
#[derive(Debug, Clone, PartialEq)]
pub struct Q4Weight {
    rows: usize,
    k: usize,
    group: usize,
    packed: Vec<u8>,
    scales: Vec<f32>,
    zeros: Vec<f32>,
}

impl Q4Weight {
    /// From unpacked codes (`rows * k`, each `<= 15`, row-major) and `rows * k / group` scales
    /// and zero points (row-major `[rows, groups]`). `group` must be a positive multiple of
    /// [`BLOCK`] dividing `k`.
    pub fn from_codes(
        codes: &[u8],
        scales: &[f32],
        zeros: &[f32],
        rows: usize,
        k: usize,
        group: usize,
    ) -> Result<Self> {
        if group == 0 || !group.is_multiple_of(BLOCK) {
            return Err(not_multiple("group size", group, BLOCK));
        }
        if !k.is_multiple_of(group) {
            return Err(not_multiple("inputs", k, group));
        }
        let n = rows.checked_mul(k).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols: k }))?;
        expect_len("codes", n, codes.len())?;
        expect_len("scales", n / group, scales.len())?;
        expect_len("zeros", n / group, zeros.len())?;
        if let Some(index) = codes.iter().position(|&c| c > 15) {
            return Err(Error::Kernel(KernelError::CodeOutOfRange { index, code: codes[index], bits: 4 }));
        }
        let mut packed = vec![0u8; n / 2];
        for (p, c) in packed.chunks_exact_mut(BLOCK / 2).zip(codes.chunks_exact(BLOCK)) {
            for j in 0..BLOCK / 2 {
                p[j] = c[j] | (c[j + BLOCK / 2] << 4);
            }
        }
        Ok(Self { rows, k, group, packed, scales: scales.to_vec(), zeros: zeros.to_vec() })
    }

    /// Outputs.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes as stored (codes, scales and zeros).
    pub fn stored_bytes(&self) -> usize {
        self.packed.len() + 4 * (self.scales.len() + self.zeros.len())
    }

    /// The weight `[rows, k]` in `f32`: `(q - z) * s`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.k];
        for (r, row) in out.chunks_exact_mut(self.k.max(1)).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// Row `r` (`< rows`) into `out` (`k` values).
    fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let groups = self.k / self.group;
        let packed = &self.packed[r * self.k / 2..(r + 1) * self.k / 2];
        for (b, (vals, p)) in out.chunks_exact_mut(BLOCK).zip(packed.chunks_exact(BLOCK / 2)).enumerate() {
            let g = r * groups + b * BLOCK / self.group;
            let (s, z) = (self.scales[g], self.zeros[g]);
            for j in 0..BLOCK / 2 {
                vals[j] = ((p[j] & 15) as f32 - z) * s;
                vals[j + BLOCK / 2] = ((p[j] >> 4) as f32 - z) * s;
            }
        }
    }
}

/// The bound on `|y - y_f32|` for output `r` of activation row `t` of [`gemv_q4_q8`] that comes
/// from quantizing the activations: `sum_blocks (d / 2) * sum_k |w_k|` (exact `f64`). A row or
/// output past the shapes, or activations of another length, is a typed error.
pub fn error_bound(w: &Q4Weight, x: &Q8Activations, t: usize, r: usize) -> Result<f64> {
    expect_len("activation length", w.k, x.k)?;
    for (what, index, len) in [("activation row", t, x.batch), ("output", r, w.rows)] {
        if index >= len {
            return Err(Error::Kernel(KernelError::IndexOutOfRange { what, index, len }));
        }
    }
    let mut row = vec![0f32; w.k];
    w.dequantize_row(r, &mut row);
    let d = &x.scales[t * (x.k / BLOCK)..(t + 1) * (x.k / BLOCK)];
    Ok(row
        .chunks_exact(BLOCK)
        .zip(d)
        .map(|(wb, &d)| d as f64 / 2.0 * wb.iter().map(|v| v.abs() as f64).sum::<f64>())
        .sum())
}

/// The kernel [`gemv_q4_q8`] runs for inputs of length `k` under `par`: `"avx512-vnni"` (the
/// CPU has AVX-512 VNNI, `par` allows x86-64-v4 and `k` is a multiple of 64) or `"portable"`.
pub fn kernel(k: usize, par: Parallelism) -> &'static str {
    if vnni(k, par).is_some() { "avx512-vnni" } else { "portable" }
}

fn vnni(k: usize, par: Parallelism) -> Option<Vnni> {
    (par.isa() == Isa::X86V4Avx512 && k.is_multiple_of(2 * BLOCK)).then(Vnni::detect).flatten()
}

/// `y = W x` (`y`: `[batch, rows]`) from 4-bit weights and `int8` activations: per block an
/// exact `i32` dot product of codes, then `d * (dot - z * sum)` per block and `s *` per group
/// in `f32` ([`kernel`]: the portable code sums in input order; the VNNI one in 16 lanes, then
/// across them). Outputs split over the pool as `par` allows (the same bits either way).
pub fn gemv_q4_q8(w: &Q4Weight, x: &Q8Activations, y: &mut [f32], par: Parallelism) -> Result<()> {
    expect_len("activation length", w.k, x.k)?;
    let n = x
        .batch
        .checked_mul(w.rows)
        .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: x.batch, cols: w.rows }))?;
    expect_len("output", n, y.len())?;
    if w.rows == 0 {
        return Ok(());
    }
    let per = w.rows.div_ceil(par.tasks(w.rows.saturating_mul(w.k) / 8).max(1)).max(1);
    let token = vnni(w.k, par);
    let blocks = w.k / BLOCK;
    for (t, yt) in y.chunks_exact_mut(w.rows).enumerate() {
        let (xd, xs) = (&x.scales[t * blocks..(t + 1) * blocks], &x.sums[t * blocks..(t + 1) * blocks]);
        // Row-independent factors of the VNNI kernel: the blocks' scales by lane, and per
        // group the zero point's factor `sum_b d_b * sum_b`.
        let (pair_scales, group_sums): (Vec<[f32; 16]>, Vec<f32>) = match token {
            Some(_) => (
                xd.chunks_exact(2)
                    .map(|d| std::array::from_fn(|l| if l < 8 { d[0] } else { d[1] }))
                    .collect(),
                xd.chunks_exact(w.group / BLOCK)
                    .zip(xs.chunks_exact(w.group / BLOCK))
                    .map(|(d, s)| d.iter().zip(s).map(|(&d, &s)| d * s as f32).sum())
                    .collect(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let job = |(c, ys): (usize, &mut [f32])| match token {
            Some(token) => {
                let args = q8_vnni::RowsArgs {
                    packed: &w.packed,
                    k: w.k,
                    group: w.group,
                    scales: &w.scales,
                    zeros: &w.zeros,
                    xq: &x.codes[t * w.k..(t + 1) * w.k],
                    pair_scales: &pair_scales,
                    group_sums: &group_sums,
                    r0: c * per,
                };
                q8_vnni::rows(token, &args, ys)
            }
            None => crate::lanes::dispatch(par, Rows { w, x, t, r0: c * per, y: ys }),
        };
        if per < w.rows {
            yt.par_chunks_mut(per).enumerate().for_each(job);
        } else {
            job((0, yt));
        }
    }
    Ok(())
}

/// Outputs `r0..r0 + y.len()` of activation row `t`.
struct Rows<'a> {
    w: &'a Q4Weight,
    x: &'a Q8Activations,
    t: usize,
    r0: usize,
    y: &'a mut [f32],
}

impl crate::lanes::Kernel for Rows<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self, _simd: crate::lanes::Simd) {
        let Self { w, x, t, r0, y } = self;
        let blocks = w.k / BLOCK;
        let per_group = w.group / BLOCK;
        let xq = &x.codes[t * w.k..(t + 1) * w.k];
        let (xd, xs) = (&x.scales[t * blocks..(t + 1) * blocks], &x.sums[t * blocks..(t + 1) * blocks]);
        for (i, out) in y.iter_mut().enumerate() {
            let r = r0 + i;
            let packed = &w.packed[r * w.k / 2..(r + 1) * w.k / 2];
            let groups = w.k / w.group;
            let (s, z) = (&w.scales[r * groups..(r + 1) * groups], &w.zeros[r * groups..(r + 1) * groups]);
            let mut acc = 0f32;
            for g in 0..groups {
                let mut part = 0f32;
                for b in g * per_group..(g + 1) * per_group {
                    let p = &packed[b * BLOCK / 2..(b + 1) * BLOCK / 2];
                    let q = &xq[b * BLOCK..(b + 1) * BLOCK];
                    // Codes unpacked to one byte each, then a 32-wide widening dot product
                    // the compiler vectorizes (16-bit products, 32-bit sums).
                    let mut c = [0u8; BLOCK];
                    for j in 0..BLOCK / 2 {
                        c[j] = p[j] & 15;
                        c[j + BLOCK / 2] = p[j] >> 4;
                    }
                    let dot: i32 = c.iter().zip(q).map(|(&a, &b)| (a as i16 * b as i16) as i32).sum();
                    part += xd[b] * (dot as f32 - z[g] * xs[b] as f32);
                }
                acc += s[g] * part;
            }
            *out = acc;
        }
    }
}
