//! Time for the drivers. The [`crate::node::Node`] itself never reads a
//! clock: drivers pass `now` with every event, from one of these.

use crate::ids::Millis;
use std::time::Instant;

/// A monotonic millisecond clock.
pub trait Clock {
    /// Milliseconds since the clock started (never 0, never going back).
    fn now(&self) -> Millis;
}

/// The real monotonic clock.
#[derive(Debug, Clone)]
pub struct SystemClock {
    start: Instant,
}

impl SystemClock {
    /// A clock starting now.
    pub fn new() -> SystemClock {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Millis {
        Millis(self.start.elapsed().as_millis() as u64 + 1)
    }
}

/// A clock moved by hand (simulation, tests).
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: std::cell::Cell<u64>,
}

impl ManualClock {
    /// Moves the clock to `t` (never backwards).
    pub fn set(&self, t: Millis) {
        self.now.set(self.now.get().max(t.0));
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Millis {
        Millis(self.now.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_never_go_back() {
        let c = ManualClock::default();
        c.set(Millis(10));
        c.set(Millis(5));
        assert_eq!(c.now(), Millis(10));
        let s = SystemClock::new();
        let a = s.now();
        assert!(s.now() >= a && a.0 >= 1);
    }
}
