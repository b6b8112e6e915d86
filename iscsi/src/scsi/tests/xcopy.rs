//! SPC-4 6.4 EXTENDED COPY (LID1) and 6.26 RECEIVE COPY RESULTS.

use super::harness::*;
use crate::scsi::status;

/// The NAA designator of LUN 1 from VPD 0x83.
fn naa(f: &Fixture) -> Vec<u8> {
    let d = f.ok(&[0x12, 1, 0x83, 1, 0, 0], &[]);
    assert_eq!(d[5] & 0x0f, 3, "first designator is NAA");
    d[8..8 + usize::from(d[7])].to_vec()
}

fn target_desc(naa: &[u8], byte1: u8, kind: u8) -> Vec<u8> {
    let mut t = vec![0u8; 32];
    t[0] = kind;
    t[1] = byte1;
    t[4] = 0x01;
    t[5] = 0x03;
    t[7] = naa.len() as u8;
    t[8..8 + naa.len()].copy_from_slice(naa);
    t[29..32].copy_from_slice(&[0, 2, 0]); // 512-byte blocks
    t
}

fn segment(src: u16, dst: u16, blocks: u16, src_lba: u64, dst_lba: u64) -> Vec<u8> {
    let mut s = vec![0u8; 28];
    s[0] = 0x02;
    s[2..4].copy_from_slice(&24u16.to_be_bytes());
    s[4..6].copy_from_slice(&src.to_be_bytes());
    s[6..8].copy_from_slice(&dst.to_be_bytes());
    s[10..12].copy_from_slice(&blocks.to_be_bytes());
    s[12..20].copy_from_slice(&src_lba.to_be_bytes());
    s[20..28].copy_from_slice(&dst_lba.to_be_bytes());
    s
}

fn param_list(list_id: u8, targets: &[Vec<u8>], segments: &[Vec<u8>]) -> Vec<u8> {
    let t: Vec<u8> = targets.concat();
    let s: Vec<u8> = segments.concat();
    let mut p = vec![0u8; 16];
    p[0] = list_id;
    p[2..4].copy_from_slice(&(t.len() as u16).to_be_bytes());
    p[8..12].copy_from_slice(&(s.len() as u32).to_be_bytes());
    p.extend_from_slice(&t);
    p.extend_from_slice(&s);
    p
}

fn xcopy_cdb(len: usize) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = 0x83;
    c[10..14].copy_from_slice(&(len as u32).to_be_bytes());
    c
}

fn rcr(sa: u8, list_id: u8) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = 0x84;
    c[1] = sa;
    c[2] = list_id;
    c[10..14].copy_from_slice(&1024u32.to_be_bytes());
    c
}

#[test]
fn spc4_6_4_extended_copy_block_to_block_within_a_lun() {
    let f = Fixture::new();
    f.write(0, &block(b'A', 64));
    let id = naa(&f);
    let p = param_list(
        7,
        &[target_desc(&id, 0, 0xe4)],
        &[segment(0, 0, 64, 0, BLOCKS - 64)],
    );
    f.ok(&xcopy_cdb(p.len()), &p);
    assert!(f.read(BLOCKS - 64, 64) == block(b'A', 64), "copied");
    let st = f.ok(&rcr(0, 7), &[]);
    assert_eq!(st[4] & 0x7f, 1, "completed, no errors");
    assert_eq!(u16::from_be_bytes([st[5], st[6]]), 1, "segments processed");
    assert_eq!(
        u32::from_be_bytes(st[8..12].try_into().unwrap()),
        64 * BS as u32
    );
    // No such list identifier.
    assert_sense(&f.exec(&rcr(0, 8), &[]), 5, 0x24, 0);
    // Zero-length parameter list: nothing to do.
    f.ok(&xcopy_cdb(0), &[]);
}

#[test]
fn spc4_6_4_extended_copy_errors() {
    let f = Fixture::new();
    let id = naa(&f);
    let good_t = target_desc(&id, 0, 0xe4);
    let good_s = segment(0, 0, 8, 0, 100);
    let run = |p: &[u8]| f.exec(&xcopy_cdb(p.len()), p);
    // Truncated parameter lists.
    let p = param_list(
        1,
        std::slice::from_ref(&good_t),
        std::slice::from_ref(&good_s),
    );
    assert_sense(&f.exec(&xcopy_cdb(47), &p[..47]), 5, 0x1a, 0);
    assert_sense(
        &f.exec(&xcopy_cdb(p.len() - 1), &p[..p.len() - 1]),
        5,
        0x1a,
        0,
    );
    // Too many descriptors.
    let many_t = vec![good_t.clone(); 9];
    assert_sense(
        &run(&param_list(1, &many_t, std::slice::from_ref(&good_s))),
        5,
        0x26,
        0x06,
    );
    let many_s = vec![good_s.clone(); 17];
    assert_sense(
        &run(&param_list(1, std::slice::from_ref(&good_t), &many_s)),
        5,
        0x26,
        0x08,
    );
    // Unsupported descriptor types.
    assert_sense(
        &run(&param_list(
            1,
            &[target_desc(&id, 0, 0xe0)],
            std::slice::from_ref(&good_s),
        )),
        5,
        0x26,
        0x07,
    );
    let mut stream = vec![0u8; 20];
    stream[0] = 0x03;
    stream[2..4].copy_from_slice(&16u16.to_be_bytes());
    assert_sense(
        &run(&param_list(1, std::slice::from_ref(&good_t), &[stream])),
        5,
        0x26,
        0x09,
    );
    // SPC-4: the LU ID TYPE is ignored, the designator names the LU.
    let r = run(&param_list(
        1,
        &[target_desc(&id, 0xc0, 0xe4)],
        std::slice::from_ref(&good_s),
    ));
    assert_eq!(r.status, status::GOOD);
    // NUL target, bad index, beyond the end: COPY ABORTED.
    let r = run(&param_list(
        1,
        &[target_desc(&id, 0x20, 0xe4)],
        std::slice::from_ref(&good_s),
    ));
    assert_sense(&r, 0x0a, 0x0d, 0x02);
    let r = run(&param_list(
        1,
        std::slice::from_ref(&good_t),
        &[segment(0, 1, 8, 0, 100)],
    ));
    assert_sense(&r, 0x0a, 0x0d, 0x02);
    let r = run(&param_list(
        1,
        std::slice::from_ref(&good_t),
        &[segment(0, 0, 8, 0, BLOCKS - 1)],
    ));
    assert_sense(&r, 0x0a, 0x00, 0x00);
    // An unknown designator is unreachable too.
    let r = run(&param_list(
        1,
        &[target_desc(&[0x60; 16], 0, 0xe4)],
        std::slice::from_ref(&good_s),
    ));
    assert_sense(&r, 0x0a, 0x0d, 0x02);
    let st = f.ok(&rcr(0, 1), &[]);
    assert_eq!(st[4] & 0x7f, 2, "completed with errors");
}

#[test]
fn spc4_6_26_4_operating_parameters() {
    let f = Fixture::new();
    let d = f.ok(&rcr(3, 0), &[]);
    assert_eq!(
        u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize + 4,
        d.len()
    );
    assert_eq!(
        u16::from_be_bytes([d[8], d[9]]),
        8,
        "max target descriptors"
    );
    assert_eq!(
        u16::from_be_bytes([d[10], d[11]]),
        16,
        "max segment descriptors"
    );
    assert_eq!(&d[44..46], &[0x02, 0xe4], "implemented descriptor types");
    assert_eq!(
        f.exec(&rcr(1, 0), &[]).status,
        status::CHECK_CONDITION,
        "RECEIVE DATA is not supported"
    );
}
