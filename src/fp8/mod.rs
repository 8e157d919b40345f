//! FP8: the E4M3 ("fn": no infinities, NaN 0x7f/0xff, max 448) and E5M2 formats, decoded and
//! encoded exactly as torch 2.15 does, and weights dequantized with a per-tensor scale or
//! block-wise `weight_scale_inv` (DeepSeek-V3 / HF fine-grained FP8 / compressed-tensors).
//!
//! * Decode: every code to its exact `f32`; NaN codes to a quiet NaN carrying the sign and the
//!   code's mantissa in the top payload bits (torch's bits).
//! * Encode: round to nearest, ties to even; E4M3 saturates every finite value above 448 *and*
//!   ±inf to ±448 (torch 2.15's cast); E5M2 overflows to ±inf (values >= 61440); NaN gives 0x7f
//!   (0xff for a negative NaN); ±0 kept.
//! * Block-wise dequantization: `out[r, c] = f32(w[r, c]) * scale_inv[r / br, c / bc]`, one f32
//!   multiplication, on a ceil-divided grid (partial edge blocks use their block's scale).
//!
//! ```text
//!  weight  u8 [rows, cols]                       FP8 codes (safetensors F8_E4M3 / F8_E5M2)
//!  scale   [ceil(rows/br), ceil(cols/bc)]        f32 or bf16 (per-tensor: one value, block = shape)
//! ```

pub mod checkpoint;
mod cpu;
pub(crate) mod scheme;
pub(crate) mod tile;

pub use checkpoint::{Fp8Checkpoint, Fp8Config, Fp8Layer, Fp8LayerInfo};

use crate::elem::Elem;
use crate::error::{Error, KernelError, Result, expect_len};
use crate::par::{self, Parallelism};

/// An FP8 format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fp8Format {
    /// 4 exponent bits (bias 7), 3 mantissa bits, no infinities, NaN = 0x7f/0xff, max 448.
    E4M3,
    /// 5 exponent bits (bias 15), 2 mantissa bits, IEEE-style inf (0x7c) and NaN, max 57344.
    E5M2,
}

impl Fp8Format {
    const fn mbits(self) -> u32 {
        match self {
            Fp8Format::E4M3 => 3,
            Fp8Format::E5M2 => 2,
        }
    }
    const fn bias(self) -> i32 {
        match self {
            Fp8Format::E4M3 => 7,
            Fp8Format::E5M2 => 15,
        }
    }
    /// Largest finite value.
    pub const fn max(self) -> f32 {
        match self {
            Fp8Format::E4M3 => 448.0,
            Fp8Format::E5M2 => 57344.0,
        }
    }
    /// The exact `f32` of a code (see the module docs for NaN).
    ///
    /// ```
    /// use quant_kernels::fp8::Fp8Format::{E4M3, E5M2};
    /// assert_eq!((E4M3.decode(0x7e), E4M3.decode(0x01), E5M2.decode(0x7b)), (448.0, 0.001953125, 57344.0));
    /// assert!(E4M3.decode(0x7f).is_nan() && E5M2.decode(0xfc) == f32::NEG_INFINITY);
    /// ```
    pub fn decode(self, code: u8) -> f32 {
        let (mbits, bias) = (self.mbits(), self.bias());
        let ebits = 7 - mbits;
        let sign = ((code >> 7) as u32) << 31;
        let e = ((code >> mbits) & ((1 << ebits) - 1)) as i32;
        let m = (code & ((1 << mbits) - 1)) as u32;
        let emax = (1 << ebits) - 1;
        let special = match self {
            Fp8Format::E4M3 => e == emax && m == (1 << mbits) - 1,
            Fp8Format::E5M2 => e == emax,
        };
        if special {
            if self == Fp8Format::E5M2 && m == 0 {
                return f32::from_bits(sign | 0x7f80_0000);
            }
            return f32::from_bits(sign | 0x7fc0_0000 | (m << (23 - mbits)));
        }
        let magnitude = if e == 0 {
            m as f32 * f32::from_bits(((127 + 1 - bias - mbits as i32) as u32) << 23)
        } else {
            f32::from_bits((((e - bias + 127) as u32) << 23) | (m << (23 - mbits)))
        };
        if sign != 0 { -magnitude } else { magnitude }
    }

    /// The code of `x`, rounded to nearest even (see the module docs for overflow and NaN).
    ///
    /// ```
    /// use quant_kernels::fp8::Fp8Format::{E4M3, E5M2};
    /// assert_eq!((E4M3.encode(1.0), E4M3.encode(464.0), E4M3.encode(f32::INFINITY)), (0x38, 0x7e, 0x7e));
    /// assert_eq!((E5M2.encode(61439.99), E5M2.encode(61440.0), E5M2.encode(-0.0)), (0x7b, 0x7c, 0x80));
    /// ```
    pub fn encode(self, x: f32) -> u8 {
        let bits = x.to_bits();
        let sign = ((bits >> 31) as u8) << 7;
        let a = f32::from_bits(bits & 0x7fff_ffff);
        if a.is_nan() {
            return sign | 0x7f;
        }
        let overflow = match self {
            Fp8Format::E4M3 => sign | 0x7e,
            Fp8Format::E5M2 => sign | 0x7c,
        };
        if a.is_infinite() {
            return overflow;
        }
        let (mbits, bias) = (self.mbits() as i32, self.bias());
        let emin = 1 - bias;
        // Exponent of a (f32 subnormals are far below every FP8 subnormal).
        let e = ((a.to_bits() >> 23) as i32 - 127).max(emin);
        let step = f32::from_bits(((e - mbits + 127) as u32) << 23); // 2^(e - mbits), exact
        let q = (a / step).round_ties_even() as u32; // exact division by a power of two
        let (mut e, mut q) = (e, q);
        if q == 2 << mbits {
            // Rounded up to the next binade.
            e += 1;
            q = 1 << mbits;
        }
        let code = if q < (1 << mbits) {
            q // subnormal (e == emin)
        } else {
            (((e + bias) as u32) << mbits) | (q - (1 << mbits))
        };
        let limit = match self {
            Fp8Format::E4M3 => 0x7e,
            Fp8Format::E5M2 => 0x7b,
        };
        if code > limit { overflow } else { sign | code as u8 }
    }

    /// The 256 decoded values, indexed by code.
    pub fn table(self) -> [f32; 256] {
        std::array::from_fn(|c| self.decode(c as u8))
    }
}

/// Shape of an FP8 weight and its scale grid.
///
/// ```
/// use quant_kernels::fp8::Fp8Layout;
/// let l = Fp8Layout::block(300, 260, 128, 128).unwrap();
/// assert_eq!(l.scale_shape(), (3, 3));
/// assert_eq!(Fp8Layout::per_tensor(300, 260).unwrap().scale_shape(), (1, 1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fp8Layout {
    rows: usize,
    cols: usize,
    block_rows: usize,
    block_cols: usize,
}

impl Fp8Layout {
    /// Block-wise scales (`weight_block_size = [block_rows, block_cols]`), grid ceil-divided.
    pub fn block(rows: usize, cols: usize, block_rows: usize, block_cols: usize) -> Result<Self> {
        rows.checked_mul(cols).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols }))?;
        for b in [block_rows, block_cols] {
            if b == 0 {
                return Err(Error::Kernel(KernelError::GroupSize { group: 0, len: rows.max(cols) }));
            }
        }
        Ok(Self { rows, cols, block_rows, block_cols })
    }
    /// One scale for the whole tensor (`weight_scale`).
    pub fn per_tensor(rows: usize, cols: usize) -> Result<Self> {
        Self::block(rows, cols, rows.max(1), cols.max(1))
    }
    /// Rows of the weight.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns of the weight.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// `(block_rows, block_cols)`.
    pub fn block_size(&self) -> (usize, usize) {
        (self.block_rows, self.block_cols)
    }
    /// `[ceil(rows / block_rows), ceil(cols / block_cols)]` (at least 1 x 1).
    pub fn scale_shape(&self) -> (usize, usize) {
        (self.rows.div_ceil(self.block_rows).max(1), self.cols.div_ceil(self.block_cols).max(1))
    }
}

pub(crate) fn check<S>(l: &Fp8Layout, codes: usize, scales: &[S], out: usize) -> Result<()> {
    let (sr, sc) = l.scale_shape();
    expect_len("codes", l.rows * l.cols, codes)?;
    expect_len("scales", sr * sc, scales.len())?;
    expect_len("out", l.rows * l.cols, out)
}

/// Dequantize FP8 codes: `out[r, c] = decode(codes[r, c]) * scales[r / br, c / bc]` (one f32
/// multiplication, rounded once to `O`), SIMD-dispatched and on rayon's pool when `par` allows.
///
/// ```
/// use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
/// use quant_kernels::Parallelism;
/// let l = Fp8Layout::block(2, 3, 1, 2)?;                  // scale grid [2, 2]
/// let codes = [0x38, 0x40, 0xb8, 0x38, 0x38, 0x38];        // 1, 2, -1 / 1, 1, 1
/// let w: Vec<f32> = fp8::fp8_dequantize(&codes, &[1.0f32, 10.0, 0.5, 4.0], Fp8Format::E4M3, &l,
///     Parallelism::SERIAL)?;
/// assert_eq!(w, [1.0, 2.0, -10.0, 0.5, 0.5, 4.0]);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn fp8_dequantize_into<S: Elem, O: Elem>(
    codes: &[u8],
    scales: &[S],
    format: Fp8Format,
    layout: &Fp8Layout,
    out: &mut [O],
    par: Parallelism,
) -> Result<()> {
    check(layout, codes.len(), scales, out.len())?;
    cpu::dequant(codes, format, scales, layout, out, par);
    Ok(())
}

/// The allocating form of [`fp8_dequantize_into`].
pub fn fp8_dequantize<S: Elem, O: Elem>(
    codes: &[u8],
    scales: &[S],
    format: Fp8Format,
    layout: &Fp8Layout,
    par: Parallelism,
) -> Result<Vec<O>> {
    let mut out = vec![O::default(); layout.rows * layout.cols];
    fp8_dequantize_into(codes, scales, format, layout, &mut out, par)?;
    Ok(out)
}

/// Dequantize stacked expert weights (MoE): `codes` is `[experts, rows, cols]` and `scales`
/// `[experts, scale rows, scale cols]`, each expert a [`Fp8Layout`] block-scaled matrix of its
/// own (DeepSeek-style `weight_scale_inv` of shape `[E, ceil(rows/br), ceil(cols/bc)]`).
///
/// ```
/// use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
/// use quant_kernels::Parallelism;
/// let l = Fp8Layout::block(1, 2, 1, 2)?;                   // each expert: 1x2, one scale
/// let mut out = vec![0f32; 4];
/// fp8::fp8_dequantize_experts_into(&[0x38, 0x40, 0x38, 0x40], &[1.0f32, 3.0], Fp8Format::E4M3, 2, &l,
///     &mut out, Parallelism::SERIAL)?;
/// assert_eq!(out, [1.0, 2.0, 3.0, 6.0]);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn fp8_dequantize_experts_into<S: Elem, O: Elem>(
    codes: &[u8],
    scales: &[S],
    format: Fp8Format,
    experts: usize,
    layout: &Fp8Layout,
    out: &mut [O],
    par: Parallelism,
) -> Result<()> {
    let per = layout.rows * layout.cols;
    let (sr, sc) = layout.scale_shape();
    let total = experts
        .checked_mul(per)
        .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: experts, cols: per }))?;
    expect_len("codes", total, codes.len())?;
    expect_len("scales", experts * sr * sc, scales.len())?;
    expect_len("out", total, out.len())?;
    if per == 0 {
        return Ok(());
    }
    for ((c, s), o) in
        codes.chunks_exact(per).zip(scales.chunks_exact(sr * sc)).zip(out.chunks_exact_mut(per))
    {
        fp8_dequantize_into(c, s, format, layout, o, par)?;
    }
    Ok(())
}

/// The naive oracle: the same checks, then one weight at a time with [`Fp8Format::decode`].
pub fn fp8_dequantize_reference_into<S: Elem, O: Elem>(
    codes: &[u8],
    scales: &[S],
    format: Fp8Format,
    layout: &Fp8Layout,
    out: &mut [O],
) -> Result<()> {
    check(layout, codes.len(), scales, out.len())?;
    let (_, sc) = layout.scale_shape();
    for (i, o) in out.iter_mut().enumerate() {
        let (r, c) = (i / layout.cols, i % layout.cols);
        let s = scales[(r / layout.block_rows) * sc + c / layout.block_cols].to_f32();
        *o = O::from_f32(format.decode(codes[i]) * s);
    }
    Ok(())
}

/// Quantize `f32` weights to FP8 with block-wise scales `amax(block) / max(format)` (1 for an
/// all-zero block): returns `(codes, scale_inv)` such that [`fp8_dequantize`] approximates `w`.
/// Blocks of rows on rayon's pool when `par` allows (the same bits either way).
///
/// ```
/// use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
/// use quant_kernels::Parallelism;
/// let l = Fp8Layout::block(2, 2, 1, 2)?;
/// let (codes, scales) = fp8::fp8_quantize(&[448.0, -224.0, 0.0, 0.0], Fp8Format::E4M3, &l,
///     Parallelism::SERIAL)?;
/// assert_eq!((codes, scales), (vec![0x7e, 0xf6, 0, 0], vec![1.0, 1.0]));
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn fp8_quantize(
    w: &[f32],
    format: Fp8Format,
    layout: &Fp8Layout,
    par: Parallelism,
) -> Result<(Vec<u8>, Vec<f32>)> {
    let (rows, cols) = (layout.rows, layout.cols);
    expect_len("weight", rows * cols, w.len())?;
    let (sr, sc) = layout.scale_shape();
    let (br, bc) = layout.block_size();
    // Each task's amax over the block rows its rows touch; max is exact and order-free, so
    // merging the partial grids gives the same scales for any split.
    let parts = par::map_rows(rows, cols, par, |r| {
        let b0 = r.start / br;
        let mut amax = vec![0f32; (r.end.div_ceil(br) - b0) * sc];
        for row in r {
            let a = &mut amax[(row / br - b0) * sc..][..sc];
            for (m, block) in a.iter_mut().zip(w[row * cols..(row + 1) * cols].chunks(bc)) {
                *m = block.iter().fold(*m, |m, x| m.max(x.abs()));
            }
        }
        (b0, amax)
    });
    let mut amax = vec![0f32; sr * sc];
    for (b0, part) in parts {
        for (m, p) in amax[b0 * sc..].iter_mut().zip(part) {
            *m = m.max(p);
        }
    }
    let scales: Vec<f32> =
        amax.iter().map(|&a| if a > 0.0 && a.is_finite() { a / format.max() } else { 1.0 }).collect();
    let mut codes = vec![0u8; w.len()];
    par::row_chunks(&mut codes, cols, par, |row0, codes| {
        for (r, out) in codes.chunks_exact_mut(cols).enumerate() {
            let row = row0 + r;
            let s = &scales[(row / br) * sc..][..sc];
            for ((out, block), &s) in
                out.chunks_mut(bc).zip(w[row * cols..(row + 1) * cols].chunks(bc)).zip(s)
            {
                for (o, &x) in out.iter_mut().zip(block) {
                    *o = format.encode(x / s);
                }
            }
        }
    });
    Ok((codes, scales))
}
