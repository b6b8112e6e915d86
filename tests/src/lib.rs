//! The local cluster lab: helpers for tests that run the real binaries.
//!
//! - **Skips are counted, never silent.** A test that cannot do its work
//!   here (a tool missing, not root, no `/dev/fuse`) calls [`require`] or
//!   [`skip`] and returns. That appends `SKIPPED: <binary>::<test>: <why>`
//!   to the file named by `LAB_SKIP_LOG` (`scripts/test.sh` sets it and
//!   counts the test as skipped, not passed). When `CI` is set the skip is
//!   a failure instead: `.ci/run` installs every tool.
//! - **Daemons die with the test runner.** [`spawn`] starts a child in its
//!   own process group with a parent-death signal (SIGKILL). Linux sends it
//!   when the *thread* that forked the child exits, so spawn from the test's
//!   own thread (it lives as long as the test), never from a helper thread
//!   that ends earlier. A daemon that forks itself into the background
//!   escapes it: guard what it leaves with [`OnRunnerDeath`].
//! - **Mounts go with them.** A killed FUSE daemon leaves a dead mount
//!   point; [`FuseMount`] and [`Unmounter`] lazily unmount it when dropped,
//!   and through an [`OnRunnerDeath`] reaper when the runner itself is
//!   killed (no destructor runs then).

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Path of a binary of this workspace, built by the same `cargo test` run
/// (the `tools` package's integration tests make cargo build every binary).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test-binary> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("test binary lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built; run `cargo test --workspace` (it builds all binaries)",
        path.display()
    );
    path
}

// The skip rules live with the clusterfs tests, which cannot depend on
// this crate; both use the one file.
#[path = "../../clusterfs/tests/common/skip.rs"]
mod skips;

pub mod fslab;
pub mod rglab;

pub use skips::{ci, on_path as have, require, skip, test_name, SKIP_LOG};

// ---------------------------------------------------------------- skips

/// True when every tool is on PATH; otherwise records a skip for the
/// first one missing.
#[track_caller]
pub fn require_all(tools: &[&str]) -> bool {
    for tool in tools {
        if !require(tool) {
            return false;
        }
    }
    true
}

/// True when running as root; otherwise records a skip.
#[track_caller]
pub fn require_root(what: &str) -> bool {
    nix::unistd::geteuid().is_root() || {
        skip(&format!("not root, which {what} needs"));
        false
    }
}

/// True when `/dev/fuse` opens read-write; otherwise records a skip.
#[track_caller]
pub fn require_dev_fuse() -> bool {
    let usable = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok();
    usable || {
        skip("/dev/fuse is missing or not usable");
        false
    }
}

/// True when FUSE mounts can be made and unmounted: `/dev/fuse` is usable
/// and `fusermount3` is on PATH; otherwise records a skip.
#[track_caller]
pub fn require_fuse() -> bool {
    require_dev_fuse() && require("fusermount3")
}

/// `fsck.gfs2 -n` on `dev` must find nothing to fix: panics with all it
/// printed (its findings go to stderr) otherwise. Bounded: fsck statfs()es
/// every mount and one whose FUSE daemon hangs (another program's) would
/// hang it; that, or a missing fsck.gfs2, is a recorded skip (a failure
/// under CI) and returns false.
#[track_caller]
pub fn fsck_clean(dev: &Path) -> bool {
    if !require_all(&["fsck.gfs2", "timeout"]) {
        return false;
    }
    let out = Command::new("timeout")
        .args(["-s", "KILL", "120", "fsck.gfs2", "-n"])
        .arg(dev)
        .output()
        .expect("run fsck.gfs2");
    if out.status.code().is_none() {
        skip("fsck.gfs2 hung (a stale FUSE mount elsewhere on this machine?)");
        return false;
    }
    assert!(
        out.status.success(),
        "fsck.gfs2 -n {}: {}\n{}{}",
        dev.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

// ---------------------------------------------------------------- processes

/// Spawns `cmd` in its own process group with SIGKILL as its parent-death
/// signal: it dies when the spawning thread (the test's) exits, however
/// the runner ends. Its own group keeps a terminal's Ctrl-C off it, so it
/// dies by that signal, after the runner.
pub fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let parent = std::process::id() as libc::pid_t;
    cmd.process_group(0);
    // SAFETY: prctl and getppid are async-signal-safe, and the closure
    // allocates nothing (the error is a raw OS error).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The runner died between fork and prctl: no signal will come.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Kills a child (by PID) and reaps it, unless it has already exited.
pub fn reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A command run if this test process dies before the guard is dropped:
/// a `sh` in its own process group (no parent-death signal) blocks reading
/// a pipe only we hold, and runs the command when the pipe closes. Dropping
/// the guard kills the reaper first, so normally the command never runs.
pub struct OnRunnerDeath {
    reaper: Child,
    pipe: Option<ChildStdin>,
}

impl OnRunnerDeath {
    /// Guards with `cmd` (its program, arguments and environment).
    pub fn new(cmd: &Command) -> OnRunnerDeath {
        let mut sh = Command::new("sh");
        sh.args(["-c", "read _; exec \"$@\"", "sh"])
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        let mut reaper = sh.spawn().expect("spawn the reaper sh");
        let pipe = reaper.stdin.take().expect("piped stdin");
        OnRunnerDeath {
            reaper,
            pipe: Some(pipe),
        }
    }

    /// Does now what the runner's death would do: closes the pipe and
    /// waits until the command has run.
    pub fn trigger(mut self) {
        drop(self.pipe.take());
        let _ = self.reaper.wait();
    }
}

impl Drop for OnRunnerDeath {
    fn drop(&mut self) {
        // Killed before the pipe (a field) closes: the command never runs.
        let _ = self.reaper.kill();
        let _ = self.reaper.wait();
    }
}

// ---------------------------------------------------------------- ports

/// A TCP port on 127.0.0.1 that was free when asked (see `free_port_on`).
/// Another process may still take it before the caller binds it: daemons'
/// starters retry.
pub fn free_port() -> u16 {
    free_port_on(&["127.0.0.1"], false)
}

/// The kernel's ephemeral port range (`ip_local_port_range`): ports it
/// hands to any socket bound to port 0 or connecting unbound, on any
/// address of the machine.
fn ephemeral_ports() -> std::ops::RangeInclusive<u16> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse::<u16>());
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) if lo <= hi => lo..=hi,
        _ => 32768..=60999,
    }
}

/// Ports at or above 10,000 that browsers refuse to load a page from
/// (Chromium's `kRestrictedPorts`, Firefox's banned ports: 10080, amanda).
/// Chromium shows ERR_UNSAFE_PORT instead of the page, so luci's browser
/// test, given one, found no login form.
const BROWSER_REFUSED: [u16; 1] = [10080];

/// Whether [`free_port_on`] may hand out `port`: outside the kernel's
/// `ephemeral` range, and not one a browser refuses.
fn port_usable(port: u16, ephemeral: &std::ops::RangeInclusive<u16>) -> bool {
    !ephemeral.contains(&port) && !BROWSER_REFUSED.contains(&port)
}

/// A port free for UDP (or TCP) on every address in `ips` when asked, for
/// clusters whose nodes share one port number. It lies outside the
/// kernel's ephemeral range, so that no other socket on the machine
/// (a resolver's, a client's) is given it between this probe and the
/// daemon's bind, and it is never handed out twice in one process, so that
/// two tests running side by side never pick the same one. Never one a
/// browser refuses ([`BROWSER_REFUSED`]).
pub fn free_port_on(ips: &[&str], udp: bool) -> u16 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral = ephemeral_ports();
    let low = 10_000u16;
    for k in 0..2000u64 {
        let seed = u64::from(std::process::id()) * 7919
            + u64::from(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock after 1970")
                    .subsec_nanos(),
            )
            + (CALLS.fetch_add(1, Ordering::Relaxed) + k) * 104_729;
        let port = low + (seed % u64::from(u16::MAX - low)) as u16;
        if !port_usable(port, &ephemeral) {
            continue;
        }
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.contains(&port) {
            continue;
        }
        let free = ips.iter().all(|ip| {
            let a = format!("{ip}:{port}");
            if udp {
                std::net::UdpSocket::bind(a).is_ok()
            } else {
                std::net::TcpListener::bind(a).is_ok()
            }
        });
        if free {
            given.push(port);
            return port;
        }
    }
    panic!("no free port on {ips:?} outside the ephemeral range {ephemeral:?}");
}

/// A port free (UDP or TCP) on each lab node address 127.0.1.1 to
/// 127.0.1.`nodes`: the one port number a cluster's nodes share.
pub fn cluster_port(nodes: u32, udp: bool) -> u16 {
    let addrs: Vec<String> = (1..=nodes).map(|i| format!("127.0.1.{i}")).collect();
    let addrs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    free_port_on(&addrs, udp)
}

// ---------------------------------------------------------------- mounts

/// True once every thread of process `pid` is stopped (state `T`). A
/// SIGSTOP is sent at once but taken by each thread when it next runs: a
/// thread busy on another CPU may still answer a request after `kill`
/// returned.
pub fn all_threads_stopped(pid: i32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        fs::read_to_string(t.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('T')
            })
            .unwrap_or(true)
    })
}

/// Polls `cond` every 20 ms; panics after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// True while something is mounted on `mnt` (in this mount namespace).
pub fn is_mounted(mnt: &Path) -> bool {
    let want = fs::canonicalize(mnt).unwrap_or_else(|_| mnt.to_path_buf());
    let Some(want) = want.to_str() else {
        return false;
    };
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want))
}

fn lazy_unmount_command(mnt: &Path) -> Command {
    let mut cmd = Command::new("fusermount3");
    cmd.args(["-u", "-z"]).arg(mnt);
    cmd
}

/// Lazily unmounts `mnt` (`fusermount3 -u -z`) if it is still mounted when
/// the guard is dropped, or when the test process dies.
pub struct Unmounter {
    mnt: PathBuf,
    _reaper: OnRunnerDeath,
}

impl Unmounter {
    pub fn new(mnt: &Path) -> Unmounter {
        Unmounter {
            mnt: mnt.to_path_buf(),
            _reaper: OnRunnerDeath::new(&lazy_unmount_command(mnt)),
        }
    }
}

impl Drop for Unmounter {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = lazy_unmount_command(&self.mnt)
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// How long a FUSE daemon gets to mount, unmount or exit.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// A FUSE daemon running in the foreground (spawned with [`spawn`]) and
/// its mount point. Dropped early (a failed test), it kills the daemon and
/// lazily unmounts what is left.
pub struct FuseMount {
    pub child: Child,
    pub mnt: PathBuf,
    // Declared after `child`: Drop kills the daemon before this unmounts.
    _unmounter: Unmounter,
}

impl FuseMount {
    /// Spawns `cmd`, a daemon serving a FUSE mount on `mnt` in the
    /// foreground, and waits until the mount shows; panics if the daemon
    /// exits first.
    pub fn start(cmd: &mut Command, mnt: &Path) -> FuseMount {
        let _unmounter = Unmounter::new(mnt);
        let child = spawn(cmd.stdin(Stdio::null()))
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let mut m = FuseMount {
            child,
            mnt: mnt.to_path_buf(),
            _unmounter,
        };
        wait_for("the mount", MOUNT_TIMEOUT, || {
            if let Ok(Some(st)) = m.child.try_wait() {
                panic!("{:?} exited early: {st}", cmd.get_program());
            }
            is_mounted(mnt)
        });
        m
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Waits until the daemon exits and asserts that it exited 0 and left
    /// nothing mounted.
    pub fn wait_clean_exit(&mut self) {
        let mut st = None;
        wait_for("the mount daemon to exit", MOUNT_TIMEOUT, || {
            st = self.child.try_wait().expect("try_wait");
            st.is_some()
        });
        let st = st.expect("exited");
        assert!(st.success(), "mount daemon exit {st}");
        assert!(
            !is_mounted(&self.mnt),
            "{} still mounted",
            self.mnt.display()
        );
    }

    /// SIGTERM: the daemon must unmount cleanly and exit 0. The unmount
    /// fails while the mount is busy (a child forked by a test running in
    /// parallel holds a descriptor until it execs), so SIGTERM is repeated
    /// every second until the daemon exits.
    pub fn stop(mut self) {
        let start = Instant::now();
        let mut last_term: Option<Instant> = None;
        let st = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if last_term.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::SIGTERM);
                last_term = Some(Instant::now());
            }
            assert!(
                start.elapsed() < MOUNT_TIMEOUT,
                "the mount daemon did not exit on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(st.success(), "mount daemon exit {st}");
        assert!(!is_mounted(&self.mnt));
    }

    /// `fusermount3 -u`; then the daemon must exit 0.
    pub fn unmount(mut self) {
        let st = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mnt)
            .status()
            .expect("run fusermount3");
        assert!(st.success(), "fusermount3 -u: {st}");
        self.wait_clean_exit();
    }

    /// SIGKILL, then detach the dead mount.
    pub fn kill(mut self) {
        reap(&mut self.child);
        let _ = lazy_unmount_command(&self.mnt).status();
        wait_for("the dead mount to go", MOUNT_TIMEOUT, || {
            !is_mounted(&self.mnt)
        });
    }
}

impl Drop for FuseMount {
    fn drop(&mut self) {
        reap(&mut self.child);
    }
}

// ---------------------------------------------------------------- daemons

/// Starts `cmand -f` for node `127.0.1.N`: its cluster.conf and state in
/// `state`, traffic keyed with `key`, output in `state/cmand.log`.
pub fn spawn_cmand(state: &Path, n: u32, key: &Path) -> Child {
    // cmand refuses a key file other users can read.
    let private = <fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600);
    fs::set_permissions(key, private).expect("chmod 600 the key");
    let log = fs::File::create(state.join("cmand.log")).expect("cmand.log");
    spawn(
        Command::new(bin("cmand"))
            .arg("-f")
            .arg("-c")
            .arg(state.join("cluster.conf"))
            .arg("-n")
            .arg(format!("127.0.1.{n}"))
            .arg("--state-dir")
            .arg(state)
            .arg("--key-file")
            .arg(key)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log),
    )
    .expect("spawn cmand")
}

/// A process a test started: its stdin closed, then killed and reaped, when
/// dropped. Started by [`Proc::with_lines`], its stdout lines arrive on a
/// channel for [`Proc::expect_line`].
pub struct Proc {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: Option<std::sync::mpsc::Receiver<String>>,
}

impl Proc {
    /// A child already spawned (with [`spawn`]), its output elsewhere.
    pub fn new(child: Child) -> Proc {
        Proc {
            child,
            stdin: None,
            lines: None,
        }
    }

    /// Spawns `cmd` (with [`spawn`]) with its stdin and stdout piped; a
    /// thread forwards its stdout lines.
    pub fn with_lines(cmd: &mut Command) -> Proc {
        let mut child = spawn(cmd.stdin(Stdio::piped()).stdout(Stdio::piped()))
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            stdin,
            lines: Some(rx),
        }
    }

    /// Waits up to `timeout` for a stdout line that is `want` (trimmed),
    /// skipping others.
    pub fn expect_line(&self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let lines = self.lines.as_ref().expect("started with_lines");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) if l.trim() == want => return,
                Ok(_) => continue,
                Err(e) => panic!("waiting for {want:?}: {e}"),
            }
        }
    }

    /// Writes one line (a command) to its stdin.
    pub fn tell(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin piped and open");
        writeln!(stdin, "{line}").expect("write to the child's stdin");
        stdin.flush().expect("flush the child's stdin");
    }

    /// Closes its stdin (the processes here take that as "stop").
    pub fn close_stdin(&mut self) {
        drop(self.stdin.take());
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// Its exit status once it has exited, within `timeout`.
    pub fn wait_exit(&mut self, what: &str, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "{what} still runs");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True while it has not exited.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.close_stdin();
        reap(&mut self.child);
    }
}

/// The `dlm_cman_node` command of the node whose state (and cmand) is in
/// `state`: lockspace `ls` on dlm port `port`, its counter and files in
/// `dir`, `iters` increments; its log in `state/<log>`.
pub fn dlm_cman_node(
    state: &Path,
    port: u16,
    ls: &str,
    dir: &Path,
    iters: u64,
    log: &str,
) -> Command {
    let log = fs::File::create(state.join(log)).expect("dlm user log");
    let mut cmd = Command::new(bin("dlm_cman_node"));
    cmd.arg("--state-dir")
        .arg(state)
        .arg("--port")
        .arg(port.to_string())
        .arg("--ls")
        .arg(ls)
        .arg("--dir")
        .arg(dir)
        .arg("--iters")
        .arg(iters.to_string())
        .env("RUST_LOG", "info")
        .stderr(log);
    cmd
}

/// The status of the cmand whose state is in `state`; None while it does
/// not answer.
pub fn cman_status(state: &Path) -> Option<cman::node::Status> {
    cman::api::Client::connect(state).ok()?.status().ok()
}

/// Waits (up to 60 s: the machine may be loaded) until the status of
/// cmand `name` (state in `state`) satisfies `f`; returns it.
pub fn wait_cman(
    state: &Path,
    name: &str,
    what: &str,
    f: impl Fn(&cman::node::Status) -> bool,
) -> cman::node::Status {
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(s) = cman_status(state).filter(|s| f(s)) {
            return s;
        }
        assert!(
            Instant::now() < end,
            "node {name}: timed out waiting for {what}: {:?}",
            cman_status(state)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- random

/// A seeded xorshift64 generator: a test's choices replay from its seed.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value: zero, a fixed point, is avoided).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn no_port_a_browser_refuses_or_the_kernel_may_hand_out() {
        let ephemeral = 32768..=60999;
        // Chromium answers 10080 with ERR_UNSAFE_PORT.
        assert!(!port_usable(10080, &ephemeral));
        assert!(!port_usable(40000, &ephemeral));
        assert!(port_usable(10081, &ephemeral));
        assert!(port_usable(61000, &ephemeral));
    }
}
