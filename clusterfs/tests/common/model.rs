//! A reference model of a POSIX filesystem and a seeded random operation
//! exerciser that drives a filesystem under test and the model side by side
//! and compares them after every step.
//!
//! Shared by the core tests (clusterfs/tests) and the FUSE tests
//! (tests/tests/clusterfs_fuse.rs includes this file by path).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

/// A small seeded PRNG (splitmix64), so this file needs no crates beyond
/// `libc` wherever it is included.
pub struct Rng64(u64);

impl Rng64 {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng64(seed ^ 0x5851_f42d_4c95_7f2d)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `r` (which must not be empty).
    pub fn range(&mut self, r: std::ops::Range<u64>) -> u64 {
        r.start + self.next_u64() % (r.end - r.start)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// An errno.
pub type Errno = i32;

/// Entry kinds the exerciser creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
}

/// What the exerciser needs from a filesystem, by path ("" is the root,
/// components separated by '/').
pub trait Target {
    /// Creates an empty regular file.
    fn create(&mut self, path: &str) -> Result<(), Errno>;
    /// Creates a directory.
    fn mkdir(&mut self, path: &str) -> Result<(), Errno>;
    /// Writes at an offset.
    fn write(&mut self, path: &str, off: u64, data: &[u8]) -> Result<(), Errno>;
    /// Sets the size.
    fn truncate(&mut self, path: &str, size: u64) -> Result<(), Errno>;
    /// Renames (replacing a compatible target).
    fn rename(&mut self, from: &str, to: &str) -> Result<(), Errno>;
    /// Adds a hard link.
    fn link(&mut self, from: &str, to: &str) -> Result<(), Errno>;
    /// Removes a file.
    fn unlink(&mut self, path: &str) -> Result<(), Errno>;
    /// Removes an empty directory.
    fn rmdir(&mut self, path: &str) -> Result<(), Errno>;
    /// Whole contents of a file.
    fn read_all(&mut self, path: &str) -> Result<Vec<u8>, Errno>;
    /// Names and kinds in a directory, without "." and "..", sorted.
    fn list(&mut self, path: &str) -> Result<Vec<(String, Kind)>, Errno>;
    /// Link count.
    fn nlink(&mut self, path: &str) -> Result<u32, Errno>;
    /// Makes everything durable.
    fn sync(&mut self) -> Result<(), Errno>;
    /// Sets an extended attribute (create or replace).
    fn setxattr(&mut self, path: &str, name: &str, value: &[u8]) -> Result<(), Errno>;
    /// Removes an extended attribute.
    fn removexattr(&mut self, path: &str, name: &str) -> Result<(), Errno>;
    /// Every extended attribute with its value.
    fn xattrs(&mut self, path: &str) -> Result<BTreeMap<String, Vec<u8>>, Errno>;
    /// fallocate(2) on a regular file.
    fn fallocate(&mut self, path: &str, mode: i32, off: u64, len: u64) -> Result<(), Errno>;
    /// renameat2(2) with [`RENAME_NOREPLACE`] or [`RENAME_EXCHANGE`].
    fn rename2(&mut self, from: &str, to: &str, flags: u32) -> Result<(), Errno>;
}

/// renameat2 flag: fail with EEXIST if the target exists.
pub const RENAME_NOREPLACE: u32 = 1;
/// renameat2 flag: swap the two entries.
pub const RENAME_EXCHANGE: u32 = 2;
/// fallocate modes (linux/falloc.h).
pub const FALLOC_KEEP_SIZE: i32 = 0x01;
/// Punch a hole (only with KEEP_SIZE).
pub const FALLOC_PUNCH_HOLE: i32 = 0x02;
/// Collapse a range (unsupported here).
pub const FALLOC_COLLAPSE_RANGE: i32 = 0x08;
/// Zero a range.
pub const FALLOC_ZERO_RANGE: i32 = 0x10;

#[derive(Debug, Clone)]
enum Node {
    File { data: Vec<u8>, nlink: u32 },
    Dir { entries: BTreeMap<String, u64> },
}

/// The reference model.
#[derive(Debug, Clone)]
pub struct Model {
    nodes: HashMap<u64, Node>,
    next: u64,
    xattrs: HashMap<u64, BTreeMap<String, Vec<u8>>>,
}

const ROOT: u64 = 0;

impl Default for Model {
    fn default() -> Self {
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node::Dir {
                entries: BTreeMap::new(),
            },
        );
        Model {
            nodes,
            next: 1,
            xattrs: HashMap::new(),
        }
    }
}

fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

impl Model {
    fn resolve(&self, path: &str) -> Result<u64, Errno> {
        let mut cur = ROOT;
        for c in path.split('/').filter(|c| !c.is_empty()) {
            match &self.nodes[&cur] {
                Node::Dir { entries } => cur = *entries.get(c).ok_or(libc::ENOENT)?,
                Node::File { .. } => return Err(libc::ENOTDIR),
            }
        }
        Ok(cur)
    }

    fn parent_of(&self, path: &str) -> Result<(u64, String), Errno> {
        let (p, name) = split(path);
        let id = self.resolve(p)?;
        match self.nodes[&id] {
            Node::Dir { .. } => Ok((id, name.to_string())),
            _ => Err(libc::ENOTDIR),
        }
    }

    fn entries(&mut self, dir: u64) -> &mut BTreeMap<String, u64> {
        match self.nodes.get_mut(&dir) {
            Some(Node::Dir { entries }) => entries,
            _ => panic!("not a dir"),
        }
    }

    fn is_dir(&self, id: u64) -> bool {
        matches!(self.nodes[&id], Node::Dir { .. })
    }

    fn add(&mut self, path: &str, node: Node) -> Result<(), Errno> {
        let (dir, name) = self.parent_of(path)?;
        if self.entries(dir).contains_key(&name) {
            return Err(libc::EEXIST);
        }
        let id = self.next;
        self.next += 1;
        self.nodes.insert(id, node);
        self.entries(dir).insert(name, id);
        Ok(())
    }

    fn file_mut(&mut self, path: &str) -> Result<&mut Vec<u8>, Errno> {
        let id = self.resolve(path)?;
        match self.nodes.get_mut(&id) {
            Some(Node::File { data, .. }) => Ok(data),
            _ => Err(libc::EISDIR),
        }
    }

    /// True when directory `anc` is `id` or contains it.
    fn contains(&self, anc: u64, id: u64) -> bool {
        if anc == id {
            return true;
        }
        match &self.nodes[&anc] {
            Node::Dir { entries } => entries
                .values()
                .any(|&c| self.is_dir(c) && self.contains(c, id)),
            _ => false,
        }
    }

    fn drop_link(&mut self, id: u64) {
        if let Some(Node::File { nlink, .. }) = self.nodes.get_mut(&id) {
            *nlink -= 1;
            if *nlink == 0 {
                self.nodes.remove(&id);
            }
        } else {
            self.nodes.remove(&id);
        }
    }
}

impl Target for Model {
    fn create(&mut self, path: &str) -> Result<(), Errno> {
        self.add(
            path,
            Node::File {
                data: vec![],
                nlink: 1,
            },
        )
    }

    fn mkdir(&mut self, path: &str) -> Result<(), Errno> {
        self.add(
            path,
            Node::Dir {
                entries: BTreeMap::new(),
            },
        )
    }

    fn write(&mut self, path: &str, off: u64, data: &[u8]) -> Result<(), Errno> {
        let f = self.file_mut(path)?;
        if data.is_empty() {
            return Ok(());
        }
        let end = off as usize + data.len();
        if f.len() < end {
            f.resize(end, 0);
        }
        f[off as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn truncate(&mut self, path: &str, size: u64) -> Result<(), Errno> {
        self.file_mut(path)?.resize(size as usize, 0);
        Ok(())
    }

    fn rename(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        let (sdir, sname) = self.parent_of(from)?;
        let src = *self.entries(sdir).get(&sname).ok_or(libc::ENOENT)?;
        // The VFS refuses to move something below itself before it looks
        // at what the new parent is.
        if to.starts_with(&format!("{from}/"))
            && (split(to).0 == from || self.resolve(split(to).0).is_ok())
        {
            return Err(libc::EINVAL);
        }
        // ... and to replace one of its own ancestors.
        if from.starts_with(&format!("{to}/")) {
            return Err(libc::ENOTEMPTY);
        }
        let (ddir, dname) = self.parent_of(to)?;
        let dst = self.entries(ddir).get(&dname).copied();
        if let Some(d) = dst {
            if d == src {
                return Ok(());
            }
            match (self.is_dir(src), self.is_dir(d)) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                (true, true) => {
                    if let Node::Dir { entries } = &self.nodes[&d] {
                        if !entries.is_empty() {
                            return Err(libc::ENOTEMPTY);
                        }
                    }
                }
                _ => {}
            }
        }
        if self.is_dir(src) && self.contains(src, ddir) {
            return Err(libc::EINVAL);
        }
        if let Some(d) = dst {
            self.entries(ddir).remove(&dname);
            self.drop_link(d);
        }
        self.entries(sdir).remove(&sname);
        self.entries(ddir).insert(dname, src);
        Ok(())
    }

    fn link(&mut self, from: &str, to: &str) -> Result<(), Errno> {
        let id = self.resolve(from)?;
        if self.is_dir(id) {
            return Err(libc::EPERM);
        }
        let (dir, name) = self.parent_of(to)?;
        if self.entries(dir).contains_key(&name) {
            return Err(libc::EEXIST);
        }
        self.entries(dir).insert(name, id);
        if let Some(Node::File { nlink, .. }) = self.nodes.get_mut(&id) {
            *nlink += 1;
        }
        Ok(())
    }

    fn unlink(&mut self, path: &str) -> Result<(), Errno> {
        let (dir, name) = self.parent_of(path)?;
        let id = *self.entries(dir).get(&name).ok_or(libc::ENOENT)?;
        if self.is_dir(id) {
            return Err(libc::EISDIR);
        }
        self.entries(dir).remove(&name);
        self.drop_link(id);
        Ok(())
    }

    fn rmdir(&mut self, path: &str) -> Result<(), Errno> {
        let (dir, name) = self.parent_of(path)?;
        let id = *self.entries(dir).get(&name).ok_or(libc::ENOENT)?;
        match &self.nodes[&id] {
            Node::File { .. } => return Err(libc::ENOTDIR),
            Node::Dir { entries } if !entries.is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.entries(dir).remove(&name);
        self.nodes.remove(&id);
        Ok(())
    }

    fn read_all(&mut self, path: &str) -> Result<Vec<u8>, Errno> {
        Ok(self.file_mut(path)?.clone())
    }

    fn list(&mut self, path: &str) -> Result<Vec<(String, Kind)>, Errno> {
        let id = self.resolve(path)?;
        let Node::Dir { entries } = &self.nodes[&id] else {
            return Err(libc::ENOTDIR);
        };
        Ok(entries
            .iter()
            .map(|(n, &c)| {
                (
                    n.clone(),
                    if self.is_dir(c) {
                        Kind::Dir
                    } else {
                        Kind::File
                    },
                )
            })
            .collect())
    }

    fn nlink(&mut self, path: &str) -> Result<u32, Errno> {
        let id = self.resolve(path)?;
        Ok(match &self.nodes[&id] {
            Node::File { nlink, .. } => *nlink,
            Node::Dir { entries } => {
                2 + entries.values().filter(|&&c| self.is_dir(c)).count() as u32
            }
        })
    }

    fn sync(&mut self) -> Result<(), Errno> {
        Ok(())
    }

    fn setxattr(&mut self, path: &str, name: &str, value: &[u8]) -> Result<(), Errno> {
        let id = self.resolve(path)?;
        self.xattrs
            .entry(id)
            .or_default()
            .insert(name.to_string(), value.to_vec());
        Ok(())
    }

    fn removexattr(&mut self, path: &str, name: &str) -> Result<(), Errno> {
        let id = self.resolve(path)?;
        self.xattrs
            .entry(id)
            .or_default()
            .remove(name)
            .map(|_| ())
            .ok_or(libc::ENODATA)
    }

    fn xattrs(&mut self, path: &str) -> Result<BTreeMap<String, Vec<u8>>, Errno> {
        let id = self.resolve(path)?;
        Ok(self.xattrs.get(&id).cloned().unwrap_or_default())
    }

    fn fallocate(&mut self, path: &str, mode: i32, off: u64, len: u64) -> Result<(), Errno> {
        if len == 0 {
            return Err(libc::EINVAL);
        }
        let keep = mode & FALLOC_KEEP_SIZE != 0;
        let (zero, grow) = match mode & !FALLOC_KEEP_SIZE {
            0 => (false, !keep),
            FALLOC_PUNCH_HOLE if keep => (true, false),
            FALLOC_ZERO_RANGE => (true, !keep),
            _ => return Err(libc::EOPNOTSUPP),
        };
        let f = self.file_mut(path)?;
        let end = (off + len) as usize;
        if zero {
            let hi = end.min(f.len());
            if (off as usize) < hi {
                f[off as usize..hi].fill(0);
            }
        }
        if grow && f.len() < end {
            f.resize(end, 0);
        }
        Ok(())
    }

    fn rename2(&mut self, from: &str, to: &str, flags: u32) -> Result<(), Errno> {
        if flags == RENAME_NOREPLACE | RENAME_EXCHANGE {
            return Err(libc::EINVAL);
        }
        if flags == 0 {
            return self.rename(from, to);
        }
        let (sdir, sname) = self.parent_of(from)?;
        let src = *self.entries(sdir).get(&sname).ok_or(libc::ENOENT)?;
        let (ddir, dname) = self.parent_of(to)?;
        let dst = self.entries(ddir).get(&dname).copied();
        if flags == RENAME_NOREPLACE {
            if dst.is_some() {
                return Err(libc::EEXIST);
            }
            return self.rename(from, to);
        }
        let d = dst.ok_or(libc::ENOENT)?;
        // The VFS: neither may be an ancestor of the other.
        if to.starts_with(&format!("{from}/")) || from.starts_with(&format!("{to}/")) {
            return Err(libc::EINVAL);
        }
        if d == src {
            return Ok(());
        }
        self.entries(sdir).insert(sname, d);
        self.entries(ddir).insert(dname, src);
        Ok(())
    }
}

/// Every path in the model, directories first (parents before children).
pub fn all_paths(m: &mut Model) -> Vec<(String, Kind)> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        for (name, kind) in m.list(&dir).expect("model dir") {
            let p = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            if kind == Kind::Dir {
                stack.push(p.clone());
            }
            out.push((p, kind));
        }
    }
    out
}

/// Compares the whole tree of `t` against the model.
pub fn compare(m: &mut Model, t: &mut dyn Target) -> Result<(), String> {
    let mut dirs = vec![String::new()];
    while let Some(d) = dirs.pop() {
        let want = m.list(&d).unwrap();
        let got = t.list(&d).map_err(|e| format!("list {d:?}: errno {e}"))?;
        if want != got {
            return Err(format!("directory {d:?}: model {want:?} target {got:?}"));
        }
        for (name, kind) in want {
            let p = if d.is_empty() {
                name
            } else {
                format!("{d}/{name}")
            };
            let (wx, gx) = (
                m.xattrs(&p).unwrap(),
                t.xattrs(&p).map_err(|e| format!("xattrs {p}: {e}"))?,
            );
            if wx != gx {
                return Err(format!("{p}: xattrs model {wx:?} target {gx:?}"));
            }
            let (wn, gn) = (
                m.nlink(&p).unwrap(),
                t.nlink(&p).map_err(|e| format!("nlink {p}: {e}"))?,
            );
            if wn != gn {
                return Err(format!("{p}: nlink model {wn} target {gn}"));
            }
            match kind {
                Kind::Dir => dirs.push(p),
                Kind::File => {
                    let w = m.read_all(&p).unwrap();
                    let g = t.read_all(&p).map_err(|e| format!("read {p}: {e}"))?;
                    if w != g {
                        let at = w.iter().zip(&g).position(|(a, b)| a != b);
                        return Err(format!(
                            "{p}: contents differ (len {} vs {}, first diff {at:?})",
                            w.len(),
                            g.len()
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// One random operation.
#[derive(Debug, Clone)]
pub enum Op {
    /// create
    Create(String),
    /// mkdir
    Mkdir(String),
    /// write
    Write(String, u64, Vec<u8>),
    /// truncate
    Truncate(String, u64),
    /// rename
    Rename(String, String),
    /// link
    Link(String, String),
    /// unlink
    Unlink(String),
    /// rmdir
    Rmdir(String),
    /// setxattr
    SetXattr(String, String, Vec<u8>),
    /// removexattr
    RemoveXattr(String, String),
    /// fallocate: path, mode, offset, length
    Fallocate(String, i32, u64, u64),
    /// renameat2 with flags
    Rename2(String, String, u32),
}

impl Op {
    /// Applies the operation.
    pub fn apply(&self, t: &mut dyn Target) -> Result<(), Errno> {
        match self {
            Op::Create(p) => t.create(p),
            Op::Mkdir(p) => t.mkdir(p),
            Op::Write(p, off, d) => t.write(p, *off, d),
            Op::Truncate(p, s) => t.truncate(p, *s),
            Op::Rename(a, b) => t.rename(a, b),
            Op::Link(a, b) => t.link(a, b),
            Op::Unlink(p) => t.unlink(p),
            Op::Rmdir(p) => t.rmdir(p),
            Op::SetXattr(p, n, v) => t.setxattr(p, n, v),
            Op::RemoveXattr(p, n) => t.removexattr(p, n),
            Op::Fallocate(p, m, o, l) => t.fallocate(p, *m, *o, *l),
            Op::Rename2(a, b, f) => t.rename2(a, b, *f),
        }
    }
}

/// Generates operations from a seed, biased towards paths that exist.
pub struct Generator {
    rng: Rng64,
    /// Largest file offset used.
    pub max_offset: u64,
}

impl Generator {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Generator {
            rng: Rng64::new(seed),
            max_offset: 300_000,
        }
    }

    fn name(&mut self) -> String {
        const NAMES: [&str; 8] = [
            "a",
            "b",
            "c",
            "dd",
            "file",
            "x.txt",
            "long-name-0123456789",
            "z",
        ];
        NAMES[self.rng.range(0..NAMES.len() as u64) as usize].to_string()
    }

    fn existing(&mut self, m: &mut Model, kind: Option<Kind>) -> Option<String> {
        let all: Vec<String> = all_paths(m)
            .into_iter()
            .filter(|(_, k)| kind.is_none_or(|want| *k == want))
            .map(|(p, _)| p)
            .collect();
        if all.is_empty() {
            return None;
        }
        Some(all[self.rng.range(0..all.len() as u64) as usize].clone())
    }

    fn new_path(&mut self, m: &mut Model) -> String {
        let dir = if self.rng.chance(0.3) {
            String::new()
        } else {
            self.existing(m, Some(Kind::Dir)).unwrap_or_default()
        };
        let name = self.name();
        if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        }
    }

    fn data(&mut self) -> Vec<u8> {
        let len = match self.rng.range(0..10) {
            0..=5 => self.rng.range(1..5000),
            6..=8 => self.rng.range(1..70_000),
            _ => 0,
        };
        let seed = self.rng.next_u64() as u8;
        (0..len)
            .map(|i| seed.wrapping_add((i % 251) as u8))
            .collect()
    }

    /// The next operation for the current model state.
    pub fn next(&mut self, m: &mut Model) -> Op {
        let file = self.existing(m, Some(Kind::File));
        let any = self.existing(m, None);
        const XNAMES: [&str; 3] = ["user.a", "user.bb", "trusted.t"];
        let xname = XNAMES[self.rng.range(0..3) as usize].to_string();
        match self.rng.range(0..122) {
            110..=115 if file.is_some() => {
                const MODES: [i32; 7] = [
                    0,
                    FALLOC_KEEP_SIZE,
                    FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE,
                    FALLOC_PUNCH_HOLE | FALLOC_KEEP_SIZE,
                    FALLOC_ZERO_RANGE,
                    FALLOC_ZERO_RANGE | FALLOC_KEEP_SIZE,
                    FALLOC_COLLAPSE_RANGE,
                ];
                let mode = MODES[self.rng.range(0..MODES.len() as u64) as usize];
                let off = self.rng.range(0..self.max_offset);
                let len = self.rng.range(1..100_000);
                Op::Fallocate(file.unwrap(), mode, off, len)
            }
            116..=121 if any.is_some() => {
                let to = if self.rng.chance(0.7) {
                    self.existing(m, None).unwrap()
                } else {
                    self.new_path(m)
                };
                let flags = if self.rng.chance(0.5) {
                    RENAME_EXCHANGE
                } else {
                    RENAME_NOREPLACE
                };
                Op::Rename2(any.unwrap(), to, flags)
            }
            100..=105 if any.is_some() => {
                // Now and then a value that needs ED blocks.
                let len = if self.rng.chance(0.15) {
                    self.rng.range(100..20_000)
                } else {
                    self.rng.range(0..100)
                } as usize;
                let v: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7)).collect();
                Op::SetXattr(any.unwrap(), xname, v)
            }
            106..=109 if any.is_some() => Op::RemoveXattr(any.unwrap(), xname),
            0..=17 => Op::Create(self.new_path(m)),
            18..=25 => Op::Mkdir(self.new_path(m)),
            26..=50 if file.is_some() => {
                let off = if self.rng.chance(0.5) {
                    0
                } else {
                    self.rng.range(0..self.max_offset)
                };
                Op::Write(file.unwrap(), off, self.data())
            }
            51..=60 if file.is_some() => {
                let size = self.rng.range(0..self.max_offset);
                Op::Truncate(file.unwrap(), if self.rng.chance(0.3) { 0 } else { size })
            }
            61..=72 if any.is_some() => {
                let to = if self.rng.chance(0.5) {
                    self.existing(m, None).unwrap()
                } else {
                    self.new_path(m)
                };
                Op::Rename(any.unwrap(), to)
            }
            73..=80 if file.is_some() => Op::Link(file.unwrap(), self.new_path(m)),
            81..=90 if file.is_some() => Op::Unlink(file.unwrap()),
            91..=99 => {
                let d = self
                    .existing(m, Some(Kind::Dir))
                    .unwrap_or_else(|| self.name());
                Op::Rmdir(d)
            }
            _ => Op::Create(self.new_path(m)),
        }
    }
}

/// Runs `steps` random operations on `t` and the model, comparing results
/// and whole trees after each; calls `between(step, t)` after each step
/// (for remounts or syncs). Returns the model.
pub fn run<T: Target>(
    seed: u64,
    steps: usize,
    t: &mut T,
    between: &mut dyn FnMut(usize, &mut T),
) -> Model {
    let mut m = Model::default();
    let mut g = Generator::new(seed);
    for step in 0..steps {
        let op = g.next(&mut m);
        let want = op.apply(&mut m);
        let got = op.apply(t);
        assert_eq!(
            want, got,
            "seed {seed} step {step}: {op:?}: model {want:?} target {got:?}"
        );
        between(step, t);
        if let Err(e) = compare(&mut m, t) {
            panic!("seed {seed} step {step} after {op:?}: {e}");
        }
    }
    m
}
