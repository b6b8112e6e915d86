//! Replays the committed fuzz corpora (`cman/fuzz/corpus/<target>/`) and
//! the crash regressions (`cman/fuzz/regressions/<target>/`) through the
//! same harness `cargo fuzz` runs (`cman/fuzz/src/harness.rs`), so CI
//! exercises every input found without cargo-fuzz. An empty or missing
//! corpus fails.
//!
//! `write_seeds` (ignored; `cargo test -p cman --test fuzz_corpus --
//! --ignored write_seeds`) makes the seeds: packets from the crate's own
//! encoder, API lines as cman_tool and cmand write them, and the seed
//! cluster.conf files.

#[path = "../../clusterfs/tests/common/corpus.rs"]
mod corpus;
#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};

use cman::api::{ApiRequest, ApiResponse};
use cman::config::ClusterConf;
use cman::ids::{ClientId, Incarnation, Member, NodeId, ViewId};
use cman::proto::{Ack, Commit, GroupEntry, Heartbeat, Msg, Payload, Victim};
use cman::wire::Wire;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

#[test]
fn every_corpus_input_replays_without_a_panic() {
    corpus::replay_all(&fuzz_dir(), harness::TARGETS);
}

/// Some config inputs validate: the corpus reaches past the XML parser.
#[test]
fn some_config_seeds_validate() {
    let corpus = corpus::files(&fuzz_dir().join("corpus").join("config"));
    let ok = corpus
        .iter()
        .filter(|f| {
            let t = std::fs::read_to_string(f).unwrap_or_default();
            ClusterConf::parse(&t).is_ok()
        })
        .count();
    assert!(
        ok >= 2,
        "only {ok} of {} config inputs validate",
        corpus.len()
    );
}

fn m(id: u32, inc: u64) -> Member {
    Member {
        id: NodeId(id),
        inc: Incarnation(inc),
    }
}

fn samples() -> Vec<Msg> {
    let view = ViewId {
        seq: 4,
        coord: 1,
        coord_inc: 7,
    };
    let groups = vec![GroupEntry {
        group: "fence".into(),
        node: NodeId(2),
        client: ClientId(0),
    }];
    vec![
        Msg::Heartbeat(Heartbeat {
            view,
            alive: vec![NodeId(1), NodeId(2)],
            config_version: 3,
            stable: 9,
            leaving: false,
            victims: vec![m(3, 5)],
            fenced: vec![m(3, 4)],
            held: vec!["dlm_controld 1234".into()],
        }),
        Msg::Propose {
            view,
            members: vec![m(1, 7), m(2, 8)],
        },
        Msg::Nack {
            view,
            promised: ViewId { seq: 5, ..view },
        },
        Msg::Ack(Box::new(Ack {
            view,
            old_view: ViewId::default(),
            stable: 2,
            groups: groups.clone(),
            victims: vec![Victim { member: m(3, 5) }],
            missing: vec![(m(3, 5), true)],
            dead: vec![m(3, 5)],
            fenced: vec![],
            expected: Some(2),
        })),
        Msg::Commit(Box::new(Commit {
            view,
            members: vec![m(1, 7), m(2, 8)],
            cuts: vec![(ViewId::default(), 3)],
            groups,
            victims: vec![],
            dead: vec![],
            fenced: vec![m(3, 5)],
            expected: None,
        })),
        Msg::Submit {
            view,
            oseq: 1,
            base: 1,
            payload: Payload::Data {
                group: "rgmanager".into(),
                client: ClientId(3),
                data: "hello".into(),
            },
        },
        Msg::Deliver {
            view,
            seq: 1,
            origin: m(2, 8),
            oseq: 1,
            stable: 0,
            payload: Payload::Fenced {
                victim: m(3, 5),
                how: "fence_manual".into(),
            },
        },
        Msg::Received { view, upto: 1 },
        Msg::Stable { view, upto: 1 },
        Msg::ConfigRequest,
        Msg::Evicted { member: m(2, 8) },
    ]
}

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), data).unwrap();
}

/// Packets of one input: `u16` length then the packet, for each.
fn stream(pkts: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pkts {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Writes seed inputs.
#[test]
#[ignore = "writes the seed corpora; run by hand"]
fn write_seeds() {
    let seed_conf = std::fs::read_to_string("/work/shared/seed/cluster.conf").ok();
    let mut msgs = samples();
    if let Some(t) = &seed_conf {
        msgs.push(Msg::ConfigData { text: t.clone() });
    }
    let mut tx = Wire::new(harness::KEY, harness::CLUSTER, m(2, 8)).unwrap();
    let pkts: Vec<Vec<u8>> = msgs.iter().map(|msg| tx.encode(msg).unwrap()).collect();
    for (i, p) in pkts.iter().enumerate() {
        // As sent (even mode), and without the MAC (odd mode).
        let mut a = vec![0u8];
        a.extend_from_slice(&stream(std::slice::from_ref(p)));
        write("wire", &format!("pkt-{i:02}"), &a);
        let mut b = vec![1u8];
        b.extend_from_slice(&stream(&[p[..p.len() - 32].to_vec()]));
        write("wire", &format!("body-{i:02}"), &b);
    }
    let mut all = vec![0u8];
    all.extend_from_slice(&stream(&pkts));
    write("wire", "all", &all);

    let reqs = [
        ApiRequest::Status,
        ApiRequest::Join {
            group: "fence".into(),
        },
        ApiRequest::Leave {
            group: "fence".into(),
        },
        ApiRequest::Send {
            group: "rgmanager".into(),
            data: "{\"x\":1}".into(),
        },
        ApiRequest::Subscribe,
        ApiRequest::Expected { votes: 2 },
        ApiRequest::ConfigUpdate {
            text: seed_conf.clone().unwrap_or_default(),
        },
        ApiRequest::GetConfig,
        ApiRequest::FenceOverride {
            node: "node2".into(),
            how: "override".into(),
        },
        ApiRequest::LeaveCluster,
        ApiRequest::FenceDomain { join: true },
    ];
    let mut lines = String::new();
    for (i, r) in reqs.iter().enumerate() {
        let l = serde_json::to_string(r).unwrap();
        write("api", &format!("req-{i:02}"), l.as_bytes());
        lines.push_str(&l);
        lines.push('\n');
    }
    let resp = ApiResponse {
        ok: false,
        error: Some("bad request".into()),
        ..Default::default()
    };
    lines.push_str(&serde_json::to_string(&resp).unwrap());
    lines.push('\n');
    write("api", "session", lines.as_bytes());

    if let Some(t) = &seed_conf {
        write("config", "seed-cluster.conf", t.as_bytes());
        let conf = ClusterConf::parse(t).unwrap();
        write("config", "seed-rewritten", conf.to_document().as_bytes());
    }
    let made = cman::config::create("fuzz", true);
    write("config", "ccs-create", made.as_bytes());
}
