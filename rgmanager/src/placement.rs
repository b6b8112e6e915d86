//! Where a service may run and where it goes: failover domain scores and
//! target choice, as rgmanager's `fo_domain.c` and `groups.c` decide.
//!
//! Scores: 0 illegal (offline, or outside a restricted domain), 1 outside
//! an unrestricted domain while a member of it is online, 2 an ordered
//! member below the best online priority, 3 best (any node of a service
//! without a domain, an unordered member, the best online priority of an
//! ordered domain, the running owner of a `nofailback` domain, any node
//! when no member of an unrestricted domain is online).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Domain;
use crate::NodeId;

/// Offline or not allowed.
pub const ILLEGAL: u8 = 0;
/// Outside an unrestricted domain.
pub const OUTSIDE: u8 = 1;
/// An ordered member below the best online priority.
pub const MEMBER: u8 = 2;
/// Preferred.
pub const BEST: u8 = 3;

/// A failover domain with node ids instead of names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainIds {
    /// Ordered by priority.
    pub ordered: bool,
    /// Never outside.
    pub restricted: bool,
    /// No moving back.
    pub nofailback: bool,
    /// Member → priority (lower preferred).
    pub nodes: BTreeMap<NodeId, u32>,
}

impl DomainIds {
    /// Resolves a domain's node names; unknown names are dropped.
    pub fn resolve(d: &Domain, ids: &BTreeMap<String, NodeId>) -> DomainIds {
        DomainIds {
            ordered: d.ordered,
            restricted: d.restricted,
            nofailback: d.nofailback,
            nodes: d
                .nodes
                .iter()
                .filter_map(|(n, p)| ids.get(n).map(|id| (*id, *p)))
                .collect(),
        }
    }
}

/// The score of `node` for a service in `domain` (None: no domain), given
/// the online nodes and the service's running owner.
pub fn score(
    domain: Option<&DomainIds>,
    node: NodeId,
    online: &BTreeSet<NodeId>,
    running_owner: Option<NodeId>,
) -> u8 {
    if !online.contains(&node) {
        return ILLEGAL;
    }
    let Some(d) = domain else { return BEST };
    let Some(prio) = d.nodes.get(&node) else {
        if d.restricted {
            return ILLEGAL;
        }
        let member_online = d.nodes.keys().any(|n| online.contains(n));
        return if member_online { OUTSIDE } else { BEST };
    };
    if !d.ordered || (d.nofailback && running_owner == Some(node)) {
        return BEST;
    }
    let top = d
        .nodes
        .iter()
        .filter(|(n, _)| online.contains(n))
        .map(|(_, p)| *p)
        .min()
        .unwrap_or(*prio);
    if *prio <= top {
        BEST
    } else {
        MEMBER
    }
}

/// What target choice needs to know about a node's load.
#[derive(Clone, Debug, Default)]
pub struct Load {
    /// Services running (or being started) on each node.
    pub running: BTreeMap<NodeId, usize>,
    /// Nodes running an exclusive service.
    pub exclusive: BTreeSet<NodeId>,
}

/// The best node for a service: highest score, +2 for an exclusive
/// service on an empty node, ties to the lowest node id; `exclude` never
/// chosen. An exclusive service goes only to an empty node, and nothing
/// goes to a node running an exclusive service.
pub fn best_target(
    domain: Option<&DomainIds>,
    exclusive: bool,
    online: &BTreeSet<NodeId>,
    exclude: &BTreeSet<NodeId>,
    load: &Load,
) -> Option<NodeId> {
    let mut best: Option<(u8, NodeId)> = None;
    for &n in online {
        if exclude.contains(&n) || load.exclusive.contains(&n) {
            continue;
        }
        let busy = load.running.get(&n).copied().unwrap_or(0) > 0;
        if exclusive && busy {
            continue;
        }
        let mut s = score(domain, n, online, None);
        if s == ILLEGAL {
            continue;
        }
        if exclusive && !busy {
            s += 2;
        }
        if best.is_none_or(|(bs, _)| s > bs) {
            best = Some((s, n));
        }
    }
    best.map(|(_, n)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u32]) -> BTreeSet<NodeId> {
        v.iter().map(|n| NodeId(*n)).collect()
    }

    fn dom(ordered: bool, restricted: bool, nofailback: bool, nodes: &[(u32, u32)]) -> DomainIds {
        DomainIds {
            ordered,
            restricted,
            nofailback,
            nodes: nodes.iter().map(|(n, p)| (NodeId(*n), *p)).collect(),
        }
    }

    /// The score table: (domain, node, online, owner, expected).
    #[test]
    #[allow(clippy::type_complexity)]
    fn score_table() {
        let unordered_r = dom(false, true, false, &[(1, 1), (2, 1)]);
        let unordered_u = dom(false, false, false, &[(1, 1), (2, 1)]);
        let ordered_r = dom(true, true, false, &[(1, 1), (2, 2), (3, 3)]);
        let ordered_nfb = dom(true, true, true, &[(1, 1), (2, 2)]);
        let ordered_u = dom(true, false, false, &[(1, 1), (2, 2)]);
        #[rustfmt::skip]
        let table: &[(Option<&DomainIds>, u32, &[u32], Option<u32>, u8)] = &[
            // No domain: any online node is best, offline is illegal.
            (None, 1, &[1, 2], None, BEST),
            (None, 3, &[1, 2], None, ILLEGAL),
            // Unordered restricted: members best, others illegal.
            (Some(&unordered_r), 1, &[1, 2, 3], None, BEST),
            (Some(&unordered_r), 2, &[1, 2, 3], None, BEST),
            (Some(&unordered_r), 3, &[1, 2, 3], None, ILLEGAL),
            (Some(&unordered_r), 3, &[3], None, ILLEGAL),
            // Unrestricted: outside is 1 while a member is online, else 3.
            (Some(&unordered_u), 3, &[1, 3], None, OUTSIDE),
            (Some(&unordered_u), 3, &[3], None, BEST),
            (Some(&ordered_u), 3, &[2, 3], None, OUTSIDE),
            // Ordered: the top online priority is best, the others 2.
            (Some(&ordered_r), 1, &[1, 2, 3], None, BEST),
            (Some(&ordered_r), 2, &[1, 2, 3], None, MEMBER),
            (Some(&ordered_r), 3, &[1, 2, 3], None, MEMBER),
            (Some(&ordered_r), 2, &[2, 3], None, BEST),
            (Some(&ordered_r), 3, &[2, 3], None, MEMBER),
            (Some(&ordered_r), 3, &[3], None, BEST),
            (Some(&ordered_r), 4, &[1, 4], None, ILLEGAL),
            // Ordered with failback: the owner's own score drops to 2...
            (Some(&ordered_r), 2, &[1, 2], Some(2), MEMBER),
            // ...nofailback keeps the running owner at 3.
            (Some(&ordered_nfb), 2, &[1, 2], Some(2), BEST),
            (Some(&ordered_nfb), 2, &[1, 2], None, MEMBER),
            (Some(&ordered_nfb), 1, &[1, 2], Some(2), BEST),
        ];
        for (i, (d, n, online, owner, want)) in table.iter().enumerate() {
            let got = score(*d, NodeId(*n), &ids(online), owner.map(NodeId));
            assert_eq!(got, *want, "row {i}: node {n} online {online:?}");
        }
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn target_table() {
        let ordered = dom(true, true, false, &[(1, 2), (2, 1), (3, 3)]);
        let unrestricted = dom(true, false, false, &[(3, 1)]);
        let none = Load::default();
        let busy = |n: &[u32]| Load {
            running: n.iter().map(|n| (NodeId(*n), 1)).collect(),
            exclusive: BTreeSet::new(),
        };
        let excl_on = |n: u32| Load {
            running: [(NodeId(n), 1)].into(),
            exclusive: ids(&[n]),
        };
        #[rustfmt::skip]
        let table: Vec<(Option<&DomainIds>, bool, &[u32], &[u32], Load, Option<u32>)> = vec![
            (Some(&ordered), false, &[1, 2, 3], &[], none.clone(), Some(2)),
            (Some(&ordered), false, &[1, 2, 3], &[2], none.clone(), Some(1)),
            (Some(&ordered), false, &[1, 2, 3], &[2, 1], none.clone(), Some(3)),
            (Some(&ordered), false, &[4], &[], none.clone(), None),
            (Some(&ordered), false, &[1, 2, 3], &[1, 2, 3], none.clone(), None),
            (Some(&unrestricted), false, &[1, 2, 3], &[], none.clone(), Some(3)),
            (Some(&unrestricted), false, &[1, 2, 3], &[3], none.clone(), Some(1)),
            (None, false, &[1, 2, 3], &[], none.clone(), Some(1)),
            // Exclusive: only an empty node.
            (None, true, &[1, 2, 3], &[], busy(&[1]), Some(2)),
            (None, true, &[1, 2], &[], busy(&[1, 2]), None),
            // An exclusive +2 on an empty node beats a better busy node.
            (Some(&ordered), true, &[1, 2, 3], &[], busy(&[2]), Some(1)),
            // Nothing joins an exclusive service.
            (None, false, &[1, 2], &[], excl_on(1), Some(2)),
        ];
        for (i, (d, ex, online, exclude, load, want)) in table.into_iter().enumerate() {
            let got = best_target(d, ex, &ids(online), &ids(exclude), &load);
            assert_eq!(got, want.map(NodeId), "row {i}");
        }
    }
}
