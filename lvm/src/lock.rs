//! Metadata and activation locks, as lvm2 names them: `V_<vg>` (read PR,
//! write PW), `P_#global` (device list changes), and LV activation locks
//! named by the lvid (VG uuid + LV uuid): CR for `-ay`, EX for `-aey`.
//!
//! * [`LocalLocker`] (`locking_type = 1`): `flock` on files in
//!   `locking_dir`, one host only; activation locks are not needed.
//! * [`ClusterLocker`] (`locking_type = 3`): asks the node's clvmd over its
//!   Unix socket (one JSON line per request); clvmd takes the locks in the
//!   DLM lockspace `clvmd`. Locks taken by a command are released when its
//!   connection closes; activation locks stay with clvmd until deactivation.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::{LvmError, Result};

/// Lock modes (the DLM's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockMode {
    /// Concurrent read: shared activation.
    Cr,
    /// Protected read: reading metadata.
    Pr,
    /// Protected write: changing metadata.
    Pw,
    /// Exclusive: exclusive activation.
    Ex,
}

/// The VG lock's name.
pub fn vg_lock_name(vg: &str) -> String {
    format!("V_{vg}")
}

/// The global lock's name.
pub const GLOBAL_LOCK: &str = "P_#global";

/// Takes and drops locks for one command.
pub trait Locker {
    /// Takes `name` in `mode` (waiting), held until `unlock` or the end of
    /// the command.
    fn lock(&mut self, name: &str, mode: LockMode) -> Result<()>;
    /// Drops `name`.
    fn unlock(&mut self, name: &str) -> Result<()>;
    /// Takes an activation lock held beyond the command (NOQUEUE: a
    /// conflict fails at once with "Volume is busy on another node").
    fn lock_lv(&mut self, lvid: &str, mode: LockMode) -> Result<()>;
    /// Drops an activation lock.
    fn unlock_lv(&mut self, lvid: &str) -> Result<()>;
    /// Tells the other nodes that VG `vg` changed (they drop cached metadata).
    fn vg_changed(&mut self, vg: &str) -> Result<()>;
    /// Whether this locker can lock clustered VGs.
    fn clustered(&self) -> bool;
}

/// Host-local locking with `flock`.
#[derive(Debug)]
pub struct LocalLocker {
    dir: PathBuf,
    held: HashMap<String, File>,
}

impl LocalLocker {
    /// Lock files go in `dir` (created when missing).
    pub fn new(dir: &Path) -> Self {
        LocalLocker {
            dir: dir.to_path_buf(),
            held: HashMap::new(),
        }
    }
}

impl Locker for LocalLocker {
    fn lock(&mut self, name: &str, mode: LockMode) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            LvmError(format!(
                "Failed to create locking directory {}: {e}",
                self.dir.display()
            ))
        })?;
        let path = self.dir.join(name.replace('/', "_"));
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| LvmError(format!("Locking {} failed: {e}", path.display())))?;
        let op = match mode {
            LockMode::Cr | LockMode::Pr => nix::fcntl::FlockArg::LockShared,
            LockMode::Pw | LockMode::Ex => nix::fcntl::FlockArg::LockExclusive,
        };
        #[allow(deprecated)] // nix's Flock guard owns the file; we keep the File
        nix::fcntl::flock(std::os::fd::AsRawFd::as_raw_fd(&f), op)
            .map_err(|e| LvmError(format!("Locking {} failed: {e}", path.display())))?;
        self.held.insert(name.to_string(), f);
        Ok(())
    }

    fn unlock(&mut self, name: &str) -> Result<()> {
        self.held.remove(name);
        Ok(())
    }

    fn lock_lv(&mut self, _lvid: &str, _mode: LockMode) -> Result<()> {
        Ok(())
    }

    fn unlock_lv(&mut self, _lvid: &str) -> Result<()> {
        Ok(())
    }

    fn vg_changed(&mut self, _vg: &str) -> Result<()> {
        Ok(())
    }

    fn clustered(&self) -> bool {
        false
    }
}

/// A request to clvmd.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Take a lock for this connection.
    Lock {
        /// Resource name.
        name: String,
        /// Mode.
        mode: LockMode,
    },
    /// Drop a lock of this connection.
    Unlock {
        /// Resource name.
        name: String,
    },
    /// Take an activation lock kept by clvmd.
    LockLv {
        /// The lvid.
        lvid: String,
        /// Mode.
        mode: LockMode,
    },
    /// Drop an activation lock.
    UnlockLv {
        /// The lvid.
        lvid: String,
    },
    /// A VG changed: every node drops its cached copy.
    VgChanged {
        /// The VG.
        vg: String,
    },
    /// clvmd's live state (locks held, cache, members).
    Dump,
}

/// clvmd's answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The error message when not.
    #[serde(default)]
    pub error: String,
    /// Extra data (dump).
    #[serde(default)]
    pub data: serde_json::Value,
}

/// Cluster locking through the node's clvmd.
#[derive(Debug)]
pub struct ClusterLocker {
    stream: Option<(BufReader<UnixStream>, UnixStream)>,
    socket: PathBuf,
}

impl ClusterLocker {
    /// A locker that connects to `socket` on first use.
    pub fn new(socket: &Path) -> Self {
        ClusterLocker {
            stream: None,
            socket: socket.to_path_buf(),
        }
    }

    /// Sends one request and reads its reply.
    pub fn call(&mut self, req: &Request) -> Result<Reply> {
        if self.stream.is_none() {
            let s = UnixStream::connect(&self.socket).map_err(|e| {
                LvmError(format!(
                    "connect() failed on local socket {}: {e}\n  clvmd is not running on this node: cannot lock clustered volume groups.",
                    self.socket.display()
                ))
            })?;
            let r = BufReader::new(s.try_clone().map_err(|e| LvmError(e.to_string()))?);
            self.stream = Some((r, s));
        }
        let (r, w) = self.stream.as_mut().expect("connected");
        let mut line = serde_json::to_string(req).expect("serializable");
        line.push('\n');
        w.write_all(line.as_bytes())
            .map_err(|e| LvmError(format!("clvmd: {e}")))?;
        let mut answer = String::new();
        r.read_line(&mut answer)
            .map_err(|e| LvmError(format!("clvmd: {e}")))?;
        if answer.is_empty() {
            return Err(LvmError("clvmd closed the connection".into()));
        }
        serde_json::from_str(&answer).map_err(|e| LvmError(format!("clvmd: bad reply: {e}")))
    }

    fn ok(&mut self, req: Request) -> Result<()> {
        let r = self.call(&req)?;
        if r.ok {
            Ok(())
        } else {
            Err(LvmError(r.error))
        }
    }
}

impl Locker for ClusterLocker {
    fn lock(&mut self, name: &str, mode: LockMode) -> Result<()> {
        self.ok(Request::Lock {
            name: name.to_string(),
            mode,
        })
    }

    fn unlock(&mut self, name: &str) -> Result<()> {
        self.ok(Request::Unlock {
            name: name.to_string(),
        })
    }

    fn lock_lv(&mut self, lvid: &str, mode: LockMode) -> Result<()> {
        self.ok(Request::LockLv {
            lvid: lvid.to_string(),
            mode,
        })
    }

    fn unlock_lv(&mut self, lvid: &str) -> Result<()> {
        self.ok(Request::UnlockLv {
            lvid: lvid.to_string(),
        })
    }

    fn vg_changed(&mut self, vg: &str) -> Result<()> {
        self.ok(Request::VgChanged { vg: vg.to_string() })
    }

    fn clustered(&self) -> bool {
        true
    }
}
