//! Skips that are counted, never silent: a test that cannot do its work
//! here (a tool missing, not root) calls [`skip`] and returns. That appends
//! `SKIPPED: <binary>::<test>: <why>` to the file named by `LAB_SKIP_LOG`
//! (`scripts/test.sh` sets it and counts the test as skipped, not passed).
//! When `CI` is set the skip is a failure instead: `.ci/run` installs every
//! tool the tests use.
//!
//! Shared by the clusterfs tests (`common::skip`) and the lab library
//! (tests/src/lib.rs includes this file by path), so it needs only std.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

/// The environment variable naming the file that collects skip lines.
pub const SKIP_LOG: &str = "LAB_SKIP_LOG";

/// True when the external program `name` is on PATH.
pub fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}

/// The value of `CI` when it asks for a complete run (set, and not empty,
/// `0` or `false`).
pub fn ci() -> Option<String> {
    std::env::var("CI")
        .ok()
        .filter(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// The running test as `<binary>::<test>`: the test binary's name without
/// cargo's hash, and libtest's name of the test's thread.
pub fn test_name() -> String {
    let exe = std::env::current_exe().ok();
    let file = exe
        .as_deref()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("?");
    let binary = file.rsplit_once('-').map_or(file, |(b, _)| b);
    let thread = std::thread::current();
    let test = thread.name().filter(|n| *n != "main").unwrap_or("?");
    format!("{binary}::{test}")
}

/// Records that the running test skips (all or part of) its work because
/// `why`, and lets the caller return. Under CI it panics instead (at the
/// caller's line).
#[track_caller]
pub fn skip(why: &str) {
    if let Some(ci) = ci() {
        panic!("CI={ci} but {why}");
    }
    let line = format!("SKIPPED: {}: {why}\n", test_name());
    eprint!("{line}");
    let Some(path) = std::env::var_os(SKIP_LOG) else {
        return;
    };
    // One write of a short line to an O_APPEND file: lines from tests
    // running in parallel (threads or processes) do not interleave.
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = appended {
        panic!(
            "cannot record the skip in {}: {e}",
            Path::new(&path).display()
        );
    }
}

/// True when `tool` is on PATH; otherwise records a skip (see [`skip`]).
#[track_caller]
pub fn require(tool: &str) -> bool {
    on_path(tool) || {
        skip(&format!("{tool} is missing"));
        false
    }
}
