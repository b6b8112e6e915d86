//! [`ScsiTarget`]: the LUNs of one iSCSI target and the I_T nexuses
//! logged in to it. Commands are routed to the addressed LUN without a
//! global lock (one read lock on the LUN map, one on the nexus map).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;

use super::cdb::op;
use super::lun::{Lun, LunInfo, LunOptions, TargetInfo};
use super::pr::ItNexus;
use super::sense::{Asc, Sense};
use super::spc;
use super::{status, NexusId, ScsiCommand, ScsiError, ScsiResponse, TaskMgmt};

/// The logged-in I_T nexuses of a target, shared with its LUNs so they
/// can address unit attentions to "every other I_T nexus".
pub(crate) type NexusTable = RwLock<HashMap<NexusId, Arc<ItNexus>>>;

/// iSCSI task management response codes (RFC 7143 11.6.1).
pub mod tmf_response {
    pub const COMPLETE: u8 = 0;
    pub const NO_TASK: u8 = 1;
    pub const NO_LUN: u8 = 2;
    pub const NOT_SUPPORTED: u8 = 5;
}

/// The SCSI side of one iSCSI target: a set of LUNs (LUN 0 is the
/// controller) shared by every session via `Arc`.
#[derive(Debug)]
pub struct ScsiTarget {
    info: Arc<TargetInfo>,
    luns: RwLock<BTreeMap<u64, Arc<Lun>>>,
    nexuses: Arc<NexusTable>,
    next_nexus: AtomicU64,
}

impl ScsiTarget {
    /// A target with only the controller LUN 0 (peripheral type 0x0c).
    pub fn new(target_name: &str, tid: u32) -> Self {
        let info = Arc::new(TargetInfo {
            name: target_name.to_string(),
            tid,
        });
        let nexuses: Arc<NexusTable> = Arc::default();
        let controller = Arc::new(Lun::controller(info.clone(), nexuses.clone()));
        let mut luns = BTreeMap::new();
        luns.insert(0, controller);
        ScsiTarget {
            info,
            luns: RwLock::new(luns),
            nexuses,
            next_nexus: AtomicU64::new(1),
        }
    }

    /// The target name given to [`ScsiTarget::new`].
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// Add a disk LUN backed by a regular file or block device. LUN 0 may
    /// be replaced by a disk (the controller LUN then disappears).
    pub fn add_lun(&self, lun: u64, path: &Path, opts: LunOptions) -> Result<(), ScsiError> {
        {
            let luns = self.luns.read();
            if let Some(existing) = luns.get(&lun) {
                if lun != 0 || !existing.is_controller() {
                    return Err(ScsiError::LunExists(lun));
                }
            }
        }
        let new = Arc::new(Lun::open_disk(
            lun,
            path,
            opts,
            self.info.clone(),
            self.nexuses.clone(),
        )?);
        let mut luns = self.luns.write();
        match luns.get(&lun) {
            Some(existing) if !(lun == 0 && existing.is_controller()) => {
                return Err(ScsiError::LunExists(lun))
            }
            _ => {}
        }
        luns.insert(lun, new.clone());
        for id in self.nexuses.read().keys() {
            new.unit_attention(*id, Asc::POWER_ON_RESET);
        }
        drop(luns);
        self.announce_lun_change(lun);
        tracing::info!(target_name = %self.info.name, lun, path = %path.display(), "LUN added");
        Ok(())
    }

    /// Remove a LUN. Removing LUN 0 puts the controller LUN back.
    pub fn remove_lun(&self, lun: u64) -> Result<(), ScsiError> {
        let mut luns = self.luns.write();
        match luns.get(&lun) {
            None => return Err(ScsiError::NoSuchLun(lun)),
            Some(l) if l.is_controller() => return Err(ScsiError::ControllerLun),
            Some(_) => {}
        }
        luns.remove(&lun);
        if lun == 0 {
            luns.insert(
                0,
                Arc::new(Lun::controller(self.info.clone(), self.nexuses.clone())),
            );
        }
        drop(luns);
        self.announce_lun_change(lun);
        tracing::info!(target_name = %self.info.name, lun, "LUN removed");
        Ok(())
    }

    /// REPORTED LUNS DATA HAS CHANGED on every other LUN for every nexus.
    fn announce_lun_change(&self, changed: u64) {
        let luns = self.luns.read();
        let ids: Vec<NexusId> = self.nexuses.read().keys().copied().collect();
        for (n, l) in luns.iter() {
            if *n != changed {
                for id in &ids {
                    l.unit_attention(*id, Asc::REPORTED_LUNS_DATA_CHANGED);
                }
            }
        }
    }

    /// Re-read the size of a LUN's backing store (after it was grown or
    /// shrunk); when the capacity changed, every nexus gets CAPACITY DATA
    /// HAS CHANGED. Returns the new size in bytes.
    pub fn refresh_lun_size(&self, lun: u64) -> Result<u64, ScsiError> {
        let l = self.lun(lun).ok_or(ScsiError::NoSuchLun(lun))?;
        let changed = l.refresh_size()?;
        if changed {
            l.unit_attention_others(None, Asc::CAPACITY_DATA_CHANGED);
        }
        Ok(l.info().size_bytes)
    }

    /// A description of every LUN, in LUN order.
    pub fn luns(&self) -> Vec<LunInfo> {
        self.luns.read().values().map(|l| l.info()).collect()
    }

    /// Register a new I_T nexus. `initiator_port` is the iSCSI initiator
    /// port name ("iqn...,i,0x<isid>"), `target_port` the relative target
    /// port identifier (the portal group tag). Every LUN reports POWER ON,
    /// RESET OR BUS DEVICE RESET OCCURRED to it first.
    pub fn nexus_login(&self, initiator_port: &str, target_port: u16) -> NexusId {
        let id = NexusId(self.next_nexus.fetch_add(1, Ordering::Relaxed));
        let it = Arc::new(ItNexus::new(initiator_port, target_port));
        self.nexuses.write().insert(id, it);
        for l in self.luns.read().values() {
            l.unit_attention(id, Asc::POWER_ON_RESET);
        }
        tracing::debug!(target_name = %self.info.name, nexus = id.0, initiator_port, target_port, "nexus login");
        id
    }

    /// Forget an I_T nexus: its unit attentions, its SPC-2 reservations
    /// and its PREVENT MEDIUM REMOVAL. PR registrations stay (they belong
    /// to the initiator port, not to this login).
    pub fn nexus_logout(&self, nexus: NexusId) {
        let Some(it) = self.nexuses.write().remove(&nexus) else {
            return;
        };
        let still_logged_in = self.nexuses.read().values().any(|o| **o == *it);
        for l in self.luns.read().values() {
            l.nexus_gone(nexus, &it, still_logged_in);
        }
        tracing::debug!(target_name = %self.info.name, nexus = nexus.0, "nexus logout");
    }

    fn lun(&self, lun: u64) -> Option<Arc<Lun>> {
        self.luns.read().get(&lun).cloned()
    }

    /// Execute one command for `nexus`. Safe to call from many threads.
    pub fn execute(&self, nexus: NexusId, cmd: &ScsiCommand) -> ScsiResponse {
        let Some(it) = self.nexuses.read().get(&nexus).cloned() else {
            tracing::warn!(nexus = nexus.0, "command on an unknown nexus");
            return ScsiResponse {
                status: status::BUSY,
                ..Default::default()
            };
        };
        match self.lun(cmd.lun) {
            Some(l) => l.execute(nexus, &it, cmd, self),
            None => self.execute_no_lun(cmd),
        }
    }

    /// Commands addressed to a LUN that does not exist (SPC-4 4.x): INQUIRY
    /// reports peripheral qualifier 3, REPORT LUNS works, the rest fails
    /// with LOGICAL UNIT NOT SUPPORTED.
    fn execute_no_lun(&self, cmd: &ScsiCommand) -> ScsiResponse {
        let cdb = cmd.cdb;
        let result = match cdb.first() {
            Some(&op::INQUIRY) if cdb.len() >= 6 => spc::inquiry_no_lun(cdb),
            Some(&op::REPORT_LUNS) if cdb.len() >= 12 => spc::report_luns(cdb, &self.lun_numbers()),
            Some(&op::REQUEST_SENSE) if cdb.len() >= 6 => Ok(spc::request_sense_data(
                cdb,
                &Sense::illegal(Asc::LUN_NOT_SUPPORTED),
            )),
            _ => Err(Sense::illegal(Asc::LUN_NOT_SUPPORTED).into()),
        };
        super::lun::respond(result)
    }

    /// The disk LUN whose NAA (type 3) or T10 vendor id (type 1)
    /// designator is `value` (EXTENDED COPY CSCDs).
    pub(crate) fn lun_by_designator(&self, kind: u8, value: &[u8]) -> Option<Arc<Lun>> {
        let luns = self.luns.read();
        luns.values()
            .find(|l| {
                !l.is_controller()
                    && match kind {
                        3 => l.naa()[..] == *value,
                        1 => l.t10_id() == value,
                        _ => false,
                    }
            })
            .cloned()
    }

    /// The LUN numbers, for REPORT LUNS.
    pub(crate) fn lun_numbers(&self) -> Vec<u64> {
        self.luns.read().keys().copied().collect()
    }

    /// Apply a task management function; returns the iSCSI TMF response.
    /// Commands run synchronously inside [`ScsiTarget::execute`], so there
    /// is never a queued task to abort here: ABORT TASK answers "no such
    /// task" (the transport answers "complete" for tasks it still holds).
    pub fn task_mgmt(&self, nexus: NexusId, tmf: TaskMgmt) -> u8 {
        tracing::debug!(target_name = %self.info.name, nexus = nexus.0, ?tmf, "task management");
        match tmf {
            TaskMgmt::AbortTask { lun, .. } => match self.lun(lun) {
                Some(_) => tmf_response::NO_TASK,
                None => tmf_response::NO_LUN,
            },
            TaskMgmt::AbortTaskSet { lun } | TaskMgmt::ClearTaskSet { lun } => {
                match self.lun(lun) {
                    Some(_) => tmf_response::COMPLETE,
                    None => tmf_response::NO_LUN,
                }
            }
            TaskMgmt::LunReset { lun } => match self.lun(lun) {
                Some(l) => {
                    l.reset(Some(nexus), Asc::BUS_DEVICE_RESET);
                    tmf_response::COMPLETE
                }
                None => tmf_response::NO_LUN,
            },
            TaskMgmt::TargetWarmReset | TaskMgmt::TargetColdReset => {
                for l in self.luns.read().values() {
                    l.reset(Some(nexus), Asc::POWER_ON_RESET);
                }
                tmf_response::COMPLETE
            }
        }
    }

    /// The number of Data-Out bytes a CDB implies, assuming 512-byte
    /// blocks (`None` for a CDB too short for its opcode). Use
    /// [`Self::data_out_expected_for`] to get the LUN's block size.
    pub fn data_out_expected(&self, cdb: &[u8]) -> Option<u32> {
        spc::data_out_len(cdb, 512)
    }

    /// Like [`Self::data_out_expected`] with the block size of `lun`.
    pub fn data_out_expected_for(&self, lun: u64, cdb: &[u8]) -> Option<u32> {
        let bs = self.lun(lun).and_then(|l| l.block_size()).unwrap_or(512);
        spc::data_out_len(cdb, bs)
    }
}
