//! A temp-file LUN and helpers to build CDBs and check responses.

use std::path::PathBuf;
use std::sync::Arc;

use tempfile::TempDir;

use crate::scsi::{status, LunOptions, NexusId, ScsiCommand, ScsiResponse, ScsiTarget};

/// Blocks in the test LUN (1 MiB of 512-byte blocks).
pub const BLOCKS: u64 = 2048;
pub const BS: usize = 512;
pub const LUN: u64 = 1;

/// A target with one disk LUN 1 on a temp file, and one logged-in nexus.
pub struct Fixture {
    pub dir: TempDir,
    pub target: Arc<ScsiTarget>,
    pub nexus: NexusId,
    pub path: PathBuf,
}

impl Fixture {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    pub fn thin() -> Self {
        Self::with(|o| o.thin = true)
    }

    /// A fixture whose LUN options are adjusted by `f`.
    pub fn with(f: impl FnOnce(&mut LunOptions)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(BLOCKS * BS as u64).unwrap();
        let mut opts = LunOptions {
            serial: "SERIAL01".into(),
            ..Default::default()
        };
        f(&mut opts);
        let target = Arc::new(ScsiTarget::new("iqn.2026-01.test:disk", 1));
        target.add_lun(LUN, &path, opts).unwrap();
        let nexus = target.nexus_login("iqn.2026-01.test:init1,i,0x230000000001", 1);
        let fx = Fixture {
            dir,
            target,
            nexus,
            path,
        };
        fx.clear_ua(fx.nexus);
        fx
    }

    /// Log in another I_T nexus and clear its unit attentions.
    pub fn login(&self, name: &str) -> NexusId {
        let n = self
            .target
            .nexus_login(&format!("iqn.2026-01.test:{name},i,0x230000000001"), 1);
        self.clear_ua(n);
        n
    }

    /// TEST UNIT READY until GOOD.
    pub fn clear_ua(&self, n: NexusId) {
        for _ in 0..32 {
            if self.exec_on(n, LUN, &tur(), &[]).status == status::GOOD {
                return;
            }
        }
        panic!("unit attentions never cleared");
    }

    pub fn exec(&self, cdb: &[u8], data: &[u8]) -> ScsiResponse {
        self.exec_on(self.nexus, LUN, cdb, data)
    }

    pub fn exec_on(&self, n: NexusId, lun: u64, cdb: &[u8], data: &[u8]) -> ScsiResponse {
        let cmd = ScsiCommand {
            lun,
            cdb,
            data_out: data,
            expected_in_len: 1 << 20,
            tag: 7,
        };
        self.target.execute(n, &cmd)
    }

    /// Execute and require GOOD; returns Data-In.
    pub fn ok(&self, cdb: &[u8], data: &[u8]) -> Vec<u8> {
        let r = self.exec(cdb, data);
        assert_eq!(
            r.status,
            status::GOOD,
            "cdb {cdb:02x?} failed: sense {:02x?}",
            r.sense
        );
        r.data_in
    }

    pub fn write(&self, lba: u64, data: &[u8]) {
        self.ok(&write16(lba, (data.len() / BS) as u32, 0), data);
    }

    pub fn read(&self, lba: u64, blocks: u32) -> Vec<u8> {
        self.ok(&read16(lba, blocks), &[])
    }
}

/// Assert CHECK CONDITION with this sense key / ASC / ASCQ.
#[track_caller]
pub fn assert_sense(r: &ScsiResponse, key: u8, asc: u8, ascq: u8) {
    assert_eq!(
        r.status,
        status::CHECK_CONDITION,
        "expected CHECK CONDITION, got {r:02x?}"
    );
    assert_eq!(r.sense.len(), 18, "fixed sense is 18 bytes");
    assert_eq!(r.sense[0] & 0x7f, 0x70, "response code");
    assert_eq!(r.sense[7], 10, "additional sense length");
    assert_eq!(
        (r.sense[2], r.sense[12], r.sense[13]),
        (key, asc, ascq),
        "sense {:02x?}",
        r.sense
    );
}

/// The sense-key specific field pointer: (SKSV, C/D, byte).
pub fn field_pointer(r: &ScsiResponse) -> (bool, bool, u16) {
    let s = &r.sense;
    (
        s[15] & 0x80 != 0,
        s[15] & 0x40 != 0,
        u16::from_be_bytes([s[16], s[17]]),
    )
}

pub fn tur() -> Vec<u8> {
    vec![0; 6]
}

pub fn read16(lba: u64, blocks: u32) -> Vec<u8> {
    let mut c = vec![0x88; 16];
    c[1..].fill(0);
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

pub fn write16(lba: u64, blocks: u32, flags: u8) -> Vec<u8> {
    let mut c = read16(lba, blocks);
    c[0] = 0x8a;
    c[1] = flags;
    c
}

pub fn rw10(opcode: u8, lba: u32, blocks: u16, flags: u8) -> Vec<u8> {
    let mut c = vec![0u8; 10];
    c[0] = opcode;
    c[1] = flags;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[7..9].copy_from_slice(&blocks.to_be_bytes());
    c
}

pub fn rw12(opcode: u8, lba: u32, blocks: u32) -> Vec<u8> {
    let mut c = vec![0u8; 12];
    c[0] = opcode;
    c[2..6].copy_from_slice(&lba.to_be_bytes());
    c[6..10].copy_from_slice(&blocks.to_be_bytes());
    c
}

pub fn rw6(opcode: u8, lba: u32, blocks: u8) -> Vec<u8> {
    let l = lba.to_be_bytes();
    vec![opcode, l[1] & 0x1f, l[2], l[3], blocks, 0]
}

/// A block filled with `b`.
pub fn block(b: u8, blocks: usize) -> Vec<u8> {
    vec![b; blocks * BS]
}
