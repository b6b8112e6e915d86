//! Fuzzes the PDU reader and the target's connection state machine: the
//! input is a byte stream from a hostile initiator. A valid login comes
//! first so the fuzzer reaches full feature phase quickly; every SCSI
//! command the connection asks for is run inline and completed.
#![no_main]

use std::sync::{Arc, OnceLock};

use iscsi::pdu::{self, flags, opcode, Bhs, Digests, Pdu};
use iscsi::target::{Connection, Output, Registry, Tid};
use libfuzzer_sys::fuzz_target;

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
    bhs.set_flags(if first { flags::TRANSIT | 1 } else { flags::TRANSIT | (1 << 2) | 3 });
    bhs.0[8] = 0x80;
    bhs.set_u32_at(24, 1);
    let mut p = Pdu::new(bhs);
    p.data = if first {
        pdu::keys::encode([("InitiatorName", "iqn.2026-01.fuzz:i"), ("TargetName", IQN), ("AuthMethod", "None")])
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

fuzz_target!(|data: &[u8]| {
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
});
