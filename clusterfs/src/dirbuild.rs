//! Directory blocks as data: packing and parsing dirent regions, and laying
//! out a whole directory (linear in the dinode, or an extendible hash with a
//! stuffed table and leaves) from a list of entries.

use thiserror::Error;

use crate::ondisk::{disk_hash, Dirent, Geometry, Inum, Leaf, OndiskError, GFS2_FORMAT_DE};

/// Errors laying out or parsing directories.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DirLayoutError {
    /// More entries than a leaf at the table's full depth can hold.
    #[error("too many entries with the same hash prefix for one leaf")]
    LeafOverflow,
    /// A name is empty or longer than 255 bytes.
    #[error("bad name length {0}")]
    BadName(usize),
    /// A dirent record is malformed.
    #[error("corrupt directory entry: {0}")]
    Corrupt(#[from] OndiskError),
}

/// An entry to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntryIn {
    /// Name bytes.
    pub name: Vec<u8>,
    /// Target inode.
    pub inum: Inum,
    /// `de_type`.
    pub de_type: u16,
}

/// A parsed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntryOut {
    /// The record header.
    pub dirent: Dirent,
    /// Name bytes.
    pub name: Vec<u8>,
    /// Byte offset of the record in its region.
    pub offset: usize,
}

fn check_name(e: &DirEntryIn) -> Result<(), DirLayoutError> {
    if e.name.is_empty() || e.name.len() > 255 {
        return Err(DirLayoutError::BadName(e.name.len()));
    }
    Ok(())
}

/// Bytes the entries need in a dirent region.
pub fn space_needed(entries: &[DirEntryIn]) -> usize {
    entries
        .iter()
        .map(|e| Dirent::rec_len_for(e.name.len()))
        .sum()
}

/// Packs `entries` into a region of `len` bytes; the last record (or an
/// empty record when there are none) stretches to the end of the region.
pub fn pack_dirents(entries: &[DirEntryIn], len: usize) -> Result<Vec<u8>, DirLayoutError> {
    assert!(space_needed(entries) <= len && len >= Dirent::SIZE);
    let mut buf = vec![0u8; len];
    if entries.is_empty() {
        let de = Dirent {
            de_rec_len: len as u16,
            ..Default::default()
        };
        de.encode_at(&mut buf, 0);
        return Ok(buf);
    }
    let mut off = 0;
    for (i, e) in entries.iter().enumerate() {
        check_name(e)?;
        let rec = if i + 1 == entries.len() {
            len - off
        } else {
            Dirent::rec_len_for(e.name.len())
        };
        let de = Dirent {
            de_inum: e.inum,
            de_hash: disk_hash(&e.name),
            de_rec_len: rec as u16,
            de_name_len: e.name.len() as u16,
            de_type: e.de_type,
            de_rahead: 0,
        };
        de.encode_at(&mut buf, off);
        buf[off + Dirent::SIZE..off + Dirent::SIZE + e.name.len()].copy_from_slice(&e.name);
        off += rec;
    }
    Ok(buf)
}

/// Parses every record of a dirent region, in use or not, checking that
/// they tile it exactly.
/// The entry named `name` (whose hash is `hash`) in a region of dirents,
/// as [`parse_dirents`] would find it, without copying a name: a lookup
/// walks a leaf of up to a few hundred entries on every create, lookup
/// and unlink.
pub fn find_dirent(
    region: &[u8],
    hash: u32,
    name: &[u8],
) -> Result<Option<Dirent>, DirLayoutError> {
    let mut off = 0;
    while off < region.len() {
        let de = Dirent::decode_at(region, off)?;
        let n = usize::from(de.de_name_len);
        if de.in_use()
            && de.de_hash == hash
            && &region[off + Dirent::SIZE..off + Dirent::SIZE + n] == name
        {
            return Ok(Some(de));
        }
        off += usize::from(de.de_rec_len);
    }
    Ok(None)
}

pub fn parse_dirents(region: &[u8]) -> Result<Vec<DirEntryOut>, DirLayoutError> {
    let mut out = Vec::new();
    let mut off = 0;
    while off < region.len() {
        let de = Dirent::decode_at(region, off)?;
        let n = usize::from(de.de_name_len);
        let name = region[off + Dirent::SIZE..off + Dirent::SIZE + n].to_vec();
        out.push(DirEntryOut {
            dirent: de,
            name,
            offset: off,
        });
        off += usize::from(de.de_rec_len);
    }
    Ok(out)
}

/// A directory laid out: what goes after the dinode header, and the leaf
/// blocks to allocate.
#[derive(Debug, Clone)]
pub struct DirLayout {
    /// `di_size`.
    pub size: u64,
    /// `di_depth` (0 = linear).
    pub depth: u16,
    /// Full leaf blocks, in allocation order.
    pub leaves: Vec<Vec<u8>>,
    /// For exhash: the leaf index of each hash table slot.
    pub table: Vec<usize>,
    /// For linear: the stuffed dirent region.
    pub stuffed: Option<Vec<u8>>,
}

impl DirLayout {
    /// The dinode payload once the leaves have block addresses `addrs`.
    pub fn payload(&self, addrs: &[u64]) -> Vec<u8> {
        if let Some(s) = &self.stuffed {
            return s.clone();
        }
        let mut p = vec![0u8; self.table.len() * 8];
        for (i, &leaf) in self.table.iter().enumerate() {
            p[i * 8..i * 8 + 8].copy_from_slice(&addrs[leaf].to_be_bytes());
        }
        p
    }
}

/// Lays out a directory with `entries` (including `.` and `..`): linear in
/// the dinode when they fit, otherwise an exhash whose table is stuffed in
/// the dinode (`bsize/2` bytes) and whose leaves split on hash bits until
/// each fits.
pub fn build_directory(
    geo: &Geometry,
    dir_addr: u64,
    entries: &[DirEntryIn],
    time: u64,
) -> Result<DirLayout, DirLayoutError> {
    let stuffed_len = geo.stuffed_max() as usize;
    if space_needed(entries) <= stuffed_len {
        let region = pack_dirents(entries, stuffed_len)?;
        return Ok(DirLayout {
            size: stuffed_len as u64,
            depth: 0,
            leaves: vec![],
            table: vec![],
            stuffed: Some(region),
        });
    }
    let ptrs = geo.hash_ptrs();
    let depth = ptrs.trailing_zeros() as u16;
    let mut layout = DirLayout {
        size: ptrs * 8,
        depth,
        leaves: vec![],
        table: vec![usize::MAX; ptrs as usize],
        stuffed: None,
    };
    let refs: Vec<&DirEntryIn> = entries.iter().collect();
    place_leaf(geo, dir_addr, time, &refs, 0, 0, &mut layout)?;
    assert!(layout.table.iter().all(|&l| l != usize::MAX));
    Ok(layout)
}

fn place_leaf(
    geo: &Geometry,
    dir_addr: u64,
    time: u64,
    entries: &[&DirEntryIn],
    prefix: u64,
    lf_depth: u16,
    layout: &mut DirLayout,
) -> Result<(), DirLayoutError> {
    let cap = geo.bsize as usize - Leaf::SIZE;
    let owned: Vec<DirEntryIn> = entries.iter().map(|e| (*e).clone()).collect();
    if space_needed(&owned) <= cap {
        let mut block = vec![0u8; geo.bsize as usize];
        let leaf = Leaf {
            lf_depth,
            lf_entries: owned.len() as u16,
            lf_dirent_format: GFS2_FORMAT_DE,
            lf_inode: dir_addr,
            lf_sec: time,
            ..Default::default()
        };
        leaf.encode(&mut block);
        block[Leaf::SIZE..].copy_from_slice(&pack_dirents(&owned, cap)?);
        let idx = layout.leaves.len();
        layout.leaves.push(block);
        let span = 1u64 << (layout.depth - lf_depth);
        for s in prefix * span..(prefix + 1) * span {
            layout.table[s as usize] = idx;
        }
        return Ok(());
    }
    if lf_depth == layout.depth {
        return Err(DirLayoutError::LeafOverflow);
    }
    let bit = 31 - u32::from(lf_depth);
    let (ones, zeros): (Vec<&DirEntryIn>, Vec<&DirEntryIn>) = entries
        .iter()
        .partition(|e| (disk_hash(&e.name) >> bit) & 1 == 1);
    place_leaf(
        geo,
        dir_addr,
        time,
        &zeros,
        prefix * 2,
        lf_depth + 1,
        layout,
    )?;
    place_leaf(
        geo,
        dir_addr,
        time,
        &ones,
        prefix * 2 + 1,
        lf_depth + 1,
        layout,
    )
}

/// Hash table slot of a name in a table of depth `depth`.
pub fn hash_slot(name: &[u8], depth: u16) -> usize {
    if depth == 0 {
        return 0;
    }
    (disk_hash(name) >> (32 - u32::from(depth))) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(name: &str, addr: u64) -> DirEntryIn {
        DirEntryIn {
            name: name.as_bytes().to_vec(),
            inum: Inum {
                no_formal_ino: addr,
                no_addr: addr,
            },
            de_type: 8,
        }
    }

    #[test]
    fn find_dirent_finds_what_parse_dirents_lists() {
        let g = Geometry::new(4096);
        let es: Vec<_> = (0..200u64)
            .map(|i| ent(&format!("f{i}"), 100 + i))
            .collect();
        let l = build_directory(&g, 10, &es, 0).unwrap();
        assert!(!l.leaves.is_empty());
        for leaf in &l.leaves {
            let region = &leaf[Leaf::SIZE..];
            for e in parse_dirents(region)
                .unwrap()
                .iter()
                .filter(|e| e.dirent.in_use())
            {
                let found = find_dirent(region, e.dirent.de_hash, &e.name).unwrap();
                assert_eq!(found.map(|d| d.de_inum), Some(e.dirent.de_inum));
            }
            let h = crate::ondisk::disk_hash(b"absent");
            assert!(find_dirent(region, h, b"absent").unwrap().is_none());
        }
    }

    #[test]
    fn linear_round_trip() {
        let g = Geometry::new(4096);
        let es = vec![ent(".", 10), ent("..", 10), ent("file", 11)];
        let l = build_directory(&g, 10, &es, 0).unwrap();
        assert_eq!(l.depth, 0);
        let region = l.stuffed.unwrap();
        let parsed = parse_dirents(&region).unwrap();
        assert_eq!(parsed.len(), 3);
        assert_eq!(parsed[2].name, b"file");
        assert_eq!(
            usize::from(parsed[2].dirent.de_rec_len) + parsed[2].offset,
            region.len()
        );
    }

    #[test]
    fn exhash_puts_every_name_in_its_slots_leaf() {
        let g = Geometry::new(512);
        let es: Vec<DirEntryIn> = (0..40).map(|i| ent(&format!("name{i}"), 100 + i)).collect();
        let l = build_directory(&g, 10, &es, 0).unwrap();
        assert_eq!(l.depth, 5);
        let mut found = 0;
        for e in &es {
            let leaf = &l.leaves[l.table[hash_slot(&e.name, l.depth)]];
            let hdr = Leaf::decode(leaf).unwrap();
            let ents = parse_dirents(&leaf[Leaf::SIZE..]).unwrap();
            assert!(ents.iter().any(|d| d.name == e.name && d.dirent.in_use()));
            // The leaf's depth says how many slots point at it.
            let span = 1usize << (l.depth - hdr.lf_depth);
            let idx = l.table[hash_slot(&e.name, l.depth)];
            assert_eq!(l.table.iter().filter(|&&x| x == idx).count(), span);
            found += 1;
        }
        assert_eq!(found, 40);
    }
}
