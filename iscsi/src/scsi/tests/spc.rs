//! SPC-4 primary commands.

use super::harness::*;
use crate::scsi::{status, tmf_response, ScsiCommand, ScsiTarget, TaskMgmt};

fn inquiry(evpd: bool, page: u8, alloc: u16) -> Vec<u8> {
    let a = alloc.to_be_bytes();
    vec![0x12, u8::from(evpd), page, a[0], a[1], 0]
}

#[test]
fn spc4_6_6_2_standard_inquiry_of_a_disk() {
    let f = Fixture::new();
    let d = f.ok(&inquiry(false, 0, 255), &[]);
    assert_eq!(d[0], 0x00, "direct access block device, qualifier 0");
    assert_eq!(d[2], 0x06, "SPC-4");
    assert_eq!(d[3] & 0x0f, 2, "response data format 2");
    assert_eq!(usize::from(d[4]) + 5, d.len(), "ADDITIONAL LENGTH");
    assert_eq!(d[7] & 0x02, 0x02, "CMDQUE");
    assert_eq!(&d[8..16], b"RHCSRS  ");
    assert_eq!(&d[16..32], b"VIRTUAL-DISK    ");
}

#[test]
fn spc4_6_6_1_inquiry_truncates_to_allocation_length() {
    let f = Fixture::new();
    assert_eq!(f.ok(&inquiry(false, 0, 5), &[]).len(), 5);
    assert_eq!(f.ok(&inquiry(true, 0x83, 4), &[]).len(), 4);
}

#[test]
fn spc4_6_6_1_page_code_without_evpd_is_invalid_field_with_pointer() {
    let f = Fixture::new();
    let r = f.exec(&inquiry(false, 0x80, 255), &[]);
    assert_sense(&r, 5, 0x24, 0x00);
    assert_eq!(field_pointer(&r), (true, true, 2));
}

#[test]
fn spc4_lun0_is_a_controller_and_missing_luns_report_qualifier_3() {
    let f = Fixture::new();
    let r = f.exec_on(f.nexus, 0, &inquiry(false, 0, 96), &[]);
    assert_eq!(r.status, status::GOOD);
    assert_eq!(r.data_in[0], 0x0c, "storage array controller");
    let r = f.exec_on(f.nexus, 9, &inquiry(false, 0, 96), &[]);
    assert_eq!(r.data_in[0], 0x7f, "qualifier 3, type 1Fh");
    let r = f.exec_on(f.nexus, 9, &tur(), &[]);
    assert_sense(&r, 5, 0x25, 0x00);
    // A controller LUN has no medium: READ CAPACITY is not a command there.
    let r = f.exec_on(f.nexus, 0, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    // Its first command after login reports POWER ON; then the opcode check.
    let r = if r.sense.get(2) == Some(&6) {
        f.exec_on(f.nexus, 0, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[])
    } else {
        r
    };
    assert_sense(&r, 5, 0x20, 0x00);
}

#[test]
fn spc4_7_8_2_vpd_supported_pages_and_serial() {
    let f = Fixture::new();
    let d = f.ok(&inquiry(true, 0x00, 255), &[]);
    assert_eq!(&d[4..], &[0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]);
    let d = f.ok(&inquiry(true, 0x80, 255), &[]);
    assert_eq!(&d[4..], b"SERIAL01");
    let r = f.exec(&inquiry(true, 0x99, 255), &[]);
    assert_sense(&r, 5, 0x24, 0);
}

/// Walk the designators of VPD 0x83: (code set, PIV/assoc/type, value).
fn designators(d: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 4;
    while at + 4 <= d.len() {
        let len = usize::from(d[at + 3]);
        out.push((d[at] & 0x0f, d[at + 1], d[at + 4..at + 4 + len].to_vec()));
        at += 4 + len;
    }
    assert_eq!(at, d.len(), "designator lengths add up");
    out
}

#[test]
fn spc4_7_8_6_device_identification_designators() {
    let f = Fixture::new();
    let d = f.ok(&inquiry(true, 0x83, 1024), &[]);
    assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])) + 4, d.len());
    let ds = designators(&d);
    let naa = ds.iter().find(|x| x.1 & 0x0f == 3).expect("NAA designator");
    assert_eq!(naa.2.len(), 16);
    assert_eq!(naa.2[0] >> 4, 6, "NAA IEEE Registered Extended");
    let t10 = ds.iter().find(|x| x.1 & 0x0f == 1).expect("T10 vendor id");
    assert!(t10.2.starts_with(b"RHCSRS  VIRTUAL-DISK    SERIAL01"));
    let rel = ds
        .iter()
        .find(|x| x.1 & 0x3f == 0x14)
        .expect("relative target port");
    assert_eq!(rel.2, vec![0, 0, 0, 1]);
    let port = ds
        .iter()
        .find(|x| x.1 & 0x3f == 0x18)
        .expect("target port name");
    assert!(port.2.starts_with(b"iqn.2026-01.test:disk,t,0x0001\0"));
    assert_eq!(port.2.len() % 4, 0);
    let dev = ds
        .iter()
        .find(|x| x.1 & 0x3f == 0x28)
        .expect("target device name");
    assert!(dev.2.starts_with(b"iqn.2026-01.test:disk\0"));
}

#[test]
fn sbc3_6_5_block_limits_and_provisioning_pages() {
    let thick = Fixture::new();
    let b0 = thick.ok(&inquiry(true, 0xb0, 255), &[]);
    assert_eq!(b0.len(), 64);
    assert_eq!(
        u32::from_be_bytes(b0[20..24].try_into().unwrap()),
        0,
        "no UNMAP on thick LUNs"
    );
    assert!(
        u64::from_be_bytes(b0[36..44].try_into().unwrap()) > 0,
        "MAXIMUM WRITE SAME LENGTH"
    );
    let b2 = thick.ok(&inquiry(true, 0xb2, 255), &[]);
    assert_eq!(b2[5] & 0xe0, 0, "no LBPU/LBPWS/LBPWS10");
    let thin = Fixture::thin();
    let b0 = thin.ok(&inquiry(true, 0xb0, 255), &[]);
    assert!(
        u32::from_be_bytes(b0[20..24].try_into().unwrap()) > 0,
        "MAXIMUM UNMAP LBA COUNT"
    );
    assert!(
        u32::from_be_bytes(b0[24..28].try_into().unwrap()) > 0,
        "MAXIMUM UNMAP BLOCK DESCRIPTOR COUNT"
    );
    let b2 = thin.ok(&inquiry(true, 0xb2, 255), &[]);
    assert_eq!(b2[5] & 0xe0, 0xe0, "LBPU, LBPWS, LBPWS10");
    assert_eq!(b2[6] & 0x07, 2, "thin provisioned");
    let b1 = thin.ok(&inquiry(true, 0xb1, 255), &[]);
    assert_eq!(&b1[4..6], &[0, 1], "non-rotating medium");
}

#[test]
fn spc4_6_33_report_luns_lists_controller_and_disks() {
    let f = Fixture::new();
    let d = f.ok(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], &[]);
    assert_eq!(&d[0..4], &[0, 0, 0, 16]);
    assert_eq!(&d[8..16], &[0; 8], "LUN 0");
    assert_eq!(&d[16..24], &[0, 1, 0, 0, 0, 0, 0, 0], "LUN 1");
    let r = f.exec(&[0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], &[]);
    assert_sense(&r, 5, 0x24, 0);
}

#[test]
fn sam5_5_14_new_nexus_sees_power_on_then_request_sense_is_clean() {
    let f = Fixture::new();
    let n = f.target.nexus_login("iqn.2026-01.test:late,i,0x1", 1);
    // INQUIRY neither reports nor clears it.
    assert_eq!(
        f.exec_on(n, LUN, &inquiry(false, 0, 36), &[]).status,
        status::GOOD
    );
    let r = f.exec_on(n, LUN, &tur(), &[]);
    assert_sense(&r, 6, 0x29, 0x00);
    assert_eq!(f.exec_on(n, LUN, &tur(), &[]).status, status::GOOD);
    let r = f.exec_on(n, LUN, &[0x03, 0, 0, 0, 252, 0], &[]);
    assert_eq!(r.status, status::GOOD);
    assert_eq!(r.data_in[2] & 0x0f, 0, "NO SENSE");
}

#[test]
fn spc4_6_39_request_sense_returns_and_clears_a_unit_attention() {
    let f = Fixture::new();
    let n = f.target.nexus_login("iqn.2026-01.test:rs,i,0x1", 1);
    let r = f.exec_on(n, LUN, &[0x03, 0, 0, 0, 252, 0], &[]);
    assert_eq!(r.status, status::GOOD);
    assert_eq!((r.data_in[0], r.data_in[2], r.data_in[12]), (0x70, 6, 0x29));
    assert_eq!(f.exec_on(n, LUN, &tur(), &[]).status, status::GOOD);
}

#[test]
fn spc4_invalid_opcode_is_20_00_with_pointer_to_byte_0() {
    let f = Fixture::new();
    let r = f.exec(&[0xe7, 0, 0, 0, 0, 0], &[]);
    assert_sense(&r, 5, 0x20, 0x00);
    let r = f.exec(&[0x9e, 0x1a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_sense(&r, 5, 0x24, 0x00);
    assert_eq!(field_pointer(&r), (true, true, 1));
}

fn rsoc(options: u8, opcode: u8, sa: u16, alloc: u32) -> Vec<u8> {
    let mut c = vec![0u8; 12];
    c[0] = 0xa3;
    c[1] = 0x0c;
    c[2] = options;
    c[3] = opcode;
    c[4..6].copy_from_slice(&sa.to_be_bytes());
    c[6..10].copy_from_slice(&alloc.to_be_bytes());
    c
}

#[test]
fn spc4_6_35_report_supported_opcodes_lists_what_is_implemented() {
    let f = Fixture::new();
    let d = f.ok(&rsoc(0, 0, 0, 65536), &[]);
    let len = u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize;
    assert_eq!(len + 4, d.len());
    let descs: Vec<&[u8]> = d[4..].chunks(8).collect();
    for want in [0x28u8, 0x2a, 0x12, 0x89, 0x5e, 0x5f, 0x83] {
        assert!(
            descs.iter().any(|x| x[0] == want),
            "opcode {want:02x} listed"
        );
    }
    // Every listed command really is accepted (not INVALID OPCODE).
    for x in &descs {
        let sa = if x[5] & 1 != 0 {
            Some(u16::from_be_bytes([x[2], x[3]]))
        } else {
            None
        };
        let one = f.ok(
            &rsoc(if sa.is_some() { 2 } else { 1 }, x[0], sa.unwrap_or(0), 512),
            &[],
        );
        assert_eq!(one[1] & 0x07, 3, "supported as the standard says");
        assert_eq!(
            u16::from_be_bytes([one[2], one[3]]),
            u16::from_be_bytes([x[6], x[7]]),
            "CDB size"
        );
        assert_eq!(one[4], x[0], "usage data starts with the opcode");
    }
    assert!(
        !descs.iter().any(|x| x[0] == 0x42),
        "no UNMAP on a thick LUN"
    );
    let thin = Fixture::thin();
    let d = thin.ok(&rsoc(0, 0, 0, 65536), &[]);
    assert!(
        d[4..].chunks(8).any(|x| x[0] == 0x42),
        "UNMAP on a thin LUN"
    );
    let none = f.ok(&rsoc(1, 0xe7, 0, 512), &[]);
    assert_eq!(none[1] & 0x07, 1, "not supported");
    let with_timeouts = f.ok(&rsoc(0x80, 0, 0, 65536), &[]);
    assert_eq!(
        with_timeouts.len() - 4,
        descs.len() * 20,
        "RCTD adds a 12-byte timeouts descriptor"
    );
}

#[test]
fn spc4_6_11_mode_sense_all_pages_and_page_controls() {
    let f = Fixture::new();
    let d = f.ok(&[0x1a, 0, 0x3f, 0, 255, 0], &[]);
    assert_eq!(usize::from(d[0]) + 1, d.len(), "MODE DATA LENGTH");
    assert_eq!(d[3], 8, "one short block descriptor");
    assert_eq!(
        u32::from_be_bytes(d[4..8].try_into().unwrap()),
        BLOCKS as u32
    );
    let mut at = 12;
    let mut codes = Vec::new();
    while at < d.len() {
        codes.push(d[at] & 0x3f);
        at += usize::from(d[at + 1]) + 2;
    }
    assert_eq!(codes, vec![0x08, 0x0a, 0x1c]);
    // Changeable values of the caching page: WCE only.
    let c = f.ok(&[0x1a, 0x08, 0x48, 0, 255, 0], &[]);
    assert_eq!(c[3], 0, "DBD");
    assert_eq!(c[4], 0x08);
    assert_eq!(c[6], 0x04);
    // MODE SENSE(10) with LLBAA: a 16-byte block descriptor.
    let d10 = f.ok(&[0x5a, 0x10, 0x0a, 0, 0, 0, 0, 1, 0, 0], &[]);
    assert_eq!(d10[4] & 1, 1, "LONGLBA");
    assert_eq!(u16::from_be_bytes([d10[6], d10[7]]), 16);
    assert_eq!(u64::from_be_bytes(d10[8..16].try_into().unwrap()), BLOCKS);
    let r = f.exec(&[0x1a, 0, 0x05, 0, 255, 0], &[]);
    assert_sense(&r, 5, 0x24, 0);
}

/// The control page as MODE SENSE(6) returns it, without the header.
fn control_page(f: &Fixture) -> Vec<u8> {
    f.ok(&[0x1a, 0x08, 0x0a, 0, 255, 0], &[])[4..].to_vec()
}

#[test]
fn spc4_6_9_mode_select_swp_write_protects_and_tells_other_nexuses() {
    let f = Fixture::new();
    let other = f.login("other");
    let mut page = control_page(&f);
    page[4] |= 0x08; // SWP
    let mut list = vec![0, 0, 0, 0];
    list.extend_from_slice(&page);
    f.ok(&[0x15, 0x10, 0, 0, list.len() as u8, 0], &list);
    let r = f.exec(&write16(0, 1, 0), &block(1, 1));
    assert_sense(&r, 7, 0x27, 0x00);
    let ms = f.ok(&[0x1a, 0x08, 0x0a, 0, 255, 0], &[]);
    assert_eq!(ms[2] & 0x80, 0x80, "WP in the device-specific parameter");
    let r = f.exec_on(other, LUN, &tur(), &[]);
    assert_sense(&r, 6, 0x2a, 0x01);
    // A bit that is not changeable is INVALID FIELD IN PARAMETER LIST.
    list[4 + 2] |= 0x04; // D_SENSE
    let r = f.exec(&[0x15, 0x10, 0, 0, list.len() as u8, 0], &list);
    assert_sense(&r, 5, 0x26, 0x00);
    assert_eq!(field_pointer(&r), (true, false, 6));
    // Clearing SWP makes the LUN writable again.
    list[4 + 2] &= !0x04;
    list[4 + 4] &= !0x08;
    f.ok(&[0x15, 0x10, 0, 0, list.len() as u8, 0], &list);
    f.write(0, &block(1, 1));
}

#[test]
fn spc4_6_9_mode_select_short_list_is_parameter_list_length_error() {
    let f = Fixture::new();
    let r = f.exec(&[0x15, 0x10, 0, 0, 3, 0], &[0, 0, 0]);
    assert_sense(&r, 5, 0x1a, 0x00);
}

#[test]
fn sam5_lun_reset_reports_bus_device_reset_to_the_other_nexuses() {
    let f = Fixture::new();
    let other = f.login("other");
    assert_eq!(
        f.target.task_mgmt(f.nexus, TaskMgmt::LunReset { lun: LUN }),
        tmf_response::COMPLETE
    );
    assert_eq!(f.exec(&tur(), &[]).status, status::GOOD, "the issuer knows");
    assert_sense(&f.exec_on(other, LUN, &tur(), &[]), 6, 0x29, 0x03);
    assert_eq!(
        f.target.task_mgmt(f.nexus, TaskMgmt::LunReset { lun: 42 }),
        tmf_response::NO_LUN
    );
    assert_eq!(
        f.target
            .task_mgmt(f.nexus, TaskMgmt::AbortTask { lun: LUN, tag: 3 }),
        tmf_response::NO_TASK
    );
}

#[test]
fn sbc3_5_25_start_stop_and_prevent_allow() {
    let f = Fixture::new();
    f.ok(&[0x1b, 0, 0, 0, 0x01, 0], &[]);
    f.ok(&[0x1e, 0, 0, 0, 0x01, 0], &[]);
    let r = f.exec(&[0x1b, 0, 0, 0, 0x02, 0], &[]);
    assert_sense(&r, 5, 0x53, 0x02);
    f.ok(&[0x1e, 0, 0, 0, 0x00, 0], &[]);
    f.ok(&[0x1b, 0, 0, 0, 0x02, 0], &[]);
}

#[test]
fn target_lun_management() {
    let f = Fixture::new();
    let infos = f.target.luns();
    assert_eq!(infos.len(), 2);
    assert_eq!(infos[0].kind, "controller");
    assert_eq!(infos[1].kind, "disk");
    assert_eq!(infos[1].size_bytes, BLOCKS * BS as u64);
    assert!(matches!(
        f.target.add_lun(LUN, &f.path, Default::default()),
        Err(crate::scsi::ScsiError::LunExists(1))
    ));
    let missing = f.dir.path().join("missing");
    assert!(matches!(
        f.target.add_lun(2, &missing, Default::default()),
        Err(crate::scsi::ScsiError::Backing { .. })
    ));
    f.target.remove_lun(LUN).unwrap();
    assert!(matches!(
        f.target.remove_lun(LUN),
        Err(crate::scsi::ScsiError::NoSuchLun(1))
    ));
    assert_sense(&f.exec(&tur(), &[]), 5, 0x25, 0);
    // LUN 0 can be a disk too, and removing it brings the controller back.
    f.target.add_lun(0, &f.path, Default::default()).unwrap();
    assert_eq!(f.target.luns()[0].kind, "disk");
    f.target.remove_lun(0).unwrap();
    assert_eq!(f.target.luns()[0].kind, "controller");
}

#[test]
fn unknown_nexus_is_busy_not_a_panic() {
    let t = ScsiTarget::new("iqn.x", 1);
    let cmd = ScsiCommand {
        lun: 0,
        cdb: &[0; 6],
        data_out: &[],
        expected_in_len: 0,
        tag: 1,
    };
    assert_eq!(
        t.execute(crate::scsi::NexusId(999), &cmd).status,
        status::BUSY
    );
}

#[test]
fn data_out_expected_follows_the_cdb() {
    let t = ScsiTarget::new("iqn.x", 1);
    assert_eq!(t.data_out_expected(&rw10(0x2a, 0, 8, 0)), Some(4096));
    assert_eq!(t.data_out_expected(&rw10(0x28, 0, 8, 0)), Some(0));
    assert_eq!(t.data_out_expected(&rw6(0x0a, 0, 0)), Some(256 * 512));
    let mut caw = vec![0u8; 16];
    caw[0] = 0x89;
    caw[13] = 2;
    assert_eq!(t.data_out_expected(&caw), Some(2048));
    assert_eq!(t.data_out_expected(&[0x2a, 0]), None);
}
