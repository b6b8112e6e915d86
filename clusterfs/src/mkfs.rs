//! `mkfs`: lay out a new GFS2 filesystem the way `mkfs.gfs2` does.
//!
//! Order of work, as in gfs2-utils' `main_mkfs.c`: one resource group per
//! journal (sized to fit it exactly, journal at its start, pre-filled with
//! UNMOUNT log headers), resource groups over the rest of the device, then the
//! master directory (`jindex`, `per_node`, `inum`, `statfs`, `rindex`,
//! `quota`) and the root directory, allocated first-fit from the first
//! resource group, and last the superblock.

use thiserror::Error;

use crate::block::{BlockDevice, BlockError};
use crate::dirbuild::{build_directory, DirEntryIn, DirLayoutError};
use crate::ondisk::{bitmap_position, log_head};
use crate::ondisk::{
    dif, dt, BlockState, Dinode, Geometry, Inum, LogHeader, MetaHeader, MetaType, Quota, Rgrp,
    Rindex, StatfsChange, Superblock, GFS2_FORMAT_FS, GFS2_FORMAT_MULTI, GFS2_FORMAT_QU,
    GFS2_FORMAT_RI,
};

/// `LGFS2_MIN_JSIZE`, MiB.
pub const MIN_JOURNAL_MB: u32 = 8;
/// `LGFS2_MAX_JSIZE`, MiB.
pub const MAX_JOURNAL_MB: u32 = 1024;
/// `LGFS2_MIN_RGSIZE`, MiB.
pub const MIN_RG_MB: u32 = 32;
/// `LGFS2_MAX_RGSIZE`, MiB.
pub const MAX_RG_MB: u32 = 2048;
/// `LGFS2_DEFAULT_RGSIZE`, MiB.
pub const DEFAULT_RG_MB: u32 = 256;
/// `LGFS2_DEFAULT_QCSIZE`, MiB: size of each quota_change file.
pub const QUOTA_CHANGE_MB: u32 = 1;

/// Errors of `mkfs`.
#[derive(Debug, Error)]
pub enum MkfsError {
    /// An option is out of range or malformed.
    #[error("{0}")]
    BadOption(String),
    /// The device is too small for the requested layout.
    #[error("{0}")]
    TooSmall(String),
    /// The block layer failed.
    #[error("I/O error: {0}")]
    Io(#[from] BlockError),
    /// A system directory could not be laid out.
    #[error("directory layout: {0}")]
    Dir(#[from] DirLayoutError),
}

/// Result alias for mkfs.
pub type Result<T> = std::result::Result<T, MkfsError>;

/// Lock protocols a volume can be made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockProto {
    /// Cluster locking through the DLM.
    LockDlm,
    /// Single-node, no locking.
    LockNolock,
}

impl LockProto {
    /// The name written in `sb_lockproto`.
    pub fn name(self) -> &'static str {
        match self {
            LockProto::LockDlm => "lock_dlm",
            LockProto::LockNolock => "lock_nolock",
        }
    }

    /// Parses `lock_dlm` or `lock_nolock`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "lock_dlm" => Ok(LockProto::LockDlm),
            "lock_nolock" => Ok(LockProto::LockNolock),
            _ => Err(MkfsError::BadOption(format!("Invalid lock protocol: {s}"))),
        }
    }
}

/// What to make, with `mkfs.gfs2`'s meaning.
#[derive(Debug, Clone)]
pub struct MkfsOptions {
    /// `-p`.
    pub lockproto: LockProto,
    /// `-t cluster:fsname`.
    pub locktable: String,
    /// `-j`.
    pub journals: u32,
    /// `-J` in MiB; `None` picks a size from the device size.
    pub journal_mb: Option<u32>,
    /// `-b`.
    pub bsize: u32,
    /// `-r` in MiB.
    pub rg_mb: u32,
    /// The optional block count argument; `None` uses the whole device.
    pub blocks: Option<u64>,
    /// `-U`; `None` generates a random one.
    pub uuid: Option<[u8; 16]>,
    /// Timestamp of every created inode (seconds); `None` = now.
    pub time: Option<u64>,
}

impl Default for MkfsOptions {
    fn default() -> Self {
        MkfsOptions {
            lockproto: LockProto::LockDlm,
            locktable: String::new(),
            journals: 1,
            journal_mb: None,
            bsize: 4096,
            rg_mb: DEFAULT_RG_MB,
            blocks: None,
            uuid: None,
            time: None,
        }
    }
}

/// Phases reported to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Writing journals: (done, total journals).
    Journals,
    /// Writing resource groups: (done, total groups).
    ResourceGroups,
}

/// What was made (the figures `mkfs.gfs2` prints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MkfsReport {
    /// Block size.
    pub bsize: u32,
    /// Device size in bytes.
    pub device_bytes: u64,
    /// Filesystem size in blocks (end of the last resource group's data).
    pub fs_blocks: u64,
    /// Journals.
    pub journals: u32,
    /// Journal size, MiB.
    pub journal_mb: u32,
    /// Resource groups.
    pub rgrps: usize,
    /// Lock protocol name.
    pub lockproto: String,
    /// Lock table.
    pub locktable: String,
    /// UUID.
    pub uuid: [u8; 16],
    /// Free data blocks.
    pub free_blocks: u64,
    /// Dinodes created.
    pub dinodes: u64,
}

/// Formats a UUID the usual 8-4-4-4-12 way.
pub fn uuid_string(u: &[u8; 16]) -> String {
    let h: Vec<String> = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

/// Checks `-t` against `-p` as `mkfs.gfs2` does: lock_dlm needs
/// `cluster:fsname`, cluster ≤ 32 and fsname 1..=30 of `[A-Za-z0-9_-]`.
pub fn check_locktable(proto: LockProto, table: &str) -> Result<()> {
    if proto == LockProto::LockNolock {
        return if table.len() < 64 {
            Ok(())
        } else {
            Err(MkfsError::BadOption("Lock table name is too long".into()))
        };
    }
    let bad = |m: &str| Err(MkfsError::BadOption(m.to_string()));
    let Some((cluster, fs)) = table.split_once(':') else {
        return bad("Lock table: missing colon in the locktable (expected cluster:fsname)");
    };
    let ok = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if cluster.is_empty() || cluster.len() > 32 || !ok(cluster) {
        return bad("Lock table: cluster name must be 1-32 characters of [A-Za-z0-9_-]");
    }
    if fs.is_empty() || fs.len() > 30 || !ok(fs) {
        return bad("Lock table: file system name must be 1-30 characters of [A-Za-z0-9_-]");
    }
    Ok(())
}

fn check_options(o: &MkfsOptions) -> Result<()> {
    check_locktable(o.lockproto, &o.locktable)?;
    if !o.bsize.is_power_of_two() || !(512..=4096).contains(&o.bsize) {
        return Err(MkfsError::BadOption(format!(
            "Block size must be a power of two between 512 and 4096, not {}",
            o.bsize
        )));
    }
    if !(MIN_RG_MB..=MAX_RG_MB).contains(&o.rg_mb) {
        return Err(MkfsError::BadOption("Bad resource group size".into()));
    }
    if o.journals == 0 {
        return Err(MkfsError::BadOption("No journals specified".into()));
    }
    if let Some(j) = o.journal_mb {
        if !(MIN_JOURNAL_MB..=MAX_JOURNAL_MB).contains(&j) {
            return Err(MkfsError::BadOption("Bad journal size".into()));
        }
    }
    Ok(())
}

/// `default_journal_size` (adapted from e2fsprogs by gfs2-utils): journal
/// blocks for a filesystem of `blocks` blocks per journal, `None` if too small.
fn default_journal_blocks(bsize: u32, blocks: u64) -> Option<u64> {
    let min = u64::from(MIN_JOURNAL_MB << 20) / u64::from(bsize);
    let v = match blocks {
        b if b < 2 * min => return None,
        b if b < 131_072 => min,
        b if b < 512 * 1024 => 4096,
        b if b < 2048 * 1024 => 8192,
        b if b < 4096 * 1024 => 16_384,
        b if b < 262_144 * 1024 => 32_768,
        b if b < 2_621_440 * 1024 => 131_072,
        _ => 262_144,
    };
    Some(v)
}

fn journal_mb(o: &MkfsOptions, dev_blocks: u64) -> Result<u32> {
    let b = u64::from(o.bsize);
    match o.journal_mb {
        None => {
            let jb = default_journal_blocks(o.bsize, dev_blocks / u64::from(o.journals))
                .ok_or_else(|| MkfsError::TooSmall("gfs2 will not fit on this device.".into()))?;
            Ok(((jb * b) >> 20).max(u64::from(MIN_JOURNAL_MB)) as u32)
        }
        Some(mb) => {
            if ((u64::from(mb) * u64::from(o.journals)) << 20) / b > dev_blocks / 2 {
                let max = (dev_blocks / 2 * b / u64::from(o.journals)) >> 20;
                return Err(MkfsError::TooSmall(format!(
                    "gfs2 will not fit on this device. Maximum size for {} journals on this device is {}MB.",
                    o.journals, max
                )));
            }
            Ok(mb)
        }
    }
}

// ---------------------------------------------------------------------------
// Geometry (pure).

/// `lgfs2_space_for_data`: blocks for a file of `bytes`, dinode and
/// indirect blocks included.
pub fn space_for_data(geo: &Geometry, bytes: u64) -> u64 {
    let b = u64::from(geo.bsize);
    let mut blks = bytes.div_ceil(b);
    let mut ptrs = blks;
    while ptrs > geo.diptrs {
        ptrs = ptrs.div_ceil(geo.inptrs);
        blks += ptrs;
    }
    blks + 1
}

/// `lgfs2_rgsize_for_data`: resource group length giving `blocks` data blocks.
pub fn rgsize_for_data(geo: &Geometry, blocks: u64) -> u64 {
    let first = 4 * u64::from(geo.rg_bitbytes_first);
    let more = 4 * u64::from(geo.rg_bitbytes_more);
    let req = (blocks + 3) & !3;
    let mut bitblocks = 1;
    if req > first {
        bitblocks += (req - first).div_ceil(more);
    }
    bitblocks + req
}

/// `lgfs2_rgblocks2bitblocks`: (bitmap blocks incl. header, data blocks) of
/// a resource group `len` blocks long.
pub fn rg_bitblocks(geo: &Geometry, len: u64) -> (u64, u64) {
    let first = 4 * u64::from(geo.rg_bitbytes_first);
    let more = 4 * u64::from(geo.rg_bitbytes_more);
    let mut bitblocks = 0u64;
    while first + more * bitblocks < (len - bitblocks) & !3 {
        bitblocks += 1;
    }
    let mappable = if bitblocks > 0 {
        first + more * (bitblocks - 1)
    } else {
        0
    };
    let data = (len - (bitblocks + 1)) & !3;
    if mappable < data {
        bitblocks += 1;
    }
    (bitblocks, data)
}

/// The rindex entry of a resource group `len` blocks long at `addr`.
pub fn rindex_entry(geo: &Geometry, addr: u64, len: u64) -> Rindex {
    let (length, data) = rg_bitblocks(geo, len);
    Rindex {
        ri_addr: addr,
        ri_length: length as u32,
        ri_data0: addr + length,
        ri_data: data as u32,
        ri_bitbytes: (data / 4) as u32,
    }
}

/// A planned resource group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RgPlan {
    /// Its rindex entry.
    pub ri: Rindex,
    /// Blocks from its header to the next group's header.
    pub len: u64,
}

/// Plans every resource group: one per journal sized for `journal_mb`, then
/// groups of about `rg_mb` filling the device to its end.
pub fn plan_rgrps(
    geo: &Geometry,
    dev_blocks: u64,
    journals: u32,
    journal_mb: u32,
    rg_mb: u32,
) -> Result<Vec<RgPlan>> {
    let b = u64::from(geo.bsize);
    let mut addr = Superblock::block_addr(geo.bsize) + 1;
    let jlen = rgsize_for_data(geo, space_for_data(geo, u64::from(journal_mb) << 20));
    let mut out = Vec::new();
    for _ in 0..journals {
        if addr + jlen > dev_blocks {
            return Err(MkfsError::TooSmall(
                "the journals do not fit on this device".into(),
            ));
        }
        out.push(RgPlan {
            ri: rindex_entry(geo, addr, jlen),
            len: jlen,
        });
        addr += jlen;
    }
    let space = dev_blocks.saturating_sub(addr);
    let target = (u64::from(rg_mb) << 20) / b;
    // Room for the system files and the smallest useful group.
    if space < 64 {
        return Err(MkfsError::TooSmall(
            "no room left after the journals".into(),
        ));
    }
    let n = space.div_ceil(target);
    let base = space / n;
    let longer = space % n;
    for i in 0..n {
        let len = if i >= n - longer { base + 1 } else { base };
        out.push(RgPlan {
            ri: rindex_entry(geo, addr, len),
            len,
        });
        addr += len;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// The builder: resource groups in memory, first-fit allocation, writes.

struct RgState {
    plan: RgPlan,
    bitmap: Vec<u8>,
    free: u32,
    dinodes: u32,
}

impl RgState {
    fn new(plan: RgPlan) -> Self {
        RgState {
            plan,
            bitmap: vec![0; plan.ri.ri_bitbytes as usize],
            free: plan.ri.ri_data,
            dinodes: 0,
        }
    }

    fn state(&self, n: u64) -> BlockState {
        BlockState::from_bits(self.bitmap[(n / 4) as usize] >> (2 * (n % 4)))
    }

    fn set(&mut self, n: u64, s: BlockState) {
        let byte = &mut self.bitmap[(n / 4) as usize];
        let shift = 2 * (n % 4);
        *byte = (*byte & !(3 << shift)) | ((s as u8) << shift);
    }
}

/// A file's data block source: fills block `lbn` of the file.
type Filler<'a> = &'a mut dyn FnMut(u64, &mut [u8]);

/// A file laid out on disk.
struct Placed {
    dinode: Dinode,
    /// Bytes after the 232-byte dinode header (pointers or stuffed data).
    payload: Vec<u8>,
}

struct Builder<'d> {
    dev: &'d dyn BlockDevice,
    geo: Geometry,
    rgs: Vec<RgState>,
    cursor: (usize, u64),
    next_formal: u64,
    time: u64,
    dinodes: u64,
}

impl<'d> Builder<'d> {
    fn bsize(&self) -> usize {
        self.geo.bsize as usize
    }

    fn write_block(&self, blk: u64, data: &[u8]) -> Result<()> {
        Ok(self.dev.write_at(blk * u64::from(self.geo.bsize), data)?)
    }

    /// First-fit from the cursor.
    fn alloc(&mut self, state: BlockState) -> Result<u64> {
        let (mut r, mut n) = self.cursor;
        while r < self.rgs.len() {
            let rg = &mut self.rgs[r];
            while n < u64::from(rg.plan.ri.ri_data) {
                if rg.state(n) == BlockState::Free {
                    rg.set(n, state);
                    rg.free -= 1;
                    if state == BlockState::Dinode {
                        rg.dinodes += 1;
                        self.dinodes += 1;
                    }
                    self.cursor = (r, n + 1);
                    return Ok(rg.plan.ri.ri_data0 + n);
                }
                n += 1;
            }
            r += 1;
            n = 0;
        }
        Err(MkfsError::TooSmall(
            "out of space while creating system files".into(),
        ))
    }

    fn new_inum(&mut self) -> Result<Inum> {
        let addr = self.alloc(BlockState::Dinode)?;
        let formal = self.next_formal;
        self.next_formal += 1;
        Ok(Inum {
            no_formal_ino: formal,
            no_addr: addr,
        })
    }

    fn base_dinode(&self, num: Inum, mode: u32, flags: u32) -> Dinode {
        Dinode {
            di_num: num,
            di_mode: mode,
            di_nlink: 1,
            di_blocks: 1,
            di_atime: self.time,
            di_mtime: self.time,
            di_ctime: self.time,
            di_goal_meta: num.no_addr,
            di_goal_data: num.no_addr,
            di_flags: flags,
            ..Default::default()
        }
    }

    fn write_dinode(&self, p: &Placed) -> Result<()> {
        let mut b = vec![0u8; self.bsize()];
        p.dinode.encode(&mut b);
        b[Dinode::SIZE..Dinode::SIZE + p.payload.len()].copy_from_slice(&p.payload);
        self.write_block(p.dinode.di_num.no_addr, &b)
    }

    /// A stuffed file holding `data`.
    fn stuffed(&self, num: Inum, mode: u32, flags: u32, data: &[u8]) -> Placed {
        assert!(data.len() as u64 <= self.geo.stuffed_max());
        let mut dinode = self.base_dinode(num, mode, flags);
        dinode.di_size = data.len() as u64;
        Placed {
            dinode,
            payload: data.to_vec(),
        }
    }

    /// An unstuffed file of `nblocks` data blocks and `size` bytes: indirect
    /// blocks level by level after the dinode, then the data blocks, each
    /// filled by `fill`.
    fn unstuffed(
        &mut self,
        num: Inum,
        mode: u32,
        flags: u32,
        size: u64,
        nblocks: u64,
        fill: Filler<'_>,
    ) -> Result<Placed> {
        let geo = self.geo;
        let height = geo.height_for_blocks(nblocks);
        // levels[k] = block addresses at depth k+1 below the dinode.
        let mut levels: Vec<Vec<u64>> = Vec::new();
        for k in 1..height {
            let per = geo.inptrs.pow(u32::from(height - k));
            let count = nblocks.div_ceil(per);
            let mut v = Vec::with_capacity(count as usize);
            for _ in 0..count {
                v.push(self.alloc(BlockState::Used)?);
            }
            levels.push(v);
        }
        let data = self.write_data_blocks(nblocks, fill)?;
        levels.push(data);
        self.write_indirect(&levels)?;
        let meta_blocks: u64 = levels[..levels.len() - 1]
            .iter()
            .map(|l| l.len() as u64)
            .sum();
        let mut dinode = self.base_dinode(num, mode, flags);
        dinode.di_size = size;
        dinode.di_height = height;
        dinode.di_blocks = 1 + meta_blocks + nblocks;
        dinode.di_goal_data = *levels.last().and_then(|l| l.last()).unwrap_or(&num.no_addr);
        dinode.di_goal_meta = levels
            .iter()
            .rev()
            .nth(1)
            .and_then(|l| l.last().copied())
            .unwrap_or(num.no_addr);
        let mut payload = vec![0u8; geo.diptrs as usize * 8];
        for (i, a) in levels[0].iter().enumerate() {
            payload[i * 8..i * 8 + 8].copy_from_slice(&a.to_be_bytes());
        }
        Ok(Placed { dinode, payload })
    }

    /// Allocates and writes `n` data blocks, batching contiguous runs.
    fn write_data_blocks(&mut self, n: u64, fill: Filler<'_>) -> Result<Vec<u64>> {
        const BATCH: usize = 256;
        let bs = self.bsize();
        let mut addrs = Vec::with_capacity(n as usize);
        let mut buf: Vec<u8> = Vec::with_capacity(BATCH * bs);
        let mut run_start = 0u64;
        for lbn in 0..n {
            let a = self.alloc(BlockState::Used)?;
            let contiguous = !buf.is_empty() && a == run_start + (buf.len() / bs) as u64;
            if !buf.is_empty() && (!contiguous || buf.len() == BATCH * bs) {
                self.write_block(run_start, &buf)?;
                buf.clear();
            }
            if buf.is_empty() {
                run_start = a;
            }
            let at = buf.len();
            buf.resize(at + bs, 0);
            fill(lbn, &mut buf[at..]);
            addrs.push(a);
        }
        if !buf.is_empty() {
            self.write_block(run_start, &buf)?;
        }
        Ok(addrs)
    }

    /// Writes the indirect blocks of `levels[..last]`, each pointing at its
    /// slice of the next level.
    fn write_indirect(&self, levels: &[Vec<u64>]) -> Result<()> {
        let inptrs = self.geo.inptrs as usize;
        for k in 0..levels.len() - 1 {
            for (i, &addr) in levels[k].iter().enumerate() {
                let mut b = vec![0u8; self.bsize()];
                MetaHeader::new(MetaType::In).encode(&mut b);
                let children = &levels[k + 1];
                let end = ((i + 1) * inptrs).min(children.len());
                for (j, c) in children[i * inptrs..end].iter().enumerate() {
                    let off = MetaHeader::SIZE + j * 8;
                    b[off..off + 8].copy_from_slice(&c.to_be_bytes());
                }
                self.write_block(addr, &b)?;
            }
        }
        Ok(())
    }

    /// A regular system file with `data` (stuffed when it fits).
    fn data_file(&mut self, num: Inum, flags: u32, data: &[u8]) -> Result<Placed> {
        let mode = libc::S_IFREG | 0o600;
        if data.len() as u64 <= self.geo.stuffed_max() {
            return Ok(self.stuffed(num, mode, flags, data));
        }
        let bs = self.bsize();
        let n = (data.len() as u64).div_ceil(bs as u64);
        let mut fill = |lbn: u64, b: &mut [u8]| {
            let from = lbn as usize * bs;
            let to = (from + bs).min(data.len());
            b[..to - from].copy_from_slice(&data[from..to]);
        };
        self.unstuffed(num, mode, flags, data.len() as u64, n, &mut fill)
    }

    /// A directory holding `entries` (linear when they fit in the dinode,
    /// otherwise an exhash with its leaves allocated here).
    fn directory(
        &mut self,
        num: Inum,
        mode: u32,
        flags: u32,
        nlink: u32,
        entries: &[DirEntryIn],
    ) -> Result<Placed> {
        let layout = build_directory(&self.geo, num.no_addr, entries, self.time)?;
        let mut dinode = self.base_dinode(num, libc::S_IFDIR | mode, flags | dif::JDATA);
        dinode.di_nlink = nlink;
        dinode.di_entries = entries.len() as u32;
        dinode.di_size = layout.size;
        dinode.di_depth = layout.depth;
        if layout.depth > 0 {
            dinode.di_flags |= dif::EXHASH;
        }
        let mut addrs = Vec::with_capacity(layout.leaves.len());
        for leaf in &layout.leaves {
            let a = self.alloc(BlockState::Used)?;
            self.write_block(a, leaf)?;
            addrs.push(a);
        }
        dinode.di_blocks = 1 + addrs.len() as u64;
        let payload = layout.payload(&addrs);
        Ok(Placed { dinode, payload })
    }
}

fn dirent(name: &str, inum: Inum, de_type: u16) -> DirEntryIn {
    DirEntryIn {
        name: name.as_bytes().to_vec(),
        inum,
        de_type,
    }
}

/// Writes the resource group headers and bitmaps of `rgs`.
fn write_rgrps(b: &Builder<'_>, progress: &mut dyn FnMut(Phase, u64, u64)) -> Result<()> {
    let bs = b.bsize();
    let total = b.rgs.len() as u64;
    for (i, rg) in b.rgs.iter().enumerate() {
        let ri = rg.plan.ri;
        let mut blocks = vec![0u8; ri.ri_length as usize * bs];
        let last = i + 1 == b.rgs.len();
        let header = Rgrp {
            rg_flags: 0,
            rg_free: rg.free,
            rg_dinodes: rg.dinodes,
            rg_skip: if last { 0 } else { rg.plan.len as u32 },
            rg_igeneration: 0,
            rg_data0: ri.ri_data0,
            rg_data: ri.ri_data,
            rg_bitbytes: ri.ri_bitbytes,
            rg_crc: 0,
        };
        header.encode(&mut blocks[..bs]);
        for k in 1..ri.ri_length as usize {
            MetaHeader::new(MetaType::Rb).encode(&mut blocks[k * bs..]);
        }
        for (byte_idx, &v) in rg.bitmap.iter().enumerate() {
            let (blk, off, _) = bitmap_position(&b.geo, byte_idx as u64 * 4);
            blocks[blk * bs + off] = v;
        }
        b.write_block(ri.ri_addr, &blocks)?;
        progress(Phase::ResourceGroups, i as u64 + 1, total);
    }
    Ok(())
}

/// Fills journal block `lbn` with an UNMOUNT|USERSPACE log header.
fn journal_header(jid: u32, seq0: u64, lbn: u64, addr: u64, jinode: u64, block: &mut [u8]) {
    let lh = LogHeader {
        jid,
        lh_sequence: seq0 + lbn,
        lh_flags: log_head::UNMOUNT | log_head::USERSPACE,
        lh_blkno: lbn as u32,
        lh_addr: addr,
        lh_jinode: jinode,
        ..Default::default()
    };
    lh.encode_block(block);
}

/// Makes a filesystem on `dev` and reports what it made. `progress` is
/// called as journals and resource groups are written.
pub fn mkfs(
    dev: &dyn BlockDevice,
    opts: &MkfsOptions,
    progress: &mut dyn FnMut(Phase, u64, u64),
) -> Result<MkfsReport> {
    check_options(opts)?;
    let geo = Geometry::new(opts.bsize);
    let bs = u64::from(opts.bsize);
    let dev_blocks_all = dev.size() / bs;
    let dev_blocks = match opts.blocks {
        Some(n) if n > dev_blocks_all => {
            return Err(MkfsError::BadOption(format!(
                "Specified size is bigger than the device ({dev_blocks_all} blocks)"
            )))
        }
        Some(n) => n,
        None => dev_blocks_all,
    };
    let jmb = journal_mb(opts, dev_blocks)?;
    let plans = plan_rgrps(&geo, dev_blocks, opts.journals, jmb, opts.rg_mb)?;
    let time = opts.time.unwrap_or_else(now_secs);
    let uuid = opts.uuid.unwrap_or_else(rand::random);
    let mut b = Builder {
        dev,
        geo,
        rgs: plans.into_iter().map(RgState::new).collect(),
        cursor: (0, 0),
        next_formal: 1,
        time,
        dinodes: 0,
    };
    let journals = make_journals(&mut b, opts.journals, jmb, progress)?;
    b.cursor = (0, 0);
    let (master, root) = make_system_files(&mut b, &journals, opts)?;
    write_rgrps(&b, progress)?;
    let sb = Superblock {
        sb_fs_format: GFS2_FORMAT_FS,
        sb_multihost_format: GFS2_FORMAT_MULTI,
        sb_bsize: opts.bsize,
        sb_bsize_shift: opts.bsize.trailing_zeros(),
        sb_master_dir: master,
        sb_root_dir: root,
        sb_lockproto: opts.lockproto.name().to_string(),
        sb_locktable: opts.locktable.clone(),
        sb_uuid: uuid,
    };
    let mut sbb = vec![0u8; opts.bsize as usize];
    sb.encode(&mut sbb);
    b.write_block(Superblock::block_addr(opts.bsize), &sbb)?;
    dev.flush()?;
    let last = &b.rgs[b.rgs.len() - 1].plan.ri;
    Ok(MkfsReport {
        bsize: opts.bsize,
        device_bytes: dev.size(),
        fs_blocks: last.ri_data0 + u64::from(last.ri_data),
        journals: opts.journals,
        journal_mb: jmb,
        rgrps: b.rgs.len(),
        lockproto: opts.lockproto.name().to_string(),
        locktable: opts.locktable.clone(),
        uuid,
        free_blocks: b.rgs.iter().map(|r| u64::from(r.free)).sum(),
        dinodes: b.dinodes,
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes journal `j` at the start of resource group `j`.
fn make_journals(
    b: &mut Builder<'_>,
    journals: u32,
    jmb: u32,
    progress: &mut dyn FnMut(Phase, u64, u64),
) -> Result<Vec<Inum>> {
    let bs = u64::from(b.geo.bsize);
    let nblocks = (u64::from(jmb) << 20) / bs;
    let mut out = Vec::new();
    for j in 0..journals {
        b.cursor = (j as usize, 0);
        let num = b.new_inum()?;
        let seq0: u64 = u64::from(rand::random::<u32>());
        // The filler needs each block's address: data blocks are allocated
        // in order, so predict them from the allocator's cursor.
        let addrs = AddrPredictor::new(b, nblocks);
        let mut fill = |lbn: u64, blk: &mut [u8]| {
            let addr = addrs.addr(lbn);
            journal_header(j, seq0, lbn, addr, num.no_addr, blk);
        };
        let placed = b.unstuffed(
            num,
            libc::S_IFREG | 0o600,
            dif::SYSTEM,
            nblocks * bs,
            nblocks,
            &mut fill,
        )?;
        b.write_dinode(&placed)?;
        out.push(num);
        progress(Phase::Journals, u64::from(j) + 1, u64::from(journals));
    }
    Ok(out)
}

/// Computes where a journal's data blocks will land: right after the
/// dinode and its indirect blocks, in a freshly planned (empty) journal
/// resource group.
struct AddrPredictor {
    first: u64,
}

impl AddrPredictor {
    fn new(b: &Builder<'_>, nblocks: u64) -> Self {
        let geo = b.geo;
        let height = geo.height_for_blocks(nblocks);
        let mut meta = 0;
        for k in 1..height {
            meta += nblocks.div_ceil(geo.inptrs.pow(u32::from(height - k)));
        }
        let (r, n) = b.cursor;
        AddrPredictor {
            first: b.rgs[r].plan.ri.ri_data0 + n + meta,
        }
    }

    fn addr(&self, lbn: u64) -> u64 {
        self.first + lbn
    }
}

/// Creates the master directory tree and the root directory; returns their
/// inums.
fn make_system_files(
    b: &mut Builder<'_>,
    journals: &[Inum],
    opts: &MkfsOptions,
) -> Result<(Inum, Inum)> {
    let master = b.new_inum()?;
    let jindex = b.new_inum()?;
    let per_node = b.new_inum()?;
    let mut pn_entries = vec![
        dirent(".", per_node, dt::DIR),
        dirent("..", master, dt::DIR),
    ];
    for j in 0..opts.journals {
        let inum_range = b.new_inum()?;
        let p = b.stuffed(
            inum_range,
            libc::S_IFREG | 0o600,
            dif::SYSTEM | dif::JDATA,
            &[0u8; 16],
        );
        b.write_dinode(&p)?;
        let statfs_change = b.new_inum()?;
        let p = b.stuffed(
            statfs_change,
            libc::S_IFREG | 0o600,
            dif::SYSTEM | dif::JDATA,
            &[0u8; 24],
        );
        b.write_dinode(&p)?;
        let qc = b.new_inum()?;
        make_quota_change(b, qc)?;
        pn_entries.push(dirent(&format!("inum_range{j}"), inum_range, dt::REG));
        pn_entries.push(dirent(&format!("statfs_change{j}"), statfs_change, dt::REG));
        pn_entries.push(dirent(&format!("quota_change{j}"), qc, dt::REG));
    }
    let inum = b.new_inum()?;
    let statfs = b.new_inum()?;
    let rindex = b.new_inum()?;
    let quota = b.new_inum()?;
    let root = b.new_inum()?;
    let sysflags = dif::SYSTEM | dif::JDATA;

    let mut qbuf = vec![0u8; 2 * Quota::SIZE];
    let q = Quota {
        qu_value: 1,
        ..Default::default()
    };
    q.encode(&mut qbuf[..Quota::SIZE]);
    q.encode(&mut qbuf[Quota::SIZE..]);
    let mut p = b.data_file(quota, sysflags, &qbuf)?;
    p.dinode.di_payload_format = GFS2_FORMAT_QU;
    b.write_dinode(&p)?;

    let mut rbuf = vec![0u8; b.rgs.len() * Rindex::SIZE];
    for (i, rg) in b.rgs.iter().enumerate() {
        rg.plan.ri.encode(&mut rbuf[i * Rindex::SIZE..]);
    }
    let mut p = b.data_file(rindex, sysflags, &rbuf)?;
    p.dinode.di_payload_format = GFS2_FORMAT_RI;
    b.write_dinode(&p)?;

    let mut jentries = vec![dirent(".", jindex, dt::DIR), dirent("..", master, dt::DIR)];
    for (j, n) in journals.iter().enumerate() {
        jentries.push(dirent(&format!("journal{j}"), *n, dt::REG));
    }
    let p = b.directory(jindex, 0o700, dif::SYSTEM, 2, &jentries)?;
    b.write_dinode(&p)?;
    let p = b.directory(per_node, 0o700, dif::SYSTEM, 2, &pn_entries)?;
    b.write_dinode(&p)?;
    let rootents = [dirent(".", root, dt::DIR), dirent("..", root, dt::DIR)];
    let p = b.directory(root, 0o755, 0, 2, &rootents)?;
    b.write_dinode(&p)?;
    let mentries = [
        dirent(".", master, dt::DIR),
        dirent("..", master, dt::DIR),
        dirent("jindex", jindex, dt::DIR),
        dirent("per_node", per_node, dt::DIR),
        dirent("inum", inum, dt::REG),
        dirent("statfs", statfs, dt::REG),
        dirent("rindex", rindex, dt::REG),
        dirent("quota", quota, dt::REG),
    ];
    let p = b.directory(master, 0o755, dif::SYSTEM, 4, &mentries)?;
    b.write_dinode(&p)?;

    // inum and statfs last: every allocation is done by now.
    let p = b.stuffed(
        inum,
        libc::S_IFREG | 0o600,
        sysflags,
        &b.next_formal.to_be_bytes(),
    );
    b.write_dinode(&p)?;
    let sc = StatfsChange {
        sc_total: b.rgs.iter().map(|r| i64::from(r.plan.ri.ri_data)).sum(),
        sc_free: b.rgs.iter().map(|r| i64::from(r.free)).sum(),
        sc_dinodes: b.dinodes as i64,
    };
    let mut sbuf = [0u8; StatfsChange::SIZE];
    sc.encode(&mut sbuf);
    let p = b.stuffed(statfs, libc::S_IFREG | 0o600, sysflags, &sbuf);
    b.write_dinode(&p)?;
    Ok((master, root))
}

/// A quota_change file: `QUOTA_CHANGE_MB` of blocks each carrying a QC
/// metadata header.
fn make_quota_change(b: &mut Builder<'_>, num: Inum) -> Result<()> {
    let bs = u64::from(b.geo.bsize);
    let n = (u64::from(QUOTA_CHANGE_MB) << 20) / bs;
    let mut fill = |_lbn: u64, blk: &mut [u8]| MetaHeader::new(MetaType::Qc).encode(blk);
    let p = b.unstuffed(
        num,
        libc::S_IFREG | 0o600,
        dif::SYSTEM,
        n * bs,
        n,
        &mut fill,
    )?;
    b.write_dinode(&p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_matches_mkfs_gfs2_images() {
        // 64 MiB, 4 KiB blocks, 8 MiB journal: rindex read from mkfs.gfs2.
        let g = Geometry::new(4096);
        assert_eq!(space_for_data(&g, 8 << 20), 2054);
        let plans = plan_rgrps(&g, 16384, 1, 8, 256).unwrap();
        assert_eq!(plans.len(), 2);
        assert_eq!(
            plans[0].ri,
            Rindex {
                ri_addr: 17,
                ri_length: 1,
                ri_data0: 18,
                ri_data: 2056,
                ri_bitbytes: 514
            }
        );
        assert_eq!(
            plans[1].ri,
            Rindex {
                ri_addr: 2074,
                ri_length: 1,
                ri_data0: 2075,
                ri_data: 14308,
                ri_bitbytes: 3577
            }
        );
        // 3 GiB, -r 32, 2 journals of 16 MiB.
        let plans = plan_rgrps(&g, 786_432, 2, 16, 32).unwrap();
        assert_eq!(plans.len(), 97);
        assert_eq!(plans[1].ri.ri_addr, 4126);
        assert_eq!(
            plans[2].ri,
            Rindex {
                ri_addr: 8235,
                ri_length: 1,
                ri_data0: 8236,
                ri_data: 8188,
                ri_bitbytes: 2047
            }
        );
        let last = plans[96];
        assert_eq!(last.ri.ri_addr + last.len, 786_432);
    }

    #[test]
    fn bitmap_blocks_cover_data() {
        for bs in [512u32, 1024, 2048, 4096] {
            let g = Geometry::new(bs);
            for len in [100u64, 5000, 65_536, 300_000] {
                let (bits, data) = rg_bitblocks(&g, len);
                let cap = 4 * u64::from(g.rg_bitbytes_first)
                    + 4 * u64::from(g.rg_bitbytes_more) * (bits - 1);
                assert!(cap >= data, "bs {bs} len {len}");
                assert!(bits + data <= len);
            }
        }
    }

    #[test]
    fn lock_tables_are_checked() {
        assert!(check_locktable(LockProto::LockDlm, "alpha:gfs0").is_ok());
        assert!(check_locktable(LockProto::LockDlm, "alphagfs0").is_err());
        assert!(check_locktable(LockProto::LockDlm, "al pha:x").is_err());
        assert!(check_locktable(LockProto::LockDlm, &format!("c:{}", "x".repeat(31))).is_err());
        assert!(check_locktable(LockProto::LockNolock, "").is_ok());
    }

    #[test]
    fn uuid_formats() {
        let u = [
            0xea, 0xea, 0x8f, 0x7e, 0x5b, 0xaf, 0x41, 0x20, 0x9e, 0x6d, 0x29, 0x46, 0xa2, 0x1d,
            0xad, 0x89,
        ];
        assert_eq!(uuid_string(&u), "eaea8f7e-5baf-4120-9e6d-2946a21dad89");
    }
}
