//! Whether a blocked caller polls for its answer a little before it
//! sleeps.
//!
//! On an idle machine a sleeping thread pays the wake-up of a dozing CPU
//! (tens of microseconds on the 2-core VM this was measured on), and
//! polling halves a remote lock's time. On a busy one the poller takes the
//! CPU the answering threads need and makes it slower (52 against 41 us).
//! So, per thread: a thread that is often preempted (the kernel's count of
//! its involuntary context switches, read every [`CHECK_EVERY`] waits) is
//! on a busy machine and does not poll; nor does one whose polls keep
//! ending without the answer (a slow network), except every 64th wait, to
//! see whether that changed.

use std::cell::Cell;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
struct State {
    waits: u64,
    /// Involuntary context switches at the last check.
    preempted: i64,
    busy: bool,
    /// Raised by each poll that saw the answer, halved by each that did not.
    score: u32,
}

const CHECK_EVERY: u64 = 32;

thread_local! {
    static STATE: Cell<State> = const {
        Cell::new(State { waits: 0, preempted: 0, busy: true, score: 4 })
    };
}

/// This thread's involuntary context switches so far.
fn preemptions() -> i64 {
    // SAFETY: getrusage fills the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    ru.ru_nivcsw
}

/// If polling pays on this thread, calls `poll` until it returns true or
/// `budget` has passed; returns whether it returned true. `poll` returns
/// true when the wait is over (answered, or failed).
pub(crate) fn poll_first(budget: Duration, mut poll: impl FnMut() -> bool) -> bool {
    let spin = STATE.with(|c| {
        let mut st = c.get();
        st.waits += 1;
        if st.waits.is_multiple_of(CHECK_EVERY) {
            let now = preemptions();
            // More than one preemption in 8 waits.
            st.busy = (now - st.preempted) * 8 > CHECK_EVERY as i64;
            st.preempted = now;
        }
        c.set(st);
        !st.busy && (st.score > 0 || st.waits.is_multiple_of(64))
    });
    if !spin {
        return false;
    }
    let deadline = Instant::now() + budget;
    let answered = loop {
        if poll() {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::hint::spin_loop();
    };
    STATE.with(|c| {
        let mut st = c.get();
        st.score = if answered {
            (st.score + 1).min(8)
        } else {
            st.score / 2
        };
        c.set(st);
    });
    answered
}
