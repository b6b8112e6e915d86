//! The GFS2 on-disk format as data: plain structs with `decode`/`encode`,
//! named as in the kernel's `include/uapi/linux/gfs2_ondisk.h`.
//!
//! Everything on disk is big-endian. Each struct knows its encoded size
//! (`SIZE`) and checks its metadata header on decode; a short buffer or a
//! wrong magic/type is an [`OndiskError`], never a panic.

use thiserror::Error;

/// Errors decoding on-disk structures.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OndiskError {
    /// The buffer is shorter than the structure.
    #[error("buffer of {got} bytes is too short for {what} ({need} bytes)")]
    Short {
        /// Structure name.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        got: usize,
    },
    /// The block does not start with the GFS2 magic number.
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    /// The metadata header has another type than expected.
    #[error("metadata type {got} where {want} was expected")]
    WrongType {
        /// Expected `mh_type`.
        want: u32,
        /// Found `mh_type`.
        got: u32,
    },
    /// A field holds a value the format does not allow.
    #[error("invalid {field}: {value}")]
    Invalid {
        /// Field name.
        field: &'static str,
        /// Offending value.
        value: u64,
    },
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, OndiskError>;

/// `GFS2_MAGIC`.
pub const GFS2_MAGIC: u32 = 0x0116_1970;
/// `GFS2_BASIC_BLOCK`: the unit of `GFS2_SB_ADDR`.
pub const GFS2_BASIC_BLOCK: u64 = 512;
/// `GFS2_SB_ADDR` in basic blocks: the superblock lives at byte 65536.
pub const GFS2_SB_ADDR: u64 = 128;
/// Byte offset of the superblock.
pub const SB_BYTE_OFFSET: u64 = GFS2_SB_ADDR * GFS2_BASIC_BLOCK;
/// `GFS2_FORMAT_FS`: the filesystem format this crate writes.
pub const GFS2_FORMAT_FS: u32 = 1802;
/// `GFS2_FORMAT_MULTI`.
pub const GFS2_FORMAT_MULTI: u32 = 1900;
/// `GFS2_LOCKNAME_LEN`.
pub const GFS2_LOCKNAME_LEN: usize = 64;
/// Maximum file name length.
pub const GFS2_FNAMESIZE: usize = 255;
/// Maximum height of a metadata tree.
pub const GFS2_MAX_META_HEIGHT: u16 = 10;
/// Maximum directory hash table depth.
pub const GFS2_DIR_MAX_DEPTH: u16 = 17;

/// Metadata block types (`GFS2_METATYPE_*`) with their formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum MetaType {
    /// Superblock.
    Sb = 1,
    /// Resource group header.
    Rg = 2,
    /// Resource group bitmap block.
    Rb = 3,
    /// Dinode.
    Di = 4,
    /// Indirect block.
    In = 5,
    /// Directory leaf.
    Lf = 6,
    /// Journaled data block.
    Jd = 7,
    /// Log header.
    Lh = 8,
    /// Log descriptor.
    Ld = 9,
    /// Extended attribute block.
    Ea = 10,
    /// Extended attribute data block.
    Ed = 11,
    /// Log continuation block.
    Lb = 12,
    /// Quota change block.
    Qc = 14,
}

impl MetaType {
    /// The `mh_format` that goes with this type (`GFS2_FORMAT_*`).
    pub fn format(self) -> u32 {
        match self {
            MetaType::Sb => 100,
            MetaType::Rg => 200,
            MetaType::Rb => 300,
            MetaType::Di => 400,
            MetaType::In => 500,
            MetaType::Lf => 600,
            MetaType::Jd => 700,
            MetaType::Lh => 800,
            MetaType::Ld => 900,
            MetaType::Ea => 1600,
            MetaType::Ed => 1700,
            MetaType::Lb => 1000,
            MetaType::Qc => 1400,
        }
    }
}

/// `GFS2_FORMAT_RI`: payload format of the rindex file.
pub const GFS2_FORMAT_RI: u32 = 1100;
/// `GFS2_FORMAT_DE`: payload format of directories.
pub const GFS2_FORMAT_DE: u32 = 1200;
/// `GFS2_FORMAT_QU`: payload format of the quota file.
pub const GFS2_FORMAT_QU: u32 = 1500;

/// Dinode flags (`GFS2_DIF_*`).
pub mod dif {
    /// Journaled data.
    pub const JDATA: u32 = 0x0000_0001;
    /// Directory is an extendible hash.
    pub const EXHASH: u32 = 0x0000_0002;
    /// Unused (was EA_PACKED).
    pub const UNUSED: u32 = 0x0000_0004;
    /// Extended attributes are indirect.
    pub const EA_INDIRECT: u32 = 0x0000_0008;
    /// Direct I/O.
    pub const DIRECTIO: u32 = 0x0000_0010;
    /// Immutable.
    pub const IMMUTABLE: u32 = 0x0000_0020;
    /// Append only.
    pub const APPENDONLY: u32 = 0x0000_0040;
    /// No atime updates.
    pub const NOATIME: u32 = 0x0000_0080;
    /// Synchronous writes.
    pub const SYNC: u32 = 0x0000_0100;
    /// System file (in the master directory tree).
    pub const SYSTEM: u32 = 0x0000_0200;
    /// Top-level directory (Orlov allocator hint).
    pub const TOPDIR: u32 = 0x0000_0400;
    /// Truncate in progress.
    pub const TRUNC_IN_PROG: u32 = 0x2000_0000;
    /// New files inherit JDATA.
    pub const INHERIT_JDATA: u32 = 0x8000_0000;
}

/// Block states in resource group bitmaps (`GFS2_BLKST_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockState {
    /// Free.
    Free = 0,
    /// Used by data or metadata other than a dinode.
    Used = 1,
    /// An unlinked dinode still open somewhere.
    Unlinked = 2,
    /// A dinode.
    Dinode = 3,
}

impl BlockState {
    /// Decodes two bitmap bits.
    pub fn from_bits(bits: u8) -> Self {
        match bits & 3 {
            0 => BlockState::Free,
            1 => BlockState::Used,
            2 => BlockState::Unlinked,
            _ => BlockState::Dinode,
        }
    }
}

/// Resource group flags (`GFS2_RGF_*`).
pub mod rgf {
    /// Holds a journal.
    pub const JOURNAL: u32 = 1;
    /// Metadata only.
    pub const METAONLY: u32 = 2;
    /// Data only.
    pub const DATAONLY: u32 = 4;
    /// No allocations.
    pub const NOALLOC: u32 = 8;
    /// Trimmed.
    pub const TRIMMED: u32 = 0x10;
}

/// Log header flags (`GFS2_LOG_HEAD_*`).
pub mod log_head {
    /// Clean unmount.
    pub const UNMOUNT: u32 = 0x0000_0001;
    /// Normal log flush.
    pub const FLUSH_NORMAL: u32 = 0x0000_0002;
    /// Synchronous flush.
    pub const FLUSH_SYNC: u32 = 0x0000_0004;
    /// Shutdown flush.
    pub const FLUSH_SHUTDOWN: u32 = 0x0000_0008;
    /// Freeze flush.
    pub const FLUSH_FREEZE: u32 = 0x0000_0010;
    /// Written by recovery.
    pub const RECOVERY: u32 = 0x0000_0020;
    /// Written by userspace tools.
    pub const USERSPACE: u32 = 0x8000_0000;
}

/// Log descriptor types (`GFS2_LOG_DESC_*`).
pub mod log_desc {
    /// Metadata blocks follow.
    pub const METADATA: u32 = 300;
    /// Revoked block numbers.
    pub const REVOKE: u32 = 301;
    /// Journaled data blocks follow.
    pub const JDATA: u32 = 302;
}

/// Extended attribute types (`GFS2_EATYPE_*`).
pub mod eatype {
    /// Unused slot.
    pub const UNUSED: u8 = 0;
    /// `user.`
    pub const USR: u8 = 1;
    /// `system.`
    pub const SYS: u8 = 2;
    /// `security.`
    pub const SECURITY: u8 = 3;
    /// `trusted.`
    pub const TRUSTED: u8 = 4;
}

/// Directory entry file types (`DT_*`, stored in `de_type`).
pub mod dt {
    /// Unknown.
    pub const UNKNOWN: u16 = 0;
    /// FIFO.
    pub const FIFO: u16 = 1;
    /// Character device.
    pub const CHR: u16 = 2;
    /// Directory.
    pub const DIR: u16 = 4;
    /// Block device.
    pub const BLK: u16 = 6;
    /// Regular file.
    pub const REG: u16 = 8;
    /// Symbolic link.
    pub const LNK: u16 = 10;
    /// Socket.
    pub const SOCK: u16 = 12;
}

/// `de_type` for a mode's file type.
pub fn dt_from_mode(mode: u32) -> u16 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => dt::DIR,
        libc::S_IFREG => dt::REG,
        libc::S_IFLNK => dt::LNK,
        libc::S_IFCHR => dt::CHR,
        libc::S_IFBLK => dt::BLK,
        libc::S_IFIFO => dt::FIFO,
        libc::S_IFSOCK => dt::SOCK,
        _ => dt::UNKNOWN,
    }
}

// ---------------------------------------------------------------------------
// Big-endian field access.

fn need(what: &'static str, buf: &[u8], size: usize) -> Result<()> {
    if buf.len() < size {
        return Err(OndiskError::Short {
            what,
            need: size,
            got: buf.len(),
        });
    }
    Ok(())
}

/// Reads a be16 at `off`. The caller has checked the length.
pub fn be16(buf: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([buf[off], buf[off + 1]])
}

/// Reads a be32 at `off`. The caller has checked the length.
pub fn be32(buf: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(buf[off..off + 4].try_into().expect("4 bytes"))
}

/// Reads a be64 at `off`. The caller has checked the length.
pub fn be64(buf: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(buf[off..off + 8].try_into().expect("8 bytes"))
}

/// Writes a be16 at `off`.
pub fn put16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_be_bytes());
}

/// Writes a be32 at `off`.
pub fn put32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// Writes a be64 at `off`.
pub fn put64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_be_bytes());
}

// ---------------------------------------------------------------------------
// Checksums.

/// `gfs2_disk_hash`: the standard CRC-32 (as zlib's `crc32`), used for
/// directory entry names, `lh_hash` and `rg_crc`.
pub fn disk_hash(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

/// The raw CRC-32C used for `lh_crc`: seed `~0`, no final inversion.
pub fn lh_crc32c(data: &[u8]) -> u32 {
    !crc32c::crc32c(data)
}

// ---------------------------------------------------------------------------
// Structures.

/// `struct gfs2_meta_header`, 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MetaHeader {
    /// `mh_magic`.
    pub mh_magic: u32,
    /// `mh_type`.
    pub mh_type: u32,
    /// `mh_format`.
    pub mh_format: u32,
    /// `mh_jid`: journal id of the writer (log blocks only).
    pub mh_jid: u32,
}

impl MetaHeader {
    /// Encoded size.
    pub const SIZE: usize = 24;

    /// A header for `t` with its standard format.
    pub fn new(t: MetaType) -> Self {
        MetaHeader {
            mh_magic: GFS2_MAGIC,
            mh_type: t as u32,
            mh_format: t.format(),
            mh_jid: 0,
        }
    }

    /// Decodes without checking the type.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        need("gfs2_meta_header", buf, Self::SIZE)?;
        let mh = MetaHeader {
            mh_magic: be32(buf, 0),
            mh_type: be32(buf, 4),
            mh_format: be32(buf, 16),
            mh_jid: be32(buf, 20),
        };
        if mh.mh_magic != GFS2_MAGIC {
            return Err(OndiskError::BadMagic(mh.mh_magic));
        }
        Ok(mh)
    }

    /// Decodes and checks that the block has type `t`.
    pub fn decode_as(buf: &[u8], t: MetaType) -> Result<Self> {
        let mh = Self::decode(buf)?;
        if mh.mh_type != t as u32 {
            return Err(OndiskError::WrongType {
                want: t as u32,
                got: mh.mh_type,
            });
        }
        Ok(mh)
    }

    /// Encodes into the first 24 bytes (the 8 padding bytes are zeroed).
    pub fn encode(&self, buf: &mut [u8]) {
        put32(buf, 0, self.mh_magic);
        put32(buf, 4, self.mh_type);
        buf[8..16].fill(0);
        put32(buf, 16, self.mh_format);
        put32(buf, 20, self.mh_jid);
    }
}

/// The metadata type of a block, if it carries a valid header.
pub fn block_type(buf: &[u8]) -> Option<u32> {
    MetaHeader::decode(buf).ok().map(|mh| mh.mh_type)
}

/// `struct gfs2_inum`, 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct Inum {
    /// `no_formal_ino`.
    pub no_formal_ino: u64,
    /// `no_addr`: block address of the dinode.
    pub no_addr: u64,
}

impl Inum {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// Decodes at `off`.
    pub fn decode_at(buf: &[u8], off: usize) -> Self {
        Inum {
            no_formal_ino: be64(buf, off),
            no_addr: be64(buf, off + 8),
        }
    }

    /// Encodes at `off`.
    pub fn encode_at(&self, buf: &mut [u8], off: usize) {
        put64(buf, off, self.no_formal_ino);
        put64(buf, off + 8, self.no_addr);
    }
}

/// `struct gfs2_sb`, 272 bytes, at byte 65536.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// `sb_fs_format`.
    pub sb_fs_format: u32,
    /// `sb_multihost_format`.
    pub sb_multihost_format: u32,
    /// `sb_bsize`.
    pub sb_bsize: u32,
    /// `sb_bsize_shift`.
    pub sb_bsize_shift: u32,
    /// `sb_master_dir`.
    pub sb_master_dir: Inum,
    /// `sb_root_dir`.
    pub sb_root_dir: Inum,
    /// `sb_lockproto`, without the NUL padding.
    pub sb_lockproto: String,
    /// `sb_locktable`, without the NUL padding.
    pub sb_locktable: String,
    /// `sb_uuid`.
    pub sb_uuid: [u8; 16],
}

/// A NUL-terminated name field: UTF-8 and terminated inside the field, so
/// that encoding it again gives the same bytes (a lossy decode would turn
/// damaged bytes into U+FFFD and write those back).
fn decode_name(field: &'static str, buf: &[u8]) -> Result<String> {
    let end = buf
        .iter()
        .position(|&b| b == 0)
        .ok_or(OndiskError::Invalid {
            field,
            value: buf.len() as u64,
        })?;
    String::from_utf8(buf[..end].to_vec()).map_err(|e| OndiskError::Invalid {
        field,
        value: e.utf8_error().valid_up_to() as u64,
    })
}

fn encode_name(buf: &mut [u8], name: &str) {
    buf.fill(0);
    let n = name.len().min(buf.len() - 1);
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
}

impl Superblock {
    /// Encoded size.
    pub const SIZE: usize = 272;

    /// Decodes and checks header, format and block size.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        need("gfs2_sb", buf, Self::SIZE)?;
        MetaHeader::decode_as(buf, MetaType::Sb)?;
        let sb = Superblock {
            sb_fs_format: be32(buf, 24),
            sb_multihost_format: be32(buf, 28),
            sb_bsize: be32(buf, 36),
            sb_bsize_shift: be32(buf, 40),
            sb_master_dir: Inum::decode_at(buf, 48),
            sb_root_dir: Inum::decode_at(buf, 80),
            sb_lockproto: decode_name("sb_lockproto", &buf[96..160])?,
            sb_locktable: decode_name("sb_locktable", &buf[160..224])?,
            sb_uuid: buf[256..272].try_into().expect("16 bytes"),
        };
        let bs = sb.sb_bsize;
        if !(512..=65536).contains(&bs) || !bs.is_power_of_two() || 1 << sb.sb_bsize_shift != bs {
            return Err(OndiskError::Invalid {
                field: "sb_bsize",
                value: bs.into(),
            });
        }
        if sb.sb_fs_format != GFS2_FORMAT_FS && sb.sb_fs_format != 1801 {
            return Err(OndiskError::Invalid {
                field: "sb_fs_format",
                value: sb.sb_fs_format.into(),
            });
        }
        Ok(sb)
    }

    /// Encodes into `buf` (at least 272 bytes); other bytes are left alone.
    pub fn encode(&self, buf: &mut [u8]) {
        buf[..Self::SIZE].fill(0);
        MetaHeader::new(MetaType::Sb).encode(buf);
        put32(buf, 24, self.sb_fs_format);
        put32(buf, 28, self.sb_multihost_format);
        put32(buf, 36, self.sb_bsize);
        put32(buf, 40, self.sb_bsize_shift);
        self.sb_master_dir.encode_at(buf, 48);
        self.sb_root_dir.encode_at(buf, 80);
        encode_name(&mut buf[96..160], &self.sb_lockproto);
        encode_name(&mut buf[160..224], &self.sb_locktable);
        buf[256..272].copy_from_slice(&self.sb_uuid);
    }

    /// Block number of the superblock for this block size.
    pub fn block_addr(bsize: u32) -> u64 {
        SB_BYTE_OFFSET / u64::from(bsize)
    }
}

/// `struct gfs2_rindex`, 96 bytes: one record of the rindex file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rindex {
    /// `ri_addr`: block of the resource group header.
    pub ri_addr: u64,
    /// `ri_length`: header plus bitmap blocks.
    pub ri_length: u32,
    /// `ri_data0`: first data block.
    pub ri_data0: u64,
    /// `ri_data`: number of data blocks.
    pub ri_data: u32,
    /// `ri_bitbytes`: bytes of bitmap.
    pub ri_bitbytes: u32,
}

impl Rindex {
    /// Encoded size.
    pub const SIZE: usize = 96;

    /// Decodes one record.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        need("gfs2_rindex", buf, Self::SIZE)?;
        Ok(Rindex {
            ri_addr: be64(buf, 0),
            ri_length: be32(buf, 8),
            ri_data0: be64(buf, 16),
            ri_data: be32(buf, 24),
            ri_bitbytes: be32(buf, 28),
        })
    }

    /// Encodes one record (padding and reserved bytes zeroed).
    pub fn encode(&self, buf: &mut [u8]) {
        buf[..Self::SIZE].fill(0);
        put64(buf, 0, self.ri_addr);
        put32(buf, 8, self.ri_length);
        put64(buf, 16, self.ri_data0);
        put32(buf, 24, self.ri_data);
        put32(buf, 28, self.ri_bitbytes);
    }

    /// True when `blk` is one of this group's data blocks.
    pub fn contains_data(&self, blk: u64) -> bool {
        blk >= self.ri_data0 && blk < self.ri_data0 + u64::from(self.ri_data)
    }
}

/// `struct gfs2_rgrp`, 128 bytes: a resource group header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rgrp {
    /// `rg_flags`.
    pub rg_flags: u32,
    /// `rg_free`: free blocks.
    pub rg_free: u32,
    /// `rg_dinodes`: dinodes in this group.
    pub rg_dinodes: u32,
    /// `rg_skip`: distance to the next group's header (0 for the last).
    pub rg_skip: u32,
    /// `rg_igeneration`.
    pub rg_igeneration: u64,
    /// `rg_data0`.
    pub rg_data0: u64,
    /// `rg_data`.
    pub rg_data: u32,
    /// `rg_bitbytes`.
    pub rg_bitbytes: u32,
    /// `rg_crc` as found on disk (0: not checked).
    pub rg_crc: u32,
}

impl Rgrp {
    /// Encoded size; the bitmap follows at this offset.
    pub const SIZE: usize = 128;

    /// Decodes and, when `rg_crc` is non-zero, verifies it.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        need("gfs2_rgrp", buf, Self::SIZE)?;
        MetaHeader::decode_as(buf, MetaType::Rg)?;
        let rg = Rgrp {
            rg_flags: be32(buf, 24),
            rg_free: be32(buf, 28),
            rg_dinodes: be32(buf, 32),
            rg_skip: be32(buf, 36),
            rg_igeneration: be64(buf, 40),
            rg_data0: be64(buf, 48),
            rg_data: be32(buf, 56),
            rg_bitbytes: be32(buf, 60),
            rg_crc: be32(buf, 64),
        };
        if rg.rg_crc != 0 && rg.rg_crc != Self::crc(buf) {
            return Err(OndiskError::Invalid {
                field: "rg_crc",
                value: rg.rg_crc.into(),
            });
        }
        Ok(rg)
    }

    fn crc(buf: &[u8]) -> u32 {
        let mut tmp = [0u8; Self::SIZE];
        tmp.copy_from_slice(&buf[..Self::SIZE]);
        tmp[64..68].fill(0);
        disk_hash(&tmp)
    }

    /// Encodes the header (128 bytes) with a fresh `rg_crc`; the bitmap
    /// bytes after it are left alone.
    pub fn encode(&self, buf: &mut [u8]) {
        buf[..Self::SIZE].fill(0);
        MetaHeader::new(MetaType::Rg).encode(buf);
        put32(buf, 24, self.rg_flags);
        put32(buf, 28, self.rg_free);
        put32(buf, 32, self.rg_dinodes);
        put32(buf, 36, self.rg_skip);
        put64(buf, 40, self.rg_igeneration);
        put64(buf, 48, self.rg_data0);
        put32(buf, 56, self.rg_data);
        put32(buf, 60, self.rg_bitbytes);
        let crc = Self::crc(buf);
        put32(buf, 64, crc);
    }
}

/// `struct gfs2_dinode`, 232 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dinode {
    /// `di_num`.
    pub di_num: Inum,
    /// `di_mode`.
    pub di_mode: u32,
    /// `di_uid`.
    pub di_uid: u32,
    /// `di_gid`.
    pub di_gid: u32,
    /// `di_nlink`.
    pub di_nlink: u32,
    /// `di_size` in bytes.
    pub di_size: u64,
    /// `di_blocks`: all blocks, dinode and metadata included.
    pub di_blocks: u64,
    /// `di_atime` seconds.
    pub di_atime: u64,
    /// `di_mtime` seconds.
    pub di_mtime: u64,
    /// `di_ctime` seconds.
    pub di_ctime: u64,
    /// `di_major`.
    pub di_major: u32,
    /// `di_minor`.
    pub di_minor: u32,
    /// `di_goal_meta`.
    pub di_goal_meta: u64,
    /// `di_goal_data`.
    pub di_goal_data: u64,
    /// `di_generation`.
    pub di_generation: u64,
    /// `di_flags` ([`dif`]).
    pub di_flags: u32,
    /// `di_payload_format`.
    pub di_payload_format: u32,
    /// `di_height`: metadata tree height, 0 = stuffed.
    pub di_height: u16,
    /// `di_depth`: directory hash table depth.
    pub di_depth: u16,
    /// `di_entries`: directory entries.
    pub di_entries: u32,
    /// `di_eattr`: extended attribute block.
    pub di_eattr: u64,
    /// `di_atime_nsec`.
    pub di_atime_nsec: u32,
    /// `di_mtime_nsec`.
    pub di_mtime_nsec: u32,
    /// `di_ctime_nsec`.
    pub di_ctime_nsec: u32,
}

impl Dinode {
    /// Encoded size; stuffed data and pointers follow at this offset.
    pub const SIZE: usize = 232;

    /// Decodes and checks the header and tree bounds.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        need("gfs2_dinode", buf, Self::SIZE)?;
        MetaHeader::decode_as(buf, MetaType::Di)?;
        let di = Dinode {
            di_num: Inum::decode_at(buf, 24),
            di_mode: be32(buf, 40),
            di_uid: be32(buf, 44),
            di_gid: be32(buf, 48),
            di_nlink: be32(buf, 52),
            di_size: be64(buf, 56),
            di_blocks: be64(buf, 64),
            di_atime: be64(buf, 72),
            di_mtime: be64(buf, 80),
            di_ctime: be64(buf, 88),
            di_major: be32(buf, 96),
            di_minor: be32(buf, 100),
            di_goal_meta: be64(buf, 104),
            di_goal_data: be64(buf, 112),
            di_generation: be64(buf, 120),
            di_flags: be32(buf, 128),
            di_payload_format: be32(buf, 132),
            di_height: be16(buf, 138),
            di_depth: be16(buf, 146),
            di_entries: be32(buf, 148),
            di_eattr: be64(buf, 168),
            di_atime_nsec: be32(buf, 176),
            di_mtime_nsec: be32(buf, 180),
            di_ctime_nsec: be32(buf, 184),
        };
        if di.di_height > GFS2_MAX_META_HEIGHT {
            return Err(OndiskError::Invalid {
                field: "di_height",
                value: di.di_height.into(),
            });
        }
        if di.di_depth > GFS2_DIR_MAX_DEPTH {
            return Err(OndiskError::Invalid {
                field: "di_depth",
                value: di.di_depth.into(),
            });
        }
        Ok(di)
    }

    /// Encodes the 232-byte dinode header; the payload after it is left alone.
    pub fn encode(&self, buf: &mut [u8]) {
        buf[..Self::SIZE].fill(0);
        MetaHeader::new(MetaType::Di).encode(buf);
        self.di_num.encode_at(buf, 24);
        put32(buf, 40, self.di_mode);
        put32(buf, 44, self.di_uid);
        put32(buf, 48, self.di_gid);
        put32(buf, 52, self.di_nlink);
        put64(buf, 56, self.di_size);
        put64(buf, 64, self.di_blocks);
        put64(buf, 72, self.di_atime);
        put64(buf, 80, self.di_mtime);
        put64(buf, 88, self.di_ctime);
        put32(buf, 96, self.di_major);
        put32(buf, 100, self.di_minor);
        put64(buf, 104, self.di_goal_meta);
        put64(buf, 112, self.di_goal_data);
        put64(buf, 120, self.di_generation);
        put32(buf, 128, self.di_flags);
        put32(buf, 132, self.di_payload_format);
        put16(buf, 138, self.di_height);
        put16(buf, 146, self.di_depth);
        put32(buf, 148, self.di_entries);
        put64(buf, 168, self.di_eattr);
        put32(buf, 176, self.di_atime_nsec);
        put32(buf, 180, self.di_mtime_nsec);
        put32(buf, 184, self.di_ctime_nsec);
    }

    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.di_mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// `struct gfs2_leaf`, 104 bytes: a directory leaf block header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Leaf {
    /// `lf_depth`.
    pub lf_depth: u16,
    /// `lf_entries`.
    pub lf_entries: u16,
    /// `lf_dirent_format`.
    pub lf_dirent_format: u32,
    /// `lf_next`: next leaf in the chain.
    pub lf_next: u64,
    /// `lf_inode`: owning directory's block.
    pub lf_inode: u64,
    /// `lf_dist`.
    pub lf_dist: u32,
    /// `lf_nsec`.
    pub lf_nsec: u32,
    /// `lf_sec`.
    pub lf_sec: u64,
}

impl Leaf {
    /// Encoded size; dirents follow at this offset.
    pub const SIZE: usize = 104;

    /// Decodes a leaf header.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        need("gfs2_leaf", buf, Self::SIZE)?;
        MetaHeader::decode_as(buf, MetaType::Lf)?;
        Ok(Leaf {
            lf_depth: be16(buf, 24),
            lf_entries: be16(buf, 26),
            lf_dirent_format: be32(buf, 28),
            lf_next: be64(buf, 32),
            lf_inode: be64(buf, 40),
            lf_dist: be32(buf, 48),
            lf_nsec: be32(buf, 52),
            lf_sec: be64(buf, 56),
        })
    }

    /// Encodes the 104-byte header.
    pub fn encode(&self, buf: &mut [u8]) {
        buf[..Self::SIZE].fill(0);
        MetaHeader::new(MetaType::Lf).encode(buf);
        put16(buf, 24, self.lf_depth);
        put16(buf, 26, self.lf_entries);
        put32(buf, 28, self.lf_dirent_format);
        put64(buf, 32, self.lf_next);
        put64(buf, 40, self.lf_inode);
        put32(buf, 48, self.lf_dist);
        put32(buf, 52, self.lf_nsec);
        put64(buf, 56, self.lf_sec);
    }
}

/// `struct gfs2_dirent`, 40 bytes, followed by the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Dirent {
    /// `de_inum`; zero `no_addr` marks an unused record.
    pub de_inum: Inum,
    /// `de_hash`: [`disk_hash`] of the name.
    pub de_hash: u32,
    /// `de_rec_len`: record length including padding.
    pub de_rec_len: u16,
    /// `de_name_len`.
    pub de_name_len: u16,
    /// `de_type` ([`dt`]).
    pub de_type: u16,
    /// `de_rahead`.
    pub de_rahead: u16,
}

impl Dirent {
    /// Encoded header size; the name follows.
    pub const SIZE: usize = 40;

    /// Record length needed for a name of `name_len` bytes
    /// (`GFS2_DIRENT_SIZE`).
    pub fn rec_len_for(name_len: usize) -> usize {
        (Self::SIZE + name_len + 7) & !7
    }

    /// Decodes the record header at `off` of `buf` and checks it stays
    /// inside `buf`.
    pub fn decode_at(buf: &[u8], off: usize) -> Result<Self> {
        need("gfs2_dirent", buf, off + Self::SIZE)?;
        let de = Dirent {
            de_inum: Inum::decode_at(buf, off),
            de_hash: be32(buf, off + 16),
            de_rec_len: be16(buf, off + 20),
            de_name_len: be16(buf, off + 22),
            de_type: be16(buf, off + 24),
            de_rahead: be16(buf, off + 26),
        };
        let rec = usize::from(de.de_rec_len);
        if rec < Self::SIZE || off + rec > buf.len() || !rec.is_multiple_of(8) {
            return Err(OndiskError::Invalid {
                field: "de_rec_len",
                value: rec as u64,
            });
        }
        if Self::SIZE + usize::from(de.de_name_len) > rec {
            return Err(OndiskError::Invalid {
                field: "de_name_len",
                value: de.de_name_len.into(),
            });
        }
        Ok(de)
    }

    /// Encodes the header at `off` (name not included).
    pub fn encode_at(&self, buf: &mut [u8], off: usize) {
        buf[off..off + Self::SIZE].fill(0);
        self.de_inum.encode_at(buf, off);
        put32(buf, off + 16, self.de_hash);
        put16(buf, off + 20, self.de_rec_len);
        put16(buf, off + 22, self.de_name_len);
        put16(buf, off + 24, self.de_type);
        put16(buf, off + 26, self.de_rahead);
    }

    /// True when the record holds an entry (not a free gap).
    pub fn in_use(&self) -> bool {
        self.de_inum.no_addr != 0
    }
}

/// `struct gfs2_log_header` (v2 layout), 120 bytes, one per journal block
/// that starts a log flush or marks a clean unmount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogHeader {
    /// `mh_jid` of the writer.
    pub jid: u32,
    /// `lh_sequence`.
    pub lh_sequence: u64,
    /// `lh_flags` ([`log_head`]).
    pub lh_flags: u32,
    /// `lh_tail`: journal block of the log tail.
    pub lh_tail: u32,
    /// `lh_blkno`: journal block of this header.
    pub lh_blkno: u32,
    /// `lh_nsec`.
    pub lh_nsec: u32,
    /// `lh_sec`.
    pub lh_sec: u64,
    /// `lh_addr`: device block of this header.
    pub lh_addr: u64,
    /// `lh_jinode`: the journal's dinode block.
    pub lh_jinode: u64,
    /// `lh_statfs_addr`.
    pub lh_statfs_addr: u64,
    /// `lh_quota_addr`.
    pub lh_quota_addr: u64,
    /// `lh_local_total`.
    pub lh_local_total: i64,
    /// `lh_local_free`.
    pub lh_local_free: i64,
    /// `lh_local_dinodes`.
    pub lh_local_dinodes: i64,
}

impl LogHeader {
    /// Encoded size.
    pub const SIZE: usize = 120;
    /// Size of the v1 header that `lh_hash` covers.
    pub const V1_SIZE: usize = 48;

    /// Decodes and verifies `lh_hash` (and `lh_crc` when non-zero).
    pub fn decode(buf: &[u8]) -> Result<Self> {
        need("gfs2_log_header", buf, Self::SIZE)?;
        let mh = MetaHeader::decode_as(buf, MetaType::Lh)?;
        let hash = be32(buf, 44);
        if hash != Self::hash(buf) {
            return Err(OndiskError::Invalid {
                field: "lh_hash",
                value: hash.into(),
            });
        }
        let crc = be32(buf, 48);
        if crc != 0 && crc != lh_crc32c(&buf[Self::V1_SIZE + 4..]) {
            return Err(OndiskError::Invalid {
                field: "lh_crc",
                value: crc.into(),
            });
        }
        Ok(LogHeader {
            jid: mh.mh_jid,
            lh_sequence: be64(buf, 24),
            lh_flags: be32(buf, 32),
            lh_tail: be32(buf, 36),
            lh_blkno: be32(buf, 40),
            lh_nsec: be32(buf, 52),
            lh_sec: be64(buf, 56),
            lh_addr: be64(buf, 64),
            lh_jinode: be64(buf, 72),
            lh_statfs_addr: be64(buf, 80),
            lh_quota_addr: be64(buf, 88),
            lh_local_total: be64(buf, 96) as i64,
            lh_local_free: be64(buf, 104) as i64,
            lh_local_dinodes: be64(buf, 112) as i64,
        })
    }

    fn hash(buf: &[u8]) -> u32 {
        let mut tmp = [0u8; Self::V1_SIZE];
        tmp.copy_from_slice(&buf[..Self::V1_SIZE]);
        tmp[44..48].fill(0);
        disk_hash(&tmp)
    }

    /// Encodes a whole journal block (the rest of `block` is zeroed) with
    /// `lh_hash` and `lh_crc` computed.
    pub fn encode_block(&self, block: &mut [u8]) {
        block.fill(0);
        let mut mh = MetaHeader::new(MetaType::Lh);
        mh.mh_jid = self.jid;
        mh.encode(block);
        put64(block, 24, self.lh_sequence);
        put32(block, 32, self.lh_flags);
        put32(block, 36, self.lh_tail);
        put32(block, 40, self.lh_blkno);
        put32(block, 52, self.lh_nsec);
        put64(block, 56, self.lh_sec);
        put64(block, 64, self.lh_addr);
        put64(block, 72, self.lh_jinode);
        put64(block, 80, self.lh_statfs_addr);
        put64(block, 88, self.lh_quota_addr);
        put64(block, 96, self.lh_local_total as u64);
        put64(block, 104, self.lh_local_free as u64);
        put64(block, 112, self.lh_local_dinodes as u64);
        let hash = Self::hash(block);
        put32(block, 44, hash);
        let crc = lh_crc32c(&block[Self::V1_SIZE + 4..]);
        put32(block, 48, crc);
    }
}

/// `struct gfs2_log_descriptor`, 72 bytes; be64 block numbers follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogDescriptor {
    /// `ld_type` ([`log_desc`]).
    pub ld_type: u32,
    /// `ld_length`: journal blocks this descriptor spans, itself included.
    pub ld_length: u32,
    /// `ld_data1`: number of entries.
    pub ld_data1: u32,
    /// `ld_data2`.
    pub ld_data2: u32,
}

impl LogDescriptor {
    /// Encoded size.
    pub const SIZE: usize = 72;

    /// Decodes a descriptor header.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        need("gfs2_log_descriptor", buf, Self::SIZE)?;
        MetaHeader::decode_as(buf, MetaType::Ld)?;
        Ok(LogDescriptor {
            ld_type: be32(buf, 24),
            ld_length: be32(buf, 28),
            ld_data1: be32(buf, 32),
            ld_data2: be32(buf, 36),
        })
    }

    /// Encodes the 72-byte header (reserved bytes zeroed).
    pub fn encode(&self, buf: &mut [u8], jid: u32) {
        buf[..Self::SIZE].fill(0);
        let mut mh = MetaHeader::new(MetaType::Ld);
        mh.mh_jid = jid;
        mh.encode(buf);
        put32(buf, 24, self.ld_type);
        put32(buf, 28, self.ld_length);
        put32(buf, 32, self.ld_data1);
        put32(buf, 36, self.ld_data2);
    }
}

/// `struct gfs2_statfs_change`, 24 bytes: the statfs file and the
/// per-node statfs_change files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatfsChange {
    /// `sc_total`.
    pub sc_total: i64,
    /// `sc_free`.
    pub sc_free: i64,
    /// `sc_dinodes`.
    pub sc_dinodes: i64,
}

impl StatfsChange {
    /// Encoded size.
    pub const SIZE: usize = 24;

    /// Decodes.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        need("gfs2_statfs_change", buf, Self::SIZE)?;
        Ok(StatfsChange {
            sc_total: be64(buf, 0) as i64,
            sc_free: be64(buf, 8) as i64,
            sc_dinodes: be64(buf, 16) as i64,
        })
    }

    /// Encodes.
    pub fn encode(&self, buf: &mut [u8]) {
        put64(buf, 0, self.sc_total as u64);
        put64(buf, 8, self.sc_free as u64);
        put64(buf, 16, self.sc_dinodes as u64);
    }
}

/// `struct gfs2_quota`, 88 bytes: a record of the quota file, at index
/// `2*id` for users and `2*id+1` for groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quota {
    /// `qu_limit`.
    pub qu_limit: u64,
    /// `qu_warn`.
    pub qu_warn: u64,
    /// `qu_value`: blocks in use.
    pub qu_value: i64,
}

impl Quota {
    /// Encoded size.
    pub const SIZE: usize = 88;

    /// Decodes.
    pub fn decode(buf: &[u8]) -> Result<Self> {
        need("gfs2_quota", buf, Self::SIZE)?;
        Ok(Quota {
            qu_limit: be64(buf, 0),
            qu_warn: be64(buf, 8),
            qu_value: be64(buf, 16) as i64,
        })
    }

    /// Encodes (reserved bytes zeroed).
    pub fn encode(&self, buf: &mut [u8]) {
        buf[..Self::SIZE].fill(0);
        put64(buf, 0, self.qu_limit);
        put64(buf, 8, self.qu_warn);
        put64(buf, 16, self.qu_value as u64);
    }
}

/// `struct gfs2_ea_header`, 16 bytes, followed by the name, then the value
/// or `ea_num_ptrs` be64 pointers to ED blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EaHeader {
    /// `ea_rec_len`.
    pub ea_rec_len: u32,
    /// `ea_data_len`.
    pub ea_data_len: u32,
    /// `ea_name_len`.
    pub ea_name_len: u8,
    /// `ea_type` ([`eatype`]).
    pub ea_type: u8,
    /// `ea_flags`: `GFS2_EAFLAG_LAST` = 1.
    pub ea_flags: u8,
    /// `ea_num_ptrs`: 0 when the value is stored inline.
    pub ea_num_ptrs: u8,
}

/// `GFS2_EAFLAG_LAST`.
pub const GFS2_EAFLAG_LAST: u8 = 1;

impl EaHeader {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// Decodes at `off`, checking that the record fits in `buf`.
    pub fn decode_at(buf: &[u8], off: usize) -> Result<Self> {
        need("gfs2_ea_header", buf, off + Self::SIZE)?;
        let ea = EaHeader {
            ea_rec_len: be32(buf, off),
            ea_data_len: be32(buf, off + 4),
            ea_name_len: buf[off + 8],
            ea_type: buf[off + 9],
            ea_flags: buf[off + 10],
            ea_num_ptrs: buf[off + 11],
        };
        let rec = ea.ea_rec_len as usize;
        if rec < Self::SIZE || off + rec > buf.len() || !rec.is_multiple_of(8) {
            return Err(OndiskError::Invalid {
                field: "ea_rec_len",
                value: rec as u64,
            });
        }
        Ok(ea)
    }

    /// Encodes at `off`.
    pub fn encode_at(&self, buf: &mut [u8], off: usize) {
        buf[off..off + Self::SIZE].fill(0);
        put32(buf, off, self.ea_rec_len);
        put32(buf, off + 4, self.ea_data_len);
        buf[off + 8] = self.ea_name_len;
        buf[off + 9] = self.ea_type;
        buf[off + 10] = self.ea_flags;
        buf[off + 11] = self.ea_num_ptrs;
    }
}

// ---------------------------------------------------------------------------
// Geometry derived from the block size.

/// Per-block-size constants (the kernel's `sd_diptrs`, `sd_inptrs`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Block size in bytes.
    pub bsize: u32,
    /// Block pointers in a dinode.
    pub diptrs: u64,
    /// Block pointers in an indirect block.
    pub inptrs: u64,
    /// Payload bytes of a journaled-data block (`sd_jbsize`).
    pub jbsize: u64,
    /// Bitmap bytes in the rgrp header block.
    pub rg_bitbytes_first: u32,
    /// Bitmap bytes in an RB block.
    pub rg_bitbytes_more: u32,
}

impl Geometry {
    /// Constants for block size `bsize` (a power of two, 512..=65536).
    pub fn new(bsize: u32) -> Self {
        assert!(bsize.is_power_of_two() && (512..=65536).contains(&bsize));
        let b = u64::from(bsize);
        Geometry {
            bsize,
            diptrs: (b - Dinode::SIZE as u64) / 8,
            inptrs: (b - MetaHeader::SIZE as u64) / 8,
            jbsize: b - MetaHeader::SIZE as u64,
            rg_bitbytes_first: bsize - Rgrp::SIZE as u32,
            rg_bitbytes_more: bsize - MetaHeader::SIZE as u32,
        }
    }

    /// Bytes of stuffed data a dinode block can hold.
    pub fn stuffed_max(&self) -> u64 {
        u64::from(self.bsize) - Dinode::SIZE as u64
    }

    /// Maximum number of data blocks a tree of `height` can map.
    pub fn height_capacity(&self, height: u16) -> u64 {
        if height == 0 {
            return 0;
        }
        let mut cap = self.diptrs;
        for _ in 1..height {
            cap = cap.saturating_mul(self.inptrs);
        }
        cap
    }

    /// Smallest height (≥ 1) whose tree maps `blocks` data blocks.
    pub fn height_for_blocks(&self, blocks: u64) -> u16 {
        let mut h = 1;
        while self.height_capacity(h) < blocks {
            h += 1;
        }
        h
    }

    /// Pointers in the dinode used as a stuffed exhash table
    /// (`sd_hash_ptrs`): half a block of be64.
    pub fn hash_ptrs(&self) -> u64 {
        u64::from(self.bsize) / 2 / 8
    }
}

/// Location of block `n` (relative to `ri_data0`) in a resource group's
/// bitmap: (bitmap block index, byte offset in that block, bit shift).
pub fn bitmap_position(geo: &Geometry, n: u64) -> (usize, usize, u32) {
    let byte = n / 4;
    let shift = (2 * (n % 4)) as u32;
    let first = u64::from(geo.rg_bitbytes_first);
    if byte < first {
        return (0, Rgrp::SIZE + byte as usize, shift);
    }
    let rest = byte - first;
    let more = u64::from(geo.rg_bitbytes_more);
    let idx = 1 + (rest / more) as usize;
    (idx, MetaHeader::SIZE + (rest % more) as usize, shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_the_header() {
        assert_eq!(MetaHeader::SIZE, 24);
        assert_eq!(Superblock::SIZE, 272);
        assert_eq!(Rindex::SIZE, 96);
        assert_eq!(Rgrp::SIZE, 128);
        assert_eq!(Dinode::SIZE, 232);
        assert_eq!(Leaf::SIZE, 104);
        assert_eq!(Dirent::SIZE, 40);
        assert_eq!(LogHeader::SIZE, 120);
        assert_eq!(LogDescriptor::SIZE, 72);
        assert_eq!(Quota::SIZE, 88);
        assert_eq!(EaHeader::SIZE, 16);
        let g = Geometry::new(4096);
        assert_eq!((g.diptrs, g.inptrs), (483, 509));
    }

    #[test]
    fn name_hash_is_zlib_crc32() {
        // Values read from a mkfs.gfs2 image's master directory.
        assert_eq!(disk_hash(b"."), 0x0ed4_e242);
        assert_eq!(disk_hash(b".."), 0x9608_161c);
        assert_eq!(disk_hash(b"jindex"), 0x5efc_1d83);
    }

    #[test]
    fn dinode_round_trips() {
        let di = Dinode {
            di_num: Inum {
                no_formal_ino: 7,
                no_addr: 99,
            },
            di_mode: libc::S_IFREG | 0o644,
            di_nlink: 1,
            di_size: 12345,
            di_height: 2,
            di_mtime_nsec: 5,
            ..Default::default()
        };
        let mut b = vec![0u8; 512];
        di.encode(&mut b);
        assert_eq!(Dinode::decode(&b).unwrap(), di);
    }

    #[test]
    fn log_header_checksums_verify_and_detect_damage() {
        let lh = LogHeader {
            lh_sequence: 42,
            lh_flags: log_head::UNMOUNT,
            lh_addr: 30,
            ..Default::default()
        };
        let mut b = vec![0u8; 4096];
        lh.encode_block(&mut b);
        assert_eq!(LogHeader::decode(&b).unwrap(), lh);
        b[60] ^= 1;
        assert!(LogHeader::decode(&b).is_err());
    }

    #[test]
    fn rgrp_crc_detects_damage() {
        let rg = Rgrp {
            rg_free: 10,
            rg_data0: 18,
            rg_data: 100,
            rg_bitbytes: 25,
            ..Default::default()
        };
        let mut b = vec![0u8; 4096];
        rg.encode(&mut b);
        let back = Rgrp::decode(&b).unwrap();
        assert_eq!(back.rg_free, 10);
        b[30] ^= 1;
        assert!(Rgrp::decode(&b).is_err());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let b = [0xffu8; 8];
        assert!(matches!(Dinode::decode(&b), Err(OndiskError::Short { .. })));
        let b = vec![0u8; 4096];
        assert!(matches!(
            Superblock::decode(&b),
            Err(OndiskError::BadMagic(0))
        ));
        let mut b = vec![0u8; 64];
        put16(&mut b, 20, 8); // rec_len too small
        assert!(Dirent::decode_at(&b, 0).is_err());
    }

    #[test]
    fn bitmap_positions_cross_into_rb_blocks() {
        let g = Geometry::new(512);
        assert_eq!(bitmap_position(&g, 0), (0, 128, 0));
        assert_eq!(bitmap_position(&g, 5), (0, 129, 2));
        let first = u64::from(g.rg_bitbytes_first) * 4;
        assert_eq!(bitmap_position(&g, first), (1, 24, 0));
        let more = u64::from(g.rg_bitbytes_more) * 4;
        assert_eq!(bitmap_position(&g, first + more + 3), (2, 24, 6));
    }
}
