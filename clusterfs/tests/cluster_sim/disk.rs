//! The shared disk of the simulation, its per-node journals, and the model
//! of what was acknowledged.
//!
//! Blocks hold one number each. A node writes a block by appending it to
//! its journal (that is the acknowledgement), keeps it dirty in its cache,
//! and writes it in place and revokes the journal entry when it gives the
//! block's glock up (go_sync). A survivor replays a dead node's journal:
//! the live entries, in order, written in place, then the journal is
//! empty. Writes of a fenced incarnation are refused, as fence_scsi's
//! reservation (or the power switch) makes them; reads are not.

use std::collections::{BTreeMap, BTreeSet};

/// A node incarnation: (node id, incarnation number).
pub type Member = (u32, u64);

/// One journal record.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub block: u64,
    pub value: u64,
    /// Not revoked yet: a replay writes it.
    pub live: bool,
}

/// A write the disk refused: the writer was fenced.
#[derive(Debug)]
pub struct Refused;

#[derive(Debug, Default)]
pub struct Disk {
    blocks: BTreeMap<u64, u64>,
    journals: Vec<Vec<Entry>>,
    /// Incarnations whose writes are refused (fenced).
    refused: BTreeSet<Member>,
    /// Incarnations running now (kept by the world).
    pub alive: BTreeSet<Member>,
    /// Every incarnation that mounted with each journal.
    owners: Vec<BTreeSet<Member>>,
    /// The model: the last acknowledged value of each block.
    acked: BTreeMap<u64, u64>,
    last_value: u64,
    pub acked_writes: u64,
    pub replayed_entries: u64,
}

impl Disk {
    pub fn new(journals: u32) -> Disk {
        Disk {
            journals: vec![Vec::new(); journals as usize],
            owners: vec![BTreeSet::new(); journals as usize],
            ..Disk::default()
        }
    }

    pub fn journals(&self) -> u32 {
        self.journals.len() as u32
    }

    pub fn refuse(&mut self, who: Member) {
        self.refused.insert(who);
    }

    /// True once `who` is fenced off the disk.
    pub fn refuses(&self, who: Member) -> bool {
        self.refused.contains(&who)
    }

    /// `who` may still change the disk: it runs and is not fenced.
    pub fn may_write(&self, who: Member) -> bool {
        self.alive.contains(&who) && !self.refused.contains(&who)
    }

    fn admit(&self, who: Member) -> Result<(), Refused> {
        assert!(self.alive.contains(&who), "{who:?} writes after its end");
        if self.refused.contains(&who) {
            return Err(Refused);
        }
        Ok(())
    }

    pub fn read(&self, block: u64) -> u64 {
        self.blocks.get(&block).copied().unwrap_or(0)
    }

    pub fn acked(&self, block: u64) -> u64 {
        self.acked.get(&block).copied().unwrap_or(0)
    }

    /// `who` mounts with journal `jid`.
    pub fn take_journal(&mut self, who: Member, jid: u32) {
        self.owners[jid as usize].insert(who);
    }

    /// Appends a write of `block` to journal `jid`: acknowledged once this
    /// returns Ok. Returns the value written.
    pub fn journaled_write(&mut self, who: Member, jid: u32, block: u64) -> Result<u64, Refused> {
        self.admit(who)?;
        self.last_value += 1;
        let value = self.last_value;
        self.journals[jid as usize].push(Entry {
            block,
            value,
            live: true,
        });
        self.acked.insert(block, value);
        self.acked_writes += 1;
        Ok(value)
    }

    pub fn write_in_place(&mut self, who: Member, block: u64, value: u64) -> Result<(), Refused> {
        self.admit(who)?;
        self.blocks.insert(block, value);
        Ok(())
    }

    /// Revokes the live entries of `blocks` in journal `jid` (they were
    /// written in place).
    pub fn revoke(&mut self, who: Member, jid: u32, blocks: &[u64]) -> Result<(), Refused> {
        self.admit(who)?;
        for e in &mut self.journals[jid as usize] {
            if blocks.contains(&e.block) {
                e.live = false;
            }
        }
        Ok(())
    }

    pub fn dirty(&self, jid: u32) -> bool {
        self.journals[jid as usize].iter().any(|e| e.live)
    }

    /// `who` replays journal `jid` (if dirty) and empties it. Checked, even
    /// for a clean journal: no other incarnation that mounted with this
    /// journal can still write.
    pub fn replay(&mut self, who: Member, jid: u32) -> Result<usize, Refused> {
        self.admit(who)?;
        for owner in &self.owners[jid as usize] {
            assert!(
                *owner == who || !self.may_write(*owner),
                "journal {jid} replayed by {who:?} while its owner {owner:?} can still write"
            );
        }
        if !self.dirty(jid) {
            return Ok(0);
        }
        let entries = std::mem::take(&mut self.journals[jid as usize]);
        let mut n = 0;
        for e in entries.into_iter().filter(|e| e.live) {
            self.blocks.insert(e.block, e.value);
            n += 1;
        }
        self.replayed_entries += n as u64;
        Ok(n)
    }

    /// The last live entry of each block in journal `jid`.
    fn live_heads(&self, jid: usize) -> BTreeMap<u64, u64> {
        let mut heads = BTreeMap::new();
        for e in self.journals[jid].iter().filter(|e| e.live) {
            heads.insert(e.block, e.value);
        }
        heads
    }

    /// After every step: replaying any journal now writes each block's
    /// last acknowledged value (never an older one), and every acknowledged
    /// value is in place or in a journal.
    pub fn check(&self) {
        let mut logged: BTreeMap<u64, u64> = BTreeMap::new();
        for jid in 0..self.journals.len() {
            for (block, value) in self.live_heads(jid) {
                let acked = self.acked(block);
                assert_eq!(
                    value, acked,
                    "journal {jid} would replay block {block} as {value}, acknowledged {acked}"
                );
                logged.insert(block, value);
            }
        }
        for (&block, &acked) in &self.acked {
            assert!(
                self.read(block) == acked || logged.get(&block) == Some(&acked),
                "block {block}: acknowledged {acked} is neither in place ({}) nor in a journal",
                self.read(block)
            );
        }
    }

    /// At the end: the disk as a full-cluster power loss followed by a
    /// replay of every journal would leave it holds every acknowledged
    /// value.
    pub fn check_after_power_loss(&self) {
        let mut blocks = self.blocks.clone();
        for jid in 0..self.journals.len() {
            blocks.extend(self.live_heads(jid));
        }
        for (&block, &acked) in &self.acked {
            let got = blocks.get(&block).copied().unwrap_or(0);
            assert_eq!(got, acked, "block {block} lost its acknowledged write");
        }
    }
}
