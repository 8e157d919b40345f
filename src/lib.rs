//! # quant-kernels
//!
//! Pure-Rust kernels to pack, quantize, dequantize, multiply and shard quantized LLM weights,
//! bit for bit the layouts of the upstream libraries, with no tensor framework: plain slices
//! in, plain slices out, owning layer types on top.
//!
//! * Schemes, one module each: [`hqq`] (BitPack 8/4/3/2/1 bits on both axes, dequantization,
//!   hqq's quantizer with its proximal optimizer), [`gptq`] (2/3/4/8 bits, act-order `g_idx`
//!   and sorting by group, v1/v2 zero points, q/k/v and gate/up fusion), [`awq`] (AutoAWQ's
//!   gemm layout, lossless AWQ <-> GPTQ), [`fp8`] (E4M3/E5M2, per-tensor or block scales),
//!   [`intx`] (int8 symmetric, int4 asymmetric, SmoothQuant).
//! * [`method`]: one [`method::QuantMethod`] naming every scheme (parsed from and printed as
//!   `gptq-4bit-g128-act`, ...) and a per-layer [`method::QuantConfig`] with memory estimates.
//! * [`matmul`]: [`matmul::QuantLinear`], `y = x W^T + b` straight from any scheme's packed
//!   weight (GEMV at batch 1, GEMM above), next to a naive f64 oracle.
//! * [`tp`]: tensor parallelism: [`tp::Shard`] cuts packed weights without requantizing, the
//!   shard plan of a whole model, column/row-parallel layers, MoE expert splits, and the
//!   all-reduce behind [`tp::Comm`] (in-process threads, or MPI with the `mpi` feature).
//! * [`io`]: a validating safetensors reader and streaming writer, checkpoint directories
//!   (single file or sharded) with their quantization configs, their quantized layers
//!   ([`io::QuantCheckpoint`], one generic type over the scheme; [`io::QuantizedCheckpoint`],
//!   whichever scheme a directory holds), mistral.rs's UQFF.
//! * `cuda` (feature `cuda`): every scheme's dequantization and two fused GEMVs on NVIDIA GPUs,
//!   the driver loaded at run time.
//! * Shared pieces: [`elem`] (f32/f16/bf16 stores), [`pack`] (bit packing), [`par`]
//!   ([`Parallelism`]: threads and the ISA cap; row chunks over rayon), [`error`]; the crate-internal
//!   `lanes` (run-time ISA dispatch and the SIMD loops).
//!
//! Every kernel has three paths that give identical bits: a naive reference, a SIMD path whose
//! instruction set is chosen at run time ([`Isa::detect`], capped per call by
//! [`Parallelism::max_isa`]), and SIMD + rayon threads.
//!
//! ```
//! use quant_kernels::Parallelism;
//! use quant_kernels::hqq::{self, Axis, HqqLayout};
//! // A 2x4 weight, axis 1, group 4: each row is a group. Code rows: [0 1 2 3], [15 14 13 12].
//! let layout = HqqLayout::new(2, 4, 4, Axis::One)?;
//! let packed = hqq::pack_hqq(&[0, 1, 2, 3, 15, 14, 13, 12], 2, 4, 4)?;
//! let hqq::PackedWords::U8(words) = &packed.words else { unreachable!() };
//! assert_eq!(words, &[0x0f, 0x1e, 0x2d, 0x3c]);
//! let (scales, zeros) = ([0.5f32, 0.25], [1.0f32, 8.0]);
//! let w: Vec<f32> = hqq::dequantize_4bit(words, &scales, &zeros, &layout, Parallelism::RAYON)?;
//! assert_eq!(w, [-0.5, 0.0, 0.5, 1.0, 1.75, 1.5, 1.25, 1.0]);
//! # Ok::<(), quant_kernels::Error>(())
//! ```
//!
//! ## Hardware support
//!
//! | arch | detected at run time | used for |
//! |---|---|---|
//! | x86-64 | AVX-512 (x86-64-v4) | affine decode loops, 16 `f32` lanes |
//! | x86-64 | AVX2 + FMA (x86-64-v3) | affine decode loops, 8 `f32` lanes (FMA never used) |
//! | x86-64 | F16C (through `half`) | `f32` -> `f16` stores |
//! | any | baseline of the build | everything, when nothing better is found |

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod awq;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod dense;
pub mod elem;
pub mod error;
pub mod fp8;
pub mod gptq;
pub mod hqq;
pub mod intx;
pub mod io;
pub(crate) mod lanes;
pub mod layer;
pub mod matmul;
pub mod method;
pub mod pack;
pub mod par;
pub mod scheme;
pub mod tp;

pub use elem::{Elem, FloatType, FloatVec};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
/// docs/FORMATS.md's examples, compiled and run as doctests.
#[doc = include_str!("../docs/FORMATS.md")]
#[cfg(doctest)]
pub struct FormatsDoctests;
pub use awq::{AwqLayer, awq_dequantize};
pub use dense::DenseWeight;
pub use error::{Error, Result};
pub use fp8::{Fp8Layer, fp8_dequantize};
pub use gptq::{GptqLayer, fuse_columns, gptq_dequantize};
pub use hqq::{
    HqqLayout, HqqWeight, dequantize_1bit, dequantize_2bit, dequantize_3bit, dequantize_4bit,
    dequantize_8bit, pack_hqq, quantize_hqq, unpack_hqq,
};
pub use intx::{Int4Tensor, Int8Tensor};
pub use layer::QuantWeight;
pub use matmul::QuantLinear;
pub use method::{QuantConfig, QuantMethod};
pub use pack::{B1, B2, B3, B4, B8, Bits, Packing};
pub use par::{Isa, Parallelism};
pub use scheme::QuantScheme;
pub use tp::{Comm, LocalComm, Shard};
