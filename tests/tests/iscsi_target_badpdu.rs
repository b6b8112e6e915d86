//! Malformed and hostile PDUs against tgtd (RFC 7143 7: error handling,
//! 11.17: Reject), sent over raw sockets: each gets the protocol's Reject
//! or a closed connection, the daemon keeps serving and other sessions are
//! unaffected. Also the R2T / Data-Out flow (11.7, 11.8) step by step.

#[path = "iscsi_target_util.rs"]
mod util;

use iscsi::pdu::{self, flags, opcode, reject, Bhs, Pdu};
use util::{Raw, Tgtd};

const IQN: &str = "iqn.2026-01.test.rhcs:bad";
const INITIATOR: &str = "iqn.2026-01.test:raw";

fn target() -> Tgtd {
    let t = Tgtd::start();
    t.tutorial_target(1, IQN);
    t
}

fn logged_in(t: &Tgtd, keys: &[(&str, &str)]) -> Raw {
    let mut raw = Raw::connect(t.port);
    raw.login_normal(INITIATOR, IQN, keys);
    raw.clear_unit_attention(1);
    raw
}

fn expect_reject(raw: &mut Raw, reason: u8, offending: &Bhs) {
    let rsp = raw.recv().expect("Reject");
    assert_eq!(
        rsp.bhs.opcode(),
        opcode::REJECT,
        "expected a Reject, got {:?}",
        rsp.bhs
    );
    assert_eq!(rsp.bhs.u8_at(reject::REASON), reason);
    // The header as sent: everything but the lengths, which encode fills.
    assert_eq!(
        &rsp.data[..4],
        &offending.0[..4],
        "Reject must carry the offending header"
    );
    assert_eq!(
        &rsp.data[8..48],
        &offending.0[8..],
        "Reject must carry the offending header"
    );
}

#[test]
fn pdu_other_than_login_before_login_is_rejected_then_closed() {
    let t = target();
    let mut raw = Raw::connect(t.port);
    let nop = raw.nop_out(b"");
    raw.send(&nop);
    expect_reject(&mut raw, reject::PROTOCOL_ERROR, &nop.bhs);
    assert!(raw.closed_by_target());
}

#[test]
fn oversized_data_segment_closes_the_connection() {
    let t = target();
    let mut raw = Raw::connect(t.port);
    let mut p = raw.login_pdu(0, 1, true, &[("InitiatorName", INITIATOR)]);
    // Announce 1 MiB of login text (the limit is 8192) and send only the header.
    p.bhs.0[5..8].copy_from_slice(&[0x10, 0, 0]);
    raw.send_bytes(&p.bhs.0);
    assert!(raw.closed_by_target());
}

#[test]
fn header_digest_mismatch_closes_the_connection() {
    let t = target();
    let mut raw = logged_in(&t, &[("HeaderDigest", "CRC32C"), ("DataDigest", "None")]);
    assert!(raw.digests.header && !raw.digests.data);
    assert_eq!(raw.ping(b"ok"), b"ok");
    let nop = raw.nop_out(b"");
    let mut wire = nop.encode(raw.digests);
    wire[48] ^= 0xff;
    raw.send_bytes(&wire);
    assert!(raw.closed_by_target());
}

#[test]
fn data_digest_mismatch_is_rejected_and_the_data_dropped() {
    let t = target();
    let mut raw = logged_in(&t, &[("HeaderDigest", "CRC32C"), ("DataDigest", "CRC32C")]);
    assert!(raw.digests.header && raw.digests.data);
    let nop = raw.nop_out(b"abcdefgh");
    let mut wire = nop.encode(raw.digests);
    let n = wire.len();
    wire[n - 1] ^= 0x5a;
    raw.send_bytes(&wire);
    expect_reject(&mut raw, reject::DATA_DIGEST_ERROR, &nop.bhs);
    assert_eq!(raw.ping(b"after"), b"after");
}

#[test]
fn immediate_data_on_a_read_and_bad_ahs_are_rejected() {
    let t = target();
    let mut raw = logged_in(&t, &[]);
    let mut read = raw.scsi_cmd(1, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0], 512, 0);
    read.data = vec![1, 2, 3, 4];
    raw.send(&read);
    expect_reject(&mut raw, reject::PROTOCOL_ERROR, &read.bhs);
    // The rejected command's CmdSN was consumed; resynchronise on the target's.
    let mut bad_ahs = raw.scsi_cmd(1, &[0x00; 6], 0, 0);
    bad_ahs.ahs = vec![0, 200, 1, 0];
    raw.send(&bad_ahs);
    let rsp = raw.recv().expect("Reject");
    assert_eq!(rsp.bhs.opcode(), opcode::REJECT);
    assert_eq!(rsp.bhs.u8_at(reject::REASON), reject::INVALID_PDU_FIELD);
    assert_eq!(raw.ping(b"alive"), b"alive");
}

#[test]
fn unknown_opcode_and_snack_are_rejected_in_full_feature_phase() {
    let t = target();
    let mut raw = logged_in(&t, &[]);
    let mut bhs = Bhs::new(0x1c);
    bhs.set_immediate(true);
    bhs.set_itt(99);
    raw.send(&Pdu::new(bhs.clone()));
    expect_reject(&mut raw, reject::COMMAND_NOT_SUPPORTED, &bhs);
    let mut snack = Bhs::new(opcode::SNACK_REQ);
    snack.set_flags(flags::FINAL);
    snack.set_itt(100);
    raw.send(&Pdu::new(snack.clone()));
    expect_reject(&mut raw, reject::SNACK_REJECT, &snack);
    assert_eq!(raw.ping(b"x"), b"x");
}

#[test]
fn data_out_for_no_task_is_ignored() {
    let t = target();
    let mut raw = logged_in(&t, &[]);
    let mut bhs = Bhs::new(opcode::DATA_OUT);
    bhs.set_flags(flags::FINAL);
    bhs.set_itt(0xdead);
    bhs.set_u32_at(pdu::data_out::TTT, 0x1234);
    let mut p = Pdu::new(bhs);
    p.data = vec![0; 512];
    raw.send(&p);
    assert_eq!(raw.ping(b"fine"), b"fine");
}

/// RFC 7143 11.8: with InitialR2T=Yes and no immediate data the target
/// asks for every byte with R2Ts of at most MaxBurstLength.
#[test]
fn write_is_solicited_by_r2ts_and_reads_back() {
    let t = target();
    let mut raw = logged_in(
        &t,
        &[
            ("InitialR2T", "Yes"),
            ("ImmediateData", "No"),
            ("MaxBurstLength", "1024"),
            ("FirstBurstLength", "512"),
            ("MaxRecvDataSegmentLength", "512"),
        ],
    );
    let blocks = 5u16;
    let payload: Vec<u8> = (0..blocks as usize * 512)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[2..6].copy_from_slice(&10u32.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    let cmd = raw.scsi_cmd(1, &cdb, 0, payload.len() as u32);
    let itt = cmd.bhs.itt();
    raw.send(&cmd);
    let mut solicited = 0;
    let mut r2t_sn = 0;
    loop {
        let rsp = raw.recv().expect("R2T or response");
        if rsp.bhs.opcode() == opcode::SCSI_RSP {
            assert_eq!(rsp.bhs.u8_at(pdu::scsi_rsp::STATUS), 0, "write failed");
            break;
        }
        assert_eq!(rsp.bhs.opcode(), opcode::R2T);
        assert_eq!(rsp.bhs.itt(), itt);
        assert_eq!(rsp.bhs.u32_at(pdu::r2t::R2T_SN), r2t_sn);
        r2t_sn += 1;
        let offset = rsp.bhs.u32_at(pdu::r2t::BUFFER_OFFSET) as usize;
        let len = rsp.bhs.u32_at(pdu::r2t::DESIRED_LEN) as usize;
        assert!(len <= 1024, "R2T longer than MaxBurstLength");
        assert_eq!(offset, solicited, "R2Ts out of order");
        let ttt = rsp.bhs.u32_at(pdu::r2t::TTT);
        for (sn, chunk) in payload[offset..offset + len].chunks(512).enumerate() {
            let mut bhs = Bhs::new(opcode::DATA_OUT);
            let pos = offset + sn * 512;
            bhs.set_flags(if pos + chunk.len() == offset + len {
                flags::FINAL
            } else {
                0
            });
            bhs.set_lun(1);
            bhs.set_itt(itt);
            bhs.set_u32_at(pdu::data_out::TTT, ttt);
            bhs.set_u32_at(pdu::data_out::DATA_SN, sn as u32);
            bhs.set_u32_at(pdu::data_out::BUFFER_OFFSET, pos as u32);
            let mut p = Pdu::new(bhs);
            p.data = chunk.to_vec();
            raw.send(&p);
        }
        solicited += len;
    }
    assert_eq!(solicited, payload.len());
    assert_eq!(r2t_sn, 3, "5 blocks with MaxBurstLength 1024 need 3 R2Ts");
    let (data, status) = raw.read10(1, 10, blocks);
    assert_eq!(status, 0);
    assert_eq!(data, payload);
}

/// Hostile peers (garbage, truncated headers, huge lengths, floods of
/// rejects) on their own connections while a good session keeps reading.
#[test]
fn hostile_connections_leave_other_sessions_and_the_daemon_working() {
    let mut t = target();
    let mut good = logged_in(&t, &[]);
    let port = t.port;
    let hostile: Vec<_> = (0..4u8)
        .map(|k| {
            std::thread::spawn(move || {
                use std::io::Write;
                let mut raw = Raw::connect(port);
                // The target may close first: write errors are expected.
                match k {
                    0 => drop(raw.stream.write_all(&[0xffu8; 4096])),
                    1 => drop(raw.stream.write_all(&[0x03u8; 30])),
                    2 => {
                        let mut b = [0u8; 48];
                        b[0] = 0x43;
                        b[4] = 0xff;
                        b[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
                        drop(raw.stream.write_all(&b));
                    }
                    _ => {
                        raw.login_normal("iqn.2026-01.test:hostile", IQN, &[]);
                        for op in [0x07u8, 0x08, 0x0f, 0x1e, 0x3f] {
                            let mut bhs = Bhs::new(op);
                            bhs.set_immediate(true);
                            drop(raw.stream.write_all(&Pdu::new(bhs).encode(raw.digests)));
                        }
                    }
                }
                drop(raw);
            })
        })
        .collect();
    for i in 0..20u32 {
        let (data, status) = good.read10(1, i, 8);
        assert_eq!((data.len(), status), (4096, 0));
        assert_eq!(good.ping(&i.to_be_bytes()), i.to_be_bytes());
    }
    for h in hostile {
        h.join().expect("hostile client thread");
    }
    assert!(t.alive(), "tgtd died");
    // A second session of the same initiator (another ISID, so no
    // reinstatement of the good one).
    let mut fresh = Raw::connect(t.port);
    fresh.isid[5] ^= 0xff;
    fresh.login_normal(INITIATOR, IQN, &[]);
    assert_eq!(fresh.ping(b"fresh"), b"fresh");
    assert_eq!(good.ping(b"good"), b"good");
}

/// Writes announced but never sent cannot pin unbounded memory: past the
/// session's budget (256 MiB in collection) a write is answered BUSY.
#[test]
fn writes_beyond_the_session_budget_are_busy() {
    let t = target();
    let mut raw = logged_in(&t, &[]);
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[7..9].copy_from_slice(&0xffffu16.to_be_bytes());
    let edtl = 60 << 20;
    let mut last = 0;
    for _ in 0..5 {
        let cmd = raw.scsi_cmd(1, &cdb, 0, edtl);
        last = cmd.bhs.itt();
        raw.send(&cmd);
    }
    loop {
        let rsp = raw.recv().expect("R2T or response");
        if rsp.bhs.opcode() == opcode::SCSI_RSP {
            assert_eq!(rsp.bhs.itt(), last, "only the write over budget ends");
            assert_eq!(rsp.bhs.u8_at(pdu::scsi_rsp::STATUS), 0x08, "BUSY");
            break;
        }
        assert_eq!(rsp.bhs.opcode(), opcode::R2T);
    }
    assert_eq!(raw.ping(b"ok"), b"ok");
}

fn write10_cdb(lba: u32, blocks: u16) -> [u8; 10] {
    let mut cdb = [0u8; 10];
    cdb[0] = 0x2a;
    cdb[2..6].copy_from_slice(&lba.to_be_bytes());
    cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
    cdb
}

fn data_out(itt: u32, ttt: u32, data_sn: u32, offset: usize, data: &[u8], last: bool) -> Pdu {
    let mut bhs = Bhs::new(opcode::DATA_OUT);
    bhs.set_flags(if last { flags::FINAL } else { 0 });
    bhs.set_lun(1);
    bhs.set_itt(itt);
    bhs.set_u32_at(pdu::data_out::TTT, ttt);
    bhs.set_u32_at(pdu::data_out::DATA_SN, data_sn);
    bhs.set_u32_at(pdu::data_out::BUFFER_OFFSET, offset as u32);
    let mut p = Pdu::new(bhs);
    p.data = data.to_vec();
    p
}

/// RFC 7143 11.7 / 13.11-13.14: with InitialR2T=No the initiator sends
/// immediate data and unsolicited Data-Out up to FirstBurstLength; the
/// target solicits only the rest.
#[test]
fn immediate_and_unsolicited_data_then_r2t_for_the_rest() {
    let t = target();
    t.adm_ok(&[
        "--op",
        "update",
        "--mode",
        "target",
        "--tid",
        "1",
        "--name",
        "InitialR2T",
        "--value",
        "No",
    ]);
    let mut raw = logged_in(
        &t,
        &[
            ("InitialR2T", "No"),
            ("ImmediateData", "Yes"),
            ("FirstBurstLength", "1024"),
            ("MaxBurstLength", "4096"),
        ],
    );
    let payload: Vec<u8> = (0..3 * 512).map(|i| (i % 241) as u8).collect();
    let mut cmd = raw.scsi_cmd(1, &write10_cdb(40, 3), 0, payload.len() as u32);
    cmd.data = payload[..512].to_vec();
    let itt = cmd.bhs.itt();
    raw.send(&cmd);
    raw.send(&data_out(
        itt,
        pdu::RESERVED_TAG,
        0,
        512,
        &payload[512..1024],
        true,
    ));
    let r2t = raw.recv().expect("R2T");
    assert_eq!(r2t.bhs.opcode(), opcode::R2T);
    assert_eq!(
        r2t.bhs.u32_at(pdu::r2t::BUFFER_OFFSET),
        1024,
        "unsolicited part not solicited again"
    );
    assert_eq!(r2t.bhs.u32_at(pdu::r2t::DESIRED_LEN), 512);
    let ttt = r2t.bhs.u32_at(pdu::r2t::TTT);
    raw.send(&data_out(itt, ttt, 0, 1024, &payload[1024..], true));
    let rsp = raw.recv().expect("SCSI Response");
    assert_eq!(rsp.bhs.opcode(), opcode::SCSI_RSP);
    assert_eq!(rsp.bhs.u8_at(pdu::scsi_rsp::STATUS), 0);
    let (data, status) = raw.read10(1, 40, 3);
    assert_eq!((status, data), (0, payload));
}

/// RFC 7143 11.5.1: ABORT TASK of a write waiting for Data-Out ends it
/// without a response; its late data is ignored; the session goes on.
#[test]
fn abort_task_of_a_pending_write() {
    let t = target();
    let mut raw = logged_in(&t, &[("InitialR2T", "Yes"), ("ImmediateData", "No")]);
    let cmd = raw.scsi_cmd(1, &write10_cdb(0, 8), 0, 4096);
    let itt = cmd.bhs.itt();
    let cmd_sn = cmd.bhs.u32_at(pdu::scsi_cmd::CMD_SN);
    raw.send(&cmd);
    let r2t = raw.recv().expect("R2T");
    assert_eq!(r2t.bhs.opcode(), opcode::R2T);
    let mut bhs = Bhs::new(opcode::TASK_MGMT_REQ);
    bhs.set_immediate(true);
    bhs.set_flags(flags::FINAL | pdu::task_mgmt::ABORT_TASK);
    bhs.set_lun(1);
    bhs.set_itt(0x4000);
    bhs.set_u32_at(pdu::task_mgmt::RTT, itt);
    bhs.set_u32_at(pdu::task_mgmt::CMD_SN, raw.cmd_sn);
    bhs.set_u32_at(pdu::task_mgmt::REF_CMD_SN, cmd_sn);
    raw.send(&Pdu::new(bhs));
    let rsp = raw.recv().expect("TMF response");
    assert_eq!(rsp.bhs.opcode(), opcode::TASK_MGMT_RSP);
    assert_eq!(
        rsp.bhs.u8_at(pdu::task_mgmt::RESPONSE),
        pdu::task_mgmt::RSP_COMPLETE
    );
    let ttt = r2t.bhs.u32_at(pdu::r2t::TTT);
    raw.send(&data_out(itt, ttt, 0, 0, &[0u8; 4096], true));
    assert_eq!(raw.ping(b"after abort"), b"after abort");
}
