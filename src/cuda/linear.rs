//! [`DeviceQuantLinear`]: a quantized linear layer resident on the GPU, multiplied by the fused
//! GEMV family of `ptx/gemv.cuh` (every scheme and width, batches of up to 8 rows per pass over
//! the weights), with the geometry its launches use ([`RowPlan`], [`ColPlan`]).

use super::{Gpu, PtxFile, to_i32};
use crate::elem::{FloatType, FloatVec};
use crate::error::{CudaError, Error, KernelError, Result, expect_len as expect};
use crate::fp8::Fp8Format;
use crate::gptq::ZeroFormat;
use crate::hqq::{Axis, PackedWords};
use crate::layer::QuantWeight;
use cudarc::driver::{CudaFunction, CudaSlice, CudaView, CudaViewMut, LaunchConfig, PushKernelArg};

/// Activation rows one GEMV launch multiplies (its `_b8` entry); larger batches run in chunks.
pub const GEMV_MAX_BATCH: usize = 8;

/// Threads per block of the row skeleton's launches (8 warps).
const ROW_BLOCK: usize = 256;

/// The smallest batch [`DeviceQuantLinear`] multiplies on tensor cores (where the scheme has a
/// GEMM); smaller ones run the GEMV in passes of up to 8 rows.
pub const GEMM_MIN_BATCH: usize = 16;

/// The smallest batch [`DeviceQuantLinear`] multiplies on the wide group-scaled GEMM
/// (`*_gemmw_*`: a block of 4 warps shares 64 rows, x converted once per block) instead of the
/// 32-row tiles, where the layer runs the group-scaled family and the scheme has one.
pub const GEMM_WIDE_MIN_BATCH: usize = 64;

/// Threads per block of the wide GEMM (4 warps sharing 64 rows).
const GEMM_WIDE_BLOCK: usize = 128;

/// The wide GEMM's warp tile: 4 x 16 rows (`qk_gemmw_mt` in `ptx/gemm.cuh`) by 32 outputs.
const GEMM_WIDE_MT: usize = 4;
const GEMM_WIDE_COLS: usize = 32;

/// Rows per GEMM launch of an act-order layer (its inputs are gathered into the shared scratch
/// first: 256 rows of the layer's inputs, so a prefill reads the weight once per 256 rows).
const GEMM_CHUNK: usize = 256;

/// Threads per block of the GEMM (4 warps, each a tile).
const GEMM_BLOCK: usize = 128;

/// Tiles below which the group-scaled GEMM may split K (its counters: one per tile).
const GEMM_SPLIT_ITEMS: usize = 2048;

/// Partial sums split K may write for up to 16 rows (4 MiB): there the GEMM is bound by the
/// weight's bytes, and each partial sum is written and read back, so this bounds what split K
/// adds (at batch 16 on a 4-bit 4096 x 14336 layer, 16 slices: a quarter of the weight's
/// bytes). More rows may write `rows / 16` times as many, up to [`GEMM_SPLIT_MAX_FLOATS`]: their
/// multiply-adds grow as fast.
const GEMM_SPLIT_FLOATS: usize = 1 << 20;

/// The most partial sums one launch's split K writes (16 MiB of the [`Gpu`]'s shared scratch).
const GEMM_SPLIT_MAX_FLOATS: usize = 4 * GEMM_SPLIT_FLOATS;

/// Where a layer's partial sums start in the shared scratch, after its gathered inputs: a
/// multiple of 64 values (256 bytes), so vector stores there stay aligned and the kernels'
/// `discard.global.L2` (split K, the column GEMV) finds their rows on whole 128-byte lines.
const SCRATCH_ALIGN: usize = 64;

/// Slices of K for the group-scaled GEMM of `m` rows: where the `tiles` (warps) fill less than
/// half of `wave` (the warps the GPU holds at once for the entry), as many slices as keep the
/// work items within that one wave, with at least 4 chunks of 32 inputs a slice and the partial
/// sums within [`GEMM_SPLIT_FLOATS`]' rule.
fn gemm_slices(tiles: usize, chunks: usize, m: usize, n: usize, wave: usize) -> usize {
    if tiles == 0 || tiles >= GEMM_SPLIT_ITEMS || 2 * tiles > wave {
        return 1;
    }
    let floats = GEMM_SPLIT_FLOATS.saturating_mul(m.div_ceil(16).max(1)).min(GEMM_SPLIT_MAX_FLOATS);
    (wave / tiles).min(chunks / 4).min(floats / (m * n).max(1)).max(1)
}

/// The warps of `f`'s launches in blocks of `block` threads that the GPU holds at once (its
/// multiprocessors times the blocks each holds: registers, shared memory), at least one block;
/// [`GEMM_SPLIT_ITEMS`] where the driver cannot say (a speed choice: no reason to fail).
fn wave(gpu: &Gpu, f: &CudaFunction, block: usize) -> usize {
    let blocks = f.occupancy_max_active_blocks_per_multiprocessor(block as u32, 0, None);
    match (gpu.multiprocessors(), blocks) {
        (Ok(sms), Ok(b)) => (sms * b as usize).max(1) * (block / 32),
        _ => GEMM_SPLIT_ITEMS,
    }
}

/// A launch's use of the shared scratch against what it holds: [`KernelError::TooLarge`] past
/// it (never, with the reservations `new` makes; checked because the launch trusts it).
fn scratch_fits(what: &'static str, need: usize, have: usize) -> Result<()> {
    if need > have {
        return Err(Error::Kernel(KernelError::TooLarge { what, value: need, max: have }));
    }
    Ok(())
}

/// The GEMM launch for `m` rows: a warp per work item, a tile of `16 mt` rows x `cols` outputs
/// (and one of `kslices` slices of K).
fn gemm_launch(m: usize, n: usize, mt: usize, cols: usize, kslices: usize) -> LaunchConfig {
    let tiles = n.div_ceil(cols) * m.div_ceil(16 * mt) * kslices;
    let blocks = tiles.div_ceil(GEMM_BLOCK / 32).clamp(1, 1 << 20);
    LaunchConfig {
        grid_dim: (blocks as u32, 1, 1),
        block_dim: (GEMM_BLOCK as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The wide GEMM's launch for `m` rows: a block per 64 rows, [`GEMM_WIDE_BLOCK`] / 32 warp tiles
/// and slice of K.
fn gemm_wide_launch(m: usize, n: usize, kslices: usize) -> LaunchConfig {
    let warps = GEMM_WIDE_BLOCK / 32;
    let items = n.div_ceil(GEMM_WIDE_COLS).div_ceil(warps) * m.div_ceil(16 * GEMM_WIDE_MT) * kslices;
    LaunchConfig {
        grid_dim: (items.clamp(1, 1 << 20) as u32, 1, 1),
        block_dim: (GEMM_WIDE_BLOCK as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `_b1` or `_b8`: the entry for a chunk of `nb` rows.
fn maxb_suffix(maxb: usize) -> &'static str {
    if maxb == 1 { "b1" } else { "b8" }
}

fn elem_name(t: FloatType) -> &'static str {
    match t {
        FloatType::F32 => "f32",
        FloatType::F16 => "f16",
        FloatType::Bf16 => "bf16",
    }
}

/// The two tensor-core GEMM families of `ptx/gemm.cuh`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKind {
    /// `*_gemm_*_m{1,4}`: each weight decoded and rounded to f16 in registers (so the result
    /// carries W's rounding); tiles of 16 or 64 rows by 32 outputs; any group layout.
    Rounded,
    /// `*_gemm`**`g`**`_*_m{1,2}`: the codes enter the tensor cores as exact f16 integers and each
    /// group's scale and zero point apply in f32 when the group ends (no weight is rounded, and
    /// the decode is about one instruction per weight); tiles of 16 rows by 64 outputs or 32 rows
    /// by 32 (64 for AWQ). For layers with `in % 32 == 0`, `out % 64 == 0` and groups of whole
    /// aligned 32-input blocks: GPTQ (sorted), HQQ on axis 1 and AWQ with power-of-two
    /// groups, FP8 with power-of-two column blocks (or one spanning the row) and no E4M3 NaN code.
    GroupScaled,
}

impl GemmKind {
    /// Both families.
    pub const ALL: [GemmKind; 2] = [GemmKind::Rounded, GemmKind::GroupScaled];

    /// The rows of the small and the large tile, in 16s (`_m1` and `_m4` or `_m2`).
    pub fn tile_rows(self) -> [usize; 2] {
        match self {
            GemmKind::Rounded => [1, 4],
            GemmKind::GroupScaled => [1, 2],
        }
    }
}

/// The fused GEMV entry of a scheme, by name: `hqq_gemv_{bits}b_{elem}_b{1,8}`,
/// `gptq_gemv_{bits}b_{elem}_b{1,8}`, `awq_gemv_4b_{elem}_b{1,8}`, `fp8_gemv_{e4m3,e5m2}_b{1,8}`,
/// `int8_gemv_b{1,8}`, `int4_gemv_b{1,8}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemvKernel {
    /// HQQ of a width (1, 2, 3, 4, 8) with parameters of an element type.
    Hqq(u8, FloatType),
    /// GPTQ of a width (2, 3, 4, 8) with scales of an element type.
    Gptq(u8, FloatType),
    /// AWQ (4-bit) with scales of an element type.
    Awq(FloatType),
    /// FP8 of a format (f32 scales).
    Fp8(Fp8Format),
    /// int8 symmetric.
    Int8,
    /// int4 asymmetric.
    Int4,
}

impl GemvKernel {
    /// Every scheme, width and parameter type of the family.
    pub fn all() -> Vec<GemvKernel> {
        let elems = [FloatType::F32, FloatType::F16, FloatType::Bf16];
        let mut v = Vec::new();
        for b in [1, 2, 3, 4, 8] {
            v.extend(elems.map(|t| GemvKernel::Hqq(b, t)));
        }
        for b in [2, 3, 4, 8] {
            v.extend(elems.map(|t| GemvKernel::Gptq(b, t)));
        }
        v.extend(elems.map(GemvKernel::Awq));
        v.extend([GemvKernel::Fp8(Fp8Format::E4M3), GemvKernel::Fp8(Fp8Format::E5M2)]);
        v.extend([GemvKernel::Int8, GemvKernel::Int4]);
        v
    }

    /// The PTX file of the GEMV entry for batches of up to `maxb` rows (HQQ's batch-1 and
    /// batch-8 entries live in modules of their own, so a load compiles only what it uses).
    pub fn file(self, maxb: usize) -> PtxFile {
        match self {
            GemvKernel::Hqq(..) if maxb == 1 => PtxFile::HqqGemv,
            GemvKernel::Hqq(..) => PtxFile::HqqGemv8,
            GemvKernel::Gptq(..) => PtxFile::GptqGemv,
            GemvKernel::Awq(_) => PtxFile::Awq,
            GemvKernel::Fp8(_) => PtxFile::Fp8,
            GemvKernel::Int8 | GemvKernel::Int4 => PtxFile::Intx,
        }
    }

    /// The PTX file of a GEMM family's entries for the scheme (HQQ's and GPTQ's have modules of
    /// their own, one per family; AWQ's and FP8's are in their dequantization's file).
    pub fn gemm_file(self, kind: GemmKind) -> PtxFile {
        match self {
            GemvKernel::Hqq(..) if kind == GemmKind::GroupScaled => PtxFile::HqqGemmG,
            GemvKernel::Hqq(..) => PtxFile::HqqGemm,
            GemvKernel::Gptq(..) if kind == GemmKind::GroupScaled => PtxFile::GptqGemmG,
            GemvKernel::Gptq(..) => PtxFile::GptqGemm,
            GemvKernel::Awq(_) => PtxFile::Awq,
            GemvKernel::Fp8(_) => PtxFile::Fp8,
            GemvKernel::Int8 | GemvKernel::Int4 => PtxFile::Intx,
        }
    }

    /// The entry's name for batches of up to `maxb` rows (1 or 8).
    pub fn entry(self, maxb: usize) -> String {
        let m = maxb_suffix(maxb);
        match self {
            GemvKernel::Hqq(b, t) => format!("hqq_gemv_{b}b_{}_{m}", elem_name(t)),
            GemvKernel::Gptq(b, t) => format!("gptq_gemv_{b}b_{}_{m}", elem_name(t)),
            GemvKernel::Awq(t) => format!("awq_gemv_4b_{}_{m}", elem_name(t)),
            GemvKernel::Fp8(Fp8Format::E4M3) => format!("fp8_gemv_e4m3_{m}"),
            GemvKernel::Fp8(Fp8Format::E5M2) => format!("fp8_gemv_e5m2_{m}"),
            GemvKernel::Int8 => format!("int8_gemv_{m}"),
            GemvKernel::Int4 => format!("int4_gemv_{m}"),
        }
    }

    /// The tensor-core GEMM entry of a family for tiles of `mt` x 16 rows (one of
    /// [`GemmKind::tile_rows`]), for the schemes that have one: 4- and 8-bit HQQ and GPTQ, AWQ,
    /// FP8.
    pub fn gemm_entry(self, kind: GemmKind, mt: usize) -> Option<String> {
        let g = match kind {
            GemmKind::Rounded => "",
            GemmKind::GroupScaled => "g",
        };
        match self {
            GemvKernel::Hqq(b @ (4 | 8), t) => Some(format!("hqq_gemm{g}_{b}b_{}_m{mt}", elem_name(t))),
            GemvKernel::Gptq(b @ (4 | 8), t) => Some(format!("gptq_gemm{g}_{b}b_{}_m{mt}", elem_name(t))),
            GemvKernel::Awq(t) => Some(format!("awq_gemm{g}_4b_{}_m{mt}", elem_name(t))),
            GemvKernel::Fp8(Fp8Format::E4M3) => Some(format!("fp8_gemm{g}_e4m3_m{mt}")),
            GemvKernel::Fp8(Fp8Format::E5M2) => Some(format!("fp8_gemm{g}_e5m2_m{mt}")),
            _ => None,
        }
    }

    /// The wide group-scaled GEMM's entry (`{hqq,gptq}_gemmw_{4,8}b_{elem}`,
    /// `fp8_gemmw_{e4m3,e5m2}`: blocks of 64 rows by 4 tiles of 32 outputs, the group-scaled
    /// entries' parameters), for the schemes that have one: 4- and 8-bit HQQ and GPTQ, FP8 (AWQ's
    /// 32-row tiles are already 64 outputs wide, which a wide block would not beat).
    pub fn gemm_wide_entry(self) -> Option<String> {
        match self {
            GemvKernel::Hqq(b @ (4 | 8), t) => Some(format!("hqq_gemmw_{b}b_{}", elem_name(t))),
            GemvKernel::Gptq(b @ (4 | 8), t) => Some(format!("gptq_gemmw_{b}b_{}", elem_name(t))),
            GemvKernel::Fp8(Fp8Format::E4M3) => Some("fp8_gemmw_e4m3".to_owned()),
            GemvKernel::Fp8(Fp8Format::E5M2) => Some("fp8_gemmw_e5m2".to_owned()),
            _ => None,
        }
    }

    /// The PTX file of [`gemm_wide_entry`](Self::gemm_wide_entry) (HQQ's and GPTQ's have modules
    /// of their own, FP8's is its dequantization's file).
    pub fn gemm_wide_file(self) -> PtxFile {
        match self {
            GemvKernel::Hqq(..) => PtxFile::HqqGemmW,
            GemvKernel::Fp8(_) => PtxFile::Fp8,
            _ => PtxFile::GptqGemmW,
        }
    }

    /// Outputs per tile of a GEMM family's entry for tiles of `mt` x 16 rows: 32, but 64 in the
    /// group-scaled family's 16-row entries and in all of AWQ's (`qk_gemmg_nt` in
    /// `ptx/gemm.cuh`). A layer takes a family only with `out` a multiple of both its entries'.
    pub fn gemm_cols(self, kind: GemmKind, mt: usize) -> usize {
        match (self, kind) {
            (GemvKernel::Awq(_), GemmKind::GroupScaled) => 64,
            (_, GemmKind::GroupScaled) if mt == 1 => 64,
            _ => 32,
        }
    }

    /// A GEMM family's entry parameter count (the group-scaled family adds its split-K
    /// arguments: part, counters, slices).
    pub fn gemm_params(self, kind: GemmKind) -> usize {
        let split = if kind == GemmKind::GroupScaled { 3 } else { 0 };
        split
            + match self {
                GemvKernel::Hqq(..) | GemvKernel::Gptq(..) => 11,
                _ => 9,
            }
    }

    /// The entry's parameter count.
    pub fn params(self) -> usize {
        match self {
            GemvKernel::Hqq(..) => 13,
            GemvKernel::Gptq(..) => 13,
            GemvKernel::Awq(_) => 12,
            GemvKernel::Fp8(_) | GemvKernel::Int4 => 11,
            GemvKernel::Int8 => 10,
        }
    }
}

/// Geometry of a row-skeleton GEMV (HQQ, FP8, int8, int4; see `ptx/gemv.cuh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowPlan {
    /// Packed words per segment.
    pub seg: usize,
    /// Lanes per segment: the largest power of two up to 32 and up to the segment's chunks.
    pub team: usize,
    /// Segments.
    pub segs: usize,
    /// Partial sums per output row (1: the kernel writes `y` itself).
    pub per: usize,
}

impl RowPlan {
    /// The plan for `words` packed words of `codes` codes each (`planar`: HQQ's planes, else
    /// consecutive codes) of a weight with `in_dim` inputs, `ch` words a chunk:
    /// segments as long as possible (a whole row's words when the planes line up with rows).
    /// [`KernelError::NotMultiple`] when no segment is a whole number of chunks.
    ///
    /// ```
    /// use quant_kernels::cuda::RowPlan;
    /// // 4-bit HQQ, 4096 x 4096: 2 codes a byte in planes of 8 M bytes; a segment is a row.
    /// let p = RowPlan::new(4096 * 4096 / 2, 4096, 2, true, 8)?;
    /// assert_eq!((p.seg, p.team, p.segs, p.per), (4096, 32, 2048, 1));
    /// // int4 (two consecutive codes a byte): a row of 11008 is 5504 bytes.
    /// let p = RowPlan::new(4096 * 11008 / 2, 11008, 2, false, 8)?;
    /// assert_eq!((p.seg, p.per), (5504, 1));
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn new(words: usize, in_dim: usize, codes: usize, planar: bool, ch: usize) -> Result<Self> {
        let seg = if planar { gcd(in_dim, words) } else { in_dim / codes };
        if seg == 0 || !seg.is_multiple_of(ch) || (!planar && !in_dim.is_multiple_of(codes)) {
            return Err(Error::Kernel(KernelError::NotMultiple {
                what: "GEMV segment (words)",
                value: seg,
                multiple: ch,
            }));
        }
        let flat = if planar { seg } else { codes * seg };
        let chunks = seg / ch;
        let team = 1usize << (usize::BITS - 1 - chunks.leading_zeros()).min(5);
        Ok(RowPlan { seg, team, segs: words / seg, per: in_dim / flat })
    }

    /// One block of 256 threads per 8 warps of segments (grid-strided past 2^20 blocks).
    fn launch(&self) -> LaunchConfig {
        let warps = self.segs.div_ceil(32 / self.team);
        let blocks = warps.div_ceil(ROW_BLOCK / 32).clamp(1, 1 << 20);
        LaunchConfig {
            grid_dim: (blocks as u32, 1, 1),
            block_dim: (ROW_BLOCK as u32, 1, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// Geometry of a column-skeleton GEMV (GPTQ, AWQ): `slice_rows` input rows per thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColPlan {
    /// Input rows per slice (a multiple of the decoder's row block).
    pub slice_rows: usize,
    /// Slices (partial sums per output; 1: the kernel writes `y` itself).
    pub slices: usize,
    /// Adjacent columns per thread.
    pub cols: usize,
}

impl ColPlan {
    /// The largest of 128, 64, 32, 16, 8, 4, 1 rows that is a multiple of `rows` (the decoder's
    /// row block) and divides `k`.
    ///
    /// ```
    /// use quant_kernels::cuda::ColPlan;
    /// let p = ColPlan::new(4096, 8, 4)?; // 4-bit GPTQ: 8-row word blocks
    /// assert_eq!((p.slice_rows, p.slices), (128, 32));
    /// assert!(ColPlan::new(48, 32, 4).is_err()); // 3-bit: 32-row blocks
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn new(k: usize, rows: usize, cols: usize) -> Result<Self> {
        let slice_rows = [128usize, 64, 32, 16, 8, 4, 1]
            .into_iter()
            .find(|&s| s.is_multiple_of(rows) && k.is_multiple_of(s))
            .ok_or(Error::Kernel(KernelError::NotMultiple { what: "GEMV K", value: k, multiple: rows }))?;
        let plan = ColPlan { slice_rows, slices: k / slice_rows, cols };
        // One launch covers the slices exactly (gemv.cuh's single-launch column skeleton).
        let gy = plan.slices.div_ceil(COL_WARPS);
        if gy > 65_535 {
            return Err(Error::Kernel(KernelError::TooLarge {
                what: "GEMV slices / 8",
                value: gy,
                max: 65_535,
            }));
        }
        Ok(plan)
    }

    /// Block columns of the launch for `n` outputs: one counter each.
    pub fn block_columns(&self, n: usize) -> usize {
        (n / self.cols).div_ceil(32)
    }

    /// Blocks of 32 column vectors x 8 warps of slices, covering both exactly.
    fn launch(&self, n: usize) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (self.block_columns(n) as u32, self.slices.div_ceil(COL_WARPS) as u32, 1),
            block_dim: (32, COL_WARPS as u32, 1),
            shared_mem_bytes: 0,
        }
    }
}

/// Warps of slices per block of the column skeleton.
const COL_WARPS: usize = 8;

/// Scales or zeros on the device in their stored element type.
#[derive(Debug)]
enum DevFloat {
    F32(CudaSlice<f32>),
    F16(CudaSlice<half::f16>),
    Bf16(CudaSlice<half::bf16>),
}

impl DevFloat {
    fn upload(gpu: &Gpu, v: &FloatVec) -> Result<Self> {
        Ok(match v {
            FloatVec::F32(v) => DevFloat::F32(gpu.upload(v)?),
            FloatVec::F16(v) => DevFloat::F16(gpu.upload(v)?),
            FloatVec::Bf16(v) => DevFloat::Bf16(gpu.upload(v)?),
        })
    }
    fn dtype(&self) -> FloatType {
        match self {
            DevFloat::F32(_) => FloatType::F32,
            DevFloat::F16(_) => FloatType::F16,
            DevFloat::Bf16(_) => FloatType::Bf16,
        }
    }
}

/// `launch.arg(v)` for whichever element type `v` holds.
fn push_float<'a>(launch: &mut cudarc::driver::LaunchArgs<'a>, v: &'a DevFloat) {
    match v {
        DevFloat::F32(s) => launch.arg(s),
        DevFloat::F16(s) => launch.arg(s),
        DevFloat::Bf16(s) => launch.arg(s),
    };
}

#[derive(Debug)]
enum DevWords {
    U8(CudaSlice<u8>),
    I32(CudaSlice<i32>),
}

/// A scheme's tensors on the device and the integer arguments of its entry.
#[derive(Debug)]
enum DevWeight {
    Hqq {
        words: DevWords,
        scales: DevFloat,
        zeros: DevFloat,
        ints: [i32; 4],
        plan: RowPlan,
    },
    Gptq {
        qweight: CudaSlice<i32>,
        qzeros: CudaSlice<i32>,
        scales: DevFloat,
        g_idx: CudaSlice<i32>,
        format: i32,
    },
    Awq {
        qweight: CudaSlice<i32>,
        qzeros: CudaSlice<i32>,
        scales: DevFloat,
        group: i32,
    },
    Fp8 {
        codes: CudaSlice<u8>,
        scales: CudaSlice<f32>,
        block: (i32, i32),
        plan: RowPlan,
    },
    Int8 {
        codes: CudaSlice<u8>,
        scales: CudaSlice<f32>,
        per_row: i32,
        plan: RowPlan,
    },
    Int4 {
        packed: CudaSlice<u8>,
        scales: CudaSlice<f32>,
        zeros: CudaSlice<u8>,
        group: i32,
        plan: RowPlan,
    },
}

/// A quantized linear layer on the GPU: `y = W x (+ bias)` for batches of f32 activation rows,
/// the weights decoded in registers, never written out.
///
/// Built once from a [`QuantWeight`] ([`DeviceQuantLinear::new`]: validated, uploaded, entries
/// loaded, its share of the [`Gpu`]'s scratch reserved), then [`forward_into`](Self::forward_into) launches on device
/// buffers with no allocation. Batches below [`GEMM_MIN_BATCH`] (and every batch of a layer
/// without a GEMM) run the scheme's fused GEMV, up to 8 rows per pass over the weights; from
/// [`GEMM_MIN_BATCH`] rows, the tensor-core GEMM where [`has_gemm`](Self::has_gemm).
///
/// Every scheme's GEMV equals dequantize-then-multiply within f32 rounding (each group's zero
/// and scale are factored out of its sum); the GEMM rounds weights and activations to f16 once
/// and accumulates in f32 (the bound in `ptx/gemm.cuh`). Both are deterministic on a given GPU
/// and driver (a fixed summation order, no atomics; how many slices the group-scaled GEMM splits
/// K into follows the GPU's multiprocessors and the entry's occupancy). GPTQ act-order layers are sorted by group at construction and
/// their inputs gathered on the device per call, so their groups change only at group
/// boundaries.
///
/// ```no_run
/// # #[cfg(feature = "cuda")] {
/// use quant_kernels::cuda::{DeviceQuantLinear, Gpu};
/// use quant_kernels::{Parallelism, QuantWeight, intx};
/// let gpu = Gpu::new(0)?;
/// let w: Vec<f32> = (0..64 * 256).map(|i| (i % 7) as f32 - 3.0).collect();
/// let weight = QuantWeight::Int4(intx::quantize_int4(&w, 64, 256, 32, Parallelism::SERIAL)?);
/// let mut layer = DeviceQuantLinear::new(&gpu, &weight)?;
/// let x = gpu.upload(&vec![1.0f32; 2 * 256])?; // two rows of 256 inputs
/// let mut y = gpu.zeros::<f32>(2 * 64)?;
/// layer.forward_into(&gpu, &x, 2, &mut y)?; // queued on gpu's stream
/// let y = gpu.download(&y)?;
/// assert_eq!(y.len(), 128);
/// # }
/// # Ok::<(), quant_kernels::Error>(())
/// ```
#[derive(Debug)]
pub struct DeviceQuantLinear {
    out: usize,
    inp: usize,
    kernel: GemvKernel,
    weight: DevWeight,
    col: Option<ColPlan>,
    f1: CudaFunction,
    f8: CudaFunction,
    bias: Option<CudaSlice<f32>>,
    perm: Option<super::DevicePerm>,
    /// Values of the shared scratch ([`Gpu`]'s) before the partial sums: the gathered inputs of
    /// an act-order layer (GEMM_CHUNK rows with a GEMM, else GEMV_MAX_BATCH), rounded up to
    /// SCRATCH_ALIGN; 0 without act-order.
    part_at: usize,
    /// The shared scratch this layer's launches use: f32 values (gathered inputs, then partial
    /// sums: the GEMV's for GEMV_MAX_BATCH rows, the group-scaled GEMM's split K up to
    /// GEMM_SPLIT_MAX_FLOATS) and u32 counters (the column skeleton's one per block column, split
    /// K's GEMM_SPLIT_ITEMS).
    scratch: (usize, usize),
    reduce_rows: CudaFunction,
    add_bias: CudaFunction,
    gather: CudaFunction,
    /// The tensor-core GEMM, where the scheme and shape have one.
    gemm: Option<Gemm>,
    /// GPTQ: every aligned 16 rows of the (sorted) g_idx share a group.
    one_group: i32,
    /// The smallest batch the GEMM takes ([`GEMM_MIN_BATCH`] unless set).
    gemm_from: usize,
    /// The smallest batch the wide group-scaled GEMM takes ([`GEMM_WIDE_MIN_BATCH`] unless set).
    wide_from: usize,
    /// The most slices the group-scaled GEMM splits K into (`usize::MAX` unless set).
    max_slices: usize,
}

/// A layer's tensor-core GEMM: its family and the entries of its small and large tiles.
#[derive(Debug)]
struct Gemm {
    kind: GemmKind,
    f: [CudaFunction; 2],
    /// Whether the layer's shape and groups allow [`GemmKind::GroupScaled`].
    grouped_ok: bool,
    /// The group-scaled family's wide entry, where the scheme has one.
    wide: Option<CudaFunction>,
    /// The group-scaled family's waves ([`wave`]) for `f` and `wide`, which its split K fills.
    waves: [usize; 3],
}

impl Gemm {
    /// The family's entries for `kernel`, or `None` where the scheme has no GEMM.
    fn load(gpu: &Gpu, kernel: GemvKernel, kind: GemmKind, grouped_ok: bool) -> Result<Option<Gemm>> {
        let [m1, m2] = kind.tile_rows();
        let (Some(e1), Some(e2)) = (kernel.gemm_entry(kind, m1), kernel.gemm_entry(kind, m2)) else {
            return Ok(None);
        };
        let grouped = kind == GemmKind::GroupScaled;
        let f = [gpu.function(kernel.gemm_file(kind), &e1)?, gpu.function(kernel.gemm_file(kind), &e2)?];
        let wide = match kernel.gemm_wide_entry() {
            Some(e) if grouped => Some(gpu.function(kernel.gemm_wide_file(), &e)?),
            _ => None,
        };
        let mut waves = [1; 3];
        if grouped {
            waves[0] = wave(gpu, &f[0], GEMM_BLOCK);
            waves[1] = wave(gpu, &f[1], GEMM_BLOCK);
            if let Some(w) = &wide {
                waves[2] = wave(gpu, w, GEMM_WIDE_BLOCK);
            }
        }
        Ok(Some(Gemm { kind, f, grouped_ok, wide, waves }))
    }
}

/// Rows `b0 .. b0 + nb` of the input (`inp` values a row): of `x`, or the gathered scratch rows
/// `0 .. nb` of an act-order layer (`xs`).
fn input_rows<'a>(
    xs: Option<&'a CudaViewMut<'_, f32>>,
    x: &'a CudaSlice<f32>,
    inp: usize,
    b0: usize,
    nb: usize,
) -> CudaView<'a, f32> {
    match xs {
        Some(xs) => xs.slice(0..nb * inp),
        None => x.slice(b0 * inp..(b0 + nb) * inp),
    }
}

/// A GEMM launch: `f` 0 and 1 the family's entries of 16 `mt` rows (`Gemm::f`), 2 the wide one.
#[derive(Clone, Copy, Debug)]
struct LaunchPlan {
    f: usize,
    mt: usize,
    cols: usize,
    tiles: usize,
    kslices: usize,
    wave: usize,
}

/// How [`DeviceQuantLinear`] runs a batch on the tensor-core GEMM
/// ([`gemm_plan`](DeviceQuantLinear::gemm_plan)): a warp per tile and slice of K.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GemmPlan {
    /// The PTX entry launched.
    pub entry: String,
    /// Rows a launch multiplies (act-order layers: up to 256).
    pub rows: usize,
    /// A warp's tile: rows, outputs.
    pub tile: (usize, usize),
    /// Tiles covering the launch's rows and outputs.
    pub tiles: usize,
    /// Slices K is split into (the group-scaled family, where tiles are few; else 1).
    pub kslices: usize,
    /// Warps the GPU holds at once for the entry, which split K fills (0 for the rounding
    /// family, which does not split).
    pub wave: usize,
}

/// A forward call's share of the [`Gpu`]'s scratch: gathered inputs, partial sums, counters.
struct Scratch<'a> {
    xs: CudaViewMut<'a, f32>,
    part: CudaViewMut<'a, f32>,
    counters: &'a mut CudaSlice<u32>,
}

fn bias_f32(w: &QuantWeight) -> Option<Vec<f32>> {
    let b = match w {
        QuantWeight::Gptq(l) => l.bias.as_ref(),
        QuantWeight::Awq(l) => l.bias.as_ref(),
        QuantWeight::Fp8(l) => l.bias.as_ref(),
        _ => None,
    };
    b.map(|b| b.to_f32())
}

fn words_i32(what: &'static str, words: usize) -> Result<i32> {
    // The row skeleton indexes words in 32 bits.
    if words > i32::MAX as usize {
        return Err(Error::Kernel(KernelError::TooLarge { what, value: words, max: i32::MAX as usize }));
    }
    Ok(words as i32)
}

impl DeviceQuantLinear {
    /// Validate `w`, upload it to `gpu` and load its entries. HQQ needs `cols % 8 == 0` packed
    /// bytes (3-bit: `% 2` words) and segments of whole chunks, AWQ `in % 4 == 0`, FP8 and int8
    /// `in % 8 == 0`, int4 `in % 16 == 0` ([`KernelError::NotMultiple`] otherwise); FP8 must be one expert;
    /// dense weights have no kernel here ([`CudaError::NoKernel`]: use a dense GEMM).
    pub fn new(gpu: &Gpu, w: &QuantWeight) -> Result<Self> {
        w.validate()?;
        let (out, inp) = w.shape();
        to_i32("out features", out)?;
        to_i32("in features", inp)?;
        let (kernel, weight, col, perm) = match w {
            QuantWeight::Dense(_) => return Err(Error::Cuda(CudaError::NoKernel("dense weights"))),
            QuantWeight::Hqq(h) => {
                let p = &h.packed;
                let (bits, ch, planes) = match p.bits.get() {
                    3 => (3u8, 2usize, 10usize),
                    b => (b, 8, 8 / b as usize),
                };
                if !p.cols.is_multiple_of(ch) {
                    return Err(Error::Kernel(KernelError::NotMultiple {
                        what: "HQQ GEMV packed columns",
                        value: p.cols,
                        multiple: ch,
                    }));
                }
                let prows = p.packed_rows();
                let words = prows * p.cols;
                words_i32("HQQ packed words", words)?;
                let plan = RowPlan::new(words, inp, planes, true, ch)?;
                let (scales, zeros) = match (&h.scales, &h.zeros) {
                    (s, z) if s.dtype() == z.dtype() => {
                        (DevFloat::upload(gpu, s)?, DevFloat::upload(gpu, z)?)
                    }
                    (s, z) => (
                        DevFloat::upload(gpu, &FloatVec::F32(s.to_f32()))?,
                        DevFloat::upload(gpu, &FloatVec::F32(z.to_f32()))?,
                    ),
                };
                let words = match &p.words {
                    PackedWords::U8(v) => DevWords::U8(gpu.upload(v)?),
                    PackedWords::I32(v) => DevWords::I32(gpu.upload(v)?),
                };
                let axis = i32::from(h.layout.axis() == Axis::One);
                let ints = [
                    to_i32("code rows", p.rows)?,
                    to_i32("code cols", p.cols)?,
                    to_i32("packed rows", prows)?,
                    axis,
                ];
                (
                    GemvKernel::Hqq(bits, scales.dtype()),
                    DevWeight::Hqq { words, scales, zeros, ints, plan },
                    None,
                    None,
                )
            }
            QuantWeight::Gptq(l) => {
                let (sorted, order) = l.sort_by_group()?;
                let identity = order.iter().enumerate().all(|(i, &p)| i == p as usize);
                let perm = if identity { None } else { Some(super::DevicePerm::upload(gpu, &order)?) };
                let rows = match l.layout.bits() {
                    2 => 16,
                    3 => 32,
                    4 => 8,
                    _ => 4,
                };
                let col = ColPlan::new(inp, rows, 4)?;
                let g = super::DeviceGIdx::upload(gpu, sorted.g_idx.as_deref(), &sorted.layout)?;
                let scales = DevFloat::upload(gpu, &sorted.scales)?;
                let format = i32::from(sorted.format == ZeroFormat::V2);
                let kernel = GemvKernel::Gptq(l.layout.bits(), scales.dtype());
                let weight = DevWeight::Gptq {
                    qweight: gpu.upload(&sorted.qweight)?,
                    qzeros: gpu.upload(&sorted.qzeros)?,
                    scales,
                    g_idx: g.buf,
                    format,
                };
                (kernel, weight, Some(col), perm)
            }
            QuantWeight::Awq(l) => {
                let col = ColPlan::new(inp, 4, 8)?;
                let scales = DevFloat::upload(gpu, &l.scales)?;
                let kernel = GemvKernel::Awq(scales.dtype());
                let weight = DevWeight::Awq {
                    qweight: gpu.upload(&l.qweight)?,
                    qzeros: gpu.upload(&l.qzeros)?,
                    scales,
                    group: to_i32("group size", l.layout.group_size())?,
                };
                (kernel, weight, Some(col), None)
            }
            QuantWeight::Fp8(l) => {
                if l.experts != 1 {
                    return Err(Error::Kernel(KernelError::StackedExperts { experts: l.experts }));
                }
                words_i32("FP8 codes", l.codes.len())?;
                let plan = RowPlan::new(out * inp, inp, 1, false, 8)?;
                let (br, bc) = l.layout.block_size();
                let weight = DevWeight::Fp8 {
                    codes: gpu.upload(&l.codes)?,
                    scales: gpu.upload(&l.scales.to_f32())?,
                    block: (to_i32("block rows", br)?, to_i32("block cols", bc)?),
                    plan,
                };
                (GemvKernel::Fp8(l.format), weight, None, None)
            }
            QuantWeight::Int8(t) => {
                words_i32("int8 codes", t.q.len())?;
                let plan = RowPlan::new(out * inp, inp, 1, false, 8)?;
                let codes: Vec<u8> = t.q.iter().map(|&c| c as u8).collect();
                let per_row = i32::from(t.scales.len() == out && out != 1);
                let weight = DevWeight::Int8 {
                    codes: gpu.upload(&codes)?,
                    scales: gpu.upload(&t.scales)?,
                    per_row,
                    plan,
                };
                (GemvKernel::Int8, weight, None, None)
            }
            QuantWeight::Int4(t) => {
                words_i32("int4 bytes", t.packed.len())?;
                let plan = RowPlan::new(out * inp / 2, inp, 2, false, 8)?;
                let weight = DevWeight::Int4 {
                    packed: gpu.upload(&t.packed)?,
                    scales: gpu.upload(&t.scales)?,
                    zeros: gpu.upload(&t.zeros)?,
                    group: to_i32("group", t.group)?,
                    plan,
                };
                (GemvKernel::Int4, weight, None, None)
            }
        };
        let gemm_ok = out.is_multiple_of(8)
            && inp.is_multiple_of(16)
            && match (&weight, w) {
                (DevWeight::Hqq { ints, .. }, QuantWeight::Hqq(h)) => {
                    let words = h.packed.packed_rows() * h.packed.cols;
                    ints[1] % 16 == 0 && words.is_multiple_of(16) && matches!(h.packed.bits.get(), 4 | 8)
                }
                _ => true,
            };
        // Groups of every row of a GPTQ layer, in the (sorted) order the device holds.
        let gptq_rows = match w {
            QuantWeight::Gptq(l) => {
                let mut rows = crate::gptq::groups_of_rows(&l.layout, l.g_idx.as_deref())?;
                if perm.is_some() {
                    rows.sort_unstable();
                }
                rows
            }
            _ => Vec::new(),
        };
        let blocks_of = |n: usize| gptq_rows.chunks(n).all(|c| c.iter().all(|&g| g == c[0]));
        let one_group = i32::from(blocks_of(16));
        let grouped = gemm_ok
            && inp.is_multiple_of(32)
            && GemmKind::GroupScaled
                .tile_rows()
                .iter()
                .all(|&mt| out.is_multiple_of(kernel.gemm_cols(GemmKind::GroupScaled, mt)))
            && match w {
                QuantWeight::Hqq(h) => {
                    let g = h.packed.cols;
                    h.layout.axis() == Axis::One && g.is_power_of_two() && g >= 32 && inp.is_multiple_of(g)
                }
                QuantWeight::Gptq(_) => blocks_of(32),
                QuantWeight::Awq(l) => l.layout.group_size().is_power_of_two() && l.layout.group_size() >= 32,
                QuantWeight::Fp8(l) => {
                    let bc = l.layout.block_size().1;
                    let nan = l.format == Fp8Format::E4M3 && l.codes.iter().any(|&c| c & 0x7f == 0x7f);
                    (bc >= inp || (bc.is_power_of_two() && bc >= 32)) && !nan
                }
                _ => false,
            };
        let kind = if grouped { GemmKind::GroupScaled } else { GemmKind::Rounded };
        let gemm = if gemm_ok { Gemm::load(gpu, kernel, kind, grouped)? } else { None };
        let xs_rows = if gemm.is_some() { GEMM_CHUNK } else { GEMV_MAX_BATCH };
        let part_at = if perm.is_some() { (xs_rows * inp).next_multiple_of(SCRATCH_ALIGN) } else { 0 };
        // A layer that may run the group-scaled GEMM (set_gemm_kind can switch to it) keeps room
        // for its split K.
        let split = gemm.as_ref().is_some_and(|g| g.grouped_ok);
        let part_len = match (&weight, col) {
            (_, Some(c)) => GEMV_MAX_BATCH * c.slices * out,
            (
                DevWeight::Hqq { plan, .. }
                | DevWeight::Fp8 { plan, .. }
                | DevWeight::Int8 { plan, .. }
                | DevWeight::Int4 { plan, .. },
                _,
            ) if plan.per > 1 => GEMV_MAX_BATCH * out * plan.per,
            _ => 0,
        };
        let scratch = (
            part_at + part_len.max(if split { GEMM_SPLIT_MAX_FLOATS } else { 0 }),
            col.map_or(0, |c| c.block_columns(out)).max(if split { GEMM_SPLIT_ITEMS } else { 0 }),
        );
        // Reserved now, so forward calls allocate nothing.
        drop(gpu.workspace(scratch.0, scratch.1)?);
        Ok(DeviceQuantLinear {
            out,
            inp,
            kernel,
            col,
            f1: gpu.function(kernel.file(1), &kernel.entry(1))?,
            f8: gpu.function(kernel.file(8), &kernel.entry(8))?,
            bias: bias_f32(w).map(|b| gpu.upload(&b)).transpose()?,
            perm,
            part_at,
            scratch,
            weight,
            reduce_rows: gpu.function(PtxFile::Gemv, super::GEMV_REDUCE_ROWS)?,
            add_bias: gpu.function(PtxFile::Gemv, "add_bias_f32")?,
            gather: gpu.function(PtxFile::Gemv, super::GATHER_ROWS)?,
            gemm,
            one_group,
            gemm_from: GEMM_MIN_BATCH,
            wide_from: GEMM_WIDE_MIN_BATCH,
            max_slices: usize::MAX,
        })
    }

    /// Output features (`y` values per row).
    pub fn out_features(&self) -> usize {
        self.out
    }

    /// Input features (`x` values per row).
    pub fn in_features(&self) -> usize {
        self.inp
    }

    /// The GEMV entry family this layer launches.
    pub fn kernel(&self) -> GemvKernel {
        self.kernel
    }

    /// `y[b] = W x[b] (+ bias)` for `batch` rows: `x` holds `batch * in` values, `y` `batch *
    /// out`. Batches of [`GEMM_MIN_BATCH`] rows or more run the tensor-core GEMM where the layer
    /// has one ([`has_gemm`](Self::has_gemm)), else the GEMV in passes of up to 8 rows.
    /// Asynchronous on `gpu`'s stream. No allocation: the scratch is `gpu`'s, shared by its
    /// layers and reserved by [`new`](Self::new) (a layer built on another [`Gpu`] grows it once).
    pub fn forward_into(
        &mut self,
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        batch: usize,
        y: &mut CudaSlice<f32>,
    ) -> Result<()> {
        expect("x", batch * self.inp, x.len())?;
        expect("y", batch * self.out, y.len())?;
        let out = self.out;
        let gemm = self.gemm.is_some() && batch >= self.gemm_from;
        let step = if gemm { self.gemm_rows(batch) } else { GEMV_MAX_BATCH };
        let mut ws = gpu.workspace(self.scratch.0, self.scratch.1)?;
        let ws = &mut *ws;
        let (xs, part) = ws.floats.split_at_mut(self.part_at);
        let mut sc = Scratch { xs, part, counters: &mut ws.counters };
        for b0 in (0..batch).step_by(step.max(1)) {
            let nb = step.min(batch - b0);
            self.gather_rows(gpu, x, b0, nb, &mut sc.xs)?;
            let mut yv = y.slice_mut(b0 * out..(b0 + nb) * out);
            if gemm {
                self.launch_gemm(gpu, x, b0, nb, &mut yv, &mut sc)?;
            } else {
                self.launch_chunk(gpu, x, b0, nb, &mut yv, &mut sc)?;
            }
            if let Some(bias) = &self.bias {
                let (o, t) = (to_i32("out", out)?, to_i32("outputs", nb * out)?);
                let mut l = gpu.stream.launch_builder(&self.add_bias);
                l.arg(&mut yv).arg(bias).arg(&o).arg(&t);
                // SAFETY: add_bias_f32(float*, const float*, int, int): y's view holds nb*out
                // values, bias out; the kernel touches y[i], bias[i % out] for i < nb*out.
                unsafe { l.launch(super::launch_1d(nb * out)) }?;
            }
        }
        Ok(())
    }

    /// Whether batches of [`GEMM_MIN_BATCH`] rows or more run on tensor cores: 4- and 8-bit
    /// HQQ (packed columns and words multiples of 16) and GPTQ, AWQ and FP8, with `in % 16 ==
    /// 0` and `out % 8 == 0`.
    pub fn has_gemm(&self) -> bool {
        self.gemm.is_some()
    }

    /// The GEMM family this layer runs from [`GEMM_MIN_BATCH`] rows (`None` without a GEMM):
    /// [`GemmKind::GroupScaled`] wherever the layer's shape and groups allow it.
    pub fn gemm_kind(&self) -> Option<GemmKind> {
        self.gemm.as_ref().map(|g| g.kind)
    }

    /// How a batch of `batch` rows runs on the tensor-core GEMM: the entry, its tiles and the
    /// slices K is split into (the first launch's, for act-order layers, which run 256 rows a
    /// launch). `None` where the batch runs on the GEMV.
    pub fn gemm_plan(&self, batch: usize) -> Option<GemmPlan> {
        let gemm = self.gemm.as_ref().filter(|_| batch >= self.gemm_from)?;
        let rows = batch.min(self.gemm_rows(batch));
        let p = self.launch_plan(rows)?;
        let entry = match p.f {
            2 => self.kernel.gemm_wide_entry(),
            _ => self.kernel.gemm_entry(gemm.kind, p.mt),
        }?;
        Some(GemmPlan {
            entry,
            rows,
            tile: (16 * p.mt, p.cols),
            tiles: p.tiles,
            kslices: p.kslices,
            wave: p.wave,
        })
    }

    /// Rows per GEMM launch of a `batch`-row call. The GEMMs index x in 32 bits (rows * K <
    /// 2^31 a launch); an act-order launch takes at most GEMM_CHUNK gathered rows, which the
    /// gather indexes within the kernels' 2^30 extent.
    fn gemm_rows(&self, batch: usize) -> usize {
        match self.perm {
            Some(_) => GEMM_CHUNK.min(super::MAX_EXTENT / self.inp.max(1)),
            None => batch.min(i32::MAX as usize / self.inp.max(1)),
        }
    }

    /// The GEMM launch of `nb` rows: its entry, tile, tiles and split K.
    fn launch_plan(&self, nb: usize) -> Option<LaunchPlan> {
        let gemm = self.gemm.as_ref()?;
        let big = nb > 16;
        let f = match gemm.wide {
            Some(_) if gemm.kind == GemmKind::GroupScaled && nb >= self.wide_from => 2,
            _ => usize::from(big),
        };
        let mt = if f == 2 { GEMM_WIDE_MT } else { gemm.kind.tile_rows()[f] };
        // The wide GEMM's warp tiles: 64 rows by 32 outputs (its counters and part index them).
        let cols = if f == 2 { GEMM_WIDE_COLS } else { self.kernel.gemm_cols(gemm.kind, mt) };
        let tiles = self.out.div_ceil(cols) * nb.div_ceil(16 * mt);
        let (kslices, wave) = match gemm.kind {
            GemmKind::GroupScaled => {
                let wave = gemm.waves[f];
                (gemm_slices(tiles, self.inp / 32, nb, self.out, wave).min(self.max_slices), wave)
            }
            GemmKind::Rounded => (1, 0),
        };
        Some(LaunchPlan { f, mt, cols, tiles, kslices, wave })
    }

    /// Run batches of `rows` rows or more (at least 1) on the GEMM where the layer has one, and
    /// smaller ones on the GEMV; [`GEMM_MIN_BATCH`] until set. The group-scaled GEMM costs the
    /// same per weight for any batch up to 16 rows, so below 16 it trades the GEMV's work per row
    /// for tensor-core work on rows that are not there: which wins is the GPU's to say (the
    /// `linear_4096x14336_cuda` bench times both).
    pub fn set_gemm_min_batch(&mut self, rows: usize) {
        self.gemm_from = rows.max(1);
    }

    /// Whether the layer has the wide group-scaled GEMM (4- and 8-bit HQQ and GPTQ, FP8, on the
    /// group-scaled family), which runs batches of [`GEMM_WIDE_MIN_BATCH`] rows or more unless set
    /// otherwise.
    pub fn has_wide_gemm(&self) -> bool {
        self.gemm.as_ref().is_some_and(|g| g.kind == GemmKind::GroupScaled && g.wide.is_some())
    }

    /// Run batches of `rows` rows or more (at least 1) on the wide group-scaled GEMM where the
    /// layer has one ([`has_wide_gemm`](Self::has_wide_gemm)), smaller GEMM batches on the 16- and
    /// 32-row tiles; `usize::MAX` keeps it off. [`GEMM_WIDE_MIN_BATCH`] until set: the wide GEMM
    /// issues about 30% fewer instructions per tensor-core product (BENCHMARKS.md), and
    /// the `linear_4096x14336_cuda` bench times both at 64 and 256 rows.
    pub fn set_gemm_wide_min_batch(&mut self, rows: usize) {
        self.wide_from = rows.max(1);
    }

    /// Split K into at most `slices` slices (at least 1) in the group-scaled GEMM; unlimited
    /// until set, so the rule of [`gemm_plan`](Self::gemm_plan)'s `kslices` applies. Split K
    /// fills a GPU that a few tiles would leave idle, at the cost of writing and reading back
    /// partial sums: the `linear_4096x14336_cuda` bench times batch 16 with fewer slices.
    pub fn set_gemm_max_slices(&mut self, slices: usize) {
        self.max_slices = slices.max(1);
    }

    /// Run GEMM batches on `kind`'s GEMM instead (to compare the two, or
    /// to keep [`GemmKind::Rounded`]'s rounding). [`CudaError::NoKernel`] when the layer has no
    /// GEMM, or `kind` is [`GemmKind::GroupScaled`] and its shape or groups do not allow it.
    pub fn set_gemm_kind(&mut self, gpu: &Gpu, kind: GemmKind) -> Result<()> {
        let Some(g) = &self.gemm else {
            return Err(Error::Cuda(CudaError::NoKernel("a GEMM for this layer")));
        };
        if g.kind == kind {
            return Ok(());
        }
        if kind == GemmKind::GroupScaled && !g.grouped_ok {
            return Err(Error::Cuda(CudaError::NoKernel(
                "a group-scaled GEMM for this layer's shape and groups",
            )));
        }
        self.gemm = Gemm::load(gpu, self.kernel, kind, g.grouped_ok)?;
        Ok(())
    }

    /// Act-order layers: rows `b0 .. b0 + nb` of `x` in the sorted layer's input order, into the
    /// scratch rows `0 .. nb` (`xs`).
    fn gather_rows(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        b0: usize,
        nb: usize,
        xs: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        let inp = self.inp;
        let Some(perm) = &self.perm else { return Ok(()) };
        let (k, rows) = (to_i32("K", inp)?, to_i32("rows", nb)?);
        // The kernel indexes rows * K in 32 bits.
        to_i32("gathered inputs", nb * inp)?;
        let src = x.slice(b0 * inp..(b0 + nb) * inp);
        let mut dst = xs.slice_mut(..nb * inp);
        let mut l = gpu.stream.launch_builder(&self.gather);
        l.arg(&src).arg(&perm.buf).arg(&mut dst).arg(&k).arg(&rows);
        // SAFETY: gather_rows_f32(const float*, const int*, float*, int, int): the src and dst
        // views hold nb*K values (dst within the scratch's part_at values: nb <= its rows; the
        // slices check both), nb*K < 2^31 (checked above), perm K indices checked to be a
        // permutation of 0..K; the kernel reads x[r*K + perm[i]], writes out[r*K + i], r < nb.
        unsafe { l.launch(super::launch_2d(inp, nb)) }?;
        Ok(())
    }

    /// The tensor-core GEMM over rows `b0 .. b0 + nb` (act-order: the gathered rows) into `y`.
    fn launch_gemm(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        b0: usize,
        nb: usize,
        y: &mut CudaViewMut<'_, f32>,
        sc: &mut Scratch<'_>,
    ) -> Result<()> {
        let (Some(gemm), Some(plan)) = (&self.gemm, self.launch_plan(nb)) else { return Ok(()) };
        let xin = input_rows(self.perm.as_ref().map(|_| &sc.xs), x, self.inp, b0, nb);
        let LaunchPlan { f, mt, cols, tiles, kslices, .. } = plan;
        let wide = if f == 2 { gemm.wide.as_ref() } else { None };
        if kslices > 1 {
            scratch_fits("split-K partial sums", kslices * nb * self.out, sc.part.len())?;
            scratch_fits("split-K counters", tiles, sc.counters.len())?;
        }
        let (m, k, n) = (to_i32("batch", nb)?, self.inp as i32, self.out as i32);
        let mut l = gpu.stream.launch_builder(wide.unwrap_or(&gemm.f[f.min(1)]));
        match &self.weight {
            DevWeight::Hqq { words: DevWords::U8(w), scales, zeros, ints, .. } => {
                l.arg(w);
                push_float(&mut l, scales);
                push_float(&mut l, zeros);
                l.arg(&xin).arg(&mut *y).arg(&m).arg(&k).arg(&n).arg(&ints[1]).arg(&ints[2]).arg(&ints[3]);
            }
            DevWeight::Gptq { qweight, qzeros, scales, g_idx, format } => {
                l.arg(qweight).arg(qzeros);
                push_float(&mut l, scales);
                l.arg(g_idx).arg(&xin).arg(&mut *y).arg(&m).arg(&k).arg(&n).arg(format).arg(&self.one_group);
            }
            DevWeight::Awq { qweight, qzeros, scales, group } => {
                l.arg(qweight).arg(qzeros);
                push_float(&mut l, scales);
                l.arg(&xin).arg(&mut *y).arg(&m).arg(&k).arg(&n).arg(group);
            }
            DevWeight::Fp8 { codes, scales, block, .. } => {
                l.arg(codes)
                    .arg(scales)
                    .arg(&xin)
                    .arg(&mut *y)
                    .arg(&m)
                    .arg(&k)
                    .arg(&n)
                    .arg(&block.0)
                    .arg(&block.1);
            }
            _ => return Err(Error::Cuda(CudaError::NoKernel("a tensor-core GEMM of this scheme"))),
        }
        let ks = kslices as i32;
        if gemm.kind == GemmKind::GroupScaled {
            l.arg(&mut sc.part).arg(&mut *sc.counters).arg(&ks);
        }
        // SAFETY: the arguments follow the GEMM entry's signature (GemvKernel::gemm_params, in
        // the order of ptx/*.cu's gemm entry comments; both families share it) for the element
        // type it was chosen for. `new` validated the weight and took the GEMM only when K % 16
        // == 0 and N % 8 == 0 (HQQ: packed columns and words multiples of 16, 4 or 8 bits, so a
        // lane's four weights share a 16-aligned block of one plane), and the group-scaled one
        // only when K % 32 == 0, N is a multiple of its tile width and the groups are whole
        // aligned 32-input blocks (HQQ axis 1 with a power-of-two group dividing K, so a lane's
        // 8 codes are 8 aligned bytes of one plane). The kernels read x[r*K + c] for r < nb, c <
        // K (the view holds nb*K) as 2- or 4-float vectors at offsets that are multiples of
        // them in 256-byte-aligned allocations (the gathered rows start the shared scratch),
        // weights and parameters within the uploaded tensors (GPTQ groups from the validated
        // g_idx; one_group was computed from it), and write y[r*N + n] for r < nb, n < N: the
        // view's nb*out values. Split K (group-scaled, kslices > 1 only when tiles <
        // GEMM_SPLIT_ITEMS and kslices * nb * N <= GEMM_SPLIT_MAX_FLOATS; a layer with the
        // group-scaled GEMM reserves that many counters and partial sums after part_at, a
        // multiple of 64 values, in `scratch`, which forward_into's workspace holds) writes
        // part[(s*nb + r)*N + n] for s < kslices and counters[tile], which every launch leaves at
        // zero (the scratch's other users, the column skeleton's counters, do too). The wide entry takes
        // the group-scaled one's arguments and layers (its warp tiles of 64 x 32 are the tiles
        // counted above) and uses 9 KiB of static shared memory.
        let cfg = match wide {
            Some(_) => gemm_wide_launch(nb, self.out, kslices),
            None => gemm_launch(nb, self.out, mt, cols, kslices),
        };
        unsafe { l.launch(cfg) }?;
        Ok(())
    }

    /// One launch of the scheme's entry for rows `b0 .. b0 + nb` (`nb <= 8`; act-order: the
    /// gathered rows), then the ordered reduction when outputs have several partial sums.
    fn launch_chunk(
        &self,
        gpu: &Gpu,
        x: &CudaSlice<f32>,
        b0: usize,
        nb: usize,
        y: &mut CudaViewMut<'_, f32>,
        sc: &mut Scratch<'_>,
    ) -> Result<()> {
        let xin = input_rows(self.perm.as_ref().map(|_| &sc.xs), x, self.inp, b0, nb);
        let x = &xin;
        let f = if nb == 1 { &self.f1 } else { &self.f8 };
        let nbi = nb as i32;
        let (out32, in32) = (self.out as i32, self.inp as i32);
        let row_plan = match &self.weight {
            DevWeight::Hqq { plan, .. }
            | DevWeight::Fp8 { plan, .. }
            | DevWeight::Int8 { plan, .. }
            | DevWeight::Int4 { plan, .. } => Some(*plan),
            _ => None,
        };
        // The column skeleton adds its partial sums in the same launch (its last block per
        // column range); the row skeleton writes y when a segment is a whole row.
        let direct = row_plan.is_none_or(|p| p.per == 1);
        match (row_plan, self.col) {
            (Some(p), _) if !direct => {
                scratch_fits("GEMV partial sums", nb * self.out * p.per, sc.part.len())?
            }
            (_, Some(c)) => {
                scratch_fits("GEMV partial sums", nb * c.slices * self.out, sc.part.len())?;
                scratch_fits("GEMV counters", c.block_columns(self.out), sc.counters.len())?;
            }
            _ => {}
        }
        let part = &mut sc.part;
        let mut l = gpu.stream.launch_builder(f);
        let (seg, team) = row_plan.map_or((0, 0), |p| (p.seg as i32, p.team as i32));
        let sr = self.col.map_or(0, |c| c.slice_rows as i32);
        let sorted_format = match &self.weight {
            DevWeight::Gptq { format, .. } => format | 2,
            _ => 0,
        };
        macro_rules! target {
            ($l:expr) => {
                if direct { $l.arg(&mut *y) } else { $l.arg(&mut *part) }
            };
        }
        let cfg = match &self.weight {
            DevWeight::Hqq { words, scales, zeros, ints, plan } => {
                match words {
                    DevWords::U8(w) => l.arg(w),
                    DevWords::I32(w) => l.arg(w),
                };
                push_float(&mut l, scales);
                push_float(&mut l, zeros);
                l.arg(x);
                target!(l);
                l.arg(&ints[0])
                    .arg(&ints[1])
                    .arg(&ints[2])
                    .arg(&ints[3])
                    .arg(&in32)
                    .arg(&seg)
                    .arg(&team)
                    .arg(&nbi);
                plan.launch()
            }
            DevWeight::Gptq { qweight, qzeros, scales, g_idx, .. } => {
                let Some(c) = self.col else {
                    return Err(Error::Cuda(CudaError::NoKernel("a column plan")));
                };
                l.arg(qweight).arg(qzeros);
                push_float(&mut l, scales);
                l.arg(g_idx).arg(x).arg(&mut *part).arg(&mut *y).arg(&mut *sc.counters);
                // Bit 1: g_idx never decreases (the layer was sorted by group at `new`).
                l.arg(&in32).arg(&out32).arg(&sr).arg(&sorted_format).arg(&nbi);
                c.launch(self.out)
            }
            DevWeight::Awq { qweight, qzeros, scales, group } => {
                let Some(c) = self.col else {
                    return Err(Error::Cuda(CudaError::NoKernel("a column plan")));
                };
                l.arg(qweight).arg(qzeros);
                push_float(&mut l, scales);
                l.arg(x).arg(&mut *part).arg(&mut *y).arg(&mut *sc.counters);
                l.arg(&in32).arg(&out32).arg(group).arg(&sr).arg(&nbi);
                c.launch(self.out)
            }
            DevWeight::Fp8 { codes, scales, block, plan } => {
                l.arg(codes).arg(scales).arg(x);
                target!(l);
                l.arg(&out32).arg(&in32).arg(&block.0).arg(&block.1).arg(&seg).arg(&team).arg(&nbi);
                plan.launch()
            }
            DevWeight::Int8 { codes, scales, per_row, plan } => {
                l.arg(codes).arg(scales).arg(x);
                target!(l);
                l.arg(&out32).arg(&in32).arg(per_row).arg(&seg).arg(&team).arg(&nbi);
                plan.launch()
            }
            DevWeight::Int4 { packed, scales, zeros, group, plan } => {
                l.arg(packed).arg(scales).arg(zeros).arg(x);
                target!(l);
                l.arg(&out32).arg(&in32).arg(group).arg(&seg).arg(&team).arg(&nbi);
                plan.launch()
            }
        };
        // SAFETY: the arguments follow the entry's signature (GemvKernel::params; the order is
        // the one in ptx/*.cu's entry comments), with the element type the entry was chosen
        // for. `new` validated the weight (every tensor's length against its layout; GPTQ's
        // g_idx values against the group count before upload) and the plan (segments of whole
        // chunks inside one output row, slices of whole row blocks dividing K), and
        // forward_into checked x (nb*in values) and y (nb*out). The skeletons read packed words
        // below the uploaded lengths, parameters of groups < G, x[b*in + i] for i < in, b < nb,
        // and write y[b*out + o] (direct) or part[b*per*out + ...] within GEMV_MAX_BATCH*per*out;
        // the column skeleton's partials part[(b*slices + s)*out + n] within
        // GEMV_MAX_BATCH*slices*out, y[b*out + n], and counters[blockIdx.x] for block_columns(out)
        // counters, its grid covering the column vectors and slices exactly (ColPlan::launch).
        // `new` reserved those partial sums after part_at and those counters (zero between
        // launches) in `scratch`, which forward_into's workspace holds. Vector loads sit at
        // multiples of their width from 256-byte-aligned allocations (chunks at multiples of CH
        // words; GPTQ's 4 columns at n % 4 == 0; x views start at row boundaries, read by scalar
        // loads; part_at is a multiple of 64 values).
        unsafe { l.launch(cfg) }?;
        if direct {
            return Ok(());
        }
        if let Some(p) = row_plan {
            let mut r = gpu.stream.launch_builder(&self.reduce_rows);
            let (outs, per) = ((nb * self.out) as i32, p.per as i32);
            let sums = part.as_view();
            r.arg(&sums).arg(&mut *y).arg(&outs).arg(&per);
            // SAFETY: gemv_reduce_rows_f32(const float*, float*, int, int): part holds at least
            // nb*out*per sums, y's view nb*out; the kernel reads part[o*per + t], writes y[o].
            unsafe { r.launch(super::launch_1d(nb * self.out)) }?;
        }
        Ok(())
    }

    /// [`forward_into`](Self::forward_into) from and to host slices (uploads `x`, returns `y`).
    pub fn forward_host(&mut self, gpu: &Gpu, x: &[f32], batch: usize) -> Result<Vec<f32>> {
        expect("x", batch * self.inp, x.len())?;
        let xd = gpu.upload(x)?;
        let mut y = gpu.zeros::<f32>(batch * self.out)?;
        self.forward_into(gpu, &xd, batch, &mut y)?;
        gpu.download(&y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shapes the kernels cannot cut into whole chunks are a typed error; the plan of a usual
    /// layer puts a whole row in a segment (one launch, no reduction).
    #[test]
    fn plans_cut_whole_chunks_or_refuse() {
        let p = RowPlan::new(4096 * 14336 / 2, 14336, 2, true, 16).unwrap();
        assert_eq!((p.seg, p.per, p.team), (14336, 1, 32));
        // int8 with 12 inputs: 12 codes are not a whole number of 8-byte chunks.
        let e = RowPlan::new(4 * 12, 12, 1, false, 8).unwrap_err();
        assert_eq!(
            e,
            Error::Kernel(KernelError::NotMultiple { what: "GEMV segment (words)", value: 12, multiple: 8 })
        );
        // int4 with an odd input count has no whole bytes per row.
        assert!(RowPlan::new(3 * 17, 34, 2, false, 1).is_ok());
        assert!(RowPlan::new(3 * 17, 17, 2, false, 1).is_err());
        let c = ColPlan::new(14336, 8, 4).unwrap();
        assert_eq!((c.slice_rows, c.slices), (128, 112));
        assert_eq!(ColPlan::new(96, 32, 4).unwrap().slice_rows, 32);
    }

    /// Split K fills one wave of the GPU where tiles fill less than half of it, with at least 4
    /// chunks a slice and the partial sums within their cap (more for more rows).
    #[test]
    fn gemm_slices_fill_one_wave_within_the_partial_sums() {
        // Batch 16 on 4096 x 14336, 64 tiles of 16 x 64: the wave and the partial sums agree.
        assert_eq!(gemm_slices(64, 448, 16, 4096, 1056), 16);
        // Batch 8: the wave, not the partial sums (which would allow 32).
        assert_eq!(gemm_slices(128, 448, 8, 4096, 2048), 16);
        // The wide GEMM at 64 and 256 rows on 4096 outputs (tiles of 64 x 32; H100: 132
        // multiprocessors of 2 blocks of 4 warps).
        assert_eq!(gemm_slices(128, 448, 64, 4096, 1056), 8);
        assert_eq!(gemm_slices(512, 448, 256, 4096, 1056), 2);
        // Tiles past half a wave, or as many as the counters: no split.
        assert_eq!(gemm_slices(600, 448, 256, 4096, 1056), 1);
        assert_eq!(gemm_slices(GEMM_SPLIT_ITEMS, 448, 256, 4096, 1 << 20), 1);
        // 64 rows may write 4 times the partial sums of 16.
        assert_eq!(gemm_slices(32, 448, 64, 4096, 2048), 16);
        assert_eq!(gemm_slices(32, 448, 16, 4096, 2048), 16);
        assert_eq!(gemm_slices(32, 448, 8, 4096, 2048), 32);
        assert_eq!(gemm_slices(128, 8, 16, 4096, 2048), 2);
        assert_eq!(gemm_slices(100, 448, 64, 1 << 16, 2048), 1);
        assert_eq!(gemm_slices(1, 0, 1, 1, 1), 1);
        let mut r = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            let mut next = |n: u64| {
                r ^= r << 13;
                r ^= r >> 7;
                r ^= r << 17;
                (r % n) as usize + 1
            };
            let (tiles, chunks, m, n, wave) = (next(3000), next(2000), next(512), next(1 << 15), next(4000));
            let s = gemm_slices(tiles, chunks, m, n, wave);
            if s > 1 {
                assert!(
                    s * m * n <= GEMM_SPLIT_MAX_FLOATS && s * m * n <= GEMM_SPLIT_FLOATS * m.div_ceil(16)
                );
                assert!(s <= chunks / 4 && tiles < GEMM_SPLIT_ITEMS && tiles * s <= wave);
            }
        }
    }

    /// The GEMM exists for 4/8-bit HQQ and GPTQ, AWQ and FP8 only, and every entry name carries
    /// its batch bound.
    #[test]
    fn gemm_entries_cover_the_issue_s_schemes() {
        for k in GemvKernel::all() {
            let has = matches!(
                k,
                GemvKernel::Hqq(4 | 8, _)
                    | GemvKernel::Gptq(4 | 8, _)
                    | GemvKernel::Awq(_)
                    | GemvKernel::Fp8(_)
            );
            for kind in GemmKind::ALL {
                for mt in kind.tile_rows() {
                    assert_eq!(k.gemm_entry(kind, mt).is_some(), has, "{k:?}");
                }
            }
            assert!(k.entry(1).ends_with("_b1") && k.entry(8).ends_with("_b8"));
        }
        let g4 = GemvKernel::Gptq(4, FloatType::F16);
        assert_eq!(g4.gemm_entry(GemmKind::Rounded, 4).unwrap(), "gptq_gemm_4b_f16_m4");
        assert_eq!(g4.gemm_entry(GemmKind::GroupScaled, 2).unwrap(), "gptq_gemmg_4b_f16_m2");
        for mt in GemmKind::GroupScaled.tile_rows() {
            assert_eq!(GemvKernel::Awq(FloatType::Bf16).gemm_cols(GemmKind::GroupScaled, mt), 64);
        }
        assert_eq!(g4.gemm_cols(GemmKind::GroupScaled, 1), 64);
        assert_eq!(g4.gemm_cols(GemmKind::GroupScaled, 2), 32);
        assert_eq!(g4.gemm_cols(GemmKind::Rounded, 4), 32);
        // The wide group-scaled GEMM: 4- and 8-bit HQQ and GPTQ, FP8.
        for k in GemvKernel::all() {
            let has =
                matches!(k, GemvKernel::Hqq(4 | 8, _) | GemvKernel::Gptq(4 | 8, _) | GemvKernel::Fp8(_));
            assert_eq!(k.gemm_wide_entry().is_some(), has, "{k:?}");
        }
        assert_eq!(g4.gemm_wide_entry().unwrap(), "gptq_gemmw_4b_f16");
        assert_eq!(GemvKernel::Fp8(Fp8Format::E5M2).gemm_wide_file(), PtxFile::Fp8);
    }

    /// The wide launch covers every block of 64 rows and 4 tiles of 32 outputs, per slice.
    #[test]
    fn wide_launch_covers_the_blocks() {
        let c = gemm_wide_launch(256, 14336, 2);
        assert_eq!((c.grid_dim.0, c.block_dim.0), (112 * 4 * 2, 128));
        let c = gemm_wide_launch(70, 96, 1);
        assert_eq!(c.grid_dim.0, 2);
    }
}
