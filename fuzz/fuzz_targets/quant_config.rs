#![no_main]
//! See `quant_kernels::fuzz_checks::quant_config`: typed errors, never a panic; an accepted
//! config is within its ranges.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    quant_kernels::fuzz_checks::quant_config(data);
});
