//! The per-scheme trait: everything the crate knows about one scheme's weight, implemented
//! once in that scheme's folder.
//!
//! | type | scheme | implemented in |
//! |---|---|---|
//! | [`crate::dense::DenseWeight`] | unquantized | `src/dense.rs` |
//! | [`crate::hqq::HqqWeight`] | HQQ, every width and axis | `src/hqq/scheme.rs` |
//! | [`crate::gptq::GptqLayer`] | GPTQ 2/3/4/8-bit, act-order, v1/v2 | `src/gptq/scheme.rs` |
//! | [`crate::awq::AwqLayer`] | AWQ (GEMM layout) | `src/awq/scheme.rs` |
//! | [`crate::fp8::Fp8Layer`] | FP8 E4M3/E5M2, one expert | `src/fp8/scheme.rs` |
//! | [`crate::intx::Int8Tensor`], [`crate::intx::Int4Tensor`] | int8, int4 | `src/intx/scheme.rs` |
//!
//! [`crate::QuantWeight`] is the closed enum over these types; each of its methods is one
//! delegating `match`.

use crate::elem::{Elem, FloatType, FloatVec};
use crate::error::{Error, KernelError, Result};
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::tp::Shard;
use std::ops::Range;

/// One scheme's weight `[out, in]` (the `nn.Linear` orientation, whatever the storage order).
///
/// Every method validates what it reads and returns a typed error; none panics on a weight
/// whose public fields disagree with each other.
///
/// ```
/// use quant_kernels::intx::{quantize_int8, Granularity};
/// use quant_kernels::tp::Shard;
/// use quant_kernels::{Parallelism, QuantScheme};
/// let w = quantize_int8(&[127.0, -1.0, 3.0, 2.0], 2, 2, Granularity::PerChannel, Parallelism::SERIAL)?;
/// assert_eq!(w.shape(), (2, 2));
/// assert_eq!(w.method(), Some(quant_kernels::QuantMethod::Int8Symmetric { per_channel: true }));
/// let top = w.shard(&Shard::Simple { dim: 0, rank: 0, world_size: 2 })?;
/// let bottom = w.shard(&Shard::Simple { dim: 0, rank: 1, world_size: 2 })?;
/// let both = quant_kernels::intx::Int8Tensor::concat(&[&top, &bottom])?;
/// assert_eq!(both.dequantize::<f32>(Parallelism::SERIAL)?, w.dequantize::<f32>(Parallelism::SERIAL)?);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub trait QuantScheme: Sized {
    /// The scheme's name (`"dense"`, `"hqq"`, `"gptq"`, `"awq"`, `"fp8"`, `"int8"`, `"int4"`).
    const NAME: &'static str;

    /// `(out, in)`: outputs and inputs of the layer.
    fn shape(&self) -> (usize, usize);

    /// Check every length, group index and width against the shape (no allocation sized by
    /// the input, no panic).
    fn validate(&self) -> Result<()>;

    /// The scheme and its parameters as a [`QuantMethod`] (`None` for a dense weight): what
    /// [`QuantMethod::layer_bytes`] prices and a checkpoint's config names.
    fn method(&self) -> Option<QuantMethod>;

    /// Bytes of the weight as the scheme stores it (codes, scales, zeros, `g_idx`; not the
    /// bias): what one multiply reads.
    fn stored_bytes(&self) -> usize;

    /// The weight `[out, in]` row-major through the scheme's fast dequantizer, into `out`.
    fn dequantize_into<O: Elem>(&self, out: &mut [O], par: Parallelism) -> Result<()>;

    /// The weight `[out, in]` through the scheme's naive reference dequantizer (the oracle the
    /// fast path is tested against), in `f32`.
    fn dequantize_reference_into(&self, out: &mut [f32]) -> Result<()>;

    /// The allocating form of [`QuantScheme::dequantize_into`].
    fn dequantize<O: Elem>(&self, par: Parallelism) -> Result<Vec<O>> {
        let mut out = vec![O::default(); numel(self.shape())?];
        self.dequantize_into(&mut out, par)?;
        Ok(out)
    }

    /// The part of this weight a rank holds, still packed: its dequantization equals the same
    /// part of the whole weight's dequantization, bit for bit (see [`crate::QuantWeight::shard`]
    /// for each scheme's boundary rules). A layer's own bias follows dim 0.
    fn shard(&self, shard: &Shard) -> Result<Self>;

    /// `parts` stacked along the outputs, still packed: the result dequantizes to the parts'
    /// dequantizations one after another, bit for bit. Parts that cannot be stacked without
    /// requantizing return [`KernelError::Fuse`] naming the first part that differs.
    fn concat(parts: &[&Self]) -> Result<Self>;
}

/// `out = [n, k]`, the transpose of the `[k, n]` that `fill` writes: the `[out, in]` form of a
/// scheme stored `[in, out]` (GPTQ, AWQ).
pub(crate) fn transposed_into<O: Elem>(
    (k, n): (usize, usize),
    out: &mut [O],
    par: Parallelism,
    fill: impl FnOnce(&mut [O]) -> Result<()>,
) -> Result<()> {
    crate::error::expect_len("out", k * n, out.len())?;
    let mut kn = vec![O::default(); k * n];
    fill(&mut kn)?;
    out.copy_from_slice(&crate::par::transpose(&kn, k, n, par));
    Ok(())
}

/// `out * in`, checked.
pub(crate) fn numel((rows, cols): (usize, usize)) -> Result<usize> {
    rows.checked_mul(cols).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols }))
}

/// The first part to stack, or [`KernelError::Fuse`] when there is none.
pub(crate) fn first<'a, T>(parts: &[&'a T]) -> Result<&'a T> {
    parts.first().copied().ok_or(Error::Kernel(KernelError::Fuse { what: "parts", part: 0 }))
}

/// [`KernelError::Fuse`] naming `what` and the first part whose `key` differs from part 0's.
pub(crate) fn agree<T, K: PartialEq>(parts: &[&T], what: &'static str, key: impl Fn(&T) -> K) -> Result<()> {
    let k0 = key(first(parts)?);
    match parts.iter().skip(1).position(|p| key(p) != k0) {
        Some(i) => Err(Error::Kernel(KernelError::Fuse { what, part: i + 1 })),
        None => Ok(()),
    }
}

/// The dtype and the bit patterns of `v` (to compare scales exactly: `-0.0` is not `0.0`).
pub(crate) fn bits_of(v: &FloatVec) -> (FloatType, Vec<u32>) {
    let bits = match v {
        FloatVec::F32(x) => x.iter().map(|f| f.to_bits()).collect(),
        FloatVec::F16(x) => x.iter().map(|f| u32::from(f.to_bits())).collect(),
        FloatVec::Bf16(x) => x.iter().map(|f| u32::from(f.to_bits())).collect(),
    };
    (v.dtype(), bits)
}

/// `vs` one after another (one dtype, checked by the caller).
pub(crate) fn concat_floats<'a>(
    vs: impl Iterator<Item = &'a FloatVec>,
    what: &'static str,
) -> Result<FloatVec> {
    let parts: Vec<(&FloatVec, usize)> = vs.map(|v| (v, v.len())).collect();
    FloatVec::concat_columns(&parts, 1).ok_or(Error::Kernel(KernelError::Fuse { what, part: 0 }))
}

/// The parts' own biases one after another: all or none, in one dtype.
pub(crate) fn concat_bias<T>(
    parts: &[&T],
    bias: impl Fn(&T) -> Option<&FloatVec>,
) -> Result<Option<FloatVec>> {
    agree(parts, "bias", |p| bias(p).map(FloatVec::dtype))?;
    if bias(first(parts)?).is_none() {
        return Ok(None);
    }
    concat_floats(parts.iter().filter_map(|p| bias(p)), "bias").map(Some)
}

/// A layer's stored tensors as a shard reads them: regions (rows, columns) of each part seen as
/// `[rows, last dimension]` (a 1-D part is one row). A scheme's shard is written once against
/// this, so it runs on a layer in memory ([`InMemory`]) and on a checkpoint, reading only the
/// shard's bytes (`io::quantized::CheckpointParts`).
pub(crate) trait Parts {
    /// Rows `rows`, columns `cols` of an `i32` part.
    fn i32s(&self, part: &'static str, rows: Range<usize>, cols: Range<usize>) -> Result<Vec<i32>>;
    /// Rows `rows`, columns `cols` of a float part, in its stored type.
    fn floats(&self, part: &'static str, rows: Range<usize>, cols: Range<usize>) -> Result<FloatVec>;
    /// Rows `rows`, columns `cols` of a one-byte part (FP8 codes), as stored.
    fn bytes(&self, part: &'static str, rows: Range<usize>, cols: Range<usize>) -> Result<Vec<u8>>;
}

/// One part of a layer in memory and its row length.
pub(crate) enum Part<'a> {
    /// `i32` values, `usize` per row.
    I32(&'a [i32], usize),
    /// Floats, `usize` per row.
    Floats(&'a FloatVec, usize),
    /// Bytes, `usize` per row.
    U8(&'a [u8], usize),
}

/// A layer's parts in memory, by name (the caller has checked their lengths).
pub(crate) struct InMemory<'a>(pub(crate) Vec<(&'static str, Part<'a>)>);

impl InMemory<'_> {
    fn get(&self, part: &'static str) -> Result<&Part<'_>> {
        self.0.iter().find(|(n, _)| *n == part).map(|(_, p)| p).ok_or_else(|| missing(part))
    }
}

/// A part the layer does not have (in the type asked for).
fn missing(part: &str) -> Error {
    Error::Format(crate::error::FormatError::MissingTensors(vec![part.to_string()]))
}

/// Rows `rows`, columns `cols` of a row-major matrix with rows of `width`.
fn region<T: Copy>(v: &[T], width: usize, rows: Range<usize>, cols: Range<usize>) -> Vec<T> {
    crate::tp::shard::column_range(&v[rows.start * width..rows.end * width], rows.len(), width, cols)
}

impl Parts for InMemory<'_> {
    fn i32s(&self, part: &'static str, rows: Range<usize>, cols: Range<usize>) -> Result<Vec<i32>> {
        match self.get(part)? {
            Part::I32(v, w) => Ok(region(v, *w, rows, cols)),
            _ => Err(missing(part)),
        }
    }

    fn floats(&self, part: &'static str, rows: Range<usize>, cols: Range<usize>) -> Result<FloatVec> {
        match self.get(part)? {
            Part::Floats(v, w) => {
                Ok(crate::with_float_vec!(v, x => FloatVec::from(region(x, *w, rows, cols))))
            }
            _ => Err(missing(part)),
        }
    }

    fn bytes(&self, part: &'static str, rows: Range<usize>, cols: Range<usize>) -> Result<Vec<u8>> {
        match self.get(part)? {
            Part::U8(v, w) => Ok(region(v, *w, rows, cols)),
            _ => Err(missing(part)),
        }
    }
}
