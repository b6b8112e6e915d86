//! Persistent reservations (SPC-4 5.9) as a pure state machine: the
//! registrations, the reservation, the SPC-2 RESERVE(6)/(10) reservation,
//! and the access rules of SPC-4 table 66 / SBC-3 table 13.

use serde::{Deserialize, Serialize};

use super::opcodes::Access;

/// An I_T nexus as persistent reservations see it: the initiator port
/// name ("iqn...,i,0x<isid>", lower-cased) and the relative target port.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ItNexus {
    pub initiator_port: String,
    pub rel_port: u16,
}

impl ItNexus {
    /// Build from what the transport passes to `nexus_login`.
    pub fn new(initiator_port: &str, rel_port: u16) -> Self {
        ItNexus {
            initiator_port: initiator_port.to_ascii_lowercase(),
            rel_port,
        }
    }

    /// The initiator name without the ",i,0x<isid>" suffix.
    pub fn initiator_name(&self) -> &str {
        match self.initiator_port.find(",i,") {
            Some(i) => &self.initiator_port[..i],
            None => &self.initiator_port,
        }
    }
}

/// The six persistent reservation types (SPC-4 table 173).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PrType {
    WriteExclusive = 1,
    ExclusiveAccess = 3,
    WriteExclusiveRegistrantsOnly = 5,
    ExclusiveAccessRegistrantsOnly = 6,
    WriteExclusiveAllRegistrants = 7,
    ExclusiveAccessAllRegistrants = 8,
}

impl PrType {
    /// Decode the TYPE field.
    pub fn from_code(code: u8) -> Option<PrType> {
        Some(match code {
            1 => PrType::WriteExclusive,
            3 => PrType::ExclusiveAccess,
            5 => PrType::WriteExclusiveRegistrantsOnly,
            6 => PrType::ExclusiveAccessRegistrantsOnly,
            7 => PrType::WriteExclusiveAllRegistrants,
            8 => PrType::ExclusiveAccessAllRegistrants,
            _ => return None,
        })
    }

    /// The TYPE field value.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// All registrants are reservation holders.
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            PrType::WriteExclusiveAllRegistrants | PrType::ExclusiveAccessAllRegistrants
        )
    }

    /// Registrants (not only the holder) get full access.
    pub fn registrants_access(self) -> bool {
        !matches!(self, PrType::WriteExclusive | PrType::ExclusiveAccess)
    }

    /// Non-registrants may not even read.
    pub fn exclusive_access(self) -> bool {
        matches!(
            self,
            PrType::ExclusiveAccess
                | PrType::ExclusiveAccessRegistrantsOnly
                | PrType::ExclusiveAccessAllRegistrants
        )
    }
}

/// One registration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub it: ItNexus,
    pub key: u64,
}

/// The persistent reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    /// The holder (any registrant holds an all-registrants reservation;
    /// this is then the nexus that created it).
    pub holder: ItNexus,
    pub ty: PrType,
}

/// Everything persistent reservations keep for one LUN.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrState {
    pub generation: u32,
    pub aptpl: bool,
    pub registrations: Vec<Registration>,
    pub reservation: Option<Reservation>,
    /// SPC-2 RESERVE(6)/(10) holder; never persisted.
    #[serde(skip)]
    pub spc2_holder: Option<ItNexus>,
}

impl PrState {
    /// The registered key of `it`.
    pub fn key_of(&self, it: &ItNexus) -> Option<u64> {
        self.registrations
            .iter()
            .find(|r| &r.it == it)
            .map(|r| r.key)
    }

    /// Whether `it` holds the persistent reservation.
    pub fn is_holder(&self, it: &ItNexus) -> bool {
        match &self.reservation {
            None => false,
            Some(r) if r.ty.all_registrants() => self.key_of(it).is_some(),
            Some(r) => &r.holder == it,
        }
    }

    /// Whether any reservation (persistent or SPC-2) exists: the fast path
    /// skips the access check when none does.
    pub fn any_reservation(&self) -> bool {
        self.reservation.is_some() || self.spc2_holder.is_some()
    }

    /// Whether a command of class `access` from `it` may run (`true`) or
    /// gets RESERVATION CONFLICT (`false`).
    pub fn allows(&self, it: &ItNexus, access: Access, opcode: u8) -> bool {
        if let Some(h) = &self.spc2_holder {
            if h != it {
                return spc2_allows(opcode);
            }
        }
        let Some(res) = &self.reservation else {
            return true;
        };
        if self.is_holder(it) {
            return true;
        }
        let registered = self.key_of(it).is_some();
        match access {
            Access::Always | Access::PrOut => true,
            _ if registered && res.ty.registrants_access() => true,
            Access::Read => !res.ty.exclusive_access(),
            Access::Write | Access::ByCdb => false,
        }
    }
}

/// Commands allowed while another I_T nexus holds an SPC-2 reservation
/// (SPC-2 5.5.1): INQUIRY, REQUEST SENSE, REPORT LUNS, RELEASE, PR IN.
fn spc2_allows(opcode: u8) -> bool {
    use super::cdb::op;
    matches!(
        opcode,
        op::INQUIRY
            | op::REQUEST_SENSE
            | op::REPORT_LUNS
            | op::RELEASE_6
            | op::RELEASE_10
            | op::PR_IN
    )
}

/// What a PERSISTENT RESERVE OUT service action failed with.
#[derive(Debug, PartialEq, Eq)]
pub enum PrFail {
    /// RESERVATION CONFLICT status.
    Conflict,
    /// INVALID FIELD IN PARAMETER LIST at this byte (and bit).
    InvalidParam(u16, Option<u8>),
    /// INVALID RELEASE OF PERSISTENT RESERVATION.
    InvalidRelease,
    /// INSUFFICIENT REGISTRATION RESOURCES.
    NoResources,
}

/// Bound on registrations per LUN.
pub const MAX_REGISTRATIONS: usize = 1024;

/// Side effects of a successful service action: unit attentions to
/// establish, per initiator port.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PrEffects {
    pub uas: Vec<(ItNexus, super::sense::Asc)>,
}

use super::sense::Asc;

impl PrState {
    fn require_key(&self, it: &ItNexus, key: u64) -> Result<(), PrFail> {
        match self.key_of(it) {
            Some(k) if k == key => Ok(()),
            _ => Err(PrFail::Conflict),
        }
    }

    /// Registered nexuses other than `it`.
    fn others(&self, it: &ItNexus) -> Vec<ItNexus> {
        self.registrations
            .iter()
            .filter(|r| &r.it != it)
            .map(|r| r.it.clone())
            .collect()
    }

    /// REGISTER / REGISTER AND IGNORE EXISTING KEY (SPC-4 5.9.7).
    pub fn register(
        &mut self,
        it: &ItNexus,
        key: u64,
        sark: u64,
        ignore: bool,
        aptpl: bool,
    ) -> Result<PrEffects, PrFail> {
        let mut fx = PrEffects::default();
        match self.key_of(it) {
            None => {
                if !ignore && key != 0 {
                    return Err(PrFail::Conflict);
                }
                if sark != 0 {
                    if self.registrations.len() >= MAX_REGISTRATIONS {
                        return Err(PrFail::NoResources);
                    }
                    self.registrations.push(Registration {
                        it: it.clone(),
                        key: sark,
                    });
                }
            }
            Some(k) => {
                if !ignore && k != key {
                    return Err(PrFail::Conflict);
                }
                if sark == 0 {
                    fx = self.unregister(it);
                } else if let Some(r) = self.registrations.iter_mut().find(|r| &r.it == it) {
                    r.key = sark;
                }
            }
        }
        self.aptpl = aptpl;
        self.generation = self.generation.wrapping_add(1);
        Ok(fx)
    }

    /// Remove the registration of `it`, releasing a reservation it held
    /// (SPC-4 5.9.11.3).
    fn unregister(&mut self, it: &ItNexus) -> PrEffects {
        let mut fx = PrEffects::default();
        let was_holder = self.is_holder(it);
        self.registrations.retain(|r| &r.it != it);
        let Some(res) = self.reservation.clone() else {
            return fx;
        };
        if res.ty.all_registrants() {
            if self.registrations.is_empty() {
                self.reservation = None;
            } else if res.holder == *it {
                // Keep the reservation; name a remaining registrant.
                self.reservation = Some(Reservation {
                    holder: self.registrations[0].it.clone(),
                    ty: res.ty,
                });
            }
        } else if was_holder {
            self.reservation = None;
            if matches!(
                res.ty,
                PrType::WriteExclusiveRegistrantsOnly | PrType::ExclusiveAccessRegistrantsOnly
            ) {
                for o in self.others(it) {
                    fx.uas.push((o, Asc::RESERVATIONS_RELEASED));
                }
            }
        }
        fx
    }

    /// RESERVE (SPC-4 5.9.9).
    pub fn reserve(&mut self, it: &ItNexus, key: u64, ty: PrType) -> Result<PrEffects, PrFail> {
        self.require_key(it, key)?;
        match &self.reservation {
            None => {
                self.reservation = Some(Reservation {
                    holder: it.clone(),
                    ty,
                });
                Ok(PrEffects::default())
            }
            Some(r) if self.is_holder(it) && r.ty == ty => Ok(PrEffects::default()),
            Some(_) => Err(PrFail::Conflict),
        }
    }

    /// RELEASE (SPC-4 5.9.11.2).
    pub fn release(&mut self, it: &ItNexus, key: u64, ty: PrType) -> Result<PrEffects, PrFail> {
        self.require_key(it, key)?;
        let Some(res) = self.reservation.clone() else {
            return Ok(PrEffects::default());
        };
        if !self.is_holder(it) {
            return Ok(PrEffects::default());
        }
        if res.ty != ty {
            return Err(PrFail::InvalidRelease);
        }
        self.reservation = None;
        let mut fx = PrEffects::default();
        if res.ty.registrants_access() {
            for o in self.others(it) {
                fx.uas.push((o, Asc::RESERVATIONS_RELEASED));
            }
        }
        Ok(fx)
    }

    /// CLEAR (SPC-4 5.9.11.6).
    pub fn clear(&mut self, it: &ItNexus, key: u64) -> Result<PrEffects, PrFail> {
        self.require_key(it, key)?;
        let mut fx = PrEffects::default();
        for o in self.others(it) {
            fx.uas.push((o, Asc::RESERVATIONS_PREEMPTED));
        }
        self.registrations.clear();
        self.reservation = None;
        self.generation = self.generation.wrapping_add(1);
        Ok(fx)
    }

    /// Remove the registrations with key `sark` (except `it`'s own);
    /// conflict when there is none.
    fn remove_key(&mut self, it: &ItNexus, sark: u64, fx: &mut PrEffects) -> Result<(), PrFail> {
        let victims: Vec<ItNexus> = self
            .registrations
            .iter()
            .filter(|r| r.key == sark && &r.it != it)
            .map(|r| r.it.clone())
            .collect();
        if victims.is_empty() && self.key_of(it) != Some(sark) {
            return Err(PrFail::Conflict);
        }
        self.registrations.retain(|r| !victims.contains(&r.it));
        for v in victims {
            fx.uas.push((v, Asc::REGISTRATIONS_PREEMPTED));
        }
        Ok(())
    }

    /// PREEMPT / PREEMPT AND ABORT (SPC-4 5.9.11.4). Tasks run to
    /// completion inside `execute`, so the abort has nothing queued to
    /// drop; the preempted nexuses lose access at once.
    pub fn preempt(
        &mut self,
        it: &ItNexus,
        key: u64,
        sark: u64,
        ty: PrType,
    ) -> Result<PrEffects, PrFail> {
        self.require_key(it, key)?;
        let mut fx = PrEffects::default();
        match self.reservation.clone() {
            None => {
                if sark == 0 {
                    return Err(PrFail::InvalidParam(8, None));
                }
                self.remove_key(it, sark, &mut fx)?;
            }
            Some(r) if r.ty.all_registrants() => {
                if sark == 0 {
                    for o in self.others(it) {
                        fx.uas.push((o, Asc::REGISTRATIONS_PREEMPTED));
                    }
                    self.registrations.retain(|x| &x.it == it);
                    self.reservation = Some(Reservation {
                        holder: it.clone(),
                        ty,
                    });
                } else {
                    self.remove_key(it, sark, &mut fx)?;
                }
            }
            Some(r) => {
                let holder_key = self.key_of(&r.holder);
                if holder_key == Some(sark) {
                    self.remove_key(it, sark, &mut fx)?;
                    self.reservation = Some(Reservation {
                        holder: it.clone(),
                        ty,
                    });
                    if r.ty != ty {
                        for o in self.others(it) {
                            fx.uas.push((o, Asc::RESERVATIONS_RELEASED));
                        }
                    }
                } else if sark == 0 {
                    return Err(PrFail::InvalidParam(8, None));
                } else {
                    self.remove_key(it, sark, &mut fx)?;
                }
            }
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(fx)
    }

    /// REGISTER AND MOVE (SPC-4 5.9.8): register `dest` with `sark`, move
    /// the reservation to it, and unregister `it` when `unreg`.
    pub fn register_and_move(
        &mut self,
        it: &ItNexus,
        key: u64,
        sark: u64,
        dest: &ItNexus,
        unreg: bool,
        aptpl: bool,
    ) -> Result<PrEffects, PrFail> {
        self.require_key(it, key)?;
        let Some(res) = self.reservation.clone() else {
            return Err(PrFail::Conflict);
        };
        if res.ty.all_registrants() || res.holder != *it {
            return Err(PrFail::Conflict);
        }
        if sark == 0 {
            return Err(PrFail::InvalidParam(8, None));
        }
        if dest == it {
            return Err(PrFail::InvalidParam(24, None));
        }
        let full = self.registrations.len() >= MAX_REGISTRATIONS;
        match self.registrations.iter_mut().find(|r| &r.it == dest) {
            Some(r) => r.key = sark,
            None if full => return Err(PrFail::NoResources),
            None => self.registrations.push(Registration {
                it: dest.clone(),
                key: sark,
            }),
        }
        self.reservation = Some(Reservation {
            holder: dest.clone(),
            ty: res.ty,
        });
        if unreg {
            self.registrations.retain(|r| &r.it != it);
        }
        self.aptpl = aptpl;
        self.generation = self.generation.wrapping_add(1);
        Ok(PrEffects::default())
    }
}
