//! `cargo run --release -p dlm --example remote_cpu`: the CPU cost of a
//! remote lock+unlock without the network: two state machines, messages
//! encoded and decoded as the driver does, delivered by hand. What is left
//! of `remote_ns` beyond this and the TCP round trips is waiting.
use dlm::node::{Action, Node};
use dlm::wire::Envelope;
use dlm::{Flags, Mode, NodeId, ResName};

fn pump(nodes: &mut [Node; 2], mut out: Vec<(usize, Action)>, buf: &mut Vec<u8>) -> usize {
    let mut asts = 0;
    while let Some((at, a)) = out.pop() {
        match a {
            Action::Send { to, env } => {
                buf.clear();
                env.encode(buf);
                let env = Envelope::decode(buf).expect("decode");
                let dst = (to.0 - 1) as usize;
                let mut o = Vec::new();
                nodes[dst].receive(NodeId(at as u32 + 1), env, &mut o);
                out.extend(o.into_iter().map(|a| (dst, a)));
            }
            Action::Ast { .. } => asts += 1,
            _ => {}
        }
    }
    asts
}

fn main() {
    let m = [NodeId(1), NodeId(2)];
    let mut nodes = [
        Node::with_members(m[0], 1, &m),
        Node::with_members(m[1], 1, &m),
    ];
    // A name whose directory node is node 2, locked by node 2 first: node 2
    // masters it, node 1 is the remote client.
    let name = (0..)
        .map(|i| ResName::new(format!("remote-{i}").as_bytes()).unwrap())
        .find(|n| nodes[0].dir_node(n) == Some(NodeId(2)))
        .unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let id = nodes[1]
        .lock(name, Mode::Ex, Flags::empty(), None, &mut out)
        .unwrap();
    pump(
        &mut nodes,
        out.drain(..).map(|a| (1, a)).collect(),
        &mut buf,
    );
    nodes[1].unlock(id, Flags::empty(), None, &mut out).unwrap();
    pump(
        &mut nodes,
        out.drain(..).map(|a| (1, a)).collect(),
        &mut buf,
    );
    let n: u64 = 1_000_000;
    let t = std::time::Instant::now();
    for _ in 0..n {
        let id = nodes[0]
            .lock(name, Mode::Ex, Flags::empty(), None, &mut out)
            .unwrap();
        let a = pump(
            &mut nodes,
            out.drain(..).map(|a| (0, a)).collect(),
            &mut buf,
        );
        nodes[0].unlock(id, Flags::empty(), None, &mut out).unwrap();
        let b = pump(
            &mut nodes,
            out.drain(..).map(|a| (0, a)).collect(),
            &mut buf,
        );
        assert_eq!(a + b, 2);
    }
    println!(
        "{} ns CPU per remote lock+unlock (4 messages)",
        t.elapsed().as_nanos() as u64 / n
    );
}
