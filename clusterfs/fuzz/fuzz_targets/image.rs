//! `cargo fuzz run image`: see `clusterfs_fuzz::image`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterfs_fuzz::image(data));
