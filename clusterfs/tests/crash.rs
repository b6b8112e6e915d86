//! Power cuts: a seeded workload on a device that loses (some of) its
//! unflushed writes, with an I/O error injected at a random write; then
//! remount (journal replay), every fsync'd file intact, fsck.gfs2 clean.
//! More seeds: CLUSTERFS_CRASH_SEEDS.

mod common;

use std::sync::Arc;

use clusterfs::block::{BlockDevice, CrashDevice};
use clusterfs::fs::FileSystem;
use clusterfs::lock::LocalLocks;
use clusterfs::mkfs::{mkfs, LockProto, MkfsOptions};
use clusterfs::volume::MountInfo;
use common::model::{Generator, Model};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::core_target::Core;

fn mount_info(dev: &Arc<CrashDevice>) -> (FileSystem, MountInfo) {
    let d: Arc<dyn BlockDevice> = dev.clone();
    FileSystem::mount(d, Arc::new(LocalLocks)).expect("mount after crash")
}

fn mount(dev: &Arc<CrashDevice>) -> FileSystem {
    mount_info(dev).0
}

fn crash_once(seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let bsize = [4096u32, 1024, 512][seed as usize % 3];
    let dev = Arc::new(CrashDevice::new(48 << 20));
    let opts = MkfsOptions {
        lockproto: LockProto::LockNolock,
        bsize,
        rg_mb: 32,
        ..Default::default()
    };
    mkfs(dev.as_ref(), &opts, &mut |_, _, _| {}).unwrap();
    let mut core = Core {
        fs: Some(mount(&dev)),
    };
    let mut model = Model::default();
    let mut gen = Generator::new(seed);
    let mut kept: Vec<(String, Vec<u8>)> = Vec::new();
    let steps = rng.random_range(30..150);
    for step in 0..steps {
        let op = gen.next(&mut model);
        let _ = op.apply(&mut model);
        let _ = op.apply(&mut core);
        if step % 10 == 5 {
            let name = format!("keep{step}");
            let data: Vec<u8> = (0..rng.random_range(1..40_000))
                .map(|_| rng.random())
                .collect();
            let fs = core.fs.as_mut().unwrap();
            let a = fs
                .mknod(fs.root(), name.as_bytes(), 0o644, 0, 0, 0)
                .unwrap();
            fs.write(a.ino, 0, &data).unwrap();
            fs.sync().unwrap();
            kept.push((name, data));
        }
    }
    // The power cut: an I/O error at a random write, then the crash.
    dev.fail_after_writes(rng.random_range(0..60));
    for _ in 0..40 {
        let op = gen.next(&mut model);
        let _ = op.apply(&mut model);
        if op.apply(&mut core).is_err() {
            break;
        }
    }
    drop(core);
    dev.crash_keeping_some(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));

    let (mut fs, info) = mount_info(&dev);
    for (name, data) in &kept {
        let a = fs
            .lookup(fs.root(), name.as_bytes())
            .unwrap_or_else(|e| panic!("seed {seed}: {name} lost: {e}"));
        assert_eq!(
            &fs.read(a.ino, 0, data.len() + 1).unwrap(),
            data,
            "seed {seed}: {name} damaged"
        );
    }
    fs.unmount().unwrap();
    let img = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(img.path(), dev.durable_snapshot()).unwrap();
    if common::have("fsck.gfs2") {
        let (ok, text) = common::fsck(img.path());
        assert!(
            ok,
            "seed {seed}: fsck.gfs2 -n after crash and remount:\n{text}"
        );
    }
    info.replayed
}

#[test]
fn fsynced_files_survive_power_cuts() {
    let seeds: u64 = std::env::var("CLUSTERFS_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let replayed: usize = (0..seeds).map(crash_once).sum();
    // The cuts must land inside commits often enough to exercise replay.
    assert!(replayed > 0, "no seed needed a journal replay");
}
