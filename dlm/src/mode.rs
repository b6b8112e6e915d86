//! Lock modes and the tables that govern them: the compatibility matrix,
//! the LVB operation table and the QUECVT table (as in the kernel's `lock.c`).

use std::fmt;

/// A lock mode, weakest first. The numeric values are the kernel's
/// (`DLM_LOCK_NL` = 0 … `DLM_LOCK_EX` = 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Mode {
    /// Null: a placeholder that blocks nothing.
    Nl = 0,
    /// Concurrent read.
    Cr = 1,
    /// Concurrent write.
    Cw = 2,
    /// Protected read (shared).
    Pr = 3,
    /// Protected write (update).
    Pw = 4,
    /// Exclusive.
    Ex = 5,
}

/// `COMPAT[held][requested]`: can `requested` be granted while `held` is granted?
const COMPAT: [[bool; 6]; 6] = [
    // NL    CR     CW     PR     PW     EX      <- requested
    [true, true, true, true, true, true],      // NL held
    [true, true, true, true, true, false],     // CR
    [true, true, true, false, false, false],   // CW
    [true, true, false, true, false, false],   // PR
    [true, true, false, false, false, false],  // PW
    [true, false, false, false, false, false], // EX
];

/// What happens to the value block when a lock goes from a granted mode to
/// a requested mode (kernel `dlm_lvb_operations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LvbOp {
    /// Nothing.
    None,
    /// The resource's LVB is copied to the holder.
    Read,
    /// The holder's LVB is written to the resource.
    Write,
}

/// `LVB_OPS[grmode][rqmode]` for a lock that already holds `grmode`;
/// a new lock (no granted mode) always reads.
const LVB_OPS: [[LvbOp; 6]; 6] = {
    use LvbOp::{None as N, Read as R, Write as W};
    [
        // NL CR CW PR PW EX   <- requested
        [R, R, R, R, R, R], // NL granted
        [N, R, R, R, R, R], // CR
        [N, N, R, R, R, R], // CW
        [N, N, N, R, R, R], // PR
        [W, W, W, W, W, R], // PW
        [W, W, W, W, W, W], // EX
    ]
};

/// `QUECVT_OK[grmode][rqmode]`: conversions that may carry QUECVT
/// (kernel `__quecvt_compat_matrix`): only up-conversions.
const QUECVT_OK: [[bool; 6]; 6] = [
    [false, true, true, true, true, true],
    [false, false, true, true, true, true],
    [false, false, false, true, true, true],
    [false, false, true, false, true, true],
    [false, false, false, false, false, true],
    [false, false, false, false, false, false],
];

impl Mode {
    /// All six modes, weakest first.
    pub const ALL: [Mode; 6] = [Mode::Nl, Mode::Cr, Mode::Cw, Mode::Pr, Mode::Pw, Mode::Ex];

    /// The mode with the kernel's number `v`, if any.
    pub fn from_u8(v: u8) -> Option<Mode> {
        Mode::ALL.get(usize::from(v)).copied()
    }

    /// True when a lock requested in `requested` can coexist with one granted in `self`.
    pub fn compatible(self, requested: Mode) -> bool {
        COMPAT[self as usize][requested as usize]
    }

    /// LVB effect of going from `granted` (None for a new lock) to `requested`.
    pub fn lvb_op(granted: Option<Mode>, requested: Mode) -> LvbOp {
        match granted {
            None => LvbOp::Read,
            Some(g) => LVB_OPS[g as usize][requested as usize],
        }
    }

    /// True when a conversion from `self` to `requested` may carry QUECVT.
    pub fn quecvt_allowed(self, requested: Mode) -> bool {
        QUECVT_OK[self as usize][requested as usize]
    }

    /// True when `requested` blocks nothing that `self` does not block:
    /// going from `self` to `requested` never needs to wait.
    pub fn is_down_to(self, requested: Mode) -> bool {
        Mode::ALL
            .iter()
            .all(|&m| !m.compatible(self) || m.compatible(requested))
    }

    /// The strongest mode that both `self` and `other` can be relied on
    /// for: what a holder may count on while converting between them.
    pub fn meet(self, other: Mode) -> Mode {
        Mode::ALL
            .into_iter()
            .rev()
            .find(|&m| self.is_down_to(m) && other.is_down_to(m))
            .unwrap_or(Mode::Nl)
    }

    /// Short upper-case name as `dlm_tool` prints it.
    pub fn name(self) -> &'static str {
        ["NL", "CR", "CW", "PR", "PW", "EX"][self as usize]
    }

    /// Parses a mode name (case-insensitive).
    pub fn parse(s: &str) -> Option<Mode> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Mode::*;

    /// The matrix exactly as the reference states it: the set of requested
    /// modes compatible with each held mode.
    #[test]
    fn compat_matrix_matches_reference() {
        let expect: [(Mode, &[Mode]); 6] = [
            (Nl, &[Nl, Cr, Cw, Pr, Pw, Ex]),
            (Cr, &[Nl, Cr, Cw, Pr, Pw]),
            (Cw, &[Nl, Cr, Cw]),
            (Pr, &[Nl, Cr, Pr]),
            (Pw, &[Nl, Cr]),
            (Ex, &[Nl]),
        ];
        for (held, ok) in expect {
            for req in Mode::ALL {
                assert_eq!(held.compatible(req), ok.contains(&req), "{held} vs {req}");
            }
        }
    }

    #[test]
    fn compat_is_symmetric() {
        for a in Mode::ALL {
            for b in Mode::ALL {
                assert_eq!(a.compatible(b), b.compatible(a), "{a} {b}");
            }
        }
    }

    #[test]
    fn lvb_ops_follow_kernel_rules() {
        for g in Mode::ALL {
            for r in Mode::ALL {
                let expect = match g {
                    Pw if r == Ex => LvbOp::Read,
                    Pw | Ex => LvbOp::Write,
                    _ if r >= g => LvbOp::Read,
                    _ => LvbOp::None,
                };
                assert_eq!(Mode::lvb_op(Some(g), r), expect, "{g}->{r}");
            }
            assert_eq!(Mode::lvb_op(None, g), LvbOp::Read);
        }
    }

    #[test]
    fn quecvt_only_upward() {
        let expect: [(Mode, &[Mode]); 6] = [
            (Nl, &[Cr, Cw, Pr, Pw, Ex]),
            (Cr, &[Cw, Pr, Pw, Ex]),
            (Cw, &[Pr, Pw, Ex]),
            (Pr, &[Cw, Pw, Ex]),
            (Pw, &[Ex]),
            (Ex, &[]),
        ];
        for (g, ok) in expect {
            for r in Mode::ALL {
                assert_eq!(g.quecvt_allowed(r), ok.contains(&r), "{g}->{r}");
            }
        }
    }

    #[test]
    fn down_conversions() {
        assert!(Ex.is_down_to(Nl));
        assert!(Ex.is_down_to(Pr));
        assert!(Pw.is_down_to(Cr));
        assert!(!Pr.is_down_to(Cw));
        assert!(!Cw.is_down_to(Pr));
        assert!(!Nl.is_down_to(Cr));
        for m in Mode::ALL {
            assert!(m.is_down_to(m));
            assert!(m.is_down_to(Nl));
        }
    }

    #[test]
    fn meet_of_modes() {
        assert_eq!(Pr.meet(Cw), Cr);
        assert_eq!(Ex.meet(Pr), Pr);
        assert_eq!(Nl.meet(Ex), Nl);
        for a in Mode::ALL {
            assert_eq!(a.meet(a), a);
            for b in Mode::ALL {
                assert_eq!(a.meet(b), b.meet(a));
                let m = a.meet(b);
                assert!(a.is_down_to(m) && b.is_down_to(m));
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.name()), Some(m));
            assert_eq!(Mode::from_u8(m as u8), Some(m));
        }
        assert_eq!(Mode::from_u8(6), None);
        assert_eq!(Mode::parse("xx"), None);
    }
}
