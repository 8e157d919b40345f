//! `qk inspect` and `qk dequantize` for GPTQ checkpoints, and the demo's tiny checkpoint.

use crate::{CliError, DequantizeArgs};
use half::{bf16, f16};
use quant_kernels::gptq::{
    GptqCheckpoint, GptqLayer, ZeroFormat, concat_dequantized, fuse_columns, fuse_layers, plan_fusion,
};
use quant_kernels::io::safetensors::{LeElem, to_le_bytes};
use quant_kernels::io::{Dtype, SafetensorsWriter};
use quant_kernels::{DType, Error, Parallelism};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

fn format_name(f: ZeroFormat) -> &'static str {
    match f {
        ZeroFormat::V1 => "gptq (v1: stored z - 1)",
        ZeroFormat::V2 => "gptq_v2 (stored z)",
    }
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// Warn (stderr) when a symmetric layer's zero points contradict the declared format.
fn warn_zero_format(ck: &GptqCheckpoint, prefix: &str, layer: &GptqLayer) -> Result<(), CliError> {
    if ck.config().sym
        && let Some(m) = layer.zero_format_mismatch()?
    {
        eprintln!(
            "qk: warning: {prefix}: config declares {:?} zero points but the stored ones look like {:?} \
             (every weight would be off by one step)",
            m.declared, m.looks_like
        );
    }
    Ok(())
}

/// `qk inspect DIR`.
pub fn inspect(dir: &Path) -> Result<(), CliError> {
    let ck = GptqCheckpoint::open(dir)?;
    let c = ck.config();
    let names: Vec<&str> = ck.checkpoint().tensor_names().collect();
    let mut shards: Vec<&Path> = names.iter().filter_map(|n| ck.checkpoint().shard_of(n)).collect();
    shards.sort();
    shards.dedup();
    out!("checkpoint {}: {} tensors in {} file(s)", dir.display(), names.len(), shards.len());
    let group = if c.group_size < 0 { "-1 (one group)".to_string() } else { c.group_size.to_string() };
    out!(
        "GPTQ: bits {}, group_size {group}, sym {}, desc_act {}, checkpoint_format {}",
        c.bits,
        c.sym,
        c.desc_act,
        format_name(c.format)
    );
    out!(
        "\n{:<40} {:>6} {:>6} {:>4} {:>5} {:>4} {:>9} {:>12} {:>11} {:>6}",
        "layer",
        "K",
        "N",
        "bits",
        "group",
        "sym",
        "act-order",
        "qweight",
        "stored",
        "vs f16"
    );
    let (mut stored, mut dense) = (0usize, 0usize);
    for (prefix, info) in ck.layers() {
        let l = &info.layout;
        let act_order = if info.has_g_idx {
            let g_idx: Vec<i32> = ck.checkpoint().read_as(&format!("{prefix}.g_idx"))?;
            if g_idx == l.default_g_idx() { "no" } else { "yes" }
        } else {
            "no g_idx"
        };
        let (qr, qc) = l.qweight_shape();
        let bytes = info.stored_bytes();
        let f16_bytes = 2 * l.k() * l.n();
        stored += bytes;
        dense += f16_bytes;
        out!(
            "{prefix:<40} {:>6} {:>6} {:>4} {:>5} {:>4} {act_order:>9} {:>12} {:>11} {:>5.2}x",
            l.k(),
            l.n(),
            l.bits(),
            l.group_size().map_or("-1".to_string(), |g| g.to_string()),
            c.sym,
            format!("[{qr}, {qc}]"),
            kib(bytes),
            f16_bytes as f64 / bytes as f64
        );
    }
    let other: Vec<&&str> = names.iter().filter(|n| !ck.is_quantized_part(n)).collect();
    let other_bytes: usize = other.iter().filter_map(|n| ck.checkpoint().info(n)).map(|i| i.len).sum();
    out!(
        "\n{} GPTQ layers: {} stored ({} as f16, {:.2}x smaller); {} other tensors: {}",
        ck.layers().len(),
        kib(stored),
        kib(dense),
        dense as f64 / stored.max(1) as f64,
        other.len(),
        kib(other_bytes)
    );
    let plans = plan_fusion(ck.layers().keys().map(String::as_str));
    if !plans.is_empty() {
        out!(
            "fusable (qk dequantize --fuse): {} groups, e.g. {} <- {}",
            plans.len(),
            plans[0].fused,
            plans[0].parts.join(" + ")
        );
    }
    Ok(())
}

/// What an output tensor is made from.
enum Source {
    /// A tensor copied as it is.
    Plain(String),
    /// The dequantized weight of one layer, or of several fused.
    Weight(Vec<String>),
    /// The concatenated biases of fused layers.
    Bias(Vec<String>),
}

fn io_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::Bf16 => Dtype::Bf16,
    }
}

fn linear_bytes(layer: &GptqLayer, dtype: DType) -> Result<Vec<u8>, Error> {
    let par = Parallelism::Rayon;
    Ok(match dtype {
        DType::F32 => to_le_bytes(&layer.dequantize_linear::<f32>(par)?),
        DType::F16 => to_le_bytes(&layer.dequantize_linear::<f16>(par)?),
        DType::Bf16 => to_le_bytes(&layer.dequantize_linear::<bf16>(par)?),
    })
}

/// `[k, n]` -> little-endian bytes of `[n, k]`.
fn transposed_bytes<T: LeElem + Default + Send + Sync>(w: Vec<T>, k: usize, n: usize) -> Vec<u8> {
    to_le_bytes(&quant_kernels::par::transpose(&w, k, n, Parallelism::Rayon))
}

/// The fused `[sum N, K]` weight of `parts`: one packed layer when they can be fused
/// (same `g_idx`), else (act-order parts with different `g_idx`) each part dequantized and the
/// results concatenated, which is the same dense weight.
fn fused_bytes(name: &str, parts: &[GptqLayer], dtype: DType) -> Result<Vec<u8>, Error> {
    let refs: Vec<&GptqLayer> = parts.iter().collect();
    match fuse_columns(&refs) {
        Ok(layer) => linear_bytes(&layer, dtype),
        Err(Error::Fuse { what, part }) => {
            eprintln!(
                "qk: {name}: part {part}'s {what} differs, so no packed fused layer exists; concatenating the dequantized parts"
            );
            let (k, n) = (refs[0].layout.k(), refs.iter().map(|p| p.layout.n()).sum::<usize>());
            let par = Parallelism::Rayon;
            Ok(match dtype {
                DType::F32 => transposed_bytes(concat_dequantized::<f32>(&refs, par)?, k, n),
                DType::F16 => transposed_bytes(concat_dequantized::<f16>(&refs, par)?, k, n),
                DType::Bf16 => transposed_bytes(concat_dequantized::<bf16>(&refs, par)?, k, n),
            })
        }
        Err(e) => Err(e),
    }
}

/// `qk dequantize DIR --out FILE [--dtype] [--fuse]`: one layer in memory at a time.
pub fn dequantize(args: &DequantizeArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let ck = GptqCheckpoint::open(&args.dir)?;
    let raw = ck.checkpoint();
    let plans = if args.fuse { plan_fusion(ck.layers().keys().map(String::as_str)) } else { Vec::new() };
    let fused_part: BTreeMap<&str, &str> = plans
        .iter()
        .flat_map(|p| p.parts.iter().map(move |part| (part.as_str(), p.fused.as_str())))
        .collect();
    // Output name -> (dtype, shape, source), sorted by name.
    let mut outputs: BTreeMap<String, (Dtype, Vec<usize>, Source)> = BTreeMap::new();
    for name in raw.tensor_names() {
        let bias_of_fused = name.strip_suffix(".bias").is_some_and(|p| fused_part.contains_key(p));
        if ck.is_quantized_part(name) || bias_of_fused {
            continue;
        }
        let info = raw.info(name).ok_or_else(|| Error::MissingTensors(vec![name.into()]))?;
        outputs.insert(name.into(), (info.dtype, info.shape.clone(), Source::Plain(name.into())));
    }
    let dtype = io_dtype(args.dtype);
    for (prefix, info) in ck.layers() {
        if !fused_part.contains_key(prefix.as_str()) {
            let shape = vec![info.layout.n(), info.layout.k()];
            outputs.insert(format!("{prefix}.weight"), (dtype, shape, Source::Weight(vec![prefix.clone()])));
        }
    }
    for plan in &plans {
        let infos: Vec<_> = plan.parts.iter().filter_map(|p| ck.layers().get(p)).collect();
        let n: usize = infos.iter().map(|i| i.layout.n()).sum();
        let k = infos[0].layout.k();
        outputs.insert(
            format!("{}.weight", plan.fused),
            (dtype, vec![n, k], Source::Weight(plan.parts.clone())),
        );
        if let Some(b) = infos[0].bias {
            if infos.iter().any(|i| i.bias != Some(b)) {
                return Err(Error::Fuse { what: "bias", part: 0 }.into());
            }
            outputs.insert(format!("{}.bias", plan.fused), (b, vec![n], Source::Bias(plan.parts.clone())));
        }
    }
    let decl: Vec<(String, Dtype, Vec<usize>)> =
        outputs.iter().map(|(name, (d, shape, _))| (name.clone(), *d, shape.clone())).collect();
    let meta = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "quant_kernels".to_string(),
            format!("dequantized from GPTQ {}-bit by qk {}", ck.config().bits, env!("CARGO_PKG_VERSION")),
        ),
    ]);
    let mut writer = SafetensorsWriter::create(&args.out, &decl, &meta)?;
    let (mut layers, mut copied) = (0, 0);
    for (name, (_, _, source)) in &outputs {
        let bytes = match source {
            Source::Plain(t) => {
                copied += 1;
                raw.read(t)?
            }
            Source::Weight(parts) => {
                let loaded: Vec<GptqLayer> = parts.iter().map(|p| ck.load(p)).collect::<Result<_, _>>()?;
                for (p, l) in parts.iter().zip(&loaded) {
                    warn_zero_format(&ck, p, l)?;
                }
                layers += parts.len();
                match &loaded[..] {
                    [single] => linear_bytes(single, args.dtype)?,
                    _ => fused_bytes(name, &loaded, args.dtype)?,
                }
            }
            Source::Bias(parts) => {
                let mut bytes = Vec::new();
                for p in parts {
                    bytes.extend(raw.read(&format!("{p}.bias"))?);
                }
                bytes
            }
        };
        writer.write(name, &bytes)?;
    }
    writer.finish()?;
    out!(
        "wrote {}: {} GPTQ layers dequantized to {}{} ({} fused groups), {} tensors copied, {:.2} s",
        args.out.display(),
        layers,
        args.dtype,
        if args.fuse { ", fused" } else { "" },
        plans.len(),
        copied,
        start.elapsed().as_secs_f64()
    );
    Ok(())
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
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        kind: e.kind(),
        message: e.to_string(),
    };
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
        let w: Vec<f32> = layer.dequantize(Parallelism::Rayon)?;
        let how = if report.fused.iter().any(|p| &p.fused == prefix) { "fused packed" } else { "" };
        rows.push((prefix.clone(), layer.layout.k(), layer.layout.n(), how, w, t.elapsed()));
    }
    for (plan, _) in &report.skipped {
        let parts: Vec<&GptqLayer> = plan.parts.iter().filter_map(|p| layers.get(p)).collect();
        let t = Instant::now();
        let w: Vec<f32> = concat_dequantized(&parts, Parallelism::Rayon)?;
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
