//! `pvs`, `vgs`, `lvs`: lvm2's report columns (`lib/report/columns.h`),
//! headings left-aligned, numbers and sizes right-aligned, two spaces of
//! indent, `--noheadings`, `--separator`, `--units`, `--nosuffix`,
//! `-o [+]field,...` (prefix-less names as lvm2 resolves them).

use crate::metadata::{LvMeta, PvMeta, Segment, Vg};
use crate::units::Units;

/// What a row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One row per PV.
    Pv,
    /// One row per VG.
    Vg,
    /// One row per LV (or per segment when a seg field is asked for).
    Lv,
}

/// A row's subject.
pub struct Row<'a> {
    /// The VG (None for an orphan PV).
    pub vg: Option<&'a Vg>,
    /// The PV (pvs) with its device name, size and pe_start in bytes, mda count.
    pub pv: Option<PvRow<'a>>,
    /// The LV (lvs).
    pub lv: Option<&'a LvMeta>,
    /// The segment (lvs with seg fields).
    pub seg: Option<&'a Segment>,
    /// Device names of the VG's PVs by uuid (for `devices`).
    pub names: &'a dyn Fn(&crate::metadata::Uuid) -> String,
    /// Whether the LV is active on this node.
    pub active: bool,
    /// Whether the LV's device is open.
    pub open: bool,
    /// Directory of LV device files.
    pub dev_dir: &'a str,
}

/// The PV part of a row.
pub struct PvRow<'a> {
    /// Device name.
    pub name: &'a str,
    /// The VG's record of it (None for an orphan).
    pub meta: Option<&'a PvMeta>,
    /// Device size in bytes.
    pub dev_size: u64,
    /// pe_start in bytes.
    pub pe_start: u64,
    /// Metadata areas.
    pub mda_count: usize,
    /// uuid.
    pub uuid: String,
}

struct Field {
    name: &'static str,
    heading: &'static str,
    right: bool,
}

const FIELDS: &[Field] = &[
    f("pv_name", "PV", false),
    f("vg_name", "VG", false),
    f("pv_fmt", "Fmt", false),
    f("pv_attr", "Attr", false),
    f("pv_size", "PSize", true),
    f("pv_free", "PFree", true),
    f("pv_uuid", "PV UUID", false),
    f("pe_start", "1st PE", true),
    f("pv_pe_count", "PE", true),
    f("pv_pe_alloc_count", "Alloc", true),
    f("dev_size", "DevSize", true),
    f("pv_mda_count", "#PMda", true),
    f("pv_used", "Used", true),
    f("pv_count", "#PV", true),
    f("lv_count", "#LV", true),
    f("snap_count", "#SN", true),
    f("vg_attr", "Attr", false),
    f("vg_size", "VSize", true),
    f("vg_free", "VFree", true),
    f("vg_uuid", "VG UUID", false),
    f("vg_extent_size", "Ext", true),
    f("vg_extent_count", "#Ext", true),
    f("vg_free_count", "Free", true),
    f("vg_seqno", "Seq", true),
    f("vg_mda_count", "#VMda", true),
    f("vg_clustered", "Clustered", false),
    f("lv_name", "LV", false),
    f("lv_attr", "Attr", false),
    f("lv_size", "LSize", true),
    f("lv_uuid", "LV UUID", false),
    f("pool_lv", "Pool", false),
    f("origin", "Origin", false),
    f("data_percent", "Data%", true),
    f("metadata_percent", "Meta%", true),
    f("move_pv", "Move", false),
    f("mirror_log", "Log", false),
    f("copy_percent", "Cpy%Sync", true),
    f("convert_lv", "Convert", false),
    f("devices", "Devices", false),
    f("seg_count", "#Seg", true),
    f("lv_path", "Path", false),
    f("seg_start_pe", "Start", true),
    f("seg_size", "SSize", true),
    f("seg_pe_ranges", "PE Ranges", false),
    f("lv_active", "Active", false),
];

const fn f(name: &'static str, heading: &'static str, right: bool) -> Field {
    Field {
        name,
        heading,
        right,
    }
}

/// The default columns of each report.
pub fn default_fields(k: Kind) -> &'static str {
    match k {
        Kind::Pv => "pv_name,vg_name,pv_fmt,pv_attr,pv_size,pv_free",
        Kind::Vg => "vg_name,pv_count,lv_count,snap_count,vg_attr,vg_size,vg_free",
        Kind::Lv => "lv_name,vg_name,lv_attr,lv_size,pool_lv,origin,data_percent,metadata_percent,move_pv,mirror_log,copy_percent,convert_lv",
    }
}

fn resolve(name: &str, k: Kind) -> Option<&'static Field> {
    let prefixes: &[&str] = match k {
        Kind::Pv => &["", "pv_", "vg_"],
        Kind::Vg => &["", "vg_", "pv_", "lv_"],
        Kind::Lv => &["", "lv_", "seg_", "vg_"],
    };
    let alias = match name {
        "name" => match k {
            Kind::Pv => "pv_name",
            Kind::Vg => "vg_name",
            Kind::Lv => "lv_name",
        },
        n => n,
    };
    prefixes
        .iter()
        .find_map(|p| FIELDS.iter().find(|f| f.name == format!("{p}{alias}")))
}

/// Parses `-o`: `None` keeps the defaults, `+a,b` appends.
pub fn columns(k: Kind, opt: Option<&str>) -> Result<Vec<&'static str>, String> {
    let spec = match opt {
        None => default_fields(k).to_string(),
        Some(o) if o.starts_with('+') => format!("{},{}", default_fields(k), &o[1..]),
        Some(o) => o.to_string(),
    };
    spec.split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            resolve(s.trim(), k)
                .map(|f| f.name)
                .ok_or_else(|| format!("Unrecognised field: {s}"))
        })
        .collect()
}

/// Whether any column is per segment.
pub fn wants_segments(cols: &[&str]) -> bool {
    cols.iter()
        .any(|c| c.starts_with("seg_") && *c != "seg_count" || *c == "devices")
}

/// Formatting options.
pub struct Style {
    /// Size units.
    pub units: Units,
    /// Print the heading line.
    pub headings: bool,
    /// Column separator; aligned output when `None`.
    pub separator: Option<String>,
}

/// Renders rows into lines.
pub fn render(cols: &[&str], rows: &[Row<'_>], style: &Style) -> Vec<String> {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| value(c, r, &style.units)).collect())
        .collect();
    let fields: Vec<&Field> = cols
        .iter()
        .map(|c| FIELDS.iter().find(|f| f.name == *c).expect("resolved"))
        .collect();
    if let Some(sep) = &style.separator {
        let mut out = Vec::new();
        if style.headings {
            out.push(format!(
                "  {}",
                fields
                    .iter()
                    .map(|f| f.heading)
                    .collect::<Vec<_>>()
                    .join(sep)
            ));
        }
        out.extend(cells.iter().map(|r| format!("  {}", r.join(sep))));
        return out;
    }
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| {
            let h = if style.headings {
                fields[i].heading.len()
            } else {
                0
            };
            let h = h.max(min_width(fields[i].name));
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
                .max(h)
        })
        .collect();
    let mut out = Vec::new();
    if style.headings {
        let h: Vec<String> = fields
            .iter()
            .zip(&widths)
            .map(|(f, w)| format!("{:<w$}", f.heading, w = *w))
            .collect();
        out.push(format!("  {}", h.join(" ")));
    }
    for r in &cells {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .zip(&fields)
            .map(|((v, w), f)| {
                if f.right {
                    format!("{v:>w$}", w = *w)
                } else {
                    format!("{v:<w$}", w = *w)
                }
            })
            .collect();
        out.push(format!("  {}", line.join(" ")));
    }
    out
}

/// lvm2's minimum widths where they exceed the heading (`columns.h`).
fn min_width(field: &str) -> usize {
    match field {
        "lv_name" => 4,
        "data_percent" | "metadata_percent" => 6,
        _ => 0,
    }
}

fn vg_attr(vg: &Vg) -> String {
    let w = if vg.status.iter().any(|s| s == "WRITE") {
        'w'
    } else {
        'r'
    };
    let z = if vg.status.iter().any(|s| s == "RESIZEABLE") {
        'z'
    } else {
        '-'
    };
    let x = if vg.status.iter().any(|s| s == "EXPORTED") {
        'x'
    } else {
        '-'
    };
    let c = if vg.is_clustered() { 'c' } else { '-' };
    format!("{w}{z}{x}-n{c}")
}

fn lv_attr(lv: &LvMeta, active: bool, open: bool) -> String {
    let w = if lv.status.iter().any(|s| s == "WRITE") {
        'w'
    } else {
        'r'
    };
    let a = if active { 'a' } else { '-' };
    let o = if open { 'o' } else { '-' };
    format!("-{w}i-{a}{o}----")
}

fn value(col: &str, r: &Row<'_>, u: &Units) -> String {
    let vg = r.vg;
    let ext = vg.map_or(0, |v| v.extent_size * 512);
    let pv_used = |p: &PvMeta| vg.map_or(0, |v| v.pv_used(&p.id));
    match col {
        "pv_name" => r.pv.as_ref().map_or(String::new(), |p| p.name.to_string()),
        "vg_name" => vg.map_or(String::new(), |v| v.name.clone()),
        "pv_fmt" => "lvm2".into(),
        "pv_attr" => match r.pv.as_ref().and_then(|p| p.meta) {
            Some(m) if m.status.iter().any(|s| s == "ALLOCATABLE") => "a--".into(),
            _ => "---".into(),
        },
        "pv_size" => r.pv.as_ref().map_or(String::new(), |p| match p.meta {
            Some(m) => u.format(m.pe_count * ext),
            None => u.format(p.dev_size),
        }),
        "pv_free" => r.pv.as_ref().map_or(String::new(), |p| match p.meta {
            Some(m) => u.format((m.pe_count - pv_used(m)) * ext),
            None => u.format(p.dev_size),
        }),
        "pv_used" => r.pv.as_ref().map_or(String::new(), |p| {
            u.format(p.meta.map_or(0, |m| pv_used(m) * ext))
        }),
        "pv_uuid" => r.pv.as_ref().map_or(String::new(), |p| p.uuid.clone()),
        "pe_start" => {
            r.pv.as_ref()
                .map_or(String::new(), |p| u.format(p.pe_start))
        }
        "pv_pe_count" => r.pv.as_ref().map_or(String::new(), |p| {
            p.meta.map_or(0, |m| m.pe_count).to_string()
        }),
        "pv_pe_alloc_count" => {
            r.pv.as_ref()
                .map_or(String::new(), |p| p.meta.map_or(0, pv_used).to_string())
        }
        "dev_size" => {
            r.pv.as_ref()
                .map_or(String::new(), |p| u.format(p.dev_size))
        }
        "pv_mda_count" => {
            r.pv.as_ref()
                .map_or(String::new(), |p| p.mda_count.to_string())
        }
        "pv_count" => vg.map_or(String::new(), |v| v.pvs.len().to_string()),
        "lv_count" => vg.map_or(String::new(), |v| v.lvs.len().to_string()),
        "snap_count" => vg.map_or(String::new(), |_| "0".into()),
        "vg_attr" => vg.map_or(String::new(), vg_attr),
        "vg_size" => vg.map_or(String::new(), |v| u.format(v.extent_count() * ext)),
        "vg_free" => vg.map_or(String::new(), |v| u.format(v.free_count() * ext)),
        "vg_uuid" => vg.map_or(String::new(), |v| v.id.to_string()),
        "vg_extent_size" => vg.map_or(String::new(), |_| u.format(ext)),
        "vg_extent_count" => vg.map_or(String::new(), |v| v.extent_count().to_string()),
        "vg_free_count" => vg.map_or(String::new(), |v| v.free_count().to_string()),
        "vg_seqno" => vg.map_or(String::new(), |v| v.seqno.to_string()),
        "vg_mda_count" => vg.map_or(String::new(), |v| v.pvs.len().to_string()),
        "vg_clustered" => vg.map_or(String::new(), |v| {
            if v.is_clustered() {
                "clustered".into()
            } else {
                String::new()
            }
        }),
        _ => lv_value(col, r, u, ext),
    }
}

fn lv_value(col: &str, r: &Row<'_>, u: &Units, ext: u64) -> String {
    let Some(lv) = r.lv else { return String::new() };
    let vg = r.vg.expect("an LV row has its VG");
    match col {
        "lv_name" => lv.name.clone(),
        "lv_attr" => lv_attr(lv, r.active, r.open),
        "lv_size" => u.format(lv.extents() * ext),
        "lv_uuid" => lv.id.to_string(),
        "seg_count" => lv.segments.len().to_string(),
        "lv_path" => format!("{}/{}/{}", r.dev_dir, vg.name, lv.name),
        "lv_active" => {
            if r.active {
                "active".into()
            } else {
                String::new()
            }
        }
        "devices" => match r.seg {
            Some(s) => format!("{}({})", (r.names)(&s.pv), s.pe),
            None => lv
                .segments
                .iter()
                .map(|s| format!("{}({})", (r.names)(&s.pv), s.pe))
                .collect::<Vec<_>>()
                .join(","),
        },
        "seg_start_pe" => r.seg.map_or(String::new(), |s| s.start_extent.to_string()),
        "seg_size" => r
            .seg
            .map_or(String::new(), |s| u.format(s.extent_count * ext)),
        "seg_pe_ranges" => r.seg.map_or(String::new(), |s| {
            format!(
                "{}:{}-{}",
                (r.names)(&s.pv),
                s.pe,
                s.pe + s.extent_count - 1
            )
        }),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_resolve_like_lvm2() {
        assert_eq!(
            columns(Kind::Pv, Some("name,size,free")).unwrap(),
            vec!["pv_name", "pv_size", "pv_free"]
        );
        assert_eq!(
            columns(Kind::Vg, Some("+seqno")).unwrap().last(),
            Some(&"vg_seqno")
        );
        assert_eq!(
            columns(Kind::Lv, Some("lv_name,devices,start_pe")).unwrap()[2],
            "seg_start_pe"
        );
        assert!(columns(Kind::Lv, Some("bogus")).is_err());
    }
}
