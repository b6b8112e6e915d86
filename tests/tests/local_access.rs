//! Who gets in, locally and at the iSCSI portal (issue 16): the daemons'
//! control sockets (cmand's API, tgtd's control socket, a DLM process's
//! control socket) are root-only — a non-root user (`setpriv` to uid
//! 65534) is told "permission denied" and changes nothing, both when the
//! socket's mode stops it and when it reaches the socket and the daemon
//! checks its credentials (SO_PEERCRED); and an iSCSI target with CHAP
//! refuses logins without the right secret, answering repeated bad CHAP
//! responses from one initiator later and later.

#[path = "iscsi_target_util.rs"]
mod util;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use iscsi::chap;
use util::{Raw, Tgtd};

const NOBODY: &str = "65534";

fn as_nobody(program: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups"])
        .arg(tests::bin(program));
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A non-root run of `cmd` fails and says "permission denied" (`how`: the
/// words of the refusal expected).
#[track_caller]
fn denied(cmd: &mut Command, how: &str) {
    let o = cmd.output().expect("run");
    let t = text(&o);
    assert!(!o.status.success(), "a non-root user was served: {t}");
    assert!(t.to_lowercase().contains(how), "{t}");
}

fn can_drop_privileges() -> bool {
    tests::require_root("switching to uid 65534") && tests::require("setpriv")
}

/// A one-node cluster's cmand on 127.0.1.1 whose state directory (inside
/// `dir`) others may enter: (state dir, cmand).
fn one_node_cmand(dir: &Path) -> (std::path::PathBuf, std::process::Child) {
    chmod(dir, 0o755);
    let state = dir.join("127.0.1.1");
    std::fs::create_dir(&state).unwrap();
    chmod(&state, 0o755);
    let port = tests::free_port_on(&["127.0.1.1"], true);
    std::fs::write(
        state.join("cluster.conf"),
        format!(
            "<?xml version=\"1.0\"?>\n<cluster name=\"access\" config_version=\"1\">\n  \
             <cman port=\"{port}\"/>\n  <clusternodes>\n    \
             <clusternode name=\"127.0.1.1\" nodeid=\"1\" votes=\"1\"/>\n  \
             </clusternodes>\n</cluster>\n"
        ),
    )
    .unwrap();
    let key = dir.join("authkey");
    std::fs::write(&key, b"access test cluster key 0123456789").unwrap();
    let cmand = tests::spawn_cmand(&state, 1, &key);
    tests::wait_for("cmand answers root", Duration::from_secs(30), || {
        Command::new(tests::bin("cman_tool"))
            .arg("--state-dir")
            .arg(&state)
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    (state, cmand)
}

#[test]
fn cmand_api_is_root_only() {
    if !can_drop_privileges() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (state, mut cmand) = one_node_cmand(dir.path());
    let status = |c: &mut Command| c.arg("--state-dir").arg(&state).arg("status").output();
    let sock = cman::api::socket_path(&state);
    // The socket's mode stops a non-root user...
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "cmand's socket is root-only by its mode");
    denied(
        as_nobody("cman_tool")
            .arg("--state-dir")
            .arg(&state)
            .arg("status"),
        "permission denied",
    );
    // ... and so does cmand itself when the socket is opened up.
    chmod(&sock, 0o666);
    for req in ["status", "leave"] {
        denied(
            as_nobody("cman_tool")
                .arg("--state-dir")
                .arg(&state)
                .arg(req),
            "permission denied: this control socket is for root (client uid 65534)",
        );
    }
    // Nothing was served: still a member, still answering root.
    let o = status(&mut Command::new(tests::bin("cman_tool"))).unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).to_lowercase().contains("leav"), "{}", text(&o));
    tests::reap(&mut cmand);
}

#[test]
fn tgtd_control_socket_is_root_only() {
    if !can_drop_privileges() {
        return;
    }
    let t = Tgtd::start();
    chmod(t.dir.path(), 0o755);
    let adm = |c: &mut Command| {
        c.arg("--control-dir")
            .arg(t.dir.path())
            .args(["-C", "0", "--lld", "iscsi"]);
    };
    let new_target = [
        "--op",
        "new",
        "--mode",
        "target",
        "--tid",
        "7",
        "-T",
        "iqn.2026-01.test:sneaky",
    ];
    let sock = iscsi::target::driver::control_path(t.dir.path(), 0);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "tgtd's socket is root-only by its mode");
    let mut c = as_nobody("tgtadm");
    adm(&mut c);
    denied(c.args(new_target), "permission denied");
    chmod(&sock, 0o666);
    let mut c = as_nobody("tgtadm");
    adm(&mut c);
    denied(
        c.args(new_target),
        "permission denied: tgtd's control socket is for root (client uid 65534)",
    );
    let mut c = as_nobody("tgtadm");
    adm(&mut c);
    denied(
        c.args(["--op", "show", "--mode", "target"]),
        "permission denied",
    );
    // Root is served, and no target was made.
    let show = t.adm_ok(&["--op", "show", "--mode", "target"]);
    assert!(!show.contains("sneaky"), "{show}");
}

/// clvmd's socket: root-only by its mode, and clvmd answers a non-root
/// client that gets in anyway "permission denied" and nothing else.
#[test]
fn clvmd_socket_is_root_only() {
    if !can_drop_privileges() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (state, mut cmand) = one_node_cmand(dir.path());
    let sock = state.join("clvmd.sock");
    let port = tests::free_port_on(&["127.0.1.1"], false);
    let log = std::fs::File::create(state.join("clvmd.log")).unwrap();
    let mut clvmd = tests::spawn(
        Command::new(tests::bin("clvmd"))
            .arg("-f")
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(&sock)
            .arg("--port")
            .arg(port.to_string())
            .env("LVM_SYSTEM_DIR", state.join("lvm"))
            .stdout(std::process::Stdio::null())
            .stderr(log),
    )
    .unwrap();
    let dump = |c: &mut Command| c.arg("-d").arg("--socket").arg(&sock).output().unwrap();
    tests::wait_for("clvmd answers root", Duration::from_secs(30), || {
        dump(&mut Command::new(tests::bin("clvmd")))
            .status
            .success()
    });
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "clvmd's socket is root-only by its mode");
    denied(
        as_nobody("clvmd").arg("-d").arg("--socket").arg(&sock),
        "permission denied",
    );
    chmod(&sock, 0o666);
    denied(
        as_nobody("clvmd").arg("-d").arg("--socket").arg(&sock),
        "permission denied: this control socket is for root (client uid 65534)",
    );
    let root = dump(&mut Command::new(tests::bin("clvmd")));
    assert!(root.status.success(), "{}", text(&root));
    tests::reap(&mut clvmd);
    tests::reap(&mut cmand);
}

#[test]
fn dlm_control_socket_is_root_only() {
    if !can_drop_privileges() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let ctl = dir.path().join("ctl");
    let mut cfg = dlm::DlmConfig::new(
        dlm::NodeId(1),
        "127.0.0.1:0".parse().unwrap(),
        HashMap::new(),
        dlm::ClusterKey::new(b"local access test key").unwrap(),
    );
    cfg.ctl_dir = Some(ctl.clone());
    let d = dlm::Dlm::start(cfg).unwrap();
    let m = dlm::StaticMembership::new(&[dlm::NodeId(1)]);
    let _ls = d.join("acl", m.as_ref()).unwrap();
    let dir_mode = std::fs::metadata(&ctl).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        dir_mode, 0o700,
        "the control directory we made is root-only"
    );
    let sock = d.ctl_path().unwrap().to_path_buf();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let root = Command::new(tests::bin("dlm_tool"))
        .arg("--ctl-dir")
        .arg(&ctl)
        .arg("ls")
        .output()
        .unwrap();
    assert!(text(&root).contains("name          acl"), "{}", text(&root));
    // Through the directory and the socket's modes: the socket refuses.
    chmod(&ctl, 0o755);
    denied(
        as_nobody("dlm_tool").arg("--ctl-dir").arg(&ctl).arg("ls"),
        "permission denied",
    );
    chmod(&sock, 0o666);
    for cmd in [&["ls"][..], &["purge", "acl", "2"][..]] {
        denied(
            as_nobody("dlm_tool").arg("--ctl-dir").arg(&ctl).args(cmd),
            "permission denied: this control socket is for root (client uid 65534)",
        );
    }
}

// ---------------------------------------------------------------------------
// iSCSI: CHAP without the right secret.
// ---------------------------------------------------------------------------

const IQN: &str = "iqn.2026-01.test.rhcs:chap";

/// One login with CHAP as `initiator`, user `user`, answering the
/// challenge with `secret`: the final status, how long the target took to
/// answer the response, and when the answer came.
fn chap_login(port: u16, initiator: &str, user: &str, secret: &[u8]) -> (u16, Duration, Instant) {
    let mut raw = Raw::connect(port);
    let (status, keys, _) = raw.login_step(
        0,
        0,
        false,
        &[
            ("InitiatorName", initiator),
            ("SessionType", "Normal"),
            ("TargetName", IQN),
            ("AuthMethod", "CHAP"),
        ],
    );
    assert_eq!(status, 0, "{keys:?}");
    let (status, keys, _) = raw.login_step(0, 0, false, &[("CHAP_A", "5")]);
    assert_eq!(status, 0);
    let get = |k: &str| {
        keys.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k} in {keys:?}"))
    };
    let id: u8 = get("CHAP_I").parse().unwrap();
    let challenge = chap::decode_binary(&get("CHAP_C")).unwrap();
    let response = chap::encode_hex(&chap::response(id, secret, &challenge));
    let t = Instant::now();
    let (status, _, _) = raw.login_step(0, 1, true, &[("CHAP_N", user), ("CHAP_R", &response)]);
    (status, t.elapsed(), Instant::now())
}

#[test]
fn chap_logins_without_the_secret_are_refused_and_slowed_down() {
    let t = Tgtd::start();
    t.tutorial_target(1, IQN);
    t.adm_ok(&[
        "--mode",
        "account",
        "--op",
        "new",
        "--user",
        "alice",
        "--password",
        "s3cret-pass12",
    ]);
    t.adm_ok(&[
        "--mode", "account", "--op", "bind", "--tid", "1", "--user", "alice",
    ]);
    // Without CHAP at all: refused (authentication failure, 0x0201).
    let mut raw = Raw::connect(t.port);
    let (status, _, _) = raw.login_step(
        0,
        1,
        true,
        &[
            ("InitiatorName", "iqn.2026-01.test:none"),
            ("TargetName", IQN),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!(status, 0x0201, "{status:#06x}");
    // A guesser: every wrong secret refused, the first at once, each later
    // one 200, 400, 800 ms after the answer before (less 10%: the gaps are
    // measured here, after the network).
    let guesser = "iqn.2026-01.test:guesser";
    let mut answers = Vec::new();
    for guess in [
        "guess-1-xxxxxx",
        "guess-2-xxxxxx",
        "guess-3-xxxxxx",
        "guess-4-xxxxxx",
    ] {
        let (status, took, at) = chap_login(t.port, guesser, "alice", guess.as_bytes());
        assert_eq!(status, 0x0201, "{status:#06x}");
        answers.push((took, at));
    }
    assert!(answers[0].0 < Duration::from_millis(150), "{answers:?}");
    for (i, min_ms) in [(1, 180), (2, 360), (3, 720)] {
        let gap = answers[i].1 - answers[i - 1].1;
        assert!(gap >= Duration::from_millis(min_ms), "{i}: {gap:?}");
    }
    // An unknown user is refused the same way, and later still.
    let (status, _, at) = chap_login(t.port, guesser, "mallory", b"s3cret-pass12");
    assert_eq!(status, 0x0201);
    assert!(at - answers[3].1 >= Duration::from_millis(1440));
    // Another initiator is not slowed down by the guesser, and gets in.
    let honest = "iqn.2026-01.test:honest";
    let (status, took, _) = chap_login(t.port, honest, "alice", b"s3cret-pass12");
    assert_eq!(status, 0, "{status:#06x}");
    assert!(took < Duration::from_millis(150), "{took:?}");
    // The guesser with the right secret gets in too, but late: a fast
    // "yes" would tell a guesser its wrong answers by their silence.
    let (status, _, right_at) = chap_login(t.port, guesser, "alice", b"s3cret-pass12");
    assert_eq!(status, 0, "{status:#06x}");
    assert!(right_at - at >= Duration::from_millis(2880));
    // ... after which it is not slowed down any more.
    let (status, took, _) = chap_login(t.port, guesser, "alice", b"s3cret-pass12");
    assert_eq!(status, 0);
    assert!(took < Duration::from_millis(150), "{took:?}");
}
