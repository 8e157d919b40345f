//! `qk`: the quant-kernels command-line tool.
//!
//! ```text
//! qk [demo]                         embedded upstream outputs reproduced + throughput vs memcpy
//! qk inspect DIR                    a GPTQ/AWQ/FP8 checkpoint's config and layers
//! qk dequantize DIR --out FILE      every quantized layer as <prefix>.weight [out, in], others copied
//!    [--dtype f32|f16|bf16] [--fuse]
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

mod checkpoint_cmd;
mod demo;
mod demo_checkpoint;

use quant_kernels::DType;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage:
  qk [demo]                      run the demo: pack/dequantize embedded hqq, GPTQ, AWQ and FP8
                                 outputs, load + fuse + dequantize an embedded tiny GPTQ
                                 checkpoint, time 4-bit dequantization next to memcpy
  qk inspect DIR                 show a GPTQ, AWQ or FP8 checkpoint's config and layers (shape,
                                 method, stored bytes, bits per weight)
  qk dequantize DIR --out FILE.safetensors [--dtype f32|f16|bf16] [--fuse]
                                 write every quantized layer as <prefix>.weight in the [out, in]
                                 orientation of an unquantized checkpoint (default dtype f16),
                                 copy the other tensors; --fuse writes q/k/v as qkv_proj and
                                 gate/up as gate_up_proj
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
    let dir = dir.ok_or_else(|| CliError::Usage("dequantize needs a checkpoint directory".into()))?;
    let out = out.ok_or_else(|| CliError::Usage("dequantize needs --out FILE.safetensors".into()))?;
    Ok(DequantizeArgs { dir, out, dtype, fuse })
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
            [dir] => checkpoint_cmd::inspect(&PathBuf::from(dir)),
            _ => Err(CliError::Usage("inspect takes one checkpoint directory".into())),
        },
        Some("dequantize") => checkpoint_cmd::dequantize(&parse_dequantize(&args[1..])?),
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
