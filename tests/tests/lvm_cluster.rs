//! Clustered LVM on two nodes (127.0.1.1 and .2, each with its cmand,
//! clvmd and state dir) sharing one iSCSI LUN from our tgtd: the
//! tutorial's `lvmconf --enable-cluster`, clvmd, `vgcreate -c y`; then
//! both nodes at once run seeded rounds of lvcreate, lvextend and lvremove
//! on the one clustered VG. Checked: each node sees the seqno only grow,
//! the final seqno is the first plus the number of changes made (no
//! update lost or doubled), the LVs are exactly those the nodes' models
//! hold with their sizes, extents disjoint (read straight from the LUN's
//! backing file), our vgck and Debian lvm2's vgck clean (on a loop device
//! over the backing file). Also: a clustered VG is refused without clvmd
//! and without clustered locking; `-aey` on one node makes `-ay` on the
//! other fail with "Volume is busy on another node".

#[path = "iscsi_target_util.rs"]
mod util;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tests::{bin, free_port, spawn};
use util::Tgtd;

const IQN: &str = "iqn.2026-12.lab:webvg";

struct Node {
    state: PathBuf,
    cmand: Child,
    clvmd: Option<Child>,
}

impl Node {
    fn stop(&mut self) {
        if let Some(c) = self.clvmd.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cmand.kill();
        let _ = self.cmand.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Deactivate everywhere while the cluster is whole (a node gone
        // unfenced would hold the DLM in recovery), then stop it all.
        for n in &self.nodes {
            let _ = run_lvm_within(&n.state, &["vgchange", "-an"], Duration::from_secs(20));
        }
        for n in &mut self.nodes {
            n.stop();
        }
    }
}

/// Runs lvm, killing it after `limit`.
fn run_lvm_within(
    state: &Path,
    args: &[&str],
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let mut child = spawn(
        Command::new(bin("lvm"))
            .args(args)
            .env("LVM_SYSTEM_DIR", state.join("lvm"))
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .ok()?;
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn run_lvm(state: &Path, args: &[&str]) -> Output {
    Command::new(bin("lvm"))
        .args(args)
        .env("LVM_SYSTEM_DIR", state.join("lvm"))
        .output()
        .expect("run lvm")
}

#[track_caller]
fn lvm_ok(state: &Path, args: &[&str]) -> String {
    let o = run_lvm(state, args);
    assert!(
        o.status.success(),
        "lvm {args:?} on {}: {}\n{}{}",
        state.display(),
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Dropped: the nodes stop (see `Drop`), then the target (fields drop in
/// order), the directory last.
struct Cluster {
    nodes: Vec<Node>,
    _tgtd: Tgtd,
    backing: PathBuf,
    url: String,
    dlm_port: u16,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Two nodes running; `conf_nodes` in cluster.conf (2: `two_node`,
    /// more: plain majority quorum).
    fn start(conf_nodes: u32) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let tgtd = Tgtd::start();
        let backing = tgtd.backing_file("lun1.img", 256);
        tgtd.export(1, IQN, &backing);
        let url = tgtd.url(IQN, 1);
        let port = free_port();
        let dlm_port = tests::free_port_on(&["127.0.1.1", "127.0.1.2"], false);
        let nodes_xml: String = (1..=conf_nodes)
            .map(|i| {
                format!("    <clusternode name=\"127.0.1.{i}\" nodeid=\"{i}\" votes=\"1\"/>\n")
            })
            .collect();
        let two_node = if conf_nodes == 2 {
            " two_node=\"1\" expected_votes=\"1\""
        } else {
            ""
        };
        let conf = format!(
            "<?xml version=\"1.0\"?>\n<cluster name=\"lvmcl\" config_version=\"1\">\n  <totem token=\"800\"/>\n  <cman port=\"{port}\"{two_node}/>\n  <clusternodes>\n{nodes_xml}  </clusternodes>\n</cluster>\n"
        );
        let key = dir.path().join("authkey");
        fs::write(&key, b"lvm lab cluster key 0123456789abcdef").unwrap();
        let mut nodes = Vec::new();
        for n in 1..=2u32 {
            let state = dir.path().join(format!("127.0.1.{n}"));
            fs::create_dir_all(state.join("lvm")).unwrap();
            fs::write(state.join("cluster.conf"), &conf).unwrap();
            // locking_type 1 here: the test turns it on with lvmconf.
            fs::write(
                state.join("lvm/lvm.conf"),
                format!(
                    "devices {{\n\tdir = \"{}\"\n\tscan = []\n\textra = [\"{url}\"]\n}}\nglobal {{\n\tlocking_type = 1\n\tlocking_dir = \"{}\"\n\tclvmd_socket = \"{}\"\n}}\n",
                    state.join("dev").display(),
                    state.join("lock").display(),
                    state.join("clvmd.sock").display()
                ),
            )
            .unwrap();
            let cmand = tests::spawn_cmand(&state, n, &key);
            nodes.push(Node {
                state,
                cmand,
                clvmd: None,
            });
        }
        Cluster {
            nodes,
            _tgtd: tgtd,
            backing,
            url,
            dlm_port,
            dir,
        }
    }

    fn state(&self, n: u32) -> &Path {
        &self.nodes[n as usize - 1].state
    }

    fn start_clvmd(&mut self, n: u32) {
        let port = self.dlm_port;
        let node = &mut self.nodes[n as usize - 1];
        let log = fs::File::create(node.state.join("clvmd.log")).unwrap();
        let mut child = spawn(
            Command::new(bin("clvmd"))
                .arg("-f")
                .arg("--state-dir")
                .arg(&node.state)
                .arg("--socket")
                .arg(node.state.join("clvmd.sock"))
                .arg("--port")
                .arg(port.to_string())
                .env("LVM_SYSTEM_DIR", node.state.join("lvm"))
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log),
        )
        .expect("spawn clvmd");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "clvmd on node {n} did not start:\n{}",
            fs::read_to_string(node.state.join("clvmd.log")).unwrap_or_default()
        );
        node.clvmd = Some(child);
    }

    fn stop_clvmd(&mut self, n: u32) {
        if let Some(mut c) = self.nodes[n as usize - 1].clvmd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The tutorial's order: lvmconf --enable-cluster, clvmd on every node.
    fn clustered(&mut self) {
        for n in 1..=2 {
            let out = lvm_ok(self.state(n), &["lvmconf", "--enable-cluster"]);
            assert!(out.contains("locking_type = 3"), "{out}");
        }
        for n in 1..=2 {
            self.start_clvmd(n);
        }
    }
}

fn seqno(state: &Path) -> u64 {
    lvm_ok(state, &["vgs", "--noheadings", "-o", "vg_seqno", "webvg"])
        .trim()
        .parse()
        .unwrap()
}

/// One node's rounds: its own LVs (name -> extents) in a model; returns
/// the model and the number of changes made.
fn rounds(state: PathBuf, n: u32, count: usize, seed: u64) -> (Vec<(String, u64)>, u64) {
    let mut rng = tests::Rng::new(seed * 7919 + u64::from(n));
    let mut mine: Vec<(String, u64)> = Vec::new();
    let mut changes = 0;
    let mut last_seen = 0;
    for i in 0..count {
        let op = if mine.is_empty() { 0 } else { rng.below(3) };
        match op {
            0 => {
                let name = format!("n{n}_lv{i}");
                let k = 1 + rng.below(3);
                lvm_ok(
                    &state,
                    &[
                        "lvcreate",
                        "-an",
                        "-l",
                        &k.to_string(),
                        "-n",
                        &name,
                        "webvg",
                    ],
                );
                mine.push((name, k));
            }
            1 => {
                let j = rng.below(mine.len() as u64) as usize;
                let path = format!("webvg/{}", mine[j].0);
                lvm_ok(&state, &["lvextend", "-l", "+1", &path]);
                mine[j].1 += 1;
            }
            _ => {
                let j = rng.below(mine.len() as u64) as usize;
                let (name, _) = mine.remove(j);
                lvm_ok(&state, &["lvremove", &format!("webvg/{name}")]);
            }
        }
        changes += 1;
        let s = seqno(&state);
        assert!(
            s > last_seen,
            "node {n}: seqno went from {last_seen} to {s}"
        );
        last_seen = s;
    }
    (mine, changes)
}

/// The VG as the LUN's backing file holds it, read with the lvm crate.
fn vg_on_disk(backing: &Path) -> lvm::metadata::Vg {
    let mut store = lvm::store::Store::default();
    let dev = lvm::device::FileDevice::open(backing, false).unwrap();
    store.add(backing.display().to_string(), Arc::new(dev));
    store.read_vg("webvg").expect("webvg on the LUN").vg
}

#[test]
fn two_nodes_change_one_clustered_vg_at_once() {
    let rounds_per_node: usize = std::env::var("LVM_CLUSTER_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let mut c = Cluster::start(2);
    let (s1, s2) = (c.state(1).to_path_buf(), c.state(2).to_path_buf());
    // Before clustering: a clustered VG cannot be made.
    let refused = run_lvm(&s1, &["vgcreate", "-c", "y", "webvg", &c.url]);
    assert!(!refused.status.success());
    c.clustered();
    let out = lvm_ok(&s1, &["vgcreate", "-c", "y", "webvg", &c.url]);
    assert!(
        out.contains("Clustered volume group \"webvg\" successfully created"),
        "{out}"
    );
    let attr = lvm_ok(&s2, &["vgs", "--noheadings", "-o", "vg_attr", "webvg"]);
    assert_eq!(attr.trim(), "wz--nc");
    let first = seqno(&s2);

    let seed = 1 + (std::process::id() as u64 % 1000);
    eprintln!("seed {seed} (rounds per node {rounds_per_node})");
    let t1 = std::thread::spawn(move || rounds(s1, 1, rounds_per_node, seed));
    let (m2, n2) = rounds(s2.clone(), 2, rounds_per_node, seed);
    let (m1, n1) = t1.join().expect("node 1's rounds");

    let last = seqno(&s2);
    assert_eq!(
        last,
        first + n1 + n2,
        "seed {seed}: {n1} + {n2} changes from seqno {first}, now {last}"
    );
    let vg = vg_on_disk(&c.backing);
    assert_eq!(vg.seqno, last);
    vg.check().unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let mut want: Vec<(String, u64)> = m1.into_iter().chain(m2).collect();
    want.sort();
    let mut have: Vec<(String, u64)> = vg
        .lvs
        .iter()
        .map(|l| (l.name.clone(), l.extents()))
        .collect();
    have.sort();
    assert_eq!(
        have, want,
        "seed {seed}: the LVs on disk are not the nodes' LVs"
    );
    lvm_ok(&s2, &["vgck", "webvg"]);
    lvm2_vgck(&c.backing, c.dir.path());

    // Without clvmd, or without clustered locking, the VG is refused.
    c.stop_clvmd(2);
    let o = run_lvm(&s2, &["lvs", "webvg"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("clvmd is not running"),
        "{o:?}"
    );
    lvm_ok(&s2, &["lvmconf", "--disable-cluster"]);
    let o = run_lvm(&s2, &["lvcreate", "-an", "-l", "1", "-n", "x", "webvg"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Skipping clustered volume group webvg"),
        "{o:?}"
    );
    assert_eq!(
        vg_on_disk(&c.backing).seqno,
        last,
        "a refused command wrote"
    );
}

/// Debian lvm2's vgck and lvs on a loop device over a copy of the backing
/// file; a recorded skip when lvm2 or a loop device is missing.
fn lvm2_vgck(backing: &Path, dir: &Path) {
    let Some(lvm2) = ["/usr/sbin/lvm", "/sbin/lvm"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        tests::skip("Debian's lvm2 is not installed: no lvm2 vgck");
        return;
    };
    // lvm2 2.03 has no clvmd: it reads a clustered VG only to convert it
    // (lvmlockd(8): --lock-type none --lockopt force). Do that on a copy,
    // then vgck the copy and list its LVs.
    let copy = dir.join("lvm2copy.img");
    fs::copy(backing, &copy).unwrap();
    // Bounded: losetup hangs on a loop device left over a dead FUSE file.
    let o = Command::new("timeout")
        .args(["-s", "KILL", "30", "losetup", "-f", "--show"])
        .arg(&copy)
        .output();
    let Some(dev) = o
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    else {
        tests::skip("no loop device for lvm2's vgck");
        return;
    };
    let sys = dir.join("lvm2");
    fs::create_dir_all(&sys).unwrap();
    fs::write(
        sys.join("lvm.conf"),
        format!(
            "devices {{ scan = [\"/dev\"] filter = [\"a|^{dev}$|\", \"r|.*|\"] obtain_device_list_from_udev = 0 hints = \"none\" use_devicesfile = 0 }}\nglobal {{ locking_dir = \"{}\" }}\n",
            dir.join("lvm2lock").display()
        ),
    )
    .unwrap();
    let lvm2_run = |args: &[&str]| {
        Command::new(lvm2)
            .args(args)
            .env("LVM_SYSTEM_DIR", &sys)
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output()
            .unwrap()
    };
    let conv = lvm2_run(&[
        "vgchange",
        "--lock-type",
        "none",
        "--lockopt",
        "force",
        "-y",
        "webvg",
    ]);
    let out = lvm2_run(&["vgck", "webvg"]);
    let lvs = lvm2_run(&[
        "lvs",
        "--noheadings",
        "-o",
        "lv_name,lv_size",
        "--units",
        "b",
        "--nosuffix",
        "webvg",
    ]);
    let _ = Command::new("timeout")
        .args(["-s", "KILL", "30", "losetup", "-d", &dev])
        .output();
    for (what, o) in [
        ("vgchange --lock-type none", &conv),
        ("vgck", &out),
        ("lvs", &lvs),
    ] {
        assert!(
            o.status.success(),
            "lvm2 {what}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let mut theirs: Vec<(String, u64)> = String::from_utf8_lossy(&lvs.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((
                w.next()?.to_string(),
                w.next()?.parse::<u64>().ok()? / (4 << 20),
            ))
        })
        .collect();
    theirs.sort();
    let mut ours: Vec<(String, u64)> = vg_on_disk(backing)
        .lvs
        .iter()
        .map(|l| (l.name.clone(), l.extents()))
        .collect();
    ours.sort();
    assert_eq!(theirs, ours, "lvm2's LVs (in 4 MiB extents) vs ours");
}

/// Activation locks across nodes: `-aey` on one node makes `-ay` (and
/// lvremove) on the other fail; shared `-ay` on both; an lvextend on one
/// node grows the active LV file on the other (clvmd's cache message).
#[test]
fn activation_locks_and_cache_drops_across_nodes() {
    if !tests::require_fuse() {
        return;
    }
    let mut c = Cluster::start(2);
    c.clustered();
    let (s1, s2) = (c.state(1).to_path_buf(), c.state(2).to_path_buf());
    lvm_ok(&s1, &["vgcreate", "-c", "y", "webvg", &c.url]);
    lvm_ok(
        &s1,
        &["lvcreate", "-an", "-l", "2", "-n", "shared", "webvg"],
    );

    lvm_ok(&s1, &["lvchange", "-aey", "webvg/shared"]);
    let busy = run_lvm(&s2, &["lvchange", "-ay", "webvg/shared"]);
    assert!(!busy.status.success());
    let err = String::from_utf8_lossy(&busy.stderr);
    assert!(err.contains("Volume is busy on another node"), "{err}");
    let rm = run_lvm(&s2, &["lvremove", "webvg/shared"]);
    assert!(!rm.status.success(), "removed an LV active on another node");
    assert!(!s2.join("dev/webvg/shared").exists());

    lvm_ok(&s1, &["lvchange", "-an", "webvg/shared"]);
    lvm_ok(&s2, &["lvchange", "-ay", "webvg/shared"]);
    lvm_ok(&s1, &["lvchange", "-ay", "webvg/shared"]);
    let ext: u64 = 4 << 20;
    let file2 = s2.join("dev/webvg/shared");
    assert_eq!(fs::metadata(&file2).unwrap().len(), 2 * ext);
    // Exclusive is refused while the other node shares it.
    let ex = run_lvm(&s2, &["lvchange", "-aey", "webvg/shared"]);
    assert!(!ex.status.success());

    lvm_ok(&s1, &["lvextend", "-l", "+1", "webvg/shared"]);
    assert_eq!(
        fs::metadata(s1.join("dev/webvg/shared")).unwrap().len(),
        3 * ext
    );
    tests::wait_for("node 2's LV file to grow", Duration::from_secs(10), || {
        fs::metadata(&file2).is_ok_and(|m| m.len() == 3 * ext)
    });
    let dump = Command::new(bin("clvmd"))
        .args(["-d", "--socket"])
        .arg(s2.join("clvmd.sock"))
        .output()
        .unwrap();
    let dump = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.contains("\"webvg\""),
        "node 2's clvmd dropped no cache:\n{dump}"
    );

    for s in [&s1, &s2] {
        lvm_ok(s, &["vgchange", "-an", "webvg"]);
    }
    lvm_ok(&s2, &["lvremove", "webvg/shared"]);
}

/// clvmd needs its node's cmand; an inquorate node locks nothing: with
/// three nodes configured and two running, stopping one leaves the other
/// inquorate and its clustered commands are refused.
#[test]
fn clvmd_needs_cmand_and_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(bin("clvmd"))
        .arg("-f")
        .arg("--state-dir")
        .arg(dir.path())
        .arg("--socket")
        .arg(dir.path().join("clvmd.sock"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cmand"), "{err}");

    let mut c = Cluster::start(3);
    c.clustered();
    let s1 = c.state(1).to_path_buf();
    lvm_ok(&s1, &["vgcreate", "-c", "y", "webvg", &c.url]);
    let before = vg_on_disk(&c.backing).seqno;
    c.stop_clvmd(2);
    c.nodes[1].stop();
    // vgs (a read) until cmand has noticed; then a change is refused too.
    // A vgs that passed the quorum check just before cmand noticed waits
    // in the DLM's recovery (node 2 is never fenced here): bounded, retried.
    let err_file = c.dir.path().join("vgs.err");
    tests::wait_for("node 1 to lose quorum", Duration::from_secs(60), || {
        let mut child = spawn(
            Command::new(bin("lvm"))
                .args(["vgs", "webvg"])
                .env("LVM_SYSTEM_DIR", s1.join("lvm"))
                .stdout(Stdio::null())
                .stderr(fs::File::create(&err_file).unwrap()),
        )
        .unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(st)) = child.try_wait() {
                return !st.success()
                    && fs::read_to_string(&err_file)
                        .unwrap()
                        .contains("not quorate");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    });
    let o = run_lvm(&s1, &["lvcreate", "-an", "-l", "1", "-n", "x", "webvg"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("Cluster is not quorate"), "{err}");
    assert_eq!(
        vg_on_disk(&c.backing).seqno,
        before,
        "an inquorate node wrote"
    );
}
