//! What each dlm fuzz target does with its input, shared by the targets
//! (`fuzz_targets/*.rs`, run by `cargo fuzz`) and by the replay test
//! `dlm/tests/fuzz_corpus.rs` (CI, stable), which `#[path]`-includes this
//! file. Decoders return errors on bad bytes, never panic or allocate
//! without bound; what decodes re-encodes to itself.

use dlm::driver::transport::auth::{
    Challenge, Handshake, Hello, CHALLENGE_LEN, HELLO_LEN, PROOF_LEN, WELCOME_LEN,
};
use dlm::driver::transport::{ClusterKey, MAX_FRAME, TAG_LEN};
use dlm::wire::Envelope;

/// A target: its name (the corpus directory name) and what it runs.
pub type Target = (&'static str, fn(&[u8]));

/// The targets.
pub const TARGETS: &[Target] = &[("wire", wire), ("handshake", handshake)];

/// One envelope (generation and lock message).
pub fn wire(data: &[u8]) {
    if let Ok(env) = Envelope::decode(data) {
        let back = Envelope::decode(&env.to_bytes()).expect("re-encoded envelope");
        assert_eq!(back, env);
    }
}

/// The key both sides of the fuzzed connection hold.
pub fn key() -> ClusterKey {
    ClusterKey::new(&[0x5a; 32]).expect("32 bytes")
}

/// A connection as an acceptor sees it: a hello, a challenge (ours, in
/// the input for reach), a proof, a welcome, then frames
/// (`u32 len | u64 seq | envelope | tag`, the tag covering what follows
/// the length), split where each length prefix says. A frame whose tag is
/// wrong is re-sealed with the right tag when the input's first byte is
/// odd, so the frames behind the tag check are reached too.
pub fn handshake(data: &[u8]) {
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    let Some(h) = data.get(..HELLO_LEN) else {
        return;
    };
    let Some(hello) = Hello::decode(h.try_into().expect("hello")) else {
        return;
    };
    assert_eq!(hello.encode().as_slice(), h);
    let Some(c) = data.get(HELLO_LEN..HELLO_LEN + CHALLENGE_LEN) else {
        return;
    };
    let Some(challenge) = Challenge::decode(c.try_into().expect("challenge")) else {
        return;
    };
    let hs = Handshake::new(&key(), &hello, &challenge);
    let mut rest = &data[HELLO_LEN + CHALLENGE_LEN..];
    if let Some(p) = rest.get(..PROOF_LEN) {
        let genuine = hs.proof();
        assert_eq!(hs.check_proof(p.try_into().expect("proof")), p == genuine);
        rest = &rest[PROOF_LEN..];
    }
    if let Some(w) = rest.get(..WELCOME_LEN) {
        let _ = hs.check_welcome(w.try_into().expect("welcome"));
        rest = &rest[WELCOME_LEN..];
    }
    let (mut open, _) = hs.record_keys();
    let mut seal = open.clone();
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4")) as usize;
        if !(8 + TAG_LEN..=MAX_FRAME).contains(&len) || rest.len() < 4 + len {
            return;
        }
        let (frame, tag) = rest[..4 + len].split_at(4 + len - TAG_LEN);
        let good = seal.seal_frame(frame);
        let ok = if mode & 1 == 1 {
            open.open_frame(frame, &good)
        } else {
            open.open_frame(frame, tag)
        };
        assert_eq!(ok, mode & 1 == 1 || tag == good);
        if !ok {
            return;
        }
        wire(&frame[12..]);
        rest = &rest[4 + len..];
    }
}
