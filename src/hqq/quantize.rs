//! HQQ quantization: hqq's `Quantizer.quantize` min/max initialisation, bit for bit, and its
//! legacy proximal optimizer of the zero points (`lp_norm` 0.7, `beta` 10, early stop).
//!
//! # Initialisation (exact)
//!
//! Per group (see [`HqqLayout`] for the grouping), in `f32` as torch computes it:
//! `denom = max - min`; `scale_q = round(round(1 / denom) * max_v)` (torch evaluates
//! `max_v / denom` as `reciprocal(denom) * max_v`), `1` where `|denom| <= 1e-4`, clamped to at
//! most `2e4`; `zero = -min * scale_q` (rounded half to even with `round_zeros`); codes
//! `clamp(round_half_even(w * scale_q + zero), 0, max_v)` with the product and the sum rounded
//! separately; the stored scale is `1 / scale_q`.
//!
//! # Optimizer
//!
//! With the scale fixed, for at most `steps` iterations:
//!
//! ```text
//! q   = clamp(round(w * s + z), 0, max_v)
//! w_r = (q - z) / s
//! w_e = shrink(w - w_r),   shrink(x) = sign(x) * relu(|x| - |x|^(p - 1) / beta)
//! z'  = mean over the group of (q - (w - w_e) * s)
//! err = mean |w - w_r| over the whole tensor
//! ```
//!
//! If `err` improved on the best so far, go on with `z'`; else take `z'` and stop (hqq's early
//! stop returns the zero of the first non-improving step). Final codes use the final zero.
//! hqq's `kappa` is never applied by its legacy solver, so `beta` stays 10. torch's `pow`
//! (SLEEF) and cascade-summed `mean` may round differently from this crate's, so optimized zeros
//! can differ from hqq's in the last ulps (on every fixture case the codes agree); mistral.rs
//! runs the same f32 algorithm as this crate and its outputs are matched bit for bit.
//!
//! Groups are independent except for the global error: each iteration runs over rayon's pool
//! (column stripes for axis 0, row chunks for axis 1), and per-row error sums are combined in
//! row order, so results do not depend on the thread count.

use super::{Axis, HqqLayout, Packed};
use crate::elem::Elem;
use crate::error::{Error, KernelError, Result};
use crate::par::Parallelism;
use rayon::prelude::*;

/// Quantization settings, as mistral.rs's `HqqConfig` has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HqqConfig {
    /// 8, 4, 3, 2 or 1.
    pub bits: u8,
    /// Weights per group; it must divide the element count. hqq's `group_size=None` is the
    /// number of rows (axis 0) or columns (axis 1).
    pub group_size: usize,
    /// Grouping axis.
    pub axis: Axis,
    /// Optimizer iterations (`None` or `Some(0)`: no optimizer). hqq's default is 20.
    pub optimization_steps: Option<usize>,
    /// Round the initial zero point to an integer (default false).
    pub round_zeros: bool,
    /// Per-group scales (default true); false: one scale and zero for the whole tensor, no
    /// optimizer, codes in the weight's own shape.
    pub channel_wise: bool,
}

impl HqqConfig {
    /// The layout a `[rows, cols]` weight quantized with this config has: `group_size` and
    /// `axis` when `channel_wise`; else (one scale for the tensor) codes in the weight's own
    /// shape, i.e. axis 0 with one group per column, every column sharing the one scale.
    pub fn layout(&self, rows: usize, cols: usize) -> Result<HqqLayout> {
        if self.channel_wise {
            HqqLayout::new(rows, cols, self.group_size, self.axis)
        } else {
            HqqLayout::new(rows, cols, rows.max(1), Axis::Zero)
        }
    }

    /// `bits`, `group_size`, `axis`, no optimizer, `round_zeros` false, `channel_wise` true.
    pub fn new(bits: u8, group_size: usize, axis: Axis) -> Self {
        Self { bits, group_size, axis, optimization_steps: None, round_zeros: false, channel_wise: true }
    }
}

/// A quantized weight: packed codes plus one scale (dequant multiplier) and one zero (in code
/// units) per group, `w ≈ (q - zero) * scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct HqqLayer {
    /// The grouping that `scales`/`zeros` follow. For `channel_wise: false` this is axis 0 with
    /// one group per column (the codes keep the weight's shape), all sharing one scale and zero.
    pub layout: HqqLayout,
    /// The packed codes.
    pub packed: Packed,
    /// `1 / scale_q` per group, `f32`.
    pub scales: Vec<f32>,
    /// Zero point per group, `f32` code units.
    pub zeros: Vec<f32>,
    /// Optimizer iterations that ran (0 without the optimizer).
    pub steps_run: usize,
}

impl HqqLayer {
    /// The scales and zeros in another dtype (rounded to nearest even), e.g. `f16` as hqq's
    /// `HQQLinear` and mistral.rs's f16 layers store them.
    pub fn params_as<S: Elem>(&self) -> (Vec<S>, Vec<S>) {
        let conv = |v: &[f32]| {
            let mut out = vec![S::default(); v.len()];
            S::slice_from_f32(v, &mut out);
            out
        };
        (conv(&self.scales), conv(&self.zeros))
    }
}

/// The hqq shrinkage operator for `lp_norm` 0.7, `beta` 10, as torch evaluates it in `f32`.
#[inline(always)]
fn shrink(x: f32) -> f32 {
    let a = x.abs();
    // |x| - 0.1 |x|^-0.3 > 0 only for |x| > 0.1^(1/1.3) = 0.1702: skip the pow below that.
    if a <= 0.16 {
        return 0.0 * x.signum();
    }
    let r = (a - 0.1f32 * a.powf(-0.3f32)).max(0.0);
    if x > 0.0 { r } else { -r }
}

/// Group access on the flat weight: axis 0 groups are the columns of `[g, numel/g]`, axis 1
/// groups the rows of `[numel/g, g]`; either way the code matrix is the flat weight.
struct View {
    rows: usize,
    cols: usize,
    axis: Axis,
}

/// Quantize `w` (`rows x cols`, row-major; `f32`, `f16` or `bf16`, widened to `f32` exactly as
/// hqq's `tensor.float()` does) as hqq does (see the module docs), SIMD + threads as `par`
/// allows (the result is the same either way).
///
/// ```
/// use quant_kernels::hqq::{self, Axis, HqqConfig};
/// use quant_kernels::Parallelism;
/// // A 4x1 weight, one group of 4 (axis 0), 2 bits: min 0, max 3 -> scale_q = 1, zero 0.
/// let config = HqqConfig::new(2, 4, Axis::Zero);
/// let q = hqq::quantize_hqq(&[0.0f32, 1.0, 2.0, 3.0], 4, 1, &config, Parallelism::RAYON)?;
/// assert_eq!((q.scales[0], q.zeros[0]), (1.0, 0.0));
/// assert_eq!(hqq::unpack_hqq(&q.packed)?, [0, 1, 2, 3]);
/// # Ok::<(), quant_kernels::Error>(())
/// ```
pub fn quantize_hqq<E: Elem>(
    w: &[E],
    rows: usize,
    cols: usize,
    config: &HqqConfig,
    par: Parallelism,
) -> Result<HqqLayer> {
    let bits = crate::pack::Bits::try_from(config.bits)?;
    let numel = rows.checked_mul(cols).ok_or(Error::Kernel(KernelError::ShapeOverflow { rows, cols }))?;
    crate::error::expect_len("weight", numel, w.len())?;
    let widened;
    let w: &[f32] = match E::as_f32(w) {
        Some(w) => w,
        None => {
            widened = {
                let mut v = vec![0f32; w.len()];
                E::slice_to_f32(w, &mut v);
                v
            };
            &widened
        }
    };
    if let Some(index) = w.iter().position(|x| !x.is_finite()) {
        return Err(Error::Kernel(KernelError::NonFinite { index }));
    }
    let max_v = ((1u32 << config.bits) - 1) as f32;
    let layout = config.layout(rows, cols)?;
    let (r, c) = layout.code_shape();
    let view = View { rows: r, cols: c, axis: layout.axis() };
    // The packed axis must suit the width before any work.
    layout.packed_shape(bits)?;
    let groups = if config.channel_wise { layout.groups() } else { 1 };

    // min / max per group: axis 0 groups are columns (elementwise down the rows, vectorizes),
    // axis 1 groups are rows; a tensor-wise config has one group.
    let mut lo = vec![f32::INFINITY; groups];
    let mut hi = vec![f32::NEG_INFINITY; groups];
    for (r, row) in w.chunks_exact(view.cols.max(1)).enumerate().take(view.rows) {
        if !config.channel_wise {
            lo[0] = row.iter().fold(lo[0], |m, &x| m.min(x));
            hi[0] = row.iter().fold(hi[0], |m, &x| m.max(x));
        } else if view.axis == Axis::Zero {
            for ((l, h), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
                *l = l.min(x);
                *h = h.max(x);
            }
        } else {
            lo[r] = row.iter().fold(f32::INFINITY, |m, &x| m.min(x));
            hi[r] = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        }
    }
    // scale_q and zero reuse the max and min buffers in place.
    let mut scale_q = hi;
    for (s, &mn) in scale_q.iter_mut().zip(&lo) {
        let denom = *s - mn;
        *s = if denom.abs() <= 1e-4 { 1.0 } else { ((1.0f32 / denom) * max_v).min(2e4) };
    }
    let mut zero = lo;
    for (z, &s) in zero.iter_mut().zip(&scale_q) {
        let v = -*z * s;
        *z = if config.round_zeros { v.round_ties_even() } else { v };
    }

    let steps = if config.channel_wise { config.optimization_steps.unwrap_or(0) } else { 0 };
    let mut steps_run = 0;
    if steps > 0 {
        let mut best = 1e4f32;
        for _ in 0..steps {
            steps_run += 1;
            let (z_next, err) = optimizer_step(w, &view, &scale_q, &zero, max_v, numel, par);
            zero = z_next;
            if err < best {
                best = err;
            } else {
                break;
            }
        }
    }

    // Final codes, packed as they are made (one code row per task at a time).
    let (cr, cc) = layout.code_shape();
    let packed = if config.channel_wise {
        super::pack_hqq_with(cr, cc, bits, par, |r, row| {
            crate::lanes::dispatch(
                par,
                Codes {
                    x: &w[r * cc..(r + 1) * cc],
                    s: &scale_q,
                    z: &zero,
                    group: (view.axis == Axis::One).then_some(r),
                    max_v,
                    out: row,
                },
            )
        })?
    } else {
        let (s0, z0) = (scale_q[0], zero[0]);
        super::pack_hqq_with(cr, cc, bits, par, |r, row| {
            for (q, &x) in row.iter_mut().zip(&w[r * cc..(r + 1) * cc]) {
                *q = (x * s0 + z0).round_ties_even().clamp(0.0, max_v) as u8;
            }
        })?
    };
    // The stored scales are `1 / scale_q`, made in place (no second copy per group).
    scale_q.iter_mut().for_each(|s| *s = 1.0 / *s);
    let n_groups = layout.groups();
    let expand = |v: Vec<f32>| if config.channel_wise { v } else { vec![v[0]; n_groups] };
    Ok(HqqLayer { layout, packed, scales: expand(scale_q), zeros: expand(zero), steps_run })
}

/// One optimizer iteration: the next zeros and the mean absolute error of the current ones.
fn optimizer_step(
    w: &[f32],
    view: &View,
    s: &[f32],
    z: &[f32],
    max_v: f32,
    numel: usize,
    par: Parallelism,
) -> (Vec<f32>, f32) {
    let (rows, cols) = (view.rows, view.cols);
    let threaded = par.is_threaded() && numel >= crate::par::MIN_PARALLEL_ELEMS;
    match view.axis {
        Axis::One => {
            // Groups are rows: one (sum, err) per row, rows in chunks over the pool.
            let chunk = 64;
            let run = |r0: usize| {
                let r1 = (r0 + chunk).min(rows);
                crate::lanes::dispatch(par, RowGroups { w, cols, r0, r1, s, z, max_v })
            };
            let starts: Vec<usize> = (0..rows).step_by(chunk).collect();
            let per_row: Vec<(f32, f32)> = if threaded {
                starts.par_iter().flat_map_iter(|&r| run(r)).collect()
            } else {
                starts.iter().flat_map(|&r| run(r)).collect()
            };
            let err: f64 = per_row.iter().map(|&(_, e)| e as f64).sum();
            (per_row.iter().map(|&(m, _)| m).collect(), (err / numel as f64) as f32)
        }
        Axis::Zero => {
            // Groups are columns: column stripes, each summing its columns down the rows.
            let stripe = 256;
            let run = |c0: usize| {
                let c1 = (c0 + stripe).min(cols);
                crate::lanes::dispatch(par, Stripe { w, cols, rows, c0, s: &s[c0..c1], z: &z[c0..c1], max_v })
            };
            let starts: Vec<usize> = (0..cols).step_by(stripe).collect();
            let parts: Vec<(Vec<f32>, Vec<f32>)> = if threaded {
                starts.par_iter().map(|&c| run(c)).collect()
            } else {
                starts.iter().map(|&c| run(c)).collect()
            };
            let mut z_next = Vec::with_capacity(cols);
            let mut err = 0f64;
            for (sums, errs) in &parts {
                z_next.extend(sums.iter().map(|&t| t / rows as f32));
                err += errs.iter().map(|&e| e as f64).sum::<f64>();
            }
            (z_next, (err / numel as f64) as f32)
        }
    }
}

/// One optimizer step over a stripe of columns (axis-0 groups): per column the sum of
/// `q - (w - w_e) * s` down the rows, in row order, and per column the sum of `|w - w_r|`.
/// Run under the CPU's best instruction set; columns are independent, so 16-column chunks
/// vectorize, and a chunk whose residuals are all below the shrink threshold (almost all of
/// them for real weights) skips `pow`: there `w_e` is +-0 and `w - w_e == w` exactly.
struct Stripe<'a> {
    w: &'a [f32],
    cols: usize,
    rows: usize,
    c0: usize,
    s: &'a [f32],
    z: &'a [f32],
    max_v: f32,
}

impl crate::lanes::Kernel for Stripe<'_> {
    type Output = (Vec<f32>, Vec<f32>);
    #[inline(always)]
    fn run(self, _simd: crate::lanes::Simd) -> Self::Output {
        let Self { w, cols, rows, c0, s, z, max_v } = self;
        let width = s.len();
        let (mut sums, mut errs) = (vec![0f32; width], vec![0f32; width]);
        let (mut t, mut dv) = (vec![0f32; width], vec![0f32; width]);
        for r in 0..rows {
            let row = &w[r * cols + c0..r * cols + c0 + width];
            terms(row, s, z, max_v, &mut t, &mut dv);
            for (((acc, ea), &tk), &d) in sums.iter_mut().zip(errs.iter_mut()).zip(&t).zip(&dv) {
                *acc += tk;
                *ea += d.abs();
            }
        }
        (sums, errs)
    }
}

/// The optimizer's per-weight terms of one run of weights with their groups' `s` and `z`:
/// `t = q - (w - w_e) * s` and the residual `d = w - w_r`. The first pass vectorizes under the
/// dispatched instruction set (as if nothing shrinks: `w_e` is +-0 and `w - w_e == w` for
/// `|d| <= 0.16`); only weights past the shrink threshold are redone with `pow`.
#[inline(always)]
fn terms(x: &[f32], s: &[f32], z: &[f32], max_v: f32, t: &mut [f32], dv: &mut [f32]) {
    let threshold = 0.16f32.to_bits();
    let mut any = 0u32;
    for ((((tk, dk), &x), &sc), &zc) in t.iter_mut().zip(dv.iter_mut()).zip(x).zip(s).zip(z) {
        let q = (x * sc + zc).round_ties_even().clamp(0.0, max_v);
        let d = x - (q - zc) / sc;
        *dk = d;
        *tk = q - x * sc;
        any |= ((d.to_bits() & 0x7fff_ffff) > threshold) as u32;
    }
    if any != 0 {
        for ((((tk, &d), &x), &sc), &zc) in t.iter_mut().zip(dv.iter()).zip(x).zip(s).zip(z) {
            if (d.to_bits() & 0x7fff_ffff) > threshold {
                let q = (x * sc + zc).round_ties_even().clamp(0.0, max_v);
                *tk = q - (x - shrink(d)) * sc;
            }
        }
    }
}

/// One optimizer step over a chunk of rows (axis-1 groups): per row the sum of the terms and
/// of `|d|`, summed in order.
struct RowGroups<'a> {
    w: &'a [f32],
    cols: usize,
    r0: usize,
    r1: usize,
    s: &'a [f32],
    z: &'a [f32],
    max_v: f32,
}

impl crate::lanes::Kernel for RowGroups<'_> {
    type Output = Vec<(f32, f32)>;
    #[inline(always)]
    fn run(self, _simd: crate::lanes::Simd) -> Self::Output {
        let Self { w, cols, r0, r1, s, z, max_v } = self;
        let (mut t, mut dv, mut sv, mut zv) =
            (vec![0f32; cols], vec![0f32; cols], vec![0f32; cols], vec![0f32; cols]);
        (r0..r1)
            .map(|r| {
                sv.fill(s[r]);
                zv.fill(z[r]);
                terms(&w[r * cols..(r + 1) * cols], &sv, &zv, max_v, &mut t, &mut dv);
                let (mut sum, mut err) = (0f32, 0f32);
                for (&tk, &d) in t.iter().zip(&dv) {
                    sum += tk;
                    err += d.abs();
                }
                (sum / cols as f32, err)
            })
            .collect()
    }
}

/// Final codes of one row of the code matrix, under the dispatched instruction set:
/// `clamp(round(x * s + z), 0, max_v)` with per-column parameters (axis 0) or the row's group
/// (`group`, axis 1).
struct Codes<'a> {
    x: &'a [f32],
    s: &'a [f32],
    z: &'a [f32],
    group: Option<usize>,
    max_v: f32,
    out: &'a mut [u8],
}

impl crate::lanes::Kernel for Codes<'_> {
    type Output = ();
    #[inline(always)]
    fn run(self, _simd: crate::lanes::Simd) {
        let Self { x, s, z, group, max_v, out } = self;
        match group {
            Some(g) => {
                let (sg, zg) = (s[g], z[g]);
                for (q, &v) in out.iter_mut().zip(x) {
                    *q = (v * sg + zg).round_ties_even().clamp(0.0, max_v) as u8;
                }
            }
            None => {
                for (((q, &v), &sg), &zg) in out.iter_mut().zip(x).zip(s).zip(z) {
                    *q = (v * sg + zg).round_ties_even().clamp(0.0, max_v) as u8;
                }
            }
        }
    }
}
