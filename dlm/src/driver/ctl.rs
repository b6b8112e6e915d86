//! The local control socket: one unix socket per process, answering
//! one-line text commands (`ls`, `lockdump LS`, `plocks LS`, `metrics`)
//! with text.
//!
//! Root-only: the socket is mode 0600 (its directory 0700 when we make
//! it), and a client whose credentials (`SO_PEERCRED`) are neither root's
//! nor this process's user is answered "permission denied" and nothing
//! else.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::thread;

use crate::driver::lockspace::LsInner;
use crate::driver::DlmInner;
use crate::node::{Master, Op};
use crate::plock::{Family, Kind};
use crate::rsb::Queue;
use crate::types::NodeId;

/// A running control socket; removed when dropped.
pub struct CtlServer {
    path: PathBuf,
}

impl CtlServer {
    pub(crate) fn start(
        dir: &Path,
        node: NodeId,
        dlm: Weak<DlmInner>,
    ) -> std::io::Result<CtlServer> {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let path = dir.join(format!("dlm-{}-{}.sock", node.0, std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        thread::Builder::new()
            .name("dlm-ctl".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    let Some(dlm) = dlm.upgrade() else { return };
                    match conn.map(|c| (peer_allowed(&c), c)) {
                        Ok((Ok(()), c)) => {
                            let _ = serve(c, &dlm);
                        }
                        Ok((Err(why), c)) => refuse(c, &why),
                        Err(_) => {}
                    }
                }
            })?;
        Ok(CtlServer { path })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CtlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = UnixStream::connect(&self.path);
    }
}

/// Whether the client on `c` may use a daemon's control socket: root, or
/// the daemon's own user. Else the reason, to send it.
pub fn peer_allowed(c: &UnixStream) -> Result<(), String> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket descriptor and a buffer of `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(format!(
            "permission denied: cannot read the client's credentials: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if cred.uid == 0 || cred.uid == me {
        return Ok(());
    }
    Err(format!(
        "permission denied: this control socket is for root (client uid {})",
        cred.uid
    ))
}

/// Answers a client that may not use the socket: its request is read
/// (briefly), so that it gets the answer rather than a reset.
fn refuse(mut c: UnixStream, why: &str) {
    tracing::warn!(why, "dlm control socket: client refused");
    let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(1)));
    let mut line = String::new();
    let _ = BufReader::new(std::io::Read::take(&c, 4096)).read_line(&mut line);
    let _ = writeln!(c, "error: {why}");
}

const USAGE: &str = "error: usage: ls | lockdump LS | plocks LS | purge LS NODEID | metrics\n";

fn serve(mut c: UnixStream, dlm: &DlmInner) -> std::io::Result<()> {
    let mut line = String::new();
    BufReader::new(c.try_clone()?).read_line(&mut line)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let reply = match words[..] {
        ["ls"] => ls(dlm),
        ["metrics"] => dlm.metrics(),
        [cmd @ ("lockdump" | "plocks" | "purge"), name, ref rest @ ..] => {
            match dlm.lockspaces.read().get(name).cloned() {
                None => format!("error: no lockspace {name}\n"),
                Some(ls) => match (cmd, rest) {
                    ("lockdump", []) => lockdump(&ls),
                    ("plocks", []) => plocks(&ls),
                    ("purge", [node]) => match node.parse::<u32>() {
                        Ok(n) if n > 0 => {
                            ls.purge_orphans(NodeId(n));
                            format!("purging the orphans of node {n} in {name}\n")
                        }
                        _ => format!("error: bad node id {node}\n"),
                    },
                    _ => USAGE.to_string(),
                },
            }
        }
        _ => USAGE.to_string(),
    };
    c.write_all(reply.as_bytes())
}

/// Sends `cmd` to the control socket at `path` and returns the reply.
pub fn query(path: &Path, cmd: &str) -> std::io::Result<String> {
    let mut c = UnixStream::connect(path)?;
    c.write_all(cmd.as_bytes())?;
    c.write_all(b"\n")?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut s = String::new();
    std::io::Read::read_to_string(&mut c, &mut s)?;
    Ok(s)
}

fn ls(dlm: &DlmInner) -> String {
    let mut s = String::new();
    let map = dlm.lockspaces.read();
    let mut names: Vec<&String> = map.keys().collect();
    names.sort();
    for name in names {
        let ls = &map[name];
        let sh = ls.shards[0].lock();
        let n = &sh.node;
        let members: Vec<String> = n.members().iter().map(|m| m.0.to_string()).collect();
        let _ = writeln!(s, "name          {name}");
        let _ = writeln!(s, "id            {}", dlm.node.0);
        let _ = writeln!(s, "generation    {}", n.generation());
        let _ = writeln!(s, "state         {:?}", n.phase());
        let _ = writeln!(s, "members       {}", members.join(" "));
        // A cluster filesystem's journal is slot - 1 (0: none assigned yet).
        let _ = writeln!(s, "slot          {}", n.slot());
        drop(sh);
        // Counted shard by shard (each under its own lock, briefly).
        let (mut locks, mut resources, mut mastered) = (0, 0, 0);
        for shard in ls.shards.iter() {
            let sh = shard.lock();
            locks += sh.node.locks().count();
            for (_, e) in sh.node.resources() {
                resources += 1;
                mastered += usize::from(e.core.is_some());
            }
        }
        let _ = writeln!(s, "locks         {locks}");
        let _ = writeln!(s, "resources     {resources} ({mastered} mastered here)");
        let _ = writeln!(s, "shards        {}\n", ls.shards.len());
    }
    s
}

fn mode_name(m: Option<crate::Mode>) -> &'static str {
    m.map_or("IV", |m| m.name())
}

fn lockdump(ls: &LsInner) -> String {
    let mut s = String::new();
    let pid = std::process::id();
    for shard in ls.shards.iter() {
        let sh = shard.lock();
        let n = &sh.node;
        let mut locks: Vec<_> = n.locks().collect();
        locks.sort_by_key(|l| l.id);
        for l in locks {
            // Where this lock lives; before its request is sent, the
            // resource's master as far as known (0: here, as dlm_tool says).
            let known = l.master.or_else(|| {
                n.resources()
                    .find(|(name, _)| **name == l.name)
                    .and_then(|(_, e)| match e.master {
                        Master::Node(m) => Some(m),
                        _ => None,
                    })
            });
            let master = match known {
                Some(m) if m == n.id() => 0,
                Some(m) => m.0,
                None => u32::MAX,
            };
            let rq = if l.op == Op::None { None } else { l.rqmode };
            let _ = writeln!(
                s,
                "id {} gr {} rq {} pid {pid} master {master} \"{}\"",
                l.id,
                mode_name(l.grmode),
                mode_name(rq),
                l.name
            );
        }
        let mut rsbs: Vec<_> = n
            .resources()
            .filter_map(|(name, e)| e.core.as_ref().map(|c| (name, c)))
            .collect();
        rsbs.sort_by_key(|(name, _)| **name);
        for (name, core) in rsbs {
            if core.is_empty() {
                continue;
            }
            let _ = writeln!(s, "Resource \"{name}\" master {}", n.id());
            for (q, title) in [
                (Queue::Grant, "Granted"),
                (Queue::Convert, "Conversion"),
                (Queue::Wait, "Waiting"),
            ] {
                for l in core.queue(q) {
                    let owner = match l.orphan_of {
                        Some(dead) => format!("orphan of node {dead}"),
                        None => format!("node {}", l.key.node),
                    };
                    let _ = writeln!(
                        s,
                        "  {title:<10} {} gr {} rq {} {owner}",
                        l.key.id,
                        mode_name(l.grmode),
                        mode_name(l.rqmode),
                    );
                }
            }
        }
    }
    s
}

fn plocks(ls: &LsInner) -> String {
    let mut s = String::new();
    let sh = ls.shards[0].lock();
    let n = &sh.node;
    let (table, whose) = match n.plock_table() {
        Some(t) => (t, "all nodes"),
        None => (n.own_plocks(), "this node"),
    };
    let _ = writeln!(
        s,
        "# plocks of {whose}; plock master {}",
        n.plock_master().map_or(0, |m| m.0)
    );
    for (fam, file, p) in table.dump() {
        let kind = match p.kind {
            Kind::Read => "RD",
            Kind::Write => "WR",
        };
        let fam = match fam {
            Family::Posix => "",
            Family::Flock => " flock",
        };
        let end = if p.end == u64::MAX {
            "EOF".to_string()
        } else {
            p.end.to_string()
        };
        let _ = writeln!(
            s,
            "{file} {kind} {}-{end} nodeid {} pid {}{fam}",
            p.start, p.owner.node, p.owner.id
        );
    }
    if n.plock_table().is_some() {
        for (_, file, w) in table.waiting() {
            let p = w.lock;
            let _ = writeln!(
                s,
                "{file} WAITING {:?} {}-{} nodeid {} pid {}",
                p.kind, p.start, p.end, p.owner.node, p.owner.id
            );
        }
    }
    s
}
