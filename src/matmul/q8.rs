//! Integer dot products on quantized activations: activations quantized to `int8` once per
//! call in blocks of [`BLOCK`] (an `f32` scale `d = max|x| / 127` and the block's code sum per
//! block), weights as 4- or 8-bit unsigned codes with a float scale `s` and zero point `z` per
//! row and group of inputs, and per output
//!
//! `sum_k (q_k - z) s x_k ~= sum_groups s * (sum_{blocks b} d_b * dot_b - z * E_g)`,
//! `E_g = sum_{b in g} d_b * sum_b xq`,
//!
//! where the block dot products `dot_b = sum_k q_k xq_k` are exact `i32` arithmetic and the
//! scales apply once per block.
//!
//! The weight layout ([`IntWeight`]) is the one the kernels stream: rows in tiles of [`TILE`];
//! per tile and chunk of 8 inputs, 4-bit codes take 64 bytes, byte `4 l + j` holding row `l`'s
//! input `j` in its low nibble and input `j + 4` in its high one, so one 64-byte load and a mask
//! give 16 rows × 4 codes, one `vpdpbusd` by 4 broadcast activation bytes adds them into 16 row
//! lanes, and no lane is ever summed across. 8-bit codes take 128 bytes: byte `4 l + j` of the
//! first 64 holds input `j`, of the second input `j + 4` (two loads, no mask). Each tile's bytes are contiguous (one stream per tile); scales and
//! zero points are kept per tile and group as 16 lanes, in `f16` when every value is exactly an
//! `f16` (GPTQ, AWQ and `f16` HQQ parameters), else `f32`.
//!
//! Kernels: AVX-512 VNNI (`vpdpbusd`; 4 tiles by 1 token, or 1 tile by up to 8 tokens per
//! pass, so that a decoded 64-byte load feeds `2 T` dot products; the activation quantizer
//! too) where the CPU has it and the call's [`Parallelism`] allows x86-64-v4, else AVX-VNNI
//! where the CPU has it and x86-64-v3 is allowed, else portable code compiled for the best
//! instruction set ([`kernel`] names the one a call uses). Weights whose scales vary along the
//! inputs (HQQ axis 0) go through [`ColumnWeight`]. No AMX: the tile instructions need a CPU and OS that
//! grant them (not this crate's test machines) and intrinsics that stable Rust lacks.
//!
//! Error: with `d = max|x| / 127` per block (stored in `f32`, no clamping), every activation is
//! within `d / 2` of `xq * d`, so an output differs from the `f32`-activation result by at most
//! `sum_blocks (d / 2) * sum_k |w_k|` (`w_k = (q_k - z) s`), plus `f32` rounding of the
//! per-block terms; [`error_bound`] computes it.

pub use super::q8_columns::{ColumnWeight, multiply_columns};
use super::q8_vnni::{self, AvxVnni, Vnni};
use crate::error::{Error, KernelError, Result, expect_len};
use crate::par::{Isa, Parallelism};
use half::f16;
use rayon::prelude::*;

/// Activations per quantization block.
pub const BLOCK: usize = 32;

/// Output rows per tile of [`IntWeight`].
pub const TILE: usize = 16;

/// Bytes of one tile per 8 inputs (a chunk) with `bits`-bit codes: 64 or 128.
const fn chunk_bytes(bits: u32) -> usize {
    TILE * bits as usize
}

/// Activations quantized per block of [`BLOCK`]: `x ~= codes * scales[block]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Q8Activations {
    /// Rows (tokens).
    pub batch: usize,
    /// Values per row (a multiple of [`BLOCK`]).
    pub k: usize,
    /// `batch * k` codes in `-127..=127`.
    pub codes: Vec<i8>,
    /// `batch * k / BLOCK` scales `max|x| / 127` (0 for an all-zero block).
    pub scales: Vec<f32>,
    /// `batch * k / BLOCK` sums of the block's codes.
    pub sums: Vec<i32>,
}

impl Q8Activations {
    /// `batch` rows of `k` (a multiple of [`BLOCK`]) zeros, the buffers kept.
    pub(super) fn reset(&mut self, batch: usize, k: usize) {
        let n = batch * k;
        (self.batch, self.k) = (batch, k);
        self.codes.clear();
        self.codes.resize(n, 0);
        self.scales.clear();
        self.scales.resize(n / BLOCK, 0.0);
        self.sums.clear();
        self.sums.resize(n / BLOCK, 0);
    }
}

fn not_multiple(what: &'static str, value: usize, multiple: usize) -> Error {
    Error::Kernel(KernelError::NotMultiple { what, value, multiple })
}

/// Quantize `x` (`[batch, k]`, `k` a multiple of [`BLOCK`]) to `int8` per block: `d = max|x| /
/// 127`, `q = round(x * (127 / max|x|))` (ties to even), so `|x - q d| <= d / 2`. Blocks split
/// over the pool as `par` allows (the same codes either way).
///
/// ```
/// use quant_kernels::matmul::q8::quantize_activations;
/// use quant_kernels::Parallelism;
/// let mut x = vec![0.0f32; 32];
/// x[0] = 1.27;
/// x[1] = -0.5;
/// let q = quantize_activations(&x, 1, 32, Parallelism::SERIAL)?;
/// assert_eq!((q.codes[0], q.codes[1], q.scales[0], q.sums[0]), (127, -50, 0.01, 77));
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn quantize_activations(x: &[f32], batch: usize, k: usize, par: Parallelism) -> Result<Q8Activations> {
    let mut q = Q8Activations { batch: 0, k, codes: Vec::new(), scales: Vec::new(), sums: Vec::new() };
    quantize_activations_into(x, batch, k, &mut q, par)?;
    Ok(q)
}

/// [`quantize_activations`] into `q`, whose buffers are reused (grown, never shrunk).
pub fn quantize_activations_into(
    x: &[f32],
    batch: usize,
    k: usize,
    q: &mut Q8Activations,
    par: Parallelism,
) -> Result<()> {
    if !k.is_multiple_of(BLOCK) {
        return Err(not_multiple("activation length", k, BLOCK));
    }
    let n = batch.checked_mul(k).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: batch, cols: k }))?;
    expect_len("activations", n, x.len())?;
    let blocks = n / BLOCK;
    q.reset(batch, k);
    // Chunks of whole blocks; each reports its first non-finite value, the earliest wins.
    let per = blocks.div_ceil(par.tasks(n).max(1)).max(1);
    let job = |(c, (x, out)): (usize, (&[f32], QuantOut<'_>))| {
        quantize_blocks(par, x, out, None).map(|i| c * per * BLOCK + i)
    };
    let chunks = x
        .chunks(per * BLOCK)
        .zip(q.codes.chunks_mut(per * BLOCK))
        .zip(q.scales.chunks_mut(per))
        .zip(q.sums.chunks_mut(per))
        .map(|(((x, codes), scales), sums)| (x, QuantOut { codes, scales, sums }))
        .enumerate();
    let bad =
        if per < blocks { chunks.par_bridge().filter_map(job).min() } else { chunks.filter_map(job).min() };
    match bad {
        Some(index) => Err(Error::Kernel(KernelError::NonFinite { index })),
        None => Ok(()),
    }
}

/// 1.5 * 2^23: `x + ROUND` is `round_ties_even(x)` in the low mantissa bits for `|x| < 2^22`.
pub(super) const ROUND: f32 = 12_582_912.0;

/// Where whole blocks of activations go: codes, scales and code sums.
pub(super) struct QuantOut<'a> {
    pub codes: &'a mut [i8],
    pub scales: &'a mut [f32],
    pub sums: &'a mut [i32],
}

/// Per-input scaling before quantization (rows of `s.len()` values, starting at a row): `u =
/// s x`, and per row `c = sum_lanes f64(sum (z - m) u)` over 32 `f32` lanes of fused
/// multiply-adds (see [`super::q8_columns`]).
pub(super) struct Scaled<'a> {
    pub s: &'a [f32],
    pub z: &'a [f32],
    pub m: f32,
    pub c: &'a mut [f64],
}

/// Whole blocks of `x` (scaled first when `scaled` is given) into `out` on one thread, with the
/// AVX-512 kernel when the CPU has it and `par` allows x86-64-v4 (the same results either
/// way); the index of the first non-finite value, if any (the outputs are then partly
/// written).
pub(super) fn quantize_blocks(
    par: Parallelism,
    x: &[f32],
    out: QuantOut<'_>,
    scaled: Option<Scaled<'_>>,
) -> Option<usize> {
    match Dot::choose(par) {
        Dot::Avx512(token) => q8_vnni::quantize(token, x, out, scaled),
        _ => crate::lanes::dispatch(par, Quantize { x, out, scaled }),
    }
}

/// The portable quantizer ([`quantize_blocks`]).
struct Quantize<'a> {
    x: &'a [f32],
    out: QuantOut<'a>,
    scaled: Option<Scaled<'a>>,
}

impl crate::lanes::Kernel for Quantize<'_> {
    type Output = Option<usize>;
    #[inline(always)]
    fn run(self, _simd: crate::lanes::Simd) -> Option<usize> {
        let Self { x, out: QuantOut { codes, scales, sums }, mut scaled } = self;
        let per_row = scaled.as_ref().map_or(1, |s| s.s.len() / BLOCK);
        let mut lanes = [0f32; BLOCK];
        let blocks =
            x.chunks_exact(BLOCK).zip(codes.chunks_exact_mut(BLOCK)).zip(scales.iter_mut().zip(sums));
        for (b, ((xb, qb), (d, sum))) in blocks.enumerate() {
            let mut u: [f32; BLOCK] = xb.try_into().expect("whole blocks");
            let qb: &mut [i8; BLOCK] = qb.try_into().expect("whole blocks");
            if let Some(sc) = &mut scaled {
                let at = b % per_row * BLOCK;
                let (s, z) = (&sc.s[at..at + BLOCK], &sc.z[at..at + BLOCK]);
                for l in 0..BLOCK {
                    u[l] *= s[l];
                    lanes[l] = (z[l] - sc.m).mul_add(u[l], lanes[l]);
                }
                if b % per_row == per_row - 1 {
                    sc.c[b / per_row] = lanes.iter().map(|&v| v as f64).sum();
                    lanes = [0f32; BLOCK];
                }
            }
            // Lane-wise over 8 partial maxima (vectorizes); `v * 0` is NaN exactly for a NaN
            // or an infinity (max would skip a NaN).
            let (mut m, mut nan) = ([0f32; 8], [0f32; 8]);
            for c in u.chunks_exact(8) {
                for l in 0..8 {
                    (m[l], nan[l]) = (m[l].max(c[l].abs()), nan[l] + c[l] * 0.0);
                }
            }
            if nan.iter().any(|v| v.is_nan()) {
                return u.iter().position(|v| !v.is_finite()).map(|i| b * BLOCK + i);
            }
            let amax = m.iter().fold(0f32, |a, &v| a.max(v));
            if amax == 0.0 {
                (*qb, *d, *sum) = ([0; BLOCK], 0.0, 0);
                continue;
            }
            *d = amax / 127.0;
            let inv = 127.0 / amax;
            for (q, &v) in qb.iter_mut().zip(&u) {
                // |v * inv| <= 127 up to one rounding; the clamp only catches that rounding.
                // Adding 1.5 * 2^23 rounds to an integer (ties to even) held in the low
                // mantissa bits: `round_ties_even` and a saturating cast, but vectorized.
                let r = (v * inv).clamp(-127.0, 127.0) + ROUND;
                *q = (r.to_bits() as i32 - ROUND.to_bits() as i32) as i8;
            }
            *sum = qb.iter().map(|&q| q as i32).sum();
        }
        None
    }
}

/// `group` a positive multiple of [`BLOCK`] dividing `k`.
fn check_group(k: usize, group: usize) -> Result<()> {
    if group == 0 || !group.is_multiple_of(BLOCK) {
        return Err(not_multiple("group size", group, BLOCK));
    }
    if !k.is_multiple_of(group) {
        return Err(not_multiple("inputs", k, group));
    }
    Ok(())
}

/// 4- or 8-bit weights `[rows, k]` for the integer path: unsigned codes with a float scale `s`
/// and zero point `z` per row and group of `group` inputs (a multiple of [`BLOCK`]):
/// `w = (q - z) * s`.
///
/// Stored as one stream per tile of [`TILE`] rows: per group, the tile's 16 scales and 16 zero
/// points (`f16` when every value of the weight is exactly an `f16`, else `f32`), then the
/// group's codes, 64 (4-bit) or 128 (8-bit) bytes per 8 inputs (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct IntWeight {
    rows: usize,
    k: usize,
    group: usize,
    /// Code width: 4 or 8.
    bits: u32,
    /// Bytes of one tile's 16 scales and 16 zero points: 64 (`f16`) or 128 (`f32`).
    param_bytes: usize,
    data: Lines,
}

/// A weight re-laid for the int8 path ([`QuantLinear`](crate::QuantLinear)'s
/// [`Activations::Int8`](super::Activations::Int8)).
#[derive(Debug, Clone, PartialEq)]
pub enum Int8Weight {
    /// Scales and zero points per row and group of inputs ([`multiply`]).
    Rows(IntWeight),
    /// Scales and zero points per class of rows and input: HQQ's axis 0
    /// ([`multiply_columns`]).
    Columns(ColumnWeight),
}

impl Int8Weight {
    /// Bytes as stored: what one multiply reads.
    pub fn stored_bytes(&self) -> usize {
        match self {
            Int8Weight::Rows(w) => w.stored_bytes(),
            Int8Weight::Columns(w) => w.stored_bytes(),
        }
    }
}

impl From<IntWeight> for Int8Weight {
    fn from(w: IntWeight) -> Self {
        Int8Weight::Rows(w)
    }
}

impl From<ColumnWeight> for Int8Weight {
    fn from(w: ColumnWeight) -> Self {
        Int8Weight::Columns(w)
    }
}

/// Bytes starting on a 64-byte boundary (a cache line: the kernels' 64-byte loads then never
/// straddle two), in safe code: a buffer 63 bytes longer and the offset of its first aligned
/// byte, found again for every copy.
#[derive(Debug, Default)]
struct Lines {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Lines {
    fn zeroed(len: usize) -> Self {
        let buf = vec![0u8; len + 63];
        let off = buf.as_ptr().align_offset(64).min(63);
        Self { buf, off, len }
    }
}

impl std::ops::Deref for Lines {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }
}

impl std::ops::DerefMut for Lines {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl Clone for Lines {
    fn clone(&self) -> Self {
        let mut c = Self::zeroed(self.len);
        c.copy_from_slice(self);
        c
    }
}

impl PartialEq for Lines {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl IntWeight {
    /// From unpacked `bits`-bit codes (4 or 8; `rows * k`, each `< 2^bits`, row-major) and
    /// `rows * k / group` scales and zero points (row-major `[rows, groups]`). `group` must be a
    /// positive multiple of [`BLOCK`] dividing `k`.
    ///
    /// ```
    /// use quant_kernels::matmul::q8::IntWeight;
    /// let w = IntWeight::from_codes(4, &[3; 32], &[0.5], &[1.0], 1, 32, 32)?;
    /// assert_eq!(w.dequantize()[0], 1.0); // (3 - 1) * 0.5
    /// assert_eq!(w.stored_bytes(), 16 * 16 + 2 * 2 * 16); // one tile of 16 rows, f16 parameters
    /// let w8 = IntWeight::from_codes(8, &[200; 32], &[0.5], &[128.0], 1, 32, 32)?;
    /// assert_eq!((w8.dequantize()[0], w8.stored_bytes()), (36.0, 16 * 32 + 2 * 2 * 16));
    /// # Ok::<(), quant_kernels::Error>(())
    /// ```
    pub fn from_codes(
        bits: u32,
        codes: &[u8],
        scales: &[f32],
        zeros: &[f32],
        rows: usize,
        k: usize,
        group: usize,
    ) -> Result<Self> {
        check_group(k, group)?;
        let n = rows.checked_mul(k).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols: k }))?;
        expect_len("codes", n, codes.len())?;
        expect_len("scales", n / group, scales.len())?;
        expect_len("zeros", n / group, zeros.len())?;
        Self::from_rows(bits, rows, k, group, |r, c, s, z| {
            let g = s.len();
            c.copy_from_slice(&codes[r * k..(r + 1) * k]);
            s.copy_from_slice(&scales[r * g..(r + 1) * g]);
            z.copy_from_slice(&zeros[r * g..(r + 1) * g]);
            Ok(())
        })
    }

    /// Built row by row: `row(r, codes, scales, zeros)` fills row `r`'s `k` codes (each
    /// `< 2^bits`, `bits` 4 or 8) and its `k / group` scales and zero points (finite). Only one
    /// row's unpacked codes exist at a time, so re-laying a loaded layer costs its packed size,
    /// not a byte per weight.
    pub fn from_rows(
        bits: u32,
        rows: usize,
        k: usize,
        group: usize,
        mut row: impl FnMut(usize, &mut [u8], &mut [f32], &mut [f32]) -> Result<()>,
    ) -> Result<Self> {
        if bits != 4 && bits != 8 {
            return Err(Error::Kernel(KernelError::UnsupportedBits(bits.min(255) as u8)));
        }
        check_group(k, group)?;
        let overflow = Error::Kernel(KernelError::ShapeOverflow { rows, cols: k });
        let tiles = rows.div_ceil(TILE);
        let groups = k / group;
        let max = ((1u32 << bits) - 1) as u8;
        // Laid out with f32 parameters first, compacted to f16 at the end when exact.
        let mut w = Self { rows, k, group, bits, param_bytes: 128, data: Lines::default() };
        let bytes = tiles.checked_mul(w.tile_stride()).ok_or(overflow)?;
        w.data = Lines::zeroed(bytes);
        let (mut c, mut s, mut z) = (vec![0u8; k], vec![0f32; groups], vec![0f32; groups]);
        let mut exact = true;
        for r in 0..rows {
            row(r, &mut c, &mut s, &mut z)?;
            if let Some(i) = c.iter().position(|&q| q > max) {
                return Err(Error::Kernel(KernelError::CodeOutOfRange {
                    index: r * k + i,
                    code: c[i],
                    bits: bits as u8,
                }));
            }
            if let Some(i) = s.iter().chain(&z).position(|v| !v.is_finite()) {
                return Err(Error::Kernel(KernelError::NonFinite { index: r * groups + i % groups }));
            }
            exact &= s.iter().chain(&z).all(|&v| f16::from_f32(v).to_f32() == v);
            let (tile, lane) = (r / TILE, r % TILE);
            for (g, (cg, (&sg, &zg))) in c.chunks_exact(group).zip(s.iter().zip(&z)).enumerate() {
                let (at, stride) = (w.group_offset(tile, g), w.group_stride());
                let dst = &mut w.data[at..at + stride];
                dst[4 * lane..4 * lane + 4].copy_from_slice(&sg.to_le_bytes());
                dst[64 + 4 * lane..64 + 4 * lane + 4].copy_from_slice(&zg.to_le_bytes());
                for (chunk, q) in dst[128..].chunks_exact_mut(chunk_bytes(bits)).zip(cg.chunks_exact(8)) {
                    for j in 0..4 {
                        if bits == 4 {
                            chunk[4 * lane + j] = q[j] | (q[j + 4] << 4);
                        } else {
                            (chunk[4 * lane + j], chunk[64 + 4 * lane + j]) = (q[j], q[j + 4]);
                        }
                    }
                }
            }
        }
        if exact {
            w.compact_to_f16();
        }
        Ok(w)
    }

    /// Rewrite the `f32` parameters as `f16` (every one exact), moving each group down: the
    /// new offsets never pass the old ones, so in place front to back.
    fn compact_to_f16(&mut self) {
        let old = self.group_stride();
        let groups = self.data.len() / old;
        for i in 0..groups {
            let src = i * old;
            let mut p = [0u8; 64];
            for (j, v) in self.data[src..src + 128].chunks_exact(4).enumerate() {
                let v = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                p[2 * j..2 * j + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
            }
            let dst = i * (old - 64);
            self.data.copy_within(src + 128..src + old, dst + 64);
            self.data[dst..dst + 64].copy_from_slice(&p);
        }
        let mut lines = Lines::zeroed(groups * (old - 64));
        lines.copy_from_slice(&self.data[..groups * (old - 64)]);
        self.data = lines;
        self.param_bytes = 64;
    }

    /// Bytes per tile and group: parameters, then `group / 8` chunks of codes.
    fn group_stride(&self) -> usize {
        self.param_bytes + self.group / 8 * chunk_bytes(self.bits)
    }

    /// Bytes per tile.
    fn tile_stride(&self) -> usize {
        self.k / self.group * self.group_stride()
    }

    fn group_offset(&self, tile: usize, g: usize) -> usize {
        tile * self.tile_stride() + g * self.group_stride()
    }

    /// Scale and zero point of lane `lane` at a group's offset `at`.
    fn param(&self, at: usize, lane: usize) -> (f32, f32) {
        read_param(&self.data[at..], self.param_bytes, lane)
    }

    /// Outputs.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Inputs.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Inputs per group.
    pub fn group(&self) -> usize {
        self.group
    }

    /// Code width: 4 or 8.
    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Bytes as stored (codes of whole tiles, scales and zero points): what one multiply reads.
    pub fn stored_bytes(&self) -> usize {
        self.data.len()
    }

    /// The weight `[rows, k]` in `f32`: `(q - z) * s`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.k];
        for (r, row) in out.chunks_exact_mut(self.k.max(1)).enumerate() {
            self.dequantize_row(r, row);
        }
        out
    }

    /// Row `r` (`< rows`) into `out` (`k` values).
    pub(super) fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (tile, lane) = (r / TILE, r % TILE);
        for (g, vals) in out.chunks_exact_mut(self.group).enumerate() {
            let at = self.group_offset(tile, g);
            let (s, z) = self.param(at, lane);
            let codes = &self.data[at + self.param_bytes..at + self.group_stride()];
            for (v, chunk) in vals.chunks_exact_mut(8).zip(codes.chunks_exact(chunk_bytes(self.bits))) {
                for j in 0..4 {
                    let (lo, hi) = chunk_codes(chunk, self.bits, lane, j);
                    v[j] = (lo as f32 - z) * s;
                    v[j + 4] = (hi as f32 - z) * s;
                }
            }
        }
    }
}

/// Row `lane`'s codes for inputs `j` and `j + 4` (`j < 4`) of one chunk of `bits`-bit codes.
#[inline(always)]
fn chunk_codes(chunk: &[u8], bits: u32, lane: usize, j: usize) -> (u8, u8) {
    let b = chunk[4 * lane + j];
    if bits == 4 { (b & 15, b >> 4) } else { (b, chunk[64 + 4 * lane + j]) }
}

/// Lane `lane`'s scale and zero point from a group's parameters `p` (`param_bytes` of them).
fn read_param(p: &[u8], param_bytes: usize, lane: usize) -> (f32, f32) {
    let half = param_bytes / 2;
    if param_bytes == 64 {
        let h = |o: usize| f16::from_le_bytes([p[o], p[o + 1]]).to_f32();
        (h(2 * lane), h(half + 2 * lane))
    } else {
        let f = |o: usize| f32::from_le_bytes([p[o], p[o + 1], p[o + 2], p[o + 3]]);
        (f(4 * lane), f(half + 4 * lane))
    }
}

/// The bound on `|y - y_f32|` for output `r` of activation row `t` of [`multiply`] that
/// comes from quantizing the activations: `sum_blocks (d / 2) * sum_k |w_k|` (exact `f64`). A
/// row or output past the shapes, or activations of another length, is a typed error.
pub fn error_bound(w: &IntWeight, x: &Q8Activations, t: usize, r: usize) -> Result<f64> {
    expect_len("activation length", w.k, x.k)?;
    for (what, index, len) in [("activation row", t, x.batch), ("output", r, w.rows)] {
        if index >= len {
            return Err(Error::Kernel(KernelError::IndexOutOfRange { what, index, len }));
        }
    }
    let mut row = vec![0f32; w.k];
    w.dequantize_row(r, &mut row);
    let d = &x.scales[t * (x.k / BLOCK)..(t + 1) * (x.k / BLOCK)];
    Ok(row
        .chunks_exact(BLOCK)
        .zip(d)
        .map(|(wb, &d)| d as f64 / 2.0 * wb.iter().map(|v| v.abs() as f64).sum::<f64>())
        .sum())
}

/// The kernel [`multiply`] runs under `par`: `"avx512-vnni"` (the CPU has AVX-512 VNNI
/// and `par` allows x86-64-v4), else `"avx-vnni"` (the CPU has AVX-VNNI and `par` allows
/// x86-64-v3), else `"portable"`.
pub fn kernel(par: Parallelism) -> &'static str {
    match Dot::choose(par) {
        Dot::Avx512(_) => "avx512-vnni",
        Dot::Avx256(_) => "avx-vnni",
        Dot::Portable => "portable",
    }
}

/// The integer-dot instructions a call may use.
#[derive(Clone, Copy)]
pub(super) enum Dot {
    Avx512(Vnni),
    Avx256(AvxVnni),
    Portable,
}

impl Dot {
    /// Tiles `tile0..` of `a`'s weight for every activation row into `out` (`[tiles, batch,
    /// TILE]`), on this kernel.
    fn tiles(self, par: Parallelism, a: &Args<'_>, tile0: usize, out: &mut [f32]) {
        match self {
            Dot::Avx512(token) => q8_vnni::tiles(token, a, tile0, out),
            Dot::Avx256(token) => q8_vnni::tiles_256(token, a, tile0, out),
            Dot::Portable => crate::lanes::dispatch(par, Portable { a, tile0, out }),
        }
    }

    pub(super) fn choose(par: Parallelism) -> Dot {
        let isa = par.isa();
        if let Some(t) = (isa == Isa::X86V4Avx512).then(Vnni::detect).flatten() {
            Dot::Avx512(t)
        } else if let Some(t) = (isa != Isa::Baseline).then(AvxVnni::detect).flatten() {
            Dot::Avx256(t)
        } else {
            Dot::Portable
        }
    }
}

/// What a kernel reads: the weight and one call's activations.
pub(crate) struct Args<'a> {
    /// The weight's tiles ([`IntWeight`]'s layout).
    pub data: &'a [u8],
    pub k: usize,
    pub group: usize,
    /// 64 (`f16` parameters) or 128 (`f32`).
    pub param_bytes: usize,
    /// Code width: 4 or 8.
    pub bits: u32,
    /// Activation codes `[batch, k]`, scales `[batch, k / BLOCK]`, and per group
    /// `E_g = sum_{b in g} d_b * sum_b` (`[batch, groups]`).
    pub xq: &'a [i8],
    pub xd: &'a [f32],
    pub xe: &'a [f32],
    pub batch: usize,
}

impl Args<'_> {
    /// Bytes per tile and group.
    pub fn group_stride(&self) -> usize {
        self.param_bytes + self.group / 8 * chunk_bytes(self.bits)
    }
}

/// `y = x W^T` (`y`: `[batch, rows]`) from 4- or 8-bit weights and `int8` activations: per block an
/// exact `i32` dot product of codes, `G += d * dot` per block and `y += s * (G - z * E_g)` per
/// group in `f32` (fused multiply-adds in the VNNI kernels, which give the same bits at every
/// batch). Tiles of 16 outputs split over the pool as
/// `par` allows (the same bits either way).
///
/// ```
/// use quant_kernels::matmul::q8::{multiply, quantize_activations, IntWeight};
/// use quant_kernels::Parallelism;
/// // Row 0: codes 2, zero 1, scale 0.5 (w = 0.5); row 1: codes 0, zero 0 (w = 0).
/// let codes: Vec<u8> = [[2u8; 32], [0; 32]].concat();
/// let w = IntWeight::from_codes(4, &codes, &[0.5, 1.0], &[1.0, 0.0], 2, 32, 32)?;
/// let x = quantize_activations(&[2.0f32; 32], 1, 32, Parallelism::SERIAL)?; // codes 127, d = 2/127
/// let mut y = [0f32; 2];
/// multiply(&w, &x, &mut y, Parallelism::SERIAL)?;
/// assert_eq!(y, [32.0, 0.0]); // 32 * 0.5 * 2
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn multiply(w: &IntWeight, x: &Q8Activations, y: &mut [f32], par: Parallelism) -> Result<()> {
    multiply_with(w, x, y, par, &mut Vec::new())
}

/// [`multiply`] with a scratch buffer kept by the caller (grown, never shrunk).
pub(crate) fn multiply_with(
    w: &IntWeight,
    x: &Q8Activations,
    y: &mut [f32],
    par: Parallelism,
    scratch: &mut Vec<f32>,
) -> Result<()> {
    expect_len("activation length", w.k, x.k)?;
    let n = x
        .batch
        .checked_mul(w.rows)
        .ok_or(Error::Kernel(KernelError::ShapeOverflow { rows: x.batch, cols: w.rows }))?;
    expect_len("output", n, y.len())?;
    if n == 0 || w.k == 0 {
        y.fill(0.0);
        return Ok(());
    }
    let (batch, groups) = (x.batch, w.k / w.group);
    let tiles = w.rows.div_ceil(TILE);
    // Scratch: `[batch, groups]` of E_g, then the outputs tile by tile `[tiles, batch, TILE]`.
    let need = batch * groups + tiles * batch * TILE;
    if scratch.len() < need {
        scratch.resize(need, 0.0);
    }
    let (xe, out) = scratch[..need].split_at_mut(batch * groups);
    w.group_sums(x, xe);
    let args = w.args(x, xe);
    let dot = Dot::choose(par);
    let per = tiles.div_ceil(par.tasks(tiles.saturating_mul(w.k) * batch.min(8)).max(1)).max(1);
    let job = |(c, o): (usize, &mut [f32])| dot.tiles(par, &args, c * per, o);
    let chunk = per * batch * TILE;
    if per < tiles {
        out.par_chunks_mut(chunk).enumerate().for_each(job);
    } else {
        job((0, out));
    }
    // `[tiles, batch, TILE]` to `[batch, rows]`, whole tokens' rows per task.
    let out = &*out;
    crate::par::row_chunks(y, w.rows, par, |t0, ys| {
        for (t, yt) in ys.chunks_mut(w.rows).enumerate() {
            for (tile, yo) in yt.chunks_mut(TILE).enumerate() {
                yo.copy_from_slice(&out[(tile * batch + t0 + t) * TILE..][..yo.len()]);
            }
        }
    });
    Ok(())
}

impl IntWeight {
    /// Per token and group of `x`, `E_g = sum_{b in g} d_b * sum_b` into `xe` (`[batch, groups]`).
    fn group_sums(&self, x: &Q8Activations, xe: &mut [f32]) {
        let per_group = self.group / BLOCK;
        let blocks = x.scales.chunks_exact(per_group).zip(x.sums.chunks_exact(per_group));
        for (e, (d, s)) in xe.iter_mut().zip(blocks) {
            *e = d.iter().zip(s).map(|(&d, &s)| d * s as f32).sum();
        }
    }

    /// What a kernel reads for `x`, with its group sums `xe`.
    fn args<'a>(&'a self, x: &'a Q8Activations, xe: &'a [f32]) -> Args<'a> {
        Args {
            data: &self.data,
            k: self.k,
            group: self.group,
            param_bytes: self.param_bytes,
            bits: self.bits,
            xq: &x.codes,
            xd: &x.scales,
            xe,
            batch: x.batch,
        }
    }

    /// Tiles `tile0..` for every row of `x` (`k` codes each) into `out` (`[tiles, batch,
    /// TILE]`) on one thread, with `xe` as scratch for the group sums.
    pub(super) fn multiply_tiles(
        &self,
        dot: Dot,
        par: Parallelism,
        x: &Q8Activations,
        xe: &mut Vec<f32>,
        tile0: usize,
        out: &mut [f32],
    ) {
        xe.clear();
        xe.resize(x.batch * (self.k / self.group), 0.0);
        self.group_sums(x, xe);
        dot.tiles(par, &self.args(x, xe), tile0, out);
    }
}

/// The portable kernel: tiles `tile0..` into `out` (`[tiles, batch, TILE]`).
struct Portable<'a> {
    a: &'a Args<'a>,
    tile0: usize,
    out: &'a mut [f32],
}

impl crate::lanes::Kernel for Portable<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self, _simd: crate::lanes::Simd) {
        let Self { a, tile0, out } = self;
        let (k, groups, blocks, batch) = (a.k, a.k / a.group, a.k / BLOCK, a.batch);
        let stride = a.group_stride();
        for (i, o) in out.chunks_exact_mut(batch * TILE).enumerate() {
            let tile = &a.data[(tile0 + i) * groups * stride..(tile0 + i + 1) * groups * stride];
            for (t, acc) in o.chunks_exact_mut(TILE).enumerate() {
                let xq = &a.xq[t * k..(t + 1) * k];
                acc.fill(0.0);
                for (g, wg) in tile.chunks_exact(stride).enumerate() {
                    let mut sum = [0f32; TILE];
                    let cb = chunk_bytes(a.bits);
                    let codes = wg[a.param_bytes..].chunks_exact(BLOCK / 8 * cb);
                    for (b, (wb, xb)) in codes.zip(xq[g * a.group..].chunks_exact(BLOCK)).enumerate() {
                        let mut dot = [0i32; TILE];
                        for (chunk, x8) in wb.chunks_exact(cb).zip(xb.chunks_exact(8)) {
                            for (l, d) in dot.iter_mut().enumerate() {
                                for j in 0..4 {
                                    let (lo, hi) = chunk_codes(chunk, a.bits, l, j);
                                    *d += lo as i32 * x8[j] as i32 + hi as i32 * x8[j + 4] as i32;
                                }
                            }
                        }
                        let d = a.xd[t * blocks + g * a.group / BLOCK + b];
                        for (sum, &dot) in sum.iter_mut().zip(&dot) {
                            *sum += dot as f32 * d;
                        }
                    }
                    let e = a.xe[t * groups + g];
                    for (l, (acc, &sum)) in acc.iter_mut().zip(&sum).enumerate() {
                        let (s, z) = read_param(wg, a.param_bytes, l);
                        *acc += s * (sum - z * e);
                    }
                }
            }
        }
    }
}
