//! Glock states and the DLM modes under them.
//!
//! A glock's state says what this node may keep cached under it; the DLM
//! mode is what the lock manager enforces between nodes. The mapping is the
//! kernel's (`lock_dlm.c` `make_mode`): UN→NL, SH→PR, DF→CW, EX→EX.

use std::fmt;

/// A glock state (the kernel's `LM_ST_*`), also the mode a holder asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GlockState {
    /// Unlocked: nothing cached. Held as a DLM NL lock until forgotten.
    Un,
    /// Shared: clean data and metadata may be cached.
    Sh,
    /// Deferred: direct I/O only; metadata may be cached, data may not.
    /// Conflicts with SH, so that no node caches pages another writes.
    Df,
    /// Exclusive: data and metadata may be cached and dirty.
    Ex,
}

/// The GFS2 subset of DLM modes. Values are the kernel's `DLM_LOCK_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum DlmMode {
    /// Null: blocks nothing; keeps the lock (and its LVB) alive.
    Nl = 0,
    /// Concurrent write.
    Cw = 2,
    /// Protected read.
    Pr = 3,
    /// Exclusive.
    Ex = 5,
}

impl GlockState {
    /// Every state, weakest first (used by tests and by [`Self::demote_target`]).
    pub const ALL: [GlockState; 4] = [Self::Un, Self::Sh, Self::Df, Self::Ex];

    /// The DLM mode that backs this state.
    pub fn dlm_mode(self) -> DlmMode {
        match self {
            Self::Un => DlmMode::Nl,
            Self::Sh => DlmMode::Pr,
            Self::Df => DlmMode::Cw,
            Self::Ex => DlmMode::Ex,
        }
    }

    /// The state a DLM mode backs.
    pub fn from_dlm(mode: DlmMode) -> Self {
        match mode {
            DlmMode::Nl => Self::Un,
            DlmMode::Pr => Self::Sh,
            DlmMode::Cw => Self::Df,
            DlmMode::Ex => Self::Ex,
        }
    }

    /// May one node hold `self` while another holds `other`? Also the rule
    /// between two holders on one node (SH with SH, DF with DF, EX alone).
    pub fn compatible(self, other: GlockState) -> bool {
        self.dlm_mode().compatible(other.dlm_mode())
    }

    /// Does holding `self` allow a holder of `wanted`? EX allows everything,
    /// SH and DF allow themselves, everything allows UN.
    pub fn covers(self, wanted: GlockState) -> bool {
        self == wanted || self == Self::Ex || wanted == Self::Un
    }

    /// True when this state may keep cached data or metadata (anything but UN).
    pub fn caches(self) -> bool {
        self != Self::Un
    }

    /// The highest state at or below `self` (by [`Self::covers`]) that is
    /// compatible with every DLM mode in `blocked`: where a demote for those
    /// remote requests must go. From EX this is the kernel's rule (a request
    /// for EX demotes to UN, CW to DF, PR to SH; several different ones to
    /// UN). From SH or DF it never converts sideways (DF→SH): such a
    /// "demote" could wait in the DLM behind another node's DF holder.
    pub fn demote_target(self, blocked: ModeSet) -> GlockState {
        let fits = |s: GlockState| self.covers(s) && blocked.all_compatible_with(s.dlm_mode());
        let mut candidates = Self::ALL.iter().rev().copied();
        candidates.find(|&s| fits(s)).unwrap_or(Self::Un)
    }
}

/// `COMPAT[a][b]` for the four GFS2 modes, indexed NL, CW, PR, EX.
const COMPAT: [[bool; 4]; 4] = [
    // NL    CW     PR     EX
    [true, true, true, true],    // NL
    [true, true, false, false],  // CW
    [true, false, true, false],  // PR
    [true, false, false, false], // EX
];

impl DlmMode {
    /// Every mode, weakest first.
    pub const ALL: [DlmMode; 4] = [Self::Nl, Self::Cw, Self::Pr, Self::Ex];

    fn index(self) -> usize {
        match self {
            Self::Nl => 0,
            Self::Cw => 1,
            Self::Pr => 2,
            Self::Ex => 3,
        }
    }

    /// The DLM compatibility matrix, restricted to GFS2's modes.
    pub fn compatible(self, other: DlmMode) -> bool {
        COMPAT[self.index()][other.index()]
    }
}

/// A small set of DLM modes: the modes other nodes are waiting for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModeSet(u8);

impl ModeSet {
    /// Adds `mode`.
    pub fn insert(&mut self, mode: DlmMode) {
        self.0 |= 1 << mode.index();
    }

    /// True when no mode is in the set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True when `mode` is compatible with every mode in the set.
    pub fn all_compatible_with(self, mode: DlmMode) -> bool {
        DlmMode::ALL
            .iter()
            .filter(|m| self.0 & (1 << m.index()) != 0)
            .all(|m| m.compatible(mode))
    }
}

impl fmt::Display for GlockState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Un => "UN",
            Self::Sh => "SH",
            Self::Df => "DF",
            Self::Ex => "EX",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use GlockState::*;

    #[test]
    fn dlm_mapping_is_lock_dlm_make_mode() {
        assert_eq!(Un.dlm_mode(), DlmMode::Nl);
        assert_eq!(Sh.dlm_mode(), DlmMode::Pr);
        assert_eq!(Df.dlm_mode(), DlmMode::Cw);
        assert_eq!(Ex.dlm_mode(), DlmMode::Ex);
        for s in GlockState::ALL {
            assert_eq!(GlockState::from_dlm(s.dlm_mode()), s);
        }
        assert_eq!(DlmMode::Pr as u8, 3);
        assert_eq!(DlmMode::Ex as u8, 5);
    }

    /// The whole table, as data: which pairs of states may coexist.
    #[test]
    fn compatibility_table() {
        let expect = [
            (Un, [true, true, true, true]),
            (Sh, [true, true, false, false]),
            (Df, [true, false, true, false]),
            (Ex, [true, false, false, false]),
        ];
        for (a, row) in expect {
            for (b, want) in GlockState::ALL.into_iter().zip(row) {
                assert_eq!(a.compatible(b), want, "{a} with {b}");
                assert_eq!(b.compatible(a), want, "symmetry {b} with {a}");
            }
        }
    }

    #[test]
    fn covers_table() {
        let expect = [
            (Un, [true, false, false, false]),
            (Sh, [true, true, false, false]),
            (Df, [true, false, true, false]),
            (Ex, [true, true, true, true]),
        ];
        for (a, row) in expect {
            for (b, want) in GlockState::ALL.into_iter().zip(row) {
                assert_eq!(a.covers(b), want, "{a} covers {b}");
            }
        }
    }

    fn set(modes: &[DlmMode]) -> ModeSet {
        let mut s = ModeSet::default();
        modes.iter().for_each(|&m| s.insert(m));
        s
    }

    #[test]
    fn demote_targets_from_ex_are_the_kernels() {
        assert_eq!(Ex.demote_target(set(&[DlmMode::Ex])), Un);
        assert_eq!(Ex.demote_target(set(&[DlmMode::Cw])), Df);
        assert_eq!(Ex.demote_target(set(&[DlmMode::Pr])), Sh);
        assert_eq!(Ex.demote_target(set(&[DlmMode::Pr, DlmMode::Cw])), Un);
    }

    #[test]
    fn demote_targets_never_go_sideways() {
        assert_eq!(Sh.demote_target(set(&[DlmMode::Cw])), Un);
        assert_eq!(Df.demote_target(set(&[DlmMode::Pr])), Un);
        assert_eq!(Sh.demote_target(set(&[DlmMode::Pr])), Sh);
        assert_eq!(Df.demote_target(set(&[DlmMode::Cw])), Df);
        assert_eq!(Un.demote_target(set(&[DlmMode::Ex])), Un);
    }

    /// Exhaustive: the target is always covered by the start state and
    /// compatible with every blocked mode.
    #[test]
    fn demote_target_is_safe_for_every_input() {
        for from in GlockState::ALL {
            for bits in 0u8..16 {
                let blocked = ModeSet(bits);
                let to = from.demote_target(blocked);
                assert!(from.covers(to));
                assert!(blocked.all_compatible_with(to.dlm_mode()));
            }
        }
    }
}
