//! The [`QuantScheme`] implementation of [`AwqLayer`]: shape `[N, K]` as `nn.Linear` sees it,
//! stored `[K, N / 8]`.

use super::{AwqLayer, AwqLayout};
use crate::elem::{Elem, FloatVec};
use crate::error::{Error, KernelError, Result, expect_len};
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::scheme::{InMemory, Part, Parts, QuantScheme, agree, concat_bias, transposed_into};
use crate::tp::Shard;
use crate::tp::shard::on;
use std::ops::Range;

impl QuantScheme for AwqLayer {
    const NAME: &'static str = "awq";

    fn shape(&self) -> (usize, usize) {
        (self.layout.n(), self.layout.k())
    }

    /// Every length and the bias.
    fn validate(&self) -> Result<()> {
        let l = &self.layout;
        crate::with_float_vec!(&self.scales, s => super::check(l, &self.qweight, &self.qzeros, s, l.k() * l.n()))?;
        if let Some(b) = &self.bias {
            expect_len("bias", l.n(), b.len())?;
        }
        Ok(())
    }

    fn method(&self) -> Option<QuantMethod> {
        Some(QuantMethod::Awq { group: self.layout.group_size() })
    }

    fn stored_bytes(&self) -> usize {
        4 * (self.qweight.len() + self.qzeros.len()) + self.scales.len() * self.scales.dtype().size()
    }

    /// `[N, K]`: the layer's `[K, N]` dequantization ([`AwqLayer::dequantize_kn`]) transposed.
    fn dequantize_into<O: Elem>(&self, out: &mut [O], par: Parallelism) -> Result<()> {
        let l = &self.layout;
        transposed_into(
            (l.k(), l.n()),
            out,
            par,
            |kn| crate::with_float_vec!(&self.scales, s => super::awq_dequantize_into(&self.qweight, s, &self.qzeros, l, kn, par)),
        )
    }

    fn dequantize_reference_into(&self, out: &mut [f32]) -> Result<()> {
        let l = &self.layout;
        transposed_into(
            (l.k(), l.n()),
            out,
            Parallelism::SERIAL,
            |kn| crate::with_float_vec!(&self.scales, s => super::awq_dequantize_reference_into(&self.qweight, s, &self.qzeros, l, kn)),
        )
    }

    /// This shard of an AWQ layer (see [`crate::QuantWeight::shard`]); the bias follows dim 0.
    fn shard(&self, shard: &Shard) -> Result<Self> {
        let a = self;
        let l = &a.layout;
        crate::with_float_vec!(&a.scales, s => crate::awq::check(l, &a.qweight, &a.qzeros, s, l.k() * l.n()))?;
        if let Some(b) = &a.bias {
            crate::error::expect_len("bias", l.n(), b.len())?;
        }
        let wc = l.packed_cols();
        let mut parts = vec![
            ("qweight", Part::I32(&a.qweight, wc)),
            ("qzeros", Part::I32(&a.qzeros, wc)),
            ("scales", Part::Floats(&a.scales, l.n())),
        ];
        if let Some(b) = &a.bias {
            parts.push(("bias", Part::Floats(b, l.n())));
        }
        shard_parts(l, a.bias.is_some(), &InMemory(parts), shard)
    }

    /// AWQ parts (`[K, N_i]` storage): word columns of `qweight` and `qzeros` and scale columns
    /// side by side, row by row (each `N_i` is a multiple of 8, so words never straddle parts).
    fn concat(parts: &[&Self]) -> Result<Self> {
        for a in parts {
            let l = &a.layout;
            crate::with_float_vec!(&a.scales, s => crate::awq::check(l, &a.qweight, &a.qzeros, s, l.k() * l.n()))?;
        }
        agree(parts, "K", |a| a.layout.k())?;
        agree(parts, "group size", |a| a.layout.group_size())?;
        agree(parts, "scale dtype", |a| a.scales.dtype())?;
        let l0 = parts[0].layout;
        let layout = AwqLayout::new(l0.k(), parts.iter().map(|a| a.layout.n()).sum(), l0.group_size())?;
        let words = |w: fn(&AwqLayer) -> &[i32], rows: usize, what| {
            let cols: Vec<(&[i32], usize)> = parts.iter().map(|a| (w(a), a.layout.packed_cols())).collect();
            crate::par::concat_columns(&cols, rows).ok_or(Error::Kernel(KernelError::Fuse { what, part: 0 }))
        };
        let scales: Vec<(&FloatVec, usize)> = parts.iter().map(|a| (&a.scales, a.layout.n())).collect();
        Ok(AwqLayer {
            layout,
            qweight: words(|a| &a.qweight, l0.k(), "qweight")?,
            qzeros: words(|a| &a.qzeros, l0.groups(), "qzeros")?,
            scales: FloatVec::concat_columns(&scales, l0.groups())
                .ok_or(Error::Kernel(KernelError::Fuse { what: "scales", part: 0 }))?,
            bias: concat_bias(parts, |a| a.bias.as_ref())?,
        })
    }
}

/// The plan-time form of this scheme's boundary rule ([`crate::tp::check_cut`]), from the
/// method's parameters and the shape alone; [`QuantScheme::shard`] enforces the same rule.
///
/// AWQ (`[K, N/8]` storage): outputs on a pack word of 8, inputs on a group.
pub(crate) fn check_cut(group: usize, dim: usize, r: Range<usize>) -> Result<()> {
    let (multiple, what) = if dim == 0 { (8, "awq pack word") } else { (group, "group") };
    on(r.start, multiple.max(1), what)?;
    on(r.end, multiple.max(1), what)
}

/// Rank `shard`'s part of an AWQ layer of layout `l` whose tensors `src` holds: only the
/// shard's regions are asked of `src`.
pub(crate) fn shard_parts(
    l: &AwqLayout,
    has_bias: bool,
    src: &impl Parts,
    shard: &Shard,
) -> Result<AwqLayer> {
    let (k, n, gs, groups) = (l.k(), l.n(), l.group_size(), l.groups());
    let bias = |cols: Range<usize>| has_bias.then(|| src.floats("bias", 0..1, cols)).transpose();
    if shard.dim() == 0 {
        // Outputs = AWQ columns, 8 to a word (interleaved within the word only).
        let r = shard.range(n)?;
        on(r.start, 8, "awq pack word")?;
        on(r.end, 8, "awq pack word")?;
        let words = r.start / 8..r.end / 8;
        Ok(AwqLayer {
            layout: AwqLayout::new(k, r.len(), gs)?,
            qweight: src.i32s("qweight", 0..k, words.clone())?,
            qzeros: src.i32s("qzeros", 0..groups, words)?,
            scales: src.floats("scales", 0..groups, r.clone())?,
            bias: bias(r)?,
        })
    } else {
        // Inputs = AWQ rows, whole groups.
        let r = shard.range(k)?;
        on(r.start, gs, "group")?;
        on(r.end, gs, "group")?;
        let (g0, g1) = (r.start / gs, r.end / gs);
        let wc = l.packed_cols();
        Ok(AwqLayer {
            layout: AwqLayout::new(r.len(), n, gs)?,
            qweight: src.i32s("qweight", r, 0..wc)?,
            qzeros: src.i32s("qzeros", g0..g1, 0..wc)?,
            scales: src.floats("scales", g0..g1, 0..n)?,
            bias: bias(0..n)?,
        })
    }
}
