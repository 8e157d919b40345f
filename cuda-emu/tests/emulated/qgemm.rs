//! The tensor-core GEMM (ptx/gemm.cuh with each scheme's decoder; mma.sync emulated per warp)
//! against an f64 product of the crate's dequantization oracle, for 4- and 8-bit HQQ (both
//! axes), GPTQ (plain and act-order) and AWQ, and FP8, over batch sizes that fill tiles partly
//! and wholly, both tile heights and several launch shapes. The bound is derived from the f16
//! rounding of x and W (see gemm.cuh), not tuned.

use half::{bf16, f16};
use quant_kernels::awq::{self, AwqLayout};
use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
use quant_kernels::gptq::{self, GptqLayout, ZeroFormat};
use quant_kernels::hqq::{self, Axis, HqqLayout};
use quant_kernels::pack::Word;
use quant_kernels::{B4, B8, Elem, Packing};
use quant_kernels_cuda_emu::qgemm;
use quant_kernels_cuda_emu::{EmuElem, HqqShape, SplitMix as Rng};

const LAUNCHES: [(u32, u32); 3] = [(1, 32), (3, 64), (2, 128)];
const BATCHES: [(usize, usize); 6] = [(1, 1), (16, 1), (17, 1), (5, 4), (64, 4), (70, 4)];

/// `w` is `[n, k]` (or `[k, n]` when `transposed`); `x` `m` rows of `k`.
fn check(got: &[f32], w: &[f32], x: &[f32], n: usize, k: usize, transposed: bool, what: &str) {
    let u = 2f64.powi(-11);
    let xmax = x.iter().fold(0f64, |a, v| a.max(v.abs() as f64));
    for (idx, g) in got.iter().enumerate() {
        let (r, o) = (idx / n, idx % n);
        let at = |i: usize| if transposed { w[i * n + o] } else { w[o * k + i] };
        let xr = &x[r * k..(r + 1) * k];
        let want: f64 = (0..k).map(|i| at(i) as f64 * xr[i] as f64).sum();
        let scale: f64 = (0..k).map(|i| (at(i) as f64 * xr[i] as f64).abs()).sum();
        let bound = (2.0 * u + u * u + k as f64 * 2f64.powi(-24)) * scale + k as f64 * 2f64.powi(-25) * xmax;
        assert!((*g as f64 - want).abs() <= bound, "{what}[{r}, {o}]: {g} vs {want} (bound {bound})");
    }
}

fn xs(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f32_in(-1.0, 1.0)).collect()
}

fn hqq_case<P: Packing, T: Elem + EmuElem>(n: usize, k: usize, g: usize, axis: Axis) {
    let layout = HqqLayout::new(n, k, g, axis).unwrap();
    let (pr, pc) = layout.packed_shape(P::BITS).unwrap();
    let (cr, _) = layout.code_shape();
    let mut rng = Rng((n * k + g) as u64);
    let words: Vec<P::Word> =
        (0..pr * pc).map(|_| P::Word::from_bits(rng.next_u64() as u32 & 0xff)).collect();
    let s: Vec<T> = (0..layout.groups()).map(|_| <T as Elem>::from_f32(rng.f32_in(-0.1, 0.1))).collect();
    let z: Vec<T> = (0..layout.groups()).map(|_| <T as Elem>::from_f32(rng.f32_in(0.0, 15.0))).collect();
    let mut w = vec![0f32; n * k];
    hqq::dequantize_reference_into::<P, T, f32>(&words, &s, &z, &layout, &mut w).unwrap();
    let shape = HqqShape {
        rows: cr,
        cols: pc,
        prows: pr,
        axis: i32::from(axis == Axis::One),
        groups: layout.groups(),
    };
    let bytes: Vec<u8> = words.iter().map(|w| w.bits() as u8).collect();
    for (m, mt) in BATCHES {
        let x = xs(&mut rng, m * k);
        for (grid, block) in LAUNCHES {
            let y = qgemm::hqq_gemm(P::BITS.get(), &bytes, &s, &z, shape, &x, m, k, mt, grid, block);
            let what = format!(
                "hqq {}b {n}x{k} g{g} {axis:?} {} m {m}/{mt} {grid}x{block}",
                P::BITS.get(),
                T::DTYPE
            );
            check(&y, &w, &x, n, k, false, &what);
        }
    }
}

#[test]
fn hqq_gemm_4_and_8_bits_both_axes() {
    for (n, k, g, axis) in [(40, 64, 64, Axis::One), (16, 128, 32, Axis::One), (40, 128, 16, Axis::Zero)] {
        hqq_case::<B4, f16>(n, k, g, axis);
        hqq_case::<B8, bf16>(n, k, g, axis);
        hqq_case::<B4, f32>(n, k, g, axis);
    }
}

#[test]
fn gptq_gemm_4_and_8_bits() {
    for bits in [4u8, 8] {
        for (k, n, g, act) in [(64usize, 40usize, 16i64, false), (128, 32, 32, true), (96, 16, -1, false)] {
            let l = GptqLayout::new(k, n, bits, g).unwrap();
            let mut rng = Rng(k as u64 * 7 + n as u64 + bits as u64);
            let (qr, qc) = l.qweight_shape();
            let (zr, zc) = l.qzeros_shape();
            let qweight: Vec<i32> = (0..qr * qc).map(|_| rng.next_u64() as i32).collect();
            let qzeros: Vec<i32> = (0..zr * zc).map(|_| rng.next_u64() as i32).collect();
            let s: Vec<f16> = (0..l.groups() * n).map(|_| f16::from_f32(rng.f32_in(-0.02, 0.02))).collect();
            let mut g_idx = l.default_g_idx();
            if act {
                for i in (1..k).rev() {
                    g_idx.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
                }
            }
            let one_group = g_idx.chunks(16).all(|c| c.iter().all(|&v| v == c[0]));
            for f in [ZeroFormat::V1, ZeroFormat::V2] {
                let mut w = vec![0f32; k * n];
                gptq::gptq_dequantize_reference_into(&qweight, &s, &qzeros, Some(&g_idx), f, &l, &mut w)
                    .unwrap();
                for (m, mt) in BATCHES {
                    let x = xs(&mut rng, m * k);
                    for (grid, block) in LAUNCHES {
                        let y = qgemm::gptq_gemm(
                            bits,
                            &qweight,
                            &qzeros,
                            &s,
                            &g_idx,
                            &x,
                            m,
                            k,
                            n,
                            i32::from(f == ZeroFormat::V2),
                            one_group,
                            mt,
                            grid,
                            block,
                        );
                        let what =
                            format!("gptq {bits}b K{k} N{n} g{g} act {act} {f:?} m {m}/{mt} {grid}x{block}");
                        check(&y, &w, &x, n, k, true, &what);
                    }
                }
            }
        }
    }
}

#[test]
fn awq_gemm_every_element_type() {
    for (k, n, gs) in [(64usize, 40usize, 32usize), (48, 16, 12)] {
        let l = AwqLayout::new(k, n, gs).unwrap();
        let mut rng = Rng(k as u64 + n as u64);
        let qweight: Vec<i32> = (0..k * n / 8).map(|_| rng.next_u64() as i32).collect();
        let qzeros: Vec<i32> = (0..k / gs * n / 8).map(|_| rng.next_u64() as i32).collect();
        let sf: Vec<f32> = (0..k / gs * n).map(|_| rng.f32_in(-0.02, 0.02)).collect();
        fn one<T: Elem + EmuElem>(qw: &[i32], qz: &[i32], sf: &[f32], l: &AwqLayout, rng: &mut Rng) {
            let (k, n, gs) = (l.k(), l.n(), l.group_size());
            let s: Vec<T> = sf.iter().map(|&v| <T as Elem>::from_f32(v)).collect();
            let mut w = vec![0f32; k * n];
            awq::awq_dequantize_reference_into(qw, &s, qz, l, &mut w).unwrap();
            for (m, mt) in BATCHES {
                let x = xs(rng, m * k);
                for (grid, block) in LAUNCHES {
                    let y = qgemm::awq_gemm(qw, qz, &s, &x, m, k, n, gs, mt, grid, block);
                    check(&y, &w, &x, n, k, true, &format!("awq K{k} N{n} g{gs} {} m {m}/{mt}", T::DTYPE));
                }
            }
        }
        one::<f16>(&qweight, &qzeros, &sf, &l, &mut rng);
        one::<bf16>(&qweight, &qzeros, &sf, &l, &mut rng);
        one::<f32>(&qweight, &qzeros, &sf, &l, &mut rng);
    }
}

#[test]
fn fp8_gemm_both_formats() {
    for (n, k, br, bc) in [(40, 64, 16, 16), (16, 96, 3, 12), (24, 128, 24, 128)] {
        let l = Fp8Layout::block(n, k, br, bc).unwrap();
        let mut rng = Rng(n as u64 * 3 + k as u64);
        for (fi, f) in [Fp8Format::E4M3, Fp8Format::E5M2].into_iter().enumerate() {
            let lim = if fi == 0 { 0x7e } else { 0x7b };
            let codes: Vec<u8> = (0..n * k)
                .map(|_| {
                    let c = rng.next_u64() as u8;
                    (c & 0x80) | (c & 0x7f).min(lim)
                })
                .collect();
            let (sr, sc) = l.scale_shape();
            let scales: Vec<f32> = (0..sr * sc).map(|_| rng.f32_in(1e-3, 2e-2)).collect();
            let mut w = vec![0f32; n * k];
            fp8::fp8_dequantize_reference_into(&codes, &scales, f, &l, &mut w).unwrap();
            for (m, mt) in BATCHES {
                let x = xs(&mut rng, m * k);
                for (grid, block) in LAUNCHES {
                    let y = qgemm::fp8_gemm(fi, &codes, &scales, (br, bc), &x, m, k, n, mt, grid, block);
                    check(&y, &w, &x, n, k, false, &format!("fp8 {f:?} {n}x{k} {br}x{bc} m {m}/{mt}"));
                }
            }
        }
    }
}
