//! The daemons' counters, sampled every [`EVERY`] for the plots: the dlm
//! users' lock requests (local and remote) and glock demotes through their
//! control sockets (`metrics`), tgtd's per-LUN commands and bytes through
//! its control socket, and cmand's membership events and messages through
//! its API. Each reading is turned into rates against the one before, per
//! source: a process that restarts (a new control socket, counters from
//! zero) or goes away adds nothing rather than a jump.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use dlm::metrics::sum;
use parking_lot::Mutex;

use crate::util::now_ms;

/// How often the counters are read.
pub const EVERY: Duration = Duration::from_secs(1);
/// Rates kept (10 minutes at [`EVERY`]).
pub const RATES_KEPT: usize = 600;
/// How long one daemon gets to answer.
const TIMEOUT: Duration = Duration::from_secs(1);

/// The counters luci plots, summed over one source (a process).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Counts {
    /// Lock and convert requests of the process's own callers.
    pub lock_local: f64,
    /// Requests other nodes sent to the process's master copies.
    pub lock_remote: f64,
    /// Glock demotes.
    pub demotes: f64,
    /// tgtd's READ and WRITE commands.
    pub iscsi_cmds: f64,
    /// Their bytes.
    pub iscsi_bytes: f64,
}

impl Counts {
    fn fields(&self) -> [f64; 5] {
        [
            self.lock_local,
            self.lock_remote,
            self.demotes,
            self.iscsi_cmds,
            self.iscsi_bytes,
        ]
    }

    /// The counts of a dlm user's `metrics` text.
    pub fn of_dlm(text: &str) -> Counts {
        Counts {
            lock_local: sum(text, "dlm_lock_requests_total", &["origin=\"local\""]),
            lock_remote: sum(text, "dlm_lock_requests_total", &["origin=\"remote\""]),
            demotes: sum(text, "clusterfs_glock_demotes_total", &[]),
            ..Counts::default()
        }
    }

    /// The counts of tgtd's `metrics` text.
    pub fn of_tgtd(text: &str) -> Counts {
        Counts {
            iscsi_cmds: sum(text, "tgtd_lun_commands_total", &[]),
            iscsi_bytes: sum(text, "tgtd_lun_bytes_total", &[]),
            ..Counts::default()
        }
    }
}

/// Rates over one interval, per second.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    /// The end of the interval (ms since the epoch).
    pub at_ms: u64,
    /// Lock requests of local callers per second.
    pub lock_local: f64,
    /// Lock requests from other nodes per second.
    pub lock_remote: f64,
    /// Glock demotes per second.
    pub demotes: f64,
    /// iSCSI commands per second.
    pub iops: f64,
    /// iSCSI MB (10^6 bytes) per second.
    pub mbps: f64,
}

/// One reading: counts per source.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reading {
    /// When (ms since the epoch).
    pub at_ms: u64,
    /// Source (control socket name, `tgtd`) → its counts.
    pub sources: BTreeMap<String, Counts>,
}

/// The rates from `a` to `b`: for each source in both, what its counters
/// rose by (a counter that went down counts nothing), per second.
pub fn rate(a: &Reading, b: &Reading) -> Rate {
    let secs = (b.at_ms.saturating_sub(a.at_ms) as f64 / 1000.0).max(0.001);
    let mut d = [0.0; 5];
    for (name, now) in &b.sources {
        let Some(was) = a.sources.get(name) else {
            continue;
        };
        for (k, (n, w)) in now.fields().iter().zip(was.fields()).enumerate() {
            d[k] += (n - w).max(0.0);
        }
    }
    Rate {
        at_ms: b.at_ms,
        lock_local: d[0] / secs,
        lock_remote: d[1] / secs,
        demotes: d[2] / secs,
        iops: d[3] / secs,
        mbps: d[4] / secs / 1e6,
    }
}

/// cmand's counters as last read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CmanCounts {
    /// Views installed, nodes joined, nodes lost, fencings.
    pub views: u64,
    /// Nodes that joined.
    pub joins: u64,
    /// Nodes lost.
    pub losses: u64,
    /// Fencings.
    pub fences: u64,
    /// Protocol packets sent and received.
    pub messages: u64,
}

impl CmanCounts {
    /// The counts of cmand's `metrics` text.
    pub fn of(text: &str) -> CmanCounts {
        let ev = |e: &str| {
            sum(
                text,
                "cman_membership_events_total",
                &[&format!("event=\"{e}\"")],
            ) as u64
        };
        CmanCounts {
            views: ev("view"),
            joins: ev("join"),
            losses: ev("loss"),
            fences: ev("fence"),
            messages: sum(text, "cman_messages_total", &[]) as u64,
        }
    }
}

/// What the sampler shares with the monitor.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Oldest first.
    pub rates: VecDeque<Rate>,
    /// cmand's counters, or why they could not be read.
    pub cman: Option<Result<CmanCounts, String>>,
    /// The sources of the last reading.
    pub sources: Vec<String>,
}

/// Where the counters are read.
#[derive(Clone, Debug)]
pub struct Sources {
    /// The node's cmand state directory.
    pub cman_dir: PathBuf,
    /// tgtd's control socket.
    pub tgtd_socket: PathBuf,
    /// The dlm users' control sockets' directory.
    pub dlm_ctl_dir: PathBuf,
}

/// Sends `cmd` to a dlm control socket, with a timeout.
fn dlm_query(path: &Path, cmd: &str) -> std::io::Result<String> {
    let mut c = UnixStream::connect(path)?;
    c.set_read_timeout(Some(TIMEOUT))?;
    c.set_write_timeout(Some(TIMEOUT))?;
    c.write_all(format!("{cmd}\n").as_bytes())?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    Ok(s)
}

fn tgtd_metrics(socket: &Path) -> Result<String, String> {
    use iscsi::target::mgmt::{Mode, Op, Request};
    let req = Request {
        mode: Some(Mode::Metrics),
        op: Some(Op::Show),
        ..Request::default()
    };
    let r = iscsi::target::driver::send_request(socket, &req).map_err(|e| e.to_string())?;
    match r.code {
        0 => Ok(r.output),
        _ => Err(r.message),
    }
}

fn cman_metrics(dir: &Path) -> Result<CmanCounts, String> {
    let mut c = cman::api::Client::connect(dir).map_err(|e| e.to_string())?;
    c.set_timeout(Some(TIMEOUT)).map_err(|e| e.to_string())?;
    let r = c
        .request(&cman::api::ApiRequest::Metrics)
        .map_err(|e| e.to_string())?;
    Ok(CmanCounts::of(&r.msg.unwrap_or_default()))
}

impl Sources {
    /// Reads every source now; one that does not answer is left out.
    pub fn read(&self) -> Reading {
        let mut sources = BTreeMap::new();
        if let Ok(rd) = std::fs::read_dir(&self.dlm_ctl_dir) {
            for p in rd.filter_map(|e| e.ok().map(|e| e.path())) {
                if p.extension().is_none_or(|x| x != "sock") {
                    continue;
                }
                if let Ok(text) = dlm_query(&p, "metrics") {
                    let name = p.file_name().unwrap_or_default().to_string_lossy();
                    sources.insert(name.into_owned(), Counts::of_dlm(&text));
                }
            }
        }
        if let Ok(text) = tgtd_metrics(&self.tgtd_socket) {
            sources.insert("tgtd".into(), Counts::of_tgtd(&text));
        }
        Reading {
            at_ms: now_ms(),
            sources,
        }
    }

    /// Starts the sampler thread; it ends when `series` has no other owner.
    pub fn sample(self, series: Arc<Mutex<Series>>) {
        let weak = Arc::downgrade(&series);
        drop(series);
        std::thread::Builder::new()
            .name("luci-metrics".into())
            .spawn(move || {
                let mut last = self.read();
                loop {
                    std::thread::sleep(EVERY);
                    let now = self.read();
                    let cman = cman_metrics(&self.cman_dir);
                    let Some(series) = weak.upgrade() else { return };
                    let mut s = series.lock();
                    if s.rates.len() == RATES_KEPT {
                        s.rates.pop_front();
                    }
                    s.rates.push_back(rate(&last, &now));
                    s.cman = Some(cman);
                    s.sources = now.sources.keys().cloned().collect();
                    last = now;
                }
            })
            .expect("spawn the metrics thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at_ms: u64, sources: &[(&str, Counts)]) -> Reading {
        Reading {
            at_ms,
            sources: sources.iter().map(|(n, c)| (n.to_string(), *c)).collect(),
        }
    }

    #[test]
    fn rates_are_per_source_and_a_restart_adds_nothing() {
        let dlm = |local, remote| Counts {
            lock_local: local,
            lock_remote: remote,
            ..Counts::default()
        };
        let a = reading(
            1000,
            &[("a.sock", dlm(10.0, 4.0)), ("b.sock", dlm(100.0, 0.0))],
        );
        // b restarted (counters back near zero), c is new: only a counts.
        let b = reading(
            3000,
            &[
                ("a.sock", dlm(30.0, 8.0)),
                ("b.sock", dlm(5.0, 0.0)),
                ("c.sock", dlm(50.0, 50.0)),
            ],
        );
        let r = rate(&a, &b);
        assert_eq!(r.at_ms, 3000);
        assert_eq!(r.lock_local, 10.0);
        assert_eq!(r.lock_remote, 2.0);
    }

    #[test]
    fn counts_read_from_the_daemons_text() {
        let dlm_text = "dlm_lock_requests_total{lockspace=\"a\",origin=\"local\"} 3\n\
                        dlm_lock_requests_total{lockspace=\"a\",origin=\"remote\"} 2\n\
                        dlm_lock_requests_total{lockspace=\"b\",origin=\"remote\"} 5\n\
                        clusterfs_glock_demotes_total 7\n";
        let c = Counts::of_dlm(dlm_text);
        assert_eq!((c.lock_local, c.lock_remote, c.demotes), (3.0, 7.0, 7.0));
        let tgt = "tgtd_lun_commands_total{tid=\"1\",target=\"t\",lun=\"1\",op=\"read\"} 4\n\
                   tgtd_lun_commands_total{tid=\"1\",target=\"t\",lun=\"1\",op=\"write\"} 6\n\
                   tgtd_lun_bytes_total{tid=\"1\",target=\"t\",lun=\"1\",op=\"read\"} 2048\n";
        let c = Counts::of_tgtd(tgt);
        assert_eq!((c.iscsi_cmds, c.iscsi_bytes), (10.0, 2048.0));
        let cm = CmanCounts::of(
            "cman_membership_events_total{event=\"view\"} 3\n\
             cman_membership_events_total{event=\"loss\"} 1\n\
             cman_messages_total{direction=\"sent\"} 10\n\
             cman_messages_total{direction=\"received\"} 12\n",
        );
        assert_eq!((cm.views, cm.losses, cm.joins, cm.messages), (3, 1, 0, 22));
    }
}
