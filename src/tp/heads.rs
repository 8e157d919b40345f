//! KV-head sharding for grouped-query attention, with replication when there are more ranks
//! than KV heads (the rule mistral.rs's `compute_kv_shard` / `compute_n_kv_groups` apply,
//! with the divisions checked instead of producing empty or out-of-range shards).

use super::Shard;
use crate::error::{Error, Result, TpError};

fn check(total_kv_heads: usize, world_size: usize) -> Result<()> {
    let ok = total_kv_heads > 0
        && world_size > 0
        && if world_size <= total_kv_heads {
            total_kv_heads.is_multiple_of(world_size)
        } else {
            world_size.is_multiple_of(total_kv_heads)
        };
    if ok { Ok(()) } else { Err(Error::Tp(TpError::KvHeads { kv_heads: total_kv_heads, world_size })) }
}

/// The rows of a `[total_kv_heads * head_dim, hidden]` k/v projection that `rank` holds.
///
/// With `world_size <= total_kv_heads` each rank takes `total_kv_heads / world_size` whole
/// heads (an even split); with more ranks, each group of `world_size / total_kv_heads`
/// consecutive ranks shares one head (replicated). The counts must divide one way or the
/// other, else [`TpError::KvHeads`].
///
/// ```
/// use quant_kernels::tp::{kv_head_shard, Shard};
/// // 2 KV heads of 64 over 4 ranks: ranks 0, 1 hold head 0; ranks 2, 3 hold head 1.
/// assert_eq!(kv_head_shard(2, 64, 3, 4)?, Shard::Offset { dim: 0, offset: 64, len: 64 });
/// assert_eq!(kv_head_shard(8, 64, 1, 4)?, Shard::Simple { dim: 0, rank: 1, world_size: 4 });
/// assert!(kv_head_shard(3, 64, 0, 4).is_err());
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn kv_head_shard(
    total_kv_heads: usize,
    head_dim: usize,
    rank: usize,
    world_size: usize,
) -> Result<Shard> {
    if rank >= world_size {
        return Err(Error::Tp(TpError::ShardRank { rank, world_size }));
    }
    if world_size == 1 {
        return Ok(Shard::full(0));
    }
    check(total_kv_heads, world_size)?;
    if world_size <= total_kv_heads {
        return Ok(Shard::Simple { dim: 0, rank, world_size });
    }
    let replicate = world_size / total_kv_heads;
    Ok(Shard::Offset { dim: 0, offset: (rank / replicate) * head_dim, len: head_dim })
}

/// Query heads per local KV head on each rank: `(attention_heads / total_kv_heads) /
/// replication`, where replication is `world_size / total_kv_heads` when ranks outnumber KV
/// heads, else 1. The attention heads must split evenly over the ranks and the KV heads as in
/// [`kv_head_shard`].
///
/// ```
/// use quant_kernels::tp::n_kv_groups;
/// assert_eq!(n_kv_groups(8, 32, 4)?, 4);  // 8 query heads and 2 KV heads per rank
/// assert_eq!(n_kv_groups(2, 32, 8)?, 4);  // 4 query heads and 1 (replicated) KV head per rank
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn n_kv_groups(total_kv_heads: usize, attention_heads: usize, world_size: usize) -> Result<usize> {
    if attention_heads == 0 || world_size == 0 || !attention_heads.is_multiple_of(world_size) {
        return Err(Error::Tp(TpError::AttentionHeads { heads: attention_heads, world_size }));
    }
    check(total_kv_heads, world_size)?;
    if !attention_heads.is_multiple_of(total_kv_heads) {
        return Err(Error::Tp(TpError::AttentionHeads {
            heads: attention_heads,
            world_size: total_kv_heads,
        }));
    }
    let replicate = if world_size > total_kv_heads { world_size / total_kv_heads } else { 1 };
    Ok((attention_heads / total_kv_heads) / replicate)
}
