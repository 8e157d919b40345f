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
use crate::error::{Error, FormatError, KernelError, Result};
use crate::io::checkpoint::FLOATS;
use crate::io::quantized::{CheckpointLayer, CheckpointParts, LayerSummary, QuantCheckpoint};
use crate::io::{Checkpoint, Dtype, NamedTensor, TensorInfo};
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::tp::Shard;
use std::collections::BTreeMap;

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

/// A checkpoint's GPTQ layers ([`QuantCheckpoint`] over [`GptqLayer`]).
pub type GptqCheckpoint = QuantCheckpoint<GptqLayer>;

fn shape_error(tensor: &str, expected: &[usize], info: &TensorInfo) -> Error {
    Error::Format(FormatError::TensorShape {
        tensor: tensor.to_string(),
        expected: expected.to_vec(),
        got: info.shape.clone(),
    })
}

impl CheckpointLayer for GptqLayer {
    type Config = GptqConfig;
    type Info = GptqLayerInfo;

    const PRIMARY: &'static str = "qweight";

    /// `.qweight`, `.qzeros`, `.scales`, `.g_idx`.
    fn is_part(part: &str) -> bool {
        matches!(part, "qweight" | "qzeros" | "scales" | "g_idx")
    }

    fn parse_config(json: &serde_json::Value) -> Result<GptqConfig> {
        GptqConfig::from_json(json)
    }

    fn find_layers(ck: &Checkpoint, config: &GptqConfig) -> Result<BTreeMap<String, GptqLayerInfo>> {
        let mut layers = BTreeMap::new();
        let prefixes: Vec<String> =
            ck.tensor_names().filter_map(|n| n.strip_suffix(".qweight")).map(String::from).collect();
        let mut missing = Vec::new();
        for prefix in &prefixes {
            for part in ["qzeros", "scales"] {
                let name = format!("{prefix}.{part}");
                if ck.info(&name).is_none() {
                    missing.push(name);
                }
            }
        }
        if !missing.is_empty() {
            return Err(Error::Format(FormatError::MissingTensors(missing)));
        }
        for prefix in prefixes {
            let info = check_layer(ck, config, &prefix)?;
            layers.insert(prefix, info);
        }
        Ok(layers)
    }

    fn read(ck: &Checkpoint, config: &GptqConfig, info: &GptqLayerInfo, prefix: &str) -> Result<GptqLayer> {
        let name = |part: &str| format!("{prefix}.{part}");
        let g_idx = if info.has_g_idx { Some(ck.read_as::<i32>(&name("g_idx"))?) } else { None };
        Ok(GptqLayer {
            layout: info.layout,
            format: config.format,
            qweight: ck.read_as(&name("qweight"))?,
            qzeros: ck.read_as(&name("qzeros"))?,
            scales: ck.read_floats(&name("scales"))?,
            g_idx,
            bias: info.bias.map(|_| ck.read_floats(&name("bias"))).transpose()?,
        })
    }

    fn read_shard(
        ck: &Checkpoint,
        config: &GptqConfig,
        info: &GptqLayerInfo,
        prefix: &str,
        shard: &Shard,
    ) -> Result<GptqLayer> {
        let src = CheckpointParts { checkpoint: ck, prefix };
        super::scheme::shard_parts(
            &info.layout,
            config.format,
            info.has_g_idx,
            info.bias.is_some(),
            &src,
            shard,
        )
    }

    fn summary(config: &GptqConfig, prefix: &str, i: &GptqLayerInfo) -> LayerSummary {
        LayerSummary {
            prefix: prefix.to_string(),
            experts: 1,
            out: i.layout.n(),
            inp: i.layout.k(),
            method: QuantMethod::Gptq {
                bits: config.bits,
                group: i.layout.group_size(),
                act_order: config.desc_act,
            },
            stored_bytes: i.stored_bytes(),
            bias: i.bias,
        }
    }

    fn tensors(
        &self,
        _: &Checkpoint,
        _: &GptqConfig,
        _: &GptqLayerInfo,
        prefix: &str,
    ) -> Result<Vec<NamedTensor>> {
        let name = |part: &str| format!("{prefix}.{part}");
        let l = self.layout;
        let (qr, qc) = l.qweight_shape();
        let (zr, zc) = l.qzeros_shape();
        let mut out = Vec::with_capacity(5);
        if let Some(b) = &self.bias {
            out.push(NamedTensor::floats(name("bias"), vec![l.n()], b));
        }
        if let Some(g) = &self.g_idx {
            out.push(NamedTensor::i32s(name("g_idx"), vec![l.k()], g));
        }
        out.push(NamedTensor::i32s(name("qweight"), vec![qr, qc], &self.qweight));
        out.push(NamedTensor::i32s(name("qzeros"), vec![zr, zc], &self.qzeros));
        out.push(NamedTensor::floats(name("scales"), vec![l.groups(), l.n()], &self.scales));
        Ok(out)
    }
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
    let k_of_rows =
        rows.checked_mul(32).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols: n }))? / bits;
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

impl QuantCheckpoint<GptqLayer> {
    /// For a layer of a symmetric checkpoint, whether its stored zero points look like the
    /// other format (see [`super::check_zero_format`]); reads only `qzeros`. `None` for
    /// asymmetric checkpoints, whose zero points vary.
    pub fn zero_format_mismatch(&self, prefix: &str) -> Result<Option<ZeroFormatMismatch>> {
        let info = self.info(prefix)?;
        if !self.config().sym {
            return Ok(None);
        }
        let qzeros: Vec<i32> = self.checkpoint().read_as(&format!("{prefix}.qzeros"))?;
        super::check_zero_format(&qzeros, &info.layout, self.config().format)
    }
}
