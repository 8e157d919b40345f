//! MoE expert layers loaded by name for one rank ([`MoeExperts::load`]) from every layout a
//! checkpoint stores experts in: each rank's experts equal the whole experts cut by
//! [`MoeExperts::new`] bit for bit, read only their share of stacked tensors, and their routed
//! forward, summed over 1, 2 or 4 ranks, equals per-token dense expert MLPs weighted by the
//! router (an `f64` oracle); malformed checkpoints are typed errors before anything is read.

use crate::common::{CheckpointDir, RawTensor, Rng};
use half::{bf16, f16};
use quant_kernels::error::{FormatError, MoeError, TpError};
use quant_kernels::fp8::{Fp8Format, Fp8Layer, Fp8Layout};
use quant_kernels::io::safetensors::to_le_bytes;
use quant_kernels::io::{Checkpoint, Dtype, QuantizedCheckpoint};
use quant_kernels::tp::{
    Comm, ExpertMlp, ExpertsLayout, LayerSource, LoadOptions, LocalComm, MoeDims, MoeExperts, route_topk,
};
use quant_kernels::{Error, FloatVec, Parallelism, QuantMethod, QuantWeight};
use std::time::Duration;

const P: &str = "model.layers.0.mlp.experts";
const DIMS: MoeDims = MoeDims { experts: 4, hidden: 32, intermediate: 16 };
const SERIAL: Parallelism = Parallelism::SERIAL;

/// Whole experts as `[out, in]` `f32` values already rounded to the stored dtype.
struct Whole {
    gate: Vec<Vec<f32>>,
    up: Vec<Vec<f32>>,
    down: Vec<Vec<f32>>,
    dtype: Dtype,
}

fn round(v: f32, dtype: Dtype) -> f32 {
    match dtype {
        Dtype::Bf16 => bf16::from_f32(v).to_f32(),
        Dtype::F16 => f16::from_f32(v).to_f32(),
        _ => v,
    }
}

fn bytes(v: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::Bf16 => to_le_bytes(&v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>()),
        Dtype::F16 => to_le_bytes(&v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>()),
        _ => to_le_bytes(v),
    }
}

fn floats(v: &[f32], dtype: Dtype) -> FloatVec {
    match dtype {
        Dtype::Bf16 => FloatVec::Bf16(v.iter().map(|&x| bf16::from_f32(x)).collect()),
        Dtype::F16 => FloatVec::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
        _ => FloatVec::F32(v.to_vec()),
    }
}

/// `[rows, cols]` to `[cols, rows]`.
fn t<T: Copy>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
    (0..cols).flat_map(|c| (0..rows).map(move |r| v[r * cols + c])).collect()
}

impl Whole {
    fn random(dtype: Dtype, rng: &mut Rng) -> Self {
        let MoeDims { experts, hidden, intermediate } = DIMS;
        let mut m = |n: usize| -> Vec<f32> { (0..n).map(|_| round(rng.f32_in(-0.5, 0.5), dtype)).collect() };
        let n = hidden * intermediate;
        Whole {
            gate: (0..experts).map(|_| m(n)).collect(),
            up: (0..experts).map(|_| m(n)).collect(),
            down: (0..experts).map(|_| m(n)).collect(),
            dtype,
        }
    }

    /// The experts as `layout` stores them.
    fn tensors(&self, layout: ExpertsLayout) -> Vec<RawTensor> {
        let MoeDims { experts, hidden: h, intermediate: i } = DIMS;
        let d = self.dtype;
        let mut out = Vec::new();
        match layout {
            ExpertsLayout::PerExpert | ExpertsLayout::Mixtral => {
                let [g, u, dn] = if layout == ExpertsLayout::Mixtral {
                    ["w1", "w3", "w2"]
                } else {
                    ["gate_proj", "up_proj", "down_proj"]
                };
                for e in 0..experts {
                    out.push((format!("{P}.{e}.{g}.weight"), d, vec![i, h], bytes(&self.gate[e], d)));
                    out.push((format!("{P}.{e}.{u}.weight"), d, vec![i, h], bytes(&self.up[e], d)));
                    out.push((format!("{P}.{e}.{dn}.weight"), d, vec![h, i], bytes(&self.down[e], d)));
                }
            }
            ExpertsLayout::StackedInOut => {
                // [E, hidden, 2I]: row h is gate[:, h] then up[:, h]; down [E, I, hidden].
                let mut gu = Vec::new();
                let mut dn = Vec::new();
                for e in 0..experts {
                    let (gt, ut) = (t(&self.gate[e], i, h), t(&self.up[e], i, h));
                    for r in 0..h {
                        gu.extend_from_slice(&gt[r * i..(r + 1) * i]);
                        gu.extend_from_slice(&ut[r * i..(r + 1) * i]);
                    }
                    dn.extend(t(&self.down[e], h, i));
                }
                out.push((format!("{P}.gate_up_proj"), d, vec![experts, h, 2 * i], bytes(&gu, d)));
                out.push((format!("{P}.down_proj"), d, vec![experts, i, h], bytes(&dn, d)));
            }
            ExpertsLayout::StackedOutIn => {
                let gu: Vec<f32> =
                    (0..experts).flat_map(|e| self.gate[e].iter().chain(&self.up[e]).copied()).collect();
                let dn: Vec<f32> = self.down.concat();
                out.push((format!("{P}.gate_up_proj"), d, vec![experts, 2 * i, h], bytes(&gu, d)));
                out.push((format!("{P}.down_proj"), d, vec![experts, h, i], bytes(&dn, d)));
            }
        }
        out.push(("model.norm.weight".into(), Dtype::F32, vec![h], to_le_bytes(&vec![1f32; h])));
        out
    }

    /// The whole experts as dense layers of the stored dtype.
    fn mlps(&self) -> Vec<ExpertMlp> {
        let MoeDims { hidden: h, intermediate: i, .. } = DIMS;
        (0..DIMS.experts)
            .map(|e| ExpertMlp {
                gate: QuantWeight::dense(i, h, floats(&self.gate[e], self.dtype)),
                up: QuantWeight::dense(i, h, floats(&self.up[e], self.dtype)),
                down: QuantWeight::dense(h, i, floats(&self.down[e], self.dtype)),
            })
            .collect()
    }
}

fn ck_dir(tag: &str, config: serde_json::Value, tensors: &[RawTensor]) -> CheckpointDir {
    CheckpointDir::new(tag, &config, tensors)
}

fn llama() -> serde_json::Value {
    serde_json::json!({"model_type": "mixtral"})
}

/// Both layers' weights and biases, bit for bit.
fn assert_same(got: &MoeExperts, want: &MoeExperts, what: &str) {
    let bits = |l: &quant_kernels::QuantLinear| -> (Vec<u32>, Option<Vec<u32>>) {
        (
            l.dequantize(SERIAL).unwrap().iter().map(|x| x.to_bits()).collect(),
            l.bias().map(|b| b.iter().map(|x| x.to_bits()).collect()),
        )
    };
    assert_eq!(got.local_intermediate(), want.local_intermediate(), "{what}");
    for e in 0..DIMS.experts {
        let (a, b) = (got.expert(e).unwrap(), want.expert(e).unwrap());
        assert_eq!(a.0.scheme(), b.0.scheme(), "{what} expert {e}");
        assert_eq!(bits(a.0), bits(b.0), "{what} expert {e} gate");
        assert_eq!(bits(a.1), bits(b.1), "{what} expert {e} up");
        assert_eq!(bits(a.2), bits(b.2), "{what} expert {e} down");
    }
}

/// Run `f(comm)` on every rank of a new group, one thread each.
fn on_ranks<T: Send>(world: usize, f: impl Fn(&LocalComm) -> T + Sync) -> Vec<T> {
    let ranks = LocalComm::group_with_timeout(world, Duration::from_secs(20));
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = ranks.into_iter().map(|c| s.spawn(move || f(&c))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Tokens, their router's choice (Mixtral: softmax, top 2, renormalized).
struct Batch {
    x: Vec<f32>,
    tokens: usize,
    k: usize,
    ids: Vec<usize>,
    weights: Vec<f32>,
}

fn batch(tokens: usize, rng: &mut Rng) -> Batch {
    let x = (0..tokens * DIMS.hidden).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let logits: Vec<f32> = (0..tokens * DIMS.experts).map(|_| rng.f32_in(-2.0, 2.0)).collect();
    let k = 2;
    let (ids, weights) = route_topk(&logits, tokens, DIMS.experts, k, true).unwrap();
    Batch { x, tokens, k, ids, weights }
}

/// The oracle: for each token, the sum over its routed experts of the router weight times the
/// dense MLP `down(silu(gate x) * up x)` in `f64`, from whole `[out, in]` weights; and each
/// output's magnitude (the sum of its terms' absolute values) to measure rounding against.
fn oracle(gate: &[Vec<f32>], up: &[Vec<f32>], down: &[Vec<f32>], b: &Batch) -> (Vec<f64>, Vec<f64>) {
    let MoeDims { hidden: h, intermediate: i, .. } = DIMS;
    let mut y = vec![0f64; b.tokens * h];
    let mut mag = vec![0f64; b.tokens * h];
    for tk in 0..b.tokens {
        let x = &b.x[tk * h..(tk + 1) * h];
        for j in 0..b.k {
            let (e, w) = (b.ids[tk * b.k + j], b.weights[tk * b.k + j] as f64);
            let dot = |m: &[f32], o: usize| (0..h).map(|c| m[o * h + c] as f64 * x[c] as f64).sum::<f64>();
            let act: Vec<f64> = (0..i)
                .map(|o| {
                    let g = dot(&gate[e], o);
                    g / (1.0 + (-g).exp()) * dot(&up[e], o)
                })
                .collect();
            for o in 0..h {
                let terms = (0..i).map(|c| down[e][o * i + c] as f64 * act[c]);
                y[tk * h + o] += w * terms.clone().sum::<f64>();
                mag[tk * h + o] += w.abs() * terms.map(f64::abs).sum::<f64>();
            }
        }
    }
    (y, mag)
}

fn assert_close(got: &[f32], want: &[f64], mag: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (n, ((&a, &b), &m)) in got.iter().zip(want).zip(mag).enumerate() {
        assert!((a as f64 - b).abs() <= 1e-5 * m + 1e-7, "{what}: [{n}] {a} vs {b} (magnitude {m})");
    }
}

/// Every layout, dense in F32/F16/BF16: rank loads equal the whole cut, stacked reads take the
/// rank's share, and the routed forward summed over the ranks equals the oracle.
#[test]
fn dense_experts_in_every_layout_equal_the_whole_experts_cut() {
    let mut rng = Rng(31);
    let b = batch(7, &mut rng);
    for (layout, dtype) in [
        (ExpertsLayout::PerExpert, Dtype::Bf16),
        (ExpertsLayout::Mixtral, Dtype::F32),
        (ExpertsLayout::StackedInOut, Dtype::Bf16),
        (ExpertsLayout::StackedOutIn, Dtype::F16),
    ] {
        let whole = Whole::random(dtype, &mut rng);
        let dir = ck_dir(&format!("moe-{layout:?}"), llama(), &whole.tensors(layout));
        let ck = Checkpoint::open(&dir.0).unwrap();
        let mlps = whole.mlps();
        let weight_bytes = (3 * DIMS.experts * DIMS.hidden * DIMS.intermediate * dtype.size()) as u64;
        let (want, mag) = oracle(&whole.gate, &whole.up, &whole.down, &b);
        for world in [1, 2, 4] {
            for rank in 0..world {
                let before = ck.bytes_read();
                let got =
                    MoeExperts::load(&ck, P, DIMS, rank, world, &LoadOptions::default()).unwrap().unwrap();
                let read = ck.bytes_read() - before;
                assert_eq!(got.layout(), Some(layout));
                assert_eq!(got.rank(), (rank, world));
                assert_same(
                    &got,
                    &MoeExperts::new(&mlps, rank, world).unwrap(),
                    &format!("{layout:?} {rank}/{world}"),
                );
                assert_eq!(
                    read,
                    weight_bytes / world as u64,
                    "{layout:?} {rank}/{world}: only the share is read"
                );
            }
            let ys = on_ranks(world, |c| {
                let m =
                    MoeExperts::load(&ck, P, DIMS, c.rank(), world, &Default::default()).unwrap().unwrap();
                m.forward_reduced(c, &b.x, b.tokens, &b.ids, &b.weights, b.k, SERIAL).unwrap()
            });
            for y in &ys {
                assert_eq!(y, &ys[0], "every rank gets the same sum");
            }
            assert_close(&ys[0], &want, &mag, &format!("{layout:?} world {world}"));
            if world == 1 {
                let m = MoeExperts::load(&ck, P, DIMS, 0, 1, &Default::default()).unwrap().unwrap();
                let threaded = Parallelism::default();
                assert_eq!(m.forward(&b.x, b.tokens, &b.ids, &b.weights, b.k, threaded).unwrap(), ys[0]);
            }
        }
        // Another module's prefix is absent, never an empty layer.
        assert!(
            MoeExperts::load(&ck, "model.layers.1.mlp.experts", DIMS, 0, 1, &Default::default())
                .unwrap()
                .is_none()
        );
    }
}

/// FP8 stacked experts (block scales `[4, 8]` over the stored matrix): a rank's experts equal
/// the whole experts, transposed by hand where stored `[in, out]`, cut by `new`; the forward
/// equals the oracle on the dequantized whole.
#[test]
fn fp8_stacked_experts_equal_the_whole_experts_cut() {
    let MoeDims { experts, hidden: h, intermediate: i } = DIMS;
    let (br, bc) = (4, 8);
    let cfg = serde_json::json!({"model_type": "qwen3_vl_moe", "quantization_config":
        {"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [br, bc]}});
    let mut rng = Rng(41);
    let b = batch(6, &mut rng);
    for layout in [ExpertsLayout::StackedInOut, ExpertsLayout::StackedOutIn] {
        let in_out = layout == ExpertsLayout::StackedInOut;
        // Stored [rows, cols] per expert for gate_up and down.
        let (gr, gc) = if in_out { (h, 2 * i) } else { (2 * i, h) };
        let (dr, dc) = if in_out { (i, h) } else { (h, i) };
        let mut codes = |n: usize| -> Vec<u8> { (0..n).map(|_| (rng.next_u64() as u8) & 0xb7).collect() };
        let (gu_codes, dn_codes) = (codes(experts * gr * gc), codes(experts * dr * dc));
        let mut scales = |r: usize, c: usize| -> Vec<f32> {
            (0..experts * r.div_ceil(br) * c.div_ceil(bc)).map(|_| rng.f32_in(0.01, 0.1)).collect()
        };
        let (gu_s, dn_s) = (scales(gr, gc), scales(dr, dc));
        let tensors: Vec<RawTensor> = vec![
            (format!("{P}.gate_up_proj"), Dtype::F8E4M3, vec![experts, gr, gc], gu_codes.clone()),
            (
                format!("{P}.gate_up_proj.weight_scale_inv"),
                Dtype::F32,
                vec![experts, gr.div_ceil(br), gc.div_ceil(bc)],
                to_le_bytes(&gu_s),
            ),
            (format!("{P}.down_proj"), Dtype::F8E4M3, vec![experts, dr, dc], dn_codes.clone()),
            (
                format!("{P}.down_proj.weight_scale_inv"),
                Dtype::F32,
                vec![experts, dr.div_ceil(br), dc.div_ceil(bc)],
                to_le_bytes(&dn_s),
            ),
        ];
        let dir = ck_dir(&format!("moe-fp8-{layout:?}"), cfg.clone(), &tensors);
        // Expert e's [out, in] FP8 layers, cut and transposed here from the stored tensors.
        let per = |v: &[u8], r: usize, c: usize, e: usize| v[e * r * c..(e + 1) * r * c].to_vec();
        let pers = |v: &[f32], r: usize, c: usize, e: usize| {
            let n = r.div_ceil(br) * c.div_ceil(bc);
            v[e * n..(e + 1) * n].to_vec()
        };
        let fp8 = |codes: Vec<u8>, scales: Vec<f32>, layout: Fp8Layout| {
            QuantWeight::Fp8(Fp8Layer {
                layout,
                experts: 1,
                format: Fp8Format::E4M3,
                codes,
                scales: FloatVec::F32(scales),
                bias: None,
            })
        };
        let (sgr, sgc, sdr, sdc) = (gr.div_ceil(br), gc.div_ceil(bc), dr.div_ceil(br), dc.div_ceil(bc));
        let mlps: Vec<ExpertMlp> = (0..experts)
            .map(|e| {
                let (gcodes, gscales) = (per(&gu_codes, gr, gc, e), pers(&gu_s, gr, gc, e));
                let (dcodes, dscales) = (per(&dn_codes, dr, dc, e), pers(&dn_s, dr, dc, e));
                if in_out {
                    // gate_up^T [2I, h] with blocks (bc, br): gate the first I rows.
                    let (ct, st) = (t(&gcodes, gr, gc), t(&gscales, sgr, sgc));
                    let half = |first: usize| {
                        let c = ct[first * h..(first + i) * h].to_vec();
                        let srows = i / bc;
                        let s = st[(first / bc) * sgr..(first / bc + srows) * sgr].to_vec();
                        fp8(c, s, Fp8Layout::block(i, h, bc, br).unwrap())
                    };
                    ExpertMlp {
                        gate: half(0),
                        up: half(i),
                        down: fp8(
                            t(&dcodes, dr, dc),
                            t(&dscales, sdr, sdc),
                            Fp8Layout::block(h, i, bc, br).unwrap(),
                        ),
                    }
                } else {
                    let half = |first: usize| {
                        let c = gcodes[first * h..(first + i) * h].to_vec();
                        let s = gscales[(first / br) * sgc..((first + i) / br) * sgc].to_vec();
                        fp8(c, s, Fp8Layout::block(i, h, br, bc).unwrap())
                    };
                    ExpertMlp {
                        gate: half(0),
                        up: half(i),
                        down: fp8(dcodes, dscales, Fp8Layout::block(h, i, br, bc).unwrap()),
                    }
                }
            })
            .collect();
        let deq = |w: &QuantWeight| w.dequantize(SERIAL).unwrap();
        let (gate, up, down): (Vec<_>, Vec<_>, Vec<_>) =
            mlps.iter().map(|m| (deq(&m.gate), deq(&m.up), deq(&m.down))).collect();
        let (want, mag) = oracle(&gate, &up, &down, &b);
        let code_bytes = (experts * (gr * gc + dr * dc)) as u64;
        // Both readers: the plain checkpoint and the FP8 one (whose layers are `.weight`s).
        let plain = Checkpoint::open(&dir.0).unwrap();
        let quantized = QuantizedCheckpoint::open(&dir.0).unwrap();
        for world in [1, 2, 4] {
            for rank in 0..world {
                let what = format!("fp8 {layout:?} {rank}/{world}");
                let want_rank = MoeExperts::new(&mlps, rank, world).unwrap();
                let before = plain.bytes_read();
                let got =
                    MoeExperts::load(&plain, P, DIMS, rank, world, &Default::default()).unwrap().unwrap();
                let codes_read = plain.bytes_read() - before;
                assert_same(&got, &want_rank, &what);
                assert!(
                    codes_read >= code_bytes / world as u64 && codes_read < code_bytes / world as u64 + 2048,
                    "{what}: read {codes_read} of {code_bytes} code bytes"
                );
                let got =
                    MoeExperts::load(&quantized, P, DIMS, rank, world, &Default::default()).unwrap().unwrap();
                assert_same(&got, &want_rank, &what);
            }
            let ys = on_ranks(world, |c| {
                let m =
                    MoeExperts::load(&plain, P, DIMS, c.rank(), world, &Default::default()).unwrap().unwrap();
                m.forward_reduced(c, &b.x, b.tokens, &b.ids, &b.weights, b.k, SERIAL).unwrap()
            });
            assert_close(&ys[0], &want, &mag, &format!("fp8 {layout:?} world {world}"));
        }
        // Three ranks do not split 16 evenly: the cut's error, nothing read.
        let before = plain.bytes_read();
        assert!(matches!(
            MoeExperts::load(&plain, P, DIMS, 0, 3, &Default::default()),
            Err(Error::Tp(TpError::ShardUneven { len: 16, world_size: 3 }))
        ));
        assert_eq!(plain.bytes_read(), before);
    }
}

/// Per-expert FP8 layers of a quantized checkpoint (any scheme the source serves): each rank's
/// experts are the checkpoint's whole layers cut.
#[test]
fn per_expert_quantized_layers_equal_the_whole_layers_cut() {
    let MoeDims { experts, hidden: h, intermediate: i } = DIMS;
    let cfg = serde_json::json!({"model_type": "qwen2_moe", "quantization_config":
        {"quant_method": "fp8", "weight_block_size": [4, 8]}});
    let mut rng = Rng(43);
    let mut tensors = Vec::new();
    for e in 0..experts {
        for (proj, (r, c)) in [("gate_proj", (i, h)), ("up_proj", (i, h)), ("down_proj", (h, i))] {
            let codes: Vec<u8> = (0..r * c).map(|_| rng.next_u64() as u8 & 0xb7).collect();
            let s: Vec<f32> = (0..r.div_ceil(4) * c.div_ceil(8)).map(|_| rng.f32_in(0.01, 0.1)).collect();
            tensors.push((format!("{P}.{e}.{proj}.weight"), Dtype::F8E4M3, vec![r, c], codes));
            tensors.push((
                format!("{P}.{e}.{proj}.weight_scale_inv"),
                Dtype::F32,
                vec![r.div_ceil(4), c.div_ceil(8)],
                to_le_bytes(&s),
            ));
        }
    }
    let dir = ck_dir("moe-fp8-per-expert", cfg, &tensors);
    let ck = QuantizedCheckpoint::open(&dir.0).unwrap();
    let mlps: Vec<ExpertMlp> = (0..experts)
        .map(|e| {
            let l = |p: &str| ck.load_layer(&format!("{P}.{e}.{p}")).unwrap().0;
            ExpertMlp { gate: l("gate_proj"), up: l("up_proj"), down: l("down_proj") }
        })
        .collect();
    for world in [1, 2, 4] {
        for rank in 0..world {
            let got = MoeExperts::load(&ck, P, DIMS, rank, world, &Default::default()).unwrap().unwrap();
            assert_eq!(got.layout(), Some(ExpertsLayout::PerExpert));
            assert_same(&got, &MoeExperts::new(&mlps, rank, world).unwrap(), &format!("{rank}/{world}"));
        }
    }
}

/// Load-time quantization of experts, per-expert and stacked: each rank's expert layers equal
/// the method's quantizer on the rank's share of the whole dense layers; a config glob picks
/// the experts by their per-expert names.
#[test]
fn load_time_quantization_of_experts_equals_quantizing_the_share() {
    let mut rng = Rng(47);
    let method = QuantMethod::Int8Symmetric { per_channel: true };
    for layout in [ExpertsLayout::PerExpert, ExpertsLayout::StackedInOut] {
        let whole = Whole::random(Dtype::Bf16, &mut rng);
        let dir = ck_dir(&format!("moe-isq-{layout:?}"), llama(), &whole.tensors(layout));
        let ck = Checkpoint::open(&dir.0).unwrap();
        let opts = LoadOptions { isq: Some(method), ..Default::default() };
        for world in [1, 2] {
            for rank in 0..world {
                let got = MoeExperts::load(&ck, P, DIMS, rank, world, &opts).unwrap().unwrap();
                let q = |w: QuantWeight| {
                    let (r, c) = w.shape();
                    method.quantize(&w.dequantize(SERIAL).unwrap(), r, c, None, SERIAL).unwrap()
                };
                let want: Vec<ExpertMlp> = whole
                    .mlps()
                    .iter()
                    .map(|m| {
                        let s = m.shard(rank, world).unwrap();
                        ExpertMlp { gate: q(s.gate), up: q(s.up), down: q(s.down) }
                    })
                    .collect();
                let want = MoeExperts::from_local(want, DIMS, rank, world).unwrap();
                assert_same(&got, &want, &format!("isq {layout:?} {rank}/{world}"));
                assert_eq!(got.expert(0).unwrap().0.scheme(), "int8");
            }
        }
    }
}

/// Malformed checkpoints and calls: typed errors naming what is wrong, before any weight is
/// read.
#[test]
fn malformed_experts_are_typed_errors() {
    let mut rng = Rng(53);
    let whole = Whole::random(Dtype::F32, &mut rng);
    let per_expert = whole.tensors(ExpertsLayout::PerExpert);
    let open_with = |tag: &str, t: &[RawTensor]| {
        let dir = ck_dir(tag, llama(), t);
        let ck = Checkpoint::open(&dir.0).unwrap();
        let before = ck.bytes_read();
        let err = MoeExperts::load(&ck, P, DIMS, 0, 2, &Default::default()).unwrap_err();
        assert_eq!(ck.bytes_read(), before, "{tag}: nothing read");
        err
    };
    // Expert 2 without its up_proj.
    let t: Vec<RawTensor> =
        per_expert.iter().filter(|x| x.0 != format!("{P}.2.up_proj.weight")).cloned().collect();
    assert_eq!(
        open_with("moe-missing", &t),
        Error::Moe(MoeError::MissingExpert { prefix: P.into(), expert: 2, proj: "up_proj" })
    );
    // A fifth expert where the model has four.
    let mut t = per_expert.clone();
    t.push((format!("{P}.4.gate_proj.weight"), Dtype::F32, vec![16, 32], to_le_bytes(&vec![0f32; 512])));
    assert_eq!(
        open_with("moe-extra", &t),
        Error::Moe(MoeError::ExtraExpert { tensor: format!("{P}.4.gate_proj.weight"), experts: 4 })
    );
    // A down_proj stored the wrong way round.
    let mut t = per_expert.clone();
    let n = t.iter().position(|x| x.0 == format!("{P}.1.down_proj.weight")).unwrap();
    t[n].2 = vec![16, 32];
    assert_eq!(
        open_with("moe-shape", &t),
        Error::Moe(MoeError::ExpertShape {
            layer: format!("{P}.1.down_proj"),
            expected: (32, 16),
            got: (16, 32)
        })
    );
    // Stacked tensors of neither layout, or one of the two missing.
    let mut t = whole.tensors(ExpertsLayout::StackedInOut);
    t[0].2 = vec![4, 32, 16];
    t[0].3.truncate(4 * 32 * 16 * 4);
    assert!(matches!(open_with("moe-stacked-shape", &t), Error::Moe(MoeError::StackedShape { .. })));
    let t = whole.tensors(ExpertsLayout::StackedOutIn)[1..].to_vec();
    assert_eq!(
        open_with("moe-stacked-missing", &t),
        Error::Format(FormatError::MissingTensors(vec![format!("{P}.gate_up_proj")]))
    );
    // FP8 stacked without its scales, and without a block size in the config.
    let fp8: Vec<RawTensor> = vec![
        (format!("{P}.gate_up_proj"), Dtype::F8E4M3, vec![4, 32, 32], vec![0x38; 4 * 32 * 32]),
        (format!("{P}.down_proj"), Dtype::F8E4M3, vec![4, 16, 32], vec![0x38; 4 * 16 * 32]),
    ];
    assert_eq!(
        open_with("moe-fp8-noconfig", &fp8),
        Error::Moe(MoeError::Fp8Block { tensor: format!("{P}.gate_up_proj") })
    );
    let cfg =
        serde_json::json!({"quantization_config": {"quant_method": "fp8", "weight_block_size": [4, 8]}});
    let dir = ck_dir("moe-fp8-noscale", cfg, &fp8);
    let ck = Checkpoint::open(&dir.0).unwrap();
    assert_eq!(
        MoeExperts::load(&ck, P, DIMS, 0, 1, &Default::default()).unwrap_err(),
        Error::Format(FormatError::MissingTensors(vec![format!("{P}.gate_up_proj.weight_scale_inv")]))
    );
    // FP8 gate/up halves that would split a scale block: I = 12 with 8-wide blocks.
    let dims = MoeDims { experts: 1, hidden: 32, intermediate: 12 };
    let cfg =
        serde_json::json!({"quantization_config": {"quant_method": "fp8", "weight_block_size": [4, 8]}});
    let t: Vec<RawTensor> = vec![
        (format!("{P}.gate_up_proj"), Dtype::F8E4M3, vec![1, 32, 24], vec![0x38; 32 * 24]),
        (format!("{P}.gate_up_proj.weight_scale_inv"), Dtype::F32, vec![1, 8, 3], to_le_bytes(&[1f32; 24])),
        (format!("{P}.down_proj"), Dtype::F8E4M3, vec![1, 12, 32], vec![0x38; 12 * 32]),
        (format!("{P}.down_proj.weight_scale_inv"), Dtype::F32, vec![1, 3, 4], to_le_bytes(&[1f32; 12])),
    ];
    let dir = ck_dir("moe-fp8-split", cfg, &t);
    let ck = Checkpoint::open(&dir.0).unwrap();
    assert_eq!(
        MoeExperts::load(&ck, P, dims, 0, 1, &Default::default()).unwrap_err(),
        Error::Tp(TpError::ShardBoundary { what: "fp8 scale block", at: 12, multiple: 8 })
    );
    // Routing that names no expert, lengths that do not fit, a communicator of another world.
    let moe = MoeExperts::new(&whole.mlps(), 0, 1).unwrap();
    let x = vec![0.5f32; 2 * 32];
    assert_eq!(
        moe.forward(&x, 2, &[0, 1, 3, 4], &[0.5; 4], 2, SERIAL).unwrap_err(),
        Error::Moe(MoeError::ExpertId { id: 4, token: 1, experts: 4 })
    );
    assert!(matches!(
        moe.forward(&x, 2, &[0, 1, 3], &[0.5; 3], 2, SERIAL),
        Err(Error::Kernel(quant_kernels::error::KernelError::LengthMismatch { .. }))
    ));
    assert!(matches!(
        moe.forward(&x[1..], 2, &[0, 1, 3, 2], &[0.5; 4], 2, SERIAL),
        Err(Error::Kernel(quant_kernels::error::KernelError::LengthMismatch { .. }))
    ));
    let r = on_ranks(2, |c| moe.forward_reduced(c, &x, 2, &[0, 1, 3, 2], &[0.5; 4], 2, SERIAL).map(|_| ()));
    assert!(r.iter().all(|e| matches!(e, Err(Error::Tp(TpError::ShardRank { .. })))), "{r:?}");
    assert_eq!(MoeExperts::new(&[], 0, 1).unwrap_err(), Error::Moe(MoeError::NoExperts));
    // Experts cut for another world size.
    let halves: Vec<ExpertMlp> = whole.mlps().iter().map(|m| m.shard(0, 2).unwrap()).collect();
    assert!(matches!(
        MoeExperts::from_local(halves, DIMS, 0, 4),
        Err(Error::Moe(MoeError::ExpertShape { .. }))
    ));
    // A router's top-k that is not k per token leaves no token unrouted silently.
    assert!(moe.forward(&[], 0, &[], &[], 2, SERIAL).unwrap().is_empty());
}
