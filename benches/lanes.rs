//! Which SIMD route the kernels take, measured under a default build (no RUSTFLAGS): the same
//! 4-bit decode + `(q - z) * s` over 64 Ki weights (in cache) with
//!
//! * `pulp_dispatch`: the crate's kernel (run-time dispatch through pulp; AVX-512 here),
//! * `wide_f32x8`: `wide::f32x8` lanes, which compile to what the build targets (SSE2 by default),
//! * `plain_loop`: the same loop with no dispatch (auto-vectorized for the build target).
//!
//! `RUSTFLAGS="-C target-cpu=native" cargo bench --bench lanes` shows what wide gets when the
//! whole build targets the CPU; users who embed the crate do not build that way.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use half::f16;
use half::slice::HalfFloatSliceExt;
use quant_kernels::hqq::{self, Axis, HqqLayout};
use quant_kernels::{B4, Isa, Parallelism};
use std::hint::black_box;
use wide::{f32x8, i32x8};

const COLS: usize = 32 * 1024; // code matrix [2, COLS]: one packed row, two planes

fn inputs() -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let words = (0..COLS).map(|i| (i.wrapping_mul(2654435761) >> 9) as u8).collect();
    let z = (0..COLS).map(|i| (i % 16) as f32 * 0.9).collect();
    let s = (0..COLS).map(|i| 0.01 + (i % 7) as f32 * 1e-3).collect();
    (words, z, s)
}

fn plain(words: &[u8], z: &[f32], s: &[f32], out: &mut [f32]) {
    let (hi, lo) = out.split_at_mut(COLS);
    for i in 0..COLS {
        hi[i] = ((words[i] >> 4) as f32 - z[i]) * s[i];
        lo[i] = ((words[i] & 15) as f32 - z[i]) * s[i];
    }
}

fn wide(words: &[u8], z: &[f32], s: &[f32], out: &mut [f32]) {
    let (hi, lo) = out.split_at_mut(COLS);
    for (j, w) in words.chunks_exact(8).enumerate() {
        let w = i32x8::from(std::array::from_fn::<i32, 8, _>(|k| w[k] as i32));
        let zz = f32x8::from(<[f32; 8]>::try_from(&z[8 * j..8 * j + 8]).unwrap());
        let ss = f32x8::from(<[f32; 8]>::try_from(&s[8 * j..8 * j + 8]).unwrap());
        let h = ((w >> 4i32).round_float() - zz) * ss;
        let l = ((w & i32x8::splat(15)).round_float() - zz) * ss;
        hi[8 * j..8 * j + 8].copy_from_slice(&h.to_array());
        lo[8 * j..8 * j + 8].copy_from_slice(&l.to_array());
    }
}

fn bench(c: &mut Criterion) {
    eprintln!(
        "dispatch ISA: {}; build target: avx2={} avx512f={}",
        Isa::detect(),
        cfg!(target_feature = "avx2"),
        cfg!(target_feature = "avx512f")
    );
    let (words, z, s) = inputs();
    let layout = HqqLayout::new(2, COLS, 2, Axis::Zero).unwrap();
    let mut out = vec![0f32; 2 * COLS];
    let (mut want, mut other) = (vec![0f32; 2 * COLS], vec![0f32; 2 * COLS]);
    hqq::dequantize_into::<B4, f32, f32>(&words, &s, &z, &layout, &mut want, Parallelism::SERIAL).unwrap();
    plain(&words, &z, &s, &mut other);
    assert_eq!(want, other, "plain loop disagrees with the kernel");
    wide(&words, &z, &s, &mut other);
    assert_eq!(want, other, "wide lanes disagree with the kernel");

    let mut g = c.benchmark_group("lanes_4bit_affine_64k");
    g.throughput(Throughput::Elements(2 * COLS as u64));
    g.bench_function("pulp_dispatch", |b| {
        b.iter(|| {
            hqq::dequantize_into::<B4, f32, f32>(
                black_box(&words),
                &s,
                &z,
                &layout,
                &mut out,
                Parallelism::SERIAL,
            )
            .unwrap()
        })
    });
    g.bench_function("wide_f32x8", |b| b.iter(|| wide(black_box(&words), &z, &s, &mut out)));
    g.bench_function("plain_loop", |b| b.iter(|| plain(black_box(&words), &z, &s, &mut out)));
    g.finish();

    // The same with f16 zeros/scales and f16 output, the common serving case: the kernel keeps
    // everything in registers; wide needs widened f32 params and a half slice conversion after.
    let (z16, s16): (Vec<f16>, Vec<f16>) =
        (z.iter().map(|&x| f16::from_f32(x)).collect(), s.iter().map(|&x| f16::from_f32(x)).collect());
    let mut out16 = vec![f16::ZERO; 2 * COLS];
    let mut g = c.benchmark_group("lanes_4bit_affine_64k_f16");
    g.throughput(Throughput::Elements(2 * COLS as u64));
    g.bench_function("pulp_dispatch", |b| {
        b.iter(|| {
            hqq::dequantize_into::<B4, f16, f16>(
                black_box(&words),
                &s16,
                &z16,
                &layout,
                &mut out16,
                Parallelism::SERIAL,
            )
            .unwrap()
        })
    });
    let (mut zw, mut sw) = (vec![0f32; COLS], vec![0f32; COLS]);
    g.bench_function("wide_f32x8", |b| {
        b.iter(|| {
            z16.convert_to_f32_slice(&mut zw);
            s16.convert_to_f32_slice(&mut sw);
            wide(black_box(&words), &zw, &sw, &mut out);
            out16.convert_from_f32_slice(&out);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
