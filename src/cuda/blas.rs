//! [`Cublas`]: cuBLAS's f16 GEMM on a dequantized weight, the baseline the fused kernels are
//! measured against (loaded at run time like the driver; absent, it is an error, not a panic).

use super::Gpu;
use crate::error::{CudaError, Error, Result, expect_len as expect};
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
use cudarc::driver::CudaSlice;
use half::f16;

/// A cuBLAS handle on a [`Gpu`]'s stream.
#[derive(Debug)]
pub struct Cublas {
    blas: CudaBlas,
}

impl Cublas {
    /// Load cuBLAS and bind it to `gpu`'s stream: [`CudaError::LibraryUnavailable`] when
    /// `libcublas` cannot be loaded.
    pub fn new(gpu: &Gpu) -> Result<Self> {
        // SAFETY: only tries to dlopen libcublas by its usual names and drops the handle.
        if !unsafe { cudarc::cublas::sys::is_culib_present() } {
            return Err(Error::Cuda(CudaError::LibraryUnavailable("cuBLAS")));
        }
        let blas = CudaBlas::new(gpu.stream().clone())
            .map_err(|e| Error::Cuda(CudaError::Cublas(format!("{e:?}"))))?;
        Ok(Cublas { blas })
    }

    /// `y = x W^T` in f16 with f32 accumulation (cuBLAS `gemmEx`): `w` is `[n, k]`, `x` `[m, k]`,
    /// `y` `[m, n]`, all row-major. Asynchronous on the stream.
    pub fn gemm_f16(
        &self,
        w: &CudaSlice<f16>,
        x: &CudaSlice<f16>,
        y: &mut CudaSlice<f16>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        expect("w", n * k, w.len())?;
        expect("x", m * k, x.len())?;
        expect("y", m * n, y.len())?;
        let dim = |v: usize| super::to_i32("GEMM extent", v);
        // Row-major y = x W^T is column-major y^T (n x m) = W (n x k) x^T: W is the column-major
        // k x n matrix transposed, x^T the column-major k x m matrix as it is.
        let cfg = GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_T,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: dim(n)?,
            n: dim(m)?,
            k: dim(k)?,
            alpha: f16::ONE,
            lda: dim(k)?,
            ldb: dim(k)?,
            beta: f16::ZERO,
            ldc: dim(n)?,
        };
        // SAFETY: the three buffers hold exactly n*k, m*k and m*n elements (checked above), the
        // leading dimensions are the row lengths, so cuBLAS reads and writes within them.
        unsafe { self.blas.gemm(cfg, w, x, y) }.map_err(|e| Error::Cuda(CudaError::Cublas(format!("{e:?}"))))
    }
}
