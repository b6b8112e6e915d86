//! flock and fcntl locks of a `lock_dlm` volume mounted on two nodes
//! (cmand on 127.0.1.1 and 127.0.1.2): flock goes through the DLM, so it
//! excludes across nodes (a counter incremented under LOCK_EX by processes
//! on both nodes loses nothing; LOCK_NB is refused with EWOULDBLOCK while
//! the other node holds the file), it is dropped when its holder closes
//! the file or is killed, and it does not conflict with fcntl locks. A
//! process waiting in F_SETLKW or a blocking flock for the other node's
//! lock gets EINTR from a signal (SIGALRM, handler without SA_RESTART),
//! and its withdrawn request is not granted later.
//!
//! The lock holders are forked children that make libc calls only (no
//! allocation after fork); each takes a parent-death signal.

use std::ffi::{CStr, CString};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use tests::fslab::{cluster_up, fcntl_lock, mkfs, stop_cmands, Lab};
use tests::FuseMount;

/// The longest a child may take for one step before the test fails.
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// The longest the counting processes may take together.
const COUNT_LIMIT: Duration = Duration::from_secs(600);

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn open_rw(p: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap()
}

/// flock(2) on `f`; `op` is LOCK_SH, LOCK_EX or LOCK_UN, perhaps | LOCK_NB.
fn flock(f: &std::fs::File, op: i32) -> std::io::Result<()> {
    // SAFETY: a valid descriptor.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn errno() -> i32 {
    // SAFETY: the calling thread's errno.
    unsafe { *libc::__errno_location() }
}

/// A forked child: a pipe to tell the parent one byte at a time, and its
/// exit status.
struct Kid {
    pid: libc::pid_t,
    /// What the child writes.
    from: std::fs::File,
    reaped: bool,
}

/// Forks a child that runs `body` with the write end of its pipe and
/// exits with what `body` returns. `body` must make libc calls only.
fn fork_kid(body: impl FnOnce(i32) -> i32) -> Kid {
    let mut fds = [0; 2];
    // SAFETY: a two-element array for pipe(2).
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the child only makes async-signal-safe libc calls and
    // _exits; it never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: prctl, getppid, close and _exit are async-signal-safe.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(99);
            }
            libc::close(fds[0]);
            libc::_exit(body(fds[1]));
        }
    }
    // SAFETY: our write end, not used here.
    unsafe { libc::close(fds[1]) };
    // SAFETY: the read end is ours alone from here on.
    let from = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    Kid {
        pid,
        from,
        reaped: false,
    }
}

/// In a child: tells the parent `b`.
fn tell(fd: i32, b: u8) {
    // SAFETY: a one-byte buffer.
    unsafe { libc::write(fd, (&b as *const u8).cast(), 1) };
}

impl Kid {
    /// The next byte the child tells, within [`STEP_LIMIT`].
    fn hear(&mut self, what: &str) -> u8 {
        let mut p = libc::pollfd {
            fd: self.from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = STEP_LIMIT.as_millis() as i32;
        // SAFETY: one pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        assert_eq!(n, 1, "no word from the child: {what}");
        let mut b = [0u8];
        let got = std::io::Read::read(&mut self.from, &mut b).unwrap();
        assert_eq!(got, 1, "the child ended before: {what}");
        b[0]
    }

    /// The child's exit code, within `limit`.
    fn exit_code(&mut self, limit: Duration) -> i32 {
        let start = Instant::now();
        loop {
            let mut st = 0;
            // SAFETY: our own child.
            let r = unsafe { libc::waitpid(self.pid, &mut st, libc::WNOHANG) };
            if r == self.pid {
                self.reaped = true;
                assert!(libc::WIFEXITED(st), "child ended by a signal: {st:#x}");
                return libc::WEXITSTATUS(st);
            }
            assert!(start.elapsed() < limit, "the child did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL; the child must be gone within [`STEP_LIMIT`] (a process
    /// waiting in a FUSE lock request stays until the request is answered).
    fn kill_and_reap(&mut self) {
        // SAFETY: our own child, not reaped yet.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let start = Instant::now();
        loop {
            let mut st = 0;
            // SAFETY: our own child.
            if unsafe { libc::waitpid(self.pid, &mut st, libc::WNOHANG) } == self.pid {
                self.reaped = true;
                return;
            }
            assert!(start.elapsed() < STEP_LIMIT, "a killed waiter stayed");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, reaped.
    fn kill(&mut self) {
        // SAFETY: our own child, not reaped yet.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
        self.reaped = true;
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        if !self.reaped {
            self.kill();
        }
    }
}

/// In a child: `rounds` increments of the 20-digit counter in `path`, each
/// under flock LOCK_EX, written with fsync. 0 when all went well.
fn count_under_flock(path: &CStr, rounds: u32) -> i32 {
    // SAFETY: libc calls on our own descriptor and stack buffers.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR);
        if fd < 0 {
            return 2;
        }
        for _ in 0..rounds {
            if libc::flock(fd, libc::LOCK_EX) != 0 {
                return 3;
            }
            let mut buf = [0u8; 20];
            if libc::pread(fd, buf.as_mut_ptr().cast(), 20, 0) != 20 {
                return 4;
            }
            let mut v: u64 = 0;
            for d in buf {
                v = v * 10 + u64::from(d - b'0');
            }
            v += 1;
            for i in (0..20).rev() {
                buf[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
            if libc::pwrite(fd, buf.as_ptr().cast(), 20, 0) != 20 || libc::fsync(fd) != 0 {
                return 5;
            }
            if libc::flock(fd, libc::LOCK_UN) != 0 {
                return 6;
            }
        }
        libc::close(fd);
    }
    0
}

/// In a child: opens `path`, takes flock `op`, says `b'H'` and waits to be
/// killed (or says `b'E'` and exits 1 when the flock fails).
fn hold_flock(path: &CStr, op: i32, to: i32) -> i32 {
    // SAFETY: libc calls on our own descriptor.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_RDWR);
        if fd < 0 || libc::flock(fd, op) != 0 {
            tell(to, b'E');
            return 1;
        }
        tell(to, b'H');
        loop {
            libc::pause();
        }
    }
}

extern "C" fn on_alarm(_sig: i32) {}

/// How a child waits for a lock.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// fcntl F_SETLKW F_WRLCK on byte 0.
    Fcntl,
    /// flock LOCK_EX.
    Flock,
}

/// In a child: SIGALRM caught by a no-op handler without SA_RESTART,
/// `alarm(secs)` (0: a timer of `ms` milliseconds instead), then a
/// blocking lock of `path`. Tells `b'G'` when it was
/// granted, `b'I'` when interrupted (EINTR), `b'E'` for another error;
/// then keeps the file open (and the lock, if granted) until killed.
fn wait_lock(path: &CStr, how: Wait, secs: u32, ms: i64, to: i32) -> i32 {
    // SAFETY: libc calls on our own descriptor, sigaction and flock structs.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_alarm as extern "C" fn(i32) as libc::sighandler_t;
        sa.sa_flags = 0; // no SA_RESTART: the lock call returns EINTR
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) != 0 {
            return 2;
        }
        let fd = libc::open(path.as_ptr(), libc::O_RDWR);
        if fd < 0 {
            return 3;
        }
        tell(to, b'W');
        if secs > 0 {
            libc::alarm(secs);
        } else {
            let t = libc::itimerval {
                it_interval: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 0,
                },
                it_value: libc::timeval {
                    tv_sec: 0,
                    tv_usec: ms * 1000,
                },
            };
            libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut());
        }
        let r = match how {
            Wait::Fcntl => {
                let mut fl: libc::flock = std::mem::zeroed();
                fl.l_type = libc::F_WRLCK as libc::c_short;
                fl.l_whence = libc::SEEK_SET as libc::c_short;
                fl.l_len = 1;
                libc::fcntl(fd, libc::F_SETLKW, &fl)
            }
            Wait::Flock => libc::flock(fd, libc::LOCK_EX),
        };
        libc::alarm(0);
        let word = match r {
            0 => b'G',
            _ if errno() == libc::EINTR => b'I',
            _ => b'E',
        };
        tell(to, word);
        loop {
            libc::pause();
        }
    }
}

/// Two nodes mounted, `counter` made; `None` is a recorded skip.
fn two_nodes() -> Option<(Lab, Vec<std::process::Child>, FuseMount, FuseMount)> {
    let (lab, cmands) = cluster_up(2)?;
    mkfs(&lab.image());
    let m1 = FuseMount::start(&mut lab.mount_cmd(1, ""), &lab.mnt(1));
    let m2 = FuseMount::start(&mut lab.mount_cmd(2, ""), &lab.mnt(2));
    let f = std::fs::File::create(lab.mnt(1).join("counter")).unwrap();
    std::io::Write::write_all(&mut &f, &[b'0'; 20]).unwrap();
    f.sync_all().unwrap();
    Some((lab, cmands, m1, m2))
}

fn wouldblock(r: std::io::Result<()>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK))
}

/// Takes `op | LOCK_NB` on a new descriptor of `p`, retrying until the
/// other holder's release (sent by the kernel after close) arrives.
fn flock_soon(p: &Path, op: i32) -> std::fs::File {
    let f = open_rw(p);
    let start = Instant::now();
    loop {
        match flock(&f, op | libc::LOCK_NB) {
            Ok(()) => return f,
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
            Err(e) => panic!("flock: {e}"),
        }
        assert!(start.elapsed() < STEP_LIMIT, "the flock was never released");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// flock across nodes: LOCK_NB refused while the other node holds the
/// file (LOCK_SH against LOCK_EX, LOCK_EX against LOCK_SH), shared locks
/// together, conversions, no conflict with fcntl locks; a flock goes when
/// its holder closes the file and when its process is killed; a counter
/// incremented under LOCK_EX by two processes on each node loses nothing.
#[test]
fn flock_excludes_across_nodes() {
    const ROUNDS: u32 = 25;
    let Some((lab, mut cmands, m1, m2)) = two_nodes() else {
        return;
    };
    let p1 = lab.mnt(1).join("counter");
    let p2 = lab.mnt(2).join("counter");

    let f1 = open_rw(&p1);
    let f2 = open_rw(&p2);
    flock(&f1, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    assert!(wouldblock(flock(&f2, libc::LOCK_EX | libc::LOCK_NB)));
    assert!(wouldblock(flock(&f2, libc::LOCK_SH | libc::LOCK_NB)));
    // fcntl and flock locks do not see each other, as on Linux.
    fcntl_lock(&f2, libc::F_WRLCK, false).unwrap();
    fcntl_lock(&f2, libc::F_UNLCK, false).unwrap();
    // Down to shared: the other node may share, not take it whole.
    flock(&f1, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    flock(&f2, libc::LOCK_SH | libc::LOCK_NB).unwrap();
    assert!(wouldblock(flock(&f1, libc::LOCK_EX | libc::LOCK_NB)));
    flock(&f2, libc::LOCK_UN).unwrap();
    flock(&f1, libc::LOCK_EX | libc::LOCK_NB).unwrap();
    assert!(wouldblock(flock(&f2, libc::LOCK_SH | libc::LOCK_NB)));
    // Closed by its holder: the other node gets it.
    drop(f1);
    let f2x = flock_soon(&p2, libc::LOCK_EX);
    drop((f2, f2x));

    // Held by a process killed with SIGKILL: released with its files.
    let c1 = cpath(&p1);
    let mut holder = fork_kid(|to| hold_flock(&c1, libc::LOCK_EX, to));
    assert_eq!(holder.hear("the holder's flock"), b'H');
    let f2 = open_rw(&p2);
    assert!(wouldblock(flock(&f2, libc::LOCK_EX | libc::LOCK_NB)));
    holder.kill();
    drop(f2);
    drop(flock_soon(&p2, libc::LOCK_EX));

    // The counter: two processes on each node.
    let paths = [cpath(&p1), cpath(&p1), cpath(&p2), cpath(&p2)];
    let mut kids: Vec<Kid> = paths
        .iter()
        .map(|p| fork_kid(|_| count_under_flock(p, ROUNDS)))
        .collect();
    // Each round hands the inode's glock between the nodes too: a slow
    // machine may take minutes, a lost wake-up would take for ever.
    let start = Instant::now();
    for k in &mut kids {
        assert_eq!(k.exit_code(COUNT_LIMIT), 0, "a counting process failed");
    }
    println!(
        "{} increments under flock by 4 processes on 2 nodes: {:.1} s",
        4 * ROUNDS,
        start.elapsed().as_secs_f64()
    );
    let got = std::fs::read_to_string(&p2).unwrap();
    let got: u64 = got.parse().unwrap();
    assert_eq!(got, 4 * u64::from(ROUNDS), "increments lost");

    m1.stop();
    m2.stop();
    stop_cmands(&mut cmands);
    tests::fsck_clean(&lab.image());
}

/// A process on node 2 waiting for node 1's lock (`how`) gets EINTR
/// from SIGALRM; its withdrawn request is never granted (node 1 lets go
/// and takes the lock again without waiting while that process still has
/// the file open), and a later waiter on node 2 gets the lock once node
/// 1 lets go.
fn signal_cancels_a_waiting_lock(lab: &Lab, how: Wait) {
    let p1 = lab.mnt(1).join("counter");
    let c2 = cpath(&lab.mnt(2).join("counter"));
    let take = |f: &std::fs::File| match how {
        Wait::Fcntl => fcntl_lock(f, libc::F_WRLCK, false),
        Wait::Flock => flock(f, libc::LOCK_EX | libc::LOCK_NB),
    };
    let give = |f: &std::fs::File| match how {
        Wait::Fcntl => fcntl_lock(f, libc::F_UNLCK, false),
        Wait::Flock => flock(f, libc::LOCK_UN),
    };
    let f1 = open_rw(&p1);
    take(&f1).unwrap();

    let mut waiter = fork_kid(|to| wait_lock(&c2, how, 1, 0, to));
    assert_eq!(waiter.hear("the waiter's open"), b'W');
    assert_eq!(
        waiter.hear("the waiter's answer"),
        b'I',
        "{how:?}: not EINTR"
    );
    // The interrupted waiter still has the file open: had its request
    // stayed queued, node 1's unlock would grant it.
    give(&f1).unwrap();
    take(&f1).unwrap_or_else(|e| panic!("{how:?}: lock taken by a canceled request: {e}"));
    waiter.kill();

    // SIGKILL of a waiter: it goes (its request answered), and leaves
    // nothing queued.
    let mut killed = fork_kid(|to| wait_lock(&c2, how, 50, 0, to));
    assert_eq!(killed.hear("the killed waiter's open"), b'W');
    std::thread::sleep(Duration::from_millis(300));
    killed.kill_and_reap();
    give(&f1).unwrap();
    take(&f1).unwrap_or_else(|e| panic!("{how:?}: lock taken by a killed waiter: {e}"));

    // A third waiter gets it when node 1 lets go (its alarm only ends a
    // wait that would otherwise hang the test).
    let mut third = fork_kid(|to| wait_lock(&c2, how, 50, 0, to));
    assert_eq!(third.hear("the third waiter's open"), b'W');
    std::thread::sleep(Duration::from_millis(300));
    give(&f1).unwrap();
    assert_eq!(third.hear("the third waiter's answer"), b'G', "{how:?}");
    assert!(
        take(&f1).is_err(),
        "{how:?}: node 1 took a lock node 2 holds"
    );
    third.kill();
    drop(f1);
}

/// F_SETLKW and a blocking flock waiting for the other node's lock both
/// return EINTR on SIGALRM, and leave nothing behind.
#[test]
fn a_signal_interrupts_a_waiting_lock() {
    let Some((lab, mut cmands, m1, m2)) = two_nodes() else {
        return;
    };
    signal_cancels_a_waiting_lock(&lab, Wait::Fcntl);
    signal_cancels_a_waiting_lock(&lab, Wait::Flock);
    m1.stop();
    m2.stop();
    stop_cmands(&mut cmands);
    tests::fsck_clean(&lab.image());
}

/// Takes the lock of `p` with `take`, retrying until a release sent by
/// the kernel after a close or exit arrives.
fn take_soon(p: &Path, take: impl Fn(&std::fs::File) -> std::io::Result<()>) -> std::fs::File {
    let f = open_rw(p);
    let start = Instant::now();
    while take(&f).is_err() {
        assert!(start.elapsed() < STEP_LIMIT, "the lock was never released");
        std::thread::sleep(Duration::from_millis(20));
    }
    f
}

/// The interrupt racing the grant: node 1 lets go about when the waiter
/// on node 2 gets SIGALRM. Either the waiter was granted (F_SETLKW or
/// flock returned 0) and holds the lock until it dies, or it got EINTR
/// and holds nothing: never EINTR with the lock held (leaked), never a
/// grant that does not exclude.
#[test]
fn an_interrupt_racing_a_grant_leaves_the_lock_held_or_free() {
    const ROUNDS: u32 = 16;
    let Some((lab, mut cmands, m1, m2)) = two_nodes() else {
        return;
    };
    let p1 = lab.mnt(1).join("counter");
    let c2 = cpath(&lab.mnt(2).join("counter"));
    let mut seen = [[0u32; 2]; 2];
    for (h, how) in [Wait::Fcntl, Wait::Flock].into_iter().enumerate() {
        let take = move |f: &std::fs::File| match how {
            Wait::Fcntl => fcntl_lock(f, libc::F_WRLCK, false),
            Wait::Flock => flock(f, libc::LOCK_EX | libc::LOCK_NB),
        };
        let give = move |f: &std::fs::File| match how {
            Wait::Fcntl => fcntl_lock(f, libc::F_UNLCK, false),
            Wait::Flock => flock(f, libc::LOCK_UN),
        };
        for round in 0..ROUNDS {
            let f1 = take_soon(&p1, take);
            // The signal 30 ms after the waiter's open; node 1's unlock
            // from 20 to 40 ms after it.
            let mut waiter = fork_kid(|to| wait_lock(&c2, how, 0, 30, to));
            assert_eq!(waiter.hear("the waiter's open"), b'W');
            std::thread::sleep(Duration::from_micros(
                20_000 + 20_000 * u64::from(round) / u64::from(ROUNDS),
            ));
            give(&f1).unwrap();
            match waiter.hear("the waiter's answer") {
                b'G' => {
                    seen[h][0] += 1;
                    assert!(take(&f1).is_err(), "{how:?}: granted but not held");
                }
                b'I' => {
                    seen[h][1] += 1;
                    take(&f1).unwrap_or_else(|e| {
                        panic!("{how:?} round {round}: EINTR but the lock is held: {e}")
                    });
                    give(&f1).unwrap();
                }
                w => panic!("{how:?}: waiter said {}", w as char),
            }
            waiter.kill_and_reap();
        }
    }
    println!(
        "fcntl: {} granted, {} interrupted; flock: {} granted, {} interrupted",
        seen[0][0], seen[0][1], seen[1][0], seen[1][1]
    );
    m1.stop();
    m2.stop();
    stop_cmands(&mut cmands);
    tests::fsck_clean(&lab.image());
}
