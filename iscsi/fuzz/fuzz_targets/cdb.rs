//! `cargo fuzz run cdb`: see `iscsi_fuzz::cdb`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iscsi_fuzz::cdb(data));
