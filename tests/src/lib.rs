//! The local cluster lab: helpers for tests that run the real binaries.

use std::path::PathBuf;

/// Path of a binary of this workspace, built by the same `cargo test` run
/// (the `tools` package's integration tests make cargo build every binary).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo test --workspace` (it builds all binaries)",
        path.display()
    );
    path
}

/// True when the external program `name` is on PATH.
pub fn have(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}
