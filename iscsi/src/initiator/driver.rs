//! The threaded driver of an initiator session over TCP.
//!
//! One [`Connection`] owns a [`Session`] core behind a mutex, a reader
//! thread and a writer thread. Callers submit requests from any thread
//! (many in flight); the PDUs the core produces are encoded under the lock
//! and handed, in order, to the writer thread, so a caller never blocks on
//! the socket and the reader never deadlocks against a full send buffer.
//! The reader feeds every received PDU to the core and completes requests
//! by ITT: a blocked caller is woken, or its callback runs (outside the lock).
//!
//! When the connection drops, the reader logs in again (same ISID, so the
//! target reinstates the session, ERL 0) and re-issues the SCSI commands
//! that had not completed; requests submitted meanwhile wait for the new
//! session. After `relogin_timeout` without success, everything fails.

use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tracing::{debug, info, warn};

use super::login::{ChapCredentials, Login, LoginConfig, LoginOutcome, LoginStep};
use super::session::{Event, Itt, Outcome, ScsiRequest, ScsiResult, Session};
use super::{InitiatorError, Result};
use crate::params::Negotiated;
use crate::pdu::{keys, Digests, Pdu};

/// Where to connect and how to behave.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// `host:port` of the target portal.
    pub portal: String,
    /// What to log in with.
    pub login: LoginConfig,
    /// Timeout of the TCP connect and of each login round trip.
    pub login_timeout: Duration,
    /// How long a blocking request waits for its completion.
    pub command_timeout: Duration,
    /// How long to keep trying to log in again after a dropped connection.
    pub relogin_timeout: Duration,
}

impl SessionConfig {
    /// A configuration with default timeouts (login 15 s, commands 60 s,
    /// relogin 60 s).
    pub fn new(portal: &str, login: LoginConfig) -> Self {
        SessionConfig {
            portal: portal.to_string(),
            login,
            login_timeout: Duration::from_secs(15),
            command_timeout: Duration::from_secs(60),
            relogin_timeout: Duration::from_secs(60),
        }
    }
}

/// A completion callback.
pub type Callback = Box<dyn FnOnce(Result<Outcome>) + Send>;

/// A request's completion: a slot a caller waits on, or a callback.
enum Waiter {
    Slot(Arc<Slot>),
    Callback(Callback),
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiter::Slot(_) => "Slot",
            Waiter::Callback(_) => "Callback",
        })
    }
}

#[derive(Default)]
struct Slot {
    done: Mutex<Option<Result<Outcome>>>,
    cv: Condvar,
}

impl Slot {
    fn wait(&self, timeout: Duration) -> Result<Outcome> {
        let deadline = Instant::now() + timeout;
        let mut done = self.done.lock();
        while done.is_none() {
            if self.cv.wait_until(&mut done, deadline).timed_out() && done.is_none() {
                return Err(InitiatorError::Timeout);
            }
        }
        done.take().expect("checked above")
    }
}

impl Waiter {
    fn finish(self, result: Result<Outcome>) {
        match self {
            Waiter::Slot(slot) => {
                *slot.done.lock() = Some(result);
                slot.cv.notify_all();
            }
            Waiter::Callback(cb) => cb(result),
        }
    }
}

/// A submitted SCSI command (see [`Connection::start`]).
pub struct Pending {
    slot: Arc<Slot>,
    timeout: Duration,
}

impl Pending {
    /// Waits for the command's end (at most the command timeout).
    pub fn wait(self) -> Result<ScsiResult> {
        match self.slot.wait(self.timeout)? {
            Outcome::Scsi(r) => Ok(r),
            Outcome::Failed(why) => Err(InitiatorError::Aborted(why)),
            other => Err(InitiatorError::Protocol(format!(
                "unexpected outcome {other:?}"
            ))),
        }
    }
}

/// Mutable state shared by callers and the reader thread.
struct State {
    /// The live session; None while logging in again.
    session: Option<Session<Waiter>>,
    /// The writer thread's queue of encoded PDUs.
    tx: Option<mpsc::Sender<Vec<u8>>>,
    /// The socket, to shut it down.
    stream: Option<TcpStream>,
    digests: Digests,
    /// Requests submitted while no session was up.
    parked: Vec<(ScsiRequest, Waiter)>,
    /// Set by logout or after giving up: no more requests.
    closed: Option<String>,
    params: Negotiated,
    tsih: u16,
    relogins: u64,
}

struct Shared {
    cfg: SessionConfig,
    state: Mutex<State>,
}

/// An initiator session over TCP. Send + Sync: share it with `Arc`.
pub struct Connection {
    shared: Arc<Shared>,
    reader: Mutex<Option<thread::JoinHandle<()>>>,
}

/// Connects to the portal and runs the login; returns the socket and the
/// settled parameters.
fn login(cfg: &SessionConfig) -> Result<(TcpStream, LoginOutcome)> {
    let addr = cfg
        .portal
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| InitiatorError::BadRequest(format!("no address for {}", cfg.portal)))?;
    let stream = TcpStream::connect_timeout(&addr, cfg.login_timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(cfg.login_timeout))?;
    let (mut machine, mut pdu) = Login::start(cfg.login.clone());
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream.try_clone()?;
    loop {
        pdu.write_to(&mut writer, Digests::default())?;
        let rsp = Pdu::read_from(&mut reader, Digests::default(), 1 << 16)?;
        match machine.receive(&rsp)? {
            LoginStep::Send(next) => pdu = next,
            LoginStep::Done(outcome) => {
                stream.set_read_timeout(None)?;
                debug!(tsih = outcome.tsih, params = %outcome.params, "logged in");
                return Ok((stream, outcome));
            }
        }
    }
}

impl Connection {
    /// Logs in and starts the session threads.
    pub fn connect(cfg: SessionConfig) -> Result<Connection> {
        let (stream, outcome) = login(&cfg)?;
        let shared = Arc::new(Shared {
            cfg,
            state: Mutex::new(State {
                session: None,
                tx: None,
                stream: None,
                digests: Digests::default(),
                parked: Vec::new(),
                closed: None,
                params: outcome.params.clone(),
                tsih: outcome.tsih,
                relogins: 0,
            }),
        });
        let reader_stream = install(&shared, stream, &outcome)?;
        let sh = shared.clone();
        let handle = thread::Builder::new()
            .name("iscsi-reader".into())
            .spawn(move || reader_loop(sh, reader_stream))?;
        Ok(Connection {
            shared,
            reader: Mutex::new(Some(handle)),
        })
    }

    /// The negotiated parameters of the current session.
    pub fn params(&self) -> Negotiated {
        self.shared.state.lock().params.clone()
    }

    /// The target session identifying handle of the current session.
    pub fn tsih(&self) -> u16 {
        self.shared.state.lock().tsih
    }

    /// How many times the session was re-established.
    pub fn relogins(&self) -> u64 {
        self.shared.state.lock().relogins
    }

    /// The configuration this connection was made with.
    pub fn config(&self) -> &SessionConfig {
        &self.shared.cfg
    }

    /// Submits a SCSI command; `done` runs on the reader thread when it ends.
    pub fn submit_with(&self, req: ScsiRequest, done: Callback) {
        self.submit(req, Waiter::Callback(done));
    }

    fn submit(&self, req: ScsiRequest, waiter: Waiter) {
        let mut st = self.shared.state.lock();
        if let Some(why) = &st.closed {
            let why = why.clone();
            drop(st);
            waiter.finish(Err(InitiatorError::SessionDown(why)));
            return;
        }
        let State {
            session, parked, ..
        } = &mut *st;
        match session {
            None => parked.push((req, waiter)),
            Some(s) => {
                if let Err((e, w)) = submit_scsi(s, req, waiter) {
                    drop(st);
                    w.finish(Err(e));
                    return;
                }
                flush(&mut st);
            }
        }
    }

    /// Submits a SCSI command and returns a handle to wait for its end.
    pub fn start(&self, req: ScsiRequest) -> Pending {
        let slot = Arc::new(Slot::default());
        self.submit(req, Waiter::Slot(slot.clone()));
        Pending {
            slot,
            timeout: self.shared.cfg.command_timeout,
        }
    }

    /// Runs a SCSI command and waits for its end.
    pub fn execute(&self, req: ScsiRequest) -> Result<ScsiResult> {
        self.start(req).wait()
    }

    /// Runs an immediate request (task management, text, NOP, logout).
    fn immediate(
        &self,
        submit: impl FnOnce(&mut Session<Waiter>, Waiter) -> Itt,
    ) -> Result<Outcome> {
        let slot = Arc::new(Slot::default());
        {
            let mut st = self.shared.state.lock();
            if let Some(why) = &st.closed {
                return Err(InitiatorError::SessionDown(why.clone()));
            }
            let Some(s) = st.session.as_mut() else {
                return Err(InitiatorError::SessionDown("reconnecting".into()));
            };
            submit(s, Waiter::Slot(slot.clone()));
            flush(&mut st);
        }
        match slot.wait(self.shared.cfg.command_timeout)? {
            Outcome::Failed(why) => Err(InitiatorError::Aborted(why)),
            other => Ok(other),
        }
    }

    /// Sends a task management function; returns its response code.
    pub fn task_mgmt(&self, function: u8, lun: u64, ref_itt: Option<Itt>) -> Result<u8> {
        match self.immediate(|s, w| s.submit_task_mgmt(function, lun, ref_itt, w))? {
            Outcome::TaskMgmt(code) => Ok(code),
            other => Err(InitiatorError::Protocol(format!(
                "unexpected outcome {other:?}"
            ))),
        }
    }

    /// A text exchange (e.g. `SendTargets=All`); returns the response text.
    pub fn text(&self, pairs: &[(&str, &str)]) -> Result<Vec<(String, String)>> {
        let data = keys::encode(pairs.iter().copied());
        match self.immediate(|s, w| s.submit_text(data, w))? {
            Outcome::Text(t) => {
                keys::parse(&t).map_err(|e| InitiatorError::Protocol(e.to_string()))
            }
            other => Err(InitiatorError::Protocol(format!(
                "unexpected outcome {other:?}"
            ))),
        }
    }

    /// Pings the target (NOP-Out / NOP-In).
    pub fn nop(&self) -> Result<()> {
        self.immediate(|s, w| s.submit_nop(w)).map(|_| ())
    }

    /// Logs out (closing the session) and stops the threads.
    pub fn logout(&self) -> Result<()> {
        let result = self.immediate(|s, w| s.submit_logout(w));
        self.close("logged out");
        match result? {
            Outcome::Logout(0) => Ok(()),
            Outcome::Logout(code) => {
                Err(InitiatorError::Protocol(format!("logout response {code}")))
            }
            other => Err(InitiatorError::Protocol(format!(
                "unexpected outcome {other:?}"
            ))),
        }
    }

    fn close(&self, why: &str) {
        {
            let mut st = self.shared.state.lock();
            st.closed.get_or_insert_with(|| why.to_string());
            if let Some(s) = &st.stream {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        if let Some(h) = self.reader.lock().take() {
            // Dropped from a completion callback on the reader itself: it
            // exits on its own once it sees `closed`.
            if h.thread().id() != thread::current().id() {
                let _ = h.join();
            }
        }
    }

    /// Fault injection: drops the TCP connection as a network failure would;
    /// the session logs in again and re-issues unfinished commands.
    pub fn break_connection(&self) {
        if let Some(s) = &self.shared.state.lock().stream {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let live = {
            let st = self.shared.state.lock();
            st.closed.is_none() && st.session.is_some()
        };
        if live {
            let _ = self.logout();
        } else {
            self.close("dropped");
        }
    }
}

fn submit_scsi(
    s: &mut Session<Waiter>,
    req: ScsiRequest,
    waiter: Waiter,
) -> std::result::Result<(), (InitiatorError, Waiter)> {
    // Validate first so that a bad request hands its waiter back.
    if req.cdb.is_empty() || req.cdb.len() > 16 {
        let e = InitiatorError::BadRequest(format!("CDB of {} bytes", req.cdb.len()));
        return Err((e, waiter));
    }
    s.submit_scsi(req, waiter).expect("validated above");
    Ok(())
}

/// Encodes the core's pending PDUs and hands them to the writer, in order.
fn flush(st: &mut State) {
    let digests = st.digests;
    let Some(s) = st.session.as_mut() else {
        return;
    };
    let mut buf = Vec::new();
    while let Some(pdu) = s.poll_transmit() {
        pdu.encode_into(digests, &mut buf);
    }
    if buf.is_empty() {
        return;
    }
    if let Some(tx) = &st.tx {
        // A send error means the writer is gone: the reader sees the
        // broken socket and recovers.
        let _ = tx.send(buf);
    }
}

/// Installs a freshly logged-in socket: a new core, a writer thread, and the
/// parked requests re-issued. Returns the reader's end of the socket.
fn install(shared: &Arc<Shared>, stream: TcpStream, outcome: &LoginOutcome) -> Result<TcpStream> {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let wstream = stream.try_clone()?;
    let rstream = stream.try_clone()?;
    thread::Builder::new()
        .name("iscsi-writer".into())
        .spawn(move || writer_loop(wstream, rx))?;
    let mut st = shared.state.lock();
    let mut session = Session::new(outcome);
    let mut failed = Vec::new();
    for (req, waiter) in std::mem::take(&mut st.parked) {
        if let Err((e, w)) = submit_scsi(&mut session, req, waiter) {
            failed.push((e, w));
        }
    }
    st.session = Some(session);
    st.tx = Some(tx);
    st.stream = Some(stream);
    st.digests = Digests {
        header: outcome.params.header_digest,
        data: outcome.params.data_digest,
    };
    st.params = outcome.params.clone();
    st.tsih = outcome.tsih;
    flush(&mut st);
    drop(st);
    for (e, w) in failed {
        w.finish(Err(e));
    }
    Ok(rstream)
}

fn writer_loop(mut stream: TcpStream, rx: mpsc::Receiver<Vec<u8>>) {
    while let Ok(mut buf) = rx.recv() {
        // Coalesce what is already queued into one write.
        while buf.len() < (1 << 20) {
            match rx.try_recv() {
                Ok(more) => buf.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if let Err(e) = stream.write_all(&buf) {
            debug!(error = %e, "writer: socket error");
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

fn reader_loop(shared: Arc<Shared>, mut stream: TcpStream) {
    loop {
        let err = read_until_error(&shared, &mut stream);
        let closed = shared.state.lock().closed.clone();
        if let Some(why) = closed {
            fail_everything(&shared, &why);
            return;
        }
        warn!(error = %err, portal = %shared.cfg.portal, "connection lost, logging in again");
        match relogin(&shared) {
            Some(s) => stream = s,
            None => return,
        }
    }
}

/// Reads and dispatches PDUs until the connection fails.
fn read_until_error(shared: &Arc<Shared>, stream: &mut TcpStream) -> InitiatorError {
    let (digests, max) = {
        let st = shared.state.lock();
        (st.digests, st.params.max_recv_data_segment_length as usize)
    };
    let mut reader = BufReader::with_capacity(1 << 18, stream);
    loop {
        let pdu = match Pdu::read_from(&mut reader, digests, max) {
            Ok(p) => p,
            Err(e) => return e.into(),
        };
        let mut done = Vec::new();
        let mut drop_conn = false;
        {
            let mut st = shared.state.lock();
            let Some(s) = st.session.as_mut() else {
                return InitiatorError::SessionDown("no session".into());
            };
            let result = s.receive(pdu);
            while let Some(ev) = s.poll_event() {
                match ev {
                    Event::Complete { token, outcome } => done.push((token, outcome)),
                    Event::ScsiAsync { lun, sense } => info!(lun, %sense, "SCSI async event"),
                    Event::LogoutRequested { .. } | Event::DropConnection => {
                        info!("target asks to drop the connection");
                        drop_conn = true;
                    }
                }
            }
            flush(&mut st);
            if st.session.as_ref().is_some_and(|s| s.is_logged_out()) {
                // The target closes the connection after a logout response:
                // that is the end, not a failure to recover from.
                st.closed.get_or_insert_with(|| "logged out".into());
                drop(st);
                finish_all(done);
                return InitiatorError::Closed;
            }
            if let Err(e) = result {
                drop(st);
                finish_all(done);
                return e;
            }
        }
        finish_all(done);
        if drop_conn {
            return InitiatorError::SessionDown("target requested logout".into());
        }
    }
}

fn finish_all(done: Vec<(Waiter, Outcome)>) {
    for (w, outcome) in done {
        w.finish(Ok(outcome));
    }
}

/// Takes the dead session apart: SCSI commands are parked for re-issue,
/// other requests fail.
fn retire_session(shared: &Arc<Shared>) {
    let mut st = shared.state.lock();
    if let Some(s) = &st.stream {
        let _ = s.shutdown(Shutdown::Both);
    }
    st.stream = None;
    st.tx = None;
    let Some(session) = st.session.take() else {
        return;
    };
    let (scsi, other) = session.into_unfinished();
    let parked = std::mem::take(&mut st.parked);
    st.parked = scsi;
    st.parked.extend(parked);
    drop(st);
    for w in other {
        w.finish(Err(InitiatorError::SessionDown("connection lost".into())));
    }
}

fn relogin(shared: &Arc<Shared>) -> Option<TcpStream> {
    retire_session(shared);
    let deadline = Instant::now() + shared.cfg.relogin_timeout;
    let mut delay = Duration::from_millis(100);
    let mut last = String::new();
    while Instant::now() < deadline {
        if shared.state.lock().closed.is_some() {
            break;
        }
        match login(&shared.cfg) {
            Ok((stream, outcome)) => match install(shared, stream, &outcome) {
                Ok(s) if shared.state.lock().closed.is_some() => {
                    // Closed while we were logging in: nobody else will shut
                    // this socket down.
                    let _ = s.shutdown(Shutdown::Both);
                    break;
                }
                Ok(s) => {
                    shared.state.lock().relogins += 1;
                    info!(portal = %shared.cfg.portal, "session re-established");
                    return Some(s);
                }
                Err(e) => last = e.to_string(),
            },
            Err(e) => last = e.to_string(),
        }
        debug!(error = %last, "relogin failed");
        thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    let why = format!("could not log in again: {last}");
    shared.state.lock().closed.get_or_insert(why.clone());
    fail_everything(shared, &why);
    None
}

fn fail_everything(shared: &Arc<Shared>, why: &str) {
    retire_session(shared);
    let parked = std::mem::take(&mut shared.state.lock().parked);
    for (_, w) in parked {
        w.finish(Err(InitiatorError::SessionDown(why.to_string())));
    }
}

/// One target found by SendTargets: its name and portals (`addr:port,tpgt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveredTarget {
    pub name: String,
    pub portals: Vec<String>,
}

/// Runs a discovery session (SendTargets=All) against `portal`.
pub fn discover(
    portal: &str,
    initiator_name: &str,
    chap: Option<ChapCredentials>,
) -> Result<Vec<DiscoveredTarget>> {
    let mut login = LoginConfig::new(initiator_name, None);
    login.chap = chap;
    let conn = Connection::connect(SessionConfig::new(portal, login))?;
    let pairs = conn.text(&[("SendTargets", "All")]);
    let _ = conn.logout();
    Ok(parse_send_targets(&pairs?))
}

/// Groups SendTargets answers: each TargetName starts a target, the
/// TargetAddress keys after it are its portals.
pub fn parse_send_targets(pairs: &[(String, String)]) -> Vec<DiscoveredTarget> {
    let mut out: Vec<DiscoveredTarget> = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "TargetName" => out.push(DiscoveredTarget {
                name: v.clone(),
                portals: Vec::new(),
            }),
            "TargetAddress" => {
                if let Some(t) = out.last_mut() {
                    t.portals.push(v.clone());
                }
            }
            _ => {}
        }
    }
    out
}
