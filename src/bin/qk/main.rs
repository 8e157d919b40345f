//! `qk`: the quant-kernels command-line tool.
//!
//! ```text
//! qk [demo]                         embedded upstream outputs reproduced + throughput vs memcpy
//! qk quantize IN.safetensors --bits B --out OUT.uqff [...]   HQQ-quantize every 2-D *.weight
//! qk bench [--quick] [--json]        kernels next to memcpy (JSON records for scripts)
//! qk inspect DIR                    a GPTQ/AWQ/FP8 checkpoint's config and layers
//! qk dequantize DIR --out FILE      every quantized layer as <prefix>.weight [out, in], others copied
//!    [--dtype f32|f16|bf16] [--fuse]
//! qk shard DIR --world-size N --out OUT   OUT/rank-{r}-of-{N}/: a packed checkpoint per rank
//! ```
//!
//! Exit status: 0 on success, 2 on a usage error or any failure (the message says which).

/// `println!` that reports a closed stdout (`qk inspect DIR | head`) as an error instead of
/// panicking; `main` exits quietly on a broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::CliError::Stdout)?
    }};
}

mod bench_cmd;
mod checkpoint_cmd;
mod demo;
mod demo_checkpoint;
mod shard_cmd;
mod uqff_cmd;

use quant_kernels::DType;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  qk [demo]                      run the demo: pack/dequantize embedded hqq, GPTQ, AWQ and FP8
                                 outputs, load + fuse + dequantize an embedded tiny GPTQ
                                 checkpoint, time 4-bit dequantization next to memcpy
  qk inspect DIR|FILE            show a GPTQ, AWQ or FP8 checkpoint's config and layers (shape,
                                 method, stored bytes, bits per weight), a .uqff file's HQQ
                                 layers, or a .safetensors file's tensors
  qk dequantize DIR --out FILE.safetensors [--dtype f32|f16|bf16] [--fuse]
                                 write every quantized layer as <prefix>.weight in the [out, in]
                                 orientation of an unquantized checkpoint (default dtype f16),
                                 copy the other tensors; --fuse writes q/k/v as qkv_proj and
                                 gate/up as gate_up_proj
  qk shard DIR --world-size N --out OUT
                                 split a GPTQ, AWQ or FP8 checkpoint for tensor parallelism:
                                 OUT/rank-{r}-of-{N}/ per rank, a checkpoint of the same scheme
                                 and file layout, still packed (q/k/v, gate/up split along the
                                 outputs, o/down along the inputs, the rest copied); a world
                                 size that does not fit names the layer and the nearest that do
  qk quantize IN.safetensors --method hqq --bits 8|4|3|2|1 --out OUT.uqff
             [--group-size G (64)] [--axis 0|1 (0)] [--steps N (10) | --no-optimize]
             [--round-zeros] [--uqff 1.2|0.2 (1.2)]
                                 quantize every 2-D float *.weight tensor with HQQ (its *.bias
                                 goes with it) and write mistral.rs's UQFF
  qk dequantize FILE.uqff --out FILE.safetensors [--dtype f32|f16|bf16]
                                 write each UQFF layer back as <prefix>.weight in its [out, in]
                                 shape (either UQFF revision)
  qk bench [--quick] [--json]    each kernel's throughput (4096x4096) next to a memcpy of its
                                 output size in the same run; --json: one record per line
  qk --help                      this text";

/// Why `qk` failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad command line.
    #[error("{0} (run `qk --help`)")]
    Usage(String),
    /// The embedded demo data is inconsistent.
    #[error("embedded data: {0}")]
    Data(String),
    /// Standard output could not be written.
    #[error("stdout: {0}")]
    Stdout(std::io::Error),
    /// A library error (bad checkpoint, I/O, shapes...).
    #[error(transparent)]
    Kernel(#[from] quant_kernels::Error),
}

/// Options of `qk dequantize`.
pub struct DequantizeArgs {
    pub dir: PathBuf,
    pub out: PathBuf,
    pub dtype: DType,
    pub fuse: bool,
}

fn parse_dequantize(args: &[String]) -> Result<DequantizeArgs, CliError> {
    let (mut dir, mut out, mut dtype, mut fuse) = (None, None, DType::F16, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value =
            |flag: &str| it.next().cloned().ok_or_else(|| CliError::Usage(format!("{flag} needs a value")));
        match a.as_str() {
            "--out" | "-o" => out = Some(PathBuf::from(value(a)?)),
            "--dtype" => {
                dtype = match value(a)?.as_str() {
                    "f32" => DType::F32,
                    "f16" => DType::F16,
                    "bf16" => DType::Bf16,
                    other => {
                        return Err(CliError::Usage(format!("unknown dtype `{other}` (f32, f16 or bf16)")));
                    }
                }
            }
            "--fuse" => fuse = true,
            flag if flag.starts_with('-') => return Err(CliError::Usage(format!("unknown option `{flag}`"))),
            path if dir.is_none() => dir = Some(PathBuf::from(path)),
            extra => return Err(CliError::Usage(format!("unexpected argument `{extra}`"))),
        }
    }
    let dir =
        dir.ok_or_else(|| CliError::Usage("dequantize needs a checkpoint directory or a .uqff file".into()))?;
    let out = out.ok_or_else(|| CliError::Usage("dequantize needs --out FILE.safetensors".into()))?;
    Ok(DequantizeArgs { dir, out, dtype, fuse })
}

fn parse_shard(args: &[String]) -> Result<shard_cmd::ShardArgs, CliError> {
    let (mut dir, mut out, mut world) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value =
            |flag: &str| it.next().cloned().ok_or_else(|| CliError::Usage(format!("{flag} needs a value")));
        match a.as_str() {
            "--out" | "-o" => out = Some(PathBuf::from(value(a)?)),
            "--world-size" | "-n" => {
                let v = value(a)?;
                world = match v.parse::<usize>() {
                    Ok(n) if n > 0 => Some(n),
                    _ => {
                        return Err(CliError::Usage(format!("--world-size: `{v}` is not a positive number")));
                    }
                }
            }
            flag if flag.starts_with('-') => return Err(CliError::Usage(format!("unknown option `{flag}`"))),
            path if dir.is_none() => dir = Some(PathBuf::from(path)),
            extra => return Err(CliError::Usage(format!("unexpected argument `{extra}`"))),
        }
    }
    Ok(shard_cmd::ShardArgs {
        dir: dir.ok_or_else(|| CliError::Usage("shard needs a checkpoint directory".into()))?,
        world_size: world.ok_or_else(|| CliError::Usage("shard needs --world-size N".into()))?,
        out: out.ok_or_else(|| CliError::Usage("shard needs --out DIR".into()))?,
    })
}

fn parse_quantize(args: &[String]) -> Result<uqff_cmd::QuantizeArgs, CliError> {
    use quant_kernels::hqq::{Axis, HqqConfig};
    let (mut input, mut out, mut bits, mut group, mut axis) = (None, None, None, 64usize, Axis::Zero);
    let (mut steps, mut round_zeros, mut version) = (Some(10usize), false, uqff_cmd::UqffVersion::V1);
    let mut it = args.iter();
    let number = |flag: &str, v: String| {
        v.parse::<usize>().map_err(|_| CliError::Usage(format!("{flag}: `{v}` is not a number")))
    };
    while let Some(a) = it.next() {
        let mut value =
            |flag: &str| it.next().cloned().ok_or_else(|| CliError::Usage(format!("{flag} needs a value")));
        match a.as_str() {
            "--method" => {
                let m = value(a)?;
                if m != "hqq" {
                    return Err(CliError::Usage(format!("--method {m}: only hqq quantizes to UQFF")));
                }
            }
            "--bits" => {
                bits = Some(
                    u8::try_from(number(a, value(a)?)?)
                        .map_err(|_| CliError::Usage("--bits: too large".into()))?,
                )
            }
            "--group-size" => group = number(a, value(a)?)?,
            "--axis" => {
                axis = match value(a)?.as_str() {
                    "0" => Axis::Zero,
                    "1" => Axis::One,
                    v => return Err(CliError::Usage(format!("--axis {v}: expected 0 or 1"))),
                }
            }
            "--steps" => steps = Some(number(a, value(a)?)?),
            "--no-optimize" => steps = None,
            "--round-zeros" => round_zeros = true,
            "--uqff" => {
                version = match value(a)?.as_str() {
                    "1.2" | "1.2.0" => uqff_cmd::UqffVersion::V1,
                    "0.2" | "0.2.0" => uqff_cmd::UqffVersion::Legacy,
                    v => return Err(CliError::Usage(format!("--uqff {v}: expected 1.2 or 0.2"))),
                }
            }
            "--out" | "-o" => out = Some(PathBuf::from(value(a)?)),
            flag if flag.starts_with('-') => return Err(CliError::Usage(format!("unknown option `{flag}`"))),
            path if input.is_none() => input = Some(PathBuf::from(path)),
            extra => return Err(CliError::Usage(format!("unexpected argument `{extra}`"))),
        }
    }
    let config = HqqConfig {
        bits: bits.ok_or_else(|| CliError::Usage("quantize needs --bits".into()))?,
        group_size: group,
        axis,
        optimization_steps: steps.filter(|&s| s > 0),
        round_zeros,
        channel_wise: true,
    };
    Ok(uqff_cmd::QuantizeArgs {
        input: input.ok_or_else(|| CliError::Usage("quantize needs an input .safetensors file".into()))?,
        out: out.ok_or_else(|| CliError::Usage("quantize needs --out FILE.uqff".into()))?,
        config,
        version,
    })
}

fn run(args: &[String]) -> Result<(), CliError> {
    match args.first().map(String::as_str) {
        None => demo::run(),
        Some("demo") if args.len() == 1 => demo::run(),
        Some("-h" | "--help" | "help") => {
            out!("{USAGE}");
            Ok(())
        }
        Some("inspect") => match &args[1..] {
            [path] if PathBuf::from(path).is_file() => uqff_cmd::inspect_file(&PathBuf::from(path)),
            [dir] => checkpoint_cmd::inspect(&PathBuf::from(dir)),
            _ => Err(CliError::Usage(
                "inspect takes one checkpoint directory, .uqff or .safetensors file".into(),
            )),
        },
        Some("dequantize") => {
            let a = parse_dequantize(&args[1..])?;
            if a.dir.is_file() { uqff_cmd::dequantize(&a) } else { checkpoint_cmd::dequantize(&a) }
        }
        Some("shard") => shard_cmd::shard(&parse_shard(&args[1..])?),
        Some("quantize") => uqff_cmd::quantize(&parse_quantize(&args[1..])?),
        Some("bench") => {
            let (mut quick, mut json) = (false, false);
            for a in &args[1..] {
                match a.as_str() {
                    "--quick" => quick = true,
                    "--json" => json = true,
                    other => return Err(CliError::Usage(format!("bench: unknown option `{other}`"))),
                }
            }
            bench_cmd::bench(quick, json)
        }
        Some(_) => Err(CliError::Usage(format!("unknown command `{}`", args.join(" ")))),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qk: {e}");
            ExitCode::from(2)
        }
    }
}
