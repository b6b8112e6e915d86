//! tgtd: the iSCSI target daemon (tgt's flags).
//!
//! `tgtd [-f] [--iscsi portal=ADDR:PORT] [-C N] [-d LEVEL] [--metrics
//! ADDR:PORT]`. Targets and
//! LUNs are configured at run time with `tgtadm`, over the unix socket
//! `socket.N` in the control directory (`--control-dir`, `TGT_CONTROL_DIR`,
//! default /var/run/tgtd).

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;

use anyhow::{bail, Context, Result};
use clap::Parser;
use iscsi::target::driver::{self, WorkerPool};
use iscsi::target::mgmt::MgmtConfig;
use iscsi::target::Registry;

#[derive(Parser, Debug)]
#[command(name = "tgtd", about = "iSCSI target daemon")]
struct Args {
    /// Stay in the foreground.
    #[arg(short = 'f', long = "foreground")]
    foreground: bool,
    /// Low-level driver options: `portal=ADDR:PORT` (repeatable).
    #[arg(long = "iscsi", value_name = "portal=ADDR:PORT")]
    iscsi: Vec<String>,
    /// Control socket number (socket.N), to run several tgtd at once.
    #[arg(short = 'C', long = "control-port", default_value_t = 0)]
    control_port: u32,
    /// Directory of the control socket (default: $TGT_CONTROL_DIR or /var/run/tgtd).
    #[arg(long = "control-dir")]
    control_dir: Option<PathBuf>,
    /// Where LUNs keep persistent reservations across restarts (APTPL).
    #[arg(long = "state-dir", default_value = "/var/lib/tgtd")]
    state_dir: PathBuf,
    /// Debug level (0 = off); sets the log filter when RUST_LOG is unset.
    #[arg(short = 'd', long = "debug", default_value_t = 0)]
    debug: u32,
    /// Threads that run SCSI commands (default: 4 per CPU, at least 8).
    #[arg(long = "workers")]
    workers: Option<usize>,
    /// Serve the per-LUN counters as `GET /metrics` (Prometheus text) here.
    #[arg(long = "metrics", value_name = "ADDR:PORT")]
    metrics: Option<std::net::SocketAddr>,
    /// tgt's -t/--nr_iothreads, accepted for compatibility.
    #[arg(short = 't', long = "nr_iothreads", hide = true)]
    nr_iothreads: Option<usize>,
}

fn portals(opts: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for opt in opts {
        for item in opt.split(',') {
            match item.split_once('=') {
                Some(("portal", addr)) => out.push(addr.to_string()),
                Some(("port", port)) => out.push(format!("0.0.0.0:{port}")),
                _ => bail!("unknown --iscsi option {item:?} (expected portal=ADDR:PORT)"),
            }
        }
    }
    if out.is_empty() {
        out.push("0.0.0.0:3260".into());
    }
    Ok(out)
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tgtd: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    if args.debug > 0 && std::env::var_os("RUST_LOG").is_none() {
        std::env::set_var("RUST_LOG", if args.debug > 1 { "trace" } else { "debug" });
    }
    tools::init_logging();
    tune_malloc();
    let registry = Registry::new();
    let mut listeners = Vec::new();
    for p in portals(&args.iscsi)? {
        listeners.push(driver::bind_portal(&p)?);
    }
    let control_path =
        driver::control_path(&control_dir(args.control_dir.clone()), args.control_port);
    let control = driver::bind_control(&control_path)?;
    let metrics = match args.metrics {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .with_context(|| format!("metrics endpoint {addr}"))?,
        ),
        None => None,
    };
    if !args.foreground {
        // SAFETY: no threads exist yet; daemon() forks and detaches.
        let rc = unsafe { libc::daemon(0, 0) };
        if rc != 0 {
            bail!("daemon: {}", std::io::Error::last_os_error());
        }
    }
    // Served after daemon(): a thread made before would not survive the fork.
    if let Some(l) = metrics {
        let r = Arc::downgrade(&registry);
        dlm::metrics::serve_listener(l, move || {
            r.upgrade().map(|r| iscsi::target::metrics::render(&r))
        })?;
    }
    let threads = thread::available_parallelism().map_or(2, |n| n.get());
    let pool = WorkerPool::new(args.workers.unwrap_or((threads * 4).max(8)));
    for l in listeners {
        let (registry, pool) = (registry.clone(), pool.clone());
        tracing::info!(addr = ?l.local_addr().ok(), "iSCSI portal listening");
        thread::Builder::new()
            .name("iscsi-accept".into())
            .spawn(move || driver::serve_portal(l, registry, pool))
            .context("starting the portal thread")?;
    }
    let cfg = MgmtConfig {
        state_dir: Some(args.state_dir),
    };
    tracing::info!(path = %control_path.display(), "control socket ready");
    driver::serve_control(control, Arc::clone(&registry), cfg);
    Ok(())
}

/// `--control-dir`, else `$TGT_CONTROL_DIR`, else /var/run/tgtd.
fn control_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("TGT_CONTROL_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/tgtd"))
}

/// Keeps the Data-In buffers of large reads (128 KiB and up) on the heap:
/// glibc would otherwise mmap and unmap each one, and fault its pages in.
fn tune_malloc() {
    // SAFETY: mallopt only changes allocator tunables; called before any
    // thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
