//! The fused GEMV family (ptx/gemv.cuh's row and column skeletons, every scheme's decoder) on
//! the CPU, warp shuffles included, against an f64 product of the crate's dequantization
//! oracle: every scheme and width, both entries (batch 1 and up to 8), several batch sizes,
//! segment/team/slice geometries and launch shapes. Within 1e-5 of sum |w x| per output (f32
//! accumulation with each group factored out of its sum).

use half::{bf16, f16};
use quant_kernels::awq::{self, AwqLayout};
use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
use quant_kernels::gptq::{self, GptqLayout, ZeroFormat, sort};
use quant_kernels::hqq::{self, Axis, HqqLayout};
use quant_kernels::intx::{self, Granularity};
use quant_kernels::pack::Word;
use quant_kernels::{B1, B2, B3, B4, B8, Elem, Packing, Parallelism};
use quant_kernels_cuda_emu::qgemv::{self, RowGeometry};
use quant_kernels_cuda_emu::{EmuElem, HqqShape, SplitMix as Rng};

/// Cooperative launches: 1-D blocks of whole warps, grids smaller than the work.
const LAUNCHES: [(u32, u32); 3] = [(1, 32), (3, 64), (2, 128)];

/// `w` is `[outs, ins]` (or `[ins, outs]` when `transposed`), `x` `nb` rows of `ins`.
fn check(got: &[f32], w: &[f32], x: &[f32], outs: usize, ins: usize, transposed: bool, what: &str) {
    assert_eq!(got.len(), x.len() / ins * outs, "{what}: length");
    for (idx, g) in got.iter().enumerate() {
        let (b, o) = (idx / outs, idx % outs);
        let at = |i: usize| if transposed { w[i * outs + o] } else { w[o * ins + i] };
        let xb = &x[b * ins..(b + 1) * ins];
        let want: f64 = (0..ins).map(|i| at(i) as f64 * xb[i] as f64).sum();
        let scale: f64 = (0..ins).map(|i| (at(i) as f64 * xb[i] as f64).abs()).sum();
        if want.is_nan() {
            assert!(g.is_nan(), "{what}[{b}, {o}]: {g}, want NaN");
            continue;
        }
        assert!((*g as f64 - want).abs() <= 1e-5 * scale + 1e-30, "{what}[{b}, {o}]: {g} vs {want}");
    }
}

fn xs(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f32_in(-1.0, 1.0)).collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Batch sizes and the entry each runs on.
const BATCHES: [(usize, usize); 4] = [(1, 1), (1, 8), (3, 8), (8, 8)];

/// Every segment length the row skeleton accepts up to `max` (multiples of `ch` dividing
/// `base`), largest first, at most three, each with a full-warp team and a small one.
fn geometries(base: usize, ch: usize) -> Vec<RowGeometry> {
    let mut segs: Vec<usize> =
        (1..=base).rev().filter(|s| base.is_multiple_of(*s) && s.is_multiple_of(ch)).collect();
    segs.truncate(3);
    segs.into_iter()
        .flat_map(|seg| {
            // The largest power of two <= the segment's chunks, at most a warp.
            let full = 1usize << (usize::BITS - 1 - (seg / ch).leading_zeros()).min(5);
            [RowGeometry { seg, team: full }, RowGeometry { seg, team: 1 }]
        })
        .collect()
}

fn hqq_case<P: Packing, T: Elem + EmuElem>(out: usize, ins: usize, g: usize, axis: Axis, seed: u64) -> bool {
    let layout = HqqLayout::new(out, ins, g, axis).unwrap();
    let Ok((pr, pc)) = layout.packed_shape(P::BITS) else { return false };
    let ch = if P::BITS.get() == 3 { 2 } else { 8 };
    let seg_base = gcd(ins, pr * pc);
    if !pc.is_multiple_of(ch) || !seg_base.is_multiple_of(ch) {
        return false;
    }
    let (cr, _) = layout.code_shape();
    let mut rng = Rng(seed);
    let words: Vec<P::Word> =
        (0..pr * pc).map(|_| P::Word::from_bits(rng.next_u64() as u32 & 0x3fff_ffff)).collect();
    let s: Vec<T> = (0..layout.groups()).map(|_| <T as Elem>::from_f32(rng.f32_in(-0.1, 0.1))).collect();
    let z: Vec<T> = (0..layout.groups()).map(|_| <T as Elem>::from_f32(rng.f32_in(0.0, 16.0))).collect();
    let mut w = vec![0f32; layout.numel()];
    hqq::dequantize_reference_into::<P, T, f32>(&words, &s, &z, &layout, &mut w).unwrap();
    let shape = HqqShape {
        rows: cr,
        cols: pc,
        prows: pr,
        axis: i32::from(axis == Axis::One),
        groups: layout.groups(),
    };
    let bits: Vec<u32> = words.iter().map(|w| w.bits()).collect();
    for geo in geometries(seg_base, ch) {
        for (nb, maxb) in BATCHES {
            let x = xs(&mut rng, nb * ins);
            for (grid, block) in LAUNCHES {
                let y = if P::BITS.get() == 3 {
                    let wd: Vec<i32> = bits.iter().map(|&b| b as i32).collect();
                    qgemv::hqq_gemv_3b(&wd, &s, &z, shape, &x, ins, nb, maxb, geo, grid, block)
                } else {
                    let wd: Vec<u8> = bits.iter().map(|&b| b as u8).collect();
                    qgemv::hqq_gemv_u8(P::BITS.get(), &wd, &s, &z, shape, &x, ins, nb, maxb, geo, grid, block)
                };
                let what = format!(
                    "hqq {}b {out}x{ins} g{g} {axis:?} {} {geo:?} nb {nb}/{maxb} {grid}x{block}",
                    P::BITS.get(),
                    T::DTYPE
                );
                check(&y, &w, &x, out, ins, false, &what);
            }
        }
    }
    true
}

fn hqq_widths<T: Elem + EmuElem>(out: usize, ins: usize, g: usize, axis: Axis) -> usize {
    [
        hqq_case::<B8, T>(out, ins, g, axis, 1),
        hqq_case::<B4, T>(out, ins, g, axis, 2),
        hqq_case::<B3, T>(out, ins, g, axis, 3),
        hqq_case::<B2, T>(out, ins, g, axis, 4),
        hqq_case::<B1, T>(out, ins, g, axis, 5),
    ]
    .iter()
    .filter(|&&ran| ran)
    .count()
}

#[test]
fn hqq_gemv_every_width_and_axis() {
    // (8, 64, 16): planes line up with rows; (6, 48, 16) at 1/3 bits: they do not, so segments
    // are shorter than a row; 3-bit layouts carry padding rows; (4, 512, 64): several chunks a
    // lane; axis 0 with its per-column parameters.
    let mut ran = 0;
    for (out, ins, g) in [(8, 64, 16), (6, 48, 16), (16, 128, 32), (4, 512, 64), (24, 80, 40)] {
        for axis in [Axis::One, Axis::Zero] {
            ran += hqq_widths::<f32>(out, ins, g, axis);
            ran += hqq_widths::<f16>(out, ins, g, axis);
            ran += hqq_widths::<bf16>(out, ins, g, axis);
        }
    }
    assert!(ran >= 100, "only {ran} HQQ cases ran");
}

fn gptq_case<T: Elem + EmuElem>(bits: u8, k: usize, n: usize, g: i64, act: bool, f: ZeroFormat) {
    let l = GptqLayout::new(k, n, bits, g).unwrap();
    let mut rng = Rng(k as u64 * 31 + n as u64 + bits as u64);
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
    let mut w = vec![0f32; k * n];
    gptq::gptq_dequantize_reference_into(&qweight, &s, &qzeros, Some(&g_idx), f, &l, &mut w).unwrap();
    let fmt = i32::from(f == ZeroFormat::V2);
    let rows = match bits {
        2 => 16,
        3 => 32,
        4 => 8,
        _ => 4,
    };
    let slices: Vec<usize> = [rows, 2 * rows, k].into_iter().filter(|s| k.is_multiple_of(*s)).collect();
    for (nb, maxb) in BATCHES {
        let x = xs(&mut rng, nb * k);
        for &sr in &slices {
            for by in [1u32, 3, 8] {
                let y =
                    qgemv::gptq_gemv(bits, &qweight, &qzeros, &s, &g_idx, &x, k, n, sr, fmt, nb, maxb, by);
                let what = format!(
                    "gptq {bits}b K{k} N{n} g{g} act {act} {f:?} {} slice {sr} nb {nb}/{maxb}",
                    T::DTYPE
                );
                check(&y, &w, &x, n, k, true, &what);
            }
        }
        if act {
            // The layer sorted by group with its inputs gathered gives the same products.
            let (perm, sorted) = sort::group_order(&g_idx, &l).unwrap();
            let qs = sort::permute_rows(&qweight, &perm, &l).unwrap();
            let xsrt: Vec<f32> = (0..nb)
                .flat_map(|b| perm.iter().map(move |&p| (b, p)))
                .map(|(b, p)| x[b * k + p as usize])
                .collect();
            let y =
                qgemv::gptq_gemv(bits, &qs, &qzeros, &s, &sorted, &xsrt, k, n, slices[0], fmt, nb, maxb, 2);
            check(&y, &w, &x, n, k, true, &format!("sorted gptq {bits}b K{k} N{n} g{g} nb {nb}"));
        }
    }
}

#[test]
fn gptq_gemv_every_width() {
    for bits in [2u8, 3, 4, 8] {
        for (k, n, g) in
            [(64usize, 32usize, 16i64), (128, 64, 32), (256, 32, -1), (96, 32, 32), (64, 256, 32)]
        {
            if !k.is_multiple_of(32) && bits == 3 {
                continue;
            }
            for (act, f) in [(false, ZeroFormat::V1), (true, ZeroFormat::V2), (false, ZeroFormat::V2)] {
                gptq_case::<f16>(bits, k, n, g, act, f);
                gptq_case::<f32>(bits, k, n, g, act, f);
            }
            gptq_case::<bf16>(bits, k, n, g, true, ZeroFormat::V1);
        }
    }
}

fn awq_case<T: Elem + EmuElem>(k: usize, n: usize, gs: usize) {
    let l = AwqLayout::new(k, n, gs).unwrap();
    let mut rng = Rng(k as u64 * 3 + n as u64);
    let qweight: Vec<i32> = (0..k * n / 8).map(|_| rng.next_u64() as i32).collect();
    let qzeros: Vec<i32> = (0..k / gs * n / 8).map(|_| rng.next_u64() as i32).collect();
    let s: Vec<T> = (0..k / gs * n).map(|_| <T as Elem>::from_f32(rng.f32_in(-0.05, 0.05))).collect();
    let mut w = vec![0f32; k * n];
    awq::awq_dequantize_reference_into(&qweight, &s, &qzeros, &l, &mut w).unwrap();
    for (nb, maxb) in BATCHES {
        let x = xs(&mut rng, nb * k);
        for sr in [4, 8, k] {
            if !k.is_multiple_of(sr) {
                continue;
            }
            for by in [1u32, 3, 8] {
                let y = qgemv::awq_gemv(&qweight, &qzeros, &s, &x, k, n, gs, sr, nb, maxb, by);
                check(
                    &y,
                    &w,
                    &x,
                    n,
                    k,
                    true,
                    &format!("awq K{k} N{n} g{gs} {} slice {sr} nb {nb}/{maxb}", T::DTYPE),
                );
            }
        }
    }
}

#[test]
fn awq_gemv_every_element_type() {
    // g = 12: groups change inside an 8-row slice, between 4-row blocks; g = 6: inside a 4-row
    // block (the row-at-a-time path).
    for (k, n, gs) in [(64, 32, 32), (48, 16, 12), (48, 16, 6), (128, 64, 128), (32, 512, 32)] {
        awq_case::<f16>(k, n, gs);
        awq_case::<bf16>(k, n, gs);
        awq_case::<f32>(k, n, gs);
    }
}

#[test]
fn fp8_gemv_both_formats() {
    // (16, 64, 16, 16): block scales a chunk at a time; (6, 96, 2, 24): the same with a block
    // index by division; (8, 48, 3, 12): per-code scales; per-tensor (one block); a NaN code
    // (E4M3 0x7f) makes its output NaN.
    for (rows, cols, br, bc, nan) in [
        (16, 64, 16, 16, false),
        (6, 96, 2, 24, false),
        (8, 48, 3, 12, false),
        (5, 128, 5, 128, false),
        (4, 64, 2, 32, true),
    ] {
        let l = Fp8Layout::block(rows, cols, br, bc).unwrap();
        let mut rng = Rng(rows as u64 * 5 + cols as u64);
        for (fi, f) in [Fp8Format::E4M3, Fp8Format::E5M2].into_iter().enumerate() {
            // Finite codes only (E4M3 0x7f/0xff are NaN, E5M2 0x7c.. are Inf/NaN), but `nan`.
            let mut codes: Vec<u8> = (0..rows * cols)
                .map(|_| {
                    let c = rng.next_u64() as u8;
                    let lim = if fi == 0 { 0x7e } else { 0x7b };
                    (c & 0x80) | (c & 0x7f).min(lim)
                })
                .collect();
            if nan && fi == 0 {
                codes[cols + 5] = 0x7f;
            }
            let (sr, sc) = l.scale_shape();
            let scales: Vec<f32> = (0..sr * sc).map(|_| rng.f32_in(1e-3, 2e-2)).collect();
            let mut w = vec![0f32; rows * cols];
            fp8::fp8_dequantize_reference_into(&codes, &scales, f, &l, &mut w).unwrap();
            for geo in geometries(cols, 8) {
                for (nb, maxb) in BATCHES {
                    let x = xs(&mut rng, nb * cols);
                    for (grid, block) in LAUNCHES {
                        let y = qgemv::fp8_gemv(
                            fi,
                            &codes,
                            &scales,
                            rows,
                            cols,
                            (br, bc),
                            &x,
                            nb,
                            maxb,
                            geo,
                            grid,
                            block,
                        );
                        check(
                            &y,
                            &w,
                            &x,
                            rows,
                            cols,
                            false,
                            &format!("fp8 {f:?} {rows}x{cols} {br}x{bc} {geo:?} nb {nb}"),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn intx_gemv_int8_and_int4() {
    for (rows, cols, group) in [(8, 64, 16), (5, 96, 32), (3, 48, 6)] {
        let mut rng = Rng(rows as u64 * 11 + cols as u64);
        let wf: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        for gran in [Granularity::PerChannel, Granularity::PerTensor] {
            let t = intx::quantize_int8(&wf, rows, cols, gran, Parallelism::SERIAL).unwrap();
            let mut w = vec![0f32; rows * cols];
            t.dequantize_reference_into(&mut w).unwrap();
            for geo in geometries(cols, 8) {
                for (nb, maxb) in BATCHES {
                    let x = xs(&mut rng, nb * cols);
                    for (grid, block) in LAUNCHES {
                        let y = qgemv::int8_gemv(&t.q, &t.scales, rows, cols, &x, nb, maxb, geo, grid, block);
                        check(
                            &y,
                            &w,
                            &x,
                            rows,
                            cols,
                            false,
                            &format!("int8 {gran:?} {rows}x{cols} {geo:?} nb {nb}"),
                        );
                    }
                }
            }
        }
        // group 6: per-code parameters; 16 and 32: one group per 16-code chunk.
        let t = intx::quantize_int4(&wf, rows, cols, group, Parallelism::SERIAL).unwrap();
        let mut w = vec![0f32; rows * cols];
        t.dequantize_reference_into(&mut w).unwrap();
        for geo in geometries(cols / 2, 8) {
            for (nb, maxb) in BATCHES {
                let x = xs(&mut rng, nb * cols);
                for (grid, block) in LAUNCHES {
                    let y = qgemv::int4_gemv(
                        &t.packed, &t.scales, &t.zeros, rows, cols, group, &x, nb, maxb, geo, grid, block,
                    );
                    check(
                        &y,
                        &w,
                        &x,
                        rows,
                        cols,
                        false,
                        &format!("int4 g{group} {rows}x{cols} {geo:?} nb {nb}"),
                    );
                }
            }
        }
    }
}
