//! AWQ and FP8 checkpoint directories, assembled from the upstream fixture tensors (AutoAWQ
//! 0.2.9 gemm layers; torch 2.15 block-scaled E4M3 weight) with the configs those libraries
//! write: `QuantizedCheckpoint` and `qk dequantize` reproduce the upstream dequantized weights in the
//! `[out, in]` orientation; bad configs and tensors are typed errors.

use crate::common;
use quant_kernels::error::FormatError;

use common::{T, fixture};
use half::bf16;
use quant_kernels::Error;
use quant_kernels::io::QuantizedCheckpoint;
use quant_kernels::io::{Dtype, SafetensorsFile};
use quant_kernels::method::QuantMethod;
use safetensors::SafeTensors;
use std::path::Path;
use std::process::Command;

type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;
/// `(prefix, K, N, W_deq [K, N])` per layer.
type Expected = Vec<(&'static str, usize, usize, Vec<f32>)>;

/// A checkpoint directory with `config` as its `quantization_config`.
fn ck_dir(tag: &str, config: serde_json::Value, tensors: &Tensors) -> common::CheckpointDir {
    common::CheckpointDir::new(
        tag,
        &serde_json::json!({"model_type": "llama", "quantization_config": config}),
        tensors,
    )
}

fn tensor(
    st: &SafeTensors<'_>,
    name: &str,
    as_name: &str,
    dtype: Dtype,
) -> (String, Dtype, Vec<usize>, Vec<u8>) {
    let t = T::get(st, name);
    (as_name.to_string(), dtype, t.shape, t.bytes)
}

/// Every quantized layer of `model`, read and turned back into named tensors
/// (`QuantizedCheckpoint::tensors`), is the checkpoint's own tensors: names, dtypes, shapes and
/// bytes; the bias included. A weight of another scheme is a typed error.
pub(crate) fn assert_round_trips(model: &QuantizedCheckpoint) {
    let raw = model.checkpoint();
    for l in model.layers() {
        let tensors = model.tensors(&l.prefix, &model.load(&l.prefix).unwrap()).unwrap();
        let parts = tensors.len() - usize::from(l.bias.is_some());
        assert!(parts >= 2, "{}: {} tensors", l.prefix, tensors.len());
        for t in &tensors {
            let info = raw.info(&t.name).unwrap_or_else(|| panic!("{} is not in the checkpoint", t.name));
            assert_eq!((t.dtype, &t.shape), (info.dtype, &info.shape), "{}", t.name);
            assert!(t.data == raw.read(&t.name).unwrap(), "{}: bytes differ", t.name);
        }
        let stored = raw.tensor_names().filter(|n| n.starts_with(&format!("{}.", l.prefix))).count();
        assert_eq!(tensors.len(), stored, "{}: every stored part written", l.prefix);
        let dense = quant_kernels::QuantWeight::dense(1, 1, vec![0f32]);
        assert!(matches!(
            model.tensors(&l.prefix, &dense),
            Err(Error::Format(FormatError::SchemeMismatch { weight: "dense", .. }))
        ));
    }
    assert_rank_loads(model);
}

/// Every layer's share for every rank of world sizes 1-4, along each dimension, read straight
/// from the checkpoint (`load_shard`) equals the whole layer read and then sharded, bit for
/// bit (or both fail alike); the parallel layers' `load` equal their `new` on the whole layer;
/// a share of the outputs reads about `1 / world` of the layer's bytes.
pub(crate) fn assert_rank_loads(model: &QuantizedCheckpoint) {
    use quant_kernels::tp::{ColumnParallelLinear, ReplicatedLinear, RowParallelLinear, Shard};
    let serial = quant_kernels::Parallelism::SERIAL;
    let deq = |l: &quant_kernels::QuantLinear| l.dequantize(serial).unwrap();
    for l in model.layers() {
        let mut whole = model.load(&l.prefix).unwrap();
        let bias = whole.take_bias();
        for world in 1..=4 {
            for rank in 0..world {
                for dim in [0, 1] {
                    let shard = Shard::Simple { dim, rank, world_size: world };
                    let before = model.checkpoint().bytes_read();
                    let got = model.load_shard(&l.prefix, &shard).map(|mut w| (w.take_bias(), w));
                    let read = model.checkpoint().bytes_read() - before;
                    let want = model.load(&l.prefix).unwrap().shard(&shard).map(|mut w| (w.take_bias(), w));
                    assert_eq!(got, want, "{} {shard:?}", l.prefix);
                    if got.is_ok() && dim == 0 {
                        let g_idx = if l.method.to_string().contains("act") { 4 * l.inp } else { 0 };
                        let share = l.stored_bytes.div_ceil(world) + 4 * l.inp + g_idx;
                        assert!(
                            read as usize <= share,
                            "{} {shard:?}: read {read} of {}",
                            l.prefix,
                            l.stored_bytes
                        );
                    }
                    if got.is_err() {
                        continue;
                    }
                    let (loaded, new) = if dim == 0 {
                        let a =
                            ColumnParallelLinear::load(model, &l.prefix, rank, world, &Default::default())
                                .unwrap()
                                .unwrap();
                        let b = ColumnParallelLinear::new(&whole, bias.as_ref(), rank, world).unwrap();
                        (deq(a.local()), deq(b.local()))
                    } else {
                        let a = RowParallelLinear::load(model, &l.prefix, rank, world, &Default::default())
                            .unwrap()
                            .unwrap();
                        let b = RowParallelLinear::new(&whole, bias.as_ref(), rank, world).unwrap();
                        let x = vec![0.5f32; a.local().in_features()];
                        let comm = quant_kernels::tp::SingleComm;
                        if world == 1 {
                            assert_eq!(
                                a.forward(&comm, &x, 1, serial).unwrap(),
                                b.forward(&comm, &x, 1, serial).unwrap()
                            );
                        }
                        (deq(a.local()), deq(b.local()))
                    };
                    assert!(loaded.iter().zip(&new).all(|(a, b)| a.to_bits() == b.to_bits()), "{}", l.prefix);
                }
            }
        }
        if l.experts == 1 && l.out % 4 == 0 {
            common::assert_merged_loads(
                model,
                &l.prefix,
                &whole,
                bias.as_ref(),
                &[l.out / 2, l.out / 4, l.out / 4],
            );
        }
        if l.experts == 1 {
            let r = ReplicatedLinear::load(model, &l.prefix, &Default::default()).unwrap().unwrap();
            assert_eq!((r.local().out_features(), r.local().in_features()), (l.out, l.inp));
        }
    }
    assert!(ColumnParallelLinear::load(model, "no.such.layer", 0, 2, &Default::default()).unwrap().is_none());
    assert!(RowParallelLinear::load(model, "no.such.layer", 0, 2, &Default::default()).unwrap().is_none());
}

/// `[k, n]` -> `[n, k]`.
fn transpose(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    (0..n * k).map(|i| w[(i % k) * n + i / k]).collect()
}

fn same(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// Two AutoAWQ layers (group 64) and an unquantized norm.
fn awq_tensors() -> (Tensors, Expected) {
    let mut tensors = Tensors::new();
    let mut expected = Vec::new();
    for (file, prefix, k, n) in [
        ("awq/awq_gemm_b4_g64_K128_N64.safetensors", "model.layers.0.mlp.up_proj", 128, 64),
        ("awq/awq_gemm_b4_g64_K256_N32.safetensors", "model.layers.0.mlp.down_proj", 256, 32),
    ] {
        let bytes = fixture(file);
        let st = SafeTensors::deserialize(&bytes).unwrap();
        for (part, d) in [("qweight", Dtype::I32), ("qzeros", Dtype::I32), ("scales", Dtype::F16)] {
            tensors.push(tensor(&st, part, &format!("{prefix}.{part}"), d));
        }
        expected.push((prefix, k, n, T::get(&st, "W_deq").f32s()));
    }
    tensors.push(("model.norm.weight".into(), Dtype::F16, vec![4], vec![0, 60, 0, 60, 0, 60, 0, 60]));
    (tensors, expected)
}

fn awq_config() -> serde_json::Value {
    serde_json::json!({"quant_method": "awq", "bits": 4, "group_size": 64, "zero_point": true, "version": "gemm"})
}

fn qk_dequantize(dir: &Path, dtype: &str) -> SafetensorsFile {
    let out = dir.join(format!("out-{dtype}.safetensors"));
    let o = Command::new(env!("CARGO_BIN_EXE_qk"))
        .args(["dequantize", dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dtype", dtype])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    SafetensorsFile::open(out).unwrap()
}

#[test]
fn awq_checkpoint_matches_autoawq() {
    let (tensors, expected) = awq_tensors();
    let dir = ck_dir("awq", awq_config(), &tensors);
    let model = QuantizedCheckpoint::open(&dir.0).unwrap();
    let QuantizedCheckpoint::Awq(awq) = &model else { panic!("not AWQ") };
    assert_eq!(awq.config().group_size, 64);
    let layers = model.layers();
    assert_eq!(layers.len(), 2);
    for (prefix, k, n, want) in &expected {
        let l = layers.iter().find(|l| l.prefix == *prefix).unwrap();
        assert_eq!((l.out, l.inp, l.method), (*n, *k, QuantMethod::Awq { group: 64 }));
        assert_eq!(l.stored_bytes, QuantMethod::Awq { group: 64 }.layer_bytes(*n, *k).unwrap());
        let w: Vec<f32> = awq.load(prefix).unwrap().dequantize_kn(quant_kernels::Parallelism::RAYON).unwrap();
        assert!(same(&w, want), "{prefix}");
        let lin: Vec<f32> = model.dequantize(prefix, quant_kernels::Parallelism::RAYON).unwrap();
        assert!(same(&lin, &transpose(want, *k, *n)));
    }
    assert!(model.is_quantized_part("model.layers.0.mlp.up_proj.qzeros"));
    assert!(!model.is_quantized_part("model.norm.weight"));
    assert_round_trips(&model);
    // Load-time requantization: the AWQ layer dequantized, then quantized to int8 per channel.
    let int8 = quant_kernels::QuantMethod::Int8Symmetric { per_channel: true };
    let opts = quant_kernels::tp::LoadOptions { isq: Some(int8), ..Default::default() };
    let (prefix, k, n, want) = &expected[0];
    let got = quant_kernels::tp::ColumnParallelLinear::load(&model, prefix, 0, 1, &opts).unwrap().unwrap();
    let direct =
        int8.quantize(&transpose(want, *k, *n), *n, *k, None, quant_kernels::Parallelism::RAYON).unwrap();
    let serial = quant_kernels::Parallelism::SERIAL;
    assert_eq!(got.local().dequantize(serial).unwrap(), direct.dequantize::<f32>(serial).unwrap());
    // The CLI writes [out, in] weights and copies the rest.
    let out = qk_dequantize(&dir.0, "f32");
    for (prefix, k, n, want) in &expected {
        let name = format!("{prefix}.weight");
        assert_eq!(out.info(&name).unwrap().shape, [*n, *k]);
        assert!(same(&out.read_as::<f32>(&name).unwrap(), &transpose(want, *k, *n)));
    }
    assert_eq!(out.read("model.norm.weight").unwrap(), [0, 60, 0, 60, 0, 60, 0, 60]);
    assert_eq!(out.tensors().len(), 3);
}

#[test]
fn awq_config_and_tensor_errors() {
    let (tensors, _) = awq_tensors();
    let field =
        |cfg: serde_json::Value, t: &Tensors| match QuantizedCheckpoint::open(&ck_dir("awq-bad", cfg, t).0) {
            Err(Error::Format(FormatError::Config { field, .. })) => field,
            other => panic!("{other:?}"),
        };
    let with = |k: &str, v: serde_json::Value| {
        let mut c = awq_config();
        c[k] = v;
        c
    };
    assert_eq!(field(with("bits", 3.into()), &tensors), "bits");
    assert_eq!(field(with("version", "gemv".into()), &tensors), "version");
    assert_eq!(field(with("zero_point", false.into()), &tensors), "zero_point");
    assert_eq!(field(with("q_group_size", 128.into()), &tensors), "group_size");
    assert_eq!(field(with("quant_method", "bitsandbytes".into()), &tensors), "quant_method");
    // AutoAWQ's own spellings are accepted.
    let spelled = serde_json::json!({"quant_method": "awq", "w_bit": 4, "q_group_size": 64});
    assert!(QuantizedCheckpoint::open(&ck_dir("awq-spelled", spelled, &tensors).0).is_ok());
    // A group size that contradicts the scales, a missing tensor, a wrong dtype.
    let r = QuantizedCheckpoint::open(&ck_dir("awq-g32", with("group_size", 32.into()), &tensors).0);
    assert!(matches!(r, Err(Error::Format(FormatError::TensorShape { .. }))), "{r:?}");
    let mut t = tensors.clone();
    t.retain(|(n, ..)| n != "model.layers.0.mlp.up_proj.qzeros");
    let r = QuantizedCheckpoint::open(&ck_dir("awq-missing", awq_config(), &t).0);
    assert_eq!(
        r.unwrap_err(),
        Error::Format(FormatError::MissingTensors(vec!["model.layers.0.mlp.up_proj.qzeros".into()]))
    );
    let mut t = tensors.clone();
    t[2].1 = Dtype::I16;
    assert!(matches!(
        QuantizedCheckpoint::open(&ck_dir("awq-dtype", awq_config(), &t).0),
        Err(Error::Format(FormatError::TensorDtype { .. }))
    ));
}

fn fp8_tensors() -> (Tensors, Vec<f32>, Vec<bf16>) {
    let bytes = fixture("fp8/fp8.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let p = "model.layers.0.mlp.down_proj";
    let tensors = vec![
        tensor(&st, "block.weight_u8", &format!("{p}.weight"), Dtype::F8E4M3),
        tensor(&st, "block.weight_scale_inv", &format!("{p}.weight_scale_inv"), Dtype::F32),
        ("lm_head.weight".into(), Dtype::Bf16, vec![2, 2], vec![0x80, 0x3f, 0, 0x40, 0, 0, 0x80, 0xbf]),
    ];
    let deq_bf16 = T::get(&st, "block.deq_bf16")
        .bytes
        .chunks_exact(2)
        .map(|b| bf16::from_le_bytes([b[0], b[1]]))
        .collect();
    (tensors, T::get(&st, "block.deq_f32").f32s(), deq_bf16)
}

#[test]
fn fp8_checkpoint_matches_torch() {
    let (tensors, deq, deq_bf16) = fp8_tensors();
    let cfg = serde_json::json!({"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [128, 128]});
    let dir = ck_dir("fp8", cfg, &tensors);
    let model = QuantizedCheckpoint::open(&dir.0).unwrap();
    let layers = model.layers();
    assert_eq!(layers.len(), 1);
    let l = &layers[0];
    assert_eq!((l.out, l.inp), (300, 260));
    assert_eq!(l.stored_bytes, l.method.layer_bytes(300, 260).unwrap());
    assert_eq!(l.method.to_string(), "fp8-e4m3-block128x128");
    assert!(model.is_quantized_part("model.layers.0.mlp.down_proj.weight_scale_inv"));
    assert!(!model.is_quantized_part("lm_head.weight"), "an unquantized bf16 weight is copied");
    assert_round_trips(&model);
    // The unquantized lm_head loads as a dense layer, whole or a rank's rows.
    let lm =
        quant_kernels::tp::ReplicatedLinear::load(&model, "lm_head", &Default::default()).unwrap().unwrap();
    assert_eq!(lm.local().dequantize(quant_kernels::Parallelism::SERIAL).unwrap(), [1.0, 2.0, 0.0, -1.0]);
    let top = quant_kernels::tp::ColumnParallelLinear::load(&model, "lm_head", 1, 2, &Default::default())
        .unwrap()
        .unwrap();
    assert_eq!(top.local().dequantize(quant_kernels::Parallelism::SERIAL).unwrap(), [0.0, -1.0]);
    let out = qk_dequantize(&dir.0, "f32");
    assert!(same(&out.read_as::<f32>("model.layers.0.mlp.down_proj.weight").unwrap(), &deq));
    let out = qk_dequantize(&dir.0, "bf16");
    assert_eq!(out.read_as::<bf16>("model.layers.0.mlp.down_proj.weight").unwrap(), deq_bf16);
    assert_eq!(out.read("lm_head.weight").unwrap(), tensors[2].3);
}

#[test]
fn fp8_per_tensor_and_errors() {
    let (tensors, _, _) = fp8_tensors();
    let p = "model.layers.0.mlp.down_proj";
    // Per-tensor: one scale of shape [] multiplies every code.
    let codes = tensors[0].3.clone();
    let per_tensor: Tensors = vec![
        (format!("{p}.weight"), Dtype::F8E4M3, vec![300, 260], codes.clone()),
        (format!("{p}.weight_scale"), Dtype::F32, vec![], 0.5f32.to_le_bytes().to_vec()),
    ];
    let cfg = serde_json::json!({"quant_method": "fp8"});
    let dir = ck_dir("fp8-tensor", cfg.clone(), &per_tensor);
    let model = QuantizedCheckpoint::open(&dir.0).unwrap();
    let w: Vec<f32> = model.dequantize(p, quant_kernels::Parallelism::RAYON).unwrap();
    let fmt = quant_kernels::fp8::Fp8Format::E4M3;
    assert!(w.iter().zip(&codes).all(|(x, &c)| x.to_bits() == (fmt.decode(c) * 0.5).to_bits()));
    assert_round_trips(&model);

    let block = serde_json::json!({"quant_method": "fp8", "weight_block_size": [128, 128]});
    // Block config, but only a per-tensor scale stored.
    let r = QuantizedCheckpoint::open(&ck_dir("fp8-noinv", block.clone(), &per_tensor).0);
    assert_eq!(
        r.unwrap_err(),
        Error::Format(FormatError::MissingTensors(vec![format!("{p}.weight_scale_inv")]))
    );
    // A scale grid that does not match the block size.
    let r = QuantizedCheckpoint::open(
        &ck_dir(
            "fp8-grid",
            serde_json::json!({"quant_method": "fp8", "weight_block_size": [64, 128]}),
            &tensors,
        )
        .0,
    );
    assert!(matches!(r, Err(Error::Format(FormatError::TensorShape { .. }))), "{r:?}");
    // fmt contradicting the weights' dtype; a malformed block size.
    for bad in [
        serde_json::json!({"quant_method": "fp8", "fmt": "e5m2", "weight_block_size": [128, 128]}),
        serde_json::json!({"quant_method": "fp8", "weight_block_size": [128]}),
        serde_json::json!({"quant_method": "fp8", "weight_block_size": "128"}),
        serde_json::json!({"quant_method": "int8"}),
    ] {
        let r = QuantizedCheckpoint::open(&ck_dir("fp8-cfg", bad.clone(), &tensors).0);
        assert!(matches!(r, Err(Error::Format(FormatError::Config { .. }))), "{bad}: {r:?}");
    }
}

/// Stacked MoE experts `[E, out, in]` with `[E, sr, sc]` block scales (and `[E]` per-tensor
/// scales): each expert dequantizes like a 2-D weight; `qk dequantize` writes `[E, out, in]`.
#[test]
fn fp8_stacked_experts() {
    let (tensors, deq, _) = fp8_tensors();
    let p = "model.layers.0.mlp.experts.down_proj";
    let codes = tensors[0].3.clone();
    let scales: Vec<f32> =
        tensors[1].3.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    // Expert 1's scales are expert 0's times 2 (exact), so its weight is exactly 2 * deq.
    let doubled: Vec<f32> = scales.iter().map(|s| 2.0 * s).collect();
    let stacked_scales: Vec<u8> = scales.iter().chain(&doubled).flat_map(|s| s.to_le_bytes()).collect();
    let stacked: Tensors = vec![
        (format!("{p}.weight"), Dtype::F8E4M3, vec![2, 300, 260], [codes.clone(), codes.clone()].concat()),
        (format!("{p}.weight_scale_inv"), Dtype::F32, vec![2, 3, 3], stacked_scales),
    ];
    let cfg = serde_json::json!({"quant_method": "fp8", "weight_block_size": [128, 128]});
    let dir = ck_dir("fp8-moe", cfg, &stacked);
    let model = QuantizedCheckpoint::open(&dir.0).unwrap();
    let l = &model.layers()[0];
    assert_eq!((l.experts, l.out, l.inp), (2, 300, 260));
    assert_round_trips(&model);
    assert_eq!(l.stored_bytes, 2 * l.method.layer_bytes(300, 260).unwrap());
    let out = qk_dequantize(&dir.0, "f32");
    assert_eq!(out.info(&format!("{p}.weight")).unwrap().shape, [2, 300, 260]);
    let w = out.read_as::<f32>(&format!("{p}.weight")).unwrap();
    let want: Vec<f32> = deq.iter().copied().chain(deq.iter().map(|x| 2.0 * x)).collect();
    assert!(same(&w, &want));
    // The experts kernel equals the per-expert reference.
    let l2 = quant_kernels::fp8::Fp8Layout::block(300, 260, 128, 128).unwrap();
    let all: Vec<f32> = scales.iter().chain(&doubled).copied().collect();
    let mut fast = vec![half::f16::ZERO; 2 * 300 * 260];
    quant_kernels::fp8::fp8_dequantize_experts_into(
        &[codes.clone(), codes.clone()].concat(),
        &all,
        quant_kernels::fp8::Fp8Format::E4M3,
        2,
        &l2,
        &mut fast,
        quant_kernels::Parallelism::RAYON,
    )
    .unwrap();
    for (e, s) in [&scales, &doubled].into_iter().enumerate() {
        let mut naive = vec![half::f16::ZERO; 300 * 260];
        quant_kernels::fp8::fp8_dequantize_reference_into(
            &codes,
            s,
            quant_kernels::fp8::Fp8Format::E4M3,
            &l2,
            &mut naive,
        )
        .unwrap();
        assert_eq!(&fast[e * 300 * 260..(e + 1) * 300 * 260], &naive[..]);
    }
    // A scale grid without the expert dimension, and per-tensor [E] scales.
    let mut bad = stacked.clone();
    bad[1].2 = vec![3, 6];
    let r = QuantizedCheckpoint::open(
        &ck_dir(
            "fp8-moe-bad",
            serde_json::json!({"quant_method": "fp8", "weight_block_size": [128, 128]}),
            &bad,
        )
        .0,
    );
    assert!(matches!(r, Err(Error::Format(FormatError::TensorShape { .. }))), "{r:?}");
    let per_tensor: Tensors = vec![
        (format!("{p}.weight"), Dtype::F8E4M3, vec![2, 300, 260], [codes.clone(), codes].concat()),
        (
            format!("{p}.weight_scale"),
            Dtype::F32,
            vec![2],
            [0.5f32.to_le_bytes(), 4.0f32.to_le_bytes()].concat(),
        ),
    ];
    let dir = ck_dir("fp8-moe-tensor", serde_json::json!({"quant_method": "fp8"}), &per_tensor);
    let w: Vec<f32> =
        QuantizedCheckpoint::open(&dir.0).unwrap().dequantize(p, quant_kernels::Parallelism::RAYON).unwrap();
    let fmt = quant_kernels::fp8::Fp8Format::E4M3;
    let c = &per_tensor[0].3;
    assert!(
        w.iter()
            .zip(c)
            .enumerate()
            .all(|(i, (x, &b))| x.to_bits() == (fmt.decode(b) * if i < 78000 { 0.5 } else { 4.0 }).to_bits())
    );
}
