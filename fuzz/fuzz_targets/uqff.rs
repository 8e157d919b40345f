#![no_main]
//! See `checks::uqff`: UQFF readers (0.2.0 blob and file, 1.2.0) on
//! arbitrary bytes; typed errors, never a panic; accepted blobs write back to the same bytes.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::uqff(data);
});
