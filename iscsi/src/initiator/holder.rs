//! The session holder: the process that keeps one logged-in session (what
//! the kernel keeps for open-iscsi) and exposes each disk LUN as a regular
//! file in a FUSE mount, with a udev-like by-path symlink in the mount
//! directory. iscsiadm `--login` starts it ([`start`]), `--logout` sends it
//! SIGTERM; it then unmounts, logs out and removes its session record.
//! It also runs persistent reservation commands on its session for
//! fence_scsi ([`super::prsock`]), as the kernel does for sg_persist.
//!
//! The holder is the iscsiadm binary run again with [`HolderConfig::args`];
//! that binary hands them back to [`run`]. It tells its starter how the
//! login went with one line on stdout: `READY`, or `ERROR <why>`.

use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, Signal};

use super::login::{ChapCredentials, LoginConfig};
use super::lun::{default_initiator_name, report_disk_luns, Lun};
use super::lunfs::{self, LunFs};
use super::prsock;
use super::records::{by_path_name, node_portal, pid_alive, read_record, write_record};
use super::records::{Record, SessionRecord, StateDir};
use super::url::{format_portal, IscsiUrl};
use super::{Connection, InitiatorError, SessionConfig};

/// Why a holder could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    /// A file of the state or mount directory.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The login or a LUN.
    #[error(transparent)]
    Initiator(#[from] InitiatorError),
    /// The node record lacks what a login needs.
    #[error("{0}")]
    Record(String),
    /// The holder said why it could not start (its `ERROR` line).
    #[error("{0}")]
    Start(String),
    /// The FUSE mount failed.
    #[error("FUSE mount: {0}")]
    Mount(io::Error),
    /// The holder did not end after SIGTERM.
    #[error("session holder {0} did not exit")]
    Stuck(i32),
}

type Result<T> = std::result::Result<T, HolderError>;

/// Our initiator name: `$ISCSI_INITIATOR_NAME`, else the
/// `InitiatorName=` of `/etc/iscsi/initiatorname.iscsi`, else one derived
/// from the host name.
pub fn initiator_name() -> String {
    if std::env::var_os("ISCSI_INITIATOR_NAME").is_none() {
        if let Ok(text) = fs::read_to_string("/etc/iscsi/initiatorname.iscsi") {
            for line in text.lines() {
                if let Some(n) = line.trim().strip_prefix("InitiatorName=") {
                    return n.trim().to_string();
                }
            }
        }
    }
    default_initiator_name()
}

/// One holder's settings.
#[derive(Clone, Debug)]
pub struct HolderConfig {
    pub state: StateDir,
    /// Where the by-path links and the `.session-<sid>` mount go.
    pub mount_dir: PathBuf,
    /// The node record to log in with.
    pub record: PathBuf,
    pub sid: u32,
}

impl HolderConfig {
    /// The iscsiadm command line that runs this holder (`--session-holder`
    /// and `--sid` are hidden flags of iscsiadm).
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> =
            ["-m", "session", "--session-holder"].map(Into::into).into();
        args.push(self.record.clone().into());
        args.extend(["--sid".into(), self.sid.to_string().into()]);
        args.extend(["--state-dir".into(), self.state.root().into()]);
        args.extend(["--mount-dir".into(), self.mount_dir.clone().into()]);
        args
    }

    fn mountpoint(&self) -> PathBuf {
        self.mount_dir.join(format!(".session-{}", self.sid))
    }
}

/// Starts a holder (the program `exe`, iscsiadm) for `cfg` and waits for
/// its READY line. The holder outlives us, in our process group (like a
/// daemon started from a shell); its log goes to a file, never to our
/// stderr (a caller waiting for our output would wait for the holder too).
pub fn start(exe: &Path, cfg: &HolderConfig) -> Result<()> {
    use std::os::unix::process::CommandExt;
    fs::create_dir_all(cfg.state.sessions_dir())?;
    let log = fs::File::create(cfg.state.holder_log(cfg.sid))?;
    let mut child = Command::new(exe)
        .args(cfg.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(|e| HolderError::Start(format!("starting the session holder: {e}")))?;
    let out = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    match line.trim_end().strip_prefix("READY") {
        Some(_) => Ok(()),
        None => {
            let _ = child.wait();
            let why = line.trim_end().strip_prefix("ERROR ");
            Err(HolderError::Start(
                why.unwrap_or("session holder exited").to_string(),
            ))
        }
    }
}

/// Stops the holder of session `s` (SIGTERM: it unmounts and logs out)
/// and waits up to `timeout` until it has exited or removed its record.
pub fn stop(state: &StateDir, s: &SessionRecord, timeout: Duration) -> Result<()> {
    let pid = nix::unistd::Pid::from_raw(s.pid);
    nix::sys::signal::kill(pid, Signal::SIGTERM).map_err(io::Error::from)?;
    let deadline = Instant::now() + timeout;
    while pid_alive(s.pid) && state.session_path(s.sid).exists() {
        if Instant::now() > deadline {
            return Err(HolderError::Stuck(s.pid));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// The URL (LUN 0) and session settings of a node record, with its CHAP
/// credentials (`node.session.auth.*`).
pub fn session_for(rec: &Record) -> Result<(IscsiUrl, SessionConfig)> {
    let (host, port, _) = node_portal(rec);
    let target = rec
        .get("node.name")
        .ok_or_else(|| HolderError::Record("node record without node.name".into()))?;
    let url = IscsiUrl {
        host: host.clone(),
        port,
        target: target.clone(),
        lun: 0,
        user: None,
        secret: None,
        target_user: None,
        target_secret: None,
        header_digest: false,
    };
    let mut login = LoginConfig::new(&initiator_name(), Some(target));
    let get = |k: &str| rec.get(k).filter(|v| !v.is_empty()).cloned();
    let need = |k: &str| get(k).ok_or_else(|| HolderError::Record(format!("CHAP without {k}")));
    if get("node.session.auth.authmethod").as_deref() == Some("CHAP")
        || get("node.session.auth.username").is_some()
    {
        login.chap = Some(ChapCredentials {
            user: need("node.session.auth.username")?,
            secret: need("node.session.auth.password")?,
        });
        if let (Some(user), Some(secret)) = (
            get("node.session.auth.username_in"),
            get("node.session.auth.password_in"),
        ) {
            login.mutual_chap = Some(ChapCredentials { user, secret });
        }
    }
    Ok((url, SessionConfig::new(&format_portal(&host, port), login)))
}

/// Runs the holder until SIGTERM, SIGINT or SIGHUP: logs in, mounts the
/// LUN files, writes READY (or `ERROR <why>`) to `ready`.
pub fn run(cfg: &HolderConfig, ready: &mut impl Write) -> Result<()> {
    // Signals go to the waiting thread only.
    let mut sigs = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        sigs.add(s);
    }
    sigs.thread_block().map_err(io::Error::from)?;
    match Mounted::setup(cfg) {
        Ok(mounted) => mounted.serve(cfg, sigs, ready),
        Err(e) => {
            let _ = writeln!(ready, "ERROR {e}");
            Err(e)
        }
    }
}

/// A logged-in session and its LUN files, before the mount.
struct Mounted {
    rec: Record,
    conn: Arc<Connection>,
    files: Vec<(String, Arc<Lun>)>,
    links: Vec<PathBuf>,
}

impl Mounted {
    fn setup(cfg: &HolderConfig) -> Result<Mounted> {
        let rec = read_record(&cfg.record)?;
        let (url, session) = session_for(&rec)?;
        let conn = Arc::new(Connection::connect(session)?);
        let luns = report_disk_luns(&conn)?;
        let mountpoint = cfg.mountpoint();
        fs::create_dir_all(&mountpoint).map_err(|e| {
            io::Error::new(e.kind(), format!("creating {}: {e}", mountpoint.display()))
        })?;
        let mut files = Vec::new();
        let mut links = Vec::new();
        for lun in luns {
            let u = IscsiUrl { lun, ..url.clone() };
            files.push((
                format!("lun-{lun}"),
                Arc::new(Lun::attach_shared(conn.clone(), u)?),
            ));
            links.push(
                cfg.mount_dir
                    .join(by_path_name(&url.host, url.port, &url.target, lun)),
            );
        }
        Ok(Mounted {
            rec,
            conn,
            files,
            links,
        })
    }

    fn session_record(&self, cfg: &HolderConfig) -> SessionRecord {
        let (host, port, tpgt) = node_portal(&self.rec);
        SessionRecord {
            sid: cfg.sid,
            pid: std::process::id() as i32,
            target: self.rec["node.name"].clone(),
            portal: format_portal(&host, port),
            tpgt,
            mountpoint: cfg.mountpoint(),
            record: cfg.record.clone(),
        }
    }

    /// Writes the session record and the links once mounted; true when
    /// both are in place.
    fn publish(&self, cfg: &HolderConfig) -> std::result::Result<(), String> {
        let session_file = cfg.state.session_path(cfg.sid);
        let mut ok = write_record(&session_file, &self.session_record(cfg).to_record())
            .map_err(|e| e.to_string());
        for (link, (name, _)) in self.links.iter().zip(&self.files) {
            let _ = fs::remove_file(link);
            if ok.is_ok() {
                ok = std::os::unix::fs::symlink(cfg.mountpoint().join(name), link)
                    .map_err(|e| format!("{}: {e}", link.display()));
            }
        }
        ok
    }

    fn serve(self, cfg: &HolderConfig, sigs: SigSet, ready: &mut impl Write) -> Result<()> {
        // fence_scsi's way to this session: up before READY, so that a
        // node unfences as soon as its login returns.
        let pr_socket = cfg.state.pr_socket(cfg.sid);
        if let Err(e) = prsock::serve(&pr_socket, self.files.clone()) {
            let _ = writeln!(ready, "ERROR {e}");
            return Err(e.into());
        }
        let fs_ = LunFs::new(self.files.clone());
        let fsname = format!("iscsi:{}", self.rec["node.name"]);
        let served = lunfs::serve(fs_, &cfg.mountpoint(), &fsname, |mut unmounter| {
            let _ = match self.publish(cfg) {
                Ok(()) => writeln!(ready, "READY"),
                Err(e) => writeln!(ready, "ERROR {e}"),
            };
            let _ = ready.flush();
            std::thread::spawn(move || {
                let _ = sigs.wait();
                let _ = unmounter.unmount();
            });
        });
        for link in &self.links {
            let _ = fs::remove_file(link);
        }
        let _ = fs::remove_dir(cfg.mountpoint());
        drop(self.files);
        let logout = match Arc::try_unwrap(self.conn) {
            Ok(conn) => conn.logout().map_err(HolderError::from),
            Err(_) => Ok(()),
        };
        let _ = fs::remove_file(cfg.state.session_path(cfg.sid));
        let _ = fs::remove_file(&pr_socket);
        if let Err(e) = &served {
            let _ = writeln!(ready, "ERROR mount failed: {e}");
        }
        served.map_err(HolderError::Mount)?;
        logout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chap_comes_from_the_node_record() {
        let mut rec = Record::new();
        rec.insert("node.name".into(), "iqn.t".into());
        rec.insert("node.conn[0].address".into(), "127.0.1.1".into());
        let (url, cfg) = session_for(&rec).unwrap();
        assert_eq!((url.portal(), url.lun), ("127.0.1.1:3260".to_string(), 0));
        assert!(cfg.login.chap.is_none());
        rec.insert("node.session.auth.authmethod".into(), "CHAP".into());
        rec.insert("node.session.auth.username".into(), "u".into());
        assert!(session_for(&rec).is_err(), "CHAP without a password");
        rec.insert("node.session.auth.password".into(), "p".into());
        rec.insert("node.session.auth.username_in".into(), "t".into());
        rec.insert("node.session.auth.password_in".into(), "q".into());
        let (_, cfg) = session_for(&rec).unwrap();
        assert_eq!(cfg.login.chap.unwrap().secret, "p");
        assert_eq!(cfg.login.mutual_chap.unwrap().user, "t");
        assert!(session_for(&Record::new()).is_err(), "no node.name");
    }

    #[test]
    fn holder_args_name_its_record_sid_and_dirs() {
        let cfg = HolderConfig {
            state: StateDir::new("/s"),
            mount_dir: "/m".into(),
            record: "/s/nodes/t/p/default".into(),
            sid: 7,
        };
        let args: Vec<String> = cfg
            .args()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "-m session --session-holder /s/nodes/t/p/default --sid 7 --state-dir /s --mount-dir /m"
        );
        assert_eq!(cfg.mountpoint(), Path::new("/m/.session-7"));
    }
}
