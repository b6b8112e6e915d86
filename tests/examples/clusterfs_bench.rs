//! The clusterfs benchmark: figures, not a pass/fail test.
//!
//! ```sh
//! cargo build --release --bins
//! cargo run --release -p tests --example clusterfs_bench -- [--dir DIR] [--files N] [--mib M] [--secs S] [--placement rgrp|hash]
//! ```
//!
//! Two nodes on this machine (cmand on 127.0.1.1 and 127.0.1.2, `fence_lab`),
//! one volume image in a new directory under DIR (default `/var/tmp`, which
//! must be on a disk, not tmpfs, so that flushes cost what they cost). In
//! one run it prints:
//!
//! 1. one node, `lock_dlm` against `lock_nolock` on the same image:
//!    creating, stating and unlinking N files (fifteen mounts of each
//!    kind, taking turns, after a round that counts for nothing: medians);
//!    writing M MiB and fsync, reading them back after a remount, the
//!    same way (aim: ≥ 0.9×);
//! 2. two `lock_dlm` nodes creating, stating and unlinking in their own
//!    directories at once, against one node alone (five rounds, median;
//!    aim: aggregate ≥ 1.5×); as for one node, the clock starts when the
//!    directories exist;
//! 3. glock hand-offs per second: both nodes appending to one file;
//! 4. fcntl lock hand-offs per second: both nodes taking turns on one
//!    byte with F_SETLKW;
//! 5. a `lock_nolock` mount against bindfs `-o big_writes` over a directory
//!    of the same disk, writing M MiB, until the last write returns and
//!    until the fsync after it returns (five mounts each, taking turns,
//!    medians; aim: ≥ 0.8×).
//!
//! Every ratio is measured in the same run, beside its baseline.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tests::fslab::{cluster_up_in, fcntl_lock, mkfs_sized, stop_cmands, Lab};
use tests::{bin, FuseMount};

struct Args {
    dir: PathBuf,
    files: usize,
    mib: usize,
    secs: u64,
    placement: String,
}

const USAGE: &str = "usage: clusterfs_bench [--dir DIR] [--files N] [--mib M] [--secs S] \
[--placement rgrp|hash]
  --dir DIR        where the volume image goes, on a disk (default /var/tmp)
  --files N        files per metadata round (default 2000)
  --mib M          MiB per sequential write (default 256)
  --secs S         seconds per hand-off run (default 5)
  --placement P    DLM directory placement, rgrp or hash (default rgrp)";

/// Prints what is wrong and the usage, and exits with 2.
fn usage_error(why: &str) -> ! {
    eprintln!("clusterfs_bench: {why}\n{USAGE}");
    std::process::exit(2);
}

fn args() -> Args {
    let mut a = Args {
        dir: PathBuf::from("/var/tmp"),
        files: 2000,
        mib: 256,
        secs: 5,
        placement: "rgrp".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        if k == "--help" || k == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it
            .next()
            .unwrap_or_else(|| usage_error(&format!("{k} needs a value")));
        let number = |v: &str| {
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .unwrap_or_else(|| usage_error(&format!("{k} takes a positive number, not {v:?}")))
        };
        match k.as_str() {
            "--dir" => a.dir = PathBuf::from(v),
            "--files" => a.files = number(&v),
            "--mib" => a.mib = number(&v),
            "--secs" => a.secs = number(&v) as u64,
            "--placement" if v == "rgrp" || v == "hash" => a.placement = v,
            "--placement" => usage_error(&format!("--placement is rgrp or hash, not {v:?}")),
            _ => usage_error(&format!("unknown flag {k}")),
        }
    }
    a
}

/// Files per second for creating, stating and unlinking `n` files in `dir`.
#[derive(Clone, Copy, Debug, Default)]
struct Meta {
    create: f64,
    stat: f64,
    unlink: f64,
}

/// Rounds per mount kind (parts 1 and 5) and rounds of part 2.
const ROUNDS: usize = 5;

/// Metadata rounds per mount kind in part 1: a round takes a second or
/// two, and its rates move by a fifth or more from one mount to the next.
const META_ROUNDS: usize = 15;

impl Meta {
    /// Each rate's median over `runs`.
    fn median(runs: &[Meta]) -> Meta {
        Meta {
            create: median(runs, |m| m.create),
            stat: median(runs, |m| m.stat),
            unlink: median(runs, |m| m.unlink),
        }
    }
}

fn rate(n: usize, t: Duration) -> f64 {
    n as f64 / t.as_secs_f64()
}

fn meta(dir: &Path, n: usize) -> Meta {
    fs::create_dir_all(dir).unwrap();
    let t = Instant::now();
    for i in 0..n {
        File::create(dir.join(format!("f{i}"))).unwrap();
    }
    let create = rate(n, t.elapsed());
    let t = Instant::now();
    for i in 0..n {
        fs::metadata(dir.join(format!("f{i}"))).unwrap();
    }
    let stat = rate(n, t.elapsed());
    let t = Instant::now();
    for i in 0..n {
        fs::remove_file(dir.join(format!("f{i}"))).unwrap();
    }
    let unlink = rate(n, t.elapsed());
    Meta {
        create,
        stat,
        unlink,
    }
}

/// MiB/s writing `mib` MiB in 1 MiB writes: until the last write returns,
/// and until the fsync after it returns.
#[derive(Clone, Copy, Debug, Default)]
struct SeqWrite {
    written: f64,
    synced: f64,
}

fn seq_write(path: &Path, mib: usize) -> SeqWrite {
    let buf: Vec<u8> = (0..1 << 20).map(|i| (i * 7 + 3) as u8).collect();
    let t = Instant::now();
    let mut f = File::create(path).unwrap();
    for _ in 0..mib {
        f.write_all(&buf).unwrap();
    }
    let written = rate(mib, t.elapsed());
    f.sync_all().unwrap();
    SeqWrite {
        written,
        synced: rate(mib, t.elapsed()),
    }
}

/// A figure of a [`SeqWrite`] to print: its name and how to read it.
type Figure = (&'static str, fn(&SeqWrite) -> f64);

/// The median of `runs` by `f`.
fn median<T>(runs: &[T], f: impl Fn(&T) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The lowest and highest of `f` over `runs`, as "low-high".
fn spread<T>(runs: &[T], f: impl Fn(&T) -> f64) -> String {
    let v: Vec<f64> = runs.iter().map(f).collect();
    let low = v.iter().copied().fold(f64::INFINITY, f64::min);
    let high = v.iter().copied().fold(0.0, f64::max);
    format!("{low:.0}-{high:.0}")
}

/// MiB/s reading `path` in 1 MiB reads.
fn seq_read(path: &Path) -> f64 {
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut f = File::open(path).unwrap();
    let mut total = 0;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    rate(total >> 20, t.elapsed())
}

/// Hand-offs per second: events (node, time) sorted by time, counting the
/// changes of node.
fn handoffs(events: &Mutex<Vec<(u32, Instant)>>, secs: f64) -> (f64, f64) {
    let mut ev = events.lock().unwrap().clone();
    ev.sort_by_key(|e| e.1);
    let switches = ev.windows(2).filter(|w| w[0].0 != w[1].0).count();
    (switches as f64 / secs, ev.len() as f64 / secs)
}

/// Runs `f(node)` on nodes 1 and 2 at once for `secs`, each recording
/// (node, time) after every round.
fn on_both(secs: u64, f: impl Fn(u32) + Send + Sync + 'static) -> Arc<Mutex<Vec<(u32, Instant)>>> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let f = Arc::new(f);
    let until = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (1..=2)
        .map(|n| {
            let (events, f) = (events.clone(), f.clone());
            std::thread::spawn(move || {
                while Instant::now() < until {
                    f(n);
                    events.lock().unwrap().push((n, Instant::now()));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    events
}

fn nolock_mount(image: &Path, mnt: &Path) -> FuseMount {
    let mut c = Command::new(bin("mount_clusterfs"));
    c.arg(image)
        .arg(mnt)
        .arg("-f")
        .arg("-o")
        .arg("lockproto=lock_nolock");
    FuseMount::start(&mut c, mnt)
}

/// A lock_dlm mount of node `n`, its DLM directory placed by `placement`
/// (`-o dir_placement=`, as `--placement` says).
fn dlm_mount(lab: &Lab, n: u32, placement: &str) -> FuseMount {
    let extra = format!(",dir_placement={placement}");
    FuseMount::start(&mut lab.mount_cmd(n, &extra), &lab.mnt(n))
}

fn on_tmpfs(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
        .unwrap_or(false)
}

fn line(what: &str, ours: f64, base: f64, unit: &str, aim: &str) {
    println!(
        "{what:<44} {ours:>10.1} {unit:<8} vs {base:>10.1}  = {:>5.2}x  (aim {aim})",
        ours / base
    );
}

fn main() {
    let a = args();
    if on_tmpfs(&a.dir) {
        eprintln!(
            "warning: {} is on tmpfs, where flushes are free: pass --dir on a disk",
            a.dir.display()
        );
    }
    let Some((lab, mut cmands)) = cluster_up_in(2, &a.dir) else {
        eprintln!("needs root and /dev/fuse");
        std::process::exit(2);
    };
    let image = lab.image();
    let gib = ((a.mib as u64 * 3) >> 10).max(1) + 1;
    mkfs_sized(&image, 2, gib << 30);
    println!(
        "clusterfs benchmark: image {} ({gib} GiB), {} files, {} MiB, {} s per hand-off run",
        image.display(),
        a.files,
        a.mib,
        a.secs
    );

    // The image is sparse: whichever run comes first would also pay for
    // the host file system allocating its blocks. A round first that
    // counts for nothing.
    let m = nolock_mount(&image, &lab.mnt(1));
    meta(&lab.mnt(1).join("warm"), a.files);
    seq_write(&lab.mnt(1).join("big"), a.mib);
    fs::remove_file(lab.mnt(1).join("big")).unwrap();
    m.stop();

    // 1. One node: lock_dlm against lock_nolock. The metadata rounds
    // take turns, a new mount each (a run's rate depends on where the
    // scheduler puts the client and the daemon: it can differ twofold
    // from one mount to the next on a busy machine), median of each.
    let (mut nolocks, mut dlms) = (Vec::new(), Vec::new());
    for round in 0..META_ROUNDS {
        let m = nolock_mount(&image, &lab.mnt(1));
        nolocks.push(meta(&lab.mnt(1).join(format!("meta{round}")), a.files));
        m.stop();
        let m = dlm_mount(&lab, 1, &a.placement);
        dlms.push(meta(&lab.mnt(1).join(format!("meta1-{round}")), a.files));
        m.stop();
    }
    let (nolock, one) = (Meta::median(&nolocks), Meta::median(&dlms));
    // I/O the same way: each kind writes, remounts, reads back.
    let (mut nolock_io, mut dlm_io) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let m = nolock_mount(&image, &lab.mnt(1));
        let w = seq_write(&lab.mnt(1).join("big"), a.mib);
        m.stop();
        let m = nolock_mount(&image, &lab.mnt(1));
        nolock_io.push((w, seq_read(&lab.mnt(1).join("big"))));
        fs::remove_file(lab.mnt(1).join("big")).unwrap();
        m.stop();
        let m = dlm_mount(&lab, 1, &a.placement);
        let w = seq_write(&lab.mnt(1).join("big"), a.mib);
        m.stop();
        let m = dlm_mount(&lab, 1, &a.placement);
        dlm_io.push((w, seq_read(&lab.mnt(1).join("big"))));
        fs::remove_file(lab.mnt(1).join("big")).unwrap();
        m.stop();
    }
    println!(
        "\n1. one node, lock_dlm vs lock_nolock (same image; median of {META_ROUNDS} mounts each for metadata, {ROUNDS} for I/O)"
    );
    line("  create", one.create, nolock.create, "files/s", ">= 0.9x");
    line("  stat", one.stat, nolock.stat, "files/s", ">= 0.9x");
    line("  unlink", one.unlink, nolock.unlink, "files/s", ">= 0.9x");
    println!(
        "    from mount to mount: create {} (lock_dlm) and {} (lock_nolock), unlink {} and {}",
        spread(&dlms, |m| m.create),
        spread(&nolocks, |m| m.create),
        spread(&dlms, |m| m.unlink),
        spread(&nolocks, |m| m.unlink),
    );
    line(
        "  sequential write + fsync",
        median(&dlm_io, |r| r.0.synced),
        median(&nolock_io, |r| r.0.synced),
        "MiB/s",
        ">= 0.9x",
    );
    line(
        "  sequential read (after remount)",
        median(&dlm_io, |r| r.1),
        median(&nolock_io, |r| r.1),
        "MiB/s",
        ">= 0.9x",
    );
    let m = dlm_mount(&lab, 1, &a.placement);

    // 2. Two nodes, each in its own directory, against one alone.
    // Both nodes at once, ROUNDS times (new directories each time); the
    // round with the median aggregate is shown. As in part 1, the clock
    // starts once the directories are there: each node makes its own and
    // looks it up, and only then do both start. Making them changes the
    // root directory's glock hands, which costs up to its minimum hold
    // time; that is shown apart.
    let m2 = dlm_mount(&lab, 2, &a.placement);
    let rounds: Vec<(f64, Duration, Vec<Meta>)> = (0..ROUNDS)
        .map(|round| {
            let ready = Arc::new(std::sync::Barrier::new(3));
            let t = Instant::now();
            let workers: Vec<_> = (1..=2u32)
                .map(|n| {
                    let dir = lab.mnt(n).join(format!("own{n}-{round}"));
                    let (files, ready) = (a.files, ready.clone());
                    std::thread::spawn(move || {
                        fs::create_dir(&dir).unwrap();
                        ready.wait();
                        fs::metadata(&dir).unwrap();
                        ready.wait();
                        meta(&dir, files)
                    })
                })
                .collect();
            ready.wait();
            ready.wait();
            let setup = t.elapsed();
            let t = Instant::now();
            let both = workers.into_iter().map(|w| w.join().unwrap()).collect();
            (rate(3 * 2 * a.files, t.elapsed()), setup, both)
        })
        .collect();
    let mut order: Vec<usize> = (0..ROUNDS).collect();
    order.sort_by(|&x, &y| rounds[x].0.total_cmp(&rounds[y].0));
    let (aggregate, _, _) = rounds[order[ROUNDS / 2]];
    let one_total = Duration::from_secs_f64(
        a.files as f64 / one.create + a.files as f64 / one.stat + a.files as f64 / one.unlink,
    );
    println!(
        "\n2. two lock_dlm nodes in their own directories vs one node (median of {ROUNDS} rounds)"
    );
    line(
        "  create+stat+unlink, aggregate",
        aggregate,
        rate(3 * a.files, one_total),
        "ops/s",
        ">= 1.5x",
    );
    for (r, (total, setup, both)) in rounds.iter().enumerate() {
        println!(
            "  round {}: {total:.0} ops/s (before it, making the two directories: {} ms)",
            r + 1,
            setup.as_millis()
        );
        for (i, b) in both.iter().enumerate() {
            println!(
                "    node {}: create {:.0}/s, stat {:.0}/s, unlink {:.0}/s",
                i + 1,
                b.create,
                b.stat,
                b.unlink
            );
        }
    }

    // 3. Glock hand-offs: both nodes append to one file.
    File::create(lab.mnt(1).join("shared")).unwrap();
    let paths: Vec<PathBuf> = (1..=2).map(|n| lab.mnt(n).join("shared")).collect();
    let p = paths.clone();
    let ev = on_both(a.secs, move |n| {
        let mut f = OpenOptions::new()
            .append(true)
            .open(&p[n as usize - 1])
            .unwrap();
        f.write_all(format!("node {n}\n").as_bytes()).unwrap();
    });
    let (switches, appends) = handoffs(&ev, a.secs as f64);
    let lines = fs::read_to_string(&paths[0]).unwrap().lines().count();
    println!("\n3. glock hand-offs, two nodes appending to one file");
    println!(
        "  {switches:.0} hand-offs/s, {appends:.0} appends/s ({lines} lines in the file, {} appended)",
        ev.lock().unwrap().len()
    );

    // 4. fcntl lock hand-offs: both nodes take one byte in turn.
    File::create(lab.mnt(1).join("lockfile")).unwrap();
    let p: Vec<PathBuf> = (1..=2).map(|n| lab.mnt(n).join("lockfile")).collect();
    let files: Vec<File> = p
        .iter()
        .map(|p| OpenOptions::new().read(true).write(true).open(p).unwrap())
        .collect();
    let files = Arc::new(files);
    let ev = on_both(a.secs, move |n| {
        let f = &files[n as usize - 1];
        fcntl_lock(f, libc::F_WRLCK, true).unwrap();
        fcntl_lock(f, libc::F_UNLCK, true).unwrap();
    });
    let (switches, rounds) = handoffs(&ev, a.secs as f64);
    println!("\n4. fcntl (F_SETLKW) hand-offs between two nodes");
    println!("  {switches:.0} hand-offs/s, {rounds:.0} lock+unlock/s");
    m.stop();
    m2.stop();
    for n in 1..=2 {
        let log =
            fs::read_to_string(lab.state(n).join(format!("mount{n}.log"))).unwrap_or_default();
        // The last mount of node n is the one of parts 2 to 4.
        if let Some(l) = log.lines().rfind(|l| l.contains("glocks given up")) {
            let fields = l
                .split("glocks given up to other nodes while mounted")
                .nth(1)
                .unwrap_or(l);
            println!("  node {n}, demotes during 2-4:{fields}");
        }
    }

    // 5. lock_nolock against bindfs over the same disk.
    println!("\n5. lock_nolock vs bindfs -o big_writes, same disk");
    if tests::have("bindfs") {
        let back = lab.mnt(1).parent().unwrap().join("bindfs-back");
        let front = lab.mnt(1).parent().unwrap().join("bindfs-front");
        fs::create_dir_all(&back).unwrap();
        fs::create_dir_all(&front).unwrap();
        // Taking turns, a new file each time (the first write of a file
        // allocates on either side), medians.
        let (mut binds, mut ours) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let mut c = Command::new("bindfs");
            c.args(["-f", "-o", "big_writes"]).arg(&back).arg(&front);
            let b = FuseMount::start(&mut c, &front);
            binds.push(seq_write(&front.join(format!("big{round}")), a.mib));
            fs::remove_file(front.join(format!("big{round}"))).unwrap();
            b.stop();
            let m = nolock_mount(&image, &lab.mnt(1));
            ours.push(seq_write(&lab.mnt(1).join(format!("big{round}")), a.mib));
            fs::remove_file(lab.mnt(1).join(format!("big{round}"))).unwrap();
            m.stop();
        }
        println!("  (median of {ROUNDS} mounts each)");
        let figures: [Figure; 2] = [
            ("  sequential write (until the last write)", |w| w.written),
            ("  sequential write + fsync", |w| w.synced),
        ];
        for (what, f) in figures {
            line(
                what,
                median(&ours, f),
                median(&binds, f),
                "MiB/s",
                ">= 0.8x",
            );
        }
    } else {
        println!("  skipped: bindfs is not installed");
    }
    stop_cmands(&mut cmands);
}
