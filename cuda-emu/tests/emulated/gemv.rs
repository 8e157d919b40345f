//! ptx/gemv.cu on the CPU: the fused 4-bit HQQ (axis 1) and GPTQ GEMVs equal an f64 reference
//! built from the crate's dequantization oracle within 1e-5 of sum |w x| (f32 accumulation), for
//! several shapes, element types and launch shapes.

use half::{bf16, f16};
use quant_kernels::gptq::{self, GptqLayout, ZeroFormat, sort};
use quant_kernels::hqq::{self, Axis, HqqLayout};
use quant_kernels::{B4, Elem};
use quant_kernels_cuda_emu::{
    EmuElem, LAUNCHES_2D, SplitMix as Rng, gather, gather_rows, gptq_gemv_4b, hqq_gemv_4b,
};

fn close(got: &[f32], w: &[f32], x: &[f32], rows: usize, cols: usize, transposed: bool, what: &str) {
    for (o, g) in got.iter().enumerate() {
        let at = |i: usize| if transposed { w[i * rows + o] } else { w[o * cols + i] };
        let want: f64 = (0..cols).map(|i| at(i) as f64 * x[i] as f64).sum();
        let scale: f64 = (0..cols).map(|i| (at(i) as f64 * x[i] as f64).abs()).sum();
        assert!((*g as f64 - want).abs() <= 1e-5 * scale + 1e-30, "{what}[{o}]: {g} vs {want}");
    }
}

fn hqq_case<T: Elem + EmuElem>(rows: usize, cols: usize, g: usize) {
    let l = HqqLayout::new(rows, cols, g, Axis::One).unwrap();
    let (pr, pc) = l.packed_shape(quant_kernels::Bits::B4).unwrap();
    let mut rng = Rng((rows * 1000 + cols) as u64);
    let words: Vec<u8> = (0..pr * pc).map(|_| rng.next_u64() as u8).collect();
    let s: Vec<T> = (0..l.groups()).map(|_| <T as Elem>::from_f32(rng.f32_in(-0.1, 0.1))).collect();
    let z: Vec<T> = (0..l.groups()).map(|_| <T as Elem>::from_f32(rng.f32_in(0.0, 15.0))).collect();
    let x: Vec<f32> = (0..cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let mut w = vec![0f32; rows * cols];
    hqq::dequantize_reference_into::<B4, T, f32>(&words, &s, &z, &l, &mut w).unwrap();
    for (grid, block) in LAUNCHES_2D {
        let y = hqq_gemv_4b(&words, &s, &z, &x, rows, cols, g, grid, block);
        close(&y, &w, &x, rows, cols, false, &format!("hqq {rows}x{cols} g{g} {} {grid}x{block}", T::DTYPE));
    }
}

fn gptq_case<T: Elem + EmuElem>(k: usize, n: usize, g: i64, act: bool, f: ZeroFormat) {
    let l = GptqLayout::new(k, n, 4, g).unwrap();
    let mut rng = Rng(k as u64 * 7 + n as u64);
    let (qr, qc) = l.qweight_shape();
    let (zr, zc) = l.qzeros_shape();
    let qweight: Vec<i32> = (0..qr * qc).map(|_| rng.next_u64() as i32).collect();
    let qzeros: Vec<i32> = (0..zr * zc).map(|_| rng.next_u64() as i32).collect();
    let s: Vec<T> = (0..l.groups() * n).map(|_| <T as Elem>::from_f32(rng.f32_in(-0.05, 0.05))).collect();
    let mut g_idx = l.default_g_idx();
    if act {
        for i in (1..k).rev() {
            g_idx.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
        }
    }
    let x: Vec<f32> = (0..k).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let mut w = vec![0f32; k * n];
    gptq::gptq_dequantize_reference_into(&qweight, &s, &qzeros, Some(&g_idx), f, &l, &mut w).unwrap();
    let fmt = if f == ZeroFormat::V1 { 0 } else { 1 };
    for slice_rows in [8, k.min(64), k.min(128)] {
        for (grid, block) in LAUNCHES_2D {
            let y = gptq_gemv_4b(&qweight, &qzeros, &s, &g_idx, &x, k, n, slice_rows, fmt, grid, block);
            close(&y, &w, &x, n, k, true, &format!("gptq K{k} N{n} g{g} act {act} {}", T::DTYPE));
        }
    }
    if act {
        // Rows sorted by group (gptq::sort) and the inputs gathered by the emulated gather
        // kernel: the plain path then gives the act-order layer's products.
        let (perm, sorted) = sort::group_order(&g_idx, &l).unwrap();
        let qs = sort::permute_rows(&qweight, &perm, &l).unwrap();
        let perm: Vec<i32> = perm.iter().map(|&p| p as i32).collect();
        for (grid, block) in LAUNCHES_2D {
            let xs = gather(&x, &perm, grid, block);
            let want: Vec<f32> = perm.iter().map(|&p| x[p as usize]).collect();
            assert_eq!(xs, want, "gather K{k} {grid}x{block}");
            // Several rows in one launch (DeviceQuantLinear's act-order batches): each row
            // gathered by the same permutation.
            let rows = 7;
            let xr: Vec<f32> = (0..rows * k).map(|i| i as f32 - 0.5).collect();
            let got = gather_rows(&xr, &perm, rows, grid, block);
            let want: Vec<f32> =
                (0..rows).flat_map(|r| perm.iter().map(move |&p| (r * k) as f32 + p as f32 - 0.5)).collect();
            assert_eq!(got, want, "gather_rows K{k} {grid}x{block}");
            let y = gptq_gemv_4b(&qs, &qzeros, &s, &sorted, &xs, k, n, k.min(128), fmt, grid, block);
            close(&y, &w, &x, n, k, true, &format!("sorted gptq K{k} N{n} g{g} {} {grid}x{block}", T::DTYPE));
        }
    }
}

#[test]
fn fused_gemv_sources_match_the_f64_reference() {
    // Odd row counts (3, 5, 7) split rows into two segments; g = 16 and 48 take the 16-byte
    // path, g = 8 and 4 the 1-byte path; 1024 and 512 inputs give each thread several chunks.
    for (rows, cols, g) in [
        (2, 64, 64),
        (6, 40, 8),
        (30, 96, 32),
        (64, 256, 64),
        (3, 64, 16),
        (6, 48, 16),
        (4, 96, 48),
        (4, 512, 16),
        (5, 128, 32),
        (3, 40, 4),
        (4, 1024, 64),
        (7, 512, 128),
    ] {
        hqq_case::<f32>(rows, cols, g);
        hqq_case::<f16>(rows, cols, g);
        hqq_case::<bf16>(rows, cols, g);
    }
    for (k, n, g) in [(8, 8, -1i64), (64, 96, 16), (128, 40, 32), (256, 64, 128), (14336, 16, 128)] {
        for (act, f) in [(false, ZeroFormat::V1), (true, ZeroFormat::V2), (true, ZeroFormat::V1)] {
            gptq_case::<f16>(k, n, g, act, f);
            gptq_case::<bf16>(k, n, g, act, f);
            gptq_case::<f32>(k, n, g, act, f);
        }
    }
}
