//! Service states (rgmanager's codes 110..120) and the replicated service
//! record (`rg_state_t`: owner, last owner, state, restarts, flags).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// A service's state, with rgmanager's numeric codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// 110: not running, may be started.
    Stopped,
    /// 111: its owner is starting it.
    Starting,
    /// 112: running on its owner.
    Started,
    /// 113: its owner is stopping it.
    Stopping,
    /// 114: a stop failed; only disable is allowed.
    Failed,
    /// 115: not known yet.
    Uninitialized,
    /// 116: checking.
    Checking,
    /// 117: its owner died; it waits for the owner's fencing.
    Recoverable,
    /// 118: a status check failed; its owner is stopping it.
    Recovering,
    /// 119: disabled by the administrator (or by `recovery="disable"`).
    Disabled,
    /// 120: migrating.
    Migrating,
}

impl State {
    /// rgmanager's code.
    pub fn code(self) -> u32 {
        match self {
            State::Stopped => 110,
            State::Starting => 111,
            State::Started => 112,
            State::Stopping => 113,
            State::Failed => 114,
            State::Uninitialized => 115,
            State::Checking => 116,
            State::Recoverable => 117,
            State::Recovering => 118,
            State::Disabled => 119,
            State::Migrating => 120,
        }
    }

    /// The word clustat prints.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Started => "started",
            State::Stopping => "stopping",
            State::Failed => "failed",
            State::Uninitialized => "uninitialized",
            State::Checking => "checking",
            State::Recoverable => "recoverable",
            State::Recovering => "recovering",
            State::Disabled => "disabled",
            State::Migrating => "migrating",
        }
    }

    /// Every state, by code.
    pub const ALL: [State; 11] = [
        State::Stopped,
        State::Starting,
        State::Started,
        State::Stopping,
        State::Failed,
        State::Uninitialized,
        State::Checking,
        State::Recoverable,
        State::Recovering,
        State::Disabled,
        State::Migrating,
    ];

    /// A state an administrator's request waits out.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            State::Starting | State::Stopping | State::Recovering | State::Migrating
        )
    }
}

/// What follows a successful stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum After {
    /// Stay stopped until the next membership change (`clusvcadm -s`).
    Stopped,
    /// Disabled.
    Disabled,
    /// Start again on the same node.
    Restart,
    /// Start elsewhere: on the node given, else by score away from the
    /// old owner.
    Relocate(Option<NodeId>),
}

/// The replicated record of one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// State.
    pub state: State,
    /// Node running it (or starting/stopping it).
    pub owner: Option<NodeId>,
    /// Node that ran it last.
    pub last_owner: Option<NodeId>,
    /// Restarts in place so far.
    pub restarts: u32,
    /// When the restarts within `restart_expire_time` happened (owner's
    /// clock, ms).
    pub restart_times_ms: Vec<u64>,
    /// No status checks, no recovery, no placement.
    pub frozen: bool,
    /// Grows with every change: a message about an older version is stale.
    pub ver: u64,
    /// Nodes where a start failed since the last membership change.
    pub tried: BTreeSet<NodeId>,
    /// A node to use only when no other will do (the one it is moving
    /// away from).
    pub avoid: Option<NodeId>,
    /// What follows the current stop.
    pub after: After,
    /// Stopped by the administrator: not placed until the next membership
    /// change.
    pub hold: bool,
}

impl Record {
    /// A new record: stopped, or disabled when `autostart` is off.
    pub fn new(autostart: bool) -> Record {
        Record {
            state: if autostart {
                State::Stopped
            } else {
                State::Disabled
            },
            owner: None,
            last_owner: None,
            restarts: 0,
            restart_times_ms: Vec::new(),
            frozen: false,
            ver: 0,
            tried: BTreeSet::new(),
            avoid: None,
            after: After::Stopped,
            hold: false,
        }
    }

    /// Moves to `state` (bumping the version).
    pub fn set(&mut self, state: State) {
        self.state = state;
        self.ver += 1;
    }

    /// Stopped with no owner, remembering who had it.
    pub fn release(&mut self, state: State) {
        if self.owner.is_some() {
            self.last_owner = self.owner;
        }
        self.owner = None;
        self.set(state);
    }

    /// Starting on `node`.
    pub fn start_on(&mut self, node: NodeId) {
        self.owner = Some(node);
        self.hold = false;
        self.set(State::Starting);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_rgmanagers() {
        let codes: Vec<u32> = State::ALL.iter().map(|s| s.code()).collect();
        assert_eq!(codes, (110..=120).collect::<Vec<_>>());
        let words: Vec<&str> = State::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            words,
            [
                "stopped",
                "starting",
                "started",
                "stopping",
                "failed",
                "uninitialized",
                "checking",
                "recoverable",
                "recovering",
                "disabled",
                "migrating"
            ]
        );
    }
}
