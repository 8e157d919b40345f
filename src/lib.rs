//! # quant-kernels
//!
//! Pure-Rust kernels to pack, dequantize (and, as the crate grows, quantize and multiply)
//! quantized LLM weights, bit-for-bit the layouts of the upstream libraries, with no tensor
//! framework: plain slices in, plain slices out.
//!
//! * [`hqq`]: HQQ BitPack packing for 8/4/3/2/1 bits ([`hqq::pack_hqq`], [`hqq::unpack_hqq`])
//!   and dequantization ([`hqq::dequant_4bit`] and siblings) for axis 0 and 1, scales/zeros in
//!   `f32`/`f16`/`bf16`, output in `f32`/`f16`/`bf16`.
//! * [`gptq`]: dequantization of 2/3/4/8-bit GPTQ layers (sym/asym, act-order `g_idx`, v1/v2
//!   zero points), checkpoints ([`gptq::GptqCheckpoint`]) and q/k/v, gate/up fusion
//!   ([`gptq::fuse_columns`]).
//! * [`awq`], [`fp8`]: AutoAWQ's gemm layout; FP8 E4M3/E5M2 with per-tensor or block scales.
//! * [`io`]: a lazy, validating safetensors reader and streaming writer; checkpoint directories
//!   (single file or sharded index) and their quantization config.
//!
//! Every kernel has three paths that give identical bits: a naive reference, a SIMD path whose
//! instruction set is chosen at run time ([`lanes::isa`]), and SIMD + rayon threads.
//!
//! ```
//! use quant_kernels::hqq::{self, Axis, HqqLayout};
//! // A 2x4 weight, axis 1, group 4: each row is a group. Code rows: [0 1 2 3], [15 14 13 12].
//! let layout = HqqLayout::new(2, 4, 4, Axis::One)?;
//! let packed = hqq::pack_hqq(&[0, 1, 2, 3, 15, 14, 13, 12], 2, 4, 4)?;
//! let hqq::PackedWords::U8(words) = &packed.words else { unreachable!() };
//! assert_eq!(words, &[0x0f, 0x1e, 0x2d, 0x3c]);
//! let w: Vec<f32> = hqq::dequant_4bit(words, &[0.5f32, 0.25], &[1.0f32, 8.0], &layout)?;
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
pub mod elem;
pub mod error;
pub mod fp8;
pub mod gptq;
pub mod hqq;
pub mod intx;
pub mod io;
pub mod lanes;
pub mod matmul;
pub mod method;
pub mod model;
pub mod pack;
pub mod par;
pub mod tp;

#[doc(hidden)]
pub mod fuzz_checks;

pub use elem::{DType, Elem, FloatVec};

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
/// docs/FORMATS.md's examples, compiled and run as doctests.
#[doc = include_str!("../docs/FORMATS.md")]
#[cfg(doctest)]
pub struct FormatsDoctests;
pub use error::{Error, Result};
pub use pack::{B1, B2, B3, B4, B8, Bits, Packing};
pub use par::Parallelism;
