//! Counters of the lock traffic, in the Prometheus text format (version
//! 0.0.4): per lockspace, the lock requests of local callers against the
//! requests other nodes send to resources mastered here, grants, blocking
//! callbacks and unlocks; and process-wide counters a lock user keeps
//! (the cluster filesystem's glock demotes and invalidations).
//!
//! They are read through the control socket (`metrics`, see
//! [`crate::driver::ctl`]) and, when [`crate::DlmConfig::metrics`] is set,
//! as `GET /metrics` over HTTP ([`serve_http`], also used by cmand and
//! tgtd). Counters only go up; a reader takes rates itself.
//!
//! The HTTP side is std's `TcpListener` and a few lines, not a crate: the
//! endpoint answers one GET with one text body, and the daemons using it
//! (the dlm's users, cmand, tgtd) are threads-and-sockets programs that an
//! HTTP stack with its own runtime would only weigh down.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A counter that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero (for statics).
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Glock demotes of the cluster filesystem in this process: transitions
/// to a weaker state that another node's request (or a local one) asked
/// for. Counted by clusterfs where a demote starts.
pub static GLOCK_DEMOTES: Counter = Counter::new();
/// Glock invalidations: cached pages (and metadata, unless going to DF)
/// dropped before a demote lets another node change them.
pub static GLOCK_INVALIDATIONS: Counter = Counter::new();

/// One lockspace's counters (or one shard's part of them: a line of its
/// own each, summed when read).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct LsCounters {
    /// Lock and convert requests of this process's callers.
    pub local_requests: Counter,
    /// Lock and convert requests other nodes sent here (to a master copy).
    pub remote_requests: Counter,
    /// Grants this process's locks got (new locks and conversions).
    pub grants: Counter,
    /// Blocking callbacks this process's locks got.
    pub blocking_callbacks: Counter,
    /// Unlocks of this process's callers.
    pub unlocks: Counter,
    /// Directory lookups sent to another node: a first use here of a
    /// resource whose directory entry lies there.
    pub lookups_sent: Counter,
    /// Plock operations of this process's callers (fcntl locks, flock,
    /// unlocks and the drops at close), answered by the plock master.
    pub plock_requests: Counter,
}

impl LsCounters {
    /// The sum of a lockspace's per-shard counters.
    pub fn sum(parts: &[LsCounters]) -> LsCounters {
        let t = LsCounters::default();
        for p in parts {
            t.local_requests.add(p.local_requests.get());
            t.remote_requests.add(p.remote_requests.get());
            t.grants.add(p.grants.get());
            t.blocking_callbacks.add(p.blocking_callbacks.get());
            t.unlocks.add(p.unlocks.get());
            t.lookups_sent.add(p.lookups_sent.get());
            t.plock_requests.add(p.plock_requests.get());
        }
        t
    }
}

/// Writes the `# HELP` and `# TYPE` lines of counter `name`.
pub fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
}

/// A label value escaped as the text format wants (`\`, `"`, newline).
pub fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The text of the lockspaces' counters (`(name, counters)`, in order)
/// and of the process-wide ones.
pub fn render(lockspaces: &[(String, Arc<LsCounters>)]) -> String {
    let mut s = String::new();
    header(
        &mut s,
        "dlm_lock_requests_total",
        "Lock and convert requests: of local callers, or sent by other nodes to resources mastered here.",
    );
    for (name, c) in lockspaces {
        let ls = label(name);
        for (origin, v) in [("local", &c.local_requests), ("remote", &c.remote_requests)] {
            let _ = writeln!(
                s,
                "dlm_lock_requests_total{{lockspace=\"{ls}\",origin=\"{origin}\"}} {}",
                v.get()
            );
        }
    }
    type Field = fn(&LsCounters) -> &Counter;
    let per_ls: [(&str, &str, Field); 5] = [
        (
            "dlm_grants_total",
            "Grants of this process's locks (new locks and conversions).",
            |c| &c.grants,
        ),
        (
            "dlm_blocking_callbacks_total",
            "Blocking callbacks (basts) of this process's locks.",
            |c| &c.blocking_callbacks,
        ),
        (
            "dlm_unlocks_total",
            "Unlocks of this process's callers.",
            |c| &c.unlocks,
        ),
        (
            "dlm_directory_lookups_sent_total",
            "Directory lookups sent to another node (first uses of resources whose directory entry lies there).",
            |c| &c.lookups_sent,
        ),
        (
            "dlm_plock_requests_total",
            "Plock operations of this process's callers (fcntl locks, flock, unlocks, drops at close), each answered by the plock master.",
            |c| &c.plock_requests,
        ),
    ];
    for (metric, help, field) in per_ls {
        header(&mut s, metric, help);
        for (name, c) in lockspaces {
            let _ = writeln!(
                s,
                "{metric}{{lockspace=\"{}\"}} {}",
                label(name),
                field(c).get()
            );
        }
    }
    for (metric, help, c) in [
        (
            "clusterfs_glock_demotes_total",
            "Glock demotes of the cluster filesystem in this process.",
            &GLOCK_DEMOTES,
        ),
        (
            "clusterfs_glock_invalidations_total",
            "Glock cache invalidations of the cluster filesystem in this process.",
            &GLOCK_INVALIDATIONS,
        ),
    ] {
        header(&mut s, metric, help);
        let _ = writeln!(s, "{metric} {}", c.get());
    }
    s
}

/// The value of sample `name` with labels exactly `labels` (`a="x",b="y"`,
/// empty for none) in text `text`, if present: for tests and for readers
/// like luci.
pub fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    let key = if labels.is_empty() {
        name.to_string()
    } else {
        format!("{name}{{{labels}}}")
    };
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The sum of every sample of `name`, whatever its labels, whose labels
/// contain each of `having` (`origin="remote"`).
pub fn sum(text: &str, name: &str, having: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(r) => r.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            having
                .iter()
                .all(|h| labels.split(',').any(|l| l == *h))
                .then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// A running HTTP endpoint answering `GET /metrics` with `render()`.
pub struct HttpEndpoint {
    addr: SocketAddr,
}

impl HttpEndpoint {
    /// The address it listens on (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Serves `GET /metrics` on `addr` from a thread of its own, one client
/// at a time (each given 2 s to send its request). Lives as long as the
/// process; `render` returning `None` (its source is gone) stops it.
pub fn serve_http(
    addr: SocketAddr,
    render: impl Fn() -> Option<String> + Send + 'static,
) -> std::io::Result<HttpEndpoint> {
    serve_listener(TcpListener::bind(addr)?, render)
}

/// [`serve_http`] on a bound listener (a daemon binds before it forks and
/// starts the thread after).
pub fn serve_listener(
    listener: TcpListener,
    render: impl Fn() -> Option<String> + Send + 'static,
) -> std::io::Result<HttpEndpoint> {
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(c) = conn else { continue };
                if let Ok(false) = answer(c, &render) {
                    return;
                }
            }
        })?;
    Ok(HttpEndpoint { addr })
}

/// Reads one request's head (at most 8 KiB) and answers it; false when
/// the source is gone.
fn answer(mut c: TcpStream, render: &impl Fn() -> Option<String>) -> std::io::Result<bool> {
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = c.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let mut live = true;
    let (status, body) = match (words.next(), words.next()) {
        (Some("GET"), Some("/metrics")) => match render() {
            Some(text) => ("200 OK", text),
            None => {
                live = false;
                ("503 Service Unavailable", "gone\n".to_string())
            }
        },
        (Some("GET"), Some(_)) => ("404 Not Found", "only /metrics here\n".to_string()),
        _ => ("405 Method Not Allowed", "GET /metrics only\n".to_string()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    c.write_all(reply.as_bytes())?;
    Ok(live)
}

/// Fetches `http://addr/metrics` (for tests and tools): the body.
pub fn fetch_http(addr: SocketAddr) -> std::io::Result<String> {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        c,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut s = String::new();
    c.read_to_string(&mut s)?;
    let (head, body) = s.split_once("\r\n\r\n").unwrap_or((&s, ""));
    if !head.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!(
            "metrics endpoint {addr}: {}",
            head.lines().next().unwrap_or("no answer")
        )));
    }
    Ok(body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format_has_each_lockspace_and_reads_back() {
        let a = Arc::new(LsCounters::default());
        a.local_requests.add(3);
        a.remote_requests.add(2);
        a.unlocks.inc();
        let b = Arc::new(LsCounters::default());
        b.remote_requests.add(5);
        let text = render(&[("a".into(), a), ("b\"x".into(), b)]);
        assert_eq!(
            sample(
                &text,
                "dlm_lock_requests_total",
                "lockspace=\"a\",origin=\"local\""
            ),
            Some(3.0)
        );
        assert_eq!(
            sample(&text, "dlm_unlocks_total", "lockspace=\"a\""),
            Some(1.0)
        );
        assert!(text.contains("lockspace=\"b\\\"x\",origin=\"remote\"} 5"));
        assert_eq!(
            sum(&text, "dlm_lock_requests_total", &["origin=\"remote\""]),
            7.0
        );
        assert_eq!(sum(&text, "dlm_lock_requests_total", &[]), 10.0);
        assert!(sample(&text, "clusterfs_glock_demotes_total", "").is_some());
        // Every sample line belongs to a declared counter.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} counter")), "{l}");
        }
    }

    #[test]
    fn http_endpoint_serves_metrics_only() {
        let n = Arc::new(AtomicU64::new(0));
        let n2 = n.clone();
        let ep = serve_http("127.0.0.1:0".parse().unwrap(), move || {
            Some(format!("x_total {}\n", n2.fetch_add(1, Ordering::SeqCst)))
        })
        .unwrap();
        assert_eq!(fetch_http(ep.addr()).unwrap(), "x_total 0\n");
        assert_eq!(fetch_http(ep.addr()).unwrap(), "x_total 1\n");
        let mut c = TcpStream::connect(ep.addr()).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert!(s.starts_with("HTTP/1.1 404"), "{s}");
        assert_eq!(n.load(Ordering::SeqCst), 2);
    }
}
