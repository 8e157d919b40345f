#![no_main]
//! See `checks::quant_config`: typed errors, never a panic; an accepted
//! config is within its ranges.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::quant_config(data);
});
