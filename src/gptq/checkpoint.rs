//! GPTQ checkpoints: the quantized layers of a [`Checkpoint`], found by their tensor names and
//! cross-checked against the config before anything is read.
//!
//! A layer `<prefix>` is the tensors `<prefix>.qweight` (I32 `[K*bits/32, N]`), `.qzeros` (I32
//! `[G, N*bits/32]`), `.scales` (F16/BF16/F32 `[G, N]`), optionally `.g_idx` (I32 `[K]`; absent
//! means `k / group_size`) and `.bias` (float `[N]`). K comes from `g_idx` when present, else
//! from `qweight`'s rows and the config's bits. With a `g_idx`, `G` may exceed `ceil(K /
//! group_size)`: a tensor-parallel shard of an act-order layer along its inputs keeps every
//! group of the whole (`qk shard` writes such layers).

use super::{GptqConfig, GptqLayout, ZeroFormat, ZeroFormatMismatch};
use crate::elem::{Elem, FloatVec};
use crate::error::{Error, Result};
use crate::io::checkpoint::FLOATS;
use crate::io::{Checkpoint, Dtype, TensorInfo};
use crate::par::Parallelism;
use std::collections::BTreeMap;
use std::path::Path;

/// Where a layer's tensors are and what shape they describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptqLayerInfo {
    /// The layer's name prefix (`model.layers.0.self_attn.q_proj`).
    pub prefix: String,
    /// Its shape and quantization parameters.
    pub layout: GptqLayout,
    /// Dtype of `scales`.
    pub scale_dtype: Dtype,
    /// Whether a `g_idx` tensor is stored.
    pub has_g_idx: bool,
    /// Dtype of the bias, if there is one.
    pub bias: Option<Dtype>,
}

impl GptqLayerInfo {
    /// Bytes the layer's tensors take in the checkpoint.
    pub fn stored_bytes(&self) -> usize {
        let l = &self.layout;
        let (qr, qc) = l.qweight_shape();
        let (zr, zc) = l.qzeros_shape();
        4 * (qr * qc + zr * zc)
            + self.scale_dtype.size() * l.groups() * l.n()
            + if self.has_g_idx { 4 * l.k() } else { 0 }
            + self.bias.map_or(0, |d| d.size() * l.n())
    }
}

/// One GPTQ layer in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct GptqLayer {
    /// Shape and quantization parameters.
    pub layout: GptqLayout,
    /// How `qzeros` stores zero points.
    pub format: ZeroFormat,
    /// `[K*bits/32, N]` packed codes.
    pub qweight: Vec<i32>,
    /// `[G, N*bits/32]` packed zero points.
    pub qzeros: Vec<i32>,
    /// `[G, N]` scales.
    pub scales: FloatVec,
    /// `[K]` group of each input, `None` for `k / group_size`.
    pub g_idx: Option<Vec<i32>>,
    /// `[N]` bias.
    pub bias: Option<FloatVec>,
}

impl GptqLayer {
    /// Dequantize to `[K, N]`, the storage orientation (see [`super::gptq_dequantize`];
    /// [`crate::QuantScheme::dequantize`] gives `[N, K]`).
    pub fn dequantize_kn<O: Elem>(&self, par: Parallelism) -> Result<Vec<O>> {
        let g_idx = self.g_idx.as_deref();
        let (l, f) = (&self.layout, self.format);
        crate::with_float_vec!(&self.scales, s => super::gptq_dequantize(&self.qweight, s, &self.qzeros, g_idx, f, l, par))
    }

    /// For a symmetric layer, whether its zero points look like the other format (see
    /// [`super::check_zero_format`]).
    pub fn zero_format_mismatch(&self) -> Result<Option<ZeroFormatMismatch>> {
        super::check_zero_format(&self.qzeros, &self.layout, self.format)
    }
}

/// A checkpoint whose GPTQ layers have been found and checked.
#[derive(Debug, Clone)]
pub struct GptqCheckpoint {
    checkpoint: Checkpoint,
    config: GptqConfig,
    layers: BTreeMap<String, GptqLayerInfo>,
}

fn shape_error(tensor: &str, expected: &[usize], info: &TensorInfo) -> Error {
    Error::TensorShape { tensor: tensor.to_string(), expected: expected.to_vec(), got: info.shape.clone() }
}

impl GptqCheckpoint {
    /// Open the checkpoint in `dir` (see [`Checkpoint::open`]), parse its GPTQ config, find
    /// every layer and check every shape and dtype; nothing is dequantized.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::from_checkpoint(Checkpoint::open(dir)?)
    }

    /// [`GptqCheckpoint::open`] on an already opened checkpoint.
    pub fn from_checkpoint(checkpoint: Checkpoint) -> Result<Self> {
        let config = GptqConfig::from_json(checkpoint.require_quantization_config()?)?;
        let mut layers = BTreeMap::new();
        let prefixes: Vec<String> =
            checkpoint.tensor_names().filter_map(|n| n.strip_suffix(".qweight")).map(String::from).collect();
        let mut missing = Vec::new();
        for prefix in &prefixes {
            for part in ["qzeros", "scales"] {
                let name = format!("{prefix}.{part}");
                if checkpoint.info(&name).is_none() {
                    missing.push(name);
                }
            }
        }
        if !missing.is_empty() {
            return Err(Error::MissingTensors(missing));
        }
        for prefix in prefixes {
            let info = Self::check_layer(&checkpoint, &config, &prefix)?;
            layers.insert(prefix, info);
        }
        Ok(Self { checkpoint, config, layers })
    }

    fn check_layer(ckpt: &Checkpoint, config: &GptqConfig, prefix: &str) -> Result<GptqLayerInfo> {
        let name = |part: &str| format!("{prefix}.{part}");
        let qweight = ckpt.expect_dtype(&name("qweight"), &[Dtype::I32], "I32")?;
        let qzeros = ckpt.expect_dtype(&name("qzeros"), &[Dtype::I32], "I32")?;
        let scales = ckpt.expect_dtype(&name("scales"), FLOATS, "F16, BF16 or F32")?;
        let g_idx = ckpt
            .info(&name("g_idx"))
            .map(|_| ckpt.expect_dtype(&name("g_idx"), &[Dtype::I32], "I32"))
            .transpose()?;
        let bias = ckpt
            .info(&name("bias"))
            .map(|_| ckpt.expect_dtype(&name("bias"), FLOATS, "F16, BF16 or F32"))
            .transpose()?;
        let bits = config.bits as usize;
        let [rows, n] = qweight.shape[..] else {
            return Err(shape_error(&name("qweight"), &[0, 0], &qweight));
        };
        // `rows` is bounded by the file only when `n` > 0: a zero-byte `[huge, 0]` is valid.
        let k_of_rows = rows.checked_mul(32).ok_or(Error::ShapeOverflow { rows, cols: n })? / bits;
        let k = match &g_idx {
            Some(g) if g.shape.len() == 1 => g.shape[0],
            Some(g) => return Err(shape_error(&name("g_idx"), &[k_of_rows], g)),
            None => k_of_rows,
        };
        let mut layout = GptqLayout::new(k, n, config.bits, config.group_size)?;
        // A shard along the inputs of an act-order layer keeps every group of the whole (its
        // `g_idx` may name any of them): more scale rows than K implies, with a `g_idx`.
        if g_idx.is_some()
            && let [groups, _] = scales.shape[..]
            && groups > layout.groups()
        {
            layout = GptqLayout::with_groups(k, n, config.bits, config.group_size, groups)?;
        }
        let (qr, qc) = layout.qweight_shape();
        let (zr, zc) = layout.qzeros_shape();
        for (part, info, expected) in [
            ("qweight", &qweight, vec![qr, qc]),
            ("qzeros", &qzeros, vec![zr, zc]),
            ("scales", &scales, vec![layout.groups(), n]),
        ] {
            if info.shape != expected {
                return Err(shape_error(&name(part), &expected, info));
            }
        }
        if let Some(b) = &bias
            && b.shape != [n]
        {
            return Err(shape_error(&name("bias"), &[n], b));
        }
        Ok(GptqLayerInfo {
            prefix: prefix.to_string(),
            layout,
            scale_dtype: scales.dtype,
            has_g_idx: g_idx.is_some(),
            bias: bias.map(|b| b.dtype),
        })
    }

    /// The underlying checkpoint (unquantized tensors, raw reads).
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The parsed quantization config.
    pub fn config(&self) -> &GptqConfig {
        &self.config
    }

    /// Every GPTQ layer, by prefix.
    pub fn layers(&self) -> &BTreeMap<String, GptqLayerInfo> {
        &self.layers
    }

    /// Whether `tensor` is one of a GPTQ layer's stored parts (`.qweight`, `.qzeros`, `.scales`,
    /// `.g_idx`) rather than a plain tensor (`.bias` counts as plain).
    pub fn is_quantized_part(&self, tensor: &str) -> bool {
        tensor.rsplit_once('.').is_some_and(|(prefix, part)| {
            matches!(part, "qweight" | "qzeros" | "scales" | "g_idx") && self.layers.contains_key(prefix)
        })
    }

    /// For a layer of a symmetric checkpoint, whether its stored zero points look like the
    /// other format (see [`super::check_zero_format`]); reads only `qzeros`. `None` for
    /// asymmetric checkpoints, whose zero points vary.
    pub fn zero_format_mismatch(&self, prefix: &str) -> Result<Option<ZeroFormatMismatch>> {
        let info = self
            .layers
            .get(prefix)
            .ok_or_else(|| Error::MissingTensors(vec![format!("{prefix}.qweight")]))?;
        if !self.config.sym {
            return Ok(None);
        }
        let qzeros: Vec<i32> = self.checkpoint.read_as(&format!("{prefix}.qzeros"))?;
        super::check_zero_format(&qzeros, &info.layout, self.config.format)
    }

    /// Read one layer's tensors.
    pub fn load(&self, prefix: &str) -> Result<GptqLayer> {
        let info = self
            .layers
            .get(prefix)
            .ok_or_else(|| Error::MissingTensors(vec![format!("{prefix}.qweight")]))?;
        let ck = &self.checkpoint;
        let name = |part: &str| format!("{prefix}.{part}");
        let g_idx = if info.has_g_idx { Some(ck.read_as::<i32>(&name("g_idx"))?) } else { None };
        Ok(GptqLayer {
            layout: info.layout,
            format: self.config.format,
            qweight: ck.read_as(&name("qweight"))?,
            qzeros: ck.read_as(&name("qzeros"))?,
            scales: ck.read_floats(&name("scales"))?,
            g_idx,
            bias: info.bias.map(|_| ck.read_floats(&name("bias"))).transpose()?,
        })
    }
}
