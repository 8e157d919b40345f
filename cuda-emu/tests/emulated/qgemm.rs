//! The tensor-core GEMMs (ptx/gemm.cuh with each scheme's decoder; mma.sync emulated per warp)
//! against an f64 product of the crate's dequantization oracle, for 4- and 8-bit HQQ (both
//! axes), GPTQ (plain and act-order) and AWQ, and FP8, over batch sizes that fill tiles partly
//! and wholly, every tile height of both entry kinds (the generic `_gemm_` and the group-scaled
//! `_gemmg_`, on the shapes it takes) and several launch shapes. The bounds are derived in
//! gemm.cuh (the f16 rounding of x and W, or of x alone and the f32 group sums), not tuned.

use half::{bf16, f16};
use quant_kernels::awq::{self, AwqLayout};
use quant_kernels::fp8::{self, Fp8Format, Fp8Layout};
use quant_kernels::gptq::{self, GptqLayout, ZeroFormat};
use quant_kernels::hqq::{self, Axis, HqqLayout};
use quant_kernels::pack::Word;
use quant_kernels::{B4, B8, Elem, Packing};
use quant_kernels_cuda_emu::qgemm::{self, Launch, Tile};
use quant_kernels_cuda_emu::{EmuElem, HqqShape, SplitMix as Rng};

const LAUNCHES: [(u32, u32); 3] = [(1, 32), (3, 64), (2, 128)];
/// Batch sizes per entry kind: a partial tile, one whole tile, one more row, several tiles.
fn batches(tile: Tile) -> [usize; 3] {
    match tile {
        Tile::M1 | Tile::G1 => [1, 16, 17],
        Tile::M4 | Tile::W => [5, 64, 70],
        Tile::G2 => [5, 32, 40],
    }
}

/// The weights as the check reads them: `w` is `[n, k]` (or `[k, n]` when `transposed`), and
/// `mag` (same layout) bounds |s| (|q| + |z|) for each weight (its scale, code and zero point),
/// what the group-scaled entries' f32 sums are bounded by.
struct Oracle<'a> {
    w: &'a [f32],
    mag: &'a [f32],
    n: usize,
    k: usize,
    transposed: bool,
}

/// |s| (|q| + |z|) <= |s| q_max + |s z| = |w(q_max) - w(0)| + |w(0)| for any code q <= q_max:
/// the dequantization of every code at its largest value and at zero.
fn magnitude(w_max: &[f32], w_zero: &[f32]) -> Vec<f32> {
    w_max.iter().zip(w_zero).map(|(a, b)| (a - b).abs() + b.abs()).collect()
}

fn check(got: &[f32], o: &Oracle, x: &[f32], tile: Tile, what: &str) {
    let (n, k) = (o.n, o.k);
    let u = 2f64.powi(-11);
    let xmax = x.iter().fold(0f64, |a, v| a.max(v.abs() as f64));
    for (idx, g) in got.iter().enumerate() {
        let (r, c) = (idx / n, idx % n);
        let at = |v: &[f32], i: usize| (if o.transposed { v[i * n + c] } else { v[c * k + i] }) as f64;
        let xr = &x[r * k..(r + 1) * k];
        let want: f64 = (0..k).map(|i| at(o.w, i) * xr[i] as f64).sum();
        let wx: f64 = (0..k).map(|i| (at(o.w, i) * xr[i] as f64).abs()).sum();
        let bound = if tile.grouped() {
            let w1: f64 = (0..k).map(|i| at(o.w, i).abs()).sum();
            let t: f64 = (0..k).map(|i| at(o.mag, i) * (xr[i] as f64).abs()).sum();
            // The last term: x's f16 subnormals after a group's inputs were scaled into range.
            u * wx
                + 2f64.powi(-25) * w1
                + 2.0 * k as f64 * 2f64.powi(-24) * (1.0 + 2.0 * u) * t
                + 2f64.powi(-39) * xmax * w1
        } else {
            let w1: f64 = (0..k).map(|i| at(o.w, i).abs()).sum();
            (2.0 * u + u * u + k as f64 * 2f64.powi(-24)) * wx
                + k as f64 * 2f64.powi(-25) * xmax
                + 2f64.powi(-39) * xmax * w1
        };
        assert!((*g as f64 - want).abs() <= bound, "{what}[{r}, {c}]: {g} vs {want} (bound {bound})");
    }
}

fn xs(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.f32_in(-1.0, 1.0)).collect()
}

/// Every entry kind (the group-scaled ones only where `grouped` and `n` is a multiple of their
/// tile width), its batch sizes and the launch shapes, and for the group-scaled ones K in 3 slices
/// and in more slices than chunks (empty ones included): `run(m, x, launch)` with `m` random rows
/// of `k` inputs.
fn each_run(
    rng: &mut Rng,
    (k, n): (usize, usize),
    grouped: bool,
    tiles: &[Tile],
    mut run: impl FnMut(usize, &[f32], Launch),
) {
    for &tile in tiles {
        if tile.grouped() && !(grouped && n.is_multiple_of(tile.cols(false))) {
            continue;
        }
        for m in batches(tile) {
            let x = xs(rng, m * k);
            for (grid, block) in LAUNCHES {
                run(m, &x, Launch { tile, kslices: 1, grid, block });
            }
            if tile.grouped() {
                for (kslices, (grid, block)) in [(3, LAUNCHES[1]), (k / 32 + 2, LAUNCHES[2])] {
                    run(m, &x, Launch { tile, kslices, grid, block });
                }
            }
        }
    }
}

/// Whether the group-scaled HQQ entries take this layer (what the launcher checks, but for N).
fn hqq_grouped(k: usize, g: usize, axis: Axis) -> bool {
    axis == Axis::One && k.is_multiple_of(32) && g.is_power_of_two() && g >= 32 && k.is_multiple_of(g)
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
    let dequant = |words: &[P::Word]| {
        let mut w = vec![0f32; n * k];
        hqq::dequantize_reference_into::<P, T, f32>(words, &s, &z, &layout, &mut w).unwrap();
        w
    };
    let w = dequant(&words);
    let mag = magnitude(
        &dequant(&vec![P::Word::from_bits(0xff); words.len()]),
        &dequant(&vec![P::Word::from_bits(0); words.len()]),
    );
    let o = Oracle { w: &w, mag: &mag, n, k, transposed: false };
    let shape = HqqShape {
        rows: cr,
        cols: pc,
        prows: pr,
        axis: i32::from(axis == Axis::One),
        groups: layout.groups(),
    };
    let bytes: Vec<u8> = words.iter().map(|w| w.bits() as u8).collect();
    each_run(&mut rng, (k, n), hqq_grouped(k, g, axis), &Tile::WITH_WIDE, |m, x, l| {
        let y = qgemm::hqq_gemm(P::BITS.get(), &bytes, &s, &z, shape, x, m, k, l);
        let what = format!("hqq {}b {n}x{k} g{g} {axis:?} {} m {m} {l:?}", P::BITS.get(), T::DTYPE);
        check(&y, &o, x, l.tile, &what);
    });
}

#[test]
fn hqq_gemm_4_and_8_bits_both_axes() {
    for (n, k, g, axis) in [
        (40, 64, 64, Axis::One),
        (16, 128, 32, Axis::One),
        (40, 128, 16, Axis::Zero),
        (64, 128, 32, Axis::One),
        (64, 64, 64, Axis::One),
    ] {
        hqq_case::<B4, f16>(n, k, g, axis);
        hqq_case::<B8, bf16>(n, k, g, axis);
        hqq_case::<B4, f32>(n, k, g, axis);
    }
}

/// A GPTQ layer's dequantization and the check's magnitudes for these codes.
struct GptqCase {
    layout: GptqLayout,
    qweight: Vec<i32>,
    qzeros: Vec<i32>,
    scales: Vec<f16>,
    g_idx: Vec<i32>,
}

impl GptqCase {
    fn dequant(&self, qweight: &[i32], f: ZeroFormat) -> Vec<f32> {
        let l = &self.layout;
        let mut w = vec![0f32; l.k() * l.n()];
        gptq::gptq_dequantize_reference_into(
            qweight,
            &self.scales,
            &self.qzeros,
            Some(&self.g_idx),
            f,
            l,
            &mut w,
        )
        .unwrap();
        w
    }
}

#[test]
fn gptq_gemm_4_and_8_bits() {
    // g_idx: 0 the layout's default, 1 shuffled (act-order, unsorted), 2 sorted with unequal
    // groups of whole 32-row blocks (what sorting an act-order layer can give).
    for bits in [4u8, 8] {
        for (k, n, g, order) in [
            (64usize, 40usize, 16i64, 0),
            (128, 64, 32, 1),
            (96, 16, -1, 0),
            (128, 64, 32, 0),
            (192, 64, 64, 2),
        ] {
            let l = GptqLayout::new(k, n, bits, g).unwrap();
            let mut rng = Rng(k as u64 * 7 + n as u64 + bits as u64);
            let (qr, qc) = l.qweight_shape();
            let (zr, zc) = l.qzeros_shape();
            let mut g_idx = l.default_g_idx();
            match order {
                1 => {
                    for i in (1..k).rev() {
                        g_idx.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
                    }
                }
                2 => {
                    let sizes = [32usize, 96, 64];
                    g_idx = sizes.iter().enumerate().flat_map(|(gi, &c)| vec![gi as i32; c]).collect();
                }
                _ => {}
            }
            let case = GptqCase {
                qweight: (0..qr * qc).map(|_| rng.next_u64() as i32).collect(),
                qzeros: (0..zr * zc).map(|_| rng.next_u64() as i32).collect(),
                scales: (0..l.groups() * n).map(|_| f16::from_f32(rng.f32_in(-0.02, 0.02))).collect(),
                g_idx,
                layout: l,
            };
            let one_group = case.g_idx.chunks(16).all(|c| c.iter().all(|&v| v == c[0]));
            let grouped = k.is_multiple_of(32) && case.g_idx.chunks(32).all(|c| c.iter().all(|&v| v == c[0]));
            for f in [ZeroFormat::V1, ZeroFormat::V2] {
                let w = case.dequant(&case.qweight, f);
                let mag = magnitude(
                    &case.dequant(&vec![-1; case.qweight.len()], f),
                    &case.dequant(&vec![0; case.qweight.len()], f),
                );
                let o = Oracle { w: &w, mag: &mag, n, k, transposed: true };
                each_run(&mut rng, (k, n), grouped, &Tile::WITH_WIDE, |m, x, l| {
                    let v2 = i32::from(f == ZeroFormat::V2);
                    let (qw, qz) = (&case.qweight, &case.qzeros);
                    let y = qgemm::gptq_gemm(
                        bits,
                        qw,
                        qz,
                        &case.scales,
                        &case.g_idx,
                        x,
                        (m, k, n),
                        v2,
                        one_group,
                        l,
                    );
                    let what = format!("gptq {bits}b K{k} N{n} g{g} order {order} {f:?} m {m} {l:?}");
                    check(&y, &o, x, l.tile, &what);
                });
            }
        }
    }
}

#[test]
fn awq_gemm_every_element_type() {
    for (k, n, gs) in [(64usize, 40usize, 32usize), (48, 16, 12), (64, 64, 32), (128, 128, 64)] {
        let l = AwqLayout::new(k, n, gs).unwrap();
        let mut rng = Rng(k as u64 + n as u64);
        let qweight: Vec<i32> = (0..k * n / 8).map(|_| rng.next_u64() as i32).collect();
        let qzeros: Vec<i32> = (0..k / gs * n / 8).map(|_| rng.next_u64() as i32).collect();
        let sf: Vec<f32> = (0..k / gs * n).map(|_| rng.f32_in(-0.02, 0.02)).collect();
        fn one<T: Elem + EmuElem>(qw: &[i32], qz: &[i32], sf: &[f32], l: &AwqLayout, rng: &mut Rng) {
            let (k, n, gs) = (l.k(), l.n(), l.group_size());
            let s: Vec<T> = sf.iter().map(|&v| <T as Elem>::from_f32(v)).collect();
            let dequant = |qw: &[i32]| {
                let mut w = vec![0f32; k * n];
                awq::awq_dequantize_reference_into(qw, &s, qz, l, &mut w).unwrap();
                w
            };
            let w = dequant(qw);
            let mag = magnitude(&dequant(&vec![-1; qw.len()]), &dequant(&vec![0; qw.len()]));
            let o = Oracle { w: &w, mag: &mag, n, k, transposed: true };
            // AWQ's group-scaled tiles are 64 wide at any height.
            let grouped = k.is_multiple_of(32) && n.is_multiple_of(64) && gs.is_power_of_two() && gs >= 32;
            each_run(rng, (k, n), grouped, &Tile::ALL, |m, x, l| {
                let y = qgemm::awq_gemm(qw, qz, &s, x, (m, k, n), gs, l);
                check(&y, &o, x, l.tile, &format!("awq K{k} N{n} g{gs} {} m {m} {l:?}", T::DTYPE));
            });
        }
        one::<f16>(&qweight, &qzeros, &sf, &l, &mut rng);
        one::<bf16>(&qweight, &qzeros, &sf, &l, &mut rng);
        one::<f32>(&qweight, &qzeros, &sf, &l, &mut rng);
    }
}

#[test]
fn fp8_gemm_both_formats() {
    for (n, k, br, bc) in
        [(40, 64, 16, 16), (16, 96, 3, 12), (24, 128, 24, 128), (64, 64, 16, 32), (64, 96, 64, 96)]
    {
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
            // No zero point: |s| |q| is |w|.
            let mag: Vec<f32> = w.iter().map(|v| v.abs()).collect();
            let o = Oracle { w: &w, mag: &mag, n, k, transposed: false };
            let grouped = k.is_multiple_of(32) && (bc >= k || (bc.is_power_of_two() && bc >= 32));
            each_run(&mut rng, (k, n), grouped, &Tile::WITH_WIDE, |m, x, l| {
                let y = qgemm::fp8_gemm(fi, &codes, &scales, (br, bc), x, (m, k, n), l);
                check(&y, &o, x, l.tile, &format!("fp8 {f:?} {n}x{k} {br}x{bc} m {m} {l:?}"));
            });
        }
    }
}

/// Activations beyond f16's range (|x| up to 2^30 in some rows, in one group or several, in a
/// group's first 32 inputs and in later ones) take the GEMMs' scaled re-runs (of a group in the
/// group-scaled family, of a tile in the rounded one, of a chunk in the wide one) and stay within
/// their bounds, with and without a zero point (GPTQ, FP8).
#[test]
fn group_scaled_gemm_takes_x_beyond_f16() {
    let big = |rng: &mut Rng, m: usize, k: usize| {
        let mut x = xs(rng, m * k);
        for (i, v) in x.iter_mut().enumerate() {
            let (r, c) = (i / k, i % k);
            if r % 3 == 1 && (c % 7 == 0 || c < 40) {
                *v *= [1e5, -3e6, 2f32.powi(30)][c % 3];
            }
        }
        x
    };
    let (k, n) = (128usize, 64usize);
    let mut rng = Rng(17);
    let l = GptqLayout::new(k, n, 4, 64).unwrap();
    let (qr, qc) = l.qweight_shape();
    let (zr, zc) = l.qzeros_shape();
    let case = GptqCase {
        qweight: (0..qr * qc).map(|_| rng.next_u64() as i32).collect(),
        qzeros: (0..zr * zc).map(|_| rng.next_u64() as i32).collect(),
        scales: (0..l.groups() * n).map(|_| f16::from_f32(rng.f32_in(-0.02, 0.02))).collect(),
        g_idx: l.default_g_idx(),
        layout: l,
    };
    let w = case.dequant(&case.qweight, ZeroFormat::V2);
    let mag = magnitude(
        &case.dequant(&vec![-1; case.qweight.len()], ZeroFormat::V2),
        &case.dequant(&vec![0; case.qweight.len()], ZeroFormat::V2),
    );
    let o = Oracle { w: &w, mag: &mag, n, k, transposed: true };
    let fl = Fp8Layout::block(n, k, 32, 64).unwrap();
    let codes: Vec<u8> = (0..n * k)
        .map(|_| {
            let c = rng.next_u64() as u8;
            (c & 0x80) | (c & 0x7f).min(0x7e)
        })
        .collect();
    let (sr, sc) = fl.scale_shape();
    let fs: Vec<f32> = (0..sr * sc).map(|_| rng.f32_in(1e-3, 2e-2)).collect();
    let mut fw = vec![0f32; n * k];
    fp8::fp8_dequantize_reference_into(&codes, &fs, Fp8Format::E4M3, &fl, &mut fw).unwrap();
    let fmag: Vec<f32> = fw.iter().map(|v| v.abs()).collect();
    let fo = Oracle { w: &fw, mag: &fmag, n, k, transposed: false };
    for (tile, m) in [(Tile::G1, 5), (Tile::G2, 32), (Tile::M1, 5), (Tile::M4, 70), (Tile::W, 70)] {
        let x = big(&mut rng, m, k);
        for kslices in if tile.grouped() { [1, 3] } else { [1, 1] } {
            let l = Launch { tile, kslices, grid: 2, block: 64 };
            let y = qgemm::gptq_gemm(
                4,
                &case.qweight,
                &case.qzeros,
                &case.scales,
                &case.g_idx,
                &x,
                (m, k, n),
                1,
                true,
                l,
            );
            check(&y, &o, &x, tile, &format!("gptq big x m {m} {l:?}"));
            let y = qgemm::fp8_gemm(0, &codes, &fs, (32, 64), &x, (m, k, n), l);
            check(&y, &fo, &x, tile, &format!("fp8 big x m {m} {l:?}"));
        }
    }
}
