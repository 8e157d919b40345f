#![no_main]
//! See `checks::checkpoint_dir`: typed errors, never a panic, nothing read
//! outside its temp dir.

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    checks::checkpoint_dir(data);
});
