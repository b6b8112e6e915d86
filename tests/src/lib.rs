//! The local cluster lab: helpers for tests that run the real binaries.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

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

/// Starts `cmand -f` for node `127.0.1.N`: its cluster.conf and state in
/// `state`, traffic keyed with `key`, output in `state/cmand.log`.
pub fn spawn_cmand(state: &Path, n: u32, key: &Path) -> Child {
    let log = std::fs::File::create(state.join("cmand.log")).expect("cmand.log");
    Command::new(bin("cmand"))
        .arg("-f")
        .arg("-c")
        .arg(state.join("cluster.conf"))
        .arg("-n")
        .arg(format!("127.0.1.{n}"))
        .arg("--state-dir")
        .arg(state)
        .arg("--key-file")
        .arg(key)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn cmand")
}
