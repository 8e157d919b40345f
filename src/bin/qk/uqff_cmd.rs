//! `qk quantize` (safetensors -> HQQ UQFF) and `qk dequantize FILE.uqff`.

use crate::CliError;
use crate::dequantize_cmd::DequantizeArgs;
use clap::{Args, ValueEnum};
use half::{bf16, f16};
use quant_kernels::error::FormatError;
use quant_kernels::hqq::{self, Axis, HqqConfig};
use quant_kernels::io::safetensors::to_le_bytes;
use quant_kernels::io::uqff::{self, Extension, UqffHqqLayer};
use quant_kernels::io::{Dtype, SafetensorsFile, SafetensorsWriter};
use quant_kernels::{Error, FloatType, FloatVec, Parallelism};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// UQFF revision to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UqffVersion {
    /// 1.2.0 (safetensors with named tensors).
    V1,
    /// 0.2.0 (legacy byte blobs).
    Legacy,
}

/// Options of `qk quantize`.
pub struct QuantizeArgs {
    pub input: PathBuf,
    pub out: PathBuf,
    pub config: HqqConfig,
    pub version: UqffVersion,
}

/// Quantization method of `qk quantize`.
#[derive(Clone, Copy, ValueEnum)]
enum Method {
    /// Half-Quadratic Quantization (the only method UQFF holds here).
    Hqq,
}

/// Quantization axis of `qk quantize`.
#[derive(Clone, Copy, ValueEnum)]
enum AxisArg {
    /// hqq's axis=0: a group is a column of the [g, numel/g] code matrix (strided weights).
    #[value(name = "0")]
    Zero,
    /// hqq's axis=1: a group is a row of the [numel/g, g] code matrix (consecutive weights).
    #[value(name = "1")]
    One,
}

/// UQFF revision written by `qk quantize`.
#[derive(Clone, Copy, ValueEnum)]
enum UqffArg {
    /// 1.2.0: safetensors with named tensors.
    #[value(name = "1.2", alias = "1.2.0")]
    V1,
    /// 0.2.0: legacy byte blobs (every bit width).
    #[value(name = "0.2", alias = "0.2.0")]
    Legacy,
}

/// The arguments of `qk quantize`.
#[derive(Args)]
pub struct QuantizeCli {
    /// The safetensors file to quantize.
    #[arg(value_name = "IN")]
    input: PathBuf,
    /// Quantization method (only hqq writes UQFF).
    #[arg(long, value_enum, default_value_t = Method::Hqq)]
    method: Method,
    /// Bits per weight: 8, 4, 3, 2 or 1.
    #[arg(long, value_name = "B")]
    bits: u8,
    /// The .uqff file to write.
    #[arg(short, long, value_name = "OUT")]
    out: PathBuf,
    /// Weights per group.
    #[arg(long, value_name = "G", default_value_t = 64)]
    group_size: usize,
    /// The axis hqq groups over.
    #[arg(long, value_enum, default_value_t = AxisArg::Zero)]
    axis: AxisArg,
    /// HQQ optimizer steps (0: none).
    #[arg(long, value_name = "N", default_value_t = 10, conflicts_with = "no_optimize")]
    steps: usize,
    /// Skip HQQ's optimizer (round to nearest).
    #[arg(long)]
    no_optimize: bool,
    /// Round the initial zero points to integers.
    #[arg(long)]
    round_zeros: bool,
    /// UQFF revision to write.
    #[arg(long, value_enum, value_name = "VERSION", default_value_t = UqffArg::V1)]
    uqff: UqffArg,
}

impl From<QuantizeCli> for QuantizeArgs {
    fn from(a: QuantizeCli) -> Self {
        let Method::Hqq = a.method;
        let config = HqqConfig {
            bits: a.bits,
            group_size: a.group_size,
            axis: match a.axis {
                AxisArg::Zero => Axis::Zero,
                AxisArg::One => Axis::One,
            },
            optimization_steps: Some(a.steps).filter(|&s| s > 0 && !a.no_optimize),
            round_zeros: a.round_zeros,
            channel_wise: true,
        };
        let version = match a.uqff {
            UqffArg::V1 => UqffVersion::V1,
            UqffArg::Legacy => UqffVersion::Legacy,
        };
        QuantizeArgs { input: a.input, out: a.out, config, version }
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::io(path, e)
}

/// `qk quantize IN.safetensors --method hqq ... --out OUT.uqff`: every 2-D float `*.weight`
/// is quantized with HQQ (f32 scales and zeros, as mistral.rs's ISQ writes), its `*.bias`
/// attached; other tensors are not part of a UQFF file and are left out.
pub fn quantize(args: &QuantizeArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let file = SafetensorsFile::open(&args.input)?;
    let mut layers: Vec<(String, UqffHqqLayer)> = Vec::new();
    let (mut weights, mut skipped) = (0usize, Vec::new());
    let quantizable = |info: &quant_kernels::io::safetensors::TensorInfo| {
        info.shape.len() == 2 && matches!(info.dtype, Dtype::F32 | Dtype::F16 | Dtype::Bf16)
    };
    let todo = file.tensors().iter().filter(|(n, i)| n.ends_with(".weight") && quantizable(i)).count();
    let bar = crate::progress::bar(todo, "tensors");
    for (name, info) in file.tensors() {
        let Some(prefix) = name.strip_suffix(".weight") else { continue };
        if !quantizable(info) {
            skipped.push(name.clone());
            continue;
        }
        bar.set_message(name.clone());
        let (rows, cols) = (info.shape[0], info.shape[1]);
        let (config, par) = (&args.config, Parallelism::RAYON);
        let q = match info.dtype {
            Dtype::F16 => hqq::quantize_hqq(&file.read_as::<f16>(name)?, rows, cols, config, par),
            Dtype::Bf16 => hqq::quantize_hqq(&file.read_as::<bf16>(name)?, rows, cols, config, par),
            _ => hqq::quantize_hqq(&file.read_as::<f32>(name)?, rows, cols, config, par),
        }
        .map_err(|e| {
            Error::Format(FormatError::Config {
                field: name.clone(),
                reason: format!("cannot be quantized: {e}"),
            })
        })?;
        let bias_name = format!("{prefix}.bias");
        let bias = match file.info(&bias_name).map(|i| (i.dtype, i.shape.clone())) {
            None => None,
            Some((_, shape)) if shape != [rows] => {
                return Err(Error::Format(FormatError::TensorShape {
                    tensor: bias_name,
                    expected: vec![rows],
                    got: shape,
                })
                .into());
            }
            Some((Dtype::F16, _)) => Some(FloatVec::F16(file.read_as(&bias_name)?)),
            Some((Dtype::Bf16, _)) => Some(FloatVec::Bf16(file.read_as(&bias_name)?)),
            Some((Dtype::F32, _)) => Some(FloatVec::F32(file.read_as(&bias_name)?)),
            Some((d, _)) => {
                return Err(Error::Format(FormatError::TensorDtype {
                    tensor: bias_name,
                    expected: "F16, BF16 or F32",
                    got: d.to_string(),
                })
                .into());
            }
        };
        layers.push((
            prefix.to_string(),
            UqffHqqLayer::from_quantized(&q, &args.config, FloatType::F32, bias)?,
        ));
        weights += rows * cols;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let bytes = match args.version {
        UqffVersion::V1 => {
            if !matches!(args.config.bits, 4 | 8) {
                eprintln!(
                    "qk: note: mistral.rs reads only 4- and 8-bit HQQ layers from UQFF 1.2; --uqff 0.2 has every width"
                );
            }
            uqff::write_v1(&layers, Extension::Allow)?
        }
        UqffVersion::Legacy => {
            let names: Vec<String> = layers.iter().map(|(p, _)| format!("{p}.weight")).collect();
            let only: Vec<UqffHqqLayer> = layers.iter().map(|(_, l)| l.clone()).collect();
            uqff::write_legacy_file(&only, Some(&names))?
        }
    };
    std::fs::write(&args.out, &bytes).map_err(|e| io_error(&args.out, e))?;
    let secs = start.elapsed().as_secs_f64();
    out!(
        "wrote {} (UQFF {}): {} layers, {} weights, {}-bit group {} axis {}, {} optimizer steps max; {} bytes; {:.2} s ({:.1} M weights/s)",
        args.out.display(),
        if args.version == UqffVersion::V1 { "1.2.0" } else { "0.2.0" },
        layers.len(),
        weights,
        args.config.bits,
        args.config.group_size,
        if args.config.axis == hqq::Axis::Zero { 0 } else { 1 },
        args.config.optimization_steps.unwrap_or(0),
        bytes.len(),
        secs,
        weights as f64 / secs / 1e6
    );
    if !skipped.is_empty() {
        out!("left out {} tensors that are not 2-D float weights (e.g. {})", skipped.len(), skipped[0]);
    }
    Ok(())
}

/// The layers of a UQFF file of either revision, named `<p>.weight` (a bare 0.2.0 layer blob,
/// as mistral.rs's `serialize()` returns it, is one layer `layers.0.weight`).
pub fn read_any(bytes: &[u8]) -> Result<Vec<(String, UqffHqqLayer)>, Error> {
    let st = safetensors::SafeTensors::deserialize(bytes).ok();
    if st.is_none()
        && let Ok(layer) = uqff::read_legacy(bytes)
    {
        return Ok(vec![("layers.0.weight".to_string(), layer)]);
    }
    let is_v1 = st.is_some_and(|st| st.names().contains(&"uqff.version.major"));
    if is_v1 {
        return Ok(uqff::read_v1(bytes, Extension::Allow)?
            .into_iter()
            .map(|(p, l)| (format!("{p}.weight"), l))
            .collect());
    }
    Ok(uqff::read_legacy_file_named(bytes)?
        .into_iter()
        .map(|(i, name, l)| (name.unwrap_or_else(|| format!("layers.{i}.weight")), l))
        .collect())
}

/// `qk dequantize FILE.uqff --out FILE.safetensors [--dtype]`: each layer as `<p>.weight` in
/// its original `[out, in]` shape, its bias as `<p>.bias`.
pub fn dequantize(args: &DequantizeArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let bytes = std::fs::read(&args.dir).map_err(|e| io_error(&args.dir, e))?;
    let layers = read_any(&bytes)?;
    let dtype = match args.dtype {
        FloatType::F32 => Dtype::F32,
        FloatType::F16 => Dtype::F16,
        FloatType::Bf16 => Dtype::Bf16,
    };
    let mut decl = Vec::new();
    for (name, l) in &layers {
        decl.push((name.clone(), dtype, l.shape.clone()));
        if let Some(b) = &l.bias {
            decl.push((format!("{}.bias", name.trim_end_matches(".weight")), b.dtype, b.shape.clone()));
        }
    }
    let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
    let mut w = SafetensorsWriter::create(&args.out, &decl, &meta)?;
    let par = quant_kernels::Parallelism::RAYON;
    let bar = crate::progress::bar(layers.len(), "layers");
    for (name, l) in &layers {
        bar.set_message(name.clone());
        let data = match args.dtype {
            FloatType::F32 => to_le_bytes(&l.dequantize::<f32>(par)?),
            FloatType::F16 => to_le_bytes(&l.dequantize::<f16>(par)?),
            FloatType::Bf16 => to_le_bytes(&l.dequantize::<bf16>(par)?),
        };
        w.write(name, &data)?;
        if let Some(b) = &l.bias {
            w.write(&format!("{}.bias", name.trim_end_matches(".weight")), &b.data)?;
        }
        bar.inc(1);
    }
    w.finish()?;
    bar.finish_and_clear();
    out!(
        "wrote {}: {} HQQ layers dequantized to {}, {:.2} s",
        args.out.display(),
        layers.len(),
        args.dtype,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `qk inspect FILE`: a UQFF file's HQQ layers, or a plain safetensors file's tensors.
pub fn inspect_file(path: &Path) -> Result<(), CliError> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, e))?;
    let is_uqff = match safetensors::SafeTensors::deserialize(&bytes) {
        Ok(st) => {
            let names = st.names();
            names.contains(&"uqff.version.major")
                || (!names.is_empty() && names.iter().all(|n| n.parse::<usize>().is_ok()))
        }
        Err(_) => true, // not safetensors: a bare legacy blob, or an error from the UQFF reader
    };
    if !is_uqff {
        let file = SafetensorsFile::open(path)?;
        out!("{}: safetensors, {} tensors", path.display(), file.tensors().len());
        out!("{:<56} {:>8} {:>20} {:>12}", "tensor", "dtype", "shape", "bytes");
        for (name, info) in file.tensors() {
            out!(
                "{name:<56} {:>8} {:>20} {:>12}",
                info.dtype.to_string(),
                format!("{:?}", info.shape),
                info.len
            );
        }
        return Ok(());
    }
    let layers = read_any(&bytes)?;
    out!("{}: UQFF ({} bytes), {} HQQ layers", path.display(), bytes.len(), layers.len());
    out!(
        "{:<44} {:>12} {:>4} {:>5} {:>4} {:>5} {:>6} {:>5} {:>10} {:>7}",
        "layer",
        "shape",
        "bits",
        "group",
        "axis",
        "steps",
        "params",
        "bias",
        "bytes",
        "bits/w"
    );
    for (name, l) in &layers {
        let stored = l.w_q.data.len()
            + l.scales.data.len()
            + l.zeros.data.len()
            + l.bias.as_ref().map_or(0, |b| b.data.len());
        let numel: usize = l.shape.iter().product();
        out!(
            "{name:<44} {:>12} {:>4} {:>5} {:>4} {:>5} {:>6} {:>5} {stored:>10} {:>7.3}",
            format!("{:?}", l.shape),
            l.config.bits,
            l.config.group_size,
            if l.config.axis == hqq::Axis::Zero { 0 } else { 1 },
            l.config.optimization_steps.unwrap_or(0),
            l.scales.dtype.to_string(),
            l.bias.as_ref().map_or("-".to_string(), |b| b.dtype.to_string()),
            8.0 * stored as f64 / numel.max(1) as f64
        );
    }
    Ok(())
}
