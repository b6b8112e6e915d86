//! `cargo fuzz run wire`: see `cman_fuzz::wire`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cman_fuzz::wire(data));
