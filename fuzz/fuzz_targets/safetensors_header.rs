#![no_main]
//! See `checks::safetensors_header`: typed errors, never a panic.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::safetensors_header(data);
});
