//! `qk shard DIR --world-size N --out OUT`: one checkpoint directory per rank, still packed
//! ([`quant_kernels::tp::shard_checkpoint`]), with a progress bar.

use crate::CliError;
use clap::Args;
use quant_kernels::tp::{ShardProgress, shard_checkpoint};
use std::path::PathBuf;
use std::time::Instant;

/// The arguments of `qk shard`.
#[derive(Args)]
pub struct ShardArgs {
    /// A GPTQ, AWQ or FP8 checkpoint directory.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Number of tensor-parallel ranks.
    #[arg(short = 'n', long, value_name = "N", value_parser = positive)]
    pub world_size: usize,
    /// Directory to write rank-{r}-of-{N}/ into.
    #[arg(short, long, value_name = "OUT")]
    pub out: PathBuf,
}

/// A world size: a positive integer.
fn positive(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("`{v}` is not a positive number")),
    }
}

/// `qk shard DIR --world-size N --out OUT`.
pub fn shard(args: &ShardArgs) -> Result<(), CliError> {
    let start = Instant::now();
    let mut bar = None;
    let s = shard_checkpoint(&args.dir, args.world_size, &args.out, &mut |p| match p {
        ShardProgress::Start { steps } => bar = Some(crate::progress::bar(steps, "steps")),
        ShardProgress::Headers { unit, ranks } => {
            if let Some(b) = &bar {
                b.set_message(format!("{unit}: headers"));
                b.inc(ranks as u64);
            }
        }
        ShardProgress::Written { unit, rank } => {
            if let Some(b) = &bar {
                b.set_message(format!("{unit}: rank {rank} of {}", args.world_size));
                b.inc(1);
            }
        }
    })?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    out!(
        "wrote {} ranks under {}: {} column-parallel and {} row-parallel layers split, {} replicated; {:.2} s",
        s.world_size,
        args.out.display(),
        s.column,
        s.row,
        s.replicated,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
