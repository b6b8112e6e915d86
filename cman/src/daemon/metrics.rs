//! cmand's counters in the Prometheus text format (version 0.0.4):
//! membership events this node saw (views installed, nodes joining and
//! lost from one view to the next, fencings) and the cluster protocol's
//! packets sent and received. Read with the API's `metrics` request or as
//! `GET /metrics` on `cmand --metrics ADDR:PORT`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use dlm::metrics::{header, Counter};
use parking_lot::Mutex;

use crate::node::ClusterEvent;

/// The daemon's counters; shared with the HTTP endpoint's thread.
#[derive(Debug, Default)]
pub struct CmanCounters {
    views: Counter,
    joins: Counter,
    losses: Counter,
    fences: Counter,
    sent: Counter,
    received: Counter,
    /// The node ids of the last view, to count joins and losses.
    members: Mutex<Option<BTreeSet<u32>>>,
}

impl CmanCounters {
    /// A packet went out.
    pub fn sent(&self) {
        self.sent.inc();
    }

    /// A packet came in (authenticated).
    pub fn received(&self) {
        self.received.inc();
    }

    /// An event cmand tells its subscribers. The first view counts its
    /// members as joins (this node joining a cluster).
    pub fn event(&self, ev: &ClusterEvent) {
        match ev {
            ClusterEvent::View { members, .. } => {
                self.views.inc();
                let now: BTreeSet<u32> = members.iter().map(|m| m.id.0).collect();
                let mut last = self.members.lock();
                let was = last.take().unwrap_or_default();
                self.joins.add(now.difference(&was).count() as u64);
                self.losses.add(was.difference(&now).count() as u64);
                *last = Some(now);
            }
            ClusterEvent::NodeFenced { .. } => self.fences.inc(),
        }
    }

    /// The counters as text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        header(
            &mut s,
            "cman_membership_events_total",
            "Membership events: views installed, nodes joined and lost between views, fencings.",
        );
        for (event, c) in [
            ("view", &self.views),
            ("join", &self.joins),
            ("loss", &self.losses),
            ("fence", &self.fences),
        ] {
            let _ = writeln!(
                s,
                "cman_membership_events_total{{event=\"{event}\"}} {}",
                c.get()
            );
        }
        header(
            &mut s,
            "cman_messages_total",
            "Cluster protocol packets sent and received (authenticated).",
        );
        for (dir, c) in [("sent", &self.sent), ("received", &self.received)] {
            let _ = writeln!(s, "cman_messages_total{{direction=\"{dir}\"}} {}", c.get());
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Incarnation, Member, NodeId, ViewId};
    use dlm::metrics::sample;

    fn view(ids: &[u32]) -> ClusterEvent {
        ClusterEvent::View {
            view: ViewId::default(),
            members: ids
                .iter()
                .map(|&n| Member {
                    id: NodeId(n),
                    inc: Incarnation(1),
                })
                .collect(),
            quorate: true,
        }
    }

    #[test]
    fn joins_and_losses_are_differences_between_views() {
        let c = CmanCounters::default();
        c.event(&view(&[1]));
        c.event(&view(&[1, 2, 3]));
        c.event(&view(&[1, 3]));
        let text = c.render();
        let ev = |e: &str| {
            sample(
                &text,
                "cman_membership_events_total",
                &format!("event=\"{e}\""),
            )
        };
        assert_eq!(ev("view"), Some(3.0));
        assert_eq!(ev("join"), Some(3.0));
        assert_eq!(ev("loss"), Some(1.0));
        assert_eq!(ev("fence"), Some(0.0));
    }
}
