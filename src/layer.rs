//! [`QuantWeight`]: a weight `[out, in]` in any scheme, the closed enum over the
//! [`QuantScheme`] implementations. Every method is one delegating `match`; what a scheme
//! does lives in its folder.

use crate::awq::AwqLayer;
use crate::dense::DenseWeight;
use crate::elem::{Elem, FloatVec};
use crate::error::{Error, KernelError, Result};
use crate::fp8::Fp8Layer;
use crate::gptq::GptqLayer;
use crate::hqq::HqqWeight;
use crate::intx::{Int4Tensor, Int8Tensor};
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::scheme::QuantScheme;
use crate::tp::Shard;

/// A weight `[out, in]` in any scheme the crate multiplies, shards and stacks.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantWeight {
    /// Unquantized.
    Dense(DenseWeight),
    /// HQQ, any width and axis.
    Hqq(HqqWeight),
    /// GPTQ (`[K, N]` storage).
    Gptq(GptqLayer),
    /// AWQ (GEMM layout).
    Awq(AwqLayer),
    /// FP8 codes with per-tensor or block scales (one expert).
    Fp8(Fp8Layer),
    /// int8 symmetric.
    Int8(Int8Tensor),
    /// int4 asymmetric group-wise.
    Int4(Int4Tensor),
}

/// `$body` with `$w` bound to the scheme's weight, whatever the variant.
macro_rules! delegate {
    ($self:expr, $w:ident => $body:expr) => {
        match $self {
            QuantWeight::Dense($w) => $body,
            QuantWeight::Hqq($w) => $body,
            QuantWeight::Gptq($w) => $body,
            QuantWeight::Awq($w) => $body,
            QuantWeight::Fp8($w) => $body,
            QuantWeight::Int8($w) => $body,
            QuantWeight::Int4($w) => $body,
        }
    };
}

/// `$body` (a `Result` of the scheme's type) wrapped back into the same variant.
macro_rules! delegate_into {
    ($self:expr, $w:ident => $body:expr) => {
        match $self {
            QuantWeight::Dense($w) => $body.map(QuantWeight::Dense),
            QuantWeight::Hqq($w) => $body.map(QuantWeight::Hqq),
            QuantWeight::Gptq($w) => $body.map(QuantWeight::Gptq),
            QuantWeight::Awq($w) => $body.map(QuantWeight::Awq),
            QuantWeight::Fp8($w) => $body.map(QuantWeight::Fp8),
            QuantWeight::Int8($w) => $body.map(QuantWeight::Int8),
            QuantWeight::Int4($w) => $body.map(QuantWeight::Int4),
        }
    };
}

macro_rules! from_scheme {
    ($($variant:ident($ty:ty)),*) => {
        $(impl From<$ty> for QuantWeight {
            fn from(w: $ty) -> Self {
                QuantWeight::$variant(w)
            }
        })*
    };
}
from_scheme!(
    Dense(DenseWeight),
    Hqq(HqqWeight),
    Gptq(GptqLayer),
    Awq(AwqLayer),
    Fp8(Fp8Layer),
    Int8(Int8Tensor),
    Int4(Int4Tensor)
);

fn name<T: QuantScheme>(_: &T) -> &'static str {
    T::NAME
}

impl QuantWeight {
    /// A dense weight `[rows, cols]`.
    pub fn dense(rows: usize, cols: usize, w: impl Into<FloatVec>) -> Self {
        QuantWeight::Dense(DenseWeight { rows, cols, w: w.into() })
    }

    /// Take the bias a checkpoint layer carries (GPTQ, AWQ, FP8 layers hold theirs; the
    /// others none): `QuantLinear::new` takes the bias separately.
    pub fn take_bias(&mut self) -> Option<FloatVec> {
        match self {
            QuantWeight::Gptq(l) => l.bias.take(),
            QuantWeight::Awq(l) => l.bias.take(),
            QuantWeight::Fp8(l) => l.bias.take(),
            QuantWeight::Dense(_) | QuantWeight::Hqq(_) | QuantWeight::Int8(_) | QuantWeight::Int4(_) => None,
        }
    }

    /// The scheme's name: `dense`, `hqq`, `gptq`, `awq`, `fp8`, `int8` or `int4`
    /// ([`QuantScheme::NAME`]).
    pub fn scheme(&self) -> &'static str {
        delegate!(self, w => name(w))
    }

    /// `(out, in)` ([`QuantScheme::shape`]).
    pub fn shape(&self) -> (usize, usize) {
        delegate!(self, w => w.shape())
    }

    /// Check every length against the shape ([`QuantScheme::validate`]).
    pub fn validate(&self) -> Result<()> {
        delegate!(self, w => w.validate())
    }

    /// The scheme and its parameters (`None` for a dense weight), [`QuantScheme::method`].
    pub fn method(&self) -> Option<QuantMethod> {
        delegate!(self, w => w.method())
    }

    /// Bytes as the scheme stores them ([`QuantScheme::stored_bytes`]).
    pub fn stored_bytes(&self) -> usize {
        delegate!(self, w => w.stored_bytes())
    }

    /// `[out, in]` through the scheme's fast dequantizer ([`QuantScheme::dequantize_into`]).
    pub fn dequantize_into<O: Elem>(&self, out: &mut [O], par: Parallelism) -> Result<()> {
        delegate!(self, w => w.dequantize_into(out, par))
    }

    /// The allocating form of [`QuantWeight::dequantize_into`].
    pub fn dequantize<O: Elem>(&self, par: Parallelism) -> Result<Vec<O>> {
        delegate!(self, w => w.dequantize(par))
    }

    /// `[out, in]` through the scheme's naive reference ([`QuantScheme::dequantize_reference_into`]).
    pub fn dequantize_reference_into(&self, out: &mut [f32]) -> Result<()> {
        delegate!(self, w => w.dequantize_reference_into(out))
    }

    /// This shard of the weight, still packed: its dequantization equals the same shard of the
    /// whole weight's dequantization, bit for bit. Nothing is ever requantized or
    /// dequantized: codes are sliced (or unpacked and repacked unchanged), and every weight
    /// keeps its own scale and zero point. A cut that would leave a group or a pack word
    /// partly on either side returns [`TpError::ShardBoundary`](crate::error::TpError::ShardBoundary) naming the boundary.
    ///
    /// | scheme | dim 0 (outputs) | dim 1 (inputs) |
    /// |---|---|---|
    /// | dense | any | any |
    /// | GPTQ (`[K, N]`) | on a zero-point pack word (`32 / bits` columns, 32 for 3-bit); act-order too | on a `qweight` word row; without act-order also on a group (the last may end at K); with act-order every group is kept and `g_idx` sliced ([`crate::gptq::GptqLayout::with_groups`]) |
    /// | HQQ, every width, axis 1 | on a group (`group / gcd(group, cols)` rows) | group size a multiple of `cols` (incl. one group per row): any; a divisor of `cols`: on a group; else [`TpError::ShardGrouping`](crate::error::TpError::ShardGrouping) |
    /// | HQQ, every width, axis 0 | on a code row (`M / gcd(M, cols)` rows, `M = numel / group`); the shard keeps all `M` groups, each with fewer members | `M` a multiple of `cols` (`group` divides `rows`, incl. one group per column): any; `M` a divisor of `cols`: on a code row; else [`TpError::ShardGrouping`](crate::error::TpError::ShardGrouping) |
    /// | AWQ (`[K, N/8]`) | on a pack word (8 columns) | on a group |
    /// | FP8, one expert | on a scale block (the end may be the last row), or within one block (per-tensor: any) | the same with block columns |
    /// | int8 | any (per-channel scales follow the rows) | any |
    /// | int4 | any | on a group |
    ///
    /// HQQ codes are unpacked and repacked for the shard's own code matrix (hqq's planar
    /// packing pairs rows of the two halves), so the shard's code-row count must suit the
    /// width ([`KernelError::PackRows`] otherwise; 3-bit pads). A shard of a group-wise layout whose
    /// groups span the cut dimension (HQQ axis 0 along the outputs, axis 1 with groups of
    /// whole rows along the inputs) keeps those groups, each with the members it holds, so its
    /// group size is the whole's scaled by the shard's share. Stacked FP8 experts are refused
    /// ([`KernelError::StackedExperts`]; split them with [`crate::tp::split_fp8_experts`]). The
    /// layer's bias (GPTQ, AWQ, FP8) follows dim 0 and is kept whole for dim 1.
    ///
    /// ```
    /// use quant_kernels::tp::Shard;
    /// use quant_kernels::{Parallelism, QuantWeight};
    /// let w = QuantWeight::dense(2, 3, vec![0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0]);
    /// let s = w.shard(&Shard::Offset { dim: 1, offset: 1, len: 2 })?;
    /// assert_eq!(s.shape(), (2, 2));
    /// assert_eq!(s.dequantize::<f32>(Parallelism::SERIAL)?, [1.0, 2.0, 4.0, 5.0]);
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn shard(&self, shard: &Shard) -> Result<Self> {
        delegate_into!(self, w => w.shard(shard))
    }

    /// Weights of one scheme stacked along their outputs, still packed
    /// ([`QuantScheme::concat`]): the result dequantizes to the parts' dequantizations one
    /// after another, bit for bit. Parts of different schemes return [`KernelError::Fuse`] naming the
    /// first that differs; one part is returned as it is.
    pub fn concat(mut parts: Vec<QuantWeight>) -> Result<Self> {
        let Some(first) = parts.first() else {
            return Err(Error::Kernel(KernelError::Fuse { what: "parts", part: 0 }));
        };
        if let Some(part) = parts.iter().position(|w| w.scheme() != first.scheme()) {
            return Err(Error::Kernel(KernelError::Fuse { what: "scheme", part }));
        }
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        // The parts' inner weights (all of `$variant`, checked above).
        macro_rules! stack {
            ($variant:ident, $ty:ty) => {{
                let inner: Vec<&$ty> = parts
                    .iter()
                    .filter_map(|w| if let QuantWeight::$variant(x) = w { Some(x) } else { None })
                    .collect();
                <$ty>::concat(&inner).map(QuantWeight::$variant)
            }};
        }
        match &parts[0] {
            QuantWeight::Dense(_) => stack!(Dense, DenseWeight),
            QuantWeight::Hqq(_) => stack!(Hqq, HqqWeight),
            QuantWeight::Gptq(_) => stack!(Gptq, GptqLayer),
            QuantWeight::Awq(_) => stack!(Awq, AwqLayer),
            QuantWeight::Fp8(_) => stack!(Fp8, Fp8Layer),
            QuantWeight::Int8(_) => stack!(Int8, Int8Tensor),
            QuantWeight::Int4(_) => stack!(Int4, Int4Tensor),
        }
    }
}
