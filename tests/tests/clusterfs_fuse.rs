//! mkfs.clusterfs + mount.clusterfs through a real FUSE mount: a seeded
//! random workload compared with a reference model, SIGKILL crashes with
//! remount and fsck.gfs2, and a volume made by mkfs.gfs2. Skipped (and
//! counted as skipped; failed under CI) when /dev/fuse, fusermount3 or the
//! gfs2-utils are missing.
//! Longer runs: CLUSTERFS_FUSE_SEEDS, CLUSTERFS_FUSE_STEPS.

#[path = "../../clusterfs/tests/common/model.rs"]
mod model;
#[path = "support/mounted.rs"]
mod mounted;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mounted::Mounted;
use tests::{is_mounted, FuseMount};

/// Generous: the CI machine is small and shared.
const TIMEOUT: Duration = Duration::from_secs(60);

fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    tests::wait_for(what, TIMEOUT, cond)
}

fn mkfs(img: &Path, size_mb: u64, bsize: u32) {
    fs::File::create(img)
        .unwrap()
        .set_len(size_mb << 20)
        .unwrap();
    let st = Command::new(tests::bin("mkfs_clusterfs"))
        .args(["-q", "-O", "-p", "lock_nolock", "-b", &bsize.to_string()])
        .arg(img)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs_clusterfs failed");
}

/// A fresh 64 MiB volume (4 KiB blocks) and an empty mount point in a
/// temporary directory (kept alive by the returned guard).
fn scratch_volume() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("vol.img");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    mkfs(&img, 64, 4096);
    (dir, img, mnt)
}

/// A foreground mount.clusterfs with options `opts`.
fn mount_with(img: &Path, mnt: &Path, opts: &str) -> FuseMount {
    FuseMount::start(
        Command::new(tests::bin("mount_clusterfs"))
            .arg(img)
            .arg(mnt)
            .args(["-f", "-o", opts]),
        mnt,
    )
}

fn mount(img: &Path, mnt: &Path) -> FuseMount {
    mount_with(img, mnt, "lockproto=lock_nolock,commit=1")
}

/// The FUSE mount, addressed by path.
fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn clusterfs_fuse_random_workload_matches_model() {
    if !tests::require_fuse() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let steps = env("CLUSTERFS_FUSE_STEPS", 150) as usize;
    for seed in 0..env("CLUSTERFS_FUSE_SEEDS", 2) {
        let img = dir.path().join(format!("vol{seed}.img"));
        let mnt = dir.path().join(format!("mnt{seed}"));
        fs::create_dir(&mnt).unwrap();
        mkfs(&img, 64, [4096, 1024][seed as usize % 2]);
        let m = mount(&img, &mnt);
        let mut target = Mounted(mnt.clone());
        model::run(1000 + seed, steps, &mut target, &mut |_, _| {});
        m.stop();
        tests::fsck_clean(&img);
        // The data is still there after a remount.
        let m = mount(&img, &mnt);
        let mut target = Mounted(mnt.clone());
        let mut again = model::Model::default();
        let mut g = model::Generator::new(1000 + seed);
        for _ in 0..steps {
            let op = g.next(&mut again);
            let _ = op.apply(&mut again);
        }
        model::compare(&mut again, &mut target).unwrap();
        m.stop();
    }
}

#[test]
fn clusterfs_fuse_sigkill_keeps_fsynced_files() {
    if !tests::require_fuse() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for seed in 0..env("CLUSTERFS_FUSE_CRASH_SEEDS", 3) {
        let img = dir.path().join(format!("crash{seed}.img"));
        let mnt = dir.path().join(format!("cmnt{seed}"));
        fs::create_dir(&mnt).unwrap();
        mkfs(&img, 64, 4096);
        let m = mount(&img, &mnt);
        let mut rng = model::Rng64::new(seed);
        let mut kept = Vec::new();
        let mut g = model::Generator::new(seed);
        let mut shadow = model::Model::default();
        let mut target = Mounted(mnt.clone());
        let steps = rng.range(20..120);
        for step in 0..steps {
            let op = g.next(&mut shadow);
            let _ = op.apply(&mut shadow);
            let _ = op.apply(&mut target);
            if step % 15 == 3 {
                let name = format!("keep{step}");
                let data: Vec<u8> = (0..rng.range(1..50_000))
                    .map(|_| rng.next_u64() as u8)
                    .collect();
                let mut f = fs::File::create(mnt.join(&name)).unwrap();
                f.write_all(&data).unwrap();
                f.sync_all().unwrap();
                kept.push((name, data));
            }
        }
        m.kill();
        let m = mount(&img, &mnt);
        for (name, data) in &kept {
            let got =
                fs::read(mnt.join(name)).unwrap_or_else(|e| panic!("seed {seed}: {name}: {e}"));
            assert_eq!(&got, data, "seed {seed}: {name} damaged");
        }
        m.stop();
        tests::fsck_clean(&img);
    }
}

#[test]
fn clusterfs_fuse_background_mount_and_mkfs_gfs2_volume() {
    if !tests::require_fuse() {
        return;
    }
    if !tests::require("mkfs.gfs2") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("gfs2.img");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    fs::File::create(&img).unwrap().set_len(128 << 20).unwrap();
    let st = Command::new("mkfs.gfs2")
        .args(["-O", "-q", "-p", "lock_nolock", "-j", "2"])
        .arg(&img)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    // Background mode: returns once mounted. The daemon is no child of
    // ours (no parent-death signal reaches it): unmounting ends it, which
    // the guard does if the test fails or the runner dies.
    let _unmounter = tests::Unmounter::new(&mnt);
    let st = Command::new(tests::bin("mount_clusterfs"))
        .arg(&img)
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(st.success());
    assert!(is_mounted(&mnt));
    fs::create_dir(mnt.join("d")).unwrap();
    for i in 0..200 {
        fs::write(mnt.join(format!("d/f{i}")), vec![i as u8; i * 37]).unwrap();
    }
    fs::remove_file(mnt.join("d/f7")).unwrap();
    // Extended attributes through the kernel.
    let f1 = mnt.join("d/f1");
    mounted::set_xattr(&f1, "user.color", b"blue").expect("setxattr");
    assert_eq!(mounted::get_xattr(&f1, "user.color").unwrap(), b"blue");
    assert_eq!(fs::read_dir(mnt.join("d")).unwrap().count(), 199);
    // Other tests running in parallel fork children, which hold copies of
    // this test's descriptors until they exec: the mount can be busy for a
    // moment, so retry.
    wait_for("fusermount3 -u", || {
        let out = Command::new("fusermount3")
            .arg("-u")
            .arg(&mnt)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!("fusermount3 -u: {}", String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    });
    // The daemon finishes its clean unmount after the kernel lets go; wait
    // until the image is released (its process has exited).
    wait_for("the daemon to exit", || !daemon_running(&img));
    tests::fsck_clean(&img);
}

/// True while a mount_clusterfs process has `img` on its command line.
fn daemon_running(img: &Path) -> bool {
    let needle = img.as_os_str().to_str().unwrap();
    fs::read_dir("/proc").unwrap().flatten().any(|e| {
        fs::read(e.path().join("cmdline"))
            .map(|c| {
                let s = String::from_utf8_lossy(&c);
                s.contains("mount_clusterfs") && s.contains(needle)
            })
            .unwrap_or(false)
    })
}

/// An ACL in the kernel's xattr form: (tag, perm, id) entries.
fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        // The kernel writes ACL_UNDEFINED_ID for entries without an id.
        let id = if matches!(tag, USER | GROUP) {
            id
        } else {
            u32::MAX
        };
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

const USER_OBJ: u16 = 1;
const USER: u16 = 2;
const GROUP_OBJ: u16 = 4;
const GROUP: u16 = 8;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const NOBODY: u32 = 65534;

/// Runs `sh -c script` as uid/gid 65534 with no supplementary groups.
fn as_nobody(script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

fn set_acl(path: &Path, name: &str, value: &[u8]) {
    mounted::set_xattr(path, name, value)
        .unwrap_or_else(|e| panic!("{name} on {path:?}: errno {e}"));
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn clusterfs_fuse_posix_acls_grant_and_deny_what_modes_would_not() {
    use std::os::unix::fs::PermissionsExt;
    if !tests::require_fuse() {
        return;
    }
    if !tests::require_root("acting as another user") || !tests::require("setpriv") {
        return;
    }
    let (dir, img, mnt) = scratch_volume();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let m = mount_with(&img, &mnt, "lockproto=lock_nolock,commit=1,allow_other");
    fs::set_permissions(&mnt, fs::Permissions::from_mode(0o755)).unwrap();

    // Grant: mode 0600 alone keeps nobody out; a named-user entry lets it read.
    let secret = mnt.join("secret");
    fs::write(&secret, b"s3cret").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let cat = format!("cat {}", secret.display());
    assert!(
        !as_nobody(&cat).status.success(),
        "mode 0600 must deny nobody"
    );
    set_acl(
        &secret,
        "system.posix_acl_access",
        &acl_xattr(&[
            (USER_OBJ, 6, 0),
            (USER, 4, NOBODY),
            (GROUP_OBJ, 0, 0),
            (MASK, 4, 0),
            (OTHER, 0, 0),
        ]),
    );
    assert_eq!(mode_of(&secret), 0o640, "the mask shows as the group bits");
    let out = as_nobody(&cat);
    assert!(
        out.status.success(),
        "ACL must grant: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"s3cret");
    // chmod moves the mask: the named entry no longer takes effect.
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        !as_nobody(&cat).status.success(),
        "mask 0 after chmod 600 must deny"
    );

    // Deny: others may read by mode, but nobody's own entry says no.
    let open = mnt.join("open");
    fs::write(&open, b"public").unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    let cat_open = format!("cat {}", open.display());
    assert!(as_nobody(&cat_open).status.success());
    set_acl(
        &open,
        "system.posix_acl_access",
        &acl_xattr(&[
            (USER_OBJ, 6, 0),
            (USER, 0, NOBODY),
            (GROUP_OBJ, 4, 0),
            (MASK, 4, 0),
            (OTHER, 4, 0),
        ]),
    );
    assert!(
        !as_nobody(&cat_open).status.success(),
        "named entry --- must deny"
    );

    // Inheritance: a default ACL lets nobody create (umask ignored) and
    // write files root creates there, though other has only r.
    let shared = mnt.join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o755)).unwrap();
    let rwx_for_nobody = acl_xattr(&[
        (USER_OBJ, 7, 0),
        (USER, 7, NOBODY),
        (GROUP_OBJ, 5, 0),
        (MASK, 7, 0),
        (OTHER, 5, 0),
    ]);
    set_acl(&shared, "system.posix_acl_access", &rwx_for_nobody);
    set_acl(&shared, "system.posix_acl_default", &rwx_for_nobody);
    let new = shared.join("new");
    let out = as_nobody(&format!("umask 077; echo hi > {}", new.display()));
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::metadata(&new).unwrap().uid(), NOBODY);
    assert_eq!(
        mode_of(&new),
        0o664,
        "default ACL, not umask 077, shapes the mode"
    );
    let rootfile = shared.join("rootfile");
    fs::write(&rootfile, b"x").unwrap();
    assert_eq!(mode_of(&rootfile) & 0o007, 0o004, "other: read only");
    let out = as_nobody(&format!("echo more >> {}", rootfile.display()));
    assert!(
        out.status.success(),
        "inherited ACL must grant write: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(&rootfile).unwrap(), b"xmore\n");
    let sub = shared.join("sub");
    fs::create_dir(&sub).unwrap();
    let v = mounted::get_xattr(&sub, "system.posix_acl_default")
        .expect("subdirectory inherits the default ACL");
    assert_eq!(v, rwx_for_nobody);

    if tests::require_all(&["getfacl", "setfacl"]) {
        let st = Command::new("setfacl")
            .args(["-m", "u:65534:rw"])
            .arg(&rootfile)
            .status()
            .unwrap();
        assert!(st.success());
        let out = Command::new("getfacl")
            .arg("-n")
            .arg(&rootfile)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("user:65534:rw-"), "{text}");
    }
    m.stop();
    tests::fsck_clean(&img);
}

/// Through the kernel: a 64 KiB extended attribute (ED blocks), a punched
/// hole that shows in st_blocks and reads as zeros, and renameat2
/// RENAME_EXCHANGE of directories in different parents.
#[test]
fn clusterfs_fuse_big_xattr_punch_hole_and_exchange() {
    use std::os::fd::AsRawFd;
    if !tests::require_fuse() {
        return;
    }
    let (_dir, img, mnt) = scratch_volume();
    let m = mount(&img, &mnt);
    let mut t = Mounted(mnt.clone());
    use model::Target;

    let big: Vec<u8> = (0..65536u32).map(|i| (i * 7 % 251) as u8).collect();
    t.create("f").unwrap();
    t.setxattr("f", "user.big", &big).unwrap();
    assert_eq!(t.xattrs("f").unwrap()["user.big"], big);

    let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8 + 1).collect();
    t.write("f", 0, &data).unwrap();
    t.sync().unwrap();
    let blocks = fs::metadata(mnt.join("f")).unwrap().blocks();
    let file = fs::OpenOptions::new()
        .write(true)
        .open(mnt.join("f"))
        .unwrap();
    let (off, len) = (64 * 1024, 512 * 1024);
    // SAFETY: a valid descriptor.
    let rc = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            len,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    drop(file);
    let after = fs::metadata(mnt.join("f")).unwrap();
    assert_eq!(after.len(), 1 << 20);
    // st_blocks counts 512-byte units: 128 blocks of 4 KiB = 1024.
    assert_eq!(blocks - after.blocks(), 1024);
    let mut want = data.clone();
    want[off as usize..(off + len) as usize].fill(0);
    assert_eq!(fs::read(mnt.join("f")).unwrap(), want);

    for d in ["p", "q", "p/a", "q/b"] {
        t.mkdir(d).unwrap();
    }
    t.create("p/a/in-a").unwrap();
    t.rename2("p/a", "q/b", model::RENAME_EXCHANGE).unwrap();
    assert!(mnt.join("q/b/in-a").exists());
    let q = fs::metadata(mnt.join("q")).unwrap().ino();
    assert_eq!(fs::metadata(mnt.join("q/b/..")).unwrap().ino(), q);
    assert_eq!(
        t.rename2("p/a", "q/b", model::RENAME_NOREPLACE),
        Err(libc::EEXIST)
    );
    m.stop();
    tests::fsck_clean(&img);
}

/// SIGTERM while a file is held open: the daemon retries the busy unmount,
/// then detaches lazily; the volume is unmounted cleanly (exit 0, journal
/// clean, fsck clean) once the last descriptor closes.
#[test]
fn clusterfs_fuse_sigterm_on_busy_mount_detaches_lazily() {
    if !tests::require_fuse() {
        return;
    }
    let (_dir, img, mnt) = scratch_volume();
    let mut m = mount(&img, &mnt);
    let mut held = fs::File::create(mnt.join("held")).unwrap();
    held.write_all(b"still open").unwrap();
    nix::sys::signal::kill(m.pid(), nix::sys::signal::SIGTERM).unwrap();
    wait_for("the lazy detach", || !is_mounted(&mnt));
    assert!(
        m.child.try_wait().unwrap().is_none(),
        "the daemon serves the open file until it closes"
    );
    held.write_all(b", and written").unwrap();
    drop(held);
    m.wait_clean_exit();
    drop(m);
    tests::fsck_clean(&img);
    let m = mount(&img, &mnt);
    assert_eq!(
        fs::read(mnt.join("held")).unwrap(),
        b"still open, and written"
    );
    m.stop();
}
