//! A model stored as mistral.rs stores a UQFF model: HQQ layers in `.uqff` files (1.2.0 named
//! tensors, or 0.2.0 blobs with their names) beside the dense rest of the model (a safetensors
//! checkpoint: embeddings, norms, layers left unquantized) — [`UqffModel`].
//!
//! The parallel layers load from it by name like from any checkpoint
//! ([`crate::tp::LayerSource`]): a name that is an HQQ layer comes from the UQFF files, any
//! other from the dense checkpoint. A UQFF file is read whole when added (its layers are
//! validated then), so a rank's share is cut from the layer in memory.

use super::Checkpoint;
use super::uqff::{Extension, UqffHqqLayer, read_legacy_file_named, read_v1};
use crate::elem::FloatVec;
use crate::error::{Error, FormatError, Result};
use crate::hqq::HqqWeight;
use std::collections::BTreeMap;
use std::path::Path;

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
    layers: BTreeMap<String, (HqqWeight, Option<FloatVec>)>,
}

impl UqffModel {
    /// A model of no UQFF layers yet, over `dense` (the unquantized rest), if any.
    pub fn new(dense: Option<Checkpoint>) -> Self {
        Self { dense, layers: BTreeMap::new() }
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
    pub fn add_file(&mut self, path: impl AsRef<Path>, ext: Extension) -> Result<()> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        match read_v1(&bytes, ext) {
            Ok(layers) => self.add_layers(layers),
            Err(Error::Format(FormatError::MissingTensors(t))) if t == ["uqff.version.major"] => {
                let layers = read_legacy_file_named(&bytes)?
                    .into_iter()
                    .map(|(i, name, l)| {
                        let name = name.ok_or_else(|| {
                            uqff_error(format!(
                                "{}: layer {i} has no name (add it with `add_legacy` and the names)",
                                path.display()
                            ))
                        })?;
                        Ok((name, l))
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.add_layers(layers)
            }
            Err(e) => Err(e),
        }
    }

    /// Add the layers of the 0.2.0 UQFF file `path`, layer `i` named `names[i]` (one name per
    /// layer, as the model's quantized layers are ordered when mistral.rs wrote it).
    pub fn add_legacy(&mut self, path: impl AsRef<Path>, names: &[String]) -> Result<()> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let layers = read_legacy_file_named(&bytes)?;
        if layers.len() != names.len() {
            return Err(uqff_error(format!(
                "{}: {} layers, {} names given",
                path.display(),
                layers.len(),
                names.len()
            )));
        }
        self.add_layers(layers.into_iter().map(|(i, _, l)| (names[i].clone(), l)).collect())
    }

    /// Add layers by name, each validated ([`UqffHqqLayer::weight`]); a name already present
    /// is a [`FormatError::Uqff`] error.
    pub fn add_layers(&mut self, layers: Vec<(String, UqffHqqLayer)>) -> Result<()> {
        for (name, layer) in layers {
            if self.layers.contains_key(&name) {
                return Err(uqff_error(format!("layer `{name}` is in more than one UQFF file")));
            }
            let weight = layer.weight()?;
            let bias = layer.bias_values()?;
            self.layers.insert(name, (weight, bias));
        }
        Ok(())
    }

    /// The dense checkpoint beside the UQFF files, if any.
    pub fn dense(&self) -> Option<&Checkpoint> {
        self.dense.as_ref()
    }

    /// The UQFF layer `prefix`: its weight and bias.
    pub fn layer(&self, prefix: &str) -> Option<(&HqqWeight, Option<&FloatVec>)> {
        self.layers.get(prefix).map(|(w, b)| (w, b.as_ref()))
    }

    /// The UQFF layers' names, sorted.
    pub fn layer_names(&self) -> impl Iterator<Item = &str> {
        self.layers.keys().map(String::as_str)
    }
}

fn uqff_error(reason: String) -> Error {
    Error::Format(FormatError::Uqff { offset: 0, reason })
}
