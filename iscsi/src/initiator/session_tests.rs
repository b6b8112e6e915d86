//! Unit tests of the full feature phase core, by RFC 7143 section.

use super::*;
use crate::pdu::{data_in, r2t, scsi_rsp};

fn outcome(params: Negotiated, max_cmd_sn: u32) -> LoginOutcome {
    LoginOutcome {
        params,
        tsih: 1,
        cmd_sn: 10,
        exp_stat_sn: 100,
        exp_cmd_sn: 10,
        max_cmd_sn,
        target_alias: None,
    }
}

fn write_req(len: usize) -> ScsiRequest {
    ScsiRequest {
        lun: 1,
        cdb: vec![0x8a; 16],
        data_out: (0..len).map(|i| i as u8).collect(),
        in_len: 0,
    }
}

fn drain<T>(s: &mut Session<T>) -> Vec<Pdu> {
    std::iter::from_fn(|| s.poll_transmit()).collect()
}

fn rsp(itt: u32, stat_sn: u32, status: u8, max_cmd_sn: u32) -> Pdu {
    let mut b = Bhs::new(opcode::SCSI_RSP);
    b.set_flags(flags::FINAL);
    b.set_itt(itt);
    b.set_u8_at(scsi_rsp::STATUS, status);
    b.set_u32_at(scsi_rsp::STAT_SN, stat_sn);
    b.set_u32_at(scsi_rsp::EXP_CMD_SN, 11);
    b.set_u32_at(scsi_rsp::MAX_CMD_SN, max_cmd_sn);
    Pdu::new(b)
}

#[test]
fn rfc7143_4_2_2_1_window_holds_commands_until_maxcmdsn_opens() {
    let mut s: Session<u32> = Session::new(&outcome(Negotiated::default(), 10));
    let a = s.submit_scsi(write_req(0), 1).unwrap();
    let _b = s.submit_scsi(write_req(0), 2).unwrap();
    let sent = drain(&mut s);
    assert_eq!(sent.len(), 1, "only CmdSN 10 fits MaxCmdSN 10");
    assert_eq!(sent[0].bhs.u32_at(scsi_cmd::CMD_SN), 10);
    assert_eq!(sent[0].bhs.u32_at(scsi_cmd::EXP_STAT_SN), 100);
    s.receive(rsp(a.0, 100, 0, 11)).unwrap();
    let sent = drain(&mut s);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].bhs.u32_at(scsi_cmd::CMD_SN), 11);
    assert_eq!(sent[0].bhs.u32_at(scsi_cmd::EXP_STAT_SN), 101);
    match s.poll_event() {
        Some(Event::Complete {
            token: 1,
            outcome: Outcome::Scsi(r),
        }) => assert_eq!(r.status, 0),
        other => panic!("{other:?}"),
    }
}

#[test]
fn rfc7143_3_2_4_2_immediate_unsolicited_and_r2t_data() {
    let p = Negotiated {
        immediate_data: true,
        initial_r2t: false,
        first_burst_length: 8192,
        max_burst_length: 16384,
        max_xmit_data_segment_length: 4096,
        ..Negotiated::default()
    };
    let mut s: Session<u32> = Session::new(&outcome(p, 100));
    let itt = s.submit_scsi(write_req(20000), 7).unwrap();
    let sent = drain(&mut s);
    // Command with 4096 immediate bytes, then one unsolicited Data-Out to 8192.
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].data.len(), 4096);
    assert_eq!(sent[0].bhs.flags() & flags::FINAL, 0);
    assert_eq!(sent[1].bhs.opcode(), opcode::DATA_OUT);
    assert_eq!(sent[1].bhs.u32_at(data_out::BUFFER_OFFSET), 4096);
    assert_eq!(sent[1].bhs.u32_at(data_out::TTT), RESERVED_TAG);
    assert!(sent[1].bhs.is_final());
    // The target asks for the rest.
    let mut b = Bhs::new(opcode::R2T);
    b.set_itt(itt.0);
    b.set_u32_at(r2t::TTT, 0x55);
    b.set_u32_at(r2t::BUFFER_OFFSET, 8192);
    b.set_u32_at(r2t::DESIRED_LEN, 20000 - 8192);
    b.set_u32_at(r2t::EXP_CMD_SN, 11);
    b.set_u32_at(r2t::MAX_CMD_SN, 100);
    s.receive(Pdu::new(b)).unwrap();
    let sent = drain(&mut s);
    assert_eq!(sent.len(), 3);
    let total: usize = sent.iter().map(|p| p.data.len()).sum();
    assert_eq!(total, 20000 - 8192);
    assert_eq!(sent[2].bhs.u32_at(data_out::DATA_SN), 2);
    assert!(sent[2].bhs.is_final() && !sent[1].bhs.is_final());
    assert_eq!(sent[1].bhs.u32_at(data_out::TTT), 0x55);
    assert_eq!(sent[1].data[0], ((8192 + 4096) % 256) as u8);
    // An R2T beyond the buffer fails the command, not the process.
    let mut b = Bhs::new(opcode::R2T);
    b.set_itt(itt.0);
    b.set_u32_at(r2t::BUFFER_OFFSET, 19000);
    b.set_u32_at(r2t::DESIRED_LEN, 5000);
    assert!(s.receive(Pdu::new(b)).is_err());
    assert!(matches!(
        s.poll_event(),
        Some(Event::Complete {
            token: 7,
            outcome: Outcome::Failed(_)
        })
    ));
}

#[test]
fn rfc7143_11_7_data_in_reassembly_with_residual_and_status() {
    let mut s: Session<u32> = Session::new(&outcome(Negotiated::default(), 100));
    let req = ScsiRequest {
        lun: 0,
        cdb: vec![0x88; 16],
        data_out: vec![],
        in_len: 1024,
    };
    let itt = s.submit_scsi(req, 3).unwrap();
    drain(&mut s);
    for (off, last) in [(256u32, true), (0, false)] {
        let mut b = Bhs::new(opcode::DATA_IN);
        b.set_itt(itt.0);
        b.set_u32_at(data_in::BUFFER_OFFSET, off);
        b.set_u32_at(data_in::EXP_CMD_SN, 11);
        b.set_u32_at(data_in::MAX_CMD_SN, 100);
        if last {
            b.set_flags(flags::FINAL | flags::STATUS | flags::UNDERFLOW);
            b.set_u32_at(data_in::RESIDUAL, 768);
            b.set_u32_at(data_in::STAT_SN, 100);
        }
        let mut p = Pdu::new(b);
        p.data = vec![off as u8 + 1; if last { 0 } else { 256 }];
        if last {
            // Deliver the status PDU after the data.
            continue;
        }
        s.receive(p).unwrap();
    }
    let mut b = Bhs::new(opcode::DATA_IN);
    b.set_itt(itt.0);
    b.set_flags(flags::FINAL | flags::STATUS | flags::UNDERFLOW);
    b.set_u32_at(data_in::RESIDUAL, 768);
    b.set_u32_at(data_in::STAT_SN, 100);
    s.receive(Pdu::new(b)).unwrap();
    match s.poll_event() {
        Some(Event::Complete {
            token: 3,
            outcome: Outcome::Scsi(r),
        }) => {
            assert_eq!(r.residual, 768);
            assert_eq!(r.data, vec![1u8; 256]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn rfc7143_11_19_nop_in_ping_is_answered_with_its_ttt_and_data() {
    let mut s: Session<u32> = Session::new(&outcome(Negotiated::default(), 100));
    let mut b = Bhs::new(opcode::NOP_IN);
    b.set_itt(RESERVED_TAG);
    b.set_u32_at(nop::TTT, 0xabc);
    b.set_u32_at(nop::EXP_CMD_SN, 10);
    b.set_u32_at(nop::MAX_CMD_SN, 100);
    let mut p = Pdu::new(b);
    p.data = vec![1, 2, 3];
    s.receive(p).unwrap();
    let out = drain(&mut s);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].bhs.opcode(), opcode::NOP_OUT);
    assert_eq!(out[0].bhs.itt(), RESERVED_TAG);
    assert_eq!(out[0].bhs.u32_at(nop::TTT), 0xabc);
    assert_eq!(out[0].data, vec![1, 2, 3]);
}

#[test]
fn rfc7143_4_2_3_lun_reset_ends_the_lun_tasks_and_unfinished_are_returned() {
    let mut s: Session<u32> = Session::new(&outcome(Negotiated::default(), 100));
    s.submit_scsi(write_req(0), 1).unwrap();
    s.submit_scsi(write_req(0), 2).unwrap();
    let tmf = s.submit_task_mgmt(task_mgmt::LOGICAL_UNIT_RESET, 1, None, 9);
    let mut b = Bhs::new(opcode::TASK_MGMT_RSP);
    b.set_itt(tmf.0);
    b.set_u8_at(task_mgmt::RESPONSE, task_mgmt::RSP_COMPLETE);
    s.receive(Pdu::new(b)).unwrap();
    let mut ended: Vec<u32> = std::iter::from_fn(|| s.poll_event())
        .map(|e| match e {
            Event::Complete { token, .. } => token,
            other => panic!("{other:?}"),
        })
        .collect();
    ended.sort();
    assert_eq!(ended, vec![1, 2, 9]);
    s.submit_scsi(write_req(10), 4).unwrap();
    s.submit_nop(5);
    let (scsi, other) = s.into_unfinished();
    assert_eq!(scsi.len(), 1);
    assert_eq!(scsi[0].0.data_out.len(), 10);
    assert_eq!(other, vec![5]);
}

#[test]
fn malformed_reject_and_unknown_opcode_are_errors_not_panics() {
    let mut s: Session<u32> = Session::new(&outcome(Negotiated::default(), 100));
    assert!(s.receive(Pdu::new(Bhs::new(opcode::REJECT))).is_err());
    assert!(s.receive(Pdu::new(Bhs::new(opcode::LOGIN_RSP))).is_err());
    let mut b = Bhs::new(opcode::DATA_IN);
    b.set_itt(999);
    assert!(s.receive(Pdu::new(b)).is_ok(), "unknown ITT is ignored");
}

proptest::proptest! {
    /// Hostile target PDUs (any opcode, flags, tags, offsets, lengths) give
    /// errors or are ignored; the core never panics and its bookkeeping stays
    /// bounded by what was submitted.
    #[test]
    fn hostile_target_pdus_never_panic(
        pdus in proptest::collection::vec(
            (0u8..64, proptest::prelude::any::<[u8; 48]>(), proptest::collection::vec(0u8..=255, 0..300)),
            1..40,
        )
    ) {
        let p = Negotiated { max_xmit_data_segment_length: 512, ..Negotiated::default() };
        let mut s: Session<u32> = Session::new(&outcome(p, 100));
        for i in 0..4 {
            let req = ScsiRequest { lun: 0, cdb: vec![0x88; 16], data_out: vec![1; 700], in_len: 512 };
            s.submit_scsi(req, i).unwrap();
        }
        for (op, raw, data) in pdus {
            let mut bhs = Bhs(raw);
            bhs.0[0] = op;
            // Aim some tags at live tasks.
            if raw[0] & 1 == 1 {
                bhs.set_itt(u32::from(raw[1] % 6));
            }
            let _ = s.receive(Pdu { bhs, ahs: vec![], data });
            while s.poll_transmit().is_some() {}
            while s.poll_event().is_some() {}
        }
        proptest::prop_assert!(s.outstanding() <= 4);
    }
}
