//! [`HqqWeight`]: an HQQ weight as the crate multiplies, shards and stacks it, and its
//! [`QuantScheme`] implementation.

use super::{Axis, HqqLayer, HqqLayout, Packed, PackedWords};
use crate::elem::{Elem, FloatVec};
use crate::error::{Error, KernelError, Result, TpError, expect_len};
use crate::method::QuantMethod;
use crate::pack::{B1, B2, B3, B4, B8, Bits, Packing};
use crate::par::Parallelism;
use crate::scheme::{QuantScheme, agree, bits_of, concat_floats};
use crate::tp::Shard;
use crate::tp::shard::on;
use std::ops::Range;

/// An HQQ weight: packed codes with one scale and one zero per group.
#[derive(Debug, Clone, PartialEq)]
pub struct HqqWeight {
    /// Shape `[out, in]` and grouping.
    pub layout: HqqLayout,
    /// The packed code matrix.
    pub packed: Packed,
    /// One scale per group (`f32`, `f16` or `bf16`).
    pub scales: FloatVec,
    /// One zero per group, in code units, same dtype as `scales`.
    pub zeros: FloatVec,
}

impl From<HqqLayer> for HqqWeight {
    fn from(l: HqqLayer) -> Self {
        HqqWeight {
            layout: l.layout,
            packed: l.packed,
            scales: FloatVec::F32(l.scales),
            zeros: FloatVec::F32(l.zeros),
        }
    }
}

impl HqqWeight {
    /// Run `f` with the scales and zeros in one element type (widened to `f32` when they differ).
    fn with_params<R>(&self, f: impl FnOnce(ParamsRef<'_>) -> R) -> R {
        match (&self.scales, &self.zeros) {
            (FloatVec::F32(s), FloatVec::F32(z)) => f(ParamsRef::F32(s, z)),
            (FloatVec::F16(s), FloatVec::F16(z)) => f(ParamsRef::F16(s, z)),
            (FloatVec::Bf16(s), FloatVec::Bf16(z)) => f(ParamsRef::Bf16(s, z)),
            (s, z) => f(ParamsRef::F32(&s.to_f32(), &z.to_f32())),
        }
    }

    /// Dequantize `[out, in]` into `out` (fast path, or the naive reference).
    fn dequantize_with<O: Elem>(&self, out: &mut [O], reference: bool, par: Parallelism) -> Result<()> {
        self.validate()?;
        fn run<S: Elem, O: Elem>(
            h: &HqqWeight,
            s: &[S],
            z: &[S],
            reference: bool,
            out: &mut [O],
            par: Parallelism,
        ) -> Result<()> {
            use super::{dequantize_into, dequantize_reference_into};
            let l = &h.layout;
            macro_rules! run {
                ($p:ty, $w:expr) => {
                    if reference {
                        dequantize_reference_into::<$p, S, O>($w, s, z, l, out)
                    } else {
                        dequantize_into::<$p, S, O>($w, s, z, l, out, par)
                    }
                };
            }
            match (&h.packed.words, h.packed.bits) {
                (PackedWords::U8(w), Bits::B8) => run!(B8, w),
                (PackedWords::U8(w), Bits::B4) => run!(B4, w),
                (PackedWords::U8(w), Bits::B2) => run!(B2, w),
                (PackedWords::U8(w), Bits::B1) => run!(B1, w),
                (PackedWords::I32(w), Bits::B3) => run!(B3, w),
                (_, bits) => Err(Error::Kernel(KernelError::UnsupportedBits(bits.get()))),
            }
        }
        self.with_params(|p| match p {
            ParamsRef::F32(s, z) => run(self, s, z, reference, out, par),
            ParamsRef::F16(s, z) => run(self, s, z, reference, out, par),
            ParamsRef::Bf16(s, z) => run(self, s, z, reference, out, par),
        })
    }
}

/// Scales and zeros of one element type.
enum ParamsRef<'a> {
    F32(&'a [f32], &'a [f32]),
    F16(&'a [half::f16], &'a [half::f16]),
    Bf16(&'a [half::bf16], &'a [half::bf16]),
}

impl QuantScheme for HqqWeight {
    const NAME: &'static str = "hqq";

    fn shape(&self) -> (usize, usize) {
        (self.layout.rows(), self.layout.cols())
    }

    /// Check every length against the layout, the width and its packing (typed errors, no
    /// allocation).
    fn validate(&self) -> Result<()> {
        let l = &self.layout;
        let (r, c) = l.code_shape();
        expect_len("code-matrix rows", r, self.packed.rows)?;
        expect_len("code-matrix cols", c, self.packed.cols)?;
        let (ns, nz, numel) = (self.scales.len(), self.zeros.len(), l.numel());
        match (&self.packed.words, self.packed.bits) {
            (PackedWords::U8(w), Bits::B8) => super::check::<B8>(l, w.len(), ns, nz, numel),
            (PackedWords::U8(w), Bits::B4) => super::check::<B4>(l, w.len(), ns, nz, numel),
            (PackedWords::U8(w), Bits::B2) => super::check::<B2>(l, w.len(), ns, nz, numel),
            (PackedWords::U8(w), Bits::B1) => super::check::<B1>(l, w.len(), ns, nz, numel),
            (PackedWords::I32(w), Bits::B3) => super::check::<B3>(l, w.len(), ns, nz, numel),
            (_, bits) => Err(Error::Kernel(KernelError::UnsupportedBits(bits.get()))),
        }?;
        Ok(())
    }

    fn method(&self) -> Option<QuantMethod> {
        let l = &self.layout;
        Some(QuantMethod::Hqq { bits: self.packed.bits.get(), group: l.group_size(), axis: l.axis() })
    }

    fn stored_bytes(&self) -> usize {
        let words = match &self.packed.words {
            PackedWords::U8(w) => w.len(),
            PackedWords::I32(w) => 4 * w.len(),
        };
        let fv = |v: &FloatVec| v.len() * v.dtype().size();
        words + fv(&self.scales) + fv(&self.zeros)
    }

    fn dequantize_into<O: Elem>(&self, out: &mut [O], par: Parallelism) -> Result<()> {
        self.dequantize_with(out, false, par)
    }

    fn dequantize_reference_into(&self, out: &mut [f32]) -> Result<()> {
        self.dequantize_with(out, true, Parallelism::SERIAL)
    }

    /// This shard of an HQQ weight, repacked (see [`crate::QuantWeight::shard`] for what each
    /// axis allows).
    ///
    /// ```
    /// use quant_kernels::hqq::{Axis, HqqLayout, pack_hqq};
    /// use quant_kernels::hqq::HqqWeight;
    /// use quant_kernels::tp::Shard;
    /// use quant_kernels::{FloatVec, QuantScheme};
    /// // 4-bit, [4, 4], axis 1, groups of 4 (one per row): the code matrix is the weight.
    /// let codes: Vec<u8> = (0..16).collect();
    /// let w = HqqWeight {
    ///     layout: HqqLayout::new(4, 4, 4, Axis::One)?,
    ///     packed: pack_hqq(&codes, 4, 4, 4)?,
    ///     scales: FloatVec::F32(vec![1.0, 2.0, 3.0, 4.0]),
    ///     zeros: FloatVec::F32(vec![0.0; 4]),
    /// };
    /// let s = w.shard(&Shard::Simple { dim: 0, rank: 1, world_size: 2 })?; // rows 2, 3
    /// assert_eq!(quant_kernels::hqq::unpack_hqq(&s.packed)?, &codes[8..]);
    /// assert_eq!(s.scales, FloatVec::F32(vec![3.0, 4.0]));
    /// let s = w.shard(&Shard::Offset { dim: 1, offset: 1, len: 2 })?; // columns 1, 2
    /// assert_eq!((s.layout.group_size(), s.scales.len()), (2, 4)); // each row's group, halved
    /// assert!(w.shard(&Shard::Simple { dim: 0, rank: 0, world_size: 4 }).is_err()); // 1 row
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    fn shard(&self, shard: &Shard) -> Result<Self> {
        let h = self;
        let l = h.layout;
        let (rows, cols, g, axis) = (l.rows(), l.cols(), l.group_size(), l.axis());
        h.validate()?;
        let (cr, cc) = l.code_shape();
        let dim = shard.dim();
        let r = shard.range(if dim == 0 { rows } else { cols })?;
        let len = r.len();
        let (nr, nc) = if dim == 0 { (len, cols) } else { (rows, len) };
        // Flat index in the whole of the shard's flat index `e` (the code matrix has the
        // weight's flat order, whatever the axis).
        let flat =
            |e: usize| if dim == 0 { r.start * cols + e } else { (e / len) * cols + r.start + e % len };
        // The shard's layout, and for each of its groups the whole's group it keeps.
        let (layout, picks) = if nr * nc == 0 {
            with_picks(HqqLayout::new(nr, nc, g, axis)?, &|j| j)
        } else {
            match (axis, dim) {
                (Axis::One, 0) => {
                    // Groups are runs of `g` flat weights: the shard's rows must hold whole runs.
                    let unit = g / gcd(g, cols);
                    on(r.start, unit, "hqq group")?;
                    on(r.end, unit, "hqq group")?;
                    let first = r.start * cols / g;
                    with_picks(HqqLayout::new(len, cols, g, axis)?, &|j| first + j)
                }
                (Axis::One, _) if g.is_multiple_of(cols) => {
                    // A group is `g / cols` whole rows: the shard keeps each group's columns.
                    with_picks(HqqLayout::new(rows, len, g / cols * len, axis)?, &|j| j)
                }
                (Axis::One, _) if cols.is_multiple_of(g) => {
                    on(r.start, g, "hqq group")?;
                    on(r.end, g, "hqq group")?;
                    with_picks(HqqLayout::new(rows, len, g, axis)?, &|j| flat(j * g) / g)
                }
                (Axis::Zero, 0) => {
                    // Group j = flat weights j, j + M, j + 2M, ...: the shard takes whole code
                    // rows (M weights each) and keeps all M groups, each with fewer members.
                    let m = cc;
                    let unit = m / gcd(m, cols);
                    on(r.start, unit, "hqq code row")?;
                    on(r.end, unit, "hqq code row")?;
                    with_picks(HqqLayout::new(len, cols, len * cols / m, axis)?, &|j| j)
                }
                (Axis::Zero, _) if cc.is_multiple_of(cols) => {
                    // A code row is `M / cols` whole weight rows: any columns keep their groups.
                    with_picks(HqqLayout::new(rows, len, g, axis)?, &flat)
                }
                (Axis::Zero, _) if cols.is_multiple_of(cc) => {
                    let m = cc;
                    on(r.start, m, "hqq code row")?;
                    on(r.end, m, "hqq code row")?;
                    with_picks(HqqLayout::new(rows, len, rows * len / m, axis)?, &|j| j)
                }
                (Axis::One, _) => return Err(Error::Tp(TpError::ShardGrouping { period: g, cols })),
                (Axis::Zero, _) => return Err(Error::Tp(TpError::ShardGrouping { period: cc, cols })),
            }
        };
        let (ncr, ncc) = layout.code_shape();
        let n = layout.numel();
        let codes = match &h.packed.words {
            PackedWords::U8(w) => match h.packed.bits {
                Bits::B8 => gather::<B8>(w, cr, cc, n, flat),
                Bits::B4 => gather::<B4>(w, cr, cc, n, flat),
                Bits::B2 => gather::<B2>(w, cr, cc, n, flat),
                _ => gather::<B1>(w, cr, cc, n, flat),
            },
            PackedWords::I32(w) => gather::<B3>(w, cr, cc, n, flat),
        };
        let packed = crate::hqq::pack_hqq(&codes, ncr, ncc, h.packed.bits.get())?;
        debug_assert!((0..n).all(|e| hqq_group(&l, flat(e)) == picks[hqq_group(&layout, e)]));
        Ok(HqqWeight { layout, packed, scales: pick(&h.scales, &picks), zeros: pick(&h.zeros, &picks) })
    }

    /// HQQ parts: codes unpacked, concatenated in the weight's flat order (the code matrix's
    /// row-major order, whatever the axis) and repacked at the same width. Axis 1 (a group is a
    /// run of `g` weights): the groups follow each other, so scales and zeros concatenate. Axis 0
    /// (group `k` is flat weights `k, k + M, k + 2M, ...` of a `[g, M]` code matrix): every group
    /// of a stack spans every part, so the parts must share `M` and their scales and zeros (as
    /// shards of one weight do); the stack's code rows are the parts' and its group size their
    /// sum. Parts quantized separately along axis 0 cannot be stacked without requantizing.
    fn concat(parts: &[&Self]) -> Result<Self> {
        for p in parts {
            p.validate()?;
        }
        agree(parts, "inputs", |h| h.layout.cols())?;
        agree(parts, "bits", |h| h.packed.bits)?;
        agree(parts, "hqq axis", |h| h.layout.axis())?;
        agree(parts, "scale dtype", |h| h.scales.dtype())?;
        agree(parts, "zero dtype", |h| h.zeros.dtype())?;
        let (first, rows) = (parts[0], parts.iter().map(|h| h.layout.rows()).sum());
        let (layout, scales, zeros) = match first.layout.axis() {
            Axis::One => {
                agree(parts, "group size", |h| h.layout.group_size())?;
                (
                    HqqLayout::new(rows, first.layout.cols(), first.layout.group_size(), Axis::One)?,
                    concat_floats(parts.iter().map(|h| &h.scales), "scales")?,
                    concat_floats(parts.iter().map(|h| &h.zeros), "zeros")?,
                )
            }
            Axis::Zero => {
                agree(parts, "hqq axis-0 code columns", |h| h.layout.code_shape().1)?;
                agree(parts, "hqq axis-0 scales and zeros", |h| (bits_of(&h.scales), bits_of(&h.zeros)))?;
                let g = parts.iter().map(|h| h.layout.group_size()).sum();
                (
                    HqqLayout::new(rows, first.layout.cols(), g, Axis::Zero)?,
                    first.scales.clone(),
                    first.zeros.clone(),
                )
            }
        };
        let mut codes = Vec::with_capacity(layout.numel());
        for p in parts {
            codes.extend(crate::hqq::unpack_hqq(&p.packed)?);
        }
        let (cr, cc) = layout.code_shape();
        let packed = crate::hqq::pack_hqq(&codes, cr, cc, first.packed.bits.get())?;
        Ok(HqqWeight { layout, packed, scales, zeros })
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

/// The group of flat weight `f` under an HQQ layout.
fn hqq_group(l: &HqqLayout, f: usize) -> usize {
    match l.axis() {
        Axis::One => f / l.group_size(),
        Axis::Zero => f % l.code_shape().1,
    }
}

/// Codes `flat(0..n)` of a packed `[rows, cols]` code matrix (flat = the weight's order):
/// code `[i, j]` sits in word `[i % P, j]` at plane `i / P`.
fn gather<P: Packing>(
    words: &[P::Word],
    rows: usize,
    cols: usize,
    n: usize,
    flat: impl Fn(usize) -> usize,
) -> Vec<u8> {
    let prows = if P::PADS { rows.div_ceil(P::PER_WORD) } else { rows / P::PER_WORD };
    (0..n)
        .map(|e| {
            let f = flat(e);
            let (i, j) = (f / cols, f % cols);
            P::extract(words[(i % prows) * cols + j], P::shift(i / prows)) as u8
        })
        .collect()
}

/// `layout` with `group_of(j)` for each of its groups `j`.
fn with_picks(layout: HqqLayout, group_of: &dyn Fn(usize) -> usize) -> (HqqLayout, Vec<usize>) {
    (layout, (0..layout.groups()).map(group_of).collect())
}

/// `v[picks[0]], v[picks[1]], ...` in `v`'s dtype.
fn pick(v: &FloatVec, picks: &[usize]) -> FloatVec {
    crate::with_float_vec!(v, x => FloatVec::from(picks.iter().map(|&i| x[i]).collect::<Vec<_>>()))
}

/// The plan-time form of this scheme's boundary rule ([`crate::tp::check_cut`]), from the
/// method's parameters and the shape alone; [`QuantScheme::shard`] enforces the same rule.
///
/// HQQ's rule depends on the grouping period against the row length and on the width's
/// packing, so it is asked of [`QuantScheme::shard`] itself on a zero layer of this shape.
pub(crate) fn check_cut(
    bits: u8,
    group: usize,
    axis: Axis,
    out: usize,
    inp: usize,
    dim: usize,
    r: Range<usize>,
) -> Result<()> {
    let layout = HqqLayout::new(out, inp, group, axis)?;
    let (cr, cc) = layout.code_shape();
    let packed = crate::hqq::pack_hqq(&vec![0u8; cr * cc], cr, cc, bits)?;
    let zeros = FloatVec::F32(vec![0.0; layout.groups()]);
    let w = HqqWeight { layout, packed, scales: zeros.clone(), zeros };
    w.shard(&Shard::Offset { dim, offset: r.start, len: r.len() }).map(|_| ())
}
