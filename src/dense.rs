//! An unquantized weight: the "scheme" of layers kept in f32, f16 or bf16.

use crate::elem::{Elem, FloatVec};
use crate::error::{Result, expect_len};
use crate::matmul::kernel::{self, Multiply, RowDecoder, Rows16, Scratch};
use crate::method::QuantMethod;
use crate::par::Parallelism;
use crate::scheme::{QuantScheme, concat_floats, first, numel};
use crate::tp::Shard;

/// A dense row-major weight `[rows = out, cols = in]`.
///
/// ```
/// use quant_kernels::dense::DenseWeight;
/// use quant_kernels::{Parallelism, QuantScheme};
/// let w = DenseWeight { rows: 2, cols: 2, w: vec![1.0f32, 2.0, 3.0, 4.0].into() };
/// let both = DenseWeight::concat(&[&w, &w])?;
/// assert_eq!(both.shape(), (4, 2));
/// assert_eq!(both.dequantize::<f32>(Parallelism::SERIAL)?, [1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct DenseWeight {
    /// Outputs.
    pub rows: usize,
    /// Inputs.
    pub cols: usize,
    /// The values, `rows * cols` of them.
    pub w: FloatVec,
}

impl QuantScheme for DenseWeight {
    const NAME: &'static str = "dense";

    fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    fn validate(&self) -> Result<()> {
        expect_len("weight", numel(self.shape())?, self.w.len())
    }

    /// Not quantized: `None`.
    fn method(&self) -> Option<QuantMethod> {
        None
    }

    fn stored_bytes(&self) -> usize {
        self.w.len() * self.w.dtype().size()
    }

    fn dequantize_into<O: Elem>(&self, out: &mut [O], _par: Parallelism) -> Result<()> {
        self.validate()?;
        expect_len("out", self.w.len(), out.len())?;
        crate::with_float_vec!(&self.w, w => {
            for (o, v) in out.iter_mut().zip(w) {
                *o = O::from_f32(v.to_f32());
            }
        });
        Ok(())
    }

    fn dequantize_reference_into(&self, out: &mut [f32]) -> Result<()> {
        self.dequantize_into(out, Parallelism::SERIAL)
    }

    fn shard(&self, shard: &Shard) -> Result<Self> {
        let (w, rows, cols) = crate::with_float_vec!(&self.w, v => {
            let (s, r, c) = shard.apply(v, self.rows, self.cols)?;
            (FloatVec::from(s), r, c)
        });
        Ok(DenseWeight { rows, cols, w })
    }

    /// Rows one after another, in the parts' dtype (in `f32` when they differ).
    fn concat(parts: &[&Self]) -> Result<Self> {
        let cols = first(parts)?.cols;
        crate::scheme::agree(parts, "inputs", |d| d.cols)?;
        for p in parts {
            p.validate()?;
        }
        let w = if parts.iter().all(|p| p.w.dtype() == parts[0].w.dtype()) {
            concat_floats(parts.iter().map(|p| &p.w), "dense part")?
        } else {
            FloatVec::F32(parts.iter().flat_map(|p| p.w.to_f32()).collect())
        };
        Ok(DenseWeight { rows: parts.iter().map(|p| p.rows).sum(), cols, w })
    }
}

impl Multiply for DenseWeight {
    type Prepared = DenseWeight;

    fn prepare(self) -> Result<Self> {
        self.validate()?;
        Ok(self)
    }

    fn restore(p: Self) -> Self {
        p
    }

    fn prepared_bytes(p: &Self) -> usize {
        p.stored_bytes()
    }

    fn products_into(p: &Self, x: &[f32], batch: usize, par: Parallelism, y: &mut [f32], s: &mut Scratch) {
        let (rows, cols) = (p.rows, p.cols);
        crate::with_float_vec!(&p.w, w => kernel::gemm_into(&Rows16(&Rows { w, rows, cols }), rows, cols, x, batch, par, y, s))
    }
}

/// A dense `[rows, cols]` weight for the kernel: the tile is a copy of the rows, widened to
/// `f32`.
struct Rows<'a, T> {
    w: &'a [T],
    rows: usize,
    cols: usize,
}

impl<T: Elem> RowDecoder for Rows<'_, T> {
    fn rows(&self) -> usize {
        self.rows
    }

    #[inline(always)]
    fn decode_row(&self, r: usize, k0: usize, k1: usize, dst: &mut [f32]) {
        T::slice_to_f32(&self.w[r * self.cols + k0..r * self.cols + k1], dst);
    }
}
