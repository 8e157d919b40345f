//! How a kernel runs ([`Parallelism`]: rayon's pool or the caller's thread, and the widest
//! instruction set it may use) and splitting work over threads: disjoint row chunks or column
//! stripes of a row-major output, never a cross-thread reduction, so results do not depend on
//! the thread count or timing.

use rayon::prelude::*;

/// Outputs smaller than this many elements stay on the calling thread.
pub const MIN_PARALLEL_ELEMS: usize = 1 << 16;

/// An instruction set the kernels have loops for, narrowest first (so `min` caps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Whatever the binary was compiled for (SSE2 on a default x86-64 build, NEON on aarch64).
    Baseline,
    /// x86-64-v3: AVX2 + FMA + F16C (256-bit lanes).
    X86V3Avx2,
    /// x86-64-v4: AVX-512 F/BW/CD/DQ/VL (512-bit lanes).
    X86V4Avx512,
}

impl Isa {
    /// The widest instruction set this CPU has (detected once, then cached by `std`).
    ///
    /// ```
    /// use quant_kernels::{Isa, Parallelism};
    /// println!("kernels run with {}", Isa::detect());
    /// assert!(Parallelism::RAYON.isa() == Isa::detect());
    /// assert_eq!(Parallelism::RAYON.max_isa(Isa::Baseline).isa(), Isa::Baseline);
    /// ```
    pub fn detect() -> Isa {
        match pulp::Arch::new() {
            #[cfg(target_arch = "x86_64")]
            pulp::Arch::V4(_) => Isa::X86V4Avx512,
            #[cfg(target_arch = "x86_64")]
            pulp::Arch::V3(_) => Isa::X86V3Avx2,
            _ => Isa::Baseline,
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Isa::X86V4Avx512 => "x86-64-v4 (AVX-512, 16 f32 lanes)",
            Isa::X86V3Avx2 => "x86-64-v3 (AVX2+FMA, 8 f32 lanes)",
            Isa::Baseline => {
                if cfg!(target_arch = "x86_64") {
                    "x86-64 baseline (SSE2, 4 f32 lanes)"
                } else {
                    "compile-time baseline"
                }
            }
        })
    }
}

/// How a kernel may run: on rayon's current pool or only the caller's thread, and the widest
/// instruction set it may use (by default the CPU's best). Every path gives the same bits; this
/// only changes speed, so a cap is for tests of the narrower loops and for measurements.
///
/// ```
/// use quant_kernels::{Isa, Parallelism};
/// let par = Parallelism::SERIAL.max_isa(Isa::X86V3Avx2);
/// assert!(!par.is_threaded());
/// assert!(par.isa() <= Isa::X86V3Avx2);
/// assert_eq!(Parallelism::default(), Parallelism::RAYON);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallelism {
    threaded: bool,
    max_isa: Isa,
}

impl Default for Parallelism {
    fn default() -> Self {
        Self::RAYON
    }
}

impl Parallelism {
    /// One thread (the caller's), the CPU's best instruction set.
    pub const SERIAL: Parallelism = Parallelism { threaded: false, max_isa: Isa::X86V4Avx512 };
    /// rayon's current pool when the output has at least [`MIN_PARALLEL_ELEMS`] elements, the
    /// CPU's best instruction set.
    pub const RAYON: Parallelism = Parallelism { threaded: true, max_isa: Isa::X86V4Avx512 };

    /// The same threading with kernels limited to `isa` (or the CPU's best, when narrower).
    pub const fn max_isa(self, isa: Isa) -> Parallelism {
        Parallelism { max_isa: isa, ..self }
    }

    /// Whether kernels may use rayon's pool.
    pub const fn is_threaded(self) -> bool {
        self.threaded
    }

    /// The instruction set kernels run with: the CPU's best, capped by [`Parallelism::max_isa`].
    pub fn isa(self) -> Isa {
        Isa::detect().min(self.max_isa)
    }

    /// How many tasks to split `elems` output elements into: 1 when serial or small, else a
    /// few per pool thread (for balance) with at least `MIN_PARALLEL_ELEMS / 4` elements each.
    pub fn tasks(self, elems: usize) -> usize {
        if !self.threaded || elems < MIN_PARALLEL_ELEMS {
            return 1;
        }
        let threads = rayon::current_num_threads().max(1);
        (threads * 4).min(elems / (MIN_PARALLEL_ELEMS / 4)).max(1)
    }
}

/// Call `f(first_row, chunk)` over disjoint chunks of whole rows of a `[rows, row_len]`
/// row-major `out`, in parallel when `par` allows it.
pub(crate) fn row_chunks<T: Send>(
    out: &mut [T],
    row_len: usize,
    par: Parallelism,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if out.is_empty() || row_len == 0 {
        return;
    }
    row_chunks_aligned(out, row_len, 1, par, f)
}

/// [`row_chunks`] with every chunk but the last a multiple of `align` rows (so that kernels
/// decoding several rows from one packed word row get whole word rows).
pub(crate) fn row_chunks_aligned<T: Send>(
    out: &mut [T],
    row_len: usize,
    align: usize,
    par: Parallelism,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    if out.is_empty() || row_len == 0 {
        return;
    }
    let rows = out.len() / row_len;
    let tasks = par.tasks(out.len()).min(rows);
    if tasks <= 1 {
        return f(0, out);
    }
    let align = align.max(1);
    let per = rows.div_ceil(tasks).div_ceil(align) * align;
    out.par_chunks_mut(per * row_len).enumerate().for_each(|(i, chunk)| f(i * per, chunk));
}

/// `f(rows)` over disjoint ranges of `rows` rows of `row_len` elements (split as
/// [`row_chunks`] splits an output), in parallel when `par` allows; the results in row order.
/// For reductions whose combination does not depend on the split (max, first index).
pub(crate) fn map_rows<R: Send>(
    rows: usize,
    row_len: usize,
    par: Parallelism,
    f: impl Fn(std::ops::Range<usize>) -> R + Sync,
) -> Vec<R> {
    let tasks = par.tasks(rows.saturating_mul(row_len)).min(rows);
    if tasks <= 1 {
        return vec![f(0..rows)];
    }
    let per = rows.div_ceil(tasks);
    (0..rows.div_ceil(per)).into_par_iter().map(|t| f(t * per..((t + 1) * per).min(rows))).collect()
}

/// [`row_chunks`] over two outputs split at the same rows: `a` holds `a_row` elements per row,
/// `b` `b_row`; `f(first_row, a_chunk, b_chunk)`.
pub(crate) fn row_chunks2<A: Send, B: Send>(
    a: &mut [A],
    a_row: usize,
    b: &mut [B],
    b_row: usize,
    par: Parallelism,
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) {
    if a_row == 0 || b_row == 0 {
        return f(0, a, b);
    }
    let rows = a.len() / a_row;
    let tasks = par.tasks(a.len().max(b.len())).min(rows);
    if tasks <= 1 {
        return f(0, a, b);
    }
    let per = rows.div_ceil(tasks);
    a.par_chunks_mut(per * a_row)
        .zip(b.par_chunks_mut(per * b_row))
        .enumerate()
        .for_each(|(i, (a, b))| f(i * per, a, b));
}

/// Call `f(first_col, pieces)` over disjoint column stripes of a `[rows, row_len]` row-major
/// `out`; `pieces[r]` is row `r`'s part of the stripe. Stripe widths are multiples of `align`
/// (except the last) so kernels keep whole tiles.
pub(crate) fn col_stripes<T: Send>(
    out: &mut [T],
    row_len: usize,
    align: usize,
    par: Parallelism,
    f: impl Fn(usize, &mut [&mut [T]]) + Sync,
) {
    if out.is_empty() || row_len == 0 {
        return;
    }
    let align = align.max(1);
    let tasks = par.tasks(out.len()).min(row_len.div_ceil(align));
    let width = row_len.div_ceil(tasks).div_ceil(align) * align;
    let stripes = row_len.div_ceil(width);
    let rows = out.len() / row_len;
    let mut pieces: Vec<Vec<&mut [T]>> = (0..stripes).map(|_| Vec::with_capacity(rows)).collect();
    for row in out.chunks_exact_mut(row_len) {
        for (stripe, piece) in pieces.iter_mut().zip(row.chunks_mut(width)) {
            stripe.push(piece);
        }
    }
    if stripes == 1 {
        return f(0, &mut pieces[0]);
    }
    pieces.into_par_iter().enumerate().for_each(|(i, mut stripe)| f(i * width, &mut stripe));
}

/// Row-major `[rows, sum of cols_i]` from parts `[rows, cols_i]` placed side by side; `None`
/// when a part's length is not `rows * cols_i`. (GPTQ fusion of qweight, scales, biases and
/// dense weights all go through this.)
pub fn concat_columns<T: Copy>(parts: &[(&[T], usize)], rows: usize) -> Option<Vec<T>> {
    if parts.iter().any(|(p, c)| rows.checked_mul(*c) != Some(p.len())) {
        return None;
    }
    let width: usize = parts.iter().map(|(_, c)| c).sum();
    let mut out = Vec::with_capacity(rows * width);
    for r in 0..rows {
        for (p, c) in parts {
            out.extend_from_slice(&p[r * c..(r + 1) * c]);
        }
    }
    Some(out)
}

/// The transpose `[cols, rows]` of a row-major `[rows, cols]` matrix, output rows split over
/// threads as `par` allows.
pub fn transpose<T: Copy + Default + Send + Sync>(
    src: &[T],
    rows: usize,
    cols: usize,
    par: Parallelism,
) -> Vec<T> {
    transpose_cols(src, rows, cols, 0..cols, par)
}

/// The transpose `[c1 - c0, rows]` of columns `c0..c1` of a row-major `[rows, cols]` matrix
/// (a writer can stream a large transpose in blocks). Eight output rows at a time: each step
/// reads eight contiguous values of a source row and appends one to each of eight sequential
/// output rows, so a power-of-two row stride does not thrash one cache set.
pub fn transpose_cols<T: Copy + Default + Send + Sync>(
    src: &[T],
    rows: usize,
    cols: usize,
    range: std::ops::Range<usize>,
    par: Parallelism,
) -> Vec<T> {
    debug_assert!(src.len() == rows * cols && range.end <= cols);
    let mut out = vec![T::default(); range.len() * rows];
    row_chunks(&mut out, rows, par, |first, chunk| {
        for (g, rows8) in chunk.chunks_mut(8 * rows).enumerate() {
            let c = range.start + first + 8 * g;
            let n8 = rows8.len() / rows;
            for r in 0..rows {
                for (j, &v) in src[r * cols + c..r * cols + c + n8].iter().enumerate() {
                    rows8[j * rows + r] = v;
                }
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_and_stripes_cover_every_element_once() {
        for (rows, cols) in [(1usize, 1usize), (3, 5), (64, 4099), (1000, 300), (7, 100_000)] {
            for par in [Parallelism::SERIAL, Parallelism::RAYON] {
                let mut out = vec![0u32; rows * cols];
                row_chunks(&mut out, cols, par, |r0, chunk| {
                    for (i, v) in chunk.iter_mut().enumerate() {
                        *v += (r0 * cols + i) as u32 + 1;
                    }
                });
                assert!(out.iter().enumerate().all(|(i, &v)| v == i as u32 + 1));
                let mut out = vec![0u32; rows * cols];
                col_stripes(&mut out, cols, 64, par, |c0, pieces| {
                    assert_eq!(pieces.len(), rows);
                    for (r, piece) in pieces.iter_mut().enumerate() {
                        for (j, v) in piece.iter_mut().enumerate() {
                            *v += (r * cols + c0 + j) as u32 + 1;
                        }
                    }
                });
                assert!(out.iter().enumerate().all(|(i, &v)| v == i as u32 + 1));
                let src: Vec<u32> = (0..(rows * cols) as u32).collect();
                let t = transpose(&src, rows, cols, par);
                assert!((0..rows * cols).all(|i| t[(i % cols) * rows + i / cols] == src[i]));
                let (c0, c1) = (cols / 3, cols - cols / 4);
                let part = transpose_cols(&src, rows, cols, c0..c1, par);
                assert_eq!(part, t[c0 * rows..c1 * rows]);
            }
        }
    }
}
