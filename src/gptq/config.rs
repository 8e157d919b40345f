//! A GPTQ checkpoint's quantization config (`quantize_config.json`, or `quantization_config` in
//! `config.json`), with auto-gptq 0.7.1's defaults for absent fields.

use super::ZeroFormat;
use crate::error::Result;
use crate::io::fields::{get_bool, get_int, get_str, invalid};
use serde_json::Value;

/// The fields of a GPTQ quantization config that decide how the tensors are read.
///
/// ```
/// use quant_kernels::gptq::{GptqConfig, ZeroFormat};
/// let c = GptqConfig::from_json(&serde_json::json!({"bits": 8, "sym": false, "checkpoint_format": "gptq_v2"}))?;
/// assert_eq!((c.bits, c.group_size, c.desc_act, c.sym, c.format), (8, -1, true, false, ZeroFormat::V2));
/// let bad = GptqConfig::from_json(&serde_json::json!({"bits": 5}));
/// assert!(matches!(bad, Err(quant_kernels::Error::Format(quant_kernels::error::FormatError::Config { .. }))));
/// # Ok::<(), quant_kernels::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GptqConfig {
    /// Bits per code: 2, 3, 4 or 8 (default 4).
    pub bits: u8,
    /// Inputs per group, or -1 for one group over all inputs (default -1).
    pub group_size: i64,
    /// Act-order: `g_idx` is a permutation of groups (default true, as auto-gptq 0.7.1).
    pub desc_act: bool,
    /// Symmetric: every zero point is `2^(bits-1)` (default true).
    pub sym: bool,
    /// How zero points are stored (`checkpoint_format`; default v1, `"gptq"`).
    pub format: ZeroFormat,
}

impl Default for GptqConfig {
    /// auto-gptq 0.7.1's `BaseQuantizeConfig` defaults.
    fn default() -> Self {
        Self { bits: 4, group_size: -1, desc_act: true, sym: true, format: ZeroFormat::V1 }
    }
}

impl GptqConfig {
    /// Parse a config object. Wrong types, unsupported values (`bits` 5, `group_size` 0, a
    /// `quant_method` other than `gptq`, a `checkpoint_format` such as `marlin`, a `pack_dtype`
    /// other than `int32`, `is_marlin_format: true`) and contradictions (`format` and
    /// `checkpoint_format` both given and different) are [`FormatError::Config`](crate::error::FormatError::Config).
    pub fn from_json(value: &Value) -> Result<Self> {
        let obj = value.as_object().ok_or_else(|| invalid("quantization_config", "is not a JSON object"))?;
        let d = Self::default();
        if let Some(method) = get_str(obj, "quant_method")?
            && !method.eq_ignore_ascii_case("gptq")
        {
            return Err(invalid("quant_method", format!("`{method}` is not GPTQ")));
        }
        let bits = match get_int(obj, "bits")? {
            None => d.bits,
            Some(b @ (2 | 3 | 4 | 8)) => b as u8,
            Some(b) => return Err(invalid("bits", format!("{b} (expected 2, 3, 4 or 8)"))),
        };
        let group_size = match get_int(obj, "group_size")? {
            None => d.group_size,
            Some(g) if g == -1 || g > 0 => g,
            Some(g) => return Err(invalid("group_size", format!("{g} (expected -1 or a positive size)"))),
        };
        let format = match (get_str(obj, "checkpoint_format")?, get_str(obj, "format")?) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid("checkpoint_format", format!("`{a}` contradicts format `{b}`")));
            }
            (Some(f), _) | (None, Some(f)) => match f {
                "gptq" => ZeroFormat::V1,
                "gptq_v2" => ZeroFormat::V2,
                other => {
                    return Err(invalid(
                        "checkpoint_format",
                        format!("`{other}` (expected gptq or gptq_v2)"),
                    ));
                }
            },
            (None, None) => d.format,
        };
        if get_bool(obj, "is_marlin_format", false)? {
            return Err(invalid("is_marlin_format", "Marlin-repacked weights are not the GPTQ layout"));
        }
        if let Some(p) = get_str(obj, "pack_dtype")?
            && p != "int32"
        {
            return Err(invalid("pack_dtype", format!("`{p}` (only int32 is supported)")));
        }
        Ok(Self {
            bits,
            group_size,
            desc_act: get_bool(obj, "desc_act", d.desc_act)?,
            sym: get_bool(obj, "sym", d.sym)?,
            format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::error::FormatError;
    use serde_json::json;

    #[test]
    fn defaults_and_errors() {
        assert_eq!(GptqConfig::from_json(&json!({})).unwrap(), GptqConfig::default());
        let c = GptqConfig::from_json(
            &json!({"bits": 3, "group_size": 128, "desc_act": false, "format": "gptq"}),
        )
        .unwrap();
        assert_eq!(
            (c.bits, c.group_size, c.desc_act, c.sym, c.format),
            (3, 128, false, true, ZeroFormat::V1)
        );
        for (bad, field) in [
            (json!([]), "quantization_config"),
            (json!({"bits": "4"}), "bits"),
            (json!({"bits": 16}), "bits"),
            (json!({"group_size": 0}), "group_size"),
            (json!({"group_size": -2}), "group_size"),
            (json!({"sym": 1}), "sym"),
            (json!({"desc_act": "yes"}), "desc_act"),
            (json!({"quant_method": "awq"}), "quant_method"),
            (json!({"checkpoint_format": "marlin"}), "checkpoint_format"),
            (json!({"checkpoint_format": "gptq", "format": "gptq_v2"}), "checkpoint_format"),
            (json!({"is_marlin_format": true}), "is_marlin_format"),
            (json!({"pack_dtype": "int16"}), "pack_dtype"),
        ] {
            match GptqConfig::from_json(&bad) {
                Err(Error::Format(FormatError::Config { field: f, .. })) => assert_eq!(f, field, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
