//! Multiply activations by quantized weights without materializing them: `y = x · Wᵀ + bias`.
//!
//! ```text
//!  x [batch, in] (f32 | f16 | bf16)      W [out, in] quantized (any scheme below)
//!  y [batch, out] (f32 | f16 | bf16)     y[b, o] = sum_k x[b, k] * W[o, k]  (+ bias[o])
//! ```
//!
//! [`QuantLinear`] holds one validated weight of any scheme the crate has ([`QuantWeight`]:
//! HQQ at every width and both axes, GPTQ 2/3/4/8-bit incl. act-order, AWQ, FP8 E4M3/E5M2 with
//! per-tensor or block scales, int8, int4, or a dense weight) and multiplies with one generic
//! kernel over that scheme's *tile decoder*: a block of output rows is decoded for 256 inputs
//! at a time into an `f32` tile that stays in L1, then multiplied with every activation row
//! (decode once, use `batch` times) with register-blocked accumulators. The same path serves
//! large batches (a blocked GEMM whose dequantization is amortized over the batch) and, on
//! CPUs without AVX-512, batch 1. With AVX-512, batch 1 (GEMV, bound by reading the packed
//! weight) skips the tile for HQQ (1/2/3/4/8-bit layouts whose planes hold whole rows, inputs a
//! multiple of 16) and GPTQ/AWQ (2/4/8-bit): codes are decoded and multiplied in registers
//! (HQQ axis 1 looks a group's 16 weights up by code with `vpermps`), several row streams side
//! by side with software prefetch, giving the same bits as the tile path. SIMD: the ISA chosen at run time
//! ([`crate::lanes::isa`]), fused multiply-add with AVX2/AVX-512; rayon over blocks of output
//! rows, never a cross-thread sum.
//!
//! Every output is summed in a fixed order that depends only on the weight's shape and scheme
//! (not on the batch size, the row's place in the batch, the thread count or timing). The
//! oracle [`QuantLinear::forward_reference`] dequantizes with each scheme's naive reference and
//! sums in `f64`; the tests hold the kernel to `|y - y_ref| <= 1e-5 * (sum_k |x[b,k] W[o,k]| +
//! |bias[o]|)` for K up to 16384.

pub(crate) mod kernel;

use crate::awq::AwqLayer;
use crate::elem::{Elem, FloatVec};
use crate::error::{Error, Result, expect_len};
use crate::fp8::{Fp8Format, Fp8Layer};
use crate::gptq::{GptqLayer, ZeroFormat};
use crate::hqq::{HqqLayer, HqqLayout, Packed, PackedWords};
use crate::intx::{Int4Tensor, Int8Tensor};
use crate::pack::{B1, B2, B3, B4, B8, Bits, Packing};
use crate::par::Parallelism;
use kernel::Rows16;

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
    /// Check every length against the layout, the width and its packing (typed errors, no
    /// allocation): what [`QuantLinear::new`] and the tensor-parallel shards rely on.
    pub(crate) fn validate(&self) -> Result<()> {
        let l = &self.layout;
        let (r, c) = l.code_shape();
        expect_len("code-matrix rows", r, self.packed.rows)?;
        expect_len("code-matrix cols", c, self.packed.cols)?;
        let (ns, nz, numel) = (self.scales.len(), self.zeros.len(), l.numel());
        match (&self.packed.words, self.packed.bits) {
            (PackedWords::U8(w), Bits::B8) => crate::hqq::check::<B8>(l, w.len(), ns, nz, numel),
            (PackedWords::U8(w), Bits::B4) => crate::hqq::check::<B4>(l, w.len(), ns, nz, numel),
            (PackedWords::U8(w), Bits::B2) => crate::hqq::check::<B2>(l, w.len(), ns, nz, numel),
            (PackedWords::U8(w), Bits::B1) => crate::hqq::check::<B1>(l, w.len(), ns, nz, numel),
            (PackedWords::I32(w), Bits::B3) => crate::hqq::check::<B3>(l, w.len(), ns, nz, numel),
            (_, bits) => Err(Error::UnsupportedBits(bits.get())),
        }?;
        Ok(())
    }

    /// The weight of a UQFF HQQ layer (validated first; its bias is not part of the weight).
    pub fn from_uqff(layer: &crate::io::uqff::UqffHqqLayer) -> Result<Self> {
        use crate::io::safetensors::{Dtype, LeElem};
        layer.validate()?;
        let layout = layer.layout()?;
        let bits = Bits::try_from(layer.config.bits)?;
        let floats = |t: &crate::io::uqff::UqffTensor| match t.dtype {
            Dtype::F16 => FloatVec::F16(half::f16::from_le(&t.data)),
            Dtype::Bf16 => FloatVec::Bf16(half::bf16::from_le(&t.data)),
            _ => FloatVec::F32(<f32 as LeElem>::from_le(&t.data)),
        };
        let (rows, cols) = layout.code_shape();
        let words = if bits == Bits::B3 {
            PackedWords::I32(<i32 as LeElem>::from_le(&layer.w_q.data))
        } else {
            PackedWords::U8(layer.w_q.data.clone())
        };
        Ok(HqqWeight {
            layout,
            packed: Packed { bits, rows, cols, words },
            scales: floats(&layer.scales),
            zeros: floats(&layer.zeros),
        })
    }
}

/// A weight `[out, in]` in any scheme the crate multiplies.
#[derive(Debug, Clone, PartialEq)]
pub enum QuantWeight {
    /// Unquantized, row-major `[rows = out, cols = in]`.
    Dense {
        /// Outputs.
        rows: usize,
        /// Inputs.
        cols: usize,
        /// The values.
        w: FloatVec,
    },
    /// HQQ, any width and axis.
    Hqq(HqqWeight),
    /// GPTQ (`[K, N]` storage; the layer's own bias is ignored, pass it to [`QuantLinear::new`]).
    Gptq(GptqLayer),
    /// AWQ (GEMM layout).
    Awq(AwqLayer),
    /// FP8 codes with per-tensor or block scales (one expert).
    Fp8(Fp8Layer),
    /// int8 symmetric.
    Int8(Int8Tensor),
    /// int4 asymmetric group-wise.
    Int4(Int4Tensor),
}

impl QuantWeight {
    /// The scheme's name: `dense`, `hqq`, `gptq`, `awq`, `fp8`, `int8` or `int4`.
    pub fn scheme(&self) -> &'static str {
        match self {
            QuantWeight::Dense { .. } => "dense",
            QuantWeight::Hqq(_) => "hqq",
            QuantWeight::Gptq(_) => "gptq",
            QuantWeight::Awq(_) => "awq",
            QuantWeight::Fp8(_) => "fp8",
            QuantWeight::Int8(_) => "int8",
            QuantWeight::Int4(_) => "int4",
        }
    }
}

/// A weight as [`QuantLinear`] keeps it: validated, with what the kernel needs precomputed.
#[derive(Debug, Clone, PartialEq)]
enum Stored {
    Dense {
        rows: usize,
        cols: usize,
        w: FloatVec,
    },
    /// Scales and zeros in one dtype.
    Hqq(HqqWeight),
    /// GPTQ, or AWQ converted to GPTQ (`awq`): `layer.qweight` is moved into `blocked`
    /// ([`crate::gptq::tile::block_words`]); the group of each input and the true zero points.
    /// Act-order (`perm`): `blocked` and `groups` hold the rows sorted by group
    /// ([`crate::gptq::sort`]), row `k'` being the layer's row `perm[k']`, and the inputs are
    /// gathered the same way; `layer.g_idx` stays the checkpoint's.
    Gptq {
        layer: GptqLayer,
        blocked: Vec<i32>,
        groups: Vec<u32>,
        zeros: Vec<f32>,
        scales: Vec<f32>,
        awq: bool,
        perm: Option<Vec<u32>>,
    },
    /// FP8 with its scale grid widened to `f32`.
    Fp8 {
        layer: Fp8Layer,
        scales: Vec<f32>,
    },
    Int8(Int8Tensor),
    Int4(Int4Tensor),
}

/// A linear layer `y = x · Wᵀ + bias` over a quantized weight, validated once.
///
/// ```
/// use quant_kernels::matmul::{QuantLinear, QuantWeight};
/// use quant_kernels::intx::{quantize_int8, Granularity};
/// use quant_kernels::Parallelism;
/// // W = [[127, -1], [3, 2]] in int8 per tensor: scale 1, so the codes are exact.
/// let w = quantize_int8(&[127.0, -1.0, 3.0, 2.0], 2, 2, Granularity::PerTensor)?;
/// let layer = QuantLinear::new(QuantWeight::Int8(w), Some(vec![0.5f32, 0.0].into()))?;
/// let y: Vec<f32> = layer.forward(&[1.0f32, 2.0], 1, Parallelism::Serial)?;
/// assert_eq!(y, [125.5, 7.0]); // [127 - 2 + 0.5, 3 + 4]
/// # Ok::<(), quant_kernels::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct QuantLinear {
    stored: Stored,
    bias: Option<Vec<f32>>,
    out: usize,
    inp: usize,
}

impl QuantLinear {
    /// Validate `weight` (every length, group index and shape) and `bias` (`out` values), and
    /// prepare it for the kernel: GPTQ and AWQ words are re-laid block by block (same size; the
    /// original is rebuilt by [`QuantLinear::into_weight`]), AWQ is converted to GPTQ
    /// losslessly, HQQ scales and zeros of different dtypes are both widened to `f32`.
    pub fn new(weight: QuantWeight, bias: Option<FloatVec>) -> Result<Self> {
        let (out, inp, stored) = match weight {
            QuantWeight::Dense { rows, cols, w } => {
                let n = rows.checked_mul(cols).ok_or(Error::ShapeOverflow { rows, cols })?;
                expect_len("weight", n, w.len())?;
                (rows, cols, Stored::Dense { rows, cols, w })
            }
            QuantWeight::Hqq(mut h) => {
                h.validate()?;
                let l = h.layout;
                if h.scales.dtype() != h.zeros.dtype() {
                    h.scales = FloatVec::F32(h.scales.to_f32());
                    h.zeros = FloatVec::F32(h.zeros.to_f32());
                }
                (l.rows(), l.cols(), Stored::Hqq(h))
            }
            QuantWeight::Gptq(g) => Self::gptq(g, false)?,
            QuantWeight::Awq(a) => {
                let t = crate::awq::awq_to_gptq(&a.qweight, &a.qzeros, &a.layout)?;
                let layer = GptqLayer {
                    layout: t.layout,
                    format: ZeroFormat::V2,
                    qweight: t.qweight,
                    qzeros: t.qzeros,
                    scales: a.scales,
                    g_idx: None,
                    bias: None,
                };
                Self::gptq(layer, true)?
            }
            QuantWeight::Fp8(f) => {
                if f.experts != 1 {
                    return Err(Error::StackedExperts { experts: f.experts });
                }
                let l = f.layout;
                let scales = f.scales.to_f32();
                crate::fp8::check(&l, f.codes.len(), &scales, l.rows() * l.cols())?;
                (l.rows(), l.cols(), Stored::Fp8 { layer: f, scales })
            }
            QuantWeight::Int8(t) => {
                t.check(t.q.len())?;
                (t.rows, t.cols, Stored::Int8(t))
            }
            QuantWeight::Int4(t) => {
                t.check(t.rows.saturating_mul(t.cols))?;
                (t.rows, t.cols, Stored::Int4(t))
            }
        };
        let bias = match bias {
            Some(b) => {
                expect_len("bias", out, b.len())?;
                Some(b.to_f32())
            }
            None => None,
        };
        Ok(Self { stored, bias, out, inp })
    }

    fn gptq(mut layer: GptqLayer, awq: bool) -> Result<(usize, usize, Stored)> {
        let l = layer.layout;
        let c = crate::with_float_vec!(&layer.scales, s => crate::gptq::check(
            &l, &layer.qweight, &layer.qzeros, s, layer.g_idx.as_deref(), layer.format, l.k() * l.n()
        ))?;
        // Act-order: sort the rows by group, so that the kernels decode a group once per run of
        // its rows instead of nearly once per row.
        // (`check` validated the words' length and every group; without g_idx the groups are
        // k / group_size, already in order.)
        let (words, groups, perm) = if c.rows_group.windows(2).all(|w| w[0] <= w[1]) {
            (std::mem::take(&mut layer.qweight), c.rows_group, None)
        } else {
            let perm = crate::gptq::sort::order_by_group(&c.rows_group, l.groups());
            let words = crate::gptq::sort::repack_rows(&std::mem::take(&mut layer.qweight), &perm, &l);
            let groups = perm.iter().map(|&p| c.rows_group[p as usize]).collect();
            (words, groups, Some(perm))
        };
        let blocked = crate::gptq::tile::block_words(&words, &l);
        let (zeros, scales) =
            crate::with_float_vec!(&layer.scales, s => crate::gptq::tile::block_params(&c.zeros, s, &l));
        Ok((l.n(), l.k(), Stored::Gptq { layer, blocked, groups, zeros, scales, awq, perm }))
    }

    /// A GPTQ layer with its own bias.
    pub fn from_gptq(mut layer: GptqLayer) -> Result<Self> {
        let bias = layer.bias.take();
        Self::new(QuantWeight::Gptq(layer), bias)
    }

    /// An AWQ layer with its own bias.
    pub fn from_awq(mut layer: AwqLayer) -> Result<Self> {
        let bias = layer.bias.take();
        Self::new(QuantWeight::Awq(layer), bias)
    }

    /// An FP8 layer with its own bias.
    pub fn from_fp8(mut layer: Fp8Layer) -> Result<Self> {
        let bias = layer.bias.take();
        Self::new(QuantWeight::Fp8(layer), bias)
    }

    /// The weight back in its own scheme's layout (GPTQ/AWQ words un-blocked, AWQ converted
    /// back: bit for bit what was passed in, except HQQ parameters widened by [`QuantLinear::new`]).
    pub fn into_weight(self) -> QuantWeight {
        match self.stored {
            Stored::Dense { rows, cols, w } => QuantWeight::Dense { rows, cols, w },
            Stored::Hqq(h) => QuantWeight::Hqq(h),
            Stored::Gptq { layer, blocked, awq, perm, .. } => {
                gptq_original(layer, &blocked, awq, perm.as_deref())
            }
            Stored::Fp8 { layer, .. } => QuantWeight::Fp8(layer),
            Stored::Int8(t) => QuantWeight::Int8(t),
            Stored::Int4(t) => QuantWeight::Int4(t),
        }
    }

    /// Outputs (`W`'s rows).
    pub fn out_features(&self) -> usize {
        self.out
    }

    /// Inputs (`W`'s columns).
    pub fn in_features(&self) -> usize {
        self.inp
    }

    /// The scheme's name, as [`QuantWeight::scheme`] of the weight passed in.
    pub fn scheme(&self) -> &'static str {
        match &self.stored {
            Stored::Dense { .. } => "dense",
            Stored::Hqq(_) => "hqq",
            Stored::Gptq { awq: false, .. } => "gptq",
            Stored::Gptq { awq: true, .. } => "awq",
            Stored::Fp8 { .. } => "fp8",
            Stored::Int8(_) => "int8",
            Stored::Int4(_) => "int4",
        }
    }

    /// The bias, widened to `f32`.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// Bytes of the weight as its scheme stores it (codes, scales, zeros, `g_idx`): what one
    /// multiply reads.
    pub fn weight_bytes(&self) -> usize {
        let fv = |v: &FloatVec| v.len() * v.dtype().size();
        match &self.stored {
            Stored::Dense { w, .. } => fv(w),
            Stored::Hqq(h) => {
                let words = match &h.packed.words {
                    PackedWords::U8(w) => w.len(),
                    PackedWords::I32(w) => 4 * w.len(),
                };
                words + fv(&h.scales) + fv(&h.zeros)
            }
            Stored::Gptq { layer: g, .. } => {
                let (wr, n) = g.layout.qweight_shape();
                4 * (wr * n + g.qzeros.len() + g.g_idx.as_ref().map_or(0, Vec::len)) + fv(&g.scales)
            }
            Stored::Fp8 { layer, .. } => layer.codes.len() + fv(&layer.scales),
            Stored::Int8(t) => t.q.len() + 4 * t.scales.len(),
            Stored::Int4(t) => t.packed.len() + 4 * t.scales.len() + t.zeros.len(),
        }
    }

    /// `y = x · Wᵀ + bias` for `x: [batch, in]` into `y: [batch, out]` (see the module docs).
    pub fn forward_into<X: Elem, Y: Elem>(
        &self,
        x: &[X],
        batch: usize,
        y: &mut [Y],
        par: Parallelism,
    ) -> Result<()> {
        let (out, inp) = (self.out, self.inp);
        let nx = batch.checked_mul(inp).ok_or(Error::ShapeOverflow { rows: batch, cols: inp })?;
        let ny = batch.checked_mul(out).ok_or(Error::ShapeOverflow { rows: batch, cols: out })?;
        expect_len("x", nx, x.len())?;
        expect_len("y", ny, y.len())?;
        let kp = kernel::padded(inp);
        let mut xp = vec![0f32; batch * kp];
        if inp > 0 {
            let perm = match &self.stored {
                Stored::Gptq { perm: Some(p), .. } => Some(p),
                _ => None,
            };
            let mut row = vec![0f32; if perm.is_some() { inp } else { 0 }];
            for (dst, src) in xp.chunks_exact_mut(kp).zip(x.chunks_exact(inp)) {
                match perm {
                    // Inputs in the sorted rows' order.
                    Some(p) => {
                        X::slice_to_f32(src, &mut row);
                        for (d, &k) in dst.iter_mut().zip(p) {
                            *d = row[k as usize];
                        }
                    }
                    None => X::slice_to_f32(src, &mut dst[..inp]),
                }
            }
        }
        let mut acc = self.products(&xp, batch, par);
        if let Some(b) = &self.bias {
            for row in acc.chunks_exact_mut(out.max(1)) {
                for (v, &b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
        Y::slice_from_f32(&acc, y);
        Ok(())
    }

    /// The allocating form of [`QuantLinear::forward_into`].
    pub fn forward<X: Elem, Y: Elem>(&self, x: &[X], batch: usize, par: Parallelism) -> Result<Vec<Y>> {
        let n = batch.checked_mul(self.out).ok_or(Error::ShapeOverflow { rows: batch, cols: self.out })?;
        let mut y = vec![Y::default(); n];
        self.forward_into(x, batch, &mut y, par)?;
        Ok(y)
    }

    /// `[batch, out]` products (no bias) of padded activations.
    fn products(&self, x: &[f32], batch: usize, par: Parallelism) -> Vec<f32> {
        let (out, k) = (self.out, self.inp);
        match &self.stored {
            Stored::Dense { w, .. } => {
                crate::with_float_vec!(w, w => kernel::gemm(&Rows16(&Dense { w, rows: out, cols: k }), out, k, x, batch, par))
            }
            Stored::Hqq(h) => match (&h.scales, &h.zeros) {
                (FloatVec::F32(s), FloatVec::F32(z)) => hqq_gemm(h, s, z, x, batch, par),
                (FloatVec::F16(s), FloatVec::F16(z)) => hqq_gemm(h, s, z, x, batch, par),
                (FloatVec::Bf16(s), FloatVec::Bf16(z)) => hqq_gemm(h, s, z, x, batch, par),
                _ => unreachable!("QuantLinear::new makes the dtypes equal"),
            },
            Stored::Gptq { layer: g, blocked, groups, zeros, scales, .. } => {
                let d = crate::gptq::tile::Tiles { layout: &g.layout, blocked, zeros, scales, groups };
                kernel::gemm(&d, out, k, x, batch, par)
            }
            Stored::Fp8 { layer: f, scales } => {
                use crate::fp8::tile::Tiles;
                let (codes, layout) = (&f.codes[..], &f.layout);
                match f.format {
                    Fp8Format::E4M3 => kernel::gemm(
                        &Rows16(&Tiles::<3, 7, true> { codes, scales, layout }),
                        out,
                        k,
                        x,
                        batch,
                        par,
                    ),
                    Fp8Format::E5M2 => kernel::gemm(
                        &Rows16(&Tiles::<2, 15, false> { codes, scales, layout }),
                        out,
                        k,
                        x,
                        batch,
                        par,
                    ),
                }
            }
            Stored::Int8(t) => kernel::gemm(&Rows16(&crate::intx::tile::Int8Tiles(t)), out, k, x, batch, par),
            Stored::Int4(t) => kernel::gemm(&Rows16(&crate::intx::tile::Int4Tiles(t)), out, k, x, batch, par),
        }
    }

    /// The weight `[out, in]` in `f32`, through each scheme's fast dequantizer.
    pub fn dequantize(&self, par: Parallelism) -> Result<Vec<f32>> {
        self.dequantize_with(par, false)
    }

    fn dequantize_with(&self, par: Parallelism, reference: bool) -> Result<Vec<f32>> {
        let (out, inp) = (self.out, self.inp);
        let mut w = vec![0f32; out * inp];
        match &self.stored {
            Stored::Dense { w: d, .. } => w = d.to_f32(),
            Stored::Hqq(h) => match (&h.scales, &h.zeros) {
                (FloatVec::F32(s), FloatVec::F32(z)) => hqq_dequant(h, s, z, reference, &mut w, par),
                (FloatVec::F16(s), FloatVec::F16(z)) => hqq_dequant(h, s, z, reference, &mut w, par),
                (FloatVec::Bf16(s), FloatVec::Bf16(z)) => hqq_dequant(h, s, z, reference, &mut w, par),
                _ => unreachable!("QuantLinear::new makes the dtypes equal"),
            }?,
            Stored::Gptq { layer, blocked, awq, perm, .. } => {
                // `[K, N]` from the scheme's own tensors (AWQ's oracle reads AWQ's layout);
                // `layer.qweight` is empty (moved into `blocked`), so this clone is small.
                let mut kn = vec![0f32; out * inp];
                match gptq_original(layer.clone(), blocked, *awq, perm.as_deref()) {
                    QuantWeight::Gptq(g) => {
                        let (l, gi) = (&g.layout, g.g_idx.as_deref());
                        crate::with_float_vec!(&g.scales, s => if reference {
                            crate::gptq::gptq_dequantize_reference_into(&g.qweight, &g.qzeros, s, gi, l, g.format, &mut kn)
                        } else {
                            crate::gptq::gptq_dequantize_into(&g.qweight, &g.qzeros, s, gi, l, g.format, &mut kn, par)
                        })?
                    }
                    QuantWeight::Awq(a) => crate::with_float_vec!(&a.scales, s => if reference {
                        crate::awq::awq_dequantize_reference_into(&a.qweight, &a.qzeros, s, &a.layout, &mut kn)
                    } else {
                        crate::awq::awq_dequantize_into(&a.qweight, &a.qzeros, s, &a.layout, &mut kn, par)
                    })?,
                    _ => unreachable!("a GPTQ-stored weight is GPTQ or AWQ"),
                }
                w = crate::par::transpose(&kn, inp, out, par);
            }
            Stored::Fp8 { layer: f, .. } => crate::with_float_vec!(&f.scales, s => if reference {
                crate::fp8::fp8_dequantize_reference_into(&f.codes, f.format, s, &f.layout, &mut w)
            } else {
                crate::fp8::fp8_dequantize_into(&f.codes, f.format, s, &f.layout, &mut w, par)
            })?,
            Stored::Int8(t) => {
                if reference { t.dequantize_reference_into(&mut w) } else { t.dequantize_into(&mut w, par) }?
            }
            Stored::Int4(t) => {
                if reference { t.dequantize_reference_into(&mut w) } else { t.dequantize_into(&mut w, par) }?
            }
        }
        Ok(w)
    }

    /// The oracle: the weight from the scheme's naive reference dequantizer, then
    /// `y[b, o] = sum_k x[b, k] * W[o, k] + bias[o]` as a plain triple loop in `f64`.
    pub fn forward_reference(&self, x: &[f32], batch: usize) -> Result<Vec<f64>> {
        self.reference_sums(x, batch, false)
    }

    /// For each output, `sum_k |x[b, k] W[o, k]| + |bias[o]|` in `f64` (reference weight): the
    /// scale the kernel's rounding error is measured against.
    pub fn magnitude_reference(&self, x: &[f32], batch: usize) -> Result<Vec<f64>> {
        self.reference_sums(x, batch, true)
    }

    fn reference_sums(&self, x: &[f32], batch: usize, abs: bool) -> Result<Vec<f64>> {
        let (out, inp) = (self.out, self.inp);
        expect_len("x", batch.saturating_mul(inp), x.len())?;
        let w = self.dequantize_with(Parallelism::Serial, true)?;
        let f = |v: f64| if abs { v.abs() } else { v };
        let mut y = vec![0f64; batch * out];
        for b in 0..batch {
            for o in 0..out {
                let mut s = 0f64;
                for k in 0..inp {
                    s += f(x[b * inp + k] as f64 * w[o * inp + k] as f64);
                }
                y[b * out + o] = s + self.bias.as_ref().map_or(0.0, |v| f(v[o] as f64));
            }
        }
        Ok(y)
    }
}

/// A GPTQ-stored weight in its own layout again: words un-blocked (and act-order rows put back
/// in place), AWQ converted back.
fn gptq_original(mut layer: GptqLayer, blocked: &[i32], awq: bool, perm: Option<&[u32]>) -> QuantWeight {
    layer.qweight = crate::gptq::tile::unblock_words(blocked, &layer.layout);
    if let Some(perm) = perm {
        // `perm` is the permutation `gptq` built for this layout.
        let back = crate::gptq::sort::inverse(perm);
        layer.qweight = crate::gptq::sort::repack_rows(&layer.qweight, &back, &layer.layout);
    }
    if !awq {
        return QuantWeight::Gptq(layer);
    }
    match crate::awq::gptq_to_awq(&layer.qweight, &layer.qzeros, &layer.layout, layer.format) {
        Ok((qweight, qzeros, layout)) => {
            QuantWeight::Awq(AwqLayer { layout, qweight, qzeros, scales: layer.scales, bias: None })
        }
        // Unreachable: the layer came from a validated AWQ layer.
        Err(_) => QuantWeight::Gptq(layer),
    }
}

fn hqq_dequant<S: Elem>(
    h: &HqqWeight,
    s: &[S],
    z: &[S],
    reference: bool,
    out: &mut [f32],
    par: Parallelism,
) -> Result<()> {
    use crate::hqq::{dequant_into, dequant_reference_into};
    let l = &h.layout;
    macro_rules! run {
        ($p:ty, $w:expr) => {
            if reference {
                dequant_reference_into::<$p, S, f32>($w, s, z, l, out)
            } else {
                dequant_into::<$p, S, f32>($w, s, z, l, out, par)
            }
        };
    }
    match (&h.packed.words, h.packed.bits) {
        (PackedWords::U8(w), Bits::B8) => run!(B8, w),
        (PackedWords::U8(w), Bits::B4) => run!(B4, w),
        (PackedWords::U8(w), Bits::B2) => run!(B2, w),
        (PackedWords::U8(w), Bits::B1) => run!(B1, w),
        (PackedWords::I32(w), Bits::B3) => run!(B3, w),
        (_, bits) => Err(Error::UnsupportedBits(bits.get())),
    }
}

fn hqq_gemm<S: Elem>(
    h: &HqqWeight,
    scales: &[S],
    zeros: &[S],
    x: &[f32],
    batch: usize,
    par: Parallelism,
) -> Vec<f32> {
    let l = &h.layout;
    fn run<P: Packing, S: Elem>(
        words: &[P::Word],
        scales: &[S],
        zeros: &[S],
        l: &HqqLayout,
        x: &[f32],
        batch: usize,
        par: Parallelism,
    ) -> Vec<f32> {
        let (r, c) = l.code_shape();
        let prows = P::packed_rows(r).unwrap_or(0);
        let d = crate::hqq::tile::Tiles::<P, S> {
            words,
            scales,
            zeros,
            out: l.rows(),
            inp: l.cols(),
            c,
            prows,
            axis: l.axis(),
        };
        kernel::gemm(&d, l.rows(), l.cols(), x, batch, par)
    }
    match (&h.packed.words, h.packed.bits) {
        (PackedWords::U8(w), Bits::B8) => run::<B8, S>(w, scales, zeros, l, x, batch, par),
        (PackedWords::U8(w), Bits::B4) => run::<B4, S>(w, scales, zeros, l, x, batch, par),
        (PackedWords::U8(w), Bits::B2) => run::<B2, S>(w, scales, zeros, l, x, batch, par),
        (PackedWords::U8(w), Bits::B1) => run::<B1, S>(w, scales, zeros, l, x, batch, par),
        (PackedWords::I32(w), Bits::B3) => run::<B3, S>(w, scales, zeros, l, x, batch, par),
        _ => unreachable!("QuantLinear::new checked the width"),
    }
}

/// A dense `[rows, cols]` weight: the tile is a copy of the rows, widened to `f32`.
struct Dense<'a, T> {
    w: &'a [T],
    rows: usize,
    cols: usize,
}

impl<T: Elem> kernel::RowDecoder for Dense<'_, T> {
    fn rows(&self) -> usize {
        self.rows
    }

    #[inline(always)]
    fn decode_row(&self, r: usize, k0: usize, k1: usize, dst: &mut [f32]) {
        T::slice_to_f32(&self.w[r * self.cols + k0..r * self.cols + k1], dst);
    }
}
