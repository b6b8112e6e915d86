//! What each cman fuzz target does with its input, shared by the targets
//! (`fuzz_targets/*.rs`, run by `cargo fuzz`) and by the replay test
//! `cman/tests/fuzz_corpus.rs` (CI, stable), which `#[path]`-includes this
//! file. Parsers return errors on bad input, never panic or allocate
//! without bound; what parses writes back to itself.

use cman::api::{ApiRequest, ApiResponse};
use cman::config::ClusterConf;
use cman::config::{add_node, del_node, NewNode};
use cman::ids::{Incarnation, Member, NodeId};
use cman::wire::Wire;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A target: its name (the corpus directory name) and what it runs.
pub type Target = (&'static str, fn(&[u8]));

/// The targets.
pub const TARGETS: &[Target] = &[("wire", wire), ("api", api), ("config", config)];

/// The key and cluster name of the fuzzed receiver.
pub const KEY: &[u8] = b"fuzz-cluster-key-0123456789abcdef";
/// Its cluster name.
pub const CLUSTER: &str = "fuzz";

fn receiver() -> Wire {
    let me = Member {
        id: NodeId(1),
        inc: Incarnation(1),
    };
    Wire::new(KEY, CLUSTER, me).expect("key")
}

/// The MAC a packet `data` (everything before its MAC) carries: HMAC-SHA256
/// of the cluster name, a NUL, and `data` (the layout of `cman::wire`).
pub fn mac(data: &[u8]) -> [u8; 32] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(KEY).expect("key");
    m.update(CLUSTER.as_bytes());
    m.update(&[0]);
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Packets between nodes: the input's first byte says whether the rest is
/// a packet as it comes (even) or a packet without its MAC, given the
/// right one so the JSON body behind it is reached (odd). Packets are fed
/// one by one (`u16` big-endian length before each) to one receiver, so
/// its replay window is exercised too; what decodes re-encodes to itself.
pub fn wire(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut rx = receiver();
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let pkt = &rest[2..2 + n.min(rest.len() - 2)];
        rest = &rest[2 + pkt.len()..];
        let mut p = pkt.to_vec();
        if mode & 1 == 1 {
            let tag = mac(&p);
            p.extend_from_slice(&tag);
        }
        if let Ok((from, msg)) = rx.decode(&p) {
            let mut tx = Wire::new(KEY, CLUSTER, from).expect("key");
            let again = tx.encode(&msg).expect("a decoded message re-encodes");
            let (from2, msg2) = receiver().decode(&again).expect("re-encoded packet");
            assert_eq!((from2, msg2), (from, msg));
        }
    }
}

/// Lines of cmand's local API as the server reads them (requests), and as
/// a client reads them (responses and events).
pub fn api(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        if let Ok(req) = serde_json::from_str::<ApiRequest>(line) {
            let text = serde_json::to_string(&req).expect("request");
            assert_eq!(
                serde_json::from_str::<ApiRequest>(&text).expect("re-read"),
                req
            );
        }
        if let Ok(resp) = serde_json::from_str::<ApiResponse>(line) {
            let text = serde_json::to_string(&resp).expect("response");
            assert_eq!(
                serde_json::from_str::<ApiResponse>(&text).expect("re-read"),
                resp
            );
        }
    }
}

/// cluster.conf text: parsed and validated; what validates is written back
/// (`to_document`) and must parse and write back to the same text, and `ccs_tool`'s
/// addnode and delnode edits run on it.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(conf) = ClusterConf::parse(text) else {
        return;
    };
    // Written back, it parses again and writes the same text (the parsed
    // structs differ only in the line numbers they remember).
    let doc = conf.to_document();
    let back = ClusterConf::parse(&doc).expect("a written config parses");
    assert_eq!(back.to_document(), doc);
    assert_eq!(back.nodes.len(), conf.nodes.len());
    let node = NewNode {
        name: "fuzz-new-node".into(),
        ..Default::default()
    };
    let _ = add_node(text, &node);
    if let Some(n) = conf.nodes.first() {
        let _ = del_node(text, &n.name);
    }
}
