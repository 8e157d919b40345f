//! Against the upstream libraries: vectors written by hqq, GPTQModel / auto-gptq, AutoAWQ and
//! torch, checkpoints and UQFF files written by those tools and mistral.rs, and the committed
//! fuzz regressions of every reader. One test binary (each file is a module) so the suite
//! compiles and links once.

#[path = "../common/mod.rs"]
mod common;

mod awq_fp8_checkpoints;
mod awq_vectors;
mod fp8_vectors;
mod fuzz_regressions;
mod gptq_checkpoints;
mod gptq_vectors;
mod hqq_quantize;
mod hqq_vectors;
mod uqff;

/// The fuzz targets' bodies (shared with `fuzz/`), replayed on the committed inputs.
#[path = "../../fuzz/checks.rs"]
mod fuzz_checks;
