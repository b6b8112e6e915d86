//! Mounting and journal recovery in a cluster, as `lock_dlm.c` does it.
//!
//! - **Journal id.** The lockspace gives every member a slot (the DLM's
//!   recovery agrees them); the mount's journal is `slot - 1`.
//! - **First mounter.** The `control` lock (nondisk 4) serialises mounts
//!   and recovery; the `mounted` lock (nondisk 5) is held PR by every
//!   mounted node. A mounter takes control EX, then tries mounted EX with
//!   NOQUEUE: granted means nobody else has the volume mounted, and this
//!   node replays every dirty journal (still holding control EX, so nobody
//!   mounts meanwhile), then holds mounted PR and writes the control LVB.
//!   Otherwise it takes mounted PR and mounts once no journal waits for
//!   recovery and the LVB's generation has reached its own lockspace
//!   generation (the mounted nodes recorded the recovery that let it in);
//!   until then it drops mounted back to NL and looks again. Every
//!   mounter replays its own journal if it is dirty.
//! - **Recovery.** When members fail, the DLM tells us (after fencing)
//!   which slots were lost and blocks new lock requests ([`DlmGlocks`]
//!   defers them). The first survivor to take the control lock after a
//!   recovery records the journals lost in it as bits in the control LVB
//!   (`le64 generation | bitmap of jids`: the kernel has a le32 generation
//!   and 4 unused bytes; ours are 64-bit, cmand's view sequence in the
//!   high half); a survivor that finds the LVB at its recovery's
//!   generation already adds nothing, so a bit cleared stays cleared;
//!   the first pass after a recovery writes its generation even with
//!   nothing lost (but never a later recovery's, whose losses it has not
//!   taken yet);
//!   each bit is recovered by whichever survivor wins that journal's glock
//!   (EX, try), which replays it and clears its bit. Once no bit is left,
//!   lock requests go out again.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use dlm::{DlmError, Flags, LockId, Lockspace, Lvb, Mode, NodeId, RecoverOps};
use parking_lot::{Condvar, Mutex};

use super::{DlmGlocks, GlockGuard};
use crate::glock::{nondisk, GlockName, GlockState, GlockType, HolderFlags};
use crate::lock::LockError;

/// Journals the control LVB can flag (24 bytes of bitmap).
pub const MAX_JOURNALS: u32 = 24 * 8;

/// How long a mounter or a recovery pass waits before looking again.
const RETRY: Duration = Duration::from_millis(50);

/// Replays journals for the cluster's recovery.
pub trait JournalRecovery: Send + Sync {
    /// Replays journal `jid` if it is dirty (nothing if its last header is
    /// an UNMOUNT one) and marks it clean. The caller holds its journal
    /// glock in EX.
    fn recover_journal(&self, jid: u32) -> Result<(), String>;
}

/// The control lock's value block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlLvb {
    /// Lockspace generation whose lost journals the bitmap holds.
    pub generation: u64,
    /// Bit `jid` set: that journal waits for recovery.
    pub bitmap: [u8; 24],
}

impl ControlLvb {
    /// Decodes the 32-byte LVB.
    pub fn decode(lvb: &Lvb) -> ControlLvb {
        let mut bitmap = [0u8; 24];
        bitmap.copy_from_slice(&lvb.0[8..32]);
        ControlLvb {
            generation: u64::from_le_bytes(lvb.0[..8].try_into().expect("8 bytes")),
            bitmap,
        }
    }

    /// Encodes it.
    pub fn encode(&self) -> Lvb {
        let mut v = [0u8; 32];
        v[..8].copy_from_slice(&self.generation.to_le_bytes());
        v[8..].copy_from_slice(&self.bitmap);
        Lvb(v)
    }

    /// Flags journal `jid`.
    pub fn set(&mut self, jid: u32) {
        assert!(jid < MAX_JOURNALS, "jid {jid} out of the control LVB");
        self.bitmap[jid as usize / 8] |= 1 << (jid % 8);
    }

    /// Clears journal `jid`'s flag.
    pub fn clear(&mut self, jid: u32) {
        if jid < MAX_JOURNALS {
            self.bitmap[jid as usize / 8] &= !(1 << (jid % 8));
        }
    }

    /// The flagged journals.
    pub fn jids(&self) -> Vec<u32> {
        (0..MAX_JOURNALS)
            .filter(|j| self.bitmap[*j as usize / 8] & (1 << (j % 8)) != 0)
            .collect()
    }
}

/// What mounting found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountRole {
    /// Nobody else had the volume mounted: every journal was recovered.
    First,
    /// Others have it mounted.
    Joined,
}

#[derive(Default)]
struct CtlState {
    /// Our slot (0 until the lockspace assigned one).
    slot: u32,
    /// Journals of members lost, with the generation of the recovery
    /// that reported them.
    lost: BTreeMap<u32, u64>,
    /// Journals lost in the recovery under way (its `recover_done` gives
    /// their generation).
    lost_now: Vec<u32>,
    /// A recovery pass runs (one at a time).
    recovering: bool,
    /// Another pass is wanted after the running one.
    again: bool,
    /// The DLM began a recovery (`recover_prep`) whose `recover_done` has
    /// not come yet: lock requests stay blocked whatever a pass finds.
    awaiting_done: bool,
    /// The generation of the last `recover_done`.
    done_gen: u64,
}

/// A mount's part in the lockspace's recovery: give it to
/// [`dlm::Dlm::join_with_ops`], then call [`MountControl::mount`].
#[derive(Default)]
pub struct MountControl {
    /// How this node places the lockspace's directory entries (0: by
    /// hash, as nodes before placement existed; see [`MountControl::placed`]).
    placement: u64,
    state: Mutex<CtlState>,
    changed: Condvar,
    mounted: OnceLock<Mounted>,
}

/// What a mounted node keeps.
struct Mounted {
    ls: Lockspace,
    glocks: Arc<DlmGlocks>,
    recovery: Arc<dyn JournalRecovery>,
    control: LockId,
    /// Held PR for as long as the volume is mounted here.
    _mounted: LockId,
    journals: u32,
    /// Writes nothing: leaves the replay of failed nodes' journals to the
    /// nodes that have one.
    spectator: bool,
}

fn nondisk_name(number: u64) -> [u8; 24] {
    GlockName {
        kind: GlockType::Nondisk,
        number,
    }
    .dlm_name()
}

fn journal(jid: u32) -> GlockName {
    GlockName {
        kind: GlockType::Journal,
        number: u64::from(jid),
    }
}

fn dlm_err(what: &str, e: DlmError) -> LockError {
    LockError::Unavailable(format!("{what}: {e}"))
}

impl MountControl {
    /// A control for one mount.
    pub fn new() -> Arc<MountControl> {
        Arc::default()
    }

    /// A control for one mount whose DLM places directory entries as
    /// `placement` tells (nonzero; equal on nodes that place alike). The
    /// first mounter writes it in the mounted lock's value block; a later
    /// mounter that places otherwise is refused, since two nodes that
    /// disagree on a resource's directory could both master it.
    pub fn placed(placement: u64) -> Arc<MountControl> {
        Arc::new(MountControl {
            placement,
            ..MountControl::default()
        })
    }

    /// Waits until the lockspace assigned this node its slot; returns the
    /// journal id (`slot - 1`).
    pub fn wait_jid(&self, timeout: Duration) -> Result<u32, LockError> {
        let deadline = Instant::now() + timeout;
        let mut st = self.state.lock();
        while st.slot == 0 {
            if self.changed.wait_until(&mut st, deadline).timed_out() {
                return Err(LockError::Unavailable(
                    "the lockspace assigned no slot (journal id) in time".into(),
                ));
            }
        }
        Ok(st.slot - 1)
    }

    /// Mounts: takes part in the first-mounter protocol (see the module
    /// docs) and calls `mount_fs` at the right moment: the first mounter
    /// holds every journal's glock and the control lock while `mount_fs`
    /// replays every dirty journal; a later mounter holds its own
    /// journal's glock while `mount_fs` replays that one. `journals` is
    /// the number of journals on the volume; `recovery` replays failed
    /// nodes' journals later, while mounted. Returns this node's journal
    /// glock (`jid`), held EX: keep it for as long as the volume is
    /// mounted.
    ///
    /// A spectator (`jid` `None`) takes no journal and recovers nothing:
    /// as the first mounter it holds the control lock while `mount_fs`
    /// checks that every journal is clean (and refuses otherwise, as the
    /// kernel's `check_journal_clean` does); later, it waits with its lock
    /// requests blocked while nodes with journals recover a failed one.
    #[allow(clippy::too_many_arguments)]
    pub fn mount<T>(
        self: &Arc<Self>,
        ls: Lockspace,
        glocks: Arc<DlmGlocks>,
        recovery: Arc<dyn JournalRecovery>,
        jid: Option<u32>,
        journals: u32,
        mount_fs: impl FnOnce(MountRole) -> Result<T, LockError>,
    ) -> Result<(MountRole, Option<GlockGuard>, T), LockError> {
        if jid.is_some_and(|j| j >= journals) {
            return Err(LockError::Unavailable(format!(
                "no free journal: this volume has {journals} journal(s), all in use \
                 (add one with gfs2_jadd or mount -o spectator)"
            )));
        }
        if journals > MAX_JOURNALS {
            return Err(LockError::Unavailable(format!(
                "{journals} journals: lock_dlm flags at most {MAX_JOURNALS}"
            )));
        }
        let control = ls
            .lock(&nondisk_name(nondisk::CONTROL), Mode::Nl, Flags::empty())
            .map_err(|e| dlm_err("control lock", e))?;
        let mounted = ls
            .lock(&nondisk_name(nondisk::MOUNTED), Mode::Nl, Flags::empty())
            .map_err(|e| dlm_err("mounted lock", e))?;
        let mut mount_fs = Some(mount_fs);
        let (role, own, fs) = loop {
            let lvb = control_ex(&ls, control)?;
            match ls.convert(mounted, Mode::Ex, Flags::NOQUEUE, None) {
                Ok(_) => {
                    // A spectator only reads the journals: nobody else can
                    // mount while it holds the control lock.
                    let (own, others) = match jid {
                        Some(jid) => take_all_journals(&glocks, jid, journals)?,
                        None => (None, Vec::new()),
                    };
                    let fs = (mount_fs.take().expect("once"))(MountRole::First)?;
                    drop(others);
                    let tag = placement_lvb(self.placement);
                    ls.convert(mounted, Mode::Pr, Flags::VALBLK, Some(tag))
                        .map_err(|e| dlm_err("mounted lock", e))?;
                    let clean = ControlLvb {
                        generation: ls.generation(),
                        bitmap: [0; 24],
                    };
                    control_release(&ls, control, Some(clean))?;
                    break (MountRole::First, own, fs);
                }
                Err(DlmError::Again) => {}
                Err(e) => return Err(dlm_err("mounted lock", e)),
            }
            // As the kernel's control_mount: joined once no journal waits
            // for recovery and the mounted nodes have recorded the
            // recovery that let us in (the LVB's generation reached
            // ours), so that no journal lost before it can be missed.
            let (pr, joined) =
                match ls.convert(mounted, Mode::Pr, Flags::NOQUEUE | Flags::VALBLK, None) {
                    Ok(c) => {
                        let theirs = c.lvb.map_or(0, |l| placement_of(&l));
                        if theirs != self.placement {
                            let _ = ls.convert(mounted, Mode::Nl, Flags::empty(), None);
                            control_release(&ls, control, None)?;
                            return Err(LockError::Unavailable(format!(
                                "the mounted nodes place the lockspace's directory otherwise \
                                 ({theirs:#x}, here {:#x}): is every node running the same \
                                 mount.clusterfs?",
                                self.placement
                            )));
                        }
                        (
                            true,
                            lvb.jids().is_empty() && lvb.generation >= ls.generation(),
                        )
                    }
                    Err(DlmError::Again) => (false, false),
                    Err(e) => return Err(dlm_err("mounted lock", e)),
                };
            control_release(&ls, control, None)?;
            if pr && !joined {
                // Holding mounted PR while waiting would keep every other
                // waiter from becoming the first mounter once no mounted
                // node is left to recover the flagged journals.
                ls.convert(mounted, Mode::Nl, Flags::empty(), None)
                    .map_err(|e| dlm_err("mounted lock", e))?;
            }
            if joined {
                let own = match jid {
                    Some(jid) => Some(glocks.acquire(
                        journal(jid),
                        GlockState::Ex,
                        HolderFlags::default(),
                    )?),
                    None => None,
                };
                let fs = (mount_fs.take().expect("once"))(MountRole::Joined)?;
                break (MountRole::Joined, own, fs);
            }
            thread::sleep(RETRY);
        };
        let _ = self.mounted.set(Mounted {
            ls,
            glocks,
            recovery,
            control,
            _mounted: mounted,
            journals,
            spectator: jid.is_none(),
        });
        {
            // A recovery that began while we mounted blocks us too.
            let st = self.state.lock();
            if st.awaiting_done || !st.lost.is_empty() {
                self.mounted.get().expect("set").glocks.block_requests();
            }
        }
        // Members lost while we mounted are ours to recover too.
        self.start_recovery();
        Ok((role, own, fs))
    }

    /// Starts a recovery pass on a thread of its own, unless one runs
    /// (then that one goes round again).
    fn start_recovery(self: &Arc<Self>) {
        if self.mounted.get().is_none() {
            return;
        }
        {
            let mut st = self.state.lock();
            if st.recovering {
                st.again = true;
                return;
            }
            st.recovering = true;
        }
        let me = self.clone();
        thread::Builder::new()
            .name("gfs2-recovery".into())
            .spawn(move || me.recovery_loop())
            .expect("spawn recovery");
    }

    fn recovery_loop(self: Arc<Self>) {
        let m = self.mounted.get().expect("mounted");
        loop {
            match self.recovery_pass(m) {
                Ok(true) => {
                    // Under the state lock, as `on_prep` blocks: a newer
                    // recovery cannot slip in between check and unblock.
                    let mut st = self.state.lock();
                    if !std::mem::take(&mut st.again) && !st.awaiting_done {
                        st.recovering = false;
                        m.glocks.unblock_requests();
                        return;
                    }
                }
                Ok(false) => thread::sleep(RETRY),
                Err(e) => {
                    // The lockspace is gone: nothing more to do here.
                    tracing::error!(error = %e, "journal recovery stopped");
                    self.state.lock().recovering = false;
                    return;
                }
            }
        }
    }

    /// One pass: publishes the journals we saw lost, then recovers each
    /// flagged journal whose glock we win. True when no journal is left
    /// flagged.
    fn recovery_pass(&self, m: &Mounted) -> Result<bool, LockError> {
        // The losses, with the generation of the recovery that reported
        // the last of them, taken together.
        let (lost, gen) = {
            let mut st = self.state.lock();
            (std::mem::take(&mut st.lost), st.done_gen)
        };
        let mut lvb = control_ex(&m.ls, m.control)?;
        // Only journals lost in recoveries the LVB has not seen yet: an
        // older loss is there already, or was recovered and cleared.
        let newer: Vec<(u32, u64)> = lost
            .into_iter()
            .filter(|(jid, gen)| *gen > lvb.generation && *jid < m.journals)
            .collect();
        for (jid, gen) in &newer {
            lvb.set(*jid);
            lvb.generation = lvb.generation.max(*gen);
        }
        // The first pass for a generation writes it, losses or not, so
        // that joiners can wait for it; only up to the generation whose
        // losses this pass took (a later one's are left for the next
        // pass: writing its generation now would make every survivor
        // drop them).
        let advance = gen > lvb.generation;
        if advance {
            lvb.generation = gen;
        }
        let update = (!newer.is_empty() || advance).then_some(lvb);
        control_release(&m.ls, m.control, update)?;
        let flagged = lvb.jids();
        if flagged.is_empty() {
            return Ok(true);
        }
        if m.spectator {
            return Ok(false);
        }
        for jid in flagged {
            let Some(g) = m.glocks.try_acquire(journal(jid), GlockState::Ex)? else {
                continue; // another survivor recovers it
            };
            tracing::info!(jid, "recovering a failed node's journal");
            m.recovery
                .recover_journal(jid)
                .map_err(LockError::Unavailable)?;
            let mut lvb = control_ex(&m.ls, m.control)?;
            lvb.clear(jid);
            control_release(&m.ls, m.control, Some(lvb))?;
            drop(g);
        }
        Ok(false)
    }
}

/// The first mounter holds every journal's glock while it replays them:
/// its own (returned first, kept) and the others (released after).
fn take_all_journals(
    glocks: &DlmGlocks,
    jid: u32,
    journals: u32,
) -> Result<(Option<GlockGuard>, Vec<GlockGuard>), LockError> {
    let mut own = None;
    let mut others = Vec::new();
    for j in 0..journals {
        let g = glocks.acquire(journal(j), GlockState::Ex, HolderFlags::default())?;
        if j == jid {
            own = Some(g);
        } else {
            others.push(g);
        }
    }
    Ok((Some(own.expect("jid below journals")), others))
}

/// The mounted lock's value block: the placement tag, little-endian, in
/// its first 8 bytes (the kernel's lock_dlm keeps no value there).
fn placement_lvb(placement: u64) -> Lvb {
    let mut v = [0u8; 32];
    v[..8].copy_from_slice(&placement.to_le_bytes());
    Lvb(v)
}

fn placement_of(lvb: &Lvb) -> u64 {
    u64::from_le_bytes(lvb.0[..8].try_into().expect("8 bytes"))
}

/// Takes the control lock EX and reads its value block.
fn control_ex(ls: &Lockspace, control: LockId) -> Result<ControlLvb, LockError> {
    let c = ls
        .convert(control, Mode::Ex, Flags::VALBLK, None)
        .map_err(|e| dlm_err("control lock", e))?;
    Ok(c.lvb.map(|l| ControlLvb::decode(&l)).unwrap_or_default())
}

/// Lets the control lock go (to NL), writing `lvb` if given.
fn control_release(
    ls: &Lockspace,
    control: LockId,
    lvb: Option<ControlLvb>,
) -> Result<(), LockError> {
    let (flags, value) = match lvb {
        Some(l) => (Flags::VALBLK, Some(l.encode())),
        None => (Flags::empty(), None),
    };
    ls.convert(control, Mode::Nl, flags, value)
        .map(|_| ())
        .map_err(|e| dlm_err("control lock", e))
}

impl MountControl {
    fn on_prep(&self) {
        let mut st = self.state.lock();
        st.awaiting_done = true;
        if let Some(m) = self.mounted.get() {
            m.glocks.block_requests();
        }
    }

    fn on_slot(&self, node: NodeId, slot: u32) {
        tracing::info!(%node, jid = slot - 1, "member lost: its journal needs recovery");
        self.state.lock().lost_now.push(slot - 1);
    }

    fn on_done(self: &Arc<Self>, gen: u64, our_slot: u32) {
        {
            let mut st = self.state.lock();
            st.slot = our_slot;
            st.awaiting_done = false;
            st.done_gen = gen;
            for jid in std::mem::take(&mut st.lost_now) {
                st.lost.insert(jid, gen);
            }
        }
        self.changed.notify_all();
        self.start_recovery();
    }
}

/// The ops handed to the DLM (they need the `Arc` to start a pass).
struct ControlOps(Arc<MountControl>);

impl RecoverOps for ControlOps {
    fn recover_prep(&self) {
        self.0.on_prep();
    }

    fn recover_slot(&self, node: NodeId, slot: u32) {
        self.0.on_slot(node, slot);
    }

    fn recover_done(&self, gen: u64, _slots: &[(NodeId, u32)], our_slot: u32) {
        self.0.on_done(gen, our_slot);
    }
}

impl MountControl {
    /// The ops to give [`dlm::Dlm::join_with_ops`] for this mount.
    pub fn ops(self: &Arc<Self>) -> Arc<dyn RecoverOps> {
        Arc::new(ControlOps(self.clone()))
    }
}
