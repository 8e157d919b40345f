//! The CUDA C kernels of `../ptx`, compiled for the CPU (see `build.rs` and
//! `cuda_cpu_shim.h`), behind safe wrappers that check buffer lengths like the crate's CUDA
//! launchers do. Used by this crate's tests to hold the kernel sources to the CPU reference in
//! plain `cargo test`, without a GPU.
//!
//! The FFI calls are the only `unsafe` here; each has a `// SAFETY:` note.

use bytemuck::Pod;
use half::{bf16, f16};

/// 256 bytes at a 256-byte boundary: the unit of [`Dev`] buffers.
#[repr(C, align(256))]
#[derive(Clone, Copy, bytemuck::Zeroable, bytemuck::Pod)]
struct Block([u8; 256]);

/// A buffer at a 256-byte boundary, as `cudaMalloc` gives the real kernels: the emulated kernels
/// run on these, so their vector accesses meet the alignment the GPU requires (a misaligned one
/// is reported under `QK_EMU_ASAN`, see `scripts/emu_asan.sh`).
struct Dev<T: Pod> {
    blocks: Vec<Block>,
    len: usize,
    _t: std::marker::PhantomData<T>,
}

/// `v` as the `int` a kernel takes (a test helper: panics past `i32::MAX`).
fn int(v: usize) -> i32 {
    i32::try_from(v).expect("size fits i32")
}

/// A device buffer of `v` in the C representation.
fn dev_raw<T: EmuElem>(v: &[T]) -> Dev<T::Raw> {
    Dev::from(&v.iter().map(|x| x.raw()).collect::<Vec<_>>())
}

impl<T: Pod> Dev<T> {
    /// `len` zeroed elements.
    fn zeroed(len: usize) -> Self {
        let blocks = vec![Block([0; 256]); (len * size_of::<T>()).div_ceil(256).max(1)];
        Dev { blocks, len, _t: std::marker::PhantomData }
    }
    /// A copy of `v`.
    fn from(v: &[T]) -> Self {
        let mut d = Self::zeroed(v.len());
        d.as_mut_slice().copy_from_slice(v);
        d
    }
    fn as_slice(&self) -> &[T] {
        &bytemuck::cast_slice(&self.blocks)[..self.len]
    }
    fn as_mut_slice(&mut self) -> &mut [T] {
        &mut bytemuck::cast_slice_mut(&mut self.blocks)[..self.len]
    }
    fn as_ptr(&self) -> *const T {
        self.as_slice().as_ptr()
    }
    fn as_mut_ptr(&mut self) -> *mut T {
        self.as_mut_slice().as_mut_ptr()
    }
    fn into_vec(self) -> Vec<T> {
        self.as_slice().to_vec()
    }
}

unsafe extern "C" {
    // ptx/gemv.cu reductions (f32 only).
    fn cpu_gemv_reduce_rows_f32(part: *const f32, y: *mut f32, outs: i32, per: i32, gr: u32, b: u32);
    fn cpu_gemv_reduce_cols_f32(part: *const f32, y: *mut f32, n: i32, slices: i32, gr: u32, b: u32);
    fn cpu_gather_f32(x: *const f32, perm: *const i32, out: *mut f32, k: i32, gr: u32, b: u32);
    fn cpu_gather_rows_f32(
        x: *const f32,
        perm: *const i32,
        out: *mut f32,
        k: i32,
        rows: i32,
        gr: u32,
        b: u32,
    );
}

/// `(grid, block)` launch shapes for the emulated 2-D kernels (FP8, AWQ, GPTQ, HQQ): 1-D ones and 2-D ones
/// (`x | y << 16`, see `qk_dim` in the shim), all smaller than the test shapes' work, so every
/// grid-stride loop of the kernels takes more than one step.
pub const LAUNCHES_2D: [(u32, u32); 4] =
    [(1, 1), (3, 32), (2 | 3 << 16, 4 | 2 << 16), (1 | 1 << 16, 1 | 3 << 16)];

type Fp8Entry<R> = unsafe extern "C" fn(*const u8, *const f32, *mut R, i32, i32, i32, i32, u32, u32);

type AwqEntry<R> = unsafe extern "C" fn(*const i32, *const i32, *const R, *mut R, i32, i32, i32, u32, u32);

type HqqGemvEntry<R> =
    unsafe extern "C" fn(*const u8, *const R, *const R, *const f32, *mut f32, i32, i32, i32, i32, u32, u32);
type GptqGemvEntry<R> = unsafe extern "C" fn(
    *const i32,
    *const i32,
    *const R,
    *const i32,
    *const f32,
    *mut f32,
    i32,
    i32,
    i32,
    i32,
    u32,
    u32,
);

type GptqEntry<R> =
    unsafe extern "C" fn(*const i32, *const i32, *const R, *const i32, *mut R, i32, i32, i32, u32, u32);

/// A deterministic generator (SplitMix64) for the emulation tests' inputs.
#[derive(Debug, Clone)]
pub struct SplitMix(pub u64);

impl SplitMix {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `[lo, hi)`.
    pub fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
}

/// The shape arguments of an HQQ dequantization launch (code matrix, packed rows, axis).
#[derive(Debug, Clone, Copy)]
pub struct HqqShape {
    /// Code-matrix rows (unpadded).
    pub rows: usize,
    /// Code-matrix columns.
    pub cols: usize,
    /// Packed rows.
    pub prows: usize,
    /// 0 or 1.
    pub axis: i32,
    /// Number of zeros/scales.
    pub groups: usize,
}

type Entry<W, R> = unsafe extern "C" fn(*const W, *const R, *const R, *mut R, i32, i32, i32, i32, u32, u32);

/// Storage element of the emulated kernels' params and outputs (`f32`, `f16`, `bf16`), with
/// its entries.
pub trait EmuElem: Copy + Default {
    /// The bits the C side reads and writes (`f32` for f32, `u16` for the 16-bit types).
    type Raw: Pod + Default;
    /// To the C representation.
    fn raw(self) -> Self::Raw;
    /// From the C representation.
    fn from_raw(r: Self::Raw) -> Self;
    /// `hqq_dequant_{1,2,4,8}b_{elem}`.
    const HQQ_U8: [Entry<u8, Self::Raw>; 4];
    /// `hqq_dequant_3b_{elem}`.
    const HQQ_3B: Entry<i32, Self::Raw>;
    /// `gptq_dequant_{2,3,4,8}b_{elem}`.
    const GPTQ: [GptqEntry<Self::Raw>; 4];
    /// `hqq_gemv_4b_{elem}`.
    const HQQ_GEMV: HqqGemvEntry<Self::Raw>;
    /// `gptq_gemv_4b_{elem}`.
    const GPTQ_GEMV: GptqGemvEntry<Self::Raw>;
    /// `awq_dequant_4b_{elem}`.
    const AWQ: AwqEntry<Self::Raw>;
    /// `fp8_dequant_{e4m3,e5m2}_{elem}`.
    const FP8: [Fp8Entry<Self::Raw>; 2];
    /// `hqq_gemv_{1,2,4,8}b_{elem}_b{1,8}`.
    const HQQ_QGEMV_U8: [[qgemv::HqqEntry<u8, Self::Raw>; 2]; 4];
    /// `hqq_gemv_3b_{elem}_b{1,8}`.
    const HQQ_QGEMV_3B: [qgemv::HqqEntry<i32, Self::Raw>; 2];
    /// `gptq_gemv_{2,3,4,8}b_{elem}_b{1,8}`.
    const GPTQ_QGEMV: [[qgemv::GptqEntry<Self::Raw>; 2]; 4];
    /// `awq_gemv_4b_{elem}_b{1,8}`.
    const AWQ_QGEMV: [qgemv::AwqEntry<Self::Raw>; 2];
    /// `hqq_gemm_{4,8}b_{elem}_m{1,4}`.
    const HQQ_GEMM: [[qgemm::HqqEntry<Self::Raw>; 2]; 2];
    /// `hqq_gemmg_{4,8}b_{elem}_m{1,2}`.
    const HQQ_GEMMG: [[qgemm::HqqGEntry<Self::Raw>; 2]; 2];
    /// `gptq_gemm_{4,8}b_{elem}_m{1,4}`.
    const GPTQ_GEMM: [[qgemm::GptqEntry<Self::Raw>; 2]; 2];
    /// `gptq_gemmg_{4,8}b_{elem}_m{1,2}`.
    const GPTQ_GEMMG: [[qgemm::GptqGEntry<Self::Raw>; 2]; 2];
    /// `gptq_gemmw_{4,8}b_{elem}`.
    const GPTQ_GEMMW: [qgemm::GptqGEntry<Self::Raw>; 2];
    /// `hqq_gemmw_{4,8}b_{elem}`.
    const HQQ_GEMMW: [qgemm::HqqGEntry<Self::Raw>; 2];
    /// `awq_gemm_4b_{elem}_m{1,4}`.
    const AWQ_GEMM: [qgemm::AwqEntry<Self::Raw>; 2];
    /// `awq_gemmg_4b_{elem}_m{1,2}`.
    const AWQ_GEMMG: [qgemm::AwqGEntry<Self::Raw>; 2];
}

/// Declares C launchers that share one signature: `name = "link prefix"` becomes
/// `fn name(args...)` linked to `link prefix` + `sfx`.
macro_rules! externs {
    ($sfx:literal, $args:tt, [], $tail:literal) => {};
    ($sfx:literal, ($($arg:ty),*), [$name:ident = $link:literal $(, $rn:ident = $rl:literal)*], $tail:literal) => {
        unsafe extern "C" {
            #[link_name = concat!($link, $sfx, $tail)]
            pub(super) fn $name($(_: $arg),*);
        }
        externs!($sfx, ($($arg),*), [$($rn = $rl),*], $tail);
    };
    ($sfx:literal, $args:tt, []) => {};
    ($sfx:literal, ($($arg:ty),*), [$name:ident = $link:literal $(, $rn:ident = $rl:literal)*]) => {
        unsafe extern "C" {
            #[link_name = concat!($link, $sfx)]
            pub(super) fn $name($(_: $arg),*);
        }
        externs!($sfx, ($($arg),*), [$($rn = $rl),*]);
    };
}

/// [`externs!`] for entry pairs that differ only in their last suffix (`_b1`/`_b8`,
/// `_m1`/`_m4`): `(a, b) = "link prefix"` declares `a` with `t1` and `b` with `t2`.
macro_rules! externs2 {
    ($sfx:literal, $args:tt, [], $t1:literal, $t2:literal) => {};
    ($sfx:literal, ($($arg:ty),*), [($a:ident, $b:ident) = $link:literal $(, ($ra:ident, $rb:ident) = $rl:literal)*],
     $t1:literal, $t2:literal) => {
        externs!($sfx, ($($arg),*), [$a = $link], $t1);
        externs!($sfx, ($($arg),*), [$b = $link], $t2);
        externs2!($sfx, ($($arg),*), [$(($ra, $rb) = $rl),*], $t1, $t2);
    };
}

/// [`externs2!`] for the two GEMM families of a scheme: `(a, b, c, d) = "gemm prefix", "gemmg
/// prefix"` declares `a`/`b` (`_m1`/`_m4`) with the arguments and the launch shape, and `c`/`d`
/// (`_m1`/`_m2`) with the group-scaled family's split-K arguments (part, counters, slices) between.
macro_rules! externs_gemm {
    ($sfx:literal, ($($arg:ty),*), [$(($a:ident, $b:ident, $c:ident, $d:ident) = $gemm:literal, $gemmg:literal),*]) => {
        externs2!($sfx, ($($arg,)* u32, u32), [$(($a, $b) = $gemm),*], "_m1", "_m4");
        externs2!($sfx, ($($arg,)* *mut f32, *mut u32, i32, u32, u32), [$(($c, $d) = $gemmg),*], "_m1", "_m2");
    };
}

/// [`externs!`] for the wide group-scaled entries: the scheme's arguments, then the split-K ones
/// (part, counters, slices) and the launch shape.
macro_rules! externs_wide {
    ($sfx:literal, ($($arg:ty),*), $names:tt) => {
        externs!($sfx, ($($arg,)* *mut f32, *mut u32, i32, u32, u32), $names);
    };
}

/// Declares the `cpu_*_{sfx}` launchers of one element type (`ptx/*.cu`, see the entry tables
/// there for the parameters) and implements [`EmuElem`] for it with them.
macro_rules! emu_elem {
    ($t:ty, $raw:ty, $m:ident, $sfx:literal) => {
        mod $m {
            type R = $raw;
            externs!(
                $sfx,
                (*const u8, *const R, *const R, *mut R, i32, i32, i32, i32, u32, u32),
                [
                    hqq_1b = "cpu_hqq_dequant_1b_",
                    hqq_2b = "cpu_hqq_dequant_2b_",
                    hqq_4b = "cpu_hqq_dequant_4b_",
                    hqq_8b = "cpu_hqq_dequant_8b_"
                ]
            );
            externs!(
                $sfx,
                (*const i32, *const R, *const R, *mut R, i32, i32, i32, i32, u32, u32),
                [hqq_3b = "cpu_hqq_dequant_3b_"]
            );
            externs!(
                $sfx,
                (*const i32, *const i32, *const R, *const i32, *mut R, i32, i32, i32, u32, u32),
                [
                    gptq_2b = "cpu_gptq_dequant_2b_",
                    gptq_3b = "cpu_gptq_dequant_3b_",
                    gptq_4b = "cpu_gptq_dequant_4b_",
                    gptq_8b = "cpu_gptq_dequant_8b_"
                ]
            );
            externs!(
                $sfx,
                (*const u8, *const R, *const R, *const f32, *mut f32, i32, i32, i32, i32, u32, u32),
                [hqq_gemv = "cpu_hqq_gemv_4b_"]
            );
            externs!(
                $sfx,
                (
                    *const i32,
                    *const i32,
                    *const R,
                    *const i32,
                    *const f32,
                    *mut f32,
                    i32,
                    i32,
                    i32,
                    i32,
                    u32,
                    u32
                ),
                [gptq_gemv = "cpu_gptq_gemv_4b_"]
            );
            externs!(
                $sfx,
                (*const i32, *const i32, *const R, *mut R, i32, i32, i32, u32, u32),
                [awq = "cpu_awq_dequant_4b_"]
            );
            externs2!(
                $sfx,
                (
                    *const u8,
                    *const R,
                    *const R,
                    *const f32,
                    *mut f32,
                    i32,
                    i32,
                    i32,
                    i32,
                    i32,
                    i32,
                    i32,
                    i32,
                    u32,
                    u32
                ),
                [
                    (hqq_q1_1, hqq_q1_8) = "cpu_hqq_gemv_1b_",
                    (hqq_q2_1, hqq_q2_8) = "cpu_hqq_gemv_2b_",
                    (hqq_q4_1, hqq_q4_8) = "cpu_hqq_gemv_4b_",
                    (hqq_q8_1, hqq_q8_8) = "cpu_hqq_gemv_8b_"
                ],
                "_b1",
                "_b8"
            );
            externs2!(
                $sfx,
                (
                    *const i32,
                    *const R,
                    *const R,
                    *const f32,
                    *mut f32,
                    i32,
                    i32,
                    i32,
                    i32,
                    i32,
                    i32,
                    i32,
                    i32,
                    u32,
                    u32
                ),
                [(hqq_q3_1, hqq_q3_8) = "cpu_hqq_gemv_3b_"],
                "_b1",
                "_b8"
            );
            externs2!(
                $sfx,
                (
                    *const i32,
                    *const i32,
                    *const R,
                    *const i32,
                    *const f32,
                    *mut f32,
                    *mut f32,
                    *mut u32,
                    i32,
                    i32,
                    i32,
                    i32,
                    i32,
                    u32,
                    u32
                ),
                [
                    (gptq_q2_1, gptq_q2_8) = "cpu_gptq_gemv_2b_",
                    (gptq_q3_1, gptq_q3_8) = "cpu_gptq_gemv_3b_",
                    (gptq_q4_1, gptq_q4_8) = "cpu_gptq_gemv_4b_",
                    (gptq_q8_1, gptq_q8_8) = "cpu_gptq_gemv_8b_"
                ],
                "_b1",
                "_b8"
            );
            externs2!(
                $sfx,
                (
                    *const i32,
                    *const i32,
                    *const R,
                    *const f32,
                    *mut f32,
                    *mut f32,
                    *mut u32,
                    i32,
                    i32,
                    i32,
                    i32,
                    i32,
                    u32,
                    u32
                ),
                [(awq_q_1, awq_q_8) = "cpu_awq_gemv_4b_"],
                "_b1",
                "_b8"
            );
            externs_gemm!(
                $sfx,
                (*const u8, *const R, *const R, *const f32, *mut f32, i32, i32, i32, i32, i32, i32),
                [
                    (hqq_m4_1, hqq_m4_4, hqq_g4_1, hqq_g4_2) = "cpu_hqq_gemm_4b_",
                    "cpu_hqq_gemmg_4b_",
                    (hqq_m8_1, hqq_m8_4, hqq_g8_1, hqq_g8_2) = "cpu_hqq_gemm_8b_",
                    "cpu_hqq_gemmg_8b_"
                ]
            );
            externs_gemm!(
                $sfx,
                (*const i32, *const i32, *const R, *const i32, *const f32, *mut f32, i32, i32, i32, i32, i32),
                [
                    (gptq_m4_1, gptq_m4_4, gptq_g4_1, gptq_g4_2) = "cpu_gptq_gemm_4b_",
                    "cpu_gptq_gemmg_4b_",
                    (gptq_m8_1, gptq_m8_4, gptq_g8_1, gptq_g8_2) = "cpu_gptq_gemm_8b_",
                    "cpu_gptq_gemmg_8b_"
                ]
            );
            externs_wide!(
                $sfx,
                (*const i32, *const i32, *const R, *const i32, *const f32, *mut f32, i32, i32, i32, i32, i32),
                [gptq_w4 = "cpu_gptq_gemmw_4b_", gptq_w8 = "cpu_gptq_gemmw_8b_"]
            );
            externs_wide!(
                $sfx,
                (*const u8, *const R, *const R, *const f32, *mut f32, i32, i32, i32, i32, i32, i32),
                [hqq_w4 = "cpu_hqq_gemmw_4b_", hqq_w8 = "cpu_hqq_gemmw_8b_"]
            );
            externs_gemm!(
                $sfx,
                (*const i32, *const i32, *const R, *const f32, *mut f32, i32, i32, i32, i32),
                [(awq_m_1, awq_m_4, awq_g_1, awq_g_2) = "cpu_awq_gemm_4b_", "cpu_awq_gemmg_4b_"]
            );
            externs!(
                $sfx,
                (*const u8, *const f32, *mut R, i32, i32, i32, i32, u32, u32),
                [fp8_e4m3 = "cpu_fp8_dequant_e4m3_", fp8_e5m2 = "cpu_fp8_dequant_e5m2_"]
            );
        }

        impl EmuElem for $t {
            type Raw = $raw;
            fn raw(self) -> $raw {
                bytemuck::cast(self)
            }
            fn from_raw(r: $raw) -> Self {
                bytemuck::cast(r)
            }
            const HQQ_U8: [Entry<u8, $raw>; 4] = [$m::hqq_1b, $m::hqq_2b, $m::hqq_4b, $m::hqq_8b];
            const HQQ_3B: Entry<i32, $raw> = $m::hqq_3b;
            const GPTQ: [GptqEntry<$raw>; 4] = [$m::gptq_2b, $m::gptq_3b, $m::gptq_4b, $m::gptq_8b];
            const HQQ_GEMV: HqqGemvEntry<$raw> = $m::hqq_gemv;
            const GPTQ_GEMV: GptqGemvEntry<$raw> = $m::gptq_gemv;
            const AWQ: AwqEntry<$raw> = $m::awq;
            const FP8: [Fp8Entry<$raw>; 2] = [$m::fp8_e4m3, $m::fp8_e5m2];
            const HQQ_QGEMV_U8: [[qgemv::HqqEntry<u8, $raw>; 2]; 4] = [
                [$m::hqq_q1_1, $m::hqq_q1_8],
                [$m::hqq_q2_1, $m::hqq_q2_8],
                [$m::hqq_q4_1, $m::hqq_q4_8],
                [$m::hqq_q8_1, $m::hqq_q8_8],
            ];
            const HQQ_QGEMV_3B: [qgemv::HqqEntry<i32, $raw>; 2] = [$m::hqq_q3_1, $m::hqq_q3_8];
            const GPTQ_QGEMV: [[qgemv::GptqEntry<$raw>; 2]; 4] = [
                [$m::gptq_q2_1, $m::gptq_q2_8],
                [$m::gptq_q3_1, $m::gptq_q3_8],
                [$m::gptq_q4_1, $m::gptq_q4_8],
                [$m::gptq_q8_1, $m::gptq_q8_8],
            ];
            const AWQ_QGEMV: [qgemv::AwqEntry<$raw>; 2] = [$m::awq_q_1, $m::awq_q_8];
            const HQQ_GEMM: [[qgemm::HqqEntry<$raw>; 2]; 2] =
                [[$m::hqq_m4_1, $m::hqq_m4_4], [$m::hqq_m8_1, $m::hqq_m8_4]];
            const HQQ_GEMMG: [[qgemm::HqqGEntry<$raw>; 2]; 2] =
                [[$m::hqq_g4_1, $m::hqq_g4_2], [$m::hqq_g8_1, $m::hqq_g8_2]];
            const GPTQ_GEMM: [[qgemm::GptqEntry<$raw>; 2]; 2] =
                [[$m::gptq_m4_1, $m::gptq_m4_4], [$m::gptq_m8_1, $m::gptq_m8_4]];
            const GPTQ_GEMMG: [[qgemm::GptqGEntry<$raw>; 2]; 2] =
                [[$m::gptq_g4_1, $m::gptq_g4_2], [$m::gptq_g8_1, $m::gptq_g8_2]];
            const GPTQ_GEMMW: [qgemm::GptqGEntry<$raw>; 2] = [$m::gptq_w4, $m::gptq_w8];
            const HQQ_GEMMW: [qgemm::HqqGEntry<$raw>; 2] = [$m::hqq_w4, $m::hqq_w8];
            const AWQ_GEMM: [qgemm::AwqEntry<$raw>; 2] = [$m::awq_m_1, $m::awq_m_4];
            const AWQ_GEMMG: [qgemm::AwqGEntry<$raw>; 2] = [$m::awq_g_1, $m::awq_g_2];
        }
    };
}

emu_elem!(f32, f32, ffi_f32, "f32");
emu_elem!(f16, u16, ffi_f16, "f16");
emu_elem!(bf16, u16, ffi_bf16, "bf16");

/// Run an emulated HQQ dequantization entry over `grid` x `block` threads.
///
/// # Panics
/// When a buffer length does not match `shape`, a size exceeds `i32`, or the grid is empty
/// (a test helper: misuse is a bug in the test).
fn run<W: Pod, T: EmuElem>(
    entry: Entry<W, T::Raw>,
    packed: &[W],
    scales: &[T],
    zeros: &[T],
    shape: HqqShape,
    grid: u32,
    block: u32,
) -> Vec<T> {
    assert_eq!(packed.len(), shape.prows * shape.cols, "packed");
    assert_eq!(scales.len(), shape.groups, "scales");
    assert_eq!(zeros.len(), shape.groups, "zeros");
    assert!(grid > 0 && block > 0);
    let i = |v: usize| i32::try_from(v).expect("size fits i32");
    let s = Dev::from(&scales.iter().map(|x| x.raw()).collect::<Vec<_>>());
    let z = Dev::from(&zeros.iter().map(|x| x.raw()).collect::<Vec<_>>());
    let packed = Dev::from(packed);
    let mut out = Dev::<T::Raw>::zeroed(shape.rows * shape.cols);
    // SAFETY: the entry reads packed[0..prows*cols], scales/zeros at indices < groups (a column
    // on axis 0, a row on axis 1: both < groups by the layout) and writes out[0..rows*cols];
    // every length was checked above and the buffers outlive the (synchronous) call.
    unsafe {
        entry(
            packed.as_ptr(),
            s.as_ptr(),
            z.as_ptr(),
            out.as_mut_ptr(),
            i(shape.rows),
            i(shape.cols),
            i(shape.prows),
            shape.axis,
            grid,
            block,
        )
    };
    out.into_vec().into_iter().map(T::from_raw).collect()
}

/// The emulated `hqq_dequant_{bits}b_{elem}` for a `u8` width (1, 2, 4 or 8).
pub fn hqq_dequant_u8<T: EmuElem>(
    bits: u8,
    packed: &[u8],
    scales: &[T],
    zeros: &[T],
    shape: HqqShape,
    grid: u32,
    block: u32,
) -> Vec<T> {
    let k = match bits {
        1 => 0,
        2 => 1,
        4 => 2,
        8 => 3,
        b => panic!("no u8 entry for {b} bits"),
    };
    run::<u8, T>(T::HQQ_U8[k], packed, scales, zeros, shape, grid, block)
}

/// The emulated `hqq_dequant_3b_{elem}`.
pub fn hqq_dequant_3b<T: EmuElem>(
    packed: &[i32],
    scales: &[T],
    zeros: &[T],
    shape: HqqShape,
    grid: u32,
    block: u32,
) -> Vec<T> {
    run::<i32, T>(T::HQQ_3B, packed, scales, zeros, shape, grid, block)
}

/// The emulated `gptq_dequant_{bits}b_{elem}`: `qweight [K*bits/32, N]`, `qzeros [G, N*bits/32]`,
/// `scales [G, N]`, `g_idx [K]` (each value < G), `format` 0 = v1, 1 = v2; returns `[K, N]`.
///
/// # Panics
/// When a length does not match or a `g_idx` value is out of range (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn gptq_dequant<T: EmuElem>(
    bits: u8,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[T],
    g_idx: &[i32],
    k: usize,
    n: usize,
    format: i32,
    grid: u32,
    block: u32,
) -> Vec<T> {
    let e = match bits {
        2 => 0,
        3 => 1,
        4 => 2,
        8 => 3,
        b => panic!("no GPTQ entry for {b} bits"),
    };
    let b = bits as usize;
    let groups = scales.len() / n.max(1);
    assert_eq!(qweight.len(), k * b / 32 * n, "qweight");
    assert_eq!(qzeros.len(), groups * (n * b / 32), "qzeros");
    assert_eq!(scales.len(), groups * n, "scales");
    assert_eq!(g_idx.len(), k, "g_idx");
    assert!(g_idx.iter().all(|&g| g >= 0 && (g as usize) < groups), "g_idx range");
    assert!(grid > 0 && block > 0);
    let s = Dev::from(&scales.iter().map(|x| x.raw()).collect::<Vec<_>>());
    let (qweight, qzeros, g_idx) = (Dev::from(qweight), Dev::from(qzeros), Dev::from(g_idx));
    let mut out = Dev::<T::Raw>::zeroed(k * n);
    let i = |v: usize| i32::try_from(v).expect("size fits i32");
    // SAFETY: the entry reads qweight/qzeros/scales within the lengths checked above (rows of
    // scales/qzeros through g_idx values checked to be < groups) and writes out[0..k*n]; the
    // buffers outlive the synchronous call.
    unsafe {
        T::GPTQ[e](
            qweight.as_ptr(),
            qzeros.as_ptr(),
            s.as_ptr(),
            g_idx.as_ptr(),
            out.as_mut_ptr(),
            i(k),
            i(n),
            format,
            grid,
            block,
        )
    };
    out.into_vec().into_iter().map(T::from_raw).collect()
}

/// The emulated 4-bit HQQ (axis 1) GEMV: partial kernel, then the row reduction. `packed` is the
/// `[prows, g]` packed code matrix of a `[rows_out, in_dim]` weight (`g | in_dim`), `x` has
/// `in_dim` values; returns `y` (`rows_out`).
///
/// # Panics
/// On inconsistent lengths (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn hqq_gemv_4b<T: EmuElem>(
    packed: &[u8],
    scales: &[T],
    zeros: &[T],
    x: &[f32],
    rows_out: usize,
    in_dim: usize,
    g: usize,
    grid: u32,
    block: u32,
) -> Vec<f32> {
    let code_rows = rows_out * in_dim / g;
    let prows = code_rows.div_ceil(2);
    assert!(in_dim.is_multiple_of(g) && code_rows.is_multiple_of(2));
    assert_eq!(packed.len(), prows * g);
    assert_eq!((scales.len(), zeros.len(), x.len()), (code_rows, code_rows, in_dim));
    let s = Dev::from(&scales.iter().map(|v| v.raw()).collect::<Vec<_>>());
    let z = Dev::from(&zeros.iter().map(|v| v.raw()).collect::<Vec<_>>());
    let (packed, x) = (Dev::from(packed), Dev::from(x));
    // Partials as ptx/gemv.cu lays them out: 16 per segment of `seg` flat weights (a whole
    // output row, or half of one when the row count is odd), `per` consecutive ones per row.
    let seg = if rows_out.is_multiple_of(2) { in_dim } else { in_dim / 2 };
    let per = in_dim / seg * 16;
    let mut partial = Dev::<f32>::zeroed(rows_out * per);
    let mut y = Dev::<f32>::zeroed(rows_out);
    let i = |v: usize| i32::try_from(v).expect("fits i32");
    // SAFETY: the partial kernel reads packed bytes < prows*g, params at code rows < code_rows and
    // x below in_dim (g | in_dim), and writes partial[S*16 + j] for the rows_out*in_dim/seg
    // segments S; the reduction reads partial[o*per + t] and writes y[o] < rows_out. All lengths
    // checked above; synchronous calls.
    unsafe {
        T::HQQ_GEMV(
            packed.as_ptr(),
            s.as_ptr(),
            z.as_ptr(),
            x.as_ptr(),
            partial.as_mut_ptr(),
            i(code_rows),
            i(g),
            i(prows),
            i(in_dim),
            grid,
            block,
        );
        cpu_gemv_reduce_rows_f32(partial.as_ptr(), y.as_mut_ptr(), i(rows_out), i(per), grid, block);
    }
    y.into_vec()
}

/// The emulated 4-bit GPTQ GEMV (partial kernel over slices of `slice_rows` inputs, then the
/// column reduction); returns `y` (`n`).
///
/// # Panics
/// On inconsistent lengths or g_idx values (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn gptq_gemv_4b<T: EmuElem>(
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[T],
    g_idx: &[i32],
    x: &[f32],
    k: usize,
    n: usize,
    slice_rows: usize,
    format: i32,
    grid: u32,
    block: u32,
) -> Vec<f32> {
    let groups = scales.len() / n;
    assert!(k.is_multiple_of(slice_rows) && slice_rows.is_multiple_of(8) && n.is_multiple_of(8));
    assert_eq!((qweight.len(), qzeros.len(), g_idx.len(), x.len()), (k / 8 * n, groups * n / 8, k, k));
    assert!(g_idx.iter().all(|&g| g >= 0 && (g as usize) < groups));
    let s = Dev::from(&scales.iter().map(|v| v.raw()).collect::<Vec<_>>());
    let (qweight, qzeros, g_idx, x) = (Dev::from(qweight), Dev::from(qzeros), Dev::from(g_idx), Dev::from(x));
    let slices = k / slice_rows;
    let mut partial = Dev::<f32>::zeroed(slices * n);
    let mut y = Dev::<f32>::zeroed(n);
    let i = |v: usize| i32::try_from(v).expect("fits i32");
    // SAFETY: the partial kernel reads qweight word rows < k/8 (4 columns at a time, n % 8 == 0),
    // qzeros/scales rows g < groups (checked), x[k'] for k' < k, and writes partial[s*n + ..] for
    // s < slices; the reduction reads partial and writes y[0..n]. Lengths checked above.
    unsafe {
        T::GPTQ_GEMV(
            qweight.as_ptr(),
            qzeros.as_ptr(),
            s.as_ptr(),
            g_idx.as_ptr(),
            x.as_ptr(),
            partial.as_mut_ptr(),
            i(k),
            i(n),
            i(slice_rows),
            format,
            grid,
            block,
        );
        cpu_gemv_reduce_cols_f32(partial.as_ptr(), y.as_mut_ptr(), i(n), i(slices), grid, block);
    }
    y.into_vec()
}

/// The emulated `gather_f32`: `out[i] = x[perm[i]]`.
///
/// # Panics
/// When `perm` is not a permutation of `0..x.len()` (a test helper).
pub fn gather(x: &[f32], perm: &[i32], grid: u32, block: u32) -> Vec<f32> {
    let mut seen = vec![false; x.len()];
    assert_eq!(perm.len(), x.len());
    assert!(perm.iter().all(|&p| p >= 0 && !std::mem::replace(&mut seen[p as usize], true)));
    let (xd, pd) = (Dev::from(x), Dev::from(perm));
    let mut out = Dev::<f32>::zeroed(x.len());
    let k = i32::try_from(x.len()).expect("fits i32");
    // SAFETY: the kernel reads perm[i] and x[perm[i]] and writes out[i] for i < k; perm holds
    // each of 0..k once (checked), all three buffers have k elements.
    unsafe { cpu_gather_f32(xd.as_ptr(), pd.as_ptr(), out.as_mut_ptr(), k, grid, block) };
    out.into_vec()
}

/// The emulated `gather_rows_f32`: `out[r K + i] = x[r K + perm[i]]` for every row of `x`
/// (`rows` rows of `K = perm.len()` inputs).
///
/// # Panics
/// When `perm` is not a permutation of `0..K` or `x` is not `rows` rows of it (a test helper).
pub fn gather_rows(x: &[f32], perm: &[i32], rows: usize, grid: u32, block: u32) -> Vec<f32> {
    let k = perm.len();
    let mut seen = vec![false; k];
    assert_eq!(x.len(), rows * k);
    assert!(
        perm.iter().all(|&p| p >= 0 && (p as usize) < k && !std::mem::replace(&mut seen[p as usize], true))
    );
    let (xd, pd) = (Dev::from(x), Dev::from(perm));
    let mut out = Dev::<f32>::zeroed(x.len());
    let (ki, ri) = (i32::try_from(k).expect("fits i32"), i32::try_from(rows).expect("fits i32"));
    assert!(x.len() <= i32::MAX as usize);
    // SAFETY: the kernel reads perm[i] and x[r*k + perm[i]] and writes out[r*k + i] for r <
    // rows, i < k; perm holds each of 0..k once (checked), x and out rows*k < 2^31 elements.
    unsafe { cpu_gather_rows_f32(xd.as_ptr(), pd.as_ptr(), out.as_mut_ptr(), ki, ri, grid, block) };
    out.into_vec()
}

/// The emulated `awq_dequant_4b_{elem}`; returns `[K, N]`.
///
/// # Panics
/// On inconsistent lengths (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn awq_dequant<T: EmuElem>(
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[T],
    k: usize,
    n: usize,
    group_size: usize,
    grid: u32,
    block: u32,
) -> Vec<T> {
    assert!(n.is_multiple_of(8) && group_size > 0 && k.is_multiple_of(group_size));
    let groups = k / group_size;
    assert_eq!((qweight.len(), qzeros.len(), scales.len()), (k * n / 8, groups * n / 8, groups * n));
    let s = Dev::from(&scales.iter().map(|v| v.raw()).collect::<Vec<_>>());
    let (qweight, qzeros) = (Dev::from(qweight), Dev::from(qzeros));
    let mut out = Dev::<T::Raw>::zeroed(k * n);
    let i = |v: usize| i32::try_from(v).expect("fits i32");
    // SAFETY: the entry reads qweight[0..k*n/8], qzeros/scales rows < groups and writes
    // out[0..k*n]; lengths checked above; synchronous call.
    unsafe {
        T::AWQ(
            qweight.as_ptr(),
            qzeros.as_ptr(),
            s.as_ptr(),
            out.as_mut_ptr(),
            i(k),
            i(n),
            i(group_size),
            grid,
            block,
        )
    };
    out.into_vec().into_iter().map(T::from_raw).collect()
}

/// The emulated `fp8_dequant_{e4m3 (format 0), e5m2 (1)}_{elem}`; returns `[rows, cols]`.
///
/// # Panics
/// On inconsistent lengths (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn fp8_dequant<T: EmuElem>(
    format: usize,
    codes: &[u8],
    scales: &[f32],
    rows: usize,
    cols: usize,
    block: (usize, usize),
    grid: u32,
    threads: u32,
) -> Vec<T> {
    let (br, bc) = block;
    assert!(br > 0 && bc > 0 && format < 2);
    assert_eq!(codes.len(), rows * cols);
    assert_eq!(scales.len(), rows.div_ceil(br).max(1) * cols.div_ceil(bc).max(1));
    let (codes, scales) = (Dev::from(codes), Dev::from(scales));
    let mut out = Dev::<T::Raw>::zeroed(rows * cols);
    let i = |v: usize| i32::try_from(v).expect("fits i32");
    // SAFETY: the entry reads codes/out at r*cols + c < rows*cols and scales at
    // (r/br)*ceil(cols/bc) + c/bc within the grid checked above; synchronous call.
    unsafe {
        T::FP8[format](
            codes.as_ptr(),
            scales.as_ptr(),
            out.as_mut_ptr(),
            i(rows),
            i(cols),
            i(br),
            i(bc),
            grid,
            threads,
        )
    };
    out.into_vec().into_iter().map(T::from_raw).collect()
}
pub mod qgemm;
pub mod qgemv;
