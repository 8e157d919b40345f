//! Stacked mixture-of-experts weights: split into one MLP per expert, then sharded per rank.
//!
//! # Orientation
//!
//! Everything this module returns is an `nn.Linear` weight `[out, in]` ([`QuantWeight`]'s
//! orientation), one [`ExpertMlp`] per expert:
//!
//! ```text
//!  gate, up   [intermediate, hidden]      y = down(act(gate x) * up x)
//!  down       [hidden, intermediate]
//! ```
//!
//! What it reads depends on who stacked the experts:
//!
//! * **mistral.rs `PackedExperts`** (dense, the HF Llama-4 `Llama4TextExperts` tensors):
//!   `gate_up_proj [E, hidden, 2 * intermediate]` and `down_proj [E, intermediate, hidden]`,
//!   each expert stored `[in, out]` (the transpose of `nn.Linear`), gate in the first half of
//!   the last dimension and up in the second (not interleaved). mistral.rs shards the last
//!   dimension of each half by rank and `down_proj`'s dimension 1, then transposes
//!   (`.t()`); [`split_packed_experts`] does the same and returns `[out, in]` weights.
//! * **Stacked FP8** ([`Fp8Layer`] with `experts > 1`, e.g. `[E, out, in]` `weight` with
//!   `[E, ceil(out / br), ceil(in / bc)]` `weight_scale_inv`, or `[E]` per-tensor scales):
//!   already `[out, in]` per expert; [`split_fp8_experts`] gives one layer per expert with
//!   its own scale blocks (and bias row), [`shard_fp8_experts`] the rank's part of each.
//!
//! # Sharding
//!
//! Every rank holds every expert (tensor parallelism inside each expert, as mistral.rs):
//! gate and up are column-parallel (split by their outputs, dim 0: rank `r` of `w` takes
//! intermediate rows `r * I / w .. (r + 1) * I / w`), down is row-parallel (split by its
//! inputs, dim 1, the same intermediate range), so one all-reduce of each expert's (or the
//! routed sum's) down output completes the layer. Packed shards follow
//! [`QuantWeight::shard`]'s rules (an FP8 intermediate split must fall on scale blocks).

use crate::elem::FloatVec;
use crate::error::{Error, KernelError, Result, expect_len};
use crate::fp8::Fp8Layer;
use crate::layer::QuantWeight;
use crate::tp::Shard;

/// The sizes of one MoE layer's stacked experts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MoeDims {
    /// Number of experts E.
    pub experts: usize,
    /// Model width (gate/up inputs, down outputs).
    pub hidden: usize,
    /// Expert intermediate width I (gate/up outputs, down inputs).
    pub intermediate: usize,
}

/// One expert's MLP as three `nn.Linear` weights `[out, in]` (or one rank's part of them).
#[derive(Debug, Clone, PartialEq)]
pub struct ExpertMlp {
    /// `gate_proj`: `[intermediate, hidden]` (a rank: its rows of it).
    pub gate: QuantWeight,
    /// `up_proj`: `[intermediate, hidden]` (a rank: its rows of it).
    pub up: QuantWeight,
    /// `down_proj`: `[hidden, intermediate]` (a rank: its columns of it).
    pub down: QuantWeight,
}

impl ExpertMlp {
    /// Rank `rank`'s part of this expert: gate and up split by their outputs (dim 0), down by
    /// its inputs (dim 1), through [`QuantWeight::shard`] (any scheme it supports).
    pub fn shard(&self, rank: usize, world_size: usize) -> Result<ExpertMlp> {
        let column = Shard::Simple { dim: 0, rank, world_size };
        let row = Shard::Simple { dim: 1, rank, world_size };
        Ok(ExpertMlp {
            gate: self.gate.shard(&column)?,
            up: self.up.shard(&column)?,
            down: self.down.shard(&row)?,
        })
    }
}

/// mistral.rs's `PackedExperts` split per expert and sharded for rank `rank` of `world_size`
/// (`world_size` 1: the whole experts), as `[out, in]` dense weights of `gate_up`'s and
/// `down`'s dtypes (see the module docs for the stored orientation).
///
/// `gate_up` is `[E, hidden, 2 * intermediate]`, `down` `[E, intermediate, hidden]`, both
/// row-major; `intermediate` must split evenly over the ranks.
///
/// ```
/// use quant_kernels::FloatVec;
/// use quant_kernels::QuantWeight;
/// use quant_kernels::tp::{MoeDims, split_packed_experts};
/// // One expert, hidden 2, intermediate 2: gate_up[h, o] = 10 h + o (o < 2 gate, else up).
/// let gate_up = FloatVec::F32(vec![0.0, 1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0]);
/// let down = FloatVec::F32(vec![0.0, 1.0, 10.0, 11.0]); // [intermediate, hidden]
/// let dims = MoeDims { experts: 1, hidden: 2, intermediate: 2 };
/// let e = &split_packed_experts(&gate_up, &down, dims, 1, 2)?[0]; // rank 1 of 2
/// let dense = |w: &QuantWeight| match w { QuantWeight::Dense(d) => d.w.to_f32(), _ => vec![] };
/// assert_eq!(dense(&e.gate), [1.0, 11.0]);  // gate row 1: [1, hidden]
/// assert_eq!(dense(&e.up), [3.0, 13.0]);
/// assert_eq!(dense(&e.down), [10.0, 11.0]); // down column 1: [hidden, 1]
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn split_packed_experts(
    gate_up: &FloatVec,
    down: &FloatVec,
    dims: MoeDims,
    rank: usize,
    world_size: usize,
) -> Result<Vec<ExpertMlp>> {
    let MoeDims { experts, hidden, intermediate } = dims;
    let overflow = Error::Kernel(KernelError::ShapeOverflow { rows: experts, cols: hidden });
    let per = hidden.checked_mul(intermediate).ok_or(overflow.clone())?;
    let total = experts.checked_mul(per).and_then(|n| n.checked_mul(2)).ok_or(overflow)?;
    expect_len("gate_up_proj", total, gate_up.len())?;
    expect_len("down_proj", total / 2, down.len())?;
    let r = Shard::Simple { dim: 0, rank, world_size }.range(intermediate)?;
    let (i2, len) = (2 * intermediate, r.len());
    let dense = |rows: usize, cols: usize, w: FloatVec| QuantWeight::dense(rows, cols, w);
    let mut out = Vec::with_capacity(experts);
    for e in 0..experts {
        let (gu, dn) = (e * hidden * i2, e * per);
        // gate[o, h] = gate_up[e, h, o]; up[o, h] = gate_up[e, h, I + o]; o in the rank's range.
        let half = |first: usize| {
            crate::with_float_vec!(gate_up, v => FloatVec::from(
                r.clone()
                    .flat_map(|o| (0..hidden).map(move |h| v[gu + h * i2 + first + o]))
                    .collect::<Vec<_>>()
            ))
        };
        // down[h, i] = down_proj[e, i, h]; i in the rank's range.
        let d = crate::with_float_vec!(down, v => FloatVec::from(
            (0..hidden).flat_map(|h| r.clone().map(move |i| v[dn + i * hidden + h])).collect::<Vec<_>>()
        ));
        out.push(ExpertMlp {
            gate: dense(len, hidden, half(0)),
            up: dense(len, hidden, half(intermediate)),
            down: dense(hidden, len, d),
        });
    }
    Ok(out)
}

/// Stacked FP8 experts split into one layer per expert: codes `[E, rows, cols]`, scales
/// `[E, scale rows, scale cols]` (`[E]` per-tensor) and bias `[E, rows]`, each expert's part
/// taken as is (no value changes). A one-expert layer comes back as the only element.
///
/// ```
/// use quant_kernels::fp8::{Fp8Format, Fp8Layer, Fp8Layout};
/// use quant_kernels::tp::split_fp8_experts;
/// use quant_kernels::FloatVec;
/// let stacked = Fp8Layer {
///     layout: Fp8Layout::per_tensor(1, 2)?,
///     experts: 2,
///     format: Fp8Format::E4M3,
///     codes: vec![0x38, 0x40, 0x38, 0x40],
///     scales: FloatVec::F32(vec![1.0, 3.0]),
///     bias: None,
/// };
/// let parts = split_fp8_experts(&stacked)?;
/// assert_eq!((parts.len(), parts[1].experts, &parts[1].codes[..]), (2, 1, &[0x38, 0x40][..]));
/// assert_eq!(parts[1].scales, FloatVec::F32(vec![3.0]));
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn split_fp8_experts(layer: &Fp8Layer) -> Result<Vec<Fp8Layer>> {
    let l = &layer.layout;
    let (rows, cols) = (l.rows(), l.cols());
    let (sr, sc) = l.scale_shape();
    let e = layer.experts;
    let per = rows.checked_mul(cols).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols }))?;
    expect_len(
        "codes",
        e.checked_mul(per).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: e, cols: per }))?,
        layer.codes.len(),
    )?;
    expect_len("scales", e.saturating_mul(sr * sc), layer.scales.len())?;
    if let Some(b) = &layer.bias {
        expect_len("bias", e.saturating_mul(rows), b.len())?;
    }
    let slice = |v: &FloatVec, n: usize, i: usize| crate::with_float_vec!(v, x => FloatVec::from(x[i * n..(i + 1) * n].to_vec()));
    Ok((0..e)
        .map(|i| Fp8Layer {
            layout: *l,
            experts: 1,
            format: layer.format,
            codes: layer.codes[i * per..(i + 1) * per].to_vec(),
            scales: slice(&layer.scales, sr * sc, i),
            bias: layer.bias.as_ref().map(|b| slice(b, rows, i)),
        })
        .collect())
}

/// Stacked FP8 `gate_proj`, `up_proj` (`[E, intermediate, hidden]`) and `down_proj`
/// (`[E, hidden, intermediate]`), as [`Fp8Layer`]s, split per expert and sharded for rank
/// `rank` of `world_size` (see [`ExpertMlp::shard`]): each rank's intermediate range must
/// start and end on scale blocks (or lie within one block), else
/// [`TpError::ShardBoundary`](crate::error::TpError::ShardBoundary).
pub fn shard_fp8_experts(
    gate: &Fp8Layer,
    up: &Fp8Layer,
    down: &Fp8Layer,
    rank: usize,
    world_size: usize,
) -> Result<Vec<ExpertMlp>> {
    let (gl, ul, dl) = (&gate.layout, &up.layout, &down.layout);
    for (what, expected, got) in [
        ("up_proj experts", gate.experts, up.experts),
        ("down_proj experts", gate.experts, down.experts),
        ("up_proj rows", gl.rows(), ul.rows()),
        ("up_proj cols", gl.cols(), ul.cols()),
        ("down_proj rows (hidden)", gl.cols(), dl.rows()),
        ("down_proj cols (intermediate)", gl.rows(), dl.cols()),
    ] {
        expect_len(what, expected, got)?;
    }
    let (g, u, d) = (split_fp8_experts(gate)?, split_fp8_experts(up)?, split_fp8_experts(down)?);
    g.into_iter()
        .zip(u)
        .zip(d)
        .map(|((g, u), d)| {
            ExpertMlp { gate: QuantWeight::Fp8(g), up: QuantWeight::Fp8(u), down: QuantWeight::Fp8(d) }
                .shard(rank, world_size)
        })
        .collect()
}

/// Each token's experts and weights from its router logits `[tokens, experts]`, as transformers
/// routes Mixtral and Qwen-MoE: softmax in `f32` (max subtracted), the `k` largest
/// probabilities (largest first; ties to the lower expert), and, when `renormalize`, those `k`
/// divided by their sum (Mixtral always; Qwen-MoE when its config's `norm_topk_prob` is true).
/// Returns `(ids, weights)`, both `[tokens, k]`.
///
/// ```
/// use quant_kernels::tp::route_topk;
/// let logits = [0.0f32, (2f32).ln(), (5f32).ln(), 0.0]; // one token, probabilities 1:2:5:1
/// let (ids, w) = route_topk(&logits, 1, 4, 2, true)?;
/// assert_eq!(ids, [2, 1]);
/// assert!((w[0] - 5.0 / 7.0).abs() < 1e-6 && (w[1] - 2.0 / 7.0).abs() < 1e-6);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn route_topk(
    logits: &[f32],
    tokens: usize,
    experts: usize,
    k: usize,
    renormalize: bool,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let n = tokens
        .checked_mul(experts)
        .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: tokens, cols: experts }))?;
    expect_len("router logits", n, logits.len())?;
    if k == 0 || k > experts {
        return Err(Error::Kernel(KernelError::TooLarge { what: "top-k experts", value: k, max: experts }));
    }
    let (mut ids, mut weights) = (Vec::with_capacity(tokens * k), Vec::with_capacity(tokens * k));
    // One probability row and one order, reused for every token.
    let (mut p, mut order) = (vec![0f32; experts], Vec::with_capacity(experts));
    for row in logits.chunks_exact(experts.max(1)).take(tokens) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        for (q, &x) in p.iter_mut().zip(row) {
            *q = (x - max).exp();
        }
        let sum: f32 = p.iter().sum();
        p.iter_mut().for_each(|q| *q /= sum);
        order.clear();
        order.extend(0..experts);
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        let top = &order[..k];
        let norm: f32 = if renormalize { top.iter().map(|&i| p[i]).sum() } else { 1.0 };
        ids.extend_from_slice(top);
        weights.extend(top.iter().map(|&i| if renormalize { p[i] / norm } else { p[i] }));
    }
    Ok((ids, weights))
}
