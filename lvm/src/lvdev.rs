//! An LV as a [`Device`]: its segments mapped linearly over their PVs,
//! as device-mapper's `linear` target maps them. This is what the FUSE
//! file of an active LV serves and what clusterfs opens as `lvm:VG/LV`.

use std::io;
use std::sync::Arc;

use crate::conf::Conf;
use crate::device::Device;
use crate::store::{LvmError, Result, Store};

/// One piece of the map: LV bytes `[start, start + len)` are PV bytes from
/// `pv_offset`.
#[derive(Clone)]
struct Piece {
    start: u64,
    len: u64,
    dev: Arc<dyn Device>,
    pv_offset: u64,
}

/// An LV mapped over its PVs.
#[derive(Clone)]
pub struct LvDevice {
    pieces: Vec<Piece>,
    size: u64,
    /// `VG/LV`.
    pub name: String,
}

impl std::fmt::Debug for LvDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LvDevice")
            .field("name", &self.name)
            .field("size", &self.size)
            .finish()
    }
}

impl LvDevice {
    /// Maps LV `lv` of VG `vg` as read from `store`.
    pub fn from_store(store: &Store, vg: &str, lv: &str) -> Result<LvDevice> {
        let r = store.read_vg(vg)?;
        let l =
            r.vg.lv(lv)
                .ok_or_else(|| LvmError(format!("Failed to find logical volume \"{vg}/{lv}\"")))?;
        let ext = r.vg.extent_size * 512;
        let mut pieces = Vec::new();
        for s in &l.segments {
            let i = *r
                .pv_devs
                .get(&s.pv)
                .ok_or_else(|| LvmError(format!("Couldn't find device with uuid {}.", s.pv)))?;
            let pv = r.vg.pv(&s.pv).expect("segment on a VG PV");
            pieces.push(Piece {
                start: s.start_extent * ext,
                len: s.extent_count * ext,
                dev: store.devs[i].dev.clone(),
                pv_offset: pv.pe_start * 512 + s.pe * ext,
            });
        }
        Ok(LvDevice {
            size: l.extents() * ext,
            pieces,
            name: format!("{vg}/{lv}"),
        })
    }

    /// Opens `VG/LV` with the system's lvm.conf (scan + read, no locks).
    pub fn open(spec: &str, conf: &Conf) -> Result<LvDevice> {
        let (vg, lv) = spec
            .split_once('/')
            .ok_or_else(|| LvmError(format!("\"{spec}\": expected VG/LV")))?;
        let store = Store::scan(conf)?;
        Self::from_store(&store, vg, lv)
    }

    /// Splits a request into (piece, offset in piece, range of the buffer).
    fn each(
        &self,
        offset: u64,
        len: usize,
        mut f: impl FnMut(&Piece, u64, std::ops::Range<usize>) -> io::Result<()>,
    ) -> io::Result<()> {
        let end = offset
            .checked_add(len as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "{len} bytes at {offset} are past the end of {} ({} bytes)",
                        self.name, self.size
                    ),
                )
            })?;
        let mut at = offset;
        while at < end {
            let p = self
                .pieces
                .iter()
                .find(|p| at >= p.start && at < p.start + p.len)
                .expect("pieces cover the LV");
            let n = (p.start + p.len).min(end) - at;
            let b = (at - offset) as usize;
            f(p, at - p.start, b..b + n as usize)?;
            at += n;
        }
        Ok(())
    }
}

impl Device for LvDevice {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.each(offset, buf.len(), |p, off, r| {
            p.dev.read_at(p.pv_offset + off, &mut buf[r])
        })
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.each(offset, buf.len(), |p, off, r| {
            p.dev.write_at(p.pv_offset + off, &buf[r])
        })
    }

    fn flush(&self) -> io::Result<()> {
        let mut seen: Vec<*const ()> = Vec::new();
        for p in &self.pieces {
            let id = Arc::as_ptr(&p.dev) as *const ();
            if !seen.contains(&id) {
                seen.push(id);
                p.dev.flush()?;
            }
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }
}
