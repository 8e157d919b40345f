//! AWQ (AutoAWQ "gemm" version): 4-bit weights packed along the output dimension in an
//! interleaved order, with a zero point and a scale per group of inputs.
//!
//! ```text
//!  qweight  i32 [K, N/8]   word c of row k holds columns 8c..8c+7; nibble i (bits 4i..4i+4)
//!                          holds column 8c + ORDER[i], ORDER = [0, 2, 4, 6, 1, 3, 5, 7]
//!  qzeros   i32 [G, N/8]   zero points, same packing, stored as is (0 and 15 both legal)
//!  scales   [G, N]         G = K / group_size
//!  W        [K, N]         W[k, n] = (q[k, n] - z[k / gs, n]) * scales[k / gs, n]
//! ```
//!
//! `W` is `[K = in, N = out]`, the transpose of `nn.Linear.weight`. [`awq_to_gptq`] and
//! [`gptq_to_awq`] convert losslessly to and from GPTQ (v2 zero points, no act-order).

pub mod checkpoint;
mod cpu;
pub mod reference;
pub(crate) mod scheme;
mod tile;

pub use checkpoint::{AwqCheckpoint, AwqConfig, AwqLayer, AwqLayerInfo};

use crate::elem::Elem;
use crate::error::{Error, KernelError, Result, expect_len};
use crate::gptq::{GptqLayout, ZeroFormat};
use crate::par::Parallelism;

/// Nibble `i` of a word holds column `8c + AWQ_ORDER[i]`.
pub const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];
/// Column `8c + j` sits in nibble `AWQ_REVERSE_ORDER[j]`.
pub const AWQ_REVERSE_ORDER: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

/// Shape of one AWQ layer (4-bit).
///
/// ```
/// use quant_kernels::awq::AwqLayout;
/// let l = AwqLayout::new(4096, 4096, 128).unwrap();
/// assert_eq!((l.groups(), l.packed_cols()), (32, 512));
/// assert!(AwqLayout::new(4096, 4100, 128).is_err()); // N must be a multiple of 8
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AwqLayout {
    k: usize,
    n: usize,
    group_size: usize,
}

impl AwqLayout {
    /// `k` inputs, `n` outputs (a multiple of 8), `group_size` dividing `k`.
    pub fn new(k: usize, n: usize, group_size: usize) -> Result<Self> {
        if !n.is_multiple_of(8) {
            return Err(Error::Kernel(KernelError::NotMultiple { what: "N", value: n, multiple: 8 }));
        }
        if group_size == 0 || !k.is_multiple_of(group_size) {
            return Err(Error::Kernel(KernelError::GroupSize { group: group_size, len: k }));
        }
        k.checked_mul(n).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: k, cols: n }))?;
        Ok(Self { k, n, group_size })
    }
    /// Inputs.
    pub fn k(&self) -> usize {
        self.k
    }
    /// Outputs.
    pub fn n(&self) -> usize {
        self.n
    }
    /// Inputs per group.
    pub fn group_size(&self) -> usize {
        self.group_size
    }
    /// G = K / group_size.
    pub fn groups(&self) -> usize {
        self.k / self.group_size
    }
    /// Words per row: N / 8.
    pub fn packed_cols(&self) -> usize {
        self.n / 8
    }
}

pub(crate) fn check<S>(
    l: &AwqLayout,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[S],
    out: usize,
) -> Result<()> {
    expect_len("qweight", l.k * l.packed_cols(), qweight.len())?;
    expect_len("qzeros", l.groups() * l.packed_cols(), qzeros.len())?;
    expect_len("scales", l.groups() * l.n, scales.len())?;
    expect_len("out", l.k * l.n, out)
}

/// Unpack an interleaved `[rows, n/8]` word matrix to `[rows, n]` codes.
pub fn unpack_interleaved(words: &[i32], n: usize) -> Vec<u8> {
    let mut out = vec![0u8; words.len() * 8];
    for (chunk, &w) in out.chunks_exact_mut(8).zip(words) {
        for (j, o) in chunk.iter_mut().enumerate() {
            *o = ((w as u32 >> (4 * AWQ_REVERSE_ORDER[j])) & 15) as u8;
        }
    }
    debug_assert!(n == 0 || out.len().is_multiple_of(n));
    out
}

/// Pack `[rows, n]` 4-bit codes into AWQ's interleaved `[rows, n/8]` words.
pub fn pack_interleaved(codes: &[u8]) -> Vec<i32> {
    codes
        .chunks_exact(8)
        .map(|c| (0..8).fold(0u32, |w, i| w | ((c[AWQ_ORDER[i]] as u32 & 15) << (4 * i))) as i32)
        .collect()
}

/// Dequantize an AWQ layer into `out` (`[K, N]` row-major), SIMD on one thread or rayon's pool.
///
/// ```
/// use quant_kernels::awq::{self, AwqLayout};
/// use quant_kernels::Parallelism;
/// let l = AwqLayout::new(1, 8, 1)?;
/// let qweight = awq::pack_interleaved(&[0, 1, 2, 3, 4, 5, 6, 7]);
/// assert_eq!(qweight, [0x7531_6420]);                       // nibbles hold columns 0,2,4,6,1,3,5,7
/// let qzeros = awq::pack_interleaved(&[1; 8]);
/// let w: Vec<f32> = awq::awq_dequantize(&qweight, &[0.5f32; 8], &qzeros, &l, Parallelism::SERIAL)?;
/// assert_eq!(w, [-0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0]);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn awq_dequantize_into<S: Elem, O: Elem>(
    qweight: &[i32],
    scales: &[S],
    qzeros: &[i32],
    layout: &AwqLayout,
    out: &mut [O],
    par: Parallelism,
) -> Result<()> {
    check(layout, qweight, qzeros, scales, out.len())?;
    cpu::dequant(layout, qweight, qzeros, scales, out, par);
    Ok(())
}

/// The allocating form of [`awq_dequantize_into`].
pub fn awq_dequantize<S: Elem, O: Elem>(
    qweight: &[i32],
    scales: &[S],
    qzeros: &[i32],
    layout: &AwqLayout,
    par: Parallelism,
) -> Result<Vec<O>> {
    let mut out = vec![O::default(); layout.k * layout.n];
    awq_dequantize_into(qweight, scales, qzeros, layout, &mut out, par)?;
    Ok(out)
}

/// The naive oracle: the same checks, then one weight at a time (see [`mod@reference`]).
pub fn awq_dequantize_reference_into<S: Elem, O: Elem>(
    qweight: &[i32],
    scales: &[S],
    qzeros: &[i32],
    layout: &AwqLayout,
    out: &mut [O],
) -> Result<()> {
    check(layout, qweight, qzeros, scales, out.len())?;
    reference::dequant(layout, qweight, qzeros, scales, out);
    Ok(())
}

/// A GPTQ layer's tensors: `qweight [K/8, N]`, `qzeros [G, N/8]` (v2), `scales` unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptqTensors {
    /// Codes packed along K.
    pub qweight: Vec<i32>,
    /// Zero points packed along N, v2 (stored as is).
    pub qzeros: Vec<i32>,
    /// The layout (4-bit, group size as AWQ's, no act-order).
    pub layout: GptqLayout,
}

/// Convert an AWQ layer to GPTQ (4-bit, v2 zero points, `g_idx = k / group_size`), losslessly:
/// scales carry over unchanged and the dequantized weights are identical.
pub fn awq_to_gptq(qweight: &[i32], qzeros: &[i32], layout: &AwqLayout) -> Result<GptqTensors> {
    check::<u8>(layout, qweight, qzeros, &vec![0u8; layout.groups() * layout.n], layout.k * layout.n)?;
    let g = GptqLayout::new(layout.k, layout.n, 4, layout.group_size as i64)?;
    let (k, n) = (layout.k, layout.n);
    let codes = unpack_interleaved(qweight, n); // [K, N]
    let mut gq = vec![0i32; k / 8 * n];
    for (kk, row) in codes.chunks_exact(n.max(1)).enumerate().take(k) {
        for (nn, &c) in row.iter().enumerate() {
            gq[(kk / 8) * n + nn] |= ((c as u32) << (4 * (kk % 8))) as i32;
        }
    }
    let zeros = unpack_interleaved(qzeros, n); // [G, N]
    let gz = zeros
        .chunks_exact(8)
        .map(|c| (0..8).fold(0u32, |w, i| w | ((c[i] as u32) << (4 * i))) as i32)
        .collect();
    Ok(GptqTensors { qweight: gq, qzeros: gz, layout: g })
}

/// Convert a 4-bit GPTQ layer without act-order to AWQ (zero points read per `format`, v1 the
/// way GPTQModel reads it, so every zero point is a 4-bit field), losslessly: `(qweight,
/// qzeros)` in AWQ's interleaved packing, scales unchanged, identical dequantized weights.
pub fn gptq_to_awq(
    qweight: &[i32],
    qzeros: &[i32],
    layout: &GptqLayout,
    format: ZeroFormat,
) -> Result<(Vec<i32>, Vec<i32>, AwqLayout)> {
    if layout.bits() != 4 {
        return Err(Error::Kernel(KernelError::UnsupportedBits(layout.bits())));
    }
    let gs = layout.group_size().unwrap_or(layout.k());
    let a = AwqLayout::new(layout.k(), layout.n(), gs.max(1))?;
    let (qr, qc) = layout.qweight_shape();
    expect_len("qweight", qr * qc, qweight.len())?;
    let zeros = crate::gptq::zero_points(qzeros, layout, format)?;
    let (k, n) = (layout.k(), layout.n());
    let mut codes = vec![0u8; k * n];
    for (kk, row) in codes.chunks_exact_mut(n.max(1)).enumerate().take(k) {
        for (nn, c) in row.iter_mut().enumerate() {
            *c = ((qweight[(kk / 8) * n + nn] as u32 >> (4 * (kk % 8))) & 15) as u8;
        }
    }
    let z8: Vec<u8> = zeros.iter().map(|&z| z as u8).collect();
    Ok((pack_interleaved(&codes), pack_interleaved(&z8), a))
}
