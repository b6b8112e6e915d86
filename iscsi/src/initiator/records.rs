//! iscsiadm's state directory: node records (what discovery found and
//! `-o update` changed) and session records (one per live session holder,
//! see [`super::holder`]).
//!
//! Layout, as open-iscsi's (`/var/lib/iscsi`):
//! - `nodes/<IQN>/<host>,<port>,<tpgt>/default`: a node record, open-iscsi's
//!   `node.*` keys;
//! - `sessions/<sid>`: a session record (`sid`, `pid`, `target`, `portal`,
//!   `tpgt`, `mountpoint`, `record`), removed by its holder on logout and
//!   by any reader that finds its holder dead;
//! - `sessions/<sid>.pr`: the holder's socket for persistent reservation
//!   commands (see [`super::prsock`]);
//! - `sessions/holder-<sid>.log`: the holder's log.
//!
//! A record file is `key = value` lines between `# BEGIN RECORD` and
//! `# END RECORD` comments; it is replaced by rename, never rewritten in
//! place, so a reader sees the old or the new record.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::url::format_portal;

/// A record: open-iscsi's keys (`node.name`, `node.conn[0].address`...)
/// and their values.
pub type Record = BTreeMap<String, String>;

/// The text of a record file.
pub fn format_record(rec: &Record) -> String {
    let mut text = String::from("# BEGIN RECORD (rhcs-rs iscsiadm)\n");
    for (k, v) in rec {
        text.push_str(&format!("{k} = {v}\n"));
    }
    text.push_str("# END RECORD\n");
    text
}

/// A record from its file's text: `key = value` lines, `#` comments
/// skipped, other lines ignored.
pub fn parse_record(text: &str) -> Record {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Reads a record file.
pub fn read_record(path: &Path) -> io::Result<Record> {
    let text = fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?;
    Ok(parse_record(&text))
}

/// Writes a record file (creating its directory), replacing it atomically.
pub fn write_record(path: &Path, rec: &Record) -> io::Result<()> {
    fs::create_dir_all(path.parent().expect("record has a parent"))?;
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, format_record(rec))?;
    fs::rename(&tmp, path)
}

/// A node record's portal: (address, port, portal group tag).
pub fn node_portal(rec: &Record) -> (String, u16, String) {
    let host = rec.get("node.conn[0].address").cloned().unwrap_or_default();
    let port = rec
        .get("node.conn[0].port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(3260);
    let tpgt = rec.get("node.tpgt").cloned().unwrap_or_else(|| "1".into());
    (host, port, tpgt)
}

/// What SendTargets discovery at `discovery` (address, port) reported: a
/// target `name` at `portal` (address, port) in portal group `tpgt`. Keys
/// set by hand before (`-o update`) stay, defaults fill the rest.
pub struct Discovered<'a> {
    pub name: &'a str,
    pub portal: (&'a str, u16),
    pub tpgt: &'a str,
    pub discovery: (&'a str, u16),
}

impl Discovered<'_> {
    /// Writes what discovery found into a node record.
    pub fn update(&self, rec: &mut Record) {
        let mut set = |k: &str, v: String| rec.insert(k.to_string(), v);
        set("node.name", self.name.to_string());
        set("node.tpgt", self.tpgt.to_string());
        set("node.conn[0].address", self.portal.0.to_string());
        set("node.conn[0].port", self.portal.1.to_string());
        set("node.discovery_address", self.discovery.0.to_string());
        set("node.discovery_port", self.discovery.1.to_string());
        set("node.discovery_type", "send_targets".to_string());
        rec.entry("node.session.auth.authmethod".into())
            .or_insert_with(|| "None".into());
        rec.entry("node.startup".into())
            .or_insert_with(|| "manual".into());
    }
}

/// A live session, as its holder recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRecord {
    pub sid: u32,
    /// The holder's process id.
    pub pid: i32,
    pub target: String,
    /// `ADDR:PORT`.
    pub portal: String,
    pub tpgt: String,
    /// The FUSE mount of its LUN files.
    pub mountpoint: PathBuf,
    /// The node record it logged in with.
    pub record: PathBuf,
}

impl SessionRecord {
    /// The record's keys.
    pub fn to_record(&self) -> Record {
        [
            ("sid", self.sid.to_string()),
            ("pid", self.pid.to_string()),
            ("target", self.target.clone()),
            ("portal", self.portal.clone()),
            ("tpgt", self.tpgt.clone()),
            ("mountpoint", self.mountpoint.display().to_string()),
            ("record", self.record.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// From the record's keys (missing numbers read as 0).
    pub fn from_record(rec: &Record) -> SessionRecord {
        let get = |k: &str| rec.get(k).cloned().unwrap_or_default();
        SessionRecord {
            sid: get("sid").parse().unwrap_or(0),
            pid: get("pid").parse().unwrap_or(0),
            target: get("target"),
            portal: get("portal"),
            tpgt: get("tpgt"),
            mountpoint: PathBuf::from(get("mountpoint")),
            record: PathBuf::from(get("record")),
        }
    }
}

/// True while process `pid` exists.
pub fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// The state directory (`--state-dir`, default `/var/lib/iscsi`).
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn nodes_dir(&self) -> PathBuf {
        self.root.join("nodes")
    }

    /// Where session records and holder logs live.
    pub fn sessions_dir(&self) -> PathBuf {
        self.root.join("sessions")
    }

    /// The session record file of `sid`.
    pub fn session_path(&self, sid: u32) -> PathBuf {
        self.sessions_dir().join(sid.to_string())
    }

    /// The socket on which the holder of `sid` runs persistent
    /// reservation commands for fence_scsi ([`super::prsock`]).
    pub fn pr_socket(&self, sid: u32) -> PathBuf {
        self.sessions_dir().join(format!("{sid}.pr"))
    }

    /// The log file of the holder of `sid`.
    pub fn holder_log(&self, sid: u32) -> PathBuf {
        self.sessions_dir().join(format!("holder-{sid}.log"))
    }

    /// The node record file of a target at a portal.
    pub fn node_path(&self, target: &str, host: &str, port: u16, tpgt: &str) -> PathBuf {
        self.nodes_dir()
            .join(target)
            .join(format!("{host},{port},{tpgt}"))
            .join("default")
    }

    /// All node records, as (path, record), by path.
    pub fn nodes(&self) -> io::Result<Vec<(PathBuf, Record)>> {
        let mut out = Vec::new();
        let Ok(targets) = fs::read_dir(self.nodes_dir()) else {
            return Ok(out);
        };
        for t in targets.flatten() {
            for p in fs::read_dir(t.path())?.flatten() {
                let path = p.path().join("default");
                if let Ok(rec) = read_record(&path) {
                    out.push((path, rec));
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The node records of `target` (any when None) at `portal` (any when
    /// None).
    pub fn matching_nodes(
        &self,
        target: Option<&str>,
        portal: Option<&(String, u16)>,
    ) -> io::Result<Vec<(PathBuf, Record)>> {
        Ok(self
            .nodes()?
            .into_iter()
            .filter(|(_, r)| {
                target.is_none_or(|t| r.get("node.name").map(String::as_str) == Some(t))
            })
            .filter(|(_, r)| {
                let (h, p, _) = node_portal(r);
                portal.is_none_or(|(ph, pp)| *ph == h && *pp == p)
            })
            .collect())
    }

    /// The live sessions, by sid; records whose holder died are removed.
    pub fn sessions(&self) -> io::Result<Vec<SessionRecord>> {
        let mut out = Vec::new();
        let Ok(dir) = fs::read_dir(self.sessions_dir()) else {
            return Ok(out);
        };
        for e in dir.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".log") || name.ends_with(".tmp") || name.ends_with(".pr") {
                continue;
            }
            let Ok(rec) = read_record(&e.path()) else {
                continue;
            };
            let s = SessionRecord::from_record(&rec);
            if s.pid > 0 && pid_alive(s.pid) {
                out.push(s);
            } else {
                let _ = fs::remove_file(e.path()); // stale: its holder died
            }
        }
        out.sort_by_key(|s| s.sid);
        Ok(out)
    }

    /// The lowest sid no live session uses.
    pub fn next_sid(&self) -> io::Result<u32> {
        let used: Vec<u32> = self.sessions()?.iter().map(|s| s.sid).collect();
        Ok((1..).find(|s| !used.contains(s)).expect("a free sid"))
    }
}

/// The by-path name of a LUN file, as udev names it:
/// `ip-ADDR:PORT-iscsi-IQN-lun-N`.
pub fn by_path_name(host: &str, port: u16, target: &str, lun: u64) -> String {
    format!("ip-{}-iscsi-{target}-lun-{lun}", format_portal(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> Record {
        let mut rec = Record::new();
        Discovered {
            name: "iqn.2026-11.x:disk",
            portal: ("127.0.1.1", 3261),
            tpgt: "1",
            discovery: ("127.0.1.1", 3261),
        }
        .update(&mut rec);
        rec
    }

    #[test]
    fn record_text_is_open_iscsi_key_value_lines() {
        let rec = node();
        let text = format_record(&rec);
        assert!(text.starts_with("# BEGIN RECORD"), "{text}");
        assert!(text.ends_with("# END RECORD\n"), "{text}");
        assert!(
            text.contains("\nnode.name = iqn.2026-11.x:disk\n"),
            "{text}"
        );
        assert!(text.contains("\nnode.conn[0].port = 3261\n"), "{text}");
        assert!(text.contains("\nnode.startup = manual\n"), "{text}");
        assert_eq!(parse_record(&text), rec);
        // Comments and lines without " = " are skipped; values are trimmed.
        let r = parse_record("# c\nnode.a = 1 \ngarbage\nnode.b = x = y\n");
        assert_eq!(r.len(), 2);
        assert_eq!(r["node.a"], "1");
        assert_eq!(r["node.b"], "x = y");
    }

    #[test]
    fn discovery_keeps_keys_set_by_hand() {
        let mut rec = node();
        rec.insert("node.session.auth.authmethod".into(), "CHAP".into());
        rec.insert("node.startup".into(), "automatic".into());
        Discovered {
            name: "iqn.2026-11.x:disk",
            portal: ("127.0.1.1", 3262),
            tpgt: "2",
            discovery: ("127.0.1.9", 3260),
        }
        .update(&mut rec);
        assert_eq!(rec["node.session.auth.authmethod"], "CHAP");
        assert_eq!(rec["node.startup"], "automatic");
        assert_eq!(
            node_portal(&rec),
            ("127.0.1.1".to_string(), 3262, "2".to_string())
        );
        assert_eq!(rec["node.discovery_address"], "127.0.1.9");
        // A record without a portal reads as the defaults.
        assert_eq!(
            node_portal(&Record::new()),
            (String::new(), 3260, "1".into())
        );
    }

    #[test]
    fn session_record_round_trips() {
        let s = SessionRecord {
            sid: 3,
            pid: 4242,
            target: "iqn.t".into(),
            portal: "127.0.1.1:3260".into(),
            tpgt: "1".into(),
            mountpoint: "/run/iscsi/by-path/.session-3".into(),
            record: "/var/lib/iscsi/nodes/iqn.t/127.0.1.1,3260,1/default".into(),
        };
        let text = format_record(&s.to_record());
        assert!(text.contains("\npid = 4242\n"), "{text}");
        assert_eq!(SessionRecord::from_record(&parse_record(&text)), s);
    }

    #[test]
    fn state_dir_finds_nodes_and_drops_dead_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        assert!(state.nodes().unwrap().is_empty());
        let rec = node();
        let path = state.node_path("iqn.2026-11.x:disk", "127.0.1.1", 3261, "1");
        write_record(&path, &rec).unwrap();
        let other = state.node_path("iqn.2026-11.x:other", "127.0.1.2", 3260, "1");
        let mut rec2 = rec.clone();
        rec2.insert("node.name".into(), "iqn.2026-11.x:other".into());
        rec2.insert("node.conn[0].address".into(), "127.0.1.2".into());
        rec2.insert("node.conn[0].port".into(), "3260".into());
        write_record(&other, &rec2).unwrap();
        assert_eq!(state.nodes().unwrap().len(), 2);
        let by_target = state
            .matching_nodes(Some("iqn.2026-11.x:disk"), None)
            .unwrap();
        assert_eq!(by_target, vec![(path.clone(), rec.clone())]);
        let by_portal = state
            .matching_nodes(None, Some(&("127.0.1.2".to_string(), 3260)))
            .unwrap();
        assert_eq!(by_portal.len(), 1);
        assert_eq!(by_portal[0].0, other);

        // A live session (our own pid) stays, a dead one is removed.
        let mut live = SessionRecord::from_record(&Record::new());
        live.sid = 1;
        live.pid = std::process::id() as i32;
        write_record(&state.session_path(1), &live.to_record()).unwrap();
        let mut dead = live.clone();
        dead.sid = 2;
        dead.pid = i32::MAX;
        write_record(&state.session_path(2), &dead.to_record()).unwrap();
        fs::write(state.holder_log(2), "log").unwrap();
        assert_eq!(state.sessions().unwrap(), vec![live]);
        assert!(!state.session_path(2).exists());
        assert_eq!(state.next_sid().unwrap(), 2);
    }

    #[test]
    fn by_path_names_as_udev() {
        assert_eq!(
            by_path_name("127.0.1.1", 3260, "iqn.t", 0),
            "ip-127.0.1.1:3260-iscsi-iqn.t-lun-0"
        );
    }
}
