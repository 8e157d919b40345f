//! A quantized checkpoint of any supported scheme, behind one interface: open a directory, list
//! its quantized layers with their [`QuantMethod`] and bytes, dequantize one layer at a time to
//! the `[out, in]` orientation of an unquantized checkpoint.

use crate::awq::AwqCheckpoint;
use crate::elem::Elem;
use crate::error::{Error, Result};
use crate::fp8::Fp8Checkpoint;
use crate::gptq::GptqCheckpoint;
use crate::io::{Checkpoint, Dtype};
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::scheme::QuantScheme;
use std::path::Path;

/// A GPTQ, AWQ or FP8 checkpoint, chosen by its config's `quant_method`.
#[derive(Debug, Clone)]
pub enum QuantizedModel {
    /// `quant_method: "gptq"` (also when absent: auto-gptq's `quantize_config.json` omits it).
    Gptq(GptqCheckpoint),
    /// `quant_method: "awq"`.
    Awq(AwqCheckpoint),
    /// `quant_method: "fp8"`.
    Fp8(Fp8Checkpoint),
}

/// One quantized layer of a [`QuantizedModel`].
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

impl QuantizedModel {
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
            "gptq" => Ok(Self::Gptq(GptqCheckpoint::from_checkpoint(ck)?)),
            "awq" => Ok(Self::Awq(AwqCheckpoint::from_checkpoint(ck)?)),
            "fp8" => Ok(Self::Fp8(Fp8Checkpoint::from_checkpoint(ck)?)),
            other => Err(Error::Config {
                field: "quant_method".into(),
                reason: format!("`{other}` (supported: gptq, awq, fp8)"),
            }),
        }
    }

    /// The underlying checkpoint (every tensor, raw reads).
    pub fn checkpoint(&self) -> &Checkpoint {
        match self {
            Self::Gptq(c) => c.checkpoint(),
            Self::Awq(c) => c.checkpoint(),
            Self::Fp8(c) => c.checkpoint(),
        }
    }

    /// The quantized layers, sorted by prefix.
    pub fn layers(&self) -> Vec<LayerSummary> {
        match self {
            Self::Gptq(c) => {
                let cfg = c.config();
                c.layers()
                    .values()
                    .map(|i| LayerSummary {
                        prefix: i.prefix.clone(),
                        experts: 1,
                        out: i.layout.n(),
                        inp: i.layout.k(),
                        method: QuantMethod::Gptq {
                            bits: cfg.bits,
                            group: i.layout.group_size(),
                            act_order: cfg.desc_act,
                        },
                        stored_bytes: i.stored_bytes(),
                        bias: i.bias,
                    })
                    .collect()
            }
            Self::Awq(c) => c
                .layers()
                .values()
                .map(|i| LayerSummary {
                    prefix: i.prefix.clone(),
                    experts: 1,
                    out: i.layout.n(),
                    inp: i.layout.k(),
                    method: QuantMethod::Awq { group: i.layout.group_size() },
                    stored_bytes: i.stored_bytes(),
                    bias: i.bias,
                })
                .collect(),
            Self::Fp8(c) => c
                .layers()
                .values()
                .map(|i| LayerSummary {
                    prefix: i.prefix.clone(),
                    experts: i.experts,
                    out: i.layout.rows(),
                    inp: i.layout.cols(),
                    method: QuantMethod::Fp8 { format: i.format, block: c.config().block },
                    stored_bytes: i.stored_bytes(),
                    bias: i.bias,
                })
                .collect(),
        }
    }

    /// Whether `tensor` is a stored part of a quantized layer (its bias is not: it is copied).
    pub fn is_quantized_part(&self, tensor: &str) -> bool {
        match self {
            Self::Gptq(c) => c.is_quantized_part(tensor),
            Self::Awq(c) => c.is_quantized_part(tensor),
            Self::Fp8(c) => c.is_quantized_part(tensor),
        }
    }

    /// Read and dequantize one layer in its stored orientation: `(w, true)` with `w` `[in,
    /// out]` for GPTQ and AWQ, `(w, false)` with `w` `[out, in]` (`[E, out, in]`) for FP8.
    /// Writers that transpose block by block avoid the second full-size buffer of
    /// [`QuantizedModel::dequantize`].
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
