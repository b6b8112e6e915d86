//! `cargo fuzz run config`: see `cman_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cman_fuzz::config(data));
