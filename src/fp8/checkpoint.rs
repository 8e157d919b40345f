//! FP8 checkpoints: config `{"quant_method": "fp8", "weight_block_size": [128, 128]}` (DeepSeek /
//! transformers fine-grained FP8; without `weight_block_size`, per-tensor scales), layers
//! `<p>.weight` (F8_E4M3 or F8_E5M2, `[out, in]`) with `<p>.weight_scale_inv` (float
//! `[ceil(out/br), ceil(in/bc)]`) or `<p>.weight_scale` (one float, shape `[]` or `[1]`), all
//! checked before anything is read. Stacked MoE experts are `[E, out, in]` weights with
//! `[E, ceil(out/br), ceil(in/bc)]` block scales or `[E]` per-tensor scales.

use super::{Fp8Format, Fp8Layout};
use crate::elem::{Elem, FloatVec};
use crate::error::{Error, FormatError, KernelError, Result};
use crate::io::checkpoint::FLOATS;
use crate::io::fields::{get_str, invalid};
use crate::io::quantized::{CheckpointLayer, CheckpointParts, LayerSummary, QuantCheckpoint};
use crate::io::{Checkpoint, Dtype, NamedTensor};
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::tp::Shard;
use std::collections::BTreeMap;

/// The fields of an FP8 quantization config this crate reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fp8Config {
    /// `weight_block_size` (`[rows, cols]`), `None` for per-tensor scales.
    pub block: Option<(usize, usize)>,
    /// `fmt` when given (`"e4m3"` / `"e5m2"`); the weights' dtype must agree.
    pub format: Option<Fp8Format>,
}

impl Fp8Config {
    /// Parse a config object (`quant_method` must be `fp8` when present).
    ///
    /// ```
    /// use quant_kernels::fp8::Fp8Config;
    /// let c = Fp8Config::from_json(&serde_json::json!({"quant_method": "fp8", "weight_block_size": [128, 128]}))?;
    /// assert_eq!(c.block, Some((128, 128)));
    /// assert!(Fp8Config::from_json(&serde_json::json!({"weight_block_size": [0, 128]})).is_err());
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| invalid("quantization_config", "is not a JSON object"))?;
        if let Some(m) = get_str(obj, "quant_method")?
            && !m.eq_ignore_ascii_case("fp8")
        {
            return Err(invalid("quant_method", format!("`{m}` is not FP8")));
        }
        let block = match obj.get("weight_block_size") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let dims: Option<Vec<usize>> = v.as_array().filter(|a| a.len() == 2).and_then(|a| {
                    a.iter().map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok())).collect()
                });
                match dims.as_deref() {
                    Some(&[r, c]) if r > 0 && c > 0 => Some((r, c)),
                    _ => {
                        return Err(invalid(
                            "weight_block_size",
                            format!("{v} (expected [rows, cols], both positive)"),
                        ));
                    }
                }
            }
        };
        let format = match get_str(obj, "fmt")? {
            None => None,
            Some("e4m3") => Some(Fp8Format::E4M3),
            Some("e5m2") => Some(Fp8Format::E5M2),
            Some(f) => return Err(invalid("fmt", format!("`{f}` (expected e4m3 or e5m2)"))),
        };
        Ok(Self { block, format })
    }
}

/// One FP8 layer in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Fp8Layer {
    /// Shape and scale blocks of one expert (of the whole weight when not stacked).
    pub layout: Fp8Layout,
    /// Stacked experts (1 for a plain `[out, in]` weight).
    pub experts: usize,
    /// Code format (from the weight's dtype).
    pub format: Fp8Format,
    /// `[out, in]` codes.
    pub codes: Vec<u8>,
    /// Scale grid (one value for per-tensor).
    pub scales: FloatVec,
    /// `[out]` bias.
    pub bias: Option<FloatVec>,
}

impl Fp8Layer {
    /// Dequantize every expert: `[E, out, in]` (`[out, in]` for one expert, as
    /// [`crate::QuantScheme::dequantize`] gives it).
    pub fn dequantize_experts<O: Elem>(&self, par: Parallelism) -> Result<Vec<O>> {
        let per = self.layout.rows() * self.layout.cols();
        let n = self
            .experts
            .checked_mul(per)
            .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: self.experts, cols: per }))?;
        let mut out = vec![O::default(); n];
        crate::with_float_vec!(&self.scales, s => super::fp8_dequantize_experts_into(&self.codes, s, self.format, self.experts, &self.layout, &mut out, par))?;
        Ok(out)
    }
}

/// Where an FP8 layer's tensors are and what they describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fp8LayerInfo {
    /// The layer's name prefix.
    pub prefix: String,
    /// Shape and scale blocks of one expert.
    pub layout: Fp8Layout,
    /// Stacked experts (1 for a plain weight).
    pub experts: usize,
    /// Code format.
    pub format: Fp8Format,
    /// The scale tensor's name suffix (`weight_scale_inv` or `weight_scale`) and dtype.
    pub scale: (&'static str, Dtype),
    /// Dtype of the bias, if any.
    pub bias: Option<Dtype>,
}

impl Fp8LayerInfo {
    /// Bytes the layer's tensors take in the checkpoint.
    pub fn stored_bytes(&self) -> usize {
        let (sr, sc) = self.layout.scale_shape();
        let per = self.layout.rows() * self.layout.cols() + self.scale.1.size() * sr * sc;
        self.experts * (per + self.bias.map_or(0, |d| d.size() * self.layout.rows()))
    }
}

/// A checkpoint's FP8 layers ([`QuantCheckpoint`] over [`Fp8Layer`]).
pub type Fp8Checkpoint = QuantCheckpoint<Fp8Layer>;

impl CheckpointLayer for Fp8Layer {
    type Config = Fp8Config;
    type Info = Fp8LayerInfo;

    const PRIMARY: &'static str = "weight";

    /// `.weight` and its scale (`.weight_scale_inv` or `.weight_scale`).
    fn is_part(part: &str) -> bool {
        matches!(part, "weight" | "weight_scale_inv" | "weight_scale")
    }

    fn parse_config(json: &serde_json::Value) -> Result<Fp8Config> {
        Fp8Config::from_json(json)
    }

    fn find_layers(ck: &Checkpoint, config: &Fp8Config) -> Result<BTreeMap<String, Fp8LayerInfo>> {
        let mut layers = BTreeMap::new();
        let weights: Vec<(String, Fp8Format)> = ck
            .tensor_names()
            .filter_map(|n| {
                let format = match ck.info(n)?.dtype {
                    Dtype::F8E4M3 => Fp8Format::E4M3,
                    Dtype::F8E5M2 => Fp8Format::E5M2,
                    _ => return None,
                };
                Some((n.strip_suffix(".weight")?.to_string(), format))
            })
            .collect();
        for (prefix, format) in weights {
            let name = |part: &str| format!("{prefix}.{part}");
            if config.format.is_some_and(|f| f != format) {
                return Err(invalid(
                    "fmt",
                    format!("{} is {format:?}, the config says {:?}", name("weight"), config.format),
                ));
            }
            let shape = ck.info(&name("weight")).map(|i| i.shape.clone()).unwrap_or_default();
            let (experts, rows, cols) = match shape[..] {
                [rows, cols] => (1, rows, cols),
                [e, rows, cols] => (e, rows, cols),
                _ => {
                    return Err(Error::Format(FormatError::TensorShape {
                        tensor: name("weight"),
                        expected: vec![0, 0],
                        got: shape,
                    }));
                }
            };
            let (suffix, layout) = match config.block {
                Some((br, bc)) => ("weight_scale_inv", Fp8Layout::block(rows, cols, br, bc)?),
                None => ("weight_scale", Fp8Layout::per_tensor(rows, cols)?),
            };
            let scale = ck.expect_dtype(&name(suffix), FLOATS, "F16, BF16 or F32")?;
            let (sr, sc) = layout.scale_shape();
            let stacked = |inner: &[usize]| {
                if shape.len() == 3 { [&[experts][..], inner].concat() } else { inner.to_vec() }
            };
            let (ok, expected) = match config.block {
                Some(_) => (scale.shape == stacked(&[sr, sc]), stacked(&[sr, sc])),
                None if shape.len() == 3 => {
                    (scale.numel() == experts && scale.shape.len() <= 2, vec![experts])
                }
                None => (scale.numel() == 1 && scale.shape.len() <= 1, vec![1]),
            };
            if !ok {
                return Err(Error::Format(FormatError::TensorShape {
                    tensor: name(suffix),
                    expected,
                    got: scale.shape,
                }));
            }
            let bias = ck
                .info(&name("bias"))
                .map(|_| ck.expect_dtype(&name("bias"), FLOATS, "F16, BF16 or F32"))
                .transpose()?;
            if let Some(b) = &bias
                && b.shape != stacked(&[rows])
            {
                return Err(Error::Format(FormatError::TensorShape {
                    tensor: name("bias"),
                    expected: stacked(&[rows]),
                    got: b.shape.clone(),
                }));
            }
            let info = Fp8LayerInfo {
                prefix: prefix.clone(),
                layout,
                experts,
                format,
                scale: (suffix, scale.dtype),
                bias: bias.map(|b| b.dtype),
            };
            layers.insert(prefix, info);
        }
        Ok(layers)
    }

    fn read_shard(
        ck: &Checkpoint,
        _: &Fp8Config,
        info: &Fp8LayerInfo,
        prefix: &str,
        shard: &Shard,
    ) -> Result<Fp8Layer> {
        let src = CheckpointParts { checkpoint: ck, prefix };
        let has_bias = info.bias.is_some();
        super::scheme::shard_parts(
            &info.layout,
            info.experts,
            info.format,
            info.scale.0,
            has_bias,
            &src,
            shard,
        )
    }

    fn read(ck: &Checkpoint, _: &Fp8Config, info: &Fp8LayerInfo, prefix: &str) -> Result<Fp8Layer> {
        let name = |part: &str| format!("{prefix}.{part}");
        Ok(Fp8Layer {
            layout: info.layout,
            experts: info.experts,
            format: info.format,
            codes: ck.read(&name("weight"))?,
            scales: ck.read_floats(&name(info.scale.0))?,
            bias: info.bias.map(|_| ck.read_floats(&name("bias"))).transpose()?,
        })
    }

    fn summary(config: &Fp8Config, prefix: &str, i: &Fp8LayerInfo) -> LayerSummary {
        LayerSummary {
            prefix: prefix.to_string(),
            experts: i.experts,
            out: i.layout.rows(),
            inp: i.layout.cols(),
            method: QuantMethod::Fp8 { format: i.format, block: config.block },
            stored_bytes: i.stored_bytes(),
            bias: i.bias,
        }
    }

    fn tensors(
        &self,
        ck: &Checkpoint,
        config: &Fp8Config,
        info: &Fp8LayerInfo,
        prefix: &str,
    ) -> Result<Vec<NamedTensor>> {
        let name = |part: &str| format!("{prefix}.{part}");
        let l = self.layout;
        // Stacked experts keep their leading dimension, as the input stored them.
        let stacked_input = ck.info(&name("weight")).is_some_and(|i| i.shape.len() == 3);
        let stacked = |inner: &[usize]| {
            if stacked_input || self.experts > 1 {
                [&[self.experts][..], inner].concat()
            } else {
                inner.to_vec()
            }
        };
        let mut out = Vec::with_capacity(3);
        if let Some(b) = &self.bias {
            out.push(NamedTensor::floats(name("bias"), stacked(&[l.rows()]), b));
        }
        let dtype = match self.format {
            Fp8Format::E4M3 => Dtype::F8E4M3,
            Fp8Format::E5M2 => Dtype::F8E5M2,
        };
        let shape = stacked(&[l.rows(), l.cols()]);
        out.push(NamedTensor { name: name("weight"), dtype, shape, data: self.codes.clone() });
        let suffix = info.scale.0;
        let shape = match config.block {
            Some(_) => {
                let (sr, sc) = l.scale_shape();
                stacked(&[sr, sc])
            }
            // Per tensor: the input's own shape for its scales (`[]`, `[1]`, `[E]` or `[E, 1]`).
            None => ck.info(&name(suffix)).map_or_else(|| stacked(&[1]), |i| i.shape.clone()),
        };
        out.push(NamedTensor::floats(name(suffix), shape, &self.scales));
        Ok(out)
    }
}
