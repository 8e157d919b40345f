//! Every fast path (SIMD on one thread, SIMD + rayon, the fused multiply) against the naive
//! oracles, over tables of shapes, widths and element types. One test binary (each file is a
//! module) so the suite compiles and links once.

#[path = "../common/mod.rs"]
mod common;

mod gptq_paths;
mod gptq_sort;
mod hqq_paths;
mod int8_path;
mod intx_methods;
mod isa_caps;
mod matmul;
mod q8;
