//! `cargo fuzz run log`: see `clusterfs_fuzz::log`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterfs_fuzz::log(data));
