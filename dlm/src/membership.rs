//! Where membership comes from: a trait, and a static implementation that
//! tests (and simple setups) drive by hand.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::types::NodeId;

/// A membership change the lockspace must react to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipEvent {
    /// A new view: generation (strictly increasing) and members.
    View {
        /// Generation.
        gen: u64,
        /// Members of the view.
        members: Vec<NodeId>,
    },
    /// A node that left a view is fenced: its locks may be recovered.
    Fenced(NodeId),
}

/// A listener for membership events.
pub type Listener = Arc<dyn Fn(MembershipEvent) + Send + Sync>;

/// A source of membership views and fencing notifications.
pub trait Membership: Send + Sync {
    /// Registers `listener`; it first receives the current view, then every
    /// later event, in order.
    fn subscribe(&self, listener: Listener);
}

struct StaticState {
    gen: u64,
    members: Vec<NodeId>,
    fenced: Vec<NodeId>,
    listeners: Vec<Listener>,
}

/// A membership list changed by explicit calls.
pub struct StaticMembership {
    state: Mutex<StaticState>,
}

impl StaticMembership {
    /// Members `members` in generation 1.
    pub fn new(members: &[NodeId]) -> Arc<StaticMembership> {
        Arc::new(StaticMembership {
            state: Mutex::new(StaticState {
                gen: 1,
                members: members.to_vec(),
                fenced: Vec::new(),
                listeners: Vec::new(),
            }),
        })
    }

    /// Current generation and members.
    pub fn view(&self) -> (u64, Vec<NodeId>) {
        let s = self.state.lock();
        (s.gen, s.members.clone())
    }

    fn publish(&self, f: impl FnOnce(&mut StaticState) -> Option<MembershipEvent>) {
        let mut s = self.state.lock();
        let Some(ev) = f(&mut s) else { return };
        let listeners = s.listeners.clone();
        drop(s);
        for l in listeners {
            l(ev.clone());
        }
    }

    /// Removes `node` (it failed or left): a new view.
    pub fn remove(&self, node: NodeId) {
        self.publish(|s| {
            if !s.members.contains(&node) {
                return None;
            }
            s.members.retain(|m| *m != node);
            s.gen += 1;
            Some(MembershipEvent::View {
                gen: s.gen,
                members: s.members.clone(),
            })
        });
    }

    /// Adds `node` (it joined): a new view.
    pub fn add(&self, node: NodeId) {
        self.publish(|s| {
            if s.members.contains(&node) {
                return None;
            }
            s.members.push(node);
            s.fenced.retain(|f| *f != node);
            s.gen += 1;
            Some(MembershipEvent::View {
                gen: s.gen,
                members: s.members.clone(),
            })
        });
    }

    /// Reports `node` fenced.
    pub fn fence(&self, node: NodeId) {
        self.publish(|s| {
            if s.fenced.contains(&node) {
                return None;
            }
            s.fenced.push(node);
            Some(MembershipEvent::Fenced(node))
        });
    }
}

impl Membership for StaticMembership {
    fn subscribe(&self, listener: Listener) {
        let mut s = self.state.lock();
        listener(MembershipEvent::View {
            gen: s.gen,
            members: s.members.clone(),
        });
        for f in &s.fenced {
            listener(MembershipEvent::Fenced(*f));
        }
        s.listeners.push(listener);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_see_current_view_then_changes_in_order() {
        let m = StaticMembership::new(&[NodeId(1), NodeId(2)]);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        m.subscribe(Arc::new(move |e| s2.lock().push(e)));
        m.remove(NodeId(2));
        m.remove(NodeId(2));
        m.fence(NodeId(2));
        m.add(NodeId(3));
        assert_eq!(
            *seen.lock(),
            vec![
                MembershipEvent::View {
                    gen: 1,
                    members: vec![NodeId(1), NodeId(2)]
                },
                MembershipEvent::View {
                    gen: 2,
                    members: vec![NodeId(1)]
                },
                MembershipEvent::Fenced(NodeId(2)),
                MembershipEvent::View {
                    gen: 3,
                    members: vec![NodeId(1), NodeId(3)]
                },
            ]
        );
    }
}
