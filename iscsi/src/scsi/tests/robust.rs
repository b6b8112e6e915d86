//! Hostile input: random CDBs (of every implemented opcode and of random
//! bytes) and Data-Out never panic and always give a well-formed
//! response (the in-tree counterpart of `iscsi/fuzz`).

use proptest::prelude::*;

use super::harness::*;
use crate::scsi::{status, ScsiResponse};

fn well_formed(r: &ScsiResponse) -> Result<(), TestCaseError> {
    match r.status {
        status::GOOD => prop_assert!(r.sense.is_empty()),
        status::CHECK_CONDITION => {
            prop_assert_eq!(r.sense.len(), 18);
            prop_assert_eq!(r.sense[0] & 0x7f, 0x70);
            prop_assert_eq!(r.sense[7], 10);
            prop_assert!(r.data_in.is_empty());
        }
        status::RESERVATION_CONFLICT => prop_assert!(r.data_in.is_empty()),
        s => prop_assert!(false, "unexpected status {:#x}", s),
    }
    Ok(())
}

fn opcode() -> impl Strategy<Value = u8> {
    let known: Vec<u8> = crate::scsi::opcodes::COMMANDS
        .iter()
        .map(|d| d.op)
        .collect();
    prop_oneof![proptest::sample::select(known), any::<u8>()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_cdbs_never_panic(
        op in opcode(),
        rest in proptest::collection::vec(any::<u8>(), 0..16),
        small in proptest::collection::vec(any::<u8>(), 0..64),
        data in proptest::collection::vec(any::<u8>(), 0..2048),
        second in any::<bool>(),
        lun in 0u64..3,
    ) {
        let f = Fixture::thin();
        let other = f.login("other");
        // Shrink big numbers in the CDB sometimes so that commands reach
        // their handlers instead of LBA OUT OF RANGE.
        let mut cdb = vec![op];
        cdb.extend(rest.iter().enumerate().map(|(i, b)| if i % 2 == 0 { b & small.first().copied().unwrap_or(0xff) } else { *b }));
        let n = if second { other } else { f.nexus };
        let r = f.exec_on(n, lun, &cdb, &data);
        well_formed(&r)?;
        let r = f.exec_on(n, lun, &cdb, &small);
        well_formed(&r)?;
        // The LUN still works afterwards.
        let mut r = f.exec(&read16(0, 1), &[]);
        for _ in 0..8 {
            if r.status != status::CHECK_CONDITION || r.sense[2] != 6 {
                break;
            }
            r = f.exec(&read16(0, 1), &[]);
        }
        prop_assert!(r.status == status::GOOD || r.status == status::RESERVATION_CONFLICT, "{:02x?}", r);
    }
}
