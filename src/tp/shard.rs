//! Which part of a weight a rank holds: [`Shard`], applied to dense row-major matrices and to
//! packed layers without dequantizing them.
//!
//! Dimensions are those of the `nn.Linear` weight `[out, in]`: `dim 0` splits the outputs
//! (column-parallel), `dim 1` splits the inputs (row-parallel), whatever the scheme's storage
//! orientation (GPTQ stores `[in, out]`; its shards are cut accordingly).

use crate::awq::{AwqLayer, AwqLayout};
use crate::elem::FloatVec;
use crate::error::{Error, Result};
use crate::fp8::{Fp8Layer, Fp8Layout};
use crate::gptq::layout::codes_per_block;
use crate::gptq::{GptqLayer, GptqLayout};
use crate::hqq::{Axis, HqqLayout, PackedWords};
use crate::intx::{Granularity, Int4Tensor, Int8Tensor};
use crate::matmul::{HqqWeight, QuantWeight};
use crate::pack::{B1, B2, B3, B4, B8, Bits, Packing};
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
    /// shard of the whole weight's dequantization, bit for bit. Nothing is ever requantized or
    /// dequantized: codes are sliced (or unpacked and repacked unchanged), and every weight
    /// keeps its own scale and zero point. A cut that would leave a group or a pack word
    /// partly on either side returns [`Error::ShardBoundary`] naming the boundary.
    ///
    /// | scheme | dim 0 (outputs) | dim 1 (inputs) |
    /// |---|---|---|
    /// | dense | any | any |
    /// | GPTQ (`[K, N]`) | on a zero-point pack word (`32 / bits` columns, 32 for 3-bit); act-order too | on a `qweight` word row; without act-order also on a group (the last may end at K); with act-order every group is kept and `g_idx` sliced ([`crate::gptq::GptqLayout::with_groups`]) |
    /// | HQQ, every width, axis 1 | on a group (`group / gcd(group, cols)` rows) | group size a multiple of `cols` (incl. one group per row): any; a divisor of `cols`: on a group; else [`Error::ShardGrouping`] |
    /// | HQQ, every width, axis 0 | on a code row (`M / gcd(M, cols)` rows, `M = numel / group`); the shard keeps all `M` groups, each with fewer members | `M` a multiple of `cols` (`group` divides `rows`, incl. one group per column): any; `M` a divisor of `cols`: on a code row; else [`Error::ShardGrouping`] |
    /// | AWQ (`[K, N/8]`) | on a pack word (8 columns) | on a group |
    /// | FP8, one expert | on a scale block (the end may be the last row), or within one block (per-tensor: any) | the same with block columns |
    /// | int8 | any (per-channel scales follow the rows) | any |
    /// | int4 | any | on a group |
    ///
    /// HQQ codes are unpacked and repacked for the shard's own code matrix (hqq's planar
    /// packing pairs rows of the two halves), so the shard's code-row count must suit the
    /// width ([`Error::PackRows`] otherwise; 3-bit pads). A shard of a group-wise layout whose
    /// groups span the cut dimension (HQQ axis 0 along the outputs, axis 1 with groups of
    /// whole rows along the inputs) keeps those groups, each with the members it holds, so its
    /// group size is the whole's scaled by the shard's share. Stacked FP8 experts are refused
    /// ([`Error::StackedExperts`]; split them with [`crate::tp::split_fp8_experts`]). The
    /// layer's bias (GPTQ, AWQ, FP8) follows dim 0 and is kept whole for dim 1.
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
            QuantWeight::Hqq(h) => Ok(QuantWeight::Hqq(self.apply_hqq(h)?)),
            QuantWeight::Awq(a) => Ok(QuantWeight::Awq(self.apply_awq(a)?)),
            QuantWeight::Fp8(f) => Ok(QuantWeight::Fp8(self.apply_fp8(f)?)),
            QuantWeight::Int8(t) => Ok(QuantWeight::Int8(self.apply_int8(t)?)),
            QuantWeight::Int4(t) => Ok(QuantWeight::Int4(self.apply_int4(t)?)),
        }
    }

    /// This shard of a GPTQ layer (see [`Shard::apply_weight`]); the bias follows dim 0.
    ///
    /// Along the inputs with act-order (`g_idx` not `k / group_size`), the shard keeps every
    /// group's scales and zero points and the slice of `g_idx` unchanged (vLLM's way), so its
    /// layout has more groups than its K alone implies.
    pub fn apply_gptq(&self, g: &GptqLayer) -> Result<GptqLayer> {
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
        if self.dim() == 0 {
            // Outputs = GPTQ columns: qweight/scales columns, qzeros words along N.
            let r = self.range(n)?;
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
                bias: g
                    .bias
                    .as_ref()
                    .map(|b| crate::with_float_vec!(b, v => FloatVec::from(v[r.clone()].to_vec()))),
            })
        } else {
            // Inputs = GPTQ rows: whole word rows (and whole groups without act-order).
            let r = self.range(k)?;
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

    /// This shard of an HQQ weight, repacked (see [`Shard::apply_weight`] for what each axis
    /// allows).
    ///
    /// ```
    /// use quant_kernels::hqq::{Axis, HqqLayout, pack_hqq};
    /// use quant_kernels::matmul::HqqWeight;
    /// use quant_kernels::tp::Shard;
    /// use quant_kernels::FloatVec;
    /// // 4-bit, [4, 4], axis 1, groups of 4 (one per row): the code matrix is the weight.
    /// let codes: Vec<u8> = (0..16).collect();
    /// let w = HqqWeight {
    ///     layout: HqqLayout::new(4, 4, 4, Axis::One)?,
    ///     packed: pack_hqq(&codes, 4, 4, 4)?,
    ///     scales: FloatVec::F32(vec![1.0, 2.0, 3.0, 4.0]),
    ///     zeros: FloatVec::F32(vec![0.0; 4]),
    /// };
    /// let s = Shard::Simple { dim: 0, rank: 1, world_size: 2 }.apply_hqq(&w)?; // rows 2, 3
    /// assert_eq!(quant_kernels::hqq::unpack_hqq(&s.packed)?, &codes[8..]);
    /// assert_eq!(s.scales, FloatVec::F32(vec![3.0, 4.0]));
    /// let s = Shard::Offset { dim: 1, offset: 1, len: 2 }.apply_hqq(&w)?; // columns 1, 2
    /// assert_eq!((s.layout.group_size(), s.scales.len()), (2, 4)); // each row's group, halved
    /// assert!(Shard::Simple { dim: 0, rank: 0, world_size: 4 }.apply_hqq(&w).is_err()); // 1 row
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn apply_hqq(&self, h: &HqqWeight) -> Result<HqqWeight> {
        let l = h.layout;
        let (rows, cols, g, axis) = (l.rows(), l.cols(), l.group_size(), l.axis());
        h.validate()?;
        let (cr, cc) = l.code_shape();
        let dim = self.dim();
        let r = self.range(if dim == 0 { rows } else { cols })?;
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
                (Axis::One, _) => return Err(Error::ShardGrouping { period: g, cols }),
                (Axis::Zero, _) => return Err(Error::ShardGrouping { period: cc, cols }),
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

    /// This shard of an AWQ layer (see [`Shard::apply_weight`]); the bias follows dim 0.
    pub fn apply_awq(&self, a: &AwqLayer) -> Result<AwqLayer> {
        let l = &a.layout;
        let (k, n, gs, groups, wc) = (l.k(), l.n(), l.group_size(), l.groups(), l.packed_cols());
        crate::with_float_vec!(&a.scales, s => crate::awq::check(l, &a.qweight, &a.qzeros, s, k * n))?;
        if let Some(b) = &a.bias {
            crate::error::expect_len("bias", n, b.len())?;
        }
        if self.dim() == 0 {
            // Outputs = AWQ columns, 8 to a word (interleaved within the word only).
            let r = self.range(n)?;
            on(r.start, 8, "awq pack word")?;
            on(r.end, 8, "awq pack word")?;
            let words = r.start / 8..r.end / 8;
            Ok(AwqLayer {
                layout: AwqLayout::new(k, r.len(), gs)?,
                qweight: column_range(&a.qweight, k, wc, words.clone()),
                qzeros: column_range(&a.qzeros, groups, wc, words),
                scales: crate::with_float_vec!(&a.scales, s => FloatVec::from(column_range(s, groups, n, r.clone()))),
                bias: a
                    .bias
                    .as_ref()
                    .map(|b| crate::with_float_vec!(b, v => FloatVec::from(v[r.clone()].to_vec()))),
            })
        } else {
            // Inputs = AWQ rows, whole groups.
            let r = self.range(k)?;
            on(r.start, gs, "group")?;
            on(r.end, gs, "group")?;
            let (g0, g1) = (r.start / gs, r.end / gs);
            Ok(AwqLayer {
                layout: AwqLayout::new(r.len(), n, gs)?,
                qweight: a.qweight[r.start * wc..r.end * wc].to_vec(),
                qzeros: a.qzeros[g0 * wc..g1 * wc].to_vec(),
                scales: crate::with_float_vec!(&a.scales, s => FloatVec::from(s[g0 * n..g1 * n].to_vec())),
                bias: a.bias.clone(),
            })
        }
    }

    /// This shard of a one-expert FP8 layer with its scale blocks (see
    /// [`Shard::apply_weight`]); the bias follows dim 0. A per-tensor layer (block = shape)
    /// gives a per-tensor shard.
    ///
    /// ```
    /// use quant_kernels::fp8::{Fp8Format, Fp8Layer, Fp8Layout};
    /// use quant_kernels::tp::Shard;
    /// use quant_kernels::{Error, FloatVec};
    /// let layer = Fp8Layer {
    ///     layout: Fp8Layout::block(3, 4, 2, 2)?, // scale grid [2, 2], last block row partial
    ///     experts: 1,
    ///     format: Fp8Format::E4M3,
    ///     codes: vec![0x38; 12],
    ///     scales: FloatVec::F32(vec![1.0, 2.0, 3.0, 4.0]),
    ///     bias: None,
    /// };
    /// let s = Shard::Offset { dim: 0, offset: 2, len: 1 }.apply_fp8(&layer)?;
    /// assert_eq!(s.scales, FloatVec::F32(vec![3.0, 4.0]));
    /// assert_eq!(
    ///     Shard::Offset { dim: 1, offset: 1, len: 3 }.apply_fp8(&layer).unwrap_err(),
    ///     Error::ShardBoundary { what: "fp8 scale block", at: 1, multiple: 2 }
    /// );
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn apply_fp8(&self, f: &Fp8Layer) -> Result<Fp8Layer> {
        if f.experts != 1 {
            return Err(Error::StackedExperts { experts: f.experts });
        }
        let l = &f.layout;
        let (rows, cols, (br, bc), (sr, sc)) = (l.rows(), l.cols(), l.block_size(), l.scale_shape());
        crate::with_float_vec!(&f.scales, s => crate::fp8::check(l, f.codes.len(), s, rows * cols))?;
        if let Some(b) = &f.bias {
            crate::error::expect_len("bias", rows, b.len())?;
        }
        let per_tensor = (br, bc) == (rows.max(1), cols.max(1));
        let dim = self.dim();
        let (len_of, block) = if dim == 0 { (rows, br) } else { (cols, bc) };
        let r = self.range(len_of)?;
        let single = !r.is_empty() && r.start / block == (r.end - 1) / block;
        if !single {
            on(r.start, block, "fp8 scale block")?;
            if r.end != len_of {
                on(r.end, block, "fp8 scale block")?;
            }
        }
        let (nr, nc) = if dim == 0 { (r.len(), cols) } else { (rows, r.len()) };
        let layout =
            if per_tensor { Fp8Layout::per_tensor(nr, nc)? } else { Fp8Layout::block(nr, nc, br, bc)? };
        let (nsr, nsc) = layout.scale_shape();
        let take = if dim == 0 { nsr } else { nsc };
        // First scale block row/column; an empty shard at the end keeps the last one.
        let s0 = (r.start / block).min((if dim == 0 { sr } else { sc }) - take);
        let (codes, scales, bias) = if dim == 0 {
            (
                f.codes[r.start * cols..r.end * cols].to_vec(),
                crate::with_float_vec!(&f.scales, s => FloatVec::from(s[s0 * sc..(s0 + take) * sc].to_vec())),
                f.bias
                    .as_ref()
                    .map(|b| crate::with_float_vec!(b, v => FloatVec::from(v[r.clone()].to_vec()))),
            )
        } else {
            (
                column_range(&f.codes, rows, cols, r.clone()),
                crate::with_float_vec!(&f.scales, s => FloatVec::from(column_range(s, sr, sc, s0..s0 + take))),
                f.bias.clone(),
            )
        };
        Ok(Fp8Layer { layout, experts: 1, format: f.format, codes, scales, bias })
    }

    /// This shard of an int8 tensor: any rows or columns; per-channel scales follow the rows,
    /// a per-tensor scale is kept.
    pub fn apply_int8(&self, t: &Int8Tensor) -> Result<Int8Tensor> {
        t.check(t.q.len())?;
        let (q, rows, cols) = self.apply(&t.q, t.rows, t.cols)?;
        let scales = match (t.granularity, self.dim()) {
            (Granularity::PerChannel, 0) => t.scales[self.range(t.rows)?].to_vec(),
            _ => t.scales.clone(),
        };
        Ok(Int8Tensor { rows, cols, granularity: t.granularity, q, scales })
    }

    /// This shard of an int4 tensor: any rows; columns on a group boundary (groups run along
    /// the rows).
    pub fn apply_int4(&self, t: &Int4Tensor) -> Result<Int4Tensor> {
        t.check(t.rows.saturating_mul(t.cols))?;
        let (cols, group) = (t.cols, t.group);
        if self.dim() == 0 {
            // Rows are whole groups of an even size: byte- and group-aligned.
            let r = self.range(t.rows)?;
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
        let c = self.range(cols)?;
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
}

/// `Ok` when `at` is a multiple of `multiple`, else [`Error::ShardBoundary`].
pub(super) fn on(at: usize, multiple: usize, what: &'static str) -> Result<()> {
    if at.is_multiple_of(multiple) { Ok(()) } else { Err(Error::ShardBoundary { what, at, multiple }) }
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
