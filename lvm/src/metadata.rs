//! The VG model and its text form (lvm2 `lib/format_text/export.c`,
//! `import_vsn1.c`): a VG with its PVs and its LVs made of linear
//! (`striped`, one stripe) segments. Sizes in the text are in sectors.

use std::fmt::Write as _;

use rand::Rng;
use thiserror::Error;

use crate::config::{self, quote, Section, Value};
use crate::ondisk::ID_LEN;

/// Metadata errors.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MetadataError {
    /// The text does not parse.
    #[error("{0}")]
    Parse(#[from] config::ParseError),
    /// A field is missing or of the wrong type.
    #[error("metadata for VG {vg}: {what}")]
    Field {
        /// The VG.
        vg: String,
        /// What is wrong.
        what: String,
    },
    /// Something we do not handle (mirror, thin, striped over several PVs).
    #[error("VG {vg}: LV {lv} uses unsupported segment type {seg_type}")]
    Unsupported {
        /// The VG.
        vg: String,
        /// The LV.
        lv: String,
        /// Its segment type.
        seg_type: String,
    },
    /// A uuid is not 32 characters of lvm2's alphabet.
    #[error("invalid uuid {0:?}")]
    Uuid(String),
}

/// A uuid as lvm2 stores it: 32 characters of `[0-9a-zA-Z]`, printed in
/// groups 6-4-4-4-4-4-6.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; ID_LEN]);

const UUID_CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

impl Uuid {
    /// A new random uuid.
    pub fn generate() -> Uuid {
        let mut rng = rand::rng();
        let mut b = [0u8; ID_LEN];
        for c in &mut b {
            *c = UUID_CHARS[rng.random_range(0..UUID_CHARS.len())];
        }
        Uuid(b)
    }

    /// Parses the dashed or undashed form.
    pub fn parse(s: &str) -> Result<Uuid, MetadataError> {
        let raw: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
        let ok = raw.len() == ID_LEN
            && raw
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || b"!#".contains(c));
        if !ok {
            return Err(MetadataError::Uuid(s.to_string()));
        }
        let mut b = [0u8; ID_LEN];
        b.copy_from_slice(&raw);
        Ok(Uuid(b))
    }

    /// The 32 characters without dashes (as in the pv_header and lock names).
    pub fn raw(&self) -> &str {
        std::str::from_utf8(&self.0).expect("uuid is ascii")
    }
}

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.raw();
        let mut at = 0;
        for (i, n) in [6, 4, 4, 4, 4, 4, 6].into_iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(&r[at..at + n])?;
            at += n;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// A PV as the VG metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvMeta {
    /// The PV uuid.
    pub id: Uuid,
    /// The device path it had when last written (a hint).
    pub device: String,
    /// Status flags (`ALLOCATABLE`).
    pub status: Vec<String>,
    /// Device size in sectors.
    pub dev_size: u64,
    /// First sector of the first extent.
    pub pe_start: u64,
    /// Number of extents.
    pub pe_count: u64,
}

/// One linear segment: `extent_count` logical extents from `start_extent`,
/// on PV `pv` from physical extent `pe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// First logical extent.
    pub start_extent: u64,
    /// Length in extents.
    pub extent_count: u64,
    /// The PV (by uuid).
    pub pv: Uuid,
    /// First physical extent on the PV.
    pub pe: u64,
}

/// An LV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvMeta {
    /// Name.
    pub name: String,
    /// LV uuid.
    pub id: Uuid,
    /// Status flags (`READ`, `WRITE`, `VISIBLE`).
    pub status: Vec<String>,
    /// Other flags.
    pub flags: Vec<String>,
    /// Creation time (seconds since the epoch).
    pub creation_time: Option<i64>,
    /// Creating host.
    pub creation_host: Option<String>,
    /// Segments in logical order.
    pub segments: Vec<Segment>,
}

impl LvMeta {
    /// Length in extents.
    pub fn extents(&self) -> u64 {
        self.segments.iter().map(|s| s.extent_count).sum()
    }
}

/// A VG: everything its metadata text says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vg {
    /// Name.
    pub name: String,
    /// VG uuid.
    pub id: Uuid,
    /// Sequence number, +1 per committed change.
    pub seqno: u64,
    /// Status flags (`RESIZEABLE`, `READ`, `WRITE`, `CLUSTERED`).
    pub status: Vec<String>,
    /// Other flags.
    pub flags: Vec<String>,
    /// Extent size in sectors.
    pub extent_size: u64,
    /// Limits (0 = none).
    pub max_lv: u64,
    /// Limits (0 = none).
    pub max_pv: u64,
    /// Wanted metadata copies (0 = unmanaged).
    pub metadata_copies: u64,
    /// PVs in order (their keys are pv0, pv1, ... by position).
    pub pvs: Vec<PvMeta>,
    /// LVs in order.
    pub lvs: Vec<LvMeta>,
}

/// The VG status flag of a clustered VG.
pub const CLUSTERED: &str = "CLUSTERED";

impl Vg {
    /// Whether the VG is clustered (`vgcreate -c y`).
    pub fn is_clustered(&self) -> bool {
        self.status.iter().any(|s| s == CLUSTERED)
    }

    /// Sets or clears the clustered flag.
    pub fn set_clustered(&mut self, on: bool) {
        self.status.retain(|s| s != CLUSTERED);
        if on {
            self.status.push(CLUSTERED.to_string());
        }
    }

    /// The PV with this uuid.
    pub fn pv(&self, id: &Uuid) -> Option<&PvMeta> {
        self.pvs.iter().find(|p| p.id == *id)
    }

    /// The LV called `name`.
    pub fn lv(&self, name: &str) -> Option<&LvMeta> {
        self.lvs.iter().find(|l| l.name == name)
    }

    /// Extents in use on PV `id`.
    pub fn pv_used(&self, id: &Uuid) -> u64 {
        self.lvs
            .iter()
            .flat_map(|l| &l.segments)
            .filter(|s| s.pv == *id)
            .map(|s| s.extent_count)
            .sum()
    }

    /// Total extents.
    pub fn extent_count(&self) -> u64 {
        self.pvs.iter().map(|p| p.pe_count).sum()
    }

    /// Free extents.
    pub fn free_count(&self) -> u64 {
        let used: u64 = self.lvs.iter().map(|l| l.extents()).sum();
        self.extent_count() - used
    }

    /// Checks the invariants lvm2's vgck checks: segments inside their PVs,
    /// no extent used twice, logical extents contiguous, names unique.
    pub fn check(&self) -> Result<(), String> {
        let mut used: Vec<(Uuid, u64, u64, &str)> = Vec::new();
        for lv in &self.lvs {
            if self.lvs.iter().filter(|l| l.name == lv.name).count() > 1 {
                return Err(format!("LV name {} used twice", lv.name));
            }
            let mut next = 0;
            for s in &lv.segments {
                let pv = self
                    .pv(&s.pv)
                    .ok_or_else(|| format!("LV {} segment on unknown PV {}", lv.name, s.pv))?;
                if s.start_extent != next || s.extent_count == 0 {
                    return Err(format!("LV {} segments are not contiguous", lv.name));
                }
                if s.pe + s.extent_count > pv.pe_count {
                    return Err(format!(
                        "LV {} segment past the end of PV {}",
                        lv.name, pv.device
                    ));
                }
                next += s.extent_count;
                used.push((s.pv, s.pe, s.pe + s.extent_count, &lv.name));
            }
        }
        used.sort();
        for w in used.windows(2) {
            if w[0].0 == w[1].0 && w[1].1 < w[0].2 {
                return Err(format!("LVs {} and {} share extents", w[0].3, w[1].3));
            }
        }
        Ok(())
    }

    /// Free extent ranges `(pv, first pe, count)` in PV order.
    pub fn free_ranges(&self) -> Vec<(Uuid, u64, u64)> {
        let mut out = Vec::new();
        for pv in &self.pvs {
            if !pv.status.iter().any(|s| s == "ALLOCATABLE") {
                continue;
            }
            let mut used: Vec<(u64, u64)> = self
                .lvs
                .iter()
                .flat_map(|l| &l.segments)
                .filter(|s| s.pv == pv.id)
                .map(|s| (s.pe, s.pe + s.extent_count))
                .collect();
            used.sort();
            let mut at = 0;
            for (a, b) in used {
                if a > at {
                    out.push((pv.id, at, a - at));
                }
                at = at.max(b);
            }
            if pv.pe_count > at {
                out.push((pv.id, at, pv.pe_count - at));
            }
        }
        out
    }
}

fn field(vg: &str, what: impl Into<String>) -> MetadataError {
    MetadataError::Field {
        vg: vg.to_string(),
        what: what.into(),
    }
}

fn need_u64(s: &Section, vg: &str, key: &str) -> Result<u64, MetadataError> {
    s.int(key)
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| field(vg, format!("{key} missing or negative")))
}

fn need_uuid(s: &Section, vg: &str) -> Result<Uuid, MetadataError> {
    let id = s.str("id").ok_or_else(|| field(vg, "id missing"))?;
    Uuid::parse(id)
}

/// Parses metadata text into the VG it describes.
pub fn import(text: &str) -> Result<Vg, MetadataError> {
    let top = config::parse(text)?;
    let (name, sec) = top
        .entries
        .iter()
        .find_map(|(k, n)| match n {
            config::Node::Section(s) => Some((k.clone(), s)),
            config::Node::Value(_) => None,
        })
        .ok_or_else(|| field("?", "no VG section"))?;
    if top.int("version") != Some(1) {
        return Err(field(&name, "metadata version is not 1"));
    }
    import_vg(&name, sec)
}

fn import_vg(name: &str, s: &Section) -> Result<Vg, MetadataError> {
    let mut keys: Vec<(String, Uuid)> = Vec::new();
    let mut pvs = Vec::new();
    for (key, n) in &s
        .section("physical_volumes")
        .cloned()
        .unwrap_or_default()
        .entries
    {
        let config::Node::Section(p) = n else {
            continue;
        };
        let pv = PvMeta {
            id: need_uuid(p, name)?,
            device: p.str("device").unwrap_or("").to_string(),
            status: p.strs("status").unwrap_or_default(),
            dev_size: need_u64(p, name, "dev_size")?,
            pe_start: need_u64(p, name, "pe_start")?,
            pe_count: need_u64(p, name, "pe_count")?,
        };
        keys.push((key.clone(), pv.id));
        pvs.push(pv);
    }
    let mut lvs = Vec::new();
    for (lv_name, n) in &s
        .section("logical_volumes")
        .cloned()
        .unwrap_or_default()
        .entries
    {
        let config::Node::Section(l) = n else {
            continue;
        };
        lvs.push(import_lv(name, lv_name, l, &keys)?);
    }
    Ok(Vg {
        name: name.to_string(),
        id: need_uuid(s, name)?,
        seqno: need_u64(s, name, "seqno")?,
        status: s.strs("status").unwrap_or_default(),
        flags: s.strs("flags").unwrap_or_default(),
        extent_size: need_u64(s, name, "extent_size")?,
        max_lv: s.int("max_lv").unwrap_or(0).max(0) as u64,
        max_pv: s.int("max_pv").unwrap_or(0).max(0) as u64,
        metadata_copies: s.int("metadata_copies").unwrap_or(0).max(0) as u64,
        pvs,
        lvs,
    })
}

fn import_lv(
    vg: &str,
    name: &str,
    l: &Section,
    keys: &[(String, Uuid)],
) -> Result<LvMeta, MetadataError> {
    let count = need_u64(l, vg, "segment_count")?;
    let mut segments = Vec::new();
    for i in 1..=count {
        let seg = l
            .section(&format!("segment{i}"))
            .ok_or_else(|| field(vg, format!("LV {name} segment{i} missing")))?;
        let seg_type = seg.str("type").unwrap_or("");
        let unsupported = || MetadataError::Unsupported {
            vg: vg.to_string(),
            lv: name.to_string(),
            seg_type: seg_type.to_string(),
        };
        if seg_type != "striped" || seg.int("stripe_count") != Some(1) {
            return Err(unsupported());
        }
        let Some(Value::List(st)) = seg.value("stripes") else {
            return Err(unsupported());
        };
        let (Some(Value::Str(key)), Some(Value::Int(pe))) = (st.first(), st.get(1)) else {
            return Err(unsupported());
        };
        let pv = keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, id)| *id)
            .ok_or_else(|| field(vg, format!("LV {name} on unknown PV {key}")))?;
        segments.push(Segment {
            start_extent: need_u64(seg, vg, "start_extent")?,
            extent_count: need_u64(seg, vg, "extent_count")?,
            pv,
            pe: u64::try_from(*pe).map_err(|_| field(vg, "negative extent"))?,
        });
    }
    Ok(LvMeta {
        name: name.to_string(),
        id: need_uuid(l, vg)?,
        status: l.strs("status").unwrap_or_default(),
        flags: l.strs("flags").unwrap_or_default(),
        creation_time: l.int("creation_time"),
        creation_host: l.str("creation_host").map(str::to_string),
        segments,
    })
}

fn str_list(v: &[String]) -> String {
    let q: Vec<String> = v.iter().map(|s| quote(s)).collect();
    format!("[{}]", q.join(", "))
}

/// Context lines lvm2 writes after the VG section.
#[derive(Debug, Clone)]
pub struct ExportInfo {
    /// `description`: the command that made the change.
    pub description: String,
    /// `creation_host`.
    pub host: String,
    /// `creation_time`.
    pub time: i64,
}

/// Prints the VG as lvm2 writes metadata into a metadata area (no
/// indentation), with the trailing context lines.
pub fn export(vg: &Vg, info: &ExportInfo) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{} {{", vg.name);
    let _ = writeln!(o, "id = \"{}\"\nseqno = {}", vg.id, vg.seqno);
    let _ = writeln!(o, "format = \"lvm2\"\nstatus = {}", str_list(&vg.status));
    let _ = writeln!(
        o,
        "flags = {}\nextent_size = {}",
        str_list(&vg.flags),
        vg.extent_size
    );
    let _ = writeln!(o, "max_lv = {}\nmax_pv = {}", vg.max_lv, vg.max_pv);
    let _ = writeln!(o, "metadata_copies = {}\n", vg.metadata_copies);
    let _ = writeln!(o, "physical_volumes {{\n");
    for (i, pv) in vg.pvs.iter().enumerate() {
        let _ = writeln!(
            o,
            "pv{i} {{\nid = \"{}\"\ndevice = {}\n",
            pv.id,
            quote(&pv.device)
        );
        let _ = writeln!(o, "status = {}\nflags = []", str_list(&pv.status));
        let _ = writeln!(o, "dev_size = {}\npe_start = {}", pv.dev_size, pv.pe_start);
        let _ = writeln!(o, "pe_count = {}\n}}", pv.pe_count);
    }
    let _ = writeln!(o, "}}\n");
    if !vg.lvs.is_empty() {
        let _ = writeln!(o, "logical_volumes {{\n");
        for lv in &vg.lvs {
            export_lv(&mut o, vg, lv);
        }
        let _ = writeln!(o, "}}\n");
    }
    let _ = writeln!(
        o,
        "}}\n# Generated by LVM2-compatible rust lvm: {}\n",
        info.time
    );
    let _ = writeln!(o, "contents = \"Text Format Volume Group\"\nversion = 1\n");
    let _ = writeln!(o, "description = {}\n", quote(&info.description));
    let _ = writeln!(o, "creation_host = {}", quote(&info.host));
    let _ = writeln!(o, "creation_time = {}\n", info.time);
    o
}

fn export_lv(o: &mut String, vg: &Vg, lv: &LvMeta) {
    let _ = writeln!(o, "{} {{\nid = \"{}\"", lv.name, lv.id);
    let _ = writeln!(
        o,
        "status = {}\nflags = {}",
        str_list(&lv.status),
        str_list(&lv.flags)
    );
    if let Some(t) = lv.creation_time {
        let _ = writeln!(o, "creation_time = {t}");
    }
    if let Some(h) = &lv.creation_host {
        let _ = writeln!(o, "creation_host = {}", quote(h));
    }
    let _ = writeln!(o, "segment_count = {}\n", lv.segments.len());
    for (i, s) in lv.segments.iter().enumerate() {
        let key = vg
            .pvs
            .iter()
            .position(|p| p.id == s.pv)
            .expect("segment on a VG PV");
        let _ = writeln!(o, "segment{} {{", i + 1);
        let _ = writeln!(
            o,
            "start_extent = {}\nextent_count = {}\n",
            s.start_extent, s.extent_count
        );
        let _ = writeln!(o, "type = \"striped\"\nstripe_count = 1\n");
        let _ = writeln!(o, "stripes = [\n\"pv{key}\", {}\n]\n}}", s.pe);
    }
    let _ = writeln!(o, "}}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metadata Debian's lvm2 2.03.16 wrote at seqno 2 (pvcreate,
    /// vgcreate, lvcreate -L 8M -n lv1 on a 64 MiB loop device).
    pub(crate) const LVM2_TEXT: &str = "webvg {\nid = \"FSMNsP-wY6m-P1pG-CNAi-lEWx-Ebjf-H32vgB\"\nseqno = 2\nformat = \"lvm2\"\nstatus = [\"RESIZEABLE\", \"READ\", \"WRITE\"]\nflags = []\nextent_size = 8192\nmax_lv = 0\nmax_pv = 0\nmetadata_copies = 0\n\nphysical_volumes {\n\npv0 {\nid = \"r0GfUc-RKAf-MGcx-VdQz-mGzj-uE2y-VyRWfW\"\ndevice = \"/dev/loop0\"\n\nstatus = [\"ALLOCATABLE\"]\nflags = []\ndev_size = 131072\npe_start = 2048\npe_count = 15\n}\n}\n\nlogical_volumes {\n\nlv1 {\nid = \"o1TwbY-KHBx-FFcC-tXzV-Zk5Q-ryzY-Xpkv78\"\nstatus = [\"READ\", \"WRITE\", \"VISIBLE\"]\nflags = []\ncreation_time = 1796299168\ncreation_host = \"vm\"\nsegment_count = 1\n\nsegment1 {\nstart_extent = 0\nextent_count = 2\n\ntype = \"striped\"\nstripe_count = 1\n\nstripes = [\n\"pv0\", 0\n]\n}\n}\n}\n\n}\n# Generated by LVM2 version 2.03.16(2) (2022-05-18): Thu Dec  3 11:59:28 2026\n\ncontents = \"Text Format Volume Group\"\nversion = 1\n\ndescription = \"Write from lvcreate --driverloaded n -an -Zn -L 8M -n lv1 webvg.\"\n\ncreation_host = \"vm\"\t# Linux vm 6.18.44-fc-v1147 #1 SMP PREEMPT_DYNAMIC @0 x86_64\ncreation_time = 1796299168\t# Thu Dec  3 11:59:28 2026\n\n";

    #[test]
    fn imports_lvm2_text_and_round_trips() {
        let vg = import(LVM2_TEXT).unwrap();
        assert_eq!(vg.name, "webvg");
        assert_eq!(vg.seqno, 2);
        assert_eq!(vg.id.to_string(), "FSMNsP-wY6m-P1pG-CNAi-lEWx-Ebjf-H32vgB");
        assert_eq!((vg.extent_count(), vg.free_count()), (15, 13));
        let lv = vg.lv("lv1").unwrap();
        assert_eq!(lv.segments[0].pv, vg.pvs[0].id);
        let info = ExportInfo {
            description: "x".into(),
            host: "h".into(),
            time: 1,
        };
        assert_eq!(import(&export(&vg, &info)).unwrap(), vg);
        vg.check().unwrap();
    }

    #[test]
    fn check_finds_shared_extents() {
        let mut vg = import(LVM2_TEXT).unwrap();
        let mut lv2 = vg.lvs[0].clone();
        lv2.name = "lv2".into();
        lv2.segments[0].pe = 1;
        vg.lvs.push(lv2);
        assert!(vg.check().unwrap_err().contains("share extents"));
    }

    #[test]
    fn uuid_forms() {
        let u = Uuid::generate();
        assert_eq!(Uuid::parse(&u.to_string()).unwrap(), u);
        assert_eq!(u.to_string().len(), 38);
        assert!(Uuid::parse("short").is_err());
    }
}
