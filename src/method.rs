//! One description of every scheme ([`QuantMethod`]), a per-layer assignment of schemes
//! ([`QuantConfig`]: a default plus overrides by exact name or glob), and memory estimates.
//!
//! # Storage counted per layer (`out` outputs, `inp` inputs, `numel = out * inp`)
//!
//! | method | bytes |
//! |---|---|
//! | int8 symmetric | `numel` + f32 scale per tensor (4) or per output row (`4 * out`) |
//! | int4 asymmetric, group g | `ceil(numel / 2)` + per group an f32 scale and a u8 zero (5) |
//! | FP8, block `(bo, bi)` or per tensor | `numel` + f32 scale per block (`4 * ceil(out/bo) * ceil(inp/bi)`) or 4 |
//! | AWQ 4-bit, group g | qweight `numel / 2` + per group: qzeros `out / 2` and f16 scales `2 * out` |
//! | SmoothQuant | int8 per-channel (`numel + 4 * out`) + f32 smoothing factor per input (`4 * inp`) |
//! | GPTQ b bits, group g | qweight `numel * b / 8` + per group: qzeros `out * b / 8`, f16 scales `2 * out`; g_idx `4 * inp` |
//! | HQQ b bits, group g | packed codes as [`crate::hqq`] stores them + f16 scale and zero per group (4) |
//!
//! [`QuantMethod::bits_per_weight`] is `8 * bytes / numel` for a given shape, so it counts
//! every scale, zero and `g_idx` entry the layer stores (a 4-bit g128 GPTQ layer of 4096 x 4096
//! is 4.164 bits per weight).

use crate::error::{Error, FormatError, KernelError, Result};
use crate::fp8::Fp8Format;
use crate::hqq::{Axis, HqqLayout};
use crate::pack::Bits;
use std::fmt;

/// A quantization scheme and its parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QuantMethod {
    /// int8, symmetric, one scale per output channel (`per_channel`) or per tensor.
    Int8Symmetric {
        /// Per output channel (else per tensor).
        per_channel: bool,
    },
    /// int4, asymmetric, a scale and zero per `group` consecutive inputs.
    Int4Asymmetric {
        /// Weights per group.
        group: usize,
    },
    /// FP8 codes with per-tensor scale (`block: None`) or block-wise `weight_scale_inv`.
    Fp8 {
        /// E4M3 or E5M2.
        format: Fp8Format,
        /// `(rows, cols)` of a scale block.
        block: Option<(usize, usize)>,
    },
    /// AWQ 4-bit (AutoAWQ gemm layout).
    Awq {
        /// Inputs per group.
        group: usize,
    },
    /// SmoothQuant smoothing (`alpha`) followed by int8 per-channel weights.
    SmoothQuant {
        /// Migration strength in `[0, 1]`.
        alpha: f32,
    },
    /// GPTQ.
    Gptq {
        /// 2, 3, 4 or 8.
        bits: u8,
        /// Inputs per group, `None` for one group.
        group: Option<usize>,
        /// Act-order (`desc_act`).
        act_order: bool,
    },
    /// HQQ.
    Hqq {
        /// 1, 2, 3, 4 or 8.
        bits: u8,
        /// Weights per group.
        group: usize,
        /// Grouping axis.
        axis: Axis,
    },
}

fn invalid(reason: String) -> Error {
    Error::Format(FormatError::Config { field: "method".into(), reason })
}

impl fmt::Display for QuantMethod {
    /// A short name: `int8-sym-channel`, `int4-asym-g128`, `fp8-e4m3-block128x128`, `awq-4bit-g128`,
    /// `smoothquant-a0.5`, `gptq-4bit-g128-act`, `hqq-4bit-g64-axis1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            QuantMethod::Int8Symmetric { per_channel } => {
                write!(f, "int8-sym-{}", if per_channel { "channel" } else { "tensor" })
            }
            QuantMethod::Int4Asymmetric { group } => write!(f, "int4-asym-g{group}"),
            QuantMethod::Fp8 { format, block } => {
                let name = if format == Fp8Format::E4M3 { "e4m3" } else { "e5m2" };
                match block {
                    Some((r, c)) => write!(f, "fp8-{name}-block{r}x{c}"),
                    None => write!(f, "fp8-{name}-tensor"),
                }
            }
            QuantMethod::Awq { group } => write!(f, "awq-4bit-g{group}"),
            QuantMethod::SmoothQuant { alpha } => write!(f, "smoothquant-a{alpha}"),
            QuantMethod::Gptq { bits, group, act_order } => {
                let g = group.map_or("-1".to_string(), |g| g.to_string());
                write!(f, "gptq-{bits}bit-g{g}{}", if act_order { "-act" } else { "" })
            }
            QuantMethod::Hqq { bits, group, axis } => {
                write!(f, "hqq-{bits}bit-g{group}-axis{}", if axis == Axis::Zero { 0 } else { 1 })
            }
        }
    }
}

impl std::str::FromStr for QuantMethod {
    type Err = Error;

    /// Parses the names [`Display`](fmt::Display) writes, then [`validate`](Self::validate)s
    /// them: `"gptq-4bit-g128-act".parse()` is the method that prints as that name.
    ///
    /// ```
    /// use quant_kernels::fp8::Fp8Format;
    /// use quant_kernels::hqq::Axis;
    /// use quant_kernels::method::QuantMethod;
    /// let m: QuantMethod = "hqq-4bit-g64-axis1".parse()?;
    /// assert_eq!(m, QuantMethod::Hqq { bits: 4, group: 64, axis: Axis::One });
    /// let m: QuantMethod = "gptq-3bit-g-1".parse()?;
    /// assert_eq!(m, QuantMethod::Gptq { bits: 3, group: None, act_order: false });
    /// let m: QuantMethod = "fp8-e4m3-block128x128".parse()?;
    /// assert_eq!(m, QuantMethod::Fp8 { format: Fp8Format::E4M3, block: Some((128, 128)) });
    /// assert_eq!(m.to_string(), "fp8-e4m3-block128x128");
    /// assert!("gptq-5bit-g128".parse::<QuantMethod>().is_err());
    /// assert!("int4".parse::<QuantMethod>().is_err());
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    fn from_str(name: &str) -> Result<Self> {
        let bad = || {
            Error::Format(FormatError::Config {
                field: "quant method".into(),
                reason: format!(
                    "`{name}` is not a method name (int8-sym-channel, int8-sym-tensor, int4-asym-g128, \
                 fp8-e4m3-tensor, fp8-e5m2-block128x128, awq-4bit-g128, smoothquant-a0.5, \
                 gptq-4bit-g128[-act], gptq-4bit-g-1, hqq-4bit-g64-axis0)"
                ),
            })
        };
        let num = |s: &str| s.parse::<usize>().map_err(|_| bad());
        let bits = |s: Option<&str>| -> Result<u8> {
            s.and_then(|b| b.strip_suffix("bit")).and_then(|b| b.parse().ok()).ok_or_else(bad)
        };
        fn group(s: Option<&str>) -> Option<&str> {
            s.and_then(|g| g.strip_prefix('g'))
        }
        let (scheme, rest) = name.split_once('-').ok_or_else(bad)?;
        let mut parts = rest.splitn(3, '-');
        let m = match scheme {
            "int8" => match rest {
                "sym-channel" => QuantMethod::Int8Symmetric { per_channel: true },
                "sym-tensor" => QuantMethod::Int8Symmetric { per_channel: false },
                _ => return Err(bad()),
            },
            "int4" => {
                let g = rest.strip_prefix("asym-g").ok_or_else(bad)?;
                QuantMethod::Int4Asymmetric { group: num(g)? }
            }
            "fp8" => {
                let (format, scale) = rest.split_once('-').ok_or_else(bad)?;
                let format = match format {
                    "e4m3" => Fp8Format::E4M3,
                    "e5m2" => Fp8Format::E5M2,
                    _ => return Err(bad()),
                };
                let block = match scale {
                    "tensor" => None,
                    _ => {
                        let (r, c) =
                            scale.strip_prefix("block").and_then(|b| b.split_once('x')).ok_or_else(bad)?;
                        Some((num(r)?, num(c)?))
                    }
                };
                QuantMethod::Fp8 { format, block }
            }
            "awq" => {
                let g = rest.strip_prefix("4bit-g").ok_or_else(bad)?;
                QuantMethod::Awq { group: num(g)? }
            }
            "smoothquant" => {
                let a = rest.strip_prefix('a').ok_or_else(bad)?;
                QuantMethod::SmoothQuant { alpha: a.parse().map_err(|_| bad())? }
            }
            "gptq" => {
                let bits = bits(parts.next())?;
                // `g-1` (one group) splits into "g" and "1-act" / "1".
                let g = group(parts.next()).ok_or_else(bad)?;
                let tail = parts.next();
                let (group, act) = match (g, tail) {
                    ("", Some(t)) => match t.strip_suffix("-act") {
                        Some("1") => (None, true),
                        _ if t == "1" => (None, false),
                        _ => return Err(bad()),
                    },
                    (g, None) => (Some(num(g)?), false),
                    (g, Some("act")) => (Some(num(g)?), true),
                    _ => return Err(bad()),
                };
                QuantMethod::Gptq { bits, group, act_order: act }
            }
            "hqq" => {
                let bits = bits(parts.next())?;
                let group = num(group(parts.next()).ok_or_else(bad)?)?;
                let axis = match parts.next() {
                    Some("axis0") => Axis::Zero,
                    Some("axis1") => Axis::One,
                    _ => return Err(bad()),
                };
                QuantMethod::Hqq { bits, group, axis }
            }
            _ => return Err(bad()),
        };
        m.validate()?;
        Ok(m)
    }
}

impl QuantMethod {
    /// Quantize a dense `[rows, cols]` weight with this method (load-time quantization): HQQ
    /// with `hqq_steps` optimizer steps (`None`: round to nearest, as mistral.rs's ISQ does),
    /// int8, int4 or FP8; GPTQ, AWQ and SmoothQuant need calibration data and are
    /// [`KernelError::NoQuantizer`]. The result is the scheme's own quantizer's, bit for bit.
    ///
    /// ```
    /// use quant_kernels::{Parallelism, QuantMethod, QuantScheme};
    /// let m = QuantMethod::Int8Symmetric { per_channel: true };
    /// let q = m.quantize(&[1.0, -0.5, 0.25, 0.0, 0.0, 0.0], 2, 3, None, Parallelism::RAYON)?;
    /// assert_eq!(q.method(), Some(m));
    /// assert_eq!(q.dequantize::<f32>(Parallelism::SERIAL)?[..2], [1.0, -64.0 / 127.0]);
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn quantize(
        &self,
        w: &[f32],
        rows: usize,
        cols: usize,
        hqq_steps: Option<usize>,
        par: crate::par::Parallelism,
    ) -> Result<crate::layer::QuantWeight> {
        use crate::layer::QuantWeight;
        self.validate()?;
        Ok(match *self {
            QuantMethod::Hqq { bits, group, axis } => {
                let config = crate::hqq::HqqConfig {
                    optimization_steps: hqq_steps,
                    ..crate::hqq::HqqConfig::new(bits, group, axis)
                };
                QuantWeight::Hqq(crate::hqq::quantize_hqq(w, rows, cols, &config, par)?.into())
            }
            QuantMethod::Int8Symmetric { per_channel } => {
                let g = if per_channel {
                    crate::intx::Granularity::PerChannel
                } else {
                    crate::intx::Granularity::PerTensor
                };
                QuantWeight::Int8(crate::intx::quantize_int8(w, rows, cols, g, par)?)
            }
            QuantMethod::Int4Asymmetric { group } => {
                QuantWeight::Int4(crate::intx::quantize_int4(w, rows, cols, group, par)?)
            }
            QuantMethod::Fp8 { format, block } => {
                let layout = match block {
                    Some((br, bc)) => crate::fp8::Fp8Layout::block(rows, cols, br, bc)?,
                    None => crate::fp8::Fp8Layout::per_tensor(rows, cols)?,
                };
                let (codes, scales) = crate::fp8::fp8_quantize(w, format, &layout, par)?;
                QuantWeight::Fp8(crate::fp8::Fp8Layer {
                    layout,
                    experts: 1,
                    format,
                    codes,
                    scales: crate::elem::FloatVec::F32(scales),
                    bias: None,
                })
            }
            QuantMethod::Gptq { .. } | QuantMethod::Awq { .. } | QuantMethod::SmoothQuant { .. } => {
                return Err(Error::Kernel(KernelError::NoQuantizer(self.to_string())));
            }
        })
    }

    /// Check the parameters on their own (bit widths, positive groups and blocks, alpha).
    pub fn validate(&self) -> Result<()> {
        match *self {
            QuantMethod::Int8Symmetric { .. } => Ok(()),
            QuantMethod::Int4Asymmetric { group } if group == 0 || group % 2 == 1 => {
                Err(invalid(format!("{self}: int4 groups must be even and positive")))
            }
            QuantMethod::Awq { group: 0 } | QuantMethod::Gptq { group: Some(0), .. } => {
                Err(invalid(format!("{self}: group size 0")))
            }
            QuantMethod::Fp8 { block: Some((r, c)), .. } if r == 0 || c == 0 => {
                Err(invalid(format!("{self}: empty scale block")))
            }
            QuantMethod::SmoothQuant { alpha } if !(0.0..=1.0).contains(&alpha) => {
                Err(invalid(format!("alpha {alpha} is not in [0, 1]")))
            }
            QuantMethod::Gptq { bits, .. } if !matches!(bits, 2 | 3 | 4 | 8) => {
                Err(Error::Kernel(KernelError::UnsupportedBits(bits)))
            }
            QuantMethod::Hqq { bits, group, .. } => {
                Bits::try_from(bits)?;
                if group == 0 { Err(invalid(format!("{self}: group size 0"))) } else { Ok(()) }
            }
            _ => Ok(()),
        }
    }

    /// Bytes a layer with `out` outputs and `inp` inputs takes in this scheme (see the module
    /// docs), after checking that the shape suits it (groups dividing the inputs, packing).
    ///
    /// ```
    /// use quant_kernels::method::QuantMethod;
    /// let m = QuantMethod::Gptq { bits: 4, group: Some(128), act_order: true };
    /// assert_eq!(m.layer_bytes(4096, 4096)?, 8_388_608 + 32 * (2048 + 8192) + 16_384);
    /// assert_eq!(format!("{:.3}", m.bits_per_weight(4096, 4096)?), "4.164");
    /// assert!(m.layer_bytes(4096, 100).is_err()); // 100 inputs do not pack into 4-bit words
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn layer_bytes(&self, out: usize, inp: usize) -> Result<usize> {
        self.validate()?;
        let numel =
            out.checked_mul(inp).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: out, cols: inp }))?;
        let divides = |group: usize| {
            if inp.is_multiple_of(group) {
                Ok(inp / group)
            } else {
                Err(Error::Kernel(KernelError::GroupSize { group, len: inp }))
            }
        };
        Ok(match *self {
            QuantMethod::Int8Symmetric { per_channel } => numel + 4 * if per_channel { out } else { 1 },
            QuantMethod::Int4Asymmetric { group } => numel.div_ceil(2) + 5 * out * divides(group)?,
            QuantMethod::Fp8 { block, .. } => {
                numel + 4 * block.map_or(1, |(r, c)| out.div_ceil(r) * inp.div_ceil(c))
            }
            QuantMethod::Awq { group } => {
                let l = crate::awq::AwqLayout::new(inp, out, group)?;
                let g = l.groups();
                numel / 2 + g * (out / 2 + 2 * out)
            }
            QuantMethod::SmoothQuant { .. } => numel + 4 * out + 4 * inp,
            QuantMethod::Gptq { bits, group, .. } => {
                let l = crate::gptq::GptqLayout::new(inp, out, bits, group.map_or(-1, |g| g as i64))?;
                let (qr, qc) = l.qweight_shape();
                let (zr, zc) = l.qzeros_shape();
                4 * (qr * qc + zr * zc) + 2 * l.groups() * out + 4 * inp
            }
            QuantMethod::Hqq { bits, group, axis } => {
                let l = HqqLayout::new(out, inp, group, axis)?;
                let bits = Bits::try_from(bits)?;
                let (pr, pc) = l.packed_shape(bits)?;
                let word = if bits == Bits::B3 { 4 } else { 1 };
                word * pr * pc + 4 * l.groups()
            }
        })
    }

    /// Effective bits per weight of an `out x inp` layer: `8 * layer_bytes / numel`.
    pub fn bits_per_weight(&self, out: usize, inp: usize) -> Result<f64> {
        let bytes = self.layer_bytes(out, inp)?;
        Ok(8.0 * bytes as f64 / (out * inp).max(1) as f64)
    }
}

/// `*` matches any run of characters (dots included), `?` any one character.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Which scheme each layer gets: a default, then overrides by exact name or glob (`*`, `?`).
/// An exact name wins over every glob; among globs the first added that matches wins. An
/// override of `None` leaves matching layers unquantized (e.g. `lm_head`).
///
/// ```
/// use quant_kernels::method::{QuantConfig, QuantMethod};
/// let cfg = QuantConfig::new(QuantMethod::Awq { group: 128 })
///     .with("model.layers.*.mlp.down_proj", Some(QuantMethod::Int8Symmetric { per_channel: true }))?
///     .with("lm_head", None)?;
/// assert_eq!(cfg.method_for("model.layers.3.mlp.down_proj").unwrap().to_string(), "int8-sym-channel");
/// assert_eq!(cfg.method_for("model.layers.3.mlp.up_proj").unwrap().to_string(), "awq-4bit-g128");
/// assert_eq!(cfg.method_for("lm_head"), None);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct QuantConfig {
    default: Option<QuantMethod>,
    overrides: Vec<(String, Option<QuantMethod>)>,
}

/// Memory of a model under a [`QuantConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryEstimate {
    /// `(layer, method or None, bytes)` per layer.
    pub layers: Vec<(String, Option<QuantMethod>, usize)>,
    /// Bytes of all layers as configured.
    pub total_bytes: usize,
    /// Bytes of all layers in f16.
    pub f16_bytes: usize,
}

impl MemoryEstimate {
    /// `f16_bytes / total_bytes`.
    pub fn compression(&self) -> f64 {
        self.f16_bytes as f64 / self.total_bytes.max(1) as f64
    }
}

impl QuantConfig {
    /// Every layer gets `default` unless overridden (`validate` checks it).
    pub fn new(default: QuantMethod) -> Self {
        Self { default: Some(default), overrides: Vec::new() }
    }

    /// No layer is quantized unless overridden.
    pub fn unquantized() -> Self {
        Self { default: None, overrides: Vec::new() }
    }

    /// Add an override for `pattern` (an exact name or a glob); the method is validated and a
    /// pattern may appear once.
    pub fn with(mut self, pattern: &str, method: Option<QuantMethod>) -> Result<Self> {
        if pattern.is_empty() || self.overrides.iter().any(|(p, _)| p == pattern) {
            return Err(Error::Format(FormatError::Config {
                field: pattern.into(),
                reason: "empty or repeated override pattern".into(),
            }));
        }
        if let Some(m) = &method {
            m.validate()?;
        }
        self.overrides.push((pattern.to_string(), method));
        Ok(self)
    }

    /// Validate the default and every override.
    pub fn validate(&self) -> Result<()> {
        self.default
            .iter()
            .chain(self.overrides.iter().filter_map(|(_, m)| m.as_ref()))
            .try_for_each(|m| m.validate())
    }

    /// The scheme for `layer`, `None` when it stays unquantized.
    pub fn method_for(&self, layer: &str) -> Option<&QuantMethod> {
        let exact = self.overrides.iter().find(|(p, _)| p == layer);
        let glob = || self.overrides.iter().find(|(p, _)| p.contains(['*', '?']) && glob_match(p, layer));
        match exact.or_else(glob) {
            Some((_, m)) => m.as_ref(),
            None => self.default.as_ref(),
        }
    }

    /// Bytes of every `(name, out, inp)` layer under this config (unquantized layers counted as
    /// f16), checking every layer's shape against its scheme.
    pub fn estimate<'a>(
        &self,
        layers: impl IntoIterator<Item = (&'a str, usize, usize)>,
    ) -> Result<MemoryEstimate> {
        self.validate()?;
        let mut est = MemoryEstimate { layers: Vec::new(), total_bytes: 0, f16_bytes: 0 };
        for (name, out, inp) in layers {
            let f16 = 2 * out
                .checked_mul(inp)
                .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: out, cols: inp }))?;
            let method = self.method_for(name).copied();
            let bytes = match &method {
                Some(m) => m.layer_bytes(out, inp).map_err(|e| {
                    Error::Format(FormatError::Config {
                        field: name.into(),
                        reason: format!("{m} does not fit a {out}x{inp} layer: {e}"),
                    })
                })?,
                None => f16,
            };
            est.total_bytes += bytes;
            est.f16_bytes += f16;
            est.layers.push((name.to_string(), method, bytes));
        }
        Ok(est)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("model.layers.*.mlp.down_proj", "model.layers.12.mlp.down_proj", true),
            ("model.layers.*.mlp.down_proj", "model.layers.12.mlp.up_proj", false),
            ("*", "", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*.q_proj", "x.y.q_proj", true),
            ("*a*b", "xxaxxbxb", true),
            ("lm_head", "lm_head", true),
            ("lm_head", "lm_head2", false),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn names_parse_back_to_their_methods() {
        use std::str::FromStr;
        for m in [
            QuantMethod::Int8Symmetric { per_channel: true },
            QuantMethod::Int8Symmetric { per_channel: false },
            QuantMethod::Int4Asymmetric { group: 128 },
            QuantMethod::Fp8 { format: Fp8Format::E4M3, block: None },
            QuantMethod::Fp8 { format: Fp8Format::E5M2, block: Some((128, 64)) },
            QuantMethod::Awq { group: 32 },
            QuantMethod::SmoothQuant { alpha: 0.5 },
            QuantMethod::SmoothQuant { alpha: 0.0 },
            QuantMethod::Gptq { bits: 4, group: Some(128), act_order: true },
            QuantMethod::Gptq { bits: 3, group: Some(64), act_order: false },
            QuantMethod::Gptq { bits: 8, group: None, act_order: false },
            QuantMethod::Gptq { bits: 2, group: None, act_order: true },
            QuantMethod::Hqq { bits: 1, group: 16, axis: Axis::Zero },
            QuantMethod::Hqq { bits: 8, group: 64, axis: Axis::One },
        ] {
            assert_eq!(QuantMethod::from_str(&m.to_string()), Ok(m), "{m}");
        }
        for bad in [
            "",
            "int8",
            "int8-sym",
            "int8-asym-channel",
            "int4-asym-g",
            "int4-asym-gx",
            "int4-asym-g0",
            "fp8-e4m3",
            "fp8-e3m4-tensor",
            "fp8-e4m3-block128",
            "fp8-e4m3-blockx8",
            "awq-3bit-g128",
            "smoothquant-a",
            "smoothquant-a2",
            "gptq-4bit",
            "gptq-4-g128",
            "gptq-5bit-g128",
            "gptq-4bit-g-2",
            "gptq-4bit-g128-desc",
            "gptq-4bit-g-1-act-x",
            "hqq-4bit-g64",
            "hqq-4bit-g64-axis2",
            "hqq-3bit-gx-axis0",
            "hqq-4bit-g64-axis0-x",
            "bnb-4bit",
        ] {
            let e = QuantMethod::from_str(bad);
            assert!(
                matches!(
                    e,
                    Err(Error::Format(FormatError::Config { .. })
                        | Error::Kernel(KernelError::UnsupportedBits(_)))
                ),
                "{bad}: {e:?}"
            );
        }
    }

    #[test]
    fn invalid_methods_and_configs() {
        for m in [
            QuantMethod::Int4Asymmetric { group: 0 },
            QuantMethod::Int4Asymmetric { group: 3 },
            QuantMethod::Awq { group: 0 },
            QuantMethod::Fp8 { format: Fp8Format::E4M3, block: Some((0, 128)) },
            QuantMethod::SmoothQuant { alpha: 1.5 },
            QuantMethod::SmoothQuant { alpha: f32::NAN },
            QuantMethod::Gptq { bits: 5, group: Some(128), act_order: false },
            QuantMethod::Gptq { bits: 4, group: Some(0), act_order: false },
            QuantMethod::Hqq { bits: 5, group: 64, axis: Axis::Zero },
            QuantMethod::Hqq { bits: 4, group: 0, axis: Axis::Zero },
        ] {
            assert!(m.validate().is_err(), "{m}");
            assert!(QuantConfig::unquantized().with("x", Some(m)).is_err());
            assert!(QuantConfig::new(m).validate().is_err());
        }
        let ok = QuantConfig::new(QuantMethod::Awq { group: 128 });
        assert!(ok.clone().with("a", None).unwrap().with("a", None).is_err(), "repeated pattern");
        // A layer whose shape does not suit its scheme.
        assert!(matches!(ok.estimate([("x", 64, 100)]), Err(Error::Format(FormatError::Config { .. }))));
    }
}
