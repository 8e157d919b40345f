//! PEFT LoRA adapters, merged into their base layers as those load: [`LoraAdapter`].
//!
//! An adapter directory holds `adapter_config.json` (`r`, `lora_alpha`, `target_modules`,
//! `fan_in_fan_out`, `use_rslora`, `rank_pattern`, `alpha_pattern`) and
//! `adapter_model.safetensors` with, for each adapted linear module `<m>`,
//! `base_model.model.<m>.lora_A.weight [r, in]` and `base_model.model.<m>.lora_B.weight
//! [out, r]`. Merging adds `s * B A` to the base weight `[out, in]`, with `s = alpha / r`
//! (`alpha / sqrt(r)` with rsLoRA), as peft's `merge_and_unload`; with `fan_in_fan_out` the
//! base stores its weight `[in, out]` (GPT-2's `Conv1D`) and the product is added transposed,
//! to the weight as stored.
//!
//! [`LoraAdapter::open`] reads the config and the tensor headers and checks every module's
//! pair of weights against each other and the config before any value is read; values are
//! read per module, and only the rows and columns a merged region needs.
//!
//! Arithmetic, per merged element: the `r`-term dot product of `B`'s row and `A`'s column in
//! `f64`, rounded to `f32`, times `s` rounded to `f32`, added to the `f32` base value (peft
//! computes the same sum in `f32`, so results agree to the rounding of an `r`-term sum).

use super::safetensors::{Dtype, LeElem, SafetensorsFile};
use crate::elem::FloatVec;
use crate::error::{Error, FormatError, LoraError, Result};
use crate::par::{Parallelism, row_chunks};
use half::{bf16, f16};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Name of an adapter's config file.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// Name of an adapter's weights.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// The prefix peft gives every adapter tensor.
const PREFIX: &str = "base_model.model.";

/// Which modules an adapter's config says it adapts (`target_modules`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetModules {
    /// A list: a module is targeted when its name is an entry or ends with `.<entry>`.
    Names(Vec<String>),
    /// `"all-linear"`, or a regular expression (not evaluated here): the adapter's tensors
    /// say which modules it adapts.
    Unchecked(String),
}

impl TargetModules {
    /// Whether `module` is one of these targets (always, when they are not a list).
    pub fn matches(&self, module: &str) -> bool {
        match self {
            TargetModules::Names(names) => names.iter().any(|t| suffix_match(module, t)),
            TargetModules::Unchecked(_) => true,
        }
    }
}

/// `module` is `name` or ends with `.name`.
fn suffix_match(module: &str, name: &str) -> bool {
    module == name || module.strip_suffix(name).is_some_and(|rest| rest.ends_with('.'))
}

/// The fields of `adapter_config.json` a merge uses.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// The default rank `r`.
    pub r: usize,
    /// The default `lora_alpha`.
    pub alpha: f64,
    /// The adapted modules.
    pub target_modules: TargetModules,
    /// The base stores its weights `[in, out]` (GPT-2's `Conv1D`).
    pub fan_in_fan_out: bool,
    /// rsLoRA: `s = alpha / sqrt(r)` instead of `alpha / r`.
    pub use_rslora: bool,
    /// Per-module ranks, keyed by module name or `.`-suffix.
    pub rank_pattern: BTreeMap<String, usize>,
    /// Per-module alphas, keyed by module name or `.`-suffix.
    pub alpha_pattern: BTreeMap<String, f64>,
}

impl LoraConfig {
    /// Parse an `adapter_config.json` value (see the module docs for the fields read; DoRA,
    /// LoRA biases and regular-expression patterns are refused).
    ///
    /// ```
    /// use quant_kernels::io::lora::LoraConfig;
    /// let c = LoraConfig::from_json(&serde_json::json!({
    ///     "peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
    ///     "use_rslora": true, "alpha_pattern": {"v_proj": 4}
    /// }))?;
    /// assert_eq!(c.scale("model.layers.0.self_attn.q_proj"), (8, 16.0 / 8f64.sqrt()));
    /// assert_eq!(c.scale("model.layers.0.self_attn.v_proj"), (8, 4.0 / 8f64.sqrt()));
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn from_json(v: &serde_json::Value) -> Result<Self> {
        let bad = |field: &str, reason: &str| {
            Error::Lora(LoraError::Config { field: field.into(), reason: reason.into() })
        };
        if let Some(t) = v.get("peft_type").filter(|t| !t.is_null())
            && t.as_str() != Some("LORA")
        {
            return Err(bad("peft_type", &format!("{t} is not \"LORA\"")));
        }
        for flag in ["use_dora", "lora_bias"] {
            if v.get(flag).and_then(|f| f.as_bool()) == Some(true) {
                return Err(bad(flag, "is not supported (only plain LoRA merges)"));
            }
        }
        let rank = |x: &serde_json::Value, field: &str| {
            x.as_u64()
                .and_then(|r| usize::try_from(r).ok())
                .filter(|&r| r > 0)
                .ok_or_else(|| bad(field, &format!("{x} is not a positive integer")))
        };
        let alpha = |x: &serde_json::Value, field: &str| {
            x.as_f64().filter(|a| a.is_finite()).ok_or_else(|| bad(field, &format!("{x} is not a number")))
        };
        let r = rank(v.get("r").ok_or_else(|| bad("r", "missing"))?, "r")?;
        let a = alpha(v.get("lora_alpha").ok_or_else(|| bad("lora_alpha", "missing"))?, "lora_alpha")?;
        let target_modules = match v.get("target_modules") {
            Some(serde_json::Value::Array(items)) => TargetModules::Names(
                items
                    .iter()
                    .map(|t| {
                        t.as_str().map(str::to_string).ok_or_else(|| bad("target_modules", "not a string"))
                    })
                    .collect::<Result<_>>()?,
            ),
            Some(serde_json::Value::String(s)) => TargetModules::Unchecked(s.clone()),
            _ => TargetModules::Unchecked(String::new()),
        };
        let flag = |name: &str| match v.get(name) {
            None | Some(serde_json::Value::Null) => Ok(false),
            Some(f) => f.as_bool().ok_or_else(|| bad(name, "is not a boolean")),
        };
        Ok(LoraConfig {
            r,
            alpha: a,
            target_modules,
            fan_in_fan_out: flag("fan_in_fan_out")?,
            use_rslora: flag("use_rslora")?,
            rank_pattern: pattern(v, "rank_pattern", rank)?,
            alpha_pattern: pattern(v, "alpha_pattern", alpha)?,
        })
    }

    /// Module `module`'s rank and scale `s` (`rank_pattern` / `alpha_pattern` first: an exact
    /// name, else the longest `.`-suffix).
    pub fn scale(&self, module: &str) -> (usize, f64) {
        let r = lookup(&self.rank_pattern, module).unwrap_or(self.r);
        let alpha = lookup(&self.alpha_pattern, module).unwrap_or(self.alpha);
        let s = if self.use_rslora { alpha / (r as f64).sqrt() } else { alpha / r as f64 };
        (r, s)
    }
}

/// A `rank_pattern` / `alpha_pattern` object, its keys plain module names or suffixes.
fn pattern<T>(
    v: &serde_json::Value,
    field: &str,
    parse: impl Fn(&serde_json::Value, &str) -> Result<T>,
) -> Result<BTreeMap<String, T>> {
    let Some(map) = v.get(field).filter(|m| !m.is_null()) else { return Ok(BTreeMap::new()) };
    let map = map.as_object().ok_or_else(|| {
        Error::Lora(LoraError::Config { field: field.into(), reason: "is not an object".into() })
    })?;
    map.iter()
        .map(|(key, x)| {
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                return Err(Error::Lora(LoraError::Config {
                    field: format!("{field}.{key}"),
                    reason: "a regular expression key is not supported; name the module".into(),
                }));
            }
            Ok((key.clone(), parse(x, &format!("{field}.{key}"))?))
        })
        .collect()
}

/// The value of the pattern `module` matches: an exact key, else the longest suffix key.
fn lookup<T: Copy>(map: &BTreeMap<String, T>, module: &str) -> Option<T> {
    map.get(module).copied().or_else(|| {
        map.iter().filter(|(k, _)| suffix_match(module, k)).max_by_key(|(k, _)| k.len()).map(|(_, v)| *v)
    })
}

/// One adapted module: its shapes and scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraModule {
    /// Rank `r`.
    pub rank: usize,
    /// Input width (`lora_A`'s columns).
    pub inp: usize,
    /// Output width (`lora_B`'s rows).
    pub out: usize,
    /// `s`: `alpha / r`, or `alpha / sqrt(r)` with rsLoRA.
    pub scale: f64,
}

/// An opened, validated PEFT LoRA adapter (see the module docs).
#[derive(Debug, Clone)]
pub struct LoraAdapter {
    dir: PathBuf,
    config: LoraConfig,
    file: SafetensorsFile,
    modules: BTreeMap<String, LoraModule>,
}

impl LoraAdapter {
    /// Open the adapter in `dir`: parse its config, and check that every tensor is a module's
    /// `lora_A` or `lora_B` weight, that both are present with shapes `[r, in]` and `[out, r]`
    /// (`r` the config's, per module), and that `target_modules` names each module.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join(ADAPTER_CONFIG);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Format(FormatError::Json { path: path.display().to_string(), reason: e.to_string() })
        })?;
        let config = LoraConfig::from_json(&json)?;
        let file = SafetensorsFile::open(dir.join(ADAPTER_WEIGHTS))?;
        let mut halves: BTreeMap<&str, [Option<&[usize]>; 2]> = BTreeMap::new();
        for (name, info) in file.tensors() {
            let unexpected = || Error::Lora(LoraError::UnexpectedTensor { tensor: name.clone() });
            let stem = name.strip_prefix(PREFIX).ok_or_else(unexpected)?;
            let (module, which) = if let Some(m) = stem.strip_suffix(".lora_A.weight") {
                (m, 0)
            } else if let Some(m) = stem.strip_suffix(".lora_B.weight") {
                (m, 1)
            } else {
                return Err(unexpected());
            };
            if module.is_empty() || !matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::Bf16) {
                return Err(unexpected());
            }
            halves.entry(module).or_default()[which] = Some(&info.shape);
        }
        let mut modules = BTreeMap::new();
        for (module, [a, b]) in halves {
            let name = |which: &str| format!("{PREFIX}{module}.lora_{which}.weight");
            let missing = |which| Error::Lora(LoraError::MissingTensor { tensor: name(which) });
            let (a, b) = (a.ok_or_else(|| missing("A"))?, b.ok_or_else(|| missing("B"))?);
            if !config.target_modules.matches(module) {
                return Err(Error::Lora(LoraError::NotTargeted { module: module.into() }));
            }
            let (rank, scale) = config.scale(module);
            let shape_err = |which, expected: Vec<usize>, got: &[usize]| {
                Error::Lora(LoraError::Shape { tensor: name(which), expected, got: got.to_vec() })
            };
            let [ra, inp] = a[..] else { return Err(shape_err("A", vec![rank, 0], a)) };
            let [out, rb] = b[..] else { return Err(shape_err("B", vec![0, rank], b)) };
            if ra != rank {
                return Err(shape_err("A", vec![rank, inp], a));
            }
            if rb != rank {
                return Err(shape_err("B", vec![out, rank], b));
            }
            modules.insert(module.to_string(), LoraModule { rank, inp, out, scale });
        }
        Ok(LoraAdapter { dir: dir.to_path_buf(), config, file, modules })
    }

    /// The adapter directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its config.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// Every adapted module, by name (the base model's layer prefix).
    pub fn modules(&self) -> &BTreeMap<String, LoraModule> {
        &self.modules
    }

    /// Module `module`, if the adapter adapts it.
    pub fn module(&self, module: &str) -> Option<&LoraModule> {
        self.modules.get(module)
    }

    /// The `[rows, cols]` the base must store module `module`'s weight as: `[out, in]`, or
    /// `[in, out]` with `fan_in_fan_out`; `None` when the adapter does not adapt it.
    pub fn stored_shape(&self, module: &str) -> Option<(usize, usize)> {
        let m = self.modules.get(module)?;
        Some(if self.config.fan_in_fan_out { (m.inp, m.out) } else { (m.out, m.inp) })
    }

    /// Check every module against its base layer: `stored_shape(module)` gives the base
    /// weight's stored `[rows, cols]`, `None` when the base has no such layer.
    pub fn check_against(&self, stored_shape: impl Fn(&str) -> Option<(usize, usize)>) -> Result<()> {
        for name in self.modules.keys() {
            let shape = stored_shape(name)
                .ok_or_else(|| Error::Lora(LoraError::UnknownModule { module: name.clone() }))?;
            self.check_base(name, shape)?;
        }
        Ok(())
    }

    /// Check module `module`'s weights against a base weight stored `[rows, cols]`.
    pub fn check_base(&self, module: &str, (rows, cols): (usize, usize)) -> Result<&LoraModule> {
        let m = self
            .modules
            .get(module)
            .ok_or_else(|| Error::Lora(LoraError::UnknownModule { module: module.into() }))?;
        let (inp, out) = if self.config.fan_in_fan_out { (rows, cols) } else { (cols, rows) };
        let err = |which: &str, expected: Vec<usize>, got: Vec<usize>| {
            Error::Lora(LoraError::Shape {
                tensor: format!("{PREFIX}{module}.lora_{which}.weight"),
                expected,
                got,
            })
        };
        if m.inp != inp {
            return Err(err("A", vec![m.rank, inp], vec![m.rank, m.inp]));
        }
        if m.out != out {
            return Err(err("B", vec![out, m.rank], vec![m.out, m.rank]));
        }
        Ok(m)
    }

    /// Rows `rows`, columns `cols` of adapter tensor `name`, widened to `f32`.
    fn read_f32(&self, name: &str, rows: Range<usize>, cols: Range<usize>) -> Result<Vec<f32>> {
        let bytes = self.file.read_region(name, rows, cols)?;
        let dtype = self.file.info(name).map(|i| i.dtype);
        Ok(match dtype {
            Some(Dtype::F16) => FloatVec::F16(f16::from_le(&bytes)).to_f32(),
            Some(Dtype::Bf16) => FloatVec::Bf16(bf16::from_le(&bytes)).to_f32(),
            _ => f32::from_le(&bytes),
        })
    }

    /// Add module `module`'s `s * B A` to the region `rows` x `cols` of its base weight as
    /// stored `[stored_rows, stored_cols]` (see [`LoraAdapter::check_base`]); `w` holds that
    /// region row-major. Reads only the rows of `B` and columns of `A` the region needs.
    ///
    /// ```
    /// # let dir = std::env::temp_dir().join(format!("qk-lora-doc-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir).unwrap();
    /// use quant_kernels::Parallelism;
    /// use quant_kernels::io::lora::LoraAdapter;
    /// use quant_kernels::io::{Dtype, SafetensorsWriter};
    /// std::fs::write(dir.join("adapter_config.json"), r#"{"r": 1, "lora_alpha": 2, "target_modules": ["q"]}"#)?;
    /// let (a, b) = ("base_model.model.q.lora_A.weight", "base_model.model.q.lora_B.weight");
    /// let decl = [(a.to_string(), Dtype::F32, vec![1, 2]), (b.to_string(), Dtype::F32, vec![2, 1])];
    /// let mut f = SafetensorsWriter::create(dir.join("adapter_model.safetensors"), &decl, &Default::default())?;
    /// f.write(a, bytemuck::cast_slice(&[1.0f32, 2.0]))?; // A = [1 2]
    /// f.write(b, bytemuck::cast_slice(&[3.0f32, 4.0]))?; // B = [3 4]^T
    /// f.finish()?;
    /// let lora = LoraAdapter::open(&dir)?;
    /// let mut w = vec![0.5f32; 4]; // the whole [2, 2] base weight
    /// lora.merge_region("q", (2, 2), &mut w, 0..2, 0..2, Parallelism::SERIAL)?;
    /// assert_eq!(w, [6.5, 12.5, 8.5, 16.5]); // w + 2 * B A
    /// let mut row1 = vec![0.5f32; 1]; // row 1, column 0 only
    /// lora.merge_region("q", (2, 2), &mut row1, 1..2, 0..1, Parallelism::SERIAL)?;
    /// assert_eq!(row1, [8.5]);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn merge_region(
        &self,
        module: &str,
        stored: (usize, usize),
        w: &mut [f32],
        rows: Range<usize>,
        cols: Range<usize>,
        par: Parallelism,
    ) -> Result<()> {
        let m = *self.check_base(module, stored)?;
        if rows.start > rows.end || rows.end > stored.0 || cols.start > cols.end || cols.end > stored.1 {
            return Err(Error::Format(FormatError::TensorRegion {
                tensor: format!("{module}.weight"),
                rows,
                cols,
                shape: vec![stored.0, stored.1],
            }));
        }
        crate::error::expect_len("merged region", rows.len() * cols.len(), w.len())?;
        // o and i ranges of the region: rows and columns, or (fan_in_fan_out) the other way.
        let (o, i) = if self.config.fan_in_fan_out {
            (cols.clone(), rows.clone())
        } else {
            (rows.clone(), cols.clone())
        };
        let r = m.rank;
        let b = self.read_f32(&format!("{PREFIX}{module}.lora_B.weight"), o.clone(), 0..r)?;
        let a = self.read_f32(&format!("{PREFIX}{module}.lora_A.weight"), 0..r, i.clone())?;
        // A's columns as contiguous rank vectors, so each element is two contiguous reads.
        let ni = i.len();
        let mut at = vec![0f32; ni * r];
        for (k, row) in a.chunks_exact(ni.max(1)).enumerate().take(r) {
            for (c, &x) in row.iter().enumerate() {
                at[c * r + k] = x;
            }
        }
        let s = m.scale as f32;
        let delta = |oo: usize, ii: usize| {
            let dot: f64 = b[oo * r..(oo + 1) * r]
                .iter()
                .zip(&at[ii * r..(ii + 1) * r])
                .map(|(&x, &y)| x as f64 * y as f64)
                .sum();
            dot as f32 * s
        };
        let fan = self.config.fan_in_fan_out;
        row_chunks(w, cols.len(), par, |first, chunk| {
            for (dr, row) in chunk.chunks_exact_mut(cols.len()).enumerate() {
                let rr = first + dr;
                for (cc, x) in row.iter_mut().enumerate() {
                    *x += if fan { delta(cc, rr) } else { delta(rr, cc) };
                }
            }
        });
        Ok(())
    }
}
