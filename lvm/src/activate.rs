//! Activation without device-mapper: an active LV is the file
//! `<devices/dir>/VG/LV` served by a small FUSE mount (one regular file as
//! the mount's root) that maps it linearly over its PVs ([`LvDevice`]).
//!
//! Each active LV has a server process (`lvm _lvserve VG LV`, started by
//! [`activate`], in its own process group) and a control socket
//! `<locking_dir>/lv/VG-LV.sock` answering one line: `status` (`open N
//! size S`), `refresh` (re-read the metadata: lvextend grows the file),
//! `stop` (`busy` while the file is open, else unmount and exit).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, FopenFlags, INodeNo, LockOwner, OpenFlags, ReplyAttr,
    ReplyData, ReplyEmpty, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use parking_lot::RwLock;

use crate::conf::Conf;
use crate::config;
use crate::device::Device;
use crate::lvdev::LvDevice;
use crate::store::{LvmError, Result, Store};

/// The hidden command that serves one LV.
pub const SERVE_COMMAND: &str = "_lvserve";

/// What the server of an active LV reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct State {
    /// Whether the file is open.
    pub open: bool,
    /// Its size in bytes.
    pub size: u64,
}

fn socket_path(conf: &Conf, vg: &str, lv: &str) -> PathBuf {
    conf.locking_dir()
        .join("lv")
        .join(format!("{vg}-{lv}.sock"))
}

/// The LV's device file.
pub fn lv_path(conf: &Conf, vg: &str, lv: &str) -> PathBuf {
    conf.dev_dir().join(vg).join(lv)
}

fn ask(conf: &Conf, vg: &str, lv: &str, what: &str) -> Option<String> {
    let s = UnixStream::connect(socket_path(conf, vg, lv)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let mut w = s.try_clone().ok()?;
    writeln!(w, "{what}").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    Some(line.trim().to_string())
}

/// The LV's state on this node: `None` when it is not active.
pub fn state(conf: &Conf, vg: &str, lv: &str) -> Option<State> {
    let a = ask(conf, vg, lv, "status")?;
    let w: Vec<&str> = a.split_whitespace().collect();
    match w.as_slice() {
        ["open", n, "size", s] => Some(State {
            open: n.parse::<u64>().ok()? > 0,
            size: s.parse().ok()?,
        }),
        _ => None,
    }
}

/// Starts the server of `VG/LV` and waits until its file is in place.
pub fn activate(conf: &Conf, vg: &str, lv: &str) -> Result<()> {
    let file = lv_path(conf, vg, lv);
    let dir = file.parent().expect("VG dir");
    std::fs::create_dir_all(dir).map_err(|e| LvmError(format!("{}: {e}", dir.display())))?;
    let sock_dir = socket_path(conf, vg, lv)
        .parent()
        .expect("dir")
        .to_path_buf();
    std::fs::create_dir_all(&sock_dir)
        .map_err(|e| LvmError(format!("{}: {e}", sock_dir.display())))?;
    let log_path = sock_dir.join(format!("{vg}-{lv}.log"));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| LvmError(format!("{}: {e}", log_path.display())))?;
    let exe = std::env::current_exe()
        .map_err(|e| LvmError(format!("cannot find the lvm program: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg0_lvm()
        .args([
            SERVE_COMMAND,
            vg,
            lv,
            "--config",
            &config::print(&conf.tree),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Never the command's stderr: the server outlives the command, and
        // whoever reads the command's output to its end would wait for it.
        .stderr(log);
    // The server outlives the command, as a dm device does: its own process
    // group keeps it out of the terminal's job-control signals (^C, a
    // hangup) and out of kill(-pgid) of the command, as iscsiadm's session
    // holder. Not its own session: with autogroup scheduling (the default
    // kernel setting) a new session is a new scheduling group, and every
    // request of a program in the caller's session (mount.clusterfs -f,
    // the tests) would then cross groups twice — into the server and back
    // out to the LUN's holder or target — each time waiting for the
    // scheduler to pick that group against the machine's other sessions:
    // on a loaded machine the LV's file ran at 0.65-0.85x the LUN's file
    // (medians; iscsiadm's holder stays in the caller's session), ~1.0x
    // once in the same session (lvm/README.md, lv_bench).
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|e| LvmError(format!("activation of {vg}/{lv}: {e}")))?;
    let mut line = String::new();
    let out = child.stdout.take().expect("piped");
    let _ = BufReader::new(out).read_line(&mut line);
    if line.trim() != "ready" {
        let _ = child.wait();
        let why = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Err(LvmError(format!(
            "Failed to activate {vg}/{lv}: {}",
            why.trim()
        )));
    }
    Ok(())
}

trait Arg0 {
    fn arg0_lvm(&mut self) -> &mut Self;
}

impl Arg0 for Command {
    fn arg0_lvm(&mut self) -> &mut Self {
        std::os::unix::process::CommandExt::arg0(self, "lvm")
    }
}

/// Stops the server of `VG/LV`; refuses while the file is open.
pub fn deactivate(conf: &Conf, vg: &str, lv: &str) -> Result<()> {
    // A file closed just now may still count as open for a moment: FUSE
    // sends its release after close() has returned.
    let mut answer = ask(conf, vg, lv, "stop");
    for _ in 0..10 {
        if answer.as_deref() != Some("busy") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        answer = ask(conf, vg, lv, "stop");
    }
    match answer.as_deref() {
        None => Ok(()), // not active
        // The server unmounted and its process ended before its answer
        // went out: stopped, if nothing answers any more.
        Some("ok") | Some("") if state(conf, vg, lv).is_none() => {
            let _ = std::fs::remove_file(lv_path(conf, vg, lv));
            let _ = std::fs::remove_dir(conf.dev_dir().join(vg));
            Ok(())
        }
        Some("busy") => Err(LvmError(format!("Logical volume {vg}/{lv} in use."))),
        Some(other) => Err(LvmError(format!("Failed to deactivate {vg}/{lv}: {other}"))),
    }
}

/// Makes the server re-read the metadata (after lvextend).
pub fn refresh(conf: &Conf, vg: &str, lv: &str) -> Result<()> {
    match ask(conf, vg, lv, "refresh").as_deref() {
        Some("ok") | None => Ok(()),
        Some(e) => Err(LvmError(format!("Failed to refresh {vg}/{lv}: {e}"))),
    }
}

// ---- the server -----------------------------------------------------------

/// The file system of one active LV: inode 1, a regular file.
struct LvFs {
    dev: Arc<RwLock<LvDevice>>,
    opens: Arc<AtomicU64>,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

const TTL: Duration = Duration::from_secs(0);

thread_local! {
    /// Each FUSE thread's read buffer, kept between requests: a fresh
    /// zeroed one per read cost a memset of up to 1 MiB each time (the
    /// server's CPU time in 1 MiB sequential reads: 14% less without).
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl LvFs {
    fn attr(&self) -> FileAttr {
        let size = self.dev.read().size();
        FileAttr {
            ino: INodeNo(1),
            size,
            blocks: size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind: FileType::RegularFile,
            perm: 0o600,
            nlink: 1,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl fuser::Filesystem for LvFs {
    fn getattr(&self, _req: &Request, _ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        reply.attr(&TTL, &self.attr())
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // A device cannot be truncated: O_TRUNC is ignored.
        reply.attr(&TTL, &self.attr())
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.opens.fetch_add(1, Ordering::SeqCst);
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.opens.fetch_sub(1, Ordering::SeqCst);
        reply.ok()
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _s = tracing::debug_span!("lv_read", offset, size).entered();
        let dev = self.dev.read();
        let end = (offset + u64::from(size)).min(dev.size());
        if offset >= end {
            return reply.data(&[]);
        }
        READ_BUF.with_borrow_mut(|buf| {
            let n = (end - offset) as usize;
            if buf.len() < n {
                buf.resize(n, 0);
            }
            match dev.read_at(offset, &mut buf[..n]) {
                Ok(()) => reply.data(&buf[..n]),
                Err(_) => reply.error(Errno::EIO),
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _s = tracing::debug_span!("lv_write", offset, len = data.len()).entered();
        let dev = self.dev.read();
        if offset >= dev.size() && !data.is_empty() {
            return reply.error(Errno::ENOSPC);
        }
        let n = data.len().min((dev.size() - offset) as usize);
        match dev.write_at(offset, &data[..n]) {
            Ok(()) => reply.written(n as u32),
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lo: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.dev.read().flush() {
            Ok(()) => reply.ok(),
            Err(_) => reply.error(Errno::EIO),
        }
    }
}

/// `lvm _lvserve VG LV --config TREE`: mounts the file, answers the control
/// socket, prints `ready`, serves until stopped.
pub fn serve_main(args: &[String]) -> Result<()> {
    let [vg, lv, flag, tree] = args else {
        return Err(LvmError("usage: lvm _lvserve VG LV --config TREE".into()));
    };
    if flag != "--config" {
        return Err(LvmError("usage: lvm _lvserve VG LV --config TREE".into()));
    }
    let conf = Conf {
        tree: config::parse(tree).map_err(|e| LvmError(e.to_string()))?,
        file: None,
    };
    let store = Store::scan(&conf)?;
    let dev = Arc::new(RwLock::new(LvDevice::from_store(&store, vg, lv)?));
    let file = lv_path(&conf, vg, lv);
    std::fs::File::create(&file).map_err(|e| LvmError(format!("{}: {e}", file.display())))?;
    let sock = socket_path(&conf, vg, lv);
    let _ = std::fs::remove_file(&sock);
    let listener =
        UnixListener::bind(&sock).map_err(|e| LvmError(format!("{}: {e}", sock.display())))?;
    let opens = Arc::new(AtomicU64::new(0));
    let fs = LvFs {
        dev: dev.clone(),
        opens: opens.clone(),
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        started: SystemTime::now(),
    };
    let mut fuse_conf = fuser::Config::default();
    fuse_conf.mount_options = vec![
        fuser::MountOption::FSName(format!("lvm:{vg}/{lv}")),
        fuser::MountOption::Subtype("lvm".into()),
    ];
    fuse_conf.n_threads = Some(4);
    let mut session = fuser::Session::new(fs, &file, &fuse_conf)
        .map_err(|e| LvmError(format!("mount {}: {e}", file.display())))?;
    let unmounter = session.unmount_callable();
    let control = Control {
        conf,
        vg: vg.clone(),
        lv: lv.clone(),
        dev,
        opens,
        sock,
    };
    std::thread::spawn(move || control.run(listener, unmounter));
    println!("ready");
    let _ = std::io::stdout().flush();
    session
        .run()
        .map_err(|e| LvmError(format!("serving {vg}/{lv}: {e}")))
}

struct Control {
    conf: Conf,
    vg: String,
    lv: String,
    dev: Arc<RwLock<LvDevice>>,
    opens: Arc<AtomicU64>,
    sock: PathBuf,
}

impl Control {
    fn run(self, listener: UnixListener, mut unmounter: fuser::SessionUnmounter) {
        for conn in listener.incoming() {
            let Ok(s) = conn else { continue };
            let mut line = String::new();
            let Ok(mut w) = s.try_clone() else { continue };
            if BufReader::new(s).read_line(&mut line).is_err() {
                continue;
            }
            let answer = match line.trim() {
                "status" => format!(
                    "open {} size {}",
                    self.opens.load(Ordering::SeqCst),
                    self.dev.read().size()
                ),
                "refresh" => self.refresh(),
                "stop" if self.opens.load(Ordering::SeqCst) > 0 => "busy".into(),
                "stop" => {
                    let _ = std::fs::remove_file(&self.sock);
                    let r = unmounter.unmount();
                    let _ = writeln!(w, "{}", if r.is_ok() { "ok" } else { "unmount failed" });
                    return;
                }
                other => format!("unknown request {other:?}"),
            };
            let _ = writeln!(w, "{answer}");
        }
    }

    fn refresh(&self) -> String {
        match Store::scan(&self.conf).and_then(|s| LvDevice::from_store(&s, &self.vg, &self.lv)) {
            Ok(d) => {
                *self.dev.write() = d;
                "ok".into()
            }
            Err(e) => e.0,
        }
    }
}

/// Whether `path` is the mount of an active LV (for tests and messages).
pub fn is_lv_file(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(1) == Some(&*path.to_string_lossy()))
        })
        .unwrap_or(false)
}
