//! The simple methods: int8 symmetric (per tensor or per output channel), int4 asymmetric
//! group-wise, SmoothQuant's smoothing factors, and int4 packing with sign extension.
//!
//! Weights are `[rows = out, cols = in]` row-major `f32` (the `nn.Linear` orientation). Every
//! quantizer rejects non-finite input with [`KernelError::NonFinite`] and bounds its error:
//!
//! | method | storage | error bound per weight |
//! |---|---|---|
//! | int8 symmetric | `i8` codes, one `f32` scale per tensor or row: `max|w| / 127` | `scale / 2` |
//! | int4 asymmetric, group `g` | two codes per byte, `f32` scale + `u8` zero per `g` consecutive weights of a row | `scale / 2` |
//!
//! (up to `f32` rounding of `w / scale` and of the dequantized product, a few ulps; the tests
//! assert the bound with that slack, derived, not tuned). The int4 range always includes 0, so a
//! constant group is exact and an all-zero group has scale 0.
//!
//! Dequantization has a naive reference and a fast path (run-time SIMD dispatch, rayon over
//! rows) that give the same bits.

pub(crate) mod scheme;
pub(crate) mod tile;

use crate::elem::Elem;
use crate::error::{Error, FormatError, KernelError, Result, expect_len};

use crate::lanes::{self, Kernel};
use crate::par::{self, Parallelism};

/// Where int8 scales apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole tensor.
    PerTensor,
    /// One scale per output channel (row).
    PerChannel,
}

/// The first non-finite weight of `w` (`[rows, cols]`), searched a block of rows per task.
fn check_finite_rows(w: &[f32], cols: usize, par: Parallelism) -> Result<()> {
    let rows = w.len().checked_div(cols).unwrap_or(0);
    let first = par::map_rows(rows, cols, par, |r| {
        let off = r.start * cols;
        w[off..r.end * cols].iter().position(|x| !x.is_finite()).map(|i| off + i)
    });
    match first.into_iter().flatten().next() {
        Some(index) => Err(Error::Kernel(KernelError::NonFinite { index })),
        None => Ok(()),
    }
}

fn check_finite(w: &[f32]) -> Result<()> {
    match w.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(Error::Kernel(KernelError::NonFinite { index })),
        None => Ok(()),
    }
}

fn check_shape(len: usize, rows: usize, cols: usize) -> Result<()> {
    let n = rows.checked_mul(cols).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols }))?;
    expect_len("weight", n, len)
}

/// An int8 symmetric tensor: `w ≈ q * scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Tensor {
    /// Rows (outputs).
    pub rows: usize,
    /// Columns (inputs).
    pub cols: usize,
    /// Scale granularity.
    pub granularity: Granularity,
    /// Codes in `[-127, 127]`, `[rows, cols]`.
    pub q: Vec<i8>,
    /// One scale, or one per row.
    pub scales: Vec<f32>,
}

/// Quantize to int8 symmetric: `scale = max|w| / 127` over the tensor or each row (0 for an
/// all-zero one), `q = round_ties_even(w / scale)`; blocks of rows on rayon's pool when `par`
/// allows (the same bits either way).
///
/// ```
/// use quant_kernels::intx::{self, Granularity};
/// use quant_kernels::Parallelism;
/// let w = [1.0, -0.5, 0.25, 0.0, 0.0, 0.0];
/// let t = intx::quantize_int8(&w, 2, 3, Granularity::PerChannel, Parallelism::RAYON)?;
/// assert_eq!(t.q, [127, -64, 32, 0, 0, 0]);
/// assert_eq!(t.scales, [1.0 / 127.0, 0.0]);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn quantize_int8(
    w: &[f32],
    rows: usize,
    cols: usize,
    granularity: Granularity,
    par: Parallelism,
) -> Result<Int8Tensor> {
    check_shape(w.len(), rows, cols)?;
    check_finite_rows(w, cols, par)?;
    let amax = |xs: &[f32]| xs.iter().fold(0f32, |m, x| m.max(x.abs()));
    // max is exact and order-free: the split does not change the scales.
    let scales: Vec<f32> = match granularity {
        Granularity::PerTensor => {
            let parts = par::map_rows(rows, cols, par, |r| amax(&w[r.start * cols..r.end * cols]));
            vec![parts.into_iter().fold(0f32, f32::max) / 127.0]
        }
        Granularity::PerChannel => par::map_rows(rows, cols, par, |r| {
            r.map(|row| amax(&w[row * cols..(row + 1) * cols]) / 127.0).collect::<Vec<_>>()
        })
        .concat(),
    };
    let mut q = vec![0i8; w.len()];
    par::row_chunks(&mut q, cols, par, |row0, q| {
        for (r, q) in q.chunks_exact_mut(cols).enumerate() {
            let row = row0 + r;
            let s = if granularity == Granularity::PerTensor { scales[0] } else { scales[row] };
            for (q, &x) in q.iter_mut().zip(&w[row * cols..(row + 1) * cols]) {
                *q = if s == 0.0 { 0 } else { (x / s).round_ties_even().clamp(-127.0, 127.0) as i8 };
            }
        }
    });
    Ok(Int8Tensor { rows, cols, granularity, q, scales })
}

impl Int8Tensor {
    pub(crate) fn check(&self, out: usize) -> Result<()> {
        check_shape(self.q.len(), self.rows, self.cols)?;
        let n_scales = if self.granularity == Granularity::PerTensor { 1 } else { self.rows };
        expect_len("scales", n_scales, self.scales.len())?;
        expect_len("out", self.q.len(), out)
    }

    /// Dequantize into `out` (`q * scale`, rounded once to `O`), SIMD + threads as `par` allows.
    pub fn dequantize_into<O: Elem>(&self, out: &mut [O], par: Parallelism) -> Result<()> {
        self.check(out.len())?;
        let (cols, per_tensor) = (self.cols, self.granularity == Granularity::PerTensor);
        par::row_chunks(out, cols, par, |row0, out| {
            lanes::dispatch(
                par,
                ScaleRows { q: &self.q[row0 * cols..], scales: &self.scales, per_tensor, row0, cols, out },
            )
        });
        Ok(())
    }

    /// The naive oracle of [`Int8Tensor::dequantize_into`].
    pub fn dequantize_reference_into<O: Elem>(&self, out: &mut [O]) -> Result<()> {
        self.check(out.len())?;
        for (i, o) in out.iter_mut().enumerate() {
            let s = if self.granularity == Granularity::PerTensor {
                self.scales[0]
            } else {
                self.scales[i / self.cols]
            };
            *o = O::from_f32(self.q[i] as f32 * s);
        }
        Ok(())
    }
}

struct ScaleRows<'a, O> {
    q: &'a [i8],
    scales: &'a [f32],
    per_tensor: bool,
    row0: usize,
    cols: usize,
    out: &'a mut [O],
}

impl<O: Elem> Kernel for ScaleRows<'_, O> {
    type Output = ();
    #[inline(always)]
    fn run(self, _simd: crate::lanes::Simd) {
        let Self { q, scales, per_tensor, row0, cols, out } = self;
        let mut buf = [0f32; 256];
        for (r, dst) in out.chunks_exact_mut(cols).enumerate() {
            let s = if per_tensor { scales[0] } else { scales[row0 + r] };
            let src = &q[r * cols..(r + 1) * cols];
            for (d, c) in dst.chunks_mut(256).zip(src.chunks(256)) {
                let b = &mut buf[..c.len()];
                for (x, &v) in b.iter_mut().zip(c) {
                    *x = v as f32 * s;
                }
                O::slice_from_f32(b, d);
            }
        }
    }
}

/// An int4 asymmetric group-wise tensor: `w ≈ (q - zero) * scale` per group of `group`
/// consecutive weights of a row; codes packed two per byte, even index in the low nibble.
#[derive(Debug, Clone, PartialEq)]
pub struct Int4Tensor {
    /// Rows (outputs).
    pub rows: usize,
    /// Columns (inputs); a multiple of `group`.
    pub cols: usize,
    /// Weights per group (even).
    pub group: usize,
    /// `ceil(rows * cols / 2)` bytes of codes in `0..16`.
    pub packed: Vec<u8>,
    /// One scale per group (`rows * cols / group`).
    pub scales: Vec<f32>,
    /// One zero point in `0..16` per group.
    pub zeros: Vec<u8>,
}

/// Quantize to int4 asymmetric, group-wise along each row: the group's range `[min(lo, 0),
/// max(hi, 0)]` maps to codes 0..=15, `scale = range / 15`, `zero = round(-lo / scale)`,
/// `q = clamp(round(w / scale) + zero, 0, 15)`; codes packed as they are made (no unpacked
/// copy), blocks of rows on rayon's pool when `par` allows (the same bits either way).
///
/// ```
/// use quant_kernels::intx;
/// use quant_kernels::Parallelism;
/// let t = intx::quantize_int4(&[0.0, 1.5, 3.0, -1.5], 1, 4, 4, Parallelism::SERIAL)?;
/// assert_eq!((t.scales[0], t.zeros[0]), (0.3, 5));
/// assert_eq!(intx::unpack_int4(&t.packed, 4)?, [5, 10, 15, 0]);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn quantize_int4(
    w: &[f32],
    rows: usize,
    cols: usize,
    group: usize,
    par: Parallelism,
) -> Result<Int4Tensor> {
    check_shape(w.len(), rows, cols)?;
    if group == 0 || !group.is_multiple_of(2) || !cols.is_multiple_of(group) {
        return Err(Error::Kernel(KernelError::GroupSize { group, len: cols }));
    }
    check_finite_rows(w, cols, par)?;
    // Rows hold whole groups of an even size: a row's codes are whole bytes.
    let mut packed = vec![0u8; w.len() / 2];
    let mut params = vec![(0f32, 0u8); w.len() / group];
    par::row_chunks2(&mut packed, cols / 2, &mut params, cols / group, par, |row0, packed, params| {
        let w = &w[row0 * cols..row0 * cols + packed.len() * 2];
        for ((g, bytes), p) in w.chunks_exact(group).zip(packed.chunks_exact_mut(group / 2)).zip(params) {
            let lo = g.iter().fold(0f32, |m, &x| m.min(x));
            let hi = g.iter().fold(0f32, |m, &x| m.max(x));
            let scale = (hi - lo) / 15.0;
            let zero = if scale == 0.0 { 0.0 } else { (-lo / scale).round_ties_even().clamp(0.0, 15.0) };
            let code = |x: f32| {
                let q =
                    if scale == 0.0 { zero } else { ((x / scale).round_ties_even() + zero).clamp(0.0, 15.0) };
                q as u8
            };
            for (b, pair) in bytes.iter_mut().zip(g.chunks_exact(2)) {
                *b = code(pair[0]) | (code(pair[1]) << 4);
            }
            *p = (scale, zero as u8);
        }
    });
    let (scales, zeros) = params.into_iter().unzip();
    Ok(Int4Tensor { rows, cols, group, packed, scales, zeros })
}

impl Int4Tensor {
    pub(crate) fn check(&self, out: usize) -> Result<()> {
        let n = self
            .rows
            .checked_mul(self.cols)
            .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: self.rows, cols: self.cols }))?;
        if self.group == 0 || !self.group.is_multiple_of(2) || !self.cols.is_multiple_of(self.group) {
            return Err(Error::Kernel(KernelError::GroupSize { group: self.group, len: self.cols }));
        }
        expect_len("packed", n.div_ceil(2), self.packed.len())?;
        expect_len("scales", n / self.group, self.scales.len())?;
        expect_len("zeros", n / self.group, self.zeros.len())?;
        expect_len("out", n, out)
    }

    /// Dequantize into `out`, SIMD + threads as `par` allows.
    pub fn dequantize_into<O: Elem>(&self, out: &mut [O], par: Parallelism) -> Result<()> {
        self.check(out.len())?;
        let (cols, group) = (self.cols, self.group);
        par::row_chunks(out, cols, par, |row0, out| {
            let first = row0 * cols;
            lanes::dispatch(
                par,
                Int4Rows {
                    packed: &self.packed[first / 2..],
                    scales: &self.scales[first / group..],
                    zeros: &self.zeros[first / group..],
                    group,
                    out,
                },
            )
        });
        Ok(())
    }

    /// The naive oracle of [`Int4Tensor::dequantize_into`].
    pub fn dequantize_reference_into<O: Elem>(&self, out: &mut [O]) -> Result<()> {
        self.check(out.len())?;
        for (i, o) in out.iter_mut().enumerate() {
            let q = (self.packed[i / 2] >> (4 * (i % 2))) & 15;
            let g = i / self.group;
            *o = O::from_f32((q as f32 - self.zeros[g] as f32) * self.scales[g]);
        }
        Ok(())
    }
}

struct Int4Rows<'a, O> {
    packed: &'a [u8],
    scales: &'a [f32],
    zeros: &'a [u8],
    group: usize,
    out: &'a mut [O],
}

impl<O: Elem> Kernel for Int4Rows<'_, O> {
    type Output = ();
    #[inline(always)]
    fn run(self, _simd: crate::lanes::Simd) {
        let Self { packed, scales, zeros, group, out } = self;
        // Groups are even-sized and rows whole groups, so every group starts on a byte.
        let mut buf = vec![0f32; group];
        for (g, dst) in out.chunks_exact_mut(group).enumerate() {
            let (z, s) = (zeros[g] as f32, scales[g]);
            let bytes = &packed[g * group / 2..(g + 1) * group / 2];
            for (pair, &b) in buf.chunks_exact_mut(2).zip(bytes) {
                pair[0] = ((b & 15) as f32 - z) * s;
                pair[1] = ((b >> 4) as f32 - z) * s;
            }
            O::slice_from_f32(&buf, dst);
        }
    }
}

/// Pack 4-bit codes (`0..16`) two per byte, even index in the low nibble (an odd count leaves
/// the last high nibble 0).
pub fn pack_int4(codes: &[u8]) -> Result<Vec<u8>> {
    if let Some(index) = codes.iter().position(|&c| c > 15) {
        return Err(Error::Kernel(KernelError::CodeOutOfRange { index, code: codes[index], bits: 4 }));
    }
    Ok(codes.chunks(2).map(|p| p[0] | p.get(1).map_or(0, |h| h << 4)).collect())
}

/// The first `out.len()` 4-bit codes of `packed` (see [`pack_int4`]) into `out`;
/// [`KernelError::LengthMismatch`] when `packed` holds fewer (`out.len()` needs `ceil(out.len() / 2)`
/// bytes; more are fine).
///
/// ```
/// use quant_kernels::intx;
/// let mut codes = [0u8; 3];
/// intx::unpack_int4_into(&[0x21, 0x03], &mut codes)?;
/// assert_eq!(codes, [1, 2, 3]);
/// assert!(intx::unpack_int4_into(&[0x21], &mut codes).is_err()); // 3 codes need 2 bytes
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn unpack_int4_into(packed: &[u8], out: &mut [u8]) -> Result<()> {
    int4_bytes_hold(packed, out.len())?;
    fill_int4(packed, out);
    Ok(())
}

/// The first `n` 4-bit codes of `packed`: [`unpack_int4_into`] into a new buffer (checked
/// before it is allocated).
pub fn unpack_int4(packed: &[u8], n: usize) -> Result<Vec<u8>> {
    int4_bytes_hold(packed, n)?;
    let mut out = vec![0u8; n];
    fill_int4(packed, &mut out);
    Ok(out)
}

/// `out[i]` = code `i` of `packed`; the caller checked that `packed` holds `out.len()` codes.
fn fill_int4(packed: &[u8], out: &mut [u8]) {
    for (pair, &byte) in out.chunks_mut(2).zip(packed) {
        pair[0] = byte & 15;
        if let Some(high) = pair.get_mut(1) {
            *high = byte >> 4;
        }
    }
}

fn int4_bytes_hold(packed: &[u8], n: usize) -> Result<()> {
    let need = n.div_ceil(2);
    if packed.len() < need {
        return Err(Error::Kernel(KernelError::LengthMismatch {
            what: "packed int4 bytes",
            expected: need,
            got: packed.len(),
        }));
    }
    Ok(())
}

/// Pack signed int4 values (`-8..=7`) as two's-complement nibbles, two per byte.
///
/// ```
/// use quant_kernels::intx;
/// let p = intx::pack_int4_signed(&[-8, 7, -1, 0])?;
/// assert_eq!(p, [0x78, 0x0f]);
/// assert_eq!(intx::unpack_int4_signed(&p, 4)?, [-8, 7, -1, 0]);
/// assert!(intx::pack_int4_signed(&[8]).is_err());
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn pack_int4_signed(values: &[i8]) -> Result<Vec<u8>> {
    if let Some(index) = values.iter().position(|v| !(-8..=7).contains(v)) {
        return Err(Error::Kernel(KernelError::CodeOutOfRange { index, code: values[index] as u8, bits: 4 }));
    }
    pack_int4(&values.iter().map(|&v| (v as u8) & 15).collect::<Vec<_>>())
}

/// The first `n` signed int4 values of `packed`, sign-extended; [`KernelError::LengthMismatch`] when
/// `packed` holds fewer than `n`.
pub fn unpack_int4_signed(packed: &[u8], n: usize) -> Result<Vec<i8>> {
    Ok(unpack_int4(packed, n)?.into_iter().map(|c| ((c << 4) as i8) >> 4).collect())
}

/// SmoothQuant's per-input-channel factors `s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`, from
/// the activations' per-channel maxima `act_max` (`[cols]`) and the weight (`[rows, cols]`).
/// Dividing activations by `s` and multiplying weight columns by `s` leaves `X W^T` unchanged
/// and moves quantization difficulty from activations to weights. A channel whose activation or
/// weight maximum is 0 gets `s_j = 1`. `alpha` must be in `[0, 1]`.
///
/// ```
/// use quant_kernels::intx;
/// let s = intx::smoothquant_scales(&[4.0, 0.0], &[1.0, 2.0, -1.0, 0.5], 2, 2, 0.5)?;
/// assert_eq!(s, [2.0, 1.0]); // sqrt(4) / sqrt(1); channel 1 has no activation range
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn smoothquant_scales(
    act_max: &[f32],
    w: &[f32],
    rows: usize,
    cols: usize,
    alpha: f32,
) -> Result<Vec<f32>> {
    check_shape(w.len(), rows, cols)?;
    expect_len("act_max", cols, act_max.len())?;
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::Format(FormatError::Config {
            field: "alpha".into(),
            reason: format!("{alpha} is not in [0, 1]"),
        }));
    }
    check_finite(act_max)?;
    check_finite(w)?;
    let mut wmax = vec![0f32; cols];
    for row in w.chunks_exact(cols.max(1)) {
        for (m, x) in wmax.iter_mut().zip(row) {
            *m = m.max(x.abs());
        }
    }
    Ok(act_max
        .iter()
        .zip(&wmax)
        .map(|(&a, &m)| {
            let a = a.abs();
            if a == 0.0 || m == 0.0 { 1.0 } else { a.powf(alpha) / m.powf(1.0 - alpha) }
        })
        .collect())
}

/// Multiply each weight column `j` by `scales[j]` in place (the weight side of SmoothQuant).
pub fn smooth_weight(w: &mut [f32], rows: usize, cols: usize, scales: &[f32]) -> Result<()> {
    check_shape(w.len(), rows, cols)?;
    expect_len("scales", cols, scales.len())?;
    for row in w.chunks_exact_mut(cols.max(1)) {
        for (x, s) in row.iter_mut().zip(scales) {
            *x *= s;
        }
    }
    Ok(())
}
