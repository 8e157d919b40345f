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

use super::{Comm, LayerSource, LoadOptions, Shard};
use crate::elem::FloatVec;
use crate::error::{Error, KernelError, Result, TpError, expect_len};
use crate::layer::QuantWeight;
use crate::matmul::QuantLinear;
use crate::par::Parallelism;

/// `shard` (along the outputs) of a bias.
pub(crate) fn bias_shard(bias: Option<&FloatVec>, shard: &Shard) -> Result<Option<FloatVec>> {
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
    /// [`QuantWeight::shard`] supports) and of `bias`.
    pub fn new(
        weight: &QuantWeight,
        bias: Option<&FloatVec>,
        rank: usize,
        world_size: usize,
    ) -> Result<Self> {
        let shard = Shard::Simple { dim: 0, rank, world_size };
        let local = QuantLinear::new(weight.shard(&shard)?, bias_shard(bias, &shard)?)?;
        Ok(Self { local, rank, world_size })
    }

    /// Rank `rank` of `world_size`'s share of the layer `prefix` of `checkpoint` (a quantized
    /// checkpoint or an unquantized one, see [`LayerSource`]), reading only that share's bytes
    /// where the format allows; the layer's bias is sliced with its outputs. `Ok(None)` when
    /// there is no layer `prefix`. Equal to [`ColumnParallelLinear::new`] on the whole layer,
    /// bit for bit.
    pub fn load(
        checkpoint: &impl LayerSource,
        prefix: &str,
        rank: usize,
        world_size: usize,
        opts: &LoadOptions<'_>,
    ) -> Result<Option<Self>> {
        Self::load_with_shard(
            checkpoint,
            prefix,
            Shard::Simple { dim: 0, rank, world_size },
            rank,
            world_size,
            opts,
        )
    }

    /// [`ColumnParallelLinear::load`] with a custom cut of the outputs (`shard.dim()` must be 0),
    /// e.g. [`super::kv_head_shard`] for a key or value projection, held by rank `rank` of
    /// `world_size`.
    pub fn load_with_shard(
        checkpoint: &impl LayerSource,
        prefix: &str,
        shard: Shard,
        rank: usize,
        world_size: usize,
        opts: &LoadOptions<'_>,
    ) -> Result<Option<Self>> {
        if shard.dim() != 0 {
            return Err(Error::Tp(TpError::ShardDim(shard.dim())));
        }
        if !checkpoint.has_layer(prefix) {
            return Ok(None);
        }
        let (w, bias) = opts.load(checkpoint, prefix, Some(&shard))?;
        Ok(Some(Self { local: opts.linear(w, bias)?, rank, world_size }))
    }

    /// A MatFormer slice (mistral.rs's `new_matformer`, Gemma 3n's per-layer FFN widths): the
    /// first `out_dim` outputs of layer `prefix` (`[:out_dim]`, e.g. a `gate_proj` cut to a
    /// smaller intermediate size), split evenly over `world_size` ranks, rank `rank`'s part
    /// read as one [`Shard::Offset`]. `out_dim` past the stored outputs is
    /// [`TpError::ShardRange`]; a packed layer whose storage cannot be cut there is refused as
    /// [`QuantWeight::shard`] refuses it ([`TpError::ShardBoundary`]). `Ok(None)` when there is
    /// no layer `prefix`.
    pub fn load_matformer(
        checkpoint: &impl LayerSource,
        prefix: &str,
        out_dim: usize,
        rank: usize,
        world_size: usize,
        opts: &LoadOptions<'_>,
    ) -> Result<Option<Self>> {
        let Some((out, _)) = checkpoint.layer_shape(prefix) else { return Ok(None) };
        let shard = matformer_shard(0, out_dim, out, rank, world_size)?;
        Self::load_with_shard(checkpoint, prefix, shard, rank, world_size, opts)
    }

    /// A fused layer stored as one (`qkv_proj`, `gate_up_proj`) whose outputs are the parts
    /// `sizes` one after another: each part is cut for this rank (`shards[i]`, else an even
    /// split) and the rank's pieces stacked, as [`ColumnParallelLinear::new_merged`] does with
    /// separate parts; only the pieces' bytes are read where the format allows. The sizes must
    /// add up to the layer's outputs ([`KernelError::LengthMismatch`]); `Ok(None)` when there
    /// is no layer `prefix`.
    pub fn load_merged(
        checkpoint: &impl LayerSource,
        prefix: &str,
        sizes: &[usize],
        shards: Option<&[Shard]>,
        rank: usize,
        world_size: usize,
        opts: &LoadOptions<'_>,
    ) -> Result<Option<Self>> {
        let Some((out, _)) = checkpoint.layer_shape(prefix) else { return Ok(None) };
        let total = sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s));
        expect_len("sum of the fused parts' sizes", out, total.unwrap_or(usize::MAX))?;
        let (mut pieces, mut offset) = (Vec::with_capacity(sizes.len()), 0);
        for (i, &size) in sizes.iter().enumerate() {
            let shard =
                shards.and_then(|s| s.get(i).copied()).unwrap_or(Shard::Simple { dim: 0, rank, world_size });
            if shard.dim() != 0 {
                return Err(Error::Tp(TpError::ShardDim(shard.dim())));
            }
            let r = shard.range(size)?;
            pieces.push(Shard::Offset { dim: 0, offset: offset + r.start, len: r.len() });
            offset += size;
        }
        let (w, bias) = load_pieces(checkpoint, prefix, &pieces, opts)?;
        Ok(Some(Self { local: opts.linear(w, bias)?, rank, world_size }))
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
    /// A difference is [`KernelError::Fuse`] naming it and the first part that differs (`"scheme"`,
    /// `"inputs"` (`"K"` for GPTQ and AWQ), `"bits"`, `"group size"`, `"scale dtype"`,
    /// `"fp8 per-tensor scale"`, `"hqq axis-0 scales and zeros"`, ...); an FP8 part ending
    /// inside a scale block is [`TpError::ShardBoundary`] at that row of the stack. So HQQ
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
                return Err(Error::Tp(TpError::ShardDim(shard.dim())));
            }
            weights.push(w.shard(&shard)?);
            if let Some(b) = bias_shard(*b, &shard)? {
                biases.push(b);
            }
        }
        if !biases.is_empty() && biases.len() != parts.len() {
            return Err(Error::Kernel(KernelError::Fuse { what: "bias", part: biases.len() }));
        }
        let weight = QuantWeight::concat(weights)?;
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

    /// [`ColumnParallelLinear::forward`] into `y` (`[batch, out_r]`); allocates nothing once
    /// warm ([`QuantLinear::forward_into`]).
    pub fn forward_into(&self, x: &[f32], batch: usize, y: &mut [f32], par: Parallelism) -> Result<()> {
        self.local.forward_into(x, batch, y, par)
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
        let local = QuantLinear::new(weight.shard(&shard)?, None)?;
        if let Some(b) = bias {
            expect_len("bias", local.out_features(), b.len())?;
        }
        Ok(Self { local, bias: bias.map(FloatVec::to_f32), rank, world_size })
    }

    /// Rank `rank` of `world_size`'s share of the layer `prefix` of `checkpoint` along its
    /// inputs, reading only that share's bytes where the format allows; the bias is kept whole
    /// and added once after the sum. `Ok(None)` when there is no layer `prefix`. Equal to
    /// [`RowParallelLinear::new`] on the whole layer, bit for bit.
    pub fn load(
        checkpoint: &impl LayerSource,
        prefix: &str,
        rank: usize,
        world_size: usize,
        opts: &LoadOptions<'_>,
    ) -> Result<Option<Self>> {
        Self::load_with_shard(
            checkpoint,
            prefix,
            Shard::Simple { dim: 1, rank, world_size },
            rank,
            world_size,
            opts,
        )
    }

    /// A MatFormer slice of a row-parallel layer: its first `in_dim` inputs (`[:, :in_dim]`,
    /// e.g. a `down_proj` cut to a smaller intermediate size), split evenly over the ranks; the
    /// errors of [`ColumnParallelLinear::load_matformer`]. The bias is whole (the outputs are
    /// not cut).
    pub fn load_matformer(
        checkpoint: &impl LayerSource,
        prefix: &str,
        in_dim: usize,
        rank: usize,
        world_size: usize,
        opts: &LoadOptions<'_>,
    ) -> Result<Option<Self>> {
        let Some((_, inp)) = checkpoint.layer_shape(prefix) else { return Ok(None) };
        let shard = matformer_shard(1, in_dim, inp, rank, world_size)?;
        Self::load_with_shard(checkpoint, prefix, shard, rank, world_size, opts)
    }

    /// [`RowParallelLinear::load`] with a cut `shard` of the inputs.
    fn load_with_shard(
        checkpoint: &impl LayerSource,
        prefix: &str,
        shard: Shard,
        rank: usize,
        world_size: usize,
        opts: &LoadOptions<'_>,
    ) -> Result<Option<Self>> {
        if !checkpoint.has_layer(prefix) {
            return Ok(None);
        }
        let (w, bias) = opts.load(checkpoint, prefix, Some(&shard))?;
        let bias = bias.map(|b| b.to_f32());
        let local = opts.linear(w, None)?;
        if let Some(b) = &bias {
            expect_len("bias", local.out_features(), b.len())?;
        }
        Ok(Some(Self { local, bias, rank, world_size }))
    }

    /// `y = sum over ranks of x_r · W_rᵀ, + bias`, for this rank's `x_r: [batch, in_r]` (the
    /// outputs of the column-parallel layer before it). Every rank gets the same `y`.
    pub fn forward(&self, comm: &dyn Comm, x: &[f32], batch: usize, par: Parallelism) -> Result<Vec<f32>> {
        let n = batch.checked_mul(self.local.out_features()).ok_or(Error::Kernel(
            KernelError::ShapeOverflow { rows: batch, cols: self.local.out_features() },
        ))?;
        let mut y = vec![0f32; n];
        self.forward_into(comm, x, batch, &mut y, par)?;
        Ok(y)
    }

    /// [`RowParallelLinear::forward`] into `y` (`[batch, out]`), summed in place: allocates
    /// nothing once warm beyond what `comm`'s all-reduce allocates ([`super::SingleComm`]
    /// nothing; [`super::LocalComm`] exchanges copies of the buffer).
    pub fn forward_into(
        &self,
        comm: &dyn Comm,
        x: &[f32],
        batch: usize,
        y: &mut [f32],
        par: Parallelism,
    ) -> Result<()> {
        if comm.world_size() != self.world_size || comm.rank() != self.rank {
            return Err(Error::Tp(TpError::ShardRank { rank: comm.rank(), world_size: comm.world_size() }));
        }
        self.local.forward_into(x, batch, y, par)?;
        comm.all_reduce_sum(y)?;
        if let Some(b) = &self.bias {
            for row in y.chunks_exact_mut(b.len().max(1)) {
                for (v, &b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
        Ok(())
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

    /// The whole layer `prefix` of `checkpoint` and its bias; `Ok(None)` when there is no
    /// layer `prefix`.
    pub fn load(checkpoint: &impl LayerSource, prefix: &str, opts: &LoadOptions) -> Result<Option<Self>> {
        if !checkpoint.has_layer(prefix) {
            return Ok(None);
        }
        let (w, bias) = opts.load(checkpoint, prefix, None)?;
        Self::new(w, bias).map(Some)
    }

    /// Layer `prefix` with only the output blocks of the decoder layers MatFormer keeps
    /// (mistral.rs's `new_layers_matformer_indices`, Gemma 3n's `per_layer_model_projection`):
    /// its outputs are `orig_layers` equal blocks, one per decoder layer of the full model, and
    /// the result stacks blocks `kept_layers[0]`, `kept_layers[1]`, ... in that order (bias
    /// likewise), each block read alone. Outputs not a multiple of `orig_layers`, or an index
    /// past it, is [`TpError::MatformerLayers`]; a packed layer whose storage cannot be cut at a
    /// block is refused as [`QuantWeight::shard`] refuses it. `Ok(None)` when there is no layer
    /// `prefix`.
    ///
    /// ```
    /// use quant_kernels::io::{Checkpoint, Dtype, SafetensorsWriter};
    /// use quant_kernels::tp::ReplicatedLinear;
    /// # let dir = std::env::temp_dir().join(format!("qk-doc-layers-mf-{}", std::process::id()));
    /// # std::fs::create_dir_all(&dir)?;
    /// // 3 decoder layers x 2 outputs each, 1 input: rows 0..6.
    /// let w: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    /// let decl = [("proj.weight".to_string(), Dtype::F32, vec![6, 1])];
    /// let mut out = SafetensorsWriter::create(dir.join("model.safetensors"), &decl, &Default::default())?;
    /// out.write("proj.weight", &w)?;
    /// out.finish()?;
    /// let ckpt = Checkpoint::open(&dir)?;
    /// let l = ReplicatedLinear::load_layers_matformer(&ckpt, "proj", &[2, 0], 3, &Default::default())?.unwrap();
    /// assert_eq!(l.local().dequantize(quant_kernels::Parallelism::SERIAL)?, [4.0, 5.0, 0.0, 1.0]);
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn load_layers_matformer(
        checkpoint: &impl LayerSource,
        prefix: &str,
        kept_layers: &[usize],
        orig_layers: usize,
        opts: &LoadOptions<'_>,
    ) -> Result<Option<Self>> {
        let Some((out, _)) = checkpoint.layer_shape(prefix) else { return Ok(None) };
        let refuse = || Error::Tp(TpError::MatformerLayers { out, orig_layers, kept: kept_layers.to_vec() });
        if orig_layers == 0
            || !out.is_multiple_of(orig_layers)
            || kept_layers.iter().any(|&k| k >= orig_layers)
        {
            return Err(refuse());
        }
        let per = out / orig_layers;
        let pieces: Vec<Shard> =
            kept_layers.iter().map(|&k| Shard::Offset { dim: 0, offset: k * per, len: per }).collect();
        let (w, bias) = load_pieces(checkpoint, prefix, &pieces, opts)?;
        Self::new(w, bias).map(Some)
    }

    /// The layer.
    pub fn local(&self) -> &QuantLinear {
        &self.layer
    }

    /// `y = x · Wᵀ + bias`.
    pub fn forward(&self, x: &[f32], batch: usize, par: Parallelism) -> Result<Vec<f32>> {
        self.layer.forward(x, batch, par)
    }

    /// [`ReplicatedLinear::forward`] into `y`; allocates nothing once warm.
    pub fn forward_into(&self, x: &[f32], batch: usize, y: &mut [f32], par: Parallelism) -> Result<()> {
        self.layer.forward_into(x, batch, y, par)
    }
}

/// The output ranges `pieces` (each a [`Shard::Offset`] along dim 0) of layer `prefix`, each
/// read alone, stacked in order (still packed: [`QuantWeight::concat`]) with their biases, then
/// quantized at load as `opts` says.
fn load_pieces(
    checkpoint: &impl LayerSource,
    prefix: &str,
    pieces: &[Shard],
    opts: &LoadOptions<'_>,
) -> Result<(QuantWeight, Option<FloatVec>)> {
    let (mut weights, mut biases, mut method) = (Vec::with_capacity(pieces.len()), Vec::new(), None);
    for piece in pieces {
        let ((w, b), m) = opts.read(checkpoint, prefix, Some(piece))?;
        weights.push(w);
        biases.extend(b);
        method = method.or(m);
    }
    let bias = (!biases.is_empty()).then(|| FloatVec::F32(biases.iter().flat_map(|b| b.to_f32()).collect()));
    opts.quantize(method, (QuantWeight::concat(weights)?, bias))
}

/// Rank `rank` of `world_size`'s even part of the first `kept` of `len` indices along `dim`.
fn matformer_shard(dim: usize, kept: usize, len: usize, rank: usize, world_size: usize) -> Result<Shard> {
    if kept > len {
        return Err(Error::Tp(TpError::ShardRange { offset: 0, len: kept, dim_len: len }));
    }
    let r = Shard::Simple { dim, rank, world_size }.range(kept)?;
    Ok(Shard::Offset { dim, offset: r.start, len: r.len() })
}
