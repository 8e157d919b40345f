//! The `qk` binary on the tiny GPTQ checkpoints: `inspect`, and `dequantize` reproducing
//! GPTQModel's weights (`expected.safetensors`, transposed to `[out, in]`), fused or not.

use half::f16;
use quant_kernels::io::SafetensorsFile;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn qk(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qk")).args(args).output().unwrap()
}

fn tiny(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gptq_checkpoints").join(name)
}

fn out_path(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("qk-cli-{}-{tag}.safetensors", std::process::id()))
}

/// `[k, n]` -> `[n, k]`.
fn transpose(w: &[f32], k: usize, n: usize) -> Vec<f32> {
    (0..n * k).map(|i| w[(i % k) * n + i / k]).collect()
}

#[test]
fn inspect_lists_layers() {
    let o = qk(&["inspect", tiny("tiny-llama-gptq-4bit").to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("bits 4, group_size 32, sym false, desc_act true"), "{text}");
    let line = text.lines().find(|l| l.starts_with("model.layers.1.mlp.down_proj")).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    // out, in, method, stored, bits per weight (qweight 4 + per group of 32: f16 scale 16 and
    // zero 4 bits = 4.625, + g_idx 32 / 64 outputs = 0.5), compression.
    assert_eq!(&cols[1..8], ["64", "128", "gptq-4bit-g32-act", "5.1", "KiB", "5.125", "3.12x"]);
    assert!(text.contains("14 quantized layers"));
}

#[test]
fn dequantize_reproduces_gptqmodel_transposed() {
    for name in ["tiny-llama-gptq-4bit", "tiny-llama-gptq-8bit-single"] {
        let dir = tiny(name);
        let expected = SafetensorsFile::open(dir.join("expected.safetensors")).unwrap();
        let source = quant_kernels::io::Checkpoint::open(&dir).unwrap();
        for fuse in [false, true] {
            for dtype in ["f32", "f16"] {
                let out = out_path(&format!("{name}-{fuse}-{dtype}"));
                let mut args = vec![
                    "dequantize",
                    dir.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                    "--dtype",
                    dtype,
                ];
                if fuse {
                    args.push("--fuse");
                }
                let o = qk(&args);
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                let got = SafetensorsFile::open(&out).unwrap();
                let mut checked = 0;
                for (tensor, info) in expected.tensors() {
                    let fused = tensor.contains("qkv_proj") || tensor.contains("gate_up_proj");
                    let present = got.info(tensor);
                    let parts_of_fused = fuse
                        && ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"]
                            .iter()
                            .any(|p| tensor.ends_with(&format!(".{p}.weight")));
                    if (fused && !fuse) || parts_of_fused {
                        assert!(present.is_none(), "{tensor} should not be written (fuse {fuse})");
                        continue;
                    }
                    let (k, n) = (info.shape[0], info.shape[1]);
                    assert_eq!(present.unwrap().shape, [n, k], "{tensor}");
                    let want = transpose(&expected.read_as::<f32>(tensor).unwrap(), k, n);
                    if dtype == "f32" {
                        let w = got.read_as::<f32>(tensor).unwrap();
                        assert!(w.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{tensor}");
                    } else {
                        // GPTQModel's f16 result is the f16 rounding of the exact f32 value.
                        let w = got.read_as::<f16>(tensor).unwrap();
                        assert!(w.iter().zip(&want).all(|(a, b)| *a == f16::from_f32(*b)), "{tensor}");
                    }
                    checked += 1;
                }
                assert_eq!(checked, if fuse { 2 * (2 + 2) } else { 14 }, "{name}"); // fused: qkv, gate_up, o, down
                // Unquantized tensors are copied byte for byte; no GPTQ part remains.
                for t in
                    ["model.embed_tokens.weight", "lm_head.weight", "model.layers.1.input_layernorm.weight"]
                {
                    assert_eq!(got.read(t).unwrap(), source.read(t).unwrap(), "{t}");
                }
                assert!(got.tensors().keys().all(|t| !t.ends_with(".qweight") && !t.ends_with(".g_idx")));
                assert_eq!(got.tensors().len(), 7 + if fuse { 8 } else { 14 });
                std::fs::remove_file(out).unwrap();
            }
        }
    }
}

#[test]
fn bad_invocations_exit_2_with_a_message() {
    let dir = tiny("tiny-llama-gptq-8bit-single");
    let d = dir.to_str().unwrap();
    let out = out_path("bad");
    let o_ = out.to_str().unwrap();
    for args in [
        vec!["frobnicate"],
        vec!["inspect"],
        vec!["inspect", "/nonexistent/dir"],
        vec!["dequantize", d],
        vec!["dequantize", d, "--out"],
        vec!["dequantize", d, "--out", o_, "--dtype", "f8"],
        vec!["dequantize", d, "--out", o_, "--bogus"],
        vec!["dequantize", "/nonexistent/dir", "--out", o_],
        vec!["dequantize", d, "--out", "/nonexistent/dir/x.safetensors"],
    ] {
        let o = qk(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("qk: ") && !err.contains("panicked"), "{args:?}: {err}");
    }
    let o = qk(&["--help"]);
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).contains("dequantize"));
}

/// The one line a usage error leaves on stderr, after checking exit status 2.
fn usage_error(args: &[&str]) -> String {
    let o = qk(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8(o.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(err.starts_with("qk: ") && err.ends_with("(run `qk --help`)\n"), "{args:?}: {err}");
    err
}

#[test]
fn usage_errors_are_one_line_naming_the_argument() {
    let dir = tiny("tiny-llama-gptq-8bit-single");
    let d = dir.to_str().unwrap();
    let err = usage_error(&["dequantize", d, "--out", "/tmp/x.safetensors", "--frobnicate"]);
    assert!(err.contains("--frobnicate"), "{err}");
    let err = usage_error(&["inspect", d, "--verbose"]);
    assert!(err.contains("--verbose"), "{err}");
    let err = usage_error(&["quantize", "in.safetensors", "--out", "/tmp/x.uqff"]);
    assert!(err.contains("--bits"), "{err}");
    let err = usage_error(&["shard", d, "--world-size", "0", "--out", "/tmp/x"]);
    assert!(err.contains("--world-size") && err.contains("`0`"), "{err}");
    let err = usage_error(&["quantize", "in.safetensors", "--method", "gptq", "--bits", "4", "-o", "x"]);
    assert!(err.contains("gptq"), "{err}");
    let err = usage_error(&["dequantize", d, "--out", "/tmp/x.safetensors", "--dtype", "f8"]);
    assert!(err.contains("f8") && err.contains("--dtype"), "{err}");
    let err = usage_error(&["frobnicate"]);
    assert!(err.contains("frobnicate"), "{err}");
}

#[test]
fn help_lists_every_command_and_flag() {
    let o = qk(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8(o.stdout).unwrap();
    for command in ["demo", "inspect", "dequantize", "shard", "quantize", "bench"] {
        assert!(text.lines().any(|l| l.trim_start().starts_with(command)), "{command}: {text}");
    }
    let o = qk(&["dequantize", "--help"]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("--fuse") && text.contains("--dtype") && text.contains("--out"), "{text}");
    let o = qk(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8(o.stdout).unwrap().contains(env!("CARGO_PKG_VERSION")));
}

/// `qk quantize` on a safetensors file holding mistral.rs's input weight and bias reproduces
/// mistral.rs's UQFF bytes (1.2.0 file; 0.2.0 blob), and `qk dequantize FILE.uqff` gives back
/// mistral.rs's dequantized weight.
#[test]
fn quantize_to_uqff_matches_mistral_rs() {
    use quant_kernels::io::{Dtype, SafetensorsWriter, uqff};
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let companion = SafetensorsFile::open(fixtures.join("uqff/hqq4_g64_ax0_f32.safetensors")).unwrap();
    let weight = companion.read("input_weight").unwrap();
    let bias: Vec<u8> = (0..128).flat_map(|i| ((i as f32 - 64.0) * 0.01).to_le_bytes()).collect();
    let input = out_path("quantize-in");
    let p = "model.layers.0.mlp.down_proj";
    let decl = vec![
        (format!("{p}.bias"), Dtype::F32, vec![128]),
        (format!("{p}.weight"), Dtype::F32, vec![128, 64]),
        ("model.norm.weight".to_string(), Dtype::F32, vec![64]),
    ];
    let mut w = SafetensorsWriter::create(&input, &decl, &Default::default()).unwrap();
    w.write(&decl[0].0, &bias).unwrap();
    w.write(&decl[1].0, &weight).unwrap();
    w.write(&decl[2].0, &[0; 256]).unwrap();
    w.finish().unwrap();
    let (i, o1, o2) = (input.to_str().unwrap(), out_path("q-v1"), out_path("q-v0"));
    for (out, version) in [(&o1, "1.2"), (&o2, "0.2")] {
        let o = qk(&[
            "quantize",
            i,
            "--method",
            "hqq",
            "--bits",
            "4",
            "--group-size",
            "64",
            "--axis",
            "0",
            "--steps",
            "10",
            "--uqff",
            version,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("1 layers"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    // 1.2.0: the whole file (the norm, a 1-D tensor, is left out like mistral.rs's ISQ does).
    let want = std::fs::read(fixtures.join("uqff_files/v1.2.0/hqq4_g64_ax0_f32_bias.uqff")).unwrap();
    assert_eq!(std::fs::read(&o1).unwrap(), want);
    // 0.2.0: the layer blob inside the file.
    let legacy = uqff::read_legacy_file_named(&std::fs::read(&o2).unwrap()).unwrap();
    assert_eq!(legacy[0].1.as_deref(), Some("model.layers.0.mlp.down_proj.weight"));
    let blob = std::fs::read(fixtures.join("uqff_files/legacy-v0.2.0/hqq4_g64_ax0_f32_bias.uqff")).unwrap();
    assert_eq!(uqff::write_legacy(&legacy[0].2).unwrap(), blob);
    // Back to safetensors from either revision.
    let expected = companion.read_as::<f32>("dequantized").unwrap();
    for src in [&o1, &o2] {
        let back = out_path("q-back");
        let o = qk(&["dequantize", src.to_str().unwrap(), "--out", back.to_str().unwrap(), "--dtype", "f32"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let f = SafetensorsFile::open(&back).unwrap();
        assert_eq!(f.info(&format!("{p}.weight")).unwrap().shape, [128, 64]);
        let got = f.read_as::<f32>(&format!("{p}.weight")).unwrap();
        assert!(got.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(f.read(&format!("{p}.bias")).unwrap(), bias);
        std::fs::remove_file(back).unwrap();
    }
    // Bad requests: a width, an axis, a method, a group that does not divide.
    for bad in [
        vec!["quantize", i, "--bits", "5", "--out", "/tmp/x.uqff"],
        vec!["quantize", i, "--bits", "4", "--axis", "2", "--out", "/tmp/x.uqff"],
        vec!["quantize", i, "--method", "gptq", "--bits", "4", "--out", "/tmp/x.uqff"],
        vec!["quantize", i, "--bits", "4", "--group-size", "100", "--out", "/tmp/x.uqff"],
        vec!["quantize", i, "--out", "/tmp/x.uqff"],
        vec!["dequantize", i, "--out", "/tmp/x.safetensors"],
    ] {
        let o = qk(&bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
    for f in [input, o1, o2] {
        std::fs::remove_file(f).unwrap();
    }
}

/// `qk inspect FILE` on a UQFF 1.2 file, a bare 0.2.0 blob and a plain safetensors file, and
/// `qk dequantize` of a bare blob.
#[test]
fn inspect_files() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let run = |p: PathBuf| {
        let o = qk(&["inspect", p.to_str().unwrap()]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let v1 = run(f.join("uqff_files/v1.2.0/hqq4_g64_ax0_bf16_bias.uqff"));
    let line = v1.lines().find(|l| l.starts_with("model.layers.0.mlp.down_proj.weight")).unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    // shape, bits, group, axis, steps, params, bias, bytes (4096 codes + 2 x 256 params + 256 bias)
    assert_eq!(&cols[1..], ["[128,", "64]", "4", "64", "0", "10", "BF16", "BF16", "4864", "4.750"]);
    let blob = run(f.join("uqff_files/legacy-v0.2.0/hqq3_g64_ax0_f32.uqff"));
    assert!(blob.contains("1 HQQ layers") && blob.contains("layers.0.weight"), "{blob}");
    let st = run(f.join("uqff/hqq4_g64_ax0_f32.safetensors"));
    assert!(
        st.contains("5 tensors") && st.lines().any(|l| l.starts_with("w_q") && l.contains("[32, 128]")),
        "{st}"
    );
    let out = out_path("blob");
    let o = qk(&[
        "dequantize",
        f.join("uqff_files/legacy-v0.2.0/hqq4_g64_ax0_f32.uqff").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--dtype",
        "f32",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = SafetensorsFile::open(f.join("uqff/hqq4_g64_ax0_f32.safetensors"))
        .unwrap()
        .read("dequantized")
        .unwrap();
    assert_eq!(SafetensorsFile::open(&out).unwrap().read("layers.0.weight").unwrap(), want);
    std::fs::remove_file(out).unwrap();
}

/// `qk bench --quick --json`: one JSON record per line in the agreed format, every scheme,
/// 4096x4096 at 4 bits among them.
#[test]
fn bench_json_records() {
    let o = qk(&["bench", "--quick", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.len() >= 7, "{text}");
    for r in &records {
        for key in ["op", "scheme", "out", "isa"] {
            assert!(r[key].is_string(), "{key}: {r}");
        }
        for key in ["bits", "rows", "cols", "batch", "threads"] {
            assert!(r[key].is_u64(), "{key}: {r}");
        }
        assert!(r["gbps"].as_f64().unwrap() > 0.0 && r["memcpy_gbps"].as_f64().unwrap() > 0.0, "{r}");
    }
    for scheme in ["hqq", "gptq", "awq", "fp8"] {
        assert!(records.iter().any(|r| r["op"] == "dequant" && r["scheme"] == scheme), "{scheme}");
    }
    assert!(records.iter().any(|r| r["op"] == "quantize"));
    // The multiply at batch 1 (GEMV) and 8/32/128 (GEMM) for HQQ and GPTQ, with GFLOP/s, and the
    // pure threaded read of the weight bytes that bounds the GEMV.
    for scheme in ["hqq", "gptq"] {
        for batch in [1u64, 8, 32, 128] {
            let op = if batch == 1 { "gemv" } else { "gemm" };
            let r = records.iter().find(|r| r["op"] == op && r["scheme"] == scheme && r["batch"] == batch);
            assert!(r.is_some_and(|r| r["gflops"].as_f64().unwrap() > 0.0), "{scheme} {batch}: {text}");
        }
    }
    // Both paths: the int8-activation records beside the f32 ones.
    for variant in ["g128_int8_activations", "g64_axis1_int8_activations", "g64_axis0_int8_activations"] {
        assert_eq!(records.iter().filter(|r| r["variant"] == variant).count(), 4, "{variant}: {text}");
    }
    let read = records.iter().find(|r| r["op"] == "read").expect("a read record");
    assert!(read["threads"].as_u64().unwrap() >= 1 && read["gbps"].as_f64().unwrap() > 0.0, "{read}");
    assert!(records.iter().any(|r| r["rows"] == 4096 && r["cols"] == 4096 && r["bits"] == 4));
    assert_eq!(qk(&["bench", "--bogus"]).status.code(), Some(2));
}
