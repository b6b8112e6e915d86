//! One logical unit: the controller LUN 0 or a disk over a backing store,
//! with its reservation state, unit attentions and mode parameters, and
//! the command dispatcher that runs the checks of SAM-5 in order (unit
//! attention, operation code, CDB size, reservation) before a handler.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use super::backing::Backing;
use super::cdb::{op, sa};
use super::mode::ModeState;
use super::opcodes::{self, Access, LookupError, LunKind, OpDesc};
use super::pr::{ItNexus, PrState};
use super::sense::{Asc, Sense};
use super::target::{NexusTable, ScsiTarget};
use super::ua::UaTable;
use super::xcopy::CopyResults;
use super::{status, NexusId, ScsiCommand, ScsiError, ScsiResponse};

/// How to present a disk LUN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LunOptions {
    /// Reject writes with DATA PROTECT / WRITE PROTECTED.
    pub readonly: bool,
    /// Thin provisioning: UNMAP and WRITE SAME with UNMAP punch holes.
    pub thin: bool,
    /// Where persistent reservations with APTPL are saved (and reloaded
    /// from by `add_lun`). `None`: APTPL is refused.
    pub state_dir: Option<PathBuf>,
    /// INQUIRY vendor identification (8 characters used).
    pub vendor: String,
    /// INQUIRY product identification (16 characters used).
    pub product: String,
    /// Unit serial number (VPD 0x80); also seeds the NAA identifier.
    pub serial: String,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Offer SANITIZE (it erases the whole LUN). Off by default: it runs
    /// to completion at once, which libiscsi's Sanitize.Reset test (it
    /// expects a SANITIZE still in progress seconds later) reports as a
    /// failure when run with --allow-sanitize.
    pub sanitize: bool,
}

impl Default for LunOptions {
    fn default() -> Self {
        LunOptions {
            readonly: false,
            thin: false,
            state_dir: None,
            vendor: "RHCSRS".to_string(),
            product: "VIRTUAL-DISK".to_string(),
            serial: String::new(),
            block_size: 512,
            sanitize: false,
        }
    }
}

/// A description of one LUN, for `tgtadm --op show`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LunInfo {
    pub lun: u64,
    /// Backing store path (empty for the controller LUN).
    pub path: PathBuf,
    pub size_bytes: u64,
    pub block_size: u32,
    pub readonly: bool,
    pub thin: bool,
    /// "disk" or "controller".
    pub kind: String,
    pub serial: String,
}

/// The target-wide facts a LUN reports (INQUIRY VPD 0x83).
#[derive(Debug)]
pub(crate) struct TargetInfo {
    pub name: String,
    pub tid: u32,
}

/// A disk LUN's backing store and geometry.
#[derive(Debug)]
pub(crate) struct Disk {
    pub backing: Backing,
    pub block_size: u32,
    /// log2(block_size).
    pub block_shift: u32,
    /// Capacity in logical blocks.
    pub blocks: AtomicU64,
    pub opts: LunOptions,
    /// Writers take it shared, COMPARE AND WRITE exclusive.
    pub write_gate: RwLock<()>,
    pub mode: Mutex<ModeState>,
    /// Mirrors of the caching page's WCE and the control page's SWP, read
    /// on every write without taking the `mode` lock.
    pub wce: AtomicBool,
    pub swp: AtomicBool,
    /// Nexuses that sent PREVENT ALLOW MEDIUM REMOVAL with PREVENT=1.
    pub prevent: Mutex<Vec<NexusId>>,
}

impl Disk {
    /// Install new mode parameters and their lock-free mirrors.
    pub fn set_mode(&self, new: ModeState) {
        let mut mode = self.mode.lock();
        self.wce.store(new.write_cache_enabled(), Ordering::Release);
        self.swp
            .store(new.software_write_protect(), Ordering::Release);
        *mode = new;
    }

    /// SWP of the control mode page.
    pub fn software_write_protect(&self) -> bool {
        self.swp.load(Ordering::Acquire)
    }
}

/// One logical unit.
#[derive(Debug)]
pub(crate) struct Lun {
    pub lun: u64,
    pub target: Arc<TargetInfo>,
    pub nexuses: Arc<NexusTable>,
    /// `None` for the controller LUN.
    pub disk: Option<Disk>,
    pub pr: RwLock<PrState>,
    /// Mirrors `pr.any_reservation()` so that I/O skips the lock.
    pub reserved: AtomicBool,
    pub ua: UaTable,
    /// Where APTPL reservations are saved.
    pub pr_file: Option<PathBuf>,
    /// EXTENDED COPY results for RECEIVE COPY RESULTS.
    pub copy_results: Mutex<CopyResults>,
}

/// A command's failure: CHECK CONDITION with sense, or RESERVATION CONFLICT.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fail {
    Check(Sense),
    Conflict,
}

impl From<Sense> for Fail {
    fn from(s: Sense) -> Self {
        Fail::Check(s)
    }
}

/// What a handler returns: the Data-In bytes.
pub(crate) type CmdResult = Result<Vec<u8>, Fail>;

/// Turn a handler result into a response.
pub(crate) fn respond(r: CmdResult) -> ScsiResponse {
    match r {
        Ok(data_in) => ScsiResponse {
            status: status::GOOD,
            sense: Vec::new(),
            data_in,
        },
        Err(Fail::Check(s)) => ScsiResponse {
            status: status::CHECK_CONDITION,
            sense: s.to_fixed(),
            data_in: Vec::new(),
        },
        Err(Fail::Conflict) => ScsiResponse {
            status: status::RESERVATION_CONFLICT,
            ..Default::default()
        },
    }
}

/// The context of one command for its handler.
pub(crate) struct Ctx<'a> {
    pub nexus: NexusId,
    /// The command table entry of this CDB.
    pub desc: &'static OpDesc,
    pub it: &'a ItNexus,
    pub cdb: &'a [u8],
    pub data: &'a [u8],
    pub target: &'a ScsiTarget,
}

/// Commands that neither report nor clear a unit attention (SAM-5 5.14).
fn ua_exempt(opcode: u8) -> bool {
    matches!(opcode, op::INQUIRY | op::REPORT_LUNS | op::REQUEST_SENSE)
}

impl Lun {
    /// The controller LUN 0.
    pub fn controller(target: Arc<TargetInfo>, nexuses: Arc<NexusTable>) -> Self {
        Lun {
            lun: 0,
            target,
            nexuses,
            disk: None,
            pr: RwLock::new(PrState::default()),
            reserved: AtomicBool::new(false),
            ua: UaTable::default(),
            pr_file: None,
            copy_results: Mutex::default(),
        }
    }

    /// Open a disk LUN; reload persisted reservations (APTPL).
    pub fn open_disk(
        lun: u64,
        path: &Path,
        mut opts: LunOptions,
        target: Arc<TargetInfo>,
        nexuses: Arc<NexusTable>,
    ) -> Result<Self, ScsiError> {
        let bs = opts.block_size;
        if !matches!(bs, 512 | 1024 | 2048 | 4096) {
            return Err(ScsiError::BadBlockSize(bs));
        }
        let io_err = |source| ScsiError::Backing {
            path: path.to_path_buf(),
            source,
        };
        let backing = Backing::open(path, opts.readonly).map_err(io_err)?;
        let size_bytes = backing.size().map_err(io_err)?;
        if size_bytes < u64::from(bs) {
            return Err(ScsiError::BadSize {
                path: path.to_path_buf(),
                size_bytes,
                block_size: bs,
            });
        }
        if opts.serial.is_empty() {
            opts.serial = format!("beaf{}{}", target.tid, lun);
        }
        let pr_file = opts
            .state_dir
            .as_ref()
            .map(|d| super::prcmd::state_file(d, &target.name, lun));
        let pr = match &pr_file {
            Some(f) => super::prcmd::load(f)?,
            None => PrState::default(),
        };
        let disk = Disk {
            backing,
            block_size: bs,
            block_shift: bs.trailing_zeros(),
            blocks: AtomicU64::new(size_bytes / u64::from(bs)),
            opts,
            write_gate: RwLock::new(()),
            mode: Mutex::new(ModeState::default()),
            wce: AtomicBool::new(ModeState::default().write_cache_enabled()),
            swp: AtomicBool::new(false),
            prevent: Mutex::new(Vec::new()),
        };
        let reserved = AtomicBool::new(pr.any_reservation());
        Ok(Lun {
            lun,
            target,
            nexuses,
            disk: Some(disk),
            pr: RwLock::new(pr),
            reserved,
            ua: UaTable::default(),
            pr_file,
            copy_results: Mutex::default(),
        })
    }

    /// Disk or controller, thin or not: which commands it implements.
    pub fn kind(&self) -> LunKind {
        let opts = self.disk.as_ref().map(|d| &d.opts);
        LunKind {
            disk: opts.is_some(),
            thin: opts.is_some_and(|o| o.thin),
            sanitize: opts.is_some_and(|o| o.sanitize),
        }
    }

    pub fn is_controller(&self) -> bool {
        self.disk.is_none()
    }

    pub fn block_size(&self) -> Option<u32> {
        self.disk.as_ref().map(|d| d.block_size)
    }

    /// The disk, for disk-only handlers.
    pub fn disk(&self) -> Result<&Disk, Fail> {
        self.disk
            .as_ref()
            .ok_or_else(|| Sense::invalid_opcode().into())
    }

    pub fn info(&self) -> LunInfo {
        match &self.disk {
            None => LunInfo {
                lun: self.lun,
                path: PathBuf::new(),
                size_bytes: 0,
                block_size: 0,
                readonly: true,
                thin: false,
                kind: "controller".to_string(),
                serial: String::new(),
            },
            Some(d) => LunInfo {
                lun: self.lun,
                path: d.backing.path().to_path_buf(),
                size_bytes: d.blocks.load(Ordering::Relaxed) << d.block_shift,
                block_size: d.block_size,
                readonly: d.opts.readonly,
                thin: d.opts.thin,
                kind: "disk".to_string(),
                serial: d.opts.serial.clone(),
            },
        }
    }

    /// Re-read the backing store size; whether the capacity changed.
    pub fn refresh_size(&self) -> Result<bool, ScsiError> {
        let Some(d) = &self.disk else {
            return Ok(false);
        };
        let size_bytes = d.backing.size().map_err(|source| ScsiError::Backing {
            path: d.backing.path().to_path_buf(),
            source,
        })?;
        let blocks = size_bytes >> d.block_shift;
        if blocks == 0 {
            return Err(ScsiError::BadSize {
                path: d.backing.path().to_path_buf(),
                size_bytes,
                block_size: d.block_size,
            });
        }
        Ok(d.blocks.swap(blocks, Ordering::AcqRel) != blocks)
    }

    /// Queue a unit attention for one nexus.
    pub fn unit_attention(&self, nexus: NexusId, asc: Asc) {
        self.ua.add(nexus, asc);
    }

    /// Queue a unit attention for every logged-in nexus of `it`.
    pub fn unit_attention_it(&self, it: &ItNexus, asc: Asc) {
        for (id, other) in self.nexuses.read().iter() {
            if **other == *it {
                self.ua.add(*id, asc);
            }
        }
    }

    /// Queue a unit attention for every logged-in nexus except `except`.
    pub fn unit_attention_others(&self, except: Option<NexusId>, asc: Asc) {
        for id in self.nexuses.read().keys() {
            if Some(*id) != except {
                self.ua.add(*id, asc);
            }
        }
    }

    /// A nexus logged out: drop its unit attentions; if no other login of
    /// the same initiator port remains, its SPC-2 reservation and PREVENT.
    pub fn nexus_gone(&self, nexus: NexusId, it: &ItNexus, still_logged_in: bool) {
        self.ua.clear(nexus);
        if let Some(d) = &self.disk {
            d.prevent.lock().retain(|n| *n != nexus);
        }
        if !still_logged_in {
            let mut pr = self.pr.write();
            if pr.spc2_holder.as_ref() == Some(it) {
                pr.spc2_holder = None;
                self.reserved.store(pr.any_reservation(), Ordering::Release);
            }
        }
    }

    /// LUN reset / target reset: release SPC-2 reservations, PREVENT and
    /// mode parameters, and report `asc` to every nexus but the one that
    /// asked for the reset (it knows). libiscsi disagrees with itself here:
    /// Reserve6.LUNReset expects the issuer's next command to succeed,
    /// MultipathIO.Reset (run only with a second URL) expects a UA on every
    /// path; the plain `iscsi-test-cu -d URL` run is the one we hold to.
    pub fn reset(&self, by: Option<NexusId>, asc: Asc) {
        {
            let mut pr = self.pr.write();
            pr.spc2_holder = None;
            self.reserved.store(pr.any_reservation(), Ordering::Release);
        }
        if let Some(d) = &self.disk {
            d.prevent.lock().clear();
            d.set_mode(ModeState::default());
        }
        self.unit_attention_others(by, asc);
    }

    /// Run one command (SAM-5 order of checks).
    pub fn execute(
        &self,
        nexus: NexusId,
        it: &ItNexus,
        cmd: &ScsiCommand,
        target: &ScsiTarget,
    ) -> ScsiResponse {
        let cdb = cmd.cdb;
        let Some(&opcode) = cdb.first() else {
            return respond(Err(Sense::invalid_opcode().into()));
        };
        if !ua_exempt(opcode) {
            if let Some(asc) = self.ua.take(nexus) {
                return respond(Err(Sense::unit_attention(asc).into()));
            }
        }
        let desc = match opcodes::lookup(cdb, self.kind()) {
            Ok(d) => d,
            Err(LookupError::Opcode) => return respond(Err(Sense::invalid_opcode().into())),
            Err(LookupError::ServiceAction) => {
                return respond(Err(Sense::invalid_cdb(1, Some(4)).into()))
            }
        };
        if cdb.len() < desc.cdb_len() {
            return respond(Err(Sense::invalid_opcode().into()));
        }
        let cdb = &cdb[..desc.cdb_len()];
        if self.reserved.load(Ordering::Acquire)
            && !self.pr.read().allows(it, access_of(desc, cdb), opcode)
        {
            tracing::debug!(
                lun = self.lun,
                nexus = nexus.0,
                op = desc.name,
                "reservation conflict"
            );
            return respond(Err(Fail::Conflict));
        }
        let ctx = Ctx {
            nexus,
            desc,
            it,
            cdb,
            data: cmd.data_out,
            target,
        };
        respond(self.dispatch(desc, &ctx))
    }

    fn dispatch(&self, desc: &OpDesc, c: &Ctx) -> CmdResult {
        match (desc.op, desc.sa) {
            (op::TEST_UNIT_READY, _) => self.test_unit_ready(c),
            (op::REQUEST_SENSE, _) => self.request_sense(c),
            (op::INQUIRY, _) => self.inquiry(c),
            (op::REPORT_LUNS, _) => super::spc::report_luns(c.cdb, &c.target.lun_numbers()),
            (op::MAINTENANCE_IN, _) => self.report_supported_opcodes(c),
            (op::MODE_SENSE_6 | op::MODE_SENSE_10, _) => self.mode_sense(c),
            (op::MODE_SELECT_6 | op::MODE_SELECT_10, _) => self.mode_select(c),
            (op::START_STOP_UNIT, _) => self.start_stop_unit(c),
            (op::PREVENT_ALLOW, _) => self.prevent_allow(c),
            (op::READ_CAPACITY_10, _) => self.read_capacity_10(c),
            (op::SERVICE_ACTION_IN_16, Some(sa::READ_CAPACITY_16)) => self.read_capacity_16(c),
            (op::SERVICE_ACTION_IN_16, Some(sa::GET_LBA_STATUS)) => self.get_lba_status(c),
            (op::READ_6 | op::READ_10 | op::READ_12 | op::READ_16, _) => self.read(c),
            (op::WRITE_6 | op::WRITE_10 | op::WRITE_12 | op::WRITE_16, _) => self.write(c),
            (op::VERIFY_10 | op::VERIFY_12 | op::VERIFY_16, _) => self.verify(c),
            (op::WRITE_VERIFY_10 | op::WRITE_VERIFY_12 | op::WRITE_VERIFY_16, _) => {
                self.write_verify(c)
            }
            (op::ORWRITE_16, _) => self.orwrite(c),
            (op::WRITE_ATOMIC_16, _) => self.write_atomic(c),
            (op::READ_DEFECT_DATA_10 | op::READ_DEFECT_DATA_12, _) => self.read_defect_data(c),
            (op::PREFETCH_10 | op::PREFETCH_16, _) => self.prefetch(c),
            (op::SYNCHRONIZE_CACHE_10 | op::SYNCHRONIZE_CACHE_16, _) => self.synchronize_cache(c),
            (op::WRITE_SAME_10 | op::WRITE_SAME_16, _) => self.write_same(c),
            (op::UNMAP, _) => self.unmap(c),
            (op::SANITIZE, _) => self.sanitize(c),
            (op::COMPARE_AND_WRITE, _) => self.compare_and_write(c),
            (op::RESERVE_6 | op::RESERVE_10, _) => self.reserve_spc2(c),
            (op::RELEASE_6 | op::RELEASE_10, _) => self.release_spc2(c),
            (op::PR_IN, _) => self.pr_in(c),
            (op::EXTENDED_COPY, _) => self.extended_copy(c),
            (op::RECEIVE_COPY_RESULTS, _) => self.receive_copy_results(c),
            (op::PR_OUT, _) => self.pr_out(c),
            _ => Err(Sense::invalid_opcode().into()),
        }
    }
}

/// The reservation access class of a command, refined by CDB bits for
/// START STOP UNIT and PREVENT ALLOW MEDIUM REMOVAL (SBC-3 table 13).
fn access_of(desc: &OpDesc, cdb: &[u8]) -> Access {
    if desc.access != Access::ByCdb {
        return desc.access;
    }
    let allowed = match desc.op {
        op::START_STOP_UNIT => cdb[4] & 0x01 != 0 && cdb[4] >> 4 == 0,
        _ => cdb[4] & 0x03 == 0,
    };
    if allowed {
        Access::Always
    } else {
        Access::Write
    }
}
