//! A model checkpoint directory: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`, plus its quantization config.
//!
//! [`Checkpoint::open`] does all the checking before any tensor is read: every shard the index
//! names must exist inside the directory (a name with `..`, an absolute path, or a symlink that
//! leads out is refused), every shard's header must be valid and consistent with its length,
//! and every tensor the index names must be in the shard it is named for (a stale index fails at
//! once, listing the missing names). Tensors are then read one at a time.
//!
//! The quantization config comes from `quantize_config.json` and/or the `quantization_config`
//! object of `config.json`; when both exist, a field present in both with different values is
//! an [`FormatError::Config`].

use super::safetensors::{Dtype, LeElem, SafetensorsFile, TensorInfo};
use crate::elem::FloatVec;
use crate::error::{Error, FormatError, Result};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The float dtypes scales and biases may have.
pub const FLOATS: &[Dtype] = &[Dtype::F16, Dtype::Bf16, Dtype::F32];

/// Name of the single-file checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// Name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// An opened, validated checkpoint.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<SafetensorsFile>,
    /// Tensor name -> index into `shards`.
    tensors: BTreeMap<String, usize>,
    quantization: Option<serde_json::Value>,
    /// Tensor bytes read so far, by this checkpoint and its clones.
    bytes_read: Arc<AtomicU64>,
}

/// Read and parse a JSON file; `Ok(None)` when it does not exist.
fn read_json(path: &Path) -> Result<Option<serde_json::Value>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Format(FormatError::Json { path: path.display().to_string(), reason: e.to_string() })
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `dir/name` if `name` is a relative path of plain components that stays inside `dir` once
/// symlinks are resolved.
fn inside(dir: &Path, canonical_dir: &Path, name: &str) -> Result<PathBuf> {
    let rel = Path::new(name);
    if name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::Format(FormatError::OutsideDirectory(name.to_string())));
    }
    let path = dir.join(rel);
    match path.canonicalize() {
        Ok(real) if !real.starts_with(canonical_dir) => {
            Err(Error::Format(FormatError::OutsideDirectory(name.to_string())))
        }
        _ => Ok(path), // absent files are reported by the caller
    }
}

impl Checkpoint {
    /// Open and validate the checkpoint in `dir` (see the module docs).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let canonical = dir.canonicalize().map_err(|e| Error::io(dir, e))?;
        let index_path = dir.join(INDEX_FILE);
        let (shards, tensors) = match read_json(&index_path)? {
            Some(index) => Self::open_index(dir, &canonical, &index_path, &index)?,
            None => {
                let file = SafetensorsFile::open(dir.join(SINGLE_FILE))?;
                let tensors = file.tensors().keys().map(|k| (k.clone(), 0)).collect();
                (vec![file], tensors)
            }
        };
        let quantization = Self::read_quantization(dir)?;
        Ok(Self { dir: dir.to_path_buf(), shards, tensors, quantization, bytes_read: Arc::default() })
    }

    fn open_index(
        dir: &Path,
        canonical: &Path,
        index_path: &Path,
        index: &serde_json::Value,
    ) -> Result<(Vec<SafetensorsFile>, BTreeMap<String, usize>)> {
        let bad = |reason: &str| {
            Error::Format(FormatError::Json { path: index_path.display().to_string(), reason: reason.into() })
        };
        let map =
            index.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no weight_map object"))?;
        // file name -> tensors the index places there
        let mut by_file: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| bad(&format!("weight_map[{tensor}] is not a string")))?;
            by_file.entry(file).or_default().push(tensor);
        }
        let mut shards = Vec::with_capacity(by_file.len());
        let mut tensors = BTreeMap::new();
        let mut missing = Vec::new();
        for (file, names) in &by_file {
            let path = inside(dir, canonical, file)?;
            if !path.is_file() {
                return Err(Error::Format(FormatError::MissingShard {
                    file: file.to_string(),
                    tensors: names.len(),
                }));
            }
            let shard = SafetensorsFile::open(&path)?;
            for name in names {
                if shard.info(name).is_some() {
                    tensors.insert(name.to_string(), shards.len());
                } else {
                    missing.push(format!("{name} (in {file})"));
                }
            }
            shards.push(shard);
        }
        if !missing.is_empty() {
            return Err(Error::Format(FormatError::MissingTensors(missing)));
        }
        Ok((shards, tensors))
    }

    /// `quantize_config.json` and `config.json`'s `quantization_config`, merged; a field the
    /// two give different values is a contradiction.
    fn read_quantization(dir: &Path) -> Result<Option<serde_json::Value>> {
        let separate = read_json(&dir.join("quantize_config.json"))?;
        let embedded =
            read_json(&dir.join("config.json"))?.and_then(|c| c.get("quantization_config").cloned());
        Ok(match (separate, embedded) {
            (Some(a), Some(b)) => {
                let (Some(ma), Some(mb)) = (a.as_object(), b.as_object()) else {
                    return Err(Error::Format(FormatError::Config {
                        field: "quantization_config".into(),
                        reason: "is not a JSON object".into(),
                    }));
                };
                for (key, value) in ma {
                    if let Some(other) = mb.get(key).filter(|o| *o != value && key != "meta") {
                        return Err(Error::Format(FormatError::Config {
                            field: key.clone(),
                            reason: format!(
                                "quantize_config.json says {value}, config.json's quantization_config says {other}"
                            ),
                        }));
                    }
                }
                let mut merged = mb.clone();
                merged.extend(ma.clone());
                Some(serde_json::Value::Object(merged))
            }
            (a, b) => a.or(b),
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The quantization config (merged from both places it may live), if any.
    pub fn quantization_config(&self) -> Option<&serde_json::Value> {
        self.quantization.as_ref()
    }

    /// The quantization config, or the [`FormatError::Config`] that says there is none.
    pub fn require_quantization_config(&self) -> Result<&serde_json::Value> {
        self.quantization.as_ref().ok_or_else(|| {
            Error::Format(FormatError::Config {
                field: "quantization_config".into(),
                reason: "neither quantize_config.json nor config.json's quantization_config exists".into(),
            })
        })
    }

    /// Every tensor name, sorted.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// One tensor's dtype, shape and place.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.get(name).and_then(|&s| self.shards[s].info(name))
    }

    /// The shard file holding `name`.
    pub fn shard_of(&self, name: &str) -> Option<&Path> {
        self.tensors.get(name).map(|&s| self.shards[s].path())
    }

    /// The file holding `name`.
    fn file(&self, name: &str) -> Result<&SafetensorsFile> {
        let &s = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![name.to_string()])))?;
        Ok(&self.shards[s])
    }

    fn count(&self, bytes: usize) {
        self.bytes_read.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Tensor bytes this checkpoint (and its clones) have read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// Read one tensor's raw bytes.
    pub fn read(&self, name: &str) -> Result<Vec<u8>> {
        let bytes = self.file(name)?.read(name)?;
        self.count(bytes.len());
        Ok(bytes)
    }

    /// Read one tensor as `T` (its dtype must be `T`'s).
    pub fn read_as<T: LeElem>(&self, name: &str) -> Result<Vec<T>> {
        let values = self.file(name)?.read_as(name)?;
        self.count(std::mem::size_of_val(values.as_slice()));
        Ok(values)
    }

    /// Read rows `rows`, columns `cols` of `name` seen as `[rows, last dimension]`, only those
    /// bytes ([`SafetensorsFile::read_region`]).
    pub fn read_region(&self, name: &str, rows: Range<usize>, cols: Range<usize>) -> Result<Vec<u8>> {
        let bytes = self.file(name)?.read_region(name, rows, cols)?;
        self.count(bytes.len());
        Ok(bytes)
    }

    /// [`Checkpoint::read_region`] as `T` (the tensor's dtype must be `T`'s).
    pub fn read_region_as<T: LeElem>(
        &self,
        name: &str,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<Vec<T>> {
        self.expect_dtype(name, &[T::DTYPE], T::DTYPE.name())?;
        if cfg!(target_endian = "big") {
            return Ok(T::from_le(&self.read_region(name, rows, cols)?));
        }
        // Little-endian: read straight into the typed buffer (no byte copy alongside it).
        let mut values = vec![T::zeroed(); rows.len().saturating_mul(cols.len())];
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut values);
        self.file(name)?.read_region_into(name, rows, cols, bytes)?;
        self.count(bytes.len());
        Ok(values)
    }

    /// [`Checkpoint::read_region`] of a float tensor (F16, BF16 or F32), as stored.
    pub fn read_floats_region(&self, name: &str, rows: Range<usize>, cols: Range<usize>) -> Result<FloatVec> {
        let info = self.expect_dtype(name, FLOATS, "F16, BF16 or F32")?;
        Ok(match info.dtype {
            Dtype::F16 => FloatVec::F16(self.read_region_as(name, rows, cols)?),
            Dtype::Bf16 => FloatVec::Bf16(self.read_region_as(name, rows, cols)?),
            _ => FloatVec::F32(self.read_region_as(name, rows, cols)?),
        })
    }

    /// `name`'s entry, checking its dtype is one of `dtypes` (`allowed` names them in the error).
    pub fn expect_dtype(&self, name: &str, dtypes: &[Dtype], allowed: &'static str) -> Result<TensorInfo> {
        let info = self
            .info(name)
            .ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![name.to_string()])))?;
        if !dtypes.contains(&info.dtype) {
            return Err(Error::Format(FormatError::TensorDtype {
                tensor: name.into(),
                expected: allowed,
                got: info.dtype.to_string(),
            }));
        }
        Ok(info.clone())
    }

    /// Read a float tensor (F16, BF16 or F32) as stored.
    pub fn read_floats(&self, name: &str) -> Result<FloatVec> {
        let info = self.expect_dtype(name, FLOATS, "F16, BF16 or F32")?;
        let width = info.shape.last().copied().unwrap_or(1);
        self.read_floats_region(name, 0..info.numel().checked_div(width).unwrap_or(0), 0..width)
    }
}
