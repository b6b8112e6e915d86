//! A `lock_dlm` volume in a two-node cluster (cmand on 127.0.1.1 and
//! 127.0.1.2, `fence_lab`): `mount.clusterfs` joins through the node's
//! cmand and the volume's DLM lockspace, holds the volume alone in the
//! cluster (a second node's mount is refused, a mount whose lock table
//! names another cluster too), and when the node that has it is killed
//! (its mount and its cmand), the other node mounts only after fencing,
//! replays the dead node's journal and finds everything it had fsync'd;
//! `fsck.gfs2 -n` is clean at the end.

#[path = "iscsi_target_util.rs"]
mod iscsi_target_util;
#[path = "../../clusterfs/tests/common/model.rs"]
mod model;
#[path = "support/mounted.rs"]
mod mounted;

use std::path::Path;
use std::time::Duration;

use iscsi_target_util::Tgtd;
use tests::fslab::{cluster_up, cmand, fcntl_lock, mkfs, mkfs_journals, stop_cmands, Lab};
use tests::FuseMount;

fn fsync_write(path: &Path, data: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn two_nodes_share_a_lock_dlm_volume_and_survive_one_nodes_death() {
    let Some((lab, mut cmands)) = cluster_up(2) else {
        return;
    };
    mkfs(&lab.image());
    let m1 = FuseMount::start(&mut lab.mount_cmd(1, ""), &lab.mnt(1));
    let m2 = FuseMount::start(&mut lab.mount_cmd(2, ""), &lab.mnt(2));
    let (d1, d2) = (lab.mnt(1), lab.mnt(2));

    // What one node writes, the other reads next.
    let data = b"written on node 1 and fsync'd\n".repeat(100);
    fsync_write(&d1.join("a"), &data);
    assert_eq!(std::fs::read(d2.join("a")).unwrap(), data);
    std::fs::create_dir(d2.join("dir2")).unwrap();
    fsync_write(&d2.join("dir2/b"), b"from node 2");
    assert_eq!(names(&d1), vec!["a", "dir2"]);
    assert_eq!(std::fs::read(d1.join("dir2/b")).unwrap(), b"from node 2");
    std::fs::write(d1.join("a"), b"rewritten by node 1").unwrap();
    assert_eq!(std::fs::read(d2.join("a")).unwrap(), b"rewritten by node 1");
    assert_eq!(std::fs::metadata(d2.join("a")).unwrap().len(), 19);
    std::fs::rename(d2.join("dir2/b"), d2.join("b")).unwrap();
    assert_eq!(names(&d1), vec!["a", "b", "dir2"]);
    std::fs::remove_dir(d1.join("dir2")).unwrap();
    assert_eq!(names(&d2), vec!["a", "b"]);

    // Each node's df counts the free blocks as the master file had them at
    // mount plus its own changes since: the two added up come back to
    // where they were once a file written and removed is freed.
    let free = |d: &Path| nix::sys::statvfs::statvfs(d).unwrap().blocks_free();
    let free_on_both = || free(&d1) + free(&d2);
    let freed_again = |before: u64, what: &str| {
        let start = std::time::Instant::now();
        // (At least: a file unlinked before may be freed meanwhile too,
        // its last close being answered after `drop` returned.)
        while free_on_both() < before {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what} was never freed: {} blocks free, {before} before",
                free_on_both()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let written = |before: u64| {
        assert!(
            free_on_both() + 1000 < before,
            "4 MiB written, df unchanged"
        );
    };

    // A file open on node 1 stays readable after node 2 unlinks it; it is
    // freed when node 1 closes it: node 2's refused request for its iopen
    // glock came while node 1 held it, so node 1's last close looks.
    let before = free_on_both();
    let mut data = b"still here".to_vec();
    data.resize(4 << 20, b'.');
    fsync_write(&d1.join("u"), &data);
    written(before);
    let mut open_on_1 = std::fs::File::open(d1.join("u")).unwrap();
    std::fs::remove_file(d2.join("u")).unwrap();
    assert!(!d1.join("u").exists());
    let mut got = Vec::new();
    std::io::Read::read_to_end(&mut open_on_1, &mut got).unwrap();
    assert!(got == data, "the unlinked file read back changed");
    drop(open_on_1);
    freed_again(before, "the file node 2 unlinked while node 1 had it open");

    // The same with node 1's own unlink, and two handles open: the last
    // close frees it.
    let before = free_on_both();
    fsync_write(&d1.join("own"), &vec![3u8; 4 << 20]);
    written(before);
    let first = std::fs::File::open(d1.join("own")).unwrap();
    let second = std::fs::File::open(d1.join("own")).unwrap();
    std::fs::remove_file(d1.join("own")).unwrap();
    drop(first);
    assert!(free_on_both() + 1000 < before, "freed with a handle open");
    drop(second);
    freed_again(before, "the file node 1 unlinked while it had it open");

    // A file node 2 wrote and closed (it keeps the file's iopen glock
    // cached) is unlinked on node 1: node 1 may not free it while node 2
    // holds that glock, but its refused request tells node 2, which gives
    // the glock up, and one of them frees the file at once.
    let before = free_on_both();
    fsync_write(&d2.join("cached"), &vec![7u8; 4 << 20]);
    written(before);
    std::fs::remove_file(d1.join("cached")).unwrap();
    freed_again(before, "the file node 1 unlinked");

    // The other cluster's name is refused.
    let said = lab.refused_mount(2, ",locktable=other:vol1");
    assert!(said.contains("belongs to cluster \"other\""), "{said}");

    // Node 1 dies (its mount and its cmand) after an fsync'd write, with a
    // file open that node 2 unlinked; node 2 goes on once node 1 is fenced
    // and its journal replayed, and frees that file (fsck finds no leak).
    fsync_write(&d1.join("last"), b"node 1's last fsync'd write");
    node_1_dies_holding_a_file_node_2_unlinked(&lab, m1, &mut cmands);
    lab.wait_status(2, "node 1 fenced", |s| {
        s.members.len() == 1 && s.victims.is_empty()
    });
    assert_eq!(
        std::fs::read(d2.join("last")).unwrap(),
        b"node 1's last fsync'd write"
    );
    fsync_write(&d2.join("after"), b"node 2 alone");
    let log = std::fs::read_to_string(lab.state(2).join("mount2.log")).unwrap();
    assert!(
        log.contains("recovered a failed node's journal"),
        "node 2 replayed nothing:\n{log}"
    );
    tests::wait_for(
        "node 2 to free the file node 1 held",
        Duration::from_secs(30),
        || freed_one_left_unlinked(&lab, 2),
    );

    // Node 1 comes back and mounts again.
    cmands[0] = cmand(&lab, 1);
    lab.wait_status(1, "node 1 back", |s| {
        s.members.len() == 2 && s.quorum.quorate
    });
    let m1 = FuseMount::start(&mut lab.mount_cmd(1, ""), &lab.mnt(1));
    assert_eq!(names(&lab.mnt(1)), vec!["a", "after", "b", "last"]);
    m1.stop();
    m2.stop();
    stop_cmands(&mut cmands);
    tests::fsck_clean(&lab.image());
}

/// A node that replays a failed node's journal frees what that node had
/// open and unlinked even when it unmounts at once (its reclaimer looks
/// only every half second: the unmount looks too). Node 1 dies with a
/// file open that node 2 unlinked; node 2 is stopped the moment its log
/// says the journal is replayed; fsck finds no inode left allocated.
#[test]
fn a_node_that_replays_a_journal_and_unmounts_at_once_leaves_nothing_unlinked() {
    let Some((lab, mut cmands)) = cluster_up(2) else {
        return;
    };
    mkfs(&lab.image());
    let m1 = FuseMount::start(&mut lab.mount_cmd(1, ""), &lab.mnt(1));
    let m2 = FuseMount::start(&mut lab.mount_cmd(2, ""), &lab.mnt(2));
    node_1_dies_holding_a_file_node_2_unlinked(&lab, m1, &mut cmands);
    let log = lab.state(2).join("mount2.log");
    tests::wait_for(
        "node 2 to replay node 1's journal",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("recovered a failed node's journal")
        },
    );
    m2.stop();
    assert!(
        freed_one_left_unlinked(&lab, 2),
        "node 2 did not free the file node 1 held"
    );
    stop_cmands(&mut cmands);
    tests::fsck_clean(&lab.image());
}

/// Node 1 dies (its mount, then its cmand) with its file `held` open,
/// which node 2 unlinked meanwhile: an inode the survivor must free.
fn node_1_dies_holding_a_file_node_2_unlinked(
    lab: &Lab,
    m1: FuseMount,
    cmands: &mut [std::process::Child],
) {
    let (d1, d2) = (lab.mnt(1), lab.mnt(2));
    fsync_write(&d1.join("held"), b"open on node 1 when it dies");
    let held_by_1 = std::fs::File::open(d1.join("held")).unwrap();
    std::fs::remove_file(d2.join("held")).unwrap();
    m1.kill();
    drop(held_by_1);
    tests::reap(&mut cmands[0]);
}

/// Whether node `i`'s mount log says it freed the one inode a failed
/// node left unlinked.
fn freed_one_left_unlinked(lab: &Lab, i: u32) -> bool {
    let log = std::fs::read_to_string(lab.state(i).join(format!("mount{i}.log"))).unwrap();
    log.lines()
        .any(|l| l.contains("failed nodes left unlinked") && l.contains("freed=1"))
}

/// Node 1's cmand alone dies: its mount stops writing at once (the
/// withdraw: writes and fsync fail), `fence_lab` kills the mount with its
/// node (the mount registered its PID in the node's state directory), and
/// node 2 mounts after the fencing with node 1's fsync'd data intact.
#[test]
fn a_mount_whose_cmand_dies_stops_writing_and_is_fenced_with_its_node() {
    let Some((lab, mut cmands)) = cluster_up(2) else {
        return;
    };
    mkfs(&lab.image());
    let mut m1 = FuseMount::start(&mut lab.mount_cmd(1, ""), &lab.mnt(1));
    let pid_files = || {
        std::fs::read_dir(lab.state(1))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("mount.clusterfs.")
            })
            .count()
    };
    assert_eq!(pid_files(), 1, "the mount registered no PID for fencing");
    std::fs::write(lab.mnt(1).join("before"), b"kept").unwrap();
    std::fs::File::open(lab.mnt(1).join("before"))
        .unwrap()
        .sync_all()
        .unwrap();

    tests::reap(&mut cmands[0]);
    // From now on nothing node 1 writes may reach the volume.
    tests::wait_for("node 1's writes to fail", Duration::from_secs(30), || {
        let r = std::fs::File::create(lab.mnt(1).join("after")).and_then(|f| f.sync_all());
        r.is_err()
    });
    let log = std::fs::read_to_string(lab.state(1).join("mount1.log")).unwrap();
    assert!(log.contains("lost cmand"), "no withdraw in:\n{log}");
    // Node 2 fences node 1, which kills node 1's mount.
    tests::wait_for("node 1's mount killed", Duration::from_secs(60), || {
        m1.child.try_wait().unwrap().is_some()
    });
    m1.kill();
    lab.wait_status(2, "node 1 fenced", |s| {
        s.members.len() == 1 && s.victims.is_empty()
    });
    let m2 = FuseMount::start(&mut lab.mount_cmd(2, ""), &lab.mnt(2));
    assert_eq!(std::fs::read(lab.mnt(2).join("before")).unwrap(), b"kept");
    m2.stop();
    stop_cmands(&mut cmands);
    tests::fsck_clean(&lab.image());
}

/// Both nodes write at once, each its own files in a shared directory and
/// both appending to one shared log file, while reading what the other
/// wrote: nothing is lost, every file reads the same from both nodes, and
/// `fsck.gfs2 -n` is clean after both unmount.
#[test]
fn two_nodes_writing_at_once_lose_nothing() {
    const FILES: usize = 40;
    let Some((lab, mut cmands)) = cluster_up(2) else {
        return;
    };
    mkfs(&lab.image());
    let m1 = FuseMount::start(&mut lab.mount_cmd(1, ""), &lab.mnt(1));
    let m2 = FuseMount::start(&mut lab.mount_cmd(2, ""), &lab.mnt(2));
    std::fs::create_dir(lab.mnt(1).join("shared")).unwrap();
    let writers: Vec<_> = [1u32, 2]
        .into_iter()
        .map(|n| {
            let dir = lab.mnt(n).join("shared");
            std::thread::spawn(move || {
                use std::io::Write;
                for i in 0..FILES {
                    let body = format!("node {n} file {i}\n").repeat(50 + i);
                    fsync_write(&dir.join(format!("n{n}-{i}")), body.as_bytes());
                    let mut log = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(dir.join("log"))
                        .unwrap();
                    writeln!(log, "node {n} entry {i}").unwrap();
                    // Read one of the other node's files, if it is there:
                    // all of what it wrote so far (it may be just created).
                    let (m, j) = (3 - n, i / 2);
                    if let Ok(b) = std::fs::read(dir.join(format!("n{m}-{j}"))) {
                        let full = format!("node {m} file {j}\n").repeat(50 + j);
                        assert!(
                            full.as_bytes().starts_with(&b),
                            "node {n} read {} bytes of n{m}-{j} that node {m} did not write",
                            b.len()
                        );
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    for n in [1u32, 2] {
        let dir = lab.mnt(n).join("shared");
        assert_eq!(names(&dir).len(), 2 * FILES + 1, "node {n} sees every file");
        for w in [1u32, 2] {
            for i in 0..FILES {
                let want = format!("node {w} file {i}\n").repeat(50 + i);
                let got = std::fs::read(dir.join(format!("n{w}-{i}"))).unwrap();
                assert!(got == want.as_bytes(), "node {n} reads n{w}-{i} wrong");
            }
        }
        let log = std::fs::read_to_string(dir.join("log")).unwrap();
        assert_eq!(
            log.lines().count(),
            2 * FILES,
            "appends lost, seen from node {n}"
        );
    }
    m1.stop();
    m2.stop();
    stop_cmands(&mut cmands);
    tests::fsck_clean(&lab.image());
}

/// fcntl locks across nodes: a counter in a file incremented under
/// F_SETLKW from both nodes loses no increment; F_SETLK on a byte the
/// other node holds is refused (EAGAIN), and allowed once it lets go.
#[test]
fn fcntl_locks_exclude_across_nodes() {
    const ROUNDS: u64 = 60;
    let Some((lab, mut cmands)) = cluster_up(2) else {
        return;
    };
    mkfs(&lab.image());
    let m1 = FuseMount::start(&mut lab.mount_cmd(1, ""), &lab.mnt(1));
    let m2 = FuseMount::start(&mut lab.mount_cmd(2, ""), &lab.mnt(2));
    fsync_write(&lab.mnt(1).join("counter"), b"0");

    // Node 1 holds the byte: node 2's F_SETLK is refused, then allowed.
    let open = |n: u32| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(lab.mnt(n).join("counter"))
            .unwrap()
    };
    let f1 = open(1);
    fcntl_lock(&f1, libc::F_WRLCK, false).unwrap();
    let f2 = open(2);
    let e = fcntl_lock(&f2, libc::F_WRLCK, false).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EAGAIN), "{e}");
    fcntl_lock(&f1, libc::F_UNLCK, false).unwrap();
    fcntl_lock(&f2, libc::F_WRLCK, false).unwrap();
    fcntl_lock(&f2, libc::F_UNLCK, false).unwrap();
    drop((f1, f2));

    let workers: Vec<_> = [1u32, 2]
        .into_iter()
        .map(|n| {
            let path = lab.mnt(n).join("counter");
            std::thread::spawn(move || {
                use std::io::{Read, Seek, Write};
                let mut f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .unwrap();
                for _ in 0..ROUNDS {
                    fcntl_lock(&f, libc::F_WRLCK, true).unwrap();
                    let mut s = String::new();
                    f.seek(std::io::SeekFrom::Start(0)).unwrap();
                    f.read_to_string(&mut s).unwrap();
                    let v: u64 = s.trim().parse().unwrap();
                    f.seek(std::io::SeekFrom::Start(0)).unwrap();
                    f.write_all(format!("{}", v + 1).as_bytes()).unwrap();
                    f.sync_all().unwrap();
                    fcntl_lock(&f, libc::F_UNLCK, true).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let got = std::fs::read_to_string(lab.mnt(2).join("counter")).unwrap();
    assert_eq!(got.trim(), (2 * ROUNDS).to_string(), "increments lost");
    m1.stop();
    m2.stop();
    stop_cmands(&mut cmands);
    tests::fsck_clean(&lab.image());
}

const IQN: &str = "iqn.2026-12.org.clusterfs:cluster-test";

/// The coherence exerciser on `n` nodes: seeded random operations
/// (creates, writes, truncates, renames, links, unlinks, xattrs...) each
/// issued on a node picked at random, checked after every step against one
/// model through every node's mount; `fsck.gfs2 -n` clean after all
/// unmount. `CLUSTERFS_CLUSTER_SEEDS` / `CLUSTERFS_CLUSTER_STEPS` for
/// longer runs, `CLUSTERFS_CLUSTER_FIRST_SEED` to replay one.
fn coherence_exerciser(n: u32, first_seed: u64) {
    let Some((lab, cmands)) = cluster_up(n) else {
        return;
    };
    let image = lab.image();
    exercise(lab, cmands, &image, first_seed);
}

/// Runs the exerciser's seeds on the lab's nodes; `volume` is what mkfs
/// makes and fsck checks (the image, or the backing file of the LUN the
/// nodes mount).
fn exercise(lab: Lab, mut cmands: Vec<std::process::Child>, volume: &Path, first_seed: u64) {
    let n = cmands.len() as u32;
    let env = |v: &str, d: u64| {
        std::env::var(v)
            .ok()
            .and_then(|x| x.parse().ok())
            .unwrap_or(d)
    };
    let seeds = env("CLUSTERFS_CLUSTER_SEEDS", 1);
    let first_seed = env("CLUSTERFS_CLUSTER_FIRST_SEED", first_seed);
    let steps = env("CLUSTERFS_CLUSTER_STEPS", 120) as usize;
    for seed in first_seed..first_seed + seeds {
        let _seed = SeedNote(seed);
        mkfs_journals(volume, n);
        let mounts: Vec<FuseMount> = (1..=n)
            .map(|i| FuseMount::start(&mut lab.mount_cmd(i, ""), &lab.mnt(i)))
            .collect();
        let mut nodes: Vec<mounted::Mounted> =
            (1..=n).map(|i| mounted::Mounted(lab.mnt(i))).collect();
        let mut m = model::Model::default();
        let mut g = model::Generator::new(seed);
        let mut pick = model::Rng64::new(seed);
        // Files held open across steps, on their own random stream (the
        // operations and the nodes they run on stay those of the seed).
        let mut holds = Holds::new(seed);
        for step in 0..steps {
            holds.step(&mut m, &lab, n);
            let op = g.next(&mut m);
            let want = op.apply(&mut m);
            let k = (pick.next_u64() % u64::from(n)) as usize;
            let got = op.apply(&mut nodes[k]);
            assert_eq!(
                want,
                got,
                "seed {seed} step {step} on node {}: {op:?}",
                k + 1
            );
            for (j, t) in nodes.iter_mut().enumerate() {
                if let Err(e) = model::compare(&mut m, t) {
                    panic!(
                        "seed {seed} step {step} after {op:?} on node {}: node {} sees {e}",
                        k + 1,
                        j + 1
                    );
                }
            }
        }
        // Every last close frees what was unlinked while open.
        holds.close_all();
        for mount in mounts {
            mount.stop();
        }
        tests::fsck_clean(volume);
    }
    stop_cmands(&mut cmands);
}

/// Files the exerciser holds open on some node while the operations go
/// on, so that unlinks and renames over them, here and on other nodes,
/// leave inodes for the last close to free.
struct Holds {
    rng: model::Rng64,
    open: Vec<(u32, String, std::fs::File)>,
}

impl Holds {
    fn new(seed: u64) -> Holds {
        Holds {
            rng: model::Rng64::new(seed ^ 0x686f_6c64_735f_6f70),
            open: Vec::new(),
        }
    }

    /// Now and then opens a file that exists on a random node (it must
    /// open), or closes one held.
    fn step(&mut self, m: &mut model::Model, lab: &Lab, nodes: u32) {
        if self.rng.chance(0.15) {
            let mut files: Vec<String> = model::all_paths(m)
                .into_iter()
                .filter(|(_, kind)| *kind == model::Kind::File)
                .map(|(path, _)| path)
                .collect();
            files.sort();
            if !files.is_empty() {
                let path = files[self.rng.range(0..files.len() as u64) as usize].clone();
                let node = 1 + self.rng.range(0..u64::from(nodes)) as u32;
                let f = std::fs::File::open(lab.mnt(node).join(&path))
                    .unwrap_or_else(|e| panic!("opening {path} on node {node}: {e}"));
                self.open.push((node, path, f));
            }
        }
        if !self.open.is_empty() && self.rng.chance(0.12) {
            let i = self.rng.range(0..self.open.len() as u64) as usize;
            self.open.swap_remove(i);
        }
    }

    fn close_all(&mut self) {
        self.open.clear();
    }
}

/// Names the exerciser's seed if anything fails while it runs (the
/// unmounts and fsck included, which know nothing of seeds).
struct SeedNote(u64);

impl Drop for SeedNote {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "exerciser: failing seed {0} (replay: CLUSTERFS_CLUSTER_FIRST_SEED={0} CLUSTERFS_CLUSTER_SEEDS=1)",
                self.0
            );
        }
    }
}

/// The exerciser on a LUN of our tgtd that every node mounts as
/// `iscsi://` (each with its own iSCSI session): every block goes through
/// the target, and its backing file passes fsck at the end.
#[test]
fn coherence_exerciser_two_nodes_on_an_iscsi_lun() {
    exercise_on_a_lun(2, 9000);
}

#[test]
fn coherence_exerciser_three_nodes_on_an_iscsi_lun() {
    exercise_on_a_lun(3, 9500);
}

/// The exerciser on `n` nodes that mount a LUN of our tgtd.
fn exercise_on_a_lun(n: u32, first_seed: u64) {
    if !tests::require("fsck.gfs2") {
        return;
    }
    let Some((mut lab, cmands)) = cluster_up(n) else {
        return;
    };
    let tgtd = Tgtd::start();
    // mkfs writes the backing file (no session is open then); the nodes
    // use only the LUN.
    let backing = tgtd.backing_file("lun1.img", 256);
    tgtd.export(1, IQN, &backing);
    lab.device = Some(tgtd.url(IQN, 1));
    exercise(lab, cmands, &backing, first_seed);
    drop(tgtd);
}

#[test]
fn coherence_exerciser_two_nodes_one_model() {
    coherence_exerciser(2, 7000);
}

#[test]
fn coherence_exerciser_three_nodes_one_model() {
    coherence_exerciser(3, 8000);
}

/// `-o spectator` on a lock_dlm volume: a third node, refused a journal
/// (the volume has two, both in use), mounts as a spectator, reads what
/// the others write, is refused every change (EROFS), and keeps reading
/// through the death of a node, whose journal a node with a journal
/// replays. (A spectator takes a lockspace slot, and journals go by slot:
/// it mounts after the nodes with journals here.)
#[test]
fn a_spectator_reads_what_the_others_write_and_writes_nothing() {
    let Some((lab, mut cmands)) = cluster_up(3) else {
        return;
    };
    mkfs(&lab.image());
    let m1 = FuseMount::start(&mut lab.mount_cmd(1, ""), &lab.mnt(1));
    let m2 = FuseMount::start(&mut lab.mount_cmd(2, ""), &lab.mnt(2));
    let said = lab.refused_mount(3, "");
    assert!(said.contains("2 journal(s), all in use"), "{said}");
    let m3 = FuseMount::start(&mut lab.mount_cmd(3, ",spectator"), &lab.mnt(3));
    let (d1, d2, d3) = (lab.mnt(1), lab.mnt(2), lab.mnt(3));
    let log3 = || std::fs::read_to_string(lab.state(3).join("mount3.log")).unwrap();
    assert!(log3().contains("as a spectator"), "{}", log3());
    // A second mount of the volume on a node is refused (after the grace
    // a mount that has just ended gets to leave the volume's group: the
    // refused mount above had joined it).
    let said = lab.refused_mount(1, "");
    assert!(
        said.contains("vol1 is already mounted on this node"),
        "{said}"
    );

    fsync_write(&d1.join("a"), b"from node 1");
    std::fs::create_dir(d2.join("dir")).unwrap();
    fsync_write(&d2.join("dir/b"), b"from node 2");
    assert_eq!(names(&d3), vec!["a", "dir"]);
    assert_eq!(std::fs::read(d3.join("a")).unwrap(), b"from node 1");
    assert_eq!(std::fs::read(d3.join("dir/b")).unwrap(), b"from node 2");
    std::fs::write(d2.join("a"), b"rewritten by node 2").unwrap();
    assert_eq!(std::fs::read(d3.join("a")).unwrap(), b"rewritten by node 2");

    let erofs = |r: std::io::Result<()>, what: &str| match r {
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {}
        other => panic!("{what} on the spectator: {other:?}, want EROFS"),
    };
    erofs(std::fs::write(d3.join("new"), b"x"), "create");
    erofs(
        std::fs::OpenOptions::new()
            .write(true)
            .open(d3.join("a"))
            .map(drop),
        "open for writing",
    );
    erofs(std::fs::create_dir(d3.join("d")), "mkdir");
    erofs(std::fs::remove_file(d3.join("a")), "unlink");
    erofs(std::fs::rename(d3.join("a"), d3.join("c")), "rename");
    assert_eq!(names(&d1), vec!["a", "dir"]);

    // Node 1 dies after an fsync'd write: node 2 (not the spectator)
    // replays its journal, and the spectator reads on.
    fsync_write(&d1.join("last"), b"node 1's last write");
    m1.kill();
    tests::reap(&mut cmands[0]);
    lab.wait_status(3, "node 1 fenced", |s| {
        s.members.len() == 2 && s.victims.is_empty()
    });
    assert_eq!(
        std::fs::read(d3.join("last")).unwrap(),
        b"node 1's last write"
    );
    fsync_write(&d2.join("after"), b"node 2 goes on");
    assert_eq!(names(&d3), vec!["a", "after", "dir", "last"]);
    let log2 = std::fs::read_to_string(lab.state(2).join("mount2.log")).unwrap();
    assert!(log2.contains("recovered a failed node's journal"), "{log2}");
    assert!(!log3().contains("recovering"), "{}", log3());
    m3.stop();
    m2.stop();
    stop_cmands(&mut cmands);
    tests::fsck_clean(&lab.image());
}

/// `fence_scsi` run by hand against node 1 while it is mounted (each
/// node's `iscsi://` session is the initiator port its key was registered
/// under): node 1's next write gets RESERVATION CONFLICT and it withdraws
/// (EIO from then on, the reason in its log), leaving the lockspace; node
/// 2 replays node 1's journal and goes on with everything node 1 had
/// fsync'd; the backing file passes fsck at the end.
#[test]
fn a_node_cut_off_by_fence_scsi_withdraws_and_the_others_go_on() {
    if !tests::require("fsck.gfs2") {
        return;
    }
    let Some((mut lab, mut cmands)) = cluster_up(2) else {
        return;
    };
    let tgtd = Tgtd::start();
    let backing = tgtd.backing_file("lun1.img", 256);
    tgtd.export(1, IQN, &backing);
    mkfs(&backing);
    let url = tgtd.url(IQN, 1);
    // Node i's mount logs in with ISID 40000000000i; its fence agent
    // with 40000000001i (one session per initiator port: a second login
    // on the mount's would reinstate it), its key registered on both.
    let nexus = |i: u32| {
        (
            format!("iqn.2026-12.rs.rhcs:node{i}"),
            format!("40000000000{i}"),
        )
    };
    let fence_scsi_via = |i: u32, isid: &str, args: &[&str]| {
        let name = nexus(i).0;
        let out = std::process::Command::new(tests::bin("fence_scsi"))
            .args(["--devices", &url, "--cluster-name", "fscl"])
            .args(["--nodename", &i.to_string(), "--initiator-name", &name])
            .args(["--isid", isid])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "fence_scsi on node {i} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let fence_scsi = |i: u32, args: &[&str]| fence_scsi_via(i, &format!("40000000001{i}"), args);
    let mut mounts = Vec::new();
    for i in 1..=2 {
        let (name, isid) = nexus(i);
        fence_scsi_via(i, &isid, &["-o", "on"]);
        fence_scsi(i, &["-o", "on"]);
        lab.device = Some(format!("{url}?initiator_name={name}&isid={isid}"));
        mounts.push(FuseMount::start(&mut lab.mount_cmd(i, ""), &lab.mnt(i)));
    }
    let (d1, d2) = (lab.mnt(1), lab.mnt(2));
    fsync_write(&d1.join("kept"), b"fsync'd by node 1 before its fence");
    std::fs::create_dir(d1.join("dir")).unwrap();
    fsync_write(&d1.join("dir/f"), b"also node 1's");
    assert_eq!(names(&d2), vec!["dir", "kept"]);

    fence_scsi(2, &["-o", "off", "-n", "1"]);
    let err = std::fs::File::create(d1.join("lost"))
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, b"after the fence")?;
            f.sync_all()
        })
        .expect_err("a fenced node's fsync must fail");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let log1 = std::fs::read_to_string(lab.state(1).join("mount1.log")).unwrap();
    assert!(log1.contains("withdrawn"), "{log1}");
    let e = std::fs::read_dir(&d1)
        .and_then(|d| d.collect::<Result<Vec<_>, _>>())
        .expect_err("a withdrawn node reads nothing");
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");

    // Node 2 replays node 1's journal and takes over what it held.
    tests::wait_for("node 2's recovery", Duration::from_secs(30), || {
        std::fs::read_to_string(lab.state(2).join("mount2.log"))
            .unwrap()
            .contains("recovered a failed node's journal")
    });
    fsync_write(&d2.join("dir/g"), b"node 2 goes on");
    std::fs::write(d2.join("kept2"), std::fs::read(d2.join("kept")).unwrap()).unwrap();
    assert_eq!(
        std::fs::read(d2.join("kept")).unwrap(),
        b"fsync'd by node 1 before its fence"
    );
    assert_eq!(std::fs::read(d2.join("dir/f")).unwrap(), b"also node 1's");
    let listed = names(&d2);
    assert!(
        listed == ["dir", "kept", "kept2"] || listed == ["dir", "kept", "kept2", "lost"],
        "{listed:?}"
    );
    let m2 = mounts.pop().unwrap();
    mounts.pop().unwrap().kill();
    m2.stop();
    stop_cmands(&mut cmands);
    tests::fsck_clean(&backing);
    drop(tgtd);
}

/// A request that waits for a glock another node holds does not stop the
/// node's other requests: the thread that waits hands reading on to
/// another (node 2's mount is stopped, so its glocks stay held until it
/// runs again); and once node 2 runs again the waiting read completes with
/// what node 2 wrote.
#[test]
fn a_request_waiting_for_another_nodes_glock_does_not_stop_the_others() {
    use nix::sys::signal::{kill, Signal};
    use std::sync::mpsc;
    let Some((lab, mut cmands)) = cluster_up(2) else {
        return;
    };
    mkfs(&lab.image());
    let m1 = FuseMount::start(&mut lab.mount_cmd(1, ""), &lab.mnt(1));
    let m2 = FuseMount::start(&mut lab.mount_cmd(2, ""), &lab.mnt(2));
    std::fs::create_dir(lab.mnt(1).join("free")).unwrap();
    std::fs::create_dir(lab.mnt(2).join("held")).unwrap();
    fsync_write(&lab.mnt(2).join("held/f"), b"node 2 wrote this");
    fsync_write(&lab.mnt(1).join("free/g"), b"node 1 wrote this");
    let mut g = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(lab.mnt(1).join("free/g"))
        .unwrap();
    // Resumes node 2's mount whatever happens below.
    struct Resume(nix::unistd::Pid);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = kill(self.0, Signal::SIGCONT);
        }
    }
    kill(m2.pid(), Signal::SIGSTOP).unwrap();
    let resume = Resume(m2.pid());
    // Until all its threads have stopped, node 2 may still answer.
    tests::wait_for("node 2's mount to stop", Duration::from_secs(10), || {
        tests::all_threads_stopped(m2.pid().as_raw())
    });

    let (tx, waiting) = mpsc::channel();
    let held = lab.mnt(1).join("held/f");
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(&held));
    });
    // Long enough for that read to be waiting inside node 1's mount.
    if let Ok(read) = waiting.recv_timeout(Duration::from_millis(500)) {
        let mut m2 = m2;
        panic!(
            "node 1 read a file whose glocks a stopped node 2 holds: {read:?}; node 2's mount: {:?}",
            m2.child.try_wait()
        );
    }
    // Node 1 writes on to a file it has open, under glocks it holds (a
    // new file would not do: its glocks' DLM directory may be node 2).
    let (tx, done) = mpsc::channel();
    std::thread::spawn(move || {
        use std::io::{Read, Seek, Write};
        for i in 0..20u8 {
            g.write_all(&[b'0' + i % 10]).unwrap();
            g.sync_all().unwrap();
        }
        g.rewind().unwrap();
        let mut all = Vec::new();
        g.read_to_end(&mut all).unwrap();
        let _ = tx.send(all);
    });
    let got = done
        .recv_timeout(Duration::from_secs(20))
        .expect("node 1 served nothing else while one request waited for node 2");
    assert_eq!(got, b"node 1 wrote this01234567890123456789");
    assert!(
        waiting.try_recv().is_err(),
        "the read of node 2's file did not wait"
    );

    drop(resume);
    let read = waiting
        .recv_timeout(Duration::from_secs(30))
        .expect("the waiting read never completed after node 2 resumed");
    assert_eq!(read.unwrap(), b"node 2 wrote this");
    m1.stop();
    m2.stop();
    stop_cmands(&mut cmands);
    tests::fsck_clean(&lab.image());
}

/// A mount stopped from outside (SIGTERM, as `umount` through the
/// mount helper, or `fusermount3 -u`) is unmounted once: the session does
/// not try again at its end (which failed with EINVAL, or could unmount
/// whatever was mounted there since).
#[test]
fn a_stopped_mount_is_unmounted_once() {
    let Some((lab, mut cmands)) = cluster_up(1) else {
        return;
    };
    mkfs(&lab.image());
    FuseMount::start(&mut lab.mount_cmd(1, ""), &lab.mnt(1)).stop();
    FuseMount::start(&mut lab.mount_cmd(1, ""), &lab.mnt(1)).unmount();
    let log = std::fs::read_to_string(lab.state(1).join("mount1.log")).unwrap();
    assert!(log.contains("unmounting on signal"), "{log}");
    assert!(!log.contains("Failed to umount"), "{log}");
    stop_cmands(&mut cmands);
    tests::fsck_clean(&lab.image());
}
