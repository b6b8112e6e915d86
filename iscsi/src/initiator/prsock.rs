//! Persistent reservation commands through a session holder, as sg_persist
//! sends them through the kernel's `/dev/sdX`: on the node's own session.
//!
//! A registration belongs to an I_T nexus (initiator name and ISID), and
//! the holder behind `iscsiadm --login` logs in with an ISID of its own, so
//! a fence agent that logged in by itself would register a nexus that
//! carries none of the node's I/O. The holder therefore answers PERSISTENT
//! RESERVE IN and OUT (nothing else) on a Unix socket beside its session
//! record (`sessions/<sid>.pr`, mode 0600, root or the holder's user by
//! `SO_PEERCRED`), and [`HolderLun`] sends them there, given the LUN file
//! or a link to it (`/dev/disk/by-path/ip-...-lun-1`).
//!
//! One request per connection, one line each way:
//! - request: `<lun file name> <CDB hex> <parameter list hex or -> <allocation length>`;
//! - answer: `OK <Data-In hex or ->`, `SCSI <status> <sense hex or ->`
//!   (a status other than GOOD, after the retries of
//!   [`Lun::execute_checked`]) or `ERR <why>`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};

use super::cdb::Sense;
use super::records::StateDir;
use super::{InitiatorError, Lun, Result};

/// The CDB opcodes a holder runs for others.
const PERSISTENT_RESERVE_IN: u8 = 0x5e;
const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
/// The most Data-In a request may ask for (READ KEYS of 1023 keys).
const MAX_IN: u32 = 8192;
/// How long a client waits for an answer (the holder's commands time out
/// before that).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

fn to_hex(b: &[u8]) -> String {
    if b.is_empty() {
        return "-".into();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s == "-" {
        return Some(Vec::new());
    }
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Root or the holder's own user.
fn peer_allowed(s: &UnixStream) -> std::result::Result<(), String> {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let cred = getsockopt(s, PeerCredentials)
        .map_err(|e| format!("permission denied: cannot read the client's credentials: {e}"))?;
    if cred.uid() == 0 || cred.uid() == nix::unistd::geteuid().as_raw() {
        Ok(())
    } else {
        Err(format!(
            "permission denied: this socket is for root (client uid {})",
            cred.uid()
        ))
    }
}

/// Binds the holder's socket at `path` (root only) and answers on a thread
/// of its own until the process ends; `files` are the LUN files by name.
pub fn serve(path: &Path, files: Vec<(String, Arc<Lun>)>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("binding {}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let files = Arc::new(files);
    std::thread::Builder::new()
        .name("pr-socket".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let files = files.clone();
                let _ = std::thread::Builder::new()
                    .name("pr-client".into())
                    .spawn(move || answer(conn, &files));
            }
        })?;
    Ok(())
}

fn answer(conn: UnixStream, files: &[(String, Arc<Lun>)]) {
    let reply = match peer_allowed(&conn) {
        Err(why) => format!("ERR {why}"),
        Ok(()) => {
            let mut line = String::new();
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            match BufReader::new(&conn).read_line(&mut line) {
                Ok(_) => run_request(line.trim_end(), files),
                Err(e) => format!("ERR reading the request: {e}"),
            }
        }
    };
    let _ = (&conn).write_all(format!("{reply}\n").as_bytes());
}

/// Runs one request line; the answer line.
fn run_request(line: &str, files: &[(String, Arc<Lun>)]) -> String {
    let f: Vec<&str> = line.split(' ').collect();
    let [name, cdb_hex, out_hex, in_len] = f[..] else {
        return "ERR malformed request".into();
    };
    let (Some(cdb), Some(data_out), Ok(in_len)) =
        (from_hex(cdb_hex), from_hex(out_hex), in_len.parse::<u32>())
    else {
        return "ERR malformed request".into();
    };
    match cdb.first() {
        Some(&PERSISTENT_RESERVE_IN | &PERSISTENT_RESERVE_OUT) if cdb.len() == 10 => {}
        _ => return "ERR only PERSISTENT RESERVE IN and OUT are served here".into(),
    }
    if in_len > MAX_IN || data_out.len() > 24 {
        return "ERR request too long".into();
    }
    let Some(lun) = files.iter().find(|(n, _)| n == name).map(|(_, l)| l) else {
        return format!("ERR no LUN file {name:?} in this session");
    };
    debug!(lun = name, cdb = cdb_hex, "persistent reservation command");
    match lun.execute_checked(&cdb, &data_out, in_len) {
        Ok(data) => format!("OK {}", to_hex(&data)),
        Err(InitiatorError::Scsi { status, sense }) => {
            format!("SCSI {status} {}", to_hex(&sense.raw))
        }
        Err(e) => {
            warn!(lun = name, error = %e, "persistent reservation command failed");
            format!("ERR {e}")
        }
    }
}

/// A LUN of a session holder, for persistent reservation commands only:
/// they run on the holder's own session.
#[derive(Clone, Debug)]
pub struct HolderLun {
    socket: PathBuf,
    file: String,
}

impl HolderLun {
    /// The LUN behind `path` (the LUN file in a holder's mount, or a link
    /// to it), among the sessions of `state`.
    pub fn open(path: &Path, state: &StateDir) -> Result<HolderLun> {
        let real = std::fs::canonicalize(path).map_err(|e| {
            InitiatorError::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
        })?;
        let (Some(dir), Some(file)) = (real.parent(), real.file_name()) else {
            return Err(not_ours(path, state));
        };
        let session = state
            .sessions()?
            .into_iter()
            .find(|s| s.mountpoint == dir)
            .ok_or_else(|| not_ours(path, state))?;
        Ok(HolderLun {
            socket: state.pr_socket(session.sid),
            file: file.to_string_lossy().into_owned(),
        })
    }

    /// Runs a PERSISTENT RESERVE CDB on the holder's session; GOOD gives
    /// the Data-In.
    pub fn execute_checked(&self, cdb: &[u8], data_out: &[u8], in_len: u32) -> Result<Vec<u8>> {
        let io_err = |e: io::Error| {
            InitiatorError::Io(io::Error::new(
                e.kind(),
                format!("session holder socket {}: {e}", self.socket.display()),
            ))
        };
        let mut conn = UnixStream::connect(&self.socket).map_err(io_err)?;
        conn.set_read_timeout(Some(CLIENT_TIMEOUT))
            .map_err(io_err)?;
        let req = format!(
            "{} {} {} {in_len}\n",
            self.file,
            to_hex(cdb),
            to_hex(data_out)
        );
        conn.write_all(req.as_bytes()).map_err(io_err)?;
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).map_err(io_err)?;
        parse_answer(line.trim_end())
    }
}

impl super::pr::PersistentReserve for HolderLun {
    fn execute_checked(&self, cdb: &[u8], data_out: &[u8], in_len: u32) -> Result<Vec<u8>> {
        HolderLun::execute_checked(self, cdb, data_out, in_len)
    }
    /// The holder's session stays: it carries the node's I/O.
    fn close(self) -> Result<()> {
        Ok(())
    }
}

fn not_ours(path: &Path, state: &StateDir) -> InitiatorError {
    InitiatorError::BadRequest(format!(
        "{} is not a LUN file of a session in {} (iscsiadm --login first)",
        path.display(),
        state.root().display()
    ))
}

fn parse_answer(line: &str) -> Result<Vec<u8>> {
    let bad = || InitiatorError::Protocol(format!("session holder answered {line:?}"));
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "OK" => from_hex(rest).ok_or_else(bad),
        "SCSI" => {
            let (st, sense) = rest.split_once(' ').ok_or_else(bad)?;
            let status = st.parse::<u8>().map_err(|_| bad())?;
            let raw = from_hex(sense).ok_or_else(bad)?;
            Err(InitiatorError::Scsi {
                status,
                sense: Sense::parse(&raw),
            })
        }
        "ERR" => Err(InitiatorError::Io(io::Error::other(format!(
            "session holder: {rest}"
        )))),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initiator::cdb::{self, pr_out, sense_key};

    #[test]
    fn hex_round_trips_and_empty_is_a_dash() {
        assert_eq!(to_hex(&[]), "-");
        assert_eq!(to_hex(&[0x5f, 0x06, 0]), "5f0600");
        assert_eq!(from_hex("5f0600").unwrap(), vec![0x5f, 6, 0]);
        assert_eq!(from_hex("-").unwrap(), Vec::<u8>::new());
        assert!(from_hex("5f0").is_none());
        assert!(from_hex("zz").is_none());
    }

    #[test]
    fn answers_parse_to_data_scsi_status_or_error() {
        assert_eq!(parse_answer("OK 0001").unwrap(), vec![0, 1]);
        assert_eq!(parse_answer("OK -").unwrap(), Vec::<u8>::new());
        let e = parse_answer("SCSI 24 -").unwrap_err();
        assert!(e.is_reservation_conflict(), "{e}");
        // Fixed-format sense, key ILLEGAL REQUEST.
        let e = parse_answer("SCSI 2 700005000000000a0000000024000000000000").unwrap_err();
        assert!(
            matches!(&e, InitiatorError::Scsi { status: 2, sense } if sense.key == sense_key::ILLEGAL_REQUEST),
            "{e}"
        );
        assert!(parse_answer("ERR no LUN")
            .unwrap_err()
            .to_string()
            .contains("no LUN"));
        assert!(parse_answer("what").is_err());
        assert!(parse_answer("SCSI x -").is_err());
    }

    #[test]
    fn only_persistent_reserve_commands_are_run() {
        // The checks come before the LUN is looked up: none is needed.
        let files = Vec::new();
        let write10 = "2a000000000000000100";
        assert_eq!(
            run_request(&format!("lun-1 {write10} {} 0", "00".repeat(512)), &files),
            "ERR only PERSISTENT RESERVE IN and OUT are served here"
        );
        let (c, p) = cdb::persistent_reserve_out(pr_out::REGISTER, 0, 0, 1, false);
        let register = format!("lun-1 {} {} 0", to_hex(&c), to_hex(&p));
        assert_eq!(
            run_request(&register, &files),
            "ERR no LUN file \"lun-1\" in this session"
        );
        assert_eq!(
            run_request(&format!("lun-1 {} - 65536", to_hex(&c)), &files),
            "ERR request too long"
        );
        assert_eq!(run_request("lun-1 2a00", &files), "ERR malformed request");
        assert_eq!(run_request("lun-1 xx - 0", &files), "ERR malformed request");
    }
}
