//! PERSISTENT RESERVE IN/OUT (SPC-4 6.15, 6.16) over anything that runs a
//! CDB: a [`super::Lun`] of our own session, or a session holder's LUN
//! reached through its socket ([`super::prsock::HolderLun`]), so that
//! fence_scsi speaks the same commands either way.

use tracing::debug;

use super::cdb::{self, pr_in, pr_out, sense_key, status, PrKeys, PrReservation};
use super::{InitiatorError, Result};

/// The most READ KEYS data asked for (8 bytes a key: about a thousand).
pub const READ_KEYS_LEN: u32 = 8192;

/// A LUN that persistent reservations can be made on.
pub trait PersistentReserve {
    /// Runs a CDB, retrying UNIT ATTENTION and BUSY; GOOD gives the data.
    fn execute_checked(&self, cdb: &[u8], data_out: &[u8], in_len: u32) -> Result<Vec<u8>>;

    /// Done with the LUN (a session of our own logs out).
    fn close(self) -> Result<()>
    where
        Self: Sized;

    /// PERSISTENT RESERVE OUT with service action `sa`.
    fn pr_out(&self, sa: u8, pr_type: u8, key: u64, sa_key: u64) -> Result<()> {
        let (c, p) = cdb::persistent_reserve_out(sa, pr_type, key, sa_key, false);
        self.execute_checked(&c, &p, 0).map(|_| ())
    }

    /// Registers `key` (REGISTER AND IGNORE EXISTING KEY), as fence_scsi does.
    fn pr_register(&self, key: u64) -> Result<()> {
        self.pr_out(pr_out::REGISTER_AND_IGNORE, 0, 0, key)
    }

    /// Removes our registration (`key` is our current key).
    fn pr_unregister(&self, key: u64) -> Result<()> {
        self.pr_out(pr_out::REGISTER, 0, key, 0)
    }

    /// Takes a reservation of `pr_type` (see [`cdb::pr_type`]) with our `key`.
    fn pr_reserve(&self, key: u64, pr_type: u8) -> Result<()> {
        self.pr_out(pr_out::RESERVE, pr_type, key, 0)
    }

    /// Releases our reservation.
    fn pr_release(&self, key: u64, pr_type: u8) -> Result<()> {
        self.pr_out(pr_out::RELEASE, pr_type, key, 0)
    }

    /// Clears every registration and the reservation.
    fn pr_clear(&self, key: u64) -> Result<()> {
        self.pr_out(pr_out::CLEAR, 0, key, 0)
    }

    /// Removes `victim_key`'s registrations (and takes the reservation).
    fn pr_preempt(&self, key: u64, victim_key: u64, pr_type: u8) -> Result<()> {
        self.pr_out(pr_out::PREEMPT, pr_type, key, victim_key)
    }

    /// As [`PersistentReserve::pr_preempt`], also aborting the victims'
    /// commands.
    fn pr_preempt_abort(&self, key: u64, victim_key: u64, pr_type: u8) -> Result<()> {
        self.pr_out(pr_out::PREEMPT_AND_ABORT, pr_type, key, victim_key)
    }

    /// Fences `victim_key`: PREEMPT AND ABORT, or PREEMPT where the target
    /// does not implement it (Debian tgt 1.0.85 answers ILLEGAL REQUEST).
    /// Returns true when the abort variant was used.
    fn pr_fence(&self, key: u64, victim_key: u64, pr_type: u8) -> Result<bool> {
        match self.pr_preempt_abort(key, victim_key, pr_type) {
            Ok(()) => Ok(true),
            Err(InitiatorError::Scsi {
                status: status::CHECK_CONDITION,
                sense,
            }) if sense.key == sense_key::ILLEGAL_REQUEST => {
                debug!("PREEMPT AND ABORT not supported, using PREEMPT");
                self.pr_preempt(key, victim_key, pr_type).map(|()| false)
            }
            Err(e) => Err(e),
        }
    }

    /// The registered keys (READ KEYS).
    fn pr_read_keys(&self) -> Result<PrKeys> {
        let data = self.execute_checked(
            &cdb::persistent_reserve_in(pr_in::READ_KEYS, READ_KEYS_LEN as u16),
            &[],
            READ_KEYS_LEN,
        )?;
        cdb::parse_read_keys(&data)
            .ok_or_else(|| InitiatorError::Protocol("short READ KEYS data".into()))
    }

    /// The current reservation (READ RESERVATION).
    fn pr_read_reservation(&self) -> Result<PrReservation> {
        let data = self.execute_checked(
            &cdb::persistent_reserve_in(pr_in::READ_RESERVATION, 64),
            &[],
            64,
        )?;
        cdb::parse_read_reservation(&data)
            .ok_or_else(|| InitiatorError::Protocol("short READ RESERVATION data".into()))
    }
}
