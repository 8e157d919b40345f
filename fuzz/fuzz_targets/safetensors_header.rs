#![no_main]
//! See `quant_kernels::fuzz_checks::safetensors_header`: typed errors, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    quant_kernels::fuzz_checks::safetensors_header(data);
});
