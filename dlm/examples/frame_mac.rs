//! `cargo run --release -p dlm --example frame_mac`: the cost of the
//! transport's frame tags — tagging and checking one frame of the size of
//! a DLM request (a remote lock + unlock moves four frames, so it pays
//! four tags and four checks). Frames are tagged without their length
//! prefix (`RecordMac::seal_frame`): the counter, number and payload of a
//! request fit one SHA-256 block. For comparison, the same frame tagged
//! with its prefix (as before), in alternating batches.
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
    // len | seq | payload of a 64-byte request frame (before its tag).
    let frame = [0x5au8; 48];
    let n = 100_000u32;
    let (mut framed, mut whole) = (Vec::new(), Vec::new());
    for _ in 0..21 {
        let t = Instant::now();
        for _ in 0..n {
            let tag = seal.seal_frame(&frame);
            assert!(open.open_frame(&frame, &tag));
        }
        framed.push(t.elapsed().as_nanos() / u128::from(n));
        let t = Instant::now();
        for _ in 0..n {
            let tag = seal.seal(&frame);
            assert!(open.open(&frame, &tag));
        }
        whole.push(t.elapsed().as_nanos() / u128::from(n));
    }
    framed.sort_unstable();
    whole.sort_unstable();
    println!(
        "tag + check of a {}-byte frame (medians of 21 batches): {} ns; with its length prefix: {} ns",
        frame.len() + 16,
        framed[10],
        whole[10]
    );
}
