//! The [`QuantScheme`] implementation of [`GptqLayer`]: shape `[N, K]` as `nn.Linear` sees it,
//! stored `[K, N]`.

use super::GptqLayer;
use super::GptqLayout;
use super::layout::codes_per_block;
use crate::elem::Elem;
use crate::error::{Result, expect_len};
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::scheme::{InMemory, Part, Parts, QuantScheme, transposed_into};
use crate::tp::Shard;
use crate::tp::shard::on;
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
        let (k, n) = (l.k(), l.n());
        let (wr, _) = l.qweight_shape();
        let (groups, zc) = l.qzeros_shape();
        crate::error::expect_len("qweight", wr * n, g.qweight.len())?;
        crate::error::expect_len("qzeros", groups * zc, g.qzeros.len())?;
        crate::error::expect_len("scales", groups * n, g.scales.len())?;
        if let Some(b) = &g.bias {
            crate::error::expect_len("bias", n, b.len())?;
        }
        let mut parts = vec![
            ("qweight", Part::I32(&g.qweight, n)),
            ("qzeros", Part::I32(&g.qzeros, zc)),
            ("scales", Part::Floats(&g.scales, n)),
        ];
        if let Some(gi) = &g.g_idx {
            parts.push(("g_idx", Part::I32(gi, k)));
        }
        if let Some(b) = &g.bias {
            parts.push(("bias", Part::Floats(b, n)));
        }
        shard_parts(l, g.format, g.g_idx.is_some(), g.bias.is_some(), &InMemory(parts), shard)
    }

    /// GPTQ's column fusion ([`super::fuse_columns`]).
    fn concat(parts: &[&Self]) -> Result<Self> {
        super::fuse_columns(parts)
    }
}

/// Rank `shard`'s part of a GPTQ layer of layout `l` whose tensors `src` holds (`g_idx` and
/// `bias` when `has_g_idx` / `has_bias`): only the shard's regions are asked of `src` (and
/// `g_idx` whole, to tell act-order).
pub(crate) fn shard_parts(
    l: &GptqLayout,
    format: super::ZeroFormat,
    has_g_idx: bool,
    has_bias: bool,
    src: &impl Parts,
    shard: &Shard,
) -> Result<GptqLayer> {
    let (k, n, bits) = (l.k(), l.n(), l.bits());
    let per = codes_per_block(bits);
    let (wr, _) = l.qweight_shape();
    let (groups, zc) = l.qzeros_shape();
    let g_idx = if has_g_idx { Some(src.i32s("g_idx", 0..1, 0..k)?) } else { None };
    if let Some(gi) = &g_idx {
        crate::gptq::groups_of_rows(l, Some(gi))?;
    }
    let bias = |cols: Range<usize>| has_bias.then(|| src.floats("bias", 0..1, cols)).transpose();
    if shard.dim() == 0 {
        // Outputs = GPTQ columns: qweight/scales columns, qzeros words along N.
        let r = shard.range(n)?;
        on(r.start, per, "zero-point pack word")?;
        on(r.end, per, "zero-point pack word")?;
        let zw = per * bits as usize / 32; // words per `per` columns of zero points
        let (z0, z1) = (r.start / per * zw, r.end / per * zw);
        return Ok(GptqLayer {
            layout: GptqLayout::with_groups(k, r.len(), bits, group_arg(l), groups)?,
            format,
            qweight: src.i32s("qweight", 0..wr, r.clone())?,
            qzeros: src.i32s("qzeros", 0..groups, z0..z1)?,
            scales: src.floats("scales", 0..groups, r.clone())?,
            g_idx,
            bias: bias(r)?,
        });
    }
    // Inputs = GPTQ rows: whole word rows (and whole groups without act-order).
    let r = shard.range(k)?;
    on(r.start, per, "qweight word row")?;
    on(r.end, per, "qweight word row")?;
    let words = r.start * bits as usize / 32..r.end * bits as usize / 32;
    let qweight = src.i32s("qweight", words, 0..n)?;
    if let Some(gi) = g_idx.as_ref().filter(|gi| **gi != l.default_g_idx()) {
        // Act-order: every group stays (the shard's rows point into all of them).
        return Ok(GptqLayer {
            layout: GptqLayout::with_groups(r.len(), n, bits, group_arg(l), groups)?,
            format,
            qweight,
            qzeros: src.i32s("qzeros", 0..groups, 0..zc)?,
            scales: src.floats("scales", 0..groups, 0..n)?,
            g_idx: Some(gi[r].to_vec()),
            bias: bias(0..n)?,
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
        format,
        qweight,
        qzeros: src.i32s("qzeros", g0..g1, 0..zc)?,
        scales: src.floats("scales", g0..g1, 0..n)?,
        g_idx: g_idx.map(|gi| gi[r].iter().map(|&v| v - g0 as i32).collect()),
        bias: bias(0..n)?,
    })
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
