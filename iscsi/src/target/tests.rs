//! The connection state machine driven without sockets, by RFC 7143
//! section: login (6, 12), CmdSN ordering (4.2.2.1), Data-In and phase
//! collapse (11.7.4), NOP (11.18), and random PDUs after login.

use std::net::SocketAddr;
use std::sync::Arc;

use proptest::prelude::*;

use crate::pdu::{self, flags, login, opcode, Bhs, Pdu};
use crate::scsi::LunOptions;

use super::conn::{Connection, OutPdu, Output};
use super::registry::{Registry, Tid};

const IQN: &str = "iqn.2026-01.test:unit";

struct Fixture {
    conn: Connection,
    _file: tempfile::NamedTempFile,
}

fn fixture() -> Fixture {
    let file = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(file.path(), &data).unwrap();
    let r = Registry::new();
    assert!(r.add_target(Tid(1), IQN));
    let t = r.target(Tid(1)).unwrap();
    t.scsi
        .add_lun(1, file.path(), LunOptions::default())
        .unwrap();
    t.access.write().acl_addresses.push("ALL".into());
    let addr: SocketAddr = "127.0.0.1:3260".parse().unwrap();
    Fixture {
        conn: Connection::new(r, addr, addr, Arc::new(|| {})),
        _file: file,
    }
}

/// Runs every Execute inline and returns the PDUs sent.
fn pump(conn: &mut Connection) -> Vec<OutPdu> {
    let mut sent = Vec::new();
    for _ in 0..100 {
        let outputs = conn.take_outputs();
        if outputs.is_empty() {
            break;
        }
        for o in outputs {
            match o {
                Output::Send(p) => sent.push(p),
                Output::Execute(task) => {
                    let r = task.run();
                    conn.complete(task.itt, r);
                }
                Output::SetLimits { .. } | Output::Close | Output::Delay(_) => {}
            }
        }
    }
    sent
}

fn login_req(csg: u8, nsg: u8, keys: &[(&str, &str)]) -> Pdu {
    let mut bhs = Bhs::new(opcode::LOGIN_REQ);
    bhs.set_immediate(true);
    bhs.set_flags(flags::TRANSIT | (csg << 2) | nsg);
    bhs.0[login::ISID] = 0x80;
    bhs.set_u32_at(login::CMD_SN, 10);
    let mut p = Pdu::new(bhs);
    p.data = pdu::keys::encode(keys.iter().copied());
    p
}

fn status(p: &OutPdu) -> (u8, u8) {
    (
        p.bhs.u8_at(login::STATUS_CLASS),
        p.bhs.u8_at(login::STATUS_DETAIL),
    )
}

fn log_in(f: &mut Fixture, mrdsl: &str) {
    f.conn.receive(Ok(login_req(
        0,
        1,
        &[
            ("InitiatorName", "iqn.2026-01.test:i"),
            ("TargetName", IQN),
            ("AuthMethod", "None"),
        ],
    )));
    let sent = pump(&mut f.conn);
    assert_eq!(status(&sent[0]), (0, 0));
    f.conn
        .receive(Ok(login_req(1, 3, &[("MaxRecvDataSegmentLength", mrdsl)])));
    let sent = pump(&mut f.conn);
    assert_eq!(status(&sent[0]), (0, 0));
    assert_ne!(
        sent[0].bhs.u16_at(login::TSIH),
        0,
        "TSIH assigned on the last response"
    );
    assert!(f.conn.tsih().is_some());
}

fn read10(cmd_sn: u32, itt: u32, lba: u32, blocks: u16) -> Pdu {
    let mut bhs = Bhs::new(opcode::SCSI_CMD);
    bhs.set_flags(flags::FINAL | flags::READ | 1);
    bhs.set_lun(1);
    bhs.set_itt(itt);
    bhs.set_u32_at(pdu::scsi_cmd::EDTL, u32::from(blocks) * 512);
    bhs.set_u32_at(pdu::scsi_cmd::CMD_SN, cmd_sn);
    bhs.0[32] = 0x28;
    bhs.0[34..38].copy_from_slice(&lba.to_be_bytes());
    bhs.0[39..41].copy_from_slice(&blocks.to_be_bytes());
    Pdu::new(bhs)
}

#[test]
fn rfc7143_6_login_to_unknown_target_is_not_found() {
    let mut f = fixture();
    f.conn.receive(Ok(login_req(
        0,
        1,
        &[
            ("InitiatorName", "iqn.2026-01.test:i"),
            ("TargetName", "iqn.2026-01.test:none"),
        ],
    )));
    let sent = pump(&mut f.conn);
    assert_eq!(status(&sent[0]), (2, 3));
    assert!(f.conn.is_closed());
}

#[test]
fn rfc7143_11_7_data_in_split_by_max_xmit_with_status_in_the_last() {
    let mut f = fixture();
    log_in(&mut f, "1024");
    // The first command of a nexus reports the power-on unit attention.
    f.conn.receive(Ok(read10(10, 1, 0, 1)));
    let sent = pump(&mut f.conn);
    assert_eq!(sent.last().unwrap().bhs.opcode(), opcode::SCSI_RSP);
    f.conn.receive(Ok(read10(11, 2, 2, 8)));
    let sent = pump(&mut f.conn);
    assert_eq!(sent.len(), 4, "4096 bytes in 1024-byte Data-In PDUs");
    let mut data = Vec::new();
    for (i, p) in sent.iter().enumerate() {
        assert_eq!(p.bhs.opcode(), opcode::DATA_IN);
        assert_eq!(p.bhs.u32_at(pdu::data_in::DATA_SN), i as u32);
        assert_eq!(p.bhs.u32_at(pdu::data_in::BUFFER_OFFSET), (i * 1024) as u32);
        let last = i == 3;
        assert_eq!(
            p.bhs.flags() & flags::STATUS != 0,
            last,
            "S bit only on the last"
        );
        data.extend_from_slice(p.data.as_slice());
    }
    let expected: Vec<u8> = (1024..1024 + 4096).map(|i| (i % 253) as u8).collect();
    assert_eq!(data, expected);
}

#[test]
fn rfc7143_4_2_2_1_commands_run_in_cmdsn_order_and_outside_window_dropped() {
    let mut f = fixture();
    log_in(&mut f, "262144");
    f.conn.receive(Ok(read10(11, 2, 0, 1)));
    assert!(pump(&mut f.conn).is_empty(), "CmdSN 11 waits for 10");
    f.conn.receive(Ok(read10(100_000, 3, 0, 1)));
    assert!(pump(&mut f.conn).is_empty(), "outside the window: dropped");
    f.conn.receive(Ok(read10(10, 1, 0, 1)));
    let sent = pump(&mut f.conn);
    let itts: Vec<u32> = sent.iter().map(|p| p.bhs.itt()).collect();
    assert_eq!(itts.first(), Some(&1));
    assert_eq!(itts.last(), Some(&2));
    let exp_cmd_sn = sent.last().unwrap().bhs.u32_at(28);
    assert_eq!(exp_cmd_sn, 12);
}

#[test]
fn rfc7143_11_18_nop_out_ping_is_echoed() {
    let mut f = fixture();
    log_in(&mut f, "8192");
    let mut bhs = Bhs::new(opcode::NOP_OUT);
    bhs.set_immediate(true);
    bhs.set_flags(flags::FINAL);
    bhs.set_itt(5);
    bhs.set_u32_at(pdu::nop::TTT, pdu::RESERVED_TAG);
    let mut p = Pdu::new(bhs);
    p.data = b"ping-data".to_vec();
    f.conn.receive(Ok(p));
    let sent = pump(&mut f.conn);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].bhs.opcode(), opcode::NOP_IN);
    assert_eq!(sent[0].bhs.itt(), 5);
    assert_eq!(sent[0].data.as_slice(), b"ping-data");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any header and data after a good login: never a panic, and every
    /// PDU the target sends is a target opcode.
    #[test]
    fn random_pdus_after_login_never_panic(
        pdus in proptest::collection::vec(
            (any::<[u8; 48]>(), proptest::collection::vec(any::<u8>(), 0..600)),
            1..12,
        )
    ) {
        let mut f = fixture();
        log_in(&mut f, "512");
        for (header, data) in pdus {
            let mut bhs = Bhs(header);
            bhs.0[4] = 0;
            let mut p = Pdu::new(bhs);
            p.data = data;
            f.conn.receive(Ok(p));
            for sent in pump(&mut f.conn) {
                prop_assert!(sent.bhs.opcode() >= 0x20, "initiator opcode sent: {:?}", sent.bhs);
            }
        }
        f.conn.close();
        prop_assert!(f.conn.is_closed());
    }
}

fn abort_task(itt: u32, rtt: u32, ref_cmd_sn: u32) -> Pdu {
    let mut bhs = Bhs::new(opcode::TASK_MGMT_REQ);
    bhs.set_immediate(true);
    bhs.set_flags(flags::FINAL | pdu::task_mgmt::ABORT_TASK);
    bhs.set_lun(1);
    bhs.set_itt(itt);
    bhs.set_u32_at(pdu::task_mgmt::RTT, rtt);
    bhs.set_u32_at(pdu::task_mgmt::REF_CMD_SN, ref_cmd_sn);
    Pdu::new(bhs)
}

/// RFC 7143 11.5.1: a completed task "does not exist"; a task whose CmdSN
/// has not arrived counts as received, the function is complete and the
/// CmdSN window moves past it.
#[test]
fn rfc7143_11_5_1_abort_task_of_completed_and_unreceived_tasks() {
    let mut f = fixture();
    log_in(&mut f, "262144");
    f.conn.receive(Ok(read10(10, 1, 0, 1)));
    pump(&mut f.conn);
    f.conn.receive(Ok(abort_task(50, 1, 10)));
    let sent = pump(&mut f.conn);
    assert_eq!(
        sent[0].bhs.u8_at(pdu::task_mgmt::RESPONSE),
        pdu::task_mgmt::RSP_NO_TASK
    );
    f.conn.receive(Ok(abort_task(51, 2, 11)));
    let sent = pump(&mut f.conn);
    assert_eq!(
        sent[0].bhs.u8_at(pdu::task_mgmt::RESPONSE),
        pdu::task_mgmt::RSP_COMPLETE
    );
    assert_eq!(
        sent[0].bhs.u32_at(28),
        12,
        "ExpCmdSN moved past the aborted CmdSN"
    );
    f.conn.receive(Ok(read10(12, 3, 0, 1)));
    let sent = pump(&mut f.conn);
    assert_eq!(sent.last().unwrap().bhs.itt(), 3, "the next command runs");
}
