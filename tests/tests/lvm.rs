//! The lvm commands against Debian's lvm2 on loop devices, both ways: a VG
//! made by lvm2 and changed by us, one made by us and changed by lvm2;
//! after every step lvm2's `vgck` and `pvck` pass and both programs report
//! the same PVs, VGs, LVs and segments. Also: damaged metadata is refused
//! with nothing written, and an active LV is a FUSE file mapped over its
//! PV (lvextend grows it, deactivation refuses while it is open).
//!
//! lvm2 runs with a private system dir whose filter admits only this
//! test's loop devices, `--driverloaded n` / `-an -Zn` where it would need
//! device-mapper (there is none here), and no backups. The loop devices
//! are detached when the test ends, pass or fail.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use tests::{bin, require_fuse, require_root, skip, OnRunnerDeath};

/// Debian's lvm2 program, not ours (ours may be installed on PATH too).
fn lvm2_program() -> Option<PathBuf> {
    ["/usr/sbin/lvm", "/sbin/lvm"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            Command::new(p)
                .arg("version")
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Library version"))
        })
}

/// Loop devices over files in a temp dir, with both programs' configs.
struct Lab {
    dir: tempfile::TempDir,
    loops: Vec<String>,
    lvm2: PathBuf,
    /// If the runner is killed: unmount the LV files (their servers then
    /// exit) and detach the loop devices.
    _reaper: Option<OnRunnerDeath>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deactivate anything left active (its server holds the loop open).
        let _ = self.ours_out(&["vgchange", "-an"]);
        for l in &self.loops {
            let _ = Command::new("timeout")
                .args(["-s", "KILL", "30", "losetup", "-d", l])
                .output();
        }
    }
}

impl Lab {
    /// `n` loop devices of `mib` MiB each, or `None` after recording a skip.
    fn new(n: usize, mib: u64) -> Option<Lab> {
        if !require_root("losetup and lvm2") {
            return None;
        }
        let Some(lvm2) = lvm2_program() else {
            skip("Debian's lvm2 is not installed (apt-get install lvm2)");
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut lab = Lab {
            dir,
            loops: vec![],
            lvm2,
            _reaper: None,
        };
        for i in 0..n {
            let img = lab.dir.path().join(format!("disk{i}.img"));
            fs::File::create(&img).unwrap().set_len(mib << 20).unwrap();
            // losetup can hang on a loop device another program left over
            // a dead FUSE file: bounded, and then a recorded skip.
            let out = Command::new("timeout")
                .args(["-s", "KILL", "30", "losetup", "-f", "--show"])
                .arg(&img)
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    lab.loops
                        .push(String::from_utf8_lossy(&o.stdout).trim().to_string());
                }
                _ => {
                    skip("no loop device available (losetup -f --show FILE failed)");
                    return None;
                }
            }
        }
        lab.write_configs();
        let script = format!(
            "for m in $(grep -F ' {}/' /proc/mounts | cut -d' ' -f2); do fusermount3 -u -z \"$m\"; done; sleep 1; losetup -d {}",
            lab.p("dev").display(),
            lab.loops.join(" ")
        );
        lab._reaper = Some(OnRunnerDeath::new(Command::new("sh").args(["-c", &script])));
        Some(lab)
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_configs(&self) {
        let accept: Vec<String> = self.loops.iter().map(|l| format!("\"a|^{l}$|\"")).collect();
        let filter = format!("[{}, \"r|.*|\"]", accept.join(", "));
        let lock = self.p("lock");
        let lvm2 = format!(
            "devices {{ scan = [\"/dev\"] filter = {filter} obtain_device_list_from_udev = 0 hints = \"none\" \
             external_device_info_source = \"none\" use_devicesfile = 0 }}\n\
             global {{ locking_dir = \"{}\" }}\nactivation {{ udev_sync = 0 udev_rules = 0 }}\n\
             backup {{ backup = 0 archive = 0 }}\n",
            lock.display()
        );
        fs::create_dir_all(self.p("lvm2")).unwrap();
        fs::write(self.p("lvm2/lvm.conf"), lvm2).unwrap();
        let ours = format!(
            "devices {{ dir = \"{}\" scan = [\"/dev\"] filter = {filter} }}\n\
             global {{ locking_type = 1 locking_dir = \"{}\" }}\n",
            self.p("dev").display(),
            self.p("ourlock").display()
        );
        fs::create_dir_all(self.p("ours")).unwrap();
        fs::write(self.p("ours/lvm.conf"), ours).unwrap();
    }

    fn lvm2_out(&self, args: &[&str]) -> Output {
        Command::new(&self.lvm2)
            .args(args)
            .env("LVM_SYSTEM_DIR", self.p("lvm2"))
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .output()
            .expect("run lvm2")
    }

    fn ours_out(&self, args: &[&str]) -> Output {
        Command::new(bin("lvm"))
            .args(args)
            .env("LVM_SYSTEM_DIR", self.p("ours"))
            .output()
            .expect("run lvm")
    }

    #[track_caller]
    fn lvm2(&self, args: &[&str]) -> String {
        ok("lvm2", args, self.lvm2_out(args))
    }

    #[track_caller]
    fn ours(&self, args: &[&str]) -> String {
        ok("ours", args, self.ours_out(args))
    }

    /// Both programs' report of `fields`, in bytes, sorted; asserted equal.
    #[track_caller]
    fn same_report(&self, cmd: &str, fields: &str) -> String {
        let mut args = vec![
            cmd,
            "--noheadings",
            "--units",
            "b",
            "--nosuffix",
            "--separator",
            ",",
            "-o",
            fields,
        ];
        if cmd == "lvs" {
            args.push("--driverloaded");
            args.push("n");
        }
        let sorted = |s: String| {
            let mut l: Vec<String> = s.lines().map(|l| l.trim().to_string()).collect();
            l.sort();
            l.join("\n")
        };
        let theirs = sorted(self.lvm2(&args));
        let mine = sorted(self.ours(&args[..9]));
        assert_eq!(mine, theirs, "{cmd} -o {fields}: ours vs lvm2");
        mine
    }

    /// lvm2's vgck and pvck pass, and every report agrees.
    #[track_caller]
    fn agree(&self, vg: &str) {
        self.lvm2(&["vgck", vg]);
        self.ours(&["vgck", vg]);
        let pvs = self.same_report("pvs", "pv_name,vg_name,pv_attr,pv_size,pv_free,pv_uuid,pe_start,pv_pe_count,pv_pe_alloc_count");
        for pv in pvs.lines().filter_map(|l| l.split(',').next()) {
            self.lvm2(&["pvck", pv]);
            self.ours(&["pvck", pv]);
        }
        self.same_report("vgs", "vg_name,pv_count,lv_count,vg_attr,vg_size,vg_free,vg_uuid,vg_extent_size,vg_extent_count,vg_free_count,vg_seqno");
        self.same_report(
            "lvs",
            "vg_name,lv_name,lv_uuid,lv_size,seg_count,seg_start_pe,seg_size,devices",
        );
    }
}

#[track_caller]
fn ok(who: &str, args: &[&str], o: Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        o.status.success(),
        "{who} {args:?} failed ({}):\n{out}{err}",
        o.status
    );
    out
}

fn seqno(lab: &Lab, vg: &str) -> u64 {
    lab.same_report("vgs", "vg_name,vg_seqno")
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!("{vg},"))
                .map(|s| s.parse().unwrap())
        })
        .expect("the VG is reported")
}

#[test]
fn vg_made_by_lvm2_changed_by_us() {
    let Some(lab) = Lab::new(2, 64) else { return };
    let (a, b) = (lab.loops[0].as_str(), lab.loops[1].as_str());
    lab.lvm2(&["pvcreate", a]);
    lab.lvm2(&["vgcreate", "webvg", a]);
    lab.lvm2(&[
        "lvcreate",
        "--driverloaded",
        "n",
        "-an",
        "-Zn",
        "-L",
        "8M",
        "-n",
        "theirs",
        "webvg",
    ]);
    lab.agree("webvg");
    let s0 = seqno(&lab, "webvg");

    let out = lab.ours(&["vgextend", "webvg", b]);
    assert!(
        out.contains("Volume group \"webvg\" successfully extended"),
        "{out}"
    );
    lab.ours(&["lvcreate", "-an", "-L", "20M", "-n", "ours1", "webvg"]);
    lab.ours(&["lvextend", "-L", "+60M", "webvg/theirs"]);
    lab.ours(&["lvcreate", "-an", "-l", "100%FREE", "-n", "rest", "webvg"]);
    lab.agree("webvg");
    assert_eq!(seqno(&lab, "webvg"), s0 + 4);

    // lvm2 goes on from our metadata.
    lab.lvm2(&["lvremove", "-f", "webvg/rest"]);
    lab.lvm2(&["lvextend", "--driverloaded", "n", "-l", "+2", "webvg/ours1"]);
    lab.agree("webvg");
    lab.ours(&["lvremove", "webvg/theirs"]);
    lab.ours(&["lvextend", "-l", "+3", "webvg/ours1"]);
    lab.agree("webvg");
    assert_eq!(seqno(&lab, "webvg"), s0 + 8);
}

#[test]
fn vg_made_by_us_changed_by_lvm2() {
    let Some(lab) = Lab::new(3, 48) else { return };
    let (a, b, c) = (
        lab.loops[0].as_str(),
        lab.loops[1].as_str(),
        lab.loops[2].as_str(),
    );
    lab.ours(&["pvcreate", a, b]);
    lab.lvm2(&["pvck", a]);
    lab.same_report("pvs", "pv_name,pv_uuid,pv_size,pe_start");
    lab.ours(&["vgcreate", "webvg", a, b]);
    let big = lab.ours_out(&["lvcreate", "-an", "-L", "2G", "-n", "big", "webvg"]);
    assert!(!big.status.success());
    assert!(String::from_utf8_lossy(&big.stderr).contains("Insufficient free space"));
    lab.ours(&["lvcreate", "-an", "-L", "20M", "-n", "lv1", "webvg"]);
    lab.agree("webvg");

    lab.lvm2(&["vgextend", "webvg", c]);
    lab.lvm2(&[
        "lvcreate",
        "--driverloaded",
        "n",
        "-an",
        "-Zn",
        "-l",
        "5",
        "-n",
        "theirs",
        "webvg",
    ]);
    lab.lvm2(&["lvextend", "--driverloaded", "n", "-L", "+40M", "webvg/lv1"]);
    lab.agree("webvg");

    lab.ours(&["lvremove", "webvg/theirs"]);
    lab.ours(&["lvextend", "-l", "+4", "webvg/lv1"]);
    // Reduce by a PV that holds no extent (lvm2 chose where they went).
    let pvs = lab.same_report("pvs", "pv_name,pv_pe_alloc_count");
    let empty = pvs
        .lines()
        .find_map(|l| l.strip_suffix(",0"))
        .expect("a PV with no extents in use")
        .to_string();
    let out = lab.ours(&["vgreduce", "webvg", &empty]);
    assert!(
        out.contains(&format!("Removed \"{empty}\" from volume group \"webvg\"")),
        "{out}"
    );
    lab.agree("webvg");
    lab.lvm2(&["pvremove", &empty]);

    lab.ours(&["vgremove", "-f", "webvg"]);
    let left = lab.same_report("pvs", "pv_name,vg_name");
    assert!(
        left.lines().all(|l| l.ends_with(',')),
        "every PV an orphan:\n{left}"
    );
    lab.lvm2(&["pvremove", a, b]);
    assert_eq!(lab.ours(&["pvs", "--noheadings"]).trim(), "");
}

/// Byte offset and length of the committed metadata text (slot 0 of the
/// mda_header at 4 KiB).
fn metadata_location(dev: &str) -> (u64, u64) {
    let f = fs::File::open(dev).unwrap();
    let mut h = [0u8; 512];
    f.read_exact_at(&mut h, 4096).unwrap();
    let offset = u64::from_le_bytes(h[40..48].try_into().unwrap());
    let size = u64::from_le_bytes(h[48..56].try_into().unwrap());
    (4096 + offset, size)
}

fn head(dev: &str) -> Vec<u8> {
    let mut b = vec![0u8; 1 << 20];
    fs::File::open(dev)
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    b
}

#[test]
fn damaged_metadata_is_refused_and_nothing_written() {
    let Some(lab) = Lab::new(1, 32) else { return };
    let a = lab.loops[0].as_str();
    lab.ours(&["vgcreate", "webvg", a]);
    lab.ours(&["lvcreate", "-an", "-l", "2", "-n", "lv1", "webvg"]);
    let (at, len) = metadata_location(a);
    let f = fs::OpenOptions::new().write(true).open(a).unwrap();
    // "webvg {\n" starts the text; damage a byte inside the LV section.
    f.write_all_at(b"X", at + len / 2).unwrap();
    f.sync_all().unwrap();
    let before = head(a);
    for cmd in [
        vec!["lvcreate", "-an", "-l", "1", "-n", "lv2", "webvg"],
        vec!["lvextend", "-l", "+1", "webvg/lv1"],
        vec!["vgextend", "webvg", a],
    ] {
        let o = lab.ours_out(&cmd);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{cmd:?} succeeded on damaged metadata");
        assert!(
            err.contains("checksum"),
            "{cmd:?}: no checksum message:\n{err}"
        );
    }
    assert!(head(a) == before, "a refused command wrote to the PV");
    // lvm2 refuses it too.
    assert!(!lab.lvm2_out(&["vgck", "webvg"]).status.success());
}

#[test]
fn active_lv_is_a_file_mapped_over_its_pv() {
    if !require_fuse() {
        return;
    }
    let Some(lab) = Lab::new(1, 64) else { return };
    let a = lab.loops[0].as_str();
    lab.ours(&["vgcreate", "webvg", a]);
    lab.ours(&["lvcreate", "-an", "-l", "1", "-n", "lv0", "webvg"]);
    lab.ours(&["lvcreate", "-an", "-l", "2", "-n", "lv1", "webvg"]);
    // lv0 now has two segments: PE 0 and PE 3.
    lab.ours(&["lvextend", "-l", "+1", "webvg/lv0"]);
    let out = lab.ours(&["vgchange", "-ay", "webvg"]);
    assert!(
        out.contains("2 logical volume(s) in volume group \"webvg\" now active"),
        "{out}"
    );
    let lv0 = lab.p("dev/webvg/lv0");
    let ext: u64 = 4 << 20;
    assert_eq!(fs::metadata(&lv0).unwrap().len(), 2 * ext);
    let attrs = lab.ours(&["lvs", "--noheadings", "-o", "lv_name,lv_attr"]);
    let lv0_attr = attrs
        .lines()
        .find_map(|l| l.trim().strip_prefix("lv0"))
        .map(str::trim);
    assert_eq!(lv0_attr, Some("-wi-a-----"), "{attrs}");

    // A write across the segment boundary lands on PE 0's end and PE 3.
    let pattern: Vec<u8> = (0..200u32).map(|i| (i * 7 + 1) as u8).collect();
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lv0)
        .unwrap();
    file.write_all_at(&pattern, ext - 100).unwrap();
    file.sync_all().unwrap();
    let pe_start: u64 = 1 << 20;
    let raw = fs::File::open(a).unwrap();
    let mut got = vec![0u8; 100];
    raw.read_exact_at(&mut got, pe_start + ext - 100).unwrap();
    assert_eq!(got, pattern[..100]);
    raw.read_exact_at(&mut got, pe_start + 3 * ext).unwrap();
    assert_eq!(got, pattern[100..]);

    // lvextend grows the active file; deactivation waits for the close.
    lab.ours(&["lvextend", "-L", "+4M", "webvg/lv0"]);
    assert_eq!(fs::metadata(&lv0).unwrap().len(), 3 * ext);
    let busy = lab.ours_out(&["lvchange", "-an", "webvg/lv0"]);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("Logical volume webvg/lv0 in use."));
    drop(file);
    lab.ours(&["lvchange", "-an", "webvg/lv0"]);
    assert!(!lv0.exists(), "deactivation removes the file");
    lab.ours(&["vgchange", "-an", "webvg"]);
    assert!(!lab.p("dev/webvg/lv1").exists());
    lab.agree("webvg");
}

/// mkfs.clusterfs and mount.clusterfs on `lvm:VG/LV` (in-process mapping)
/// and on the active `/dev/VG/LV` file; fsck.gfs2 clean through the file.
#[test]
fn clusterfs_on_an_lv_both_ways() {
    if !require_fuse() || !tests::require("fsck.gfs2") {
        return;
    }
    let Some(lab) = Lab::new(2, 160) else { return };
    let (a, b) = (lab.loops[0].as_str(), lab.loops[1].as_str());
    lab.ours(&["vgcreate", "webvg", a, b]);
    // Two LVs, each in pieces on both PVs, so the mapping matters.
    lab.ours(&["lvcreate", "-an", "-L", "100M", "-n", "lv_a", "webvg", a]);
    lab.ours(&["lvcreate", "-an", "-L", "100M", "-n", "lv_b", "webvg", a, b]);
    lab.ours(&["lvextend", "-L", "+60M", "webvg/lv_a", b]);
    let sys = lab.p("ours");
    let mkfs = |dev: &str| {
        let st = Command::new(bin("mkfs_clusterfs"))
            .args([
                "-q",
                "-O",
                "-p",
                "lock_nolock",
                "-t",
                "test:fs",
                "-j",
                "1",
                dev,
            ])
            .env("LVM_SYSTEM_DIR", &sys)
            .status()
            .expect("run mkfs_clusterfs");
        assert!(st.success(), "mkfs_clusterfs {dev}: {st}");
    };
    let use_fs = |dev: &str, name: &str, earlier: Option<&str>| {
        let mnt = lab.p(&format!("mnt_{name}"));
        fs::create_dir_all(&mnt).unwrap();
        let m = tests::FuseMount::start(
            Command::new(bin("mount_clusterfs"))
                .arg(dev)
                .arg(&mnt)
                .args(["-o", "lockproto=lock_nolock", "-f"])
                .env("LVM_SYSTEM_DIR", &sys),
            &mnt,
        );
        if let Some(e) = earlier {
            assert_eq!(
                fs::read_to_string(mnt.join(format!("d_{e}/small"))).unwrap(),
                e
            );
        }
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(mnt.join("big"), &data).unwrap();
        let d = mnt.join(format!("d_{name}"));
        fs::create_dir(&d).unwrap();
        fs::write(d.join("small"), name).unwrap();
        assert_eq!(fs::read(mnt.join("big")).unwrap(), data);
        m.unmount();
    };
    mkfs("lvm:webvg/lv_a");
    use_fs("lvm:webvg/lv_a", "a", None);
    lab.ours(&["vgchange", "-ay", "webvg"]);
    let file_b = lab.p("dev/webvg/lv_b");
    mkfs(&file_b.to_string_lossy());
    use_fs(&file_b.to_string_lossy(), "b", None);
    if !tests::fsck_clean(&lab.p("dev/webvg/lv_a")) || !tests::fsck_clean(&file_b) {
        return;
    }
    lab.ours(&["vgchange", "-an", "webvg"]);
    // And lv_b's file system mounts in-process too, with what the file
    // mount wrote.
    use_fs("lvm:webvg/lv_b", "b2", Some("b"));
}

/// `lvm` dispatches on its name as lvm2's does (install.sh links the
/// command names to it), PVs live on plain files in a scanned directory,
/// and lvmconf edits the lvm.conf of LVM_SYSTEM_DIR.
#[test]
fn dispatches_on_its_name_and_uses_files() {
    let dir = tempfile::tempdir().unwrap();
    let sys = dir.path().join("sys");
    let disks = dir.path().join("disks");
    fs::create_dir_all(&sys).unwrap();
    fs::create_dir_all(&disks).unwrap();
    fs::write(
        sys.join("lvm.conf"),
        format!(
            "# ours\ndevices {{\n\tdir = \"{}\"\n\tscan = [\"{}\"]\n\tfilter = [\"a|\\\\.img$|\", \"r|.*|\"]\n}}\nglobal {{\n\tlocking_type = 1\n\tlocking_dir = \"{}\"\n}}\n",
            dir.path().join("dev").display(),
            disks.display(),
            dir.path().join("lock").display()
        ),
    )
    .unwrap();
    for name in ["pvcreate", "vgcreate", "lvcreate", "lvs", "pvs", "lvmconf"] {
        std::os::unix::fs::symlink(bin("lvm"), dir.path().join(name)).unwrap();
    }
    let img = disks.join("a.img");
    fs::File::create(&img).unwrap().set_len(40 << 20).unwrap();
    fs::write(disks.join("ignored.txt"), b"not a disk").unwrap();
    let run = |name: &str, args: &[&str]| {
        let o = Command::new(dir.path().join(name))
            .args(args)
            .env("LVM_SYSTEM_DIR", &sys)
            .output()
            .unwrap();
        ok(name, args, o)
    };
    let img_s = img.to_string_lossy().into_owned();
    run("pvcreate", &[&img_s]);
    run("vgcreate", &["filevg", &img_s]);
    run("lvcreate", &["-an", "-L", "12M", "-n", "lv", "filevg"]);
    let pvs = run("pvs", &["--noheadings", "-o", "pv_name,vg_name,pv_size"]);
    assert_eq!(
        pvs.split_whitespace().collect::<Vec<_>>(),
        [img_s.as_str(), "filevg", "36.00m"]
    );
    let lvs = run(
        "lvs",
        &["--noheadings", "--units", "b", "-o", "lv_name,lv_size"],
    );
    assert_eq!(
        lvs.split_whitespace().collect::<Vec<_>>(),
        ["lv", "12582912B"]
    );
    run("lvmconf", &["--enable-cluster"]);
    let conf = fs::read_to_string(sys.join("lvm.conf")).unwrap();
    assert!(
        conf.starts_with("# ours\n") && conf.contains("\tlocking_type = 3\n"),
        "{conf}"
    );
    // Clustered locking without clvmd: a clear refusal.
    let o = Command::new(dir.path().join("lvs"))
        .env("LVM_SYSTEM_DIR", &sys)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("clvmd is not running"));
}
