//! Fencing inside the node: victims, the fencer's duties, results.

use super::{Action, DeviceCall, FenceJob, Node, VictimState, FENCE_DOMAIN};
use crate::ids::{ClientId, Member, Millis, NodeId};
use crate::proto::{Payload, Victim};
use std::collections::BTreeMap;

/// Wait between two fencing attempts of one victim (ms).
pub const FENCE_RETRY_MS: u64 = 1000;

impl Node {
    /// Nodes of the fence domain in the current group table.
    pub(super) fn domain_members(&self) -> Vec<NodeId> {
        let mut ids: Vec<NodeId> = self
            .groups
            .iter()
            .filter(|e| e.group == FENCE_DOMAIN)
            .map(|e| e.node)
            .collect();
        ids.dedup();
        ids
    }

    /// The member that fences: the lowest fence-domain member of the view.
    pub(super) fn fencer(&self) -> Option<NodeId> {
        if !self.in_view() {
            return None;
        }
        self.domain_members()
            .into_iter()
            .find(|id| self.view.members.iter().any(|m| m.id == *id))
    }

    pub(super) fn install_victims(&mut self, now: Millis, victims: &[Victim]) {
        let old = std::mem::take(&mut self.victims);
        for v in victims {
            let m = v.member;
            if self
                .last_fenced
                .get(&m.id)
                .is_some_and(|(inc, _, _)| *inc >= m.inc)
            {
                let how = self.last_fenced[&m.id].2.clone();
                self.notify_fenced(m, how);
                continue;
            }
            let state = match old.get(&m.id) {
                Some(s) if s.member == m => s.clone(),
                _ => VictimState {
                    member: m,
                    since: now,
                    running: false,
                    submitted: false,
                    retry_at: now,
                },
            };
            tracing::info!(node = %self.me, victim = %m, "node is a victim");
            self.victims.insert(m.id, state);
        }
    }

    /// The fencer's duties: start fence jobs once post_fail_delay passed.
    pub(super) fn fence_tick(&mut self, now: Millis) {
        if !self.quorate() || self.fencer() != Some(self.me.id) {
            return;
        }
        let delay_ms = self.conf.fence_daemon.post_fail_delay_s * 1000;
        let ids: Vec<NodeId> = self.victims.keys().copied().collect();
        for id in ids {
            let v = self.victims[&id].clone();
            if v.running || v.submitted {
                continue;
            }
            // A newer incarnation (in the view or only heard) means the
            // victim's cmand is over; and when that incarnation is not held
            // (it found no process of its node's earlier incarnations
            // running when it started) nothing of the victim runs any
            // more: powering the node off now would only kill the new one.
            // A held one is fenced for real: the switch takes down the old
            // processes (and the new cmand with them).
            let rejoined = self
                .view
                .members
                .iter()
                .any(|m| m.id == id && m.inc > v.member.inc)
                || (self.peers.get(&id).is_some_and(|p| p.inc > v.member.inc)
                    && !self.peer_held(id));
            if rejoined {
                self.victims.get_mut(&id).expect("present").submitted = true;
                self.submit(Payload::Fenced {
                    victim: v.member,
                    how: "rejoined".to_string(),
                });
            } else if now.since(v.since) >= delay_ms && now >= v.retry_at {
                self.victims.get_mut(&id).expect("present").running = true;
                let job = self.fence_job(v.member);
                let held = self.held_report(now, id);
                if held.is_empty() {
                    tracing::info!(node = %self.me, victim = %v.member, "fencing");
                } else {
                    tracing::warn!(node = %self.me, victim = %v.member, processes = ?held, "fencing: the node is back but processes of the victim's incarnation still run there; the fence must stop them");
                }
                self.out.push(Action::RunFence(job));
            }
        }
    }

    fn fence_job(&self, victim: Member) -> FenceJob {
        let node = self.conf.node(victim.id);
        let name = node.map(|n| n.name.clone()).unwrap_or_default();
        let methods = node
            .map(|n| {
                n.fence
                    .iter()
                    .map(|m| {
                        m.devices
                            .iter()
                            .filter_map(|d| {
                                let dev = self.conf.fence_device(&d.name)?;
                                let mut args: BTreeMap<String, String> = dev.attrs.clone();
                                args.extend(d.attrs.clone());
                                args.insert("action".into(), "off".into());
                                args.entry("nodename".into()).or_insert(name.clone());
                                Some(DeviceCall {
                                    agent: dev.agent.clone(),
                                    args,
                                })
                            })
                            .collect()
                    })
                    .collect()
            })
            .unwrap_or_default();
        FenceJob {
            victim,
            node_name: name,
            methods,
        }
    }

    pub(super) fn on_fence_result(&mut self, now: Millis, victim: Member, ok: bool, how: String) {
        let Some(v) = self.victims.get_mut(&victim.id) else {
            return;
        };
        if v.member != victim {
            return;
        }
        v.running = false;
        if ok {
            v.submitted = true;
            tracing::info!(node = %self.me, %victim, %how, "fence succeeded");
            self.submit(Payload::Fenced { victim, how });
        } else {
            tracing::warn!(node = %self.me, %victim, %how, "fence failed, will retry");
            v.retry_at = now.plus(FENCE_RETRY_MS);
        }
    }

    /// An ordered `Fenced` payload: the victim is done, recovery may start.
    pub(super) fn apply_fenced(&mut self, victim: Member, how: String) {
        let prev = self.last_fenced.get(&victim.id).map(|(i, _, _)| *i);
        if prev.is_none_or(|p| p <= victim.inc) {
            self.last_fenced
                .insert(victim.id, (victim.inc, self.now, how.clone()));
        }
        let was_victim = self
            .victims
            .get(&victim.id)
            .is_some_and(|v| v.member.inc <= victim.inc);
        if was_victim {
            self.victims.remove(&victim.id);
            self.notify_fenced(victim, how);
        }
    }

    /// Latest fenced incarnation of each node.
    pub(super) fn fenced_list(&self) -> Vec<Member> {
        self.last_fenced
            .iter()
            .map(|(id, (inc, _, _))| Member { id: *id, inc: *inc })
            .collect()
    }

    /// Fencing facts heard from a peer: fenced incarnations end our victims;
    /// victims we did not know are adopted (so the fencer learns them even
    /// when the view change that created them reached it late).
    pub(super) fn gossip_fencing(&mut self, now: Millis, victims: &[Member], fenced: &[Member]) {
        for f in fenced {
            let mine = self.victims.get(&f.id).map(|v| v.member);
            if let Some(v) = mine.filter(|v| v.inc <= f.inc) {
                self.last_fenced
                    .insert(f.id, (f.inc, now, "fenced".to_string()));
                self.victims.remove(&f.id);
                self.notify_fenced(v, "fenced".to_string());
            } else if self
                .last_fenced
                .get(&f.id)
                .is_none_or(|(inc, _, _)| *inc < f.inc)
            {
                self.last_fenced
                    .insert(f.id, (f.inc, now, "fenced".to_string()));
            }
        }
        for v in victims {
            let known = self
                .victims
                .get(&v.id)
                .is_some_and(|x| x.member.inc >= v.inc);
            let fenced = self
                .last_fenced
                .get(&v.id)
                .is_some_and(|(inc, _, _)| *inc >= v.inc);
            if known || fenced || self.view.members.contains(v) || *v == self.me {
                continue;
            }
            self.mark_dead(*v);
            self.victims.insert(
                v.id,
                VictimState {
                    member: *v,
                    since: now,
                    running: false,
                    submitted: false,
                    retry_at: now,
                },
            );
        }
    }

    pub(super) fn fence_override(&mut self, client: ClientId, node: NodeId, how: String) {
        let member = self
            .victims
            .get(&node)
            .map(|v| v.member)
            .or_else(|| self.view.members.iter().find(|m| m.id == node).copied())
            .or_else(|| {
                self.peers.get(&node).map(|p| Member {
                    id: node,
                    inc: p.inc,
                })
            });
        match member {
            Some(victim) => {
                self.submit(Payload::Fenced { victim, how });
                self.reply(client, Ok(format!("node {node} marked fenced")));
            }
            None => self.reply(client, Err(format!("node {node} is unknown to this node"))),
        }
    }
}
