#![no_main]
//! See `checks::gptq_config`: typed errors, never a panic.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::gptq_config(data);
});
