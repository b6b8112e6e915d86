//! `cargo fuzz run rgrp`: see `clusterfs_fuzz::rgrp`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| clusterfs_fuzz::rgrp(data));
