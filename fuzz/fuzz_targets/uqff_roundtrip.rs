#![no_main]
//! See `quant_kernels::fuzz_checks::uqff_roundtrip`: layer -> UQFF bytes -> layer is the
//! identity for both revisions.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    quant_kernels::fuzz_checks::uqff_roundtrip(data);
});
