//! The initiator library against Debian's tgtd: discovery (RFC 7143 C
//! SendTargets), login with and without CHAP (12.1.3), reads and writes with
//! many commands in flight, persistent reservations (SPC-4 5.12) between two
//! initiators, and relogin after a dropped connection (ERL 0, 7.1.3).

#[path = "iscsi_initiator_util.rs"]
mod util;

use std::sync::Arc;
use std::thread;

use iscsi::initiator::cdb::{self, pr_type};
use iscsi::initiator::driver::discover;
use iscsi::initiator::lun::LunOptions;
use iscsi::initiator::session::ScsiRequest;
use iscsi::initiator::{InitiatorError, Lun, PersistentReserve};
use util::{Tgtd, IQN};

fn opts(name: &str) -> LunOptions {
    LunOptions {
        initiator_name: name.to_string(),
        ..LunOptions::default()
    }
}

/// Deterministic bytes for block `i` of a test pattern.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn sendtargets_discovery_lists_the_target_and_portal() {
    let Some(t) = Tgtd::start(16) else { return };
    let found = discover(&t.portal(), "iqn.2026-11.test:ini-disc", None).unwrap();
    let target = found.iter().find(|d| d.name == IQN).expect("target listed");
    assert!(
        target.portals.contains(&format!("{},1", t.portal())),
        "portals: {:?}",
        target.portals
    );
}

#[test]
fn read_write_verify_with_32_commands_in_flight() {
    let Some(t) = Tgtd::start(64) else { return };
    let lun = Lun::open_with(&t.url(None), opts("iqn.2026-11.test:ini-rw")).unwrap();
    assert_eq!(lun.size_bytes(), 64 << 20);
    assert_eq!(lun.block_size(), 512);

    // 32 WRITE(16) of 128 KiB issued before any completes.
    let chunk = 128 << 10;
    let conn = lun.connection();
    let pending: Vec<_> = (0..32u64)
        .map(|i| {
            let data = pattern(i, chunk);
            let lba = i * chunk as u64 / 512;
            conn.start(ScsiRequest {
                lun: 1,
                cdb: cdb::write16(lba, (chunk / 512) as u32, false),
                data_out: data,
                in_len: 0,
            })
        })
        .collect();
    for p in pending {
        assert_eq!(p.wait().unwrap().status, cdb::status::GOOD);
    }
    lun.flush().unwrap();

    // Read back from 8 threads at once, 4 chunks each; and the backing file agrees.
    let lun = Arc::new(lun);
    let readers: Vec<_> = (0..8u64)
        .map(|t| {
            let lun = lun.clone();
            thread::spawn(move || {
                for i in (t * 4)..(t * 4 + 4) {
                    let mut buf = vec![0u8; chunk];
                    lun.read_at(i * chunk as u64, &mut buf).unwrap();
                    assert!(buf == pattern(i, chunk), "chunk {i} differs");
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let file = std::fs::read(&t.lun_file).unwrap();
    assert!(file[..chunk] == pattern(0, chunk)[..]);
    assert!(file[31 * chunk..32 * chunk] == pattern(31, chunk)[..]);

    // A large write spanning several commands, and unaligned read-modify-write.
    let big = pattern(99, 3 << 20);
    lun.write_at(8 << 20, &big).unwrap();
    let mut back = vec![0u8; big.len()];
    lun.read_at(8 << 20, &mut back).unwrap();
    assert!(back == big);
    lun.write_at(1000, b"hello, unaligned world").unwrap();
    let mut around = vec![0u8; 2048];
    lun.read_at(0, &mut around).unwrap();
    let mut want = pattern(0, chunk)[..2048].to_vec();
    want[1000..1022].copy_from_slice(b"hello, unaligned world");
    assert!(around == want);

    // Past the end is a clear error.
    let mut one = [0u8; 1];
    assert!(matches!(
        lun.read_at(64 << 20, &mut one),
        Err(InitiatorError::BadRequest(_))
    ));
}

#[test]
fn chap_one_way_and_mutual_success_and_refusals() {
    let Some(t) = Tgtd::start(8) else { return };
    t.add_account("alice", "alicesecret12", false);
    let name = "iqn.2026-11.test:ini-chap";
    let lun = Lun::open_with(&t.url(Some("alice%alicesecret12")), opts(name)).unwrap();
    assert_eq!(lun.size_bytes(), 8 << 20);
    drop(lun);

    let err = Lun::open_with(&t.url(Some("alice%wrongsecret12")), opts(name))
        .err()
        .expect("wrong secret must be refused");
    assert!(
        matches!(err, InitiatorError::LoginRefused { class: 2, .. }),
        "{err}"
    );
    let err = Lun::open_with(&t.url(None), opts(name))
        .err()
        .expect("no credentials must be refused");
    assert!(
        matches!(err, InitiatorError::LoginRefused { class: 2, .. }),
        "{err}"
    );

    // Mutual: the target proves itself with the outgoing account.
    t.add_account("tgt", "targetsecret12", true);
    let mutual = format!(
        "{}?target_user=tgt&target_password=targetsecret12",
        t.url(Some("alice%alicesecret12"))
    );
    let lun = Lun::open_with(&mutual, opts(name)).unwrap();
    lun.flush().unwrap();
    drop(lun);
    let wrong = format!(
        "{}?target_user=tgt&target_password=notthetarget1",
        t.url(Some("alice%alicesecret12"))
    );
    let err = Lun::open_with(&wrong, opts(name))
        .err()
        .expect("a target with the wrong secret must be refused");
    assert!(matches!(err, InitiatorError::Auth(_)), "{err}");
}

#[test]
fn pr_preempt_and_abort_fences_the_second_initiator() {
    let Some(t) = Tgtd::start(8) else { return };
    let a = Lun::open_with(&t.url(None), opts("iqn.2026-11.test:node-a")).unwrap();
    let b = Lun::open_with(&t.url(None), opts("iqn.2026-11.test:node-b")).unwrap();
    let (ka, kb) = (0xa1a1u64, 0xb2b2u64);
    a.pr_register(ka).unwrap();
    a.pr_reserve(ka, pr_type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY)
        .unwrap();
    b.pr_register(kb).unwrap();

    let mut keys = a.pr_read_keys().unwrap().keys;
    keys.sort();
    assert_eq!(keys, vec![ka, kb]);
    let res = b.pr_read_reservation().unwrap();
    assert_eq!(
        res.holder,
        Some((ka, pr_type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY))
    );

    // A registrant may write under Write Exclusive - Registrants Only.
    b.write_at(0, &[0x11; 4096]).unwrap();

    // Debian tgt 1.0.85 has PREEMPT AND ABORT commented out of its service
    // action table (ILLEGAL REQUEST); pr_fence then preempts without abort.
    let aborted = a
        .pr_fence(ka, kb, pr_type::WRITE_EXCLUSIVE_REGISTRANTS_ONLY)
        .unwrap();
    eprintln!(
        "fenced with PREEMPT{}",
        if aborted { " AND ABORT" } else { "" }
    );
    assert_eq!(a.pr_read_keys().unwrap().keys, vec![ka]);

    let err = b.write_at(0, &[0x22; 4096]).unwrap_err();
    assert!(err.is_reservation_conflict(), "{err}");
    // The fenced write never landed; B can still read.
    let mut buf = vec![0u8; 4096];
    b.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0x11));
    a.write_at(0, &[0x33; 512]).unwrap();

    a.pr_clear(ka).unwrap();
    assert!(a.pr_read_keys().unwrap().keys.is_empty());
    assert_eq!(a.pr_read_reservation().unwrap().holder, None);
    b.write_at(0, &[0x44; 512]).unwrap();
}

#[test]
fn dropped_connection_relogs_in_and_reissues_commands() {
    let Some(t) = Tgtd::start(32) else { return };
    let lun = Arc::new(Lun::open_with(&t.url(None), opts("iqn.2026-11.test:ini-re")).unwrap());
    let data = pattern(5, 1 << 20);
    lun.write_at(0, &data).unwrap();
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let lun = lun.clone();
            let data = data.clone();
            thread::spawn(move || {
                for i in 0..40u64 {
                    let off = ((w * 40 + i) % 16) * 65536;
                    let mut buf = vec![0u8; 65536];
                    lun.read_at(off, &mut buf).unwrap();
                    assert!(buf[..] == data[off as usize..off as usize + 65536]);
                }
            })
        })
        .collect();
    for _ in 0..3 {
        thread::sleep(std::time::Duration::from_millis(30));
        lun.connection().break_connection();
    }
    for w in workers {
        w.join().unwrap();
    }
    // The last break may still be recovering: a ping fails until the new
    // session is up (non-SCSI requests are not re-issued), then succeeds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while let Err(e) = lun.connection().nop() {
        assert!(std::time::Instant::now() < deadline, "no relogin: {e}");
        thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(lun.connection().relogins() >= 1);
    let mut buf = vec![0u8; 65536];
    lun.read_at(0, &mut buf).unwrap();
    assert!(buf[..] == data[..65536]);
}
