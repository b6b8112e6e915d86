//! Fuzz the SCSI command path: arbitrary CDBs and Data-Out against a
//! small thin LUN, from two nexuses (so reservation and unit attention
//! paths are reached). Any panic is a bug; every input must produce a
//! well-formed response.
//!
//! Run with `cargo fuzz run cdb` from `iscsi/`.

#![no_main]

use std::sync::OnceLock;

use iscsi::scsi::{status, LunOptions, NexusId, ScsiCommand, ScsiTarget};
use libfuzzer_sys::fuzz_target;

struct World {
    _dir: tempfile::TempDir,
    target: ScsiTarget,
    nexuses: [NexusId; 2],
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lun.img");
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(256 * 512))
            .expect("backing file");
        let target = ScsiTarget::new("iqn.2026-01.fuzz:t", 1);
        let opts = LunOptions {
            thin: true,
            state_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        target.add_lun(1, &path, opts).expect("add_lun");
        let nexuses = [
            target.nexus_login("iqn.fuzz:a,i,0x1", 1),
            target.nexus_login("iqn.fuzz:b,i,0x2", 1),
        ];
        World {
            _dir: dir,
            target,
            nexuses,
        }
    })
}

fuzz_target!(|input: &[u8]| {
    // Byte 0: nexus and LUN selector; byte 1: CDB length; then the CDB,
    // then the Data-Out.
    if input.len() < 2 {
        return;
    }
    let w = world();
    let nexus = w.nexuses[usize::from(input[0] & 1)];
    let lun = u64::from((input[0] >> 1) & 3);
    let cdb_len = usize::from(input[1] % 33).min(input.len() - 2);
    let (cdb, data_out) = input[2..].split_at(cdb_len);
    let cmd = ScsiCommand {
        lun,
        cdb,
        data_out,
        expected_in_len: 65536,
        tag: 1,
    };
    let r = w.target.execute(nexus, &cmd);
    match r.status {
        status::GOOD => assert!(r.sense.is_empty()),
        status::CHECK_CONDITION => {
            assert_eq!(r.sense.len(), 18);
            assert_eq!(r.sense[0] & 0x7f, 0x70);
            assert!(r.data_in.is_empty());
        }
        status::RESERVATION_CONFLICT | status::BUSY => assert!(r.data_in.is_empty()),
        s => panic!("unexpected status {s:#x}"),
    }
    let _ = w.target.data_out_expected(cdb);
});
