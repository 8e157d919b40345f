//! In-process all-reduce (`LocalComm`, one thread per rank) next to memcpy in the same run.
//!
//! Throughput of `local/W` = bytes of one rank's buffer per all-reduce (what NCCL calls the
//! algorithm bandwidth), per rank. The baselines count a memcpy's bytes twice (read + write, as
//! BENCHMARKING.md defines): `memcpy/1` is one thread copying a buffer of the same size, and
//! `memcpy_per_thread/W` is the rate of *each* of W threads copying their own buffer at the same
//! time, the baseline with the same threads as a W-rank all-reduce (on a machine with fewer
//! cores than ranks the ranks share cores, and so do those copies).
//!
//! ```text
//! cargo bench --bench allreduce
//! ```

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use quant_kernels::tp::{Comm, LocalComm};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Run `f(rank, iters)` on `world` threads started together; the slowest thread's time.
fn on_threads(world: usize, iters: u64, f: impl Fn(usize, u64) -> Duration + Sync) -> Duration {
    let f = &f;
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..world).map(|r| s.spawn(move || f(r, iters))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).max().unwrap_or_default()
    })
}

fn allreduce(c: &mut Criterion) {
    let sizes: Vec<usize> = match std::env::var("QK_ALLREDUCE_MIB") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) => vec![1, 16, 64],
    };
    for mib in sizes {
        let n = mib << 18; // f32 values
        let bytes = 4 * n;
        let mut g = c.benchmark_group(format!("allreduce_{mib}MiB"));
        g.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        let src = vec![1u8; bytes];
        let mut dst = vec![0u8; bytes];
        g.throughput(Throughput::Bytes(2 * bytes as u64));
        g.bench_function(BenchmarkId::new("memcpy", 1), |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
        for world in [2usize, 4] {
            g.throughput(Throughput::Bytes(2 * bytes as u64));
            g.bench_function(BenchmarkId::new("memcpy_per_thread", world), |b| {
                b.iter_custom(|iters| {
                    // Each thread's buffers are made and touched on that thread, outside the timing.
                    let ready = std::sync::Barrier::new(world);
                    on_threads(world, iters, |_, iters| {
                        let src = vec![1u8; bytes];
                        let mut dst = vec![0u8; bytes];
                        dst.copy_from_slice(&src);
                        ready.wait();
                        let t = Instant::now();
                        for _ in 0..iters {
                            dst.copy_from_slice(black_box(&src));
                        }
                        t.elapsed()
                    })
                })
            });
            g.throughput(Throughput::Bytes(bytes as u64));
            g.bench_function(BenchmarkId::new("local", world), |b| {
                b.iter_custom(|iters| {
                    let ranks: Vec<_> = LocalComm::group(world).into_iter().map(Some).collect();
                    let ranks: Vec<_> = ranks.into_iter().map(std::sync::Mutex::new).collect();
                    on_threads(world, iters, |r, iters| {
                        let comm = ranks[r].lock().unwrap().take().unwrap();
                        let mut buf = vec![r as f32; n];
                        // One untimed call grows the group's buffers to this size.
                        comm.all_reduce_sum(&mut buf).unwrap();
                        comm.barrier().unwrap();
                        let t = Instant::now();
                        for _ in 0..iters {
                            comm.all_reduce_sum(black_box(&mut buf)).unwrap();
                        }
                        let elapsed = t.elapsed();
                        // Nobody drops its rank before all are done.
                        comm.barrier().unwrap();
                        elapsed
                    })
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, allreduce);
criterion_main!(benches);
