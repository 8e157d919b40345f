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
//! * [`kv_head_shard`], [`n_kv_groups`]: KV heads split or replicated over ranks.

mod comm;
mod heads;
mod linear;
mod shard;

pub use comm::{Comm, LocalComm, SingleComm};
pub use heads::{kv_head_shard, n_kv_groups};
pub use linear::{ColumnParallelLinear, ReplicatedLinear, RowParallelLinear};
pub use shard::Shard;
