//! The tutorial end to end: `scripts/tutorial.sh` run as a reader runs it
//! (with the programs cargo built, in namespaces named for this test), and
//! its transcript checked step by step: the LUN served and logged in on
//! both nodes, LVM and the lock_dlm volume made, the seed's cluster.conf
//! verbatim on both nodes, the page on the floating address from the node
//! rgmanager chose, then from the other one after `clusvcadm -r`, then from
//! the survivor after the owner's SIGKILL and `fence_ack_manual`; the volume
//! clean for `fsck.gfs2 -n` at the end; and nothing of the lab left. Then
//! again with `--fence scsi`: the dead owner fenced by fence_scsi.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PAGE: &str = "<h1>httpd_cluster: served from the GFS2 volume</h1>";
const VIP: &str = "192.168.10.254";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// The script's stdout and exit status (killed after `limit`).
fn run_tutorial(lab: &Path, prefix: &str, args: &[&str], limit: Duration) -> (String, Option<i32>) {
    let bins = tests::bin("cmand").parent().unwrap().to_path_buf();
    let mut child = tests::spawn(
        Command::new(repo().join("scripts/tutorial.sh"))
            .arg("--bins")
            .arg(&bins)
            .args(args)
            .env("LAB_DIR", lab)
            .env("NS_PREFIX", prefix)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
    .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if t.elapsed() > limit {
            // SIGTERM: the script tears the lab down before it exits.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let st = child.wait().unwrap();
            eprintln!("tutorial.sh did not finish in {limit:?}");
            break st.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (reader.join().unwrap(), status)
}

/// The transcript's step `title` (from its `== title` line to the next).
fn section<'a>(out: &'a str, title: &str) -> &'a str {
    let start = out
        .find(&format!("== {title}"))
        .unwrap_or_else(|| panic!("no step {title:?} in the transcript"));
    let rest = &out[start + 3..];
    &rest[..rest.find("\n== ").map_or(rest.len(), |e| e + 1)]
}

/// The output of the command `cmd` typed on `host` within `text`.
fn output_of<'a>(text: &'a str, host: &str, cmd: &str) -> &'a str {
    let prompt = format!("[root@{host} ~]# {cmd}\n");
    let start = text
        .find(&prompt)
        .unwrap_or_else(|| panic!("no {prompt:?} in:\n{text}"))
        + prompt.len();
    let rest = &text[start..];
    let end = ["\n[root@", "\n== ", "\n# "]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .map_or(rest.len(), |e| e + 1);
    rest[..end].trim_end()
}

/// Which node the client's page came from in this step (checking that
/// the page is the volume's).
fn served_by(step: &str) -> String {
    assert_eq!(
        output_of(step, "client", &format!("curl http://{VIP}/")),
        PAGE
    );
    output_of(step, "client", &format!("curl http://{VIP}/node.txt")).to_string()
}

fn other(node: &str) -> &'static str {
    match node {
        "RealServer1" => "RealServer2",
        "RealServer2" => "RealServer1",
        n => panic!("not a cluster node: {n:?}"),
    }
}

fn netns_left(prefix: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(String::from)
        .collect()
}

/// Each node's /etc and /dev are overlays.
fn overlayfs() -> bool {
    let known = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|t| t.lines().any(|l| l.ends_with("\toverlay")));
    known
        || Command::new("modprobe")
            .arg("overlay")
            .status()
            .is_ok_and(|s| s.success())
        || {
            tests::skip("no overlayfs, which the nodes' /etc and /dev are");
            false
        }
}

fn required() -> bool {
    tests::require_root("network namespaces")
        && tests::require_dev_fuse()
        && overlayfs()
        && tests::require_all(&[
            "ip",
            "unshare",
            "nsenter",
            "curl",
            "apache2",
            "fsck.gfs2",
            "fusermount3",
        ])
}

#[test]
fn the_tutorial_serves_moves_and_fails_over_the_page() {
    if !required() {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let prefix = format!("tut{}-", std::process::id());
    let (out, code) = run_tutorial(lab.path(), &prefix, &[], Duration::from_secs(600));
    eprintln!("{out}");
    assert_eq!(code, Some(0), "tutorial.sh failed");
    assert!(netns_left(&prefix).is_empty(), "namespaces left behind");

    // Storage: the target with /dev/sdb as LUN 1; both nodes logged in.
    let storage = section(&out, "storage node");
    let show = output_of(
        storage,
        "Node1",
        "tgtadm --lld iscsi --op show --mode target",
    );
    assert!(show.contains("Backing store path: /dev/sdb"), "{show}");
    let login = section(&out, "cluster nodes");
    for host in ["RealServer1", "RealServer2"] {
        let text = output_of(
            login,
            host,
            "iscsiadm -m node --targetname iqn.2014-08-25.edu.nuist.com:storage.disk -p 192.168.10.130:3260 --login",
        );
        assert!(text.ends_with("successful."), "{text}");
    }

    // LVM and the file system.
    let storage = section(&out, "on one node");
    assert_eq!(
        output_of(storage, "RealServer1", "lvcreate -L 2G -n webvg_lv1 webvg"),
        "  Logical volume \"webvg_lv1\" created."
    );
    let mkfs = output_of(
        storage,
        "RealServer1",
        "mkfs.clusterfs -p lock_dlm -t httpd_cluster:webvg_lv1 -j 2 /dev/webvg/webvg_lv1",
    );
    assert!(
        mkfs.contains("Lock table:                \"httpd_cluster:webvg_lv1\""),
        "{mkfs}"
    );

    // The seed's cluster.conf, as is, the same on both nodes.
    let conf = section(&out, "the cluster configuration");
    let seed = std::fs::read_to_string(repo().join("cman/testdata/seed-cluster.conf")).unwrap();
    assert_eq!(
        output_of(conf, "RealServer1", "cat /etc/cluster/cluster.conf"),
        seed.trim_end()
    );
    assert_eq!(
        output_of(conf, "RealServer1", "md5sum /etc/cluster/cluster.conf"),
        output_of(conf, "RealServer2", "md5sum /etc/cluster/cluster.conf")
    );
    let start = section(&out, "start the cluster");
    assert!(
        start.contains("key derived from the cluster name"),
        "{start}"
    );
    for host in ["RealServer1", "RealServer2"] {
        assert_eq!(
            output_of(start, host, "vgchange -ay"),
            "  1 logical volume(s) in volume group \"webvg\" now active"
        );
    }

    // The service where rgmanager placed it: mounted, the address, the page.
    let first = section(&out, "the service");
    let owner = served_by(first);
    let clustat = output_of(first, &owner, "clustat");
    assert!(
        clustat.contains(&format!("service:httpd_srv {owner:<15} started")),
        "{clustat}"
    );
    let mount = output_of(first, &owner, "mount | grep /var/www/html");
    assert!(
        mount.starts_with("/dev/webvg/webvg_lv1 on /var/www/html type fuse")
            && mount.contains("allow_other"),
        "{mount}"
    );
    assert!(output_of(first, &owner, "ip addr show eth0").contains(&format!("inet {VIP}/24")));

    // Moved by hand.
    let moved = section(&out, "move the service");
    let to = other(&owner);
    assert_eq!(
        output_of(moved, &owner, &format!("clusvcadm -r httpd_srv -m {to}")),
        format!("Trying to relocate service:httpd_srv to {to}...Success\nservice:httpd_srv is now running on {to}")
    );
    assert_eq!(served_by(moved), to);
    assert!(output_of(moved, to, "ip addr show eth0").contains(&format!("inet {VIP}/24")));

    // The owner killed: fenced by the operator's ack, served by the survivor.
    let died = section(&out, &format!("the owner {to} dies"));
    let survivor = other(to);
    assert!(
        died.contains(&format!("fence_manual: reset node \"{to}\" by hand")),
        "{died}"
    );
    assert_eq!(
        output_of(died, survivor, &format!("fence_ack_manual {to}")),
        format!("fence_ack_manual: {to} acknowledged")
    );
    assert_eq!(served_by(died), survivor);
    let clustat = output_of(died, survivor, "clustat");
    assert!(
        clustat.contains(&format!("service:httpd_srv {survivor:<15} started"))
            && clustat
                .lines()
                .any(|l| l.contains(to) && l.ends_with("Offline")),
        "{clustat}"
    );
    assert!(
        died.contains(&format!("served again by {survivor} ")),
        "{died}"
    );

    // Stopped, then the volume checked.
    let end = section(&out, "the end");
    assert_eq!(
        output_of(end, survivor, "clusvcadm -d httpd_srv"),
        "Local machine disabling service:httpd_srv...Success"
    );
    let fsck = output_of(end, survivor, "fsck.gfs2 -n /dev/webvg/webvg_lv1");
    assert!(
        fsck.ends_with("fsck.gfs2 complete") && !fsck.contains("(y/n)"),
        "{fsck}"
    );
    assert!(section(&out, "teardown").contains("are gone"));
}

/// The tutorial with `--fence scsi`: fence_scsi on the LUN's by-path file
/// in cluster.conf, both nodes unfenced at boot (their keys registered
/// through their own sessions), the dead owner's key preempted by the
/// survivor with no operator, the page served by the survivor, the volume
/// clean.
#[test]
fn the_tutorial_fences_the_dead_owner_with_fence_scsi() {
    if !required() {
        return;
    }
    let lab = tempfile::tempdir().unwrap();
    let prefix = format!("tus{}-", std::process::id());
    let args = ["--fence", "scsi"];
    let (out, code) = run_tutorial(lab.path(), &prefix, &args, Duration::from_secs(600));
    eprintln!("{out}");
    assert_eq!(code, Some(0), "tutorial.sh --fence scsi failed");
    assert!(netns_left(&prefix).is_empty(), "namespaces left behind");

    let lun = "/dev/disk/by-path/ip-192.168.10.130:3260-iscsi-iqn.2014-08-25.edu.nuist.com:storage.disk-lun-1";
    let conf = section(&out, "the cluster configuration");
    let conf = output_of(conf, "RealServer1", "cat /etc/cluster/cluster.conf");
    assert!(
        conf.contains(&format!(
            r#"<fencedevice agent="fence_scsi" name="fence1" devices="{lun}"/>"#
        )) && !conf.contains("fence_manual"),
        "{conf}"
    );
    let start = section(&out, "start the cluster");
    for host in ["RealServer1", "RealServer2"] {
        // (The line after RealServer2's is cmand's key warning.)
        let unfence = output_of(start, host, &format!("fence_node -U {host}"));
        assert_eq!(
            unfence.lines().next(),
            Some(format!("unfence {host} success").as_str()),
            "{unfence}"
        );
    }
    let to = served_by(section(&out, "move the service"));
    let died = section(&out, &format!("the owner {to} dies"));
    let survivor = other(&to);
    assert!(!died.contains("fence_manual"), "{died}");
    assert_eq!(served_by(died), survivor);
    let status = |host: &str| format!("fence_scsi -o status -n {host} -d {lun}");
    assert_eq!(output_of(died, survivor, &status(&to)), "Status: OFF");
    assert_eq!(output_of(died, survivor, &status(survivor)), "Status: ON");
    let end = section(&out, "the end");
    let fsck = output_of(end, survivor, "fsck.gfs2 -n /dev/webvg/webvg_lv1");
    assert!(
        fsck.ends_with("fsck.gfs2 complete") && !fsck.contains("(y/n)"),
        "{fsck}"
    );
    assert!(section(&out, "what was shown").contains("(fence_scsi)"));
}

/// What `clusterfs.sh start` runs: our mount.clusterfs (a stand-in here,
/// which records its arguments and mounts nothing) with `allow_other`
/// ahead of the resource's options, so that a service's other users
/// (the tutorial's Apache runs as www-data) may read the volume, as with
/// a kernel GFS2 mount.
#[test]
fn clusterfs_agent_mounts_for_every_user() {
    let d = tempfile::tempdir().unwrap();
    let args = d.path().join("args");
    let fake = d.path().join("mount.clusterfs");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$*\" >> {}\nexit 1\n", args.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = rgmanager::agent::shipped_agents_dir().join("clusterfs.sh");
    let mnt = d.path().join("html");
    for (options, want) in [("", "allow_other"), ("noatime", "allow_other,noatime")] {
        let _ = std::fs::remove_file(&args);
        let out = Command::new("bash")
            .arg(&agent)
            .arg("start")
            .env(
                "PATH",
                format!("{}:{}", d.path().display(), std::env::var("PATH").unwrap()),
            )
            .env("OCF_RESKEY_name", "docroot")
            .env("OCF_RESKEY_device", "/dev/webvg/webvg_lv1")
            .env("OCF_RESKEY_mountpoint", &mnt)
            .env("OCF_RESKEY_fstype", "gfs2")
            .env("OCF_RESKEY_options", options)
            .env("CMAN_STATE_DIR", "/run/cluster-x")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "the stand-in mounts nothing");
        let calls = std::fs::read_to_string(&args).unwrap();
        let first = calls.lines().next().unwrap();
        assert_eq!(
            first,
            format!(
                "/dev/webvg/webvg_lv1 {} --state-dir /run/cluster-x -o {want}",
                mnt.display()
            )
        );
    }
}
