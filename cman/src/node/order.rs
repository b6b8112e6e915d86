//! Agreed-order delivery inside a view: a sequencer numbers submissions;
//! members deliver a message once it is stable (received by every member).

use super::{Action, ClusterEvent, GroupEvent, Node};
use crate::ids::{ClientId, Member, NodeId, ViewId};
use crate::proto::{GroupEntry, Msg, Payload};
use std::collections::BTreeMap;

/// Most messages retransmitted to one member per tick.
const RETRANSMIT_BATCH: u64 = 64;
/// Most undelivered messages the sequencer holds per view.
const MAX_LOG: usize = 10_000;

/// Sequencer state (the view's lowest member).
#[derive(Clone, Debug)]
pub(super) struct Sequencer {
    next: u64,
    log: BTreeMap<u64, Msg>,
    received: BTreeMap<NodeId, u64>,
    last_oseq: BTreeMap<Member, u64>,
}

impl Sequencer {
    pub(super) fn new(members: &[Member]) -> Sequencer {
        Sequencer {
            next: 1,
            log: BTreeMap::new(),
            received: members.iter().map(|m| (m.id, 0)).collect(),
            last_oseq: BTreeMap::new(),
        }
    }

    fn stable(&self) -> u64 {
        self.received.values().copied().min().unwrap_or(0)
    }
}

impl Node {
    /// Queues a payload for agreed-order delivery.
    pub(super) fn submit(&mut self, payload: Payload) {
        let oseq = self.next_oseq;
        self.next_oseq += 1;
        self.pending.push_back((oseq, payload.clone()));
        self.send_submit(oseq, payload);
    }

    fn send_submit(&mut self, oseq: u64, payload: Payload) {
        if !self.in_view() {
            return;
        }
        let base = self.pending.front().map(|(o, _)| *o).unwrap_or(oseq);
        let view = self.view.id;
        let me = self.me;
        match self.view.members.first().copied() {
            Some(s) if s == me => self.on_submit(me, view, oseq, base, payload),
            Some(s) => self.send(
                s.id,
                Msg::Submit {
                    view,
                    oseq,
                    base,
                    payload,
                },
            ),
            None => {}
        }
    }

    pub(super) fn resubmit_pending(&mut self) {
        let all: Vec<(u64, Payload)> = self.pending.iter().cloned().collect();
        for (oseq, p) in all {
            self.send_submit(oseq, p);
        }
    }

    pub(super) fn on_submit(
        &mut self,
        from: Member,
        view: ViewId,
        oseq: u64,
        base: u64,
        payload: Payload,
    ) {
        if view != self.view.id || !self.view.members.contains(&from) {
            return;
        }
        let stable = self.ord.stable;
        let Some(s) = self.ord.seq.as_mut() else {
            return;
        };
        let ok = match s.last_oseq.get(&from) {
            Some(last) => oseq == last + 1,
            None => oseq == base,
        };
        if !ok || s.log.len() >= MAX_LOG {
            return;
        }
        s.last_oseq.insert(from, oseq);
        let seq = s.next;
        s.next += 1;
        let msg = Msg::Deliver {
            view,
            seq,
            origin: from,
            oseq,
            stable,
            payload: payload.clone(),
        };
        s.log.insert(seq, msg.clone());
        let others: Vec<NodeId> = self.view.members.iter().map(|m| m.id).collect();
        for id in others {
            self.send(id, msg.clone());
        }
        self.on_deliver(view, seq, from, oseq, stable, payload);
    }

    pub(super) fn on_deliver(
        &mut self,
        view: ViewId,
        seq: u64,
        origin: Member,
        oseq: u64,
        stable: u64,
        payload: Payload,
    ) {
        if view != self.view.id || seq <= self.ord.delivered {
            return;
        }
        self.ord.recv.entry(seq).or_insert((origin, oseq, payload));
        let upto = self.contiguous();
        match self.view.members.first().copied() {
            Some(s) if s == self.me => self.on_received(self.me, view, upto),
            Some(s) => self.send(s.id, Msg::Received { view, upto }),
            None => {}
        }
        self.on_stable(view, stable);
    }

    fn contiguous(&self) -> u64 {
        let mut n = self.ord.delivered;
        while self.ord.recv.contains_key(&(n + 1)) {
            n += 1;
        }
        n
    }

    pub(super) fn on_received(&mut self, from: Member, view: ViewId, upto: u64) {
        if view != self.view.id {
            return;
        }
        let Some(s) = self.ord.seq.as_mut() else {
            return;
        };
        if let Some(r) = s.received.get_mut(&from.id) {
            *r = (*r).max(upto);
        }
        let stable = s.stable();
        if stable > self.ord.stable {
            s.log.retain(|seq, _| *seq > stable);
            let msg = Msg::Stable { view, upto: stable };
            self.send_to_members(&msg);
            self.on_stable(view, stable);
        }
    }

    fn send_to_members(&mut self, msg: &Msg) {
        let ids: Vec<NodeId> = self.view.members.iter().map(|m| m.id).collect();
        for id in ids {
            self.send(id, msg.clone());
        }
    }

    pub(super) fn on_stable(&mut self, view: ViewId, upto: u64) {
        if view != self.view.id || upto <= self.ord.stable {
            return;
        }
        self.ord.stable = upto;
        self.deliver_ready(upto);
    }

    fn deliver_ready(&mut self, upto: u64) {
        while self.ord.delivered < upto {
            let next = self.ord.delivered + 1;
            let Some((origin, oseq, payload)) = self.ord.recv.remove(&next) else {
                break;
            };
            self.ord.delivered = next;
            self.deliver_payload(origin, oseq, payload);
        }
    }

    /// Delivers the old view's messages up to the cut before a view change.
    pub(super) fn deliver_cut(&mut self, cut: u64) {
        self.deliver_ready(cut);
        if self.ord.delivered < cut {
            tracing::error!(node = %self.me, delivered = self.ord.delivered, cut, "missing messages below the cut");
        }
    }

    /// Sequencer retransmissions and origin resubmissions.
    pub(super) fn order_tick(&mut self) {
        self.resubmit_pending();
        let Some(s) = self.ord.seq.as_ref() else {
            return;
        };
        let mut resend = Vec::new();
        for (id, r) in &s.received {
            for seq in (r + 1)..s.next.min(r + 1 + RETRANSMIT_BATCH) {
                if let Some(m) = s.log.get(&seq) {
                    resend.push((*id, m.clone()));
                }
            }
        }
        for (id, m) in resend {
            self.send(id, m);
        }
    }

    fn deliver_payload(&mut self, origin: Member, oseq: u64, payload: Payload) {
        if origin == self.me {
            self.pending.retain(|(o, _)| *o != oseq);
        }
        // A payload delivered in an earlier view (in another partition) and
        // resubmitted by its origin is not delivered twice.
        let last = self.delivered_oseq.entry(origin).or_insert(0);
        if oseq <= *last {
            return;
        }
        *last = oseq;
        match payload {
            Payload::Join { group, client } => self.apply_join(origin.id, group, client, true),
            Payload::Leave { group, client } => self.apply_join(origin.id, group, client, false),
            Payload::Data {
                group,
                client,
                data,
            } => self.deliver_data(origin.id, group, client, data),
            Payload::Fenced { victim, how } => self.apply_fenced(victim, how),
            Payload::SetExpected { votes } => {
                self.expected = Some(votes);
                self.quorum.set_expected(votes);
            }
        }
    }

    fn apply_join(&mut self, node: NodeId, group: String, client: ClientId, join: bool) {
        let e = GroupEntry {
            group: group.clone(),
            node,
            client,
        };
        let changed = if join {
            self.groups.insert(e)
        } else {
            self.groups.remove(&e)
        };
        if !changed {
            return;
        }
        let members: Vec<(NodeId, ClientId)> = self
            .groups
            .iter()
            .filter(|x| x.group == group)
            .map(|x| (x.node, x.client))
            .collect();
        let (joined, left) = if join {
            (vec![(node, client)], vec![])
        } else {
            (vec![], vec![(node, client)])
        };
        let seq = self.ord.delivered;
        self.emit_confchg(&group, members, joined, left, vec![], seq);
    }

    fn deliver_data(&mut self, node: NodeId, group: String, client: ClientId, data: String) {
        let me = self.me.id;
        let locals: Vec<ClientId> = self
            .groups
            .iter()
            .filter(|e| e.group == group && e.node == me && e.client != ClientId(0))
            .map(|e| e.client)
            .collect();
        for c in locals {
            self.out.push(Action::Group {
                client: c,
                event: GroupEvent::Message {
                    group: group.clone(),
                    node,
                    client,
                    data: data.clone(),
                },
            });
        }
    }

    /// Tells local listeners a victim was fenced, once per victim.
    pub(super) fn notify_fenced(&mut self, victim: Member, how: String) {
        if !self.recovered.insert(victim) {
            return;
        }
        if self.recovered.len() > 4096 {
            let first = *self.recovered.iter().next().expect("non-empty");
            self.recovered.remove(&first);
        }
        self.out
            .push(Action::Notify(ClusterEvent::NodeFenced { victim, how }));
    }
}
