//! Peer authentication: the hello's mutual challenge-response with the
//! cluster key, and the per-connection keys that authenticate every frame
//! and acknowledgement after it. Sans-IO: the transport moves the bytes.
//!
//! The exchange, connector C (sends frames) and acceptor A (acknowledges):
//!
//! ```text
//! C -> A  hello      "DLM4" | from u32 | inc_c u64 | to u32 | nonce_c [16]
//! A -> C  challenge  "DLM4" | inc_a u64 | nonce_a [16]
//! C -> A  proof      HMAC(key, "connector" | T)                 (32 bytes)
//! A -> C  welcome    delivered u64 | HMAC(key, "acceptor" | T | delivered)
//! ```
//!
//! `T` is the transcript: both node ids, both incarnations, both nonces.
//! Each side's nonce is fresh (OS random), so a proof or welcome recorded on
//! one connection is worth nothing on another: a replayed hello fails at
//! the proof, a fake acceptor at the welcome. The acceptor changes nothing
//! (no stream reset, no incarnation, no "current connection") before the
//! proof checks out; the connector resends nothing before the welcome does.
//!
//! Then each direction has its own key, derived from the cluster key and
//! `T`: frames (C -> A) and acknowledgements (A -> C) each end in a 16-byte
//! HMAC-SHA256 tag over a per-connection counter and the record, so a
//! record cannot be forged, replayed, reordered, or moved to another
//! connection or direction. A frame's tag covers all of it but its length
//! prefix ([`RecordMac::seal_frame`]). The keyed HMAC state is computed
//! once per connection and cloned per record: a DLM request's tag costs
//! two SHA-256 blocks (the counter, number and payload fit one).

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::sync::Arc;

use crate::types::NodeId;

/// "DLM4": authenticated hello, frames and acknowledgements with tags.
pub const HELLO_MAGIC: u32 = 0x444c_4d34;
/// Bytes of a nonce.
pub const NONCE_LEN: usize = 16;
/// Bytes of a connector's hello ([`Hello::encode`]).
pub const HELLO_LEN: usize = 4 + 4 + 8 + 4 + NONCE_LEN;
/// Bytes of the acceptor's challenge ([`Challenge::encode`]).
pub const CHALLENGE_LEN: usize = 4 + 8 + NONCE_LEN;
/// Bytes of the connector's proof.
pub const PROOF_LEN: usize = 32;
/// Bytes of the acceptor's welcome.
pub const WELCOME_LEN: usize = 8 + 32;
/// Bytes of the tag ending every frame and acknowledgement.
pub const TAG_LEN: usize = 16;
/// Shortest cluster key accepted (cman's `MIN_KEY_BYTES`).
pub const MIN_KEY_BYTES: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// The cluster's shared secret (the key cmand uses). Its bytes never show
/// in `Debug` output.
#[derive(Clone)]
pub struct ClusterKey(Arc<[u8]>);

/// The key is shorter than [`MIN_KEY_BYTES`].
#[derive(Debug, thiserror::Error)]
#[error("cluster key of {0} bytes is too short (at least {MIN_KEY_BYTES})")]
pub struct ShortKey(pub usize);

impl ClusterKey {
    /// A key of at least [`MIN_KEY_BYTES`] bytes.
    pub fn new(bytes: &[u8]) -> Result<ClusterKey, ShortKey> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(ShortKey(bytes.len()));
        }
        Ok(ClusterKey(bytes.into()))
    }

    fn mac(&self, label: &[u8]) -> HmacSha256 {
        let mut m = HmacSha256::new_from_slice(&self.0).expect("any key length");
        m.update(label);
        m.update(&[0]);
        m
    }
}

impl fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterKey({} bytes)", self.0.len())
    }
}

/// A fresh random nonce.
pub fn nonce() -> [u8; NONCE_LEN] {
    rand::random()
}

/// The connector's hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The connecting node.
    pub from: NodeId,
    /// Its incarnation.
    pub inc: u64,
    /// The node it means to reach.
    pub to: NodeId,
    /// Its nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl Hello {
    /// Wire form.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut h = [0u8; HELLO_LEN];
        h[..4].copy_from_slice(&HELLO_MAGIC.to_le_bytes());
        h[4..8].copy_from_slice(&self.from.0.to_le_bytes());
        h[8..16].copy_from_slice(&self.inc.to_le_bytes());
        h[16..20].copy_from_slice(&self.to.0.to_le_bytes());
        h[20..].copy_from_slice(&self.nonce);
        h
    }

    /// Parses a hello; `None` when it is not one.
    pub fn decode(h: &[u8; HELLO_LEN]) -> Option<Hello> {
        if u32_at(h, 0) != HELLO_MAGIC {
            return None;
        }
        Some(Hello {
            from: NodeId(u32_at(h, 4)),
            inc: u64_at(h, 8),
            to: NodeId(u32_at(h, 16)),
            nonce: h[20..].try_into().expect("nonce"),
        })
    }
}

/// The acceptor's challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The acceptor's incarnation.
    pub inc: u64,
    /// Its nonce.
    pub nonce: [u8; NONCE_LEN],
}

impl Challenge {
    /// Wire form.
    pub fn encode(&self) -> [u8; CHALLENGE_LEN] {
        let mut c = [0u8; CHALLENGE_LEN];
        c[..4].copy_from_slice(&HELLO_MAGIC.to_le_bytes());
        c[4..12].copy_from_slice(&self.inc.to_le_bytes());
        c[12..].copy_from_slice(&self.nonce);
        c
    }

    /// Parses a challenge; `None` when it is not one.
    pub fn decode(c: &[u8; CHALLENGE_LEN]) -> Option<Challenge> {
        if u32_at(c, 0) != HELLO_MAGIC {
            return None;
        }
        Some(Challenge {
            inc: u64_at(c, 4),
            nonce: c[12..].try_into().expect("nonce"),
        })
    }
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().expect("4"))
}

fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().expect("8"))
}

/// One connection's handshake, as both sides see it once the hello and the
/// challenge have crossed.
pub struct Handshake {
    key: ClusterKey,
    transcript: Vec<u8>,
}

impl Handshake {
    /// The transcript of `hello` and `challenge` under `key`.
    pub fn new(key: &ClusterKey, hello: &Hello, challenge: &Challenge) -> Handshake {
        let mut t = Vec::with_capacity(HELLO_LEN + CHALLENGE_LEN);
        t.extend_from_slice(&hello.encode());
        t.extend_from_slice(&challenge.encode());
        Handshake {
            key: key.clone(),
            transcript: t,
        }
    }

    fn tag(&self, label: &[u8], extra: &[u8]) -> [u8; 32] {
        let mut m = self.key.mac(label);
        m.update(&self.transcript);
        m.update(extra);
        m.finalize().into_bytes().into()
    }

    /// The connector's proof that it holds the key.
    pub fn proof(&self) -> [u8; PROOF_LEN] {
        self.tag(b"dlm4 connector proof", &[])
    }

    /// Checks a connector's proof (constant time).
    pub fn check_proof(&self, proof: &[u8; PROOF_LEN]) -> bool {
        let mut m = self.key.mac(b"dlm4 connector proof");
        m.update(&self.transcript);
        m.verify_slice(proof).is_ok()
    }

    /// The acceptor's welcome: the last frame it delivered from this
    /// connector's incarnation, and its own proof.
    pub fn welcome(&self, delivered: u64) -> [u8; WELCOME_LEN] {
        let mut w = [0u8; WELCOME_LEN];
        w[..8].copy_from_slice(&delivered.to_le_bytes());
        let tag = self.tag(b"dlm4 acceptor proof", &delivered.to_le_bytes());
        w[8..].copy_from_slice(&tag);
        w
    }

    /// Checks an acceptor's welcome; the number it carries when genuine.
    pub fn check_welcome(&self, w: &[u8; WELCOME_LEN]) -> Option<u64> {
        let mut m = self.key.mac(b"dlm4 acceptor proof");
        m.update(&self.transcript);
        m.update(&w[..8]);
        m.verify_slice(&w[8..]).ok()?;
        Some(u64_at(w, 0))
    }

    /// The keys of the connection's two directions: (frames, acks).
    pub fn record_keys(&self) -> (RecordMac, RecordMac) {
        let frames = self.tag(b"dlm4 frames connector to acceptor", &[]);
        let acks = self.tag(b"dlm4 acks acceptor to connector", &[]);
        (RecordMac::new(&frames), RecordMac::new(&acks))
    }
}

/// Bytes of a frame's length prefix, which its tag does not cover
/// ([`RecordMac::seal_frame`]).
const FRAME_LEN_PREFIX: usize = 4;

/// Tags the records of one direction of one connection: the n-th record
/// (from 0) is tagged with n, so each is accepted once, in its place.
#[derive(Clone)]
pub struct RecordMac {
    keyed: HmacSha256,
    next: u64,
}

impl fmt::Debug for RecordMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecordMac(next {})", self.next)
    }
}

impl RecordMac {
    fn new(key: &[u8; 32]) -> RecordMac {
        RecordMac {
            keyed: HmacSha256::new_from_slice(key).expect("any key length"),
            next: 0,
        }
    }

    fn compute(&self, record: &[u8]) -> HmacSha256 {
        let mut m = self.keyed.clone();
        m.update(&self.next.to_le_bytes());
        m.update(record);
        m
    }

    /// The tag of the next record.
    pub fn seal(&mut self, record: &[u8]) -> [u8; TAG_LEN] {
        let full = self.compute(record).finalize().into_bytes();
        self.next += 1;
        full[..TAG_LEN].try_into().expect("tag")
    }

    /// Checks the next record's tag (constant time); counts it only when
    /// genuine.
    pub fn open(&mut self, record: &[u8], tag: &[u8]) -> bool {
        let ok = tag.len() == TAG_LEN && self.compute(record).verify_truncated_left(tag).is_ok();
        if ok {
            self.next += 1;
        }
        ok
    }

    /// The tag of the next frame, `frame` being the frame before its tag
    /// (`len | seq | payload`). The tag covers everything after the
    /// length prefix: that prefix only says where the tag is, so a changed
    /// length makes the receiver check other bytes against another tag,
    /// which fails; left out, a DLM request's counter, number and payload
    /// fit one SHA-256 block (55 bytes), and a tag costs two blocks, not
    /// three.
    pub fn seal_frame(&mut self, frame: &[u8]) -> [u8; TAG_LEN] {
        self.seal(&frame[FRAME_LEN_PREFIX..])
    }

    /// Checks the next frame's tag (see [`RecordMac::seal_frame`]).
    pub fn open_frame(&mut self, frame: &[u8], tag: &[u8]) -> bool {
        frame.len() >= FRAME_LEN_PREFIX && self.open(&frame[FRAME_LEN_PREFIX..], tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits `wire` as a receiver does: the length prefix says where the
    /// tag is. Checks the first frame.
    fn receive_first(open: &mut RecordMac, wire: &[u8]) -> bool {
        let len = u32::from_le_bytes(wire[..4].try_into().unwrap()) as usize;
        if wire.len() < 4 + len || len < TAG_LEN {
            return false;
        }
        let (frame, tag) = wire[..4 + len].split_at(4 + len - TAG_LEN);
        open.open_frame(frame, tag)
    }

    #[test]
    fn a_frame_with_a_changed_length_prefix_fails_its_check() {
        let (.., hc, _) = exchange(&key(1), &key(1));
        let (mut seal, _) = hc.record_keys();
        let open = seal.clone();
        // len | seq | payload, then the tag.
        let payload = [0x42u8; 36];
        let len = (8 + payload.len() + TAG_LEN) as u32;
        let mut wire = len.to_le_bytes().to_vec();
        wire.extend_from_slice(&7u64.to_le_bytes());
        wire.extend_from_slice(&payload);
        let tag = seal.seal_frame(&wire);
        wire.extend_from_slice(&tag);
        wire.push(0x99);
        assert!(receive_first(&mut open.clone(), &wire));
        for l in [len - 1, len + 1, len - 8, 0, TAG_LEN as u32] {
            let mut w = wire.clone();
            w[..4].copy_from_slice(&l.to_le_bytes());
            assert!(!receive_first(&mut open.clone(), &w), "length {l}");
        }
        // Any other changed byte fails too.
        for i in 4..wire.len() - 1 {
            let mut w = wire.clone();
            w[i] ^= 0x10;
            assert!(!receive_first(&mut open.clone(), &w), "byte {i}");
        }
    }

    fn key(b: u8) -> ClusterKey {
        ClusterKey::new(&[b; 32]).unwrap()
    }

    fn exchange(kc: &ClusterKey, ka: &ClusterKey) -> (Hello, Challenge, Handshake, Handshake) {
        let hello = Hello {
            from: NodeId(1),
            inc: 11,
            to: NodeId(2),
            nonce: nonce(),
        };
        let ch = Challenge {
            inc: 22,
            nonce: nonce(),
        };
        let hc = Handshake::new(kc, &hello, &ch);
        let ha = Handshake::new(ka, &hello, &ch);
        (hello, ch, hc, ha)
    }

    #[test]
    fn short_keys_are_refused_and_never_printed() {
        assert!(ClusterKey::new(&[7; MIN_KEY_BYTES - 1]).is_err());
        let k = ClusterKey::new(b"0123456789abcdef-secret").unwrap();
        assert_eq!(format!("{k:?}"), "ClusterKey(23 bytes)");
    }

    #[test]
    fn hello_and_challenge_round_trip() {
        let (hello, ch, ..) = exchange(&key(1), &key(1));
        assert_eq!(Hello::decode(&hello.encode()), Some(hello));
        assert_eq!(Challenge::decode(&ch.encode()), Some(ch));
        let mut bad = hello.encode();
        bad[0] ^= 1;
        assert_eq!(Hello::decode(&bad), None);
        let mut old = hello.encode();
        old[..4].copy_from_slice(&0x444c_4d33u32.to_le_bytes());
        assert_eq!(Hello::decode(&old), None, "DLM3 hellos are refused");
    }

    #[test]
    fn both_sides_prove_the_key() {
        let (_, _, hc, ha) = exchange(&key(1), &key(1));
        assert!(ha.check_proof(&hc.proof()));
        assert_eq!(hc.check_welcome(&ha.welcome(42)), Some(42));
        // Without the key: neither proof passes.
        let (_, _, hc, ha) = exchange(&key(1), &key(2));
        assert!(!ha.check_proof(&hc.proof()));
        assert_eq!(hc.check_welcome(&ha.welcome(42)), None);
    }

    #[test]
    fn proofs_are_bound_to_every_field_of_the_exchange() {
        let k = key(1);
        let (hello, ch, hc, _) = exchange(&k, &k);
        let proof = hc.proof();
        let welcome = hc.welcome(5);
        let variants = [
            (
                Hello {
                    from: NodeId(3),
                    ..hello
                },
                ch,
            ),
            (Hello { inc: 12, ..hello }, ch),
            (
                Hello {
                    to: NodeId(4),
                    ..hello
                },
                ch,
            ),
            (
                Hello {
                    nonce: nonce(),
                    ..hello
                },
                ch,
            ),
            (hello, Challenge { inc: 23, ..ch }),
            (
                hello,
                Challenge {
                    nonce: nonce(),
                    ..ch
                },
            ),
        ];
        for (h, c) in variants {
            let other = Handshake::new(&k, &h, &c);
            assert!(!other.check_proof(&proof), "{h:?} {c:?}");
            assert_eq!(other.check_welcome(&welcome), None);
        }
        // A welcome's number cannot be changed, nor a proof passed off as
        // a welcome.
        let mut w = welcome;
        w[0] ^= 1;
        assert_eq!(hc.check_welcome(&w), None);
        let mut w2 = [0u8; WELCOME_LEN];
        w2[8..].copy_from_slice(&proof);
        assert_eq!(hc.check_welcome(&w2), None);
    }

    #[test]
    fn records_are_accepted_once_in_order_and_only_in_their_direction() {
        let k = key(1);
        let (_, _, hc, ha) = exchange(&k, &k);
        let (mut fc, mut ac) = hc.record_keys();
        let (mut fa, mut aa) = ha.record_keys();
        let t1 = fc.seal(b"one");
        let t2 = fc.seal(b"two");
        // Out of order, or altered: refused, and the counter stays.
        assert!(!fa.open(b"two", &t2));
        assert!(!fa.open(b"one", &t2));
        assert!(!fa.open(b"onE", &t1));
        assert!(!fa.open(b"one", &t1[..8]));
        assert!(fa.open(b"one", &t1));
        // Replayed: refused.
        assert!(!fa.open(b"one", &t1));
        assert!(fa.open(b"two", &t2));
        // A frame's tag is no acknowledgement's.
        let t3 = fc.seal(b"ack");
        assert!(!ac.clone().open(b"ack", &t3));
        let ta = aa.seal(b"ack");
        assert!(ac.open(b"ack", &ta));
        // Another connection (new nonces) has other keys.
        let (_, _, hc2, _) = exchange(&k, &k);
        let (mut f2, _) = hc2.record_keys();
        assert_ne!(f2.seal(b"one"), t1);
    }
}
