//! `cargo fuzz run pdu`: see `iscsi_fuzz::pdu`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| iscsi_fuzz::pdu(data));
