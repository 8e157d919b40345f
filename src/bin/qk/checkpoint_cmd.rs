//! `qk inspect` and `qk dequantize` on GPTQ, AWQ and FP8 checkpoint directories.

use crate::CliError;
use crate::demo_checkpoint::format_name;
use crate::dequantize_cmd::DequantizeArgs;
use half::{bf16, f16};
use quant_kernels::error::{FormatError, KernelError};
use quant_kernels::gptq::plan_fusion;
use quant_kernels::io::safetensors::LeElem;
use quant_kernels::io::{Dtype, SafetensorsWriter};
use quant_kernels::io::{LayerSummary, QuantizedCheckpoint};
use quant_kernels::{Error, FloatType, Parallelism};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// The scheme-wide settings, one line.
fn describe(model: &QuantizedCheckpoint) -> String {
    match model {
        QuantizedCheckpoint::Gptq(c) => {
            let c = c.config();
            format!(
                "GPTQ: bits {}, group_size {}, sym {}, desc_act {}, checkpoint_format {}",
                c.bits,
                c.group_size,
                c.sym,
                c.desc_act,
                format_name(c.format)
            )
        }
        QuantizedCheckpoint::Awq(c) => {
            format!("AWQ (gemm): 4-bit, group_size {}, zero_point true", c.config().group_size)
        }
        QuantizedCheckpoint::Fp8(c) => match c.config().block {
            Some((r, cc)) => format!("FP8: block-wise weight_scale_inv, weight_block_size [{r}, {cc}]"),
            None => "FP8: per-tensor weight_scale".to_string(),
        },
    }
}

/// Warn (stderr) about GPTQ layers whose symmetric zero points contradict the declared format.
fn warn_zero_format(model: &QuantizedCheckpoint, prefix: &str) -> Result<(), CliError> {
    if let QuantizedCheckpoint::Gptq(c) = model
        && let Some(m) = c.zero_format_mismatch(prefix)?
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
    let model = QuantizedCheckpoint::open(dir)?;
    let raw = model.checkpoint();
    let names: Vec<&str> = raw.tensor_names().collect();
    let files = names.iter().filter_map(|n| raw.shard_of(n)).collect::<std::collections::BTreeSet<_>>().len();
    out!("checkpoint {}: {} tensors in {files} file(s)", dir.display(), names.len());
    out!("{}", describe(&model));
    out!(
        "\n{:<40} {:>6} {:>6} {:<26} {:>11} {:>7} {:>7}",
        "layer",
        "out",
        "in",
        "method",
        "stored",
        "bits/w",
        "vs f16"
    );
    let layers = model.layers();
    let (mut stored, mut dense) = (0usize, 0usize);
    for l in &layers {
        let f16_bytes = 2 * l.experts * l.out * l.inp;
        stored += l.stored_bytes;
        dense += f16_bytes;
        out!(
            "{:<40} {:>6} {:>6} {:<26} {:>11} {:>7.3} {:>6.2}x",
            l.prefix,
            if l.experts > 1 { format!("{}x{}", l.experts, l.out) } else { l.out.to_string() },
            l.inp,
            l.method.to_string(),
            kib(l.stored_bytes),
            8.0 * l.stored_bytes as f64 / (l.experts * l.out * l.inp).max(1) as f64,
            f16_bytes as f64 / l.stored_bytes.max(1) as f64
        );
    }
    let other: Vec<&&str> = names.iter().filter(|n| !model.is_quantized_part(n)).collect();
    let other_bytes: usize = other.iter().filter_map(|n| raw.info(n)).map(|i| i.len).sum();
    out!(
        "\n{} quantized layers: {} stored ({} as f16, {:.2}x smaller); {} other tensors: {}",
        layers.len(),
        kib(stored),
        kib(dense),
        dense as f64 / stored.max(1) as f64,
        other.len(),
        kib(other_bytes)
    );
    let plans = plan_fusion(layers.iter().map(|l| l.prefix.as_str()));
    if let Some(p) = plans.first() {
        out!(
            "fusable (qk dequantize --fuse): {} groups, e.g. {} <- {}",
            plans.len(),
            p.fused,
            p.parts.join(" + ")
        );
    }
    Ok(())
}

/// What an output tensor is made from.
enum Source {
    /// A tensor copied as it is.
    Plain(String),
    /// The dequantized `[out, in]` weights of these layers, stacked (one layer, or a fusion).
    Weight(Vec<String>),
    /// The biases of fused layers, concatenated.
    Bias(Vec<String>),
}

fn io_dtype(d: FloatType) -> Dtype {
    match d {
        FloatType::F32 => Dtype::F32,
        FloatType::F16 => Dtype::F16,
        FloatType::Bf16 => Dtype::Bf16,
    }
}

/// Write one layer's `[out, in]` weight as `dtype` bytes in parts of about 1 MiB, transposing
/// GPTQ/AWQ's stored `[in, out]` block by block: only the dequantized layer itself is held
/// whole, never a transposed copy or a byte copy of it.
fn write_linear(
    writer: &mut SafetensorsWriter,
    name: &str,
    model: &QuantizedCheckpoint,
    layer: &LayerSummary,
    dtype: FloatType,
) -> Result<(), Error> {
    fn go<O: quant_kernels::Elem + LeElem>(
        writer: &mut SafetensorsWriter,
        name: &str,
        model: &QuantizedCheckpoint,
        l: &LayerSummary,
    ) -> Result<(), Error> {
        let (w, transposed) = model.dequantize_stored::<O>(&l.prefix, Parallelism::RAYON)?;
        let rows_per = ((1 << 20) / (l.inp * std::mem::size_of::<O>()).max(1)).max(1);
        let mut bytes = Vec::with_capacity(rows_per * l.inp * std::mem::size_of::<O>());
        let rows = l.experts * l.out;
        for o0 in (0..rows).step_by(rows_per) {
            let o1 = (o0 + rows_per).min(rows);
            let transposed_block;
            let block: &[O] = if transposed {
                // w is [in, out]: output rows o0..o1 are its columns o0..o1.
                transposed_block =
                    quant_kernels::par::transpose_cols(&w, l.inp, l.out, o0..o1, Parallelism::RAYON);
                &transposed_block
            } else {
                &w[o0 * l.inp..o1 * l.inp]
            };
            bytes.clear();
            O::extend_le(block, &mut bytes);
            writer.write_part(name, &bytes)?;
        }
        Ok(())
    }
    match dtype {
        FloatType::F32 => go::<f32>(writer, name, model, layer),
        FloatType::F16 => go::<f16>(writer, name, model, layer),
        FloatType::Bf16 => go::<bf16>(writer, name, model, layer),
    }
}

/// `qk dequantize DIR --out FILE [--dtype] [--fuse]`: one layer (or fused group) in memory at a
/// time. Fusing along the output dimension stacks the parts' `[out, in]` rows, which is the
/// dense weight of GPTQ's packed `fuse_columns` and is defined for every scheme.
pub fn dequantize(args: &DequantizeArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let model = QuantizedCheckpoint::open(&args.dir)?;
    let raw = model.checkpoint();
    let layers: BTreeMap<String, _> = model.layers().into_iter().map(|l| (l.prefix.clone(), l)).collect();
    let plans = if args.fuse { plan_fusion(layers.keys().map(String::as_str)) } else { Vec::new() };
    let fused_part: BTreeMap<&str, &str> = plans
        .iter()
        .flat_map(|p| p.parts.iter().map(move |part| (part.as_str(), p.fused.as_str())))
        .collect();
    // Output name -> (dtype, shape, source), sorted by name.
    let mut outputs: BTreeMap<String, (Dtype, Vec<usize>, Source)> = BTreeMap::new();
    for name in raw.tensor_names() {
        let bias_of_fused = name.strip_suffix(".bias").is_some_and(|p| fused_part.contains_key(p));
        if model.is_quantized_part(name) || bias_of_fused {
            continue;
        }
        let info =
            raw.info(name).ok_or_else(|| Error::Format(FormatError::MissingTensors(vec![name.into()])))?;
        outputs.insert(name.into(), (info.dtype, info.shape.clone(), Source::Plain(name.into())));
    }
    let dtype = io_dtype(args.dtype);
    for (prefix, l) in &layers {
        if !fused_part.contains_key(prefix.as_str()) {
            let shape = if l.experts > 1 { vec![l.experts, l.out, l.inp] } else { vec![l.out, l.inp] };
            outputs.insert(format!("{prefix}.weight"), (dtype, shape, Source::Weight(vec![prefix.clone()])));
        }
    }
    for plan in &plans {
        let parts: Vec<_> = plan.parts.iter().filter_map(|p| layers.get(p)).collect();
        let out: usize = parts.iter().map(|l| l.out).sum();
        if let Some(i) = parts.iter().position(|l| l.inp != parts[0].inp || l.experts != 1) {
            return Err(Error::Kernel(KernelError::Fuse { what: "K", part: i }).into());
        }
        let shape = vec![out, parts[0].inp];
        outputs.insert(format!("{}.weight", plan.fused), (dtype, shape, Source::Weight(plan.parts.clone())));
        if let Some(b) = parts[0].bias {
            if let Some(i) = parts.iter().position(|l| l.bias != Some(b)) {
                return Err(Error::Kernel(KernelError::Fuse { what: "bias", part: i }).into());
            }
            outputs.insert(format!("{}.bias", plan.fused), (b, vec![out], Source::Bias(plan.parts.clone())));
        }
    }
    let decl: Vec<(String, Dtype, Vec<usize>)> =
        outputs.iter().map(|(name, (d, shape, _))| (name.clone(), *d, shape.clone())).collect();
    let meta = BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "quant_kernels".to_string(),
            format!("dequantized by qk {} ({})", env!("CARGO_PKG_VERSION"), describe(&model)),
        ),
    ]);
    let mut writer = SafetensorsWriter::create(&args.out, &decl, &meta)?;
    let (mut dequantized, mut copied) = (0, 0);
    let bar = crate::progress::bar(layers.len(), "layers");
    for (name, (_, _, source)) in &outputs {
        bar.set_message(name.clone());
        let bytes = match source {
            Source::Plain(t) => {
                copied += 1;
                raw.read(t)?
            }
            Source::Weight(parts) => {
                for p in parts {
                    bar.suspend(|| warn_zero_format(&model, p))?;
                    write_linear(&mut writer, name, &model, &layers[p], args.dtype)?;
                    dequantized += 1;
                    bar.inc(1);
                }
                continue;
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
    bar.finish_and_clear();
    out!(
        "wrote {}: {dequantized} layers dequantized to {}{} ({} fused groups), {copied} tensors copied, {:.2} s",
        args.out.display(),
        args.dtype,
        if args.fuse { ", fused" } else { "" },
        plans.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
