//! The metadata journal in the GFS2 log format.
//!
//! A commit writes, at the log head: log descriptors (`GFS2_LOG_DESC_METADATA`)
//! each followed by the copies of the blocks it lists, then a log header
//! whose `lh_tail` is the commit's first block, written after a flush so a
//! torn commit never has a valid header. Only after the device is flushed
//! again are the blocks written in place; the next commit starts after
//! that is flushed too, so the newest commit is the only one our own log
//! ever needs replayed (its tail is its own start). A clean unmount writes a
//! header with `GFS2_LOG_HEAD_UNMOUNT`.
//!
//! Before a glock goes to another node, [`Journal::empty_log`] (the log
//! flush of the kernel's `go_sync`, once the AIL is written back) closes
//! the log with a lone `GFS2_LOG_HEAD_FLUSH_NORMAL` header whose `lh_tail`
//! is its own block: an empty log, so that recovery never writes our old
//! copies over blocks the other node has changed since.
//!
//! Recovery ([`crate::replay`]) reads logs written by others too: every
//! commit from the head's tail to the head, revokes honoured, wrapping.
//!
//! The log building and head finding are plain functions over byte blocks;
//! the [`Journal`] driver does the device I/O.

use std::collections::BTreeMap;

use tracing::{debug, info};

use crate::block::{BlockDevice, BlockError};
use crate::ondisk::{log_desc, log_head, put64, LogDescriptor, LogHeader, StatfsChange};
pub use crate::replay::{find_head, replay_plan, ReplayPlan};

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Device failure.
    #[error("journal I/O: {0}")]
    Io(#[from] BlockError),
    /// The journal holds no valid log header.
    #[error("journal {0} has no valid log header")]
    NoHead(u32),
    /// The log between tail and head is malformed.
    #[error("journal {jid} corrupt at block {lbn}: {why}")]
    Corrupt {
        /// Journal id.
        jid: u32,
        /// Journal block.
        lbn: u32,
        /// What is wrong.
        why: String,
    },
    /// A commit does not fit in the journal.
    #[error("commit of {0} blocks does not fit in the journal")]
    TooBig(usize),
}

/// Result alias for the journal.
pub type Result<T> = std::result::Result<T, JournalError>;

/// How much of a journal the head search reads at once.
const SCAN_CHUNK: usize = 1 << 20;

/// Block numbers one METADATA descriptor block can list.
pub fn descriptor_capacity(bsize: usize) -> usize {
    (bsize - LogDescriptor::SIZE) / 8
}

/// Journal blocks a commit of `n` metadata blocks takes (descriptors,
/// copies and the closing header).
pub fn commit_len(bsize: usize, n: usize) -> usize {
    n + n.div_ceil(descriptor_capacity(bsize)) + 1
}

/// Builds the log blocks of one commit: descriptors with copies, then the
/// header. `blocks` maps device block → contents.
pub fn build_commit(
    bsize: usize,
    jid: u32,
    blocks: &BTreeMap<u64, Vec<u8>>,
    header: &LogHeader,
) -> Vec<Vec<u8>> {
    let cap = descriptor_capacity(bsize);
    let list: Vec<(&u64, &Vec<u8>)> = blocks.iter().collect();
    let mut out = Vec::with_capacity(commit_len(bsize, list.len()));
    for chunk in list.chunks(cap) {
        let mut ld = vec![0u8; bsize];
        LogDescriptor {
            ld_type: log_desc::METADATA,
            ld_length: 1 + chunk.len() as u32,
            ld_data1: chunk.len() as u32,
            ld_data2: 0,
        }
        .encode(&mut ld, jid);
        for (i, (blk, _)) in chunk.iter().enumerate() {
            put64(&mut ld, LogDescriptor::SIZE + 8 * i, **blk);
        }
        out.push(ld);
        out.extend(chunk.iter().map(|(_, data)| (*data).clone()));
    }
    let mut lh = vec![0u8; bsize];
    header.encode_block(&mut lh);
    out.push(lh);
    out
}

fn now() -> (u64, u32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs(), d.subsec_nanos())
}

/// What [`Journal::replay`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Blocks written in place.
    pub blocks: usize,
    /// The head of a journal that was dirty (and is replayed but not yet
    /// marked clean); `None` when it was clean.
    pub head: Option<LogHeader>,
}

/// One node's journal on a device.
#[derive(Debug)]
pub struct Journal {
    jid: u32,
    jinode: u64,
    bsize: usize,
    /// Device block of each journal block.
    map: Vec<u64>,
    /// Journal block where the next commit starts.
    next: u32,
    /// Sequence number of the newest header written.
    seq: u64,
    /// True once the journal is known clean (replayed or unmounted).
    clean: bool,
    /// True while the log from the newest header's `lh_tail` to that
    /// header may hold commits that recovery would replay: set by a
    /// commit, cleared by a lone header (whose `lh_tail` is its own
    /// block). Starts true: unknown until the head is found.
    replayable: bool,
    /// `lh_statfs_addr` of our headers: this node's
    /// `per_node/statfs_change{jid}` dinode (0 until set).
    statfs_addr: u64,
    /// This node's statfs deltas not yet folded into the master statfs
    /// file, written to every header's `lh_local_*` (as the kernel's
    /// `gfs2_write_log_header` does) so that recovery can fold them in.
    local: StatfsChange,
}

impl Journal {
    /// A journal whose blocks are `map` (journal block → device block).
    pub fn new(jid: u32, jinode: u64, bsize: usize, map: Vec<u64>) -> Self {
        assert!(!map.is_empty());
        Journal {
            jid,
            jinode,
            bsize,
            map,
            next: 0,
            seq: 0,
            clean: false,
            replayable: true,
            statfs_addr: 0,
            local: StatfsChange::default(),
        }
    }

    /// The journal id.
    pub fn jid(&self) -> u32 {
        self.jid
    }

    /// Sets what the next headers carry in `lh_statfs_addr` and
    /// `lh_local_*`: the owner's `statfs_change{jid}` dinode and its
    /// unfolded statfs deltas (the file's contents as of that commit).
    pub fn set_local_statfs(&mut self, statfs_addr: u64, local: StatfsChange) {
        self.statfs_addr = statfs_addr;
        self.local = local;
    }

    /// Journal blocks.
    pub fn len(&self) -> u32 {
        self.map.len() as u32
    }

    /// Never true: a journal has blocks.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn read(&self, dev: &dyn BlockDevice, lbn: u32) -> Result<Vec<u8>> {
        let mut b = vec![0u8; self.bsize];
        dev.read_at(self.map[lbn as usize] * self.bsize as u64, &mut b)?;
        Ok(b)
    }

    /// Finds the head and, when the journal is dirty, replays it, flushes
    /// and marks it clean. Returns the number of blocks replayed.
    pub fn recover(&mut self, dev: &dyn BlockDevice) -> Result<usize> {
        let r = self.replay(dev)?;
        if r.head.is_some() {
            self.finish_recovery(dev)?;
        }
        Ok(r.blocks)
    }

    /// Marks a replayed journal clean: an UNMOUNT|RECOVERY header after
    /// its head (the kernel's `clean_journal`).
    pub fn finish_recovery(&mut self, dev: &dyn BlockDevice) -> Result<()> {
        self.write_header(dev, log_head::UNMOUNT | log_head::RECOVERY)
    }

    /// Finds the log head (the valid header with the highest sequence)
    /// without writing anything: what a spectator checks, and the start
    /// of [`Journal::replay`]. The journal is dirty unless the head's
    /// flags have `GFS2_LOG_HEAD_UNMOUNT`.
    pub fn find_log_head(&self, dev: &dyn BlockDevice) -> Result<LogHeader> {
        let dev_blocks = dev.size() / self.bsize as u64;
        if let Some(lbn) = self.map.iter().position(|b| *b >= dev_blocks) {
            return Err(JournalError::Corrupt {
                jid: self.jid,
                lbn: lbn as u32,
                why: "block outside the device".into(),
            });
        }
        // In runs of contiguous blocks, up to SCAN_CHUNK bytes at a time
        // (a whole journal is read at every mount and recovery: one read
        // per block costs a round trip each on an iSCSI LUN); only the
        // headers are kept.
        let per_read = (SCAN_CHUNK / self.bsize).max(1);
        let mut head: Option<LogHeader> = None;
        let mut buf = Vec::new();
        let mut lbn = 0u32;
        while lbn < self.len() {
            let first = self.map[lbn as usize];
            let mut n = 1;
            while n < per_read
                && lbn as usize + n < self.map.len()
                && self.map[lbn as usize + n] == first + n as u64
            {
                n += 1;
            }
            buf.resize(n * self.bsize, 0);
            dev.read_at(first * self.bsize as u64, &mut buf)?;
            let blocks = buf
                .chunks(self.bsize)
                .enumerate()
                .map(|(i, b)| (lbn + i as u32, b));
            for (at, b) in blocks {
                if let Some(lh) = find_head(std::iter::once((at, b))) {
                    if head.is_none_or(|h| lh.lh_sequence > h.lh_sequence) {
                        head = Some(lh);
                    }
                }
            }
            lbn += n as u32;
        }
        let head = head.ok_or(JournalError::NoHead(self.jid))?;
        if head.lh_blkno >= self.len() || head.lh_tail >= self.len() {
            return Err(JournalError::Corrupt {
                jid: self.jid,
                lbn: head.lh_blkno,
                why: "log header points outside the journal".into(),
            });
        }
        Ok(head)
    }

    /// Finds the head and, when the journal is dirty, replays the log in
    /// place and flushes, leaving it to [`Journal::finish_recovery`] to
    /// mark the journal clean (after the caller has folded the head's
    /// statfs deltas in, as the kernel's `recover_local_statfs` does).
    pub fn replay(&mut self, dev: &dyn BlockDevice) -> Result<Replayed> {
        let dev_blocks = dev.size() / self.bsize as u64;
        let outside = |b: &u64| *b >= dev_blocks;
        let head = self.find_log_head(dev)?;
        self.seq = head.lh_sequence;
        self.next = (head.lh_blkno + 1) % self.len();
        self.replayable = !Self::nothing_to_replay(&head);
        if head.lh_flags & log_head::UNMOUNT != 0 {
            debug!(jid = self.jid, seq = head.lh_sequence, "journal clean");
            self.clean = true;
            return Ok(Replayed::default());
        }
        let plan = replay_plan(self.jid, self.len(), &head, |lbn| self.read(dev, lbn))?;
        info!(
            jid = self.jid,
            tail = head.lh_tail,
            head = head.lh_blkno,
            commits = plan.headers + 1,
            found = plan.found,
            revoked = plan.revoked,
            revokes = plan.revokes,
            "journal log scanned"
        );
        let plan = plan.blocks;
        if let Some(b) = plan.keys().find(|b| outside(b)) {
            return Err(JournalError::Corrupt {
                jid: self.jid,
                lbn: head.lh_blkno,
                why: format!("log names block {b} outside the device"),
            });
        }
        info!(
            jid = self.jid,
            blocks = plan.len(),
            "replaying dirty journal"
        );
        for (blk, data) in &plan {
            dev.write_at(blk * self.bsize as u64, data)?;
        }
        dev.flush()?;
        Ok(Replayed {
            blocks: plan.len(),
            head: Some(head),
        })
    }

    /// A header of ours. Recovery headers (`GFS2_LOG_HEAD_RECOVERY`) leave
    /// the statfs fields zero, as the kernel does: they describe no one's
    /// local changes.
    fn header(&self, flags: u32, tail: u32, blkno: u32) -> LogHeader {
        let (sec, nsec) = now();
        let (statfs_addr, local) = if flags & log_head::RECOVERY == 0 {
            (self.statfs_addr, self.local)
        } else {
            (0, StatfsChange::default())
        };
        LogHeader {
            jid: self.jid,
            lh_sequence: self.seq + 1,
            lh_flags: flags,
            lh_tail: tail,
            lh_blkno: blkno,
            lh_nsec: nsec,
            lh_sec: sec,
            lh_addr: self.map[blkno as usize],
            lh_jinode: self.jinode,
            lh_statfs_addr: statfs_addr,
            lh_local_total: local.sc_total,
            lh_local_free: local.sc_free,
            lh_local_dinodes: local.sc_dinodes,
            ..Default::default()
        }
    }

    /// True when `head` says the log holds nothing to replay: a clean
    /// (`GFS2_LOG_HEAD_UNMOUNT`) header, or one whose `lh_tail` is its own
    /// block (`lh_blkno`), as the kernel's recovery sees tail == head.
    pub fn nothing_to_replay(head: &LogHeader) -> bool {
        head.lh_flags & log_head::UNMOUNT != 0 || head.lh_tail == head.lh_blkno
    }

    /// True when nothing in our log is replayable any more: no commit
    /// since the last lone header (or since the clean head we found).
    pub fn is_log_empty(&self) -> bool {
        !self.replayable
    }

    /// Empties the log, as the kernel's log flush does once the AIL is
    /// written back (`go_sync` before a demote): a lone
    /// `GFS2_LOG_HEAD_FLUSH_NORMAL` header (not UNMOUNT: the mount stays
    /// up) with `lh_tail` = its own block, then a flush. The blocks of our
    /// commits are already in place (each commit writes them and flushes).
    /// Writes nothing when the log is already empty; returns whether it
    /// wrote.
    pub fn empty_log(&mut self, dev: &dyn BlockDevice) -> Result<bool> {
        if self.is_log_empty() {
            return Ok(false);
        }
        self.write_header(dev, log_head::FLUSH_NORMAL)?;
        debug!(jid = self.jid, seq = self.seq, "log emptied");
        Ok(true)
    }

    /// Writes a lone header (e.g. UNMOUNT) at the head and flushes. Its
    /// `lh_tail` is its own block: the log it closes is empty.
    pub fn write_header(&mut self, dev: &dyn BlockDevice, flags: u32) -> Result<()> {
        let lh = self.header(flags, self.next, self.next);
        let mut b = vec![0u8; self.bsize];
        lh.encode_block(&mut b);
        dev.write_at(self.map[self.next as usize] * self.bsize as u64, &b)?;
        dev.flush()?;
        self.seq += 1;
        self.next = (self.next + 1) % self.len();
        self.clean = flags & log_head::UNMOUNT != 0;
        self.replayable = false;
        Ok(())
    }

    /// The most blocks one commit may carry.
    pub fn max_commit_blocks(&self) -> usize {
        let n = self.map.len();
        // Leave room for descriptors and the header.
        n - n.div_ceil(descriptor_capacity(self.bsize)) - 2
    }

    /// Commits `blocks`: log, flush, write in place, flush.
    pub fn commit(&mut self, dev: &dyn BlockDevice, blocks: &BTreeMap<u64, Vec<u8>>) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        if blocks.len() > self.max_commit_blocks() {
            return Err(JournalError::TooBig(blocks.len()));
        }
        let n = self.len();
        let len = commit_len(self.bsize, blocks.len()) as u32;
        let start = self.next;
        let lh_lbn = (start + len - 1) % n;
        let header = self.header(log_head::FLUSH_NORMAL, start, lh_lbn);
        let log = build_commit(self.bsize, self.jid, blocks, &header);
        // Descriptors and copies first, then (after a flush, like the
        // kernel's PREFLUSH|FUA header write) the header that makes them
        // count: a torn commit is never mistaken for a whole one.
        let (body, lh) = log.split_at(log.len() - 1);
        for (i, b) in body.iter().enumerate() {
            let lbn = (start + i as u32) % n;
            dev.write_at(self.map[lbn as usize] * self.bsize as u64, b)?;
        }
        dev.flush()?;
        self.replayable = true;
        dev.write_at(self.map[lh_lbn as usize] * self.bsize as u64, &lh[0])?;
        dev.flush()?;
        self.seq += 1;
        self.next = (lh_lbn + 1) % n;
        self.clean = false;
        for (blk, data) in blocks {
            dev.write_at(blk * self.bsize as u64, data)?;
        }
        dev.flush()?;
        debug!(
            jid = self.jid,
            blocks = blocks.len(),
            seq = self.seq,
            "committed"
        );
        Ok(())
    }

    /// True when the last header written (or found) is an UNMOUNT one.
    pub fn is_clean(&self) -> bool {
        self.clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemDevice;
    use crate::ondisk::{MetaHeader, MetaType};

    fn block(fill: u8) -> Vec<u8> {
        let mut b = vec![fill; 512];
        MetaHeader::new(MetaType::In).encode(&mut b);
        b
    }

    /// The head search reads runs of contiguous blocks at once: a map
    /// with gaps and runs longer than one read must give the same head.
    #[test]
    fn head_found_across_runs_of_a_fragmented_map() {
        let dev = MemDevice::new(8192 * 512);
        // Runs of 3, 2100 (longer than one 1 MiB read of 512-byte
        // blocks) and 5 blocks, out of order on the device.
        let map: Vec<u64> = (5000..5003).chain(100..2200).chain(4000..4005).collect();
        let j = Journal::new(0, 99, 512, map.clone());
        for (lbn, blk) in map.iter().enumerate() {
            let lh = LogHeader {
                lh_sequence: 10 + (lbn as u64 * 7919) % 2108,
                lh_flags: log_head::UNMOUNT,
                lh_blkno: lbn as u32,
                ..Default::default()
            };
            let mut b = vec![0u8; 512];
            lh.encode_block(&mut b);
            dev.write_at(blk * 512, &b).unwrap();
        }
        let want = (0..map.len())
            .max_by_key(|lbn| (*lbn as u64 * 7919) % 2108)
            .unwrap();
        let head = j.find_log_head(&dev).unwrap();
        assert_eq!(head.lh_blkno, want as u32);
    }

    fn fresh_journal(dev: &MemDevice, n: u32) -> Journal {
        let map: Vec<u64> = (100..100 + u64::from(n)).collect();
        let mut j = Journal::new(0, 99, 512, map);
        // Pre-fill like mkfs: UNMOUNT headers with rising sequences.
        for lbn in 0..n {
            let lh = LogHeader {
                lh_sequence: 1000 + u64::from(lbn),
                lh_flags: log_head::UNMOUNT,
                lh_blkno: lbn,
                ..Default::default()
            };
            let mut b = vec![0u8; 512];
            lh.encode_block(&mut b);
            dev.write_at((100 + u64::from(lbn)) * 512, &b).unwrap();
        }
        assert_eq!(j.recover(dev).unwrap(), 0);
        j
    }

    #[test]
    fn commit_then_replay_restores_blocks() {
        let dev = MemDevice::new(512 * 200);
        let mut j = fresh_journal(&dev, 40);
        assert_eq!(j.next, 0, "head is the last pre-filled block");
        let mut blocks = BTreeMap::new();
        blocks.insert(10u64, block(1));
        blocks.insert(11u64, block(2));
        j.commit(&dev, &blocks).unwrap();
        // Lose the in-place writes: a crash right after the log flush.
        dev.write_at(10 * 512, &[0u8; 1024]).unwrap();
        let mut j2 = Journal::new(0, 99, 512, (100..140).collect());
        assert_eq!(j2.recover(&dev).unwrap(), 2);
        let mut b = vec![0u8; 512];
        dev.read_at(11 * 512, &mut b).unwrap();
        assert_eq!(b, block(2));
        assert!(j2.is_clean());
        // A second recovery finds the RECOVERY|UNMOUNT header: nothing to do.
        let mut j3 = Journal::new(0, 99, 512, (100..140).collect());
        assert_eq!(j3.recover(&dev).unwrap(), 0);
    }

    #[test]
    fn commits_wrap_around_the_journal() {
        let dev = MemDevice::new(512 * 200);
        let mut j = fresh_journal(&dev, 12);
        for round in 0..10u8 {
            let mut blocks = BTreeMap::new();
            for k in 0..3u64 {
                blocks.insert(20 + k, block(round));
            }
            j.commit(&dev, &blocks).unwrap();
        }
        dev.write_at(20 * 512, &[0u8; 512 * 3]).unwrap();
        let mut j2 = Journal::new(0, 99, 512, (100..112).collect());
        assert_eq!(j2.recover(&dev).unwrap(), 3);
        let mut b = vec![0u8; 512];
        dev.read_at(22 * 512, &mut b).unwrap();
        assert_eq!(b, block(9));
    }

    #[test]
    fn emptied_log_replays_nothing() {
        let dev = MemDevice::new(512 * 200);
        let mut j = fresh_journal(&dev, 40);
        assert!(j.is_log_empty(), "a clean head is an empty log");
        assert!(!j.empty_log(&dev).unwrap(), "nothing to empty");
        let mut blocks = BTreeMap::new();
        blocks.insert(10u64, block(1));
        j.commit(&dev, &blocks).unwrap();
        assert!(!j.is_log_empty());
        assert!(j.empty_log(&dev).unwrap());
        assert!(j.is_log_empty());
        assert!(!j.empty_log(&dev).unwrap(), "second time: no write");
        // Another node changes block 10, then we crash: nothing replays.
        dev.write_at(10 * 512, &block(7)).unwrap();
        let mut j2 = Journal::new(0, 99, 512, (100..140).collect());
        let head = j2.find_log_head(&dev).unwrap();
        assert_eq!(head.lh_tail, head.lh_blkno);
        assert_eq!(head.lh_flags, log_head::FLUSH_NORMAL);
        assert_eq!(j2.recover(&dev).unwrap(), 0);
        let mut b = vec![0u8; 512];
        dev.read_at(10 * 512, &mut b).unwrap();
        assert_eq!(b, block(7));
    }

    #[test]
    fn oversized_commit_is_refused() {
        let dev = MemDevice::new(512 * 200);
        let mut j = fresh_journal(&dev, 8);
        let blocks: BTreeMap<u64, Vec<u8>> = (0..8u64).map(|k| (k, block(0))).collect();
        assert!(matches!(
            j.commit(&dev, &blocks),
            Err(JournalError::TooBig(8))
        ));
    }
}
