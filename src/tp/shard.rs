//! Which part of a weight a rank holds: [`Shard`], applied to dense row-major matrices and to
//! packed layers without dequantizing them.
//!
//! Dimensions are those of the `nn.Linear` weight `[out, in]`: `dim 0` splits the outputs
//! (column-parallel), `dim 1` splits the inputs (row-parallel), whatever the scheme's storage
//! orientation (GPTQ stores `[in, out]`; its shards are cut accordingly).

use crate::elem::FloatVec;
use crate::error::{Error, Result};
use crate::gptq::GptqLayer;
use crate::gptq::layout::codes_per_block;
use crate::matmul::QuantWeight;
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
            return Err(Error::ShardDim(self.dim()));
        }
        match *self {
            Shard::Simple { rank, world_size, .. } => {
                if world_size == 0 || rank >= world_size {
                    return Err(Error::ShardRank { rank, world_size });
                }
                if !n.is_multiple_of(world_size) {
                    return Err(Error::ShardUneven { len: n, world_size });
                }
                let per = n / world_size;
                Ok(rank * per..(rank + 1) * per)
            }
            Shard::Offset { offset, len, .. } => match offset.checked_add(len) {
                Some(end) if end <= n => Ok(offset..end),
                _ => Err(Error::ShardRange { offset, len, dim_len: n }),
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
        let n = rows.checked_mul(cols).ok_or(Error::ShapeOverflow { rows, cols })?;
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

    /// This shard of a quantized weight, still packed: its dequantization equals the same
    /// shard of the whole weight's dequantization, bit for bit. Along a packed or grouped axis
    /// the shard must start and end on a pack-word and group boundary (else
    /// [`Error::ShardBoundary`] names it); nothing is ever requantized.
    ///
    /// Supported today: dense weights (any shard) and GPTQ (outputs on a pack-word boundary of
    /// the zero points; inputs on a word-row and group boundary, without act-order). Other
    /// schemes return [`Error::ShardScheme`].
    pub fn apply_weight(&self, w: &QuantWeight) -> Result<QuantWeight> {
        match w {
            QuantWeight::Dense { rows, cols, w } => {
                let (w, rows, cols) = crate::with_float_vec!(w, v => {
                    let (s, r, c) = self.apply(v, *rows, *cols)?;
                    (FloatVec::from(s), r, c)
                });
                Ok(QuantWeight::Dense { rows, cols, w })
            }
            QuantWeight::Gptq(g) => Ok(QuantWeight::Gptq(self.apply_gptq(g)?)),
            QuantWeight::Hqq(_) => Err(Error::ShardScheme("hqq")),
            QuantWeight::Awq(_) => Err(Error::ShardScheme("awq")),
            QuantWeight::Fp8(_) => Err(Error::ShardScheme("fp8")),
            QuantWeight::Int8(_) => Err(Error::ShardScheme("int8")),
            QuantWeight::Int4(_) => Err(Error::ShardScheme("int4")),
        }
    }

    /// This shard of a GPTQ layer (see [`Shard::apply_weight`]); the bias follows dim 0.
    pub fn apply_gptq(&self, g: &GptqLayer) -> Result<GptqLayer> {
        let l = &g.layout;
        let (k, n, bits) = (l.k(), l.n(), l.bits());
        let per = codes_per_block(bits);
        let (wr, _) = l.qweight_shape();
        let (groups, zc) = l.qzeros_shape();
        crate::error::expect_len("qweight", wr * n, g.qweight.len())?;
        crate::error::expect_len("qzeros", groups * zc, g.qzeros.len())?;
        crate::error::expect_len("scales", groups * n, g.scales.len())?;
        let on = |at: usize, multiple: usize, what: &'static str| {
            if at.is_multiple_of(multiple) {
                Ok(())
            } else {
                Err(Error::ShardBoundary { what, at, multiple })
            }
        };
        if self.dim() == 0 {
            // Outputs = GPTQ columns: qweight/scales columns, qzeros words along N.
            let r = self.range(n)?;
            on(r.start, per, "zero-point pack word")?;
            on(r.end, per, "zero-point pack word")?;
            let zw = per * bits as usize / 32; // words per `per` columns of zero points
            let (z0, z1) = (r.start / per * zw, r.end / per * zw);
            let layout = crate::gptq::GptqLayout::new(k, r.len(), bits, group_arg(l))?;
            Ok(GptqLayer {
                layout,
                format: g.format,
                qweight: column_range(&g.qweight, wr, n, r.clone()),
                qzeros: column_range(&g.qzeros, groups, zc, z0..z1),
                scales: crate::with_float_vec!(&g.scales, s => FloatVec::from(column_range(s, groups, n, r.clone()))),
                g_idx: g.g_idx.clone(),
                bias: g
                    .bias
                    .as_ref()
                    .map(|b| crate::with_float_vec!(b, v => FloatVec::from(v[r.clone()].to_vec()))),
            })
        } else {
            // Inputs = GPTQ rows: whole word rows and whole groups.
            let r = self.range(k)?;
            if g.g_idx.as_ref().is_some_and(|gi| *gi != l.default_g_idx()) {
                return Err(Error::ShardScheme("gptq act-order along the inputs"));
            }
            on(r.start, per, "qweight word row")?;
            on(r.end, per, "qweight word row")?;
            let gs = l.group_size().unwrap_or(k);
            on(r.start, gs, "group")?;
            if r.end != k {
                on(r.end, gs, "group")?;
            }
            let (g0, g1) = if l.group_size().is_some() { (r.start / gs, r.end.div_ceil(gs)) } else { (0, 1) };
            let words = r.start * bits as usize / 32..r.end * bits as usize / 32;
            let layout = crate::gptq::GptqLayout::new(r.len(), n, bits, group_arg(l))?;
            Ok(GptqLayer {
                layout,
                format: g.format,
                qweight: g.qweight[words.start * n..words.end * n].to_vec(),
                qzeros: g.qzeros[g0 * zc..g1 * zc].to_vec(),
                scales: crate::with_float_vec!(&g.scales, s => FloatVec::from(s[g0 * n..g1 * n].to_vec())),
                g_idx: g.g_idx.as_ref().map(|gi| gi[r.clone()].iter().map(|&v| v - g0 as i32).collect()),
                bias: g.bias.clone(),
            })
        }
    }
}

fn group_arg(l: &crate::gptq::GptqLayout) -> i64 {
    l.group_size().map_or(-1, |g| g as i64)
}

/// Columns `range` of a row-major `[rows, cols]` matrix.
fn column_range<T: Copy>(w: &[T], rows: usize, cols: usize, range: Range<usize>) -> Vec<T> {
    let mut out = Vec::with_capacity(rows * range.len());
    for row in w.chunks_exact(cols.max(1)).take(rows) {
        out.extend_from_slice(&row[range.clone()]);
    }
    out
}
