//! The model-level shard plan: layer classification, attention sizes from `config.json`, the
//! ranges each rank holds (KV heads split or replicated, fused qkv / gate_up), consistency and
//! boundary errors (typed, with the nearest legal world sizes), `check_cut` agreeing with
//! `QuantWeight::shard` on every scheme, and `ShardPlan::shard` on a fused GPTQ layer.

// A rank's ranges are lists of ranges; one-range lists are the common case, not a typo.
#![allow(clippy::single_range_in_vec_init)]

use crate::common;
use quant_kernels::error::{FormatError, KernelError, TpError};

use common::Rng;
use quant_kernels::QuantScheme;
use quant_kernels::QuantWeight;
use quant_kernels::awq::{AwqLayer, AwqLayout};
use quant_kernels::fp8::{Fp8Format, Fp8Layer, Fp8Layout};
use quant_kernels::gptq::{GptqLayer, GptqLayout, ZeroFormat};
use quant_kernels::intx::Int4Tensor;
use quant_kernels::method::QuantMethod;
use quant_kernels::tp::{
    AttentionShape, LayerRole, MAX_WORLD_SEARCH, Parallel, PlanLayer, Shard, ShardPlan, check_cut,
};
use quant_kernels::{Error, FloatVec, Parallelism};

const ATTN: AttentionShape = AttentionShape { heads: 4, kv_heads: 2, head_dim: 16 };

fn gptq(bits: u8, act_order: bool) -> Option<QuantMethod> {
    Some(QuantMethod::Gptq { bits, group: Some(32), act_order })
}

/// The tiny llama fixtures' layers (hidden 64, intermediate 128, 4 heads, 2 KV heads of 16).
fn llama(method: Option<QuantMethod>, blocks: usize) -> Vec<PlanLayer> {
    let mut v = Vec::new();
    for b in 0..blocks {
        for (name, out, inp) in [
            ("self_attn.q_proj", 64, 64),
            ("self_attn.k_proj", 32, 64),
            ("self_attn.v_proj", 32, 64),
            ("self_attn.o_proj", 64, 64),
            ("mlp.gate_proj", 128, 64),
            ("mlp.up_proj", 128, 64),
            ("mlp.down_proj", 64, 128),
        ] {
            v.push(PlanLayer { name: format!("model.layers.{b}.{name}"), out, inp, experts: 1, method });
        }
    }
    v.push(PlanLayer { name: "lm_head".into(), out: 256, inp: 64, experts: 1, method: None });
    v
}

fn plan_err(e: Error) -> (String, usize, Error, Option<usize>, Option<usize>) {
    match e {
        Error::Tp(TpError::ShardPlan { layer, world_size, cause, below, above, searched }) => {
            assert_eq!(searched, quant_kernels::tp::MAX_WORLD_SEARCH);
            (layer, world_size, *cause, below, above)
        }
        other => panic!("expected Error::Tp(TpError::ShardPlan), got {other:?}"),
    }
}

#[test]
fn roles_and_splits_by_name() {
    use LayerRole::*;
    for (name, role, par) in [
        ("model.layers.0.self_attn.q_proj", Query, Parallel::Column),
        ("model.layers.0.self_attn.k_proj.weight", Key, Parallel::Column),
        ("a.v_proj", Value, Parallel::Column),
        ("a.qkv_proj", QkvFused, Parallel::Column),
        ("a.gate_proj", Gate, Parallel::Column),
        ("a.up_proj", Up, Parallel::Column),
        ("a.gate_up_proj", GateUpFused, Parallel::Column),
        ("model.layers.1.self_attn.o_proj", AttnOut, Parallel::Row),
        ("model.layers.1.mlp.down_proj", Down, Parallel::Row),
        ("lm_head", Other, Parallel::Replicated),
        ("model.embed_tokens", Other, Parallel::Replicated),
        ("model.layers.0.input_layernorm", Other, Parallel::Replicated),
        ("a.q_proj_extra", Other, Parallel::Replicated),
    ] {
        assert_eq!(LayerRole::of(name), role, "{name}");
        assert_eq!(role.parallel(), par, "{name}");
    }
    assert_eq!(
        (Parallel::Column.dim(), Parallel::Row.dim(), Parallel::Replicated.dim()),
        (Some(0), Some(1), None)
    );
}

#[test]
fn attention_sizes_from_config() {
    let a = |v: serde_json::Value| AttentionShape::from_config(&v);
    let got = a(
        serde_json::json!({"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16}),
    );
    assert_eq!(got, Ok(Some(ATTN)));
    // head_dim from hidden_size / heads; KV heads default to the heads.
    let got = a(serde_json::json!({"hidden_size": 96, "num_attention_heads": 4}));
    assert_eq!(got, Ok(Some(AttentionShape { heads: 4, kv_heads: 4, head_dim: 24 })));
    assert_eq!(a(serde_json::json!({"vocab_size": 5})), Ok(None));
    assert_eq!(
        a(serde_json::json!({"num_attention_heads": 0, "hidden_size": 64})),
        Err(Error::Tp(TpError::ModelConfig { field: "num_attention_heads" }))
    );
    assert_eq!(
        a(serde_json::json!({"num_attention_heads": 4, "num_key_value_heads": "2", "hidden_size": 64})),
        Err(Error::Tp(TpError::ModelConfig { field: "num_key_value_heads" }))
    );
    assert_eq!(
        a(serde_json::json!({"num_attention_heads": 4})),
        Err(Error::Tp(TpError::ModelConfig { field: "hidden_size" }))
    );
    assert!(matches!(
        a(serde_json::json!({"num_attention_heads": 3, "hidden_size": 64})),
        Err(Error::Kernel(KernelError::NotMultiple { value: 64, multiple: 3, .. }))
    ));
}

#[test]
fn ranges_per_rank_split_and_replicate_kv_heads() {
    let layers = llama(gptq(4, true), 2);
    let plan = ShardPlan::new(Some(ATTN), &layers, 2).unwrap();
    let r =
        |name: &str, rank: usize| plan.layer(&format!("model.layers.1.{name}")).unwrap().ranks[rank].clone();
    assert_eq!(plan.world_size(), 2);
    assert_eq!(r("self_attn.q_proj", 1), [32..64]);
    assert_eq!(r("self_attn.k_proj", 1), [16..32]); // one KV head each
    assert_eq!(r("self_attn.o_proj", 1), [32..64]); // the q heads' inputs
    assert_eq!(r("mlp.up_proj", 0), [0..64]);
    assert_eq!(r("mlp.down_proj", 1), [64..128]);
    let head = plan.layer("lm_head").unwrap();
    assert_eq!((head.parallel(), head.shards(0)), (Parallel::Replicated, vec![]));
    assert_eq!(
        plan.layer("model.layers.0.self_attn.o_proj").unwrap().shards(1),
        [Shard::Offset { dim: 1, offset: 32, len: 32 }]
    );

    // 4 ranks, 2 KV heads: ranks 0, 1 hold head 0 and ranks 2, 3 head 1 (replicated).
    let plan = ShardPlan::new(Some(ATTN), &layers, 4).unwrap();
    let k = &plan.layer("model.layers.0.self_attn.v_proj").unwrap().ranks;
    assert_eq!(k, &[vec![0..16], vec![0..16], vec![16..32], vec![16..32]]);
    let q = &plan.layer("model.layers.0.self_attn.q_proj").unwrap().ranks;
    assert_eq!(q[3], [48..64]);
    assert_eq!(ShardPlan::legal_world_sizes(Some(ATTN), &layers, MAX_WORLD_SEARCH), [1, 2, 4]);
}

#[test]
fn fused_layers_take_one_piece_per_part() {
    let m = gptq(4, false);
    let layers = vec![
        PlanLayer { name: "b.self_attn.qkv_proj".into(), out: 128, inp: 64, experts: 1, method: m },
        PlanLayer { name: "b.self_attn.o_proj".into(), out: 64, inp: 64, experts: 1, method: m },
        PlanLayer { name: "b.mlp.gate_up_proj".into(), out: 256, inp: 64, experts: 1, method: m },
        PlanLayer { name: "b.mlp.down_proj".into(), out: 64, inp: 128, experts: 1, method: m },
    ];
    let plan = ShardPlan::new(Some(ATTN), &layers, 2).unwrap();
    // q 0..64, k 64..96, v 96..128: rank 1 holds q heads 2, 3, KV head 1 of k and of v.
    assert_eq!(plan.layer("b.self_attn.qkv_proj").unwrap().ranks[1], [32..64, 80..96, 112..128]);
    assert_eq!(plan.layer("b.mlp.gate_up_proj").unwrap().ranks[1], [64..128, 192..256]);
    assert_eq!(plan.layer("b.mlp.down_proj").unwrap().ranks[1], [64..128]);
    // Fused AWQ cannot be stacked back packed: refused by the plan, before any work.
    let awq = Some(QuantMethod::Awq { group: 32 });
    let mut l = layers.clone();
    l[0].method = awq;
    let (layer, _, cause, ..) = plan_err(ShardPlan::new(Some(ATTN), &l, 2).unwrap_err());
    assert_eq!((layer.as_str(), cause), ("b.self_attn.qkv_proj", Error::Tp(TpError::ShardScheme("awq"))));
    // A qkv_proj whose size does not match the heads.
    let mut l = layers;
    l[0].out = 120;
    let (layer, _, cause, ..) = plan_err(ShardPlan::new(Some(ATTN), &l, 2).unwrap_err());
    assert_eq!(layer, "b.self_attn.qkv_proj");
    assert!(
        matches!(cause, Error::Kernel(KernelError::LengthMismatch { expected: 128, got: 120, .. })),
        "{cause:?}"
    );
}

#[test]
fn row_parallel_layers_must_take_the_split_that_feeds_them() {
    // o_proj with 48 inputs after a q_proj of 64 outputs: no world size fits.
    let mut layers = llama(None, 1);
    layers[3].inp = 48;
    let e = ShardPlan::new(Some(ATTN), &layers, 2).unwrap_err();
    let text = e.to_string();
    let (layer, world, cause, below, above) = plan_err(e);
    assert_eq!((layer.as_str(), world, below, above), ("model.layers.0.self_attn.o_proj", 2, None, None));
    assert_eq!(
        cause,
        Error::Tp(TpError::ShardFeed {
            layer: "model.layers.0.self_attn.o_proj".into(),
            feeder: "model.layers.0.self_attn.q_proj".into(),
            rank: 0,
            inputs: 0..24,
            outputs: 0..32,
        })
    );
    assert!(text.contains("no legal world size from 1 to 64"), "{text}");

    // down_proj fed by an up_proj of another width.
    let mut layers = llama(None, 1);
    layers[5].out = 96;
    let (layer, _, cause, ..) = plan_err(ShardPlan::new(Some(ATTN), &layers, 1).unwrap_err());
    assert_eq!(layer, "model.layers.0.mlp.down_proj");
    assert!(
        matches!(cause, Error::Tp(TpError::ShardFeed { ref feeder, .. }) if feeder == "model.layers.0.mlp.up_proj"),
        "{cause:?}"
    );

    // A row-parallel layer with nothing feeding it.
    let lone = [PlanLayer { name: "x.mlp.down_proj".into(), out: 64, inp: 128, experts: 1, method: None }];
    let (_, _, cause, ..) = plan_err(ShardPlan::new(None, &lone, 2).unwrap_err());
    assert!(matches!(
        cause,
        Error::Tp(TpError::ShardNoFeeder { feeders: "gate_proj/up_proj or gate_up_proj", .. })
    ));

    // Attention layers without the attention sizes.
    let (layer, _, cause, ..) = plan_err(ShardPlan::new(None, &llama(None, 1), 2).unwrap_err());
    assert_eq!(
        (layer.as_str(), cause),
        ("model.layers.0.self_attn.k_proj", Error::Tp(TpError::ModelConfig { field: "num_attention_heads" }))
    );

    // Stacked experts are not one linear layer.
    let mut layers = llama(None, 1);
    layers[4].experts = 8;
    let (layer, _, cause, ..) = plan_err(ShardPlan::new(Some(ATTN), &layers, 2).unwrap_err());
    assert_eq!(
        (layer.as_str(), cause),
        ("model.layers.0.mlp.gate_proj", Error::Kernel(KernelError::StackedExperts { experts: 8 }))
    );
    assert_eq!(
        ShardPlan::new(Some(ATTN), &llama(None, 1), 0).unwrap_err(),
        Error::Tp(TpError::ShardRank { rank: 0, world_size: 0 })
    );
}

#[test]
fn a_world_size_that_cuts_a_group_names_the_layer_and_the_nearest_legal_sizes() {
    // 8-bit g32 without act-order: o_proj's 64 inputs over 4 ranks cut its groups of 32.
    let layers = llama(gptq(8, false), 2);
    let e = ShardPlan::new(Some(ATTN), &layers, 4).unwrap_err();
    let text = e.to_string();
    let (layer, world, cause, below, above) = plan_err(e);
    assert_eq!((layer.as_str(), world), ("model.layers.0.self_attn.o_proj", 4));
    assert_eq!(cause, Error::Tp(TpError::ShardBoundary { what: "group", at: 16, multiple: 32 }));
    assert_eq!((below, above), (Some(2), None));
    assert!(
        text.contains("`model.layers.0.self_attn.o_proj`") && text.contains("2 below, none above"),
        "{text}"
    );
    assert_eq!(ShardPlan::legal_world_sizes(Some(ATTN), &layers, 64), [1, 2]);

    // With act-order the inputs need only whole word rows: 4 fits; 3 splits no head evenly.
    let layers = llama(gptq(4, true), 2);
    assert!(ShardPlan::new(Some(ATTN), &layers, 4).is_ok());
    let (_, _, cause, below, above) = plan_err(ShardPlan::new(Some(ATTN), &layers, 3).unwrap_err());
    assert_eq!((below, above), (Some(2), Some(4)));
    assert!(matches!(cause, Error::Tp(TpError::ShardUneven { world_size: 3, .. })), "{cause:?}");
    // 8 ranks: more than the 4 attention heads.
    let (layer, _, cause, below, above) = plan_err(ShardPlan::new(Some(ATTN), &layers, 8).unwrap_err());
    assert_eq!((layer.as_str(), below, above), ("model.layers.0.self_attn.k_proj", Some(4), None));
    assert_eq!(cause, Error::Tp(TpError::AttentionHeads { heads: 4, world_size: 8 }));

    // 2-bit: the outputs' zero-point words are 16 columns; k_proj's 32 rows over 4 ranks would
    // leave 8 per rank if KV heads split, but they replicate (one 16-row head each): fine.
    assert!(ShardPlan::new(Some(ATTN), &llama(gptq(2, true), 1), 4).is_ok());
    // 3-bit: words of 32 columns, so 16-row KV heads cannot be cut out.
    let (layer, _, cause, below, _) =
        plan_err(ShardPlan::new(Some(ATTN), &llama(gptq(3, true), 1), 2).unwrap_err());
    assert_eq!((layer.as_str(), below), ("model.layers.0.self_attn.k_proj", Some(1)));
    assert_eq!(
        cause,
        Error::Tp(TpError::ShardBoundary { what: "zero-point pack word", at: 16, multiple: 32 })
    );
}

/// A zero layer of `method` with `[out, inp]` weights (act-order GPTQ gets a permuting g_idx).
fn zero_weight(method: QuantMethod, out: usize, inp: usize) -> QuantWeight {
    match method {
        QuantMethod::Gptq { bits, group, act_order } => {
            let layout = GptqLayout::new(inp, out, bits, group.map_or(-1, |g| g as i64)).unwrap();
            let (qr, qc) = layout.qweight_shape();
            let (zr, zc) = layout.qzeros_shape();
            let g_idx = act_order.then(|| {
                let mut g = layout.default_g_idx();
                g.reverse();
                g
            });
            QuantWeight::Gptq(GptqLayer {
                layout,
                format: ZeroFormat::V1,
                qweight: vec![0; qr * qc],
                qzeros: vec![0; zr * zc],
                scales: FloatVec::F32(vec![0.0; layout.groups() * out]),
                g_idx,
                bias: None,
            })
        }
        QuantMethod::Awq { group } => {
            let layout = AwqLayout::new(inp, out, group).unwrap();
            QuantWeight::Awq(AwqLayer {
                layout,
                qweight: vec![0; inp * layout.packed_cols()],
                qzeros: vec![0; layout.groups() * layout.packed_cols()],
                scales: FloatVec::F32(vec![0.0; layout.groups() * out]),
                bias: None,
            })
        }
        QuantMethod::Fp8 { block, .. } => {
            let layout = match block {
                Some((br, bc)) => Fp8Layout::block(out, inp, br, bc).unwrap(),
                None => Fp8Layout::per_tensor(out, inp).unwrap(),
            };
            let (sr, sc) = layout.scale_shape();
            QuantWeight::Fp8(Fp8Layer {
                layout,
                experts: 1,
                format: Fp8Format::E4M3,
                codes: vec![0; out * inp],
                scales: FloatVec::F32(vec![1.0; sr * sc]),
                bias: None,
            })
        }
        QuantMethod::Int4Asymmetric { group } => QuantWeight::Int4(Int4Tensor {
            rows: out,
            cols: inp,
            group,
            packed: vec![0; (out * inp).div_ceil(2)],
            scales: vec![1.0; out * inp / group],
            zeros: vec![0; out * inp / group],
        }),
        other => panic!("no zero layer for {other}"),
    }
}

#[test]
fn check_cut_agrees_with_shard_for_every_scheme() {
    let mut methods = Vec::new();
    for bits in [2, 3, 4, 8] {
        for group in [Some(32), Some(64), None] {
            for act_order in [false, true] {
                methods.push((QuantMethod::Gptq { bits, group, act_order }, 96, 128));
            }
        }
    }
    methods.push((QuantMethod::Awq { group: 32 }, 64, 128));
    methods.push((QuantMethod::Fp8 { format: Fp8Format::E4M3, block: Some((32, 32)) }, 96, 80));
    methods.push((QuantMethod::Fp8 { format: Fp8Format::E4M3, block: Some((16, 64)) }, 64, 96));
    methods.push((QuantMethod::Fp8 { format: Fp8Format::E4M3, block: None }, 24, 40));
    methods.push((QuantMethod::Int4Asymmetric { group: 16 }, 12, 64));
    let mut rng = Rng(7);
    let (mut oks, mut errs) = (0, 0);
    for (method, out, inp) in methods {
        let w = zero_weight(method, out, inp);
        for dim in [0, 1] {
            let len = if dim == 0 { out } else { inp };
            let mut ranges: Vec<_> = (1..=8usize)
                .filter(|world| len.is_multiple_of(*world))
                .flat_map(|world| (0..world).map(move |r| r * len / world..(r + 1) * len / world))
                .collect();
            for _ in 0..40 {
                let a = rng.below(len as u64 + 1) as usize;
                let b = rng.below(len as u64 + 1) as usize;
                ranges.push(a.min(b)..a.max(b));
            }
            for r in ranges {
                let planned = check_cut(Some(&method), out, inp, dim, r.clone());
                let applied = w.shard(&Shard::Offset { dim, offset: r.start, len: r.len() });
                assert_eq!(
                    planned.is_ok(),
                    applied.is_ok(),
                    "{method} dim {dim} {r:?}: {planned:?} vs {:?}",
                    applied.err()
                );
                if let (Err(p), Err(a)) = (&planned, &applied) {
                    assert_eq!(p, a, "{method} dim {dim} {r:?}");
                }
                if planned.is_ok() { oks += 1 } else { errs += 1 }
            }
        }
    }
    assert!(oks > 100 && errs > 100, "{oks} legal, {errs} refused: the table tests both sides");
    assert!(check_cut(None, 7, 5, 1, 1..4).is_ok());
    assert_eq!(
        check_cut(None, 7, 5, 1, 3..6),
        Err(Error::Tp(TpError::ShardRange { offset: 3, len: 3, dim_len: 5 }))
    );
    assert_eq!(check_cut(None, 7, 5, 2, 0..1), Err(Error::Tp(TpError::ShardDim(2))));
}

#[test]
fn shard_of_a_fused_gptq_qkv_is_its_parts_shards_stacked() {
    let mut rng = Rng(11);
    let layout = GptqLayout::new(64, 128, 4, 32).unwrap();
    let l = common::layer(&layout, true, &mut rng);
    let qkv = GptqLayer {
        layout,
        format: ZeroFormat::V1,
        qweight: l.qweight,
        qzeros: l.qzeros,
        scales: FloatVec::F32(l.scales),
        g_idx: Some(l.g_idx),
        bias: Some(FloatVec::F32((0..128).map(|i| i as f32).collect())),
    };
    let whole: Vec<f32> = qkv.dequantize(Parallelism::SERIAL).unwrap(); // [128, 64]
    let m = Some(QuantMethod::Gptq { bits: 4, group: Some(32), act_order: true });
    let layers = [
        PlanLayer { name: "b.qkv_proj".into(), out: 128, inp: 64, experts: 1, method: m },
        PlanLayer { name: "b.o_proj".into(), out: 64, inp: 64, experts: 1, method: m },
    ];
    for world in [1, 2, 4] {
        let plan = ShardPlan::new(Some(ATTN), &layers, world).unwrap();
        for rank in 0..world {
            let QuantWeight::Gptq(s) =
                plan.shard("b.qkv_proj", rank, &QuantWeight::Gptq(qkv.clone())).unwrap()
            else {
                panic!("not GPTQ")
            };
            let got: Vec<f32> = s.dequantize(Parallelism::SERIAL).unwrap();
            let ranges = &plan.layer("b.qkv_proj").unwrap().ranks[rank];
            let want: Vec<f32> =
                ranges.iter().flat_map(|r| whole[r.start * 64..r.end * 64].to_vec()).collect();
            assert_eq!(got.len(), want.len());
            assert!(
                got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "world {world} rank {rank}"
            );
            let bias: Vec<f32> = ranges.iter().flat_map(|r| r.clone().map(|i| i as f32)).collect();
            assert_eq!(s.bias, Some(FloatVec::F32(bias)));
        }
        let e = plan.shard("b.qkv_proj", world, &QuantWeight::Gptq(qkv.clone())).unwrap_err();
        assert_eq!(e, Error::Tp(TpError::ShardRank { rank: world, world_size: world }));
    }
    let plan = ShardPlan::new(Some(ATTN), &layers, 2).unwrap();
    assert!(matches!(
        plan.shard("b.nothing", 0, &QuantWeight::Gptq(qkv.clone())),
        Err(Error::Format(FormatError::MissingTensors(_)))
    ));
}
