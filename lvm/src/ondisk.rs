//! LVM2's on-disk format as data: the label, the PV header, the metadata
//! area header and its CRC (lvm2 `lib/label/label.h`, `lib/format_text/layout.h`,
//! `lib/misc/crc.c`). Everything is little-endian.
//!
//! ```text
//! sector 1 (normally; any of the first 4): label_header (32 bytes) + pv_header
//!   label_header: id "LABELONE" | sector u64 | crc u32 | offset u32 | type "LVM2 001"
//!   pv_header:    pv_uuid[32] | device_size u64 | disk_locn data areas.. {0,0}
//!                 | disk_locn metadata areas.. {0,0}
//!                 | pv_header_extension: version u32 | flags u32 | bootloader areas.. {0,0}
//! mda start (normally 4096): mda_header (512 bytes)
//!   checksum u32 | magic[16] | version u32 | start u64 | size u64 | raw_locn.. {0,0,0,0}
//!   raw_locn: offset u64 | size u64 | checksum u32 | flags u32
//! ```
//!
//! The label crc covers the label sector from `offset` to the sector's end;
//! the mda_header checksum covers the header after the checksum field; a
//! raw_locn checksum covers the metadata text (with its NUL) it points at.

use thiserror::Error;

/// Bytes per sector: every offset in the label and the text is in these.
pub const SECTOR_SIZE: u64 = 512;
/// The label's id.
pub const LABEL_ID: &[u8; 8] = b"LABELONE";
/// The label type of a text-format (lvm2) PV.
pub const LVM2_LABEL: &[u8; 8] = b"LVM2 001";
/// The label is searched for in this many sectors from the start.
pub const LABEL_SCAN_SECTORS: u64 = 4;
/// The sector lvm2 writes its label to.
pub const LABEL_SECTOR: u64 = 1;
/// Size of `label_header`; the pv_header follows at this offset.
pub const LABEL_HEADER_SIZE: u32 = 32;
/// Offset of the crc'd part of the label (`offset_xl`).
const LABEL_CRC_FROM: usize = 20;
/// lvm2's CRC seed (`INITIAL_CRC`).
pub const INITIAL_CRC: u32 = 0xf597_a6cf;
/// The mda_header magic (`FMTT_MAGIC`).
pub const FMTT_MAGIC: &[u8; 16] = b" LVM2 x[5A%r0N*>";
/// The mda_header version (`FMTT_VERSION`).
pub const FMTT_VERSION: u32 = 1;
/// Size of the mda_header; the circular text buffer starts after it.
pub const MDA_HEADER_SIZE: u64 = 512;
/// Length of a uuid without its dashes (`ID_LEN`).
pub const ID_LEN: usize = 32;
/// The pv_header_extension version lvm2 2.02.117+ writes.
pub const PV_HEADER_EXTENSION_VSN: u32 = 2;
/// pv_header_extension flag: the PV belongs to a VG (`PV_EXT_USED`).
pub const PV_EXT_USED: u32 = 0x1;
/// raw_locn flag: this metadata area is ignored (`RAW_LOCN_IGNORED`).
pub const RAW_LOCN_IGNORED: u32 = 0x1;
/// New metadata starts on this boundary in the circular buffer
/// (`MDA_ORIGINAL_ALIGNMENT`).
pub const MDA_ALIGNMENT: u64 = 512;

/// Format errors: what is wrong with bytes read from a device.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum FormatError {
    /// The label's crc does not match its contents.
    #[error("label checksum mismatch in sector {sector} (stored {stored:#010x}, computed {computed:#010x})")]
    LabelChecksum {
        /// Sector of the label.
        sector: u64,
        /// Checksum on disk.
        stored: u32,
        /// Checksum of the bytes.
        computed: u32,
    },
    /// The label is not an lvm2 text-format label.
    #[error("unsupported label type {0:?}")]
    LabelType(String),
    /// The label's fields point outside the sector.
    #[error("label in sector {0} is malformed: {1}")]
    LabelMalformed(u64, &'static str),
    /// Bad mda_header checksum.
    #[error("incorrect checksum in metadata area header at {start}")]
    MdaChecksum {
        /// Byte offset of the header.
        start: u64,
    },
    /// Wrong magic number in the mda_header.
    #[error("wrong magic number in metadata area header at {0}")]
    MdaMagic(u64),
    /// Unknown mda_header version.
    #[error("incompatible version {version} metadata area header at {start}")]
    MdaVersion {
        /// Version found.
        version: u32,
        /// Byte offset of the header.
        start: u64,
    },
    /// The header's start field does not say where it is.
    #[error("incorrect start {found} in metadata area header at {start}")]
    MdaStart {
        /// Start field found.
        found: u64,
        /// Where the header was read.
        start: u64,
    },
}

/// lvm2's `calc_crc`: CRC-32 (reflected, polynomial 0xedb88320) from
/// `seed`, without the final inversion. crc32fast inverts on the way in and
/// out, so both inversions are undone here.
pub fn calc_crc(seed: u32, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new_with_initial(!seed);
    h.update(data);
    !h.finalize()
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A `disk_locn`: a byte range on the PV. Size 0 for a data area means "to
/// the end of the device".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLocn {
    /// Byte offset from the start of the PV.
    pub offset: u64,
    /// Length in bytes.
    pub size: u64,
}

/// The pv_header and its extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvHeader {
    /// The PV uuid, 32 characters without dashes.
    pub uuid: [u8; ID_LEN],
    /// Device size in bytes when the header was written.
    pub device_size: u64,
    /// Data areas (one: from pe_start to the end).
    pub data_areas: Vec<DiskLocn>,
    /// Metadata areas (zero, one or two).
    pub metadata_areas: Vec<DiskLocn>,
    /// The extension (version 2 writes it); `None` for old PVs.
    pub ext: Option<PvHeaderExt>,
}

/// `pv_header_extension`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvHeaderExt {
    /// Extension version.
    pub version: u32,
    /// `PV_EXT_USED` when the PV is in a VG.
    pub flags: u32,
    /// Bootloader areas.
    pub bootloader_areas: Vec<DiskLocn>,
}

/// Where a label was found and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// Sector holding the label.
    pub sector: u64,
    /// The PV header it carries.
    pub pv_header: PvHeader,
}

fn locn_list_len(n: usize) -> usize {
    (n + 1) * 16
}

impl PvHeader {
    /// Encoded size: uuid, size, two lists, the extension.
    fn encoded_len(&self) -> usize {
        let mut n = ID_LEN + 8 + locn_list_len(self.data_areas.len());
        n += locn_list_len(self.metadata_areas.len());
        if let Some(e) = &self.ext {
            n += 8 + locn_list_len(e.bootloader_areas.len());
        }
        n
    }
}

fn put_locns(b: &mut [u8], at: &mut usize, list: &[DiskLocn]) {
    for l in list {
        put_u64(b, *at, l.offset);
        put_u64(b, *at + 8, l.size);
        *at += 16;
    }
    *at += 16; // the {0, 0} terminator (the buffer is zeroed)
}

/// Reads a {0,0}-terminated disk_locn list; `None` when it runs off `b`.
fn get_locns(b: &[u8], at: &mut usize) -> Option<Vec<DiskLocn>> {
    let mut out = Vec::new();
    loop {
        if *at + 16 > b.len() {
            return None;
        }
        let l = DiskLocn {
            offset: le_u64(b, *at),
            size: le_u64(b, *at + 8),
        };
        *at += 16;
        if l.offset == 0 && l.size == 0 {
            return Some(out);
        }
        out.push(l);
    }
}

impl Label {
    /// Encodes the whole label sector (512 bytes) with its crc.
    pub fn encode(&self) -> [u8; SECTOR_SIZE as usize] {
        let mut b = [0u8; SECTOR_SIZE as usize];
        let h = &self.pv_header;
        assert!(
            LABEL_HEADER_SIZE as usize + h.encoded_len() <= b.len(),
            "pv_header fits its sector"
        );
        b[0..8].copy_from_slice(LABEL_ID);
        put_u64(&mut b, 8, self.sector);
        put_u32(&mut b, 20, LABEL_HEADER_SIZE);
        b[24..32].copy_from_slice(LVM2_LABEL);
        let mut at = LABEL_HEADER_SIZE as usize;
        b[at..at + ID_LEN].copy_from_slice(&h.uuid);
        put_u64(&mut b, at + ID_LEN, h.device_size);
        at += ID_LEN + 8;
        put_locns(&mut b, &mut at, &h.data_areas);
        put_locns(&mut b, &mut at, &h.metadata_areas);
        if let Some(e) = &h.ext {
            put_u32(&mut b, at, e.version);
            put_u32(&mut b, at + 4, e.flags);
            at += 8;
            put_locns(&mut b, &mut at, &e.bootloader_areas);
        }
        let crc = calc_crc(INITIAL_CRC, &b[LABEL_CRC_FROM..]);
        put_u32(&mut b, 16, crc);
        b
    }

    /// Decodes the sector read from `sector`: `Ok(None)` when it holds no
    /// label, an error when it holds a damaged or foreign one.
    pub fn decode(sector: u64, b: &[u8]) -> Result<Option<Label>, FormatError> {
        assert_eq!(b.len(), SECTOR_SIZE as usize, "one sector");
        if &b[0..8] != LABEL_ID {
            return Ok(None);
        }
        if le_u64(b, 8) != sector {
            return Ok(None); // a stale copy moved with its data: lvm2 ignores it
        }
        let stored = le_u32(b, 16);
        let computed = calc_crc(INITIAL_CRC, &b[LABEL_CRC_FROM..]);
        if stored != computed {
            return Err(FormatError::LabelChecksum {
                sector,
                stored,
                computed,
            });
        }
        if &b[24..32] != LVM2_LABEL {
            return Err(FormatError::LabelType(
                String::from_utf8_lossy(&b[24..32]).into_owned(),
            ));
        }
        let off = le_u32(b, 20) as usize;
        if off < LABEL_HEADER_SIZE as usize || off + ID_LEN + 8 > b.len() {
            return Err(FormatError::LabelMalformed(sector, "pv_header offset"));
        }
        let bad = FormatError::LabelMalformed(sector, "disk_locn list runs off the sector");
        let mut uuid = [0u8; ID_LEN];
        uuid.copy_from_slice(&b[off..off + ID_LEN]);
        let device_size = le_u64(b, off + ID_LEN);
        let mut at = off + ID_LEN + 8;
        let data_areas = get_locns(b, &mut at).ok_or(bad.clone())?;
        let metadata_areas = get_locns(b, &mut at).ok_or(bad.clone())?;
        let ext = decode_ext(b, &mut at).ok_or(bad)?;
        Ok(Some(Label {
            sector,
            pv_header: PvHeader {
                uuid,
                device_size,
                data_areas,
                metadata_areas,
                ext,
            },
        }))
    }
}

fn decode_ext(b: &[u8], at: &mut usize) -> Option<Option<PvHeaderExt>> {
    if *at + 8 > b.len() {
        return Some(None);
    }
    let version = le_u32(b, *at);
    if version == 0 {
        return Some(None);
    }
    let flags = le_u32(b, *at + 4);
    *at += 8;
    let bootloader_areas = get_locns(b, at)?;
    Some(Some(PvHeaderExt {
        version,
        flags,
        bootloader_areas,
    }))
}

/// A `raw_locn`: where one copy of the metadata text is in the circular
/// buffer, relative to the mda start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RawLocn {
    /// Byte offset from the mda start (at least `MDA_HEADER_SIZE`).
    pub offset: u64,
    /// Length of the text including its NUL; it may wrap.
    pub size: u64,
    /// `calc_crc` of the text.
    pub checksum: u32,
    /// `RAW_LOCN_IGNORED` or 0.
    pub flags: u32,
}

impl RawLocn {
    /// Whether this slot is empty.
    pub fn is_empty(&self) -> bool {
        self.offset == 0 && self.size == 0
    }
}

/// The mda_header: slot 0 is the committed metadata, slot 1 the
/// precommitted copy lvm2 may leave while a change is under way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdaHeader {
    /// Byte offset of this header on the PV.
    pub start: u64,
    /// Size of the whole area including this header.
    pub size: u64,
    /// The raw_locn slots (trailing empty ones dropped).
    pub raw_locns: Vec<RawLocn>,
}

/// Most raw_locns one header holds: (512 - 40) / 24, less the terminator.
const MAX_RAW_LOCNS: usize = 18;

impl MdaHeader {
    /// Encodes the 512-byte header with its checksum.
    pub fn encode(&self) -> [u8; MDA_HEADER_SIZE as usize] {
        assert!(self.raw_locns.len() <= MAX_RAW_LOCNS, "raw_locns fit");
        let mut b = [0u8; MDA_HEADER_SIZE as usize];
        b[4..20].copy_from_slice(FMTT_MAGIC);
        put_u32(&mut b, 20, FMTT_VERSION);
        put_u64(&mut b, 24, self.start);
        put_u64(&mut b, 32, self.size);
        for (i, r) in self.raw_locns.iter().enumerate() {
            let at = 40 + 24 * i;
            put_u64(&mut b, at, r.offset);
            put_u64(&mut b, at + 8, r.size);
            put_u32(&mut b, at + 16, r.checksum);
            put_u32(&mut b, at + 20, r.flags);
        }
        let crc = calc_crc(INITIAL_CRC, &b[4..]);
        put_u32(&mut b, 0, crc);
        b
    }

    /// Decodes and checks a header read at byte `start`.
    pub fn decode(start: u64, b: &[u8]) -> Result<MdaHeader, FormatError> {
        assert_eq!(b.len(), MDA_HEADER_SIZE as usize, "one header");
        if le_u32(b, 0) != calc_crc(INITIAL_CRC, &b[4..]) {
            return Err(FormatError::MdaChecksum { start });
        }
        if &b[4..20] != FMTT_MAGIC {
            return Err(FormatError::MdaMagic(start));
        }
        let version = le_u32(b, 20);
        if version != FMTT_VERSION {
            return Err(FormatError::MdaVersion { version, start });
        }
        let found = le_u64(b, 24);
        if found != start {
            return Err(FormatError::MdaStart { found, start });
        }
        let mut raw_locns = Vec::new();
        for i in 0..MAX_RAW_LOCNS {
            let at = 40 + 24 * i;
            let r = RawLocn {
                offset: le_u64(b, at),
                size: le_u64(b, at + 8),
                checksum: le_u32(b, at + 16),
                flags: le_u32(b, at + 20),
            };
            if r.is_empty() && r.checksum == 0 && r.flags == 0 {
                break;
            }
            raw_locns.push(r);
        }
        Ok(MdaHeader {
            start,
            size: le_u64(b, 32),
            raw_locns,
        })
    }

    /// The committed metadata's slot, if any (slot 0, not ignored, not empty).
    pub fn committed(&self) -> Option<RawLocn> {
        self.raw_locns.first().copied().filter(|r| !r.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a disk holds, decoding it is an answer, never a panic.
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 512), magic in any::<bool>()) {
            let mut b = bytes;
            if magic {
                b[0..8].copy_from_slice(LABEL_ID);
                b[8..16].copy_from_slice(&1u64.to_le_bytes());
                b[24..32].copy_from_slice(LVM2_LABEL);
                b[20] %= 64; // offsets near the header, some valid
                b[21..24].fill(0);
                let crc = calc_crc(INITIAL_CRC, &b[LABEL_CRC_FROM..]);
                b[16..20].copy_from_slice(&crc.to_le_bytes());
            }
            let _ = Label::decode(1, &b);
            let _ = MdaHeader::decode(4096, &b);
        }
    }

    #[test]
    fn crc_matches_lvm2_reference_values() {
        // lvm2's calc_crc with seed 0 over "123456789" is the plain reflected
        // CRC-32 without inversions; the inverted-in/out CRC-32 is 0xcbf43926.
        assert_eq!(!calc_crc(!0, b"123456789"), 0xcbf4_3926);
        assert_eq!(calc_crc(INITIAL_CRC, b""), INITIAL_CRC);
    }

    fn sample() -> Label {
        Label {
            sector: 1,
            pv_header: PvHeader {
                uuid: *b"r0GfUcRKAfMGcxVdQzmGzjuE2yVyRWfW",
                device_size: 64 << 20,
                data_areas: vec![DiskLocn {
                    offset: 1 << 20,
                    size: 0,
                }],
                metadata_areas: vec![DiskLocn {
                    offset: 4096,
                    size: 1_044_480,
                }],
                ext: Some(PvHeaderExt {
                    version: 2,
                    flags: PV_EXT_USED,
                    bootloader_areas: vec![],
                }),
            },
        }
    }

    #[test]
    fn label_as_lvm2_wrote_it() {
        // Sector 1 of a 64 MiB loop device after Debian lvm2 2.03.16's
        // pvcreate + vgcreate (its crc field is 0x1cb17d4b).
        let b = sample().encode();
        assert_eq!(&b[0..8], b"LABELONE");
        assert_eq!(le_u32(&b, 16), 0x1cb1_7d4b);
        assert_eq!(Label::decode(1, &b).unwrap(), Some(sample()));
    }

    #[test]
    fn label_damage_is_an_error() {
        let mut b = sample().encode();
        b[100] ^= 1;
        assert!(matches!(
            Label::decode(1, &b),
            Err(FormatError::LabelChecksum { .. })
        ));
        assert_eq!(Label::decode(2, &sample().encode()).unwrap(), None);
    }

    #[test]
    fn mda_header_as_lvm2_wrote_it() {
        // The mda_header of the same device at seqno 2 (checksum 0xe034bb8b).
        let h = MdaHeader {
            start: 4096,
            size: 1_044_480,
            raw_locns: vec![RawLocn {
                offset: 1536,
                size: 1028,
                checksum: 0xb113_9f17,
                flags: 0,
            }],
        };
        let b = h.encode();
        assert_eq!(le_u32(&b, 0), 0xe034_bb8b);
        assert_eq!(MdaHeader::decode(4096, &b).unwrap(), h);
        assert_eq!(
            MdaHeader::decode(8192, &b),
            Err(FormatError::MdaStart {
                found: 4096,
                start: 8192
            })
        );
        let mut bad = b;
        bad[45] ^= 0x10;
        assert_eq!(
            MdaHeader::decode(4096, &bad),
            Err(FormatError::MdaChecksum { start: 4096 })
        );
    }
}
