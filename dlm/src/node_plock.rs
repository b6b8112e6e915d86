//! POSIX locks and flock across the lockspace, as a part of the [`Node`]
//! state machine.
//!
//! One node, the lowest member, keeps the lockspace's [`PlockTable`] (the
//! plock master); every node keeps a copy of the plocks its own processes
//! hold. Requests go to the plock master (or run locally there). After a
//! membership change the new plock master rebuilds the table from the
//! survivors' copies (`RecPlocks`, before recovery barrier 1), so a dead
//! node's plocks and waiters disappear; pending requests are re-sent when
//! the lockspace resumes. Releases count as done when asked for.

use crate::node::{Action, Node, NodeError, Phase};
use crate::plock::{Family, Owner, Plock, PlockResult, PlockTable};
use crate::types::NodeId;
use crate::wire::{Envelope, Msg, PlockOp, PlockReply};

const REQ_BITS: u32 = 48;
const REQ_MASK: u64 = (1 << REQ_BITS) - 1;

/// A plock request waiting for the plock master's answer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PendingPlock {
    fam: Family,
    file: u64,
    owner: u64,
    op: PlockOp,
    cancel: bool,
}

impl Node {
    /// Starts a plock operation for process (or open file) `owner` of this
    /// node; its result comes as [`Action::PlockDone`] with the returned id.
    pub fn plock(
        &mut self,
        fam: Family,
        file: u64,
        owner: u64,
        op: PlockOp,
        out: &mut Vec<Action>,
    ) -> Result<u64, NodeError> {
        if self.phase == Phase::Out {
            return Err(NodeError::NotMember);
        }
        match op {
            PlockOp::Lock { start, end, .. }
            | PlockOp::Unlock { start, end }
            | PlockOp::Get { start, end, .. }
                if start > end =>
            {
                return Err(NodeError::Invalid)
            }
            PlockOp::Cancel => return Err(NodeError::Invalid),
            _ => {}
        }
        let req = self.plocks.next_req & REQ_MASK;
        self.plocks.next_req += 1;
        let me = Owner {
            node: self.me,
            id: owner,
        };
        match op {
            PlockOp::Unlock { start, end } => {
                self.plocks.mine.unlock(fam, file, me, start, end);
            }
            PlockOp::Close => {
                self.plocks.mine.purge_owner(fam, file, me);
            }
            _ => {}
        }
        self.plocks.pending.insert(
            req,
            PendingPlock {
                fam,
                file,
                owner,
                op,
                cancel: false,
            },
        );
        self.issue_plock(req, out);
        Ok(req)
    }

    /// Withdraws a waiting lock request; it completes with
    /// [`PlockReply::Canceled`] unless it was granted first.
    pub fn plock_cancel(&mut self, req: u64, out: &mut Vec<Action>) -> Result<(), NodeError> {
        let p = self.plocks.pending.get_mut(&req).ok_or(NodeError::NoLock)?;
        if !matches!(p.op, PlockOp::Lock { wait: true, .. }) {
            return Err(NodeError::Busy);
        }
        p.cancel = true;
        if self.phase == Phase::Running {
            let p = *p;
            self.send_plock(req, p.fam, p.file, p.owner, PlockOp::Cancel, out);
        }
        Ok(())
    }

    /// The plock master in the current view.
    pub fn plock_master(&self) -> Option<NodeId> {
        self.members.first().copied()
    }

    /// The lockspace's plock table, when this node is the plock master.
    pub fn plock_table(&self) -> Option<&PlockTable> {
        self.plocks.table.as_ref()
    }

    /// The plocks held by this node's processes.
    pub fn own_plocks(&self) -> &PlockTable {
        &self.plocks.mine
    }

    pub(crate) fn issue_plock(&mut self, req: u64, out: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        let p = self.plocks.pending[&req];
        self.send_plock(req, p.fam, p.file, p.owner, p.op, out);
        if p.cancel {
            self.send_plock(req, p.fam, p.file, p.owner, PlockOp::Cancel, out);
        }
    }

    fn send_plock(
        &mut self,
        req: u64,
        fam: Family,
        file: u64,
        owner: u64,
        op: PlockOp,
        out: &mut Vec<Action>,
    ) {
        let Some(master) = self.plock_master() else {
            return;
        };
        if master == self.me {
            let me = self.me;
            self.receive_plock_req(me, req, fam, file, owner, op, out);
        } else {
            let msg = Msg::PlockReq {
                req,
                fam,
                file,
                owner,
                op,
            };
            out.push(Action::Send {
                to: master,
                env: Envelope { gen: self.gen, msg },
            });
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn receive_plock_req(
        &mut self,
        from: NodeId,
        req: u64,
        fam: Family,
        file: u64,
        owner: u64,
        op: PlockOp,
        out: &mut Vec<Action>,
    ) {
        if self.plock_master() != Some(self.me) {
            tracing::warn!(%from, "plock request sent to a node that is not the plock master");
            return;
        }
        let table = self.plocks.table.get_or_insert_with(PlockTable::new);
        let o = Owner {
            node: from,
            id: owner,
        };
        let wid = (u64::from(from.0) << REQ_BITS) | (req & REQ_MASK);
        let mut replies = Vec::new();
        match op {
            PlockOp::Lock {
                kind,
                start,
                end,
                wait,
            } => match table.lock(
                fam,
                file,
                wid,
                Plock {
                    owner: o,
                    kind,
                    start,
                    end,
                },
                wait,
            ) {
                PlockResult::Granted => replies.push((from, req, PlockReply::Ok)),
                PlockResult::Conflict(p) => replies.push((from, req, PlockReply::Conflict(p))),
                PlockResult::Deadlock => replies.push((from, req, PlockReply::Deadlock)),
                PlockResult::Queued => {}
            },
            PlockOp::Unlock { start, end } => {
                let woken = table.unlock(fam, file, o, start, end);
                replies.push((from, req, PlockReply::Ok));
                replies.extend(
                    woken
                        .iter()
                        .map(|w| (w.lock.owner.node, w.req & REQ_MASK, PlockReply::Ok)),
                );
            }
            PlockOp::Get { kind, start, end } => {
                let c = table.get(
                    fam,
                    file,
                    &Plock {
                        owner: o,
                        kind,
                        start,
                        end,
                    },
                );
                replies.push((from, req, c.map_or(PlockReply::Ok, PlockReply::Conflict)));
            }
            PlockOp::Cancel => {
                if table.cancel(fam, file, wid) {
                    replies.push((from, req, PlockReply::Canceled));
                }
            }
            PlockOp::Close => {
                // The closing owner's own waiting requests are answered
                // Canceled (their callers return, as from an interrupted
                // F_SETLKW), before the close itself: same node, same order.
                let purged = table.purge_owner(fam, file, o);
                replies.extend(
                    purged
                        .withdrawn
                        .iter()
                        .map(|w| (w.lock.owner.node, w.req & REQ_MASK, PlockReply::Canceled)),
                );
                replies.push((from, req, PlockReply::Ok));
                replies.extend(
                    purged
                        .granted
                        .iter()
                        .map(|w| (w.lock.owner.node, w.req & REQ_MASK, PlockReply::Ok)),
                );
            }
        }
        for (to, req, result) in replies {
            if to == self.me {
                self.receive_plock_reply(req, result, out);
            } else if self.members.contains(&to) {
                out.push(Action::Send {
                    to,
                    env: Envelope {
                        gen: self.gen,
                        msg: Msg::PlockReply { req, result },
                    },
                });
            }
        }
    }

    pub(crate) fn receive_plock_reply(
        &mut self,
        req: u64,
        result: PlockReply,
        out: &mut Vec<Action>,
    ) {
        let Some(p) = self.plocks.pending.remove(&req) else {
            return;
        };
        if let (
            PlockOp::Lock {
                kind, start, end, ..
            },
            PlockReply::Ok,
        ) = (p.op, result)
        {
            let owner = Owner {
                node: self.me,
                id: p.owner,
            };
            self.plocks.mine.lock(
                p.fam,
                p.file,
                0,
                Plock {
                    owner,
                    kind,
                    start,
                    end,
                },
                false,
            );
        }
        out.push(Action::PlockDone { req, result });
    }

    /// Recovery: my plocks for the new plock master.
    pub(crate) fn plock_report(&self) -> Msg {
        Msg::RecPlocks {
            locks: self.plocks.mine.dump(),
        }
    }

    /// Recovery: rebuilds the table from every survivor's report.
    pub(crate) fn plock_rebuild(&mut self) {
        if self.plock_master() != Some(self.me) {
            self.plocks.table = None;
            self.plocks.reports.clear();
            return;
        }
        let mut t = PlockTable::new();
        for (fam, file, p) in self.plocks.reports.drain(..) {
            if t.lock(fam, file, 0, p, false) != PlockResult::Granted {
                tracing::error!(file, lock = ?p, "recovered plocks conflict");
            }
        }
        self.plocks.table = Some(t);
    }

    /// Re-sends pending plock requests after recovery.
    pub(crate) fn plock_resume(&mut self, out: &mut Vec<Action>) {
        let reqs: Vec<u64> = self.plocks.pending.keys().copied().collect();
        for req in reqs {
            self.issue_plock(req, out);
        }
    }
}

/// Plock state of a node.
#[derive(Default)]
pub(crate) struct PlockState {
    pub(crate) table: Option<PlockTable>,
    pub(crate) mine: PlockTable,
    pub(crate) pending: std::collections::BTreeMap<u64, PendingPlock>,
    pub(crate) reports: Vec<(Family, u64, Plock)>,
    next_req: u64,
}
