//! PERSISTENT RESERVE IN / OUT (SPC-4 6.15, 6.16) and RESERVE / RELEASE
//! (SPC-2 7.21, 7.16) on a LUN: CDB and parameter list decoding, unit
//! attentions, and APTPL persistence of [`PrState`] in `state_dir`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use super::cdb::{be16, be32, be64};
use super::lun::{CmdResult, Ctx, Fail, Lun};
use super::pr::{ItNexus, PrEffects, PrFail, PrState, PrType};
use super::sense::{Asc, Sense};
use super::spc::truncate;
use super::ScsiError;

/// PR OUT service actions.
mod sa {
    pub const REGISTER: u8 = 0;
    pub const RESERVE: u8 = 1;
    pub const RELEASE: u8 = 2;
    pub const CLEAR: u8 = 3;
    pub const PREEMPT: u8 = 4;
    pub const PREEMPT_AND_ABORT: u8 = 5;
    pub const REGISTER_AND_IGNORE: u8 = 6;
    pub const REGISTER_AND_MOVE: u8 = 7;
}

/// The iSCSI protocol identifier in TransportIDs (SPC-4 table 444).
const PROTOCOL_ISCSI: u8 = 0x5;

impl From<PrFail> for Fail {
    fn from(f: PrFail) -> Self {
        match f {
            PrFail::Conflict => Fail::Conflict,
            PrFail::InvalidParam(byte, bit) => Fail::Check(Sense::invalid_param(byte, bit)),
            PrFail::InvalidRelease => Fail::Check(Sense::illegal(Asc::INVALID_RELEASE_OF_PR)),
            PrFail::NoResources => {
                Fail::Check(Sense::illegal(Asc::INSUFFICIENT_REGISTRATION_RESOURCES))
            }
        }
    }
}

/// The file holding a LUN's persistent reservations.
pub(crate) fn state_file(dir: &Path, target: &str, lun: u64) -> PathBuf {
    let safe: String = target
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("pr-{safe}-lun{lun}.json"))
}

/// Load saved reservations (none if the file does not exist).
pub(crate) fn load(path: &Path) -> Result<PrState, ScsiError> {
    let err = |reason: String| ScsiError::PrState {
        path: path.to_path_buf(),
        reason,
    };
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(PrState::default()),
        Err(e) => Err(err(e.to_string())),
    }
}

/// Save (APTPL set) or remove (APTPL clear) the state, atomically.
fn save(path: &Path, pr: &PrState) -> std::io::Result<()> {
    if !pr.aptpl {
        return match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(pr).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Decode an iSCSI TransportID (SPC-4 7.6.4.6) into the initiator port
/// it names; format 0 (name only) is resolved against logged-in nexuses.
fn parse_transport_id(t: &[u8], rel_port: u16, logged_in: &[ItNexus]) -> Option<ItNexus> {
    if t.len() < 4 || t[0] & 0x0f != PROTOCOL_ISCSI {
        return None;
    }
    let len = usize::from(be16(t, 2));
    let text = t.get(4..4 + len)?;
    let text = &text[..text.iter().position(|b| *b == 0).unwrap_or(text.len())];
    let s = std::str::from_utf8(text).ok()?.to_ascii_lowercase();
    match t[0] >> 6 {
        1 => Some(ItNexus {
            initiator_port: s,
            rel_port,
        }),
        0 => logged_in
            .iter()
            .find(|n| n.initiator_name() == s && n.rel_port == rel_port)
            .cloned(),
        _ => None,
    }
}

/// An iSCSI TransportID, format 01b (name + ISID), padded to 4 bytes.
fn transport_id(it: &ItNexus) -> Vec<u8> {
    let mut name: Vec<u8> = it.initiator_port.bytes().collect();
    name.push(0);
    while !name.len().is_multiple_of(4) || name.len() < 20 {
        name.push(0);
    }
    let mut t = vec![0x40 | PROTOCOL_ISCSI, 0];
    t.extend_from_slice(&(name.len() as u16).to_be_bytes());
    t.extend_from_slice(&name);
    t
}

impl Lun {
    /// Establish unit attentions for every logged-in nexus of each port.
    fn apply_effects(&self, fx: &PrEffects) {
        for (it, asc) in &fx.uas {
            self.unit_attention_it(it, *asc);
        }
    }

    /// PERSISTENT RESERVE IN (SPC-4 6.15).
    pub(crate) fn pr_in(&self, c: &Ctx) -> CmdResult {
        let alloc = usize::from(be16(c.cdb, 7));
        let pr = self.pr.read();
        let data = match c.cdb[1] & 0x1f {
            0 => read_keys(&pr),
            1 => read_reservation(&pr),
            2 => self.report_capabilities(&pr),
            3 => read_full_status(&pr),
            _ => return Err(Sense::invalid_cdb(1, Some(4)).into()),
        };
        Ok(truncate(data, alloc))
    }

    fn report_capabilities(&self, pr: &PrState) -> Vec<u8> {
        let mut d = vec![0u8; 8];
        d[1] = 8;
        d[2] = 0x10 | u8::from(self.pr_file.is_some()); // CRH, PTPL_C
        d[3] = 0x80 | u8::from(pr.aptpl); // TMV, PTPL_A
        d[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02; // WR_EX_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
        d[5] = 0x01; // EX_AC_AR
        d
    }

    /// PERSISTENT RESERVE OUT (SPC-4 6.16).
    pub(crate) fn pr_out(&self, c: &Ctx) -> CmdResult {
        let cdb = c.cdb;
        let action = cdb[1] & 0x1f;
        let plen = be32(cdb, 5) as usize;
        if action == sa::REGISTER_AND_MOVE {
            if plen < 24 {
                return Err(Sense::param_list_length().into());
            }
        } else if plen != 24 {
            return Err(Sense::param_list_length().into());
        }
        let p = c.data.get(..plen).ok_or_else(Sense::param_list_length)?;
        let needs_type = matches!(
            action,
            sa::RESERVE | sa::RELEASE | sa::PREEMPT | sa::PREEMPT_AND_ABORT
        );
        let ty = PrType::from_code(cdb[2] & 0x0f);
        if needs_type && (cdb[2] >> 4 != 0) {
            return Err(Sense::invalid_cdb(2, Some(7)).into());
        }
        if needs_type && ty.is_none() {
            return Err(Sense::invalid_cdb(2, Some(3)).into());
        }
        let key = be64(p, 0);
        let sark = be64(p, 8);
        let mut pr = self.pr.write();
        if pr.spc2_holder.as_ref().is_some_and(|h| h != c.it) {
            return Err(Fail::Conflict);
        }
        let before = pr.clone();
        let result = self.pr_out_action(&mut pr, c, action, key, sark, ty, p);
        let fx = match result {
            Ok(fx) => fx,
            Err(e) => {
                *pr = before;
                return Err(e);
            }
        };
        if let Some(path) = &self.pr_file {
            if (pr.aptpl || before.aptpl) && *pr != before {
                if let Err(e) = save(path, &pr) {
                    tracing::error!(path = %path.display(), error = %e, "saving persistent reservations failed");
                    *pr = before;
                    return Err(Sense::new(
                        super::sense::key::HARDWARE_ERROR,
                        Asc::INTERNAL_TARGET_FAILURE,
                    )
                    .into());
                }
            }
        }
        self.reserved.store(pr.any_reservation(), Ordering::Release);
        drop(pr);
        self.apply_effects(&fx);
        Ok(Vec::new())
    }

    #[allow(clippy::too_many_arguments)]
    fn pr_out_action(
        &self,
        pr: &mut PrState,
        c: &Ctx,
        action: u8,
        key: u64,
        sark: u64,
        ty: Option<PrType>,
        p: &[u8],
    ) -> Result<PrEffects, Fail> {
        let ty_or = || ty.ok_or_else(|| Fail::Check(Sense::invalid_cdb(2, Some(3))));
        let flags = p[20];
        if action != sa::REGISTER_AND_MOVE {
            if flags & 0x08 != 0 {
                return Err(Sense::invalid_param(20, Some(3)).into()); // SPEC_I_PT
            }
            if flags & 0x04 != 0 {
                return Err(Sense::invalid_param(20, Some(2)).into()); // ALL_TG_PT
            }
        }
        let aptpl = flags & 0x01 != 0;
        let registering = matches!(
            action,
            sa::REGISTER | sa::REGISTER_AND_IGNORE | sa::REGISTER_AND_MOVE
        );
        let aptpl_bit = if action == sa::REGISTER_AND_MOVE {
            p[17] & 0x01 != 0
        } else {
            aptpl
        };
        if registering && aptpl_bit && self.pr_file.is_none() {
            let byte = if action == sa::REGISTER_AND_MOVE {
                17
            } else {
                20
            };
            return Err(Sense::invalid_param(byte, Some(0)).into());
        }
        let fx = match action {
            sa::REGISTER => pr.register(c.it, key, sark, false, aptpl)?,
            sa::REGISTER_AND_IGNORE => pr.register(c.it, key, sark, true, aptpl)?,
            sa::RESERVE => pr.reserve(c.it, key, ty_or()?)?,
            sa::RELEASE => pr.release(c.it, key, ty_or()?)?,
            sa::CLEAR => pr.clear(c.it, key)?,
            sa::PREEMPT | sa::PREEMPT_AND_ABORT => pr.preempt(c.it, key, sark, ty_or()?)?,
            sa::REGISTER_AND_MOVE => self.register_and_move(pr, c, key, sark, p)?,
            _ => return Err(Sense::invalid_cdb(1, Some(4)).into()),
        };
        Ok(fx)
    }

    fn register_and_move(
        &self,
        pr: &mut PrState,
        c: &Ctx,
        key: u64,
        sark: u64,
        p: &[u8],
    ) -> Result<PrEffects, Fail> {
        let unreg = p[17] & 0x02 != 0;
        let aptpl = p[17] & 0x01 != 0;
        let rel_port = be16(p, 18);
        let tid_len = be32(p, 20) as usize;
        if 24 + tid_len > p.len() {
            return Err(Sense::param_list_length().into());
        }
        let logged_in: Vec<ItNexus> = self
            .nexuses
            .read()
            .values()
            .map(|n| (**n).clone())
            .collect();
        let dest = parse_transport_id(&p[24..24 + tid_len], rel_port, &logged_in)
            .ok_or_else(|| Fail::Check(Sense::invalid_param(24, None)))?;
        Ok(pr.register_and_move(c.it, key, sark, &dest, unreg, aptpl)?)
    }

    /// RESERVE(6) / RESERVE(10) (SPC-2 7.21): conflicts with any
    /// persistent reservation registration (SPC-4 5.9.3, CRH=1).
    pub(crate) fn reserve_spc2(&self, c: &Ctx) -> CmdResult {
        let mut pr = self.pr.write();
        if !pr.registrations.is_empty() {
            return Err(Fail::Conflict);
        }
        match &pr.spc2_holder {
            Some(h) if h != c.it => return Err(Fail::Conflict),
            _ => pr.spc2_holder = Some(c.it.clone()),
        }
        self.reserved.store(true, Ordering::Release);
        Ok(Vec::new())
    }

    /// RELEASE(6) / RELEASE(10) (SPC-2 7.16): only the holder's release
    /// has an effect; others get GOOD.
    pub(crate) fn release_spc2(&self, c: &Ctx) -> CmdResult {
        let mut pr = self.pr.write();
        if !pr.registrations.is_empty() {
            return Err(Fail::Conflict);
        }
        if pr.spc2_holder.as_ref() == Some(c.it) {
            pr.spc2_holder = None;
            self.reserved.store(pr.any_reservation(), Ordering::Release);
        }
        Ok(Vec::new())
    }
}

fn read_keys(pr: &PrState) -> Vec<u8> {
    let mut d = pr.generation.to_be_bytes().to_vec();
    d.extend_from_slice(&((pr.registrations.len() * 8) as u32).to_be_bytes());
    for r in &pr.registrations {
        d.extend_from_slice(&r.key.to_be_bytes());
    }
    d
}

fn read_reservation(pr: &PrState) -> Vec<u8> {
    let mut d = pr.generation.to_be_bytes().to_vec();
    match &pr.reservation {
        None => d.extend_from_slice(&0u32.to_be_bytes()),
        Some(r) => {
            d.extend_from_slice(&16u32.to_be_bytes());
            let key = if r.ty.all_registrants() {
                0
            } else {
                pr.key_of(&r.holder).unwrap_or(0)
            };
            d.extend_from_slice(&key.to_be_bytes());
            d.extend_from_slice(&[0, 0, 0, 0, 0, r.ty.code(), 0, 0]);
        }
    }
    d
}

fn read_full_status(pr: &PrState) -> Vec<u8> {
    let mut body = Vec::new();
    for r in &pr.registrations {
        let mut desc = vec![0u8; 24];
        desc[0..8].copy_from_slice(&r.key.to_be_bytes());
        if let Some(res) = &pr.reservation {
            if pr.is_holder(&r.it) {
                desc[12] = 0x01; // R_HOLDER
                desc[13] = res.ty.code();
            }
        }
        desc[18..20].copy_from_slice(&r.it.rel_port.max(1).to_be_bytes());
        let tid = transport_id(&r.it);
        desc[20..24].copy_from_slice(&(tid.len() as u32).to_be_bytes());
        body.extend_from_slice(&desc);
        body.extend_from_slice(&tid);
    }
    let mut d = pr.generation.to_be_bytes().to_vec();
    d.extend_from_slice(&(body.len() as u32).to_be_bytes());
    d.extend_from_slice(&body);
    d
}
