//! A mixture-of-experts layer for one rank: [`MoeExperts`], loaded by name from a checkpoint
//! in any layout the experts are stored in, with a forward over routed tokens.
//!
//! # Layouts
//!
//! `prefix` names the experts module (`model.layers.0.mlp.experts`,
//! `model.layers.0.block_sparse_moe.experts`); `E` experts, model width `hidden`, expert
//! width `I`:
//!
//! | [`ExpertsLayout`] | tensors | seen in |
//! |---|---|---|
//! | `PerExpert` | `<prefix>.<e>.gate_proj`, `up_proj`, `down_proj`: layers of any scheme the source serves | Qwen-MoE, DeepSeek |
//! | `Mixtral` | `<prefix>.<e>.w1` (gate), `w3` (up), `w2` (down) | Mixtral |
//! | `StackedInOut` | `<prefix>.gate_up_proj [E, hidden, 2I]`, `<prefix>.down_proj [E, I, hidden]`, each expert `[in, out]`, gate the first half of the last dimension | Llama 4, Qwen3-VL-MoE (mistral.rs's `PackedExperts`) |
//! | `StackedOutIn` | `gate_up_proj [E, 2I, hidden]`, `down_proj [E, hidden, I]`, each expert `[out, in]`, gate the first `I` rows | transformers' fused experts |
//!
//! The two stacked layouts are told apart by both shapes (they agree only when `I` is 0).
//! Stacked tensors are F32/F16/BF16 (dense experts, kept in their dtype) or FP8 with block
//! scales `<name>.weight_scale_inv` (`[E, ceil(rows / br), ceil(cols / bc)]` over the stored
//! `[rows, cols]`, `(br, bc)` the config's `weight_block_size`); FP8 experts stored `[in, out]`
//! are transposed codes and scales alike (no value changes), so their blocks become
//! `(bc, br)`, and gate/up must split on a block.
//!
//! # Tensor parallelism
//!
//! Every rank holds every expert: gate and up split by their outputs, down by its inputs, the
//! same `I / world` range ([`super::ExpertMlp::shard`]), so the ranks' outputs add up to the
//! layer's ([`MoeExperts::forward_reduced`]). A rank reads only its share of a dense stacked
//! tensor (its columns row by row when stored `[in, out]`) and of FP8 codes and scales; per-
//! expert layers read as [`LayerSource::load_layer_shard`] does. A down bias is added by rank 0
//! alone.

use super::{Comm, ExpertMlp, LayerSource, LoadOptions, LoadedLayer, MoeDims, Shard, check_cut};
use crate::dense::DenseWeight;
use crate::elem::FloatVec;
use crate::error::{Error, FormatError, KernelError, MoeError, Result, TpError, expect_len};
use crate::fp8::{Fp8Config, Fp8Format, Fp8Layer, Fp8Layout};
use crate::io::checkpoint::FLOATS;
use crate::io::{Checkpoint, Dtype};
use crate::layer::QuantWeight;
use crate::matmul::QuantLinear;
use crate::method::QuantMethod;
use crate::par::{Parallelism, transpose};
use std::ops::Range;

/// How a checkpoint stores an MoE layer's experts (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpertsLayout {
    /// `<prefix>.<e>.{gate_proj, up_proj, down_proj}`.
    PerExpert,
    /// `<prefix>.<e>.{w1, w3, w2}` (gate, up, down).
    Mixtral,
    /// `gate_up_proj [E, hidden, 2I]`, `down_proj [E, I, hidden]`.
    StackedInOut,
    /// `gate_up_proj [E, 2I, hidden]`, `down_proj [E, hidden, I]`.
    StackedOutIn,
}

impl ExpertsLayout {
    /// The per-expert names of (gate, up, down).
    fn names(self) -> [&'static str; 3] {
        match self {
            ExpertsLayout::Mixtral => ["w1", "w3", "w2"],
            _ => ["gate_proj", "up_proj", "down_proj"],
        }
    }
}

/// One expert's three layers on this rank.
#[derive(Debug, Clone)]
struct Expert {
    gate: QuantLinear,
    up: QuantLinear,
    down: QuantLinear,
}

impl Expert {
    /// The layers of rank `rank`: the ranks' partial down outputs are summed, so rank 0 alone
    /// keeps down's bias.
    fn new(
        gate: LoadedLayer,
        up: LoadedLayer,
        down: LoadedLayer,
        rank: usize,
        opts: &LoadOptions<'_>,
    ) -> Result<Self> {
        Ok(Expert {
            gate: opts.linear(gate.0, gate.1)?,
            up: opts.linear(up.0, up.1)?,
            down: opts.linear(down.0, down.1.filter(|_| rank == 0))?,
        })
    }
}

/// The experts of one MoE layer on one rank, each a SwiGLU MLP
/// `down(silu(gate x) * up x)` of [`QuantLinear`]s (any scheme), with a routed forward.
///
/// ```
/// use quant_kernels::tp::{ExpertMlp, MoeExperts};
/// use quant_kernels::{Parallelism, QuantWeight};
/// // Two experts, hidden 1, intermediate 1: expert e is y = (e + 1) * silu(x) * x.
/// let expert = |e: f32| ExpertMlp {
///     gate: QuantWeight::dense(1, 1, vec![1.0f32]),
///     up: QuantWeight::dense(1, 1, vec![1.0f32]),
///     down: QuantWeight::dense(1, 1, vec![e + 1.0]),
/// };
/// let moe = MoeExperts::new(&[expert(0.0), expert(1.0)], 0, 1)?;
/// // One token, x = 2, routed to expert 1 with weight 0.5: 0.5 * 2 * silu(2) * 2.
/// let y = moe.forward(&[2.0], 1, &[1], &[0.5], 1, Parallelism::SERIAL)?;
/// let silu2 = 2.0 / (1.0 + (-2.0f32).exp());
/// assert!((y[0] - 0.5 * 2.0 * silu2 * 2.0).abs() < 1e-6);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MoeExperts {
    experts: Vec<Expert>,
    dims: MoeDims,
    local: usize,
    layout: Option<ExpertsLayout>,
    rank: usize,
    world_size: usize,
}

impl MoeExperts {
    /// Rank `rank` of `world_size`'s part of whole experts (`[out, in]` weights of any scheme
    /// [`QuantWeight::shard`] cuts): [`ExpertMlp::shard`] of each.
    pub fn new(whole: &[ExpertMlp], rank: usize, world_size: usize) -> Result<Self> {
        let first = whole.first().ok_or(Error::Moe(MoeError::NoExperts))?;
        let (intermediate, hidden) = first.gate.shape();
        let dims = MoeDims { experts: whole.len(), hidden, intermediate };
        let local = whole.iter().map(|e| e.shard(rank, world_size)).collect::<Result<Vec<_>>>()?;
        Self::from_local(local, dims, rank, world_size)
    }

    /// Experts already cut for rank `rank` of `world_size` (e.g. by
    /// [`super::split_packed_experts`] or [`super::shard_fp8_experts`]), of the whole sizes
    /// `dims`: every gate and up `[I / world, hidden]`, every down `[hidden, I / world]`
    /// ([`MoeError::ExpertShape`] otherwise, naming `experts.<e>.<proj>`).
    pub fn from_local(local: Vec<ExpertMlp>, dims: MoeDims, rank: usize, world_size: usize) -> Result<Self> {
        let l = Shard::Simple { dim: 0, rank, world_size }.range(dims.intermediate)?.len();
        expect_len("experts", dims.experts, local.len())?;
        let experts = local
            .into_iter()
            .enumerate()
            .map(|(e, m)| {
                for (proj, w, expected) in [
                    ("gate", &m.gate, (l, dims.hidden)),
                    ("up", &m.up, (l, dims.hidden)),
                    ("down", &m.down, (dims.hidden, l)),
                ] {
                    if w.shape() != expected {
                        return Err(Error::Moe(MoeError::ExpertShape {
                            layer: format!("experts.{e}.{proj}"),
                            expected,
                            got: w.shape(),
                        }));
                    }
                }
                Expert::new((m.gate, None), (m.up, None), (m.down, None), rank, &LoadOptions::default())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { experts, dims, local: l, layout: None, rank, world_size })
    }

    /// Rank `rank` of `world_size`'s part of the experts module `prefix` of `checkpoint`, in
    /// whichever [`ExpertsLayout`] it is stored, for a model of sizes `dims` (from its config:
    /// `num_local_experts` / `num_experts`, `hidden_size`, `moe_intermediate_size` /
    /// `intermediate_size`). `Ok(None)` when `checkpoint` has no tensor under `prefix`.
    ///
    /// Every name and shape is checked before any weight is read: a missing projection is
    /// [`MoeError::MissingExpert`], an expert index past `dims.experts`
    /// [`MoeError::ExtraExpert`], a per-expert layer of the wrong shape
    /// [`MoeError::ExpertShape`], stacked tensors of neither layout [`MoeError::StackedShape`],
    /// an intermediate width that does not split over the ranks (or, packed, splits off a
    /// group or block) the [`TpError`] of the cut.
    ///
    /// `opts` apply as to the parallel linear layers: load-time quantization by each expert
    /// layer's name (`<prefix>.<e>.gate_proj`, ..., the names of the per-expert layouts for the
    /// stacked ones too), LoRA merged into per-expert layers it targets (a stacked tensor is no
    /// `nn.Linear` a PEFT adapter can target).
    pub fn load(
        checkpoint: &impl LayerSource,
        prefix: &str,
        dims: MoeDims,
        rank: usize,
        world_size: usize,
        opts: &LoadOptions<'_>,
    ) -> Result<Option<Self>> {
        let range = Shard::Simple { dim: 0, rank, world_size }.range(dims.intermediate)?;
        let (gu, dn) = (format!("{prefix}.gate_up_proj"), format!("{prefix}.down_proj"));
        let stacked = checkpoint.checkpoint().filter(|ck| ck.info(&gu).is_some() || ck.info(&dn).is_some());
        let (layout, experts) = if let Some(ck) = stacked {
            let (layout, layers) = load_stacked(ck, prefix, dims, range.clone(), opts)?;
            let experts = layers
                .into_iter()
                .map(|[(g, gb), (u, ub), (d, db)]| Expert::new((g, gb), (u, ub), (d, db), rank, opts))
                .collect::<Result<Vec<_>>>()?;
            (layout, experts)
        } else {
            let Some(layout) = per_expert_layout(checkpoint, prefix, dims)? else { return Ok(None) };
            let [g, u, d] = layout.names();
            let column = Shard::Simple { dim: 0, rank, world_size };
            let row = Shard::Simple { dim: 1, rank, world_size };
            let mut experts = Vec::with_capacity(dims.experts);
            for e in 0..dims.experts {
                let name = |proj: &str| format!("{prefix}.{e}.{proj}");
                experts.push(Expert::new(
                    opts.load(checkpoint, &name(g), Some(&column))?,
                    opts.load(checkpoint, &name(u), Some(&column))?,
                    opts.load(checkpoint, &name(d), Some(&row))?,
                    rank,
                    opts,
                )?);
            }
            (layout, experts)
        };
        Ok(Some(Self { experts, dims, local: range.len(), layout: Some(layout), rank, world_size }))
    }

    /// The whole layer's sizes.
    pub fn dims(&self) -> MoeDims {
        self.dims
    }

    /// This rank's intermediate width (`I / world`).
    pub fn local_intermediate(&self) -> usize {
        self.local
    }

    /// The layout the experts were loaded from (`None`: built in memory).
    pub fn layout(&self) -> Option<ExpertsLayout> {
        self.layout
    }

    /// `(rank, world_size)`.
    pub fn rank(&self) -> (usize, usize) {
        (self.rank, self.world_size)
    }

    /// Expert `e`'s (gate, up, down) layers on this rank.
    pub fn expert(&self, e: usize) -> Option<(&QuantLinear, &QuantLinear, &QuantLinear)> {
        self.experts.get(e).map(|x| (&x.gate, &x.up, &x.down))
    }

    /// This rank's part of the routed experts' outputs for `x: [tokens, hidden]`: for each
    /// token `t` and slot `j < k`, `topk_weights[t, j] * down(silu(gate x_t) * up x_t)` of
    /// expert `topk_ids[t, j]`, summed (as [`super::route_topk`] gives them). The tokens are
    /// grouped by expert and each group goes through the expert's fused kernels as one batch
    /// (no weight is dequantized). With one rank this is the layer's output; with more, the
    /// ranks' results add up to it ([`MoeExperts::forward_reduced`]).
    pub fn forward(
        &self,
        x: &[f32],
        tokens: usize,
        topk_ids: &[usize],
        topk_weights: &[f32],
        k: usize,
        par: Parallelism,
    ) -> Result<Vec<f32>> {
        let h = self.dims.hidden;
        let overflow = |rows, cols| Error::Kernel(KernelError::ShapeOverflow { rows, cols });
        let nx = tokens.checked_mul(h).ok_or(overflow(tokens, h))?;
        let nk = tokens.checked_mul(k).ok_or(overflow(tokens, k))?;
        expect_len("x", nx, x.len())?;
        expect_len("topk_ids", nk, topk_ids.len())?;
        expect_len("topk_weights", nk, topk_weights.len())?;
        let experts = self.experts.len();
        // Slots grouped by expert (counting sort, token order kept within an expert).
        let mut start = vec![0usize; experts + 1];
        for (slot, &id) in topk_ids.iter().enumerate() {
            if id >= experts {
                return Err(Error::Moe(MoeError::ExpertId { id, token: slot / k.max(1), experts }));
            }
            start[id + 1] += 1;
        }
        for e in 0..experts {
            start[e + 1] += start[e];
        }
        let mut next = start.clone();
        let mut order = vec![0usize; nk];
        for (slot, &id) in topk_ids.iter().enumerate() {
            order[next[id]] = slot;
            next[id] += 1;
        }
        let most = (0..experts).map(|e| start[e + 1] - start[e]).max().unwrap_or(0);
        let l = self.local;
        let (mut xs, mut g, mut u, mut o) =
            (vec![0f32; most * h], vec![0f32; most * l], vec![0f32; most * l], vec![0f32; most * h]);
        let mut y = vec![0f32; nx];
        for (e, ex) in self.experts.iter().enumerate() {
            let slots = &order[start[e]..start[e + 1]];
            let n = slots.len();
            if n == 0 {
                continue;
            }
            for (dst, &slot) in xs.chunks_exact_mut(h.max(1)).zip(slots) {
                let t = slot / k;
                dst.copy_from_slice(&x[t * h..(t + 1) * h]);
            }
            ex.gate.forward_into(&xs[..n * h], n, &mut g[..n * l], par)?;
            ex.up.forward_into(&xs[..n * h], n, &mut u[..n * l], par)?;
            for (a, &b) in g[..n * l].iter_mut().zip(&u[..n * l]) {
                *a = *a / (1.0 + (-*a).exp()) * b;
            }
            ex.down.forward_into(&g[..n * l], n, &mut o[..n * h], par)?;
            for (row, &slot) in o.chunks_exact(h.max(1)).zip(slots) {
                let (t, w) = (slot / k, topk_weights[slot]);
                for (acc, &v) in y[t * h..(t + 1) * h].iter_mut().zip(row) {
                    *acc += w * v;
                }
            }
        }
        Ok(y)
    }

    /// [`MoeExperts::forward`] summed over the ranks of `comm` (which must be this layer's
    /// rank and world size): the layer's output, the same on every rank.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_reduced(
        &self,
        comm: &dyn Comm,
        x: &[f32],
        tokens: usize,
        topk_ids: &[usize],
        topk_weights: &[f32],
        k: usize,
        par: Parallelism,
    ) -> Result<Vec<f32>> {
        if comm.world_size() != self.world_size || comm.rank() != self.rank {
            return Err(Error::Tp(TpError::ShardRank { rank: comm.rank(), world_size: comm.world_size() }));
        }
        let mut y = self.forward(x, tokens, topk_ids, topk_weights, k, par)?;
        comm.all_reduce_sum(&mut y)?;
        Ok(y)
    }
}

/// The per-expert layout of `prefix` (`None`: no tensor under it), after checking that every
/// expert has its three layers, of the right shapes, and (where the source lists its tensors)
/// that no tensor names an expert past `dims.experts`.
fn per_expert_layout(src: &impl LayerSource, prefix: &str, dims: MoeDims) -> Result<Option<ExpertsLayout>> {
    let mut layout = None;
    if let Some(ck) = src.checkpoint() {
        let head = format!("{prefix}.");
        for name in ck.tensor_names() {
            let Some(rest) = name.strip_prefix(&head) else { continue };
            let mut parts = rest.split('.');
            let (Some(e), Some(proj)) = (parts.next(), parts.next()) else { continue };
            let Ok(e) = e.parse::<usize>() else { continue };
            if e >= dims.experts {
                return Err(Error::Moe(MoeError::ExtraExpert { tensor: name.into(), experts: dims.experts }));
            }
            if matches!(proj, "w1" | "w2" | "w3") {
                layout = Some(ExpertsLayout::Mixtral);
            } else if layout.is_none() {
                layout = Some(ExpertsLayout::PerExpert);
            }
        }
    }
    if layout.is_none() {
        // Layers the stored tensors do not list (a source that serves layers only, UQFF
        // layers): expert 0 tells the layout.
        let has = |proj: &str| src.has_layer(&format!("{prefix}.0.{proj}"));
        if ["w1", "w2", "w3"].into_iter().any(has) {
            layout = Some(ExpertsLayout::Mixtral);
        } else if ["gate_proj", "up_proj", "down_proj"].into_iter().any(has) {
            layout = Some(ExpertsLayout::PerExpert);
        }
    }
    let Some(layout) = layout else { return Ok(None) };
    check_per_expert(src, prefix, dims, layout)?;
    Ok(Some(layout))
}

/// Every expert of `prefix` has its three layers in `layout`, of the shapes `dims` gives.
fn check_per_expert(
    src: &impl LayerSource,
    prefix: &str,
    dims: MoeDims,
    layout: ExpertsLayout,
) -> Result<()> {
    let MoeDims { hidden, intermediate, .. } = dims;
    let [g, u, d] = layout.names();
    for e in 0..dims.experts {
        for (proj, expected) in
            [(g, (intermediate, hidden)), (u, (intermediate, hidden)), (d, (hidden, intermediate))]
        {
            let layer = format!("{prefix}.{e}.{proj}");
            let got = src.layer_shape(&layer).ok_or_else(|| {
                Error::Moe(MoeError::MissingExpert { prefix: prefix.into(), expert: e, proj })
            })?;
            if got != expected {
                return Err(Error::Moe(MoeError::ExpertShape { layer, expected, got }));
            }
        }
    }
    Ok(())
}

/// What a stacked tensor holds.
#[derive(Debug, Clone, Copy)]
enum Stored {
    Dense,
    /// FP8 codes with block scales `(br, bc)` over the stored `[rows, cols]`.
    Fp8 {
        format: Fp8Format,
        block: (usize, usize),
    },
}

/// One stacked tensor: its name, rows per expert and kind.
struct Stack<'a> {
    name: &'a str,
    rows: usize,
    stored: Stored,
}

/// The stacked experts of `prefix`, rank range `r` of the intermediate width, as
/// `[gate, up, down]` layers per expert.
fn load_stacked(
    ck: &Checkpoint,
    prefix: &str,
    dims: MoeDims,
    r: Range<usize>,
    opts: &LoadOptions<'_>,
) -> Result<(ExpertsLayout, Vec<[LoadedLayer; 3]>)> {
    let (gu, dn) = (format!("{prefix}.gate_up_proj"), format!("{prefix}.down_proj"));
    let missing = |name: &str| Error::Format(FormatError::MissingTensors(vec![name.to_string()]));
    let gi = ck.info(&gu).ok_or_else(|| missing(&gu))?.clone();
    let di = ck.info(&dn).ok_or_else(|| missing(&dn))?.clone();
    let MoeDims { experts: e, hidden: h, intermediate: i } = dims;
    let i2 = i.checked_mul(2).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: i, cols: 2 }))?;
    let layout = if gi.shape == [e, h, i2] && di.shape == [e, i, h] {
        ExpertsLayout::StackedInOut
    } else if gi.shape == [e, i2, h] && di.shape == [e, h, i] {
        ExpertsLayout::StackedOutIn
    } else {
        return Err(Error::Moe(MoeError::StackedShape {
            prefix: prefix.into(),
            gate_up: gi.shape,
            down: di.shape,
            experts: e,
            hidden: h,
            intermediate: i,
        }));
    };
    let in_out = layout == ExpertsLayout::StackedInOut;
    let kind = |info: &crate::io::TensorInfo, name: &str| -> Result<Stored> {
        let format = match info.dtype {
            d if FLOATS.contains(&d) => return Ok(Stored::Dense),
            Dtype::F8E4M3 => Fp8Format::E4M3,
            Dtype::F8E5M2 => Fp8Format::E5M2,
            d => {
                return Err(Error::Format(FormatError::TensorDtype {
                    tensor: name.into(),
                    expected: "F16, BF16, F32 or FP8",
                    got: d.to_string(),
                }));
            }
        };
        let no_block = || Error::Moe(MoeError::Fp8Block { tensor: name.into() });
        let config = Fp8Config::from_json(ck.quantization_config().ok_or_else(no_block)?)?;
        let block = config.block.ok_or_else(no_block)?;
        let (rows, cols) = (info.shape[1], info.shape[2]);
        let scale = format!("{name}.weight_scale_inv");
        let s = ck.expect_dtype(&scale, FLOATS, "F16, BF16 or F32")?;
        let expected = vec![e, rows.div_ceil(block.0), cols.div_ceil(block.1)];
        if s.shape != expected {
            return Err(Error::Format(FormatError::TensorShape { tensor: scale, expected, got: s.shape }));
        }
        Ok(Stored::Fp8 { format, block })
    };
    let (gk, dk) = (kind(&gi, &gu)?, kind(&di, &dn)?);
    // gate/up must part on a scale block; then the rank's cut must keep its blocks, as the
    // whole expert's shard would (checked on the `[out, in]` layers).
    if let Stored::Fp8 { format, block: (br, bc) } = gk {
        let along = if in_out { bc } else { br };
        if i % along != 0 {
            return Err(Error::Tp(TpError::ShardBoundary {
                what: "fp8 scale block",
                at: i,
                multiple: along,
            }));
        }
        let block = Some(if in_out { (bc, br) } else { (br, bc) });
        check_cut(Some(&QuantMethod::Fp8 { format, block }), i, h, 0, r.clone())?;
    }
    if let Stored::Fp8 { format, block: (br, bc) } = dk {
        let block = Some(if in_out { (bc, br) } else { (br, bc) });
        check_cut(Some(&QuantMethod::Fp8 { format, block }), h, i, 1, r.clone())?;
    }
    let gate_up = Stack { name: &gu, rows: if in_out { h } else { i2 }, stored: gk };
    let down = Stack { name: &dn, rows: if in_out { i } else { h }, stored: dk };
    let shifted = (i + r.start)..(i + r.end);
    let [gn, un, dname] = ExpertsLayout::PerExpert.names();
    let mut out = Vec::with_capacity(e);
    for x in 0..e {
        let parts = if in_out {
            [
                read_part(ck, &gate_up, x, 0..h, r.clone(), true, opts.par)?,
                read_part(ck, &gate_up, x, 0..h, shifted.clone(), true, opts.par)?,
                read_part(ck, &down, x, r.clone(), 0..h, true, opts.par)?,
            ]
        } else {
            [
                read_part(ck, &gate_up, x, r.clone(), 0..h, false, opts.par)?,
                read_part(ck, &gate_up, x, shifted.clone(), 0..h, false, opts.par)?,
                read_part(ck, &down, x, 0..h, r.clone(), false, opts.par)?,
            ]
        };
        let [g, u, d] = parts;
        let q = |w: QuantWeight, proj: &str| {
            opts.quantize(opts.method_for(&format!("{prefix}.{x}.{proj}")), (w, None))
        };
        out.push([q(g, gn)?, q(u, un)?, q(d, dname)?]);
    }
    Ok((layout, out))
}

/// Rows `rows`, columns `cols` of expert `e`'s stored matrix in `stack`, as an `[out, in]`
/// layer (`transpose`: the stored matrix is `[in, out]`). FP8 scales are read for the blocks
/// the region covers (the caller checked it keeps its blocks).
fn read_part(
    ck: &Checkpoint,
    stack: &Stack<'_>,
    e: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    transpose_it: bool,
    par: Parallelism,
) -> Result<QuantWeight> {
    let base = e * stack.rows;
    let region = (base + rows.start)..(base + rows.end);
    let (nr, nc) = (rows.len(), cols.len());
    let (out, inp) = if transpose_it { (nc, nr) } else { (nr, nc) };
    match stack.stored {
        Stored::Dense => {
            let v = ck.read_floats_region(stack.name, region, cols)?;
            let w = if transpose_it {
                crate::with_float_vec!(&v, s => FloatVec::from(transpose(s, nr, nc, par)))
            } else {
                v
            };
            Ok(QuantWeight::Dense(DenseWeight { rows: out, cols: inp, w }))
        }
        Stored::Fp8 { format, block: (br, bc) } => {
            let codes = ck.read_region(stack.name, region, cols.clone())?;
            let sr = stack.rows.div_ceil(br);
            let srows = (e * sr + rows.start / br)..(e * sr + rows.end.div_ceil(br));
            let scols = (cols.start / bc)..cols.end.div_ceil(bc);
            let (snr, snc) = (srows.len(), scols.len());
            let scales = ck.read_floats_region(&format!("{}.weight_scale_inv", stack.name), srows, scols)?;
            let (codes, scales, layout) = if transpose_it {
                (
                    transpose(&codes, nr, nc, par),
                    crate::with_float_vec!(&scales, s => FloatVec::from(transpose(s, snr, snc, par))),
                    Fp8Layout::block(out, inp, bc, br)?,
                )
            } else {
                (codes, scales, Fp8Layout::block(out, inp, br, bc)?)
            };
            Ok(QuantWeight::Fp8(Fp8Layer { layout, experts: 1, format, codes, scales, bias: None }))
        }
    }
}
