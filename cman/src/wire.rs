//! Authenticated packets between nodes.
//!
//! Layout: `"CMN1"` | sender node id (u32 BE) | incarnation (u64 BE) |
//! packet sequence (u64 BE) | body (JSON [`Msg`]) | HMAC-SHA256 (32 bytes)
//! over the cluster name and everything before the MAC. A receiver drops a
//! packet with a bad MAC, from an older incarnation than one already seen,
//! or whose sequence number it has already accepted (replay window of 64).

use crate::ids::{Incarnation, Member, NodeId};
use crate::proto::Msg;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::BTreeMap;

const MAGIC: &[u8; 4] = b"CMN1";
const HEADER: usize = 4 + 4 + 8 + 8;
const MAC_LEN: usize = 32;
/// Largest packet sent or accepted.
pub const MAX_PACKET: usize = 65_000;
/// Shortest key accepted.
pub const MIN_KEY_BYTES: usize = 16;

/// Why a packet was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Too short, too long or wrong magic.
    #[error("malformed packet")]
    Malformed,
    /// The MAC does not match: wrong key, other cluster, or forged.
    #[error("bad authentication code")]
    BadMac,
    /// Already seen, or from an older incarnation.
    #[error("replayed packet")]
    Replay,
    /// The body is not a message.
    #[error("bad message body: {0}")]
    Body(String),
    /// The message does not fit in a packet.
    #[error("message of {0} bytes is too large")]
    TooLarge(usize),
    /// The key is unusable.
    #[error("authentication key shorter than {MIN_KEY_BYTES} bytes")]
    ShortKey,
}

#[derive(Clone, Debug)]
struct ReplayState {
    inc: Incarnation,
    highest: u64,
    window: u64,
}

/// Encodes and checks packets for one node.
pub struct Wire {
    key: Vec<u8>,
    cluster: String,
    me: Member,
    next_seq: u64,
    seen: BTreeMap<NodeId, ReplayState>,
}

impl Wire {
    /// A codec for node `me` of cluster `cluster` with shared `key`.
    pub fn new(key: &[u8], cluster: &str, me: Member) -> Result<Wire, WireError> {
        if key.len() < MIN_KEY_BYTES {
            return Err(WireError::ShortKey);
        }
        Ok(Wire {
            key: key.to_vec(),
            cluster: cluster.to_string(),
            me,
            next_seq: 1,
            seen: BTreeMap::new(),
        })
    }

    fn mac(&self, data: &[u8]) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        m.update(self.cluster.as_bytes());
        m.update(&[0]);
        m.update(data);
        m
    }

    /// A packet carrying `msg`.
    pub fn encode(&mut self, msg: &Msg) -> Result<Vec<u8>, WireError> {
        let body = serde_json::to_vec(msg).map_err(|e| WireError::Body(e.to_string()))?;
        let len = HEADER + body.len() + MAC_LEN;
        if len > MAX_PACKET {
            return Err(WireError::TooLarge(len));
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.me.id.0.to_be_bytes());
        out.extend_from_slice(&self.me.inc.0.to_be_bytes());
        out.extend_from_slice(&self.next_seq.to_be_bytes());
        self.next_seq += 1;
        out.extend_from_slice(&body);
        let tag = self.mac(&out).finalize().into_bytes();
        out.extend_from_slice(&tag);
        Ok(out)
    }

    /// Checks and decodes a packet.
    pub fn decode(&mut self, pkt: &[u8]) -> Result<(Member, Msg), WireError> {
        if pkt.len() < HEADER + MAC_LEN || pkt.len() > MAX_PACKET || &pkt[..4] != MAGIC {
            return Err(WireError::Malformed);
        }
        let (data, tag) = pkt.split_at(pkt.len() - MAC_LEN);
        self.mac(data)
            .verify_slice(tag)
            .map_err(|_| WireError::BadMac)?;
        let id = NodeId(u32::from_be_bytes(data[4..8].try_into().expect("4 bytes")));
        let inc = Incarnation(u64::from_be_bytes(data[8..16].try_into().expect("8 bytes")));
        let seq = u64::from_be_bytes(data[16..24].try_into().expect("8 bytes"));
        self.check_replay(id, inc, seq)?;
        let msg: Msg =
            serde_json::from_slice(&data[HEADER..]).map_err(|e| WireError::Body(e.to_string()))?;
        Ok((Member { id, inc }, msg))
    }

    fn check_replay(&mut self, id: NodeId, inc: Incarnation, seq: u64) -> Result<(), WireError> {
        let st = self.seen.entry(id).or_insert(ReplayState {
            inc,
            highest: 0,
            window: 0,
        });
        if inc < st.inc {
            return Err(WireError::Replay);
        }
        if inc > st.inc {
            *st = ReplayState {
                inc,
                highest: 0,
                window: 0,
            };
        }
        if seq > st.highest {
            let shift = seq - st.highest;
            st.window = if shift >= 64 { 0 } else { st.window << shift };
            st.window |= 1;
            st.highest = seq;
            return Ok(());
        }
        let age = st.highest - seq;
        if age >= 64 || st.window & (1 << age) != 0 {
            return Err(WireError::Replay);
        }
        st.window |= 1 << age;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Heartbeat, Msg};

    fn hb() -> Msg {
        Msg::Heartbeat(Heartbeat {
            view: Default::default(),
            alive: vec![NodeId(1)],
            config_version: 3,
            stable: 0,
            leaving: false,
            victims: vec![],
            fenced: vec![],
            held: vec![],
        })
    }

    fn pair() -> (Wire, Wire) {
        let key = b"0123456789abcdef0123";
        let a = Member {
            id: NodeId(1),
            inc: Incarnation(5),
        };
        let b = Member {
            id: NodeId(2),
            inc: Incarnation(9),
        };
        (
            Wire::new(key, "c", a).unwrap(),
            Wire::new(key, "c", b).unwrap(),
        )
    }

    #[test]
    fn roundtrip_and_replay() {
        let (mut a, mut b) = pair();
        let p1 = a.encode(&hb()).unwrap();
        let p2 = a.encode(&hb()).unwrap();
        assert_eq!(b.decode(&p2).unwrap().1, hb());
        assert_eq!(b.decode(&p1).unwrap().0.id, NodeId(1), "reordered is fine");
        assert_eq!(b.decode(&p1), Err(WireError::Replay));
        assert_eq!(b.decode(&p2), Err(WireError::Replay));
    }

    #[test]
    fn forged_and_wrong_key_and_other_cluster() {
        let (mut a, mut b) = pair();
        let mut p = a.encode(&hb()).unwrap();
        p[30] ^= 1;
        assert_eq!(b.decode(&p), Err(WireError::BadMac));
        let me = Member {
            id: NodeId(3),
            inc: Incarnation(1),
        };
        let mut other_key = Wire::new(b"another key 12345678", "c", me).unwrap();
        assert_eq!(
            b.decode(&other_key.encode(&hb()).unwrap()),
            Err(WireError::BadMac)
        );
        let mut other_cluster = Wire::new(b"0123456789abcdef0123", "d", me).unwrap();
        assert_eq!(
            b.decode(&other_cluster.encode(&hb()).unwrap()),
            Err(WireError::BadMac)
        );
    }

    #[test]
    fn old_incarnation_is_refused() {
        let key = b"0123456789abcdef0123";
        let mut b = Wire::new(
            key,
            "c",
            Member {
                id: NodeId(2),
                inc: Incarnation(1),
            },
        )
        .unwrap();
        let mut old = Wire::new(
            key,
            "c",
            Member {
                id: NodeId(1),
                inc: Incarnation(1),
            },
        )
        .unwrap();
        let mut new = Wire::new(
            key,
            "c",
            Member {
                id: NodeId(1),
                inc: Incarnation(2),
            },
        )
        .unwrap();
        let stale = old.encode(&hb()).unwrap();
        b.decode(&new.encode(&hb()).unwrap()).unwrap();
        assert_eq!(b.decode(&stale), Err(WireError::Replay));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (_, mut b) = pair();
        for junk in [&b""[..], b"CMN1", &[0u8; 100][..], &[0xffu8; 70_000][..]] {
            assert!(b.decode(junk).is_err());
        }
        assert!(Wire::new(
            b"short",
            "c",
            Member {
                id: NodeId(1),
                inc: Incarnation(1)
            }
        )
        .is_err());
    }
}
