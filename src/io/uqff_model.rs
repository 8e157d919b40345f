//! A model stored as mistral.rs stores a UQFF model: HQQ layers in `.uqff` files (1.2.0 named
//! tensors, or 0.2.0 blobs with their names) beside the dense rest of the model (a safetensors
//! checkpoint: embeddings, norms, layers left unquantized) — [`UqffModel`].
//!
//! The parallel layers load from it by name like from any checkpoint
//! ([`crate::tp::LayerSource`]): a name that is an HQQ layer comes from the UQFF files, any
//! other from the dense checkpoint. A layer is read from its file when it is loaded, whole:
//! HQQ's planar packing puts codes of rows far apart in one byte, so a rank's share is cut from
//! the layer in memory.

use super::uqff::{
    Extension, UqffHqqLayer, UqffTensor, legacy_index, legacy_names, read_legacy, v1_layer, v1_prefixes,
    v1_version,
};
use super::{Checkpoint, SafetensorsFile};
use crate::elem::FloatVec;
use crate::error::{Error, FormatError, Result};
use crate::hqq::HqqWeight;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// HQQ layers from UQFF files and, optionally, the dense checkpoint beside them.
///
/// ```no_run
/// use quant_kernels::io::UqffModel;
/// use quant_kernels::tp::{ColumnParallelLinear, LoadOptions};
/// // `model.safetensors` (or an index) for the dense rest, `*.uqff` for the HQQ layers.
/// let model = UqffModel::open("path/to/model")?;
/// let gate = ColumnParallelLinear::load(&model, "model.layers.0.mlp.gate_proj", 0, 2, &LoadOptions::default())?;
/// # Ok::<(), quant_kernels::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct UqffModel {
    dense: Option<Checkpoint>,
    files: Vec<SafetensorsFile>,
    layers: BTreeMap<String, Entry>,
    bytes_read: Arc<AtomicU64>,
}

/// A layer's place and its weight's `[rows, cols]`.
#[derive(Debug, Clone)]
struct Entry {
    stored: Stored,
    rows: usize,
    cols: usize,
}

#[derive(Debug, Clone)]
enum Stored {
    /// Given by [`UqffModel::add_layers`].
    Memory(HqqWeight, Option<FloatVec>),
    /// A 1.2.0 file's layer of the entry's name (checked from the header when added).
    V1 { file: usize, ext: Extension },
    /// A 0.2.0 file's blob tensor (read and checked when added).
    Legacy { file: usize, tensor: String },
}

/// A 1.2.0 tensor getter over `file`, counting the bytes it reads: every tensor's bytes when
/// `all`, else only those the reader asks for (a layer checked from the header).
fn getter<'a>(
    file: &'a SafetensorsFile,
    counter: &'a AtomicU64,
    all: bool,
) -> impl Fn(&str, bool) -> Result<Option<UqffTensor>> + 'a {
    move |name, data| {
        let Some(info) = file.info(name) else { return Ok(None) };
        let bytes = if data || all { read_counted(file, counter, name)? } else { Vec::new() };
        Ok(Some(UqffTensor { dtype: info.dtype, shape: info.shape.clone(), data: bytes }))
    }
}

fn read_counted(file: &SafetensorsFile, counter: &AtomicU64, name: &str) -> Result<Vec<u8>> {
    let bytes = file.read(name)?;
    counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    Ok(bytes)
}

impl UqffModel {
    /// A model of no UQFF layers yet, over `dense` (the unquantized rest), if any.
    pub fn new(dense: Option<Checkpoint>) -> Self {
        Self { dense, ..Self::default() }
    }

    /// The model in `dir`: its safetensors checkpoint when there is one (`model.safetensors` or
    /// an index), and every `*.uqff` file in it, in name order ([`UqffModel::add_file`], with
    /// [`Extension::Allow`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let has_dense = [super::checkpoint::SINGLE_FILE, super::checkpoint::INDEX_FILE]
            .iter()
            .any(|f| dir.join(f).exists());
        let mut model = Self::new(if has_dense { Some(Checkpoint::open(dir)?) } else { None });
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "uqff") && p.is_file())
            .collect();
        files.sort();
        for f in files {
            model.add_file(&f, Extension::Allow)?;
        }
        Ok(model)
    }

    /// Add the layers of the UQFF file `path`: a 1.2.0 file by its tensor names, a 0.2.0 file
    /// by the names it records ([`super::uqff::LEGACY_NAMES_KEY`]); a 0.2.0 file without them
    /// (as mistral.rs writes them: layers known by index) needs [`UqffModel::add_legacy`].
    ///
    /// A 1.2.0 file's layers are checked from its header and their small tensors (config and
    /// shape); their codes, scales, zeros and bias are read when a layer is loaded, so a
    /// process reads only the layers it loads. A 0.2.0 layer is one blob, read to be checked
    /// now and again when loaded.
    pub fn add_file(&mut self, path: impl AsRef<Path>, ext: Extension) -> Result<()> {
        let path = path.as_ref();
        let file = SafetensorsFile::open(path)?;
        let index = self.files.len();
        let entries = if file.info("uqff.version.major").is_some() {
            let get = getter(&file, &self.bytes_read, false);
            v1_version(&get)?;
            v1_prefixes(file.tensors().keys().map(String::as_str))
                .into_iter()
                .map(|p| {
                    let layout = v1_layer(&get, p, ext)?.layout()?;
                    let entry = Entry {
                        stored: Stored::V1 { file: index, ext },
                        rows: layout.rows(),
                        cols: layout.cols(),
                    };
                    Ok((p.to_string(), entry))
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            let names = legacy_names(file.metadata())?;
            self.legacy_entries(&file, index, |i| {
                names.get(i).cloned().ok_or_else(|| {
                    uqff_error(format!(
                        "{}: layer {i} has no name (add it with `add_legacy` and the names)",
                        path.display()
                    ))
                })
            })?
        };
        self.insert(entries)?;
        self.files.push(file);
        Ok(())
    }

    /// Add the layers of the 0.2.0 UQFF file `path`, layer `i` named `names[i]` (one name per
    /// layer, as the model's quantized layers are ordered when mistral.rs wrote it).
    pub fn add_legacy(&mut self, path: impl AsRef<Path>, names: &[String]) -> Result<()> {
        let path = path.as_ref();
        let file = SafetensorsFile::open(path)?;
        let count = file.tensors().len();
        if count != names.len() {
            return Err(uqff_error(format!(
                "{}: {count} layers, {} names given",
                path.display(),
                names.len()
            )));
        }
        let entries = self.legacy_entries(&file, self.files.len(), |i| {
            names
                .get(i)
                .cloned()
                .ok_or_else(|| uqff_error(format!("{}: layer {i} has no name", path.display())))
        })?;
        self.insert(entries)?;
        self.files.push(file);
        Ok(())
    }

    /// Every blob of a 0.2.0 file, read and checked, named by `name_of(layer index)`.
    fn legacy_entries(
        &self,
        file: &SafetensorsFile,
        index: usize,
        name_of: impl Fn(usize) -> Result<String>,
    ) -> Result<Vec<(String, Entry)>> {
        file.tensors()
            .iter()
            .map(|(tensor, info)| {
                let i = legacy_index(tensor, info.dtype, &info.shape)?;
                let name = name_of(i)?;
                let layout = read_legacy(&read_counted(file, &self.bytes_read, tensor)?)?.layout()?;
                let stored = Stored::Legacy { file: index, tensor: tensor.clone() };
                Ok((name, Entry { stored, rows: layout.rows(), cols: layout.cols() }))
            })
            .collect()
    }

    /// Add layers by name, each validated ([`UqffHqqLayer::weight`]) and kept in memory; a
    /// name already present is a [`FormatError::Uqff`] error.
    pub fn add_layers(&mut self, layers: Vec<(String, UqffHqqLayer)>) -> Result<()> {
        let entries = layers
            .into_iter()
            .map(|(name, layer)| {
                let weight = layer.weight()?;
                let (rows, cols) = (weight.layout.rows(), weight.layout.cols());
                Ok((name, Entry { stored: Stored::Memory(weight, layer.bias_values()?), rows, cols }))
            })
            .collect::<Result<Vec<_>>>()?;
        self.insert(entries)
    }

    /// Insert all of `entries` or, when a name is already present or given twice, none.
    fn insert(&mut self, entries: Vec<(String, Entry)>) -> Result<()> {
        let mut seen = BTreeSet::new();
        for (name, _) in &entries {
            if self.layers.contains_key(name) || !seen.insert(name.as_str()) {
                return Err(uqff_error(format!("layer `{name}` is in more than one UQFF file")));
            }
        }
        self.layers.extend(entries);
        Ok(())
    }

    /// The dense checkpoint beside the UQFF files, if any.
    pub fn dense(&self) -> Option<&Checkpoint> {
        self.dense.as_ref()
    }

    /// Whether `prefix` is one of the UQFF layers.
    pub fn is_uqff_layer(&self, prefix: &str) -> bool {
        self.layers.contains_key(prefix)
    }

    /// The UQFF layer `prefix`'s weight `[rows, cols]`, known without reading the layer.
    pub fn uqff_layer_shape(&self, prefix: &str) -> Option<(usize, usize)> {
        self.layers.get(prefix).map(|e| (e.rows, e.cols))
    }

    /// The UQFF layer `prefix`: its weight and bias, read from its file (checked again), or
    /// `None` when no UQFF file holds it.
    pub fn layer(&self, prefix: &str) -> Result<Option<(HqqWeight, Option<FloatVec>)>> {
        let Some(entry) = self.layers.get(prefix) else { return Ok(None) };
        let layer = match &entry.stored {
            Stored::Memory(w, b) => return Ok(Some((w.clone(), b.clone()))),
            Stored::V1 { file, ext } => {
                v1_layer(&getter(&self.files[*file], &self.bytes_read, true), prefix, *ext)?
            }
            Stored::Legacy { file, tensor } => {
                read_legacy(&read_counted(&self.files[*file], &self.bytes_read, tensor)?)?
            }
        };
        let weight = layer.weight()?;
        if (weight.layout.rows(), weight.layout.cols()) != (entry.rows, entry.cols) {
            return Err(uqff_error(format!("layer `{prefix}` changed shape since its file was added")));
        }
        Ok(Some((weight, layer.bias_values()?)))
    }

    /// The UQFF layers' names, sorted.
    pub fn layer_names(&self) -> impl Iterator<Item = &str> {
        self.layers.keys().map(String::as_str)
    }

    /// Bytes read from the UQFF files so far (headers aside), by this model and its clones.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }
}

fn uqff_error(reason: String) -> Error {
    Error::Format(FormatError::Uqff { offset: 0, reason })
}
