//! The quantized-activation core (`matmul::q8`) against f64 oracles over a table of shapes,
//! every kernel (AVX-512 VNNI and AVX-VNNI where the CPU has them, and the portable one, forced
//! by capping the ISA): the integer-dot GEMV equals the f64 product of the dequantized weights and the
//! dequantized int8 activations up to f32 rounding, and the f64 product with the original
//! activations within the documented activation-quantization bound; serial and threaded give
//! the same bits; bad shapes and values are typed errors.

use crate::common::Rng;
use quant_kernels::{Isa, Parallelism};

/// Every kernel the CPU has, by capping the ISA: (name, serial, threaded).
pub(crate) fn paths() -> [(&'static str, Parallelism, Parallelism); 3] {
    let cap = |p: Parallelism, isa| p.max_isa(isa);
    [
        ("best", Parallelism::SERIAL, Parallelism::RAYON),
        ("x86-64-v3", cap(Parallelism::SERIAL, Isa::X86V3Avx2), cap(Parallelism::RAYON, Isa::X86V3Avx2)),
        ("portable", cap(Parallelism::SERIAL, Isa::Baseline), cap(Parallelism::RAYON, Isa::Baseline)),
    ]
}

#[test]
fn q8_kernels_are_chosen_by_cpu_and_cap() {
    assert_eq!(q8::kernel(Parallelism::RAYON.max_isa(Isa::Baseline)), "portable");
    #[cfg(target_arch = "x86_64")]
    {
        let v3 = Parallelism::RAYON.max_isa(Isa::X86V3Avx2);
        let avx_vnni = is_x86_feature_detected!("avxvnni") && is_x86_feature_detected!("avx2");
        assert_eq!(q8::kernel(v3), if avx_vnni { "avx-vnni" } else { "portable" });
        if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512bw") {
            assert_eq!(q8::kernel(Parallelism::RAYON), "avx512-vnni");
        }
    }
}
use quant_kernels::error::{Error, KernelError};
use quant_kernels::matmul::q8::{self, BLOCK, IntWeight};

#[test]
fn q4_q8_gemv_equals_the_oracles_within_its_bounds() {
    let mut rng = Rng(83);
    // (bits, rows, k, group, batch, f16 parameters): tiles of 16 rows in passes of 4 and 1 (100
    // rows: 7 tiles), tokens in passes of up to 8, partial last tiles; 4- and 8-bit codes.
    for (bits, rows, k, group, batch, half) in [
        (4, 1, 32, 32, 1, false),
        (4, 7, 64, 32, 2, true),
        (4, 33, 256, 64, 3, false),
        (4, 64, 4096, 128, 1, true),
        (4, 100, 512, 64, 1, false),
        (4, 130, 512, 256, 4, true),
        (4, 48, 128, 128, 9, false),
        (8, 1, 32, 32, 1, true),
        (8, 100, 512, 64, 1, false),
        (8, 64, 4096, 128, 1, true),
        (8, 40, 256, 128, 11, false),
    ] {
        let codes: Vec<u8> = (0..rows * k).map(|_| rng.below(1 << bits) as u8).collect();
        let groups = rows * k / group;
        // f16 values keep the parameters in f16 (GPTQ's, AWQ's), any f32 in f32.
        let round = |v: f32| if half { half::f16::from_f32(v).to_f32() } else { v };
        let scales: Vec<f32> = (0..groups).map(|_| round(rng.f32_in(0.001, 0.02))).collect();
        let zmax = ((1 << bits) - 1) as f32;
        let zeros: Vec<f32> = (0..groups).map(|_| round(rng.f32_in(0.0, zmax))).collect();
        let w = IntWeight::from_codes(bits, &codes, &scales, &zeros, rows, k, group).unwrap();
        assert_eq!(w.bits(), bits);
        let mut x: Vec<f32> = (0..batch * k).map(|_| rng.f32_in(-2.0, 2.0)).collect();
        x[..BLOCK].fill(0.0); // an all-zero block: scale 0
        let xq = q8::quantize_activations(&x, batch, k, Parallelism::SERIAL).unwrap();
        let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut vnni = Vec::new();
        for (path, serial, threaded) in paths() {
            let mut y = vec![0f32; batch * rows];
            q8::multiply(&w, &xq, &mut y, serial).unwrap();
            let mut yt = vec![0f32; batch * rows];
            q8::multiply(&w, &xq, &mut yt, threaded).unwrap();
            assert_eq!(bits(&y), bits(&yt), "{path} {rows}x{k}");
            check(&w, &xq, &x, &codes, &scales, &zeros, (rows, k, group, batch), &y, path);
            if q8::kernel(serial).contains("vnni") {
                vnni.push(bits(&y));
            }
        }
        // Both VNNI kernels do the same fused operations per lane: the same bits.
        if let [a, b] = &vnni[..] {
            assert_eq!(a, b, "avx512-vnni vs avx-vnni {rows}x{k}");
        }
    }
}

/// `y` against both oracles (see the module docs).
#[allow(clippy::too_many_arguments)]
fn check(
    w: &IntWeight,
    xq: &q8::Q8Activations,
    x: &[f32],
    codes: &[u8],
    scales: &[f32],
    zeros: &[f32],
    (rows, k, group, batch): (usize, usize, usize, usize),
    y: &[f32],
    path: &str,
) {
    let dense = w.dequantize();
    let blocks = k / BLOCK;
    for t in 0..batch {
        let (xt, qt) = (&x[t * k..(t + 1) * k], &xq.codes[t * k..(t + 1) * k]);
        let dt = &xq.scales[t * blocks..(t + 1) * blocks];
        for (kk, (&v, &q)) in xt.iter().zip(qt).enumerate() {
            // Every activation within d / 2 of its code times d.
            assert!(
                (v as f64 - q as f64 * dt[kk / BLOCK] as f64).abs()
                    <= dt[kk / BLOCK] as f64 / 2.0 * (1.0 + 1e-6)
            );
        }
        for r in 0..rows {
            let wr = &dense[r * k..(r + 1) * k];
            let exact_q: f64 = wr
                .iter()
                .zip(qt)
                .enumerate()
                .map(|(kk, (&a, &q))| a as f64 * q as f64 * dt[kk / BLOCK] as f64)
                .sum();
            let exact_x: f64 = wr.iter().zip(xt).map(|(&a, &b)| a as f64 * b as f64).sum();
            // f32 rounding of the per-block terms and their sums: each of the (blocks + 4)
            // roundings on the way is at most eps relative to the terms' magnitude.
            let g = |kk: usize| r * (k / group) + kk / group;
            let magnitude: f64 = (0..blocks)
                .map(|b| {
                    let kk = b * BLOCK;
                    let (s, z) = (scales[g(kk)] as f64, zeros[g(kk)] as f64);
                    let q = &qt[kk..kk + BLOCK];
                    let c = &codes[r * k + kk..r * k + kk + BLOCK];
                    let dot: f64 = c.iter().zip(q).map(|(&c, &q)| (c as f64 * q as f64).abs()).sum();
                    let sum: f64 = q.iter().map(|&q| (q as f64).abs()).sum();
                    s * dt[b] as f64 * (dot + z * sum)
                })
                .sum();
            // At most blocks + 8 roundings lie on any term's way to the output, in either
            // kernel's summation order (lanes, then across them, for VNNI).
            let rounding = magnitude * (blocks + 8) as f64 * f32::EPSILON as f64;
            let got = y[t * rows + r] as f64;
            assert!(
                (got - exact_q).abs() <= rounding,
                "{path} {rows}x{k} g{group} t{t} r{r}: {got} vs {exact_q} (±{rounding})"
            );
            let bound = q8::error_bound(w, xq, t, r).unwrap() + rounding;
            assert!(
                (got - exact_x).abs() <= bound,
                "{path} {rows}x{k} g{group} t{t} r{r}: {got} vs {exact_x} (±{bound})"
            );
        }
    }
}

/// The per-class path (HQQ axis 0): against the f64 product of the codes and each class's
/// quantized scaled activations (`sum (q - m) d xq - sum (z - m) s x`) within f32 rounding, and
/// against the exact product within `ColumnWeight::error_bound`; serial == threaded, and both
/// VNNI kernels give the same bits.
#[test]
fn column_weights_equal_the_oracles_within_their_bounds() {
    let mut rng = Rng(85);
    // (bits, rows, k, classes, batch)
    for (bits, rows, k, classes, batch) in [
        (4u32, 16, 32, 1, 1),
        (4, 64, 256, 4, 3),
        (8, 96, 512, 2, 9),
        (4, 128, 4096, 2, 1),
        (8, 48, 64, 3, 17),
    ] {
        let codes: Vec<u8> = (0..rows * k).map(|_| rng.below(1 << bits) as u8).collect();
        let zmax = ((1 << bits) - 1) as f32;
        let scales: Vec<f32> = (0..classes * k).map(|_| rng.f32_in(0.001, 0.02)).collect();
        let zeros: Vec<f32> = (0..classes * k).map(|_| rng.f32_in(0.0, zmax)).collect();
        let w = q8::ColumnWeight::from_rows(bits, rows, k, classes, &scales, &zeros, |o, c| {
            c.copy_from_slice(&codes[o * k..(o + 1) * k]);
            Ok(())
        })
        .unwrap();
        let dense = w.dequantize();
        let x: Vec<f32> = (0..batch * k).map(|_| rng.f32_in(-2.0, 2.0)).collect();
        let bits_of = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let mut vnni = Vec::new();
        for (path, serial, threaded) in paths() {
            let mut y = vec![0f32; batch * rows];
            q8::multiply_columns(&w, &x, batch, &mut y, serial).unwrap();
            let mut yt = vec![0f32; batch * rows];
            q8::multiply_columns(&w, &x, batch, &mut yt, threaded).unwrap();
            assert_eq!(bits_of(&y), bits_of(&yt), "{path} {rows}x{k}");
            if q8::kernel(serial).contains("vnni") {
                vnni.push(bits_of(&y));
            }
            for t in 0..batch {
                let xt = &x[t * k..(t + 1) * k];
                for o in 0..rows {
                    let c = o % classes;
                    let (s, z) = (&scales[c * k..(c + 1) * k], &zeros[c * k..(c + 1) * k]);
                    let m = w.class_zero(c) as f64;
                    let u: Vec<f32> = xt.iter().zip(s).map(|(&x, &s)| x * s).collect();
                    let uq = q8::quantize_activations(&u, 1, k, Parallelism::SERIAL).unwrap();
                    let (mut exact_q, mut magnitude) = (0f64, 0f64);
                    for kk in 0..k {
                        let q = codes[o * k + kk] as f64 - m;
                        let v = uq.codes[kk] as f64 * uq.scales[kk / BLOCK] as f64;
                        let zc = (z[kk] as f64 - m) * s[kk] as f64 * xt[kk] as f64;
                        exact_q += q * v - zc;
                        magnitude += (q.abs() + 2.0 * m.abs()) * v.abs() + zc.abs();
                    }
                    let rounding = magnitude * (k / BLOCK + 8) as f64 * f32::EPSILON as f64;
                    let got = y[t * rows + o] as f64;
                    assert!(
                        (got - exact_q).abs() <= rounding,
                        "{path} {rows}x{k} t{t} o{o}: {got} vs {exact_q} (±{rounding})"
                    );
                    let exact_x: f64 =
                        dense[o * k..(o + 1) * k].iter().zip(xt).map(|(&a, &b)| a as f64 * b as f64).sum();
                    let bound = w.error_bound(&x, t, o).unwrap();
                    assert!(
                        (got - exact_x).abs() <= bound,
                        "{path} {rows}x{k} t{t} o{o}: {got} vs {exact_x} (±{bound})"
                    );
                }
            }
        }
        if let [a, b] = &vnni[..] {
            assert_eq!(a, b, "avx512-vnni vs avx-vnni {rows}x{k}");
        }
    }
    // Shapes: a class of rows not whole tiles, scales of the wrong length, a non-finite zero.
    let fill = |_: usize, c: &mut [u8]| -> quant_kernels::Result<()> {
        c.fill(1);
        Ok(())
    };
    assert!(matches!(
        q8::ColumnWeight::from_rows(4, 40, 32, 2, &[1.0; 64], &[0.0; 64], fill),
        Err(Error::Kernel(KernelError::NotMultiple { .. }))
    ));
    assert!(matches!(
        q8::ColumnWeight::from_rows(4, 32, 32, 2, &[1.0; 32], &[0.0; 64], fill),
        Err(Error::Kernel(KernelError::LengthMismatch { .. }))
    ));
    let mut z = [0.0f32; 64];
    z[40] = f32::NAN;
    assert_eq!(
        q8::ColumnWeight::from_rows(4, 32, 32, 2, &[1.0; 64], &z, fill),
        Err(Error::Kernel(KernelError::NonFinite { index: 40 }))
    );
    let w = q8::ColumnWeight::from_rows(4, 32, 32, 2, &[1.0; 64], &[0.0; 64], fill).unwrap();
    assert!(q8::multiply_columns(&w, &[1.0; 32], 1, &mut [0.0; 31], Parallelism::SERIAL).is_err());
    assert!(q8::multiply_columns(&w, &[1.0; 31], 1, &mut [0.0; 32], Parallelism::SERIAL).is_err());
    assert!(w.error_bound(&[1.0; 32], 1, 0).is_err() && w.error_bound(&[1.0; 32], 0, 32).is_err());
}

#[test]
fn q8_shapes_and_values_are_checked() {
    let not_multiple = |e: Error| matches!(e, Error::Kernel(KernelError::NotMultiple { .. }));
    assert!(not_multiple(q8::quantize_activations(&[0.0; 48], 1, 48, Parallelism::SERIAL).unwrap_err()));
    assert!(matches!(
        q8::quantize_activations(&[0.0; 32], 2, 32, Parallelism::SERIAL),
        Err(Error::Kernel(KernelError::LengthMismatch { .. }))
    ));
    let mut x = vec![0.5f32; 32];
    x[3] = f32::NAN;
    assert_eq!(
        q8::quantize_activations(&x, 1, 32, Parallelism::SERIAL),
        Err(Error::Kernel(KernelError::NonFinite { index: 3 }))
    );
    let codes = vec![1u8; 64];
    assert!(not_multiple(IntWeight::from_codes(4, &codes, &[1.0; 2], &[0.0; 2], 1, 64, 48).unwrap_err()));
    assert!(not_multiple(IntWeight::from_codes(4, &codes, &[1.0; 2], &[0.0; 2], 2, 32, 64).unwrap_err()));
    let mut bad = codes.clone();
    bad[5] = 16;
    assert!(matches!(
        IntWeight::from_codes(4, &bad, &[1.0; 2], &[0.0; 2], 1, 64, 32),
        Err(Error::Kernel(KernelError::CodeOutOfRange { index: 5, code: 16, bits: 4 }))
    ));
    assert!(IntWeight::from_codes(8, &bad, &[1.0; 2], &[0.0; 2], 1, 64, 32).is_ok());
    for bits in [0, 2, 3, 16, 300] {
        assert!(matches!(
            IntWeight::from_codes(bits, &codes, &[1.0; 2], &[0.0; 2], 1, 64, 32),
            Err(Error::Kernel(KernelError::UnsupportedBits(_)))
        ));
    }
    assert_eq!(
        IntWeight::from_codes(4, &codes, &[1.0, f32::INFINITY], &[0.0; 2], 1, 64, 32),
        Err(Error::Kernel(KernelError::NonFinite { index: 1 }))
    );
    let w = IntWeight::from_codes(4, &codes, &[1.0; 2], &[0.0; 2], 1, 64, 32).unwrap();
    let xq = q8::quantize_activations(&[1.0; 64], 1, 64, Parallelism::SERIAL).unwrap();
    assert!(matches!(
        q8::multiply(&w, &xq, &mut [0.0; 2], Parallelism::SERIAL),
        Err(Error::Kernel(KernelError::LengthMismatch { .. }))
    ));
    let x32 = q8::quantize_activations(&[1.0; 32], 1, 32, Parallelism::SERIAL).unwrap();
    assert!(q8::multiply(&w, &x32, &mut [0.0; 1], Parallelism::SERIAL).is_err());
    assert!(q8::error_bound(&w, &xq, 1, 0).is_err() && q8::error_bound(&w, &xq, 0, 1).is_err());
    assert!(q8::error_bound(&w, &x32, 0, 0).is_err());
    // All ones times codes 1 (z = 0, s = 1): exactly 64.
    let mut y = [0f32; 1];
    q8::multiply(&w, &xq, &mut y, Parallelism::SERIAL).unwrap();
    assert_eq!(y, [64.0]);
}

/// The quantizer against the scalar rule (`d = max|x| / 127`, `q = round_ties_even(x * 127 /
/// max|x|)` clamped to ±127, code sums), on every kernel path, serial and split over the pool
/// (128 x 1024 values: several chunks), ties included; the first non-finite value is reported
/// whichever chunk holds it.
#[test]
fn q8_quantizer_equals_the_scalar_rule() {
    let mut rng = Rng(84);
    let (batch, k) = (128, 1024);
    let mut x: Vec<f32> = (0..batch * k).map(|_| rng.f32_in(-3.0, 3.0)).collect();
    // A block whose scale is exactly 1: halves round to even (0.5 -> 0, 1.5 -> 2, -2.5 -> -2).
    x[64..96].copy_from_slice(&[[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5]; 4].concat());
    x[96..128].fill(0.0);
    let mut codes = vec![0i8; batch * k];
    let mut scales = vec![0f32; batch * k / BLOCK];
    let mut sums = vec![0i32; batch * k / BLOCK];
    for (b, xb) in x.chunks_exact(BLOCK).enumerate() {
        let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
        if amax == 0.0 {
            continue;
        }
        scales[b] = amax / 127.0;
        for (i, &v) in xb.iter().enumerate() {
            codes[b * BLOCK + i] = (v * (127.0 / amax)).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
        sums[b] = codes[b * BLOCK..(b + 1) * BLOCK].iter().map(|&q| q as i32).sum();
    }
    assert_eq!(&codes[64..72], &[127, 0, 2, 2, 0, -2, -2, 126]);
    for (path, serial, threaded) in paths() {
        for par in [serial, threaded] {
            let q = q8::quantize_activations(&x, batch, k, par).unwrap();
            assert!(q.codes == codes && q.scales == scales && q.sums == sums, "{path}");
            let mut bad = x.clone();
            (bad[100_000], bad[70_000], bad[90_000]) = (f32::NAN, f32::INFINITY, f32::NEG_INFINITY);
            assert_eq!(
                q8::quantize_activations(&bad, batch, k, par),
                Err(Error::Kernel(KernelError::NonFinite { index: 70_000 })),
                "{path}"
            );
        }
    }
}
