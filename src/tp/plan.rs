//! A model-level tensor-parallel plan: which linear layers split along their outputs, which
//! along their inputs, which stay whole, checked for consistency before any weight is touched.
//!
//! | layer (last name component) | split | ranges per rank |
//! |---|---|---|
//! | `q_proj` | column (outputs) | whole query heads: `heads / world` heads each |
//! | `k_proj`, `v_proj` | column | [`super::kv_head_shard`]: whole KV heads, or one replicated head when ranks outnumber them |
//! | `qkv_proj` (fused) | column | the rank's q heads, then its k head(s), then its v head(s) (three pieces) |
//! | `gate_proj`, `up_proj` | column | an even split of the intermediate size |
//! | `gate_up_proj` (fused) | column | the rank's gate part, then its up part (two pieces) |
//! | `o_proj` | row (inputs) | an even split, which must be exactly the q heads split feeding it |
//! | `down_proj` | row | an even split, which must be exactly the gate/up split feeding it |
//! | anything else | replicated | embeddings, norms and `lm_head` are kept whole on every rank |
//!
//! `lm_head` is replicated: a vocabulary-parallel head would need an all-gather of the logits
//! that the row/column layers here do not provide, and it is usually the one layer left
//! unquantized.
//!
//! Every cut is also checked against the layer's storage ([`check_cut`], one rule per scheme:
//! a GPTQ cut of the outputs on a zero-point pack word, of the inputs on a word row and, without
//! act-order, on a group; AWQ on a pack word / group; FP8 on a scale block; ...). When a world
//! size does not fit, [`ShardPlan::new`] returns [`TpError::ShardPlan`] naming the first layer that
//! does not and the nearest world sizes (in `1..=`[`MAX_WORLD_SEARCH`]) that fit the whole model.

use super::{Shard, kv_head_shard, n_kv_groups};
use crate::error::{Error, FormatError, KernelError, Result, TpError};
use crate::layer::QuantWeight;
use crate::method::QuantMethod;
use std::collections::BTreeMap;
use std::ops::Range;

/// The largest world size [`ShardPlan::new`] tries when it looks for the nearest legal ones.
pub const MAX_WORLD_SEARCH: usize = 64;

/// How a layer is split over the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parallel {
    /// Split along the outputs (dim 0 of the `[out, in]` weight).
    Column,
    /// Split along the inputs (dim 1); the partial outputs are summed over the ranks.
    Row,
    /// Kept whole on every rank.
    Replicated,
}

impl Parallel {
    /// The `[out, in]` dimension split: `Some(0)` for column, `Some(1)` for row.
    pub fn dim(self) -> Option<usize> {
        match self {
            Parallel::Column => Some(0),
            Parallel::Row => Some(1),
            Parallel::Replicated => None,
        }
    }
}

/// What a layer is in a transformer block, from the last component of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerRole {
    /// `q_proj`.
    Query,
    /// `k_proj`.
    Key,
    /// `v_proj`.
    Value,
    /// `qkv_proj`: q, k and v stacked along the outputs.
    QkvFused,
    /// `gate_proj`.
    Gate,
    /// `up_proj`.
    Up,
    /// `gate_up_proj`: gate and up stacked along the outputs.
    GateUpFused,
    /// `o_proj`.
    AttnOut,
    /// `down_proj`.
    Down,
    /// Anything else (embeddings, norms, `lm_head`, ...).
    Other,
}

impl LayerRole {
    /// The role of a layer from its name prefix (a trailing `.weight` is ignored).
    ///
    /// ```
    /// use quant_kernels::tp::{LayerRole, Parallel};
    /// assert_eq!(LayerRole::of("model.layers.3.self_attn.k_proj"), LayerRole::Key);
    /// assert_eq!(LayerRole::of("model.layers.3.mlp.down_proj.weight").parallel(), Parallel::Row);
    /// assert_eq!(LayerRole::of("lm_head").parallel(), Parallel::Replicated);
    /// ```
    pub fn of(name: &str) -> Self {
        let name = name.strip_suffix(".weight").unwrap_or(name);
        match name.rsplit('.').next().unwrap_or(name) {
            "q_proj" => LayerRole::Query,
            "k_proj" => LayerRole::Key,
            "v_proj" => LayerRole::Value,
            "qkv_proj" => LayerRole::QkvFused,
            "gate_proj" => LayerRole::Gate,
            "up_proj" => LayerRole::Up,
            "gate_up_proj" => LayerRole::GateUpFused,
            "o_proj" => LayerRole::AttnOut,
            "down_proj" => LayerRole::Down,
            _ => LayerRole::Other,
        }
    }

    /// How a layer of this role is split.
    pub fn parallel(self) -> Parallel {
        match self {
            LayerRole::Query
            | LayerRole::Key
            | LayerRole::Value
            | LayerRole::QkvFused
            | LayerRole::Gate
            | LayerRole::Up
            | LayerRole::GateUpFused => Parallel::Column,
            LayerRole::AttnOut | LayerRole::Down => Parallel::Row,
            LayerRole::Other => Parallel::Replicated,
        }
    }
}

/// The attention sizes a plan needs to split q/k/v and o_proj by whole heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttentionShape {
    /// Query heads (`num_attention_heads`).
    pub heads: usize,
    /// Key/value heads (`num_key_value_heads`).
    pub kv_heads: usize,
    /// Width of one head (`head_dim`).
    pub head_dim: usize,
}

impl AttentionShape {
    /// The attention sizes of a Hugging Face `config.json`: `num_attention_heads`,
    /// `num_key_value_heads` (default: `num_attention_heads`, as transformers does) and
    /// `head_dim` (default: `hidden_size / num_attention_heads`). `Ok(None)` when the config
    /// has no `num_attention_heads` at all; a size that is present but not a positive integer
    /// is [`TpError::ModelConfig`], a `hidden_size` the heads do not divide
    /// [`KernelError::NotMultiple`].
    ///
    /// ```
    /// use quant_kernels::tp::AttentionShape;
    /// let c = serde_json::json!({"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2});
    /// let a = AttentionShape::from_config(&c)?.unwrap();
    /// assert_eq!((a.heads, a.kv_heads, a.head_dim), (4, 2, 16));
    /// assert!(AttentionShape::from_config(&serde_json::json!({"model_type": "x"}))?.is_none());
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn from_config(config: &serde_json::Value) -> Result<Option<Self>> {
        let field = |name: &'static str| -> Result<Option<usize>> {
            match config.get(name) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => match v.as_u64().and_then(|v| usize::try_from(v).ok()) {
                    Some(n) if n > 0 => Ok(Some(n)),
                    _ => Err(Error::Tp(TpError::ModelConfig { field: name })),
                },
            }
        };
        let Some(heads) = field("num_attention_heads")? else {
            return Ok(None);
        };
        let kv_heads = field("num_key_value_heads")?.unwrap_or(heads);
        let head_dim = match field("head_dim")? {
            Some(d) => d,
            None => {
                let hidden =
                    field("hidden_size")?.ok_or(Error::Tp(TpError::ModelConfig { field: "hidden_size" }))?;
                if !hidden.is_multiple_of(heads) {
                    return Err(Error::Kernel(KernelError::NotMultiple {
                        what: "hidden_size (no head_dim) over num_attention_heads",
                        value: hidden,
                        multiple: heads,
                    }));
                }
                hidden / heads
            }
        };
        Ok(Some(Self { heads, kv_heads, head_dim }))
    }
}

/// One linear layer as the plan sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanLayer {
    /// Name prefix (`model.layers.0.self_attn.q_proj`); its last component gives the role.
    pub name: String,
    /// Outputs (rows of the `[out, in]` weight).
    pub out: usize,
    /// Inputs.
    pub inp: usize,
    /// Stacked experts (1 for one linear layer); a stacked weight cannot be split here.
    pub experts: usize,
    /// The storage scheme, `None` for a dense weight. For GPTQ, `act_order` should say whether
    /// this layer's `g_idx` actually permutes (that, not `desc_act`, decides the input rule).
    pub method: Option<QuantMethod>,
}

/// One layer's part of a [`ShardPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    /// Its role (which fixes how it is split).
    pub role: LayerRole,
    /// Per rank, the ranges of the split dimension it holds, concatenated in order (one range,
    /// or one per part of a fused `qkv_proj` / `gate_up_proj`); empty for a replicated layer.
    pub ranks: Vec<Vec<Range<usize>>>,
}

impl LayerPlan {
    /// How the layer is split.
    pub fn parallel(&self) -> Parallel {
        self.role.parallel()
    }

    /// The shards (one [`Shard::Offset`] per range) `rank` holds; empty when replicated.
    pub fn shards(&self, rank: usize) -> Vec<Shard> {
        let Some(dim) = self.parallel().dim() else {
            return Vec::new();
        };
        let ranges = self.ranks.get(rank).map_or(&[][..], |r| &r[..]);
        ranges.iter().map(|r| Shard::Offset { dim, offset: r.start, len: r.len() }).collect()
    }
}

/// A checked tensor-parallel plan for a whole model at one world size (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    world_size: usize,
    layers: BTreeMap<String, LayerPlan>,
}

impl ShardPlan {
    /// Plan `layers` over `world_size` ranks, checking everything before any weight is read:
    /// q heads and KV heads split (or KV heads replicate) evenly, each row-parallel layer takes
    /// exactly the split of the layer feeding it, and every cut suits the layer's storage
    /// ([`check_cut`]). `attention` is needed only when there are attention projections.
    ///
    /// A world size of 0 is [`TpError::ShardRank`]; anything else that does not fit is
    /// [`TpError::ShardPlan`] with the first layer (by name, column-parallel layers first) that
    /// does not, the reason, and the nearest world sizes that fit.
    ///
    /// ```
    /// use quant_kernels::method::QuantMethod;
    /// use quant_kernels::tp::{AttentionShape, Parallel, PlanLayer, ShardPlan};
    /// use quant_kernels::Error;
    /// let gptq = Some(QuantMethod::Gptq { bits: 4, group: Some(32), act_order: false });
    /// let layer = |name: &str, out, inp| PlanLayer { name: name.into(), out, inp, experts: 1, method: gptq };
    /// let layers = [layer("mlp.gate_proj", 128, 64), layer("mlp.up_proj", 128, 64), layer("mlp.down_proj", 64, 128)];
    /// let plan = ShardPlan::new(None, &layers, 2)?;
    /// assert_eq!(plan.layer("mlp.down_proj").unwrap().parallel(), Parallel::Row);
    /// assert_eq!(plan.layer("mlp.down_proj").unwrap().ranks[1], [64..128]);
    /// // 8 ranks: 16 inputs of down_proj each would cut its groups of 32.
    /// let Err(Error::Tp(quant_kernels::error::TpError::ShardPlan { layer, below, above, .. })) = ShardPlan::new(None, &layers, 8) else { panic!() };
    /// assert_eq!((layer.as_str(), below, above), ("mlp.down_proj", Some(4), None));
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn new(attention: Option<AttentionShape>, layers: &[PlanLayer], world_size: usize) -> Result<Self> {
        if world_size == 0 {
            return Err(Error::Tp(TpError::ShardRank { rank: 0, world_size }));
        }
        match build(attention, layers, world_size) {
            Ok(layers) => Ok(Self { world_size, layers }),
            Err((layer, cause)) => {
                let legal = Self::legal_world_sizes(attention, layers, MAX_WORLD_SEARCH);
                Err(Error::Tp(TpError::ShardPlan {
                    layer,
                    world_size,
                    cause: Box::new(cause),
                    below: legal.iter().rev().find(|&&w| w < world_size).copied(),
                    above: legal.iter().find(|&&w| w > world_size).copied(),
                    searched: MAX_WORLD_SEARCH,
                }))
            }
        }
    }

    /// Every world size in `1..=max` that [`ShardPlan::new`] accepts for these layers.
    pub fn legal_world_sizes(
        attention: Option<AttentionShape>,
        layers: &[PlanLayer],
        max: usize,
    ) -> Vec<usize> {
        (1..=max).filter(|&w| build(attention, layers, w).is_ok()).collect()
    }

    /// The number of ranks.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// One layer's plan.
    pub fn layer(&self, name: &str) -> Option<&LayerPlan> {
        self.layers.get(name)
    }

    /// Every layer's plan, by name.
    pub fn layers(&self) -> &BTreeMap<String, LayerPlan> {
        &self.layers
    }

    /// The part of layer `name`'s weight `rank` holds, still packed: each range of the plan cut
    /// with [`QuantWeight::shard`], the pieces of a fused layer stacked along the outputs still
    /// packed (as [`super::ColumnParallelLinear::new_merged`] stacks its parts; [`ShardPlan::new`]
    /// accepts fused layers of GPTQ and dense weights only). A replicated layer is returned whole.
    pub fn shard(&self, name: &str, rank: usize, w: &QuantWeight) -> Result<QuantWeight> {
        let plan = self
            .layers
            .get(name)
            .ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![name.to_string()])))?;
        if rank >= self.world_size {
            return Err(Error::Tp(TpError::ShardRank { rank, world_size: self.world_size }));
        }
        if plan.parallel() == Parallel::Replicated {
            return Ok(w.clone());
        }
        let mut parts = plan.shards(rank).iter().map(|s| w.shard(s)).collect::<Result<Vec<_>>>()?;
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        QuantWeight::concat(parts)
    }
}

/// Whether rank range `r` of dimension `dim` (0 = outputs, 1 = inputs) of an `[out, inp]`
/// weight stored as `method` (`None` = dense) can be cut out still packed: the boundary rule of
/// each scheme, the one [`QuantWeight::shard`] enforces, checked from the shape alone.
///
/// | scheme | outputs | inputs |
/// |---|---|---|
/// | dense, int8 | any | any |
/// | GPTQ | on a zero-point pack word (`32 / bits` columns, 32 for 3-bit) | on a `qweight` word row; without act-order also on a group (the end may be K) |
/// | AWQ | on a pack word (8 columns) | on a group |
/// | FP8 block `(br, bc)` | on a block row (the end may be the last row), or inside one block | the same with block columns |
/// | FP8 per tensor | any non-empty range (one block) | the same |
/// | int4 | any | on a group |
/// | HQQ | as [`QuantWeight::shard`] decides (probed on a zero layer of this shape) | the same |
/// | SmoothQuant | [`TpError::ShardScheme`] | the same |
///
/// ```
/// use quant_kernels::method::QuantMethod;
/// use quant_kernels::tp::check_cut;
/// use quant_kernels::Error;
/// let g = QuantMethod::Gptq { bits: 4, group: Some(32), act_order: false };
/// assert!(check_cut(Some(&g), 64, 64, 0, 8..16).is_ok()); // outputs: words of 8 columns
/// assert_eq!(
///     check_cut(Some(&g), 64, 64, 1, 16..32),
///     Err(Error::Tp(quant_kernels::error::TpError::ShardBoundary { what: "group", at: 16, multiple: 32 }))
/// );
/// let act = QuantMethod::Gptq { bits: 4, group: Some(32), act_order: true };
/// assert!(check_cut(Some(&act), 64, 64, 1, 16..32).is_ok()); // act-order keeps every group
/// ```
pub fn check_cut(
    method: Option<&QuantMethod>,
    out: usize,
    inp: usize,
    dim: usize,
    r: Range<usize>,
) -> Result<()> {
    if dim > 1 {
        return Err(Error::Tp(TpError::ShardDim(dim)));
    }
    let len = if dim == 0 { out } else { inp };
    if r.start > r.end || r.end > len {
        return Err(Error::Tp(TpError::ShardRange { offset: r.start, len: r.len(), dim_len: len }));
    }
    match method {
        None | Some(QuantMethod::Int8Symmetric { .. }) => Ok(()),
        Some(&QuantMethod::Gptq { bits, group, act_order }) => {
            crate::gptq::scheme::check_cut(bits, group, act_order, dim, len, r)
        }
        Some(&QuantMethod::Awq { group }) => crate::awq::scheme::check_cut(group, dim, r),
        Some(&QuantMethod::Fp8 { block, .. }) => crate::fp8::scheme::check_cut(block, out, inp, dim, r),
        Some(&QuantMethod::Int4Asymmetric { group }) => crate::intx::scheme::check_int4_cut(group, dim, r),
        Some(&QuantMethod::Hqq { bits, group, axis }) => {
            crate::hqq::scheme::check_cut(bits, group, axis, out, inp, dim, r)
        }
        Some(QuantMethod::SmoothQuant { .. }) => Err(Error::Tp(TpError::ShardScheme("smoothquant"))),
    }
}

/// A failed plan: the layer and why.
type Failure = (String, Error);

/// `Err` with [`KernelError::LengthMismatch`] unless `got == expected`.
fn expect_size(what: &'static str, expected: usize, got: usize) -> Result<()> {
    crate::error::expect_len(what, expected, got)
}

fn need_attention(a: Option<AttentionShape>) -> Result<AttentionShape> {
    a.ok_or(Error::Tp(TpError::ModelConfig { field: "num_attention_heads" }))
}

/// Rank `rank`'s query outputs: whole heads.
fn q_range(a: AttentionShape, rank: usize, world: usize) -> Result<Range<usize>> {
    if !a.heads.is_multiple_of(world) {
        return Err(Error::Tp(TpError::AttentionHeads { heads: a.heads, world_size: world }));
    }
    let per = a.heads / world * a.head_dim;
    Ok(rank * per..(rank + 1) * per)
}

/// The output ranges each rank holds of a column-parallel layer.
fn column_ranges(
    l: &PlanLayer,
    role: LayerRole,
    attn: Option<AttentionShape>,
    w: usize,
) -> Result<Vec<Vec<Range<usize>>>> {
    let even = |n: usize, r: usize| Shard::Simple { dim: 0, rank: r, world_size: w }.range(n);
    let shift = |r: Range<usize>, by: usize| r.start + by..r.end + by;
    (0..w)
        .map(|r| match role {
            LayerRole::Query => {
                let a = need_attention(attn)?;
                expect_size("q_proj outputs (num_attention_heads x head_dim)", a.heads * a.head_dim, l.out)?;
                Ok(vec![q_range(a, r, w)?])
            }
            LayerRole::Key | LayerRole::Value => {
                let a = need_attention(attn)?;
                expect_size(
                    "k_proj/v_proj outputs (num_key_value_heads x head_dim)",
                    a.kv_heads * a.head_dim,
                    l.out,
                )?;
                n_kv_groups(a.kv_heads, a.heads, w)?;
                Ok(vec![kv_head_shard(a.kv_heads, a.head_dim, r, w)?.range(l.out)?])
            }
            LayerRole::QkvFused => {
                let a = need_attention(attn)?;
                let (q, kv) = (a.heads * a.head_dim, a.kv_heads * a.head_dim);
                expect_size("qkv_proj outputs ((heads + 2 x kv heads) x head_dim)", q + 2 * kv, l.out)?;
                n_kv_groups(a.kv_heads, a.heads, w)?;
                let k = kv_head_shard(a.kv_heads, a.head_dim, r, w)?.range(kv)?;
                Ok(vec![q_range(a, r, w)?, shift(k.clone(), q), shift(k, q + kv)])
            }
            LayerRole::Gate | LayerRole::Up => Ok(vec![even(l.out, r)?]),
            LayerRole::GateUpFused => {
                if !l.out.is_multiple_of(2) {
                    return Err(Error::Kernel(KernelError::NotMultiple {
                        what: "gate_up_proj outputs",
                        value: l.out,
                        multiple: 2,
                    }));
                }
                let half = l.out / 2;
                let g = even(half, r)?;
                Ok(vec![g.clone(), shift(g, half)])
            }
            _ => Ok(Vec::new()),
        })
        .collect()
}

/// The parent of a layer name (`a.b.o_proj` -> `a.b`), with the separator.
fn parent(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(p, _)| &name[..p.len() + 1])
}

/// Checks every cut of `l` and returns its plan.
fn check_layer(l: &PlanLayer, role: LayerRole, ranks: Vec<Vec<Range<usize>>>) -> Result<LayerPlan> {
    let Some(dim) = role.parallel().dim() else {
        return Ok(LayerPlan { role, ranks });
    };
    if l.experts != 1 {
        return Err(Error::Kernel(KernelError::StackedExperts { experts: l.experts }));
    }
    if ranks.iter().any(|r| r.len() > 1)
        && let Some(m) = l.method.as_ref().filter(|m| !matches!(m, QuantMethod::Gptq { .. }))
    {
        return Err(Error::Tp(TpError::ShardScheme(scheme_name(m))));
    }
    for r in ranks.iter().flatten() {
        check_cut(l.method.as_ref(), l.out, l.inp, dim, r.clone())?;
    }
    Ok(LayerPlan { role, ranks })
}

fn scheme_name(m: &QuantMethod) -> &'static str {
    match m {
        QuantMethod::Int8Symmetric { .. } => "int8",
        QuantMethod::Int4Asymmetric { .. } => "int4",
        QuantMethod::Fp8 { .. } => "fp8",
        QuantMethod::Awq { .. } => "awq",
        QuantMethod::SmoothQuant { .. } => "smoothquant",
        QuantMethod::Gptq { .. } => "gptq",
        QuantMethod::Hqq { .. } => "hqq",
    }
}

/// The plan at world size `w`, or the first layer that does not fit and why: column-parallel
/// layers first (by name), then row-parallel ones against the splits feeding them.
fn build(
    attn: Option<AttentionShape>,
    layers: &[PlanLayer],
    w: usize,
) -> Result<BTreeMap<String, LayerPlan>, Failure> {
    let by_name: BTreeMap<&str, &PlanLayer> = layers.iter().map(|l| (l.name.as_str(), l)).collect();
    let mut plans = BTreeMap::new();
    let fail = |l: &PlanLayer| {
        let name = l.name.clone();
        move |e: Error| (name, e)
    };
    for (&name, &l) in &by_name {
        let role = LayerRole::of(name);
        if role.parallel() == Parallel::Row {
            continue;
        }
        let ranks = if role.parallel() == Parallel::Column {
            column_ranges(l, role, attn, w).map_err(fail(l))?
        } else {
            Vec::new()
        };
        plans.insert(name.to_string(), check_layer(l, role, ranks).map_err(fail(l))?);
    }
    for (&name, &l) in &by_name {
        let role = LayerRole::of(name);
        if role.parallel() != Parallel::Row {
            continue;
        }
        let ranks = (0..w)
            .map(|r| Shard::Simple { dim: 1, rank: r, world_size: w }.range(l.inp).map(|r| vec![r]))
            .collect::<Result<Vec<_>>>()
            .map_err(fail(l))?;
        // (feeder suffix, which piece of the feeder's ranges, offset of that piece in the feeder)
        let p = parent(name);
        let feeders: Vec<(String, usize)> = match role {
            LayerRole::AttnOut => {
                match (by_name.get(&*format!("{p}q_proj")), by_name.get(&*format!("{p}qkv_proj"))) {
                    (Some(_), _) => vec![(format!("{p}q_proj"), 0)],
                    (None, Some(_)) => vec![(format!("{p}qkv_proj"), 0)],
                    _ => {
                        return Err((
                            name.to_string(),
                            Error::Tp(TpError::ShardNoFeeder {
                                layer: name.to_string(),
                                feeders: "q_proj or qkv_proj",
                            }),
                        ));
                    }
                }
            }
            _ => {
                let split: Vec<_> = ["gate_proj", "up_proj"]
                    .iter()
                    .map(|s| format!("{p}{s}"))
                    .filter(|n| by_name.contains_key(n.as_str()))
                    .map(|n| (n, 0))
                    .collect();
                let fused = format!("{p}gate_up_proj");
                if !split.is_empty() {
                    split
                } else if by_name.contains_key(fused.as_str()) {
                    vec![(fused.clone(), 0), (fused, 1)]
                } else {
                    let e = Error::Tp(TpError::ShardNoFeeder {
                        layer: name.to_string(),
                        feeders: "gate_proj/up_proj or gate_up_proj",
                    });
                    return Err((name.to_string(), e));
                }
            }
        };
        for (feeder, piece) in feeders {
            let Some(fp) = plans.get(&feeder) else { continue };
            let base = if piece == 1 { by_name[feeder.as_str()].out / 2 } else { 0 };
            for (rank, (inputs, outs)) in ranks.iter().zip(&fp.ranks).enumerate() {
                let outputs = outs[piece].start - base..outs[piece].end - base;
                if inputs[0] != outputs {
                    let e = Error::Tp(TpError::ShardFeed {
                        layer: name.to_string(),
                        feeder: feeder.clone(),
                        rank,
                        inputs: inputs[0].clone(),
                        outputs,
                    });
                    return Err((name.to_string(), e));
                }
            }
        }
        plans.insert(name.to_string(), check_layer(l, role, ranks).map_err(fail(l))?);
    }
    Ok(plans)
}
