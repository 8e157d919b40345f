//! Which part of a weight a rank holds: [`Shard`], applied to dense row-major matrices and to
//! packed layers without dequantizing them.
//!
//! Dimensions are those of the `nn.Linear` weight `[out, in]`: `dim 0` splits the outputs
//! (column-parallel), `dim 1` splits the inputs (row-parallel), whatever the scheme's storage
//! orientation (GPTQ stores `[in, out]`; its shards are cut accordingly).

use crate::error::{Error, KernelError, Result, TpError};
use std::ops::Range;

/// The part of one dimension a rank holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shard {
    /// An even split: rank `rank` of `world_size` gets the `rank`-th of `world_size` equal
    /// parts (the dimension must divide evenly).
    Simple {
        /// 0 = outputs, 1 = inputs.
        dim: usize,
        /// This rank.
        rank: usize,
        /// Number of ranks.
        world_size: usize,
    },
    /// An explicit range `offset..offset + len`.
    Offset {
        /// 0 = outputs, 1 = inputs.
        dim: usize,
        /// First index.
        offset: usize,
        /// Number of indices.
        len: usize,
    },
}

impl Shard {
    /// The whole of dimension `dim` (a world of one).
    pub fn full(dim: usize) -> Self {
        Shard::Simple { dim, rank: 0, world_size: 1 }
    }

    /// The dimension this shard splits.
    pub fn dim(&self) -> usize {
        match *self {
            Shard::Simple { dim, .. } | Shard::Offset { dim, .. } => dim,
        }
    }

    /// The index range this shard takes of a dimension of length `n`.
    ///
    /// ```
    /// use quant_kernels::tp::Shard;
    /// assert_eq!(Shard::Simple { dim: 0, rank: 1, world_size: 4 }.range(64)?, 16..32);
    /// assert_eq!(Shard::Offset { dim: 1, offset: 8, len: 8 }.range(64)?, 8..16);
    /// assert!(Shard::Simple { dim: 0, rank: 0, world_size: 3 }.range(64).is_err());
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn range(&self, n: usize) -> Result<Range<usize>> {
        if self.dim() > 1 {
            return Err(Error::Tp(TpError::ShardDim(self.dim())));
        }
        match *self {
            Shard::Simple { rank, world_size, .. } => {
                if world_size == 0 || rank >= world_size {
                    return Err(Error::Tp(TpError::ShardRank { rank, world_size }));
                }
                if !n.is_multiple_of(world_size) {
                    return Err(Error::Tp(TpError::ShardUneven { len: n, world_size }));
                }
                let per = n / world_size;
                Ok(rank * per..(rank + 1) * per)
            }
            Shard::Offset { offset, len, .. } => match offset.checked_add(len) {
                Some(end) if end <= n => Ok(offset..end),
                _ => Err(Error::Tp(TpError::ShardRange { offset, len, dim_len: n })),
            },
        }
    }

    /// This shard of a dense row-major `[rows, cols]` matrix: `(values, rows, cols)`.
    ///
    /// ```
    /// use quant_kernels::tp::Shard;
    /// let w = [0, 1, 2, 3, 4, 5]; // [2, 3]
    /// assert_eq!(Shard::Offset { dim: 1, offset: 1, len: 2 }.apply(&w, 2, 3)?, (vec![1, 2, 4, 5], 2, 2));
    /// assert_eq!(Shard::Simple { dim: 0, rank: 1, world_size: 2 }.apply(&w, 2, 3)?, (vec![3, 4, 5], 1, 3));
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn apply<T: Copy>(&self, w: &[T], rows: usize, cols: usize) -> Result<(Vec<T>, usize, usize)> {
        let n = rows.checked_mul(cols).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols }))?;
        crate::error::expect_len("weight", n, w.len())?;
        if self.dim() == 0 {
            let r = self.range(rows)?;
            Ok((w[r.start * cols..r.end * cols].to_vec(), r.len(), cols))
        } else {
            let c = self.range(cols)?;
            let n = c.len();
            Ok((column_range(w, rows, cols, c), rows, n))
        }
    }
}

/// `Ok` when `at` is a multiple of `multiple`, else [`TpError::ShardBoundary`].
pub(crate) fn on(at: usize, multiple: usize, what: &'static str) -> Result<()> {
    if at.is_multiple_of(multiple) {
        Ok(())
    } else {
        Err(Error::Tp(TpError::ShardBoundary { what, at, multiple }))
    }
}

/// Columns `range` of a row-major `[rows, cols]` matrix.
pub(crate) fn column_range<T: Copy>(w: &[T], rows: usize, cols: usize, range: Range<usize>) -> Vec<T> {
    let mut out = Vec::with_capacity(rows * range.len());
    for row in w.chunks_exact(cols.max(1)).take(rows) {
        out.extend_from_slice(&row[range.clone()]);
    }
    out
}
