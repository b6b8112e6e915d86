//! tgtd login, discovery and management, checked with libiscsi's tools
//! (RFC 7143 6: login phase, 12: CHAP, Appendix C: SendTargets) and a raw
//! client for what libiscsi cannot do (mutual CHAP, reinstatement).

#[path = "iscsi_target_util.rs"]
mod util;

use iscsi::chap;
use util::{have_libiscsi, run, Raw, Tgtd};

const IQN: &str = "iqn.2026-01.test.rhcs:disk1";

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn tutorial_setup_is_discovered_and_shown_like_tgt() {
    if !have_libiscsi() {
        return;
    }
    let t = Tgtd::start();
    let file = t.tutorial_target(1, IQN);
    let portal = format!("iscsi://127.0.0.1:{}", t.port);
    let ls = run("iscsi-ls", &["-s", &portal]);
    let out = stdout(&ls);
    assert!(ls.status.success(), "iscsi-ls failed: {}", stderr(&ls));
    assert!(
        out.contains(&format!("Target:{IQN} Portal:127.0.0.1:{},1", t.port)),
        "{out}"
    );
    assert!(
        out.contains("Lun:1") && out.contains("DIRECT_ACCESS"),
        "{out}"
    );

    let show = t.adm_ok(&["--op", "show", "--mode", "target"]);
    assert!(show.starts_with(&format!(
        "Target 1: {IQN}\n    System information:\n        Driver: iscsi\n        State: ready\n"
    )));
    assert!(
        show.contains("        LUN: 1\n            Type: disk\n"),
        "{show}"
    );
    assert!(show.contains(&format!(
        "            Backing store path: {}\n",
        file.display()
    )));
    assert!(
        show.contains("    ACL information:\n        ALL\n"),
        "{show}"
    );
}

#[test]
fn tgtadm_errors_are_clear_and_the_daemon_keeps_serving() {
    let mut t = Tgtd::start();
    t.tutorial_target(1, IQN);
    let dup = t.adm(&[
        "--op",
        "new",
        "--mode",
        "target",
        "--tid",
        "1",
        "-T",
        "iqn.2026-01.x:y",
    ]);
    assert_eq!(dup.status.code(), Some(22));
    assert_eq!(stderr(&dup), "tgtadm: this target already exists\n");
    let missing = t.adm(&["--op", "delete", "--mode", "target", "--tid", "9"]);
    assert_eq!(stderr(&missing), "tgtadm: can't find the target\n");
    assert!(!missing.status.success());
    let lun = t.adm(&[
        "--op",
        "new",
        "--mode",
        "logicalunit",
        "--tid",
        "1",
        "--lun",
        "1",
        "-b",
        "/dev/null",
    ]);
    assert_eq!(
        stderr(&lun),
        "tgtadm: this logical unit number already exists\n"
    );
    let bad = t.adm(&[
        "--op",
        "new",
        "--mode",
        "logicalunit",
        "--tid",
        "1",
        "--lun",
        "2",
        "-b",
        "/nonexistent/disk.img",
    ]);
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("/nonexistent/disk.img"),
        "{}",
        stderr(&bad)
    );
    let mode = t.adm(&["--op", "show", "--mode", "frobnicate"]);
    assert_eq!(stderr(&mode), "tgtadm: unknown mode: frobnicate\n");
    assert!(!mode.status.success());
    assert!(t.alive());
    let show = t.adm_ok(&["--op", "show", "--mode", "target"]);
    assert!(
        show.contains("LUN: 1") && !show.contains("LUN: 2"),
        "{show}"
    );
}

#[test]
fn initiator_outside_the_address_acl_sees_no_target_and_cannot_log_in() {
    if !have_libiscsi() {
        return;
    }
    let t = Tgtd::start();
    t.tutorial_target(1, IQN);
    t.adm_ok(&[
        "--op", "unbind", "--mode", "target", "--tid", "1", "-I", "ALL",
    ]);
    t.adm_ok(&[
        "--op",
        "bind",
        "--mode",
        "target",
        "--tid",
        "1",
        "-I",
        "10.255.0.0/16",
    ]);
    let portal = format!("iscsi://127.0.0.1:{}", t.port);
    let ls = run("iscsi-ls", &[&portal]);
    assert!(!stdout(&ls).contains(IQN), "{}", stdout(&ls));
    let inq = run("iscsi-inq", &[&t.url(IQN, 1)]);
    assert!(!inq.status.success(), "login outside the ACL succeeded");
    // Opening the ACL to this address lets the same initiator in.
    t.adm_ok(&[
        "--op",
        "bind",
        "--mode",
        "target",
        "--tid",
        "1",
        "-I",
        "127.0.0.1",
    ]);
    let inq = run("iscsi-inq", &[&t.url(IQN, 1)]);
    assert!(inq.status.success(), "{}", stderr(&inq));
}

#[test]
fn initiator_name_acl_filters_send_targets_and_login() {
    if !have_libiscsi() {
        return;
    }
    let t = Tgtd::start();
    t.tutorial_target(1, IQN);
    t.adm_ok(&[
        "--op",
        "bind",
        "--mode",
        "target",
        "--tid",
        "1",
        "--initiator-name",
        "iqn.2026-01.test:allowed",
    ]);
    let portal = format!("iscsi://127.0.0.1:{}", t.port);
    let other = run("iscsi-ls", &["-i", "iqn.2026-01.test:other", &portal]);
    assert!(!stdout(&other).contains(IQN), "{}", stdout(&other));
    let allowed = run("iscsi-ls", &["-i", "iqn.2026-01.test:allowed", &portal]);
    assert!(stdout(&allowed).contains(IQN), "{}", stdout(&allowed));
    let mut raw = Raw::connect(t.port);
    let (status, _, _) = raw.login_step(
        0,
        1,
        true,
        &[
            ("InitiatorName", "iqn.2026-01.test:other"),
            ("TargetName", IQN),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!(
        status >> 8,
        2,
        "initiator error class expected, got {status:#06x}"
    );
}

#[test]
fn chap_wrong_secret_is_refused_and_right_secret_accepted() {
    if !have_libiscsi() {
        return;
    }
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
    let url = |cred: &str| format!("iscsi://{cred}127.0.0.1:{}/{IQN}/1", t.port);
    let none = run("iscsi-inq", &[&url("")]);
    assert!(!none.status.success(), "login without CHAP succeeded");
    let wrong = run("iscsi-inq", &[&url("alice%wrong-secret1@")]);
    assert!(
        !wrong.status.success(),
        "login with a wrong secret succeeded"
    );
    let unknown = run("iscsi-inq", &[&url("mallory%s3cret-pass12@")]);
    assert!(
        !unknown.status.success(),
        "login of an unbound user succeeded"
    );
    let right = run("iscsi-inq", &[&url("alice%s3cret-pass12@")]);
    assert!(right.status.success(), "{}", stderr(&right));
    assert!(stdout(&right).contains("Vendor:"));
}

/// RFC 7143 12.1.3: mutual CHAP, the target proves it knows the outgoing
/// account's secret.
#[test]
fn mutual_chap_target_answers_with_the_outgoing_account() {
    let t = Tgtd::start();
    t.tutorial_target(1, IQN);
    t.adm_ok(&[
        "--mode",
        "account",
        "--op",
        "new",
        "--user",
        "ini",
        "--password",
        "initiator-secret",
    ]);
    t.adm_ok(&[
        "--mode",
        "account",
        "--op",
        "new",
        "--user",
        "tgt",
        "--password",
        "target-secret1",
    ]);
    t.adm_ok(&[
        "--mode", "account", "--op", "bind", "--tid", "1", "--user", "ini",
    ]);
    t.adm_ok(&[
        "--mode",
        "account",
        "--op",
        "bind",
        "--tid",
        "1",
        "--user",
        "tgt",
        "--outgoing",
    ]);
    let mut raw = Raw::connect(t.port);
    let (status, keys, _) = raw.login_step(
        0,
        0,
        false,
        &[
            ("InitiatorName", "iqn.2026-01.test:raw"),
            ("TargetName", IQN),
            ("AuthMethod", "CHAP,None"),
        ],
    );
    assert_eq!(status, 0);
    assert!(
        keys.contains(&("AuthMethod".into(), "CHAP".into())),
        "{keys:?}"
    );
    let (status, keys, _) = raw.login_step(0, 0, false, &[("CHAP_A", "5")]);
    assert_eq!(status, 0);
    let get = |k: &str| {
        keys.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let id: u8 = get("CHAP_I").parse().unwrap();
    let challenge = chap::decode_binary(&get("CHAP_C")).unwrap();
    let response = chap::encode_hex(&chap::response(id, b"initiator-secret", &challenge));
    let my_challenge = [7u8; 16];
    let (status, keys, bhs) = raw.login_step(
        0,
        1,
        true,
        &[
            ("CHAP_N", "ini"),
            ("CHAP_R", &response),
            ("CHAP_I", "42"),
            ("CHAP_C", &chap::encode_hex(&my_challenge)),
        ],
    );
    assert_eq!(status, 0, "mutual CHAP refused");
    assert_ne!(bhs.flags() & iscsi::pdu::flags::TRANSIT, 0);
    let get = |k: &str| {
        keys.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(get("CHAP_N"), "tgt");
    let expected = chap::response(42, b"target-secret1", &my_challenge);
    assert_eq!(
        chap::decode_binary(&get("CHAP_R")).unwrap(),
        expected.to_vec()
    );
}

#[test]
fn session_shows_in_tgtadm_and_blocks_target_delete() {
    let t = Tgtd::start();
    t.tutorial_target(1, IQN);
    let mut raw = Raw::connect(t.port);
    raw.login_normal("iqn.2026-01.test:raw", IQN, &[]);
    assert_eq!(raw.ping(b"hello"), b"hello");
    let show = t.adm_ok(&["--op", "show", "--mode", "target"]);
    assert!(show.contains("        I_T nexus: "), "{show}");
    assert!(
        show.contains("            Initiator: iqn.2026-01.test:raw alias: none\n"),
        "{show}"
    );
    assert!(
        show.contains("                IP Address: 127.0.0.1\n"),
        "{show}"
    );
    let del = t.adm(&["--op", "delete", "--mode", "target", "--tid", "1"]);
    assert_eq!(stderr(&del), "tgtadm: this target is still active\n");
    assert_eq!(raw.ping(b"still"), b"still");
}

/// RFC 7143 6.3.5: a new login with the same ISID and TSIH 0 replaces the
/// old session, whose connection the target closes.
#[test]
fn login_with_the_same_isid_reinstates_the_session() {
    let t = Tgtd::start();
    t.tutorial_target(1, IQN);
    let mut first = Raw::connect(t.port);
    let tsih1 = first.login_normal("iqn.2026-01.test:raw", IQN, &[]);
    let mut second = Raw::connect(t.port);
    let tsih2 = second.login_normal("iqn.2026-01.test:raw", IQN, &[]);
    assert_ne!(tsih1, tsih2);
    assert!(first.closed_by_target(), "old connection still open");
    assert_eq!(second.ping(b"new"), b"new");
}

#[test]
fn discovery_session_lists_only_permitted_targets() {
    let t = Tgtd::start();
    t.tutorial_target(1, IQN);
    t.tutorial_target(2, "iqn.2026-01.test.rhcs:hidden");
    t.adm_ok(&[
        "--op", "unbind", "--mode", "target", "--tid", "2", "-I", "ALL",
    ]);
    let mut raw = Raw::connect(t.port);
    let (status, _, _) = raw.login_step(
        0,
        3,
        true,
        &[
            ("InitiatorName", "iqn.2026-01.test:raw"),
            ("SessionType", "Discovery"),
            ("AuthMethod", "None"),
        ],
    );
    assert_eq!(status, 0);
    let mut bhs = iscsi::pdu::Bhs::new(iscsi::pdu::opcode::TEXT_REQ);
    bhs.set_immediate(true);
    bhs.set_flags(iscsi::pdu::flags::FINAL);
    bhs.set_itt(77);
    bhs.set_u32_at(iscsi::pdu::text::TTT, iscsi::pdu::RESERVED_TAG);
    bhs.set_u32_at(iscsi::pdu::text::CMD_SN, raw.cmd_sn);
    bhs.set_u32_at(iscsi::pdu::text::EXP_STAT_SN, raw.exp_stat_sn);
    let mut p = iscsi::pdu::Pdu::new(bhs);
    p.data = iscsi::pdu::keys::encode([("SendTargets", "All")]);
    raw.send(&p);
    let rsp = raw.recv().unwrap();
    assert_eq!(rsp.bhs.opcode(), iscsi::pdu::opcode::TEXT_RSP);
    let keys = iscsi::pdu::keys::parse(&rsp.data).unwrap();
    assert_eq!(
        keys,
        vec![
            ("TargetName".to_string(), IQN.to_string()),
            (
                "TargetAddress".to_string(),
                format!("127.0.0.1:{},1", t.port)
            ),
        ]
    );
}
