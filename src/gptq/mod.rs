//! GPTQ: dequantization of the packed layers GPTQ libraries (auto-gptq, GPTQModel) write, for 2,
//! 3, 4 and 8 bits, symmetric or not, with act-order (`g_idx`), from v1 (`checkpoint_format:
//! "gptq"`) or v2 (`"gptq_v2"`) zero points.
//!
//! # Layout (a layer with `K` inputs and `N` outputs)
//!
//! ```text
//!  qweight  i32 [K*bits/32, N]   codes packed along K, LSB first
//!  qzeros   i32 [G, N*bits/32]   zero points packed along N, LSB first (v1: stored z - 1)
//!  scales   f16 [G, N]           G = ceil(K / group_size), or 1 for group_size -1
//!  g_idx    i32 [K]              group of input k (act-order: any permutation of groups)
//!  W        [K, N]               W[k, n] = (q[k, n] - z[g_idx[k], n]) * scales[g_idx[k], n]
//! ```
//!
//! 2/4/8-bit: word `r` of a column holds inputs `r*32/bits + j` at bits `[bits*j, bits*j + bits)`.
//! 3-bit: three consecutive words hold 32 codes as one little-endian 96-bit stream; code `i` is
//! bits `[3i, 3i + 3)` of it (codes 10 and 21 straddle two words). `qzeros` use the same scheme
//! along `N`.
//!
//! W is `[K, N]`, the transpose of `nn.Linear.weight`: `y = x · W`.
//!
//! # Zero points
//!
//! v2 stores the zero point `z`; v1 stores `z - 1`. A v1 checkpoint is read the way GPTQModel
//! reads it: a wrapping add of `0x55555555` / `0x11111111` / `0x01010101` to every 2/4/8-bit
//! word (3-bit: `+1` per field, wrapping in the field). The two agree with auto-gptq's per-field
//! `+1` unless a true zero point was 0 (auto-gptq's writer then stored -1 and corrupted the word's
//! higher fields); in that edge case this crate follows GPTQModel, documented in the tests.

pub mod checkpoint;
mod config;
mod cpu;
pub mod fuse;
pub mod layout;
pub mod reference;
pub(crate) mod scheme;
pub mod sort;
pub(crate) mod tile;

pub use checkpoint::{GptqCheckpoint, GptqLayer, GptqLayerInfo};
pub use config::GptqConfig;
pub use fuse::{FusePlan, FuseReport, concat_dequantized, fuse_columns, fuse_layers, plan_fusion};

use crate::elem::Elem;
use crate::error::{Error, KernelError, Result, expect_len};
use crate::par::Parallelism;

/// How a checkpoint stores zero points (`checkpoint_format` in its quantization config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ZeroFormat {
    /// `"gptq"` (also the default when absent): stored field = z - 1.
    #[default]
    V1,
    /// `"gptq_v2"`: stored field = z.
    V2,
}

/// Shape and quantization parameters of one GPTQ layer.
///
/// ```
/// use quant_kernels::gptq::GptqLayout;
/// let l = GptqLayout::new(4096, 4096, 4, 128).unwrap();
/// assert_eq!((l.qweight_shape(), l.qzeros_shape(), l.groups()), ((512, 4096), (32, 512), 32));
/// assert!(GptqLayout::new(100, 64, 4, 32).is_err()); // K not a multiple of 8
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GptqLayout {
    k: usize,
    n: usize,
    bits: u8,
    group_size: Option<usize>,
    groups: usize,
}

impl GptqLayout {
    /// A layer with `k` inputs, `n` outputs, `bits` in {2, 3, 4, 8} and `group_size` -1 (one
    /// group over all of K) or positive. K must fill whole words (`K * bits % 32 == 0`, and
    /// K % 32 == 0 for 3-bit), and so must N for `qzeros`.
    pub fn new(k: usize, n: usize, bits: u8, group_size: i64) -> Result<Self> {
        if !matches!(bits, 2 | 3 | 4 | 8) {
            return Err(Error::Kernel(KernelError::UnsupportedBits(bits)));
        }
        let group_size = match group_size {
            -1 => None,
            g if g > 0 => {
                Some(usize::try_from(g).map_err(|_| Error::Kernel(KernelError::InvalidGroupSize(g)))?)
            }
            g => return Err(Error::Kernel(KernelError::InvalidGroupSize(g))),
        };
        let per = layout::codes_per_block(bits);
        for (what, value) in [("K", k), ("N", n)] {
            if !value.is_multiple_of(per) {
                return Err(Error::Kernel(KernelError::NotMultiple { what, value, multiple: per }));
            }
        }
        // K * N elements, and K * bits, N * bits for the packed shapes (either may be huge
        // while the other is 0).
        if k.checked_mul(n).is_none() || k.checked_mul(32).is_none() || n.checked_mul(32).is_none() {
            return Err(Error::Kernel(KernelError::ShapeOverflow { rows: k, cols: n }));
        }
        let groups = group_size.map_or(1, |g| k.div_ceil(g).max(1));
        Ok(Self { k, n, bits, group_size, groups })
    }

    /// [`GptqLayout::new`] that keeps `groups` groups of scales and zero points where `k`
    /// inputs alone would need fewer: a shard along the inputs of an act-order layer keeps
    /// every group of the whole, since its `g_idx` may reference any of them (as vLLM does).
    /// `groups` must be at least the count [`GptqLayout::new`] derives.
    ///
    /// ```
    /// use quant_kernels::gptq::GptqLayout;
    /// let l = GptqLayout::with_groups(64, 32, 4, 32, 8)?; // 64 of 256 act-order inputs
    /// assert_eq!((l.groups(), l.qzeros_shape()), (8, (8, 4)));
    /// assert!(GptqLayout::with_groups(64, 32, 4, 32, 1).is_err()); // 64 inputs need 2
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn with_groups(k: usize, n: usize, bits: u8, group_size: i64, groups: usize) -> Result<Self> {
        let mut l = Self::new(k, n, bits, group_size)?;
        if groups < l.groups {
            return Err(Error::Kernel(KernelError::TooFewGroups { groups, needed: l.groups }));
        }
        groups.checked_mul(n).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: groups, cols: n }))?;
        l.groups = groups;
        Ok(l)
    }

    /// Inputs (rows of W).
    pub fn k(&self) -> usize {
        self.k
    }
    /// Outputs (columns of W).
    pub fn n(&self) -> usize {
        self.n
    }
    /// Bits per code.
    pub fn bits(&self) -> u8 {
        self.bits
    }
    /// The group size, `None` for -1 (one group).
    pub fn group_size(&self) -> Option<usize> {
        self.group_size
    }
    /// Number of groups G: `ceil(K / group_size)` (1 for -1), or the count given to
    /// [`GptqLayout::with_groups`].
    pub fn groups(&self) -> usize {
        self.groups
    }
    /// `[K * bits / 32, N]`.
    pub fn qweight_shape(&self) -> (usize, usize) {
        (self.k * self.bits as usize / 32, self.n)
    }
    /// `[G, N * bits / 32]`.
    pub fn qzeros_shape(&self) -> (usize, usize) {
        (self.groups(), self.n * self.bits as usize / 32)
    }
    /// The `g_idx` of a checkpoint without act-order: `k / group_size` (all 0 for -1).
    pub fn default_g_idx(&self) -> Vec<i32> {
        (0..self.k).map(|k| self.group_size.map_or(0, |g| k / g) as i32).collect()
    }
}

/// The group of every input row, validated (`g_idx` given) or derived (`None`).
pub(crate) fn groups_of_rows(layout: &GptqLayout, g_idx: Option<&[i32]>) -> Result<Vec<u32>> {
    let groups = layout.groups();
    match g_idx {
        None => Ok(layout.default_g_idx().into_iter().map(|g| g as u32).collect()),
        Some(g_idx) => {
            expect_len("g_idx", layout.k, g_idx.len())?;
            g_idx
                .iter()
                .enumerate()
                .map(|(index, &v)| {
                    u32::try_from(v)
                        .ok()
                        .filter(|&g| (g as usize) < groups)
                        .ok_or(Error::Kernel(KernelError::GroupIndex { index, value: v as i64, groups }))
                })
                .collect()
        }
    }
}

/// Validated inputs of a dequantization call.
pub(crate) struct Checked {
    /// Group of each input row.
    pub rows_group: Vec<u32>,
    /// True zero points `[G, N]`.
    pub zeros: Vec<u32>,
}

pub(crate) fn check<S>(
    layout: &GptqLayout,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[S],
    g_idx: Option<&[i32]>,
    format: ZeroFormat,
    out: usize,
) -> Result<Checked> {
    let rows_group = check_inputs(layout, qweight, qzeros, scales, g_idx, out)?;
    let zeros = layout::unpack_zeros(qzeros, layout, format);
    Ok(Checked { rows_group, zeros })
}

/// The length checks of [`check`] and each row's group, without unpacking the zeros.
pub(crate) fn check_inputs<S>(
    layout: &GptqLayout,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[S],
    g_idx: Option<&[i32]>,
    out: usize,
) -> Result<Vec<u32>> {
    let (qr, qc) = layout.qweight_shape();
    expect_len("qweight", qr * qc, qweight.len())?;
    let (zr, zc) = layout.qzeros_shape();
    expect_len("qzeros", zr * zc, qzeros.len())?;
    expect_len("scales", layout.groups() * layout.n, scales.len())?;
    expect_len("out", layout.k * layout.n, out)?;
    // No output (K or N is 0) reads no row's group, and when N is 0 no stored data bounds K:
    // derive none (a given `g_idx` is still checked).
    if out == 0 && g_idx.is_none() { Ok(Vec::new()) } else { groups_of_rows(layout, g_idx) }
}

/// The true zero points `[G, N]` of a layer (v1 converted the way GPTQModel does).
pub fn zero_points(qzeros: &[i32], layout: &GptqLayout, format: ZeroFormat) -> Result<Vec<u32>> {
    let (zr, zc) = layout.qzeros_shape();
    expect_len("qzeros", zr * zc, qzeros.len())?;
    Ok(layout::unpack_zeros(qzeros, layout, format))
}

/// Evidence that zero points contradict the declared format: a symmetric layer must have
/// z = 2^(bits-1) everywhere (v1 stores 2^(bits-1) - 1, e.g. 4-bit words 0x77777777, v2 stores
/// 2^(bits-1), 0x88888888). Reading a v2 checkpoint as v1 (or the reverse) shifts every weight by
/// one step: the vLLM/GPTQModel bug class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZeroFormatMismatch {
    /// The format the config declares.
    pub declared: ZeroFormat,
    /// The format the stored zero points look like.
    pub looks_like: ZeroFormat,
}

/// For a symmetric layer, check the stored zero points against `declared`; `Some` when every
/// stored field equals what the *other* format would store.
pub fn check_zero_format(
    qzeros: &[i32],
    layout: &GptqLayout,
    declared: ZeroFormat,
) -> Result<Option<ZeroFormatMismatch>> {
    let stored = zero_points(qzeros, layout, ZeroFormat::V2)?; // raw fields
    let half = 1u32 << (layout.bits - 1);
    let (v1, v2) = (stored.iter().all(|&z| z == half - 1), stored.iter().all(|&z| z == half));
    let looks_like = match (v1, v2) {
        (true, false) => ZeroFormat::V1,
        (false, true) => ZeroFormat::V2,
        _ => return Ok(None),
    };
    Ok((looks_like != declared).then_some(ZeroFormatMismatch { declared, looks_like }))
}

/// Dequantize a GPTQ layer into `out` (`[K, N]` row-major), SIMD on one thread or rayon's pool.
///
/// `scales` may be `f32`, `f16` or `bf16`, `out` too; `g_idx` is the checkpoint's (act-order) or
/// `None` for `k / group_size`. Every length and every `g_idx` value is checked first.
///
/// ```
/// use quant_kernels::gptq::{self, GptqLayout, ZeroFormat};
/// use quant_kernels::Parallelism;
/// // 4-bit, K = 8, N = 8, one group: column n's codes are q[k] = k, zero 8 (v2), scale 0.5.
/// let l = GptqLayout::new(8, 8, 4, -1)?;
/// let qweight = vec![0x7654_3210i32; 8];      // one word per column: codes 0..7 along K
/// let qzeros = vec![0x8888_8888u32 as i32];    // z = 8 for all 8 columns
/// let w: Vec<f32> = gptq::gptq_dequantize(&qweight, &[0.5f32; 8], &qzeros, None, ZeroFormat::V2, &l,
///     Parallelism::SERIAL)?;
/// assert_eq!(&w[..8], &[-4.0; 8]);             // k = 0: (0 - 8) * 0.5
/// assert_eq!(&w[56..], &[-0.5; 8]);            // k = 7: (7 - 8) * 0.5
/// # Ok::<(), quant_kernels::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn gptq_dequantize_into<S: Elem, O: Elem>(
    qweight: &[i32],
    scales: &[S],
    qzeros: &[i32],
    g_idx: Option<&[i32]>,
    format: ZeroFormat,
    layout: &GptqLayout,
    out: &mut [O],
    par: Parallelism,
) -> Result<()> {
    let rows_group = check_inputs(layout, qweight, qzeros, scales, g_idx, out.len())?;
    cpu::dequant(layout, qweight, qzeros, format, &rows_group, scales, out, par);
    Ok(())
}

/// The allocating form of [`gptq_dequantize_into`].
pub fn gptq_dequantize<S: Elem, O: Elem>(
    qweight: &[i32],
    scales: &[S],
    qzeros: &[i32],
    g_idx: Option<&[i32]>,
    format: ZeroFormat,
    layout: &GptqLayout,
    par: Parallelism,
) -> Result<Vec<O>> {
    let mut out = vec![O::default(); layout.k * layout.n];
    gptq_dequantize_into(qweight, scales, qzeros, g_idx, format, layout, &mut out, par)?;
    Ok(out)
}

/// The naive oracle: the same checks, then one weight at a time (see [`mod@reference`]).
pub fn gptq_dequantize_reference_into<S: Elem, O: Elem>(
    qweight: &[i32],
    scales: &[S],
    qzeros: &[i32],
    g_idx: Option<&[i32]>,
    format: ZeroFormat,
    layout: &GptqLayout,
    out: &mut [O],
) -> Result<()> {
    let c = check(layout, qweight, qzeros, scales, g_idx, format, out.len())?;
    if out.is_empty() {
        return Ok(()); // K may be huge when N is 0: nothing to loop over
    }
    reference::dequant(layout, qweight, &c.rows_group, qzeros, format, scales, out);
    Ok(())
}
