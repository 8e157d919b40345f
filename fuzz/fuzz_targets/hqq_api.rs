#![no_main]
//! HQQ pack/unpack/dequantize on arbitrary shapes and lengths: typed errors, never panics; fast
//! paths equal the reference whenever a call succeeds.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::hqq_api(data);
});
