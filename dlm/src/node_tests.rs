//! Node state machine tests: local fast path, directory lookups, message
//! flow between a few nodes delivered by hand, recovery details.

use super::*;

fn name(s: &str) -> ResName {
    ResName::new(s.as_bytes()).unwrap()
}

fn ids(n: u32) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

/// Delivers every Send until quiet; returns the asts seen per node.
fn pump(nodes: &mut [Node], mut pending: Vec<(NodeId, Action)>) -> Vec<(NodeId, Action)> {
    let mut seen = Vec::new();
    while !pending.is_empty() {
        let (at, a) = pending.remove(0);
        match a {
            Action::Send { to, env } => {
                let mut out = Vec::new();
                let n = nodes.iter_mut().find(|n| n.id() == to).unwrap();
                n.receive(at, env, &mut out);
                pending.extend(out.into_iter().map(|a| (to, a)));
            }
            other => seen.push((at, other)),
        }
    }
    seen
}

fn tag(at: NodeId, out: Vec<Action>) -> Vec<(NodeId, Action)> {
    out.into_iter().map(|a| (at, a)).collect()
}

fn find_name_with_dir(members: &[NodeId], dir: NodeId) -> ResName {
    (0..1000)
        .map(|i| name(&format!("res{i}")))
        .find(|n| dir_node(members, n) == Some(dir))
        .unwrap()
}

#[test]
fn local_directory_and_master_means_no_messages() {
    let m = ids(3);
    let mut n = Node::with_members(NodeId(1), 1, &m);
    let r = find_name_with_dir(&m, NodeId(1));
    let mut out = Vec::new();
    let id = n.lock(r, Mode::Ex, Flags::empty(), None, &mut out).unwrap();
    assert_eq!(
        out,
        vec![Action::Ast {
            id,
            status: Status::Granted(Mode::Ex),
            sbflags: SbFlags::default(),
            lvb: None
        }]
    );
    out.clear();
    n.unlock(id, Flags::empty(), None, &mut out).unwrap();
    assert!(matches!(
        out[..],
        [Action::Ast {
            status: Status::Unlocked,
            ..
        }]
    ));
}

#[test]
fn remote_directory_makes_first_user_master() {
    let m = ids(3);
    let mut nodes: Vec<Node> = m.iter().map(|&i| Node::with_members(i, 1, &m)).collect();
    let r = find_name_with_dir(&m, NodeId(3));
    // Node 2 uses r first: it becomes master (lookup to node 3).
    let mut out = Vec::new();
    let a = nodes[1]
        .lock(r, Mode::Pr, Flags::empty(), None, &mut out)
        .unwrap();
    assert!(matches!(&out[..], [Action::Send { to: NodeId(3), .. }]));
    let seen = pump(&mut nodes, tag(NodeId(2), out));
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(
        matches!(seen[0], (NodeId(2), Action::Ast { id, status: Status::Granted(Mode::Pr), .. }) if id == a)
    );
    assert!(nodes[1].rsbs[&r].core.is_some());
    // Second lock on node 2: local master, no message at all.
    let mut out = Vec::new();
    nodes[1]
        .lock(r, Mode::Cr, Flags::empty(), None, &mut out)
        .unwrap();
    assert!(matches!(
        &out[..],
        [Action::Ast {
            status: Status::Granted(Mode::Cr),
            ..
        }]
    ));
    // Node 1 asks for EX: lookup, request to node 2, bast to node 2's PR.
    let mut out = Vec::new();
    let b = nodes[0]
        .lock(r, Mode::Ex, Flags::empty(), None, &mut out)
        .unwrap();
    let seen = pump(&mut nodes, tag(NodeId(1), out));
    assert!(
        seen.iter()
            .any(|s| matches!(s, (NodeId(2), Action::Bast { id, mode: Mode::Ex }) if *id == a)),
        "{seen:?}"
    );
    assert!(nodes[0].lock_info(b).unwrap().grmode.is_none());
}

#[test]
fn lookup_waiters_are_issued_once_master_is_known() {
    let m = ids(4);
    let mut nodes: Vec<Node> = m.iter().map(|&i| Node::with_members(i, 1, &m)).collect();
    let r = find_name_with_dir(&m, NodeId(4));
    let mut out = Vec::new();
    nodes[2]
        .lock(r, Mode::Pr, Flags::empty(), None, &mut out)
        .unwrap();
    nodes[2]
        .lock(r, Mode::Pw, Flags::empty(), None, &mut out)
        .unwrap();
    let seen = pump(&mut nodes, tag(NodeId(3), out));
    let grants: Vec<_> = seen
        .iter()
        .filter(|s| {
            matches!(
                s.1,
                Action::Ast {
                    status: Status::Granted(_),
                    ..
                }
            )
        })
        .collect();
    assert_eq!(grants.len(), 1, "{seen:?}");
}
