#![no_main]
//! See `checks::safetensors_roundtrip`: what the writer writes reads back
//! equal; misuse is a typed error.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::safetensors_roundtrip(data);
});
