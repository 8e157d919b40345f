//! The one multiply kernel: `y[b, o] = sum_k x[b, k] * W[o, k]` over any scheme's tile decoder.
//!
//! A [`Decoder`] splits the output rows into *blocks* (rows that share packed words: the planes
//! of an HQQ byte, 32 neighbouring GPTQ columns, 16 FP8 rows) and decodes a block's weights for
//! a range of inputs `k0..k1` into an `f32` tile that stays in L1. The kernel then multiplies
//! the tile with every activation row while it is there (decode once, use `batch` times), with
//! register-blocked accumulators:
//!
//! ```text
//!  Form::Rows  tile[t][k]  (row t of the block, inputs along a row)   acc[b][t][16 lanes]
//!              dot products; lane l sums the k = l (mod 16) terms
//!  Form::Cols  tile[k][t]  (32 output columns side by side)           acc[b][phase][32 lanes]
//!              axpy; phase = k (mod 2)
//! ```
//!
//! Every output value is summed in a fixed order that depends only on `K` and the decoder's
//! block shape: not on the batch size, the batch row, the thread count or timing (blocks are
//! whole rows, never split across threads). Lanes and phases are added pairwise at the end.
//! With AVX2 or AVX-512 the multiply-adds are fused (`vfmadd`), on the baseline they are a
//! multiplication and an addition, so results are deterministic per machine and agree across
//! machines within the bound the tests state.

use crate::error::Result;
use crate::lanes::{self, Kernel, Simd};
use crate::par::Parallelism;
use rayon::prelude::*;

/// How one scheme's weight is multiplied, implemented in the scheme's folder (its `tile.rs`):
/// [`crate::QuantLinear::new`] prepares the weight once, its forward runs
/// [`Multiply::products_into`], and every other `QuantLinear` method is a one-line delegation.
pub(crate) trait Multiply: crate::scheme::QuantScheme {
    /// What a `QuantLinear` keeps: the validated weight, re-laid for the kernel.
    type Prepared: Clone + std::fmt::Debug + PartialEq + Send + Sync;

    /// Validate every length and group and re-lay the weight for the kernel.
    fn prepare(self) -> Result<Self::Prepared>;

    /// The weight in its own layout again, bit for bit what [`Multiply::prepare`] was given
    /// (HQQ scales and zeros of different dtypes come back widened to `f32`).
    fn restore(p: Self::Prepared) -> Self;

    /// Bytes of the weight as its scheme stores it ([`crate::QuantScheme::stored_bytes`]).
    fn prepared_bytes(p: &Self::Prepared) -> usize;

    /// `y = [batch, out]` products (no bias) of the padded activations `x`
    /// (`[batch, padded(in)]`), through [`gemm_into`] with the caller's `scratch`.
    fn products_into(
        p: &Self::Prepared,
        x: &[f32],
        batch: usize,
        par: Parallelism,
        y: &mut [f32],
        scratch: &mut Scratch,
    );

    /// The order the inputs are gathered in before [`Multiply::products_into`] (act-order GPTQ rows
    /// sorted by group), `None` for their own order.
    fn input_order(_p: &Self::Prepared) -> Option<&[u32]> {
        None
    }

    /// The weight re-laid for the int8-activation path, its inputs in
    /// [`Multiply::input_order`]'s order; a typed refusal for weights without integer codes of
    /// at most 8 bits and a scale and zero point per row and group of a multiple of 32 inputs.
    fn int8_weight(_p: &Self::Prepared) -> Result<super::q8::Int8Weight> {
        Err(int8_refused(Self::NAME, "it has no integer codes with groups along the inputs"))
    }
}

/// [`Multiply::int8_weight`]'s refusal.
pub(crate) fn int8_refused(scheme: &'static str, reason: &'static str) -> crate::Error {
    crate::Error::Kernel(crate::error::KernelError::Int8Activations { scheme, reason })
}

/// Lanes of one accumulator in [`Form::Rows`] (and the input padding unit).
pub(crate) const L: usize = 16;
/// Most output rows a block may have; also the tile stride of [`Form::Cols`].
pub(crate) const MAX_ROWS: usize = 32;
/// Inputs decoded per tile.
pub(crate) const KT: usize = 256;

/// How a decoder lays out its tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `tile[t * KT + (k - k0)]`: a block row's inputs are contiguous.
    Rows,
    /// `tile[(k - k0) * MAX_ROWS + t]`: a block's outputs are contiguous.
    Cols,
}

/// A scheme's view of one validated weight `[out, in]` for the kernel.
pub(crate) trait Decoder: Sync {
    /// The tile layout.
    const FORM: Form;
    /// Neighbouring blocks processed together, input tile by input tile (a GPTQ word row is
    /// then read as one long run across them instead of 32 columns at a time).
    const GROUP: usize = 1;
    /// Number of blocks.
    fn blocks(&self) -> usize;
    /// The output rows of block `b`, in tile order; returns how many (at most [`MAX_ROWS`]).
    /// Blocks are disjoint and together cover every output row once.
    fn block_rows(&self, b: usize, rows: &mut [usize; MAX_ROWS]) -> usize;
    /// Decode inputs `k0..k1` (at most [`KT`]) of block `b`'s rows into `tile` (see [`Form`]).
    /// `simd` is the instruction set the kernel was dispatched with.
    fn decode(&self, simd: Simd, b: usize, k0: usize, k1: usize, tile: &mut [f32]);

    /// Whether [`Decoder::gemv_v4`] serves every block of this weight at batch 1.
    fn has_gemv(&self) -> bool {
        false
    }

    /// Batch 1 without a tile: block `b`'s sums (tile order, as [`Decoder::block_rows`]),
    /// decoded and multiplied in AVX-512 registers. It must give the bits the tile path gives
    /// (same weights, same lanes, same order of fused multiply-adds, same final tree), so a
    /// row's result never depends on the batch it is in. Only called when
    /// [`Decoder::has_gemv`].
    #[cfg(target_arch = "x86_64")]
    fn gemv_v4(&self, _v4: pulp::x86::V4, _b: usize, _x: &[f32], _out: &mut [f32; MAX_ROWS]) {}
}

/// A weight whose rows decode independently (int8, int4, FP8, dense): blocks of
/// [`ROW_BLOCK`] consecutive rows through [`Rows16`].
pub(crate) trait RowDecoder: Sync {
    /// Output rows.
    fn rows(&self) -> usize;
    /// Row `r`'s inputs `k0..k1` into `dst` (`k1 - k0` values).
    fn decode_row(&self, r: usize, k0: usize, k1: usize, dst: &mut [f32]);
}

/// Rows per block of a [`RowDecoder`].
pub(crate) const ROW_BLOCK: usize = 16;

/// The [`Decoder`] of a [`RowDecoder`].
pub(crate) struct Rows16<'a, R>(pub &'a R);

impl<R: RowDecoder> Decoder for Rows16<'_, R> {
    const FORM: Form = Form::Rows;

    fn blocks(&self) -> usize {
        self.0.rows().div_ceil(ROW_BLOCK)
    }

    fn block_rows(&self, b: usize, rows: &mut [usize; MAX_ROWS]) -> usize {
        let n = ROW_BLOCK.min(self.0.rows() - b * ROW_BLOCK);
        for (t, r) in rows.iter_mut().enumerate().take(n) {
            *r = b * ROW_BLOCK + t;
        }
        n
    }

    #[inline(always)]
    fn decode(&self, _simd: Simd, b: usize, k0: usize, k1: usize, tile: &mut [f32]) {
        for t in 0..ROW_BLOCK.min(self.0.rows() - b * ROW_BLOCK) {
            self.0.decode_row(b * ROW_BLOCK + t, k0, k1, &mut tile[t * KT..t * KT + k1 - k0]);
        }
    }
}

/// Inputs rounded up to whole lanes: the row stride of the padded activations.
pub(crate) fn padded(k: usize) -> usize {
    k.div_ceil(L) * L
}

/// Buffers of the multiply kept between calls: grown on demand, never shrunk, so a caller that
/// keeps one allocates nothing per call once it has seen its largest shape.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// `[blocks, batch, MAX_ROWS]` block results before the scatter.
    parts: Vec<f32>,
    /// Per task: a tile and the accumulators.
    work: Vec<f32>,
}

/// The first `n` values of `v`, grown with zeros if it is shorter.
pub(crate) fn grown(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

/// Accumulator values per block of a decoder of form `form` at batch `batch`.
fn acc_len(form: Form, batch: usize) -> usize {
    match form {
        Form::Rows => batch * MAX_ROWS * L,
        Form::Cols => batch * 2 * MAX_ROWS,
    }
}

/// `y = [batch, out]` products of the padded activations `x` (`[batch, padded(k)]`, zeros past
/// `k`) with `d`'s weight; blocks split over rayon's pool when `par` allows and the weight is
/// large enough. Allocates nothing when `scratch` already holds this shape's buffers.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_into<D: Decoder>(
    d: &D,
    out: usize,
    k: usize,
    x: &[f32],
    batch: usize,
    par: Parallelism,
    y: &mut [f32],
    scratch: &mut Scratch,
) {
    debug_assert_eq!(x.len(), batch * padded(k));
    debug_assert_eq!(y.len(), batch * out);
    let blocks = d.blocks();
    if blocks == 0 || batch == 0 {
        y.fill(0.0);
        return;
    }
    let tasks = par.tasks(out.saturating_mul(k).saturating_mul(batch.min(8))).min(blocks);
    let per = blocks.div_ceil(tasks.max(1));
    let tasks = blocks.div_ceil(per);
    let work_len = MAX_ROWS * KT + acc_len(D::FORM, batch) * D::GROUP.max(1);
    let parts = grown(&mut scratch.parts, blocks * batch * MAX_ROWS);
    let work = grown(&mut scratch.work, tasks * work_len);
    let run = |(t, (out, work)): (usize, (&mut [f32], &mut [f32]))| {
        let bufs = &mut Bufs { out, work };
        lanes::dispatch(
            par,
            Blocks { d, k, x, batch, first: t * per, end: ((t + 1) * per).min(blocks), bufs },
        )
    };
    if tasks <= 1 {
        run((0, (parts, work)));
    } else {
        parts
            .par_chunks_mut(per * batch * MAX_ROWS)
            .zip(work.par_chunks_mut(work_len))
            .enumerate()
            .for_each(run);
    }
    // Scatter: each block's `[batch, MAX_ROWS]` results to its rows.
    let mut rows = [0usize; MAX_ROWS];
    for (i, vals) in scratch.parts[..blocks * batch * MAX_ROWS].chunks_exact(batch * MAX_ROWS).enumerate() {
        let n = d.block_rows(i, &mut rows);
        for (b, v) in vals.chunks_exact(MAX_ROWS).enumerate() {
            for (&r, &v) in rows[..n].iter().zip(v) {
                y[b * out + r] = v;
            }
        }
    }
}

/// Blocks `first..end` on one thread: `[end - first, batch, MAX_ROWS]` results into
/// `bufs.out`, with `bufs.work` for the tile and the accumulators.
///
/// At most 8 words, so that pulp passes it to the dispatched function in registers (a larger
/// kernel goes by memory: GPTQ's batch-1 register path measured 1.3-1.4x slower that way).
struct Blocks<'a, 'b, D> {
    d: &'a D,
    k: usize,
    x: &'a [f32],
    batch: usize,
    first: usize,
    end: usize,
    bufs: &'b mut Bufs<'a>,
}

/// The caller's buffers of one [`Blocks`] run.
struct Bufs<'a> {
    out: &'a mut [f32],
    work: &'a mut [f32],
}

const _: () =
    assert!(std::mem::size_of::<Blocks<'static, 'static, ()>>() <= 8 * std::mem::size_of::<usize>());

impl<D: Decoder> Kernel for Blocks<'_, '_, D> {
    type Output = ();
    #[inline(always)]
    fn run(self, simd: Simd) {
        #[cfg(target_arch = "x86_64")]
        {
            // The token is re-checked at run time on purpose: with it a compile-time constant,
            // LLVM compiled GPTQ's batch-1 loop 1.14x slower (same code, measured in
            // `benches/matmul.rs`); the check itself costs nothing measurable.
            if let Some(v4) = simd.v4().and_then(|_| pulp::x86::V4::try_new()) {
                if self.batch == 1 && self.d.has_gemv() {
                    for (b, o) in (self.first..self.end).zip(self.bufs.out.chunks_exact_mut(MAX_ROWS)) {
                        let o = pulp::as_arrays_mut::<MAX_ROWS, f32>(o).0;
                        self.d.gemv_v4(v4, b, self.x, &mut o[0]);
                    }
                    return;
                }
                return self.blocks(simd, V4Lanes(v4));
            }
            if let Some(v3) = simd.v3() {
                return self.blocks(simd, V3Lanes(v3));
            }
        }
        self.blocks(simd, Plain)
    }
}

/// 16 `f32` lanes and a multiply-add, per ISA: one AVX-512 register, two AVX2 registers, or
/// a plain array (multiplication then addition, no FMA). Every implementation adds lane `l` of
/// a product to lane `l` of the accumulator, so the order of sums is the same on all of them.
trait Lanes: Copy {
    type V: Copy;
    fn zero(self) -> Self::V;
    fn load(self, x: &[f32; L]) -> Self::V;
    fn splat(self, v: f32) -> Self::V;
    /// `a + x * y`.
    fn mac(self, a: Self::V, x: Self::V, y: Self::V) -> Self::V;
    fn store(self, v: Self::V, out: &mut [f32; L]);
}

#[derive(Clone, Copy)]
struct Plain;

impl Lanes for Plain {
    type V = [f32; L];
    #[inline(always)]
    fn zero(self) -> [f32; L] {
        [0.0; L]
    }
    #[inline(always)]
    fn load(self, x: &[f32; L]) -> [f32; L] {
        *x
    }
    #[inline(always)]
    fn splat(self, v: f32) -> [f32; L] {
        [v; L]
    }
    #[inline(always)]
    fn mac(self, a: [f32; L], x: [f32; L], y: [f32; L]) -> [f32; L] {
        std::array::from_fn(|l| a[l] + x[l] * y[l])
    }
    #[inline(always)]
    fn store(self, v: [f32; L], out: &mut [f32; L]) {
        *out = v;
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct V4Lanes(pulp::x86::V4);

#[cfg(target_arch = "x86_64")]
impl Lanes for V4Lanes {
    type V = pulp::f32x16;
    #[inline(always)]
    fn zero(self) -> pulp::f32x16 {
        self.0.splat_f32x16(0.0)
    }
    #[inline(always)]
    fn load(self, x: &[f32; L]) -> pulp::f32x16 {
        bytemuck::cast(*x)
    }
    #[inline(always)]
    fn splat(self, v: f32) -> pulp::f32x16 {
        self.0.splat_f32x16(v)
    }
    #[inline(always)]
    fn mac(self, a: pulp::f32x16, x: pulp::f32x16, y: pulp::f32x16) -> pulp::f32x16 {
        self.0.mul_add_f32x16(x, y, a)
    }
    #[inline(always)]
    fn store(self, v: pulp::f32x16, out: &mut [f32; L]) {
        *out = bytemuck::cast(v);
    }
}

#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct V3Lanes(pulp::x86::V3);

#[cfg(target_arch = "x86_64")]
impl Lanes for V3Lanes {
    type V = [pulp::f32x8; 2];
    #[inline(always)]
    fn zero(self) -> [pulp::f32x8; 2] {
        [self.0.splat_f32x8(0.0); 2]
    }
    #[inline(always)]
    fn load(self, x: &[f32; L]) -> [pulp::f32x8; 2] {
        bytemuck::cast(*x)
    }
    #[inline(always)]
    fn splat(self, v: f32) -> [pulp::f32x8; 2] {
        [self.0.splat_f32x8(v); 2]
    }
    #[inline(always)]
    fn mac(self, a: [pulp::f32x8; 2], x: [pulp::f32x8; 2], y: [pulp::f32x8; 2]) -> [pulp::f32x8; 2] {
        [self.0.mul_add_f32x8(x[0], y[0], a[0]), self.0.mul_add_f32x8(x[1], y[1], a[1])]
    }
    #[inline(always)]
    fn store(self, v: [pulp::f32x8; 2], out: &mut [f32; L]) {
        *out = bytemuck::cast(v);
    }
}

impl<D: Decoder> Blocks<'_, '_, D> {
    #[inline(always)]
    fn blocks<V: Lanes>(self, simd: Simd, v: V) {
        let Self { d, k, x, batch, first, end, bufs } = self;
        let Bufs { out, work } = bufs;
        let kp = padded(k);
        let (tile, acc) = work.split_at_mut(MAX_ROWS * KT);
        let acc_len = acc_len(D::FORM, batch);
        let group = D::GROUP.max(1);
        let mut rows = [0usize; MAX_ROWS];
        let mut g0 = first;
        while g0 < end {
            let g1 = (g0 + group).min(end);
            acc.fill(0.0);
            for k0 in (0..k).step_by(KT) {
                let k1 = (k0 + KT).min(k);
                for (b, acc) in (g0..g1).zip(acc.chunks_exact_mut(acc_len)) {
                    d.decode(simd, b, k0, k1, tile);
                    match D::FORM {
                        Form::Rows => {
                            let nrows = d.block_rows(b, &mut rows);
                            let w = padded(k1 - k0);
                            if w != k1 - k0 {
                                for t in 0..nrows {
                                    tile[t * KT + k1 - k0..t * KT + w].fill(0.0);
                                }
                            }
                            rows_mac(v, tile, nrows, x, kp, batch, k0, w, acc);
                        }
                        Form::Cols => cols_mac(v, tile, x, kp, batch, k0, k1 - k0, acc),
                    }
                }
            }
            // Fixed-order final sums.
            for (b, acc) in (g0..g1).zip(acc.chunks_exact(acc_len)) {
                let nrows = d.block_rows(b, &mut rows);
                let res = &mut out[(b - first) * batch * MAX_ROWS..(b - first + 1) * batch * MAX_ROWS];
                for (bi, r) in res.chunks_exact_mut(MAX_ROWS).enumerate() {
                    match D::FORM {
                        Form::Rows => {
                            for (t, v) in r.iter_mut().enumerate().take(nrows) {
                                *v = sum_lanes(lanes16(&acc[(bi * MAX_ROWS + t) * L..]));
                            }
                        }
                        Form::Cols => {
                            let a = &acc[bi * 2 * MAX_ROWS..(bi + 1) * 2 * MAX_ROWS];
                            for (t, v) in r.iter_mut().enumerate().take(nrows) {
                                *v = a[t] + a[MAX_ROWS + t];
                            }
                        }
                    }
                }
            }
            g0 = g1;
        }
    }
}

/// Pairwise sum of 16 lanes: `((l0 + l8) + (l4 + l12)) + ...`, always the same tree.
#[inline(always)]
pub(crate) fn sum_lanes(v: &[f32; L]) -> f32 {
    let mut a = *v;
    let mut n = L;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            a[i] += a[i + n];
        }
    }
    a[0]
}

#[inline(always)]
fn lanes16(x: &[f32]) -> &[f32; L] {
    pulp::as_arrays::<L, f32>(&x[..L]).0.first().unwrap_or_else(|| unreachable!())
}

#[inline(always)]
fn lanes16_mut(x: &mut [f32]) -> &mut [f32; L] {
    pulp::as_arrays_mut::<L, f32>(&mut x[..L]).0.first_mut().unwrap_or_else(|| unreachable!())
}

/// Rows form: every `(batch row, block row)` pair's 16 lane sums over `w` (a multiple of 16)
/// inputs from `k0`, four batch rows by four block rows (or one by eight) per register block.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn rows_mac<V: Lanes>(
    v: V,
    tile: &[f32],
    nrows: usize,
    x: &[f32],
    kp: usize,
    batch: usize,
    k0: usize,
    w: usize,
    acc: &mut [f32],
) {
    let mut b = 0;
    while b + 4 <= batch {
        let mut t = 0;
        while t + 4 <= nrows {
            dot::<V, 4, 4>(v, tile, t, x, kp, b, k0, w, acc);
            t += 4;
        }
        while t < nrows {
            dot::<V, 4, 1>(v, tile, t, x, kp, b, k0, w, acc);
            t += 1;
        }
        b += 4;
    }
    while b < batch {
        let mut t = 0;
        while t + 8 <= nrows {
            dot::<V, 1, 8>(v, tile, t, x, kp, b, k0, w, acc);
            t += 8;
        }
        while t < nrows {
            dot::<V, 1, 1>(v, tile, t, x, kp, b, k0, w, acc);
            t += 1;
        }
        b += 1;
    }
}

/// One register block of [`rows_mac`]: batch rows `b0..b0 + BC`, block rows `t0..t0 + RC`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dot<V: Lanes, const BC: usize, const RC: usize>(
    v: V,
    tile: &[f32],
    t0: usize,
    x: &[f32],
    kp: usize,
    b0: usize,
    k0: usize,
    w: usize,
    acc: &mut [f32],
) {
    let at = |bi: usize, r: usize| ((b0 + bi) * MAX_ROWS + t0 + r) * L;
    let mut a = [[v.zero(); RC]; BC];
    for (bi, ab) in a.iter_mut().enumerate() {
        for (r, ar) in ab.iter_mut().enumerate() {
            *ar = v.load(lanes16(&acc[at(bi, r)..]));
        }
    }
    // Plain loops over constant bounds (no `array::from_fn`: it is not always inlined).
    let mut xs: [&[f32]; BC] = [&[]; BC];
    for (bi, xb) in xs.iter_mut().enumerate() {
        *xb = &x[(b0 + bi) * kp + k0..(b0 + bi) * kp + k0 + w];
    }
    let mut ts: [&[f32]; RC] = [&[]; RC];
    for (r, tr) in ts.iter_mut().enumerate() {
        *tr = &tile[(t0 + r) * KT..(t0 + r) * KT + w];
    }
    for c in (0..w).step_by(L) {
        let mut tv = [v.zero(); RC];
        for r in 0..RC {
            tv[r] = v.load(lanes16(&ts[r][c..]));
        }
        for bi in 0..BC {
            let xv = v.load(lanes16(&xs[bi][c..]));
            for r in 0..RC {
                a[bi][r] = v.mac(a[bi][r], xv, tv[r]);
            }
        }
    }
    for (bi, ab) in a.iter().enumerate() {
        for (r, &ar) in ab.iter().enumerate() {
            v.store(ar, lanes16_mut(&mut acc[at(bi, r)..]));
        }
    }
}

/// Cols form: `acc[b][k % 2][t] += tile[k][t] * x[b][k]` over `kt` inputs from `k0`, four
/// batch rows (or one) per register block.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn cols_mac<V: Lanes>(
    v: V,
    tile: &[f32],
    x: &[f32],
    kp: usize,
    batch: usize,
    k0: usize,
    kt: usize,
    acc: &mut [f32],
) {
    let mut b = 0;
    while b + 4 <= batch {
        axpy::<V, 4>(v, tile, x, kp, b, k0, kt, acc);
        b += 4;
    }
    while b < batch {
        axpy::<V, 1>(v, tile, x, kp, b, k0, kt, acc);
        b += 1;
    }
}

/// One register block of [`cols_mac`]: 32 outputs as two 16-lane halves, two phases. The phase
/// of input `k` is `(k0 + k) % 2` (`k0` is even), so the summation order does not depend on
/// how the batch is blocked.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn axpy<V: Lanes, const BC: usize>(
    v: V,
    tile: &[f32],
    x: &[f32],
    kp: usize,
    b0: usize,
    k0: usize,
    kt: usize,
    acc: &mut [f32],
) {
    const N: usize = MAX_ROWS;
    // acc[b][phase][half * 16 + l]
    let at = |bi: usize, p: usize, h: usize| ((b0 + bi) * 2 + p) * N + h * L;
    let mut a = [[[v.zero(); 2]; 2]; BC];
    for (bi, ab) in a.iter_mut().enumerate() {
        for (p, ap) in ab.iter_mut().enumerate() {
            for (h, ah) in ap.iter_mut().enumerate() {
                *ah = v.load(lanes16(&acc[at(bi, p, h)..]));
            }
        }
    }
    let mut xs: [&[f32]; BC] = [&[]; BC];
    for (bi, xb) in xs.iter_mut().enumerate() {
        *xb = &x[(b0 + bi) * kp + k0..(b0 + bi) * kp + k0 + kt];
    }
    let tile = &tile[..kt * N];
    let (pairs, rest) = tile.as_chunks::<{ 2 * N }>();
    for (j, pair) in pairs.iter().enumerate() {
        // Inputs 2j (phase 0) and 2j + 1 (phase 1).
        let (t0, t1) = (v.load(lanes16(&pair[..])), v.load(lanes16(&pair[L..])));
        let (t2, t3) = (v.load(lanes16(&pair[N..])), v.load(lanes16(&pair[N + L..])));
        for bi in 0..BC {
            let (x0, x1) = (v.splat(xs[bi][2 * j]), v.splat(xs[bi][2 * j + 1]));
            a[bi][0][0] = v.mac(a[bi][0][0], t0, x0);
            a[bi][0][1] = v.mac(a[bi][0][1], t1, x0);
            a[bi][1][0] = v.mac(a[bi][1][0], t2, x1);
            a[bi][1][1] = v.mac(a[bi][1][1], t3, x1);
        }
    }
    if !rest.is_empty() {
        let k = kt - 1;
        let (t0, t1) = (v.load(lanes16(rest)), v.load(lanes16(&rest[L..])));
        for bi in 0..BC {
            let x0 = v.splat(xs[bi][k]);
            a[bi][0][0] = v.mac(a[bi][0][0], t0, x0);
            a[bi][0][1] = v.mac(a[bi][0][1], t1, x0);
        }
    }
    for (bi, ab) in a.iter().enumerate() {
        for (p, ap) in ab.iter().enumerate() {
            for (h, &ah) in ap.iter().enumerate() {
                v.store(ah, lanes16_mut(&mut acc[at(bi, p, h)..]));
            }
        }
    }
}
