//! A PV on its device: writing a fresh label (pvcreate), finding and
//! reading the label, reading the committed metadata from its areas.

use thiserror::Error;

use crate::device::Device;
use crate::mda::{self, MdaError};
use crate::metadata::Uuid;
use crate::ondisk::{
    DiskLocn, FormatError, Label, PvHeader, PvHeaderExt, LABEL_SCAN_SECTORS, LABEL_SECTOR,
    PV_EXT_USED, PV_HEADER_EXTENSION_VSN, SECTOR_SIZE,
};

/// Where lvm2 puts the first metadata area (after the label sectors).
pub const MDA_START: u64 = 4096;
/// lvm2's default first extent: 1 MiB.
pub const DEFAULT_PE_START: u64 = 1 << 20;

/// PV-level errors.
#[derive(Debug, Error)]
pub enum PvError {
    /// I/O on the device.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A damaged label.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// A damaged metadata area.
    #[error(transparent)]
    Mda(#[from] MdaError),
    /// The device is too small for a PV.
    #[error("device is too small ({0} bytes) for a physical volume")]
    TooSmall(u64),
}

/// What a PV's device holds.
#[derive(Debug, Clone)]
pub struct PvOnDisk {
    /// The label.
    pub label: Label,
    /// The PV uuid.
    pub uuid: Uuid,
    /// Committed metadata text of each metadata area that has any, with
    /// the area's start; an unreadable area is an `Err` kept for messages.
    pub mdas: Vec<(u64, Result<Option<String>, String>)>,
}

impl PvOnDisk {
    /// Byte offset of the first extent.
    pub fn pe_start(&self) -> u64 {
        self.label
            .pv_header
            .data_areas
            .first()
            .map_or(DEFAULT_PE_START, |d| d.offset)
    }

    /// Whether the label says the PV belongs to a VG.
    pub fn in_use(&self) -> bool {
        self.label
            .pv_header
            .ext
            .as_ref()
            .is_some_and(|e| e.flags & PV_EXT_USED != 0)
    }
}

/// Finds and decodes the label in the first sectors; `Ok(None)` when
/// there is none.
pub fn find_label(dev: &dyn Device) -> Result<Option<Label>, PvError> {
    let mut b = [0u8; SECTOR_SIZE as usize];
    for sector in 0..LABEL_SCAN_SECTORS {
        if (sector + 1) * SECTOR_SIZE > dev.size() {
            break;
        }
        dev.read_at(sector * SECTOR_SIZE, &mut b)?;
        if let Some(l) = Label::decode(sector, &b)? {
            return Ok(Some(l));
        }
    }
    Ok(None)
}

/// Reads the PV on `dev`: `Ok(None)` when it has no lvm2 label.
pub fn read_pv(dev: &dyn Device) -> Result<Option<PvOnDisk>, PvError> {
    let Some(label) = find_label(dev)? else {
        return Ok(None);
    };
    let uuid = Uuid::parse(&String::from_utf8_lossy(&label.pv_header.uuid))
        .map_err(|_| FormatError::LabelMalformed(label.sector, "pv uuid"))?;
    let mdas = label
        .pv_header
        .metadata_areas
        .iter()
        .map(|m| {
            (
                m.offset,
                mda::read_committed(dev, m.offset).map_err(|e| e.to_string()),
            )
        })
        .collect();
    Ok(Some(PvOnDisk { label, uuid, mdas }))
}

/// Writes a new PV: an empty metadata area at 4 KiB up to `pe_start`, then
/// the label in sector 1. Other sectors holding a label are zeroed first.
pub fn pvcreate(dev: &dyn Device, uuid: Uuid, pe_start: u64) -> Result<Label, PvError> {
    let size = dev.size() / SECTOR_SIZE * SECTOR_SIZE;
    if size < pe_start + (1 << 20) {
        return Err(PvError::TooSmall(size));
    }
    wipe_labels(dev)?;
    mda::write_empty(dev, MDA_START, pe_start - MDA_START)?;
    let label = Label {
        sector: LABEL_SECTOR,
        pv_header: PvHeader {
            uuid: uuid.0,
            device_size: size,
            data_areas: vec![DiskLocn {
                offset: pe_start,
                size: 0,
            }],
            metadata_areas: vec![DiskLocn {
                offset: MDA_START,
                size: pe_start - MDA_START,
            }],
            ext: Some(PvHeaderExt {
                version: PV_HEADER_EXTENSION_VSN,
                flags: 0,
                bootloader_areas: vec![],
            }),
        },
    };
    write_label(dev, &label)?;
    Ok(label)
}

/// Rewrites the label (one sector) and flushes.
pub fn write_label(dev: &dyn Device, label: &Label) -> Result<(), PvError> {
    dev.write_at(label.sector * SECTOR_SIZE, &label.encode())?;
    dev.flush()?;
    Ok(())
}

/// Sets or clears the PV_EXT_USED flag, rewriting the label if it changes.
pub fn set_in_use(dev: &dyn Device, label: &Label, used: bool) -> Result<(), PvError> {
    let mut l = label.clone();
    let ext = l.pv_header.ext.get_or_insert(PvHeaderExt {
        version: PV_HEADER_EXTENSION_VSN,
        flags: 0,
        bootloader_areas: vec![],
    });
    let flags = if used {
        ext.flags | PV_EXT_USED
    } else {
        ext.flags & !PV_EXT_USED
    };
    if flags == ext.flags && label.pv_header.ext.is_some() {
        return Ok(());
    }
    ext.flags = flags;
    write_label(dev, &l)
}

/// Zeroes every label sector (pvremove) and the metadata area header.
pub fn wipe_labels(dev: &dyn Device) -> Result<(), PvError> {
    let zero = [0u8; SECTOR_SIZE as usize];
    let mut b = [0u8; SECTOR_SIZE as usize];
    for sector in 0..LABEL_SCAN_SECTORS {
        dev.read_at(sector * SECTOR_SIZE, &mut b)?;
        if &b[0..8] == crate::ondisk::LABEL_ID {
            dev.write_at(sector * SECTOR_SIZE, &zero)?;
        }
    }
    dev.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::MemDevice;

    #[test]
    fn pvcreate_then_read() {
        let d = MemDevice::new(8 << 20);
        let u = Uuid::generate();
        pvcreate(&d, u, DEFAULT_PE_START).unwrap();
        let pv = read_pv(&d).unwrap().unwrap();
        assert_eq!(pv.uuid, u);
        assert_eq!(pv.pe_start(), 1 << 20);
        assert_eq!(pv.mdas.len(), 1);
        assert!(matches!(pv.mdas[0], (4096, Ok(None))));
        assert!(!pv.in_use());
        set_in_use(&d, &pv.label, true).unwrap();
        assert!(read_pv(&d).unwrap().unwrap().in_use());
        wipe_labels(&d).unwrap();
        assert!(read_pv(&d).unwrap().is_none());
    }
}
