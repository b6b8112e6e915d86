//! The iscsi fuzz targets' harness: `cargo fuzz` runs these functions
//! (`fuzz_targets/`), and `iscsi/tests/fuzz_corpus.rs` replays the committed
//! corpora and regressions through them in CI.

pub use cdb::run as cdb;
pub use pdu::run as pdu;

/// A fuzz target: its name and the function `cargo fuzz` calls.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[Target] = &[("pdu", pdu), ("cdb", cdb)];

mod pdu {
    //! Fuzzes the PDU reader and the target's connection state machine: the
    //! input is a byte stream from a hostile initiator. A valid login comes
    //! first so the fuzzer reaches full feature phase quickly; every SCSI
    //! command the connection asks for is run inline and completed.

    use std::sync::{Arc, OnceLock};

    use iscsi::pdu::{self, flags, opcode, Bhs, Digests, Pdu};
    use iscsi::target::{Connection, Output, Registry, Tid};

    const IQN: &str = "iqn.2026-01.fuzz:t";

    fn registry() -> Arc<Registry> {
        static R: OnceLock<(Arc<Registry>, tempfile::NamedTempFile)> = OnceLock::new();
        let (r, _) = R.get_or_init(|| {
            let file = tempfile::NamedTempFile::new().unwrap();
            file.as_file().set_len(1 << 20).unwrap();
            let r = Registry::new();
            assert!(r.add_target(Tid(1), IQN));
            let t = r.target(Tid(1)).unwrap();
            t.scsi.add_lun(1, file.path(), Default::default()).unwrap();
            t.access.write().acl_addresses.push("ALL".into());
            (r, file)
        });
        r.clone()
    }

    fn login_pdu(first: bool) -> Pdu {
        let mut bhs = Bhs::new(opcode::LOGIN_REQ);
        bhs.set_immediate(true);
        bhs.set_flags(if first {
            flags::TRANSIT | 1
        } else {
            flags::TRANSIT | (1 << 2) | 3
        });
        bhs.0[8] = 0x80;
        bhs.set_u32_at(24, 1);
        let mut p = Pdu::new(bhs);
        p.data = if first {
            pdu::keys::encode([
                ("InitiatorName", "iqn.2026-01.fuzz:i"),
                ("TargetName", IQN),
                ("AuthMethod", "None"),
            ])
        } else {
            pdu::keys::encode([("MaxRecvDataSegmentLength", "512")])
        };
        p
    }

    fn drain(conn: &mut Connection) {
        for _ in 0..64 {
            let outputs = conn.take_outputs();
            if outputs.is_empty() {
                return;
            }
            for o in outputs {
                if let Output::Execute(task) = o {
                    let response = task.run();
                    conn.complete(task.itt, response);
                }
            }
        }
    }

    pub fn run(data: &[u8]) {
        let addr = "127.0.0.1:3260".parse().unwrap();
        let mut conn = Connection::new(registry(), addr, addr, Arc::new(|| {}));
        let skip_login = data.first().is_some_and(|b| b & 1 == 1);
        if !skip_login {
            conn.receive(Ok(login_pdu(true)));
            conn.receive(Ok(login_pdu(false)));
            drain(&mut conn);
        }
        let mut input = data.get(1..).unwrap_or_default();
        while !input.is_empty() && !conn.is_closed() {
            let (digests, max) = conn.read_limits();
            let read = Pdu::read_from(&mut input, digests, max);
            let stop = read.is_err();
            conn.receive(read);
            drain(&mut conn);
            if stop {
                break;
            }
        }
        conn.close();
        let _ = Digests::default();
    }
}

mod cdb {
    //! Fuzz the SCSI command path: arbitrary CDBs and Data-Out against a
    //! small thin LUN, from two nexuses (so reservation and unit attention
    //! paths are reached). Any panic is a bug; every input must produce a
    //! well-formed response.
    //!
    //! Run with `cargo fuzz run cdb` from `iscsi/`.

    use std::sync::OnceLock;

    use iscsi::scsi::{status, LunOptions, NexusId, ScsiCommand, ScsiTarget};

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

    pub fn run(input: &[u8]) {
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
    }
}
