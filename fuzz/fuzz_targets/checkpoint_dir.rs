#![no_main]
//! See `quant_kernels::fuzz_checks::checkpoint_dir`: typed errors, never a panic, nothing read
//! outside its temp dir.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    quant_kernels::fuzz_checks::checkpoint_dir(data);
});
