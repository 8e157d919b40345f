//! `QuantLinear::forward_into` / `forward_with` allocate nothing per call in the steady state,
//! for every scheme, serial and threaded: a counting global allocator (which is why this is its
//! own test binary, with one test, so no other test allocates while it counts).
//!
//! The threaded case runs on a worker of a rayon pool, as a runtime's forward pass does: a call
//! from outside the pool hands its jobs to rayon's global injector queue, which allocates a
//! block of slots every few dozen jobs (rayon's, not ours).

#[path = "common/mod.rs"]
mod common;

use common::Rng;
use quant_kernels::fp8::{Fp8Format, Fp8Layout, fp8_quantize};
use quant_kernels::gptq::GptqLayout;
use quant_kernels::hqq::Axis;
use quant_kernels::intx::{Granularity, quantize_int4, quantize_int8};
use quant_kernels::matmul::Workspace;
use quant_kernels::{AwqLayer, FloatVec, Fp8Layer, Parallelism, QuantLinear, QuantWeight};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The system allocator, counting every allocation and reallocation on any thread.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds `GlobalAlloc`'s contract.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: `ptr` came from `System` with `layout`; the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One layer of every scheme (act-order GPTQ gathers its inputs; HQQ at 3 bits, f16 params).
fn layers(rng: &mut Rng) -> Vec<(&'static str, QuantLinear)> {
    let (out, inp) = (256, 512); // large enough to be split over threads
    let w: Vec<f32> = (0..out * inp).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let bias = || Some(FloatVec::F32((0..out).map(|i| i as f32).collect()));
    let gptq = common::gptq_layer_f32(GptqLayout::new(inp, out, 4, 64).unwrap(), true, rng);
    let hqq = common::hqq_weight(out, inp, 64, Axis::One, 3, 1, rng).unwrap();
    let awq_layout = quant_kernels::awq::AwqLayout::new(inp, out, 64).unwrap();
    let awq = AwqLayer {
        layout: awq_layout,
        qweight: (0..inp * out / 8).map(|_| rng.next_u64() as i32).collect(),
        qzeros: (0..awq_layout.groups() * out / 8).map(|_| rng.next_u64() as i32).collect(),
        scales: FloatVec::F32((0..awq_layout.groups() * out).map(|_| rng.f32_in(-0.02, 0.02)).collect()),
        bias: None,
    };
    let fp8_layout = Fp8Layout::block(out, inp, 32, 128).unwrap();
    let (codes, scales) =
        fp8_quantize(&w, Fp8Format::E4M3, &fp8_layout, quant_kernels::Parallelism::SERIAL).unwrap();
    let fp8 = Fp8Layer {
        layout: fp8_layout,
        experts: 1,
        format: Fp8Format::E4M3,
        codes,
        scales: FloatVec::F32(scales),
        bias: None,
    };
    let weights = [
        ("dense", QuantWeight::dense(out, inp, w.clone())),
        ("hqq", QuantWeight::Hqq(hqq)),
        ("gptq", QuantWeight::Gptq(gptq)),
        ("awq", QuantWeight::Awq(awq)),
        ("fp8", QuantWeight::Fp8(fp8)),
        (
            "int8",
            QuantWeight::Int8(
                quantize_int8(&w, out, inp, Granularity::PerChannel, quant_kernels::Parallelism::SERIAL)
                    .unwrap(),
            ),
        ),
        (
            "int4",
            QuantWeight::Int4(quantize_int4(&w, out, inp, 32, quant_kernels::Parallelism::SERIAL).unwrap()),
        ),
    ];
    weights.into_iter().map(|(name, w)| (name, QuantLinear::new(w, bias()).unwrap())).collect()
}

/// Allocations made while `f` runs (on any thread).
fn allocations(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    f();
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

#[test]
fn forward_allocates_nothing_in_the_steady_state() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    pool.install(steady_state);
}

fn steady_state() {
    let mut rng = Rng(11);
    let layers = layers(&mut rng);
    let mut ws = Workspace::default();
    for batch in [1, 7] {
        let x: Vec<f32> = (0..batch * 512).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        let mut y = vec![0f32; batch * 256];
        for par in [Parallelism::SERIAL, Parallelism::RAYON] {
            for (name, layer) in &layers {
                let want: Vec<f32> = layer.forward(&x, batch, par).unwrap();
                // Warm-up: the layer's own workspace and `ws` grow to this batch.
                layer.forward_into(&x, batch, &mut y, par).unwrap();
                layer.forward_with(&x, batch, &mut y, par, &mut ws).unwrap();
                let n = allocations(|| {
                    for _ in 0..3 {
                        layer.forward_into(&x, batch, &mut y, par).unwrap();
                    }
                });
                assert_eq!(n, 0, "{name} forward_into, batch {batch}, {par:?}");
                assert_eq!(y, want, "{name}");
                let n = allocations(|| {
                    for _ in 0..3 {
                        layer.forward_with(&x, batch, &mut y, par, &mut ws).unwrap();
                    }
                });
                assert_eq!(n, 0, "{name} forward_with, batch {batch}, {par:?}");
                assert_eq!(y, want, "{name}");
            }
        }
    }
    parallel_layers(&mut rng);
}

/// The parallel layers' `forward_into` (world of one: the all-reduce is the identity).
fn parallel_layers(rng: &mut Rng) {
    use quant_kernels::tp::{ColumnParallelLinear, ReplicatedLinear, RowParallelLinear, SingleComm};
    let (out, inp, batch) = (256, 512, 3);
    let w = QuantWeight::Int8(
        quantize_int8(
            &(0..out * inp).map(|_| rng.f32_in(-1.0, 1.0)).collect::<Vec<_>>(),
            out,
            inp,
            Granularity::PerChannel,
            quant_kernels::Parallelism::SERIAL,
        )
        .unwrap(),
    );
    let bias = FloatVec::F32(vec![0.5; out]);
    let x: Vec<f32> = (0..batch * inp).map(|_| rng.f32_in(-1.0, 1.0)).collect();
    let mut y = vec![0f32; batch * out];
    let col = ColumnParallelLinear::new(&w, Some(&bias), 0, 1).unwrap();
    let row = RowParallelLinear::new(&w, Some(&bias), 0, 1).unwrap();
    let rep = ReplicatedLinear::new(w.clone(), Some(bias.clone())).unwrap();
    for par in [Parallelism::SERIAL, Parallelism::RAYON] {
        col.forward_into(&x, batch, &mut y, par).unwrap();
        row.forward_into(&SingleComm, &x, batch, &mut y, par).unwrap();
        rep.forward_into(&x, batch, &mut y, par).unwrap();
        let n = allocations(|| col.forward_into(&x, batch, &mut y, par).unwrap());
        assert_eq!(n, 0, "column-parallel, {par:?}");
        let n = allocations(|| row.forward_into(&SingleComm, &x, batch, &mut y, par).unwrap());
        assert_eq!(n, 0, "row-parallel, {par:?}");
        assert_eq!(y, rep.forward(&x, batch, par).unwrap(), "row-parallel over one rank");
        let n = allocations(|| rep.forward_into(&x, batch, &mut y, par).unwrap());
        assert_eq!(n, 0, "replicated, {par:?}");
    }
}
