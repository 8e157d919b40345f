//! The tensor-core GEMMs of `../ptx/gemm.cuh` on the CPU: every `*_gemm_*_m{1,4}` and group-scaled
//! `*_gemmg_*_m{1,2}` entry through the shim's cooperative launch, `mma.sync` emulated per warp. `x` holds `m` rows of `k`
//! values; the wrappers return `y` (`m` rows of `n`).

use super::{Dev, EmuElem, HqqShape, dev_raw as raw, int as i};

/// A scheme's launcher types for both GEMM families: `$g` takes `$e`'s arguments, then the
/// group-scaled family's split K (part, counters, kslices); both end with the grid and block.
macro_rules! entry_types {
    ($(#[$m:meta])* $v:vis $e:ident, $(#[$mg:meta])* $g:ident $(<$r:ident>)?, ($($arg:ty),*)) => {
        $(#[$m])*
        $v type $e$(<$r>)? = unsafe extern "C" fn($($arg,)* u32, u32);
        $(#[$mg])*
        $v type $g$(<$r>)? = unsafe extern "C" fn($($arg,)* *mut f32, *mut u32, i32, u32, u32);
    };
}

entry_types!(
    /// `hqq_gemm_*`: (packed, scales, zeros, x, y, M, K, N, cols, prows, axis).
    pub HqqEntry,
    /// `hqq_gemmg_*`: `hqq_gemm_*`'s arguments, then (part, counters, kslices).
    HqqGEntry<R>,
    (*const u8, *const R, *const R, *const f32, *mut f32, i32, i32, i32, i32, i32, i32)
);
entry_types!(
    /// `gptq_gemm_*`: (qweight, qzeros, scales, g_idx, x, y, M, K, N, format, one_group).
    pub GptqEntry,
    /// `gptq_gemmg_*`: `gptq_gemm_*`'s arguments, then (part, counters, kslices).
    GptqGEntry<R>,
    (*const i32, *const i32, *const R, *const i32, *const f32, *mut f32, i32, i32, i32, i32, i32)
);
entry_types!(
    /// `awq_gemm_4b_*`: (qweight, qzeros, scales, x, y, M, K, N, group_size).
    pub AwqEntry,
    /// `awq_gemmg_4b_*`: `awq_gemm_4b_*`'s arguments, then (part, counters, kslices).
    AwqGEntry<R>,
    (*const i32, *const i32, *const R, *const f32, *mut f32, i32, i32, i32, i32)
);
entry_types!(
    /// `fp8_gemm_*`: (codes, scales, x, y, M, K, N, block rows, block cols).
    Fp8Entry,
    /// `fp8_gemmg_*`: `fp8_gemm_*`'s arguments, then (part, counters, kslices).
    Fp8GEntry,
    (*const u8, *const f32, *const f32, *mut f32, i32, i32, i32, i32, i32)
);

externs_wide!(
    "",
    (*const u8, *const f32, *const f32, *mut f32, i32, i32, i32, i32, i32),
    [cpu_fp8_gemmw_e4m3 = "cpu_fp8_gemmw_e4m3", cpu_fp8_gemmw_e5m2 = "cpu_fp8_gemmw_e5m2"]
);

externs_gemm!(
    "",
    (*const u8, *const f32, *const f32, *mut f32, i32, i32, i32, i32, i32),
    [
        (cpu_fp8_gemm_e4m3_m1, cpu_fp8_gemm_e4m3_m4, cpu_fp8_gemmg_e4m3_m1, cpu_fp8_gemmg_e4m3_m2) =
            "cpu_fp8_gemm_e4m3",
        "cpu_fp8_gemmg_e4m3",
        (cpu_fp8_gemm_e5m2_m1, cpu_fp8_gemm_e5m2_m4, cpu_fp8_gemmg_e5m2_m1, cpu_fp8_gemmg_e5m2_m2) =
            "cpu_fp8_gemm_e5m2",
        "cpu_fp8_gemmg_e5m2"
    ]
);

/// Which GEMM entry runs: `qk_mma_gemm` with 16- or 64-row tiles (weights rounded to f16), or the
/// group-scaled `qk_mma_gemm_grouped` with 16- or 32-row tiles (its layers: K % 32 == 0, N a
/// multiple of the tile width [`Tile::cols`], every aligned 32 inputs in one group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tile {
    /// `_gemm_*_m1`.
    M1,
    /// `_gemm_*_m4`.
    M4,
    /// `_gemmg_*_m1`.
    G1,
    /// `_gemmg_*_m2`.
    G2,
    /// The wide group-scaled GEMM, `_gemmw_*` (HQQ, GPTQ, FP8; AWQ has none): blocks of 64 rows
    /// by 4 tiles of 32 outputs, x staged in shared memory.
    W,
}

impl Tile {
    /// Every entry kind every GEMM scheme has.
    pub const ALL: [Tile; 4] = [Tile::M1, Tile::M4, Tile::G1, Tile::G2];
    /// [`Tile::ALL`] and the wide entry (all but AWQ).
    pub const WITH_WIDE: [Tile; 5] = [Tile::M1, Tile::M4, Tile::G1, Tile::G2, Tile::W];

    /// The entry's index within its family (`_m1` 0, `_m4`/`_m2` 1).
    fn index(self) -> usize {
        usize::from(matches!(self, Tile::M4 | Tile::G2))
    }

    /// Rows of a tile.
    fn rows(self) -> usize {
        match self {
            Tile::M1 | Tile::G1 => 16,
            Tile::G2 => 32,
            Tile::M4 | Tile::W => 64,
        }
    }

    /// Whether this is a group-scaled entry.
    pub fn grouped(self) -> bool {
        matches!(self, Tile::G1 | Tile::G2 | Tile::W)
    }

    /// Outputs of a tile (`qk_gemmg_nt` in ptx/gemm.cuh): 64 for the group-scaled 16-row entry
    /// and for every group-scaled AWQ entry, else 32. A group-scaled entry needs N a multiple.
    pub fn cols(self, awq: bool) -> usize {
        match self {
            Tile::G1 => 64,
            Tile::G2 if awq => 64,
            _ => 32,
        }
    }
}

/// The group-scaled family's split-K scratch: `kslices` partial sums of the output and a zeroed
/// counter per tile.
struct Split {
    part: Dev<f32>,
    counters: Dev<u32>,
    kslices: i32,
}

impl Split {
    fn new(tile: Tile, m: usize, n: usize, awq: bool, kslices: usize) -> Split {
        assert!(tile.grouped() || kslices == 1, "{tile:?} has no split K");
        let tiles = m.div_ceil(tile.rows()) * n / tile.cols(awq);
        Split {
            part: Dev::zeroed((kslices * m * n).max(1)),
            counters: Dev::zeroed(tiles.max(1)),
            kslices: i(kslices),
        }
    }

    /// Every tile's counter is back at zero (the last slice resets it for the next launch).
    fn check_reset(self) {
        assert!(self.counters.into_vec().iter().all(|&c| c == 0), "split-K counters not reset");
    }
}

fn check_mnk(x: &[f32], m: usize, k: usize, n: usize) {
    assert!(k.is_multiple_of(16) && n.is_multiple_of(8) && x.len() == m * k, "M {m} K {k} N {n}");
}

/// One emulated launch: the entry (family and tile), the split of K (group-scaled entries; 1
/// otherwise) and the grid and block sizes.
#[derive(Clone, Copy, Debug)]
pub struct Launch {
    /// The entry.
    pub tile: Tile,
    /// Slices of K (`kslices`), each a work item of its own.
    pub kslices: usize,
    /// Blocks.
    pub grid: u32,
    /// Threads per block.
    pub block: u32,
}

/// Calls the launch's entry: `generic(args.., grid, block)`, or `grouped(args.., part, counters,
/// kslices, grid, block)` for a group-scaled tile.
macro_rules! launch {
    ($l:expr, $sp:expr, $generic:expr, $grouped:expr, ($($arg:expr),*)) => {
        if $l.tile.grouped() {
            ($grouped)($($arg,)* $sp.part.as_mut_ptr(), $sp.counters.as_mut_ptr(), $sp.kslices, $l.grid, $l.block)
        } else {
            ($generic)($($arg,)* $l.grid, $l.block)
        }
    };
}

/// The emulated 4/8-bit HQQ GEMM (`shape` the code matrix; `k` the weight's inputs).
///
/// # Panics
/// On inconsistent lengths or shapes the kernel does not take (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn hqq_gemm<T: EmuElem>(
    bits: u8,
    packed: &[u8],
    scales: &[T],
    zeros: &[T],
    shape: HqqShape,
    x: &[f32],
    m: usize,
    k: usize,
    l: Launch,
) -> Vec<f32> {
    let words = shape.prows * shape.cols;
    let n = shape.rows * shape.cols / k;
    check_mnk(x, m, k, n);
    assert!(words.is_multiple_of(16) && shape.cols.is_multiple_of(16) && packed.len() == words);
    assert_eq!((scales.len(), zeros.len()), (shape.groups, shape.groups));
    if l.tile.grouped() {
        assert!(
            shape.axis == 1 && k.is_multiple_of(32) && n.is_multiple_of(l.tile.cols(false)),
            "axis {} K {k} N {n}",
            shape.axis
        );
        let g = shape.cols;
        assert!(g.is_power_of_two() && g >= 32 && k.is_multiple_of(g), "cols {g}");
    }
    let w = usize::from(bits == 8);
    let (p, s, z, xd) = (Dev::from(packed), raw(scales), raw(zeros), Dev::from(x));
    let mut y = Dev::<f32>::zeroed(m * n);
    let mut sp = Split::new(l.tile, m, n, false, l.kslices);
    // SAFETY: reads packed bytes < words (a lane's four weights share a 16-aligned block of its
    // plane; the group-scaled entry's 8 codes an 8-aligned block), params at code rows < rows
    // (axis 1) or columns < cols (axis 0), x[r*k + c] for r < m, c < k; writes y[r*n + c] for
    // r < m, c < n, part within kslices*m*n and a counter per tile. Synchronous.
    unsafe {
        launch!(
            l,
            sp,
            T::HQQ_GEMM[w][l.tile.index()],
            if l.tile == Tile::W { T::HQQ_GEMMW[w] } else { T::HQQ_GEMMG[w][l.tile.index()] },
            (
                p.as_ptr(),
                s.as_ptr(),
                z.as_ptr(),
                xd.as_ptr(),
                y.as_mut_ptr(),
                i(m),
                i(k),
                i(n),
                i(shape.cols),
                i(shape.prows),
                shape.axis
            )
        )
    };
    sp.check_reset();
    y.into_vec()
}

/// The emulated 4/8-bit GPTQ GEMM (`one_group`: every aligned 16 rows of `g_idx` share a group).
///
/// # Panics
/// On inconsistent lengths (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn gptq_gemm<T: EmuElem>(
    bits: u8,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[T],
    g_idx: &[i32],
    x: &[f32],
    (m, k, n): (usize, usize, usize),
    format: i32,
    one_group: bool,
    l: Launch,
) -> Vec<f32> {
    check_mnk(x, m, k, n);
    let b = bits as usize;
    let groups = scales.len() / n;
    assert_eq!((qweight.len(), qzeros.len(), g_idx.len()), (k * b / 32 * n, groups * n * b / 32, k));
    assert!(g_idx.iter().all(|&g| g >= 0 && (g as usize) < groups));
    if one_group {
        assert!(g_idx.chunks(16).all(|c| c.iter().all(|&g| g == c[0])), "one_group");
    }
    if l.tile.grouped() {
        assert!(k.is_multiple_of(32) && n.is_multiple_of(l.tile.cols(false)), "K {k} N {n}");
        assert!(g_idx.chunks(32).all(|c| c.iter().all(|&g| g == c[0])), "groups of 32");
    }
    let w = usize::from(bits == 8);
    let (qw, qz, s, gi, xd) =
        (Dev::from(qweight), Dev::from(qzeros), raw(scales), Dev::from(g_idx), Dev::from(x));
    let mut y = Dev::<f32>::zeroed(m * n);
    let mut sp = Split::new(l.tile, m, n, false, l.kslices);
    // SAFETY: reads qweight word rows < k*bits/32 at columns < n, qzeros/scales rows < groups
    // (g_idx checked), x within m*k; writes y within m*n, part within kslices*m*n and a
    // counter per tile. Synchronous.
    unsafe {
        launch!(
            l,
            sp,
            T::GPTQ_GEMM[w][l.tile.index()],
            if l.tile == Tile::W { T::GPTQ_GEMMW[w] } else { T::GPTQ_GEMMG[w][l.tile.index()] },
            (
                qw.as_ptr(),
                qz.as_ptr(),
                s.as_ptr(),
                gi.as_ptr(),
                xd.as_ptr(),
                y.as_mut_ptr(),
                i(m),
                i(k),
                i(n),
                format,
                i32::from(one_group)
            )
        )
    };
    sp.check_reset();
    y.into_vec()
}

/// The emulated AWQ GEMM.
///
/// # Panics
/// On inconsistent lengths (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn awq_gemm<T: EmuElem>(
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[T],
    x: &[f32],
    (m, k, n): (usize, usize, usize),
    group_size: usize,
    l: Launch,
) -> Vec<f32> {
    assert!(l.tile != Tile::W, "no wide entry for this scheme");
    check_mnk(x, m, k, n);
    let groups = k / group_size;
    assert_eq!((qweight.len(), qzeros.len(), scales.len()), (k * n / 8, groups * n / 8, groups * n));
    if l.tile.grouped() {
        assert!(k.is_multiple_of(32) && n.is_multiple_of(64), "K {k} N {n}");
        assert!(group_size.is_power_of_two() && group_size >= 32, "group {group_size}");
    }
    let (qw, qz, s, xd) = (Dev::from(qweight), Dev::from(qzeros), raw(scales), Dev::from(x));
    let mut y = Dev::<f32>::zeroed(m * n);
    let mut sp = Split::new(l.tile, m, n, true, l.kslices);
    // SAFETY: reads qweight rows < k, qzeros/scales rows < groups, x within m*k; writes y
    // within m*n, part within kslices*m*n and a counter per tile. Synchronous.
    unsafe {
        launch!(
            l,
            sp,
            T::AWQ_GEMM[l.tile.index()],
            T::AWQ_GEMMG[l.tile.index()],
            (
                qw.as_ptr(),
                qz.as_ptr(),
                s.as_ptr(),
                xd.as_ptr(),
                y.as_mut_ptr(),
                i(m),
                i(k),
                i(n),
                i(group_size)
            )
        )
    };
    sp.check_reset();
    y.into_vec()
}

/// The emulated FP8 GEMM (`format` 0 = E4M3, 1 = E5M2): codes `[n, k]`, f32 block scales.
///
/// # Panics
/// On inconsistent lengths (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn fp8_gemm(
    format: usize,
    codes: &[u8],
    scales: &[f32],
    block_shape: (usize, usize),
    x: &[f32],
    (m, k, n): (usize, usize, usize),
    l: Launch,
) -> Vec<f32> {
    check_mnk(x, m, k, n);
    let (br, bc) = block_shape;
    assert_eq!((codes.len(), scales.len()), (n * k, n.div_ceil(br) * k.div_ceil(bc)));
    if l.tile.grouped() {
        assert!(k.is_multiple_of(32) && n.is_multiple_of(l.tile.cols(false)), "K {k} N {n}");
        assert!(bc >= k || (bc.is_power_of_two() && bc >= 32), "block columns {bc}");
        assert!(format == 1 || codes.iter().all(|&c| c & 0x7f != 0x7f), "E4M3 NaN code");
    }
    let generic: [[Fp8Entry; 2]; 2] =
        [[cpu_fp8_gemm_e4m3_m1, cpu_fp8_gemm_e4m3_m4], [cpu_fp8_gemm_e5m2_m1, cpu_fp8_gemm_e5m2_m4]];
    let grouped: [[Fp8GEntry; 2]; 2] =
        [[cpu_fp8_gemmg_e4m3_m1, cpu_fp8_gemmg_e4m3_m2], [cpu_fp8_gemmg_e5m2_m1, cpu_fp8_gemmg_e5m2_m2]];
    let wide: [Fp8GEntry; 2] = [cpu_fp8_gemmw_e4m3, cpu_fp8_gemmw_e5m2];
    let (c, s, xd) = (Dev::from(codes), Dev::from(scales), Dev::from(x));
    let mut y = Dev::<f32>::zeroed(m * n);
    let mut sp = Split::new(l.tile, m, n, false, l.kslices);
    // SAFETY: reads codes < n*k, scales at (r/br)*ceil(k/bc) + c/bc, x within m*k; writes y
    // within m*n, part within kslices*m*n and a counter per tile. Synchronous.
    unsafe {
        launch!(
            l,
            sp,
            generic[format][l.tile.index()],
            if l.tile == Tile::W { wide[format] } else { grouped[format][l.tile.index()] },
            (c.as_ptr(), s.as_ptr(), xd.as_ptr(), y.as_mut_ptr(), i(m), i(k), i(n), i(br), i(bc))
        )
    };
    sp.check_reset();
    y.into_vec()
}
