//! SBC-3 block commands.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use proptest::prelude::*;

use super::harness::*;
use crate::scsi::status;

#[test]
fn sbc3_5_15_read_capacity_10_and_16() {
    let f = Fixture::new();
    let d = f.ok(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(
        d,
        [
            ((BLOCKS - 1) as u32).to_be_bytes(),
            (BS as u32).to_be_bytes()
        ]
        .concat()
    );
    let mut c = vec![0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x10;
    c[13] = 32;
    let d = f.ok(&c, &[]);
    assert_eq!(d.len(), 32);
    assert_eq!(u64::from_be_bytes(d[0..8].try_into().unwrap()), BLOCKS - 1);
    assert_eq!(d[14] & 0x80, 0, "LBPME clear on a thick LUN");
    c[13] = 12;
    assert_eq!(f.ok(&c, &[]).len(), 12, "allocation length");
    let t = Fixture::thin();
    c[13] = 32;
    assert_eq!(
        t.ok(&c, &[])[14] & 0xc0,
        0xc0,
        "LBPME and LBPRZ on a thin LUN"
    );
}

#[test]
fn sbc3_5_read_write_6_10_12_16_round_trip() {
    let f = Fixture::new();
    f.ok(&rw6(0x0a, 3, 1), &block(0x61, 1));
    assert!(f.ok(&rw6(0x08, 3, 1), &[]) == block(0x61, 1));
    f.ok(&rw10(0x2a, 10, 2, 0), &block(0x62, 2));
    assert!(f.ok(&rw10(0x28, 10, 2, 0), &[]) == block(0x62, 2));
    f.ok(&rw12(0xaa, 20, 3), &block(0x63, 3));
    assert!(f.ok(&rw12(0xa8, 20, 3), &[]) == block(0x63, 3));
    f.write(BLOCKS - 1, &block(0x64, 1));
    assert!(f.read(BLOCKS - 1, 1) == block(0x64, 1));
    // READ(6) with TRANSFER LENGTH 0 transfers 256 blocks.
    assert_eq!(f.ok(&rw6(0x08, 0, 0), &[]).len(), 256 * BS);
    // Zero-length transfers are fine.
    assert!(f.ok(&rw10(0x28, 0, 0, 0), &[]).is_empty());
    // The bytes really are in the backing file.
    let file = std::fs::read(&f.path).unwrap();
    assert_eq!(&file[10 * BS..12 * BS], &block(0x62, 2)[..]);
}

#[test]
fn sbc3_4_5_lba_out_of_range() {
    let f = Fixture::new();
    assert_sense(&f.exec(&read16(BLOCKS, 1), &[]), 5, 0x21, 0x00);
    assert_sense(&f.exec(&read16(BLOCKS - 1, 2), &[]), 5, 0x21, 0x00);
    assert_sense(&f.exec(&read16(u64::MAX, 1), &[]), 5, 0x21, 0x00);
    assert_sense(&f.exec(&read16(BLOCKS + 1, 0), &[]), 5, 0x21, 0x00);
    assert_sense(&f.exec(&rw10(0x28, 0x8000_0000, 0, 0), &[]), 5, 0x21, 0x00);
    assert_sense(&f.exec(&write16(BLOCKS, 1, 0), &block(0, 1)), 5, 0x21, 0x00);
    assert_sense(
        &f.exec(&rw10(0x2f, BLOCKS as u32, 1, 0), &[]),
        5,
        0x21,
        0x00,
    );
    assert_sense(
        &f.exec(&rw10(0x35, BLOCKS as u32 - 1, 2, 0), &[]),
        5,
        0x21,
        0x00,
    );
    assert_sense(
        &f.exec(&rw10(0x34, BLOCKS as u32 - 1, 2, 0), &[]),
        5,
        0x21,
        0x00,
    );
}

#[test]
fn sbc3_4_22_protection_fields_are_invalid_without_protection() {
    let f = Fixture::new();
    let r = f.exec(&rw10(0x28, 0, 1, 0x20), &[]);
    assert_sense(&r, 5, 0x24, 0x00);
    assert_eq!(field_pointer(&r), (true, true, 1));
    assert_sense(&f.exec(&write16(0, 1, 0x40), &block(0, 1)), 5, 0x24, 0x00);
}

#[test]
fn sbc3_fua_and_dpo_writes_land() {
    let f = Fixture::new();
    f.ok(&write16(5, 1, 0x18), &block(0x55, 1));
    f.ok(&rw10(0x2a, 6, 1, 0x08), &block(0x56, 1));
    assert_eq!(f.read(5, 2), [block(0x55, 1), block(0x56, 1)].concat());
    f.ok(&rw10(0x35, 0, 0, 0), &[]);
    f.ok(
        &{
            let mut c = read16(0, 0);
            c[0] = 0x91;
            c
        },
        &[],
    );
}

#[test]
fn sbc3_readonly_lun_is_write_protected() {
    let f = Fixture::with(|o| o.readonly = true);
    assert_sense(&f.exec(&write16(0, 1, 0), &block(1, 1)), 7, 0x27, 0x00);
    assert!(f.read(0, 1) == block(0, 1));
    let ms = f.ok(&[0x1a, 0x08, 0x3f, 0, 255, 0], &[]);
    assert_eq!(ms[2] & 0x80, 0x80, "WP");
}

#[test]
fn sbc3_5_26_verify_bytchk_0_1_and_3() {
    let f = Fixture::new();
    f.write(8, &block(0x41, 4));
    f.ok(&rw10(0x2f, 8, 4, 0), &[]);
    f.ok(&rw10(0x2f, 8, 4, 0x02), &block(0x41, 4));
    f.ok(&rw10(0x2f, 8, 4, 0x06), &block(0x41, 1));
    let mut bad = block(0x41, 4);
    bad[BS + 7] = 0;
    let r = f.exec(&rw10(0x2f, 8, 4, 0x02), &bad);
    assert_sense(&r, 0x0e, 0x1d, 0x00);
    assert_eq!(r.sense[0] & 0x80, 0x80, "INFORMATION valid");
    assert_eq!(
        u32::from_be_bytes(r.sense[3..7].try_into().unwrap()),
        (BS + 7) as u32,
        "offset of the miscompare"
    );
    let r = f.exec(
        &rw12(0xaf, 8, 4)
            .iter()
            .enumerate()
            .map(|(i, b)| if i == 1 { 0x06 } else { *b })
            .collect::<Vec<_>>(),
        &block(0x42, 1),
    );
    assert_sense(&r, 0x0e, 0x1d, 0x00);
    assert_sense(&f.exec(&rw10(0x2f, 8, 4, 0x04), &[]), 5, 0x24, 0x00);
}

#[test]
fn sbc3_5_37_write_and_verify() {
    let f = Fixture::new();
    f.ok(&rw10(0x2e, 30, 2, 0x02), &block(0x77, 2));
    assert!(f.read(30, 2) == block(0x77, 2));
    let mut c = write16(40, 1, 0);
    c[0] = 0x8e;
    f.ok(&c, &block(0x78, 1));
    assert!(f.read(40, 1) == block(0x78, 1));
}

#[test]
fn sbc3_5_12_orwrite_ors_into_the_medium() {
    let f = Fixture::new();
    f.write(3, &block(0x0f, 1));
    let mut c = write16(3, 1, 0);
    c[0] = 0x8b;
    f.ok(&c, &block(0xf0, 1));
    assert!(f.read(3, 1) == block(0xff, 1));
}

fn write_same(is16: bool, lba: u64, blocks: u32, flags: u8) -> Vec<u8> {
    if is16 {
        let mut c = write16(lba, blocks, flags);
        c[0] = 0x93;
        c
    } else {
        rw10(0x41, lba as u32, blocks as u16, flags)
    }
}

#[test]
fn sbc3_5_41_write_same_fills_with_one_block() {
    let f = Fixture::new();
    let mut pattern = block(0, 1);
    pattern
        .iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = i as u8);
    f.ok(&write_same(false, 100, 7, 0), &pattern);
    assert!(f.read(100, 7) == pattern.repeat(7));
    f.ok(&write_same(true, 200, 3, 0), &pattern);
    assert!(f.read(200, 3) == pattern.repeat(3));
    assert_sense(
        &f.exec(&write_same(true, BLOCKS - 1, 2, 0), &pattern),
        5,
        0x21,
        0,
    );
    // NUMBER OF LOGICAL BLOCKS 0 (WSNZ=0): to the end of the medium.
    f.ok(&write_same(false, BLOCKS - 4, 0, 0), &pattern);
    assert!(f.read(BLOCKS - 4, 4) == pattern.repeat(4));
    // NDOB: zeros without a Data-Out buffer.
    f.ok(&write_same(true, 100, 7, 0x01), &[]);
    assert!(f.read(100, 7) == block(0, 7));
    // The Data-Out is exactly one block.
    assert_sense(
        &f.exec(&write_same(false, 0, 1, 0), &block(1, 2)),
        5,
        0x24,
        0,
    );
    assert_sense(
        &f.exec(&write_same(false, 0, 1, 0), &pattern[..BS / 2]),
        5,
        0x24,
        0,
    );
    // ANCHOR is not supported.
    assert_sense(&f.exec(&write_same(true, 0, 1, 0x10), &pattern), 5, 0x24, 0);
}

/// Allocated bytes of the backing file.
fn allocated(f: &Fixture) -> u64 {
    std::fs::metadata(&f.path).unwrap().blocks() * 512
}

#[test]
fn sbc3_5_28_unmap_punches_holes_in_a_thin_lun() {
    let f = Fixture::thin();
    f.write(0, &block(0x33, 256));
    let before = allocated(&f);
    assert!(before >= 256 * BS as u64, "written data is allocated");
    let mut param = vec![0u8; 8 + 16];
    param[0..2].copy_from_slice(&22u16.to_be_bytes());
    param[2..4].copy_from_slice(&16u16.to_be_bytes());
    param[8..16].copy_from_slice(&0u64.to_be_bytes());
    param[16..20].copy_from_slice(&256u32.to_be_bytes());
    f.ok(&[0x42, 0, 0, 0, 0, 0, 0, 0, param.len() as u8, 0], &param);
    assert!(
        allocated(&f) + 256 * BS as u64 <= before,
        "st_blocks shrank after UNMAP"
    );
    assert!(
        f.read(0, 256) == block(0, 256),
        "unmapped blocks read as zeros (LBPRZ)"
    );
    // Out of range descriptors.
    param[8..16].copy_from_slice(&(BLOCKS - 1).to_be_bytes());
    param[16..20].copy_from_slice(&2u32.to_be_bytes());
    assert_sense(
        &f.exec(&[0x42, 0, 0, 0, 0, 0, 0, 0, param.len() as u8, 0], &param),
        5,
        0x21,
        0,
    );
    // A parameter list shorter than its header.
    assert_sense(
        &f.exec(&[0x42, 0, 0, 0, 0, 0, 0, 0, 4, 0], &param[..4]),
        5,
        0x1a,
        0,
    );
    // Zero length is a no-op.
    f.ok(&[0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
}

#[test]
fn sbc3_5_28_unmap_on_thick_lun_is_not_supported() {
    let f = Fixture::new();
    assert_sense(&f.exec(&[0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]), 5, 0x20, 0);
}

#[test]
fn sbc3_5_42_write_same_unmap_deallocates_and_reads_back_zeros() {
    let f = Fixture::thin();
    f.write(0, &block(0x44, 512));
    let before = allocated(&f);
    f.ok(&write_same(true, 0, 512, 0x08), &block(0, 1));
    assert!(allocated(&f) + 200 * BS as u64 <= before, "holes punched");
    // Whatever the data: with LBPRZ, unmapped blocks read as zeros.
    f.write(1000, &block(0xff, 8));
    f.ok(&write_same(false, 1000, 8, 0x08), &block(9, 1));
    assert!(
        f.read(1000, 8) == block(0, 8),
        "unmapped blocks read as zeros"
    );
    // A fully provisioned LUN has no WRITE SAME unmap (LBPWS clear).
    let thick = Fixture::new();
    let r = thick.exec(&write_same(false, 0, 8, 0x08), &block(9, 1));
    assert_sense(&r, 5, 0x24, 0);
    assert_eq!(field_pointer(&r), (true, true, 1));
}

fn get_lba_status(lba: u64, alloc: u32) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = 0x9e;
    c[1] = 0x12;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..14].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// (LBA, blocks, status) descriptors of GET LBA STATUS data.
fn lba_descs(d: &[u8]) -> Vec<(u64, u32, u8)> {
    assert_eq!(
        u32::from_be_bytes(d[0..4].try_into().unwrap()) as usize + 4,
        d.len()
    );
    d[8..]
        .chunks(16)
        .map(|x| {
            (
                u64::from_be_bytes(x[0..8].try_into().unwrap()),
                u32::from_be_bytes(x[8..12].try_into().unwrap()),
                x[12] & 0x0f,
            )
        })
        .collect()
}

#[test]
fn sbc3_5_4_get_lba_status_reports_holes_of_a_sparse_file() {
    let f = Fixture::thin();
    // The fresh sparse file is one hole.
    let d = lba_descs(&f.ok(&get_lba_status(0, 1024), &[]));
    assert_eq!(d[0], (0, BLOCKS as u32, 1));
    f.write(64, &block(0x12, 64));
    let d = lba_descs(&f.ok(&get_lba_status(0, 1024), &[]));
    assert_eq!(d[0], (0, 64, 1));
    assert_eq!(d[1], (64, 64, 0));
    assert_eq!(d[2], (128, BLOCKS as u32 - 128, 1));
    let d = lba_descs(&f.ok(&get_lba_status(70, 24), &[]));
    assert_eq!(d, vec![(70, 58, 0)]);
    assert_sense(&f.exec(&get_lba_status(BLOCKS + 1, 24), &[]), 5, 0x21, 0);
    assert_sense(&f.exec(&get_lba_status(u64::MAX, 24), &[]), 5, 0x21, 0);
    let thick = Fixture::new();
    assert_eq!(
        lba_descs(&thick.ok(&get_lba_status(5, 24), &[])),
        vec![(5, BLOCKS as u32 - 5, 0)]
    );
}

fn caw(lba: u64, blocks: u8) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = 0x89;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[13] = blocks;
    c
}

#[test]
fn sbc3_5_2_compare_and_write_writes_only_on_match() {
    let f = Fixture::new();
    f.write(10, &block(b'A', 2));
    f.ok(&caw(10, 2), &[block(b'A', 2), block(b'B', 2)].concat());
    assert!(f.read(10, 2) == block(b'B', 2));
    let mut verify = block(b'B', 2);
    verify[BS + 3] = b'x';
    let r = f.exec(&caw(10, 2), &[verify, block(b'C', 2)].concat());
    assert_sense(&r, 0x0e, 0x1d, 0x00);
    assert_eq!(
        u32::from_be_bytes(r.sense[3..7].try_into().unwrap()),
        (BS + 3) as u32
    );
    assert!(
        f.read(10, 2) == block(b'B', 2),
        "nothing written on miscompare"
    );
    assert_sense(&f.exec(&caw(10, 200), &block(0, 400)), 5, 0x24, 0);
    assert_sense(&f.exec(&caw(BLOCKS - 1, 2), &block(0, 4)), 5, 0x21, 0);
    // The Data-Out must be exactly twice NUMBER OF LOGICAL BLOCKS.
    assert_sense(&f.exec(&caw(10, 1), &block(b'B', 4)), 5, 0x24, 0);
    assert_sense(&f.exec(&caw(10, 3), &block(b'B', 4)), 5, 0x24, 0);
    assert_sense(&f.exec(&caw(10, 0), &block(b'B', 2)), 5, 0x24, 0);
    f.ok(&caw(10, 0), &[]);
}

#[test]
fn sbc3_5_2_compare_and_write_is_atomic_against_concurrent_writers() {
    // Writers keep overwriting block 0 with whole blocks of one value;
    // CAW threads swap "expected" for "next": each success must see a
    // consistent block, and the count of successful swaps is exact.
    let f = Arc::new(Fixture::new());
    f.write(0, &block(0, 1));
    let threads = 4;
    let rounds = 200;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || {
                let mut wins = 0u32;
                for _ in 0..rounds {
                    // Read, then try to increment the counter held in every byte.
                    // A plain READ overlapping a write is not ordered against
                    // it (SAM-5 task set rules; our READ takes no lock), so
                    // it may see a torn block: then the swap cannot match and
                    // this round is skipped. Atomicity is what CAW promises,
                    // checked by the exact count below.
                    let cur = f.read(0, 1);
                    if cur.iter().any(|b| *b != cur[0]) {
                        continue;
                    }
                    let next = block(cur[0].wrapping_add(1), 1);
                    let r = f.exec(&caw(0, 1), &[cur, next].concat());
                    match r.status {
                        status::GOOD => wins += 1,
                        status::CHECK_CONDITION => assert_eq!(r.sense[2], 0x0e, "thread {t}"),
                        s => panic!("thread {t}: status {s:#x}"),
                    }
                }
                wins
            })
        })
        .collect();
    let wins: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let end = f.read(0, 1);
    assert!(end.iter().all(|b| *b == end[0]));
    assert_eq!(
        u32::from(end[0]),
        wins % 256,
        "every successful swap incremented exactly once"
    );
    assert!(wins > 0);
}

/// A random command of the model test.
#[derive(Debug, Clone)]
enum Op {
    Write {
        size: u8,
        lba: u64,
        blocks: u32,
        fill: u8,
    },
    Read {
        size: u8,
        lba: u64,
        blocks: u32,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let lba = prop_oneof![
        0..BLOCKS,
        BLOCKS - 16..BLOCKS + 4,
        Just(u64::from(u32::MAX))
    ];
    let size = prop_oneof![Just(6u8), Just(10), Just(12), Just(16)];
    prop_oneof![
        (size.clone(), lba.clone(), 0u32..20, any::<u8>()).prop_map(|(size, lba, blocks, fill)| {
            Op::Write {
                size,
                lba,
                blocks,
                fill,
            }
        }),
        (size, lba, 0u32..20).prop_map(|(size, lba, blocks)| Op::Read { size, lba, blocks }),
    ]
}

/// Build the CDB, or None if the LBA/length does not fit this CDB size.
fn cdb_for(size: u8, write: bool, lba: u64, blocks: u32) -> Option<Vec<u8>> {
    let base = if write {
        [0x0a, 0x2a, 0xaa, 0x8a]
    } else {
        [0x08, 0x28, 0xa8, 0x88]
    };
    match size {
        6 if lba < (1 << 21) && (1..=255).contains(&blocks) => {
            Some(rw6(base[0], lba as u32, blocks as u8))
        }
        10 => Some(rw10(
            base[1],
            u32::try_from(lba).ok()?,
            u16::try_from(blocks).ok()?,
            0,
        )),
        12 => Some(rw12(base[2], u32::try_from(lba).ok()?, blocks)),
        16 => Some(if write {
            write16(lba, blocks, 0)
        } else {
            read16(lba, blocks)
        }),
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn sbc3_read_write_against_a_model(ops in proptest::collection::vec(op_strategy(), 1..40)) {
        let f = Fixture::new();
        let mut model = vec![0u8; BLOCKS as usize * BS];
        for op in ops {
            let (size, write, lba, blocks, fill) = match op {
                Op::Write { size, lba, blocks, fill } => (size, true, lba, blocks, fill),
                Op::Read { size, lba, blocks } => (size, false, lba, blocks, 0),
            };
            let Some(cdb) = cdb_for(size, write, lba, blocks) else { continue };
            let in_range = lba.checked_add(u64::from(blocks)).is_some_and(|end| end <= BLOCKS);
            let data = vec![fill; blocks as usize * BS];
            let r = f.exec(&cdb, if write { &data } else { &[] });
            if !in_range {
                prop_assert_eq!(r.status, status::CHECK_CONDITION);
                prop_assert_eq!((r.sense[2], r.sense[12]), (5, 0x21));
                continue;
            }
            prop_assert_eq!(r.status, status::GOOD);
            let range = lba as usize * BS..(lba as usize + blocks as usize) * BS;
            if write {
                model[range].copy_from_slice(&data);
            } else {
                prop_assert!(r.data_in == model[range], "read differs from the model");
            }
        }
    }
}

fn write_atomic(lba: u64, blocks: u16, boundary: u16) -> Vec<u8> {
    let mut c = vec![0u8; 16];
    c[0] = 0x9c;
    c[2..10].copy_from_slice(&lba.to_be_bytes());
    c[10..12].copy_from_slice(&boundary.to_be_bytes());
    c[12..14].copy_from_slice(&blocks.to_be_bytes());
    c
}

#[test]
fn sbc4_5_48_write_atomic_16() {
    let f = Fixture::new();
    f.ok(&write_atomic(7, 3, 0), &block(0x5a, 3));
    assert!(f.read(7, 3) == block(0x5a, 3));
    f.ok(&write_atomic(0, 0, 0), &[]);
    assert_sense(
        &f.exec(&write_atomic(BLOCKS - 1, 2, 0), &block(0, 2)),
        5,
        0x21,
        0,
    );
    assert_sense(&f.exec(&write_atomic(0, 1, 1), &block(0, 1)), 5, 0x24, 0);
    let b0 = f.ok(&[0x12, 1, 0xb0, 0, 64, 0], &[]);
    let max_atomic = u32::from_be_bytes(b0[44..48].try_into().unwrap());
    let max_xfer = u32::from_be_bytes(b0[8..12].try_into().unwrap());
    assert!(max_atomic >= 256 && max_atomic <= max_xfer);
}

#[test]
fn sbc3_5_17_read_defect_data_is_an_empty_list() {
    let f = Fixture::new();
    let d = f.ok(&[0x37, 0, 0x18, 0, 0, 0, 0, 0, 32, 0], &[]);
    assert_eq!(d, vec![0, 0x18, 0, 0]);
    let d = f.ok(&[0xb7, 0x08, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0], &[]);
    assert_eq!(d, vec![0, 0x08, 0, 0, 0, 0, 0, 0]);
}

fn sanitize(sa: u8, plen: u16) -> Vec<u8> {
    let l = plen.to_be_bytes();
    vec![0x48, sa, 0, 0, 0, 0, 0, l[0], l[1], 0]
}

#[test]
fn sbc3_5_30_sanitize_overwrite_block_erase_crypto_erase() {
    // SANITIZE is opt-in.
    assert_sense(&Fixture::thin().exec(&sanitize(0x02, 0), &[]), 5, 0x20, 0);
    let f = Fixture::with(|o| {
        o.thin = true;
        o.sanitize = true;
    });
    f.write(0, &block(b'a', 16));
    f.write(BLOCKS - 16, &block(b'a', 16));
    // OVERWRITE with a 4-byte pattern, one pass.
    let p = [0x01, 0, 0, 4, 1, 2, 3, 4];
    f.ok(&sanitize(0x01, p.len() as u16), &p);
    let expect: Vec<u8> = [1u8, 2, 3, 4]
        .iter()
        .copied()
        .cycle()
        .take(16 * BS)
        .collect();
    assert!(f.read(BLOCKS - 16, 16) == expect, "whole LUN overwritten");
    // Two passes with INVERT: the last pass is inverted.
    let p = [0x82, 0, 0, 1, 0x0f];
    f.ok(&sanitize(0x01, p.len() as u16), &p);
    assert!(f.read(0, 1) == block(0xf0, 1));
    // Parameter list errors.
    assert_sense(&f.exec(&sanitize(0x01, 4), &p[..4]), 5, 0x24, 0);
    assert_sense(&f.exec(&sanitize(0x01, 5), &[0, 0, 0, 1, 9]), 5, 0x26, 0);
    assert_sense(&f.exec(&sanitize(0x01, 5), &[1, 0, 0, 0, 9]), 5, 0x26, 0);
    // BLOCK ERASE deallocates everything.
    f.ok(&sanitize(0x02, 0), &[]);
    assert!(f.read(0, 16) == block(0, 16));
    assert_sense(&f.exec(&sanitize(0x02, 8), &[0; 8]), 5, 0x24, 0);
    f.write(5, &block(b'a', 1));
    f.ok(&sanitize(0x03, 0), &[]);
    assert!(f.read(5, 1) == block(0, 1), "CRYPTO ERASE");
    // A thick LUN only overwrites (no logical block provisioning).
    let t = Fixture::with(|o| o.sanitize = true);
    assert_sense(&t.exec(&sanitize(0x02, 0), &[]), 5, 0x24, 0);
    assert_sense(&t.exec(&sanitize(0x03, 0), &[]), 5, 0x24, 0);
    t.ok(&sanitize(0x1f, 0), &[]);
}

#[test]
fn sbc3_5_30_sanitize_reserved_cdb_bits_are_invalid() {
    let f = Fixture::with(|o| o.sanitize = true);
    let p = [0x01, 0, 0, 1, 0xaa];
    let mut c = sanitize(0x01, p.len() as u16);
    c[1] |= 0x40;
    let r = f.exec(&c, &p);
    assert_sense(&r, 5, 0x24, 0);
    assert_eq!(field_pointer(&r), (true, true, 1));
    for byte in 2..7 {
        let mut c = sanitize(0x01, p.len() as u16);
        c[byte] = byte as u8;
        let r = f.exec(&c, &p);
        assert_sense(&r, 5, 0x24, 0);
        assert_eq!(field_pointer(&r).2, byte as u16);
    }
}

#[test]
fn sbc3_4_capacity_change_is_reported_to_every_nexus() {
    let f = Fixture::new();
    let other = f.login("other");
    assert_eq!(f.target.refresh_lun_size(LUN).unwrap(), BLOCKS * BS as u64);
    assert_eq!(f.exec(&tur(), &[]).status, status::GOOD, "unchanged: no UA");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&f.path)
        .unwrap()
        .set_len(2 * BLOCKS * BS as u64)
        .unwrap();
    assert_eq!(
        f.target.refresh_lun_size(LUN).unwrap(),
        2 * BLOCKS * BS as u64
    );
    assert_sense(&f.exec(&tur(), &[]), 6, 0x2a, 0x09);
    assert_sense(&f.exec_on(other, LUN, &tur(), &[]), 6, 0x2a, 0x09);
    let d = f.ok(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], &[]);
    assert_eq!(
        u32::from_be_bytes(d[0..4].try_into().unwrap()),
        2 * BLOCKS as u32 - 1
    );
    f.write(2 * BLOCKS - 1, &block(7, 1));
    assert!(matches!(
        f.target.refresh_lun_size(9),
        Err(crate::scsi::ScsiError::NoSuchLun(9))
    ));
}
