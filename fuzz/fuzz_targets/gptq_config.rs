#![no_main]
//! See `quant_kernels::fuzz_checks::gptq_config`: typed errors, never a panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    quant_kernels::fuzz_checks::gptq_config(data);
});
