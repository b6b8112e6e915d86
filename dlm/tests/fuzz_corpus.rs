//! Replays the committed fuzz corpora (`dlm/fuzz/corpus/<target>/`) and
//! the crash regressions (`dlm/fuzz/regressions/<target>/`) through the
//! same harness `cargo fuzz` runs (`dlm/fuzz/src/harness.rs`), so CI
//! exercises every input found without cargo-fuzz. An empty or missing
//! corpus fails.
//!
//! `write_seeds` (ignored; `cargo test -p dlm --test fuzz_corpus --
//! --ignored write_seeds`) makes the seeds with the crate's own encoders.

#[path = "../../clusterfs/tests/common/corpus.rs"]
mod corpus;
#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use dlm::driver::transport::auth::{Challenge, Handshake, Hello};
use dlm::mode::Mode;
use dlm::plock::{Family, Kind, Owner, Plock};
use dlm::types::{Flags, LockId, Lvb, NodeId, ResName, SbFlags, Status, LVB_LEN};
use dlm::wire::{Envelope, Msg, PlockOp, PlockReply, RecLock, RecLvb};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

#[test]
fn every_corpus_input_replays_without_a_panic() {
    corpus::replay_all(&fuzz_dir(), harness::TARGETS);
}

/// Most of the wire corpus decodes: the seeds are real messages, not noise.
#[test]
fn the_wire_seeds_decode() {
    let corpus = corpus::files(&fuzz_dir().join("corpus").join("wire"));
    let ok = corpus
        .iter()
        .filter(|f| Envelope::decode(&std::fs::read(f).unwrap()).is_ok())
        .count();
    assert!(ok >= 15, "only {ok} of {} wire inputs decode", corpus.len());
}

fn samples() -> Vec<Msg> {
    let name = ResName::new(b"res-1").unwrap();
    let lvb = Some(Lvb([3; LVB_LEN]));
    let locks = vec![RecLock {
        node: NodeId(2),
        lkid: LockId(7),
        mode: Mode::Pr,
        flags: Flags::PERSISTENT,
    }];
    let rl = Some(RecLvb {
        value: Lvb([1; LVB_LEN]),
        seq: 9,
        valid: true,
        from_master: false,
    });
    let plock = Plock {
        owner: Owner {
            node: NodeId(2),
            id: 4,
        },
        kind: Kind::Read,
        start: 3,
        end: 30,
    };
    let lkid = LockId(1);
    vec![
        Msg::Request {
            name,
            lkid,
            mode: Mode::Ex,
            flags: Flags::VALBLK,
            lvb: None,
        },
        Msg::Convert {
            name,
            lkid,
            mode: Mode::Nl,
            flags: Flags::VALBLK,
            lvb,
        },
        Msg::Unlock {
            name,
            lkid,
            flags: Flags(0),
            lvb,
        },
        Msg::Cancel { name, lkid },
        Msg::Cast {
            name,
            lkid,
            status: Status::Granted(Mode::Pw),
            sbflags: SbFlags::DEMOTED,
            lvb: Some((Lvb([5; LVB_LEN]), 4)),
        },
        Msg::Cast {
            name,
            lkid,
            status: Status::Canceled,
            sbflags: SbFlags::default(),
            lvb: None,
        },
        Msg::Demoted { name, lkid },
        Msg::Bast {
            name,
            lkid,
            mode: Mode::Cw,
        },
        Msg::Lookup { name },
        Msg::LookupReply {
            name,
            master: NodeId(3),
        },
        Msg::NotMaster { name, lkid },
        Msg::Remove { name },
        Msg::PurgeOrphans { owner: NodeId(7) },
        Msg::RecLocks {
            name,
            was_master: true,
            lvb: rl,
            locks: locks.clone(),
        },
        Msg::RecDone1 { slot: 3 },
        Msg::RecMaster {
            name,
            lvb: None,
            locks,
        },
        Msg::RecSetMaster {
            name,
            master: NodeId(1),
        },
        Msg::RecDone2,
        Msg::PlockReq {
            req: 5,
            fam: Family::Posix,
            file: 9,
            owner: 77,
            op: PlockOp::Lock {
                kind: Kind::Write,
                start: 1,
                end: 9,
                wait: true,
            },
        },
        Msg::PlockReq {
            req: 6,
            fam: Family::Flock,
            file: 9,
            owner: 77,
            op: PlockOp::Unlock {
                start: 0,
                end: u64::MAX,
            },
        },
        Msg::PlockReq {
            req: 7,
            fam: Family::Posix,
            file: 9,
            owner: 77,
            op: PlockOp::Get {
                kind: Kind::Read,
                start: 1,
                end: 2,
            },
        },
        Msg::PlockReq {
            req: 8,
            fam: Family::Posix,
            file: 9,
            owner: 77,
            op: PlockOp::Close,
        },
        Msg::PlockReply {
            req: 5,
            result: PlockReply::Conflict(plock),
        },
        Msg::PlockReply {
            req: 6,
            result: PlockReply::Deadlock,
        },
        Msg::RecPlocks {
            locks: vec![(Family::Posix, 9, plock)],
        },
    ]
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

/// Writes seed inputs made by the crate's own encoders.
#[test]
#[ignore = "writes the seed corpora; run by hand"]
fn write_seeds() {
    let envs: Vec<Vec<u8>> = samples()
        .into_iter()
        .enumerate()
        .map(|(i, msg)| {
            Envelope {
                gen: i as u64 + 1,
                msg,
            }
            .to_bytes()
        })
        .collect();
    for (i, e) in envs.iter().enumerate() {
        write("wire", &format!("msg-{i:02}"), e);
    }
    // A connection: hello, challenge, proof, welcome, then tagged frames.
    let hello = Hello {
        from: NodeId(1),
        inc: 11,
        to: NodeId(2),
        nonce: [1; 16],
    };
    let challenge = Challenge {
        inc: 22,
        nonce: [2; 16],
    };
    let hs = Handshake::new(&harness::key(), &hello, &challenge);
    for (mode, n) in [(0u8, 3usize), (1, envs.len())] {
        let mut c = vec![mode];
        c.extend_from_slice(&hello.encode());
        c.extend_from_slice(&challenge.encode());
        c.extend_from_slice(&hs.proof());
        c.extend_from_slice(&hs.welcome(0));
        let (mut seal, _) = hs.record_keys();
        for (seq, e) in envs.iter().take(n).enumerate() {
            let mut f = ((8 + e.len() + 16) as u32).to_le_bytes().to_vec();
            f.extend_from_slice(&(seq as u64 + 1).to_le_bytes());
            f.extend_from_slice(e);
            let tag = seal.seal_frame(&f);
            f.extend_from_slice(&tag);
            c.extend_from_slice(&f);
        }
        write("handshake", &format!("conn-{mode}"), &c);
    }
}
