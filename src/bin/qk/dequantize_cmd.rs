//! `qk dequantize PATH --out FILE`: a checkpoint directory ([`crate::checkpoint_cmd`]) or a
//! `.uqff` file ([`crate::uqff_cmd`]) to one safetensors file.

use crate::CliError;
use clap::{Args, ValueEnum};
use quant_kernels::FloatType;
use std::path::PathBuf;

/// Element type of `qk dequantize`'s output.
#[derive(Clone, Copy, ValueEnum)]
enum OutDtype {
    F32,
    F16,
    Bf16,
}

/// The arguments of `qk dequantize`.
#[derive(Args)]
pub struct DequantizeCli {
    /// A GPTQ/AWQ/FP8 checkpoint directory, or a .uqff file.
    #[arg(value_name = "PATH")]
    path: PathBuf,
    /// The safetensors file to write.
    #[arg(short, long, value_name = "FILE")]
    out: PathBuf,
    /// Element type of the dequantized weights.
    #[arg(long, value_enum, default_value_t = OutDtype::F16)]
    dtype: OutDtype,
    /// Write q/k/v as qkv_proj and gate/up as gate_up_proj (a checkpoint only).
    #[arg(long)]
    fuse: bool,
}

/// Options of `qk dequantize`.
pub struct DequantizeArgs {
    /// The checkpoint directory, or the .uqff file.
    pub dir: PathBuf,
    /// The safetensors file to write.
    pub out: PathBuf,
    /// Element type of the dequantized weights.
    pub dtype: FloatType,
    /// Write q/k/v as `qkv_proj` and gate/up as `gate_up_proj` (checkpoints only).
    pub fuse: bool,
}

impl From<DequantizeCli> for DequantizeArgs {
    fn from(a: DequantizeCli) -> Self {
        let dtype = match a.dtype {
            OutDtype::F32 => FloatType::F32,
            OutDtype::F16 => FloatType::F16,
            OutDtype::Bf16 => FloatType::Bf16,
        };
        DequantizeArgs { dir: a.path, out: a.out, dtype, fuse: a.fuse }
    }
}

/// `qk dequantize`: a file is UQFF, a directory a checkpoint.
pub fn run(args: DequantizeArgs) -> Result<(), CliError> {
    if args.dir.is_file() {
        crate::uqff_cmd::dequantize(&args)
    } else {
        crate::checkpoint_cmd::dequantize(&args)
    }
}
