//! Seeded random operations against the core and a reference model, with
//! remounts, then fsck.gfs2 -n. More seeds/steps: CLUSTERFS_SEEDS,
//! CLUSTERFS_STEPS.

mod common;

use common::core_target::Core;
use common::model::{self};
use common::{assert_fsck_clean, image, mount};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn exercise(seed: u64, bsize: u32) {
    let steps = env("CLUSTERFS_STEPS", 250);
    let img = image(64, bsize);
    let path = img.path().to_path_buf();
    let mut core = Core {
        fs: Some(mount(&path)),
    };
    let mut remount = |step: usize, core: &mut Core| {
        if step % 80 == 79 {
            core.fs.take().unwrap().unmount().unwrap();
            assert_fsck_clean(&path);
            core.fs = Some(mount(&path));
        }
    };
    model::run(seed, steps, &mut core, &mut remount);
    core.fs.take().unwrap().unmount().unwrap();
    assert_fsck_clean(&path);
}

#[test]
fn random_operations_match_the_model() {
    let seeds = env("CLUSTERFS_SEEDS", 3) as u64;
    for seed in 0..seeds {
        let bsize = [4096, 512, 1024, 2048][seed as usize % 4];
        exercise(seed, bsize);
    }
}
