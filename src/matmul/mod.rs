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
//! ([`crate::Isa::detect`]), fused multiply-add with AVX2/AVX-512; rayon over blocks of output
//! rows, never a cross-thread sum.
//!
//! Every output is summed in a fixed order that depends only on the weight's shape and scheme
//! (not on the batch size, the row's place in the batch, the thread count or timing). The
//! oracle [`QuantLinear::forward_reference`] dequantizes with each scheme's naive reference and
//! sums in `f64`; the tests hold the kernel to `|y - y_ref| <= 1e-5 * (sum_k |x[b,k] W[o,k]| +
//! |bias[o]|)` for K up to 16384.

pub(crate) mod kernel;
pub mod q8;
mod q8_columns;
mod q8_vnni;

use crate::awq::AwqLayer;
use crate::dense::DenseWeight;
use crate::elem::{Elem, FloatVec};
use crate::error::{Error, KernelError, Result, expect_len};
use crate::fp8::Fp8Layer;
use crate::gptq::GptqLayer;
use crate::hqq::HqqWeight;
use crate::intx::{Int4Tensor, Int8Tensor};
use crate::layer::QuantWeight;
use crate::par::Parallelism;
use crate::scheme::QuantScheme;
use kernel::Multiply;

/// A weight as [`QuantLinear`] keeps it: each scheme's [`Multiply::Prepared`] form.
#[derive(Debug, Clone, PartialEq)]
enum Stored {
    Dense(<DenseWeight as Multiply>::Prepared),
    Hqq(<HqqWeight as Multiply>::Prepared),
    Gptq(<GptqLayer as Multiply>::Prepared),
    Awq(<AwqLayer as Multiply>::Prepared),
    Fp8(<Fp8Layer as Multiply>::Prepared),
    Int8(<Int8Tensor as Multiply>::Prepared),
    Int4(<Int4Tensor as Multiply>::Prepared),
}

/// Buffers one multiply needs (padded inputs, sums, the kernel's tiles and accumulators), kept
/// between calls: grown to the largest shape seen, never shrunk. One per thread; any layer.
#[derive(Debug, Default)]
pub struct Workspace {
    x: Vec<f32>,
    row: Vec<f32>,
    y: Vec<f32>,
    kernel: kernel::Scratch,
    q8: q8::Q8Activations,
    q8_out: Vec<f32>,
    q8_columns: Vec<q8_columns::ColumnScratch>,
}

/// How a [`QuantLinear`] treats the activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activations {
    /// Kept in `f32`: every weight is decoded to `f32` and multiplied with `f32` fused
    /// multiply-adds, within `1e-5` of the `f64` oracle (see the module docs). The default,
    /// because it adds no error of its own: a layer gives what its scheme's weights give.
    #[default]
    F32,
    /// Quantized to `int8` per block of 32 on every call ([`q8`]), multiplied by the weight's
    /// codes with integer dot products (AVX-512 VNNI or AVX-VNNI where the CPU has it): about
    /// twice as fast at batch 1 and several times faster for prompts, with an error of at most
    /// [`QuantLinear::int8_error_bound`] on top of `f32` rounding. For weights with integer codes
    /// and a scale and zero point per group of a multiple of 32 inputs: GPTQ and AWQ of every
    /// width (act-order included), HQQ of every width on axis 1 and, when the rows are a
    /// multiple of the group size, on axis 0 ([`q8::ColumnWeight`]), int4, and int8 (rows of a
    /// multiple of 32 inputs). FP8 and dense weights stay on the `f32` path.
    Int8,
}

thread_local! {
    /// The workspace [`QuantLinear::forward_into`] reuses: one per calling thread, shared by
    /// every layer, so its memory is one largest call's, not one per layer (a model's prompt
    /// otherwise first-touches every layer's own buffers: most of its time on a VM).
    static WORKSPACE: std::cell::RefCell<Workspace> = std::cell::RefCell::new(Workspace::default());
}

/// `$body` with `$p` bound to the prepared weight and `$t` naming its scheme's type.
macro_rules! stored {
    ($stored:expr, $p:ident, $t:ident => $body:expr) => {
        match $stored {
            Stored::Dense($p) => {
                type $t = DenseWeight;
                $body
            }
            Stored::Hqq($p) => {
                type $t = HqqWeight;
                $body
            }
            Stored::Gptq($p) => {
                type $t = GptqLayer;
                $body
            }
            Stored::Awq($p) => {
                type $t = AwqLayer;
                $body
            }
            Stored::Fp8($p) => {
                type $t = Fp8Layer;
                $body
            }
            Stored::Int8($p) => {
                type $t = Int8Tensor;
                $body
            }
            Stored::Int4($p) => {
                type $t = Int4Tensor;
                $body
            }
        }
    };
}

/// A linear layer `y = x · Wᵀ + bias` over a quantized weight, validated once.
///
/// ```
/// use quant_kernels::{QuantLinear, QuantWeight};
/// use quant_kernels::intx::{quantize_int8, Granularity};
/// use quant_kernels::Parallelism;
/// // W = [[127, -1], [3, 2]] in int8 per tensor: scale 1, so the codes are exact.
/// let w = quantize_int8(&[127.0, -1.0, 3.0, 2.0], 2, 2, Granularity::PerTensor, Parallelism::SERIAL)?;
/// let layer = QuantLinear::new(QuantWeight::Int8(w), Some(vec![0.5f32, 0.0].into()))?;
/// let y: Vec<f32> = layer.forward(&[1.0f32, 2.0], 1, Parallelism::SERIAL)?;
/// assert_eq!(y, [125.5, 7.0]); // [127 - 2 + 0.5, 3 + 4]
/// # Ok::<(), quant_kernels::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct QuantLinear {
    /// The weight in its scheme's (prepared) form; `None` once
    /// [`QuantLinear::drop_scheme_weight`] has dropped it.
    stored: Option<Stored>,
    /// The scheme's name, kept when the weight is dropped.
    scheme: &'static str,
    /// The input order of a dropped act-order weight (while it is stored, it holds its own).
    dropped_order: Option<Vec<u32>>,
    /// The weight re-laid for [`Activations::Int8`], when chosen.
    int8: Option<q8::Int8Weight>,
    bias: Option<Vec<f32>>,
    out: usize,
    inp: usize,
}

impl QuantLinear {
    /// Validate `weight` (every length, group index and shape) and `bias` (`out` values), and
    /// prepare it for the kernel (each scheme's `tile.rs`): GPTQ and AWQ
    /// words are re-laid block by block (same size; the original is rebuilt by
    /// [`QuantLinear::into_weight`]), AWQ is converted to GPTQ losslessly, HQQ scales and zeros
    /// of different dtypes are both widened to `f32`.
    pub fn new(weight: QuantWeight, bias: Option<FloatVec>) -> Result<Self> {
        let (out, inp) = weight.shape();
        let stored = match weight {
            QuantWeight::Dense(w) => Stored::Dense(w.prepare()?),
            QuantWeight::Hqq(w) => Stored::Hqq(w.prepare()?),
            QuantWeight::Gptq(w) => Stored::Gptq(w.prepare()?),
            QuantWeight::Awq(w) => Stored::Awq(w.prepare()?),
            QuantWeight::Fp8(w) => Stored::Fp8(w.prepare()?),
            QuantWeight::Int8(w) => Stored::Int8(w.prepare()?),
            QuantWeight::Int4(w) => Stored::Int4(w.prepare()?),
        };
        let bias = match bias {
            Some(b) => {
                expect_len("bias", out, b.len())?;
                Some(b.to_f32())
            }
            None => None,
        };
        let scheme = stored!(&stored, _p, T => T::NAME);
        Ok(Self { stored: Some(stored), scheme, dropped_order: None, int8: None, bias, out, inp })
    }

    /// The scheme's own weight, or [`KernelError::SchemeWeightDropped`] naming what needs it.
    fn stored(&self, needs: &'static str) -> Result<&Stored> {
        self.stored
            .as_ref()
            .ok_or(Error::Kernel(KernelError::SchemeWeightDropped { scheme: self.scheme, needs }))
    }

    /// The order the multiply reads the inputs in (act-order GPTQ's sorted rows), if not plain.
    fn input_order(&self) -> Option<&[u32]> {
        match &self.stored {
            Some(s) => stored!(s, p, T => T::input_order(p)),
            None => self.dropped_order.as_deref(),
        }
    }

    /// The layer multiplying with `activations`. [`Activations::Int8`] re-lays the weight's
    /// codes once ([`q8::IntWeight`], about the packed size again: the scheme's own form is kept
    /// for the `f32` path, [`QuantLinear::into_weight`], the dequantizers and the oracle until
    /// [`QuantLinear::drop_scheme_weight`] frees it); a weight that path does not take is a
    /// typed error ([`KernelError::Int8Activations`]).
    ///
    /// ```
    /// use quant_kernels::intx::quantize_int4;
    /// use quant_kernels::matmul::Activations;
    /// use quant_kernels::{Parallelism, QuantLinear, QuantWeight};
    /// let w: Vec<f32> = (0..64).map(|i| (i % 16) as f32).collect(); // exact codes 0..15
    /// let q = quantize_int4(&w, 1, 64, 32, Parallelism::SERIAL)?;
    /// let layer = QuantLinear::new(QuantWeight::Int4(q), None)?.with_activations(Activations::Int8)?;
    /// let y: Vec<f32> = layer.forward(&[1.0f32; 64], 1, Parallelism::SERIAL)?;
    /// assert_eq!(y, [480.0]); // 4 * (0 + 1 + ... + 15); ones quantize exactly
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn with_activations(mut self, activations: Activations) -> Result<Self> {
        self.set_activations(activations)?;
        Ok(self)
    }

    /// [`QuantLinear::with_activations`] in place: on a refusal the layer is unchanged.
    pub fn set_activations(&mut self, activations: Activations) -> Result<()> {
        if activations == self.activations() {
            return Ok(());
        }
        self.int8 = match activations {
            Activations::F32 => {
                self.stored("the f32 path")?;
                None
            }
            Activations::Int8 => Some(stored!(self.stored("the int8 layout")?, p, T => T::int8_weight(p))?),
        };
        Ok(())
    }

    /// Keep only the [`Activations::Int8`] layout and free the scheme's own copy of the weight:
    /// the layer then holds [`QuantLinear::weight_bytes`] once instead of about twice. Afterwards
    /// everything that needs the scheme's form is [`KernelError::SchemeWeightDropped`]: the
    /// `f32` path, [`QuantLinear::into_weight`], [`QuantLinear::dequantize`] and the oracle
    /// ([`QuantLinear::forward_reference`]); the int8 path gives the same bits as before. A layer
    /// on the `f32` path is refused ([`KernelError::DropOnF32Path`]) and unchanged.
    ///
    /// ```
    /// use quant_kernels::intx::quantize_int4;
    /// use quant_kernels::matmul::Activations;
    /// use quant_kernels::{Parallelism, QuantLinear, QuantWeight};
    /// let w: Vec<f32> = (0..64).map(|i| (i % 16) as f32).collect();
    /// let q = quantize_int4(&w, 1, 64, 32, Parallelism::SERIAL)?;
    /// let mut layer = QuantLinear::new(QuantWeight::Int4(q), None)?.with_activations(Activations::Int8)?;
    /// layer.drop_scheme_weight()?;
    /// let y: Vec<f32> = layer.forward(&[1.0f32; 64], 1, Parallelism::SERIAL)?;
    /// assert_eq!(y, [480.0]);
    /// assert!(layer.set_activations(Activations::F32).is_err());
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn drop_scheme_weight(&mut self) -> Result<()> {
        if self.int8.is_none() {
            return Err(Error::Kernel(KernelError::DropOnF32Path { scheme: self.scheme }));
        }
        if self.stored.is_some() {
            self.dropped_order = self.input_order().map(<[u32]>::to_vec);
            self.stored = None;
        }
        Ok(())
    }

    /// Whether the scheme's own weight is still held ([`QuantLinear::drop_scheme_weight`]).
    pub fn has_scheme_weight(&self) -> bool {
        self.stored.is_some()
    }

    /// How this layer treats the activations.
    pub fn activations(&self) -> Activations {
        if self.int8.is_some() { Activations::Int8 } else { Activations::F32 }
    }

    /// For [`Activations::Int8`]: per output, the bound on how far quantizing `x` (`[batch,
    /// in]`) moves it from the product with `f32` activations ([`q8::error_bound`]:
    /// `sum_blocks (d / 2) * sum_k |W[o, k]|`; for HQQ's axis 0 [`q8::ColumnWeight::error_bound`],
    /// `f32` rounding included); `None` on the `f32` path.
    pub fn int8_error_bound(&self, x: &[f32], batch: usize) -> Result<Option<Vec<f64>>> {
        let Some(w) = &self.int8 else { return Ok(None) };
        let mut ws = Workspace::default();
        self.gather_inputs(x, batch, &mut ws)?;
        if let q8::Int8Weight::Rows(_) = w {
            q8::quantize_activations_into(&ws.x, batch, self.inp, &mut ws.q8, Parallelism::RAYON)?;
        }
        let mut bound = Vec::with_capacity(batch * self.out);
        for t in 0..batch {
            for o in 0..self.out {
                bound.push(match w {
                    q8::Int8Weight::Rows(w) => q8::error_bound(w, &ws.q8, t, o)?,
                    q8::Int8Weight::Columns(w) => w.error_bound(&ws.x[..batch * self.inp], t, o)?,
                });
            }
        }
        Ok(Some(bound))
    }

    /// `x` in `f32`, gathered in the weight's input order, into `ws.x`.
    fn gather_inputs<X: Elem>(&self, x: &[X], batch: usize, ws: &mut Workspace) -> Result<()> {
        let inp = self.inp;
        expect_len("x", batch.saturating_mul(inp), x.len())?;
        let perm = self.input_order();
        let xc = kernel::grown(&mut ws.x, batch * inp);
        match perm {
            Some(p) => {
                let row = kernel::grown(&mut ws.row, inp);
                for (dst, src) in xc.chunks_exact_mut(inp.max(1)).zip(x.chunks_exact(inp.max(1))) {
                    X::slice_to_f32(src, row);
                    for (d, &k) in dst.iter_mut().zip(p) {
                        *d = row[k as usize];
                    }
                }
            }
            None => X::slice_to_f32(x, xc),
        }
        Ok(())
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
    /// back: bit for bit what was passed in, except HQQ parameters widened by [`QuantLinear::new`]);
    /// [`KernelError::SchemeWeightDropped`] after [`QuantLinear::drop_scheme_weight`].
    pub fn into_weight(self) -> Result<QuantWeight> {
        let scheme = self.scheme;
        let stored = self
            .stored
            .ok_or(Error::Kernel(KernelError::SchemeWeightDropped { scheme, needs: "into_weight" }))?;
        Ok(stored!(stored, p, T => QuantWeight::from(T::restore(p))))
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
        self.scheme
    }

    /// The bias, widened to `f32`.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    /// Bytes of the weight as its scheme stores it (codes, scales, zeros, `g_idx`), or as
    /// [`Activations::Int8`] re-lays it: what one multiply reads.
    pub fn weight_bytes(&self) -> usize {
        match (&self.int8, &self.stored) {
            (Some(w), _) => w.stored_bytes(),
            (None, Some(s)) => stored!(s, p, T => T::prepared_bytes(p)),
            (None, None) => 0,
        }
    }

    /// `y = x · Wᵀ + bias` for `x: [batch, in]` into `y: [batch, out]` (see the module docs).
    ///
    /// Buffers come from a [`Workspace`] kept per calling thread and shared by every layer, so
    /// a thread allocates nothing per call once it has run its largest shape; a call nested in
    /// another on the same thread (rayon work stealing) gets a fresh one (or pass your own to
    /// [`QuantLinear::forward_with`]).
    pub fn forward_into<X: Elem, Y: Elem>(
        &self,
        x: &[X],
        batch: usize,
        y: &mut [Y],
        par: Parallelism,
    ) -> Result<()> {
        WORKSPACE.with(|ws| match ws.try_borrow_mut() {
            Ok(mut ws) => self.forward_with(x, batch, y, par, &mut ws),
            Err(_) => self.forward_with(x, batch, y, par, &mut Workspace::default()),
        })
    }

    /// [`QuantLinear::forward_into`] with the caller's [`Workspace`]: nothing is allocated once
    /// `ws` has held this shape (or a larger one) of any layer.
    ///
    /// ```
    /// use quant_kernels::intx::{quantize_int8, Granularity};
    /// use quant_kernels::matmul::Workspace;
    /// use quant_kernels::{Parallelism, QuantLinear, QuantWeight};
    /// let w = quantize_int8(&[127.0, -1.0, 3.0, 2.0], 2, 2, Granularity::PerTensor, Parallelism::SERIAL)?;
    /// let layer = QuantLinear::new(QuantWeight::Int8(w), None)?;
    /// let (mut ws, mut y) = (Workspace::default(), [0f32; 2]);
    /// layer.forward_with(&[1.0f32, 2.0], 1, &mut y, Parallelism::SERIAL, &mut ws)?;
    /// assert_eq!(y, [125.0, 7.0]);
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn forward_with<X: Elem, Y: Elem>(
        &self,
        x: &[X],
        batch: usize,
        y: &mut [Y],
        par: Parallelism,
        ws: &mut Workspace,
    ) -> Result<()> {
        let (out, inp) = (self.out, self.inp);
        let nx = batch
            .checked_mul(inp)
            .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: batch, cols: inp }))?;
        let ny = batch
            .checked_mul(out)
            .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: batch, cols: out }))?;
        expect_len("x", nx, x.len())?;
        expect_len("y", ny, y.len())?;
        if let Some(w) = &self.int8 {
            self.gather_inputs(x, batch, ws)?;
            let Workspace { x: xc, y: acc, q8: xq, q8_out, q8_columns, .. } = ws;
            let (xc, acc) = (&xc[..nx], kernel::grown(acc, ny));
            match w {
                q8::Int8Weight::Rows(w) => {
                    q8::quantize_activations_into(xc, batch, inp, xq, par)?;
                    q8::multiply_with(w, xq, acc, par, q8_out)?;
                }
                q8::Int8Weight::Columns(w) => {
                    q8_columns::multiply_columns_with(w, xc, batch, acc, par, q8_out, q8_columns)?
                }
            }
            self.add_bias(acc);
            Y::slice_from_f32(acc, y);
            return Ok(());
        }
        let stored = self.stored("the f32 path")?;
        let kp = kernel::padded(inp);
        let Workspace { x: xbuf, row, y: acc, kernel: scratch, .. } = ws;
        let xp = kernel::grown(xbuf, batch * kp);
        if inp > 0 {
            let perm = self.input_order();
            let row = kernel::grown(row, if perm.is_some() { inp } else { 0 });
            for (dst, src) in xp.chunks_exact_mut(kp).zip(x.chunks_exact(inp)) {
                match perm {
                    // Inputs in the sorted rows' order.
                    Some(p) => {
                        X::slice_to_f32(src, row);
                        for (d, &k) in dst.iter_mut().zip(p) {
                            *d = row[k as usize];
                        }
                    }
                    None => X::slice_to_f32(src, &mut dst[..inp]),
                }
                // The kernel reads whole lanes: zeros past the inputs (the buffer is reused).
                dst[inp..].fill(0.0);
            }
        } else {
            xp.fill(0.0);
        }
        let acc = kernel::grown(acc, ny);
        stored!(stored, p, T => T::products_into(p, xp, batch, par, acc, scratch));
        self.add_bias(acc);
        Y::slice_from_f32(acc, y);
        Ok(())
    }

    fn add_bias(&self, acc: &mut [f32]) {
        if let Some(b) = &self.bias {
            for row in acc.chunks_exact_mut(self.out.max(1)) {
                for (v, &b) in row.iter_mut().zip(b) {
                    *v += b;
                }
            }
        }
    }

    /// The allocating form of [`QuantLinear::forward_into`].
    pub fn forward<X: Elem, Y: Elem>(&self, x: &[X], batch: usize, par: Parallelism) -> Result<Vec<Y>> {
        let n = batch
            .checked_mul(self.out)
            .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: batch, cols: self.out }))?;
        let mut y = vec![Y::default(); n];
        self.forward_into(x, batch, &mut y, par)?;
        Ok(y)
    }

    /// The weight `[out, in]` in `f32`, through each scheme's fast dequantizer.
    pub fn dequantize(&self, par: Parallelism) -> Result<Vec<f32>> {
        self.dequantize_with(par, false)
    }

    /// The weight `[out, in]` from the scheme's own layout again (a copy), through its fast
    /// dequantizer or its naive reference.
    fn dequantize_with(&self, par: Parallelism, reference: bool) -> Result<Vec<f32>> {
        fn run<T: QuantScheme>(t: &T, reference: bool, w: &mut [f32], par: Parallelism) -> Result<()> {
            if reference { t.dequantize_reference_into(w) } else { t.dequantize_into(w, par) }
        }
        let stored = self.stored(if reference { "the oracle" } else { "dequantize" })?;
        let mut w = vec![0f32; self.out * self.inp];
        stored!(stored, p, T => run(&T::restore(p.clone()), reference, &mut w, par))?;
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
        let w = self.dequantize_with(Parallelism::SERIAL, true)?;
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

/// The read-bandwidth baseline the benches compare a batch-1 multiply with: the wrapping sum
/// of `words`, split over the pool as `par` allows, each task reading its chunk four streams at a
/// time ([`ReadOrder::FourStreams`]) with the widest vector loads and adds the CPU has. Which
/// order reads faster depends on the CPU: the benches and `qk bench` time both
/// ([`pure_read_in`]) and take the faster as the bound.
///
/// ```
/// use quant_kernels::{matmul::pure_read, Parallelism};
/// let words: Vec<u64> = (1..=1000).collect();
/// assert_eq!(pure_read(&words, Parallelism::RAYON), 500_500);
/// ```
pub fn pure_read(words: &[u64], par: Parallelism) -> u64 {
    pure_read_in(words, ReadOrder::FourStreams, par)
}

/// How each task of [`pure_read_in`] walks its chunk of words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOrder {
    /// Four streams, a quarter of the chunk each: the faster read on the Intel Xeons measured
    /// (a plain one-stream `u64` fold reached about 3/4 of it there).
    FourStreams,
    /// Front to back, four neighbouring vectors of sums in turn: 3-4x the four-stream read on
    /// an AMD EPYC (Zen 4, 2 threads), where 8 streams read at 9-10 GB/s and one a thread at 32.
    Sequential,
}

impl ReadOrder {
    /// Both orders, for a bench to time and keep the faster.
    pub const ALL: [ReadOrder; 2] = [ReadOrder::FourStreams, ReadOrder::Sequential];
}

/// [`pure_read`] with each task reading in `order`: the same sum.
///
/// ```
/// use quant_kernels::{matmul::{pure_read_in, ReadOrder}, Parallelism};
/// let words: Vec<u64> = (1..=1000).collect();
/// for order in ReadOrder::ALL {
///     assert_eq!(pure_read_in(&words, order, Parallelism::RAYON), 500_500);
/// }
/// ```
pub fn pure_read_in(words: &[u64], order: ReadOrder, par: Parallelism) -> u64 {
    let tasks = par.tasks(words.len() * 8);
    if tasks <= 1 {
        return crate::lanes::dispatch(par, Read(words, order));
    }
    use rayon::prelude::*;
    let chunk = words.len().div_ceil(tasks);
    words
        .par_chunks(chunk)
        .map(|c| crate::lanes::dispatch(par, Read(c, order)))
        .reduce(|| 0, u64::wrapping_add)
}

/// One task of [`pure_read_in`].
struct Read<'a>(&'a [u64], ReadOrder);

impl crate::lanes::Kernel for Read<'_> {
    type Output = u64;
    #[inline(always)]
    fn run(self, _simd: crate::lanes::Simd) -> u64 {
        // Four accumulators of W lanes either way: four streams a quarter of the words apart,
        // or four neighbouring vectors of one stream.
        const W: usize = 8;
        let mut acc = [[0u64; W]; 4];
        let add = |a: &mut [u64; W], v: &[u64]| {
            for (a, &v) in a.iter_mut().zip(v) {
                *a = a.wrapping_add(v);
            }
        };
        let done = match self.1 {
            ReadOrder::FourStreams => {
                let q = self.0.len() / (4 * W) * W;
                let s: [&[u64]; 4] = std::array::from_fn(|i| &self.0[i * q..(i + 1) * q]);
                for i in (0..q).step_by(W) {
                    for (a, s) in acc.iter_mut().zip(&s) {
                        add(a, &s[i..i + W]);
                    }
                }
                4 * q
            }
            ReadOrder::Sequential => {
                let q = self.0.len() / (4 * W) * (4 * W);
                for i in (0..q).step_by(4 * W) {
                    for (j, a) in acc.iter_mut().enumerate() {
                        add(a, &self.0[i + j * W..i + j * W + W]);
                    }
                }
                q
            }
        };
        let tail = self.0[done..].iter().fold(0u64, |a, &v| a.wrapping_add(v));
        acc.iter().flatten().fold(tail, |a, &v| a.wrapping_add(v))
    }
}
