//! The devices a command sees and the VGs on them: scanning (scan dirs,
//! filter, extra devices), reading a VG from its PVs' metadata areas (the
//! highest valid seqno wins), and committing a new version to every
//! metadata area of the VG (all texts written and flushed first, then the
//! headers).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;

use crate::conf::Conf;
use crate::device::{open_device, Device};
use crate::mda;
use crate::metadata::{self, ExportInfo, Uuid, Vg};
use crate::pv::{self, PvOnDisk};

/// A command failure: its message (lvm2's wording where there is one).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{0}")]
pub struct LvmError(pub String);

impl LvmError {
    /// From anything printable.
    pub fn new(m: impl Into<String>) -> Self {
        LvmError(m.into())
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, LvmError>;

/// One device found by the scan.
#[derive(Clone)]
pub struct Scanned {
    /// Its name (path or URL).
    pub name: String,
    /// The open device.
    pub dev: Arc<dyn Device>,
    /// The PV on it, if it has a label.
    pub pv: Option<PvOnDisk>,
    /// Why its label could not be read.
    pub error: Option<String>,
}

impl std::fmt::Debug for Scanned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scanned")
            .field("name", &self.name)
            .field("pv", &self.pv)
            .finish()
    }
}

/// A VG as read, with where its PVs are.
#[derive(Debug, Clone)]
pub struct VgRef {
    /// The metadata (highest seqno found).
    pub vg: Vg,
    /// Index into `Store::devs` of each PV present.
    pub pv_devs: BTreeMap<Uuid, usize>,
    /// Problems found on the way (damaged copies, old seqnos, missing PVs).
    pub problems: Vec<String>,
}

impl VgRef {
    /// PVs of the VG whose device was not found.
    pub fn missing(&self) -> Vec<Uuid> {
        self.vg
            .pvs
            .iter()
            .map(|p| p.id)
            .filter(|id| !self.pv_devs.contains_key(id))
            .collect()
    }
}

/// The scanned devices.
#[derive(Debug, Default)]
pub struct Store {
    /// Every device that passed the filter.
    pub devs: Vec<Scanned>,
}

/// The devices of `dir`: block devices and files, also behind symlinks
/// (lvm2 scans `/dev/disk/by-path` and the like, whose entries are links),
/// each named as listed.
fn list_dir(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::metadata(e.path()).is_ok_and(|m| {
                use std::os::unix::fs::FileTypeExt;
                m.file_type().is_block_device() || m.file_type().is_file()
            })
        })
        .map(|e| e.path().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Keeps the first name of each device: a link and its target (or two
/// links to one device) are one device, as lvm2's aliases are.
fn dedup_aliases(names: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    names
        .into_iter()
        .filter(|n| seen.insert(std::fs::canonicalize(n).unwrap_or_else(|_| n.into())))
        .collect()
}

impl Store {
    /// Scans the configured places.
    pub fn scan(conf: &Conf) -> Result<Store> {
        let filter = conf.filter().map_err(LvmError)?;
        let mut names: Vec<String> = Vec::new();
        for d in conf.scan_dirs() {
            names.extend(list_dir(&d).into_iter().filter(|n| filter.accepts(n)));
        }
        names.extend(conf.extra_devices());
        let names = dedup_aliases(names);
        let mut s = Store::default();
        for n in names {
            if let Ok(dev) = open_device(&n) {
                s.add(n, dev);
            }
        }
        Ok(s)
    }

    /// Adds a device (reading its label) and returns its index.
    pub fn add(&mut self, name: String, dev: Arc<dyn Device>) -> usize {
        let (pv, error) = match pv::read_pv(dev.as_ref()) {
            Ok(pv) => (pv, None),
            Err(e) => (None, Some(e.to_string())),
        };
        self.devs.push(Scanned {
            name,
            dev,
            pv,
            error,
        });
        self.devs.len() - 1
    }

    /// Re-reads every device's label and metadata.
    pub fn reread(&mut self) {
        for s in &mut self.devs {
            match pv::read_pv(s.dev.as_ref()) {
                Ok(pv) => (s.pv, s.error) = (pv, None),
                Err(e) => (s.pv, s.error) = (None, Some(e.to_string())),
            }
        }
    }

    /// The device called `name` (as scanned, or opened now when it is
    /// named explicitly, like lvm2 does for a path on the command line).
    pub fn device(&mut self, name: &str) -> Result<usize> {
        if let Some(i) = self.devs.iter().position(|s| s.name == name) {
            return Ok(i);
        }
        let canon = std::fs::canonicalize(name).ok();
        if let Some(c) = &canon {
            let found = self
                .devs
                .iter()
                .position(|s| std::fs::canonicalize(&s.name).ok().as_ref() == Some(c));
            if let Some(i) = found {
                return Ok(i);
            }
        }
        let dev = open_device(name).map_err(|e| LvmError(format!("Cannot use {name}: {e}")))?;
        Ok(self.add(name.to_string(), dev))
    }

    /// Every VG named in some metadata area, sorted.
    pub fn vg_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.vg_texts().into_iter().map(|(_, vg)| vg.name).collect();
        names.sort();
        names.dedup();
        names
    }

    /// Every parsable metadata copy with the device it came from.
    fn vg_texts(&self) -> Vec<(usize, Vg)> {
        let mut out = Vec::new();
        for (i, s) in self.devs.iter().enumerate() {
            for (_, text) in s.pv.iter().flat_map(|p| &p.mdas) {
                if let Ok(Some(t)) = text {
                    if let Ok(vg) = metadata::import(t) {
                        out.push((i, vg));
                    }
                }
            }
        }
        out
    }

    /// Problems in metadata areas: damaged copies, for messages.
    pub fn damaged(&self) -> Vec<String> {
        let mut out = Vec::new();
        for s in &self.devs {
            if let Some(e) = &s.error {
                out.push(format!("{}: {e}", s.name));
            }
            for (start, text) in s.pv.iter().flat_map(|p| &p.mdas) {
                match text {
                    Err(e) => out.push(format!("Metadata area at {start} on {}: {e}", s.name)),
                    Ok(Some(t)) => {
                        if let Err(e) = metadata::import(t) {
                            out.push(format!("Metadata on {} at {start}: {e}", s.name));
                        }
                    }
                    Ok(None) => {}
                }
            }
        }
        out
    }

    /// The index of the device holding PV `id`.
    pub fn pv_index(&self, id: &Uuid) -> Option<usize> {
        self.devs
            .iter()
            .position(|s| s.pv.as_ref().is_some_and(|p| p.uuid == *id))
    }

    /// Reads VG `name`.
    pub fn read_vg(&self, name: &str) -> Result<VgRef> {
        let copies: Vec<(usize, Vg)> = self
            .vg_texts()
            .into_iter()
            .filter(|(_, v)| v.name == name)
            .collect();
        let best = copies
            .iter()
            .max_by_key(|(_, v)| v.seqno)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| LvmError(format!("Volume group \"{name}\" not found")))?;
        let mut problems = Vec::new();
        for (i, v) in &copies {
            if v.seqno != best.seqno {
                problems.push(format!(
                    "Inconsistent metadata found for VG {name}: {} has seqno {}, using {}",
                    self.devs[*i].name, v.seqno, best.seqno
                ));
            }
        }
        let mut pv_devs = BTreeMap::new();
        for p in &best.pvs {
            match self.pv_index(&p.id) {
                Some(i) => {
                    pv_devs.insert(p.id, i);
                    let s = &self.devs[i];
                    for (start, t) in s.pv.iter().flat_map(|x| &x.mdas) {
                        if let Err(e) = t {
                            problems.push(format!("Metadata area at {start} on {}: {e}", s.name));
                        }
                    }
                }
                None => problems.push(format!("Couldn't find device with uuid {}.", p.id)),
            }
        }
        Ok(VgRef {
            vg: best,
            pv_devs,
            problems,
        })
    }

    /// Commits `vg` (seqno already bumped by the caller) to every metadata
    /// area of its PVs, then empties the areas of `released` PVs (left the
    /// VG) and sets each label's in-use flag.
    pub fn write_vg(&mut self, vg: &mut Vg, released: &[usize], description: &str) -> Result<()> {
        vg.check().map_err(|e| {
            LvmError(format!(
                "Internal error: refusing to write inconsistent metadata: {e}"
            ))
        })?;
        let mut targets = Vec::new();
        for p in &mut vg.pvs {
            let i = self
                .pv_index(&p.id)
                .ok_or_else(|| LvmError(format!("Couldn't find device with uuid {}.", p.id)))?;
            p.device = self.devs[i].name.clone();
            targets.push(i);
        }
        let text = metadata::export(vg, &export_info(description));
        let mut staged = Vec::new();
        for &i in &targets {
            let s = &self.devs[i];
            for (start, _) in s.pv.iter().flat_map(|p| &p.mdas) {
                let st = mda::write_text(s.dev.as_ref(), *start, &text).map_err(|e| {
                    LvmError(format!(
                        "Failed to write VG {} metadata to {}: {e}",
                        vg.name, s.name
                    ))
                })?;
                staged.push((i, st));
            }
        }
        for (i, st) in &staged {
            let s = &self.devs[*i];
            mda::commit(s.dev.as_ref(), st).map_err(|e| {
                LvmError(format!(
                    "Failed to commit VG {} metadata on {}: {e}",
                    vg.name, s.name
                ))
            })?;
        }
        for &i in &targets {
            self.set_in_use(i, true)?;
        }
        for &i in released {
            self.release(i)?;
        }
        self.reread();
        Ok(())
    }

    fn set_in_use(&self, i: usize, used: bool) -> Result<()> {
        let s = &self.devs[i];
        let Some(p) = &s.pv else { return Ok(()) };
        pv::set_in_use(s.dev.as_ref(), &p.label, used)
            .map_err(|e| LvmError(format!("{}: {e}", s.name)))
    }

    /// Makes PV `i` an orphan again: empty metadata areas, label not in use.
    pub fn release(&self, i: usize) -> Result<()> {
        let s = &self.devs[i];
        let Some(p) = &s.pv else { return Ok(()) };
        for m in &p.label.pv_header.metadata_areas {
            mda::write_empty(s.dev.as_ref(), m.offset, m.size)
                .map_err(|e| LvmError(format!("{}: {e}", s.name)))?;
        }
        self.set_in_use(i, false)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// The context lines of a metadata write.
pub fn export_info(description: &str) -> ExportInfo {
    ExportInfo {
        description: description.to_string(),
        host: hostname(),
        time: now(),
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// This host's name (creation_host).
pub fn host() -> String {
    hostname()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// iscsiadm's by-path entries are links into a hidden session
    /// directory: the scan takes them, once per device.
    #[test]
    fn scan_follows_links_and_counts_a_device_once() {
        let dir = tempfile::tempdir().unwrap();
        let session = dir.path().join(".session-1");
        std::fs::create_dir(&session).unwrap();
        std::fs::write(session.join("lun-1"), b"").unwrap();
        let by_path = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
        std::os::unix::fs::symlink(session.join("lun-1"), by_path("ip-lun-1")).unwrap();
        std::os::unix::fs::symlink(session.join("lun-1"), by_path("other-lun-1")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), by_path("dangling")).unwrap();
        let listed = list_dir(dir.path());
        assert_eq!(listed, vec![by_path("ip-lun-1"), by_path("other-lun-1")]);
        assert_eq!(dedup_aliases(listed), vec![by_path("ip-lun-1")]);
        let url = "iscsi://192.0.2.1:3260/iqn.x:y/1".to_string();
        assert_eq!(dedup_aliases(vec![url.clone(), url.clone()]), vec![url]);
    }
}
