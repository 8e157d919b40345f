//! The tensor-core GEMM of `../ptx/gemm.cuh` on the CPU: every `*_gemm_*_m{1,4}` entry through
//! the shim's cooperative launch, `mma.sync` emulated per warp. `x` holds `m` rows of `k`
//! values; the wrappers return `y` (`m` rows of `n`).

use super::{Dev, EmuElem, HqqShape, dev_raw as raw, int as i};

/// `hqq_gemm_*`: (packed, scales, zeros, x, y, M, K, N, cols, prows, axis).
pub type HqqEntry<R> = unsafe extern "C" fn(
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
    u32,
    u32,
);
/// `gptq_gemm_*`: (qweight, qzeros, scales, g_idx, x, y, M, K, N, format, one_group).
pub type GptqEntry<R> = unsafe extern "C" fn(
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
    i32,
    u32,
    u32,
);
/// `awq_gemm_4b_*`: (qweight, qzeros, scales, x, y, M, K, N, group_size).
pub type AwqEntry<R> = unsafe extern "C" fn(
    *const i32,
    *const i32,
    *const R,
    *const f32,
    *mut f32,
    i32,
    i32,
    i32,
    i32,
    u32,
    u32,
);

type Fp8Entry =
    unsafe extern "C" fn(*const u8, *const f32, *const f32, *mut f32, i32, i32, i32, i32, i32, u32, u32);

unsafe extern "C" {
    fn cpu_fp8_gemm_e4m3_m1(
        c: *const u8,
        s: *const f32,
        x: *const f32,
        y: *mut f32,
        m: i32,
        k: i32,
        n: i32,
        br: i32,
        bc: i32,
        g: u32,
        b: u32,
    );
    fn cpu_fp8_gemm_e4m3_m4(
        c: *const u8,
        s: *const f32,
        x: *const f32,
        y: *mut f32,
        m: i32,
        k: i32,
        n: i32,
        br: i32,
        bc: i32,
        g: u32,
        b: u32,
    );
    fn cpu_fp8_gemm_e5m2_m1(
        c: *const u8,
        s: *const f32,
        x: *const f32,
        y: *mut f32,
        m: i32,
        k: i32,
        n: i32,
        br: i32,
        bc: i32,
        g: u32,
        b: u32,
    );
    fn cpu_fp8_gemm_e5m2_m4(
        c: *const u8,
        s: *const f32,
        x: *const f32,
        y: *mut f32,
        m: i32,
        k: i32,
        n: i32,
        br: i32,
        bc: i32,
        g: u32,
        b: u32,
    );
}

/// `m1` (16-row tiles) or `m4` (64-row tiles).
fn mt_index(mt: usize) -> usize {
    assert!(mt == 1 || mt == 4, "mt {mt}");
    usize::from(mt == 4)
}

fn check_mnk(x: &[f32], m: usize, k: usize, n: usize) {
    assert!(k.is_multiple_of(16) && n.is_multiple_of(8) && x.len() == m * k, "M {m} K {k} N {n}");
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
    mt: usize,
    grid: u32,
    block: u32,
) -> Vec<f32> {
    let words = shape.prows * shape.cols;
    let n = shape.rows * shape.cols / k;
    check_mnk(x, m, k, n);
    assert!(words.is_multiple_of(16) && shape.cols.is_multiple_of(16) && packed.len() == words);
    assert_eq!((scales.len(), zeros.len()), (shape.groups, shape.groups));
    let entry = T::HQQ_GEMM[usize::from(bits == 8)][mt_index(mt)];
    let (p, s, z, xd) = (Dev::from(packed), raw(scales), raw(zeros), Dev::from(x));
    let mut y = Dev::<f32>::zeroed(m * n);
    // SAFETY: reads packed bytes < words (a lane's four weights share a 16-aligned block of its
    // plane), params at code rows < rows (axis 1) or columns < cols (axis 0), x[r*k + c] for
    // r < m, c < k; writes y[r*n + c] for r < m, c < n. Synchronous.
    unsafe {
        entry(
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
            shape.axis,
            grid,
            block,
        )
    };
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
    m: usize,
    k: usize,
    n: usize,
    format: i32,
    one_group: bool,
    mt: usize,
    grid: u32,
    block: u32,
) -> Vec<f32> {
    check_mnk(x, m, k, n);
    let b = bits as usize;
    let groups = scales.len() / n;
    assert_eq!((qweight.len(), qzeros.len(), g_idx.len()), (k * b / 32 * n, groups * n * b / 32, k));
    assert!(g_idx.iter().all(|&g| g >= 0 && (g as usize) < groups));
    if one_group {
        assert!(g_idx.chunks(16).all(|c| c.iter().all(|&g| g == c[0])), "one_group");
    }
    let entry = T::GPTQ_GEMM[usize::from(bits == 8)][mt_index(mt)];
    let (qw, qz, s, gi, xd) =
        (Dev::from(qweight), Dev::from(qzeros), raw(scales), Dev::from(g_idx), Dev::from(x));
    let mut y = Dev::<f32>::zeroed(m * n);
    // SAFETY: reads qweight word rows < k*bits/32 at columns < n, qzeros/scales rows < groups
    // (g_idx checked), x within m*k; writes y within m*n. Synchronous.
    unsafe {
        entry(
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
            i32::from(one_group),
            grid,
            block,
        )
    };
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
    m: usize,
    k: usize,
    n: usize,
    group_size: usize,
    mt: usize,
    grid: u32,
    block: u32,
) -> Vec<f32> {
    check_mnk(x, m, k, n);
    let groups = k / group_size;
    assert_eq!((qweight.len(), qzeros.len(), scales.len()), (k * n / 8, groups * n / 8, groups * n));
    let entry = T::AWQ_GEMM[mt_index(mt)];
    let (qw, qz, s, xd) = (Dev::from(qweight), Dev::from(qzeros), raw(scales), Dev::from(x));
    let mut y = Dev::<f32>::zeroed(m * n);
    // SAFETY: reads qweight rows < k, qzeros/scales rows < groups, x within m*k; writes y
    // within m*n. Synchronous.
    unsafe {
        entry(
            qw.as_ptr(),
            qz.as_ptr(),
            s.as_ptr(),
            xd.as_ptr(),
            y.as_mut_ptr(),
            i(m),
            i(k),
            i(n),
            i(group_size),
            grid,
            block,
        )
    };
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
    m: usize,
    k: usize,
    n: usize,
    mt: usize,
    grid: u32,
    block: u32,
) -> Vec<f32> {
    check_mnk(x, m, k, n);
    let (br, bc) = block_shape;
    assert_eq!((codes.len(), scales.len()), (n * k, n.div_ceil(br) * k.div_ceil(bc)));
    let entry: Fp8Entry =
        [[cpu_fp8_gemm_e4m3_m1, cpu_fp8_gemm_e4m3_m4], [cpu_fp8_gemm_e5m2_m1, cpu_fp8_gemm_e5m2_m4]][format]
            [mt_index(mt)];
    let (c, s, xd) = (Dev::from(codes), Dev::from(scales), Dev::from(x));
    let mut y = Dev::<f32>::zeroed(m * n);
    // SAFETY: reads codes < n*k, scales at (r/br)*ceil(k/bc) + c/bc, x within m*k; writes y
    // within m*n. Synchronous.
    unsafe {
        entry(
            c.as_ptr(),
            s.as_ptr(),
            xd.as_ptr(),
            y.as_mut_ptr(),
            i(m),
            i(k),
            i(n),
            i(br),
            i(bc),
            grid,
            block,
        )
    };
    y.into_vec()
}
