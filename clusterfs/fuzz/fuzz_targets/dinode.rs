//! `cargo fuzz run dinode`: see `clusterfs_fuzz::dinode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterfs_fuzz::dinode(data));
