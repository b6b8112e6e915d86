//! The dlm's membership source on cmand's process groups.
//!
//! A [`CmanMembership`] joins the group `dlm:ls:NAME` through a node's
//! `cmand` and turns what it hears into [`dlm::membership::MembershipEvent`]s:
//! every group membership change (confchg) becomes a `View`; a node that
//! failed is reported `Fenced` only when cmand says `NodeFenced` for it (a
//! failed node shows up in the confchg before it is fenced, and its locks
//! must not be recovered before); a node whose processes left cleanly is
//! reported `Fenced` right after the view that removes it.
//!
//! Node ids: a cmand node id is the dlm node id. The dlm's peer addresses
//! come from cluster.conf node names, IP addresses or host names resolved
//! as cmand resolves them ([`crate::hosts`], [`CmanMembership::peer_addrs`]).
//!
//! Generations must be the same at every node for the same view (the dlm
//! drops messages of older generations). A generation is the cluster view
//! sequence (global) in the high 32 bits and, in the low bits, where the
//! group change sits in that view's agreed order (0 for a change that came
//! with the view, else the agreed sequence number of the join or leave):
//! every member sees the same pair for the same change, and it grows with
//! every change, joins and clean leaves alike.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dlm::membership::{Listener, Membership, MembershipEvent};
use parking_lot::{Condvar, Mutex};

use crate::api::{ApiError, ApiEvent, ApiRequest, Client};
use crate::hosts::Resolver;
use crate::ids::{ClientId, NodeId};
use crate::node::{ClusterEvent, GroupEvent, NodeInfo};

/// Errors of the cman membership source.
#[derive(Debug, thiserror::Error)]
pub enum DlmMembershipError {
    /// Talking to cmand failed.
    #[error("cmand: {0}")]
    Api(#[from] ApiError),
    /// The group did not report this process as a member in time.
    #[error("joining group {0}: no membership from cmand within {1:?}")]
    Timeout(String, Duration),
}

/// The group a lockspace's members join.
pub fn group_name(lockspace: &str) -> String {
    format!("dlm:ls:{lockspace}")
}

/// The sans-IO part: cman events in, dlm membership events out.
#[derive(Debug, Default)]
pub struct Translator {
    gen: u64,
    members: BTreeSet<NodeId>,
    /// Failed nodes whose fencing is awaited.
    pending: BTreeSet<NodeId>,
    /// Nodes cmand reported fenced before their confchg arrived.
    fenced_early: BTreeSet<NodeId>,
    started: bool,
}

fn dlm_id(n: NodeId) -> dlm::NodeId {
    dlm::NodeId(n.0)
}

impl Translator {
    /// Current view (generation, sorted members), once a confchg arrived.
    pub fn view(&self) -> Option<(u64, Vec<dlm::NodeId>)> {
        self.started
            .then(|| (self.gen, self.members.iter().map(|n| dlm_id(*n)).collect()))
    }

    /// Nodes failed and not yet fenced.
    pub fn awaiting_fence(&self) -> Vec<dlm::NodeId> {
        self.pending.iter().map(|n| dlm_id(*n)).collect()
    }

    /// A group confchg of cluster view `view_seq`, at position `seq` of
    /// its agreed order.
    pub fn confchg(
        &mut self,
        view_seq: u64,
        seq: u64,
        members: &[(NodeId, ClientId)],
        failed: &[NodeId],
    ) -> Vec<MembershipEvent> {
        let gen = (view_seq << 32) | (seq & 0xffff_ffff);
        let now: BTreeSet<NodeId> = members.iter().map(|(n, _)| *n).collect();
        if self.started && now == self.members {
            return Vec::new();
        }
        if self.started && gen <= self.gen {
            tracing::warn!(
                gen,
                last = self.gen,
                "group change without a higher generation; withheld"
            );
            return Vec::new();
        }
        let gone: Vec<NodeId> = self.members.difference(&now).copied().collect();
        self.gen = gen;
        self.members = now;
        self.started = true;
        for n in &self.members {
            self.pending.remove(n);
            self.fenced_early.remove(n);
        }
        let mut out = vec![MembershipEvent::View {
            gen,
            members: self.members.iter().map(|n| dlm_id(*n)).collect(),
        }];
        for n in gone {
            if failed.contains(&n) && !self.fenced_early.remove(&n) {
                self.pending.insert(n);
            } else {
                out.push(MembershipEvent::Fenced(dlm_id(n)));
            }
        }
        out
    }

    /// cmand reports node `n` fenced.
    pub fn fenced(&mut self, n: NodeId) -> Vec<MembershipEvent> {
        if self.pending.remove(&n) {
            return vec![MembershipEvent::Fenced(dlm_id(n))];
        }
        if !self.members.contains(&n) {
            self.fenced_early.insert(n);
        }
        Vec::new()
    }
}

struct Shared {
    tr: Translator,
    listeners: Vec<Listener>,
    closed: bool,
    /// Called once when the connection to cmand is gone.
    on_lost: Vec<Box<dyn FnOnce() + Send>>,
    /// Ends the connection for [`CmanMembership::leave`].
    closer: Option<std::os::unix::net::UnixStream>,
    /// We left: the connection's end is no loss.
    leaving: bool,
}

/// The address of each node; a node whose name does not resolve is left
/// out (the dlm cannot reach it) and logged.
fn resolve_peers(nodes: &[NodeInfo], resolver: &Resolver) -> HashMap<NodeId, IpAddr> {
    nodes
        .iter()
        .filter_map(|n| match resolver.resolve(&n.name) {
            Ok(ip) => Some((n.id, ip)),
            Err(e) => {
                tracing::error!(error = %e, "dlm peer without an address");
                None
            }
        })
        .collect()
}

/// A [`Membership`] fed by a node's cmand (see the module docs).
pub struct CmanMembership {
    state: Mutex<Shared>,
    cond: Condvar,
    /// This node's cmand node id.
    pub node: NodeId,
    peers: HashMap<NodeId, IpAddr>,
}

impl CmanMembership {
    /// Joins group `group` through the cmand of `state_dir` and waits (up to
    /// `timeout`) for the first membership; events are then read by a
    /// background thread for as long as cmand keeps the connection.
    pub fn join(
        state_dir: &Path,
        group: &str,
        timeout: Duration,
    ) -> Result<Arc<CmanMembership>, DlmMembershipError> {
        let mut client = Client::connect(state_dir)?;
        client.request(&ApiRequest::Subscribe)?;
        let status = client.status()?;
        let peers = resolve_peers(&status.nodes, &Resolver::from_env());
        client.request(&ApiRequest::Join {
            group: group.to_string(),
        })?;
        let closer = client.closer()?;
        let m = Arc::new(CmanMembership {
            state: Mutex::new(Shared {
                tr: Translator::default(),
                listeners: Vec::new(),
                closed: false,
                on_lost: Vec::new(),
                closer: Some(closer),
                leaving: false,
            }),
            cond: Condvar::new(),
            node: status.node_id,
            peers,
        });
        let m2 = m.clone();
        let group = group.to_string();
        let g2 = group.clone();
        std::thread::Builder::new()
            .name("dlm-cman".into())
            .spawn(move || m2.run(client, &g2))
            .map_err(|e| ApiError::Io("thread".into(), e))?;
        let deadline = Instant::now() + timeout;
        let mut s = m.state.lock();
        while s.tr.view().is_none() && !s.closed {
            if m.cond.wait_until(&mut s, deadline).timed_out() {
                return Err(DlmMembershipError::Timeout(group, timeout));
            }
        }
        if s.closed {
            return Err(ApiError::Closed.into());
        }
        drop(s);
        Ok(m)
    }

    /// The dlm address of every configured node (named by an IP address or
    /// by a name that resolves, see [`crate::hosts`]), at `port`.
    pub fn peer_addrs(&self, port: u16) -> HashMap<dlm::NodeId, SocketAddr> {
        self.peers
            .iter()
            .map(|(n, ip)| (dlm_id(*n), SocketAddr::new(*ip, port)))
            .collect()
    }

    /// This node's id for the dlm.
    pub fn dlm_node(&self) -> dlm::NodeId {
        dlm_id(self.node)
    }

    /// Current view, if any.
    pub fn view(&self) -> Option<(u64, Vec<dlm::NodeId>)> {
        self.state.lock().tr.view()
    }

    fn run(&self, mut client: Client, group: &str) {
        let mut view_seq = 0;
        loop {
            let ev = match client.next_event() {
                Ok(ev) => ev,
                Err(_) if self.state.lock().leaving => {
                    tracing::info!(group, "left the group");
                    break;
                }
                Err(e) => {
                    tracing::error!(error = %e, "dlm membership: lost cmand");
                    break;
                }
            };
            let out = match ev {
                ApiEvent::Group(GroupEvent::Confchg {
                    group: g,
                    members,
                    failed,
                    seq,
                    view_seq: event_view,
                    ..
                }) if g == group => {
                    // The confchg is emitted before the view notification of
                    // the same commit: ask for the installed view.
                    match client.status() {
                        Ok(s) => view_seq = view_seq.max(s.view.seq),
                        Err(e) => {
                            tracing::error!(error = %e, "dlm membership: status");
                            break;
                        }
                    }
                    // An older cmand sends no view of its own.
                    let v = if event_view > 0 { event_view } else { view_seq };
                    self.state.lock().tr.confchg(v, seq, &members, &failed)
                }
                ApiEvent::Cluster(ClusterEvent::View { view, .. }) => {
                    view_seq = view_seq.max(view.seq);
                    Vec::new()
                }
                ApiEvent::Cluster(ClusterEvent::NodeFenced { victim, .. }) => {
                    self.state.lock().tr.fenced(victim.id)
                }
                _ => Vec::new(),
            };
            self.publish(out);
        }
        let lost = {
            let mut s = self.state.lock();
            s.closed = true;
            std::mem::take(&mut s.on_lost)
        };
        self.cond.notify_all();
        for f in lost {
            f();
        }
    }

    /// Calls `f` once the connection to cmand is gone (at once if it is
    /// gone already): from then on this node's membership is unknown, and
    /// a process that writes shared storage must stop (withdraw) before
    /// the other nodes fence this one and take over.
    pub fn on_lost(&self, f: Box<dyn FnOnce() + Send>) {
        let mut s = self.state.lock();
        if s.closed {
            drop(s);
            f();
        } else {
            s.on_lost.push(f);
        }
    }

    /// Leaves the group without waiting: ends the connection to cmand,
    /// which takes the client as gone and tells the other members that
    /// this node left (not failed: nobody fences it), so their lockspace
    /// recovers without it. For a process that must stop sharing at once
    /// (a withdrawing mount); the callbacks given to
    /// [`CmanMembership::on_lost`] still run.
    pub fn leave(&self) {
        let mut s = self.state.lock();
        s.leaving = true;
        if let Some(c) = s.closer.take() {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    /// True once the connection to cmand is gone.
    pub fn lost(&self) -> bool {
        self.state.lock().closed
    }

    fn publish(&self, events: Vec<MembershipEvent>) {
        if events.is_empty() {
            return;
        }
        let listeners = self.state.lock().listeners.clone();
        self.cond.notify_all();
        for ev in events {
            tracing::info!(?ev, "dlm membership event");
            for l in &listeners {
                l(ev.clone());
            }
        }
    }
}

impl Membership for CmanMembership {
    fn subscribe(&self, listener: Listener) {
        let mut s = self.state.lock();
        if let Some((gen, members)) = s.tr.view() {
            listener(MembershipEvent::View { gen, members });
        }
        s.listeners.push(listener);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ids: &[u32]) -> Vec<(NodeId, ClientId)> {
        ids.iter().map(|i| (NodeId(*i), ClientId(1))).collect()
    }

    fn view(gen: u64, ids: &[u32]) -> MembershipEvent {
        MembershipEvent::View {
            gen,
            members: ids.iter().map(|i| dlm::NodeId(*i)).collect(),
        }
    }

    fn info(id: u32, name: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId(id),
            name: name.into(),
            votes: 1,
            status: "M".into(),
            inc: 0,
            joined_ms_ago: None,
            last_fenced: None,
            held: Vec::new(),
        }
    }

    #[test]
    fn peers_named_by_ip_or_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "192.168.10.2 RealServer2 # standby\n").unwrap();
        let nodes = [
            info(1, "192.168.10.1"),
            info(2, "realserver2"),
            info(3, "no-such-node.invalid"),
        ];
        let peers = resolve_peers(&nodes, &Resolver::with_hosts_file(&hosts));
        let mut got: Vec<(u32, String)> =
            peers.iter().map(|(n, ip)| (n.0, ip.to_string())).collect();
        got.sort();
        assert_eq!(
            got,
            vec![(1, "192.168.10.1".into()), (2, "192.168.10.2".into())]
        );
    }

    #[test]
    fn failed_node_is_fenced_only_after_node_fenced() {
        let mut t = Translator::default();
        assert_eq!(t.view(), None);
        assert_eq!(
            t.confchg(5, 1, &m(&[1]), &[]),
            vec![view(5 << 32 | 1, &[1])]
        );
        assert_eq!(
            t.confchg(5, 3, &m(&[1, 2, 3]), &[]),
            vec![view(5 << 32 | 3, &[1, 2, 3])]
        );
        // Node 3 fails: the view comes at once, Fenced waits.
        assert_eq!(
            t.confchg(6, 2, &m(&[1, 2]), &[NodeId(3)]),
            vec![view(6 << 32 | 2, &[1, 2])]
        );
        assert_eq!(t.awaiting_fence(), vec![dlm::NodeId(3)]);
        // Fencing of another node changes nothing.
        assert_eq!(t.fenced(NodeId(7)), vec![]);
        assert_eq!(
            t.fenced(NodeId(3)),
            vec![MembershipEvent::Fenced(dlm::NodeId(3))]
        );
        assert_eq!(t.fenced(NodeId(3)), vec![]);
        assert!(t.awaiting_fence().is_empty());
    }

    #[test]
    fn clean_leave_is_removal_plus_immediate_fenced() {
        let mut t = Translator::default();
        t.confchg(2, 2, &m(&[1, 2]), &[]);
        assert_eq!(
            t.confchg(3, 1, &m(&[1]), &[]),
            vec![
                view(3 << 32 | 1, &[1]),
                MembershipEvent::Fenced(dlm::NodeId(2))
            ]
        );
        // A node that rejoins clears nothing it should not.
        assert_eq!(
            t.confchg(3, 2, &m(&[1, 2]), &[]),
            vec![view(3 << 32 | 2, &[1, 2])]
        );
    }

    #[test]
    fn fence_reported_before_the_confchg_is_not_lost() {
        let mut t = Translator::default();
        t.confchg(2, 2, &m(&[1, 2]), &[]);
        assert_eq!(t.fenced(NodeId(3)), vec![]);
        t.confchg(2, 3, &m(&[1, 2, 3]), &[]);
        // Node 2 fenced while still a member: nothing until it fails.
        assert_eq!(t.fenced(NodeId(2)), vec![]);
        assert_eq!(
            t.confchg(4, 2, &m(&[1, 3]), &[NodeId(2)]),
            vec![view(4 << 32 | 2, &[1, 3])]
        );
        assert_eq!(
            t.fenced(NodeId(2)),
            vec![MembershipEvent::Fenced(dlm::NodeId(2))]
        );
    }

    #[test]
    fn generation_never_goes_down_and_same_members_are_no_view() {
        let mut t = Translator::default();
        t.confchg(3, 3, &m(&[1, 2, 3]), &[]);
        // A stale change (older in the agreed order) is withheld.
        assert_eq!(t.confchg(3, 2, &m(&[1, 2]), &[]), vec![]);
        assert_eq!(t.confchg(3, 4, &m(&[1, 2, 3]), &[]), vec![]);
        assert_eq!(t.view().unwrap().0, 3 << 32 | 3);
    }

    #[test]
    fn a_clean_leave_inside_one_view_is_a_new_generation() {
        let mut t = Translator::default();
        t.confchg(3, 0, &m(&[1, 2]), &[]);
        t.confchg(3, 5, &m(&[1, 2, 3]), &[]);
        // Node 3's process leaves at agreed position 9 of the same view:
        // fewer members, yet a higher generation, the same at every node.
        assert_eq!(
            t.confchg(3, 9, &m(&[1, 2]), &[]),
            vec![
                view(3 << 32 | 9, &[1, 2]),
                MembershipEvent::Fenced(dlm::NodeId(3))
            ]
        );
    }
}
