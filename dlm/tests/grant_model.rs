//! Model-based property test of the grant rules: random operation
//! sequences run against `Rsb` and against a reference model written
//! directly from the VAXcluster rules the kernel cites (6-3, 6-4, 6-7 and
//! conversion deadlock), then compared after every step: completions (in
//! order) and the three queues.

use dlm::rsb::{MasterLkb, Queue, Rsb, RsbEvent};
use dlm::{Flags, LockId, LockKey, Mode, NodeId, Status};
use proptest::prelude::*;

#[derive(Clone, Copy, Debug, PartialEq)]
enum St {
    Granted,
    Converting,
    Waiting,
}

#[derive(Clone, Copy, Debug)]
struct MLock {
    id: u32,
    gr: Option<Mode>,
    rq: Option<Mode>,
    st: St,
}

/// The reference model: one list per queue, in arrival order.
#[derive(Default, Debug)]
struct Model {
    granted: Vec<MLock>,
    converting: Vec<MLock>,
    waiting: Vec<MLock>,
}

impl Model {
    fn holders_allow(&self, me: u32, rq: Mode) -> bool {
        self.granted
            .iter()
            .chain(&self.converting)
            .filter(|h| h.id != me)
            .all(|h| h.gr.unwrap().compatible(rq))
    }

    fn find(&self, id: u32) -> Option<MLock> {
        self.granted
            .iter()
            .chain(&self.converting)
            .chain(&self.waiting)
            .find(|l| l.id == id)
            .copied()
    }

    fn request(&mut self, id: u32, mode: Mode, noqueue: bool, casts: &mut Vec<(u32, Status)>) {
        let l = MLock {
            id,
            gr: None,
            rq: Some(mode),
            st: St::Waiting,
        };
        // 6-4: granted at once only if both queues are empty and compatible.
        if self.holders_allow(id, mode) && self.converting.is_empty() && self.waiting.is_empty() {
            self.granted.push(MLock {
                gr: Some(mode),
                rq: None,
                st: St::Granted,
                ..l
            });
            casts.push((id, Status::Granted(mode)));
        } else if noqueue {
            casts.push((id, Status::Again));
        } else {
            self.waiting.push(l);
        }
    }

    fn convert(
        &mut self,
        id: u32,
        mode: Mode,
        quecvt: bool,
        noqueue: bool,
        casts: &mut Vec<(u32, Status)>,
    ) {
        let i = self.granted.iter().position(|l| l.id == id).unwrap();
        let gr = self.granted[i].gr.unwrap();
        // 6-3: granted in place when compatible; 6-7: QUECVT also needs an
        // empty conversion queue.
        if self.holders_allow(id, mode) && (!quecvt || self.converting.is_empty()) {
            self.granted[i].gr = Some(mode);
            casts.push((id, Status::Granted(mode)));
            self.grant_pending(casts);
            return;
        }
        // Conversion deadlock: my granted mode blocks a conversion ahead.
        if !noqueue
            && self
                .converting
                .iter()
                .any(|c| !gr.compatible(c.rq.unwrap()))
        {
            casts.push((id, Status::Deadlock));
            return;
        }
        if noqueue {
            casts.push((id, Status::Again));
            return;
        }
        let l = self.granted.remove(i);
        self.converting.push(MLock {
            rq: Some(mode),
            st: St::Converting,
            ..l
        });
    }

    fn unlock(&mut self, id: u32, casts: &mut Vec<(u32, Status)>) {
        self.granted.retain(|l| l.id != id);
        casts.push((id, Status::Unlocked));
        self.grant_pending(casts);
    }

    fn cancel(&mut self, id: u32, casts: &mut Vec<(u32, Status)>) {
        if let Some(i) = self.converting.iter().position(|l| l.id == id) {
            let l = self.converting.remove(i);
            self.granted.push(MLock {
                rq: None,
                st: St::Granted,
                ..l
            });
        } else {
            self.waiting.retain(|l| l.id != id);
        }
        casts.push((id, Status::Canceled));
        self.grant_pending(casts);
    }

    /// Only the head of each queue may be granted; conversions first.
    fn grant_pending(&mut self, casts: &mut Vec<(u32, Status)>) {
        loop {
            if let Some(h) = self.converting.first().copied() {
                if self.holders_allow(h.id, h.rq.unwrap()) {
                    self.converting.remove(0);
                    self.granted.push(MLock {
                        gr: h.rq,
                        rq: None,
                        st: St::Granted,
                        ..h
                    });
                    casts.push((h.id, Status::Granted(h.rq.unwrap())));
                    continue;
                }
            }
            break;
        }
        while let Some(h) = self.waiting.first().copied() {
            if !self.converting.is_empty() || !self.holders_allow(h.id, h.rq.unwrap()) {
                break;
            }
            self.waiting.remove(0);
            self.granted.push(MLock {
                gr: h.rq,
                rq: None,
                st: St::Granted,
                ..h
            });
            casts.push((h.id, Status::Granted(h.rq.unwrap())));
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Request(u32, Mode, bool),
    Convert(u32, Mode, bool, bool),
    Unlock(u32),
    Cancel(u32),
}

fn mode() -> impl Strategy<Value = Mode> {
    (0u8..6).prop_map(|m| Mode::from_u8(m).unwrap())
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u32..6, mode(), proptest::bool::weighted(0.2))
            .prop_map(|(i, m, nq)| Op::Request(i, m, nq)),
        (
            0u32..6,
            mode(),
            proptest::bool::weighted(0.3),
            proptest::bool::weighted(0.2)
        )
            .prop_map(|(i, m, q, nq)| Op::Convert(i, m, q, nq)),
        (0u32..6).prop_map(Op::Unlock),
        (0u32..6).prop_map(Op::Cancel),
    ]
}

fn key(id: u32) -> LockKey {
    LockKey {
        node: NodeId(1),
        id: LockId(id),
    }
}

fn casts_of(events: &[RsbEvent]) -> Vec<(u32, Status)> {
    events
        .iter()
        .filter_map(|e| match e {
            RsbEvent::Cast { key, status, .. } => Some((key.id.0, *status)),
            _ => None,
        })
        .collect()
}

fn queues_match(rsb: &Rsb, m: &Model) -> Result<(), TestCaseError> {
    let mut g: Vec<(u32, Option<Mode>)> = rsb
        .queue(Queue::Grant)
        .iter()
        .map(|l| (l.key.id.0, l.grmode))
        .collect();
    let mut mg: Vec<(u32, Option<Mode>)> = m.granted.iter().map(|l| (l.id, l.gr)).collect();
    g.sort_by_key(|x| x.0);
    mg.sort_by_key(|x| x.0);
    prop_assert_eq!(g, mg);
    let c: Vec<_> = rsb
        .queue(Queue::Convert)
        .iter()
        .map(|l| (l.key.id.0, l.grmode, l.rqmode))
        .collect();
    let mc: Vec<_> = m.converting.iter().map(|l| (l.id, l.gr, l.rq)).collect();
    prop_assert_eq!(c, mc);
    let w: Vec<_> = rsb
        .queue(Queue::Wait)
        .iter()
        .map(|l| (l.key.id.0, l.rqmode))
        .collect();
    let mw: Vec<_> = m.waiting.iter().map(|l| (l.id, l.rq)).collect();
    prop_assert_eq!(w, mw);
    Ok(())
}

fn step(rsb: &mut Rsb, m: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let mut ev = Vec::new();
    let mut casts = Vec::new();
    match *op {
        Op::Request(id, mode, nq) => {
            if m.find(id).is_some() {
                return Ok(());
            }
            let flags = if nq { Flags::NOQUEUE } else { Flags::empty() };
            rsb.request(MasterLkb::new(key(id), mode, flags, None), &mut ev)
                .unwrap();
            m.request(id, mode, nq, &mut casts);
        }
        Op::Convert(id, mode, q, nq) => {
            let Some(l) = m.find(id).filter(|l| l.st == St::Granted) else {
                return Ok(());
            };
            let q = q && l.gr.unwrap().quecvt_allowed(mode);
            let mut flags = if q { Flags::QUECVT } else { Flags::empty() };
            if nq {
                flags = flags | Flags::NOQUEUE;
            }
            rsb.convert(key(id), mode, flags, None, &mut ev).unwrap();
            m.convert(id, mode, q, nq, &mut casts);
        }
        Op::Unlock(id) => {
            if m.find(id).is_none_or(|l| l.st != St::Granted) {
                return Ok(());
            }
            rsb.unlock(key(id), Flags::empty(), None, &mut ev).unwrap();
            m.unlock(id, &mut casts);
        }
        Op::Cancel(id) => {
            if m.find(id).is_none_or(|l| l.st == St::Granted) {
                return Ok(());
            }
            prop_assert!(rsb.cancel(key(id), &mut ev).unwrap());
            m.cancel(id, &mut casts);
        }
    }
    prop_assert_eq!(casts_of(&ev), casts, "op {:?}", op);
    queues_match(rsb, m)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn rsb_matches_reference_model(ops in proptest::collection::vec(op(), 1..60)) {
        let mut rsb = Rsb::new();
        let mut m = Model::default();
        for op in &ops {
            step(&mut rsb, &mut m, op)?;
        }
        // Invariant on top: granted modes are pairwise compatible.
        let held: Vec<Mode> = rsb.queue(Queue::Grant).iter().chain(rsb.queue(Queue::Convert)).map(|l| l.grmode.unwrap()).collect();
        for (i, a) in held.iter().enumerate() {
            for b in &held[i + 1..] {
                prop_assert!(a.compatible(*b));
            }
        }
    }
}
