//! In-process all-reduce (`LocalComm`, one thread per rank) next to a memcpy of the same size.
//!
//! Throughput = bytes of one rank's buffer per all-reduce; the memcpy copies that many bytes
//! (counted twice: read + write, as BENCHMARKING.md defines), one thread.
//!
//! ```text
//! cargo bench --bench allreduce
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quant_kernels::tp::{Comm, LocalComm};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn allreduce(c: &mut Criterion) {
    for mib in [1usize, 16, 64] {
        let n = mib << 18; // f32 values
        let bytes = 4 * n;
        let mut g = c.benchmark_group(format!("allreduce_{mib}MiB"));
        g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        let src = vec![1u8; bytes];
        let mut dst = vec![0u8; bytes];
        g.throughput(Throughput::Bytes(2 * bytes as u64));
        g.bench_function(BenchmarkId::new("memcpy", 1), |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
        g.throughput(Throughput::Bytes(bytes as u64));
        for world in [2usize, 4] {
            g.bench_function(BenchmarkId::new("local", world), |b| {
                b.iter_custom(|iters| {
                    let ranks = LocalComm::group(world);
                    std::thread::scope(|s| {
                        let hs: Vec<_> = ranks
                            .into_iter()
                            .map(|comm| {
                                s.spawn(move || {
                                    let mut buf = vec![comm.rank() as f32; n];
                                    comm.barrier().unwrap();
                                    let t = Instant::now();
                                    for _ in 0..iters {
                                        comm.all_reduce_sum(black_box(&mut buf)).unwrap();
                                    }
                                    t.elapsed()
                                })
                            })
                            .collect();
                        hs.into_iter().map(|h| h.join().unwrap()).max().unwrap_or_default()
                    })
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, allreduce);
criterion_main!(benches);
