//! `qk`: the quant-kernels command-line tool (arguments parsed by clap; `qk --help` and
//! `qk COMMAND --help` list every flag).
//!
//! ```text
//! qk [demo]                         embedded upstream outputs reproduced + throughput vs memcpy
//! qk inspect PATH                   a GPTQ/AWQ/FP8 checkpoint's config and layers, a .uqff file's
//!                                   HQQ layers or a .safetensors file's tensors
//! qk dequantize PATH --out FILE     every quantized layer (checkpoint DIR or .uqff file) as
//!    [--dtype f32|f16|bf16] [--fuse]  <prefix>.weight [out, in], others copied
//! qk shard DIR --world-size N --out OUT   OUT/rank-{r}-of-{N}/: a packed checkpoint per rank
//! qk quantize IN.safetensors --method hqq --bits B --out OUT.uqff [--group-size G] [--axis 0|1]
//!    [--steps N | --no-optimize] [--round-zeros] [--uqff 1.2|0.2]   HQQ-quantize every 2-D *.weight
//! qk bench [--quick] [--json]       kernels next to memcpy and a pure read (JSON records)
//! ```
//!
//! `dequantize`, `quantize` and `shard` show a progress bar on stderr while it is a terminal.
//! Exit status: 0 on success (`--help` and `--version` too), 2 on a usage error or any failure,
//! with a one-line message on stderr that says which.

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
mod dequantize_cmd;
mod progress;
mod shard_cmd;
mod uqff_cmd;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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

/// Pack, quantize, dequantize and shard quantized LLM weights (HQQ, GPTQ, AWQ, FP8).
///
/// Without a command, runs the demo. Exit status: 0 on success, 2 on a usage error or any
/// failure (one line on stderr says which).
#[derive(Parser)]
#[command(name = "qk", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demo (also `qk` alone).
    ///
    /// Pack/dequantize embedded hqq, GPTQ, AWQ and FP8 outputs, load + fuse + dequantize an
    /// embedded tiny GPTQ checkpoint, time 4-bit dequantization next to memcpy.
    Demo,
    /// Show a checkpoint's config and layers, or a .uqff or .safetensors file's contents.
    ///
    /// A GPTQ, AWQ or FP8 checkpoint directory: its config and layers (shape, method, stored
    /// bytes, bits per weight). A .uqff file: its HQQ layers. A .safetensors file: its tensors.
    Inspect {
        /// A checkpoint directory, a .uqff file or a .safetensors file.
        #[arg(value_name = "PATH")]
        path: PathBuf,
    },
    /// Dequantize a GPTQ, AWQ or FP8 checkpoint, or a .uqff file, to one safetensors file.
    ///
    /// A checkpoint: write every quantized layer as `<prefix>.weight` in the [out, in]
    /// orientation of an unquantized checkpoint (default dtype f16) and copy the other tensors;
    /// --fuse writes q/k/v as qkv_proj and gate/up as gate_up_proj. A .uqff file (either UQFF
    /// revision): write each layer back as `<prefix>.weight` in its [out, in] shape, and its bias.
    Dequantize(dequantize_cmd::DequantizeCli),
    /// Split a GPTQ, AWQ or FP8 checkpoint for tensor parallelism: OUT/rank-{r}-of-{N}/ per rank.
    ///
    /// Each rank directory is a checkpoint of the same scheme and file layout, still packed
    /// (q/k/v, gate/up split along the outputs, o/down along the inputs, the rest copied). A
    /// world size that does not fit names the layer and the nearest that do, before anything is
    /// written.
    Shard(shard_cmd::ShardArgs),
    /// HQQ-quantize a safetensors file's weights into mistral.rs's UQFF.
    ///
    /// Quantize every 2-D float *.weight tensor with HQQ (its *.bias goes with it) and write
    /// mistral.rs's UQFF (f32 scales and zeros, as its ISQ does); other tensors are left out.
    Quantize(uqff_cmd::QuantizeCli),
    /// Time each kernel next to a memcpy of its output size.
    ///
    /// Each kernel's throughput (4096x4096; the multiply at batch 1, 8, 32, 128) next to a
    /// memcpy of its output size and a pure read of the weight in the same run, every op cycling
    /// through 256 MiB of copies; --json: one record per line.
    Bench(bench_cmd::BenchArgs),
}

/// A clap error as one line: its first paragraph (the message, and the argument it names when
/// clap puts that on the next line) without the `error: ` prefix, the usage and tips left out.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    let line = first.join(" ");
    line.strip_prefix("error: ").unwrap_or(&line).to_string()
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        None | Some(Command::Demo) => demo::run(),
        Some(Command::Inspect { path }) if path.is_file() => uqff_cmd::inspect_file(&path),
        Some(Command::Inspect { path }) => checkpoint_cmd::inspect(&path),
        Some(Command::Dequantize(a)) => dequantize_cmd::run(a.into()),
        Some(Command::Shard(a)) => shard_cmd::shard(&a),
        Some(Command::Quantize(a)) => uqff_cmd::quantize(&a.into()),
        Some(Command::Bench(a)) => bench_cmd::bench(a.quick, a.json),
    }
}

fn main() -> ExitCode {
    let result = match Cli::try_parse() {
        Ok(cli) => run(cli),
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            // Help and version go to stdout; a closed pipe (`qk --help | head`) is no failure.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => Err(CliError::Usage(one_line(&e))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Stdout(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("qk: {e}");
            ExitCode::from(2)
        }
    }
}
