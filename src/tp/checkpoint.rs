//! A whole checkpoint directory cut into one packed checkpoint per rank:
//! [`shard_checkpoint`] (what `qk shard` runs).
//!
//! The plan ([`ShardPlan`]) is built and checked from the config and the tensor headers before
//! anything is written. Each rank's directory has the same file layout as the input (one
//! `model.safetensors`, or the same shard files and a `model.safetensors.index.json`), the
//! same `config.json` (the whole model's sizes: a loader divides them by the world size) and
//! quantization config. A layer's tensors go to the file that held its `qweight` / `weight`.
//! One layer is in memory at a time (twice: once for the headers, once for the bytes).

use super::{AttentionShape, LayerRole, Parallel, PlanLayer, ShardPlan};
use crate::error::{Error, FormatError, Result};
use crate::io::QuantizedCheckpoint;
use crate::io::checkpoint::INDEX_FILE;
use crate::io::{Checkpoint, Dtype, NamedTensor, SafetensorsWriter};
use crate::method::QuantMethod;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What [`shard_checkpoint`] reports as it goes (for a progress bar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardProgress<'a> {
    /// The plan fits; `steps` steps follow (a unit's headers count one step per rank).
    Start {
        /// Total steps.
        steps: usize,
    },
    /// Every rank's header entries of one unit (a layer or a tensor) are known: `ranks` steps.
    Headers {
        /// The layer prefix or tensor name.
        unit: &'a str,
        /// Steps this event stands for.
        ranks: usize,
    },
    /// One unit's bytes are written for one rank: one step.
    Written {
        /// The layer prefix or tensor name.
        unit: &'a str,
        /// The rank.
        rank: usize,
    },
}

/// What [`shard_checkpoint`] wrote: `OUT/rank-{r}-of-{world_size}/` for every rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardSummary {
    /// Ranks written.
    pub world_size: usize,
    /// Layers split along their outputs.
    pub column: usize,
    /// Layers split along their inputs.
    pub row: usize,
    /// Layers every rank holds whole.
    pub replicated: usize,
}

/// Files besides the weights that a rank directory gets a copy of, when the input has them.
const COPIED: &[&str] = &[
    "config.json",
    "quantize_config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
];

/// One header entry: name, dtype, shape.
type Decl = (String, Dtype, Vec<usize>);

/// What a group of output tensors is made from.
enum Unit {
    /// A quantized layer (all its stored tensors and its bias).
    Layer(String),
    /// A dense `<prefix>.weight` (and `<prefix>.bias`) the plan splits.
    Dense(String),
    /// A tensor copied as it is.
    Plain(String),
}

impl Unit {
    /// The layer prefix or tensor name (for the progress bar).
    fn name(&self) -> &str {
        match self {
            Unit::Layer(p) | Unit::Dense(p) | Unit::Plain(p) => p,
        }
    }
}

/// Whether a GPTQ layer's stored `g_idx` permutes its inputs (act-order in fact, not just in
/// the config): that decides whether a cut of its inputs must fall on a group.
fn gptq_act_order(ck: &Checkpoint, prefix: &str, method: QuantMethod) -> Result<QuantMethod, Error> {
    let QuantMethod::Gptq { bits, group, .. } = method else { return Ok(method) };
    let name = format!("{prefix}.g_idx");
    let act_order = match ck.info(&name) {
        None => false,
        Some(_) => {
            let g: Vec<i32> = ck.read_as(&name)?;
            let gs = group.unwrap_or(g.len()).max(1);
            g.iter().enumerate().any(|(i, &v)| usize::try_from(v).ok() != Some(i / gs))
        }
    };
    Ok(QuantMethod::Gptq { bits, group, act_order })
}

/// Rows or columns `ranges` (concatenated) of a row-major `[rows, cols]` tensor of
/// `esize`-byte elements.
fn slice_bytes(
    bytes: &[u8],
    rows: usize,
    cols: usize,
    esize: usize,
    dim: usize,
    ranges: &[Range<usize>],
) -> Vec<u8> {
    let row_bytes = cols * esize;
    if dim == 0 {
        ranges.iter().flat_map(|r| &bytes[r.start * row_bytes..r.end * row_bytes]).copied().collect()
    } else {
        let mut out = Vec::new();
        for row in bytes.chunks_exact(row_bytes.max(1)).take(rows) {
            for r in ranges {
                out.extend_from_slice(&row[r.start * esize..r.end * esize]);
            }
        }
        out
    }
}

/// A unit's output tensors.
enum Tensors {
    /// The same for every rank (held once).
    Same(Vec<NamedTensor>),
    /// One list per rank.
    PerRank(Vec<Vec<NamedTensor>>),
}

impl Tensors {
    fn rank(&self, r: usize) -> &[NamedTensor] {
        match self {
            Tensors::Same(t) => t,
            Tensors::PerRank(t) => t.get(r).map_or(&[], |t| &t[..]),
        }
    }
}

struct Job<'a> {
    model: &'a QuantizedCheckpoint,
    plan: &'a ShardPlan,
}

impl Job<'_> {
    /// One unit's header entries for every rank (a plain tensor's from its header alone).
    fn decls(&self, unit: &Unit) -> Result<Vec<Vec<Decl>>, Error> {
        let world = self.plan.world_size();
        if let Unit::Plain(name) = unit {
            let info = self
                .model
                .checkpoint()
                .info(name)
                .ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![name.clone()])))?;
            return Ok(vec![vec![(name.clone(), info.dtype, info.shape.clone())]; world]);
        }
        let tensors = self.unit(unit)?;
        let decl =
            |r: usize| tensors.rank(r).iter().map(|t| (t.name.clone(), t.dtype, t.shape.clone())).collect();
        Ok((0..world).map(decl).collect())
    }

    /// One unit's tensors for every rank (the layer is read once).
    fn unit(&self, unit: &Unit) -> Result<Tensors, Error> {
        let raw = self.model.checkpoint();
        let world = self.plan.world_size();
        match unit {
            Unit::Plain(name) => {
                let info = raw
                    .info(name)
                    .ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![name.clone()])))?;
                let bytes = raw.read(name)?;
                Ok(Tensors::Same(vec![NamedTensor {
                    name: name.clone(),
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    data: bytes,
                }]))
            }
            Unit::Layer(prefix) => {
                let w = self.model.load(prefix)?;
                let ranks = (0..world).map(|r| self.model.tensors(prefix, &self.plan.shard(prefix, r, &w)?));
                Ok(Tensors::PerRank(ranks.collect::<Result<_, Error>>()?))
            }
            Unit::Dense(prefix) => {
                let lp = self
                    .plan
                    .layer(prefix)
                    .ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![prefix.clone()])))?;
                let dim = lp.parallel().dim().unwrap_or(0);
                let wname = format!("{prefix}.weight");
                let info = raw
                    .info(&wname)
                    .ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![wname.clone()])))?;
                let (rows, cols) = (info.shape[0], info.shape[1]);
                let (wbytes, esize) = (raw.read(&wname)?, info.dtype.size());
                let bname = format!("{prefix}.bias");
                let bias = match raw.info(&bname) {
                    Some(b) => Some((b.clone(), raw.read(&bname)?)),
                    None => None,
                };
                let mut ranks = Vec::with_capacity(world);
                for ranges in &lp.ranks {
                    let n: usize = ranges.iter().map(Range::len).sum();
                    let shape = if dim == 0 { vec![n, cols] } else { vec![rows, n] };
                    let mut t = Vec::new();
                    if let Some((b, bytes)) = &bias {
                        t.push(if dim == 0 {
                            let sliced = slice_bytes(bytes, b.shape[0], 1, b.dtype.size(), 0, ranges);
                            NamedTensor { name: bname.clone(), dtype: b.dtype, shape: vec![n], data: sliced }
                        } else {
                            NamedTensor {
                                name: bname.clone(),
                                dtype: b.dtype,
                                shape: b.shape.clone(),
                                data: bytes.clone(),
                            }
                        });
                    }
                    let w = slice_bytes(&wbytes, rows, cols, esize, dim, ranges);
                    t.push(NamedTensor { name: wname.clone(), dtype: info.dtype, shape, data: w });
                    ranks.push(t);
                }
                Ok(Tensors::PerRank(ranks))
            }
        }
    }
}

/// Cut the checkpoint in `dir` into `world_size` rank directories `out/rank-{r}-of-{world_size}/`,
/// every quantized layer still packed ([`crate::QuantWeight::shard`]), dense projections sliced, the
/// rest copied; `progress` hears of each step. Every cut is checked ([`ShardPlan::new`]) before
/// anything is written.
pub fn shard_checkpoint(
    dir: &Path,
    world_size: usize,
    out: &Path,
    progress: &mut dyn FnMut(ShardProgress<'_>),
) -> Result<ShardSummary> {
    let model = QuantizedCheckpoint::open(dir)?;
    let raw = model.checkpoint();
    let config_path = dir.join("config.json");
    let attention = match std::fs::read(&config_path) {
        Ok(bytes) => {
            let config: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Format(FormatError::Json {
                    path: config_path.display().to_string(),
                    reason: e.to_string(),
                })
            })?;
            AttentionShape::from_config(&config)?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&config_path, e)),
    };

    // The plan's layers: every quantized layer, and the dense projections it splits.
    let summaries = model.layers();
    let mut layers = Vec::new();
    let mut units: BTreeMap<String, Vec<Unit>> = BTreeMap::new(); // file -> units
    let mut claimed = BTreeSet::new();
    // A tensor's file, relative to DIR (as the index names it).
    let file_of = |tensor: &str| -> Result<String, Error> {
        let path = raw
            .shard_of(tensor)
            .ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![tensor.to_string()])))?;
        let rel = path.strip_prefix(dir).ok().or_else(|| path.file_name().map(Path::new));
        Ok(rel.map(|f| f.to_string_lossy().into_owned()).unwrap_or_default())
    };
    let fp8 = matches!(model, QuantizedCheckpoint::Fp8(_));
    let parts: &[&str] = if fp8 {
        &["weight", "weight_scale_inv", "weight_scale", "bias"]
    } else {
        &["qweight", "qzeros", "scales", "g_idx", "bias"]
    };
    for l in &summaries {
        layers.push(PlanLayer {
            name: l.prefix.clone(),
            out: l.out,
            inp: l.inp,
            experts: l.experts,
            method: Some(gptq_act_order(raw, &l.prefix, l.method)?),
        });
        // A replicated layer's tensors are copied as they are (below).
        if LayerRole::of(&l.prefix).parallel() != Parallel::Replicated {
            let primary = format!("{}.{}", l.prefix, parts[0]);
            units.entry(file_of(&primary)?).or_default().push(Unit::Layer(l.prefix.clone()));
            claimed.extend(parts.iter().map(|p| format!("{}.{p}", l.prefix)));
        }
    }
    for name in raw.tensor_names() {
        if model.is_quantized_part(name) || claimed.contains(name) {
            continue;
        }
        let dense = name
            .strip_suffix(".weight")
            .filter(|p| LayerRole::of(p).parallel() != Parallel::Replicated)
            .zip(raw.info(name))
            .filter(|(_, i)| i.shape.len() == 2);
        if let Some((prefix, info)) = dense {
            layers.push(PlanLayer {
                name: prefix.to_string(),
                out: info.shape[0],
                inp: info.shape[1],
                experts: 1,
                method: None,
            });
            units.entry(file_of(name)?).or_default().push(Unit::Dense(prefix.to_string()));
            claimed.insert(format!("{prefix}.bias"));
            claimed.insert(name.to_string());
        }
    }
    for name in raw.tensor_names() {
        if !claimed.contains(name) {
            units.entry(file_of(name)?).or_default().push(Unit::Plain(name.to_string()));
        }
    }
    // Every check happens here, before anything is written.
    let plan = ShardPlan::new(attention, &layers, world_size)?;

    let job = Job { model: &model, plan: &plan };
    let world = world_size;
    let indexed = dir.join(INDEX_FILE).is_file();
    let rank_dirs: Vec<PathBuf> = (0..world).map(|r| out.join(format!("rank-{r}-of-{world}"))).collect();
    for d in &rank_dirs {
        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        for f in COPIED {
            let from = dir.join(f);
            if from.is_file() {
                std::fs::copy(&from, d.join(f)).map_err(|e| Error::io(&d.join(f), e))?;
            }
        }
    }
    let mut weight_maps: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); world];
    let mut total_sizes = vec![0usize; world];
    // A step per unit and rank in each pass: headers (all ranks of a unit at once), then bytes.
    let unit_count: usize = units.values().map(Vec::len).sum();
    progress(ShardProgress::Start { steps: 2 * unit_count * world });
    for (file, file_units) in &units {
        // Pass 1: every rank's header (names, dtypes, shapes), one layer in memory at a time.
        let mut decls: Vec<Vec<Decl>> = vec![Vec::new(); world];
        for u in file_units {
            progress(ShardProgress::Headers { unit: u.name(), ranks: world });
            for (r, tensors) in job.decls(u)?.into_iter().enumerate() {
                for (name, dtype, shape) in tensors {
                    total_sizes[r] += shape.iter().product::<usize>() * dtype.size();
                    weight_maps[r].insert(name.clone(), file.clone());
                    decls[r].push((name, dtype, shape));
                }
            }
        }
        // Pass 2: the bytes, in the declared order, into every rank's file.
        let mut writers = Vec::with_capacity(world);
        for (r, d) in rank_dirs.iter().enumerate() {
            let meta = BTreeMap::from([
                ("format".to_string(), "pt".to_string()),
                ("tp_rank".to_string(), r.to_string()),
                ("tp_world_size".to_string(), world.to_string()),
            ]);
            let path = d.join(file);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            writers.push(SafetensorsWriter::create(&path, &decls[r], &meta)?);
        }
        for u in file_units {
            let tensors = job.unit(u)?;
            for (r, writer) in writers.iter_mut().enumerate() {
                for t in tensors.rank(r) {
                    writer.write(&t.name, &t.data)?;
                }
                progress(ShardProgress::Written { unit: u.name(), rank: r });
            }
        }
        for w in writers {
            w.finish()?;
        }
    }
    if indexed {
        for (r, d) in rank_dirs.iter().enumerate() {
            let index = serde_json::json!({
                "metadata": {"total_size": total_sizes[r]},
                "weight_map": weight_maps[r],
            });
            let path = d.join(INDEX_FILE);
            let text = serde_json::to_string_pretty(&index).unwrap_or_default();
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
        }
    }
    let count = |p: Parallel| plan.layers().values().filter(|l| l.parallel() == p).count();
    Ok(ShardSummary {
        world_size: world,
        column: count(Parallel::Column),
        row: count(Parallel::Row),
        replicated: count(Parallel::Replicated),
    })
}
