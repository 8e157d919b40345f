//! The CUDA C kernels of `../ptx`, run on the CPU through the shim, against the crate's
//! references: one module per kernel source. One test binary so it compiles and links once
//! (and `scripts/emu_asan.sh` rebuilds one executable under AddressSanitizer).

mod awq;
mod fp8;
mod gemv;
mod gptq;
mod hqq;
mod qgemm;
mod qgemv;
