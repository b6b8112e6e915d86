//! mkfs.clusterfs and mount.clusterfs on an `iscsi://` LUN served by our
//! tgtd: the seeded random workload through the FUSE mount must match the
//! reference model, and after unmount the backing file must pass
//! `fsck.gfs2 -n`. Skipped with a message when /dev/fuse, fusermount3 or
//! fsck.gfs2 are missing. More steps: CLUSTERFS_ISCSI_STEPS.

#[path = "../../clusterfs/tests/common/model.rs"]
mod model;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use model::{Errno, Kind, Target};

const IQN: &str = "iqn.2026-11.org.clusterfs:iscsi-test";
/// Generous: the CI machine is small and shared.
const TIMEOUT: Duration = Duration::from_secs(60);

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills and reaps a child we started (by PID) unless it already exited.
fn reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Our tgtd on 127.0.0.1 and a free port with its own control directory;
/// killed on drop.
struct Tgtd {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Tgtd {
    fn start() -> Tgtd {
        for _ in 0..10 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("bind port 0")
                .port();
            let dir = tempfile::tempdir().expect("tempdir");
            let mut cmd = Command::new(tests::bin("tgtd"));
            // SAFETY: prctl is async-signal-safe and touches no Rust state.
            unsafe {
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
            let mut child = cmd
                .args(["-f", "-C", "0", "--iscsi"])
                .arg(format!("portal=127.0.0.1:{port}"))
                .arg("--control-dir")
                .arg(dir.path())
                .arg("--state-dir")
                .arg(dir.path().join("state"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn tgtd");
            let sock = dir.path().join("socket.0");
            let deadline = Instant::now() + TIMEOUT;
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                if sock.exists() && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Tgtd { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            reap(&mut child);
        }
        panic!("tgtd did not start");
    }

    fn adm(&self, args: &[&str]) {
        let out = Command::new(tests::bin("tgtadm"))
            .arg("--control-dir")
            .arg(self.dir.path())
            .args(["-C", "0", "--lld", "iscsi"])
            .args(args)
            .output()
            .expect("run tgtadm");
        assert!(
            out.status.success(),
            "tgtadm {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Target 1 named [`IQN`] with LUN 1 on a new sparse file `file` of
    /// `mb` MiB.
    fn export(&self, file: &Path, mb: u64) {
        fs::File::create(file)
            .and_then(|f| f.set_len(mb << 20))
            .expect("backing file");
        self.adm(&["--op", "new", "--mode", "target", "--tid", "1", "-T", IQN]);
        self.adm(&[
            "--op",
            "new",
            "--mode",
            "logicalunit",
            "--tid",
            "1",
            "--lun",
            "1",
            "-b",
            file.to_str().unwrap(),
        ]);
        self.adm(&[
            "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
        ]);
    }

    fn url(&self) -> String {
        format!("iscsi://127.0.0.1:{}/{IQN}/1", self.port)
    }

    /// Kills the daemon (by PID) and waits for it.
    fn stop(mut self) {
        reap(&mut self.child);
    }
}

impl Drop for Tgtd {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

fn is_mounted(mnt: &Path) -> bool {
    let want = fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want.to_str().unwrap()))
}

/// A foreground mount.clusterfs; killed and detached on drop if a test
/// fails before the clean unmount.
struct Mount {
    child: Child,
    mnt: PathBuf,
}

impl Mount {
    fn start(device: &str, mnt: &Path) -> Mount {
        let child = Command::new(tests::bin("mount_clusterfs"))
            .arg(device)
            .arg(mnt)
            .args(["-o", "lockproto=lock_nolock", "-f"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn mount_clusterfs");
        let mut m = Mount {
            child,
            mnt: mnt.to_path_buf(),
        };
        wait_for("the mount", || {
            if let Ok(Some(st)) = m.child.try_wait() {
                panic!("mount_clusterfs exited early: {st}");
            }
            is_mounted(mnt)
        });
        m
    }

    /// `fusermount3 -u`, then the process must exit 0.
    fn unmount(mut self) {
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .status()
            .expect("run fusermount3");
        assert!(st.success(), "fusermount3 -u: {st}");
        let st = self.child.wait().expect("wait for mount_clusterfs");
        assert!(st.success(), "mount_clusterfs exit {st}");
        assert!(!is_mounted(&self.mnt));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            reap(&mut self.child);
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.mnt)
                .status();
        }
    }
}

/// The FUSE mount, addressed by path.
struct Mounted(PathBuf);

fn errno(e: std::io::Error) -> Errno {
    e.raw_os_error().unwrap_or(libc::EIO)
}

fn last_errno() -> Errno {
    errno(std::io::Error::last_os_error())
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap()
}

impl Mounted {
    fn p(&self, path: &str) -> PathBuf {
        self.0.join(path)
    }

    fn open_w(&self, path: &str) -> Result<fs::File, Errno> {
        OpenOptions::new()
            .write(true)
            .open(self.p(path))
            .map_err(errno)
    }
}

impl Target for Mounted {
    fn create(&mut self, path: &str) -> Result<(), Errno> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.p(path))
            .map(|_| ())
            .map_err(errno)
    }
    fn mkdir(&mut self, path: &str) -> Result<(), Errno> {
        fs::create_dir(self.p(path)).map_err(errno)
    }
    fn write(&mut self, path: &str, off: u64, data: &[u8]) -> Result<(), Errno> {
        self.open_w(path)?.write_all_at(data, off).map_err(errno)
    }
    fn truncate(&mut self, path: &str, size: u64) -> Result<(), Errno> {
        self.open_w(path)?.set_len(size).map_err(errno)
    }
    fn rename(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        fs::rename(self.p(from), self.p(to)).map_err(errno)
    }
    fn link(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        fs::hard_link(self.p(from), self.p(to)).map_err(errno)
    }
    fn unlink(&mut self, path: &str) -> Result<(), Errno> {
        fs::remove_file(self.p(path)).map_err(errno)
    }
    fn rmdir(&mut self, path: &str) -> Result<(), Errno> {
        fs::remove_dir(self.p(path)).map_err(errno)
    }
    fn read_all(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        fs::read(self.p(path)).map_err(errno)
    }
    fn list(&mut self, path: &str) -> Result<Vec<(String, Kind)>, Errno> {
        let mut out = Vec::new();
        for e in fs::read_dir(self.p(path)).map_err(errno)? {
            let e = e.map_err(errno)?;
            let kind = if e.file_type().map_err(errno)?.is_dir() {
                Kind::Dir
            } else {
                Kind::File
            };
            out.push((e.file_name().into_string().unwrap(), kind));
        }
        out.sort();
        Ok(out)
    }
    fn nlink(&mut self, path: &str) -> Result<u32, Errno> {
        Ok(fs::symlink_metadata(self.p(path)).map_err(errno)?.nlink() as u32)
    }
    fn sync(&mut self) -> Result<(), Errno> {
        fs::File::open(&self.0)
            .and_then(|f| f.sync_all())
            .map_err(errno)
    }
    fn setxattr(&mut self, path: &str, name: &str, value: &[u8]) -> Result<(), Errno> {
        let (p, n) = (cpath(&self.p(path)), CString::new(name).unwrap());
        // SAFETY: valid C strings and a buffer of the given length.
        let rc = unsafe {
            libc::lsetxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(last_errno())
        }
    }
    fn removexattr(&mut self, path: &str, name: &str) -> Result<(), Errno> {
        let (p, n) = (cpath(&self.p(path)), CString::new(name).unwrap());
        // SAFETY: valid C strings.
        if unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) } == 0 {
            Ok(())
        } else {
            Err(last_errno())
        }
    }
    fn xattrs(&mut self, path: &str) -> Result<BTreeMap<String, Vec<u8>>, Errno> {
        let p = cpath(&self.p(path));
        let mut names = vec![0u8; 4096];
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
        if n < 0 {
            return Err(last_errno());
        }
        let mut out = BTreeMap::new();
        for name in names[..n as usize]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
        {
            let cname = CString::new(name).unwrap();
            let mut v = vec![0u8; 65536];
            // SAFETY: valid C strings; the buffer is valid for its length.
            let len = unsafe {
                libc::lgetxattr(p.as_ptr(), cname.as_ptr(), v.as_mut_ptr().cast(), v.len())
            };
            if len < 0 {
                return Err(last_errno());
            }
            v.truncate(len as usize);
            out.insert(String::from_utf8(name.to_vec()).unwrap(), v);
        }
        Ok(out)
    }
}

fn prerequisites_ok() -> bool {
    for (ok, what) in [
        (Path::new("/dev/fuse").exists(), "/dev/fuse"),
        (tests::have("fusermount3"), "fusermount3"),
        (tests::have("fsck.gfs2"), "fsck.gfs2"),
    ] {
        if !ok {
            eprintln!("{what} missing: skipping the iscsi:// clusterfs test");
            return false;
        }
    }
    true
}

fn fsck_clean(img: &Path) {
    let out = Command::new("fsck.gfs2")
        .arg("-n")
        .arg(img)
        .output()
        .expect("run fsck.gfs2");
    assert!(
        out.status.success(),
        "fsck.gfs2 -n:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn clusterfs_on_iscsi_lun_passes_the_exerciser_and_fsck() {
    if !prerequisites_ok() {
        return;
    }
    let steps = std::env::var("CLUSTERFS_ISCSI_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("lun1.img");
    let tgtd = Tgtd::start();
    tgtd.export(&backing, 256);
    let url = tgtd.url();

    let st = Command::new(tests::bin("mkfs_clusterfs"))
        .args(["-q", "-O", "-p", "lock_nolock", "-t", "test:fs", "-j", "1"])
        .arg(&url)
        .status()
        .expect("run mkfs_clusterfs");
    assert!(st.success(), "mkfs_clusterfs {url}: {st}");

    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = Mount::start(&url, &mnt);
    let mut target = Mounted(mnt.clone());
    let model = model::run(4242, steps, &mut target, &mut |_, _| {});
    assert!(
        !model::all_paths(&mut model.clone()).is_empty(),
        "the workload created nothing"
    );
    m.unmount();
    tgtd.stop();

    // Everything went over iSCSI: the target's backing file is the volume.
    fsck_clean(&backing);
}
