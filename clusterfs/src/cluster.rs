//! Mounting a `lock_dlm` volume in a cluster: the part of `mount.clusterfs`
//! that talks to the node's cmand and the DLM.
//!
//! [`ClusterMount::join`] checks the volume's lock table (`CLUSTER:FSNAME`)
//! against the running cluster (its name, quorum), joins the DLM lockspace
//! FSNAME with membership from cmand's process group `dlm:ls:FSNAME`,
//! learns this node's journal id (lockspace slot − 1) and takes the
//! volume.
//!
//! **Exclusive for now.** Until every filesystem operation takes its
//! glocks ([`crate::lock_dlm`]), a `lock_dlm` volume is mounted by one node
//! of the cluster at a time: the mount holds the `mounted` lock (nondisk 5)
//! in EX, so a second node's mount is refused with a clear message
//! instead of corrupting the volume. When the node that has it fails, cmand
//! fences it, the DLM drops its locks, and the next node to mount waits
//! until no fence victim is left, then replays every dirty journal (the
//! failed node's included) before it writes.
//!
//! **Fencing covers the mount.** The mount writes its PID into the node's
//! state directory (`mount.clusterfs.PID.pid`), so `fence_lab` kills it
//! with its node, and it stops writing the moment its connection to cmand
//! breaks ([`WriteGate`]): a node whose cmand is gone is about to be fenced,
//! and another node may soon replay its journal and take the volume.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cman::api::Client;
use cman::dlm_membership::{group_name, CmanMembership};
use dlm::{Dlm, DlmConfig, Flags, LockId, Lockspace, Mode};

use crate::block::{BlockDevice, BlockError, Result as BlockResult};
use crate::glock::{nondisk, GlockName, GlockType};

/// The kernel DLM's port; a lockspace's processes listen near it.
pub const DLM_BASE_PORT: u16 = 21064;

/// How long to wait for cmand's group and the DLM's first recovery.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Errors joining the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The superblock's lock table is not `CLUSTER:FSNAME`.
    #[error("lock table {0:?} is not CLUSTER:FSNAME (mkfs.gfs2 -t)")]
    LockTable(String),
    /// No cmand answers in the state directory.
    #[error("no cmand on this node ({dir}: {why}); start the cluster first (service cman start)")]
    NoCmand {
        /// The state directory.
        dir: PathBuf,
        /// What failed.
        why: String,
    },
    /// The volume belongs to another cluster.
    #[error("the volume belongs to cluster {volume:?}, but this node is in cluster {running:?}")]
    WrongCluster {
        /// From the lock table.
        volume: String,
        /// cmand's cluster name.
        running: String,
    },
    /// The cluster has no quorum.
    #[error("cluster {0:?} is not quorate: nothing is mounted without quorum")]
    NoQuorum(String),
    /// Joining the lockspace failed.
    #[error("joining lockspace {fsname:?}: {why}")]
    Join {
        /// The lockspace.
        fsname: String,
        /// What failed.
        why: String,
    },
    /// Another node has the volume mounted.
    #[error(
        "{fsname} is mounted on another node of cluster {cluster}: this version mounts a \
         lock_dlm volume on one node at a time (unmount it there first)"
    )]
    Busy {
        /// The file system name.
        fsname: String,
        /// The cluster.
        cluster: String,
    },
}

/// Splits a lock table `CLUSTER:FSNAME`.
pub fn parse_locktable(table: &str) -> Result<(String, String), ClusterError> {
    match table.split_once(':') {
        Some((c, f)) if !c.is_empty() && !f.is_empty() && !f.contains(':') => {
            Ok((c.to_string(), f.to_string()))
        }
        _ => Err(ClusterError::LockTable(table.to_string())),
    }
}

/// The port a lockspace's processes listen on unless told otherwise:
/// above the kernel DLM's, spread by name so that two file systems
/// mounted on one node do not collide.
pub fn default_port(fsname: &str) -> u16 {
    DLM_BASE_PORT + 1 + (crc32fast::hash(fsname.as_bytes()) % 1024) as u16
}

/// Once closed, every write and flush fails: the node lost its cmand and
/// must not touch shared storage again (the mount then withdraws).
#[derive(Debug, Default)]
pub struct WriteGate {
    closed: AtomicBool,
}

impl WriteGate {
    /// Stops all writes for good.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

/// A device whose writes go through a [`WriteGate`].
pub struct GatedDevice {
    dev: Arc<dyn BlockDevice>,
    gate: Arc<WriteGate>,
}

impl GatedDevice {
    /// Wraps `dev`.
    pub fn new(dev: Arc<dyn BlockDevice>, gate: Arc<WriteGate>) -> GatedDevice {
        GatedDevice { dev, gate }
    }

    fn check(&self, op: &'static str, offset: u64) -> BlockResult<()> {
        if self.gate.is_closed() {
            return Err(BlockError::Io {
                op,
                offset,
                source: std::io::Error::other("this node lost its cluster membership"),
            });
        }
        Ok(())
    }
}

impl BlockDevice for GatedDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> BlockResult<()> {
        self.dev.read_at(offset, buf)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> BlockResult<()> {
        self.check("write", offset)?;
        self.dev.write_at(offset, buf)
    }

    fn flush(&self) -> BlockResult<()> {
        self.check("flush", 0)?;
        self.dev.flush()
    }

    fn size(&self) -> u64 {
        self.dev.size()
    }
}

/// How to join.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    /// The node's cmand state directory.
    pub state_dir: PathBuf,
    /// The volume's lock table.
    pub locktable: String,
    /// The lockspace's port; [`default_port`] when `None`.
    pub port: Option<u16>,
}

/// A node's membership of a volume's lockspace, holding the volume.
pub struct ClusterMount {
    /// This node's journal.
    pub jid: u32,
    /// Closed when cmand is lost.
    pub gate: Arc<WriteGate>,
    /// The cluster's name.
    pub cluster: String,
    /// The lockspace (file system) name.
    pub fsname: String,
    pid_file: PathBuf,
    _mounted: LockId,
    _ls: Lockspace,
    _dlm: Dlm,
    _membership: Arc<CmanMembership>,
}

impl ClusterMount {
    /// Joins the cluster and takes the volume (see the module docs).
    pub fn join(opts: &JoinOptions) -> Result<ClusterMount, ClusterError> {
        let (cluster, fsname) = parse_locktable(&opts.locktable)?;
        check_cluster(&opts.state_dir, &cluster)?;
        let join_err = |why: String| ClusterError::Join {
            fsname: fsname.clone(),
            why,
        };
        let m = CmanMembership::join(&opts.state_dir, &group_name(&fsname), JOIN_TIMEOUT)
            .map_err(|e| join_err(e.to_string()))?;
        let gate = Arc::new(WriteGate::default());
        {
            let gate = gate.clone();
            m.on_lost(Box::new(move || {
                tracing::error!("lost cmand: no more writes to the volume (withdraw)");
                gate.close();
            }));
        }
        let port = opts.port.unwrap_or_else(|| default_port(&fsname));
        let peers = m.peer_addrs(port);
        let me = m.dlm_node();
        let listen: SocketAddr = *peers
            .get(&me)
            .ok_or_else(|| join_err("this node is not named by an IP address".into()))?;
        let dlm = Dlm::start(DlmConfig::new(me, listen, peers))
            .map_err(|e| join_err(format!("dlm on {listen}: {e}")))?;
        let ls = dlm
            .join(&fsname, m.as_ref())
            .map_err(|e| join_err(e.to_string()))?;
        wait_running(&ls).map_err(join_err)?;
        let slot = ls.slot();
        let jid = slot
            .checked_sub(1)
            .ok_or_else(|| join_err("no slot".into()))?;
        let mounted = take_volume(&ls, &fsname, &cluster)?;
        // A node that failed before we joined the lockspace was never a
        // member of it with us, so the DLM did not wait for its fencing:
        // we do, before touching its journal.
        wait_fenced(&opts.state_dir, &cluster)?;
        let pid_file = opts
            .state_dir
            .join(format!("mount.clusterfs.{}.pid", std::process::id()));
        if let Err(e) = std::fs::write(&pid_file, format!("{}\n", std::process::id())) {
            tracing::warn!(file = %pid_file.display(), error = %e,
                "cannot register with the node's fencing");
        }
        tracing::info!(%cluster, %fsname, jid, "joined the cluster");
        Ok(ClusterMount {
            jid,
            gate,
            cluster,
            fsname,
            pid_file,
            _mounted: mounted,
            _ls: ls,
            _dlm: dlm,
            _membership: m,
        })
    }
}

impl Drop for ClusterMount {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.pid_file);
    }
}

/// The running cluster must be the volume's, and quorate.
fn check_cluster(state_dir: &Path, cluster: &str) -> Result<(), ClusterError> {
    let no_cmand = |why: String| ClusterError::NoCmand {
        dir: state_dir.to_path_buf(),
        why,
    };
    let mut client = Client::connect(state_dir).map_err(|e| no_cmand(e.to_string()))?;
    let status = client.status().map_err(|e| no_cmand(e.to_string()))?;
    if status.cluster_name != cluster {
        return Err(ClusterError::WrongCluster {
            volume: cluster.to_string(),
            running: status.cluster_name,
        });
    }
    if !status.quorum.quorate {
        return Err(ClusterError::NoQuorum(status.cluster_name));
    }
    Ok(())
}

/// Waits until cmand has no fence victim left (a failed node may still
/// write until it is fenced); fails if quorum is lost meanwhile.
fn wait_fenced(state_dir: &Path, cluster: &str) -> Result<(), ClusterError> {
    let no_cmand = |why: String| ClusterError::NoCmand {
        dir: state_dir.to_path_buf(),
        why,
    };
    let mut client = Client::connect(state_dir).map_err(|e| no_cmand(e.to_string()))?;
    let mut said = false;
    loop {
        let status = client.status().map_err(|e| no_cmand(e.to_string()))?;
        if !status.quorum.quorate {
            return Err(ClusterError::NoQuorum(cluster.to_string()));
        }
        if status.victims.is_empty() {
            return Ok(());
        }
        if !said {
            let victims: Vec<String> = status.victims.iter().map(|v| format!("{v:?}")).collect();
            tracing::warn!(
                ?victims,
                "waiting for failed nodes to be fenced before mounting"
            );
            said = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_running(ls: &Lockspace) -> Result<(), String> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    while !ls.is_running() || ls.slot() == 0 {
        if Instant::now() > deadline {
            return Err(format!("no lockspace recovery within {JOIN_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Takes the `mounted` lock EX (no queueing): refused while another node
/// has the volume.
fn take_volume(ls: &Lockspace, fsname: &str, cluster: &str) -> Result<LockId, ClusterError> {
    let name = GlockName {
        kind: GlockType::Nondisk,
        number: nondisk::MOUNTED,
    }
    .dlm_name();
    match ls.lock(&name, Mode::Ex, Flags::NOQUEUE) {
        Ok(id) => Ok(id),
        Err(dlm::DlmError::Again) => Err(ClusterError::Busy {
            fsname: fsname.to_string(),
            cluster: cluster.to_string(),
        }),
        Err(e) => Err(ClusterError::Join {
            fsname: fsname.to_string(),
            why: format!("mounted lock: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_tables_split_into_cluster_and_fsname() {
        assert_eq!(
            parse_locktable("httpd_cluster:webvg_lv1").unwrap(),
            ("httpd_cluster".to_string(), "webvg_lv1".to_string())
        );
        for bad in ["", "nocolon", ":fs", "cl:", "a:b:c"] {
            assert!(parse_locktable(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_ports_stay_above_the_kernel_dlm_and_differ_by_name() {
        let a = default_port("webvg_lv1");
        let b = default_port("webvg_lv2");
        assert!(a > DLM_BASE_PORT && b > DLM_BASE_PORT);
        assert_ne!(a, b);
        assert_eq!(a, default_port("webvg_lv1"));
    }

    #[test]
    fn a_closed_gate_refuses_writes_and_flushes_but_not_reads() {
        let dev: Arc<dyn BlockDevice> = Arc::new(crate::block::MemDevice::new(4096));
        let gate = Arc::new(WriteGate::default());
        let g = GatedDevice::new(dev, gate.clone());
        g.write_at(0, b"ok").unwrap();
        gate.close();
        assert!(g.write_at(0, b"no").is_err());
        assert!(g.flush().is_err());
        let mut b = [0u8; 2];
        g.read_at(0, &mut b).unwrap();
        assert_eq!(&b, b"ok");
    }
}
