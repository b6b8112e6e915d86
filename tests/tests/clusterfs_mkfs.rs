//! mkfs.clusterfs as a program: flags with mkfs.gfs2's meaning, its summary,
//! clear errors, and fsck.gfs2 -n on what it makes.

use std::fs::File;
use std::path::Path;
use std::process::{Command, Output};

fn mkfs(args: &[&str], img: &Path) -> Output {
    Command::new(tests::bin("mkfs_clusterfs"))
        .args(args)
        .arg(img)
        .output()
        .unwrap()
}

#[test]
fn clusterfs_mkfs_summary_flags_and_fsck() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v.img");
    File::create(&img).unwrap().set_len(300 << 20).unwrap();
    let out = mkfs(
        &[
            "-O",
            "-p",
            "lock_dlm",
            "-t",
            "alpha:gfs0",
            "-j",
            "3",
            "-J",
            "16",
            "-b",
            "2048",
            "-r",
            "64",
        ],
        &img,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "Block size:                2048",
        "Journals:                  3",
        "Journal size:              16MB",
        "Locking protocol:          \"lock_dlm\"",
        "Lock table:                \"alpha:gfs0\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    tests::fsck_clean(&img);
    if tests::require("gfs2_edit") {
        let sb = Command::new("gfs2_edit")
            .args(["-p", "sb"])
            .arg(&img)
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&sb.stdout);
        assert!(s.contains("alpha:gfs0") && s.contains("lock_dlm"), "{s}");
    }
}

#[test]
fn clusterfs_mkfs_rejects_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("v.img");
    File::create(&img).unwrap().set_len(64 << 20).unwrap();
    for (args, why) in [
        (&["-O", "-p", "lock_dlm", "-t", "nocolon"][..], "colon"),
        (&["-O", "-p", "lock_foo"][..], "lock protocol"),
        (&["-O", "-p", "lock_nolock", "-b", "1000"][..], "Block size"),
        (&["-O", "-p", "lock_nolock", "-j", "0"][..], "journals"),
        (
            &["-O", "-p", "lock_nolock", "-J", "2000"][..],
            "journal size",
        ),
        (
            &["-O", "-p", "lock_nolock", "-j", "8", "-J", "8"][..],
            "will not fit",
        ),
    ] {
        let out = mkfs(args, &img);
        assert!(!out.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.to_lowercase().contains(&why.to_lowercase()),
            "{args:?}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let tiny = dir.path().join("tiny.img");
    File::create(&tiny).unwrap().set_len(4 << 20).unwrap();
    let out = mkfs(&["-O", "-p", "lock_nolock"], &tiny);
    assert!(!out.status.success());
}
