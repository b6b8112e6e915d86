//! A cluster of nodes on one machine for clusterfs (cmand on 127.0.1.N,
//! each with its state directory and mount point, `fence_lab` fencing,
//! one volume image): shared by the multi-node tests and the benchmark.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cman::api::Client;
use cman::node::Status;

/// The lab: a directory holding every node's state, mount point and the
/// volume image.
pub struct Lab {
    dir: tempfile::TempDir,
    /// The cluster key every node's cmand and DLM use.
    pub key: PathBuf,
    /// The volume's DLM port on every node.
    pub dlm_port: u16,
    /// What every node mounts instead of the image (an `iscsi://` LUN).
    pub device: Option<String>,
}

impl Lab {
    /// A cluster of `n` nodes (two_node mode for two).
    pub fn with_nodes(n: u32) -> Lab {
        Lab::with_nodes_in(n, &std::env::temp_dir())
    }

    /// The same in a new directory under `base` (the benchmark's image
    /// must be on a disk-backed filesystem).
    pub fn with_nodes_in(n: u32, base: &Path) -> Lab {
        let dir = tempfile::tempdir_in(base).unwrap();
        let ips: Vec<String> = (1..=n).map(|i| format!("127.0.1.{i}")).collect();
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        let port = crate::free_port_on(&ips, true);
        let dlm_port = crate::free_port_on(&ips, false);
        let two = if n == 2 {
            " two_node=\"1\" expected_votes=\"1\""
        } else {
            ""
        };
        let mut nodes = String::new();
        for i in 1..=n {
            nodes.push_str(&format!(
                "    <clusternode name=\"127.0.1.{i}\" nodeid=\"{i}\" votes=\"1\"><fence><method name=\"1\"><device name=\"lab\" port=\"127.0.1.{i}\"/></method></fence></clusternode>\n"
            ));
        }
        let text = format!(
            "<?xml version=\"1.0\"?>\n<cluster name=\"fscl\" config_version=\"1\">\n  <totem token=\"800\"/>\n  <cman port=\"{port}\"{two}/>\n  <fence_daemon post_fail_delay=\"0\" post_join_delay=\"3\"/>\n  <clusternodes>\n{nodes}  </clusternodes>\n  <fencedevices>\n    <fencedevice name=\"lab\" agent=\"fence_lab\" lab_dir=\"{}\"/>\n  </fencedevices>\n</cluster>\n",
            dir.path().display()
        );
        let key = dir.path().join("authkey");
        std::fs::write(&key, b"lab cluster key 0123456789abcdef").unwrap();
        let lab = Lab {
            dir,
            key,
            dlm_port,
            device: None,
        };
        for i in 1..=n {
            std::fs::create_dir_all(lab.state(i)).unwrap();
            std::fs::write(lab.state(i).join("cluster.conf"), &text).unwrap();
            std::fs::create_dir_all(lab.mnt(i)).unwrap();
        }
        lab
    }

    pub fn state(&self, i: u32) -> PathBuf {
        self.dir.path().join(format!("127.0.1.{i}"))
    }

    pub fn mnt(&self, i: u32) -> PathBuf {
        self.dir.path().join(format!("mnt{i}"))
    }

    pub fn image(&self) -> PathBuf {
        self.dir.path().join("vol.img")
    }

    pub fn status(&self, i: u32) -> Option<Status> {
        Client::connect(&self.state(i)).ok()?.status().ok()
    }

    pub fn wait_status(&self, i: u32, what: &str, f: impl Fn(&Status) -> bool) {
        crate::wait_for(what, Duration::from_secs(60), || {
            self.status(i).is_some_and(|s| f(&s))
        });
    }

    /// `mount.clusterfs IMAGE MNT -f` on node `i` (the [`Lab::device`] if
    /// set), with `extra` options.
    pub fn mount_cmd(&self, i: u32, extra: &str) -> Command {
        self.mount_cmd_at(i, &self.mnt(i), extra)
    }

    pub fn mount_cmd_at(&self, i: u32, mnt: &Path, extra: &str) -> Command {
        // Appended to: every mount on node i (and a refused one's command,
        // whose stderr goes elsewhere) leaves what an earlier one wrote.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state(i).join(format!("mount{i}.log")))
            .unwrap();
        let mut c = Command::new(crate::bin("mount_clusterfs"));
        match &self.device {
            Some(dev) => c.arg(dev),
            None => c.arg(self.image()),
        };
        c.arg(mnt)
            .arg("-f")
            .arg("--state-dir")
            .arg(self.state(i))
            .arg("-o")
            .arg(format!(
                "dlm_port={}{}{extra}",
                self.dlm_port,
                lab_options()
            ))
            .env(
                "RUST_LOG",
                std::env::var("LAB_MOUNT_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        c
    }

    /// A mount on node `i` (on a spare mount point) that must fail;
    /// returns what it said.
    pub fn refused_mount(&self, i: u32, extra: &str) -> String {
        let spare = self.dir.path().join("spare");
        std::fs::create_dir_all(&spare).unwrap();
        let out = self
            .mount_cmd_at(i, &spare, extra)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "the mount on node {i} was not refused"
        );
        assert!(!crate::is_mounted(&spare));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}

/// A test that fails leaves its nodes' logs on stderr (the lab directory,
/// and the logs with it, is deleted unless `LAB_KEEP_FAILED` is set): the
/// last lines of every node's cmand and mount logs. `LAB_MOUNT_LOG` sets
/// the mounts' `RUST_LOG` (default `info`).
impl Drop for Lab {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if std::env::var_os("LAB_KEEP_FAILED").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("lab kept in {}", self.dir.path().display());
        }
        let Ok(nodes) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        let mut logs: Vec<PathBuf> = nodes
            .flatten()
            .filter(|e| e.path().is_dir())
            .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!("---- {} (last {} lines)", log.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
}

/// Mount options every lab mount adds (`LAB_MOUNT_OPTIONS`, e.g.
/// `dir_placement=rgrp`): runs the multi-node tests with an option that is
/// not the default.
fn lab_options() -> String {
    match std::env::var("LAB_MOUNT_OPTIONS") {
        Ok(o) if !o.is_empty() => format!(",{o}"),
        _ => String::new(),
    }
}

/// Starts node `i`'s cmand.
pub fn cmand(lab: &Lab, i: u32) -> Child {
    crate::spawn_cmand(&lab.state(i), i, &lab.key)
}

/// A lab of `n` nodes with every cmand up and the cluster quorate; `None`
/// (a recorded skip) without root or FUSE.
pub fn cluster_up(n: u32) -> Option<(Lab, Vec<Child>)> {
    cluster_up_in(n, &std::env::temp_dir())
}

/// [`cluster_up`] with the lab under `base`.
pub fn cluster_up_in(n: u32, base: &Path) -> Option<(Lab, Vec<Child>)> {
    if !crate::require_root("FUSE mounts") || !crate::require_fuse() {
        return None;
    }
    let lab = Lab::with_nodes_in(n, base);
    let cmands = (1..=n).map(|i| cmand(&lab, i)).collect();
    for i in 1..=n {
        lab.wait_status(i, "every node a member", |s| {
            s.members.len() == n as usize && s.quorum.quorate
        });
    }
    Some((lab, cmands))
}

/// Stops every cmand still running.
pub fn stop_cmands(cmands: &mut [Child]) {
    for c in cmands {
        crate::reap(c);
    }
}

/// A 256 MiB lock_dlm volume `fscl:vol1` with two journals.
pub fn mkfs(image: &Path) {
    mkfs_journals(image, 2);
}

/// A 256 MiB lock_dlm volume `fscl:vol1` with `journals` journals.
pub fn mkfs_journals(image: &Path, journals: u32) {
    mkfs_sized(image, journals, 256 << 20);
}

/// A lock_dlm volume `fscl:vol1` of `bytes` with `journals` journals.
pub fn mkfs_sized(image: &Path, journals: u32, bytes: u64) {
    let f = std::fs::File::create(image).unwrap();
    f.set_len(bytes).unwrap();
    let st = Command::new(crate::bin("mkfs_clusterfs"))
        .args(["-p", "lock_dlm", "-t", "fscl:vol1", "-O", "-q"])
        .arg("-j")
        .arg(journals.to_string())
        .arg(image)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs_clusterfs: {st}");
}

/// F_SETLKW (or F_SETLK with `wait` false) on bytes 0..=0 of `f`.
pub fn fcntl_lock(f: &std::fs::File, typ: i32, wait: bool) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: an all-zero flock is valid; fields set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 1;
    let cmd = if wait { libc::F_SETLKW } else { libc::F_SETLK };
    // SAFETY: valid descriptor and flock for the duration of the call.
    if unsafe { libc::fcntl(f.as_raw_fd(), cmd, &fl) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
