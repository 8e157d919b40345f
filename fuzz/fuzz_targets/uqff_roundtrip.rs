#![no_main]
//! See `checks::uqff_roundtrip`: layer -> UQFF bytes -> layer is the
//! identity for both revisions.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::uqff_roundtrip(data);
});
