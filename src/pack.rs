//! Bit packing shared by the schemes: how `BITS`-bit codes sit in a storage word.
//!
//! A [`Packing`] says how many codes a word holds, where code number `plane` of a word sits
//! (its shift) and how the packed axis must be shaped. The HQQ layouts are *planar*: word `i` of
//! packed row `p` holds the codes of rows `p`, `p + P`, `p + 2P`, ... of the code matrix (`P` =
//! packed rows), the first plane in the highest bits:
//!
//! ```text
//!  8-bit  u8   [c0]                                  1 code  per word, shift 0
//!  4-bit  u8   [c0:4|c1:4]                           2 codes per word, shifts 4, 0
//!  2-bit  u8   [c0:2|c1:2|c2:2|c3:2]                 4 codes per word, shifts 6, 4, 2, 0
//!  1-bit  u8   [c0|c1|...|c7]                        8 codes per word, shifts 7..0
//!  3-bit  i32  [00|c0:3|c1:3|...|c9:3]              10 codes per word, shifts 27, 24, ..., 0
//! ```
//!
//! The types [`B1`], [`B2`], [`B4`], [`B8`] (one generic `u8` packing) and [`B3`] (the `i32`
//! packing) are what kernels are generic over; [`Bits`] is the runtime tag.

use crate::error::{Error, KernelError, Result};

/// A bit width, as a runtime value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bits {
    /// 1 bit per code.
    B1 = 1,
    /// 2 bits per code.
    B2 = 2,
    /// 3 bits per code.
    B3 = 3,
    /// 4 bits per code.
    B4 = 4,
    /// 8 bits per code.
    B8 = 8,
}

impl Bits {
    /// All widths, narrowest first.
    pub const ALL: [Bits; 5] = [Bits::B1, Bits::B2, Bits::B3, Bits::B4, Bits::B8];

    /// The number of bits.
    pub const fn get(self) -> u8 {
        self as u8
    }

    /// Largest code: `2^bits - 1`.
    pub const fn max_code(self) -> u8 {
        ((1u16 << self as u16) - 1) as u8
    }
}

impl TryFrom<u8> for Bits {
    type Error = Error;
    fn try_from(b: u8) -> Result<Self> {
        Ok(match b {
            1 => Bits::B1,
            2 => Bits::B2,
            3 => Bits::B3,
            4 => Bits::B4,
            8 => Bits::B8,
            other => return Err(Error::Kernel(KernelError::UnsupportedBits(other))),
        })
    }
}

impl std::fmt::Display for Bits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-bit", self.get())
    }
}

mod sealed {
    pub trait Sealed {}
    impl<const B: u8> Sealed for super::U8Planes<B> {}
    impl Sealed for super::B3 {}
    impl Sealed for u8 {}
    impl Sealed for i32 {}
}

/// A storage word: `u8` or `i32`.
pub trait Word: sealed::Sealed + bytemuck::Pod + Default + PartialEq + Send + Sync + std::fmt::Debug {
    /// The word's bits, zero-extended.
    fn bits(self) -> u32;
    /// A word with these bits (truncating).
    fn from_bits(bits: u32) -> Self;

    /// 16 words zero-extended to AVX-512 `u32` lanes (kernels' x86-64-v4 path; not public API).
    #[doc(hidden)]
    #[cfg(target_arch = "x86_64")]
    fn widen16(v4: pulp::x86::V4, w: &[Self; 16]) -> core::arch::x86_64::__m512i;
}

impl Word for u8 {
    #[inline(always)]
    fn bits(self) -> u32 {
        self as u32
    }
    #[inline(always)]
    fn from_bits(bits: u32) -> Self {
        bits as u8
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn widen16(v4: pulp::x86::V4, w: &[Self; 16]) -> core::arch::x86_64::__m512i {
        v4.avx512f._mm512_cvtepu8_epi32(bytemuck::cast(*w))
    }
}

impl Word for i32 {
    #[inline(always)]
    fn bits(self) -> u32 {
        self as u32
    }
    #[inline(always)]
    fn from_bits(bits: u32) -> Self {
        bits as i32
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn widen16(_: pulp::x86::V4, w: &[Self; 16]) -> core::arch::x86_64::__m512i {
        bytemuck::cast(*w)
    }
}

/// How `BITS`-bit codes are packed in a word. Implemented by [`B1`], [`B2`], [`B3`], [`B4`],
/// [`B8`]; sealed.
pub trait Packing: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The runtime tag.
    const BITS: Bits;
    /// Codes per word (the number of planes).
    const PER_WORD: usize;
    /// Whether the packed axis is zero-padded up to a multiple of [`Self::PER_WORD`] (3-bit) or
    /// must already be a multiple of it (the `u8` widths).
    const PADS: bool;
    /// The storage word.
    type Word: Word;

    /// Mask of one code.
    const MASK: u32 = (1u32 << Self::BITS as u32) - 1;

    /// Bit shift of plane `plane` (the first plane sits highest).
    #[inline(always)]
    fn shift(plane: usize) -> u32 {
        debug_assert!(plane < Self::PER_WORD);
        Self::BITS as u32 * (Self::PER_WORD - 1 - plane) as u32
    }

    /// The code at `shift` in `w`.
    #[inline(always)]
    fn extract(w: Self::Word, shift: u32) -> u32 {
        (w.bits() >> shift) & Self::MASK
    }

    /// Packed rows for `rows` code rows along the packed axis, or the error that says why the
    /// count does not suit this width.
    fn packed_rows(rows: usize) -> Result<usize> {
        if Self::PADS {
            Ok(rows.div_ceil(Self::PER_WORD))
        } else if rows.is_multiple_of(Self::PER_WORD) {
            Ok(rows / Self::PER_WORD)
        } else {
            Err(Error::Kernel(KernelError::PackRows {
                bits: Self::BITS.get(),
                rows,
                multiple: Self::PER_WORD,
            }))
        }
    }
}

/// The `u8` packings: `8 / BITS` codes per byte, first plane in the high bits.
#[derive(Debug, Clone, Copy, Default)]
pub struct U8Planes<const BITS: u8>;

/// 1-bit codes, 8 per `u8`.
pub type B1 = U8Planes<1>;
/// 2-bit codes, 4 per `u8`.
pub type B2 = U8Planes<2>;
/// 4-bit codes, 2 per `u8`.
pub type B4 = U8Planes<4>;
/// 8-bit codes, 1 per `u8`.
pub type B8 = U8Planes<8>;

/// 3-bit codes, 10 per `i32` (bits 29..0; 31 and 30 are zero), packed axis zero-padded to a
/// multiple of 10.
#[derive(Debug, Clone, Copy, Default)]
pub struct B3;

/// The runtime tag for a `u8` width; only 1, 2, 4 and 8 are instantiated (the type is sealed
/// and only the aliases above are public).
const fn u8_bits(b: u8) -> Bits {
    match b {
        1 => Bits::B1,
        2 => Bits::B2,
        4 => Bits::B4,
        _ => Bits::B8,
    }
}

impl<const B: u8> Packing for U8Planes<B> {
    const BITS: Bits = u8_bits(B);
    const PER_WORD: usize = 8 / B as usize;
    const PADS: bool = false;
    type Word = u8;
}

impl Packing for B3 {
    const BITS: Bits = Bits::B3;
    const PER_WORD: usize = 10;
    const PADS: bool = true;
    type Word = i32;
}

/// Pack a `[rows, cols]` row-major code matrix along its rows (planar, see the module docs).
/// Checked by the caller: `codes.len() == rows * cols`, codes fit, the row count suits `P`.
pub(crate) fn pack_planes<P: Packing>(codes: &[u8], rows: usize, cols: usize) -> Vec<P::Word> {
    debug_assert_eq!(codes.len(), rows * cols);
    let prows = P::packed_rows(rows).unwrap_or(0);
    let mut words = vec![P::Word::default(); prows * cols];
    pack_planes_rows::<P>(rows, cols, 0, &mut words, |r, row| {
        row.copy_from_slice(&codes[r * cols..(r + 1) * cols])
    });
    words
}

/// Packed rows `p0..` (as many as `out` holds, `cols` words each; `out` zeroed) of a
/// `[rows, cols]` code matrix whose code rows are made on demand: `fill(r, row)` writes code row
/// `r` into `row` (`cols` codes that fit `P`). Rows past `rows` (3-bit padding) pack as zero. A
/// caller packing while it quantizes holds one code row at a time, never the code matrix.
pub(crate) fn pack_planes_rows<P: Packing>(
    rows: usize,
    cols: usize,
    p0: usize,
    out: &mut [P::Word],
    mut fill: impl FnMut(usize, &mut [u8]),
) {
    let prows = P::packed_rows(rows).unwrap_or(0);
    let mut row = vec![0u8; cols];
    for (i, dst) in out.chunks_exact_mut(cols.max(1)).enumerate() {
        let p = p0 + i;
        for plane in 0..P::PER_WORD {
            let r = plane * prows + p;
            if r >= rows {
                break;
            }
            fill(r, &mut row);
            let shift = P::shift(plane);
            for (w, &c) in dst.iter_mut().zip(&row) {
                *w = P::Word::from_bits(w.bits() | ((c as u32 & P::MASK) << shift));
            }
        }
    }
}

/// Unpack `rows` code rows (padding rows dropped) from planar words into `out` (`rows * cols`).
pub(crate) fn unpack_planes_into<P: Packing>(words: &[P::Word], rows: usize, cols: usize, out: &mut [u8]) {
    let prows = P::packed_rows(rows).unwrap_or(0);
    debug_assert_eq!(words.len(), prows * cols);
    debug_assert_eq!(out.len(), rows * cols);
    for (r, out_row) in out.chunks_exact_mut(cols.max(1)).enumerate().take(rows) {
        let (plane, p) = (r / prows, r % prows);
        let shift = P::shift(plane);
        for (o, &w) in out_row.iter_mut().zip(&words[p * cols..(p + 1) * cols]) {
            *o = P::extract(w, shift) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_match_the_layouts() {
        assert_eq!((0..2).map(B4::shift).collect::<Vec<_>>(), [4, 0]);
        assert_eq!((0..4).map(B2::shift).collect::<Vec<_>>(), [6, 4, 2, 0]);
        assert_eq!((0..8).map(B1::shift).collect::<Vec<_>>(), [7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(B8::shift(0), 0);
        assert_eq!(B3::shift(0), 27);
        assert_eq!(B3::shift(9), 0);
        assert_eq!((B1::MASK, B2::MASK, B3::MASK, B4::MASK, B8::MASK), (1, 3, 7, 15, 255));
        assert_eq!((B4::BITS, B8::BITS, B3::BITS), (Bits::B4, Bits::B8, Bits::B3));
    }

    #[test]
    fn packed_rows_checks_the_multiple() {
        assert_eq!(B4::packed_rows(26), Ok(13));
        assert_eq!(
            B4::packed_rows(25),
            Err(Error::Kernel(KernelError::PackRows { bits: 4, rows: 25, multiple: 2 }))
        );
        assert_eq!(B3::packed_rows(25), Ok(3));
        assert_eq!(B3::packed_rows(0), Ok(0));
        assert!(B1::packed_rows(12).is_err());
        assert_eq!(Bits::try_from(5), Err(Error::Kernel(KernelError::UnsupportedBits(5))));
    }

    #[test]
    fn pack_then_unpack_round_trips() {
        let (rows, cols) = (30, 7);
        let codes: Vec<u8> = (0..rows * cols).map(|i| (i * 7 % 8) as u8).collect();
        let words = pack_planes::<B3>(&codes[..25 * cols], 25, cols);
        assert_eq!(words.len(), 3 * cols);
        let mut back = vec![0u8; 25 * cols];
        unpack_planes_into::<B3>(&words, 25, cols, &mut back);
        assert_eq!(back, codes[..25 * cols]);
    }
}
