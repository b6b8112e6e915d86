//! clusterfs on an LV against clusterfs on the same LUN used directly:
//! figures, not a pass/fail test (aim: the LV at ≥ 0.95× the LUN).
//!
//! ```sh
//! cargo build --release --bins
//! cargo run --release -p lvm --example lv_bench -- [MIB] [SECS] [ROUNDS]
//! ```
//!
//! Our tgtd serves one 1 GiB LUN backed by a file in `$LV_BENCH_DIR`
//! (default /var/tmp; tmpfs is refused: the LUN must be on a disk). The
//! file is written through once before the first run, so that no run pays
//! for allocating its blocks. clusterfs (`lock_nolock`, `mount.clusterfs
//! -f`) is measured on five devices, all on that LUN:
//!
//! * `iscsi://…/1` and `lvm:webvg/lv`, both opened in mount.clusterfs's
//!   process (the LV mapped there over its PV, the same URL);
//! * the LUN's file from `iscsiadm --login` (a FUSE file served by the
//!   session holder) and the active LV's file `/dev/webvg/lv` (a FUSE file
//!   served by `lvm _lvserve`) with the `iscsi://` URL as its PV: one FUSE
//!   hop on each side;
//! * `/dev/webvg/lv` with the LUN's file as its PV (what `pvcreate
//!   /dev/sdb` after `iscsiadm --login` gives): two FUSE hops against the
//!   LUN file's one.
//!
//! Each run makes the file system (the LV runs first wipe the LUN's first
//! MiB and make the VG and an LV of all its extents; the LUN runs wipe it
//! too), mounts it, and in one file: writes MIB MiB sequentially in 1 MiB
//! writes + fsync; reads them back in 1 MiB reads with a cold cache;
//! random 4 KiB O_DIRECT writes for SECS s + fsync; random 4 KiB O_DIRECT
//! reads for SECS s with a cold cache. A cold cache = the mount's page
//! cache of the file dropped and the backing file's host page cache
//! written back and dropped (`posix_fadvise(DONTNEED)`), so that reads
//! reach the target's disk and no run reads what an earlier phase left in
//! memory; O_DIRECT keeps the random phases out of the page cache. The
//! device servers (iscsiadm's holder, the LV's server) and mount.clusterfs
//! are all started from this process's session.
//!
//! ROUNDS rounds run the five in turn, in order in even rounds and in
//! reverse order in odd ones (neither side of a pair always runs first);
//! each round's figures and LV/LUN ratios are printed, then per pair and
//! figure the median and range of the ratios over the rounds.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/examples")
        .join(name)
}

fn ok(cmd: &mut Command) -> String {
    let o = cmd.output().expect("run");
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy, Default)]
struct Figures {
    seq_write_mbs: f64,
    seq_read_mbs: f64,
    rand_write_iops: f64,
    rand_read_iops: f64,
}

impl Figures {
    fn get(&self, i: usize) -> f64 {
        [
            self.seq_write_mbs,
            self.seq_read_mbs,
            self.rand_write_iops,
            self.rand_read_iops,
        ][i]
    }
}

const FIGURES: [(&str, &str); 4] = [
    ("sequential write+fsync", "MB/s"),
    ("sequential read (cold)", "MB/s"),
    ("random 4 KiB write", "IOPS"),
    ("random 4 KiB read", "IOPS"),
];

/// Writes back and drops the page cache of `path` (clean pages only, hence
/// the fdatasync first).
fn drop_cache(path: &Path) {
    let f = fs::File::open(path).unwrap();
    f.sync_data().unwrap();
    let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(r, 0, "posix_fadvise {}", path.display());
}

/// A 4 KiB buffer aligned for O_DIRECT.
struct Aligned(Box<[u8]>, usize);

impl Aligned {
    fn new(fill: u8) -> Self {
        let b = vec![fill; 8192].into_boxed_slice();
        let skip = b.as_ptr().align_offset(4096);
        Aligned(b, skip)
    }
    fn buf(&mut self) -> &mut [u8] {
        &mut self.0[self.1..self.1 + 4096]
    }
}

fn workload(mnt: &Path, lun_img: &Path, mib: usize, secs: u64) -> Figures {
    let path = mnt.join("data");
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    for _ in 0..mib {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    let seq_write_mbs = mib as f64 / t.elapsed().as_secs_f64();
    drop(f);

    let cold = || {
        drop_cache(&path);
        drop_cache(lun_img);
    };
    cold();
    let t = Instant::now();
    let mut f = fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        f.read_exact(&mut buf).unwrap();
    }
    let seq_read_mbs = mib as f64 / t.elapsed().as_secs_f64();
    assert!(buf.iter().all(|&b| b == 0x5a), "read back what was written");
    drop(f);

    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    let blocks = (mib as u64) << 8;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % blocks) * 4096
    };
    let mut block = Aligned::new(0xa5);
    let (t, mut n) = (Instant::now(), 0u64);
    while t.elapsed() < Duration::from_secs(secs) {
        f.write_all_at(block.buf(), next()).unwrap();
        n += 1;
    }
    f.sync_all().unwrap();
    let rand_write_iops = n as f64 / t.elapsed().as_secs_f64();

    cold();
    let mut b = Aligned::new(0);
    let (t, mut n) = (Instant::now(), 0u64);
    while t.elapsed() < Duration::from_secs(secs) {
        f.read_exact_at(b.buf(), next()).unwrap();
        n += 1;
    }
    let rand_read_iops = n as f64 / t.elapsed().as_secs_f64();
    Figures {
        seq_write_mbs,
        seq_read_mbs,
        rand_write_iops,
        rand_read_iops,
    }
}

struct Bench {
    dir: PathBuf,
    /// lvm.conf with the LUN's `iscsi://` URL as the PV.
    sys: PathBuf,
    /// lvm.conf with the LUN's file from iscsiadm as the PV.
    sys_on_file: PathBuf,
    url: String,
    lun_img: PathBuf,
    lun_file: PathBuf,
    mib: usize,
    secs: u64,
}

impl Bench {
    fn lvm(&self, sys: &Path, a: &[&str]) -> String {
        ok(Command::new(bin("lvm")).args(a).env("LVM_SYSTEM_DIR", sys))
    }

    /// Zeroes the LUN's first MiB (PV label, metadata area, file system
    /// superblock) through the initiator.
    fn wipe(&self) {
        let d = lvm::device::open_device(&self.url).expect("open LUN");
        d.write_at(0, &vec![0u8; 1 << 20]).unwrap();
        d.flush().unwrap();
    }

    /// The VG and its LV on the wiped LUN.
    fn make_lv(&self) {
        self.wipe();
        self.lvm(&self.sys, &["vgcreate", "webvg", &self.url]);
        self.lvm(
            &self.sys,
            &["lvcreate", "-an", "-l", "100%FREE", "-n", "lv", "webvg"],
        );
    }

    /// mkfs, mount, the workload, unmount.
    fn mounted(&self, dev: &str) -> Figures {
        ok(Command::new(bin("mkfs_clusterfs"))
            .args([
                "-q",
                "-O",
                "-p",
                "lock_nolock",
                "-t",
                "bench:fs",
                "-j",
                "1",
                dev,
            ])
            .env("LVM_SYSTEM_DIR", &self.sys));
        let mnt = self.dir.join("mnt");
        fs::create_dir_all(&mnt).unwrap();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("mount.log"))
            .unwrap();
        let child = Command::new(bin("mount_clusterfs"))
            .arg(dev)
            .arg(&mnt)
            .args(["-o", "lockproto=lock_nolock", "-f"])
            .env("LVM_SYSTEM_DIR", &self.sys)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mount_clusterfs");
        let mut m = Killed(child);
        let t = Instant::now();
        while !fs::read_to_string("/proc/self/mounts")
            .unwrap()
            .contains(&*mnt.to_string_lossy())
        {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "mount did not appear"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let f = workload(&mnt, &self.lun_img, self.mib, self.secs);
        ok(Command::new("fusermount3").arg("-u").arg(&mnt));
        let _ = m.0.wait();
        f
    }

    /// clusterfs on `iscsi://…` (in mount.clusterfs's process).
    fn lun_inproc(&self) -> Figures {
        self.wipe();
        self.mounted(&self.url)
    }

    /// clusterfs on `lvm:webvg/lv` (in mount.clusterfs's process).
    fn lv_inproc(&self) -> Figures {
        self.make_lv();
        self.mounted("lvm:webvg/lv")
    }

    /// clusterfs on the LUN's file from iscsiadm --login.
    fn lun_file(&self) -> Figures {
        self.wipe();
        self.mounted(&self.lun_file.to_string_lossy())
    }

    /// clusterfs on the active LV's file, the PV being `sys`'s.
    fn lv_file_with(&self, sys: &Path) -> Figures {
        self.make_lv();
        self.lvm(sys, &["lvchange", "-ay", "webvg/lv"]);
        let dev = self.lvm(sys, &["lvs", "--noheadings", "-o", "lv_path", "webvg/lv"]);
        let f = self.mounted(dev.trim());
        self.lvm(sys, &["lvchange", "-an", "webvg/lv"]);
        f
    }

    /// ... whose PV is the `iscsi://` URL (one FUSE hop, as the LUN file).
    fn lv_file(&self) -> Figures {
        self.lv_file_with(&self.sys)
    }

    /// ... whose PV is the LUN's file (two FUSE hops: the LV's, the LUN's).
    fn lv_on_lun_file(&self) -> Figures {
        self.lv_file_with(&self.sys_on_file)
    }
}

fn is_tmpfs(p: &Path) -> bool {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c.as_ptr(), &mut s) }, 0);
    s.f_type == libc::TMPFS_MAGIC
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(256);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let rounds: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let base =
        std::env::var_os("LV_BENCH_DIR").map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    assert!(
        !is_tmpfs(&base),
        "{} is a tmpfs: the LUN must be on a disk (set LV_BENCH_DIR)",
        base.display()
    );
    let dir = base.join(format!("lv_bench.{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let lun_img = dir.join("lun.img");
    {
        // Every block allocated and written before the first run.
        let mut f = fs::File::create(&lun_img).unwrap();
        let z = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            f.write_all(&z).unwrap();
        }
        f.sync_all().unwrap();
    }
    let port = 39_000 + (std::process::id() % 1000) as u16;
    let _tgtd = Killed(
        Command::new(bin("tgtd"))
            .args([
                "-f",
                "--iscsi",
                &format!("portal=127.0.0.1:{port}"),
                "-C",
                "0",
                "--control-dir",
            ])
            .arg(&dir)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tgtd"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let iqn = "iqn.2026-12.lab:bench";
    let adm = |a: &[&str]| {
        ok(Command::new(bin("tgtadm"))
            .arg("--control-dir")
            .arg(&dir)
            .args(["-C", "0", "--lld", "iscsi"])
            .args(a))
    };
    adm(&["--op", "new", "--mode", "target", "--tid", "1", "-T", iqn]);
    adm(&[
        "--op",
        "new",
        "--mode",
        "logicalunit",
        "--tid",
        "1",
        "--lun",
        "1",
        "-b",
        &lun_img.to_string_lossy(),
    ]);
    adm(&[
        "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
    ]);
    let portal = format!("127.0.0.1:{port}");
    let url = format!("iscsi://{portal}/{iqn}/1");

    // The LUN's file, as iscsiadm --login exposes it.
    let by_path = dir.join("by-path");
    let iscsiadm = |a: &[&str]| {
        ok(Command::new(bin("iscsiadm"))
            .env("ISCSI_STATE_DIR", dir.join("iscsi"))
            .env("ISCSI_MOUNT_DIR", &by_path)
            .env("ISCSI_INITIATOR_NAME", "iqn.2026-12.lab:bench-client")
            .args(a))
    };
    iscsiadm(&["-m", "discovery", "-t", "sendtargets", "-p", &portal]);
    iscsiadm(&["-m", "node", "-T", iqn, "-p", &portal, "--login"]);
    struct Logout<F: Fn(&[&str]) -> String>(F);
    impl<F: Fn(&[&str]) -> String> Drop for Logout<F> {
        fn drop(&mut self) {
            (self.0)(&["-m", "node", "--logout"]);
        }
    }
    let _logout = Logout(iscsiadm);
    let lun_file = by_path.join(format!("ip-{portal}-iscsi-{iqn}-lun-1"));

    let conf = |name: &str, pv: &str| {
        let sys = dir.join(name);
        fs::create_dir_all(&sys).unwrap();
        fs::write(
            sys.join("lvm.conf"),
            format!(
                "devices {{ dir = \"{}\" scan = [] extra = [\"{pv}\"] }}\nglobal {{ locking_dir = \"{}\" }}\n",
                dir.join(name).join("dev").display(),
                dir.join(name).join("lock").display()
            ),
        )
        .unwrap();
        sys
    };
    let bench = Bench {
        dir: dir.clone(),
        sys: conf("lvm", &url),
        sys_on_file: conf("lvm_on_file", &lun_file.to_string_lossy()),
        url,
        lun_img,
        lun_file,
        mib,
        secs,
    };

    type Run = fn(&Bench) -> Figures;
    let sides: [(&str, Run); 5] = [
        ("iscsi:// in-process", Bench::lun_inproc),
        ("lvm:VG/LV in-process", Bench::lv_inproc),
        ("iscsiadm's LUN file", Bench::lun_file),
        ("/dev/VG/LV, PV iscsi://", Bench::lv_file),
        ("/dev/VG/LV, PV LUN file", Bench::lv_on_lun_file),
    ];
    // (what, LUN side, LV side)
    let pairs = [
        ("in-process: lvm:VG/LV / iscsi://", 0, 1),
        (
            "one FUSE hop each: /dev/VG/LV (PV iscsi://) / LUN file",
            2,
            3,
        ),
        (
            "two hops / one: /dev/VG/LV (PV the LUN file) / LUN file",
            2,
            4,
        ),
    ];
    println!(
        "clusterfs lock_nolock, {mib} MiB file, {secs} s random phases, {rounds} rounds, LUN in {}",
        dir.display()
    );
    let mut results: Vec<[Figures; 5]> = Vec::new();
    for r in 0..rounds {
        let mut round = [Figures::default(); 5];
        let order: Vec<usize> = if r % 2 == 0 {
            (0..sides.len()).collect()
        } else {
            (0..sides.len()).rev().collect()
        };
        for &i in &order {
            round[i] = (sides[i].1)(&bench);
        }
        println!(
            "round {} ({}):",
            r + 1,
            if r % 2 == 0 {
                "in this order"
            } else {
                "in reverse order"
            }
        );
        for (i, (name, _)) in sides.iter().enumerate() {
            let f = &round[i];
            println!(
                "  {name:<24} write {:>6.1} MB/s  read {:>7.1} MB/s  rand write {:>7.0} IOPS  rand read {:>7.0} IOPS",
                f.seq_write_mbs, f.seq_read_mbs, f.rand_write_iops, f.rand_read_iops
            );
        }
        for (what, a, b) in pairs {
            let r: Vec<String> = (0..FIGURES.len())
                .map(|k| format!("{:.2}x", round[b].get(k) / round[a].get(k)))
                .collect();
            println!("  {what}: {}", r.join(" "));
        }
        results.push(round);
    }
    println!("\nLV / LUN over {rounds} rounds: median [min - max]");
    for (what, a, b) in pairs {
        println!("{what}");
        for (k, (name, _)) in FIGURES.iter().enumerate() {
            let v: Vec<f64> = results.iter().map(|r| r[b].get(k) / r[a].get(k)).collect();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            println!("  {name:<24} {:.2}x [{lo:.2} - {hi:.2}]", median(v));
        }
    }
    println!("\nmedians:");
    for (i, (name, _)) in sides.iter().enumerate() {
        let m = |k: usize| median(results.iter().map(|r| r[i].get(k)).collect());
        println!(
            "  {name:<24} write {:>6.1} MB/s  read {:>7.1} MB/s  rand write {:>7.0} IOPS  rand read {:>7.0} IOPS",
            m(0),
            m(1),
            m(2),
            m(3)
        );
    }
    drop(_logout);
    drop(_tgtd);
    let _ = fs::remove_dir_all(&dir);
}
