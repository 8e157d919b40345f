//! GPU kernels (feature `cuda`): the CUDA C sources in `ptx/`, compiled ahead of time to PTX
//! that is embedded here and JIT-compiled by the driver (minimum architecture sm_80), launched
//! through the CUDA driver API (`cudarc`, loaded at run time).
//!
//! A binary built with this feature still starts and runs every CPU path on a machine without a
//! GPU or driver: [`Gpu::new`] returns [`CudaError::CudaUnavailable`] instead of panicking.
//!
//! Every launcher checks lengths and shapes with the same validation as the CPU path, then makes
//! one `unsafe` launch whose `// SAFETY:` note says why the kernel stays in bounds. Extents above
//! 2^30 (rows, columns) are [`KernelError::TooLarge`]. Dequantization equals the CPU reference bit for
//! bit (f32) or with the same rounding (f16/bf16): the kernels compute `(q - z) * s` in f32
//! without contracting it into fused multiply-adds (`--fmad=false`). The fused GEMVs factor each
//! group out of its sum and match dequantize-then-multiply within f32 rounding.
//!
//! ```no_run
//! # #[cfg(feature = "cuda")] {
//! use quant_kernels::cuda::{Gpu, hqq_dequant_cuda_host};
//! use quant_kernels::hqq::{Axis, HqqLayout};
//! let gpu = Gpu::new(0)?;
//! let layout = HqqLayout::new(2, 4, 4, Axis::One)?;
//! let w = hqq_dequant_cuda_host::<quant_kernels::B4, f32>(
//!     &gpu, &[0x0f, 0x1e, 0x2d, 0x3c], &[0.5, 0.25], &[1.0, 8.0], &layout)?;
//! assert_eq!(w, [-0.5, 0.0, 0.5, 1.0, 1.75, 1.5, 1.25, 1.0]);
//! # }
//! # Ok::<(), quant_kernels::Error>(())
//! ```
#![allow(unsafe_code)]

use crate::awq::AwqLayout;
use crate::elem::{Elem, FloatType};
use crate::error::{CudaError, Error, KernelError, Result, expect_len as expect};
use crate::fp8::{Fp8Format, Fp8Layout};
use crate::gptq::{GptqLayout, ZeroFormat};
use crate::hqq::{self, HqqLayout};
use crate::pack::{Bits, Packing};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, LaunchConfig, PushKernelArg,
    ValidAsZeroBits,
};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

mod blas;
mod linear;

pub use blas::Cublas;
pub use cudarc::driver::CudaSlice as DeviceBuffer;
pub use cudarc::driver::DeviceRepr;
pub use linear::{
    ColPlan, DeviceQuantLinear, GEMM_MIN_BATCH, GEMM_WIDE_MIN_BATCH, GEMV_MAX_BATCH, GemmKind, GemmPlan,
    GemvKernel, RowPlan,
};

/// The PTX files compiled from `ptx/*.cu` (NVRTC 12.4, `compute_80`), embedded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PtxFile {
    /// `ptx/hqq.ptx`: HQQ dequantization.
    Hqq,
    /// `ptx/gptq.ptx`: GPTQ dequantization.
    Gptq,
    /// `ptx/gemv.ptx`: fused batch-1 dequant-GEMV (4-bit HQQ axis 1, 4-bit GPTQ).
    Gemv,
    /// `ptx/awq.ptx`: AWQ (gemm) dequantization.
    Awq,
    /// `ptx/fp8.ptx`: FP8 (E4M3, E5M2) dequantization with block or per-tensor scales.
    Fp8,
    /// `ptx/intx.ptx`: int8 / int4 fused GEMVs.
    Intx,
    /// `ptx/hqq_gemv.ptx`: HQQ fused GEMV, batch 1.
    HqqGemv,
    /// `ptx/hqq_gemv8.ptx`: HQQ fused GEMV, batches of up to 8 rows.
    HqqGemv8,
    /// `ptx/gptq_gemv.ptx`: GPTQ fused GEMV.
    GptqGemv,
    /// `ptx/hqq_gemm.ptx`: HQQ's rounded tensor-core GEMM.
    HqqGemm,
    /// `ptx/hqq_gemmg.ptx`: HQQ's group-scaled tensor-core GEMM.
    HqqGemmG,
    /// `ptx/gptq_gemm.ptx`: GPTQ's rounded tensor-core GEMM.
    GptqGemm,
    /// `ptx/gptq_gemmg.ptx`: GPTQ's group-scaled tensor-core GEMM.
    GptqGemmG,
    /// `ptx/gptq_gemmw.ptx`: GPTQ's wide group-scaled GEMM (large batches).
    GptqGemmW,
    /// `ptx/hqq_gemmw.ptx`: HQQ's wide group-scaled GEMM (large batches).
    HqqGemmW,
}

impl PtxFile {
    /// Every PTX file.
    pub const ALL: [PtxFile; 15] = [
        PtxFile::Hqq,
        PtxFile::Gptq,
        PtxFile::Gemv,
        PtxFile::Awq,
        PtxFile::Fp8,
        PtxFile::Intx,
        PtxFile::HqqGemv,
        PtxFile::HqqGemv8,
        PtxFile::GptqGemv,
        PtxFile::HqqGemm,
        PtxFile::HqqGemmG,
        PtxFile::GptqGemm,
        PtxFile::GptqGemmG,
        PtxFile::GptqGemmW,
        PtxFile::HqqGemmW,
    ];

    /// The PTX text.
    pub fn source(self) -> &'static str {
        match self {
            PtxFile::Hqq => include_str!("../../ptx/hqq.ptx"),
            PtxFile::Gptq => include_str!("../../ptx/gptq.ptx"),
            PtxFile::Gemv => include_str!("../../ptx/gemv.ptx"),
            PtxFile::Awq => include_str!("../../ptx/awq.ptx"),
            PtxFile::Fp8 => include_str!("../../ptx/fp8.ptx"),
            PtxFile::Intx => include_str!("../../ptx/intx.ptx"),
            PtxFile::HqqGemv => include_str!("../../ptx/hqq_gemv.ptx"),
            PtxFile::HqqGemv8 => include_str!("../../ptx/hqq_gemv8.ptx"),
            PtxFile::GptqGemv => include_str!("../../ptx/gptq_gemv.ptx"),
            PtxFile::HqqGemm => include_str!("../../ptx/hqq_gemm.ptx"),
            PtxFile::HqqGemmG => include_str!("../../ptx/hqq_gemmg.ptx"),
            PtxFile::GptqGemm => include_str!("../../ptx/gptq_gemm.ptx"),
            PtxFile::GptqGemmG => include_str!("../../ptx/gptq_gemmg.ptx"),
            PtxFile::GptqGemmW => include_str!("../../ptx/gptq_gemmw.ptx"),
            PtxFile::HqqGemmW => include_str!("../../ptx/hqq_gemmw.ptx"),
        }
    }

    /// The kernel entries this crate launches from the file, with their parameter counts.
    pub fn entries(self) -> Vec<(String, usize)> {
        let gemvs = GemvKernel::all().into_iter().flat_map(|k| {
            let gemv =
                [1, 8].into_iter().filter(move |&m| k.file(m) == self).map(move |m| (k.entry(m), k.params()));
            let gemm = GemmKind::ALL
                .into_iter()
                .flat_map(|kind| kind.tile_rows().map(move |mt| (kind, mt)))
                .filter(move |&(kind, _)| k.gemm_file(kind) == self)
                .filter_map(move |(kind, mt)| k.gemm_entry(kind, mt).map(|e| (e, k.gemm_params(kind))));
            let wide = k
                .gemm_wide_entry()
                .filter(move |_| k.gemm_wide_file() == self)
                .map(move |e| (e, k.gemm_params(GemmKind::GroupScaled)));
            gemv.chain(gemm).chain(wide)
        });
        let named: Vec<(&'static str, usize)> = match self {
            PtxFile::Hqq => HQQ_DEQUANT.iter().flatten().map(|&name| (name, HQQ_DEQUANT_PARAMS)).collect(),
            PtxFile::Gptq => GPTQ_DEQUANT.iter().flatten().map(|&name| (name, GPTQ_DEQUANT_PARAMS)).collect(),
            PtxFile::Gemv => HQQ_GEMV
                .iter()
                .map(|&n| (n, 9))
                .chain(GPTQ_GEMV.iter().map(|&n| (n, 10)))
                .chain([
                    (GEMV_REDUCE_ROWS, 4),
                    (GEMV_REDUCE_COLS, 4),
                    (GATHER, 4),
                    (GATHER_ROWS, 5),
                    ("add_bias_f32", 4),
                ])
                .collect(),
            PtxFile::Awq => AWQ_DEQUANT.iter().map(|&n| (n, 7)).collect(),
            PtxFile::Fp8 => FP8_DEQUANT.iter().flatten().map(|&n| (n, 7)).collect(),
            PtxFile::Intx
            | PtxFile::HqqGemv
            | PtxFile::HqqGemv8
            | PtxFile::GptqGemv
            | PtxFile::HqqGemm
            | PtxFile::HqqGemmG
            | PtxFile::GptqGemm
            | PtxFile::GptqGemmG
            | PtxFile::GptqGemmW
            | PtxFile::HqqGemmW => Vec::new(),
        };
        named.into_iter().map(|(n, p)| (n.to_owned(), p)).chain(gemvs).collect()
    }
}

/// `hqq_dequant_{bits}b_{elem}` entries, by width (1, 2, 3, 4, 8) and element (f32, f16, bf16).
const HQQ_DEQUANT: [[&str; 3]; 5] = [
    ["hqq_dequant_1b_f32", "hqq_dequant_1b_f16", "hqq_dequant_1b_bf16"],
    ["hqq_dequant_2b_f32", "hqq_dequant_2b_f16", "hqq_dequant_2b_bf16"],
    ["hqq_dequant_3b_f32", "hqq_dequant_3b_f16", "hqq_dequant_3b_bf16"],
    ["hqq_dequant_4b_f32", "hqq_dequant_4b_f16", "hqq_dequant_4b_bf16"],
    ["hqq_dequant_8b_f32", "hqq_dequant_8b_f16", "hqq_dequant_8b_bf16"],
];
/// (packed, scales, zeros, out, rows, cols, prows, axis)
const HQQ_DEQUANT_PARAMS: usize = 8;

/// `gptq_dequant_{bits}b_{elem}` entries, by width (2, 3, 4, 8) and element (f32, f16, bf16).
const GPTQ_DEQUANT: [[&str; 3]; 4] = [
    ["gptq_dequant_2b_f32", "gptq_dequant_2b_f16", "gptq_dequant_2b_bf16"],
    ["gptq_dequant_3b_f32", "gptq_dequant_3b_f16", "gptq_dequant_3b_bf16"],
    ["gptq_dequant_4b_f32", "gptq_dequant_4b_f16", "gptq_dequant_4b_bf16"],
    ["gptq_dequant_8b_f32", "gptq_dequant_8b_f16", "gptq_dequant_8b_bf16"],
];
/// (qweight, qzeros, scales, g_idx, out, K, N, format)
const GPTQ_DEQUANT_PARAMS: usize = 8;

/// `hqq_gemv_4b_{elem}`: (packed, scales, zeros, x, partial, rows, g, prows, in).
const HQQ_GEMV: [&str; 3] = ["hqq_gemv_4b_f32", "hqq_gemv_4b_f16", "hqq_gemv_4b_bf16"];
/// `gptq_gemv_4b_{elem}`: (qweight, qzeros, scales, g_idx, x, partial, K, N, slice_rows, format).
const GPTQ_GEMV: [&str; 3] = ["gptq_gemv_4b_f32", "gptq_gemv_4b_f16", "gptq_gemv_4b_bf16"];
/// (partial, y, outs, per): y[o] = sum of partials o*per .. o*per + per.
const GEMV_REDUCE_ROWS: &str = "gemv_reduce_rows_f32";
/// (partial, y, N, slices): y[n] = sum over s of partial[s*N + n].
const GEMV_REDUCE_COLS: &str = "gemv_reduce_cols_f32";

/// (x, perm, out, K): out[i] = x[perm[i]].
const GATHER: &str = "gather_f32";
/// (x, perm, out, K, rows): out[r*K + i] = x[r*K + perm[i]] for r < rows (inputs on x, rows on y).
const GATHER_ROWS: &str = "gather_rows_f32";

/// `awq_dequant_4b_{elem}`: (qweight, qzeros, scales, out, K, N, group_size).
const AWQ_DEQUANT: [&str; 3] = ["awq_dequant_4b_f32", "awq_dequant_4b_f16", "awq_dequant_4b_bf16"];

/// `fp8_dequant_{e4m3,e5m2}_{elem}`: (codes, scales f32, out, rows, cols, block_rows, block_cols).
const FP8_DEQUANT: [[&str; 3]; 2] = [
    ["fp8_dequant_e4m3_f32", "fp8_dequant_e4m3_f16", "fp8_dequant_e4m3_bf16"],
    ["fp8_dequant_e5m2_f32", "fp8_dequant_e5m2_f16", "fp8_dequant_e5m2_bf16"],
];

fn elem_index(elem: FloatType) -> usize {
    match elem {
        FloatType::F32 => 0,
        FloatType::F16 => 1,
        FloatType::Bf16 => 2,
    }
}

/// The GPTQ dequantization entry for a width (2, 3, 4 or 8) and element type.
pub fn gptq_dequant_entry(bits: u8, elem: FloatType) -> Option<&'static str> {
    let b = match bits {
        2 => 0,
        3 => 1,
        4 => 2,
        8 => 3,
        _ => return None,
    };
    Some(GPTQ_DEQUANT[b][elem_index(elem)])
}

/// The HQQ dequantization entry for a width and element type.
pub fn hqq_dequant_entry(bits: Bits, elem: FloatType) -> &'static str {
    let b = match bits {
        Bits::B1 => 0,
        Bits::B2 => 1,
        Bits::B3 => 2,
        Bits::B4 => 3,
        Bits::B8 => 4,
    };
    HQQ_DEQUANT[b][elem_index(elem)]
}

/// True when the CUDA driver library can be loaded; never panics.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen libcuda by its usual names and drops the handle.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// A GPU: its context, a stream, the PTX modules loaded so far (each at most once) and the
/// scratch its layers share.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    modules: [OnceLock<Arc<CudaModule>>; PtxFile::ALL.len()],
    workspace: Mutex<Workspace>,
}

/// Scratch shared by every [`DeviceQuantLinear`] on a [`Gpu`]: f32 values (gathered act-order
/// inputs, partial sums) and u32 counters, which every launch leaves at zero. Launches on one
/// stream run in order and a layer's values are dead once its forward call's launches are, so
/// one scratch serves all layers, instead of one a layer (18 MiB for a 4-bit GPTQ layer of 4096
/// x 14336). It grows to the largest need of the layers built on the `Gpu` (16 MiB where a
/// layer has the group-scaled GEMM, plus an act-order layer's gathered inputs) and is kept until
/// the `Gpu` is dropped.
#[derive(Debug)]
pub(crate) struct Workspace {
    pub(crate) floats: CudaSlice<f32>,
    pub(crate) counters: CudaSlice<u32>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("ordinal", &self.ctx.ordinal()).finish()
    }
}

impl Gpu {
    /// Open GPU `ordinal`: [`CudaError::CudaUnavailable`] without a driver, [`CudaError::Cuda`] when the
    /// driver fails (e.g. no such device).
    pub fn new(ordinal: usize) -> Result<Self> {
        if !driver_present() {
            return Err(Error::Cuda(CudaError::CudaUnavailable));
        }
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.default_stream();
        let workspace =
            Mutex::new(Workspace { floats: stream.alloc_zeros(1)?, counters: stream.alloc_zeros(1)? });
        Ok(Self { ctx, stream, modules: Default::default(), workspace })
    }

    /// The shared scratch, locked, with at least `floats` values and `counters` zeroed counters:
    /// grown where short. A buffer it replaces is freed in stream order, after the launches
    /// that use it; the new counters are zeroed in stream order too.
    pub(crate) fn workspace(&self, floats: usize, counters: usize) -> Result<MutexGuard<'_, Workspace>> {
        // A panic while it was held leaves nothing to repair: the buffers hold no host state.
        let mut ws = self.workspace.lock().unwrap_or_else(PoisonError::into_inner);
        if ws.floats.len() < floats {
            ws.floats = self.zeros(floats)?;
        }
        if ws.counters.len() < counters {
            ws.counters = self.zeros(counters)?;
        }
        Ok(ws)
    }

    /// The device's name as the driver reports it.
    pub fn name(&self) -> Result<String> {
        Ok(self.ctx.name()?)
    }

    /// The device's streaming multiprocessors.
    pub fn multiprocessors(&self) -> Result<usize> {
        let a = cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
        Ok(self.ctx.attribute(a)?.max(1) as usize)
    }

    /// The stream kernels are launched on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Copy a host slice to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, host: &[T]) -> Result<CudaSlice<T>> {
        Ok(self.stream.clone_htod(host)?)
    }

    /// A zeroed device buffer of `len` elements.
    pub fn zeros<T: DeviceRepr + ValidAsZeroBits>(&self, len: usize) -> Result<CudaSlice<T>> {
        Ok(self.stream.alloc_zeros(len)?)
    }

    /// Copy a device buffer back to the host (waits for the stream).
    pub fn download<T: DeviceRepr>(&self, dev: &CudaSlice<T>) -> Result<Vec<T>> {
        Ok(self.stream.clone_dtoh(dev)?)
    }

    /// Wait until everything launched on the stream has finished.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }

    fn function(&self, file: PtxFile, entry: &str) -> Result<CudaFunction> {
        let slot = &self.modules[file as usize];
        let module = match slot.get() {
            Some(m) => m.clone(),
            None => {
                let m = self.ctx.load_module(cudarc::nvrtc::Ptx::from_src(file.source()))?;
                slot.get_or_init(|| m).clone()
            }
        };
        Ok(module.load_function(entry)?)
    }
}

/// Element types the GPU kernels read and write: `f32`, `f16`, `bf16`.
pub trait CudaElem: Elem + DeviceRepr + ValidAsZeroBits {}
impl CudaElem for f32 {}
impl CudaElem for half::f16 {}
impl CudaElem for half::bf16 {}

/// Largest extent (rows, columns, packed rows, ...) a launcher passes to a kernel: 2^30. The
/// kernels index in 32 bits and step grid-stride counters by up to 2^28 (x) and 2^24 (y) past
/// an extent, and round extents up to whole chunks; 2^30 keeps all of that below 2^31.
const MAX_EXTENT: usize = 1 << 30;

fn to_i32(what: &'static str, value: usize) -> Result<i32> {
    if value > MAX_EXTENT {
        return Err(Error::Kernel(KernelError::TooLarge { what, value, max: MAX_EXTENT }));
    }
    Ok(value as i32)
}

/// Dequantize HQQ weights of width `P` on the GPU: `out = (q - zeros) * scales`, same layout
/// and checks as [`crate::hqq::dequantize_into`] (scales, zeros and output share the type `T`).
/// Asynchronous: the work is queued on `gpu`'s stream.
pub fn hqq_dequant_cuda<P: Packing, T: CudaElem>(
    gpu: &Gpu,
    packed: &CudaSlice<P::Word>,
    scales: &CudaSlice<T>,
    zeros: &CudaSlice<T>,
    layout: &HqqLayout,
    out: &mut CudaSlice<T>,
) -> Result<()>
where
    P::Word: DeviceRepr,
{
    let geo = hqq::check::<P>(layout, packed.len(), scales.len(), zeros.len(), out.len())?;
    if geo.prows == 0 || geo.cols == 0 {
        return Ok(());
    }
    let (rows, cols, prows) =
        (to_i32("code rows", geo.rows)?, to_i32("code cols", geo.cols)?, to_i32("packed rows", geo.prows)?);
    let f = gpu.function(PtxFile::Hqq, hqq_dequant_entry(P::BITS, T::DTYPE))?;
    // Geometry of ptx/hqq.cu: a thread takes 16 bytes of output columns (8 f16/bf16, 4 f32) when
    // the column count allows, else 1; x walks those column vectors, y chunks of 16 / PER_WORD
    // packed rows (at least 1) on axis 0 and single packed rows on axis 1, whose rows are short.
    let vec = 16 / std::mem::size_of::<T>();
    let vectors = if geo.cols.is_multiple_of(vec) { geo.cols / vec } else { geo.cols };
    let (axis, cfg) = match geo.axis {
        hqq::Axis::Zero => (0i32, launch_2d(vectors, geo.prows.div_ceil((16 / P::PER_WORD).max(1)))),
        hqq::Axis::One => (1i32, launch_short_rows(vectors, geo.prows)),
    };
    let mut launch = gpu.stream.launch_builder(&f);
    launch.arg(packed).arg(scales).arg(zeros).arg(out).arg(&rows).arg(&cols).arg(&prows).arg(&axis);
    // SAFETY: the entry's signature is (const W*, const T*, const T*, T*, int, int, int, int) with W
    // = P::Word and T as chosen by `hqq_dequant_entry(P::BITS, T::DTYPE)`, matching the argument
    // list above. `check` proved packed.len() == prows*cols, scales/zeros len == groups and
    // out.len() == rows*cols, and the kernel only reads packed[t] for t < prows*cols, params at a
    // column < cols (axis 0) or row < rows (axis 1), and writes out[r*cols + c] for r < rows,
    // c < cols. Its VEC-wide vector accesses (VEC = 16 / size_of::<T>()) are taken only when
    // cols % VEC == 0, so every vector starts at a multiple of VEC elements from a cudaMalloc base
    // (256-byte aligned): aligned. The buffers are borrowed until the launch is queued; cudarc
    // records the stream events that keep them alive until the kernel has finished.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}

/// [`hqq_dequant_cuda`] from and to host slices: upload, launch, synchronize, download.
pub fn hqq_dequant_cuda_host<P: Packing, T: CudaElem>(
    gpu: &Gpu,
    packed: &[P::Word],
    scales: &[T],
    zeros: &[T],
    layout: &HqqLayout,
) -> Result<Vec<T>>
where
    P::Word: DeviceRepr,
{
    hqq::check::<P>(layout, packed.len(), scales.len(), zeros.len(), layout.numel())?;
    let (p, s, z) = (gpu.upload(packed)?, gpu.upload(scales)?, gpu.upload(zeros)?);
    let mut out = gpu.zeros::<T>(layout.numel())?;
    hqq_dequant_cuda::<P, T>(gpu, &p, &s, &z, layout, &mut out)?;
    gpu.download(&out)
}

/// A GPTQ `g_idx` on the device whose every value was checked against the layer's group count
/// on the host before upload, so kernels can index scales and zeros with it.
#[derive(Debug)]
pub struct DeviceGIdx {
    buf: CudaSlice<i32>,
    k: usize,
    groups: usize,
}

impl DeviceGIdx {
    /// Validate `g_idx` (or derive `k / group_size` when `None`) for `layout` and upload it.
    pub fn upload(gpu: &Gpu, g_idx: Option<&[i32]>, layout: &GptqLayout) -> Result<Self> {
        let rows = crate::gptq::groups_of_rows(layout, g_idx)?;
        let host: Vec<i32> = rows.into_iter().map(|g| g as i32).collect();
        Ok(Self { buf: gpu.upload(&host)?, k: layout.k(), groups: layout.groups() })
    }
}

/// A row order on the device (see [`crate::gptq::sort`]) checked on the host to be a
/// permutation of `0..len` before upload, so a kernel can gather with it.
#[derive(Debug)]
pub struct DevicePerm {
    buf: CudaSlice<i32>,
}

impl DevicePerm {
    /// Validate `perm` (a permutation of `0..perm.len()`, `len` < 2^31) and upload it.
    pub fn upload(gpu: &Gpu, perm: &[u32]) -> Result<Self> {
        crate::gptq::sort::check_permutation(perm, perm.len())?;
        to_i32("perm length", perm.len())?;
        let host: Vec<i32> = perm.iter().map(|&p| p as i32).collect();
        Ok(Self { buf: gpu.upload(&host)? })
    }

    /// The number of rows it orders.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether it orders no rows.
    pub fn is_empty(&self) -> bool {
        self.buf.len() == 0
    }
}

/// `out[i] = x[perm[i]]` on the GPU: the inputs of a GPTQ layer whose rows were sorted by group
/// ([`crate::gptq::GptqLayer::sort_by_group`]) for [`gptq_gemv_cuda`] on the sorted layer, which
/// then takes the plain path (a group decoded once per slice) instead of act-order's decode per
/// row. Asynchronous.
pub fn permute_inputs_cuda(
    gpu: &Gpu,
    x: &CudaSlice<f32>,
    perm: &DevicePerm,
    out: &mut CudaSlice<f32>,
) -> Result<()> {
    expect("x", perm.len(), x.len())?;
    expect("out", perm.len(), out.len())?;
    if perm.is_empty() {
        return Ok(());
    }
    let k = to_i32("K", perm.len())?;
    let f = gpu.function(PtxFile::Gemv, GATHER)?;
    let mut launch = gpu.stream.launch_builder(&f);
    launch.arg(x).arg(&perm.buf).arg(&mut *out).arg(&k);
    // SAFETY: signature (const float*, const int*, float*, int) matches; the kernel reads perm[i]
    // and writes out[i] for i < K (all three buffers have K elements, checked above) and reads
    // x[perm[i]], in 0..K because DevicePerm was checked to be a permutation before upload.
    unsafe { launch.launch(launch_1d(perm.len())) }?;
    Ok(())
}

/// The checks every GPTQ launcher makes on the layer's device buffers.
fn check_gptq_device<T>(
    layout: &GptqLayout,
    qweight: &CudaSlice<i32>,
    qzeros: &CudaSlice<i32>,
    scales: &CudaSlice<T>,
    g_idx: &DeviceGIdx,
) -> Result<()> {
    let (qr, qc) = layout.qweight_shape();
    let (zr, zc) = layout.qzeros_shape();
    expect("qweight", qr * qc, qweight.len())?;
    expect("qzeros", zr * zc, qzeros.len())?;
    expect("scales", layout.groups() * layout.n(), scales.len())?;
    expect("g_idx", layout.k(), g_idx.k)?;
    expect("g_idx groups", layout.groups(), g_idx.groups)
}

/// Dequantize a GPTQ layer on the GPU into `out` (`[K, N]`), same semantics and checks as
/// [`crate::gptq::gptq_dequantize_into`] (scales and output share the type `T`). Asynchronous.
#[allow(clippy::too_many_arguments)]
pub fn gptq_dequantize_cuda<T: CudaElem>(
    gpu: &Gpu,
    qweight: &CudaSlice<i32>,
    scales: &CudaSlice<T>,
    qzeros: &CudaSlice<i32>,
    g_idx: &DeviceGIdx,
    format: ZeroFormat,
    layout: &GptqLayout,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    check_gptq_device(layout, qweight, qzeros, scales, g_idx)?;
    expect("out", layout.k() * layout.n(), out.len())?;
    let (k, n) = (to_i32("K", layout.k())?, to_i32("N", layout.n())?);
    // Columns per thread and rows per chunk (QkGptq in ptx/gptq.cu): 16 bytes of output (8
    // columns at f16/bf16, 4 at f32; 4 also for 8-bit layers with N % 8 != 0), chunks of 16 rows
    // (32 at 3 bits, 8 at 8 bits).
    let vec = if std::mem::size_of::<T>() == 4 || (layout.bits() == 8 && !layout.n().is_multiple_of(8)) {
        4
    } else {
        8
    };
    let chunk = match layout.bits() {
        3 => 32,
        8 => 8,
        _ => 16,
    };
    if layout.k() == 0 || layout.n() == 0 {
        return Ok(());
    }
    let entry = gptq_dequant_entry(layout.bits(), T::DTYPE)
        .ok_or(Error::Kernel(KernelError::UnsupportedBits(layout.bits())))?;
    let f = gpu.function(PtxFile::Gptq, entry)?;
    let fmt: i32 = match format {
        ZeroFormat::V1 => 0,
        ZeroFormat::V2 => 1,
    };
    let cfg = launch_2d(layout.n() / vec, layout.k().div_ceil(chunk));
    let mut launch = gpu.stream.launch_builder(&f);
    launch.arg(qweight).arg(qzeros).arg(scales).arg(&g_idx.buf).arg(out).arg(&k).arg(&n).arg(&fmt);
    // SAFETY: the entry's signature is (const int*, const int*, const T*, const int*, T*, int, int,
    // int), matching the arguments. Lengths were checked above against the layout (K a multiple
    // of the rows per word block, N of the codes per qzeros word, as GptqLayout guarantees); the
    // kernel reads qweight rows < K*bits/32, qzeros words < N*bits/32 of rows g < G, scales[g*N+n]
    // and writes out[k*N+n] with k < K, n < N, where every g comes from a DeviceGIdx whose values
    // were checked to lie in 0..G before upload; it reads g_idx[k] for k < K. Its vector accesses
    // cover `vec` columns (8 only when N % 8 == 0, which holds at 2/3/4 bits; N % 4 == 0 always
    // holds) or 4 rows of g_idx (K % 4 == 0), starting at multiples of that from 256-byte
    // aligned cudaMalloc bases, so they are aligned. cudarc keeps the buffers alive until the
    // kernel has finished.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}

/// [`gptq_dequantize_cuda`] from and to host slices: upload, launch, synchronize, download.
#[allow(clippy::too_many_arguments)]
pub fn gptq_dequantize_cuda_host<T: CudaElem>(
    gpu: &Gpu,
    qweight: &[i32],
    scales: &[T],
    qzeros: &[i32],
    g_idx: Option<&[i32]>,
    format: ZeroFormat,
    layout: &GptqLayout,
) -> Result<Vec<T>> {
    let g = DeviceGIdx::upload(gpu, g_idx, layout)?;
    let (qw, qz, s) = (gpu.upload(qweight)?, gpu.upload(qzeros)?, gpu.upload(scales)?);
    let mut out = gpu.zeros::<T>(layout.k() * layout.n())?;
    gptq_dequantize_cuda(gpu, &qw, &s, &qz, &g, format, layout, &mut out)?;
    gpu.download(&out)
}

/// A 2-D launch for kernels that walk `x_items` column vectors on x and `y_items` row chunks on
/// y (both grid-strided in the kernel, so any shape is correct): 256 threads a block, at least a
/// warp on x so adjacent lanes take adjacent columns.
fn launch_2d(x_items: usize, y_items: usize) -> LaunchConfig {
    launch_blocks(x_items.next_multiple_of(32).clamp(32, 256), x_items, y_items)
}

/// [`launch_2d`] for rows of fewer than 32 column vectors: a block row is exactly the
/// `x_items` vectors of one row, so a warp covers several whole, adjacent rows (contiguous in
/// memory) and no lane idles.
fn launch_short_rows(x_items: usize, y_items: usize) -> LaunchConfig {
    if x_items >= 32 {
        return launch_2d(x_items, y_items);
    }
    launch_blocks(x_items.max(1), x_items, y_items)
}

/// Blocks of `bx` x (256 / `bx`) threads over `x_items` x `y_items`.
fn launch_blocks(bx: usize, x_items: usize, y_items: usize) -> LaunchConfig {
    let by = 256 / bx;
    let gx = x_items.div_ceil(bx).clamp(1, 1 << 20);
    let gy = y_items.div_ceil(by).clamp(1, 65_535);
    LaunchConfig {
        grid_dim: (gx as u32, gy as u32, 1),
        block_dim: (bx as u32, by as u32, 1),
        shared_mem_bytes: 0,
    }
}

fn launch_1d(items: usize) -> LaunchConfig {
    const BLOCK: u32 = 256;
    let blocks = items.div_ceil(BLOCK as usize).clamp(1, 1 << 20) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// Threads sharing one segment of the HQQ GEMV (`QK_GEMV_TEAM` in ptx/gemv.cu).
const GEMV_TEAM: usize = 16;

/// Bytes (flat weights per plane) of one HQQ GEMV segment: a whole output row, or half of one
/// when the output count is odd, so that a segment lies in one output row in both planes
/// (ptx/gemv.cu).
fn hqq_gemv_segment(layout: &HqqLayout) -> usize {
    if layout.rows().is_multiple_of(2) { layout.cols() } else { layout.cols() / 2 }
}

/// Length of the `partial` scratch buffer [`hqq_gemv_cuda`] needs: 16 `f32` per segment of
/// each output row (one row, or two halves when the row count is odd).
pub fn hqq_gemv_scratch_len(layout: &HqqLayout) -> usize {
    match hqq_gemv_segment(layout) {
        0 => 0,
        seg => layout.numel() / seg * GEMV_TEAM,
    }
}

/// Fused batch-1 GEMV from 4-bit HQQ weights, axis 1: `y[o] = sum_i W[o, i] * x[i]` for the
/// `[rows, cols]` weight of `layout` (x: `cols` f32, y: `rows` f32), decoding in registers.
/// Each group's zero and scale are factored out of its sum (`s * (sum q x - z * sum x)`), so `y`
/// equals dequantize-then-multiply within f32 rounding, not bit for bit. Deterministic (fixed
/// summation order: 16 strided partial sums per row segment, then a row's partials in order).
/// Axis 0 layouts are [`KernelError::UnsupportedAxis`]`(0)`; the group size must divide `cols`.
#[allow(clippy::too_many_arguments)]
pub fn hqq_gemv_cuda<T: CudaElem>(
    gpu: &Gpu,
    packed: &CudaSlice<u8>,
    scales: &CudaSlice<T>,
    zeros: &CudaSlice<T>,
    layout: &HqqLayout,
    x: &CudaSlice<f32>,
    partial: &mut CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
) -> Result<()> {
    if layout.axis() != hqq::Axis::One {
        return Err(Error::Kernel(KernelError::UnsupportedAxis(0)));
    }
    if !layout.cols().is_multiple_of(layout.group_size()) {
        return Err(Error::Kernel(KernelError::GroupSize { group: layout.group_size(), len: layout.cols() }));
    }
    let geo = hqq::check::<crate::pack::B4>(layout, packed.len(), scales.len(), zeros.len(), layout.numel())?;
    expect("x", layout.cols(), x.len())?;
    expect("y", layout.rows(), y.len())?;
    expect("partial", hqq_gemv_scratch_len(layout), partial.len())?;
    if geo.prows == 0 || layout.rows() == 0 {
        return Ok(());
    }
    let (rows, g, prows, cols) = (
        to_i32("code rows", geo.rows)?,
        to_i32("group size", geo.cols)?,
        to_i32("packed rows", geo.prows)?,
        to_i32("cols", layout.cols())?,
    );
    let f = gpu.function(PtxFile::Gemv, HQQ_GEMV[elem_index(T::DTYPE)])?;
    let mut launch = gpu.stream.launch_builder(&f);
    launch
        .arg(packed)
        .arg(scales)
        .arg(zeros)
        .arg(x)
        .arg(&mut *partial)
        .arg(&rows)
        .arg(&g)
        .arg(&prows)
        .arg(&cols);
    // SAFETY: signature (const u8*, const T*, const T*, const float*, float*, int, int, int, int)
    // matches. check::<B4> proved packed.len() == prows*g == numel/2 (4-bit axis 1: an even code
    // row count), scales/zeros len == rows (one per code row). The kernel splits the packed bytes
    // into segments of `seg` (hqq_gemv_segment: cols, or cols/2 for an odd row count, which
    // makes cols/g even; either way a multiple of g dividing numel/2) and reads packed bytes
    // < numel/2 (32- or 16-byte chunks as 16-byte vectors only when g % 32 == 0 or g % 16 == 0,
    // at multiples of the chunk: aligned, and a chunk never crosses a segment), params at code
    // rows r and r + prows < rows, x at (f % cols) + i < cols within one output row (4-float
    // vectors at multiples of 16 floats: aligned), and writes partial[S*16 + j] for the numel/seg
    // flat segments S and j < 16: exactly hqq_gemv_scratch_len, checked above.
    let seg = hqq_gemv_segment(layout);
    unsafe { launch.launch(launch_1d(geo.prows * geo.cols / seg * GEMV_TEAM)) }?;
    let (outs, per) =
        (to_i32("rows", layout.rows())?, to_i32("partials per row", layout.cols() / seg * GEMV_TEAM)?);
    let f = gpu.function(PtxFile::Gemv, GEMV_REDUCE_ROWS)?;
    let mut launch = gpu.stream.launch_builder(&f);
    launch.arg(&*partial).arg(y).arg(&outs).arg(&per);
    // SAFETY: signature (const float*, float*, int, int) matches; partial has rows*per elements
    // (numel/seg*16 = rows*(cols/seg)*16) and y has rows, checked above; the kernel reads
    // partial[o*per + t], t < per, and writes y[o], o < rows.
    unsafe { launch.launch(launch_1d(layout.rows())) }?;
    Ok(())
}

/// Input rows each thread of the GPTQ GEMV covers: the largest of 128, 64, 32, 16, 8 dividing K
/// (one 4-byte partial sum per 128 rows and output: 1/16 of those rows' 64 weight bytes, while
/// 4096 x 4096 still runs 32 K threads).
fn gptq_slice_rows(k: usize) -> usize {
    [128, 64, 32, 16, 8].into_iter().find(|s| k.is_multiple_of(*s)).unwrap_or(8)
}

/// Length of the `partial` scratch buffer [`gptq_gemv_cuda`] needs.
pub fn gptq_gemv_scratch_len(layout: &GptqLayout) -> usize {
    layout.k() / gptq_slice_rows(layout.k()) * layout.n()
}

/// Fused batch-1 GEMV from a 4-bit GPTQ layer: `y[n] = sum_k W[k, n] * x[k]` (x: `K` f32, y:
/// `N` f32), decoding in registers; act-order through the validated `g_idx`. A slice of rows in
/// one group has its zero and scale factored out (`s * (sum q x - z * sum x)`), so `y` equals
/// dequantize-then-multiply within f32 rounding, not bit for bit. Deterministic (per-slice
/// partial sums, then the slices of each output in order). Other widths are
/// [`KernelError::UnsupportedBits`].
#[allow(clippy::too_many_arguments)]
pub fn gptq_gemv_cuda<T: CudaElem>(
    gpu: &Gpu,
    qweight: &CudaSlice<i32>,
    qzeros: &CudaSlice<i32>,
    scales: &CudaSlice<T>,
    g_idx: &DeviceGIdx,
    layout: &GptqLayout,
    format: ZeroFormat,
    x: &CudaSlice<f32>,
    partial: &mut CudaSlice<f32>,
    y: &mut CudaSlice<f32>,
) -> Result<()> {
    if layout.bits() != 4 {
        return Err(Error::Kernel(KernelError::UnsupportedBits(layout.bits())));
    }
    check_gptq_device(layout, qweight, qzeros, scales, g_idx)?;
    expect("x", layout.k(), x.len())?;
    expect("y", layout.n(), y.len())?;
    expect("partial", gptq_gemv_scratch_len(layout), partial.len())?;
    if layout.k() == 0 || layout.n() == 0 {
        return Ok(());
    }
    let slice_rows = gptq_slice_rows(layout.k());
    let slices = layout.k() / slice_rows;
    let (k, n, sr, sl) = (
        to_i32("K", layout.k())?,
        to_i32("N", layout.n())?,
        to_i32("slice", slice_rows)?,
        to_i32("slices", slices)?,
    );
    let fmt: i32 = if format == ZeroFormat::V1 { 0 } else { 1 };
    let f = gpu.function(PtxFile::Gemv, GPTQ_GEMV[elem_index(T::DTYPE)])?;
    let mut launch = gpu.stream.launch_builder(&f);
    launch
        .arg(qweight)
        .arg(qzeros)
        .arg(scales)
        .arg(&g_idx.buf)
        .arg(x)
        .arg(&mut *partial)
        .arg(&k)
        .arg(&n)
        .arg(&sr)
        .arg(&fmt);
    // SAFETY: signature (const int*, const int*, const T*, const int*, const float*, float*, int,
    // int, int, int) matches. 4-bit GptqLayout: K % 8 == 0 and N % 8 == 0, slice_rows divides K
    // and is a multiple of 8; the kernel reads qweight word rows < K/8 at 4 columns n..n+4 <= N
    // (16-byte aligned: n % 4 == 0), g_idx[k] and x[k] for k < K (4-element vectors at multiples
    // of 4: aligned), g = g_idx[k] < G (validated DeviceGIdx) for scales and qzeros rows, and
    // writes partial[s*N + n..n+4] for s < slices: all within the lengths checked above.
    unsafe { launch.launch(launch_2d(layout.n() / 4, slices)) }?;
    let f = gpu.function(PtxFile::Gemv, GEMV_REDUCE_COLS)?;
    let mut launch = gpu.stream.launch_builder(&f);
    launch.arg(&*partial).arg(y).arg(&n).arg(&sl);
    // SAFETY: signature (const float*, float*, int, int) matches; partial has slices*N elements,
    // y has N; the kernel reads partial[s*N + n] and writes y[n] for n < N, s < slices.
    unsafe { launch.launch(launch_1d(layout.n())) }?;
    Ok(())
}

/// [`hqq_gemv_cuda`] from host slices (uploads everything, returns `y`).
pub fn hqq_gemv_cuda_host<T: CudaElem>(
    gpu: &Gpu,
    packed: &[u8],
    scales: &[T],
    zeros: &[T],
    layout: &HqqLayout,
    x: &[f32],
) -> Result<Vec<f32>> {
    let (p, s, z, xd) = (gpu.upload(packed)?, gpu.upload(scales)?, gpu.upload(zeros)?, gpu.upload(x)?);
    let mut partial = gpu.zeros::<f32>(hqq_gemv_scratch_len(layout))?;
    let mut y = gpu.zeros::<f32>(layout.rows())?;
    hqq_gemv_cuda(gpu, &p, &s, &z, layout, &xd, &mut partial, &mut y)?;
    gpu.download(&y)
}

/// [`gptq_gemv_cuda`] from host slices (validates and uploads `g_idx`, returns `y`).
#[allow(clippy::too_many_arguments)]
pub fn gptq_gemv_cuda_host<T: CudaElem>(
    gpu: &Gpu,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[T],
    g_idx: Option<&[i32]>,
    layout: &GptqLayout,
    format: ZeroFormat,
    x: &[f32],
) -> Result<Vec<f32>> {
    let g = DeviceGIdx::upload(gpu, g_idx, layout)?;
    let (qw, qz, s, xd) = (gpu.upload(qweight)?, gpu.upload(qzeros)?, gpu.upload(scales)?, gpu.upload(x)?);
    let mut partial = gpu.zeros::<f32>(gptq_gemv_scratch_len(layout))?;
    let mut y = gpu.zeros::<f32>(layout.n())?;
    gptq_gemv_cuda(gpu, &qw, &qz, &s, &g, layout, format, &xd, &mut partial, &mut y)?;
    gpu.download(&y)
}

/// Dequantize an AWQ layer on the GPU into `out` (`[K, N]`), same semantics and checks as
/// [`crate::awq::awq_dequantize_into`] (scales and output share the type `T`). Asynchronous.
pub fn awq_dequantize_cuda<T: CudaElem>(
    gpu: &Gpu,
    qweight: &CudaSlice<i32>,
    scales: &CudaSlice<T>,
    qzeros: &CudaSlice<i32>,
    layout: &AwqLayout,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    expect("qweight", layout.k() * layout.packed_cols(), qweight.len())?;
    expect("qzeros", layout.groups() * layout.packed_cols(), qzeros.len())?;
    expect("scales", layout.groups() * layout.n(), scales.len())?;
    expect("out", layout.k() * layout.n(), out.len())?;
    let items = layout.k() * layout.packed_cols();
    if items == 0 {
        return Ok(());
    }
    let (k, n, gs) =
        (to_i32("K", layout.k())?, to_i32("N", layout.n())?, to_i32("group size", layout.group_size())?);
    let f = gpu.function(PtxFile::Awq, AWQ_DEQUANT[elem_index(T::DTYPE)])?;
    let mut launch = gpu.stream.launch_builder(&f);
    launch.arg(qweight).arg(qzeros).arg(scales).arg(out).arg(&k).arg(&n).arg(&gs);
    // Grid: words on x (two halves of 4 columns each at f32: 16-byte stores), chunks of 8 rows on
    // y (ptx/awq.cu).
    let parts = if std::mem::size_of::<T>() == 4 { 2 } else { 1 };
    // SAFETY: signature (const int*, const int*, const T*, T*, int, int, int) matches. AwqLayout
    // guarantees N % 8 == 0 and group_size | K; with the lengths checked above the kernel reads
    // qweight[k*N/8 + c] for k < K, c < N/8, qzeros and scales rows g = k / group_size < G
    // (scales as 8-wide vectors at 8c, 4-wide at 8c and 8c + 4 for f32: aligned), and writes
    // out[k*N + 8c .. +8] within K*N.
    unsafe { launch.launch(launch_2d(layout.packed_cols() * parts, layout.k().div_ceil(8))) }?;
    Ok(())
}

/// [`awq_dequantize_cuda`] from and to host slices.
pub fn awq_dequantize_cuda_host<T: CudaElem>(
    gpu: &Gpu,
    qweight: &[i32],
    scales: &[T],
    qzeros: &[i32],
    layout: &AwqLayout,
) -> Result<Vec<T>> {
    expect("qweight", layout.k() * layout.packed_cols(), qweight.len())?;
    let (qw, qz, s) = (gpu.upload(qweight)?, gpu.upload(qzeros)?, gpu.upload(scales)?);
    let mut out = gpu.zeros::<T>(layout.k() * layout.n())?;
    awq_dequantize_cuda(gpu, &qw, &s, &qz, layout, &mut out)?;
    gpu.download(&out)
}

/// Dequantize FP8 codes on the GPU: `out[r, c] = decode(codes[r, c]) * scales[r / br, c / bc]`
/// with `f32` scales (the checkpoint's `weight_scale_inv`, widened on the host if stored as
/// bf16), same semantics and checks as [`crate::fp8::fp8_dequantize_into`]. Asynchronous.
/// Identical bits to the CPU path except for NaN codes: the result is NaN on both, but the GPU's
/// multiplication returns the canonical NaN where the CPU keeps torch's payload.
pub fn fp8_dequantize_cuda<T: CudaElem>(
    gpu: &Gpu,
    codes: &CudaSlice<u8>,
    scales: &CudaSlice<f32>,
    format: Fp8Format,
    layout: &Fp8Layout,
    out: &mut CudaSlice<T>,
) -> Result<()> {
    let (sr, sc) = layout.scale_shape();
    expect("codes", layout.rows() * layout.cols(), codes.len())?;
    expect("scales", sr * sc, scales.len())?;
    expect("out", layout.rows() * layout.cols(), out.len())?;
    if codes.is_empty() {
        return Ok(());
    }
    let (br, bc) = layout.block_size();
    let (rows, cols, br, bc) = (
        to_i32("rows", layout.rows())?,
        to_i32("cols", layout.cols())?,
        to_i32("block rows", br)?,
        to_i32("block cols", bc)?,
    );
    let fmt = match format {
        Fp8Format::E4M3 => 0,
        Fp8Format::E5M2 => 1,
    };
    let f = gpu.function(PtxFile::Fp8, FP8_DEQUANT[fmt][elem_index(T::DTYPE)])?;
    // The kernel's paths (ptx/fp8.cu): CV codes (16 bytes of output: 8 at f16/bf16, 4 at f32) x 8
    // rows per thread on a 2-D grid when the columns and column blocks are multiples of CV, else
    // 8 or 1 code per thread.
    let (c, blk_c) = (layout.cols(), layout.block_size().1);
    let cv = 16 / std::mem::size_of::<T>();
    let cfg = if c.is_multiple_of(cv) && blk_c.is_multiple_of(cv) {
        launch_2d(c / cv, layout.rows().div_ceil(8))
    } else {
        launch_1d(if c.is_multiple_of(8) { codes.len() / 8 } else { codes.len() })
    };
    let mut launch = gpu.stream.launch_builder(&f);
    launch.arg(codes).arg(scales).arg(out).arg(&rows).arg(&cols).arg(&br).arg(&bc);
    // SAFETY: signature (const u8*, const float*, T*, int, int, int, int) matches. With the
    // lengths checked above the kernel reads codes and writes out at r*cols + c < rows*cols
    // (CV-wide vectors only when cols % CV == 0, 8-wide only when cols % 8 == 0: aligned from
    // the 256-byte aligned cudaMalloc bases), and scales at
    // (r / br) * ceil(cols / bc) + c / bc < scale rows * scale cols.
    unsafe { launch.launch(cfg) }?;
    Ok(())
}

/// [`fp8_dequantize_cuda`] from and to host slices (scales in any [`Elem`] type, widened to f32).
pub fn fp8_dequantize_cuda_host<S: Elem, T: CudaElem>(
    gpu: &Gpu,
    codes: &[u8],
    scales: &[S],
    format: Fp8Format,
    layout: &Fp8Layout,
) -> Result<Vec<T>> {
    let (sr, sc) = layout.scale_shape();
    expect("scales", sr * sc, scales.len())?;
    let mut sf = vec![0f32; scales.len()];
    S::slice_to_f32(scales, &mut sf);
    let (c, s) = (gpu.upload(codes)?, gpu.upload(&sf)?);
    let mut out = gpu.zeros::<T>(layout.rows() * layout.cols())?;
    fp8_dequantize_cuda(gpu, &c, &s, format, layout, &mut out)?;
    gpu.download(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Extents up to 2^30 reach the kernels; larger ones are a typed error (the kernels' 32-bit
    /// grid-stride counters need the headroom).
    #[test]
    fn extents_above_2_30_are_too_large() {
        assert_eq!(to_i32("rows", 1 << 30), Ok(1 << 30));
        assert_eq!(to_i32("rows", 0), Ok(0));
        let e = to_i32("rows", (1 << 30) + 1).unwrap_err();
        assert_eq!(
            e,
            Error::Kernel(KernelError::TooLarge { what: "rows", value: (1 << 30) + 1, max: 1 << 30 })
        );
        assert!(to_i32("cols", usize::MAX).is_err());
    }

    /// Every launch shape is a legal block of 256 threads whose grid covers the items (unless
    /// the grid limit clamps it: the kernels grid-stride), and `launch_2d` keeps a whole warp
    /// on x.
    #[test]
    fn launch_shapes_cover_their_items() {
        for x in [1usize, 2, 5, 8, 16, 31, 32, 33, 100, 4096, 1 << 21] {
            for y in [1usize, 3, 64, 100_000, 1 << 24] {
                for (cfg, warp_on_x) in [(launch_2d(x, y), true), (launch_short_rows(x, y), x >= 32)] {
                    let (bx, by, bz) = cfg.block_dim;
                    let (gx, gy, gz) = cfg.grid_dim;
                    assert_eq!((bz, gz), (1, 1));
                    assert!(bx * by <= 256 && bx * by > 128, "{x}x{y}: block {bx}x{by}");
                    assert!((1..=1 << 20).contains(&gx) && (1..=65_535).contains(&gy));
                    assert!((gx * bx) as usize >= x.min(1 << 20), "{x}x{y}: x not covered");
                    assert!((gy * by) as usize >= y.min(65_535), "{x}x{y}: y not covered");
                    if warp_on_x {
                        assert_eq!(bx % 32, 0, "{x}x{y}: block {bx}x{by}");
                    } else {
                        assert_eq!(bx as usize, x, "short rows: one block row per row");
                    }
                }
            }
        }
    }
}
