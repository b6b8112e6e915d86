//! Slowing down CHAP guessing (RFC 7143 12.1.3 leaves it to the target).
//! After a bad CHAP response from an initiator (by name and address),
//! its next answers wait: 200 ms after the first failure, doubling with
//! each further one up to [`MAX_DELAY`]. Every answer waits, good or bad,
//! so that a guesser cannot tell a failure by the silence; and the waits
//! queue up, so that guessing on many connections at once is no faster.
//! A good response clears the record; a quiet [`FORGET`] does too. Time is
//! an input.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The wait after the first failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(200);
/// The longest wait.
pub const MAX_DELAY: Duration = Duration::from_secs(5);
/// Failures older than this are forgotten.
pub const FORGET: Duration = Duration::from_secs(15 * 60);
/// Initiators remembered at most (past it, the oldest records go).
const MAX_ENTRIES: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Record {
    failures: u32,
    /// No answer before this.
    next: Instant,
    last_failure: Instant,
}

/// Failed CHAP logins per (initiator address, initiator name).
#[derive(Debug, Default)]
pub struct ChapThrottle {
    records: Mutex<HashMap<(IpAddr, String), Record>>,
}

fn step(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    FIRST_DELAY
        .saturating_mul(1 << (failures - 1).min(16))
        .min(MAX_DELAY)
}

impl ChapThrottle {
    /// How long to hold back the answer to a CHAP response from `who`
    /// arriving at `now` (and books that slot, so that the next one waits
    /// longer).
    pub fn reserve(&self, who: &(IpAddr, String), now: Instant) -> Duration {
        let mut m = self.records.lock();
        let Some(r) = m.get_mut(who) else {
            return Duration::ZERO;
        };
        if now.duration_since(r.last_failure) > FORGET {
            m.remove(who);
            return Duration::ZERO;
        }
        let at = r.next.max(now);
        r.next = at + step(r.failures);
        at - now
    }

    /// Records the outcome of a CHAP response from `who`, answered at `at`.
    pub fn record(&self, who: &(IpAddr, String), ok: bool, at: Instant) {
        let mut m = self.records.lock();
        if ok {
            m.remove(who);
            return;
        }
        if m.len() >= MAX_ENTRIES && !m.contains_key(who) {
            m.retain(|_, r| at.duration_since(r.last_failure) <= FORGET);
            if m.len() >= MAX_ENTRIES {
                if let Some(oldest) = m.iter().min_by_key(|(_, r)| r.last_failure) {
                    let k = oldest.0.clone();
                    m.remove(&k);
                }
            }
        }
        let r = m.entry(who.clone()).or_insert(Record {
            failures: 0,
            next: at,
            last_failure: at,
        });
        r.failures = r.failures.saturating_add(1);
        r.last_failure = at;
        r.next = r.next.max(at + step(r.failures));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(n: &str) -> (IpAddr, String) {
        ("127.0.0.1".parse().unwrap(), n.to_string())
    }

    #[test]
    fn waits_grow_with_failures_and_are_bounded() {
        let t = ChapThrottle::default();
        let a = who("iqn.a");
        let mut now = Instant::now();
        let mut waits = Vec::new();
        for _ in 0..10 {
            let w = t.reserve(&a, now);
            waits.push(w.as_millis());
            now += w;
            t.record(&a, false, now);
        }
        assert_eq!(
            waits,
            [0, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
    }

    #[test]
    fn parallel_guesses_queue_up() {
        let t = ChapThrottle::default();
        let a = who("iqn.a");
        let now = Instant::now();
        t.record(&a, false, now);
        t.record(&a, false, now);
        // Three answers at once: each waits for the one before.
        let w: Vec<u128> = (0..3).map(|_| t.reserve(&a, now).as_millis()).collect();
        assert_eq!(w, [400, 800, 1200]);
    }

    #[test]
    fn others_success_and_time_clear_the_record() {
        let t = ChapThrottle::default();
        let (a, b) = (who("iqn.a"), who("iqn.b"));
        let now = Instant::now();
        t.record(&a, false, now);
        assert_eq!(t.reserve(&b, now), Duration::ZERO, "another initiator");
        let other_ip = ("127.0.0.2".parse().unwrap(), "iqn.a".to_string());
        assert_eq!(t.reserve(&other_ip, now), Duration::ZERO, "another address");
        assert!(t.reserve(&a, now) > Duration::ZERO);
        t.record(&a, true, now);
        assert_eq!(
            t.reserve(&a, now),
            Duration::ZERO,
            "a good response clears it"
        );
        t.record(&a, false, now);
        let later = now + FORGET + Duration::from_secs(1);
        assert_eq!(t.reserve(&a, later), Duration::ZERO, "forgotten");
    }
}
