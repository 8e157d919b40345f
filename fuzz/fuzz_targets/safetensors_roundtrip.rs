#![no_main]
//! See `quant_kernels::fuzz_checks::safetensors_roundtrip`: what the writer writes reads back
//! equal; misuse is a typed error.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    quant_kernels::fuzz_checks::safetensors_roundtrip(data);
});
