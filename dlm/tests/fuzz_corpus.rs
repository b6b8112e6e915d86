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
use dlm::types::NodeId;
use dlm::wire::Envelope;

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

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

/// Writes seed inputs made by the crate's own encoders.
#[test]
#[ignore = "writes the seed corpora; run by hand"]
fn write_seeds() {
    let envs: Vec<Vec<u8>> = dlm::wire::samples()
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
