//! The circular metadata area (lvm2 `format-text.c`: `_vg_read_raw_area`,
//! `_vg_write_raw`, `_vg_commit_raw`).
//!
//! ```text
//! [mda_header 512 B][text buffer ............................... end]
//!                    ^ MDA_HEADER_SIZE                     mda size ^
//! ```
//!
//! A new copy of the text goes after the current one (next 512-byte
//! boundary, wrapping to `MDA_HEADER_SIZE`), never over it: lvm2 keeps two
//! copies. Only after the text is flushed is the header rewritten to point
//! at it, in one sector write, then flushed. A power cut before that header
//! write leaves the old seqno; after it, the new one. Nothing else is
//! written, so an interrupted update is never garbage.

use thiserror::Error;

use crate::device::Device;
use crate::ondisk::{
    calc_crc, FormatError, MdaHeader, RawLocn, INITIAL_CRC, MDA_ALIGNMENT, MDA_HEADER_SIZE,
};

/// Errors reading or writing a metadata area.
#[derive(Debug, Error)]
pub enum MdaError {
    /// Device I/O failed.
    #[error("{what} at byte {offset}: {source}")]
    Io {
        /// Which step.
        what: &'static str,
        /// Byte offset.
        offset: u64,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The header is damaged.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The text's checksum does not match its raw_locn.
    #[error("checksum error in metadata text at {offset} (mda at {start}): stored {stored:#010x}, computed {computed:#010x}")]
    TextChecksum {
        /// mda start.
        start: u64,
        /// Text offset in the area.
        offset: u64,
        /// raw_locn checksum.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// The raw_locn points outside the area.
    #[error("metadata location {offset}+{size} does not fit the area at {start} of {area} bytes")]
    BadLocation {
        /// mda start.
        start: u64,
        /// Text offset.
        offset: u64,
        /// Text size.
        size: u64,
        /// Area size.
        area: u64,
    },
    /// The new text is too big for the area.
    #[error("metadata ({size} bytes) exceeds maximum metadata size ({max} bytes) of the area at {start}")]
    TooBig {
        /// mda start.
        start: u64,
        /// Text size.
        size: u64,
        /// Largest copy that fits twice.
        max: u64,
    },
}

fn io(what: &'static str, offset: u64) -> impl FnOnce(std::io::Error) -> MdaError {
    move |source| MdaError::Io {
        what,
        offset,
        source,
    }
}

/// Reads and checks the mda_header at `start`.
pub fn read_header(dev: &dyn Device, start: u64) -> Result<MdaHeader, MdaError> {
    let mut b = [0u8; MDA_HEADER_SIZE as usize];
    dev.read_at(start, &mut b)
        .map_err(io("read mda header", start))?;
    Ok(MdaHeader::decode(start, &b)?)
}

/// Reads the text `r` points at (both parts when it wraps) and checks its
/// checksum. The returned bytes include the trailing NUL.
pub fn read_text(dev: &dyn Device, h: &MdaHeader, r: &RawLocn) -> Result<Vec<u8>, MdaError> {
    let bad = MdaError::BadLocation {
        start: h.start,
        offset: r.offset,
        size: r.size,
        area: h.size,
    };
    let buffer = h.size.saturating_sub(MDA_HEADER_SIZE);
    if r.offset < MDA_HEADER_SIZE || r.offset >= h.size || r.size > buffer || r.size == 0 {
        return Err(bad);
    }
    let first = r.size.min(h.size - r.offset);
    let mut text = vec![0u8; r.size as usize];
    let at = h.start + r.offset;
    dev.read_at(at, &mut text[..first as usize])
        .map_err(io("read metadata", at))?;
    if first < r.size {
        let at2 = h.start + MDA_HEADER_SIZE;
        dev.read_at(at2, &mut text[first as usize..])
            .map_err(io("read metadata", at2))?;
    }
    let computed = calc_crc(INITIAL_CRC, &text);
    if computed != r.checksum {
        return Err(MdaError::TextChecksum {
            start: h.start,
            offset: r.offset,
            stored: r.checksum,
            computed,
        });
    }
    Ok(text)
}

/// Reads the committed metadata text of the area at `start`: `None` when
/// the area holds none (an orphan PV). The NUL is stripped.
pub fn read_committed(dev: &dyn Device, start: u64) -> Result<Option<String>, MdaError> {
    let h = read_header(dev, start)?;
    let Some(r) = h.committed() else {
        return Ok(None);
    };
    let mut text = read_text(dev, &h, &r)?;
    while text.last() == Some(&0) {
        text.pop();
    }
    Ok(Some(String::from_utf8_lossy(&text).into_owned()))
}

/// Writes a fresh header with no metadata (pvcreate).
pub fn write_empty(dev: &dyn Device, start: u64, size: u64) -> Result<(), MdaError> {
    let h = MdaHeader {
        start,
        size,
        raw_locns: vec![],
    };
    dev.write_at(start, &h.encode())
        .map_err(io("write mda header", start))?;
    dev.flush().map_err(io("flush", start))
}

/// Where the next copy goes, after the last byte `old_last` of the current
/// one (lvm2's `_next_rlocn_offset`, its rounding included).
fn next_offset(old: Option<&RawLocn>, area: u64) -> u64 {
    let Some(r) = old else { return MDA_HEADER_SIZE };
    let old_last = if r.offset + r.size > area {
        r.offset + r.size - area + MDA_HEADER_SIZE - 1
    } else {
        r.offset + r.size - 1
    };
    if area - old_last < MDA_ALIGNMENT {
        return MDA_HEADER_SIZE;
    }
    let next = old_last + 1;
    let start = next + (MDA_ALIGNMENT - next % MDA_ALIGNMENT);
    if start > area - MDA_ALIGNMENT {
        MDA_HEADER_SIZE
    } else {
        start
    }
}

/// A metadata update staged in one area: the text is written, the header
/// not yet.
#[derive(Debug)]
pub struct Staged {
    header: MdaHeader,
}

/// Step 1 of an update: writes `text` (a NUL is appended) after the current
/// copy and flushes it. The committed metadata is untouched.
pub fn write_text(dev: &dyn Device, start: u64, text: &str) -> Result<Staged, MdaError> {
    let mut h = read_header(dev, start)?;
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    let size = bytes.len() as u64;
    let max = ((h.size - MDA_HEADER_SIZE) / 2).saturating_sub(512);
    if size > max {
        return Err(MdaError::TooBig { start, size, max });
    }
    let old = h
        .committed()
        .filter(|r| r.flags & crate::ondisk::RAW_LOCN_IGNORED == 0);
    let offset = next_offset(old.as_ref(), h.size);
    let first = size.min(h.size - offset) as usize;
    let at = start + offset;
    dev.write_at(at, &bytes[..first])
        .map_err(io("write metadata", at))?;
    if first < bytes.len() {
        let at2 = start + MDA_HEADER_SIZE;
        dev.write_at(at2, &bytes[first..])
            .map_err(io("write metadata", at2))?;
    }
    dev.flush().map_err(io("flush", at))?;
    h.raw_locns = vec![RawLocn {
        offset,
        size,
        checksum: calc_crc(INITIAL_CRC, &bytes),
        flags: 0,
    }];
    Ok(Staged { header: h })
}

/// Step 2: points the header at the staged text (one sector) and flushes.
pub fn commit(dev: &dyn Device, staged: &Staged) -> Result<(), MdaError> {
    let start = staged.header.start;
    dev.write_at(start, &staged.header.encode())
        .map_err(io("write mda header", start))?;
    dev.flush().map_err(io("flush", start))
}

/// Both steps.
pub fn write_metadata(dev: &dyn Device, start: u64, text: &str) -> Result<(), MdaError> {
    let s = write_text(dev, start, text)?;
    commit(dev, &s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{CrashDevice, MemDevice};

    const START: u64 = 4096;
    const SIZE: u64 = 8192;

    fn text(seqno: u64, pad: usize) -> String {
        format!("vg {{\nseqno = {seqno}\n}}\n# {}\n", "x".repeat(pad))
    }

    #[test]
    fn next_offset_follows_lvm2() {
        // lvm2 wrote seqno 1 (size 900) at 512, then seqno 2 at 1536.
        let r = RawLocn {
            offset: 512,
            size: 900,
            checksum: 0,
            flags: 0,
        };
        assert_eq!(next_offset(Some(&r), 1_044_480), 1536);
        let exact = RawLocn {
            offset: 512,
            size: 512,
            checksum: 0,
            flags: 0,
        };
        assert_eq!(
            next_offset(Some(&exact), 1_044_480),
            1536,
            "a full sector still skips one"
        );
        assert_eq!(next_offset(None, 1_044_480), 512);
    }

    #[test]
    fn copies_wrap_around_and_read_back() {
        let d = MemDevice::new(START + SIZE);
        write_empty(&d, START, SIZE).unwrap();
        assert_eq!(read_committed(&d, START).unwrap(), None);
        for seqno in 1..40 {
            let t = text(seqno, (seqno as usize * 37) % 1500);
            write_metadata(&d, START, &t).unwrap();
            assert_eq!(read_committed(&d, START).unwrap().unwrap(), t);
        }
    }

    #[test]
    fn bad_text_checksum_is_refused() {
        let d = MemDevice::new(START + SIZE);
        write_empty(&d, START, SIZE).unwrap();
        write_metadata(&d, START, &text(1, 10)).unwrap();
        let h = read_header(&d, START).unwrap();
        let r = h.committed().unwrap();
        d.write_at(START + r.offset + 3, b"Z").unwrap();
        assert!(matches!(
            read_committed(&d, START),
            Err(MdaError::TextChecksum { .. })
        ));
    }

    #[test]
    fn power_cut_at_every_write_leaves_old_or_new() {
        for seed in 1..30u64 {
            for cut in 0..4 {
                let d = CrashDevice::new(START + SIZE, seed);
                write_empty(&d, START, SIZE).unwrap();
                let mut last = None;
                for seqno in 1..(seed % 7 + 2) {
                    let t = text(seqno, (seed * seqno) as usize % 1700);
                    write_metadata(&d, START, &t).unwrap();
                    last = Some(t);
                }
                let new = text(99, (seed * 13) as usize % 1700);
                d.cut_after(cut);
                let r = write_metadata(&d, START, &new);
                d.restart();
                let got = read_committed(&d, START).unwrap();
                if r.is_ok() {
                    assert_eq!(got.as_ref(), Some(&new));
                } else {
                    assert!(
                        got == last || got.as_ref() == Some(&new),
                        "seed {seed} cut {cut}: {got:?}"
                    );
                }
            }
        }
    }
}
