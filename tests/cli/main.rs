//! The `qk` binary end to end: `inspect` and `dequantize` on the tiny checkpoints
//! (`commands`), `shard` and its rank directories (`shard`). One test binary (each file is a
//! module) so the suite compiles and links once.

mod commands;
mod shard;
