//! `cargo fuzz run api`: see `cman_fuzz::api`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cman_fuzz::api(data));
