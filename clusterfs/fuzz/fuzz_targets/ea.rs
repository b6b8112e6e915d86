//! `cargo fuzz run ea`: see `clusterfs_fuzz::ea`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterfs_fuzz::ea(data));
