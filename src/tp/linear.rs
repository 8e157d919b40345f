//! Tensor-parallel linear layers over [`QuantLinear`] (the fused quantized multiply).
//!
//! ```text
//!  ColumnParallelLinear   W [out/W, in] per rank, bias split    x [b, in]    -> y_r [b, out/W]
//!  RowParallelLinear      W [out, in/W] per rank, bias once     x_r [b, in/W] -> all-reduce sum -> y [b, out]
//!  ReplicatedLinear       W [out, in] on every rank                          -> y [b, out]
//! ```
//!
//! A column-parallel layer followed by a row-parallel one (an MLP's up/down, attention's
//! qkv/o) needs one all-reduce: the row-parallel layer consumes exactly the column split that
//! feeds it.

use super::{Comm, Shard};
use crate::awq::{AwqLayer, AwqLayout};
use crate::elem::FloatVec;
use crate::error::{Error, Result, expect_len};
use crate::fp8::{Fp8Layer, Fp8Layout};
use crate::hqq::{Axis, HqqLayout};
use crate::intx::{Granularity, Int4Tensor, Int8Tensor};
use crate::matmul::{HqqWeight, QuantLinear, QuantWeight};
use crate::par::Parallelism;

/// `shard` (along the outputs) of a bias.
fn bias_shard(bias: Option<&FloatVec>, shard: &Shard) -> Result<Option<FloatVec>> {
    bias.map(
        |b| crate::with_float_vec!(b, v => shard.apply(v, v.len(), 1).map(|(s, _, _)| FloatVec::from(s))),
    )
    .transpose()
}

/// Outputs split over ranks; no communication in forward.
#[derive(Debug, Clone)]
pub struct ColumnParallelLinear {
    local: QuantLinear,
    rank: usize,
    world_size: usize,
}

impl ColumnParallelLinear {
    /// Rank `rank` of `world_size`'s part of `weight` (`[out, in]`, any scheme
    /// [`Shard::apply_weight`] supports) and of `bias`.
    pub fn new(
        weight: &QuantWeight,
        bias: Option<&FloatVec>,
        rank: usize,
        world_size: usize,
    ) -> Result<Self> {
        let shard = Shard::Simple { dim: 0, rank, world_size };
        let local = QuantLinear::new(shard.apply_weight(weight)?, bias_shard(bias, &shard)?)?;
        Ok(Self { local, rank, world_size })
    }

    /// A fused weight (q/k/v stacked as `qkv_proj`, gate/up as `gate_up_proj`) given as its
    /// parts, each split separately and concatenated again on each rank (like mistral.rs's
    /// `new_merged`): rank `r` holds `[q_r; k_r; v_r]`, not a contiguous slice of the stack.
    /// `shards[i]` overrides part `i`'s even split (e.g. [`super::kv_head_shard`] for k and v).
    ///
    /// Every scheme is supported, still packed: the local weight dequantizes to the pieces'
    /// dequantizations one after another, bit for bit (nothing is dequantized or
    /// requantized). The parts must be of one scheme and share their inputs, and:
    ///
    /// | scheme | the stack | the parts must share |
    /// |---|---|---|
    /// | dense | rows (in `f32`) | - |
    /// | GPTQ | columns ([`crate::gptq::fuse_columns`]) | bits, group size, zero format, `g_idx`, dtypes |
    /// | HQQ, axis 1 | codes repacked, scales and zeros concatenated | bits, group size, dtypes |
    /// | HQQ, axis 0 | codes repacked; groups of the stack span every part | bits, dtypes, code columns `M` and the scales and zeros themselves |
    /// | AWQ | word, zero-word and scale columns | K, group size, scale dtype |
    /// | FP8 per-tensor | codes; one scale | format, the scale (bit for bit) |
    /// | FP8 block | codes; scale-block rows | format, block size, scale dtype; every part but the last ends on a block row |
    /// | int8 | codes; one equal per-tensor scale stays, else per-channel scales | - |
    /// | int4 | packed bytes, scales, zeros | group size |
    ///
    /// A difference is [`Error::Fuse`] naming it and the first part that differs (`"scheme"`,
    /// `"inputs"` (`"K"` for GPTQ and AWQ), `"bits"`, `"group size"`, `"scale dtype"`,
    /// `"fp8 per-tensor scale"`, `"hqq axis-0 scales and zeros"`, ...); an FP8 part ending
    /// inside a scale block is [`Error::ShardBoundary`] at that row of the stack. So HQQ
    /// axis-0 parts quantized separately (each with its own strided groups) and FP8 per-tensor
    /// parts with different scales are refused: they cannot be stacked without requantizing.
    /// The parts' own biases (GPTQ, AWQ, FP8 layers) are stacked too (all or none); `parts`'
    /// biases are those of the layer.
    pub fn new_merged(
        parts: &[(&QuantWeight, Option<&FloatVec>)],
        shards: Option<&[Shard]>,
        rank: usize,
        world_size: usize,
    ) -> Result<Self> {
        let mut weights = Vec::with_capacity(parts.len());
        let mut biases = Vec::new();
        for (i, (w, b)) in parts.iter().enumerate() {
            let shard =
                shards.and_then(|s| s.get(i).copied()).unwrap_or(Shard::Simple { dim: 0, rank, world_size });
            if shard.dim() != 0 {
                return Err(Error::ShardDim(shard.dim()));
            }
            weights.push(shard.apply_weight(w)?);
            if let Some(b) = bias_shard(*b, &shard)? {
                biases.push(b);
            }
        }
        if !biases.is_empty() && biases.len() != parts.len() {
            return Err(Error::Fuse { what: "bias", part: biases.len() });
        }
        let weight = concat_rows(weights)?;
        let bias = if biases.is_empty() {
            None
        } else {
            Some(FloatVec::F32(biases.iter().flat_map(|b| b.to_f32()).collect()))
        };
        Ok(Self { local: QuantLinear::new(weight, bias)?, rank, world_size })
    }

    /// `y_r = x · W_rᵀ + b_r`: this rank's `[batch, out_r]` outputs.
    pub fn forward(&self, x: &[f32], batch: usize, par: Parallelism) -> Result<Vec<f32>> {
        self.local.forward(x, batch, par)
    }

    /// [`ColumnParallelLinear::forward`], then every rank's outputs gathered into the whole
    /// `[batch, out]` (in rank order per row).
    pub fn forward_gathered(
        &self,
        comm: &dyn Comm,
        x: &[f32],
        batch: usize,
        par: Parallelism,
    ) -> Result<Vec<f32>> {
        let local = self.forward(x, batch, par)?;
        let all = comm.all_gather(&local)?;
        let per = self.local.out_features();
        let ranks = comm.world_size();
        expect_len("gathered", ranks * batch * per, all.len())?;
        let mut y = Vec::with_capacity(all.len());
        for b in 0..batch {
            for r in 0..ranks {
                y.extend_from_slice(&all[(r * batch + b) * per..(r * batch + b + 1) * per]);
            }
        }
        Ok(y)
    }

    /// The local layer.
    pub fn local(&self) -> &QuantLinear {
        &self.local
    }

    /// `(rank, world_size)`.
    pub fn rank(&self) -> (usize, usize) {
        (self.rank, self.world_size)
    }
}

/// Inputs split over ranks; forward all-reduces the partial outputs, then adds the bias once.
#[derive(Debug, Clone)]
pub struct RowParallelLinear {
    local: QuantLinear,
    bias: Option<Vec<f32>>,
    rank: usize,
    world_size: usize,
}

impl RowParallelLinear {
    /// Rank `rank` of `world_size`'s part of `weight` along its inputs; `bias` is kept whole
    /// and added after the sum.
    pub fn new(
        weight: &QuantWeight,
        bias: Option<&FloatVec>,
        rank: usize,
        world_size: usize,
    ) -> Result<Self> {
        let shard = Shard::Simple { dim: 1, rank, world_size };
        let local = QuantLinear::new(shard.apply_weight(weight)?, None)?;
        if let Some(b) = bias {
            expect_len("bias", local.out_features(), b.len())?;
        }
        Ok(Self { local, bias: bias.map(FloatVec::to_f32), rank, world_size })
    }

    /// `y = sum over ranks of x_r · W_rᵀ, + bias`, for this rank's `x_r: [batch, in_r]` (the
    /// outputs of the column-parallel layer before it). Every rank gets the same `y`.
    pub fn forward(&self, comm: &dyn Comm, x: &[f32], batch: usize, par: Parallelism) -> Result<Vec<f32>> {
        if comm.world_size() != self.world_size || comm.rank() != self.rank {
            return Err(Error::ShardRank { rank: comm.rank(), world_size: comm.world_size() });
        }
        let mut y: Vec<f32> = self.local.forward(x, batch, par)?;
        comm.all_reduce_sum(&mut y)?;
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(b.len().max(1)) {
                for (v, &b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
        Ok(y)
    }

    /// The local layer (no bias).
    pub fn local(&self) -> &QuantLinear {
        &self.local
    }
}

/// The whole layer on every rank.
#[derive(Debug, Clone)]
pub struct ReplicatedLinear {
    layer: QuantLinear,
}

impl ReplicatedLinear {
    /// The whole `weight` and `bias`.
    pub fn new(weight: QuantWeight, bias: Option<FloatVec>) -> Result<Self> {
        Ok(Self { layer: QuantLinear::new(weight, bias)? })
    }

    /// `y = x · Wᵀ + bias`.
    pub fn forward(&self, x: &[f32], batch: usize, par: Parallelism) -> Result<Vec<f32>> {
        self.layer.forward(x, batch, par)
    }
}

/// Stack weights of one scheme along their outputs, still packed: the result dequantizes to
/// the parts' dequantizations one after another, bit for bit (see
/// [`ColumnParallelLinear::new_merged`] for what each scheme requires).
pub(super) fn concat_rows(mut weights: Vec<QuantWeight>) -> Result<QuantWeight> {
    let Some(first) = weights.first() else { return Err(Error::Fuse { what: "parts", part: 0 }) };
    if let Some(part) = weights.iter().position(|w| w.scheme() != first.scheme()) {
        return Err(Error::Fuse { what: "scheme", part });
    }
    if weights.len() == 1 {
        return Ok(weights.remove(0));
    }
    // The parts' inner layers (all of `$variant`, checked above).
    macro_rules! parts {
        ($variant:ident) => {
            weights
                .iter()
                .filter_map(|w| if let QuantWeight::$variant(x) = w { Some(x) } else { None })
                .collect::<Vec<_>>()
        };
    }
    Ok(match &weights[0] {
        QuantWeight::Dense { .. } => concat_dense(&weights)?,
        QuantWeight::Gptq(_) => QuantWeight::Gptq(crate::gptq::fuse_columns(&parts!(Gptq))?),
        QuantWeight::Hqq(_) => QuantWeight::Hqq(concat_hqq(&parts!(Hqq))?),
        QuantWeight::Awq(_) => QuantWeight::Awq(concat_awq(&parts!(Awq))?),
        QuantWeight::Fp8(_) => QuantWeight::Fp8(concat_fp8(&parts!(Fp8))?),
        QuantWeight::Int8(_) => QuantWeight::Int8(concat_int8(&parts!(Int8))?),
        QuantWeight::Int4(_) => QuantWeight::Int4(concat_int4(&parts!(Int4))?),
    })
}

/// [`Error::Fuse`] naming `what` and the first part whose `key` differs from part 0's.
fn agree<T, K: PartialEq>(parts: &[&T], what: &'static str, key: impl Fn(&T) -> K) -> Result<()> {
    let k0 = key(parts[0]);
    match parts.iter().skip(1).position(|p| key(p) != k0) {
        Some(i) => Err(Error::Fuse { what, part: i + 1 }),
        None => Ok(()),
    }
}

/// The dtype and the bit patterns of `v` (to compare scales exactly: `-0.0` is not `0.0`).
fn bits_of(v: &FloatVec) -> (crate::elem::DType, Vec<u32>) {
    let bits = match v {
        FloatVec::F32(x) => x.iter().map(|f| f.to_bits()).collect(),
        FloatVec::F16(x) => x.iter().map(|f| u32::from(f.to_bits())).collect(),
        FloatVec::Bf16(x) => x.iter().map(|f| u32::from(f.to_bits())).collect(),
    };
    (v.dtype(), bits)
}

/// `vs` one after another (one dtype, checked by the caller).
fn concat_floats<'a>(vs: impl Iterator<Item = &'a FloatVec>, what: &'static str) -> Result<FloatVec> {
    let parts: Vec<(&FloatVec, usize)> = vs.map(|v| (v, v.len())).collect();
    FloatVec::concat_columns(&parts, 1).ok_or(Error::Fuse { what, part: 0 })
}

/// The parts' own biases one after another: all or none, in one dtype.
fn concat_bias<T>(parts: &[&T], bias: impl Fn(&T) -> Option<&FloatVec>) -> Result<Option<FloatVec>> {
    agree(parts, "bias", |p| bias(p).map(FloatVec::dtype))?;
    if bias(parts[0]).is_none() {
        return Ok(None);
    }
    concat_floats(parts.iter().filter_map(|p| bias(p)), "bias").map(Some)
}

/// Dense rows one after another, in the parts' dtype (in `f32` when they differ).
fn concat_dense(parts: &[QuantWeight]) -> Result<QuantWeight> {
    let (mut rows, mut cols0, mut ws) = (0, None, Vec::with_capacity(parts.len()));
    for (part, p) in parts.iter().enumerate() {
        if let QuantWeight::Dense { rows: r, cols, w } = p {
            if *cols0.get_or_insert(*cols) != *cols {
                return Err(Error::Fuse { what: "inputs", part });
            }
            rows += r;
            ws.push(w);
        }
    }
    let w = if ws.iter().all(|w| w.dtype() == ws[0].dtype()) {
        concat_floats(ws.into_iter(), "dense part")?
    } else {
        FloatVec::F32(ws.iter().flat_map(|w| w.to_f32()).collect())
    };
    Ok(QuantWeight::Dense { rows, cols: cols0.unwrap_or(0), w })
}

/// HQQ parts: codes unpacked, concatenated in the weight's flat order (the code matrix's
/// row-major order, whatever the axis) and repacked at the same width. Axis 1 (a group is a
/// run of `g` weights): the groups follow each other, so scales and zeros concatenate. Axis 0
/// (group `k` is flat weights `k, k + M, k + 2M, ...` of a `[g, M]` code matrix): every group
/// of a stack spans every part, so the parts must share `M` and their scales and zeros (as
/// shards of one weight do); the stack's code rows are the parts' and its group size their
/// sum. Parts quantized separately along axis 0 cannot be stacked without requantizing.
fn concat_hqq(parts: &[&HqqWeight]) -> Result<HqqWeight> {
    for p in parts {
        p.validate()?;
    }
    agree(parts, "inputs", |h| h.layout.cols())?;
    agree(parts, "bits", |h| h.packed.bits)?;
    agree(parts, "hqq axis", |h| h.layout.axis())?;
    agree(parts, "scale dtype", |h| h.scales.dtype())?;
    agree(parts, "zero dtype", |h| h.zeros.dtype())?;
    let (first, rows) = (parts[0], parts.iter().map(|h| h.layout.rows()).sum());
    let (layout, scales, zeros) = match first.layout.axis() {
        Axis::One => {
            agree(parts, "group size", |h| h.layout.group_size())?;
            (
                HqqLayout::new(rows, first.layout.cols(), first.layout.group_size(), Axis::One)?,
                concat_floats(parts.iter().map(|h| &h.scales), "scales")?,
                concat_floats(parts.iter().map(|h| &h.zeros), "zeros")?,
            )
        }
        Axis::Zero => {
            agree(parts, "hqq axis-0 code columns", |h| h.layout.code_shape().1)?;
            agree(parts, "hqq axis-0 scales and zeros", |h| (bits_of(&h.scales), bits_of(&h.zeros)))?;
            let g = parts.iter().map(|h| h.layout.group_size()).sum();
            (
                HqqLayout::new(rows, first.layout.cols(), g, Axis::Zero)?,
                first.scales.clone(),
                first.zeros.clone(),
            )
        }
    };
    let mut codes = Vec::with_capacity(layout.numel());
    for p in parts {
        codes.extend(crate::hqq::unpack_hqq(&p.packed)?);
    }
    let (cr, cc) = layout.code_shape();
    let packed = crate::hqq::pack_hqq(&codes, cr, cc, first.packed.bits.get())?;
    Ok(HqqWeight { layout, packed, scales, zeros })
}

/// AWQ parts (`[K, N_i]` storage): word columns of `qweight` and `qzeros` and scale columns
/// side by side, row by row (each `N_i` is a multiple of 8, so words never straddle parts).
fn concat_awq(parts: &[&AwqLayer]) -> Result<AwqLayer> {
    for a in parts {
        let l = &a.layout;
        crate::with_float_vec!(&a.scales, s => crate::awq::check(l, &a.qweight, &a.qzeros, s, l.k() * l.n()))?;
    }
    agree(parts, "K", |a| a.layout.k())?;
    agree(parts, "group size", |a| a.layout.group_size())?;
    agree(parts, "scale dtype", |a| a.scales.dtype())?;
    let l0 = parts[0].layout;
    let layout = AwqLayout::new(l0.k(), parts.iter().map(|a| a.layout.n()).sum(), l0.group_size())?;
    let words = |w: fn(&AwqLayer) -> &[i32], rows: usize, what| {
        let cols: Vec<(&[i32], usize)> = parts.iter().map(|a| (w(a), a.layout.packed_cols())).collect();
        crate::par::concat_columns(&cols, rows).ok_or(Error::Fuse { what, part: 0 })
    };
    let scales: Vec<(&FloatVec, usize)> = parts.iter().map(|a| (&a.scales, a.layout.n())).collect();
    Ok(AwqLayer {
        layout,
        qweight: words(|a| &a.qweight, l0.k(), "qweight")?,
        qzeros: words(|a| &a.qzeros, l0.groups(), "qzeros")?,
        scales: FloatVec::concat_columns(&scales, l0.groups())
            .ok_or(Error::Fuse { what: "scales", part: 0 })?,
        bias: concat_bias(parts, |a| a.bias.as_ref())?,
    })
}

/// One-expert FP8 parts: code rows one after another. Per-tensor parts (block = shape) keep
/// one scale, so their scales must be equal bit for bit; block-scaled parts share the block
/// size and their scale-block rows follow each other, so every part but the last must end on
/// a block row ([`Error::ShardBoundary`] at the stack's row where it does not).
fn concat_fp8(parts: &[&Fp8Layer]) -> Result<Fp8Layer> {
    for f in parts {
        if f.experts != 1 {
            return Err(Error::StackedExperts { experts: f.experts });
        }
        let l = &f.layout;
        crate::with_float_vec!(&f.scales, s => crate::fp8::check(l, f.codes.len(), s, l.rows() * l.cols()))?;
    }
    agree(parts, "inputs", |f| f.layout.cols())?;
    agree(parts, "fp8 format", |f| f.format)?;
    agree(parts, "scale dtype", |f| f.scales.dtype())?;
    let (first, rows) = (parts[0], parts.iter().map(|f| f.layout.rows()).sum());
    let cols = first.layout.cols();
    let (layout, scales) =
        if parts.iter().all(|f| f.layout.block_size() == (f.layout.rows().max(1), cols.max(1))) {
            agree(parts, "fp8 per-tensor scale", |f| bits_of(&f.scales))?;
            (Fp8Layout::per_tensor(rows, cols)?, first.scales.clone())
        } else {
            agree(parts, "fp8 scale block size", |f| f.layout.block_size())?;
            let (br, bc) = first.layout.block_size();
            let mut end = 0;
            for f in &parts[..parts.len() - 1] {
                end += f.layout.rows();
                super::shard::on(end, br, "fp8 scale block")?;
            }
            (Fp8Layout::block(rows, cols, br, bc)?, concat_floats(parts.iter().map(|f| &f.scales), "scales")?)
        };
    Ok(Fp8Layer {
        layout,
        experts: 1,
        format: first.format,
        codes: parts.iter().flat_map(|f| f.codes.iter().copied()).collect(),
        scales,
        bias: concat_bias(parts, |f| f.bias.as_ref())?,
    })
}

/// int8 parts: code rows one after another. Per-tensor parts with one scale (bit for bit)
/// stay per-tensor; otherwise the stack is per-channel, each row with its part's scale
/// (`q * scale` either way, so nothing changes).
fn concat_int8(parts: &[&Int8Tensor]) -> Result<Int8Tensor> {
    for t in parts {
        t.check(t.q.len())?;
    }
    agree(parts, "inputs", |t| t.cols)?;
    let per_tensor = parts.iter().all(|t| t.granularity == Granularity::PerTensor)
        && agree(parts, "scale", |t| t.scales[0].to_bits()).is_ok();
    let scales = if per_tensor {
        parts[0].scales.clone()
    } else {
        parts
            .iter()
            .flat_map(|t| match t.granularity {
                Granularity::PerTensor => vec![t.scales[0]; t.rows],
                Granularity::PerChannel => t.scales.clone(),
            })
            .collect()
    };
    Ok(Int8Tensor {
        rows: parts.iter().map(|t| t.rows).sum(),
        cols: parts[0].cols,
        granularity: if per_tensor { Granularity::PerTensor } else { Granularity::PerChannel },
        q: parts.iter().flat_map(|t| t.q.iter().copied()).collect(),
        scales,
    })
}

/// int4 parts: packed bytes, scales and zeros one after another. `Int4Tensor::check` holds
/// every part to rows of whole groups of an even size, so each part has an even number of
/// codes and its bytes follow the previous part's without shifting a nibble.
fn concat_int4(parts: &[&Int4Tensor]) -> Result<Int4Tensor> {
    for t in parts {
        t.check(t.rows.saturating_mul(t.cols))?;
    }
    agree(parts, "inputs", |t| t.cols)?;
    agree(parts, "group size", |t| t.group)?;
    Ok(Int4Tensor {
        rows: parts.iter().map(|t| t.rows).sum(),
        cols: parts[0].cols,
        group: parts[0].group,
        packed: parts.iter().flat_map(|t| t.packed.iter().copied()).collect(),
        scales: parts.iter().flat_map(|t| t.scales.iter().copied()).collect(),
        zeros: parts.iter().flat_map(|t| t.zeros.iter().copied()).collect(),
    })
}
