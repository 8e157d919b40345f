//! The [`QuantScheme`] implementations of [`Int8Tensor`] and [`Int4Tensor`].

use super::{Granularity, Int4Tensor, Int8Tensor};
use crate::elem::Elem;
use crate::error::Result;
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::scheme::{QuantScheme, agree};
use crate::tp::Shard;
use crate::tp::shard::on;
use std::ops::Range;

impl QuantScheme for Int8Tensor {
    const NAME: &'static str = "int8";

    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn validate(&self) -> Result<()> {
        self.check(self.q.len())
    }

    fn method(&self) -> Option<QuantMethod> {
        Some(QuantMethod::Int8Symmetric { per_channel: self.granularity == super::Granularity::PerChannel })
    }

    fn stored_bytes(&self) -> usize {
        self.q.len() + 4 * self.scales.len()
    }

    fn dequantize_into<O: Elem>(&self, out: &mut [O], par: Parallelism) -> Result<()> {
        Int8Tensor::dequantize_into(self, out, par)
    }

    fn dequantize_reference_into(&self, out: &mut [f32]) -> Result<()> {
        Int8Tensor::dequantize_reference_into(self, out)
    }

    /// This shard of an int8 tensor: any rows or columns; per-channel scales follow the rows,
    /// a per-tensor scale is kept.
    fn shard(&self, shard: &Shard) -> Result<Self> {
        let t = self;
        t.check(t.q.len())?;
        let (q, rows, cols) = shard.apply(&t.q, t.rows, t.cols)?;
        let scales = match (t.granularity, shard.dim()) {
            (Granularity::PerChannel, 0) => t.scales[shard.range(t.rows)?].to_vec(),
            _ => t.scales.clone(),
        };
        Ok(Int8Tensor { rows, cols, granularity: t.granularity, q, scales })
    }

    /// int8 parts: code rows one after another. Per-tensor parts with one scale (bit for bit)
    /// stay per-tensor; otherwise the stack is per-channel, each row with its part's scale
    /// (`q * scale` either way, so nothing changes).
    fn concat(parts: &[&Self]) -> Result<Self> {
        for t in parts {
            t.check(t.q.len())?;
        }
        agree(parts, "inputs", |t| t.cols)?;
        let per_tensor = parts.iter().all(|t| t.granularity == Granularity::PerTensor)
            && agree(parts, "scale", |t| t.scales[0].to_bits()).is_ok();
        let scales = if per_tensor {
            parts[0].scales.clone()
        } else {
            parts
                .iter()
                .flat_map(|t| match t.granularity {
                    Granularity::PerTensor => vec![t.scales[0]; t.rows],
                    Granularity::PerChannel => t.scales.clone(),
                })
                .collect()
        };
        Ok(Int8Tensor {
            rows: parts.iter().map(|t| t.rows).sum(),
            cols: parts[0].cols,
            granularity: if per_tensor { Granularity::PerTensor } else { Granularity::PerChannel },
            q: parts.iter().flat_map(|t| t.q.iter().copied()).collect(),
            scales,
        })
    }
}

impl QuantScheme for Int4Tensor {
    const NAME: &'static str = "int4";

    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn validate(&self) -> Result<()> {
        self.check(self.rows.saturating_mul(self.cols))
    }

    fn method(&self) -> Option<QuantMethod> {
        Some(QuantMethod::Int4Asymmetric { group: self.group })
    }

    fn stored_bytes(&self) -> usize {
        self.packed.len() + 4 * self.scales.len() + self.zeros.len()
    }

    fn dequantize_into<O: Elem>(&self, out: &mut [O], par: Parallelism) -> Result<()> {
        Int4Tensor::dequantize_into(self, out, par)
    }

    fn dequantize_reference_into(&self, out: &mut [f32]) -> Result<()> {
        Int4Tensor::dequantize_reference_into(self, out)
    }

    /// This shard of an int4 tensor: any rows; columns on a group boundary (groups run along
    /// the rows).
    fn shard(&self, shard: &Shard) -> Result<Self> {
        let t = self;
        t.check(t.rows.saturating_mul(t.cols))?;
        let (cols, group) = (t.cols, t.group);
        if shard.dim() == 0 {
            // Rows are whole groups of an even size: byte- and group-aligned.
            let r = shard.range(t.rows)?;
            let (f0, f1) = (r.start * cols, r.end * cols);
            return Ok(Int4Tensor {
                rows: r.len(),
                cols,
                group,
                packed: t.packed[f0 / 2..f1 / 2].to_vec(),
                scales: t.scales[f0 / group..f1 / group].to_vec(),
                zeros: t.zeros[f0 / group..f1 / group].to_vec(),
            });
        }
        let c = shard.range(cols)?;
        on(c.start, group, "int4 group")?;
        on(c.end, group, "int4 group")?;
        let (mut packed, mut scales, mut zeros) = (Vec::new(), Vec::new(), Vec::new());
        for row in 0..t.rows {
            let (f0, f1) = (row * cols + c.start, row * cols + c.end);
            packed.extend_from_slice(&t.packed[f0 / 2..f1 / 2]);
            scales.extend_from_slice(&t.scales[f0 / group..f1 / group]);
            zeros.extend_from_slice(&t.zeros[f0 / group..f1 / group]);
        }
        Ok(Int4Tensor { rows: t.rows, cols: c.len(), group, packed, scales, zeros })
    }

    /// int4 parts: packed bytes, scales and zeros one after another. `Int4Tensor::check` holds
    /// every part to rows of whole groups of an even size, so each part has an even number of
    /// codes and its bytes follow the previous part's without shifting a nibble.
    fn concat(parts: &[&Self]) -> Result<Self> {
        for t in parts {
            t.check(t.rows.saturating_mul(t.cols))?;
        }
        agree(parts, "inputs", |t| t.cols)?;
        agree(parts, "group size", |t| t.group)?;
        Ok(Int4Tensor {
            rows: parts.iter().map(|t| t.rows).sum(),
            cols: parts[0].cols,
            group: parts[0].group,
            packed: parts.iter().flat_map(|t| t.packed.iter().copied()).collect(),
            scales: parts.iter().flat_map(|t| t.scales.iter().copied()).collect(),
            zeros: parts.iter().flat_map(|t| t.zeros.iter().copied()).collect(),
        })
    }
}

/// The plan-time form of this scheme's boundary rule ([`crate::tp::check_cut`]), from the
/// method's parameters and the shape alone; [`QuantScheme::shard`] enforces the same rule.
///
/// int4: any rows; columns on a group.
pub(crate) fn check_int4_cut(group: usize, dim: usize, r: Range<usize>) -> Result<()> {
    if dim == 0 {
        return Ok(());
    }
    on(r.start, group.max(1), "int4 group")?;
    on(r.end, group.max(1), "int4 group")
}
