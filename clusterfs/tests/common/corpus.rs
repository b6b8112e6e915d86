//! Replaying committed fuzz corpora as ordinary tests, shared by the
//! `fuzz_corpus` tests of clusterfs, dlm, cman and iscsi (each includes this file
//! with `#[path]`, as the skip rules are shared).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The regular files in `dir`, sorted; none when it is missing.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// A fuzz target: its name and the function `cargo fuzz` calls.
pub type Target<'a> = (&'a str, fn(&[u8]));

/// Runs every input of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`
/// (under `fuzz`) through its target; fails on a panic or an empty corpus.
pub fn replay_all(fuzz: &Path, targets: &[Target<'_>]) {
    for (name, run) in targets {
        let corpus = files(&fuzz.join("corpus").join(name));
        assert!(
            !corpus.is_empty(),
            "corpus of target {name} is empty or missing"
        );
        let regressions = files(&fuzz.join("regressions").join(name));
        for f in corpus.iter().chain(&regressions) {
            let data = std::fs::read(f).unwrap();
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "target {name}: {} panics", f.display());
        }
        println!(
            "{name}: {} corpus inputs, {} regressions",
            corpus.len(),
            regressions.len()
        );
    }
}
