//! dlm_tool: show the lock state of the processes on this machine, and
//! measure the lock manager.
//!
//! `ls`, `lockdump LS` and `plocks LS` ask every process's control socket
//! (in `--ctl-dir`, default `$DLM_CTL_DIR` or `/tmp/dlm-ctl`). `bench`
//! runs the measurements of `dlm::bench`, starting this program again as
//! its peer process (hidden `bench-peer`). `testnode` (hidden) is a small
//! lock-using process for the multi-process tests.

use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use dlm::{Dlm, DlmConfig, Flags, Mode, NodeId, StaticMembership};

#[derive(Parser)]
#[command(
    name = "dlm_tool",
    about = "Inspect and measure the distributed lock manager"
)]
struct Cli {
    /// Directory of the processes' control sockets [default: $DLM_CTL_DIR
    /// or /tmp/dlm-ctl].
    #[arg(long, global = true)]
    ctl_dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the lockspaces of every process.
    Ls,
    /// Dump the locks of lockspace LS.
    Lockdump {
        /// Lockspace name.
        ls: String,
    },
    /// Dump the POSIX locks of lockspace LS.
    Plocks {
        /// Lockspace name.
        ls: String,
    },
    /// Drop the orphans (PERSISTENT locks nobody adopted) of dead node
    /// NODEID in lockspace LS, on every member (the kernel's dlm_ls_purge).
    Purge {
        /// Lockspace name.
        ls: String,
        /// The dead node whose orphans go.
        nodeid: u32,
    },
    /// Measure lock costs (a few seconds).
    Bench {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The second process of `bench` (started by it; commands on stdin).
    #[command(hide = true)]
    BenchPeer,
    /// Test helper: join a lockspace and increment two shared counter files,
    /// one under an EX lock, one under a POSIX lock.
    #[command(hide = true)]
    Testnode(TestNode),
}

#[derive(clap::Args)]
struct TestNode {
    #[arg(long)]
    id: u32,
    #[arg(long)]
    listen: SocketAddr,
    /// ID=ADDR of every node.
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<(u32, SocketAddr)>,
    #[arg(long, default_value = "test")]
    ls: String,
    /// Directory holding the counter file and the per-node logs.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 200)]
    iters: u32,
    /// The cluster key file (as cmand's `--key-file`); without it,
    /// /etc/cluster/authkey, else a key derived from `--cluster` (with a
    /// warning: it keeps out accidents, not attackers).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Cluster name, for the derived key.
    #[arg(long, default_value = "dlm-testnode")]
    cluster: String,
}

fn parse_peer(s: &str) -> Result<(u32, SocketAddr), String> {
    let (id, addr) = s.split_once('=').ok_or("expected ID=ADDR")?;
    Ok((
        id.parse().map_err(|e| format!("{e}"))?,
        addr.parse().map_err(|e| format!("{e}"))?,
    ))
}

fn sockets(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sock"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    v.sort();
    Ok(v)
}

fn query_all(dir: &Path, cmd: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for s in sockets(dir)? {
        match dlm::driver::ctl::query(&s, cmd) {
            // Control sockets are root-only: say so, do not pass for empty.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                bail!(
                    "{}: permission denied (dlm control sockets are root-only)",
                    s.display()
                )
            }
            Ok(reply) if reply.starts_with("error: permission denied") => {
                bail!(
                    "{}: {}",
                    s.display(),
                    reply.trim_start_matches("error: ").trim()
                )
            }
            Ok(reply) => {
                if sockets(dir)?.len() > 1 {
                    writeln!(
                        out,
                        "# {}",
                        s.file_name().unwrap_or_default().to_string_lossy()
                    )?;
                }
                out.write_all(reply.as_bytes())?;
            }
            Err(e) => tracing::debug!(socket = %s.display(), error = %e, "stale control socket"),
        }
    }
    Ok(())
}

fn bench(json: bool) -> Result<()> {
    // The remote figures come from a second process: this program again,
    // with the hidden `bench-peer` subcommand.
    let peer = dlm::bench::PeerCommand {
        program: std::env::current_exe().context("current_exe")?,
        args: vec!["bench-peer".into()],
    };
    let r = dlm::bench::run(&peer).context("benchmark")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("mutex_ns            {}", r.mutex_ns);
        println!("local_ns            {}", r.local_ns);
        println!("remote_ns           {}", r.remote_ns);
        println!("tcp_rtt_ns          {}", r.tcp_rtt_ns);
        println!("tcp_rtt_hop_ns      {}", r.tcp_rtt_hop_ns);
        println!("request_bytes       {}", r.request_bytes);
        println!("pingpong_per_s      {}", r.pingpong_per_s);
        println!("local_ops_per_s_1   {}", r.local_ops_per_s_1);
        println!("local_ops_per_s_2   {}", r.local_ops_per_s_2);
        println!("local_ops_per_s_4   {}", r.local_ops_per_s_4);
    }
    Ok(())
}

/// Reads counter file `name`, writes counter+1 (atomically, by rename),
/// then logs the old value: a duplicate old value in the logs means two
/// nodes held the lock at once.
fn increment(dir: &Path, name: &str, me: u32, log: &mut std::fs::File) -> Result<u64> {
    let path = dir.join(name);
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(&path) {
        f.read_to_string(&mut s)?;
    }
    let v: u64 = if s.is_empty() {
        0
    } else {
        s.trim().parse().context("counter file")?
    };
    let tmp = dir.join(format!("{name}.tmp.{me}"));
    std::fs::write(&tmp, format!("{}\n", v + 1))?;
    std::fs::rename(&tmp, &path)?;
    writeln!(log, "{v}")?;
    Ok(v)
}

/// The cluster key of a test node, found and checked as cmand does.
fn testnode_key(t: &TestNode) -> Result<dlm::ClusterKey> {
    use cman::authkey;
    let defaults = [PathBuf::from(authkey::DEFAULT_KEY_FILE)];
    let (key, source) = authkey::load(t.key_file.as_deref(), &defaults, &t.cluster)?;
    if source == authkey::KeySource::ClusterName {
        eprintln!("dlm_tool: {}", authkey::derived_key_warning(&t.cluster));
    }
    Ok(dlm::ClusterKey::new(&key)?)
}

fn testnode(t: TestNode, ctl_dir: PathBuf) -> Result<()> {
    let peers: HashMap<NodeId, SocketAddr> =
        t.peers.iter().map(|(i, a)| (NodeId(*i), *a)).collect();
    let key = testnode_key(&t)?;
    let mut cfg = DlmConfig::new(NodeId(t.id), t.listen, peers.clone(), key);
    cfg.ctl_dir = Some(ctl_dir);
    let dlm = Dlm::start(cfg)?;
    let mut ids: Vec<NodeId> = peers.keys().copied().collect();
    ids.sort();
    let membership = StaticMembership::new(&ids);
    let ls = dlm.join(&t.ls, membership.as_ref())?;
    // Commands from the test on stdin: "remove N", "fence N", "quit".
    let m2 = membership.clone();
    let (quit_tx, quit_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            let mut w = line.split_whitespace();
            match (w.next(), w.next().and_then(|n| n.parse().ok())) {
                (Some("remove"), Some(n)) => m2.remove(NodeId(n)),
                (Some("fence"), Some(n)) => m2.fence(NodeId(n)),
                (Some("quit"), _) => break,
                _ => eprintln!("testnode: bad command {line:?}"),
            }
        }
        let _ = quit_tx.send(());
    });
    while !ls.is_running() {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!("running");
    let open_log = |name: String| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(t.dir.join(name))
    };
    let mut log = open_log(format!("log.{}", t.id))?;
    let mut plog = open_log(format!("plog.{}", t.id))?;
    let pid = u64::from(std::process::id());
    for i in 0..t.iters {
        // A second counter under a cluster-wide POSIX lock on byte 0 of file 1.
        ls.plock(1, pid, dlm::plock::Kind::Write, 0, 0, true)?;
        increment(&t.dir, "pcounter", t.id, &mut plog)?;
        ls.punlock(1, pid, 0, 0)?;
        let id = ls.lock(b"counter", Mode::Ex, Flags::empty())?;
        increment(&t.dir, "counter", t.id, &mut log)?;
        // Some PR traffic on other resources too.
        let other = format!("r{}", i % 7);
        let p = ls.lock(other.as_bytes(), Mode::Pr, Flags::empty())?;
        ls.unlock(p, Flags::empty(), None)?;
        ls.unlock(id, Flags::empty(), None)?;
    }
    println!("done");
    std::io::stdout().flush()?;
    let _ = quit_rx.recv();
    Ok(())
}

fn main() -> Result<()> {
    tools::init_logging();
    let cli = Cli::parse();
    let ctl_dir = cli
        .ctl_dir
        .or_else(|| std::env::var_os("DLM_CTL_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/tmp/dlm-ctl"));
    match cli.cmd {
        Cmd::Ls => query_all(&ctl_dir, "ls"),
        Cmd::Lockdump { ls } => query_all(&ctl_dir, &format!("lockdump {ls}")),
        Cmd::Plocks { ls } => query_all(&ctl_dir, &format!("plocks {ls}")),
        Cmd::Purge { ls, nodeid } => {
            if nodeid == 0 {
                bail!("NODEID must be a cluster node id (1 or more)");
            }
            if sockets(&ctl_dir)?.is_empty() {
                bail!(
                    "no DLM process has a control socket in {}",
                    ctl_dir.display()
                );
            }
            query_all(&ctl_dir, &format!("purge {ls} {nodeid}"))
        }
        Cmd::Bench { json } => bench(json),
        Cmd::BenchPeer => dlm::bench::peer_main().context("bench peer"),
        Cmd::Testnode(t) => {
            if t.iters == 0 {
                bail!("--iters must be positive");
            }
            testnode(t, ctl_dir)
        }
    }
}
