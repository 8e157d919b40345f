//! `tp::shard_checkpoint` called as a library (what `qk shard` runs; `tests/cli/shard.rs`
//! checks every rank's dequantization end to end): progress adds up to the announced steps,
//! each rank directory opens as a checkpoint whose layers are the plan's packed shards, and a
//! world size that does not fit fails before anything is written.

use quant_kernels::Parallelism;
use quant_kernels::error::TpError;
use quant_kernels::io::QuantizedCheckpoint;
use quant_kernels::tp::{ShardProgress, shard_checkpoint};
use quant_kernels::{Error, QuantScheme};
use std::path::{Path, PathBuf};

fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gptq_checkpoints/tiny-llama-gptq-4bit")
}

fn temp(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("qk-tp-checkpoint-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

#[test]
fn ranks_hold_the_plans_packed_shards() {
    let out = temp("ok");
    let (mut announced, mut done) = (None, 0);
    let summary = shard_checkpoint(&tiny(), 2, &out, &mut |p| match p {
        ShardProgress::Start { steps } => announced = Some(steps),
        ShardProgress::Headers { ranks, .. } => done += ranks,
        ShardProgress::Written { .. } => done += 1,
    })
    .unwrap();
    assert_eq!(announced, Some(done));
    // 2 decoder layers: q/k/v/gate/up column-parallel, o/down row-parallel.
    assert_eq!((summary.world_size, summary.column, summary.row), (2, 10, 4));
    let whole = QuantizedCheckpoint::open(tiny()).unwrap();
    let q = "model.layers.1.self_attn.q_proj";
    let QuantizedCheckpoint::Gptq(w) = &whole else { panic!("a GPTQ checkpoint") };
    let full: Vec<f32> = w.load(q).unwrap().dequantize(Parallelism::SERIAL).unwrap(); // [64, 64]
    for rank in 0..2 {
        let dir = out.join(format!("rank-{rank}-of-2"));
        let QuantizedCheckpoint::Gptq(part) = QuantizedCheckpoint::open(&dir).unwrap() else {
            panic!("GPTQ")
        };
        let got: Vec<f32> = part.load(q).unwrap().dequantize(Parallelism::SERIAL).unwrap(); // [32, 64]
        let want = &full[rank * 32 * 64..(rank + 1) * 32 * 64];
        assert!(got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()), "rank {rank}");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn a_world_that_does_not_fit_writes_nothing() {
    let out = temp("bad");
    let mut events = 0;
    let err = shard_checkpoint(&tiny(), 3, &out, &mut |_| events += 1).unwrap_err();
    assert!(matches!(err, Error::Tp(TpError::ShardPlan { world_size: 3, .. })), "{err}");
    assert_eq!(events, 0);
    assert!(!out.exists());
}
