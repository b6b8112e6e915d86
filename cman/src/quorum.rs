//! Quorum with votequorum semantics, as pure functions and a small state.
//!
//! - `expected_votes`: from cluster.conf or the sum of all nodes' votes; it
//!   never counts lower than the votes present (votequorum raises it).
//! - quorum = expected / 2 + 1, except `two_node` (quorum 1).
//! - `wait_for_all` (implied by `two_node`): not quorate until every
//!   configured node has been in one view together once since start.
//! - `last_man_standing`: after a view has been quorate and unchanged for the
//!   window, expected votes drop to the votes present (so the cluster can
//!   shrink node by node down to two nodes).
//! - `cman_tool expected -e N` sets expected votes (never below the votes
//!   present).

use crate::config::ClusterConf;
use crate::ids::Millis;

/// Quorum options, resolved from cluster.conf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuorumConfig {
    /// Expected votes from the config (or the sum of all votes).
    pub expected_votes: u32,
    /// `two_node`.
    pub two_node: bool,
    /// `wait_for_all` (true when two_node unless set to 0).
    pub wait_for_all: bool,
    /// `last_man_standing`.
    pub last_man_standing: bool,
    /// Its window in ms.
    pub lms_window_ms: u64,
}

impl QuorumConfig {
    /// Resolves the quorum options of a config.
    pub fn from_conf(conf: &ClusterConf) -> QuorumConfig {
        let sum: u32 = conf.nodes.iter().map(|n| n.votes).sum();
        QuorumConfig {
            expected_votes: conf.cman.expected_votes.unwrap_or(sum).max(1),
            two_node: conf.cman.two_node,
            wait_for_all: conf.cman.wait_for_all.unwrap_or(conf.cman.two_node),
            last_man_standing: conf.cman.last_man_standing && !conf.cman.two_node,
            lms_window_ms: conf.cman.lms_window_ms,
        }
    }
}

/// Quorum needed for `expected` expected votes with `total` votes present.
pub fn quorum_of(expected: u32, total: u32, two_node: bool) -> u32 {
    if two_node {
        return 1;
    }
    expected.max(total) / 2 + 1
}

/// What `cman_tool status` shows about quorum.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QuorumStatus {
    /// Effective expected votes.
    pub expected_votes: u32,
    /// Votes of the current members.
    pub total_votes: u32,
    /// Votes needed.
    pub quorum: u32,
    /// Whether this partition is quorate.
    pub quorate: bool,
    /// Flags as cman_tool prints them (`2node`, `WaitForAll`, `LastManStanding`).
    pub flags: Vec<String>,
}

/// Quorum state of one node.
#[derive(Clone, Debug)]
pub struct QuorumState {
    cfg: QuorumConfig,
    /// Set by `cman_tool expected` or by last_man_standing.
    expected_override: Option<u32>,
    /// wait_for_all satisfied: all nodes were seen together once.
    all_seen: bool,
    /// Votes present now and when that changed (for the LMS window).
    total_votes: u32,
    stable_since: Millis,
}

impl QuorumState {
    /// Fresh state (nothing seen yet).
    pub fn new(cfg: QuorumConfig) -> QuorumState {
        QuorumState {
            cfg,
            expected_override: None,
            all_seen: false,
            total_votes: 0,
            stable_since: Millis(0),
        }
    }

    /// Replaces the options (new config version); keeps what was seen.
    pub fn set_config(&mut self, cfg: QuorumConfig) {
        self.cfg = cfg;
    }

    /// A view was installed: `total_votes` present, `all_nodes` true when it
    /// holds every configured node.
    pub fn view_installed(&mut self, now: Millis, total_votes: u32, all_nodes: bool) {
        self.all_seen |= all_nodes;
        self.total_votes = total_votes;
        self.stable_since = now;
    }

    /// `cman_tool expected -e N`.
    pub fn set_expected(&mut self, n: u32) {
        self.expected_override = Some(n.max(1));
    }

    /// last_man_standing: lowers expected votes to the votes present once
    /// the view has been quorate and stable for the window. Returns the new
    /// expected votes when it changed.
    pub fn tick(&mut self, now: Millis) -> Option<u32> {
        if !self.cfg.last_man_standing || !self.status().quorate {
            return None;
        }
        if now.since(self.stable_since) < self.cfg.lms_window_ms {
            return None;
        }
        let current = self.expected();
        // votequorum's LMS works down to two nodes' worth of votes.
        if self.total_votes < current && self.total_votes >= 2 {
            self.expected_override = Some(self.total_votes);
            return Some(self.total_votes);
        }
        None
    }

    fn expected(&self) -> u32 {
        self.expected_override
            .unwrap_or(self.cfg.expected_votes)
            .max(self.total_votes)
    }

    /// Current quorum status.
    pub fn status(&self) -> QuorumStatus {
        let expected = self.expected();
        let quorum = quorum_of(expected, self.total_votes, self.cfg.two_node);
        let waiting = self.cfg.wait_for_all && !self.all_seen;
        let mut flags = Vec::new();
        if self.cfg.two_node {
            flags.push("2node".to_string());
        }
        if self.cfg.wait_for_all {
            flags.push("WaitForAll".to_string());
        }
        if self.cfg.last_man_standing {
            flags.push("LastManStanding".to_string());
        }
        QuorumStatus {
            expected_votes: expected,
            total_votes: self.total_votes,
            quorum,
            quorate: !waiting && self.total_votes >= quorum,
            flags,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(expected: u32) -> QuorumConfig {
        QuorumConfig {
            expected_votes: expected,
            two_node: false,
            wait_for_all: false,
            last_man_standing: false,
            lms_window_ms: 10_000,
        }
    }

    #[test]
    fn quorum_table() {
        // (expected, total, two_node) -> quorum
        let table = [
            (1, 1, false, 1),
            (2, 1, false, 2),
            (3, 3, false, 2),
            (3, 2, false, 2),
            (4, 2, false, 3),
            (5, 5, false, 3),
            (3, 5, false, 3), // expected raised to the votes present
            (2, 2, true, 1),
            (1, 2, true, 1),
        ];
        for (e, t, two, q) in table {
            assert_eq!(
                quorum_of(e, t, two),
                q,
                "expected {e} total {t} two_node {two}"
            );
        }
    }

    #[test]
    fn majority_never_both_sides_exhaustive() {
        // For any vote split of up to 12 votes, two disjoint sides are never
        // both quorate without two_node.
        for expected in 1..=12u32 {
            for a in 0..=expected {
                let b = expected - a;
                let q = |t| t >= quorum_of(expected, t, false);
                assert!(!(q(a) && q(b)), "split {a}/{b} of {expected}");
            }
        }
    }

    #[test]
    fn three_nodes_lose_one_then_two() {
        let mut s = QuorumState::new(cfg(3));
        s.view_installed(Millis(0), 3, true);
        assert!(s.status().quorate);
        s.view_installed(Millis(1), 2, false);
        assert_eq!(s.status().quorum, 2);
        assert!(s.status().quorate);
        s.view_installed(Millis(2), 1, false);
        assert!(!s.status().quorate);
    }

    #[test]
    fn two_node_implies_wait_for_all() {
        let mut c = cfg(1);
        c.two_node = true;
        c.wait_for_all = true;
        let mut s = QuorumState::new(c);
        s.view_installed(Millis(0), 1, false);
        let st = s.status();
        assert_eq!(st.quorum, 1);
        assert!(!st.quorate, "a lone node of two waits for its peer");
        s.view_installed(Millis(1), 2, true);
        assert!(s.status().quorate);
        s.view_installed(Millis(2), 1, false);
        assert!(s.status().quorate, "survivor of two stays quorate");
        assert_eq!(s.status().flags, vec!["2node", "WaitForAll"]);
    }

    #[test]
    fn wait_for_all_without_two_node() {
        let mut c = cfg(3);
        c.wait_for_all = true;
        let mut s = QuorumState::new(c);
        s.view_installed(Millis(0), 2, false);
        assert!(!s.status().quorate);
        s.view_installed(Millis(1), 3, true);
        s.view_installed(Millis(2), 2, false);
        assert!(s.status().quorate);
    }

    #[test]
    fn last_man_standing_shrinks_after_window_only() {
        let mut c = cfg(5);
        c.last_man_standing = true;
        c.lms_window_ms = 1000;
        let mut s = QuorumState::new(c);
        s.view_installed(Millis(0), 5, true);
        s.view_installed(Millis(100), 3, false);
        assert_eq!(s.tick(Millis(900)), None, "inside the window");
        assert_eq!(s.tick(Millis(1100)), Some(3));
        assert_eq!(s.status().quorum, 2);
        s.view_installed(Millis(1200), 2, false);
        assert!(s.status().quorate);
        assert_eq!(s.tick(Millis(2300)), Some(2));
        s.view_installed(Millis(2400), 1, false);
        assert!(!s.status().quorate, "LMS stops at two nodes");
        assert_eq!(s.tick(Millis(5000)), None);
    }

    #[test]
    fn lms_needs_quorum_to_shrink() {
        let mut c = cfg(5);
        c.last_man_standing = true;
        let mut s = QuorumState::new(c);
        s.view_installed(Millis(0), 2, false);
        assert_eq!(s.tick(Millis(60_000)), None);
        assert!(!s.status().quorate);
    }

    #[test]
    fn expected_command() {
        let mut s = QuorumState::new(cfg(3));
        s.view_installed(Millis(0), 1, false);
        assert!(!s.status().quorate);
        s.set_expected(1);
        assert!(s.status().quorate);
        assert_eq!(s.status().expected_votes, 1);
        s.view_installed(Millis(1), 3, true);
        assert_eq!(s.status().expected_votes, 3, "never below votes present");
        s.set_expected(0);
        assert_eq!(s.status().quorum, 2);
    }
}
