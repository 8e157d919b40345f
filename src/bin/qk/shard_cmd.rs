//! `qk shard DIR --world-size N --out OUT`: one checkpoint directory per rank, still packed
//! ([`quant_kernels::tp::shard_checkpoint`]), with a progress bar.

use crate::CliError;
use quant_kernels::tp::{ShardProgress, shard_checkpoint};
use std::path::PathBuf;
use std::time::Instant;

/// Options of `qk shard`.
pub struct ShardArgs {
    pub dir: PathBuf,
    pub world_size: usize,
    pub out: PathBuf,
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
