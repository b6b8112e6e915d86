//! Freeing unused resources, as a part of the [`Node`] state machine.
//!
//! Like the kernel's toss list: a resource nobody holds a lock on stays
//! cached for a while (the next lock on it needs no lookup), and is freed
//! when [`Node::sweep`] finds it unused twice in a row. A holder's cached
//! entry just goes. A master's copy goes too, and the master tells the
//! directory node (`Remove`), which forgets the mastership.
//!
//! The directory's entry is the one word on who masters a resource; a node
//! makes a master copy only on that word. So a lock message that reaches a
//! node without the master copy (a holder's cache went stale when the
//! master freed it, or the request overtook the directory's reply to the
//! new master) is held there while that node asks the directory, then
//! either served (the directory names this node) or answered `NotMaster`,
//! and the holder looks the master up again. Links are FIFO, so a master's
//! `Remove` reaches the directory before anything that master asks later.
//!
//! Value blocks of freed resources are lost, as in the kernel.

use std::collections::HashSet;

use crate::node::{Action, Master, Node, Op, Phase, RsbEntry};
use crate::types::{FastBuild, LockId, NodeId, ResName};
use crate::wire::{Envelope, Msg};

impl RsbEntry {
    /// Nothing depends on this entry (besides locks, checked by the caller).
    fn unused(&self) -> bool {
        self.lookup_waiters.is_empty()
            && self.held.is_empty()
            && self.master != Master::LookingUp
            && self.core.as_ref().is_none_or(|r| r.is_empty())
    }
}

/// The resource a lock message is about.
fn msg_name(msg: &Msg) -> Option<ResName> {
    match msg {
        Msg::Request { name, .. }
        | Msg::Convert { name, .. }
        | Msg::Unlock { name, .. }
        | Msg::Cancel { name, .. } => Some(*name),
        _ => None,
    }
}

impl Node {
    /// Frees resources found unused by this sweep and the one before:
    /// cached entries, and master copies (telling their directory node).
    /// The driver calls it every few seconds.
    pub fn sweep(&mut self, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        let used: HashSet<ResName, FastBuild> = self.lkbs.values().map(|l| l.name).collect();
        let mut freed = Vec::new();
        for (name, e) in self.rsbs.iter_mut() {
            if used.contains(name) || !e.unused() {
                e.idle = false;
            } else if e.idle {
                freed.push((*name, e.core.is_some()));
            } else {
                e.idle = true;
            }
        }
        for (name, was_master) in freed {
            self.rsbs.remove(&name);
            if !was_master {
                continue;
            }
            let dir = self.dir_node(&name).expect("running node has members");
            if dir == self.me {
                if self.dir.get(&name) == Some(&self.me) {
                    self.dir.remove(&name);
                }
            } else {
                self.send(dir, Msg::Remove { name }, out);
            }
        }
    }

    /// True when this node keeps the master copy of `name`.
    pub(crate) fn has_core(&self, name: &ResName) -> bool {
        self.rsbs.get(name).is_some_and(|e| e.core.is_some())
    }

    /// A lock message from `from` for a resource this node has no master
    /// copy of: serve it if the directory (here) says so, else hold it
    /// and ask the directory, or refuse it when another master is known.
    pub(crate) fn no_master_copy(&mut self, from: NodeId, msg: Msg, out: &mut Vec<Action>) {
        let Some(name) = msg_name(&msg) else { return };
        let me = self.me;
        let dir = self.dir_node(&name).expect("running node has members");
        if dir == me {
            // No master copy here: an entry names another master, or
            // nobody masters it and this node becomes master.
            let m = self.dir.get(&name).copied().unwrap_or(me);
            if m == me {
                let e = self
                    .rsbs
                    .entry(name)
                    .or_insert_with(|| RsbEntry::new(Master::Node(me)));
                e.master = Master::Node(me);
                e.core = Some(Box::default());
                self.receive_lock_msg(from, msg, out);
            } else {
                self.refuse(from, msg, out);
            }
            return;
        }
        let e = self
            .rsbs
            .entry(name)
            .or_insert_with(|| RsbEntry::new(Master::Unknown));
        match e.master {
            Master::Node(m) if m != me => self.refuse(from, msg, out),
            Master::LookingUp => e.held.push((from, msg)),
            _ => {
                e.held.push((from, msg));
                e.master = Master::LookingUp;
                self.send(dir, Msg::Lookup { name }, out);
            }
        }
    }

    /// Answers a lock message this node cannot serve: a request is sent
    /// back to look the master up again; other operations are for locks
    /// whose request was refused the same way, so they are dropped.
    fn refuse(&mut self, from: NodeId, msg: Msg, out: &mut Vec<Action>) {
        match msg {
            Msg::Request { name, lkid, .. } => self.send(from, Msg::NotMaster { name, lkid }, out),
            other => {
                tracing::debug!(%from, ?other, "lock message for a resource not mastered here")
            }
        }
    }

    /// The directory answered for `name`: serve or refuse what was held.
    pub(crate) fn release_held(&mut self, name: ResName, out: &mut Vec<Action>) {
        let Some(e) = self.rsbs.get_mut(&name) else {
            return;
        };
        let held = std::mem::take(&mut e.held);
        for (from, msg) in held {
            if self.has_core(&name) {
                self.receive_lock_msg(from, msg, out);
            } else {
                self.refuse(from, msg, out);
            }
        }
    }

    /// A master told us it does not master `name`: look it up again and
    /// resend the request.
    pub(crate) fn receive_not_master(
        &mut self,
        from: NodeId,
        name: ResName,
        lkid: LockId,
        out: &mut Vec<Action>,
    ) {
        let Some(lkb) = self.lkbs.get_mut(lkid) else {
            return;
        };
        if lkb.name != name || lkb.op != Op::Request || !lkb.sent || lkb.grmode.is_some() {
            return;
        }
        lkb.sent = false;
        lkb.master = None;
        if let Some(e) = self.rsbs.get_mut(&name) {
            if e.master == Master::Node(from) {
                e.master = Master::Unknown;
            }
        }
        self.issue(lkid, out);
    }

    /// Drops the orphans of dead node `owner` everywhere (the kernel's
    /// `dlm_ls_purge`): here, and by a message to every other member.
    /// Orphans are the locks nobody adopted; the usual caller is `owner`
    /// itself, restarted, after adopting what it wants back, or an
    /// administrator once `owner` is gone for good. A purge is not tied to
    /// a membership generation: one that meets a recovery is applied when
    /// the lockspace runs again.
    pub fn purge_orphans(&mut self, owner: NodeId, out: &mut Vec<Action>) {
        let me = self.me;
        for to in self.members.clone() {
            let env = Envelope {
                gen: self.gen,
                msg: Msg::PurgeOrphans { owner },
            };
            if to == me {
                self.receive(me, env, out);
            } else {
                out.push(Action::Send { to, env });
            }
        }
    }

    /// Drops the orphans of `owner` from the master copies kept here.
    pub(crate) fn receive_purge(&mut self, owner: NodeId, out: &mut Vec<Action>) {
        let names: Vec<ResName> = self
            .rsbs
            .iter()
            .filter(|(_, e)| e.core.is_some())
            .map(|(n, _)| *n)
            .collect();
        let mut events = Vec::new();
        for name in names {
            let rsb = self.rsbs.get_mut(&name).and_then(|e| e.core.as_mut());
            if rsb.is_some_and(|r| r.purge_orphans(owner, &mut events)) {
                for ev in events.drain(..) {
                    self.deliver(name, ev, out);
                }
            }
        }
    }

    /// A master freed its copy of `name`: forget that it masters it.
    pub(crate) fn receive_remove(&mut self, from: NodeId, name: ResName) {
        if self.dir_node(&name) != Some(self.me) {
            tracing::warn!(%from, %name, "remove sent to a node that is not the directory node");
            return;
        }
        if self.dir.get(&name) == Some(&from) {
            self.dir.remove(&name);
        }
    }
}
