//! Journal recovery as GFS2 does it (`fs/gfs2/recovery.c`, `lops.c`;
//! gfs2-utils `fsck/fs_recovery.c`): the active log runs from the head
//! header's `lh_tail` to its `lh_blkno`, possibly wrapping past the end of
//! the journal, and may hold many commits, each closed by a log header.
//!
//! Two passes over the descriptors between tail and head:
//! 0. every `GFS2_LOG_DESC_REVOKE` descriptor (its block numbers continue
//!    in `GFS2_METATYPE_LB` blocks after a 24-byte header) records, per
//!    block number, the journal position of its *last* revoke;
//! 1. every copy in a `METADATA` (or `JDATA`, unescaping the magic)
//!    descriptor is replayed unless a revoke of that block lies after it
//!    in the log (strictly between the tail and the revoke, circularly);
//!    later copies of a block win.
//!
//! Everything here is a plain function over journal blocks read through a
//! closure; [`crate::journal::Journal`] does the device I/O.

use std::collections::{BTreeMap, HashMap};

use crate::journal::{JournalError, Result};
use crate::ondisk::{
    be64, log_desc, put32, put64, LogDescriptor, LogHeader, MetaHeader, MetaType, GFS2_MAGIC,
};

/// What recovery will write, and what it saw on the way.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayPlan {
    /// Device block → contents to write in place.
    pub blocks: BTreeMap<u64, Vec<u8>>,
    /// Metadata and journaled-data copies found between tail and head.
    pub found: usize,
    /// Copies skipped because a later revoke covers them.
    pub revoked: usize,
    /// Distinct blocks named by revoke descriptors.
    pub revokes: usize,
    /// Commits (log headers) between tail and head, the head excluded.
    pub headers: usize,
}

/// Revoke entries one REVOKE descriptor block holds.
pub fn revoke_capacity_first(bsize: usize) -> usize {
    (bsize - LogDescriptor::SIZE) / 8
}

/// Revoke entries one continuation (LB) block holds.
pub fn revoke_capacity_more(bsize: usize) -> usize {
    (bsize - MetaHeader::SIZE) / 8
}

/// Builds the log blocks of one REVOKE descriptor listing `blocks`: the
/// descriptor, then as many `GFS2_METATYPE_LB` blocks as needed. (Our own
/// commits never need revokes, since each is written in place before the
/// next starts; this is the format's encoder, used by tests that build
/// journals the way the kernel leaves them.)
pub fn build_revoke(bsize: usize, jid: u32, blocks: &[u64]) -> Vec<Vec<u8>> {
    let first = revoke_capacity_first(bsize);
    let more = revoke_capacity_more(bsize);
    let rest = blocks.len().saturating_sub(first);
    let nblocks = 1 + rest.div_ceil(more);
    let mut out = Vec::with_capacity(nblocks);
    let mut ld = vec![0u8; bsize];
    LogDescriptor {
        ld_type: log_desc::REVOKE,
        ld_length: nblocks as u32,
        ld_data1: blocks.len() as u32,
        ld_data2: 0,
    }
    .encode(&mut ld, jid);
    let (head, tail) = blocks.split_at(blocks.len().min(first));
    for (i, b) in head.iter().enumerate() {
        put64(&mut ld, LogDescriptor::SIZE + 8 * i, *b);
    }
    out.push(ld);
    for chunk in tail.chunks(more) {
        let mut lb = vec![0u8; bsize];
        let mut mh = MetaHeader::new(MetaType::Lb);
        mh.mh_jid = jid;
        mh.encode(&mut lb);
        for (i, b) in chunk.iter().enumerate() {
            put64(&mut lb, MetaHeader::SIZE + 8 * i, *b);
        }
        out.push(lb);
    }
    out
}

/// The newest valid log header among `(lbn, block)` pairs: the highest
/// sequence among headers whose hash checks and whose `lh_blkno` is the
/// block they sit in (gfs2-utils' `get_log_header` test).
pub fn find_head<'a>(blocks: impl Iterator<Item = (u32, &'a [u8])>) -> Option<LogHeader> {
    blocks
        .filter_map(|(lbn, b)| LogHeader::decode(b).ok().filter(|lh| lh.lh_blkno == lbn))
        .max_by_key(|lh| lh.lh_sequence)
}

/// The walk over the active log: journal size, tail, head, and the reader.
struct Walk<'r> {
    jid: u32,
    nblocks: u32,
    tail: u32,
    head: u32,
    read: &'r mut dyn FnMut(u32) -> Result<Vec<u8>>,
}

/// One descriptor found by the walk.
struct Desc {
    lbn: u32,
    ld: LogDescriptor,
    block: Vec<u8>,
}

impl Walk<'_> {
    fn corrupt(&self, lbn: u32, why: impl Into<String>) -> JournalError {
        JournalError::Corrupt {
            jid: self.jid,
            lbn,
            why: why.into(),
        }
    }

    fn next(&self, lbn: u32, k: u32) -> u32 {
        ((u64::from(lbn) + u64::from(k)) % u64::from(self.nblocks)) as u32
    }

    /// Blocks from `lbn` up to (not including) the head.
    fn left(&self, lbn: u32) -> u32 {
        (self.head + self.nblocks - lbn) % self.nblocks
    }

    /// Every descriptor from tail to head, in log order; counts the
    /// intermediate headers.
    fn descriptors(&mut self) -> Result<(Vec<Desc>, usize)> {
        let mut out = Vec::new();
        let mut headers = 0;
        let mut lbn = self.tail;
        while lbn != self.head {
            let b = (self.read)(lbn)?;
            let mh = MetaHeader::decode(&b)
                .map_err(|_| self.corrupt(lbn, "block without a metadata header"))?;
            if mh.mh_type == MetaType::Lh as u32 {
                match LogHeader::decode(&b) {
                    Ok(lh) if lh.lh_blkno == lbn => {}
                    _ => return Err(self.corrupt(lbn, "bad log header inside the log")),
                }
                headers += 1;
                lbn = self.next(lbn, 1);
                continue;
            }
            let ld = LogDescriptor::decode(&b)
                .map_err(|e| self.corrupt(lbn, format!("expected a log descriptor: {e}")))?;
            if ld.ld_length == 0 || ld.ld_length > self.left(lbn) {
                return Err(self.corrupt(lbn, "descriptor runs past the log head"));
            }
            let next = self.next(lbn, ld.ld_length);
            out.push(Desc { lbn, ld, block: b });
            lbn = next;
        }
        Ok((out, headers))
    }

    /// Pass 0: block number → journal position of its last revoke.
    fn revokes(&mut self, d: &Desc, into: &mut HashMap<u64, u32>) -> Result<()> {
        let bsize = d.block.len();
        let mut remaining = d.ld.ld_data1 as usize;
        let cap = revoke_capacity_first(bsize)
            + (d.ld.ld_length as usize - 1) * revoke_capacity_more(bsize);
        if remaining > cap {
            return Err(self.corrupt(d.lbn, "revoke count exceeds its blocks"));
        }
        let mut at = d.lbn;
        let mut block = d.block.clone();
        let mut off = LogDescriptor::SIZE;
        for k in 0..d.ld.ld_length {
            if k > 0 {
                at = self.next(d.lbn, k);
                block = (self.read)(at)?;
                off = MetaHeader::SIZE;
                if MetaHeader::decode_as(&block, MetaType::Lb).is_err() {
                    // gfs2-utils skips a continuation that is not an LB block.
                    continue;
                }
            }
            while remaining > 0 && off + 8 <= bsize {
                into.insert(be64(&block, off), at);
                remaining -= 1;
                off += 8;
            }
        }
        Ok(())
    }

    /// The kernel's `gfs2_revoke_check`: is the copy at `at` older than
    /// the last revoke of its block (both within the active log)?
    fn is_revoked(&self, revokes: &HashMap<u64, u32>, blk: u64, at: u32) -> bool {
        let Some(&rw) = revokes.get(&blk) else {
            return false;
        };
        let wrap = rw < self.tail;
        let a = self.tail < at;
        let b = at < rw;
        if wrap {
            a || b
        } else {
            a && b
        }
    }

    /// Pass 1: the copies of one METADATA or JDATA descriptor.
    fn copies(
        &mut self,
        d: &Desc,
        revokes: &HashMap<u64, u32>,
        plan: &mut ReplayPlan,
    ) -> Result<()> {
        let bsize = d.block.len();
        let jdata = d.ld.ld_type == log_desc::JDATA;
        let stride = if jdata { 16 } else { 8 };
        let count = d.ld.ld_data1 as usize;
        if count > (bsize - LogDescriptor::SIZE) / stride || count >= d.ld.ld_length as usize {
            return Err(self.corrupt(d.lbn, "bad descriptor length"));
        }
        for i in 0..count {
            let ptr = LogDescriptor::SIZE + stride * i;
            let blk = be64(&d.block, ptr);
            let at = self.next(d.lbn, 1 + i as u32);
            plan.found += 1;
            if self.is_revoked(revokes, blk, at) {
                plan.revoked += 1;
                continue;
            }
            let mut copy = (self.read)(at)?;
            if jdata {
                if be64(&d.block, ptr + 8) != 0 {
                    put32(&mut copy, 0, GFS2_MAGIC);
                }
            } else if MetaHeader::decode(&copy).is_err() {
                return Err(self.corrupt(at, format!("logged copy of block {blk} is not metadata")));
            }
            plan.blocks.insert(blk, copy);
        }
        Ok(())
    }
}

/// Plans the replay of the log from `head.lh_tail` to `head.lh_blkno`
/// (journal of `nblocks` blocks, read through `read(lbn)`).
pub fn replay_plan(
    jid: u32,
    nblocks: u32,
    head: &LogHeader,
    mut read: impl FnMut(u32) -> Result<Vec<u8>>,
) -> Result<ReplayPlan> {
    let mut w = Walk {
        jid,
        nblocks,
        tail: head.lh_tail,
        head: head.lh_blkno,
        read: &mut read,
    };
    if w.tail >= nblocks || w.head >= nblocks {
        return Err(w.corrupt(head.lh_blkno, "log header points outside the journal"));
    }
    let (descs, headers) = w.descriptors()?;
    let mut revokes = HashMap::new();
    for d in descs.iter().filter(|d| d.ld.ld_type == log_desc::REVOKE) {
        w.revokes(d, &mut revokes)?;
    }
    let mut plan = ReplayPlan {
        revokes: revokes.len(),
        headers,
        ..Default::default()
    };
    for d in &descs {
        if matches!(d.ld.ld_type, log_desc::METADATA | log_desc::JDATA) {
            w.copies(d, &revokes, &mut plan)?;
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::build_commit;
    use crate::ondisk::log_head;

    const BS: usize = 512;

    fn meta(fill: u8) -> Vec<u8> {
        let mut b = vec![fill; BS];
        MetaHeader::new(MetaType::In).encode(&mut b);
        b
    }

    /// One test commit: (block, fill byte) copies, then revoked blocks.
    type TestCommit = (Vec<(u64, u8)>, Vec<u64>);

    /// A journal of `n` blocks with commits laid from `tail`. Returns the
    /// journal and the head header.
    fn journal(n: u32, tail: u32, commits: &[TestCommit]) -> (Vec<Vec<u8>>, LogHeader) {
        let mut j: Vec<Vec<u8>> = (0..n)
            .map(|lbn| {
                let mut b = vec![0u8; BS];
                LogHeader {
                    lh_sequence: 10 + u64::from(lbn),
                    lh_flags: log_head::UNMOUNT,
                    lh_blkno: lbn,
                    ..Default::default()
                }
                .encode_block(&mut b);
                b
            })
            .collect();
        let mut at = tail;
        let mut head = LogHeader::default();
        for (k, (copies, revokes)) in commits.iter().enumerate() {
            let mut log = Vec::new();
            if !revokes.is_empty() {
                log.extend(build_revoke(BS, 0, revokes));
            }
            let blocks: BTreeMap<u64, Vec<u8>> =
                copies.iter().map(|(b, f)| (*b, meta(*f))).collect();
            let len = log.len() as u32 + crate::journal::commit_len(BS, blocks.len()) as u32;
            head = LogHeader {
                lh_sequence: 1000 + k as u64,
                lh_flags: log_head::FLUSH_NORMAL,
                lh_tail: tail,
                lh_blkno: (at + len - 1) % n,
                ..Default::default()
            };
            log.extend(build_commit(BS, 0, &blocks, &head));
            for b in log {
                j[at as usize] = b;
                at = (at + 1) % n;
            }
        }
        (j, head)
    }

    fn plan(j: &[Vec<u8>], head: &LogHeader) -> Result<ReplayPlan> {
        replay_plan(0, j.len() as u32, head, |lbn| Ok(j[lbn as usize].clone()))
    }

    #[test]
    fn every_commit_from_tail_to_head_is_replayed_later_copies_win() {
        let (j, head) = journal(
            40,
            3,
            &[
                (vec![(100, 1), (101, 1)], vec![]),
                (vec![(101, 2), (102, 2)], vec![]),
            ],
        );
        let found = find_head(j.iter().enumerate().map(|(i, b)| (i as u32, b.as_slice())));
        assert_eq!(found, Some(head));
        let p = plan(&j, &head).unwrap();
        assert_eq!(p.headers, 1);
        assert_eq!(p.found, 4);
        assert_eq!(p.blocks.len(), 3);
        assert_eq!(p.blocks[&100], meta(1));
        assert_eq!(p.blocks[&101], meta(2));
    }

    #[test]
    fn revokes_hide_older_copies_only() {
        let (j, head) = journal(
            40,
            0,
            &[
                (vec![(100, 1), (101, 1), (102, 1)], vec![]),
                (vec![(102, 2)], vec![100, 102]),
                (vec![(101, 3)], vec![101]),
            ],
        );
        let p = plan(&j, &head).unwrap();
        // 100: only copy revoked later; 101: copies in commit 1 and 3, the
        // revoke in commit 3 precedes its copy there; 102: the copy in
        // commit 2 comes after the revoke that precedes it in that commit.
        assert!(!p.blocks.contains_key(&100));
        assert_eq!(p.blocks[&101], meta(3));
        assert_eq!(p.blocks[&102], meta(2));
        assert_eq!(p.revoked, 3);
        assert_eq!(p.revokes, 3);
    }

    #[test]
    fn revokes_continue_in_lb_blocks_and_the_log_wraps() {
        let many: Vec<u64> = (5000..5000 + 3 * revoke_capacity_first(BS) as u64).collect();
        let mut rv = many.clone();
        rv.push(200); // lands in an LB continuation block
        let (j, head) = journal(
            30,
            24,
            &[(vec![(200, 1), (201, 1)], vec![]), (vec![(201, 2)], rv)],
        );
        assert!(head.lh_blkno < head.lh_tail, "the log wraps");
        let lb = j
            .iter()
            .filter(|b| MetaHeader::decode_as(b, MetaType::Lb).is_ok());
        assert_eq!(lb.count(), 2);
        let p = plan(&j, &head).unwrap();
        assert!(!p.blocks.contains_key(&200));
        assert_eq!(p.blocks[&201], meta(2));
        assert_eq!(p.revokes, many.len() + 1);
    }

    #[test]
    fn journaled_data_is_unescaped_and_not_checked_as_metadata() {
        let (mut j, mut head) = journal(20, 0, &[(vec![(100, 1)], vec![])]);
        // Append a JDATA descriptor with two blocks after the commit: one
        // whose leading magic was escaped (zeroed) in the log, one plain.
        let at = head.lh_blkno + 1;
        let mut ld = vec![0u8; BS];
        LogDescriptor {
            ld_type: log_desc::JDATA,
            ld_length: 3,
            ld_data1: 2,
            ld_data2: 0,
        }
        .encode(&mut ld, 0);
        put64(&mut ld, LogDescriptor::SIZE, 300);
        put64(&mut ld, LogDescriptor::SIZE + 8, 1);
        put64(&mut ld, LogDescriptor::SIZE + 16, 301);
        put64(&mut ld, LogDescriptor::SIZE + 24, 0);
        let mut escaped = meta(5);
        escaped[..4].fill(0);
        j[at as usize] = ld;
        j[at as usize + 1] = escaped;
        j[at as usize + 2] = vec![0xab; BS];
        head.lh_sequence += 1;
        head.lh_blkno = at + 3;
        head.encode_block(&mut j[(at + 3) as usize]);
        let p = plan(&j, &head).unwrap();
        assert_eq!(p.blocks[&300], meta(5));
        assert_eq!(p.blocks[&301], vec![0xab; BS]);
        assert_eq!(p.blocks[&100], meta(1));
        assert_eq!(p.found, 3);
    }

    #[test]
    fn malformed_logs_are_errors() {
        let (mut j, head) = journal(20, 0, &[(vec![(100, 1)], vec![])]);
        let mut bad = head;
        bad.lh_tail = 1; // points at a copy, not a descriptor
        assert!(plan(&j, &bad).is_err());
        // A descriptor claiming more blocks than lie before the head.
        put32(&mut j[0], 28, 50);
        assert!(plan(&j, &head).is_err());
        let (mut j, head) = journal(20, 0, &[(vec![(100, 1)], vec![])]);
        j[1] = vec![0u8; BS]; // a copy without a metadata header
        assert!(plan(&j, &head).is_err());
        let (j, mut head) = journal(20, 0, &[(vec![(100, 1)], vec![])]);
        head.lh_blkno = 25;
        assert!(plan(&j, &head).is_err());
    }
}
