//! The fused GEMV family of `../ptx/gemv.cuh` on the CPU: every scheme's `*_gemv_*_b{1,8}`
//! entry, run through the shim's cooperative launch (warp shuffles), then the ordered
//! reduction of `ptx/gemv.cu` when an output has several partial sums.
//!
//! Each wrapper takes the activations as `nb` rows of `in` values (`x[b * in + i]`) and returns
//! `y[b * out + o]`. The segment, team and slice choices are parameters, so the tests can run
//! every geometry the kernels accept, not only the one the crate's launcher picks.

use super::{Dev, EmuElem, HqqShape, dev_raw as raw, int as i};

/// `hqq_gemv_*`: (packed, scales, zeros, x, part, rows, cols, prows, axis, in, seg, team, nb).
pub type HqqEntry<W, R> = unsafe extern "C" fn(
    *const W,
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
    u32,
);
/// `gptq_gemv_*`: (qweight, qzeros, scales, g_idx, x, part, y, counters, K, N, slice_rows,
/// format, nb).
pub type GptqEntry<R> = unsafe extern "C" fn(
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
    u32,
);
/// `awq_gemv_4b_*`: (qweight, qzeros, scales, x, part, y, counters, K, N, group_size, slice_rows,
/// nb).
pub type AwqEntry<R> = unsafe extern "C" fn(
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
    u32,
);

unsafe extern "C" {
    fn cpu_gemv_reduce_rows_f32(part: *const f32, y: *mut f32, outs: i32, per: i32, gr: u32, b: u32);
    fn cpu_fp8_gemv_e4m3_b1(
        c: *const u8,
        s: *const f32,
        x: *const f32,
        p: *mut f32,
        r: i32,
        cl: i32,
        br: i32,
        bc: i32,
        seg: i32,
        team: i32,
        nb: i32,
        gr: u32,
        b: u32,
    );
    fn cpu_fp8_gemv_e4m3_b8(
        c: *const u8,
        s: *const f32,
        x: *const f32,
        p: *mut f32,
        r: i32,
        cl: i32,
        br: i32,
        bc: i32,
        seg: i32,
        team: i32,
        nb: i32,
        gr: u32,
        b: u32,
    );
    fn cpu_fp8_gemv_e5m2_b1(
        c: *const u8,
        s: *const f32,
        x: *const f32,
        p: *mut f32,
        r: i32,
        cl: i32,
        br: i32,
        bc: i32,
        seg: i32,
        team: i32,
        nb: i32,
        gr: u32,
        b: u32,
    );
    fn cpu_fp8_gemv_e5m2_b8(
        c: *const u8,
        s: *const f32,
        x: *const f32,
        p: *mut f32,
        r: i32,
        cl: i32,
        br: i32,
        bc: i32,
        seg: i32,
        team: i32,
        nb: i32,
        gr: u32,
        b: u32,
    );
    fn cpu_int8_gemv_b1(
        c: *const u8,
        s: *const f32,
        x: *const f32,
        p: *mut f32,
        r: i32,
        cl: i32,
        per_row: i32,
        seg: i32,
        team: i32,
        nb: i32,
        gr: u32,
        b: u32,
    );
    fn cpu_int8_gemv_b8(
        c: *const u8,
        s: *const f32,
        x: *const f32,
        p: *mut f32,
        r: i32,
        cl: i32,
        per_row: i32,
        seg: i32,
        team: i32,
        nb: i32,
        gr: u32,
        b: u32,
    );
    fn cpu_int4_gemv_b1(
        c: *const u8,
        s: *const f32,
        z: *const u8,
        x: *const f32,
        p: *mut f32,
        r: i32,
        cl: i32,
        g: i32,
        seg: i32,
        team: i32,
        nb: i32,
        gr: u32,
        b: u32,
    );
    fn cpu_int4_gemv_b8(
        c: *const u8,
        s: *const f32,
        z: *const u8,
        x: *const f32,
        p: *mut f32,
        r: i32,
        cl: i32,
        g: i32,
        seg: i32,
        team: i32,
        nb: i32,
        gr: u32,
        b: u32,
    );
}

/// Which entry of a pair: batch 1 (`_b1`) or up to 8 (`_b8`).
fn maxb_index(nb: usize, maxb: usize) -> usize {
    assert!(nb >= 1 && nb <= maxb && (maxb == 1 || maxb == 8), "nb {nb} maxb {maxb}");
    usize::from(maxb == 8)
}

/// The row skeleton's geometry (see gemv.cuh): `seg` words per segment, `team` lanes a
/// segment, flat segments of `flat` weights, `per` of them per output row.
#[derive(Debug, Clone, Copy)]
pub struct RowGeometry {
    /// Words per segment.
    pub seg: usize,
    /// Lanes per segment (a power of two <= 32).
    pub team: usize,
}

/// Run a row-skeleton entry (`launch(part)`) and add the partial sums of each output:
/// `per = in / flat` per output row, `nb * out` outputs.
fn row_reduce(
    nb: usize,
    outs: usize,
    per: usize,
    grid: u32,
    block: u32,
    launch: impl FnOnce(*mut f32),
) -> Vec<f32> {
    let mut y = Dev::<f32>::zeroed(nb * outs);
    if per == 1 {
        launch(y.as_mut_ptr());
    } else {
        let mut part = Dev::<f32>::zeroed(nb * outs * per);
        launch(part.as_mut_ptr());
        // SAFETY: part holds nb*outs*per sums; the kernel reads part[o*per + t], t < per, and
        // writes y[o] for o < nb*outs (y's length); synchronous call.
        unsafe { cpu_gemv_reduce_rows_f32(part.as_ptr(), y.as_mut_ptr(), i(nb * outs), i(per), grid, block) };
    }
    y.into_vec()
}

/// Run a column-skeleton entry in one launch: blocks of 32 x `by` threads covering the `n / vc`
/// column vectors and the slices exactly; `launch(part, y, counters, grid, block)`. The
/// counters (one per block column) must be zero again afterwards: the last block resets them.
fn col_fused(
    nb: usize,
    n: usize,
    vc: usize,
    slices: usize,
    by: u32,
    launch: impl FnOnce(*mut f32, *mut f32, *mut u32, u32, u32),
) -> Vec<f32> {
    assert!((1..=32).contains(&by));
    let gx = (n / vc).div_ceil(32);
    let gy = slices.div_ceil(by as usize);
    assert!(gx < 1 << 16 && gy < 1 << 16);
    let mut y = Dev::<f32>::zeroed(nb * n);
    let mut part = Dev::<f32>::zeroed(nb * slices * n);
    let mut counters = Dev::<u32>::zeroed(gx);
    launch(
        part.as_mut_ptr(),
        y.as_mut_ptr(),
        counters.as_mut_ptr(),
        gx as u32 | (gy as u32) << 16,
        32 | by << 16,
    );
    assert!(counters.as_slice().iter().all(|&c| c == 0), "counters not reset");
    y.into_vec()
}

/// The emulated HQQ GEMV of any width (`packed` as bytes, or as `i32` words at 3 bits through
/// [`hqq_gemv_3b`]): `shape` is the code matrix, `in_dim` the weight's input count. The segment
/// must satisfy gemv.cuh's rule (`seg | in`, `seg | prows * cols`, `cols % 8 == 0` bytes / `% 2`
/// words).
///
/// # Panics
/// On inconsistent lengths or geometry (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn hqq_gemv_u8<T: EmuElem>(
    bits: u8,
    packed: &[u8],
    scales: &[T],
    zeros: &[T],
    shape: HqqShape,
    x: &[f32],
    in_dim: usize,
    nb: usize,
    maxb: usize,
    geo: RowGeometry,
    grid: u32,
    block: u32,
) -> Vec<f32> {
    let b = match bits {
        1 => 0,
        2 => 1,
        4 => 2,
        8 => 3,
        b => panic!("no u8 entry for {b} bits"),
    };
    hqq_run(
        T::HQQ_QGEMV_U8[b][maxb_index(nb, maxb)],
        8,
        packed,
        scales,
        zeros,
        shape,
        x,
        in_dim,
        nb,
        geo,
        grid,
        block,
    )
}

/// [`hqq_gemv_u8`] for 3-bit words.
#[allow(clippy::too_many_arguments)]
pub fn hqq_gemv_3b<T: EmuElem>(
    packed: &[i32],
    scales: &[T],
    zeros: &[T],
    shape: HqqShape,
    x: &[f32],
    in_dim: usize,
    nb: usize,
    maxb: usize,
    geo: RowGeometry,
    grid: u32,
    block: u32,
) -> Vec<f32> {
    hqq_run(
        T::HQQ_QGEMV_3B[maxb_index(nb, maxb)],
        2,
        packed,
        scales,
        zeros,
        shape,
        x,
        in_dim,
        nb,
        geo,
        grid,
        block,
    )
}

#[allow(clippy::too_many_arguments)]
fn hqq_run<W: bytemuck::Pod, T: EmuElem>(
    entry: HqqEntry<W, T::Raw>,
    ch: usize,
    packed: &[W],
    scales: &[T],
    zeros: &[T],
    shape: HqqShape,
    x: &[f32],
    in_dim: usize,
    nb: usize,
    geo: RowGeometry,
    grid: u32,
    block: u32,
) -> Vec<f32> {
    let words = shape.prows * shape.cols;
    let numel = shape.rows * shape.cols;
    assert_eq!(packed.len(), words);
    assert_eq!((scales.len(), zeros.len()), (shape.groups, shape.groups));
    assert!(numel.is_multiple_of(in_dim) && x.len() == nb * in_dim);
    assert!(in_dim.is_multiple_of(geo.seg) && words.is_multiple_of(geo.seg) && geo.seg.is_multiple_of(ch));
    assert!(shape.cols.is_multiple_of(ch) && geo.team.is_power_of_two() && geo.team <= 32);
    let outs = numel / in_dim;
    let (p, s, z, xd) = (Dev::from(packed), raw(scales), raw(zeros), Dev::from(x));
    row_reduce(nb, outs, in_dim / geo.seg, grid, block, |part| {
        // SAFETY: the skeleton reads packed words < prows*cols in chunks of `ch` inside a
        // segment, params at code rows < rows (axis 1; padding rows skipped) or columns < cols
        // (axis 0), x[b*in + off] with off < in (a segment lies in one row), and writes
        // part[b*nflat + F] for F < numel/seg = outs*per: the buffer's length. Synchronous.
        unsafe {
            entry(
                p.as_ptr(),
                s.as_ptr(),
                z.as_ptr(),
                xd.as_ptr(),
                part,
                i(shape.rows),
                i(shape.cols),
                i(shape.prows),
                shape.axis,
                i(in_dim),
                i(geo.seg),
                i(geo.team),
                i(nb),
                grid,
                block,
            )
        }
    })
}

/// The emulated GPTQ GEMV (any width): `x` holds `nb` rows of `k`; slices of `slice_rows` rows.
///
/// # Panics
/// On inconsistent lengths or `g_idx` values (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn gptq_gemv<T: EmuElem>(
    bits: u8,
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[T],
    g_idx: &[i32],
    x: &[f32],
    k: usize,
    n: usize,
    slice_rows: usize,
    format: i32,
    nb: usize,
    maxb: usize,
    by: u32,
) -> Vec<f32> {
    let (e, rows) = match bits {
        2 => (0, 16),
        3 => (1, 32),
        4 => (2, 8),
        8 => (3, 4),
        b => panic!("no GPTQ entry for {b} bits"),
    };
    let b = bits as usize;
    let groups = scales.len() / n;
    assert!(k.is_multiple_of(slice_rows) && slice_rows.is_multiple_of(rows) && n.is_multiple_of(4));
    assert_eq!(
        (qweight.len(), qzeros.len(), g_idx.len(), x.len()),
        (k * b / 32 * n, groups * (n * b / 32), k, nb * k)
    );
    assert!(g_idx.iter().all(|&g| g >= 0 && (g as usize) < groups));
    let s = raw(scales);
    let (qw, qz, gi, xd) = (Dev::from(qweight), Dev::from(qzeros), Dev::from(g_idx), Dev::from(x));
    let entry = T::GPTQ_QGEMV[e][maxb_index(nb, maxb)];
    // Bit 1 of the format: the kernel may take a slice whose ends share a group as one group.
    let format = format | if g_idx.windows(2).all(|w| w[0] <= w[1]) { 2 } else { 0 };
    col_fused(nb, n, 4, k / slice_rows, by, |part, y, counters, grid, block| {
        // SAFETY: reads qweight word rows < k*bits/32 at 4 columns < n, qzeros/scales rows
        // g < groups (checked), g_idx[k'] and x[b*k + k'] for k' < k, b < nb; writes
        // part[(b*slices + s)*n + c] and y[b*n + c] within their buffers, counters[block x].
        // Synchronous.
        unsafe {
            entry(
                qw.as_ptr(),
                qz.as_ptr(),
                s.as_ptr(),
                gi.as_ptr(),
                xd.as_ptr(),
                part,
                y,
                counters,
                i(k),
                i(n),
                i(slice_rows),
                format,
                i(nb),
                grid,
                block,
            )
        }
    })
}

/// The emulated AWQ GEMV.
///
/// # Panics
/// On inconsistent lengths (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn awq_gemv<T: EmuElem>(
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[T],
    x: &[f32],
    k: usize,
    n: usize,
    group_size: usize,
    slice_rows: usize,
    nb: usize,
    maxb: usize,
    by: u32,
) -> Vec<f32> {
    // Slices of whole 4-row blocks (the decoder's block, as DeviceQuantLinear's ColPlan).
    assert!(
        n.is_multiple_of(8)
            && k.is_multiple_of(group_size)
            && k.is_multiple_of(slice_rows)
            && slice_rows.is_multiple_of(4)
    );
    let groups = k / group_size;
    assert_eq!(
        (qweight.len(), qzeros.len(), scales.len(), x.len()),
        (k * n / 8, groups * n / 8, groups * n, nb * k)
    );
    let s = raw(scales);
    let (qw, qz, xd) = (Dev::from(qweight), Dev::from(qzeros), Dev::from(x));
    let entry = T::AWQ_QGEMV[maxb_index(nb, maxb)];
    col_fused(nb, n, 8, k / slice_rows, by, |part, y, counters, grid, block| {
        // SAFETY: reads qweight[k'*n/8 + w] for k' < k, qzeros/scales rows k'/group_size <
        // groups, x[b*k + k']; writes part within nb*slices*n, y within nb*n and
        // counters[block x]. Synchronous.
        unsafe {
            entry(
                qw.as_ptr(),
                qz.as_ptr(),
                s.as_ptr(),
                xd.as_ptr(),
                part,
                y,
                counters,
                i(k),
                i(n),
                i(group_size),
                i(slice_rows),
                i(nb),
                grid,
                block,
            )
        }
    })
}

/// The emulated FP8 GEMV (`format` 0 = E4M3, 1 = E5M2), f32 block scales.
///
/// # Panics
/// On inconsistent lengths (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn fp8_gemv(
    format: usize,
    codes: &[u8],
    scales: &[f32],
    rows: usize,
    cols: usize,
    block_shape: (usize, usize),
    x: &[f32],
    nb: usize,
    maxb: usize,
    geo: RowGeometry,
    grid: u32,
    block: u32,
) -> Vec<f32> {
    let (br, bc) = block_shape;
    assert_eq!(codes.len(), rows * cols);
    assert_eq!(scales.len(), rows.div_ceil(br) * cols.div_ceil(bc));
    assert!(cols.is_multiple_of(geo.seg) && geo.seg.is_multiple_of(8) && x.len() == nb * cols);
    let entry = [[cpu_fp8_gemv_e4m3_b1, cpu_fp8_gemv_e4m3_b8], [cpu_fp8_gemv_e5m2_b1, cpu_fp8_gemv_e5m2_b8]]
        [format][maxb_index(nb, maxb)];
    let (c, s, xd) = (Dev::from(codes), Dev::from(scales), Dev::from(x));
    row_reduce(nb, rows, cols / geo.seg, grid, block, |part| {
        // SAFETY: reads codes < rows*cols in 8-byte chunks of a segment inside one row, scales at
        // (r/br)*ceil(cols/bc) + c/bc, x[b*cols + c]; writes part within nb*rows*per.
        unsafe {
            entry(
                c.as_ptr(),
                s.as_ptr(),
                xd.as_ptr(),
                part,
                i(rows),
                i(cols),
                i(br),
                i(bc),
                i(geo.seg),
                i(geo.team),
                i(nb),
                grid,
                block,
            )
        }
    })
}

/// The emulated int8 GEMV (`scales`: one per row, or one for the tensor).
///
/// # Panics
/// On inconsistent lengths (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn int8_gemv(
    codes: &[i8],
    scales: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    nb: usize,
    maxb: usize,
    geo: RowGeometry,
    grid: u32,
    block: u32,
) -> Vec<f32> {
    assert_eq!(codes.len(), rows * cols);
    assert!(scales.len() == 1 || scales.len() == rows);
    assert!(cols.is_multiple_of(geo.seg) && geo.seg.is_multiple_of(8) && x.len() == nb * cols);
    let entry = [cpu_int8_gemv_b1, cpu_int8_gemv_b8][maxb_index(nb, maxb)];
    let bytes: Vec<u8> = codes.iter().map(|&c| c as u8).collect();
    let (c, s, xd) = (Dev::from(&bytes), Dev::from(scales), Dev::from(x));
    let per_row = i32::from(scales.len() == rows && rows != 1);
    row_reduce(nb, rows, cols / geo.seg, grid, block, |part| {
        // SAFETY: reads codes < rows*cols, scales[r] (r < rows when per row, else [0]),
        // x[b*cols + c]; writes part within nb*rows*per. Synchronous.
        unsafe {
            entry(
                c.as_ptr(),
                s.as_ptr(),
                xd.as_ptr(),
                part,
                i(rows),
                i(cols),
                per_row,
                i(geo.seg),
                i(geo.team),
                i(nb),
                grid,
                block,
            )
        }
    })
}

/// The emulated int4 GEMV (`seg` in bytes: `2 * seg | cols`).
///
/// # Panics
/// On inconsistent lengths (a test helper).
#[allow(clippy::too_many_arguments)]
pub fn int4_gemv(
    packed: &[u8],
    scales: &[f32],
    zeros: &[u8],
    rows: usize,
    cols: usize,
    group: usize,
    x: &[f32],
    nb: usize,
    maxb: usize,
    geo: RowGeometry,
    grid: u32,
    block: u32,
) -> Vec<f32> {
    assert!(cols.is_multiple_of(group) && group.is_multiple_of(2));
    assert_eq!(
        (packed.len(), scales.len(), zeros.len()),
        (rows * cols / 2, rows * cols / group, rows * cols / group)
    );
    assert!(cols.is_multiple_of(2 * geo.seg) && geo.seg.is_multiple_of(8) && x.len() == nb * cols);
    let entry = [cpu_int4_gemv_b1, cpu_int4_gemv_b8][maxb_index(nb, maxb)];
    let (p, s, z, xd) = (Dev::from(packed), Dev::from(scales), Dev::from(zeros), Dev::from(x));
    row_reduce(nb, rows, cols / (2 * geo.seg), grid, block, |part| {
        // SAFETY: reads packed bytes < rows*cols/2, scales/zeros at groups < rows*cols/group,
        // x[b*cols + c]; writes part within nb*rows*per. Synchronous.
        unsafe {
            entry(
                p.as_ptr(),
                s.as_ptr(),
                z.as_ptr(),
                xd.as_ptr(),
                part,
                i(rows),
                i(cols),
                i(group),
                i(geo.seg),
                i(geo.team),
                i(nb),
                grid,
                block,
            )
        }
    })
}
