//! `cargo fuzz run superblock`: see `clusterfs_fuzz::superblock`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterfs_fuzz::superblock(data));
