//! Benchmark (ignored by default): mount.clusterfs on an image in tmpfs
//! against bindfs (a FUSE passthrough) over a tmpfs directory. Prints
//! create/stat/unlink rates, 4 KiB random write/read and 1 MiB sequential
//! throughput, and ours/theirs ratios.
//!
//!   cargo test -p tests --release --test clusterfs_bench -- --ignored --nocapture

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::FuseMount;

struct Results {
    create: f64,
    stat: f64,
    unlink: f64,
    rand_write: f64,
    rand_read: f64,
    seq_write: f64,
    seq_read: f64,
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn run_workload(root: &Path) -> Results {
    let dir = root.join("bench");
    fs::create_dir(&dir).unwrap();
    const N: usize = 2000;
    let t = Instant::now();
    for i in 0..N {
        File::create(dir.join(format!("f{i}"))).unwrap();
    }
    let create = rate(N, t.elapsed());
    let t = Instant::now();
    for i in 0..N {
        fs::metadata(dir.join(format!("f{i}"))).unwrap();
    }
    let stat = rate(N, t.elapsed());
    let t = Instant::now();
    for i in 0..N {
        fs::remove_file(dir.join(format!("f{i}"))).unwrap();
    }
    let unlink = rate(N, t.elapsed());

    // 4 KiB random I/O in a 64 MiB file.
    const FILE: u64 = 64 << 20;
    let path = dir.join("rand");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.set_len(FILE).unwrap();
    let block = vec![0x5au8; 4096];
    let mut x: u64 = 12345;
    let ops = 4000;
    let t = Instant::now();
    for _ in 0..ops {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        f.write_all_at(&block, (x >> 20) % (FILE / 4096) * 4096)
            .unwrap();
    }
    f.sync_all().unwrap();
    let rand_write = rate(ops, t.elapsed()) * 4096.0 / 1048576.0;
    let mut buf = vec![0u8; 4096];
    let t = Instant::now();
    for _ in 0..ops {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        f.read_exact_at(&mut buf, (x >> 20) % (FILE / 4096) * 4096)
            .unwrap();
    }
    let rand_read = rate(ops, t.elapsed()) * 4096.0 / 1048576.0;
    drop(f);

    // 1 MiB sequential, 256 MiB.
    let path = dir.join("seq");
    let chunk = vec![0xa5u8; 1 << 20];
    let t = Instant::now();
    let mut f = File::create(&path).unwrap();
    for _ in 0..256 {
        f.write_all(&chunk).unwrap();
    }
    f.sync_all().unwrap();
    let seq_write = rate(256, t.elapsed());
    drop(f);
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut f = File::open(&path).unwrap();
    for _ in 0..256 {
        f.read_exact(&mut buf).unwrap();
    }
    let seq_read = rate(256, t.elapsed());
    Results {
        create,
        stat,
        unlink,
        rand_write,
        rand_read,
        seq_write,
        seq_read,
    }
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture"]
fn clusterfs_vs_bindfs() {
    if !tests::require_fuse() || !tests::require("bindfs") {
        return;
    }
    if !Path::new("/dev/shm").is_dir() {
        tests::skip("/dev/shm is missing");
        return;
    }
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let work = tempfile::tempdir().unwrap();

    // Ours: an image in tmpfs.
    let img: PathBuf = shm.path().join("vol.img");
    File::create(&img).unwrap().set_len(1 << 30).unwrap();
    let st = Command::new(tests::bin("mkfs_clusterfs"))
        .args(["-q", "-O", "-p", "lock_nolock"])
        .arg(&img)
        .status();
    assert!(st.unwrap().success());
    let ours_mnt = work.path().join("ours");
    fs::create_dir(&ours_mnt).unwrap();
    // CLUSTERFS_BENCH_OPTS adds mount options (e.g. noacl).
    let opts = match std::env::var("CLUSTERFS_BENCH_OPTS") {
        Ok(extra) if !extra.is_empty() => format!("lockproto=lock_nolock,{extra}"),
        _ => "lockproto=lock_nolock".to_string(),
    };
    let ours = FuseMount::start(
        Command::new(tests::bin("mount_clusterfs"))
            .arg(&img)
            .arg(&ours_mnt)
            .args(["-f", "-o", &opts])
            .stderr(Stdio::null()),
        &ours_mnt,
    );
    let a = run_workload(&ours_mnt);
    ours.unmount();

    // Theirs: bindfs over a tmpfs directory.
    let src = shm.path().join("src");
    fs::create_dir(&src).unwrap();
    let theirs_mnt = work.path().join("theirs");
    fs::create_dir(&theirs_mnt).unwrap();
    let theirs = FuseMount::start(
        Command::new("bindfs").arg("-f").arg(&src).arg(&theirs_mnt),
        &theirs_mnt,
    );
    let b = run_workload(&theirs_mnt);
    theirs.unmount();

    println!(
        "{:<22}{:>14}{:>14}{:>10}",
        "workload", "clusterfs", "bindfs", "ours/them"
    );
    let rows = [
        ("create (ops/s)", a.create, b.create),
        ("stat (ops/s)", a.stat, b.stat),
        ("unlink (ops/s)", a.unlink, b.unlink),
        ("4K rand write (MiB/s)", a.rand_write, b.rand_write),
        ("4K rand read (MiB/s)", a.rand_read, b.rand_read),
        ("1M seq write (MiB/s)", a.seq_write, b.seq_write),
        ("1M seq read (MiB/s)", a.seq_read, b.seq_read),
    ];
    for (name, x, y) in rows {
        println!("{name:<22}{x:>14.1}{y:>14.1}{:>10.2}", x / y);
    }
}
