//! The [`QuantScheme`] implementation of a one-expert [`Fp8Layer`] (stacked experts are split
//! first: [`crate::tp::split_fp8_experts`]).

use super::{Fp8Layer, Fp8Layout};
use crate::elem::Elem;
use crate::error::{Error, KernelError, Result, expect_len};
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::scheme::{InMemory, Part, Parts, QuantScheme, agree, bits_of, concat_bias, concat_floats};
use crate::tp::Shard;
use crate::tp::shard::on;
use std::ops::Range;

impl Fp8Layer {
    /// [`KernelError::StackedExperts`] unless this is one expert.
    fn one_expert(&self) -> Result<()> {
        if self.experts == 1 {
            Ok(())
        } else {
            Err(Error::Kernel(KernelError::StackedExperts { experts: self.experts }))
        }
    }
}

impl QuantScheme for Fp8Layer {
    const NAME: &'static str = "fp8";

    fn shape(&self) -> (usize, usize) {
        (self.layout.rows(), self.layout.cols())
    }

    /// One expert, every length and the bias.
    fn validate(&self) -> Result<()> {
        self.one_expert()?;
        let l = &self.layout;
        crate::with_float_vec!(&self.scales, s => super::check(l, self.codes.len(), s, l.rows() * l.cols()))?;
        if let Some(b) = &self.bias {
            expect_len("bias", l.rows(), b.len())?;
        }
        Ok(())
    }

    /// Per tensor when one scale covers the weight, else the scale blocks.
    fn method(&self) -> Option<QuantMethod> {
        let l = &self.layout;
        Some(QuantMethod::Fp8 {
            format: self.format,
            block: (l.scale_shape() != (1, 1)).then(|| l.block_size()),
        })
    }

    fn stored_bytes(&self) -> usize {
        self.codes.len() + self.scales.len() * self.scales.dtype().size()
    }

    fn dequantize_into<O: Elem>(&self, out: &mut [O], par: Parallelism) -> Result<()> {
        self.one_expert()?;
        let l = &self.layout;
        crate::with_float_vec!(&self.scales, s => super::fp8_dequantize_into(&self.codes, s, self.format, l, out, par))
    }

    fn dequantize_reference_into(&self, out: &mut [f32]) -> Result<()> {
        self.one_expert()?;
        let l = &self.layout;
        crate::with_float_vec!(&self.scales, s => super::fp8_dequantize_reference_into(&self.codes, s, self.format, l, out))
    }

    /// This shard of a one-expert FP8 layer with its scale blocks (see
    /// [`crate::QuantWeight::shard`]); the bias follows dim 0. A per-tensor layer (block = shape)
    /// gives a per-tensor shard.
    ///
    /// ```
    /// use quant_kernels::fp8::{Fp8Format, Fp8Layer, Fp8Layout};
    /// use quant_kernels::tp::Shard;
    /// use quant_kernels::{Error, FloatVec, QuantScheme};
    /// let layer = Fp8Layer {
    ///     layout: Fp8Layout::block(3, 4, 2, 2)?, // scale grid [2, 2], last block row partial
    ///     experts: 1,
    ///     format: Fp8Format::E4M3,
    ///     codes: vec![0x38; 12],
    ///     scales: FloatVec::F32(vec![1.0, 2.0, 3.0, 4.0]),
    ///     bias: None,
    /// };
    /// let s = layer.shard(&Shard::Offset { dim: 0, offset: 2, len: 1 })?;
    /// assert_eq!(s.scales, FloatVec::F32(vec![3.0, 4.0]));
    /// assert_eq!(
    ///     layer.shard(&Shard::Offset { dim: 1, offset: 1, len: 3 }).unwrap_err(),
    ///     Error::Tp(quant_kernels::error::TpError::ShardBoundary { what: "fp8 scale block", at: 1, multiple: 2 })
    /// );
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    fn shard(&self, shard: &Shard) -> Result<Self> {
        let f = self;
        if f.experts != 1 {
            return Err(Error::Kernel(KernelError::StackedExperts { experts: f.experts }));
        }
        let l = &f.layout;
        crate::with_float_vec!(&f.scales, s => crate::fp8::check(l, f.codes.len(), s, l.rows() * l.cols()))?;
        if let Some(b) = &f.bias {
            crate::error::expect_len("bias", l.rows(), b.len())?;
        }
        let mut parts = vec![
            ("weight", Part::U8(&f.codes, l.cols())),
            ("weight_scale_inv", Part::Floats(&f.scales, l.scale_shape().1)),
        ];
        if let Some(b) = &f.bias {
            parts.push(("bias", Part::Floats(b, l.rows())));
        }
        shard_parts(l, f.experts, f.format, "weight_scale_inv", f.bias.is_some(), &InMemory(parts), shard)
    }

    /// One-expert FP8 parts: code rows one after another. Per-tensor parts (block = shape) keep
    /// one scale, so their scales must be equal bit for bit; block-scaled parts share the block
    /// size and their scale-block rows follow each other, so every part but the last must end on
    /// a block row ([`TpError::ShardBoundary`](crate::error::TpError::ShardBoundary) at the stack's row where it does not).
    fn concat(parts: &[&Self]) -> Result<Self> {
        for f in parts {
            if f.experts != 1 {
                return Err(Error::Kernel(KernelError::StackedExperts { experts: f.experts }));
            }
            let l = &f.layout;
            crate::with_float_vec!(&f.scales, s => crate::fp8::check(l, f.codes.len(), s, l.rows() * l.cols()))?;
        }
        agree(parts, "inputs", |f| f.layout.cols())?;
        agree(parts, "fp8 format", |f| f.format)?;
        agree(parts, "scale dtype", |f| f.scales.dtype())?;
        let (first, rows) = (parts[0], parts.iter().map(|f| f.layout.rows()).sum());
        let cols = first.layout.cols();
        let (layout, scales) = if parts
            .iter()
            .all(|f| f.layout.block_size() == (f.layout.rows().max(1), cols.max(1)))
        {
            agree(parts, "fp8 per-tensor scale", |f| bits_of(&f.scales))?;
            (Fp8Layout::per_tensor(rows, cols)?, first.scales.clone())
        } else {
            agree(parts, "fp8 scale block size", |f| f.layout.block_size())?;
            let (br, bc) = first.layout.block_size();
            let mut end = 0;
            for f in &parts[..parts.len() - 1] {
                end += f.layout.rows();
                on(end, br, "fp8 scale block")?;
            }
            (Fp8Layout::block(rows, cols, br, bc)?, concat_floats(parts.iter().map(|f| &f.scales), "scales")?)
        };
        Ok(Fp8Layer {
            layout,
            experts: 1,
            format: first.format,
            codes: parts.iter().flat_map(|f| f.codes.iter().copied()).collect(),
            scales,
            bias: concat_bias(parts, |f| f.bias.as_ref())?,
        })
    }
}

/// The plan-time form of this scheme's boundary rule ([`crate::tp::check_cut`]), from the
/// method's parameters and the shape alone; [`QuantScheme::shard`] enforces the same rule.
///
/// FP8: on a scale block (the end may be the dimension's end), or inside one block; per
/// tensor is one block the size of the weight.
pub(crate) fn check_cut(
    block: Option<(usize, usize)>,
    out: usize,
    inp: usize,
    dim: usize,
    r: Range<usize>,
) -> Result<()> {
    let (br, bc) = block.unwrap_or((out, inp));
    let (b, len) = if dim == 0 { (br.max(1), out) } else { (bc.max(1), inp) };
    if !r.is_empty() && r.start / b == (r.end - 1) / b {
        return Ok(());
    }
    on(r.start, b.max(1), "fp8 scale block")?;
    if r.end != len {
        on(r.end, b.max(1), "fp8 scale block")?;
    }
    Ok(())
}

/// Rank `shard`'s part of a one-expert FP8 layer of layout `l` whose codes (`weight`), scales
/// (`scale`) and bias `src` holds: only the shard's regions are asked of `src`. A cut inside
/// one scale block keeps that block's scale; otherwise cuts fall on blocks.
pub(crate) fn shard_parts(
    l: &Fp8Layout,
    experts: usize,
    format: super::Fp8Format,
    scale: &'static str,
    has_bias: bool,
    src: &impl Parts,
    shard: &Shard,
) -> Result<Fp8Layer> {
    if experts != 1 {
        return Err(Error::Kernel(KernelError::StackedExperts { experts }));
    }
    let (rows, cols, (br, bc), (sr, sc)) = (l.rows(), l.cols(), l.block_size(), l.scale_shape());
    let per_tensor = (br, bc) == (rows.max(1), cols.max(1));
    let dim = shard.dim();
    let (len_of, block) = if dim == 0 { (rows, br) } else { (cols, bc) };
    let r = shard.range(len_of)?;
    let single = !r.is_empty() && r.start / block == (r.end - 1) / block;
    if !single {
        on(r.start, block, "fp8 scale block")?;
        if r.end != len_of {
            on(r.end, block, "fp8 scale block")?;
        }
    }
    let (nr, nc) = if dim == 0 { (r.len(), cols) } else { (rows, r.len()) };
    let layout = if per_tensor { Fp8Layout::per_tensor(nr, nc)? } else { Fp8Layout::block(nr, nc, br, bc)? };
    let (nsr, nsc) = layout.scale_shape();
    let take = if dim == 0 { nsr } else { nsc };
    // First scale block row/column; an empty shard at the end keeps the last one.
    let s0 = (r.start / block).min((if dim == 0 { sr } else { sc }) - take);
    let bias = |cols: Range<usize>| has_bias.then(|| src.floats("bias", 0..1, cols)).transpose();
    let (codes, scales, bias) = if dim == 0 {
        (src.bytes("weight", r.clone(), 0..cols)?, src.floats(scale, s0..s0 + take, 0..sc)?, bias(r)?)
    } else {
        (src.bytes("weight", 0..rows, r)?, src.floats(scale, 0..sr, s0..s0 + take)?, bias(0..rows)?)
    };
    Ok(Fp8Layer { layout, experts: 1, format, codes, scales, bias })
}
