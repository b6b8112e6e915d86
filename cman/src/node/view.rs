//! View changes: the coordinator's proposals, members' acks, commits.

use super::{Action, ClusterEvent, GroupEvent, Node, Ordering, Proposal, View, FENCE_DOMAIN};
use crate::ids::{ClientId, Member, Millis, NodeId, ViewId};
use crate::proto::{Ack, Commit, GroupEntry, Msg, Payload, Victim};
use std::collections::{BTreeMap, BTreeSet};

impl Node {
    /// Coordinator duties: propose a view when the live clique differs from
    /// the installed view, resend proposals and commits, give up on members
    /// that do not answer.
    pub(super) fn coordinate(&mut self, now: Millis) {
        let started = self.started.unwrap_or(now);
        // Before the first view, listen: two heartbeat periods when peers
        // are heard (to learn who hears whom), a whole token when alone.
        let listen = if self.peers.is_empty() {
            self.token_ms
        } else {
            2 * self.hb_ms()
        };
        if now.since(started) < listen && self.view.id == ViewId::default() {
            return;
        }
        let alive = self.alive_ids(now);
        if alive.first() != Some(&self.me.id) {
            self.proposal = None;
            return;
        }
        let target = self.target_members(now, &alive);
        self.resend_commit(now);
        // A live node left out while who-hears-whom is still being learnt
        // may only lack a heartbeat: wait for it rather than drop the node
        // (a quorate view would declare it dead and fence it).
        let wait = target.len() < alive.len() && self.hearing_unsettled(now);
        match self.proposal.take() {
            Some(p) if p.members == target || wait => self.continue_proposal(now, p),
            _ if target == self.view.members && !self.members_moved_on() => {}
            None if wait => {}
            _ => self.propose(now, target),
        }
    }

    /// Whether some live peer was first heard (in this incarnation, or
    /// again after silence) less than two heartbeat periods ago: the other
    /// nodes' heartbeats may not list it yet.
    fn hearing_unsettled(&self, now: Millis) -> bool {
        self.peers
            .iter()
            .any(|(id, p)| self.peer_alive(now, *id) && now.since(p.heard_since) < 2 * self.hb_ms())
    }

    /// Whether some member reports a newer view than ours (it followed
    /// another coordinator): the views must be merged again.
    fn members_moved_on(&self) -> bool {
        self.view.members.iter().any(|m| {
            self.peers
                .get(&m.id)
                .is_some_and(|p| p.inc == m.inc && p.view > self.view.id)
        })
    }

    /// A large set of live nodes that all hear each other, picked from the
    /// coordinator: first the members of the installed view (same
    /// incarnation), then joiners, each in id order. A joiner that not every
    /// member hears yet stays outside; it never pushes a member out.
    fn target_members(&self, now: Millis, alive: &[NodeId]) -> Vec<Member> {
        let (members, mut joiners): (Vec<NodeId>, Vec<NodeId>) = alive
            .iter()
            .copied()
            .filter(|id| *id != self.me.id)
            .partition(|id| self.is_member_now(*id));
        // While this view is quorate (it can fence), a node whose earlier
        // incarnation still waits for its fence stays out until that fence
        // is done: it is never shown as a member while the fence is pending
        // (a manual fence may wait for hours). Without quorum it is
        // admitted, so that quorum can come back.
        if self.quorate() {
            joiners.retain(|id| !self.awaits_fence_of_earlier(*id));
        }
        let mut chosen: Vec<NodeId> = vec![self.me.id];
        for id in members.into_iter().chain(joiners) {
            if chosen
                .iter()
                .all(|c| self.hears(*c, id, now) && self.hears(id, *c, now))
            {
                chosen.push(id);
            }
        }
        chosen.sort();
        chosen
            .into_iter()
            .map(|id| match self.peers.get(&id) {
                Some(p) if id != self.me.id => Member { id, inc: p.inc },
                _ => self.me,
            })
            .collect()
    }

    /// Whether an earlier incarnation of `id` than the one heard now is a
    /// victim not fenced yet.
    fn awaits_fence_of_earlier(&self, id: NodeId) -> bool {
        let heard = self.peers.get(&id).map(|p| p.inc);
        self.victims
            .get(&id)
            .is_some_and(|v| heard.is_some_and(|h| v.member.inc < h))
    }

    /// Whether `id` is in the installed view in the incarnation heard now.
    fn is_member_now(&self, id: NodeId) -> bool {
        let heard = self.peers.get(&id).map(|p| p.inc);
        self.view
            .members
            .iter()
            .any(|m| m.id == id && Some(m.inc) == heard)
    }

    fn hears(&self, a: NodeId, b: NodeId, now: Millis) -> bool {
        if a == self.me.id {
            return self.peer_alive(now, b);
        }
        self.peers.get(&a).is_some_and(|p| p.alive.contains(&b))
    }

    fn propose(&mut self, now: Millis, members: Vec<Member>) {
        let seq = self.max_seq.max(self.view.id.seq).max(self.promised.seq) + 1;
        let view = ViewId {
            seq,
            coord: self.me.id.0,
            coord_inc: self.me.inc.0,
        };
        self.max_seq = seq;
        self.promised = view;
        tracing::debug!(node = %self.me, %view, ?members, "proposing view");
        let mut p = Proposal {
            view,
            members,
            acks: BTreeMap::new(),
            started: now,
            last_sent: now,
        };
        let ack = self.build_ack(view, &p.members);
        p.acks.insert(self.me.id, ack);
        self.send_propose(&p);
        self.proposal = Some(p);
        self.try_commit(now);
    }

    fn send_propose(&mut self, p: &Proposal) {
        let msg = Msg::Propose {
            view: p.view,
            members: p.members.clone(),
        };
        for m in p.members.iter().filter(|m| !p.acks.contains_key(&m.id)) {
            self.send(m.id, msg.clone());
        }
    }

    fn continue_proposal(&mut self, now: Millis, mut p: Proposal) {
        if now.since(p.started) > self.token_ms {
            // Members that never answered are left out of the next attempt.
            for m in p.members.iter().filter(|m| !p.acks.contains_key(&m.id)) {
                self.suspects.insert(m.id, now.plus(2 * self.token_ms));
            }
            return;
        }
        if now.since(p.last_sent) >= self.hb_ms() {
            p.last_sent = now;
            self.send_propose(&p);
        }
        self.proposal = Some(p);
    }

    fn resend_commit(&mut self, now: Millis) {
        let Some((c, last)) = self.last_commit.clone() else {
            return;
        };
        if c.view != self.view.id || now.since(last) < self.hb_ms() {
            return;
        }
        let lagging: Vec<NodeId> = c
            .members
            .iter()
            .filter(|m| m.id != self.me.id)
            .filter(|m| self.peers.get(&m.id).is_some_and(|p| p.view < c.view))
            .map(|m| m.id)
            .collect();
        for id in lagging {
            self.send(id, Msg::Commit(Box::new(c.clone())));
        }
        self.last_commit = Some((c, now));
    }

    /// What this node brings to a proposed view.
    pub(super) fn build_ack(&self, view: ViewId, members: &[Member]) -> Ack {
        let victims: Vec<Victim> = self
            .victims
            .values()
            .map(|v| Victim { member: v.member })
            .collect();
        let dead: Vec<Member> = self
            .dead
            .iter()
            .map(|(id, inc)| Member { id: *id, inc: *inc })
            .collect();
        // Measured against the last quorate view this node was in: members
        // lost while the cluster had no quorum are still owed a fencing
        // when quorum comes back.
        let missing = self
            .last_quorate
            .iter()
            .filter(|(m, _)| !members.contains(m))
            .map(|(old, domain)| {
                let left = self
                    .peers
                    .get(&old.id)
                    .is_some_and(|p| p.leaving && p.inc == old.inc);
                (*old, !left && *domain)
            })
            .collect();
        Ack {
            view,
            old_view: self.view.id,
            stable: self.ord.stable,
            groups: self
                .intents
                .iter()
                .map(|(g, c)| GroupEntry {
                    group: g.clone(),
                    node: self.me.id,
                    client: *c,
                })
                .collect(),
            victims,
            missing,
            dead,
            fenced: self
                .last_fenced
                .iter()
                .map(|(id, (inc, _, _))| Member { id: *id, inc: *inc })
                .collect(),
            expected: self.expected,
        }
    }

    pub(super) fn in_domain(&self, id: NodeId) -> bool {
        self.groups
            .iter()
            .any(|e| e.group == FENCE_DOMAIN && e.node == id)
    }

    pub(super) fn on_propose(
        &mut self,
        now: Millis,
        from: Member,
        view: ViewId,
        members: Vec<Member>,
    ) {
        self.max_seq = self.max_seq.max(view.seq);
        if !members.contains(&self.me) {
            return;
        }
        if view < self.promised || view <= self.view.id {
            let promised = self.promised.max(self.view.id);
            self.send(from.id, Msg::Nack { view, promised });
            return;
        }
        if view.coord != from.id.0 || self.leaving.is_some() || !self.held.is_empty() {
            return;
        }
        // A proposal from a lower coordinator supersedes our own attempt.
        if self.proposal.as_ref().is_some_and(|p| p.view < view) {
            self.proposal = None;
        }
        self.promised = view;
        let ack = self.build_ack(view, &members);
        let _ = now;
        self.send(from.id, Msg::Ack(Box::new(ack)));
    }

    pub(super) fn on_nack(&mut self, now: Millis, view: ViewId, promised: ViewId) {
        self.max_seq = self.max_seq.max(promised.seq);
        let Some(p) = self.proposal.take() else {
            return;
        };
        if p.view != view {
            self.proposal = Some(p);
            return;
        }
        self.propose(now, p.members); // again, above the promise
    }

    pub(super) fn on_ack(&mut self, now: Millis, from: Member, ack: Ack) {
        let Some(p) = self.proposal.as_mut() else {
            return;
        };
        if ack.view != p.view || !p.members.contains(&from) {
            return;
        }
        p.acks.insert(from.id, ack);
        self.try_commit(now);
    }

    fn try_commit(&mut self, now: Millis) {
        let Some(p) = self.proposal.as_ref() else {
            return;
        };
        if p.acks.len() < p.members.len() {
            return;
        }
        let p = self.proposal.take().expect("checked");
        let quorate = self.would_be_quorate(now, &p.members);
        let commit = build_commit(&p, quorate);
        let dead_member = commit
            .members
            .iter()
            .find(|m| commit.dead.iter().any(|d| d.id == m.id && m.inc <= d.inc));
        if let Some(m) = dead_member.copied() {
            // An acker knows this incarnation died: never admit it again.
            self.mark_dead(m);
            return;
        }
        for m in &commit.members {
            self.send(m.id, Msg::Commit(Box::new(commit.clone())));
        }
        self.last_commit = Some((commit.clone(), now));
        self.apply_commit(now, commit);
    }

    /// Installs a committed view.
    pub(super) fn apply_commit(&mut self, now: Millis, c: Commit) {
        self.max_seq = self.max_seq.max(c.view.seq);
        if c.view <= self.view.id || !c.members.contains(&self.me) || self.leaving.is_some() {
            return;
        }
        let cut = c
            .cuts
            .iter()
            .find(|(v, _)| *v == self.view.id)
            .map(|(_, s)| *s)
            .unwrap_or(self.ord.stable);
        self.deliver_cut(cut);
        let old = std::mem::take(&mut self.view);
        for m in &c.dead {
            self.mark_dead(*m);
        }
        self.view = View {
            id: c.view,
            installed_at: now,
            members: c.members.clone(),
            joined_at: c
                .members
                .iter()
                .map(|m| {
                    let t = old
                        .members
                        .contains(m)
                        .then(|| old.joined_at.get(&m.id).copied());
                    (m.id, t.flatten().unwrap_or(now))
                })
                .collect(),
        };
        self.proposal = None;
        self.install_groups(&old.members, &c);
        for f in &c.fenced {
            let known = self.last_fenced.get(&f.id).map(|(inc, _, _)| *inc);
            if known.is_none_or(|k| k < f.inc) {
                self.last_fenced
                    .insert(f.id, (f.inc, now, "fenced".to_string()));
            }
        }
        self.install_victims(now, &c.victims);

        if let Some(e) = c.expected {
            self.expected = Some(e);
            self.quorum.set_expected(e);
        }
        self.install_ordering(now);
        let votes = self.view_votes();
        let all = self
            .conf
            .nodes
            .iter()
            .all(|n| self.view.members.iter().any(|m| m.id == n.id));
        self.quorum.view_installed(now, votes, all);
        if self.quorum.status().quorate {
            self.last_quorate = self
                .view
                .members
                .iter()
                .map(|m| (*m, self.in_domain(m.id)))
                .collect();
        }
        tracing::info!(node = %self.me, view = %self.view.id, members = ?self.view.members, quorate = self.quorate(), "view installed");
        self.out.push(Action::Notify(ClusterEvent::View {
            view: self.view.id,
            members: self.view.members.clone(),
            quorate: self.quorate(),
        }));
    }

    /// Whether a view of `members` would be quorate here. Only a quorate
    /// view declares the members it lost dead (they must restart) and
    /// victims; an inquorate partition declares nobody dead, so partitions
    /// without quorum merge again without fencing.
    fn would_be_quorate(&self, now: Millis, members: &[Member]) -> bool {
        let votes: u32 = members
            .iter()
            .filter_map(|m| self.conf.node(m.id))
            .map(|n| n.votes)
            .sum();
        let all = self
            .conf
            .nodes
            .iter()
            .all(|n| members.iter().any(|m| m.id == n.id));
        let mut q = self.quorum.clone();
        q.view_installed(now, votes, all);
        q.status().quorate
    }

    fn view_votes(&self) -> u32 {
        self.view
            .members
            .iter()
            .filter_map(|m| self.conf.node(m.id))
            .map(|n| n.votes)
            .sum()
    }

    fn install_ordering(&mut self, now: Millis) {
        self.ord = Ordering::default();
        if self.view.members.first() == Some(&self.me) {
            self.ord.seq = Some(super::order::Sequencer::new(&self.view.members));
        }
        // Joins and leaves are carried by the commit's group table.
        self.pending
            .retain(|(_, p)| !matches!(p, Payload::Join { .. } | Payload::Leave { .. }));
        let _ = now;
        self.resubmit_pending();
    }

    fn install_groups(&mut self, old_members: &[Member], c: &Commit) {
        let live: BTreeSet<NodeId> = c.members.iter().map(|m| m.id).collect();
        let failed: Vec<NodeId> = old_members
            .iter()
            .filter(|m| !c.members.contains(m))
            .map(|m| m.id)
            .collect();
        let new: BTreeSet<GroupEntry> = c
            .groups
            .iter()
            .filter(|e| live.contains(&e.node))
            .cloned()
            .collect();
        let old = std::mem::replace(&mut self.groups, new);
        let touched: BTreeSet<String> = old
            .symmetric_difference(&self.groups)
            .map(|e| e.group.clone())
            .collect();
        for g in touched {
            let before: Vec<(NodeId, ClientId)> = entries(&old, &g);
            let after: Vec<(NodeId, ClientId)> = entries(&self.groups, &g);
            let joined = minus(&after, &before);
            let left = minus(&before, &after);
            let failed_here: Vec<NodeId> = failed
                .iter()
                .copied()
                .filter(|id| left.iter().any(|(n, _)| n == id))
                .collect();
            self.emit_confchg(&g, after, joined, left, failed_here, 0);
        }
    }

    /// Sends a confchg to local clients among the members or the leavers.
    pub(super) fn emit_confchg(
        &mut self,
        group: &str,
        members: Vec<(NodeId, ClientId)>,
        joined: Vec<(NodeId, ClientId)>,
        left: Vec<(NodeId, ClientId)>,
        failed: Vec<NodeId>,
        seq: u64,
    ) {
        let me = self.me.id;
        let local: BTreeSet<ClientId> = members
            .iter()
            .chain(left.iter())
            .filter(|(n, c)| *n == me && *c != ClientId(0))
            .map(|(_, c)| *c)
            .collect();
        for client in local {
            self.out.push(Action::Group {
                client,
                event: GroupEvent::Confchg {
                    group: group.to_string(),
                    members: members.clone(),
                    joined: joined.clone(),
                    left: left.clone(),
                    failed: failed.clone(),
                    seq,
                    view_seq: self.view.id.seq,
                },
            });
        }
    }
}

fn entries(set: &BTreeSet<GroupEntry>, g: &str) -> Vec<(NodeId, ClientId)> {
    set.iter()
        .filter(|e| e.group == g)
        .map(|e| (e.node, e.client))
        .collect()
}

fn minus(a: &[(NodeId, ClientId)], b: &[(NodeId, ClientId)]) -> Vec<(NodeId, ClientId)> {
    a.iter().filter(|x| !b.contains(x)).copied().collect()
}

/// The commit for a fully acknowledged proposal.
fn build_commit(p: &Proposal, quorate: bool) -> Commit {
    let mut cuts: BTreeMap<ViewId, u64> = BTreeMap::new();
    let mut groups: BTreeSet<GroupEntry> = BTreeSet::new();
    let mut victims: BTreeMap<NodeId, Member> = BTreeMap::new();
    let mut dead: BTreeMap<NodeId, Member> = BTreeMap::new();
    let mut fenced: BTreeMap<NodeId, Member> = BTreeMap::new();
    let mut expected = None;
    for a in p.acks.values() {
        let c = cuts.entry(a.old_view).or_insert(0);
        *c = (*c).max(a.stable);
        groups.extend(a.groups.iter().cloned());
        for m in &a.dead {
            let d = dead.entry(m.id).or_insert(*m);
            d.inc = d.inc.max(m.inc);
        }
        for m in &a.fenced {
            let f = fenced.entry(m.id).or_insert(*m);
            f.inc = f.inc.max(m.inc);
        }
        for (m, fence) in a.missing.iter().filter(|_| quorate) {
            let d = dead.entry(m.id).or_insert(*m);
            d.inc = d.inc.max(m.inc);
            if *fence {
                let e = victims.entry(m.id).or_insert(*m);
                e.inc = e.inc.max(m.inc);
            }
        }
        for v in &a.victims {
            let e = victims.entry(v.member.id).or_insert(v.member);
            e.inc = e.inc.max(v.member.inc);
        }
        expected = expected.max(a.expected);
    }
    victims.retain(|id, m| !p.members.contains(m) && fenced.get(id).is_none_or(|f| f.inc < m.inc));
    Commit {
        view: p.view,
        members: p.members.clone(),
        cuts: cuts.into_iter().collect(),
        groups: groups.into_iter().collect(),
        victims: victims
            .into_values()
            .map(|member| Victim { member })
            .collect(),
        dead: dead.into_values().collect(),
        fenced: fenced.into_values().collect(),
        expected,
    }
}
