//! Tensor parallelism: split linear layers over ranks.
//!
//! * [`Shard`]: which rows or columns of a weight a rank holds, for dense matrices and for
//!   packed layers (still packed: a shard dequantizes to the same shard of the dequantized
//!   whole).
//! * [`Comm`]: the collectives layers need (`all_reduce_sum`, `all_gather`, `broadcast`,
//!   `barrier`); [`LocalComm`] runs one rank per thread in this process, deterministic and
//!   error-propagating (no hangs).
//! * [`ColumnParallelLinear`], [`RowParallelLinear`], [`ReplicatedLinear`] over
//!   [`crate::matmul::QuantLinear`].
//! * `MpiComm` (feature `mpi`): the same collectives between MPI processes (`mpirun -np N`),
//!   bit-identical to [`LocalComm`].
//! * [`kv_head_shard`], [`n_kv_groups`]: KV heads split or replicated over ranks.
//! * [`ShardPlan`]: a whole model's split (q/k/v, gate/up column-parallel, o/down
//!   row-parallel, the rest replicated), checked before any work ([`check_cut`]: each scheme's
//!   boundary rule).
//! * [`split_packed_experts`], [`split_fp8_experts`], [`shard_fp8_experts`], [`ExpertMlp`]:
//!   stacked MoE experts split per expert and sharded per rank; [`route_topk`], the router.
//! * [`MoeExperts`]: an MoE layer's experts for one rank, loaded by name from any layout a
//!   checkpoint stores them in, with the routed forward.
//! * [`shard_checkpoint`]: a whole checkpoint directory cut into one packed checkpoint per rank
//!   (what `qk shard` runs).

mod checkpoint;
mod comm;
mod experts;
mod heads;
mod linear;
mod load;
mod moe;
#[cfg(feature = "mpi")]
mod mpi;
mod plan;
pub(crate) mod shard;

#[cfg(feature = "mpi")]
pub use self::mpi::{DEFAULT_MAX_CHUNK, MpiComm};
pub use checkpoint::{ShardProgress, ShardSummary, shard_checkpoint};
pub use comm::{CHUNKED_ALL_REDUCE_MIN, Comm, LocalComm, SingleComm};
pub use experts::{ExpertsLayout, MoeExperts};
pub use heads::{kv_head_shard, n_kv_groups};
pub use linear::{ColumnParallelLinear, ReplicatedLinear, RowParallelLinear};
pub use load::{LayerSource, LoadOptions, LoadedLayer};
pub use moe::{ExpertMlp, MoeDims, route_topk, shard_fp8_experts, split_fp8_experts, split_packed_experts};
pub use plan::{
    AttentionShape, LayerPlan, LayerRole, MAX_WORLD_SEARCH, Parallel, PlanLayer, ShardPlan, check_cut,
};
pub use shard::Shard;
