//! A Llama-family decoder (Llama, Mistral, Qwen2, and Mixtral's MoE blocks) for one
//! tensor-parallel rank, in `f32` activations, on quant-kernels' public API only: layers load by
//! name for the rank from any checkpoint the crate reads, multiply through the fused kernels,
//! and the row-parallel outputs add up over the ranks' [`Comm`].
//!
//! Numerics follow transformers: RMSNorm in `f32`, rotary embeddings in the half-split
//! `rotate_half` layout, causal softmax attention with grouped KV heads, SwiGLU, top-k routing
//! renormalized as Mixtral's.

use quant_kernels::dense::DenseWeight;
use quant_kernels::io::Checkpoint;
use quant_kernels::tp::{
    ColumnParallelLinear, Comm, LayerSource, LoadOptions, MoeDims, MoeExperts, ReplicatedLinear,
    RowParallelLinear, kv_head_shard, n_kv_groups, route_topk,
};
use quant_kernels::{FloatVec, Parallelism, QuantWeight};
use serde_json::Value;

/// What can go wrong: bad input (the command line, the config, the checkpoint), or the
/// library's error while running.
#[derive(Debug)]
pub enum ModelError {
    /// Something the user gave is not usable; the message says what.
    Input(String),
    /// An error from the library.
    Kernel(quant_kernels::Error),
}

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelError::Input(m) => f.write_str(m),
            ModelError::Kernel(e) => write!(f, "{e}"),
        }
    }
}

impl From<quant_kernels::Error> for ModelError {
    fn from(e: quant_kernels::Error) -> Self {
        ModelError::Kernel(e)
    }
}

pub type Result<T> = std::result::Result<T, ModelError>;

fn input<T>(msg: impl Into<String>) -> Result<T> {
    Err(ModelError::Input(msg.into()))
}

/// The decoder families this runtime knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `LlamaForCausalLM`.
    Llama,
    /// `MistralForCausalLM`.
    Mistral,
    /// `Qwen2ForCausalLM` (q/k/v biases come with the checkpoint).
    Qwen2,
    /// `MixtralForCausalLM`: every MLP a sparse MoE block.
    Mixtral,
}

/// Mixtral's sparse MoE block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoeConfig {
    /// `num_local_experts`.
    pub experts: usize,
    /// `num_experts_per_tok`.
    pub top_k: usize,
}

/// The sizes and constants of a model, from its `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub vocab: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub intermediate: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    pub tie_embeddings: bool,
    /// Keys further back than this are not attended to (Mistral's `sliding_window`).
    pub sliding_window: Option<usize>,
    pub moe: Option<MoeConfig>,
}

impl Config {
    /// Parse a Hugging Face `config.json`. An architecture not listed in [`Arch`], a required
    /// field missing or not a positive number, or a rotary scaling this runtime does not
    /// implement is [`ModelError::Input`].
    pub fn from_json(c: &Value) -> Result<Self> {
        let name = c
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .or_else(|| c.get("model_type").and_then(Value::as_str))
            .unwrap_or("(none given)");
        let arch = match name {
            "LlamaForCausalLM" | "llama" => Arch::Llama,
            "MistralForCausalLM" | "mistral" => Arch::Mistral,
            "Qwen2ForCausalLM" | "qwen2" => Arch::Qwen2,
            "MixtralForCausalLM" | "mixtral" => Arch::Mixtral,
            other => {
                return input(format!(
                    "unknown architecture `{other}` (known: LlamaForCausalLM, MistralForCausalLM, \
                     Qwen2ForCausalLM, MixtralForCausalLM)"
                ));
            }
        };
        let size = |field: &str| -> Result<Option<usize>> {
            match c.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_u64().and_then(|v| usize::try_from(v).ok()) {
                    Some(n) if n > 0 => Ok(Some(n)),
                    _ => input(format!("config.json: `{field}` is {v}, not a positive integer")),
                },
            }
        };
        let need = |field: &str| -> Result<usize> {
            size(field)?.map_or_else(|| input(format!("config.json: `{field}` is missing")), Ok)
        };
        let hidden = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        let kv_heads = size("num_key_value_heads")?.unwrap_or(heads);
        let head_dim = match size("head_dim")? {
            Some(d) => d,
            None if hidden.is_multiple_of(heads) => hidden / heads,
            None => {
                return input(format!("config.json: no `head_dim` and {heads} heads do not divide {hidden}"));
            }
        };
        if !head_dim.is_multiple_of(2) || !heads.is_multiple_of(kv_heads) {
            return input(format!(
                "config.json: head_dim {head_dim} must be even and {kv_heads} KV heads divide {heads}"
            ));
        }
        // transformers 5 writes `rope_parameters`, earlier versions `rope_theta` (+ `rope_scaling`).
        let rope = c.get("rope_parameters").filter(|v| !v.is_null());
        let theta = rope.and_then(|r| r.get("rope_theta")).or_else(|| c.get("rope_theta"));
        let rope_theta = match theta.and_then(Value::as_f64) {
            Some(t) if t > 0.0 => t as f32,
            _ => return input("config.json: `rope_theta` (or `rope_parameters.rope_theta`) is missing"),
        };
        let rope_type = rope
            .and_then(|r| r.get("rope_type"))
            .or_else(|| c.get("rope_scaling").filter(|v| !v.is_null()).and_then(|s| s.get("rope_type")))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if rope_type != "default" {
            return input(format!(
                "config.json: rope_type `{rope_type}` is not implemented (only `default`)"
            ));
        }
        let eps = c.get("rms_norm_eps").and_then(Value::as_f64);
        let Some(rms_eps) = eps.filter(|e| *e > 0.0) else {
            return input("config.json: `rms_norm_eps` is missing");
        };
        if c.get("use_sliding_window").and_then(Value::as_bool) == Some(true) {
            return input("config.json: `use_sliding_window` (Qwen2's per-layer windows) is not implemented");
        }
        let sliding_window = match arch {
            Arch::Mistral | Arch::Mixtral => size("sliding_window")?,
            _ => None,
        };
        let moe = match arch {
            Arch::Mixtral => {
                let (experts, top_k) = (need("num_local_experts")?, need("num_experts_per_tok")?);
                if top_k > experts {
                    return input(format!("config.json: {top_k} experts per token of {experts}"));
                }
                Some(MoeConfig { experts, top_k })
            }
            _ => None,
        };
        Ok(Config {
            arch,
            vocab: need("vocab_size")?,
            hidden,
            layers: need("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            intermediate: need("intermediate_size")?,
            rms_eps: rms_eps as f32,
            rope_theta,
            tie_embeddings: c.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(false),
            sliding_window,
            moe,
        })
    }
}

// One per decoder layer: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Mlp {
    Dense { gate: ColumnParallelLinear, up: ColumnParallelLinear, down: RowParallelLinear },
    Moe { router: ReplicatedLinear, experts: MoeExperts, top_k: usize },
}

struct Layer {
    ln_attn: Vec<f32>,
    ln_mlp: Vec<f32>,
    q: ColumnParallelLinear,
    k: ColumnParallelLinear,
    v: ColumnParallelLinear,
    o: RowParallelLinear,
    mlp: Mlp,
    /// This rank's keys and values so far, `[positions, local_kv * head_dim]` each.
    k_cache: Vec<f32>,
    v_cache: Vec<f32>,
}

/// One rank's part of the model, with its KV cache.
pub struct Model {
    cfg: Config,
    embed: Vec<f32>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    lm_head: ReplicatedLinear,
    local_heads: usize,
    local_kv: usize,
    /// Query heads per local KV head.
    groups: usize,
    /// Positions in the cache.
    pos: usize,
    par: Parallelism,
}

fn floats(ck: &Checkpoint, name: &str, len: usize) -> Result<Vec<f32>> {
    if ck.info(name).is_none() {
        return input(format!("checkpoint: tensor `{name}` is missing"));
    }
    let v = ck.read_floats(name)?.to_f32();
    if v.len() != len {
        return input(format!("checkpoint: `{name}` has {} values, the config says {len}", v.len()));
    }
    Ok(v)
}

fn need<T>(layer: Option<T>, name: &str) -> Result<T> {
    layer.map_or_else(|| input(format!("checkpoint: layer `{name}` is missing")), Ok)
}

impl Model {
    /// Rank `rank` of `world`'s part of the model in `src`: q/k/v and gate/up split by their
    /// outputs (k/v by whole KV heads, replicated when ranks outnumber them), o and down by
    /// their inputs, MoE experts as [`MoeExperts::load`] splits them, embeddings, norms, the
    /// router and `lm_head` whole. `opts` applies to every projection and expert (load-time
    /// quantization, LoRA); the router and `lm_head` load as stored, unquantized.
    pub fn load<S: LayerSource>(
        src: &S,
        cfg: &Config,
        rank: usize,
        world: usize,
        opts: &LoadOptions<'_>,
    ) -> Result<Self> {
        let Some(ck) = src.checkpoint() else {
            return input("the model has no safetensors checkpoint for its embeddings and norms");
        };
        let groups = n_kv_groups(cfg.kv_heads, cfg.heads, world)
            .map_err(|e| ModelError::Input(format!("world size {world}: {e}")))?;
        let local_heads = cfg.heads / world;
        let local_kv = local_heads / groups;
        let plain = LoadOptions { isq: None, isq_config: None, ..*opts };
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("model.layers.{i}");
            let name = |s: &str| format!("{p}.{s}");
            let column = |s: &str| -> Result<ColumnParallelLinear> {
                need(ColumnParallelLinear::load(src, &name(s), rank, world, opts)?, &name(s))
            };
            let row = |s: &str| -> Result<RowParallelLinear> {
                need(RowParallelLinear::load(src, &name(s), rank, world, opts)?, &name(s))
            };
            let kv = |s: &str| -> Result<ColumnParallelLinear> {
                let shard = kv_head_shard(cfg.kv_heads, cfg.head_dim, rank, world)?;
                need(
                    ColumnParallelLinear::load_with_shard(src, &name(s), shard, rank, world, opts)?,
                    &name(s),
                )
            };
            let mlp = match cfg.moe {
                None => Mlp::Dense {
                    gate: column("mlp.gate_proj")?,
                    up: column("mlp.up_proj")?,
                    down: row("mlp.down_proj")?,
                },
                Some(m) => {
                    let rname = name("block_sparse_moe.gate");
                    let router = need(ReplicatedLinear::load(src, &rname, &plain)?, &rname)?;
                    let dims =
                        MoeDims { experts: m.experts, hidden: cfg.hidden, intermediate: cfg.intermediate };
                    let e = name("block_sparse_moe.experts");
                    let experts = need(MoeExperts::load(src, &e, dims, rank, world, opts)?, &e)?;
                    Mlp::Moe { router, experts, top_k: m.top_k }
                }
            };
            layers.push(Layer {
                ln_attn: floats(ck, &name("input_layernorm.weight"), cfg.hidden)?,
                ln_mlp: floats(ck, &name("post_attention_layernorm.weight"), cfg.hidden)?,
                q: column("self_attn.q_proj")?,
                k: kv("self_attn.k_proj")?,
                v: kv("self_attn.v_proj")?,
                o: row("self_attn.o_proj")?,
                mlp,
                k_cache: Vec::new(),
                v_cache: Vec::new(),
            });
        }
        let embed = floats(ck, "model.embed_tokens.weight", cfg.vocab * cfg.hidden)?;
        let lm_head = match ReplicatedLinear::load(src, "lm_head", &plain)? {
            Some(l) => l,
            None if cfg.tie_embeddings => {
                let w = DenseWeight { rows: cfg.vocab, cols: cfg.hidden, w: FloatVec::F32(embed.clone()) };
                ReplicatedLinear::new(QuantWeight::Dense(w), None)?
            }
            None => return input("checkpoint: layer `lm_head` is missing (and embeddings are not tied)"),
        };
        let model = Model {
            cfg: cfg.clone(),
            norm: floats(ck, "model.norm.weight", cfg.hidden)?,
            embed,
            layers,
            lm_head,
            local_heads,
            local_kv,
            groups,
            pos: 0,
            par: opts.par,
        };
        model.check_shapes()?;
        Ok(model)
    }

    /// Every loaded layer has the sizes the config gives (a checkpoint that disagrees with
    /// its config is bad input, not a wrong answer).
    fn check_shapes(&self) -> Result<()> {
        let c = &self.cfg;
        let (lq, lkv) = (self.local_heads * c.head_dim, self.local_kv * c.head_dim);
        let check = |what: &str, got: (usize, usize), want: (usize, usize)| -> Result<()> {
            if got == want {
                Ok(())
            } else {
                input(format!(
                    "checkpoint: {what} is [{}, {}] on this rank, the config says [{}, {}]",
                    got.0, got.1, want.0, want.1
                ))
            }
        };
        let shape = |l: &quant_kernels::QuantLinear| (l.out_features(), l.in_features());
        for (i, l) in self.layers.iter().enumerate() {
            check(&format!("layer {i} q_proj"), shape(l.q.local()), (lq, c.hidden))?;
            check(&format!("layer {i} k_proj"), shape(l.k.local()), (lkv, c.hidden))?;
            check(&format!("layer {i} v_proj"), shape(l.v.local()), (lkv, c.hidden))?;
            check(&format!("layer {i} o_proj"), shape(l.o.local()), (c.hidden, lq))?;
            if let Mlp::Moe { router, .. } = &l.mlp {
                check(
                    &format!("layer {i} router"),
                    shape(router.local()),
                    (c.moe.map_or(0, |m| m.experts), c.hidden),
                )?;
            }
            if let Mlp::Dense { gate, down, .. } = &l.mlp {
                let li = gate.local().out_features();
                check(&format!("layer {i} down_proj"), shape(down.local()), (c.hidden, li))?;
            }
        }
        check("lm_head", shape(self.lm_head.local()), (c.vocab, c.hidden))
    }

    /// Bytes of weights a decode step reads on this rank: every projection, the router and
    /// `lm_head`, and `top_k` of the experts of each MoE layer (their average size).
    pub fn decode_weight_bytes(&self) -> usize {
        let mut total = self.lm_head.local().weight_bytes();
        for l in &self.layers {
            total += [l.q.local(), l.k.local(), l.v.local(), l.o.local()]
                .iter()
                .map(|x| x.weight_bytes())
                .sum::<usize>();
            total += match &l.mlp {
                Mlp::Dense { gate, up, down } => {
                    gate.local().weight_bytes() + up.local().weight_bytes() + down.local().weight_bytes()
                }
                Mlp::Moe { router, experts, top_k } => {
                    let n = experts.dims().experts;
                    let all: usize = (0..n)
                        .filter_map(|e| experts.expert(e))
                        .map(|(g, u, d)| g.weight_bytes() + u.weight_bytes() + d.weight_bytes())
                        .sum();
                    router.local().weight_bytes() + all * top_k / n.max(1)
                }
            };
        }
        total
    }

    /// Run `tokens` at the next positions (from 0 after loading), extending the KV cache;
    /// the logits `[tokens, vocab]`, the same on every rank. Every rank must call it with the
    /// same tokens. A token past the vocabulary is [`ModelError::Input`].
    pub fn forward(&mut self, comm: &dyn Comm, tokens: &[u32]) -> Result<Vec<f32>> {
        let c = self.cfg.clone();
        let (t, h) = (tokens.len(), c.hidden);
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= c.vocab) {
            return input(format!("token id {bad} is past the vocabulary ({} ids)", c.vocab));
        }
        let mut x = Vec::with_capacity(t * h);
        for &id in tokens {
            x.extend_from_slice(&self.embed[id as usize * h..(id as usize + 1) * h]);
        }
        let (par, pos0) = (self.par, self.pos);
        let (lh, lkv, hd, groups) = (self.local_heads, self.local_kv, c.head_dim, self.groups);
        let rope = Rope::new(c.rope_theta, hd, pos0, t);
        for l in &mut self.layers {
            let hn = rms_norm(&x, &l.ln_attn, c.rms_eps);
            let mut q = l.q.forward(&hn, t, par)?;
            let mut k = l.k.forward(&hn, t, par)?;
            let v = l.v.forward(&hn, t, par)?;
            rope.apply(&mut q, lh);
            rope.apply(&mut k, lkv);
            l.k_cache.extend_from_slice(&k);
            l.v_cache.extend_from_slice(&v);
            let attn = attention(
                &q,
                &l.k_cache,
                &l.v_cache,
                AttnShape { lh, lkv, hd, groups, pos0, window: c.sliding_window },
            );
            let o = l.o.forward(comm, &attn, t, par)?;
            add(&mut x, &o);
            let hn = rms_norm(&x, &l.ln_mlp, c.rms_eps);
            let m = match &l.mlp {
                Mlp::Dense { gate, up, down } => {
                    let mut g = gate.forward(&hn, t, par)?;
                    let u = up.forward(&hn, t, par)?;
                    for (a, &b) in g.iter_mut().zip(&u) {
                        *a = silu(*a) * b;
                    }
                    down.forward(comm, &g, t, par)?
                }
                Mlp::Moe { router, experts, top_k } => {
                    let n = experts.dims().experts;
                    let logits = router.forward(&hn, t, par)?;
                    let (ids, weights) = route_topk(&logits, t, n, *top_k, true)?;
                    experts.forward_reduced(comm, &hn, t, &ids, &weights, *top_k, par)?
                }
            };
            add(&mut x, &m);
        }
        self.pos += t;
        let xn = rms_norm(&x, &self.norm, c.rms_eps);
        Ok(self.lm_head.forward(&xn, t, par)?)
    }
}

fn add(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// transformers' RMSNorm: `w * (x / sqrt(mean(x^2) + eps))` per row, in `f32`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    let mut out = vec![0f32; x.len()];
    for (o, r) in out.chunks_exact_mut(h).zip(x.chunks_exact(h)) {
        let ms = r.iter().map(|v| v * v).sum::<f32>() / h as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(r).zip(w) {
            *o = g * (v * inv);
        }
    }
    out
}

/// Rotary tables for `t` positions from `pos0`: transformers' default rope
/// (`inv_freq = 1 / theta^(2i/d)`, angle `pos * inv_freq`, both in `f32`).
struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    half: usize,
}

impl Rope {
    fn new(theta: f32, head_dim: usize, pos0: usize, t: usize) -> Self {
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect();
        let (mut cos, mut sin) = (Vec::with_capacity(t * half), Vec::with_capacity(t * half));
        for p in pos0..pos0 + t {
            for &f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        Rope { cos, sin, half }
    }

    /// Rotate every head of `x` (`[t, heads * head_dim]`): `x * cos + rotate_half(x) * sin`.
    fn apply(&self, x: &mut [f32], heads: usize) {
        let (half, hd) = (self.half, 2 * self.half);
        for (i, row) in x.chunks_exact_mut(heads * hd).enumerate() {
            let (cos, sin) = (&self.cos[i * half..(i + 1) * half], &self.sin[i * half..(i + 1) * half]);
            for head in row.chunks_exact_mut(hd) {
                let (a, b) = head.split_at_mut(half);
                for j in 0..half {
                    let (x1, x2) = (a[j], b[j]);
                    a[j] = x1 * cos[j] - x2 * sin[j];
                    b[j] = x2 * cos[j] + x1 * sin[j];
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
struct AttnShape {
    lh: usize,
    lkv: usize,
    hd: usize,
    groups: usize,
    pos0: usize,
    window: Option<usize>,
}

/// Causal attention of `q` (`[t, lh * hd]`, positions `pos0..`) over the cached keys and
/// values (`[pos0 + t, lkv * hd]`): query head `j` reads KV head `j / groups`; scores scaled by
/// `1 / sqrt(hd)`, softmax in `f32`.
fn attention(q: &[f32], k: &[f32], v: &[f32], s: AttnShape) -> Vec<f32> {
    let AttnShape { lh, lkv, hd, groups, pos0, window } = s;
    let t = q.len() / (lh * hd);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0f32; q.len()];
    let mut scores = Vec::new();
    for i in 0..t {
        let p = pos0 + i;
        let first = window.map_or(0, |w| (p + 1).saturating_sub(w));
        for j in 0..lh {
            let kvh = j / groups;
            let qv = &q[(i * lh + j) * hd..(i * lh + j + 1) * hd];
            scores.clear();
            for s in first..=p {
                let kv = &k[(s * lkv + kvh) * hd..(s * lkv + kvh + 1) * hd];
                scores.push(qv.iter().zip(kv).map(|(a, b)| a * b).sum::<f32>() * scale);
            }
            let max = scores.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            let mut sum = 0f32;
            for x in scores.iter_mut() {
                *x = (*x - max).exp();
                sum += *x;
            }
            let o = &mut out[(i * lh + j) * hd..(i * lh + j + 1) * hd];
            for (s, &w) in (first..=p).zip(&scores) {
                let vv = &v[(s * lkv + kvh) * hd..(s * lkv + kvh + 1) * hd];
                for (a, &b) in o.iter_mut().zip(vv) {
                    *a += w / sum * b;
                }
            }
        }
    }
    out
}

/// The greedy choice: the first id of the largest logit.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best
}

/// Prefill then `new` greedy steps, as the command line runs them.
pub struct Generation {
    /// `[prompt, vocab]`.
    pub prefill_logits: Vec<f32>,
    /// `[new, vocab]`: row 0 the last prompt position, row `i` after feeding greedy id `i - 1`.
    pub step_logits: Vec<f32>,
    /// `[new]`.
    pub greedy_ids: Vec<usize>,
    /// Seconds of the prefill forward.
    pub prefill_s: f64,
    /// Seconds of the `new - 1` decode forwards.
    pub decode_s: f64,
}

/// Run `tokens` as a prompt from position 0, then `new` greedy steps (`new >= 1`).
pub fn generate(model: &mut Model, comm: &dyn Comm, tokens: &[u32], new: usize) -> Result<Generation> {
    if tokens.is_empty() || new == 0 {
        return input("the prompt and --new must not be empty");
    }
    let vocab = model.cfg.vocab;
    let start = std::time::Instant::now();
    let prefill_logits = model.forward(comm, tokens)?;
    let prefill_s = start.elapsed().as_secs_f64();
    let mut last = prefill_logits[(tokens.len() - 1) * vocab..].to_vec();
    let (mut step_logits, mut greedy_ids) = (Vec::with_capacity(new * vocab), Vec::with_capacity(new));
    let start = std::time::Instant::now();
    for i in 0..new {
        step_logits.extend_from_slice(&last);
        let id = argmax(&last);
        greedy_ids.push(id);
        if i + 1 < new {
            last = model.forward(comm, &[id as u32])?;
        }
    }
    Ok(Generation {
        prefill_logits,
        step_logits,
        greedy_ids,
        prefill_s,
        decode_s: start.elapsed().as_secs_f64(),
    })
}
