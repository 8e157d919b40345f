//! Tensor parallelism: parallel layers and the in-process communicator (`layers`), the
//! model-level shard plan (`plan`), packed shards of every scheme and MoE expert splits
//! (`shard`). One test binary (each file is a module) so the suite compiles and links once.

#[path = "../common/mod.rs"]
mod common;

mod checkpoint;
mod experts;
mod layers;
mod llama;
mod load;
mod lora;
mod plan;
mod shard;
mod uqff;
