//! clusterfs on an LV against clusterfs on the same LUN used directly:
//! figures, not a pass/fail test (aim: the LV at ≥ 0.95× the LUN).
//!
//! ```sh
//! cargo build --release --bins
//! cargo run --release -p lvm --example lv_bench -- [MIB] [SECS]
//! ```
//!
//! Our tgtd serves one 1 GiB file-backed LUN on 127.0.0.1. Run A makes a
//! `lock_nolock` clusterfs on `iscsi://…/1` itself; run B makes a VG on the
//! LUN, one LV of all its extents, and the file system on `lvm:webvg/lv`
//! (mapped in-process, through the same initiator). Each run mounts it and
//! writes MIB MiB sequentially + fsync, reads them back, then does random
//! 4 KiB writes and reads in that file for SECS seconds each.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
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

fn ok(cmd: &mut Command) {
    let o = cmd.output().expect("run");
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Figures {
    seq_write_mbs: f64,
    seq_read_mbs: f64,
    rand_write_iops: f64,
    rand_read_iops: f64,
}

fn workload(mnt: &Path, mib: usize, secs: u64) -> Figures {
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
    let t = Instant::now();
    let mut f = fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mib {
        f.read_exact(&mut buf).unwrap();
    }
    let seq_read_mbs = mib as f64 / t.elapsed().as_secs_f64();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
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
    let block = [0xa5u8; 4096];
    let (t, mut n) = (Instant::now(), 0u64);
    while t.elapsed() < Duration::from_secs(secs) {
        f.write_all_at(&block, next()).unwrap();
        n += 1;
    }
    f.sync_all().unwrap();
    let rand_write_iops = n as f64 / t.elapsed().as_secs_f64();
    let mut b = [0u8; 4096];
    let (t, mut n) = (Instant::now(), 0u64);
    while t.elapsed() < Duration::from_secs(secs) {
        f.read_exact_at(&mut b, next()).unwrap();
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

fn mounted(dev: &str, mnt: &Path, sys: &Path, mib: usize, secs: u64) -> Figures {
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
        .env("LVM_SYSTEM_DIR", sys));
    fs::create_dir_all(mnt).unwrap();
    let child = Command::new(bin("mount_clusterfs"))
        .arg(dev)
        .arg(mnt)
        .args(["-o", "lockproto=lock_nolock", "-f"])
        .env("LVM_SYSTEM_DIR", sys)
        .stdout(Stdio::null())
        .spawn()
        .expect("mount_clusterfs");
    let _m = Killed(child);
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
    let f = workload(mnt, mib, secs);
    ok(Command::new("fusermount3").arg("-u").arg(mnt));
    f
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(256);
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let dir = std::env::temp_dir().join(format!("lv_bench.{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let lun = dir.join("lun.img");
    fs::File::create(&lun).unwrap().set_len(1 << 30).unwrap();
    let port = 39_000 + (std::process::id() % 1000) as u16;
    let tgtd = Killed(
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
        &lun.to_string_lossy(),
    ]);
    adm(&[
        "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
    ]);
    let url = format!("iscsi://127.0.0.1:{port}/{iqn}/1");
    let sys = dir.join("lvm");
    fs::create_dir_all(&sys).unwrap();
    fs::write(
        sys.join("lvm.conf"),
        format!(
            "devices {{ scan = [] extra = [\"{url}\"] }}\nglobal {{ locking_dir = \"{}\" }}\n",
            dir.join("lock").display()
        ),
    )
    .unwrap();

    let direct = mounted(&url, &dir.join("mnt_lun"), &sys, mib, secs);
    let lvm = |a: &[&str]| ok(Command::new(bin("lvm")).args(a).env("LVM_SYSTEM_DIR", &sys));
    lvm(&["vgcreate", "webvg", &url]);
    lvm(&["lvcreate", "-an", "-l", "100%FREE", "-n", "lv", "webvg"]);
    let on_lv = mounted("lvm:webvg/lv", &dir.join("mnt_lv"), &sys, mib, secs);
    drop(tgtd);
    let _ = fs::remove_dir_all(&dir);

    println!("clusterfs lock_nolock, {mib} MiB, {secs} s random phases: LUN direct | LV on the LUN | ratio");
    let row = |what: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{what:<22} {a:>10.1} {unit} | {b:>10.1} {unit} | {:.2}x",
            b / a
        )
    };
    row(
        "sequential write+fsync",
        direct.seq_write_mbs,
        on_lv.seq_write_mbs,
        "MB/s",
    );
    row(
        "sequential read",
        direct.seq_read_mbs,
        on_lv.seq_read_mbs,
        "MB/s",
    );
    row(
        "random 4 KiB write",
        direct.rand_write_iops,
        on_lv.rand_write_iops,
        "IOPS",
    );
    row(
        "random 4 KiB read",
        direct.rand_read_iops,
        on_lv.rand_read_iops,
        "IOPS",
    );
}
