//! The demo's tiny GPTQ checkpoints: loaded from embedded bytes through the same reader as any
//! checkpoint, fused, dequantized and compared with GPTQModel's weights.

use crate::CliError;
use quant_kernels::gptq::{GptqCheckpoint, GptqLayer, ZeroFormat, concat_dequantized, fuse_layers};
use quant_kernels::{Error, Parallelism};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

pub fn format_name(f: ZeroFormat) -> &'static str {
    match f {
        ZeroFormat::V1 => "gptq (v1: stored z - 1)",
        ZeroFormat::V2 => "gptq_v2 (stored z)",
    }
}

/// The embedded tiny checkpoints (a 2-layer llama quantized by auto-gptq 0.7.1): 4-bit group 32
/// asym act-order v1 in two shards + index with the config in `config.json`; 8-bit group 32
/// sym in one file with `quantize_config.json`. Each with GPTQModel's dequantized weights.
macro_rules! tiny {
    ($dir:literal: $($file:literal),*) => {
        (
            $dir,
            &[$(($file, include_bytes!(concat!("../../../tests/fixtures/gptq_checkpoints/", $dir, "/", $file)) as &[u8])),*],
            include_bytes!(concat!("../../../tests/fixtures/gptq_checkpoints/", $dir, "/expected.safetensors")) as &[u8],
        )
    };
}
type Tiny = (&'static str, &'static [(&'static str, &'static [u8])], &'static [u8]);
const TINY: [Tiny; 2] = [
    tiny!("tiny-llama-gptq-4bit": "config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"),
    tiny!("tiny-llama-gptq-8bit-single": "config.json", "quantize_config.json", "model.safetensors"),
];

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |e: std::io::Error| Error::io(path, e);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    std::fs::write(path, bytes).map_err(io)
}

/// Demo: write each embedded checkpoint to a temporary directory, open it as any checkpoint,
/// fuse q/k/v and gate/up, dequantize every layer and compare with GPTQModel's weights.
pub fn demo_checkpoint() -> Result<(), CliError> {
    let root = std::env::temp_dir().join(format!("qk-demo-{}", std::process::id()));
    let result = TINY.iter().try_for_each(|(name, files, expected)| {
        let dir = root.join(name);
        for (file, bytes) in *files {
            write_file(&dir.join(file), bytes)?;
        }
        demo_table(name, &dir, expected)
    });
    let _ = std::fs::remove_dir_all(&root);
    result
}

fn demo_table(name: &str, dir: &Path, expected: &[u8]) -> Result<(), CliError> {
    let ck = GptqCheckpoint::open(dir)?;
    let c = ck.config();
    let files = ck
        .checkpoint()
        .tensor_names()
        .filter_map(|t| ck.checkpoint().shard_of(t))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    out!(
        "\n{name} (embedded, {files} file(s)): {} layers, {}-bit, group {}, sym {}, act-order {}, {}",
        ck.layers().len(),
        c.bits,
        c.group_size,
        c.sym,
        c.desc_act,
        format_name(c.format)
    );
    let mut layers: BTreeMap<String, GptqLayer> = BTreeMap::new();
    for prefix in ck.layers().keys() {
        layers.insert(prefix.clone(), ck.load(prefix)?);
    }
    let report = fuse_layers(&mut layers)?;
    let expected =
        safetensors::SafeTensors::deserialize(expected).map_err(|e| CliError::Data(e.to_string()))?;
    // (name, K, N, how, dense [K, N] f32, microseconds)
    let mut rows = Vec::new();
    for (prefix, layer) in &layers {
        let t = Instant::now();
        let w: Vec<f32> = layer.dequantize_kn(Parallelism::RAYON)?;
        let how = if report.fused.iter().any(|p| &p.fused == prefix) { "fused packed" } else { "" };
        rows.push((prefix.clone(), layer.layout.k(), layer.layout.n(), how, w, t.elapsed()));
    }
    for (plan, _) in &report.skipped {
        let parts: Vec<&GptqLayer> = plan.parts.iter().filter_map(|p| layers.get(p)).collect();
        let t = Instant::now();
        let w: Vec<f32> = concat_dequantized(&parts, Parallelism::RAYON)?;
        let n = parts.iter().map(|p| p.layout.n()).sum();
        rows.push((plan.fused.clone(), parts[0].layout.k(), n, "g_idx differ: dense concat", w, t.elapsed()));
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    out!(
        "fused {} groups as packed layers, {} as dense (parts' g_idx differ); dequantized to f32:",
        report.fused.len(),
        report.skipped.len()
    );
    out!("{:<34} {:>4} {:>4} {:<26} {:>14} {:>8}", "layer", "K", "N", "fusion", "max|ours-ref|", "time");
    for (prefix, k, n, how, w, time) in rows {
        let tensor = format!("{prefix}.weight");
        let want = expected.tensor(&tensor).map_err(|e| CliError::Data(format!("{tensor}: {e}")))?;
        let want: Vec<f32> =
            want.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        if want.len() != w.len() {
            return Err(CliError::Data(format!(
                "{tensor}: {} values expected, {} computed",
                want.len(),
                w.len()
            )));
        }
        let diff = w.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        out!("{prefix:<34} {k:>4} {n:>4} {how:<26} {diff:>14e} {:>5.0} µs", time.as_secs_f64() * 1e6);
    }
    Ok(())
}
