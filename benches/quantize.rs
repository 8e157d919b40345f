//! HQQ quantization throughput: 4096x4096 f32, 4-bit, group 64, axis 0, with 10 and 20
//! optimizer steps (and without), threaded; reported as weights per second. mistral.rs needs
//! 10-11 s (10 steps) and 21 s (20 steps) for this on the 2-vCPU machine class.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quant_kernels::hqq::{Axis, HqqConfig, quantize_hqq};
use quant_kernels::{Isa, Parallelism};
use std::hint::black_box;
use std::time::Duration;

fn weights(n: usize) -> Vec<f32> {
    // A deterministic, roughly normal(0, 0.02) weight (sum of uniforms).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut u = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..n).map(|_| 0.02 * (u() + u() + u() + u())).collect()
}

fn quantize(c: &mut Criterion) {
    let (rows, cols) = (4096usize, 4096usize);
    let w = weights(rows * cols);
    eprintln!("ISA: {}; rayon threads: {}", Isa::detect(), rayon::current_num_threads());
    let mut g = c.benchmark_group("hqq_quantize_4096x4096_4bit_g64_axis0");
    g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements((rows * cols) as u64));
    for steps in [None, Some(10), Some(20)] {
        let config = HqqConfig { optimization_steps: steps, ..HqqConfig::new(4, 64, Axis::Zero) };
        let name = steps.map_or("no_optimizer".to_string(), |s| format!("{s}_steps"));
        for (label, par) in [("threaded", Parallelism::RAYON), ("serial", Parallelism::SERIAL)] {
            if steps == Some(20) && par == Parallelism::SERIAL {
                continue;
            }
            g.bench_function(BenchmarkId::new(&name, label), |b| {
                b.iter(|| quantize_hqq(black_box(&w), rows, cols, &config, par).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, quantize);
criterion_main!(benches);
