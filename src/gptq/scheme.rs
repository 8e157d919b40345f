//! The [`QuantScheme`] implementation of [`GptqLayer`]: shape `[N, K]` as `nn.Linear` sees it,
//! stored `[K, N]`.

use super::GptqLayer;
use super::GptqLayout;
use super::layout::codes_per_block;
use crate::elem::{Elem, FloatVec};
use crate::error::{Result, expect_len};
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::scheme::{QuantScheme, bias_range, transposed_into};
use crate::tp::Shard;
use crate::tp::shard::{column_range, on};
use std::ops::Range;

impl QuantScheme for GptqLayer {
    const NAME: &'static str = "gptq";

    fn shape(&self) -> (usize, usize) {
        (self.layout.n(), self.layout.k())
    }

    /// Every length, each row's group (`g_idx`) and the bias.
    fn validate(&self) -> Result<()> {
        let l = &self.layout;
        crate::with_float_vec!(&self.scales, s => super::check_inputs(
            l, &self.qweight, &self.qzeros, s, self.g_idx.as_deref(), l.k() * l.n()
        ))?;
        if let Some(b) = &self.bias {
            expect_len("bias", l.n(), b.len())?;
        }
        Ok(())
    }

    /// Act-order when `g_idx` permutes the inputs in fact (not a stored identity order).
    fn method(&self) -> Option<QuantMethod> {
        let l = &self.layout;
        let per = l.group_size().unwrap_or(l.k()).max(1);
        let act_order = self
            .g_idx
            .as_ref()
            .is_some_and(|g| g.iter().enumerate().any(|(i, &v)| usize::try_from(v).ok() != Some(i / per)));
        Some(QuantMethod::Gptq { bits: l.bits(), group: l.group_size(), act_order })
    }

    fn stored_bytes(&self) -> usize {
        let g_idx = self.g_idx.as_ref().map_or(0, Vec::len);
        4 * (self.qweight.len() + self.qzeros.len() + g_idx) + self.scales.len() * self.scales.dtype().size()
    }

    /// `[N, K]`: the layer's `[K, N]` dequantization ([`GptqLayer::dequantize_kn`]) transposed.
    fn dequantize_into<O: Elem>(&self, out: &mut [O], par: Parallelism) -> Result<()> {
        let (l, g) = (&self.layout, self.g_idx.as_deref());
        transposed_into(
            (l.k(), l.n()),
            out,
            par,
            |kn| crate::with_float_vec!(&self.scales, s => super::gptq_dequantize_into(&self.qweight, s, &self.qzeros, g, self.format, l, kn, par)),
        )
    }

    fn dequantize_reference_into(&self, out: &mut [f32]) -> Result<()> {
        let (l, g) = (&self.layout, self.g_idx.as_deref());
        transposed_into(
            (l.k(), l.n()),
            out,
            Parallelism::SERIAL,
            |kn| crate::with_float_vec!(&self.scales, s => super::gptq_dequantize_reference_into(&self.qweight, s, &self.qzeros, g, self.format, l, kn)),
        )
    }

    /// This shard of a GPTQ layer (see [`crate::QuantWeight::shard`]); the bias follows dim 0.
    ///
    /// Along the inputs with act-order (`g_idx` not `k / group_size`), the shard keeps every
    /// group's scales and zero points and the slice of `g_idx` unchanged (vLLM's way), so its
    /// layout has more groups than its K alone implies.
    fn shard(&self, shard: &Shard) -> Result<Self> {
        let g = self;
        let l = &g.layout;
        let (k, n, bits) = (l.k(), l.n(), l.bits());
        let per = codes_per_block(bits);
        let (wr, _) = l.qweight_shape();
        let (groups, zc) = l.qzeros_shape();
        crate::error::expect_len("qweight", wr * n, g.qweight.len())?;
        crate::error::expect_len("qzeros", groups * zc, g.qzeros.len())?;
        crate::error::expect_len("scales", groups * n, g.scales.len())?;
        if let Some(b) = &g.bias {
            crate::error::expect_len("bias", n, b.len())?;
        }
        if shard.dim() == 0 {
            // Outputs = GPTQ columns: qweight/scales columns, qzeros words along N.
            let r = shard.range(n)?;
            on(r.start, per, "zero-point pack word")?;
            on(r.end, per, "zero-point pack word")?;
            let zw = per * bits as usize / 32; // words per `per` columns of zero points
            let (z0, z1) = (r.start / per * zw, r.end / per * zw);
            let layout = GptqLayout::with_groups(k, r.len(), bits, group_arg(l), groups)?;
            if let Some(gi) = &g.g_idx {
                crate::gptq::groups_of_rows(l, Some(gi))?;
            }
            Ok(GptqLayer {
                layout,
                format: g.format,
                qweight: column_range(&g.qweight, wr, n, r.clone()),
                qzeros: column_range(&g.qzeros, groups, zc, z0..z1),
                scales: crate::with_float_vec!(&g.scales, s => FloatVec::from(column_range(s, groups, n, r.clone()))),
                g_idx: g.g_idx.clone(),
                bias: bias_range(g.bias.as_ref(), r.clone()),
            })
        } else {
            // Inputs = GPTQ rows: whole word rows (and whole groups without act-order).
            let r = shard.range(k)?;
            on(r.start, per, "qweight word row")?;
            on(r.end, per, "qweight word row")?;
            let words = r.start * bits as usize / 32..r.end * bits as usize / 32;
            let qweight = g.qweight[words.start * n..words.end * n].to_vec();
            let act_order = match &g.g_idx {
                Some(gi) => {
                    crate::gptq::groups_of_rows(l, Some(gi))?;
                    *gi != l.default_g_idx()
                }
                None => false,
            };
            if act_order {
                let layout = GptqLayout::with_groups(r.len(), n, bits, group_arg(l), groups)?;
                return Ok(GptqLayer {
                    layout,
                    format: g.format,
                    qweight,
                    qzeros: g.qzeros.clone(),
                    scales: g.scales.clone(),
                    g_idx: g.g_idx.as_ref().map(|gi| gi[r.clone()].to_vec()),
                    bias: g.bias.clone(),
                });
            }
            let gs = l.group_size().unwrap_or(k);
            on(r.start, gs, "group")?;
            if r.end != k {
                on(r.end, gs, "group")?;
            }
            let layout = GptqLayout::new(r.len(), n, bits, group_arg(l))?;
            // The groups of the shard's rows (an empty shard at the end keeps the last one).
            let g0 = (r.start / gs).min(groups - layout.groups());
            let g1 = g0 + layout.groups();
            Ok(GptqLayer {
                layout,
                format: g.format,
                qweight,
                qzeros: g.qzeros[g0 * zc..g1 * zc].to_vec(),
                scales: crate::with_float_vec!(&g.scales, s => FloatVec::from(s[g0 * n..g1 * n].to_vec())),
                g_idx: g.g_idx.as_ref().map(|gi| gi[r.clone()].iter().map(|&v| v - g0 as i32).collect()),
                bias: g.bias.clone(),
            })
        }
    }

    /// GPTQ's column fusion ([`super::fuse_columns`]).
    fn concat(parts: &[&Self]) -> Result<Self> {
        super::fuse_columns(parts)
    }
}

fn group_arg(l: &GptqLayout) -> i64 {
    l.group_size().map_or(-1, |g| g as i64)
}

/// The plan-time form of this scheme's boundary rule ([`crate::tp::check_cut`]), from the
/// method's parameters and the shape alone; [`QuantScheme::shard`] enforces the same rule.
///
/// GPTQ (`[K, N]` storage): outputs on a zero-point pack word; inputs on a `qweight` word row
/// and, without act-order, on a group (the last may end at K).
pub(crate) fn check_cut(
    bits: u8,
    group: Option<usize>,
    act_order: bool,
    dim: usize,
    len: usize,
    r: Range<usize>,
) -> Result<()> {
    let per = codes_per_block(bits);
    let what = if dim == 0 { "zero-point pack word" } else { "qweight word row" };
    on(r.start, per.max(1), what)?;
    on(r.end, per.max(1), what)?;
    // One group (no group size, or one at least K) has only the trivial `g_idx`.
    let act_order = act_order && group.is_some_and(|g| g < len);
    if dim == 1 && !act_order {
        let gs = group.unwrap_or(len);
        on(r.start, gs.max(1), "group")?;
        if r.end != len {
            on(r.end, gs.max(1), "group")?;
        }
    }
    Ok(())
}
