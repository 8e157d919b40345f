//! HQQ (Half-Quadratic Quantization): bit packing and dequantization, bit-for-bit the layouts of
//! the `hqq` Python library (0.2.8).
//!
//! # Grouping
//!
//! A `[rows, cols]` weight with group size `g` is viewed as a *code matrix* (row-major, same
//! flat order as the weight):
//!
//! ```text
//!  axis 0: [g, numel/g]   group k = column k = the strided set {k + i*numel/g : i < g}
//!  axis 1: [numel/g, g]   group k = row k    = g consecutive weights
//! ```
//!
//! Each group has one scale and one zero (in code units), so `scales` and `zeros` hold
//! `numel / g` values and `w = (q - zero) * scale`. hqq's `group_size=None` is `g = rows`
//! (axis 0, per column) or `g = cols` (axis 1, per row).
//!
//! # Packing
//!
//! The code matrix is packed along its rows (dim 0), planar: with `P` packed rows, word
//! `[p, c]` holds codes `[p, c]`, `[p + P, c]`, `[p + 2P, c]`, ... first plane in the high bits
//! (see [`crate::pack`]). 8/4/2/1-bit pack into `u8` and need the row count to be a multiple of
//! 1/2/4/8 (hqq fails otherwise; so do we, with [`KernelError::PackRows`]); 3-bit packs 10 codes into
//! an `i32` and zero-pads the rows to a multiple of 10.
//!
//! ```text
//!  4-bit, code matrix [R, C]  ->  packed u8 [R/2, C]
//!     packed[p, c] = code[p, c] << 4 | code[p + R/2, c]
//! ```
//!
//! # Three paths
//!
//! [`dequantize_into`] runs the SIMD kernel (ISA chosen at run time, see [`crate::Parallelism`]) on one
//! thread or on rayon's pool ([`Parallelism`]); [`dequantize_reference_into`] is the naive per-element
//! oracle. All three give identical bits.

mod cpu;
pub mod quantize;
pub mod reference;
pub(crate) mod scheme;
pub(crate) mod tile;

pub use quantize::{HqqConfig, HqqLayer, quantize_hqq};
pub use scheme::HqqWeight;

use crate::elem::Elem;
use crate::error::{Error, KernelError, Result, expect_len};
use crate::pack::{self, B1, B2, B3, B4, B8, Bits, Packing};
use crate::par::Parallelism;

/// The axis hqq reduces over when it groups a weight (its `axis` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Axis {
    /// `axis=0`: the code matrix is `[g, numel/g]`, a group is a column (strided weights).
    #[default]
    Zero,
    /// `axis=1`: the code matrix is `[numel/g, g]`, a group is a row (consecutive weights).
    One,
}

impl TryFrom<u8> for Axis {
    type Error = Error;
    fn try_from(a: u8) -> Result<Self> {
        match a {
            0 => Ok(Axis::Zero),
            1 => Ok(Axis::One),
            other => Err(Error::Kernel(KernelError::UnsupportedAxis(other))),
        }
    }
}

/// Shape and grouping of one HQQ-quantized weight: `[rows, cols]`, group size, axis.
///
/// ```
/// use quant_kernels::hqq::{Axis, HqqLayout};
/// let l = HqqLayout::new(4096, 4096, 64, Axis::Zero).unwrap();
/// assert_eq!(l.code_shape(), (64, 262_144));
/// assert_eq!(l.groups(), 262_144);
/// assert!(HqqLayout::new(3, 5, 4, Axis::One).is_err()); // 4 does not divide 15
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HqqLayout {
    rows: usize,
    cols: usize,
    group_size: usize,
    axis: Axis,
}

impl HqqLayout {
    /// A layout for a `[rows, cols]` weight; `group_size` must be non-zero and divide
    /// `rows * cols`.
    pub fn new(rows: usize, cols: usize, group_size: usize, axis: Axis) -> Result<Self> {
        let numel = rows.checked_mul(cols).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols }))?;
        if group_size == 0 || !numel.is_multiple_of(group_size) {
            return Err(Error::Kernel(KernelError::GroupSize { group: group_size, len: numel }));
        }
        Ok(Self { rows, cols, group_size, axis })
    }

    /// Rows of the weight.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns of the weight.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Weights per group.
    pub fn group_size(&self) -> usize {
        self.group_size
    }
    /// The grouping axis.
    pub fn axis(&self) -> Axis {
        self.axis
    }
    /// Number of weights.
    pub fn numel(&self) -> usize {
        self.rows * self.cols
    }
    /// Number of groups (= length of `scales` and of `zeros`).
    pub fn groups(&self) -> usize {
        self.numel() / self.group_size
    }
    /// Shape of the code matrix that is packed along its rows (see the module docs).
    pub fn code_shape(&self) -> (usize, usize) {
        match self.axis {
            Axis::Zero => (self.group_size, self.groups()),
            Axis::One => (self.groups(), self.group_size),
        }
    }
    /// Shape of the packed matrix for `bits` (rows padded to a multiple of 10 for 3-bit), or
    /// the error that says why the code matrix does not suit that width.
    pub fn packed_shape(&self, bits: Bits) -> Result<(usize, usize)> {
        let (r, c) = self.code_shape();
        let pr = match bits {
            Bits::B1 => B1::packed_rows(r),
            Bits::B2 => B2::packed_rows(r),
            Bits::B3 => B3::packed_rows(r),
            Bits::B4 => B4::packed_rows(r),
            Bits::B8 => B8::packed_rows(r),
        }?;
        Ok((pr, c))
    }
}

/// What the kernels need to know about a validated call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    /// Code-matrix rows (the packed axis, unpadded).
    pub rows: usize,
    /// Code-matrix columns.
    pub cols: usize,
    /// Packed rows (= code rows per plane).
    pub prows: usize,
    /// Grouping axis: zero/scale per column (`Zero`) or per row (`One`).
    pub axis: Axis,
}

/// Validate every length of a dequantization call against `layout` and the width `P`.
pub(crate) fn check<P: Packing>(
    layout: &HqqLayout,
    words: usize,
    scales: usize,
    zeros: usize,
    out: usize,
) -> Result<Geometry> {
    let (rows, cols) = layout.code_shape();
    let prows = P::packed_rows(rows)?;
    expect_len("packed", prows * cols, words)?;
    expect_len("scales", layout.groups(), scales)?;
    expect_len("zeros", layout.groups(), zeros)?;
    expect_len("out", layout.numel(), out)?;
    Ok(Geometry { rows, cols, prows, axis: layout.axis })
}

/// The packed words of one width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackedWords {
    /// 8, 4, 2 and 1-bit codes (hqq's `uint8` tensors).
    U8(Vec<u8>),
    /// 3-bit codes (hqq's `int32` tensor).
    I32(Vec<i32>),
}

/// A packed code matrix: `bits`, the code-matrix shape and the words
/// (`[packed_rows, cols]`, row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// Bit width.
    pub bits: Bits,
    /// Rows of the code matrix (unpadded).
    pub rows: usize,
    /// Columns of the code matrix.
    pub cols: usize,
    /// The words, `[packed_rows, cols]` row-major.
    pub words: PackedWords,
}

impl Packed {
    /// Rows of the packed matrix.
    pub fn packed_rows(&self) -> usize {
        match &self.words {
            PackedWords::U8(w) => w.len().checked_div(self.cols).unwrap_or(0),
            PackedWords::I32(w) => w.len().checked_div(self.cols).unwrap_or(0),
        }
    }

    /// Dequantize with `layout` (whose code shape must be this matrix's shape), dispatching on
    /// the width at run time.
    pub fn dequantize_into<S: Elem, O: Elem>(
        &self,
        scales: &[S],
        zeros: &[S],
        layout: &HqqLayout,
        out: &mut [O],
        par: Parallelism,
    ) -> Result<()> {
        let (r, c) = layout.code_shape();
        expect_len("code-matrix rows", r, self.rows)?;
        expect_len("code-matrix cols", c, self.cols)?;
        match (&self.words, self.bits) {
            (PackedWords::U8(w), Bits::B8) => dequantize_into::<B8, S, O>(w, scales, zeros, layout, out, par),
            (PackedWords::U8(w), Bits::B4) => dequantize_into::<B4, S, O>(w, scales, zeros, layout, out, par),
            (PackedWords::U8(w), Bits::B2) => dequantize_into::<B2, S, O>(w, scales, zeros, layout, out, par),
            (PackedWords::U8(w), Bits::B1) => dequantize_into::<B1, S, O>(w, scales, zeros, layout, out, par),
            (PackedWords::I32(w), Bits::B3) => {
                dequantize_into::<B3, S, O>(w, scales, zeros, layout, out, par)
            }
            (_, bits) => Err(Error::Kernel(KernelError::UnsupportedBits(bits.get()))),
        }
    }
}

/// Pack a `[rows, cols]` code matrix (row-major `u8` codes, each `< 2^bits`) the way hqq's
/// `BitPack.pack_{8bit_u8, 4bit_u8, 3bit_32, 2bit_u8, 1bit_u8}` does.
///
/// `rows` is the packed axis: it must be a multiple of `8 / bits` for the `u8` widths; for
/// 3-bit it is zero-padded to a multiple of 10 (the padding is dropped again by [`unpack_hqq`]).
///
/// ```
/// use quant_kernels::hqq::{pack_hqq, unpack_hqq, PackedWords};
/// // 4-bit, 4x2 codes: packed[p, c] = code[p, c] << 4 | code[p + 2, c]
/// let codes = [1, 2, 3, 4, 5, 6, 7, 15];
/// let packed = pack_hqq(&codes, 4, 2, 4).unwrap();
/// assert_eq!(packed.words, PackedWords::U8(vec![0x15, 0x26, 0x37, 0x4f]));
/// assert_eq!(unpack_hqq(&packed).unwrap(), codes);
/// assert!(pack_hqq(&codes[..6], 3, 2, 4).is_err()); // 3 rows: not a multiple of 2
/// ```
pub fn pack_hqq(codes: &[u8], rows: usize, cols: usize, bits: u8) -> Result<Packed> {
    let bits = Bits::try_from(bits)?;
    let numel = rows.checked_mul(cols).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols }))?;
    expect_len("codes", numel, codes.len())?;
    if let Some(index) = codes.iter().position(|&c| c > bits.max_code()) {
        return Err(Error::Kernel(KernelError::CodeOutOfRange {
            index,
            code: codes[index],
            bits: bits.get(),
        }));
    }
    let words = match bits {
        Bits::B8 => PackedWords::U8(pack_checked::<B8>(codes, rows, cols)?),
        Bits::B4 => PackedWords::U8(pack_checked::<B4>(codes, rows, cols)?),
        Bits::B2 => PackedWords::U8(pack_checked::<B2>(codes, rows, cols)?),
        Bits::B1 => PackedWords::U8(pack_checked::<B1>(codes, rows, cols)?),
        Bits::B3 => PackedWords::I32(pack_checked::<B3>(codes, rows, cols)?),
    };
    Ok(Packed { bits, rows, cols, words })
}

fn pack_checked<P: Packing>(codes: &[u8], rows: usize, cols: usize) -> Result<Vec<P::Word>> {
    P::packed_rows(rows)?;
    Ok(pack::pack_planes::<P>(codes, rows, cols))
}

/// [`pack_hqq`] of a `[rows, cols]` code matrix made a row at a time by `fill(r, row)` (codes
/// that fit `bits`), blocks of packed rows over the pool as `par` allows: what the quantizer
/// uses, so that it never holds the unpacked codes of a whole layer.
pub(crate) fn pack_hqq_with(
    rows: usize,
    cols: usize,
    bits: Bits,
    par: Parallelism,
    fill: impl Fn(usize, &mut [u8]) + Sync,
) -> Result<Packed> {
    fn run<P: Packing>(
        rows: usize,
        cols: usize,
        par: Parallelism,
        fill: impl Fn(usize, &mut [u8]) + Sync,
    ) -> Result<Vec<P::Word>> {
        let words_len = P::packed_rows(rows)?
            .checked_mul(cols)
            .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols }))?;
        let mut words = vec![P::Word::default(); words_len];
        crate::par::row_chunks(&mut words, cols, par, |p0, chunk| {
            pack::pack_planes_rows::<P>(rows, cols, p0, chunk, &fill)
        });
        Ok(words)
    }
    let words = match bits {
        Bits::B8 => PackedWords::U8(run::<B8>(rows, cols, par, fill)?),
        Bits::B4 => PackedWords::U8(run::<B4>(rows, cols, par, fill)?),
        Bits::B2 => PackedWords::U8(run::<B2>(rows, cols, par, fill)?),
        Bits::B1 => PackedWords::U8(run::<B1>(rows, cols, par, fill)?),
        Bits::B3 => PackedWords::I32(run::<B3>(rows, cols, par, fill)?),
    };
    Ok(Packed { bits, rows, cols, words })
}

/// Unpack to the `[rows, cols]` code matrix (3-bit padding rows dropped), like hqq's
/// `BitPack.unpack_*` followed by hqq's `[:rows]` slice.
pub fn unpack_hqq(packed: &Packed) -> Result<Vec<u8>> {
    let mut out = vec![
        0u8;
        packed.rows.checked_mul(packed.cols).ok_or(Error::Kernel(
            KernelError::ShapeOverflow { rows: packed.rows, cols: packed.cols }
        ))?
    ];
    unpack_hqq_into(packed, &mut out)?;
    Ok(out)
}

/// [`unpack_hqq`] into a caller buffer of `rows * cols` codes.
pub fn unpack_hqq_into(packed: &Packed, out: &mut [u8]) -> Result<()> {
    let (rows, cols) = (packed.rows, packed.cols);
    match (&packed.words, packed.bits) {
        (PackedWords::U8(w), Bits::B8) => unpack_checked::<B8>(w, rows, cols, out),
        (PackedWords::U8(w), Bits::B4) => unpack_checked::<B4>(w, rows, cols, out),
        (PackedWords::U8(w), Bits::B2) => unpack_checked::<B2>(w, rows, cols, out),
        (PackedWords::U8(w), Bits::B1) => unpack_checked::<B1>(w, rows, cols, out),
        (PackedWords::I32(w), Bits::B3) => unpack_checked::<B3>(w, rows, cols, out),
        (_, bits) => Err(Error::Kernel(KernelError::UnsupportedBits(bits.get()))),
    }
}

fn unpack_checked<P: Packing>(words: &[P::Word], rows: usize, cols: usize, out: &mut [u8]) -> Result<()> {
    let numel = rows.checked_mul(cols).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols }))?;
    let prows = P::packed_rows(rows)?;
    expect_len(
        "packed",
        prows.checked_mul(cols).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols }))?,
        words.len(),
    )?;
    expect_len("out", numel, out.len())?;
    pack::unpack_planes_into::<P>(words, rows, cols, out);
    Ok(())
}

/// Dequantize `w = (q - zero) * scale` from packed words of width `P` into `out`
/// (`layout.numel()` elements, the weight's row-major order), with the SIMD kernel on one
/// thread or on rayon's pool.
///
/// `scales` and `zeros` hold one value per group (`layout.groups()`), in group order; `words`
/// is the packed code matrix (`layout.packed_shape(P::BITS)`). Every length is checked first.
pub fn dequantize_into<P: Packing, S: Elem, O: Elem>(
    words: &[P::Word],
    scales: &[S],
    zeros: &[S],
    layout: &HqqLayout,
    out: &mut [O],
    par: Parallelism,
) -> Result<()> {
    let geo = check::<P>(layout, words.len(), scales.len(), zeros.len(), out.len())?;
    cpu::dequant::<P, S, O>(&geo, words, scales, zeros, out, par);
    Ok(())
}

/// The allocating form of [`dequantize_into`].
pub fn dequantize<P: Packing, S: Elem, O: Elem>(
    words: &[P::Word],
    scales: &[S],
    zeros: &[S],
    layout: &HqqLayout,
    par: Parallelism,
) -> Result<Vec<O>> {
    let mut out = vec![O::default(); layout.numel()];
    dequantize_into::<P, S, O>(words, scales, zeros, layout, &mut out, par)?;
    Ok(out)
}

/// The naive oracle: [`dequantize_into`]'s checks, then one element at a time, no SIMD, no threads
/// (see [`mod@reference`]).
pub fn dequantize_reference_into<P: Packing, S: Elem, O: Elem>(
    words: &[P::Word],
    scales: &[S],
    zeros: &[S],
    layout: &HqqLayout,
    out: &mut [O],
) -> Result<()> {
    check::<P>(layout, words.len(), scales.len(), zeros.len(), out.len())?;
    let words: Vec<u32> = words.iter().map(|&w| crate::pack::Word::bits(w)).collect();
    reference::dequant(P::BITS.get(), &words, scales, zeros, layout, out);
    Ok(())
}

/// Stamps the documented flat entry points for one width: `$name` (allocating) and
/// `$name_into` (caller buffer), thin wrappers over [`dequantize`] / [`dequantize_into`].
macro_rules! flat_dequantize {
    ($name:ident, $into:ident, $p:ty, $word:ty, $bits:literal) => {
        #[doc = concat!("Dequantize ", $bits, "-bit HQQ weights into `out` (see [`dequantize_into`]).")]
        pub fn $into<S: Elem, O: Elem>(
            packed: &[$word],
            scales: &[S],
            zeros: &[S],
            layout: &HqqLayout,
            out: &mut [O],
            par: Parallelism,
        ) -> Result<()> {
            dequantize_into::<$p, S, O>(packed, scales, zeros, layout, out, par)
        }

        #[doc = concat!("Dequantize ", $bits, "-bit HQQ weights into a new `Vec` (see [`dequantize`]).")]
        pub fn $name<S: Elem, O: Elem>(
            packed: &[$word],
            scales: &[S],
            zeros: &[S],
            layout: &HqqLayout,
            par: Parallelism,
        ) -> Result<Vec<O>> {
            dequantize::<$p, S, O>(packed, scales, zeros, layout, par)
        }
    };
}

flat_dequantize!(dequantize_8bit, dequantize_8bit_into, B8, u8, "8");
flat_dequantize!(dequantize_4bit, dequantize_4bit_into, B4, u8, "4");
flat_dequantize!(dequantize_3bit, dequantize_3bit_into, B3, i32, "3");
flat_dequantize!(dequantize_2bit, dequantize_2bit_into, B2, u8, "2");
flat_dequantize!(dequantize_1bit, dequantize_1bit_into, B1, u8, "1");
