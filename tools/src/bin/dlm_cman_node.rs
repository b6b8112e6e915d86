//! dlm_cman_node — hidden, test-only: a small lock-using process whose dlm
//! membership comes from the node's cmand (`cman::dlm_membership`), for
//! `tests/tests/dlm_cman.rs`. Not installed, not a user tool.
//!
//! It writes `dlm_cman_node.pid` into the node's state dir (so fence_lab
//! kills it with its node), listens for dlm peers on the node's IP at
//! `--port`, joins lockspace `--ls`, prints `running`, then `--iters` times
//! takes EX on `counter`, increments the counter file in `--dir` and logs
//! the value it read and the wall-clock time in ms to `log.<node id>`,
//! unlocks (stopping early once the file `stop` exists in `--dir`); prints `done` and waits
//! for stdin to close. It exits with code 3 the moment its connection to
//! cmand breaks (a lock user must stop writing before its node is fenced).
//!
//! For `tests/tests/cman_restart.rs`: `--hold-ms N` keeps the EX lock N ms
//! after each increment, appending a line `NODE PID HOLD WALL_MS` to the
//! file `writes` in `--dir` every 5 ms meanwhile (two holds that
//! interleave there are two holders at once); `--on-lost ignore` stands
//! for a cluster process that does not withdraw when its cmand is lost:
//! it goes on writing under the lock it holds until it is killed.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cman::dlm_membership::{group_name, CmanMembership};
use dlm::{Dlm, DlmConfig, Flags, Mode};

#[derive(Parser)]
#[command(hide = true, about = "test-only dlm node on cmand membership")]
struct Args {
    /// The node's cmand state dir.
    #[arg(long)]
    state_dir: PathBuf,
    /// dlm TCP port (the same on every node).
    #[arg(long)]
    port: u16,
    /// Lockspace.
    #[arg(long)]
    ls: String,
    /// Shared directory of the counter and the logs.
    #[arg(long)]
    dir: PathBuf,
    /// Increments to make.
    #[arg(long)]
    iters: u64,
    /// Keep the EX lock this long after each increment, writing under it.
    #[arg(long, default_value_t = 0)]
    hold_ms: u64,
    /// What to do when the connection to cmand breaks: `stop` (exit 3) or
    /// `ignore` (go on writing: a process that never withdraws).
    #[arg(long, default_value = "stop")]
    on_lost: String,
}

/// One hold of the EX lock: a line to `writes` every 5 ms for `ms`, or
/// for ever once cmand is lost and `stubborn`.
fn write_under_lock(
    dir: &Path,
    me: u32,
    hold: u64,
    ms: u64,
    lost: &std::sync::atomic::AtomicBool,
    stubborn: bool,
) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("writes"))?;
    let end = std::time::Instant::now() + Duration::from_millis(ms);
    loop {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis();
        // One write(2) per line: O_APPEND keeps lines whole and in the
        // order they landed.
        f.write_all(format!("{me} {} {hold} {wall}\n", std::process::id()).as_bytes())?;
        std::thread::sleep(Duration::from_millis(5));
        let keep = stubborn && lost.load(std::sync::atomic::Ordering::SeqCst);
        if std::time::Instant::now() >= end && !keep {
            return Ok(());
        }
    }
}

/// Reads counter file `counter`, writes counter+1 by rename, logs the old
/// value (a value logged twice means two holders at once).
fn increment(dir: &Path, me: u32, log: &mut std::fs::File) -> Result<u64> {
    let path = dir.join("counter");
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(&path) {
        f.read_to_string(&mut s)?;
    }
    let v: u64 = if s.trim().is_empty() {
        0
    } else {
        s.trim().parse().context("counter file")?
    };
    let tmp = dir.join(format!("counter.tmp.{me}"));
    std::fs::write(&tmp, format!("{}\n", v + 1))?;
    std::fs::rename(&tmp, &path)?;
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    writeln!(log, "{v} {ms}")?;
    Ok(v)
}

/// Exit code when the node's cmand is gone.
const LOST_CMAND: i32 = 3;

fn main() -> Result<()> {
    tools::init_logging();
    let a = Args::parse();
    if a.iters == 0 {
        bail!("--iters must be positive");
    }
    std::fs::write(
        a.state_dir.join("dlm_cman_node.pid"),
        format!("{}\n", std::process::id()),
    )?;
    let stubborn = match a.on_lost.as_str() {
        "stop" => false,
        "ignore" => true,
        other => bail!("--on-lost {other}: stop or ignore"),
    };
    let m = CmanMembership::join(&a.state_dir, &group_name(&a.ls), Duration::from_secs(60))?;
    let lost = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let lost2 = lost.clone();
    // A lock user whose cmand is gone stops at once: its node is about to
    // be fenced and its locks recovered elsewhere.
    m.on_lost(Box::new(move || {
        if stubborn {
            eprintln!("dlm_cman_node: lost cmand: going on (--on-lost ignore)");
            lost2.store(true, std::sync::atomic::Ordering::SeqCst);
            return;
        }
        eprintln!("dlm_cman_node: lost cmand: stopping");
        std::process::exit(LOST_CMAND);
    }));
    let peers = m.peer_addrs(a.port);
    let me = m.dlm_node();
    let listen = *peers.get(&me).context("this node has no IP address name")?;
    let cluster = cman::api::Client::connect(&a.state_dir)?
        .status()?
        .cluster_name;
    let key = cman::authkey::load_for_dlm(&a.state_dir, &cluster)?;
    let dlm = Dlm::start(DlmConfig::new(me, listen, peers, key))?;
    let ls = dlm.join(&a.ls, m.as_ref())?;
    while !ls.is_running() {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("running");
    std::io::stdout().flush()?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(a.dir.join(format!("log.{}", me.0)))?;
    for i in 0..a.iters {
        if a.dir.join("stop").exists() {
            break;
        }
        let id = ls.lock(b"counter", Mode::Ex, Flags::empty())?;
        increment(&a.dir, me.0, &mut log)?;
        if a.hold_ms > 0 {
            write_under_lock(&a.dir, me.0, i, a.hold_ms, &lost, stubborn)?;
        }
        let other = format!("r{}", i % 7);
        let p = ls.lock(other.as_bytes(), Mode::Pr, Flags::empty())?;
        ls.unlock(p, Flags::empty(), None)?;
        ls.unlock(id, Flags::empty(), None)?;
    }
    println!("done");
    std::io::stdout().flush()?;
    for line in std::io::stdin().lock().lines() {
        if line.is_err() {
            break;
        }
    }
    Ok(())
}
