//! Element types the kernels read (scales, zeros) and write (outputs): `f32`, `f16`, `bf16`.
//!
//! [`Elem`] is sealed: the three IEEE-style types are the whole set. Kernels compute in `f32`
//! and store through [`Elem::store_tile`], which writes `f32` in place and converts whole
//! tiles to `f16`/`bf16` with `half`'s slice conversions (F16C at run time when the CPU has it).
//! The scalar [`Elem::from_f32`] / [`Elem::to_f32`] are what the naive reference uses; both
//! round to nearest even, so the two routes give identical bits.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Largest tile (in elements) a kernel hands to [`Elem::store_tile`].
pub const TILE: usize = 2048;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// The data types of scales, zeros and outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatType {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (the upper half of a binary32).
    Bf16,
}

impl FloatType {
    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            FloatType::F32 => 4,
            FloatType::F16 | FloatType::Bf16 => 2,
        }
    }
}

impl std::fmt::Display for FloatType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FloatType::F32 => "f32",
            FloatType::F16 => "f16",
            FloatType::Bf16 => "bf16",
        })
    }
}

/// A vector of one of the float element types, e.g. a checkpoint's scales or bias in whatever
/// dtype the file stores them.
#[derive(Debug, Clone, PartialEq)]
pub enum FloatVec {
    /// `f32` values.
    F32(Vec<f32>),
    /// `f16` values.
    F16(Vec<f16>),
    /// `bf16` values.
    Bf16(Vec<bf16>),
}

/// Run `$body` with `$v` bound to the inner `Vec` of a [`FloatVec`], whatever its type.
#[macro_export]
#[doc(hidden)]
macro_rules! with_float_vec {
    ($fv:expr, $v:ident => $body:expr) => {
        match $fv {
            $crate::elem::FloatVec::F32($v) => $body,
            $crate::elem::FloatVec::F16($v) => $body,
            $crate::elem::FloatVec::Bf16($v) => $body,
        }
    };
}

impl From<Vec<f32>> for FloatVec {
    fn from(v: Vec<f32>) -> Self {
        FloatVec::F32(v)
    }
}

impl From<Vec<f16>> for FloatVec {
    fn from(v: Vec<f16>) -> Self {
        FloatVec::F16(v)
    }
}

impl From<Vec<bf16>> for FloatVec {
    fn from(v: Vec<bf16>) -> Self {
        FloatVec::Bf16(v)
    }
}

impl FloatVec {
    /// The element type.
    pub fn dtype(&self) -> FloatType {
        match self {
            FloatVec::F32(_) => FloatType::F32,
            FloatVec::F16(_) => FloatType::F16,
            FloatVec::Bf16(_) => FloatType::Bf16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_float_vec!(self, v => v.len())
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values widened to `f32` (exact).
    pub fn to_f32(&self) -> Vec<f32> {
        with_float_vec!(self, v => v.iter().map(|x| x.to_f32()).collect())
    }

    /// Row-major `[rows, sum(cols)]` from parts `[rows, cols_i]` side by side; `None` when the
    /// parts' dtypes differ or a length is not `rows * cols_i`.
    pub fn concat_columns(parts: &[(&FloatVec, usize)], rows: usize) -> Option<FloatVec> {
        macro_rules! same {
            ($variant:ident) => {{
                let typed: Option<Vec<_>> = parts
                    .iter()
                    .map(|(p, c)| match p {
                        FloatVec::$variant(v) => Some((v.as_slice(), *c)),
                        _ => None,
                    })
                    .collect();
                crate::par::concat_columns(&typed?, rows).map(FloatVec::$variant)
            }};
        }
        match parts.first()?.0 {
            FloatVec::F32(_) => same!(F32),
            FloatVec::F16(_) => same!(F16),
            FloatVec::Bf16(_) => same!(Bf16),
        }
    }
}

/// A floating-point element a kernel reads or writes: `f32`, [`half::f16`] or [`half::bf16`].
///
/// ```
/// use quant_kernels::Elem;
/// use half::f16;
/// let mut out = [f16::ZERO; 3];
/// let mut scratch = [0f32; quant_kernels::elem::TILE];
/// f16::store_tile(&mut out, &mut scratch, |buf| buf.copy_from_slice(&[0.5, -1.0, 65504.0]));
/// assert_eq!(out.map(f16::to_f32), [0.5, -1.0, 65504.0]);
/// assert_eq!(<f16 as Elem>::from_f32(1.0 / 3.0).to_bits(), 0x3555);
/// ```
pub trait Elem:
    sealed::Sealed + Copy + Default + PartialEq + Send + Sync + std::fmt::Debug + 'static
{
    /// The runtime tag of this type.
    const DTYPE: FloatType;

    /// Widen one value to `f32` (exact for all three types).
    fn to_f32(self) -> f32;

    /// Round one `f32` to this type (round to nearest, ties to even; NaN stays NaN).
    fn from_f32(x: f32) -> Self;

    /// Widen a slice into a caller buffer of the same length.
    fn slice_to_f32(src: &[Self], dst: &mut [f32]);

    /// The slice itself when `Self` is `f32` (no widening needed), else `None`.
    fn as_f32(src: &[Self]) -> Option<&[f32]> {
        let _ = src;
        None
    }

    /// Round a slice of `f32` into `dst` (same length), as [`Elem::from_f32`] does per element.
    fn slice_from_f32(src: &[f32], dst: &mut [Self]);

    /// Load 16 values as AVX-512 `f32` lanes (kernels' x86-64-v4 path; not public API).
    #[doc(hidden)]
    #[cfg(target_arch = "x86_64")]
    fn load16(v4: pulp::x86::V4, x: &[Self; 16]) -> core::arch::x86_64::__m512;

    /// Round 16 AVX-512 `f32` lanes to this type, as [`Elem::from_f32`] does (not public API).
    #[doc(hidden)]
    #[cfg(target_arch = "x86_64")]
    fn store16(v4: pulp::x86::V4, x: core::arch::x86_64::__m512, out: &mut [Self; 16]);

    /// Let `fill` write `dst.len()` (at most [`TILE`]) `f32` values, then store them in `dst`.
    ///
    /// For `f32` the closure writes straight into `dst`; for `f16`/`bf16` it writes into
    /// `scratch` (the caller's, reused across tiles) which is then rounded with
    /// [`Elem::slice_from_f32`]. Inlined into SIMD kernels, so the rounding runs with the
    /// kernel's instruction set.
    #[inline(always)]
    fn store_tile(dst: &mut [Self], scratch: &mut [f32; TILE], fill: impl FnOnce(&mut [f32])) {
        debug_assert!(dst.len() <= TILE);
        let buf = &mut scratch[..dst.len()];
        fill(buf);
        Self::slice_from_f32(buf, dst);
    }
}

impl Elem for f32 {
    const DTYPE: FloatType = FloatType::F32;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline]
    fn slice_to_f32(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn as_f32(src: &[Self]) -> Option<&[f32]> {
        Some(src)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn load16(_: pulp::x86::V4, x: &[Self; 16]) -> core::arch::x86_64::__m512 {
        bytemuck::cast(*x)
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn store16(_: pulp::x86::V4, x: core::arch::x86_64::__m512, out: &mut [Self; 16]) {
        *out = bytemuck::cast(x);
    }
    #[inline(always)]
    fn slice_from_f32(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn store_tile(dst: &mut [Self], _scratch: &mut [f32; TILE], fill: impl FnOnce(&mut [f32])) {
        fill(dst);
    }
}

impl Elem for f16 {
    const DTYPE: FloatType = FloatType::F16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[inline]
    fn slice_to_f32(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    #[inline(always)]
    fn slice_from_f32(src: &[f32], dst: &mut [Self]) {
        f32_to_f16(src, dst);
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn load16(v4: pulp::x86::V4, x: &[Self; 16]) -> core::arch::x86_64::__m512 {
        v4.avx512f._mm512_cvtph_ps(bytemuck::cast(*x))
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn store16(v4: pulp::x86::V4, x: core::arch::x86_64::__m512, out: &mut [Self; 16]) {
        // imm 0: round to nearest even.
        *out = bytemuck::cast(v4.avx512f._mm512_cvtps_ph::<0>(x));
    }
}

impl Elem for bf16 {
    const DTYPE: FloatType = FloatType::Bf16;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    #[inline]
    fn slice_to_f32(src: &[Self], dst: &mut [f32]) {
        src.convert_to_f32_slice(dst);
    }
    #[inline(always)]
    fn slice_from_f32(src: &[f32], dst: &mut [Self]) {
        f32_to_bf16(src, dst);
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn load16(v4: pulp::x86::V4, x: &[Self; 16]) -> core::arch::x86_64::__m512 {
        let wide = v4.avx512f._mm512_cvtepu16_epi32(bytemuck::cast(*x));
        v4.avx512f._mm512_castsi512_ps(v4.avx512f._mm512_slli_epi32::<16>(wide))
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn store16(_: pulp::x86::V4, x: core::arch::x86_64::__m512, out: &mut [Self; 16]) {
        let lanes: [f32; 16] = bytemuck::cast(x);
        f32_to_bf16(&lanes, out);
    }
}

/// `f32` -> `f16`, round to nearest even: 16 lanes at a time with AVX-512's `vcvtps2ph` when the
/// CPU has it (through pulp's safe feature token), else `half`'s slice conversion (F16C 8 lanes,
/// or software). Both round exactly like `f16::from_f32`; NaN stays a quiet NaN with the same
/// sign and top payload bits. A conversion, not a kernel: like `half`, it picks its own
/// instructions (a [`crate::Parallelism::max_isa`] cap does not reach it), every route the same bits.
#[inline(always)]
fn f32_to_f16(src: &[f32], dst: &mut [f16]) {
    debug_assert_eq!(src.len(), dst.len());
    #[cfg(target_arch = "x86_64")]
    if let Some(v4) = pulp::x86::V4::try_new() {
        use core::arch::x86_64::{__m256i, __m512};
        let (s16, s_tail) = pulp::as_arrays::<16, f32>(src);
        let (d16, d_tail) = pulp::as_arrays_mut::<16, f16>(dst);
        for (s, d) in s16.iter().zip(d16.iter_mut()) {
            let a: __m512 = bytemuck::cast(*s);
            // imm 0: round to nearest even, exceptions as MXCSR says (masked by default).
            let h: __m256i = v4.avx512f._mm512_cvtps_ph::<0>(a);
            *d = bytemuck::cast(h);
        }
        d_tail.convert_from_f32_slice(s_tail);
        return;
    }
    dst.convert_from_f32_slice(src);
}

/// `f32` -> `bf16`, round to nearest even (NaN: quiet, sign and top payload kept), in plain
/// integer code the compiler vectorizes for the kernel's instruction set. Same bits as
/// `bf16::from_f32`.
#[inline(always)]
fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) {
    let n = dst.len();
    let src = &src[..n];
    for i in 0..n {
        let u = src[i].to_bits();
        let rounded = (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16;
        let nan = ((u >> 16) as u16) | 0x0040;
        let is_nan = (u & 0x7fff_ffff) > 0x7f80_0000;
        dst[i] = bf16::from_bits(if is_nan { nan } else { rounded });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tile store (slice conversion, F16C where present) and the scalar conversion agree bit
    /// for bit, including ties, subnormals, overflow and NaN.
    #[test]
    fn tile_store_equals_scalar_rounding() {
        let mut xs: Vec<f32> =
            vec![0.0, -0.0, 1.0, 65504.0, 65520.0, 1e-8, -6.1e-5, 3.0e38, f32::INFINITY, f32::NAN];
        let mut s = 0x1234_5678u32;
        for _ in 0..5000 {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            xs.push(f32::from_bits(s));
        }
        for chunk in xs.chunks(TILE) {
            let mut h = vec![f16::ZERO; chunk.len()];
            let mut scratch = [0f32; TILE];
            f16::store_tile(&mut h, &mut scratch, |b| b.copy_from_slice(chunk));
            let mut b16 = vec![bf16::ZERO; chunk.len()];
            bf16::store_tile(&mut b16, &mut scratch, |b| b.copy_from_slice(chunk));
            for (i, &x) in chunk.iter().enumerate() {
                let (sh, sb) = (<f16 as Elem>::from_f32(x), <bf16 as Elem>::from_f32(x));
                if x.is_nan() {
                    assert!(h[i].is_nan() && b16[i].is_nan());
                } else {
                    assert_eq!(h[i].to_bits(), sh.to_bits(), "f16 of {x:e}");
                    assert_eq!(b16[i].to_bits(), sb.to_bits(), "bf16 of {x:e}");
                }
            }
        }
    }
}
