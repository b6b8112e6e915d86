//! `cargo run --release -p dlm --example frame_mac`: the cost of the
//! transport's frame tags — tagging and checking one frame of the size of
//! a DLM request (a remote lock + unlock moves four frames, so it pays
//! four tags and four checks).
use dlm::driver::transport::auth::{Challenge, Handshake, Hello};
use dlm::{ClusterKey, NodeId};
use std::time::Instant;

fn main() {
    let key = ClusterKey::new(&[7; 32]).unwrap();
    let hello = Hello {
        from: NodeId(1),
        inc: 1,
        to: NodeId(2),
        nonce: [1; 16],
    };
    let ch = Challenge {
        inc: 2,
        nonce: [2; 16],
    };
    let (mut seal, _) = Handshake::new(&key, &hello, &ch).record_keys();
    let (mut open, _) = Handshake::new(&key, &hello, &ch).record_keys();
    let frame = [0x5au8; 48];
    let n = 1_000_000u32;
    let t = Instant::now();
    for _ in 0..n {
        let tag = seal.seal(&frame);
        assert!(open.open(&frame, &tag));
    }
    let per = t.elapsed() / n;
    println!(
        "tag + check of a {}-byte frame: {} ns",
        frame.len(),
        per.as_nanos()
    );
}
