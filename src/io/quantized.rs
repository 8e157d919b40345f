//! Quantized checkpoints: [`QuantCheckpoint<L>`], one generic type over the scheme's layer type
//! (`GptqLayer`, `AwqLayer`, `Fp8Layer`), and [`QuantizedCheckpoint`], whichever of them a
//! directory's `quant_method` names.
//!
//! What a scheme's layers look like in a checkpoint (which tensors, which shapes and dtypes,
//! its config) is its [`CheckpointLayer`] implementation, in the scheme's `checkpoint.rs`;
//! opening, listing, reading and summarizing layers is written once here.

use super::{Checkpoint, Dtype, NamedTensor};
use crate::awq::AwqLayer;
use crate::elem::{Elem, FloatVec};
use crate::error::{Error, FormatError, Result};
use crate::fp8::Fp8Layer;
use crate::gptq::GptqLayer;
use crate::layer::QuantWeight;
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::scheme::{Parts, QuantScheme};
use crate::tp::Shard;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

/// How one scheme's layers are stored in a checkpoint, implemented by the scheme's layer type.
pub trait CheckpointLayer: QuantScheme {
    /// The scheme's quantization config (`quantization_config` / `quantize_config.json`).
    type Config: std::fmt::Debug + Clone;
    /// Where one layer's tensors are and what they describe, known from the headers alone.
    type Info: std::fmt::Debug + Clone + PartialEq;

    /// The tensor suffix that names a layer (`qweight`, `weight`): the file a layer's tensors
    /// go to is the one that holds `<prefix>.<PRIMARY>`.
    const PRIMARY: &'static str;

    /// Whether `part` (the suffix after the layer's prefix) is one of a layer's stored parts;
    /// the bias is not (it is a plain tensor, copied as it is).
    fn is_part(part: &str) -> bool;

    /// Parse the scheme's config.
    fn parse_config(json: &serde_json::Value) -> Result<Self::Config>;

    /// Find every layer and check every shape and dtype against the config, from the headers.
    fn find_layers(checkpoint: &Checkpoint, config: &Self::Config) -> Result<BTreeMap<String, Self::Info>>;

    /// Read one layer's tensors.
    fn read(checkpoint: &Checkpoint, config: &Self::Config, info: &Self::Info, prefix: &str) -> Result<Self>;

    /// One layer's summary (shape, method, bytes).
    fn summary(config: &Self::Config, prefix: &str, info: &Self::Info) -> LayerSummary;

    /// Rank `shard`'s part of one layer: [`CheckpointLayer::read`] then [`QuantScheme::shard`],
    /// bit for bit. GPTQ, AWQ and FP8 read only the shard's regions of each tensor (its rows, or
    /// its columns row by row).
    fn read_shard(
        checkpoint: &Checkpoint,
        config: &Self::Config,
        info: &Self::Info,
        prefix: &str,
        shard: &Shard,
    ) -> Result<Self> {
        Self::read(checkpoint, config, info, prefix)?.shard(shard)
    }

    /// This layer's tensors as [`CheckpointLayer::read`] reads them (`<prefix>.<part>`, the bias
    /// included), for writing a checkpoint of the same config: a layer read and written back
    /// gives the checkpoint's own bytes, and a shard of it (`QuantScheme::shard`) the same names
    /// with the shard's shapes. `info` is the layer as found in `checkpoint` (the unsharded
    /// original), for what the layer itself does not say (a tensor's stored shape or name).
    fn tensors(
        &self,
        checkpoint: &Checkpoint,
        config: &Self::Config,
        info: &Self::Info,
        prefix: &str,
    ) -> Result<Vec<NamedTensor>>;
}

/// A checkpoint whose layers of scheme `L` have been found and checked: every shape and dtype
/// against the config, before any tensor is read.
#[derive(Debug, Clone)]
pub struct QuantCheckpoint<L: CheckpointLayer> {
    checkpoint: Checkpoint,
    config: L::Config,
    layers: BTreeMap<String, L::Info>,
}

impl<L: CheckpointLayer> QuantCheckpoint<L> {
    /// Open the checkpoint in `dir` (see [`Checkpoint::open`]), parse its config, find every
    /// layer and check every shape and dtype; nothing is dequantized.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_checkpoint(Checkpoint::open(dir)?)
    }

    /// [`QuantCheckpoint::open`] on an already opened checkpoint.
    pub fn from_checkpoint(checkpoint: Checkpoint) -> Result<Self> {
        let config = L::parse_config(checkpoint.require_quantization_config()?)?;
        let layers = L::find_layers(&checkpoint, &config)?;
        Ok(Self { checkpoint, config, layers })
    }

    /// The underlying checkpoint (unquantized tensors, raw reads).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The parsed quantization config.
    pub fn config(&self) -> &L::Config {
        &self.config
    }

    /// Every layer, by prefix.
    pub fn layers(&self) -> &BTreeMap<String, L::Info> {
        &self.layers
    }

    /// The layer at `prefix`, or [`FormatError::MissingTensors`] naming its primary tensor.
    pub fn info(&self, prefix: &str) -> Result<&L::Info> {
        self.layers.get(prefix).ok_or_else(|| {
            Error::Format(FormatError::MissingTensors(vec![format!("{prefix}.{}", L::PRIMARY)]))
        })
    }

    /// Whether `tensor` is one of a layer's stored parts rather than a plain tensor (a layer's
    /// bias counts as plain).
    pub fn is_quantized_part(&self, tensor: &str) -> bool {
        tensor
            .rsplit_once('.')
            .is_some_and(|(prefix, part)| L::is_part(part) && self.layers.contains_key(prefix))
    }

    /// Read one layer's tensors.
    pub fn load(&self, prefix: &str) -> Result<L> {
        L::read(&self.checkpoint, &self.config, self.info(prefix)?, prefix)
    }

    /// Read rank `shard`'s part of one layer (see [`CheckpointLayer::read_shard`]).
    pub fn load_shard(&self, prefix: &str, shard: &Shard) -> Result<L> {
        L::read_shard(&self.checkpoint, &self.config, self.info(prefix)?, prefix, shard)
    }

    /// `layer` (this checkpoint's layer at `prefix`, or a shard of it) as named tensors, ready
    /// to write (see [`CheckpointLayer::tensors`]).
    pub fn tensors(&self, prefix: &str, layer: &L) -> Result<Vec<NamedTensor>> {
        layer.tensors(&self.checkpoint, &self.config, self.info(prefix)?, prefix)
    }

    /// The summary of layer `prefix`, if there is one.
    pub fn summary(&self, prefix: &str) -> Option<LayerSummary> {
        self.layers.get(prefix).map(|i| L::summary(&self.config, prefix, i))
    }

    /// Every layer's summary, sorted by prefix.
    pub fn summaries(&self) -> Vec<LayerSummary> {
        self.layers.iter().map(|(p, i)| L::summary(&self.config, p, i)).collect()
    }
}

/// One quantized layer of a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSummary {
    /// Name prefix (`<prefix>.weight` is its dense name).
    pub prefix: String,
    /// Stacked experts (1 unless an FP8 MoE weight is `[E, out, in]`).
    pub experts: usize,
    /// Outputs (rows of the dense `[out, in]` weight, per expert).
    pub out: usize,
    /// Inputs.
    pub inp: usize,
    /// The scheme and its parameters.
    pub method: QuantMethod,
    /// Bytes of the layer's stored tensors (bias included).
    pub stored_bytes: usize,
    /// The bias dtype, if the layer has one (`<prefix>.bias`, copied as it is).
    pub bias: Option<Dtype>,
}

/// A GPTQ, AWQ or FP8 checkpoint, chosen by its config's `quant_method`: open a directory, list
/// its quantized layers with their [`QuantMethod`] and bytes, dequantize one layer at a time to
/// the `[out, in]` orientation of an unquantized checkpoint.
#[derive(Debug, Clone)]
pub enum QuantizedCheckpoint {
    /// `quant_method: "gptq"` (also when absent: auto-gptq's `quantize_config.json` omits it).
    Gptq(QuantCheckpoint<GptqLayer>),
    /// `quant_method: "awq"`.
    Awq(QuantCheckpoint<AwqLayer>),
    /// `quant_method: "fp8"`.
    Fp8(QuantCheckpoint<Fp8Layer>),
}

/// `$body` with `$c` bound to the scheme's checkpoint, whatever the variant.
macro_rules! each {
    ($self:expr, $c:ident => $body:expr) => {
        match $self {
            QuantizedCheckpoint::Gptq($c) => $body,
            QuantizedCheckpoint::Awq($c) => $body,
            QuantizedCheckpoint::Fp8($c) => $body,
        }
    };
}

impl QuantizedCheckpoint {
    /// Open `dir` and dispatch on `quant_method`; every check of the scheme's `open` runs.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let ck = Checkpoint::open(dir)?;
        let method = ck
            .require_quantization_config()?
            .get("quant_method")
            .and_then(|m| m.as_str())
            .unwrap_or("gptq")
            .to_ascii_lowercase();
        match method.as_str() {
            "gptq" => Ok(Self::Gptq(QuantCheckpoint::from_checkpoint(ck)?)),
            "awq" => Ok(Self::Awq(QuantCheckpoint::from_checkpoint(ck)?)),
            "fp8" => Ok(Self::Fp8(QuantCheckpoint::from_checkpoint(ck)?)),
            other => Err(Error::Format(FormatError::Config {
                field: "quant_method".into(),
                reason: format!("`{other}` (supported: gptq, awq, fp8)"),
            })),
        }
    }

    /// The underlying checkpoint (every tensor, raw reads).
    pub fn checkpoint(&self) -> &Checkpoint {
        each!(self, c => c.checkpoint())
    }

    /// The quantized layers, sorted by prefix.
    pub fn layers(&self) -> Vec<LayerSummary> {
        each!(self, c => c.summaries())
    }

    /// Whether `tensor` is a stored part of a quantized layer (its bias is not: it is copied).
    pub fn is_quantized_part(&self, tensor: &str) -> bool {
        each!(self, c => c.is_quantized_part(tensor))
    }

    /// The summary of the quantized layer `prefix`, if there is one.
    pub fn summary(&self, prefix: &str) -> Option<LayerSummary> {
        each!(self, c => c.summary(prefix))
    }

    /// Whether `prefix` is one of the quantized layers.
    pub fn is_quantized_layer(&self, prefix: &str) -> bool {
        each!(self, c => c.layers().contains_key(prefix))
    }

    /// Read one layer, as a [`QuantWeight`] (a `QuantLinear` or a shard is a call away).
    pub fn load(&self, prefix: &str) -> Result<QuantWeight> {
        each!(self, c => c.load(prefix).map(QuantWeight::from))
    }

    /// Read rank `shard`'s part of one layer, reading only its bytes where the scheme allows
    /// ([`CheckpointLayer::read_shard`]).
    pub fn load_shard(&self, prefix: &str, shard: &Shard) -> Result<QuantWeight> {
        each!(self, c => c.load_shard(prefix, shard).map(QuantWeight::from))
    }

    /// `weight` (this checkpoint's layer at `prefix`, or a shard of it) as named tensors, ready
    /// to write; a weight of another scheme is [`FormatError::SchemeMismatch`].
    pub fn tensors(&self, prefix: &str, weight: &QuantWeight) -> Result<Vec<NamedTensor>> {
        let mismatch = || {
            Error::Format(FormatError::SchemeMismatch { checkpoint: self.scheme(), weight: weight.scheme() })
        };
        match (self, weight) {
            (Self::Gptq(c), QuantWeight::Gptq(l)) => c.tensors(prefix, l),
            (Self::Awq(c), QuantWeight::Awq(l)) => c.tensors(prefix, l),
            (Self::Fp8(c), QuantWeight::Fp8(l)) => c.tensors(prefix, l),
            _ => Err(mismatch()),
        }
    }

    /// The scheme's name (`gptq`, `awq`, `fp8`).
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Gptq(_) => GptqLayer::NAME,
            Self::Awq(_) => AwqLayer::NAME,
            Self::Fp8(_) => Fp8Layer::NAME,
        }
    }

    /// Read and dequantize one layer in its stored orientation: `(w, true)` with `w` `[in,
    /// out]` for GPTQ and AWQ, `(w, false)` with `w` `[out, in]` (`[E, out, in]`) for FP8.
    /// Writers that transpose block by block avoid the second full-size buffer of
    /// [`QuantizedCheckpoint::dequantize`].
    pub fn dequantize_stored<O: Elem>(&self, prefix: &str, par: Parallelism) -> Result<(Vec<O>, bool)> {
        match self {
            Self::Gptq(c) => Ok((c.load(prefix)?.dequantize_kn(par)?, true)),
            Self::Awq(c) => Ok((c.load(prefix)?.dequantize_kn(par)?, true)),
            Self::Fp8(c) => Ok((c.load(prefix)?.dequantize_experts(par)?, false)),
        }
    }

    /// Read and dequantize one layer to `[out, in]` (`[E, out, in]` for stacked experts).
    pub fn dequantize<O: Elem>(&self, prefix: &str, par: Parallelism) -> Result<Vec<O>> {
        match self {
            Self::Gptq(c) => c.load(prefix)?.dequantize(par),
            Self::Awq(c) => c.load(prefix)?.dequantize(par),
            Self::Fp8(c) => c.load(prefix)?.dequantize_experts(par),
        }
    }
}

/// One layer's tensors in a checkpoint (`<prefix>.<part>`), read region by region.
pub(crate) struct CheckpointParts<'a> {
    /// The checkpoint.
    pub(crate) checkpoint: &'a Checkpoint,
    /// The layer's name prefix.
    pub(crate) prefix: &'a str,
}

impl Parts for CheckpointParts<'_> {
    fn i32s(&self, part: &'static str, rows: Range<usize>, cols: Range<usize>) -> Result<Vec<i32>> {
        self.checkpoint.read_region_as(&format!("{}.{part}", self.prefix), rows, cols)
    }

    fn floats(&self, part: &'static str, rows: Range<usize>, cols: Range<usize>) -> Result<FloatVec> {
        self.checkpoint.read_floats_region(&format!("{}.{part}", self.prefix), rows, cols)
    }

    fn bytes(&self, part: &'static str, rows: Range<usize>, cols: Range<usize>) -> Result<Vec<u8>> {
        let name = format!("{}.{part}", self.prefix);
        if let Some(i) = self.checkpoint.info(&name).filter(|i| i.dtype.size() != 1) {
            let got = i.dtype.to_string();
            return Err(Error::Format(FormatError::TensorDtype {
                tensor: name,
                expected: "a one-byte dtype",
                got,
            }));
        }
        self.checkpoint.read_region(&name, rows, cols)
    }
}
