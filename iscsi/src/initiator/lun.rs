//! A LUN as a byte-addressed block device over an initiator session.
//!
//! [`Lun::open`] takes an `iscsi://` URL, logs in, checks the unit is ready
//! and reads its capacity. Reads and writes are split into READ(16) /
//! WRITE(16) commands of at most MaxBurstLength (rounded to the block size)
//! that all go out at once; unaligned writes read the partial edge blocks
//! first (read-modify-write; concurrent unaligned writers sharing a block are
//! serialised by a lock, aligned writers are not). UNIT ATTENTION and BUSY /
//! TASK SET FULL are retried a few times; any other failing status is an
//! [`InitiatorError::Scsi`] with its sense data.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tracing::debug;

use super::cdb::{self, sense_key, status, Sense};
use super::driver::{Connection, Pending, SessionConfig};
use super::login::{ChapCredentials, LoginConfig};
use super::session::{ScsiRequest, ScsiResult};
use super::url::IscsiUrl;
use super::{InitiatorError, Result};

/// The initiator name used when none is given: `$ISCSI_INITIATOR_NAME`, or
/// one derived from the host name.
pub fn default_initiator_name() -> String {
    if let Ok(n) = std::env::var("ISCSI_INITIATOR_NAME") {
        if !n.is_empty() {
            return n;
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("iqn.2026-11.rs.rhcs:{host}")
}

/// The disk LUNs of a target (REPORT LUNS, then INQUIRY: peripheral
/// device type 0, direct access, with a connected qualifier).
pub fn report_disk_luns(conn: &Connection) -> Result<Vec<u64>> {
    let run = |lun: u64, cdb: Vec<u8>, in_len: u32| -> Result<Vec<u8>> {
        for _ in 0..RETRIES {
            let r = conn.execute(ScsiRequest {
                lun,
                cdb: cdb.clone(),
                data_out: Vec::new(),
                in_len,
            })?;
            if let Some(d) = check(r, 0)? {
                return Ok(d);
            }
        }
        Err(InitiatorError::Protocol(
            "unit attention does not clear".into(),
        ))
    };
    let luns = cdb::parse_report_luns(&run(0, cdb::report_luns(16384), 16384)?);
    let mut disks = Vec::new();
    for lun in luns {
        let inq = run(lun, cdb::inquiry(None, 96), 96)?;
        if inq.first() == Some(&0x00) {
            disks.push(lun);
        }
    }
    Ok(disks)
}

/// Options of [`Lun::open_with`].
#[derive(Clone, Debug)]
pub struct LunOptions {
    pub initiator_name: String,
    /// Command timeout.
    pub command_timeout: Duration,
    /// How long to try to log in again after a dropped connection.
    pub relogin_timeout: Duration,
    /// Largest data segment we accept.
    pub max_recv_data_segment_length: u32,
    /// Ask for CRC32C data digests.
    pub data_digest: bool,
}

impl Default for LunOptions {
    fn default() -> Self {
        LunOptions {
            initiator_name: default_initiator_name(),
            command_timeout: Duration::from_secs(60),
            relogin_timeout: Duration::from_secs(60),
            max_recv_data_segment_length: 262_144,
            data_digest: false,
        }
    }
}

/// A logical unit reached over iSCSI. Send + Sync; many threads may issue
/// I/O at once.
pub struct Lun {
    conn: Arc<Connection>,
    url: IscsiUrl,
    lun: u64,
    block_size: u32,
    blocks: u64,
    /// Bytes per READ/WRITE command.
    max_io: usize,
    rmw: Mutex<()>,
}

const RETRIES: usize = 8;

impl Lun {
    /// Opens `iscsi://[user%secret@]host[:port]/IQN/LUN` with default options.
    pub fn open(url: &str) -> Result<Lun> {
        Lun::open_with(url, LunOptions::default())
    }

    /// Opens a URL with these options.
    pub fn open_with(url: &str, opts: LunOptions) -> Result<Lun> {
        let url = IscsiUrl::parse(url)?;
        let conn = Connection::connect(session_config(&url, &opts)?)?;
        Lun::attach(conn, url)
    }

    /// Wraps a logged-in session: checks readiness and reads the capacity.
    pub fn attach(conn: Connection, url: IscsiUrl) -> Result<Lun> {
        Lun::attach_shared(Arc::new(conn), url)
    }

    /// As [`Lun::attach`], for several LUNs sharing one session.
    pub fn attach_shared(conn: Arc<Connection>, url: IscsiUrl) -> Result<Lun> {
        let mut lun = Lun {
            conn,
            lun: url.lun,
            url,
            block_size: 512,
            blocks: 0,
            max_io: 0,
            rmw: Mutex::new(()),
        };
        lun.execute_checked(&cdb::test_unit_ready(), &[], 0)?;
        lun.refresh_capacity()?;
        let burst = lun.conn.params().max_burst_length as usize;
        let bs = lun.block_size as usize;
        lun.max_io = (burst.min(1 << 20) / bs).max(1) * bs;
        debug!(url = ?lun.url, blocks = lun.blocks, bs, max_io = lun.max_io, "LUN opened");
        Ok(lun)
    }

    /// Reads the capacity again (after a resize).
    pub fn refresh_capacity(&mut self) -> Result<()> {
        let data = self.execute_checked(&cdb::read_capacity16(), &[], 32)?;
        let (blocks, bs) = cdb::parse_read_capacity16(&data)
            .ok_or_else(|| InitiatorError::Protocol("short READ CAPACITY(16) data".into()))?;
        if bs == 0 || !bs.is_power_of_two() || bs > 1 << 16 {
            return Err(InitiatorError::Protocol(format!("block size {bs}")));
        }
        self.blocks = blocks;
        self.block_size = bs;
        Ok(())
    }

    /// The session (for task management, NOP, statistics).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The URL this LUN was opened with.
    pub fn url(&self) -> &IscsiUrl {
        &self.url
    }

    /// Capacity in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.blocks * u64::from(self.block_size)
    }

    /// Logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Runs any CDB; returns (status, sense, Data-In). Nothing is retried.
    pub fn execute(
        &self,
        cdb: &[u8],
        data_out: &[u8],
        in_len: u32,
    ) -> Result<(u8, Sense, Vec<u8>)> {
        let r = self.conn.execute(self.request(cdb, data_out, in_len))?;
        Ok((r.status, r.sense, r.data))
    }

    fn request(&self, cdb: &[u8], data_out: &[u8], in_len: u32) -> ScsiRequest {
        ScsiRequest {
            lun: self.lun,
            cdb: cdb.to_vec(),
            data_out: data_out.to_vec(),
            in_len,
        }
    }

    /// Runs a CDB, retrying UNIT ATTENTION and BUSY; GOOD gives the data.
    pub fn execute_checked(&self, cdb: &[u8], data_out: &[u8], in_len: u32) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            let r = self.conn.execute(self.request(cdb, data_out, in_len))?;
            match check(r, attempt) {
                Ok(Some(data)) => return Ok(data),
                Ok(None) => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    fn check_range(&self, offset: u64, len: usize) -> Result<()> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size_bytes() => Ok(()),
            _ => Err(InitiatorError::BadRequest(format!(
                "{len} bytes at {offset} past the end ({} bytes)",
                self.size_bytes()
            ))),
        }
    }

    /// Reads `buf.len()` bytes at byte `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let bs = u64::from(self.block_size);
        let start = offset / bs * bs;
        let end = (offset + buf.len() as u64).div_ceil(bs) * bs;
        if start == offset && end == offset + buf.len() as u64 {
            return self.read_aligned(offset, buf);
        }
        let mut tmp = vec![0u8; (end - start) as usize];
        self.read_aligned(start, &mut tmp)?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&tmp[skip..skip + buf.len()]);
        Ok(())
    }

    fn read_aligned(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let bs = u64::from(self.block_size);
        let mut pending: Vec<(Pending, usize, usize, Vec<u8>)> = Vec::new();
        for (i, chunk) in buf.chunks(self.max_io).enumerate() {
            let off = i * self.max_io;
            let lba = (offset + off as u64) / bs;
            let blocks = (chunk.len() as u64 / bs) as u32;
            let cdb = cdb::read16(lba, blocks);
            let p = self.conn.start(self.request(&cdb, &[], chunk.len() as u32));
            pending.push((p, off, chunk.len(), cdb));
        }
        let mut first_err = None;
        for (p, off, len, cdb) in pending {
            let r = p.wait().and_then(|r| match check(r, 0) {
                Ok(Some(d)) => Ok(d),
                Ok(None) => self.execute_checked(&cdb, &[], len as u32),
                Err(e) => Err(e),
            });
            match r {
                Ok(d) if d.len() == len => buf[off..off + len].copy_from_slice(&d),
                Ok(d) => {
                    first_err.get_or_insert(InitiatorError::Protocol(format!(
                        "short read: {} of {len} bytes",
                        d.len()
                    )));
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Writes `buf` at byte `offset` (read-modify-write for partial blocks).
    pub fn write_at(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.check_range(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        let bs = u64::from(self.block_size);
        let start = offset / bs * bs;
        let end = (offset + buf.len() as u64).div_ceil(bs) * bs;
        if start == offset && end == offset + buf.len() as u64 {
            return self.write_aligned(offset, buf, false);
        }
        let _serial = self.rmw.lock();
        let mut tmp = vec![0u8; (end - start) as usize];
        let last = tmp.len() - bs as usize;
        self.read_aligned(start, &mut tmp[..bs as usize])?;
        if last > 0 {
            self.read_aligned(end - bs, &mut tmp[last..])?;
        }
        let skip = (offset - start) as usize;
        tmp[skip..skip + buf.len()].copy_from_slice(buf);
        self.write_aligned(start, &tmp, false)
    }

    /// Writes with FUA (force unit access) set on every command.
    pub fn write_at_fua(&self, offset: u64, buf: &[u8]) -> Result<()> {
        let bs = u64::from(self.block_size);
        if !offset.is_multiple_of(bs) || !(buf.len() as u64).is_multiple_of(bs) {
            return Err(InitiatorError::BadRequest(
                "FUA writes must be block aligned".into(),
            ));
        }
        self.check_range(offset, buf.len())?;
        self.write_aligned(offset, buf, true)
    }

    fn write_aligned(&self, offset: u64, buf: &[u8], fua: bool) -> Result<()> {
        let bs = u64::from(self.block_size);
        let mut pending = Vec::new();
        for (i, chunk) in buf.chunks(self.max_io).enumerate() {
            let lba = (offset + (i * self.max_io) as u64) / bs;
            let cdb = cdb::write16(lba, (chunk.len() as u64 / bs) as u32, fua);
            let p = self.conn.start(self.request(&cdb, chunk, 0));
            pending.push((p, cdb, chunk));
        }
        let mut first_err = None;
        for (p, cdb, chunk) in pending {
            let r = p.wait().and_then(|r| match check(r, 0) {
                Ok(Some(_)) => Ok(()),
                Ok(None) => self.execute_checked(&cdb, chunk, 0).map(|_| ()),
                Err(e) => Err(e),
            });
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// SYNCHRONIZE CACHE: makes completed writes durable.
    pub fn flush(&self) -> Result<()> {
        self.execute_checked(&cdb::synchronize_cache10(), &[], 0)
            .map(|_| ())
    }

    /// Logs out (the session ends when its last LUN is closed or dropped).
    pub fn close(self) -> Result<()> {
        match Arc::try_unwrap(self.conn) {
            Ok(conn) => conn.logout(),
            Err(_) => Ok(()),
        }
    }
}

/// GOOD gives `Some(data)`; a retryable condition `None` (while attempts
/// remain); anything else an error.
fn check(r: ScsiResult, attempt: usize) -> Result<Option<Vec<u8>>> {
    let retry = attempt < RETRIES;
    match r.status {
        status::GOOD | status::CONDITION_MET => Ok(Some(r.data)),
        status::CHECK_CONDITION if retry && r.sense.key == sense_key::UNIT_ATTENTION => {
            debug!(sense = %r.sense, "unit attention, retrying");
            Ok(None)
        }
        status::BUSY | status::TASK_SET_FULL if retry => {
            std::thread::sleep(Duration::from_millis(10 << attempt.min(6)));
            Ok(None)
        }
        s => Err(InitiatorError::Scsi {
            status: s,
            sense: r.sense,
        }),
    }
}

/// The session configuration for a URL.
pub fn session_config(url: &IscsiUrl, opts: &LunOptions) -> Result<SessionConfig> {
    let mut login = LoginConfig::new(&opts.initiator_name, Some(&url.target));
    login.header_digest = url.header_digest;
    login.data_digest = opts.data_digest;
    login.max_recv_data_segment_length = opts.max_recv_data_segment_length;
    login.chap = match (&url.user, &url.secret) {
        (Some(u), Some(s)) => Some(ChapCredentials {
            user: u.clone(),
            secret: s.clone(),
        }),
        (Some(_), None) => {
            return Err(InitiatorError::BadUrl {
                url: url.portal(),
                why: "CHAP user without a secret",
            })
        }
        _ => None,
    };
    login.mutual_chap = match (&url.target_user, &url.target_secret) {
        (Some(u), Some(s)) => Some(ChapCredentials {
            user: u.clone(),
            secret: s.clone(),
        }),
        _ => None,
    };
    if login.mutual_chap.is_some() && login.chap.is_none() {
        return Err(InitiatorError::BadUrl {
            url: url.portal(),
            why: "mutual CHAP needs the initiator's user%secret too",
        });
    }
    let mut cfg = SessionConfig::new(&url.portal(), login);
    cfg.command_timeout = opts.command_timeout;
    cfg.relogin_timeout = opts.relogin_timeout;
    Ok(cfg)
}

impl super::pr::PersistentReserve for Lun {
    fn execute_checked(&self, cdb: &[u8], data_out: &[u8], in_len: u32) -> Result<Vec<u8>> {
        Lun::execute_checked(self, cdb, data_out, in_len)
    }
    fn close(self) -> Result<()> {
        Lun::close(self)
    }
}
