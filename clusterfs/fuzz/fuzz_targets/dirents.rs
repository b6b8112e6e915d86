//! `cargo fuzz run dirents`: see `clusterfs_fuzz::dirents`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterfs_fuzz::dirents(data));
