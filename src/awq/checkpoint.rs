//! AWQ checkpoints (AutoAWQ gemm): config `{"quant_method": "awq", "bits": 4, "group_size": G,
//! "zero_point": true, "version": "gemm"}` (also spelled `w_bit`, `q_group_size`), layers
//! `<p>.qweight` (I32 `[K, N/8]`), `<p>.qzeros` (I32 `[G, N/8]`), `<p>.scales` (float `[G, N]`),
//! optional `<p>.bias` (`[N]`), all checked before anything is read.

use super::AwqLayout;
use crate::elem::{Elem, FloatVec};
use crate::error::{Error, FormatError, Result};
use crate::io::checkpoint::FLOATS;
use crate::io::fields::{get_bool, get_int, get_str, invalid};
use crate::io::quantized::{CheckpointLayer, CheckpointParts, LayerSummary, QuantCheckpoint};
use crate::io::{Checkpoint, Dtype, NamedTensor};
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::tp::Shard;
use std::collections::BTreeMap;

/// The fields of an AWQ quantization config this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AwqConfig {
    /// Inputs per group (`group_size` or `q_group_size`, default 128).
    pub group_size: usize,
}

impl AwqConfig {
    /// Parse a config object: `bits`/`w_bit` must be 4, `zero_point` true, `version` `gemm`
    /// (AutoAWQ's default); `group_size` and `q_group_size` must agree when both are given.
    ///
    /// ```
    /// use quant_kernels::awq::AwqConfig;
    /// let c = AwqConfig::from_json(&serde_json::json!({"quant_method": "awq", "w_bit": 4, "q_group_size": 64}))?;
    /// assert_eq!(c.group_size, 64);
    /// assert!(AwqConfig::from_json(&serde_json::json!({"quant_method": "awq", "version": "gemv"})).is_err());
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| invalid("quantization_config", "is not a JSON object"))?;
        if let Some(m) = get_str(obj, "quant_method")?
            && !m.eq_ignore_ascii_case("awq")
        {
            return Err(invalid("quant_method", format!("`{m}` is not AWQ")));
        }
        let one_of = |a: &str, b: &str| -> Result<Option<i64>> {
            match (get_int(obj, a)?, get_int(obj, b)?) {
                (Some(x), Some(y)) if x != y => Err(invalid(a, format!("{x} contradicts {b} {y}"))),
                (x, y) => Ok(x.or(y)),
            }
        };
        if let Some(bits) = one_of("bits", "w_bit")?
            && bits != 4
        {
            return Err(invalid("bits", format!("{bits} (AWQ gemm packs 4-bit codes)")));
        }
        let group_size = match one_of("group_size", "q_group_size")? {
            None => 128,
            Some(g) if g > 0 => g as usize,
            Some(g) => return Err(invalid("group_size", format!("{g} (expected a positive size)"))),
        };
        if !get_bool(obj, "zero_point", true)? {
            return Err(invalid("zero_point", "symmetric AWQ (no zero points) is not supported"));
        }
        match get_str(obj, "version")? {
            None => {}
            Some(v) if v.eq_ignore_ascii_case("gemm") => {}
            Some(v) => return Err(invalid("version", format!("`{v}` (only the gemm layout is supported)"))),
        }
        Ok(Self { group_size })
    }
}

/// One AWQ layer in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct AwqLayer {
    /// Shape and group size.
    pub layout: AwqLayout,
    /// `[K, N/8]` interleaved 4-bit codes.
    pub qweight: Vec<i32>,
    /// `[G, N/8]` interleaved zero points.
    pub qzeros: Vec<i32>,
    /// `[G, N]` scales.
    pub scales: FloatVec,
    /// `[N]` bias.
    pub bias: Option<FloatVec>,
}

impl AwqLayer {
    /// Dequantize to `[K, N]`, the storage orientation (see [`super::awq_dequantize`];
    /// [`crate::QuantScheme::dequantize`] gives `[N, K]`).
    pub fn dequantize_kn<O: Elem>(&self, par: Parallelism) -> Result<Vec<O>> {
        crate::with_float_vec!(&self.scales, s => super::awq_dequantize(&self.qweight, s, &self.qzeros, &self.layout, par))
    }
}

/// Where an AWQ layer's tensors are and what they describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwqLayerInfo {
    /// The layer's name prefix.
    pub prefix: String,
    /// Shape and group size.
    pub layout: AwqLayout,
    /// Dtype of `scales`.
    pub scale_dtype: Dtype,
    /// Dtype of the bias, if any.
    pub bias: Option<Dtype>,
}

impl AwqLayerInfo {
    /// Bytes the layer's tensors take in the checkpoint.
    pub fn stored_bytes(&self) -> usize {
        let l = &self.layout;
        // Tensor by tensor: each product is a checked tensor's size (`k` alone may be huge
        // when `packed_cols` is 0).
        4 * (l.k() * l.packed_cols() + l.groups() * l.packed_cols())
            + self.scale_dtype.size() * l.groups() * l.n()
            + self.bias.map_or(0, |d| d.size() * l.n())
    }
}

/// A checkpoint's AWQ layers ([`QuantCheckpoint`] over [`AwqLayer`]).
pub type AwqCheckpoint = QuantCheckpoint<AwqLayer>;

impl CheckpointLayer for AwqLayer {
    type Config = AwqConfig;
    type Info = AwqLayerInfo;

    const PRIMARY: &'static str = "qweight";

    /// `.qweight`, `.qzeros`, `.scales`.
    fn is_part(part: &str) -> bool {
        matches!(part, "qweight" | "qzeros" | "scales")
    }

    fn parse_config(json: &serde_json::Value) -> Result<AwqConfig> {
        AwqConfig::from_json(json)
    }

    fn find_layers(ck: &Checkpoint, config: &AwqConfig) -> Result<BTreeMap<String, AwqLayerInfo>> {
        let prefixes: Vec<String> =
            ck.tensor_names().filter_map(|n| n.strip_suffix(".qweight")).map(String::from).collect();
        let mut layers = BTreeMap::new();
        for prefix in prefixes {
            let name = |part: &str| format!("{prefix}.{part}");
            let qweight = ck.expect_dtype(&name("qweight"), &[Dtype::I32], "I32")?;
            let qzeros = ck.expect_dtype(&name("qzeros"), &[Dtype::I32], "I32")?;
            let scales = ck.expect_dtype(&name("scales"), FLOATS, "F16, BF16 or F32")?;
            let bias = ck
                .info(&name("bias"))
                .map(|_| ck.expect_dtype(&name("bias"), FLOATS, "F16, BF16 or F32"))
                .transpose()?;
            let (k, n) = match (&qweight.shape[..], &scales.shape[..]) {
                ([k, _], [_, n]) => (*k, *n),
                _ => {
                    return Err(Error::Format(FormatError::TensorShape {
                        tensor: name("qweight"),
                        expected: vec![0, 0],
                        got: qweight.shape,
                    }));
                }
            };
            let layout = AwqLayout::new(k, n, config.group_size)?;
            for (part, info, expected) in [
                ("qweight", &qweight, vec![k, layout.packed_cols()]),
                ("qzeros", &qzeros, vec![layout.groups(), layout.packed_cols()]),
                ("scales", &scales, vec![layout.groups(), n]),
            ] {
                if info.shape != expected {
                    return Err(Error::Format(FormatError::TensorShape {
                        tensor: name(part),
                        expected,
                        got: info.shape.clone(),
                    }));
                }
            }
            if let Some(b) = &bias
                && b.shape != [n]
            {
                return Err(Error::Format(FormatError::TensorShape {
                    tensor: name("bias"),
                    expected: vec![n],
                    got: b.shape.clone(),
                }));
            }
            let info = AwqLayerInfo {
                prefix: prefix.clone(),
                layout,
                scale_dtype: scales.dtype,
                bias: bias.map(|b| b.dtype),
            };
            layers.insert(prefix, info);
        }
        Ok(layers)
    }

    fn read(ck: &Checkpoint, _: &AwqConfig, info: &AwqLayerInfo, prefix: &str) -> Result<AwqLayer> {
        let name = |part: &str| format!("{prefix}.{part}");
        Ok(AwqLayer {
            layout: info.layout,
            qweight: ck.read_as(&name("qweight"))?,
            qzeros: ck.read_as(&name("qzeros"))?,
            scales: ck.read_floats(&name("scales"))?,
            bias: info.bias.map(|_| ck.read_floats(&name("bias"))).transpose()?,
        })
    }

    fn read_shard(
        ck: &Checkpoint,
        _: &AwqConfig,
        info: &AwqLayerInfo,
        prefix: &str,
        shard: &Shard,
    ) -> Result<AwqLayer> {
        let src = CheckpointParts { checkpoint: ck, prefix };
        super::scheme::shard_parts(&info.layout, info.bias.is_some(), &src, shard)
    }

    fn summary(_: &AwqConfig, prefix: &str, i: &AwqLayerInfo) -> LayerSummary {
        LayerSummary {
            prefix: prefix.to_string(),
            experts: 1,
            out: i.layout.n(),
            inp: i.layout.k(),
            method: QuantMethod::Awq { group: i.layout.group_size() },
            stored_bytes: i.stored_bytes(),
            bias: i.bias,
        }
    }

    fn tensors(
        &self,
        _: &Checkpoint,
        _: &AwqConfig,
        _: &AwqLayerInfo,
        prefix: &str,
    ) -> Result<Vec<NamedTensor>> {
        let name = |part: &str| format!("{prefix}.{part}");
        let l = self.layout;
        let mut out = Vec::with_capacity(4);
        if let Some(b) = &self.bias {
            out.push(NamedTensor::floats(name("bias"), vec![l.n()], b));
        }
        out.push(NamedTensor::i32s(name("qweight"), vec![l.k(), l.packed_cols()], &self.qweight));
        out.push(NamedTensor::i32s(name("qzeros"), vec![l.groups(), l.packed_cols()], &self.qzeros));
        out.push(NamedTensor::floats(name("scales"), vec![l.groups(), l.n()], &self.scales));
        Ok(out)
    }
}
