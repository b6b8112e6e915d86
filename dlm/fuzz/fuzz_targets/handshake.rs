//! `cargo fuzz run handshake`: see `dlm_fuzz::handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| dlm_fuzz::handshake(data));
