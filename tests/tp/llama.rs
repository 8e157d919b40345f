//! The runtime example (`examples/llama/`) against transformers: tiny random Llama (rope_theta
//! 50000, head_dim 32 != hidden/heads, GQA), Qwen2 (q/k/v biases, tied embeddings), Mixtral
//! (4 experts, top-2) and Mistral (sliding window 4) saved by transformers in bf16, with
//! transformers' f32 logits for a prompt and five greedy steps
//! (`scripts/gen_llama_fixtures.py`). Prefill and decode logits within
//! `1e-4 * max(1, max|logit|)` and the same greedy ids at world sizes 1, 2 and 4 (threads over
//! `LocalComm`); quantized checkpoints, load-time quantization and LoRA; bad input as typed
//! errors; the command line.

#[allow(dead_code)]
#[path = "../../examples/llama/model.rs"]
mod model;

use crate::common::{CheckpointDir, fixture_path};
use model::{Config, Generation, Model, ModelError};
use quant_kernels::io::safetensors::to_le_bytes;
use quant_kernels::io::{Checkpoint, Dtype, LoraAdapter, QuantizedCheckpoint};
use quant_kernels::tp::{Comm, LayerSource, LoadOptions, LocalComm};
use quant_kernels::{Parallelism, QuantMethod};
use std::path::Path;

const NEW: usize = 5;

struct Reference {
    tokens: Vec<u32>,
    prefill: Vec<f32>,
    steps: Vec<f32>,
    greedy: Vec<usize>,
}

fn reference(dir: &Path, file: &str) -> Reference {
    reference_at(&dir.join(file))
}

fn reference_at(path: &Path) -> Reference {
    let f = quant_kernels::io::SafetensorsFile::open(path).unwrap();
    let ints = |n: &str| -> Vec<i64> {
        f.read(n).unwrap().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    };
    Reference {
        tokens: ints("tokens").iter().map(|&t| t as u32).collect(),
        prefill: f.read_as::<f32>("prefill_logits").unwrap(),
        steps: f.read_as::<f32>("step_logits").unwrap(),
        greedy: ints("greedy_ids").iter().map(|&t| t as usize).collect(),
    }
}

fn config(dir: &Path) -> Config {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    Config::from_json(&serde_json::from_str(&text).unwrap()).unwrap()
}

/// Every rank of `world` loads `src` and generates; rank 0's result (all ranks must agree
/// to the bit: they hold the same all-reduced activations).
fn run<S: LayerSource + Sync>(
    src: &S,
    cfg: &Config,
    world: usize,
    opts: &LoadOptions<'_>,
    tokens: &[u32],
) -> Result<Generation, ModelError> {
    let comms = LocalComm::group(world);
    let mut results: Vec<Result<Generation, ModelError>> = std::thread::scope(|s| {
        let handles: Vec<_> = comms
            .iter()
            .map(|c| {
                s.spawn(move || {
                    let mut m = Model::load(src, cfg, c.rank(), world, opts)?;
                    model::generate(&mut m, c as &dyn Comm, tokens, NEW)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = results.remove(0)?;
    for r in results {
        let g = r?;
        assert_eq!(g.step_logits, first.step_logits, "ranks disagree");
    }
    Ok(first)
}

/// `max|a - b| / max(1, max|b|)`.
fn gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

#[test]
fn logits_equal_transformers_at_every_world_size() {
    for name in ["llama", "qwen2", "mixtral", "mistral"] {
        let dir = fixture_path(&format!("llama/{name}"));
        let (cfg, want) = (config(&dir), reference(&dir, "reference.safetensors"));
        let ck = Checkpoint::open(&dir).unwrap();
        let mut world1 = None;
        for world in [1, 2, 4] {
            let g = run(&ck, &cfg, world, &LoadOptions::default(), &want.tokens).unwrap();
            let (p, s) = (gap(&g.prefill_logits, &want.prefill), gap(&g.step_logits, &want.steps));
            eprintln!("{name} world {world}: prefill {p:.2e} decode {s:.2e} of max|logit|");
            assert!(p <= 1e-4 && s <= 1e-4, "{name} world {world}: prefill {p:e}, decode {s:e}");
            assert_eq!(g.greedy_ids, want.greedy, "{name} world {world}");
            let w1 = world1.get_or_insert_with(|| g.step_logits.clone());
            assert!(gap(&g.step_logits, w1) <= 1e-4, "{name} world {world} vs 1");
        }
        if cfg.sliding_window.is_some() {
            // The window (4 of the 6-token prompt) matters: attending to every key differs.
            let all = Config { sliding_window: None, ..cfg.clone() };
            let g = run(&ck, &all, 1, &LoadOptions::default(), &want.tokens).unwrap();
            assert!(gap(&g.prefill_logits, &want.prefill) > 1e-3, "{name}: the window changed nothing");
        }
    }
}

#[test]
fn configs_parse_both_rope_spellings_and_refuse_what_is_not_built() {
    let dir = fixture_path("llama/llama");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let v5: serde_json::Value = serde_json::from_str(&text).unwrap();
    let cfg = Config::from_json(&v5).unwrap();
    assert_eq!((cfg.rope_theta, cfg.head_dim, cfg.heads, cfg.kv_heads), (50000.0, 32, 4, 2));
    // transformers 4 spelling: `rope_theta` at the top level.
    let mut v4 = v5.clone();
    let o = v4.as_object_mut().unwrap();
    o.remove("rope_parameters");
    o.insert("rope_theta".into(), serde_json::json!(50000.0));
    assert_eq!(Config::from_json(&v4).unwrap(), cfg);

    let input = |v: serde_json::Value| match Config::from_json(&v) {
        Err(ModelError::Input(m)) => m,
        other => panic!("{other:?}"),
    };
    let with = |k: &str, val: serde_json::Value| {
        let mut v = v5.clone();
        v.as_object_mut().unwrap().insert(k.into(), val);
        v
    };
    let without = |k: &str| {
        let mut v = v5.clone();
        v.as_object_mut().unwrap().remove(k);
        v
    };
    assert!(
        input(with("architectures", serde_json::json!(["GPT2LMHeadModel"]))).contains("unknown architecture")
    );
    assert!(input(without("hidden_size")).contains("`hidden_size` is missing"));
    assert!(input(with("num_attention_heads", serde_json::json!(0))).contains("not a positive integer"));
    assert!(input(without("rope_parameters")).contains("rope_theta"));
    let llama3 = serde_json::json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0});
    assert!(input(with("rope_parameters", llama3)).contains("llama3"));
}

#[test]
fn bad_world_sizes_and_tokens_are_input_errors() {
    let dir = fixture_path("llama/llama");
    let (cfg, ck) = (config(&dir), Checkpoint::open(&dir).unwrap());
    // 4 query heads, 2 KV heads: 3 ranks cannot split them.
    match Model::load(&ck, &cfg, 0, 3, &LoadOptions::default()) {
        Err(ModelError::Input(m)) => assert!(m.contains("world size 3"), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("world size 3 loaded"),
    }
    let mut m = Model::load(&ck, &cfg, 0, 1, &LoadOptions::default()).unwrap();
    let c = quant_kernels::tp::SingleComm;
    match m.forward(&c, &[5, 128]) {
        Err(ModelError::Input(msg)) => assert!(msg.contains("token id 128"), "{msg}"),
        other => panic!("{:?}", other.map(|v| v.len())),
    }
    // A checkpoint that lacks a layer the config implies names it.
    let two = Config { layers: 3, ..cfg.clone() };
    match Model::load(&ck, &two, 0, 1, &LoadOptions::default()) {
        Err(ModelError::Input(m)) => assert!(m.contains("model.layers.2."), "{m}"),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a missing layer loaded"),
    }
}

/// The checkpoint in `dir` with every projection replaced by `method`'s quantization of it,
/// dequantized (whole layers, as world size 1 quantizes them), stored f32.
fn dequantized_copy(dir: &Path, method: QuantMethod, tag: &str) -> CheckpointDir {
    let ck = Checkpoint::open(dir).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let projections = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
    let tensors: Vec<_> = ck
        .tensor_names()
        .map(|name| {
            let shape = ck.info(name).unwrap().shape.clone();
            let mut w = ck.read_floats(name).unwrap().to_f32();
            if projections.iter().any(|p| name.ends_with(&format!("{p}.weight"))) {
                let q = method.quantize(&w, shape[0], shape[1], None, Parallelism::SERIAL).unwrap();
                w = q.dequantize::<f32>(Parallelism::SERIAL).unwrap();
            }
            (name.to_string(), Dtype::F32, shape, to_le_bytes(&w))
        })
        .collect();
    CheckpointDir::new(tag, &config, &tensors)
}

/// Load-time quantization (`--isq`): at world size 1 the logits equal those of the same model
/// with its weights quantized and dequantized offline (the runtime computes the quantized model
/// exactly); the prompt's logits' distance to transformers' f32 ones is printed per method (the
/// quantization error of this tiny random model, recorded in the note) and bounded.
#[test]
fn load_time_quantization_is_the_quantized_model() {
    let dir = fixture_path("llama/llama");
    let (cfg, want, ck) =
        (config(&dir), reference(&dir, "reference.safetensors"), Checkpoint::open(&dir).unwrap());
    // (method, bound on the prompt's logit gap to f32).
    let methods = [
        ("int8-sym-channel", 0.05),
        ("hqq-8bit-g64-axis0", 0.05),
        ("fp8-e4m3-tensor", 0.15),
        ("int4-asym-g32", 0.6),
        ("hqq-4bit-g64-axis0", 0.6),
    ];
    for (name, bound) in methods {
        let method: QuantMethod = name.parse().unwrap();
        let opts = LoadOptions { isq: Some(method), par: Parallelism::RAYON, ..Default::default() };
        let offline = dequantized_copy(&dir, method, &format!("isq-{name}"));
        let exact =
            run(&Checkpoint::open(&offline.0).unwrap(), &cfg, 1, &LoadOptions::default(), &want.tokens)
                .unwrap();
        for world in [1, 2] {
            let g = run(&ck, &cfg, world, &opts, &want.tokens).unwrap();
            let p = gap(&g.prefill_logits, &want.prefill);
            eprintln!(
                "--isq {name} world {world}: prompt logits {p:.2e} of max|logit| from f32, ids {:?}",
                g.greedy_ids
            );
            assert!(p > 0.0 && p <= bound, "{name} world {world}: {p:e}");
            if world == 1 {
                let (pe, se) =
                    (gap(&g.prefill_logits, &exact.prefill_logits), gap(&g.step_logits, &exact.step_logits));
                assert!(pe <= 1e-4 && se <= 1e-4, "{name}: {pe:e} {se:e} from the dequantized model");
                assert_eq!(g.greedy_ids, exact.greedy_ids, "{name}");
            }
        }
    }
}

/// A PEFT adapter (rsLoRA r 4 on q/v/down_proj) merged as the layers load equals peft's
/// `merge_and_unload()` model, at world sizes 1, 2 and 4 (each rank merges its share).
#[test]
fn lora_merged_equals_peft() {
    let dir = fixture_path("llama/llama");
    let (cfg, want, ck) =
        (config(&dir), reference(&dir, "reference_lora.safetensors"), Checkpoint::open(&dir).unwrap());
    let base = reference(&dir, "reference.safetensors");
    assert!(gap(&base.prefill, &want.prefill) > 1e-2, "the adapter changes the logits");
    let adapter = LoraAdapter::open(fixture_path("llama/llama_lora")).unwrap();
    for world in [1, 2, 4] {
        let opts = LoadOptions { lora: Some(&adapter), ..Default::default() };
        let g = run(&ck, &cfg, world, &opts, &want.tokens).unwrap();
        let (p, s) = (gap(&g.prefill_logits, &want.prefill), gap(&g.step_logits, &want.steps));
        assert!(p <= 1e-4 && s <= 1e-4, "world {world}: prefill {p:e}, decode {s:e}");
        assert_eq!(g.greedy_ids, want.greedy, "world {world}");
    }
}

/// The example's binary beside this test binary (`cargo test` builds examples), if built.
pub fn example_bin() -> Option<std::path::PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("examples").join(format!("llama{}", std::env::consts::EXE_SUFFIX));
    bin.exists().then_some(bin)
}

/// The command line: the output file holds transformers' logits and greedy ids; bad input is
/// one line on stderr and exit status 2.
#[test]
fn command_line_writes_the_logits_and_refuses_bad_input() {
    let Some(bin) = example_bin() else {
        eprintln!(
            "skipping: the llama example is not built (`cargo test` builds it; a filtered run may not)"
        );
        return;
    };
    let dir = fixture_path("llama/mixtral");
    let want = reference(&dir, "reference.safetensors");
    let tmp = std::env::temp_dir().join(format!("qk-llama-cli-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let out = tmp.join("out.safetensors");
    let run = |dir: &Path, extra: &[&str]| {
        std::process::Command::new(&bin)
            .arg(dir)
            .args(["--tokens", "5,17,3,99,42,7", "--new", "5", "--out"])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let o = run(&dir, &["--world-size", "2", "--threads", "2"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("tokens/s") && stdout.contains("pure threaded read"), "{stdout}");
    let f = quant_kernels::io::SafetensorsFile::open(&out).unwrap();
    assert_eq!(f.info("prefill_logits").unwrap().shape, [6, 128]);
    assert!(gap(&f.read_as::<f32>("prefill_logits").unwrap(), &want.prefill) <= 1e-4);
    assert!(gap(&f.read_as::<f32>("step_logits").unwrap(), &want.steps) <= 1e-4);
    let ids: Vec<usize> = f
        .read("greedy_ids")
        .unwrap()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
        .collect();
    assert_eq!(ids, want.greedy);

    let refused = |o: std::process::Output, what: &str| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{what}: {err}");
        assert!(err.contains(what), "{what}: {err}");
    };
    refused(run(&dir, &["--world-size", "3"]), "world size 3");
    let o = std::process::Command::new(&bin)
        .arg(&dir)
        .args(["--tokens", "5,128", "--new", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    refused(o, "token id 128");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    for (key, value, what) in [
        ("architectures", Some(serde_json::json!(["BertModel"])), "unknown architecture `BertModel`"),
        ("num_local_experts", None, "`num_local_experts` is missing"),
    ] {
        let mut c = config.clone();
        match value {
            Some(v) => c.as_object_mut().unwrap().insert(key.into(), v),
            None => c.as_object_mut().unwrap().remove(key),
        };
        let bad = CheckpointDir::new(&format!("llama-cli-{key}"), &c, &[]);
        refused(run(&bad.0, &[]), what);
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

/// Checkpoints quantized by upstream tools: four tiny Llamas by auto-gptq 0.7.1 (4-bit act-order
/// group 32 sharded with an index; 8-bit with `quantize_config.json`; 3-bit act-order sharded;
/// 4-bit with GPTQModel's v2 zeros), against transformers with the weights GPTQModel
/// dequantized; `llama` packed 4-bit AWQ GEMM by AutoAWQ 0.2.9, against transformers with
/// AutoAWQ's dequantization; `llama` in FP8 E4M3 with 32x32 block scales (torch's float8),
/// against transformers with those weights dequantized. A world size whose cut splits a group
/// or a packed word is refused when the layer loads.
#[test]
fn quantized_checkpoints_give_transformers_logits() {
    let gptq = |name: &str| (format!("llama/gptq/{name}"), format!("llama/gptq/{name}.safetensors"));
    let upstream =
        |name: &str| (format!("gptq_checkpoints/{name}"), format!("llama/gptq/{name}.safetensors"));
    let own = |name: &str| (format!("llama/{name}"), format!("llama/{name}/reference.safetensors"));
    let cases = [
        (upstream("tiny-llama-gptq-4bit"), &[1, 2, 4][..]),
        (upstream("tiny-llama-gptq-8bit-single"), &[1, 2]),
        (gptq("tiny-llama-gptq-3bit"), &[1]),
        (gptq("tiny-llama-gptq-4bit-v2"), &[1, 2]),
        (own("llama_awq"), &[1, 2, 4]),
        (own("llama_fp8"), &[1, 2, 4]),
    ];
    for ((dir, refs), worlds) in cases {
        let dir = fixture_path(&dir);
        let (cfg, want) = (config(&dir), reference_at(&fixture_path(&refs)));
        let src = QuantizedCheckpoint::open(&dir).unwrap();
        for &world in worlds {
            let g = run(&src, &cfg, world, &LoadOptions::default(), &want.tokens).unwrap();
            let (p, s) = (gap(&g.prefill_logits, &want.prefill), gap(&g.step_logits, &want.steps));
            eprintln!("{} world {world}: prefill {p:.2e} decode {s:.2e}", dir.display());
            assert!(p <= 1e-4 && s <= 1e-4, "{} world {world}: prefill {p:e}, decode {s:e}", dir.display());
            assert_eq!(g.greedy_ids, want.greedy, "{} world {world}", dir.display());
        }
    }
    // Cuts the packing cannot take: o_proj's 16 inputs per rank of 4 split a 32-group (8-bit,
    // 4-bit v2); k/v_proj's 16 outputs per rank of 2 split a 3-bit zero-point word (32 columns).
    for (dir, world) in [
        ("gptq_checkpoints/tiny-llama-gptq-8bit-single", 4),
        ("llama/gptq/tiny-llama-gptq-4bit-v2", 4),
        ("llama/gptq/tiny-llama-gptq-3bit", 2),
    ] {
        let dir = fixture_path(dir);
        let src = QuantizedCheckpoint::open(&dir).unwrap();
        let err = run(&src, &config(&dir), world, &LoadOptions::default(), &[1, 2]).err().unwrap();
        assert!(matches!(err, ModelError::Kernel(quant_kernels::Error::Tp(_))), "{err}");
    }
}

/// `LoadOptions::activations = Int8` on the upstream 4-bit checkpoints (auto-gptq act-order
/// sharded, AutoAWQ): every projection multiplies with int8 activations (the logits move off
/// the f32 path's), and the logits stay near transformers' (max|Δ| / max|logit|; measured:
/// GPTQ 4.9-6.9e-3, AWQ 2.1-2.4e-2 on these random 2-layer models, which amplify any weight or
/// activation error; the per-layer bound is held in `tests/oracle/int8_path.rs`) with the
/// same greedy tokens, at world sizes 1 and 2.
#[test]
fn int8_activations_stay_near_transformers() {
    use quant_kernels::matmul::Activations;
    let cases = [
        ("gptq_checkpoints/tiny-llama-gptq-4bit", "llama/gptq/tiny-llama-gptq-4bit.safetensors"),
        ("llama/llama_awq", "llama/llama_awq/reference.safetensors"),
    ];
    let int8 = LoadOptions { activations: Activations::Int8, ..Default::default() };
    for (dir, refs) in cases {
        let dir = fixture_path(dir);
        let (cfg, want) = (config(&dir), reference_at(&fixture_path(refs)));
        let src = QuantizedCheckpoint::open(&dir).unwrap();
        let exact = run(&src, &cfg, 1, &LoadOptions::default(), &want.tokens).unwrap();
        for world in [1, 2] {
            let g = run(&src, &cfg, world, &int8, &want.tokens).unwrap();
            assert_ne!(g.prefill_logits, exact.prefill_logits, "{} world {world}: still f32", dir.display());
            let (p, s) = (gap(&g.prefill_logits, &want.prefill), gap(&g.step_logits, &want.steps));
            eprintln!("{} int8 activations world {world}: prefill {p:.2e} decode {s:.2e}", dir.display());
            assert!(p <= 4e-2 && s <= 4e-2, "{} world {world}: prefill {p:e}, decode {s:e}", dir.display());
            assert_eq!(g.greedy_ids, want.greedy, "{} world {world}", dir.display());
            // Without the schemes' own copies of the weights: the same bits.
            let dropped = LoadOptions { drop_scheme_weight: true, ..int8 };
            let d = run(&src, &cfg, world, &dropped, &want.tokens).unwrap();
            assert_eq!(
                (d.prefill_logits, d.step_logits),
                (g.prefill_logits, g.step_logits),
                "{}",
                dir.display()
            );
        }
    }
}

/// HQQ through UQFF from the upstream tool: every projection of `llama` quantized by hqq
/// 0.2.8.post1 (4-bit, group 64, axis 0, its optimizer) in a UQFF 1.2.0 file beside the dense
/// rest, against transformers with hqq's dequantized weights, world sizes 1, 2, 4.
#[test]
fn hqq_uqff_checkpoint_gives_transformers_logits() {
    let dir = fixture_path("llama/llama_hqq_uqff");
    let (cfg, want) = (config(&dir), reference(&dir, "reference.safetensors"));
    let model = quant_kernels::io::UqffModel::open(&dir).unwrap();
    assert_eq!(model.layer_names().count(), 14);
    for world in [1, 2, 4] {
        let g = run(&model, &cfg, world, &LoadOptions::default(), &want.tokens).unwrap();
        let (p, s) = (gap(&g.prefill_logits, &want.prefill), gap(&g.step_logits, &want.steps));
        assert!(p <= 1e-4 && s <= 1e-4, "world {world}: prefill {p:e}, decode {s:e}");
        assert_eq!(g.greedy_ids, want.greedy, "world {world}");
    }
}

/// HQQ layers from a UQFF 1.2 file beside the dense rest (every projection of `llama`
/// quantized by this crate's hqq port, 4-bit group 64 with the optimizer): the runtime's
/// logits equal those of the same model with the layers dequantized, at every world size
/// the HQQ grouping can be cut for.
#[test]
fn hqq_layers_from_uqff_run_as_the_dequantized_model() {
    use quant_kernels::hqq::{Axis, HqqConfig, quantize_hqq};
    use quant_kernels::io::uqff::{Extension, UqffHqqLayer, write_v1};
    let dir = fixture_path("llama/llama");
    let (cfg, tokens) = (config(&dir), reference(&dir, "reference.safetensors").tokens);
    let ck = Checkpoint::open(&dir).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let hqq = HqqConfig { optimization_steps: Some(10), ..HqqConfig::new(4, 64, Axis::Zero) };
    let (mut dense, mut dequantized, mut layers) = (Vec::new(), Vec::new(), Vec::new());
    for name in ck.tensor_names() {
        let shape = ck.info(name).unwrap().shape.clone();
        let w = ck.read_floats(name).unwrap().to_f32();
        match name.strip_suffix(".weight").filter(|p| p.ends_with("proj")) {
            Some(prefix) => {
                let q = quantize_hqq(&w, shape[0], shape[1], &hqq, Parallelism::RAYON).unwrap();
                let layer =
                    UqffHqqLayer::from_quantized(&q, &hqq, quant_kernels::FloatType::F32, None).unwrap();
                let d = layer.dequantize::<f32>(Parallelism::SERIAL).unwrap();
                dequantized.push((name.to_string(), Dtype::F32, shape, to_le_bytes(&d)));
                layers.push((prefix.to_string(), layer));
            }
            None => {
                dense.push((name.to_string(), Dtype::F32, shape.clone(), to_le_bytes(&w)));
                dequantized.push((name.to_string(), Dtype::F32, shape, to_le_bytes(&w)));
            }
        }
    }
    assert_eq!(layers.len(), 14);
    let uqff = CheckpointDir::new("llama-uqff", &json, &dense);
    std::fs::write(uqff.0.join("layers.uqff"), write_v1(&layers, Extension::Refuse).unwrap()).unwrap();
    let plain = CheckpointDir::new("llama-uqff-dequantized", &json, &dequantized);
    let model = quant_kernels::io::UqffModel::open(&uqff.0).unwrap();
    let exact = Checkpoint::open(&plain.0).unwrap();
    let mut ran = 0;
    for world in [1, 2, 4] {
        let want = run(&exact, &cfg, world, &LoadOptions::default(), &tokens).unwrap();
        match run(&model, &cfg, world, &LoadOptions::default(), &tokens) {
            Ok(g) => {
                let (p, s) =
                    (gap(&g.prefill_logits, &want.prefill_logits), gap(&g.step_logits, &want.step_logits));
                assert!(p <= 1e-4 && s <= 1e-4, "world {world}: prefill {p:e}, decode {s:e}");
                assert_eq!(g.greedy_ids, want.greedy_ids, "world {world}");
                ran += 1;
            }
            Err(e) => eprintln!("world {world}: {e}"),
        }
    }
    assert!(ran >= 2, "{ran} world sizes ran");
}
