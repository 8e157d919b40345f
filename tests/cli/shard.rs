//! `qk shard` on the tiny GPTQ checkpoints: every rank directory is a valid checkpoint (`qk
//! inspect` passes) whose `qk dequantize` equals, bit for bit in f32, the plan's slice of the
//! whole checkpoint's `qk dequantize`; a world size that cuts a group exits 2 naming the layer
//! and the nearest legal world sizes, before anything is written. Synthetic AWQ and FP8
//! checkpoints of the same shapes go through the same generic path.

use quant_kernels::io::SafetensorsFile;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn qk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qk")).args(args).output().unwrap()
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn tiny(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gptq_checkpoints").join(name)
}

fn temp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("qk-shard-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// `qk dequantize DIR --dtype f32` into `out`.
fn dequantize(dir: &Path, out: &Path) -> SafetensorsFile {
    ok(&qk(&["dequantize", dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--dtype", "f32"]));
    SafetensorsFile::open(out).unwrap()
}

/// The tiny llamas: hidden 64, intermediate 128, 4 heads and 2 KV heads of 16. Rank `r`'s part
/// of a dequantized `[out, in]` weight (or `[out]` bias): `Some((dim, range))`, or `None` when
/// it is whole (replicated layers, and biases of row-parallel layers).
fn expected_part(tensor: &str, r: usize, w: usize) -> Option<(usize, std::ops::Range<usize>)> {
    let even = |n: usize| r * n / w..(r + 1) * n / w;
    let (prefix, bias) = match tensor.strip_suffix(".bias") {
        Some(p) => (p, true),
        None => (tensor.strip_suffix(".weight")?, false),
    };
    match prefix.rsplit('.').next()? {
        "q_proj" => Some((0, even(64))),
        // More ranks than KV heads: each pair of ranks shares (replicates) one head.
        "k_proj" | "v_proj" if w > 2 => Some((0, (r / (w / 2)) * 16..(r / (w / 2) + 1) * 16)),
        "k_proj" | "v_proj" => Some((0, even(32))),
        "gate_proj" | "up_proj" => Some((0, even(128))),
        "o_proj" if !bias => Some((1, even(64))),
        "down_proj" if !bias => Some((1, even(128))),
        _ => None,
    }
}

/// `qk shard DIR` at `world`, then every rank directory against the whole: `qk inspect`
/// passes, the file layout and configs are the input's, and `qk dequantize --dtype f32` gives
/// each tensor's planned slice of the whole's, byte for byte. Returns the split tensors checked.
fn check_shards(dir: &Path, whole: &SafetensorsFile, world: usize, work: &Path, layers: usize) -> usize {
    let out = work.join(format!("w{world}"));
    let ws = world.to_string();
    let text =
        ok(&qk(&["shard", dir.to_str().unwrap(), "--world-size", &ws, "--out", out.to_str().unwrap()]));
    assert!(text.contains(&format!("wrote {world} ranks")), "{text}");
    let mut split = 0;
    for rank in 0..world {
        let rank_dir = out.join(format!("rank-{rank}-of-{world}"));
        let listing = ok(&qk(&["inspect", rank_dir.to_str().unwrap()]));
        assert!(listing.contains(&format!("{layers} quantized layers")), "{listing}");
        // Same files as the input: an index and its shards, or one model.safetensors.
        let indexed = dir.join("model.safetensors.index.json").is_file();
        assert_eq!(rank_dir.join("model.safetensors.index.json").is_file(), indexed);
        assert_eq!(rank_dir.join("model.safetensors").is_file(), !indexed);
        for f in ["config.json", "quantize_config.json"] {
            if dir.join(f).is_file() {
                assert_eq!(std::fs::read(rank_dir.join(f)).unwrap(), std::fs::read(dir.join(f)).unwrap());
            }
        }
        let got = dequantize(&rank_dir, &work.join(format!("w{world}-r{rank}.safetensors")));
        assert_eq!(got.tensors().len(), whole.tensors().len());
        for (tensor, info) in whole.tensors() {
            let g = got.info(tensor).unwrap_or_else(|| panic!("{tensor} missing"));
            let all = whole.read(tensor).unwrap();
            let Some((dim, range)) = expected_part(tensor, rank, world) else {
                assert_eq!(got.read(tensor).unwrap(), all, "{tensor}");
                continue;
            };
            let cols = info.shape.get(1).copied().unwrap_or(1);
            let (row_bytes, e) = (cols * info.dtype.size(), info.dtype.size());
            let want: Vec<u8> = if dim == 0 {
                all[range.start * row_bytes..range.end * row_bytes].to_vec()
            } else {
                all.chunks(row_bytes).flat_map(|row| row[range.start * e..range.end * e].to_vec()).collect()
            };
            let mut shape = info.shape.clone();
            shape[dim] = range.len();
            assert_eq!((g.dtype, &g.shape), (info.dtype, &shape), "{tensor} rank {rank} of {world}");
            assert!(got.read(tensor).unwrap() == want, "{}: {tensor} rank {rank} of {world}", dir.display());
            split += 1;
        }
    }
    split
}

#[test]
fn shards_dequantize_to_the_plans_slices_of_the_whole() {
    for (name, legal) in [("tiny-llama-gptq-4bit", &[1, 2, 4][..]), ("tiny-llama-gptq-8bit-single", &[1, 2])]
    {
        let dir = tiny(name);
        let work = temp(name);
        std::fs::create_dir_all(&work).unwrap();
        let whole = dequantize(&dir, &work.join("whole.safetensors"));
        for &world in legal {
            // 14 layers split per rank, every one checked.
            assert_eq!(check_shards(&dir, &whole, world, &work, 14), 14 * world, "{name} at {world}");
        }
        std::fs::remove_dir_all(&work).unwrap();
    }
}

/// A deterministic byte stream (SplitMix64).
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u8 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u8
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next()).collect()
    }
    /// `n` f16 values in about [-0.03, 0.03] (never NaN).
    fn f16s(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|_| half::f16::from_f32((self.next() as f32 - 127.5) / 4096.0).to_le_bytes())
            .collect()
    }
}

/// A one-block llama (the fixtures' sizes) in AWQ (group 32) or block-FP8 (32 x 32): random
/// codes, small scales, a bias on q_proj, plus embeddings, a norm and an unquantized lm_head.
fn synthetic(dir: &Path, scheme: &str) {
    use quant_kernels::io::{Dtype, SafetensorsWriter};
    let mut rng = Bytes(3);
    let quant = if scheme == "awq" {
        serde_json::json!({"quant_method": "awq", "bits": 4, "group_size": 32, "zero_point": true, "version": "gemm"})
    } else {
        serde_json::json!({"quant_method": "fp8", "fmt": "e4m3", "weight_block_size": [32, 32]})
    };
    let config = serde_json::json!({
        "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "quantization_config": quant,
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut t: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![
        ("lm_head.weight".into(), Dtype::F16, vec![256, 64], rng.f16s(256 * 64)),
        ("model.embed_tokens.weight".into(), Dtype::F16, vec![256, 64], rng.f16s(256 * 64)),
        ("model.norm.weight".into(), Dtype::F16, vec![64], rng.f16s(64)),
    ];
    for (name, out, inp) in [
        ("self_attn.q_proj", 64, 64),
        ("self_attn.k_proj", 32, 64),
        ("self_attn.v_proj", 32, 64),
        ("self_attn.o_proj", 64, 64),
        ("mlp.gate_proj", 128, 64),
        ("mlp.up_proj", 128, 64),
        ("mlp.down_proj", 64, 128),
    ] {
        let p = format!("model.layers.0.{name}");
        if scheme == "awq" {
            let (g, wc) = (inp / 32, out / 8);
            t.push((format!("{p}.qweight"), Dtype::I32, vec![inp, wc], rng.take(4 * inp * wc)));
            t.push((format!("{p}.qzeros"), Dtype::I32, vec![g, wc], rng.take(4 * g * wc)));
            t.push((format!("{p}.scales"), Dtype::F16, vec![g, out], rng.f16s(g * out)));
            if name.ends_with("q_proj") {
                t.push((format!("{p}.bias"), Dtype::F16, vec![out], rng.f16s(out)));
            }
        } else {
            // E4M3 codes without the NaN ones (0x7f, 0xff).
            let codes = rng.take(out * inp).into_iter().map(|b| if b & 0x7f == 0x7f { b & 0xfe } else { b });
            t.push((format!("{p}.weight"), Dtype::F8E4M3, vec![out, inp], codes.collect()));
            let (sr, sc) = (out.div_ceil(32), inp.div_ceil(32));
            let scales = (0..sr * sc).flat_map(|i| (0.01 + i as f32 / 64.0).to_le_bytes()).collect();
            t.push((format!("{p}.weight_scale_inv"), Dtype::F32, vec![sr, sc], scales));
            if name.ends_with("q_proj") {
                let bias = (0..out).flat_map(|i| (i as f32 - 7.0).to_le_bytes()).collect();
                t.push((format!("{p}.bias"), Dtype::F32, vec![out], bias));
            }
        }
    }
    let decl: Vec<_> = t.iter().map(|(n, d, s, _)| (n.clone(), *d, s.clone())).collect();
    let mut w = SafetensorsWriter::create(dir.join("model.safetensors"), &decl, &Default::default()).unwrap();
    for (n, _, _, b) in &t {
        w.write(n, b).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn awq_and_fp8_checkpoints_shard_through_the_same_path() {
    for (scheme, legal) in [("awq", &[1, 2][..]), ("fp8", &[1, 2, 4])] {
        let work = temp(scheme);
        let dir = work.join("in");
        synthetic(&dir, scheme);
        let whole = dequantize(&dir, &work.join("whole.safetensors"));
        for &world in legal {
            // 7 weights split per rank, and q_proj's bias.
            assert_eq!(check_shards(&dir, &whole, world, &work, 7), 8 * world, "{scheme} at {world}");
        }
        if scheme == "awq" {
            // o_proj's 64 inputs over 4 ranks would cut its groups of 32.
            let out = work.join("w4");
            let o =
                qk(&["shard", dir.to_str().unwrap(), "--world-size", "4", "--out", out.to_str().unwrap()]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{err}");
            assert!(err.contains("`model.layers.0.self_attn.o_proj`") && err.contains("2 below"), "{err}");
        }
        std::fs::remove_dir_all(&work).unwrap();
    }
}

#[test]
fn a_world_size_that_does_not_fit_exits_2_with_the_layer_and_the_nearest_legal_sizes() {
    let work = temp("bad");
    let out = work.join("out");
    // 8-bit g32 without act-order: o_proj's 64 inputs over 4 ranks would cut its groups of 32.
    let dir = tiny("tiny-llama-gptq-8bit-single");
    let o = qk(&["shard", dir.to_str().unwrap(), "--world-size", "4", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("`model.layers.0.self_attn.o_proj`") && err.contains("over 4 ranks"), "{err}");
    assert!(err.contains("group boundary") && err.contains("2 below, none above"), "{err}");
    assert!(!out.exists(), "nothing is written when the plan does not fit");

    // 4-bit act-order: 8 ranks for 4 attention heads.
    let dir = tiny("tiny-llama-gptq-4bit");
    let o = qk(&["shard", dir.to_str().unwrap(), "--world-size", "8", "--out", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8(o.stderr).unwrap();
    assert!(err.contains("4 attention heads") && err.contains("4 below, none above"), "{err}");
    assert!(!out.exists());

    for args in [
        &["shard", dir.to_str().unwrap(), "--world-size", "0", "--out", "x"][..],
        &["shard", dir.to_str().unwrap(), "--world-size", "two", "--out", "x"],
        &["shard", dir.to_str().unwrap(), "--out", "x"],
        &["shard", dir.to_str().unwrap(), "--world-size", "2"],
        &["shard", "--world-size", "2", "--out", "x"],
    ] {
        let o = qk(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).starts_with("qk: "), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&work);
}
