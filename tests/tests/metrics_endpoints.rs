//! The daemons' counters (issue 14) from outside: tgtd's per LUN with
//! `tgtadm --mode metrics --op show` after READ(10)s of a raw iSCSI
//! session, `tgtd --metrics ADDR:PORT` answering `GET /metrics`, and
//! cmand's membership events and messages over HTTP and its API, and a
//! lock_dlm mount's lock and glock counters (`-o metrics=ADDR:PORT`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dlm::metrics::{fetch_http, sample};

#[path = "iscsi_target_util.rs"]
mod tgt;

const IQN: &str = "iqn.2026-12.lab:metrics.lun1";

fn lun1(op: &str) -> String {
    format!("tid=\"1\",target=\"{IQN}\",lun=\"1\",op=\"{op}\"")
}

#[test]
fn tgtadm_shows_reads_and_writes_per_lun() {
    let tgtd = tgt::Tgtd::start();
    tgtd.tutorial_target(1, IQN);
    let show = || tgtd.adm_ok(&["--mode", "metrics", "--op", "show"]);
    let before = show();
    assert_eq!(
        sample(&before, "tgtd_lun_commands_total", &lun1("read")),
        Some(0.0),
        "{before}"
    );
    let mut raw = tgt::Raw::connect(tgtd.port);
    raw.login_normal("iqn.2026-12.lab:metrics-test", IQN, &[]);
    raw.clear_unit_attention(1);
    for lba in 0..5 {
        let (data, status) = raw.read10(1, lba * 8, 8);
        assert_eq!((data.len(), status), (4096, 0));
    }
    let after = show();
    let v = |m: &str, op: &str| sample(&after, m, &lun1(op)).unwrap_or(-1.0);
    assert_eq!(v("tgtd_lun_commands_total", "read"), 5.0, "{after}");
    assert_eq!(v("tgtd_lun_bytes_total", "read"), 5.0 * 4096.0, "{after}");
    assert_eq!(v("tgtd_lun_commands_total", "write"), 0.0, "{after}");
}

#[test]
fn tgtd_serves_get_metrics() {
    let mport = tests::free_port();
    let _tgtd = tgt::Tgtd::start_with(&["--metrics", &format!("127.0.0.1:{mport}")]);
    let addr = format!("127.0.0.1:{mport}").parse().unwrap();
    let start = Instant::now();
    let text = loop {
        match fetch_http(addr) {
            Ok(t) => break t,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "no metrics endpoint: {e}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert!(
        text.contains("# TYPE tgtd_lun_commands_total counter"),
        "{text}"
    );
}

#[test]
fn cmand_counts_its_first_view_and_messages() {
    if !tests::require_root("a cluster node on 127.0.1.1") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("127.0.1.1");
    std::fs::create_dir_all(&state).unwrap();
    let port = tests::free_port_on(&["127.0.1.1"], true);
    std::fs::write(
        state.join("cluster.conf"),
        format!(
            "<?xml version=\"1.0\"?>\n<cluster name=\"metricscl\" config_version=\"1\">\n\
             <cman port=\"{port}\" two_node=\"1\" expected_votes=\"1\"/>\n<clusternodes>\n\
             <clusternode name=\"127.0.1.1\" nodeid=\"1\" votes=\"1\"/>\n\
             <clusternode name=\"127.0.1.2\" nodeid=\"2\" votes=\"1\"/>\n\
             </clusternodes>\n</cluster>\n"
        ),
    )
    .unwrap();
    let key = dir.path().join("authkey");
    std::fs::write(&key, b"metrics test cluster key 0123456789").unwrap();
    std::fs::set_permissions(
        &key,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    let mport = tests::free_port();
    let mut child = tests::spawn(
        Command::new(tests::bin("cmand"))
            .args(["-f", "-c"])
            .arg(state.join("cluster.conf"))
            .args(["-n", "127.0.1.1", "--state-dir"])
            .arg(&state)
            .arg("--key-file")
            .arg(&key)
            .args(["--metrics", &format!("127.0.0.1:{mport}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{mport}").parse().unwrap();
    let ev = |t: &str, e: &str| {
        sample(t, "cman_membership_events_total", &format!("event=\"{e}\"")).unwrap_or(0.0)
    };
    let sent = |t: &str| sample(t, "cman_messages_total", "direction=\"sent\"").unwrap_or(0.0);
    let start = Instant::now();
    let text = loop {
        if let Ok(t) = fetch_http(addr) {
            if ev(&t, "view") >= 1.0 && sent(&t) > 0.0 {
                break t;
            }
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no view counted");
        assert!(matches!(child.try_wait(), Ok(None)), "cmand exited");
        std::thread::sleep(Duration::from_millis(50));
    };
    // Its first view has itself: one join; nobody was lost.
    assert!(ev(&text, "join") >= 1.0, "{text}");
    assert_eq!(ev(&text, "loss"), 0.0, "{text}");
    // The same counters through the API.
    let mut c = cman::api::Client::connect(&state).unwrap();
    let r = c.request(&cman::api::ApiRequest::Metrics).unwrap();
    let api = r.msg.unwrap_or_default();
    assert!(ev(&api, "view") >= 1.0, "{api}");
    tests::reap(&mut child);
}

#[test]
fn a_lock_dlm_mount_serves_its_lock_and_glock_counters() {
    use tests::fslab::{cluster_up, mkfs, stop_cmands};
    let Some((lab, mut cmands)) = cluster_up(1) else {
        return;
    };
    mkfs(&lab.image());
    let mport = tests::free_port();
    let addr = format!("127.0.0.1:{mport}").parse().unwrap();
    let m = tests::FuseMount::start(
        &mut lab.mount_cmd(1, &format!(",metrics=127.0.0.1:{mport}")),
        &lab.mnt(1),
    );
    let before = fetch_http(addr).expect("GET /metrics of the mount");
    for i in 0..20 {
        std::fs::write(lab.mnt(1).join(format!("f{i}")), b"x").unwrap();
    }
    let after = fetch_http(addr).unwrap();
    let local = |t: &str| dlm::metrics::sum(t, "dlm_lock_requests_total", &["origin=\"local\""]);
    // Each new file takes at least its inode's and its iopen glock.
    assert!(
        local(&after) >= local(&before) + 40.0,
        "local lock requests {} then {}:\n{after}",
        local(&before),
        local(&after)
    );
    assert!(
        sample(&after, "clusterfs_glock_demotes_total", "").is_some(),
        "no glock counters:\n{after}"
    );
    m.stop();
    stop_cmands(&mut cmands);
}

/// `-o glock_cache=16`: a node alone, creating 100 files, keeps at most
/// 16 glocks cached that nobody holds; the longest unused go to UN and
/// are forgotten, their DLM locks unlocked (with nobody else asking),
/// and every file still reads back. Mounted again with the default
/// bound, reading them all unlocks nothing (an iopen glock going idle
/// at a close keeps its NL lock).
#[test]
fn a_bounded_glock_cache_drops_the_longest_unused_glocks() {
    use tests::fslab::{cluster_up, mkfs, stop_cmands};
    let Some((lab, mut cmands)) = cluster_up(1) else {
        return;
    };
    mkfs(&lab.image());
    let mport = tests::free_port();
    let addr = format!("127.0.0.1:{mport}").parse().unwrap();
    let unlocks = || {
        let text = fetch_http(addr).expect("GET /metrics of the mount");
        dlm::metrics::sum(&text, "dlm_unlocks_total", &[])
    };
    const FILES: usize = 100;
    let m = tests::FuseMount::start(
        &mut lab.mount_cmd(1, &format!(",glock_cache=16,metrics=127.0.0.1:{mport}")),
        &lab.mnt(1),
    );
    let before = unlocks();
    for i in 0..FILES {
        std::fs::write(lab.mnt(1).join(format!("f{i}")), format!("file {i}")).unwrap();
    }
    let dropped = unlocks() - before;
    assert!(
        dropped >= (FILES - 16) as f64,
        "{dropped} unlocks for {FILES} new files with 16 kept"
    );
    for i in 0..FILES {
        let got = std::fs::read_to_string(lab.mnt(1).join(format!("f{i}"))).unwrap();
        assert_eq!(got, format!("file {i}"));
    }
    m.stop();

    // Said explicitly: the last option wins over LAB_MOUNT_OPTIONS.
    let default = clusterfs::glock::GlockConfig::default().cached_kept;
    let m = tests::FuseMount::start(
        &mut lab.mount_cmd(
            1,
            &format!(",glock_cache={default},metrics=127.0.0.1:{mport}"),
        ),
        &lab.mnt(1),
    );
    let before = unlocks();
    for i in 0..FILES {
        let got = std::fs::read_to_string(lab.mnt(1).join(format!("f{i}"))).unwrap();
        assert_eq!(got, format!("file {i}"));
    }
    assert_eq!(unlocks(), before, "the default bound dropped glocks");
    m.stop();
    stop_cmands(&mut cmands);
}

/// A two-node lab with both nodes mounted on one lock_dlm image, each
/// mount serving its counters on a port of its own (`metric(n, name)`
/// sums one of node n's).
struct MetricsLab {
    lab: tests::fslab::Lab,
    cmands: Vec<std::process::Child>,
    mounts: Vec<tests::FuseMount>,
    ports: Vec<u16>,
}

impl MetricsLab {
    fn up() -> Option<MetricsLab> {
        let (lab, cmands) = tests::fslab::cluster_up(2)?;
        let f = std::fs::File::create(lab.image()).unwrap();
        f.set_len(256 << 20).unwrap();
        let st = Command::new(tests::bin("mkfs_clusterfs"))
            .args(["-p", "lock_dlm", "-t", "fscl:vol1", "-O", "-q", "-j", "2"])
            .args(["-r", "32"])
            .arg(lab.image())
            .status()
            .unwrap();
        assert!(st.success(), "mkfs_clusterfs: {st}");
        let ports: Vec<u16> = (0..2).map(|_| tests::free_port()).collect();
        let mounts = (1..=2)
            .map(|n| {
                let extra = format!(
                    ",dir_placement=rgrp,metrics=127.0.0.1:{}",
                    ports[n as usize - 1]
                );
                tests::FuseMount::start(&mut lab.mount_cmd(n, &extra), &lab.mnt(n))
            })
            .collect();
        Some(MetricsLab {
            lab,
            cmands,
            mounts,
            ports,
        })
    }

    fn metric(&self, n: u32, name: &str) -> f64 {
        let addr = format!("127.0.0.1:{}", self.ports[n as usize - 1])
            .parse()
            .unwrap();
        let text = fetch_http(addr).expect("GET /metrics of the mount");
        dlm::metrics::sum(&text, name, &[])
    }

    fn stop(mut self) {
        for m in self.mounts.drain(..) {
            m.stop();
        }
        tests::fslab::stop_cmands(&mut self.cmands);
    }
}

/// Two nodes mounted: each creates files in its own share of the
/// resource groups, where the DLM also keeps their glocks' directory
/// entries, so its new inodes need (almost) no directory lookup on the
/// other node; placed by a hash of the name, half of each new file's two
/// glocks would need one.
#[test]
fn a_node_creating_files_asks_the_other_for_almost_no_directory_entry() {
    let Some(m) = MetricsLab::up() else {
        return;
    };
    let lookups = |n: u32| m.metric(n, "dlm_directory_lookups_sent_total");
    const FILES: usize = 100;
    for n in 1..=2 {
        let dir = m.lab.mnt(n).join(format!("node{n}"));
        std::fs::create_dir(&dir).unwrap();
        let before = lookups(n);
        for i in 0..FILES {
            std::fs::write(dir.join(format!("f{i}")), b"x").unwrap();
        }
        let sent = lookups(n) - before;
        // Hashed, about FILES (2 glocks each, half elsewhere).
        assert!(
            sent <= (FILES / 10) as f64,
            "node {n} sent {sent} directory lookups for {FILES} new files"
        );
    }
    // And each sees the other's files.
    for n in 1..=2 {
        let other = 3 - n;
        let names = std::fs::read_dir(m.lab.mnt(n).join(format!("node{other}")))
            .unwrap()
            .count();
        assert_eq!(names, FILES, "node {n} lists node {other}'s files");
    }
    m.stop();
}

/// A close drops the closing process's POSIX locks on the file, which
/// the plock master (node 1, the lowest member) keeps. Node 2 closing
/// files on which none of its processes ever asked for a lock sends the
/// master nothing; a close of a file it locked drops that lock, so node
/// 1 gets it at once.
#[test]
fn closing_files_nobody_locked_asks_the_plock_master_nothing() {
    use tests::fslab::fcntl_lock;
    let Some(m) = MetricsLab::up() else {
        return;
    };
    let plocks = |n: u32| m.metric(n, "dlm_plock_requests_total");
    let dir = m.lab.mnt(2).join("d");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..50 {
        std::fs::write(dir.join(format!("f{i}")), b"x").unwrap();
        let _ = std::fs::read(dir.join(format!("f{i}"))).unwrap();
    }
    assert_eq!((plocks(1), plocks(2)), (0.0, 0.0));

    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join("f7"))
        .unwrap();
    fcntl_lock(&f, libc::F_WRLCK, false).unwrap();
    let on1 = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.lab.mnt(1).join("d/f7"))
        .unwrap();
    let refused = fcntl_lock(&on1, libc::F_WRLCK, false).unwrap_err();
    assert_eq!(refused.raw_os_error(), Some(libc::EAGAIN), "{refused}");
    let before = plocks(2);
    drop(f);
    assert!(
        plocks(2) > before,
        "the close of a locked file dropped nothing"
    );
    fcntl_lock(&on1, libc::F_WRLCK, false).expect("node 2's close dropped its lock");
    drop(on1);
    m.stop();
}
