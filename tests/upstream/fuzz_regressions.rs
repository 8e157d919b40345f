//! Replays the committed fuzz inputs (`fuzz/regressions/<target>/`) and a batch of random
//! inputs through the fuzz target bodies, so a plain `cargo test` catches regressions.

use crate::common;

fn replay(target: &str, check: fn(&[u8]) -> bool) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("regression input failed: {}", path.display());
        }
        n += 1;
    }
    n
}

/// `min + rng.below(spread)` random bytes.
fn random_bytes(rng: &mut common::Rng, min: usize, spread: u64) -> Vec<u8> {
    let len = min + rng.below(spread) as usize;
    (0..len).map(|_| rng.below(256) as u8).collect()
}

#[test]
fn hqq_api_regressions() {
    assert!(replay("hqq_api", crate::fuzz_checks::hqq_api) >= 4);
}

/// 3000 random inputs (fixed seed) through the same body: no panic anywhere.
#[test]
fn hqq_api_random_inputs() {
    let mut rng = common::Rng(7);
    let mut ok = 0;
    for _ in 0..3000 {
        let mut data = random_bytes(&mut rng, 8, 64);
        data[0] = [1, 2, 3, 4, 8, 0, 5][rng.below(7) as usize];
        data[2] %= 40;
        data[3] %= 40;
        data[4] = [1, 2, 4, 8, 10, 16, 3, 0][rng.below(8) as usize];
        if rng.below(2) == 0 {
            data[5..8].fill(0); // lengths as the layout wants them
        }
        ok += crate::fuzz_checks::hqq_api(&data) as usize;
    }
    // Both outcomes must be exercised: successful calls (checked against the reference) and
    // rejected ones.
    assert!((300..2700).contains(&ok), "{ok} of 3000 calls succeeded");
}

#[test]
fn safetensors_header_regressions() {
    assert!(replay("safetensors_header", crate::fuzz_checks::safetensors_header) >= 5);
    let valid = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/safetensors_header/valid_two_tensors"),
    )
    .unwrap();
    assert!(crate::fuzz_checks::safetensors_header(&valid));
}

/// Every fixture shard truncated at every length and with every header byte flipped: typed
/// errors, never a panic.
#[test]
fn safetensors_header_mutations_of_a_real_shard() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gptq_checkpoints/tiny-llama-gptq-8bit-single/model.safetensors");
    let file = std::fs::read(path).unwrap();
    assert!(crate::fuzz_checks::safetensors_header(&file));
    let header_end = 8 + u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let mut accepted = 0;
    for cut in (0..file.len()).step_by(97).chain(header_end - 8..header_end + 8) {
        accepted += crate::fuzz_checks::safetensors_header(&file[..cut]) as usize;
    }
    assert_eq!(accepted, 0, "a truncated file was accepted");
    let mut data = file.clone();
    for i in 0..header_end {
        for flip in [0x01u8, 0x80] {
            data[i] ^= flip;
            crate::fuzz_checks::safetensors_header(&data);
            data[i] ^= flip;
        }
    }
}

#[test]
fn gptq_config_regressions() {
    assert!(replay("gptq_config", crate::fuzz_checks::gptq_config) >= 5);
}

/// Random JSON objects built from config keys and odd values: no panic, both outcomes.
#[test]
fn gptq_config_random_inputs() {
    let keys = [
        "bits",
        "group_size",
        "sym",
        "desc_act",
        "checkpoint_format",
        "format",
        "quant_method",
        "pack_dtype",
        "is_marlin_format",
    ];
    let values = [
        "4",
        "3",
        "-1",
        "0",
        "128",
        "true",
        "false",
        "null",
        "\"gptq\"",
        "\"gptq_v2\"",
        "\"int32\"",
        "[]",
        "{}",
        "1e400",
        "-9223372036854775809",
    ];
    let mut rng = common::Rng(3);
    let mut ok = 0;
    for _ in 0..2000 {
        let fields: Vec<String> = (0..rng.below(4))
            .map(|_| {
                format!(
                    "\"{}\": {}",
                    keys[rng.below(keys.len() as u64) as usize],
                    values[rng.below(values.len() as u64) as usize]
                )
            })
            .collect();
        ok += crate::fuzz_checks::gptq_config(format!("{{{}}}", fields.join(",")).as_bytes()) as usize;
    }
    assert!((100..1900).contains(&ok), "{ok}");
}

#[test]
fn uqff_regressions() {
    assert!(replay("uqff", crate::fuzz_checks::uqff) >= 4);
}

#[test]
fn uqff_roundtrip_regressions_and_random_layers() {
    replay("uqff_roundtrip", crate::fuzz_checks::uqff_roundtrip);
    let mut rng = common::Rng(17);
    let mut built = 0;
    for _ in 0..1500 {
        let data: Vec<u8> = (0..6 + rng.below(40) as usize).map(|_| rng.below(256) as u8).collect();
        built += crate::fuzz_checks::uqff_roundtrip(&data) as usize;
    }
    assert!((100..1500).contains(&built), "{built} of 1500 layers built");
}

#[test]
fn quant_config_regressions() {
    assert!(replay("quant_config", crate::fuzz_checks::quant_config) >= 12);
}

/// Random JSON objects of every config parser's keys (at the top level and nested as
/// `quantization_config`) and odd values: no panic, and each parser both accepts and refuses.
#[test]
fn quant_config_random_inputs() {
    let keys = [
        "quant_method",
        "bits",
        "w_bit",
        "group_size",
        "q_group_size",
        "zero_point",
        "version",
        "weight_block_size",
        "fmt",
        "desc_act",
        "checkpoint_format",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "hidden_size",
    ];
    let values = [
        "4",
        "8",
        "-1",
        "0",
        "3",
        "64",
        "128",
        "true",
        "false",
        "null",
        "\"awq\"",
        "\"fp8\"",
        "\"gptq\"",
        "\"gemm\"",
        "\"GEMV\"",
        "\"e4m3\"",
        "\"e5m2\"",
        "[128, 128]",
        "[0, 128]",
        "[1]",
        "{}",
        "1.5",
        "1e400",
        "18446744073709551615",
        "-9223372036854775809",
    ];
    let mut rng = common::Rng(29);
    let mut counts = [[0usize; 2]; 4];
    let object = |rng: &mut common::Rng| -> String {
        let fields: Vec<String> = (0..rng.below(5))
            .map(|_| {
                format!(
                    "\"{}\": {}",
                    keys[rng.below(keys.len() as u64) as usize],
                    values[rng.below(values.len() as u64) as usize]
                )
            })
            .collect();
        fields.join(",")
    };
    for _ in 0..3000 {
        let mut json = object(&mut rng);
        if rng.below(2) == 0 {
            // A model config's attention sizes (most keys above come from the quant configs).
            let heads = ["4", "8", "3", "0", "-1", "null", "\"4\""][rng.below(7) as usize];
            let hidden = ["64", "4096", "100", "0"][rng.below(4) as usize];
            let sep = if json.is_empty() { "" } else { ", " };
            json = format!("\"num_attention_heads\": {heads}, \"hidden_size\": {hidden}{sep}{json}");
        }
        if rng.below(3) == 0 {
            let nested = object(&mut rng);
            json = if json.is_empty() {
                format!("\"quantization_config\": {{{nested}}}")
            } else {
                format!("{json}, \"quantization_config\": {{{nested}}}")
            };
        }
        let outcomes = crate::fuzz_checks::quant_config_outcomes(format!("{{{json}}}").as_bytes());
        // `None`: not JSON (`1e400` is out of serde_json's range).
        for (count, outcome) in counts.iter_mut().zip(outcomes) {
            if let Some(o) = outcome {
                count[o as usize] += 1;
            }
        }
    }
    // [refused, accepted] per parser: AWQ, FP8, GPTQ, attention shape.
    eprintln!("[refused, accepted]: {counts:?}");
    for (parser, [refused, accepted]) in ["awq", "fp8", "gptq", "attention"].iter().zip(counts) {
        assert!(refused >= 150 && accepted >= 150, "{parser}: {accepted} accepted, {refused} refused");
    }
}

#[test]
fn safetensors_roundtrip_regressions() {
    assert!(replay("safetensors_roundtrip", crate::fuzz_checks::safetensors_roundtrip) >= 12);
}

/// Random declarations, data and writer misuse: no panic, the writer's files read back equal,
/// and both outcomes (written, refused or finished early) occur.
#[test]
fn safetensors_roundtrip_random_inputs() {
    let mut rng = common::Rng(41);
    let mut written = 0;
    for _ in 0..1500 {
        let mut data = random_bytes(&mut rng, 2, 96);
        data[0] %= 6;
        if rng.below(2) == 0 {
            // Short names from a small alphabet, so duplicates happen.
            for b in data.iter_mut().skip(2) {
                if *b > 0x80 {
                    *b = b"ab"[*b as usize % 2];
                }
            }
        }
        written += crate::fuzz_checks::safetensors_roundtrip(&data) as usize;
    }
    eprintln!("{written} of 1500 files written");
    assert!((300..1400).contains(&written), "{written} of 1500 files written");
}

#[test]
fn checkpoint_dir_regressions() {
    assert!(replay("checkpoint_dir", crate::fuzz_checks::checkpoint_dir) >= 15);
    for (seed, opens) in [
        ("gptq_single", true),
        ("awq_sharded", true),
        ("fp8_experts_block", true),
        ("lora_adapter", false),
        ("moe_stacked_fp8", true),
        ("moe_stacked_bf16", false),
        ("moe_mixtral_missing", false),
        ("uqff_beside_dense", false),
        ("index_parent_dir", false),
        ("index_absolute", false),
    ] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions/checkpoint_dir")
            .join(seed);
        assert_eq!(crate::fuzz_checks::checkpoint_dir(&std::fs::read(&path).unwrap()), opens, "{seed}");
    }
}

/// A safetensors file's bytes from `(name, dtype, shape, data)`.
fn st_file(tensors: &[(String, &str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut at = 0;
    for (name, dtype, shape, data) in tensors {
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + data.len()]}),
        );
        at += data.len();
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    tensors.iter().for_each(|t| out.extend_from_slice(&t.3));
    out
}

/// A `checkpoint_dir` input: the three JSON files (empty: absent) and the shards.
fn ck_input(config: &str, quantize_config: &str, index: &str, shards: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut sections: Vec<Vec<u8>> = vec![config.into(), quantize_config.into(), index.into()];
    for (name, bytes) in shards {
        sections.push(name.as_bytes().to_vec());
        sections.push(bytes.clone());
    }
    sections.join(crate::fuzz_checks::CHECKPOINT_DIR_SEP)
}

/// `input` with every `from` replaced by `to` (bytes, so binary shards stay intact).
fn replace(input: &[u8], from: &str, to: &str) -> Vec<u8> {
    let (from, mut out, mut i) = (from.as_bytes(), Vec::new(), 0);
    while i < input.len() {
        if input[i..].starts_with(from) {
            out.extend_from_slice(to.as_bytes());
            i += from.len();
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

type Tensors = Vec<(String, &'static str, Vec<usize>, Vec<u8>)>;

fn bytes(rng: &mut common::Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.below(256) as u8).collect()
}

fn f16s(rng: &mut common::Rng, n: usize) -> Vec<u8> {
    (0..n).flat_map(|_| half::f16::from_f32(rng.f32_in(0.001, 0.1)).to_le_bytes()).collect()
}

/// A random valid layer of `scheme` (0 GPTQ, 1 AWQ, 2 FP8) and its config.
fn random_layer(rng: &mut common::Rng, scheme: u64, prefix: &str) -> (String, Tensors) {
    let t = |part: &str, dtype, shape: Vec<usize>, data| (format!("{prefix}.{part}"), dtype, shape, data);
    match scheme {
        0 => {
            let bits = [2usize, 4, 8][rng.below(3) as usize];
            let (k, n) = ([32, 64][rng.below(2) as usize], [16, 32][rng.below(2) as usize]);
            let group = [32, k][rng.below(2) as usize];
            let g = k / group;
            let act = rng.below(2) == 0;
            let g_idx: Vec<u8> = (0..k).flat_map(|i| ((i / group) as i32).to_le_bytes()).collect();
            let mut v = vec![
                t("qweight", "I32", vec![k * bits / 32, n], bytes(rng, 4 * k * bits / 32 * n)),
                t("qzeros", "I32", vec![g, n * bits / 32], bytes(rng, 4 * g * n * bits / 32)),
                t("scales", "F16", vec![g, n], f16s(rng, g * n)),
            ];
            if act {
                v.push(t("g_idx", "I32", vec![k], g_idx));
            }
            let cfg = format!(
                r#"{{"quant_method": "gptq", "bits": {bits}, "group_size": {group}, "desc_act": {act}}}"#
            );
            (cfg, v)
        }
        1 => {
            let (k, n) = ([32, 64][rng.below(2) as usize], [8, 16][rng.below(2) as usize]);
            let group = [32, k][rng.below(2) as usize];
            let g = k / group;
            let mut v = vec![
                t("qweight", "I32", vec![k, n / 8], bytes(rng, 4 * k * n / 8)),
                t("qzeros", "I32", vec![g, n / 8], bytes(rng, 4 * g * n / 8)),
                t("scales", "F16", vec![g, n], f16s(rng, g * n)),
            ];
            if rng.below(2) == 0 {
                v.push(t("bias", "F16", vec![n], f16s(rng, n)));
            }
            (
                format!(
                    r#"{{"quant_method": "awq", "w_bit": 4, "q_group_size": {group}, "version": "gemm"}}"#
                ),
                v,
            )
        }
        _ => {
            let (rows, cols) = (1 + rng.below(6) as usize, 1 + rng.below(9) as usize);
            let experts = [1, 1, 2, 3][rng.below(4) as usize];
            let dtype = ["F8_E4M3", "F8_E5M2"][rng.below(2) as usize];
            let stacked =
                |inner: &[usize]| if experts > 1 { [&[experts][..], inner].concat() } else { inner.to_vec() };
            let mut v = vec![t("weight", dtype, stacked(&[rows, cols]), bytes(rng, experts * rows * cols))];
            let cfg = if rng.below(2) == 0 {
                let (br, bc) = (1 + rng.below(4) as usize, 1 + rng.below(4) as usize);
                let (sr, sc) = (rows.div_ceil(br), cols.div_ceil(bc));
                v.push(t("weight_scale_inv", "F16", stacked(&[sr, sc]), f16s(rng, experts * sr * sc)));
                format!(r#"{{"quant_method": "fp8", "weight_block_size": [{br}, {bc}]}}"#)
            } else {
                let shape = if experts > 1 { vec![experts] } else { vec![] };
                v.push(t("weight_scale", "F16", shape, f16s(rng, experts)));
                r#"{"quant_method": "fp8"}"#.to_string()
            };
            (cfg, v)
        }
    }
}

/// A random valid checkpoint (one scheme, two layers, a single file or two shards under an
/// index), then, half of the time, one corruption: no panic, nothing outside read, and both
/// outcomes occur.
#[test]
fn checkpoint_dir_random_checkpoints() {
    let mut rng = common::Rng(53);
    let mut opened = 0;
    let runs = 400;
    for _ in 0..runs {
        let scheme = rng.below(3);
        let (cfg, mut a) = random_layer(&mut rng, scheme, "model.layers.0.mlp.up_proj");
        let (_, b) = random_layer(&mut rng, scheme, "model.layers.1.self_attn.q_proj");
        // Both layers share one config: only the first's parameters are valid for the second
        // when the random draws agree, which also exercises shape errors.
        let config =
            format!(r#"{{"num_attention_heads": 4, "hidden_size": 64, "quantization_config": {cfg}}}"#);
        let mut input = if rng.below(2) == 0 {
            a.extend(b);
            ck_input(&config, "", "", &[("", st_file(&a))])
        } else {
            let names = ["model-00001-of-00002.safetensors", "sub/model-00002-of-00002.safetensors"];
            let map: serde_json::Map<String, serde_json::Value> = a
                .iter()
                .map(|t| (t.0.clone(), names[0].into()))
                .chain(b.iter().map(|t| (t.0.clone(), names[1].into())))
                .collect();
            let index = serde_json::json!({"metadata": {}, "weight_map": map}).to_string();
            ck_input("", &cfg, &index, &[(names[0], st_file(&a)), (names[1], st_file(&b))])
        };
        match rng.below(10) {
            0 => {
                let i = rng.below(input.len() as u64) as usize;
                input[i] ^= 1 << rng.below(8);
            }
            1 => input.truncate(rng.below(input.len() as u64) as usize),
            2 => input = replace(&input, "model-00001", "../model-00001"),
            3 => input = replace(&input, "\"bits\": 4", "\"bits\": 8"),
            4 => input = replace(&input, "\"weight_block_size\": [", "\"weight_block_size\": [0, "),
            _ => {}
        }
        opened += crate::fuzz_checks::checkpoint_dir(&input) as usize;
    }
    eprintln!("{opened} of {runs} checkpoints opened");
    assert!((runs / 5..runs * 9 / 10).contains(&opened), "{opened} of {runs} checkpoints opened");
}
