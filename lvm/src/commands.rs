//! The commands. [`run`] takes argv as lvm2 does (the program name, or
//! `lvm` and the command as first word), prints lvm2's messages (two
//! spaces of indent; errors on stderr) and returns the exit code: 0, 3
//! for a bad command line, 5 when the command failed.

use std::io::Write;

use crate::activate;
use crate::args::Args;
use crate::conf::{self, Conf};
use crate::lock::{vg_lock_name, ClusterLocker, LocalLocker, LockMode, Locker, GLOBAL_LOCK};
use crate::metadata::{LvMeta, PvMeta, Segment, Uuid, Vg};
use crate::pv::{self, DEFAULT_PE_START};
use crate::report::{self, Kind, PvRow, Row, Style};
use crate::store::{LvmError, Result, Store, VgRef};
use crate::units::{display_size, parse_size, Units};

/// Exit code of a failed command (`ECMD_FAILED`).
pub const ECMD_FAILED: i32 = 5;
/// Exit code of a bad command line (`EINVALID_CMD_LINE`).
pub const EINVALID_CMD_LINE: i32 = 3;

/// The commands `lvm` knows (and installs as links).
pub const COMMANDS: &[&str] = &[
    "pvcreate",
    "pvremove",
    "pvs",
    "pvdisplay",
    "pvscan",
    "pvck",
    "vgcreate",
    "vgextend",
    "vgreduce",
    "vgremove",
    "vgchange",
    "vgs",
    "vgdisplay",
    "vgscan",
    "vgck",
    "lvcreate",
    "lvextend",
    "lvremove",
    "lvchange",
    "lvs",
    "lvdisplay",
    "lvscan",
    "lvmconf",
];

/// One command's state: config, devices, locks, output.
pub struct Cmd<'a> {
    /// The configuration.
    pub conf: Conf,
    /// The scanned devices.
    pub store: Store,
    /// The locks.
    pub locker: Box<dyn Locker>,
    /// The parsed arguments.
    pub args: Args,
    /// The command line (for the metadata's description).
    pub line: String,
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
}

impl Cmd<'_> {
    fn say(&mut self, m: impl AsRef<str>) {
        let _ = writeln!(self.out, "  {}", m.as_ref());
    }

    fn warn(&mut self, m: impl AsRef<str>) {
        let _ = writeln!(self.err, "  {}", m.as_ref());
    }

    fn print(&mut self, m: impl AsRef<str>) {
        let _ = writeln!(self.out, "{}", m.as_ref());
    }
}

/// Runs one command line; returns the exit code.
pub fn run(argv: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let prog = argv
        .first()
        .map_or("lvm", |a| a.rsplit('/').next().unwrap_or(a));
    let (name, rest) = if prog == "lvm" {
        match argv.get(1) {
            Some(c) => (c.as_str(), &argv[2..]),
            None => {
                let _ = writeln!(err, "  Commands: {}", COMMANDS.join(" "));
                return EINVALID_CMD_LINE;
            }
        }
    } else {
        (prog, &argv[1..])
    };
    if name == "version" {
        let _ = writeln!(
            out,
            "  LVM version:     2.03.16(2)-rust (lvm crate {})",
            env!("CARGO_PKG_VERSION")
        );
        return 0;
    }
    if name == activate::SERVE_COMMAND {
        return match activate::serve_main(rest) {
            Ok(()) => 0,
            Err(e) => {
                let _ = writeln!(err, "  {e}");
                ECMD_FAILED
            }
        };
    }
    let args = match Args::parse(rest) {
        Ok(a) => a,
        Err(e) => {
            let _ = writeln!(err, "  {e}");
            return EINVALID_CMD_LINE;
        }
    };
    if !COMMANDS.contains(&name) {
        let _ = writeln!(err, "  No such command '{name}'.  Try 'help'.");
        return EINVALID_CMD_LINE;
    }
    let conf = match Conf::load(&args.values(&["--config"])) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "  {e}");
            return ECMD_FAILED;
        }
    };
    if name == "lvmconf" {
        return lvmconf(&args, &conf, out, err);
    }
    let store = match Store::scan(&conf) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "  {e}");
            return ECMD_FAILED;
        }
    };
    let locker: Box<dyn Locker> = if conf.locking_type() == 3 {
        Box::new(ClusterLocker::new(&conf.clvmd_socket()))
    } else {
        Box::new(LocalLocker::new(&conf.locking_dir()))
    };
    let mut cmd = Cmd {
        conf,
        store,
        locker,
        line: format!("{name} {}", rest.join(" ")),
        args,
        out,
        err,
    };
    match dispatch(name, &mut cmd) {
        Ok(()) => 0,
        Err(e) => {
            for l in e.0.lines().filter(|l| !l.trim().is_empty()) {
                cmd.warn(l.trim_start());
            }
            ECMD_FAILED
        }
    }
}

fn dispatch(name: &str, c: &mut Cmd<'_>) -> Result<()> {
    match name {
        "pvcreate" => pvcreate(c),
        "pvremove" => pvremove(c),
        "pvs" => report_cmd(c, Kind::Pv),
        "vgs" => report_cmd(c, Kind::Vg),
        "lvs" => report_cmd(c, Kind::Lv),
        "pvdisplay" => pvdisplay(c),
        "vgdisplay" => vgdisplay(c),
        "lvdisplay" => lvdisplay(c),
        "pvscan" => pvscan(c),
        "vgscan" => vgscan(c),
        "lvscan" => lvscan(c),
        "pvck" => pvck(c),
        "vgck" => vgck(c),
        "vgcreate" => vgcreate(c),
        "vgextend" => vgextend(c),
        "vgreduce" => vgreduce(c),
        "vgremove" => vgremove(c),
        "vgchange" => vgchange(c),
        "lvcreate" => lvcreate(c),
        "lvextend" => lvextend(c),
        "lvremove" => lvremove(c),
        "lvchange" => lvchange(c),
        _ => Err(LvmError(format!("No such command '{name}'."))),
    }
}

// ---- locking and reading --------------------------------------------------

/// Takes the VG lock, rereads the devices and reads the VG; refuses a
/// clustered VG without clustered locking.
fn lock_and_read(c: &mut Cmd<'_>, vg: &str, mode: LockMode) -> Result<VgRef> {
    c.locker.lock(&vg_lock_name(vg), mode)?;
    c.store.reread();
    let r = c.store.read_vg(vg);
    if let Err(e) = &r {
        for d in c.store.damaged() {
            c.warn(d);
        }
        return Err(e.clone());
    }
    let r = r.expect("checked");
    if r.vg.is_clustered() && !c.locker.clustered() {
        return Err(LvmError(format!(
            "Skipping clustered volume group {vg}: clustered locking is not enabled (lvmconf --enable-cluster, then start clvmd)."
        )));
    }
    for p in &r.problems {
        c.warn(format!("WARNING: {p}"));
    }
    if mode == LockMode::Pw && !r.problems.is_empty() {
        return Err(LvmError(format!(
            "Cannot change VG {vg} while its metadata is damaged or PVs are missing; nothing was written."
        )));
    }
    Ok(r)
}

/// Commits a changed VG: seqno + 1, every metadata area, then tells the
/// other nodes.
fn commit(c: &mut Cmd<'_>, mut vg: Vg, released: &[usize]) -> Result<Vg> {
    vg.seqno += 1;
    let line = c.line.clone();
    c.store
        .write_vg(&mut vg, released, &format!("Write from {line}."))?;
    c.locker.vg_changed(&vg.name)?;
    Ok(vg)
}

fn yes(v: &str) -> Result<bool> {
    match v {
        "y" | "yes" => Ok(true),
        "n" | "no" => Ok(false),
        _ => Err(LvmError(format!("Invalid argument {v}: expected y or n"))),
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 127
        && !n.starts_with('-')
        && n != "."
        && n != ".."
        && n.chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "+_.-".contains(ch))
}

fn pos_required(c: &Cmd<'_>, what: &str) -> Result<Vec<String>> {
    if c.args.pos.is_empty() {
        return Err(LvmError(format!("Please enter {what}.")));
    }
    Ok(c.args.pos.clone())
}

// ---- PV commands ------------------------------------------------------------

fn pe_start_arg(c: &Cmd<'_>) -> Result<u64> {
    match c.args.value(&["--dataalignment"]) {
        None => Ok(DEFAULT_PE_START),
        Some(s) => {
            let (_, b) = parse_size(s).map_err(LvmError)?;
            Ok(b.max(1 << 20).next_multiple_of(1 << 20))
        }
    }
}

/// pvcreate of one device; returns its index.
fn make_pv(c: &mut Cmd<'_>, name: &str) -> Result<usize> {
    let i = c.store.device(name)?;
    if let Some(p) = &c.store.devs[i].pv {
        let uuid = p.uuid;
        if let Some(vg) = c.store.vg_names().into_iter().find(|v| {
            c.store
                .read_vg(v)
                .is_ok_and(|r| r.vg.pvs.iter().any(|p| p.id == uuid))
        }) {
            return Err(LvmError(format!(
                "Can't initialize physical volume \"{name}\" of volume group \"{vg}\" without -ff"
            )));
        }
    }
    let uuid = match c.args.value(&["-u", "--uuid"]) {
        Some(u) => Uuid::parse(u).map_err(|e| LvmError(e.to_string()))?,
        None => Uuid::generate(),
    };
    let pe_start = pe_start_arg(c)?;
    let dev = c.store.devs[i].dev.clone();
    pv::pvcreate(dev.as_ref(), uuid, pe_start).map_err(|e| LvmError(format!("{name}: {e}")))?;
    c.store.reread();
    c.say(format!("Physical volume \"{name}\" successfully created."));
    Ok(i)
}

fn pvcreate(c: &mut Cmd<'_>) -> Result<()> {
    let names = pos_required(c, "a physical volume path")?;
    c.locker.lock(GLOBAL_LOCK, LockMode::Pw)?;
    for n in names {
        make_pv(c, &n)?;
    }
    Ok(())
}

fn pvremove(c: &mut Cmd<'_>) -> Result<()> {
    let names = pos_required(c, "a physical volume path")?;
    c.locker.lock(GLOBAL_LOCK, LockMode::Pw)?;
    for n in names {
        let i = c.store.device(&n)?;
        let Some(p) = c.store.devs[i].pv.clone() else {
            return Err(LvmError(format!("No PV found on device {n}.")));
        };
        if let Some(vg) = vg_of_pv(&c.store, &p.uuid) {
            return Err(LvmError(format!(
                "PV {n} is used by VG {vg} so please use vgreduce first."
            )));
        }
        let dev = c.store.devs[i].dev.clone();
        pv::wipe_labels(dev.as_ref()).map_err(|e| LvmError(format!("{n}: {e}")))?;
        c.say(format!(
            "Labels on physical volume \"{n}\" successfully wiped."
        ));
    }
    c.store.reread();
    Ok(())
}

fn vg_of_pv(store: &Store, id: &Uuid) -> Option<String> {
    store.vg_names().into_iter().find(|v| {
        store
            .read_vg(v)
            .is_ok_and(|r| r.vg.pvs.iter().any(|p| p.id == *id))
    })
}

// ---- reports ------------------------------------------------------------------

fn units(c: &Cmd<'_>) -> Result<Units> {
    let suffix = !c.args.has(&["--nosuffix"]);
    match c.args.value(&["--units"]) {
        Some(u) => Units::parse(u, suffix).map_err(LvmError),
        None => Ok(Units { unit: 'h', suffix }),
    }
}

/// VGs to report on: those named, else all; clustered ones are read
/// without their lock when clustered locking is off (lvm2 skips them).
fn read_vgs(c: &mut Cmd<'_>, names: &[String]) -> Result<Vec<VgRef>> {
    let all = if names.is_empty() {
        c.store.vg_names()
    } else {
        names.to_vec()
    };
    let mut out = Vec::new();
    let mut failed = None;
    for n in all {
        match lock_and_read(c, &n, LockMode::Pr) {
            Ok(r) => out.push(r),
            Err(e) => {
                c.warn(&e.0);
                failed = Some(e);
            }
        }
        c.locker.unlock(&vg_lock_name(&n))?;
    }
    match failed {
        // The reasons were printed above; the command fails.
        Some(_) if !names.is_empty() => Err(LvmError(String::new())),
        _ => Ok(out),
    }
}

fn split_lv_arg(s: &str) -> (String, Option<String>) {
    let s = s.trim_start_matches("/dev/");
    match s.split_once('/') {
        Some((v, l)) => (v.to_string(), Some(l.to_string())),
        None => (s.to_string(), None),
    }
}

fn report_cmd(c: &mut Cmd<'_>, kind: Kind) -> Result<()> {
    let cols = report::columns(kind, c.args.value(&["-o", "--options"])).map_err(LvmError)?;
    let style = Style {
        units: units(c)?,
        headings: !c.args.has(&["--noheadings"]),
        separator: c.args.value(&["--separator"]).map(str::to_string),
    };
    let dev_dir = c.conf.dev_dir().to_string_lossy().into_owned();
    let (vg_names, lv_filter): (Vec<String>, Vec<(String, Option<String>)>) = match kind {
        Kind::Lv => {
            let parts: Vec<_> = c.args.pos.iter().map(|s| split_lv_arg(s)).collect();
            let mut names: Vec<String> = parts.iter().map(|(v, _)| v.clone()).collect();
            names.dedup();
            (names, parts)
        }
        Kind::Vg => (c.args.pos.clone(), vec![]),
        Kind::Pv => (vec![], vec![]),
    };
    let vgs = read_vgs(c, &vg_names)?;
    let names_of = |vr: &VgRef| {
        let m: Vec<(Uuid, String)> = vr
            .pv_devs
            .iter()
            .map(|(u, i)| (*u, c.store.devs[*i].name.clone()))
            .collect();
        m
    };
    let name_maps: Vec<Vec<(Uuid, String)>> = vgs.iter().map(names_of).collect();
    let lookups: Vec<NameFn> = name_maps
        .iter()
        .map(|m| {
            let m = m.clone();
            Box::new(move |u: &Uuid| {
                m.iter()
                    .find(|(x, _)| x == u)
                    .map_or("[unknown]".to_string(), |(_, n)| n.clone())
            }) as Box<dyn Fn(&Uuid) -> String>
        })
        .collect();
    let orphan_names = |_: &Uuid| String::new();
    let mut rows: Vec<Row<'_>> = Vec::new();
    match kind {
        Kind::Vg => {
            for (vr, look) in vgs.iter().zip(&lookups) {
                rows.push(Row {
                    vg: Some(&vr.vg),
                    pv: None,
                    lv: None,
                    seg: None,
                    names: look.as_ref(),
                    active: false,
                    open: false,
                    dev_dir: &dev_dir,
                });
            }
        }
        Kind::Lv => {
            let segs = report::wants_segments(&cols);
            for (vr, look) in vgs.iter().zip(&lookups) {
                for lv in &vr.vg.lvs {
                    let wanted = lv_filter.is_empty()
                        || lv_filter.iter().any(|(v, l)| {
                            *v == vr.vg.name && l.as_ref().is_none_or(|l| *l == lv.name)
                        });
                    if !wanted {
                        continue;
                    }
                    let st = activate::state(&c.conf, &vr.vg.name, &lv.name);
                    let (active, open) = (st.is_some(), st.is_some_and(|s| s.open));
                    let base = Row {
                        vg: Some(&vr.vg),
                        pv: None,
                        lv: Some(lv),
                        seg: None,
                        names: look.as_ref(),
                        active,
                        open,
                        dev_dir: &dev_dir,
                    };
                    if segs {
                        for s in &lv.segments {
                            rows.push(Row {
                                seg: Some(s),
                                ..base_clone(&base)
                            });
                        }
                    } else {
                        rows.push(base);
                    }
                }
            }
        }
        Kind::Pv => {
            let selected: Vec<String> = c.args.pos.clone();
            for s in &c.store.devs {
                let Some(p) = &s.pv else { continue };
                if !selected.is_empty() && !selected.contains(&s.name) {
                    continue;
                }
                let owner = vgs
                    .iter()
                    .zip(&lookups)
                    .find(|(vr, _)| vr.vg.pvs.iter().any(|m| m.id == p.uuid));
                let meta = owner.and_then(|(vr, _)| vr.vg.pvs.iter().find(|m| m.id == p.uuid));
                let pvrow = PvRow {
                    name: &s.name,
                    meta,
                    dev_size: s.dev.size() / 512 * 512,
                    pe_start: p.pe_start(),
                    mda_count: p.label.pv_header.metadata_areas.len(),
                    uuid: p.uuid.to_string(),
                };
                rows.push(Row {
                    vg: owner.map(|(vr, _)| &vr.vg),
                    pv: Some(pvrow),
                    lv: None,
                    seg: None,
                    names: owner.map_or(&orphan_names as &dyn Fn(&Uuid) -> String, |(_, l)| {
                        l.as_ref()
                    }),
                    active: false,
                    open: false,
                    dev_dir: &dev_dir,
                });
            }
        }
    }
    let lines = report::render(&cols, &rows, &style);
    for l in lines {
        c.print(l);
    }
    Ok(())
}

/// A device name by PV uuid.
type NameFn = Box<dyn Fn(&Uuid) -> String>;

fn base_clone<'a>(r: &Row<'a>) -> Row<'a> {
    Row {
        vg: r.vg,
        pv: None,
        lv: r.lv,
        seg: r.seg,
        names: r.names,
        active: r.active,
        open: r.open,
        dev_dir: r.dev_dir,
    }
}

// ---- displays and scans ---------------------------------------------------

fn pvdisplay(c: &mut Cmd<'_>) -> Result<()> {
    let vgs = read_vgs(c, &[])?;
    let devs = c.store.devs.clone();
    for s in &devs {
        let Some(p) = &s.pv else { continue };
        if !c.args.pos.is_empty() && !c.args.pos.contains(&s.name) {
            continue;
        }
        let owner = vgs
            .iter()
            .find(|vr| vr.vg.pvs.iter().any(|m| m.id == p.uuid));
        let dev_size = s.dev.size() / 512 * 512;
        match owner {
            Some(vr) => {
                let m = vr.vg.pv(&p.uuid).expect("found");
                let ext = vr.vg.extent_size * 512;
                let used = vr.vg.pv_used(&m.id);
                c.say("--- Physical volume ---");
                c.say(format!("{:<22}{}", "PV Name", s.name));
                c.say(format!("{:<22}{}", "VG Name", vr.vg.name));
                c.say(format!(
                    "{:<22}{} / not usable {}",
                    "PV Size",
                    display_size(dev_size),
                    display_size(dev_size - m.pe_count * ext)
                ));
                c.say(format!(
                    "{:<22}{}",
                    "Allocatable",
                    if used == m.pe_count {
                        "yes (but full)"
                    } else {
                        "yes "
                    }
                ));
                c.say(format!("{:<22}{}", "PE Size", display_size(ext)));
                c.say(format!("{:<22}{}", "Total PE", m.pe_count));
                c.say(format!("{:<22}{}", "Free PE", m.pe_count - used));
                c.say(format!("{:<22}{}", "Allocated PE", used));
            }
            None => {
                c.say(format!(
                    "\"{}\" is a new physical volume of \"{}\"",
                    s.name,
                    display_size(dev_size)
                ));
                c.say("--- NEW Physical volume ---");
                c.say(format!("{:<22}{}", "PV Name", s.name));
                c.say(format!("{:<22}", "VG Name"));
                c.say(format!("{:<22}{}", "PV Size", display_size(dev_size)));
                c.say(format!("{:<22}{}", "Allocatable", "NO"));
                c.say(format!("{:<22}{}", "PE Size", "0   "));
                c.say(format!("{:<22}{}", "Total PE", 0));
                c.say(format!("{:<22}{}", "Free PE", 0));
                c.say(format!("{:<22}{}", "Allocated PE", 0));
            }
        }
        c.say(format!("{:<22}{}", "PV UUID", p.uuid));
        c.print("   ");
    }
    Ok(())
}

fn vgdisplay(c: &mut Cmd<'_>) -> Result<()> {
    let names = c.args.pos.clone();
    for vr in read_vgs(c, &names)? {
        let vg = &vr.vg;
        let ext = vg.extent_size * 512;
        let alloc = vg.extent_count() - vg.free_count();
        let open = vg
            .lvs
            .iter()
            .filter(|l| activate::state(&c.conf, &vg.name, &l.name).is_some_and(|s| s.open))
            .count();
        let lines = [
            ("VG Name", vg.name.clone()),
            ("System ID", String::new()),
            ("Format", "lvm2".into()),
            ("Metadata Areas", vg.pvs.len().to_string()),
            ("Metadata Sequence No", vg.seqno.to_string()),
            ("VG Access", "read/write".into()),
            ("VG Status", "resizable".into()),
        ];
        c.say("--- Volume group ---");
        for (k, v) in lines {
            c.say(format!("{k:<22}{v}"));
        }
        if vg.is_clustered() {
            c.say(format!("{:<22}{}", "Clustered", "yes"));
            c.say(format!("{:<22}{}", "Shared", "no"));
        }
        let more = [
            ("MAX LV", vg.max_lv.to_string()),
            ("Cur LV", vg.lvs.len().to_string()),
            ("Open LV", open.to_string()),
            ("Max PV", vg.max_pv.to_string()),
            ("Cur PV", vg.pvs.len().to_string()),
            ("Act PV", vr.pv_devs.len().to_string()),
            ("VG Size", display_size(vg.extent_count() * ext)),
            ("PE Size", display_size(ext)),
            ("Total PE", vg.extent_count().to_string()),
            (
                "Alloc PE / Size",
                format!("{alloc} / {}", display_size(alloc * ext)),
            ),
            (
                "Free  PE / Size",
                format!(
                    "{} / {}",
                    vg.free_count(),
                    display_size(vg.free_count() * ext)
                ),
            ),
            ("VG UUID", vg.id.to_string()),
        ];
        for (k, v) in more {
            c.say(format!("{k:<22}{v}"));
        }
        c.print("   ");
    }
    Ok(())
}

fn lvdisplay(c: &mut Cmd<'_>) -> Result<()> {
    let parts: Vec<_> = c.args.pos.iter().map(|s| split_lv_arg(s)).collect();
    let names: Vec<String> = parts.iter().map(|(v, _)| v.clone()).collect();
    let dev_dir = c.conf.dev_dir();
    for vr in read_vgs(c, &names)? {
        let ext = vr.vg.extent_size * 512;
        for lv in &vr.vg.lvs {
            if !parts.is_empty()
                && !parts
                    .iter()
                    .any(|(v, l)| *v == vr.vg.name && l.as_ref().is_none_or(|l| *l == lv.name))
            {
                continue;
            }
            let st = activate::state(&c.conf, &vr.vg.name, &lv.name);
            let when = lv.creation_time.map_or(String::new(), format_time);
            let lines = [
                (
                    "LV Path",
                    format!("{}/{}/{}", dev_dir.display(), vr.vg.name, lv.name),
                ),
                ("LV Name", lv.name.clone()),
                ("VG Name", vr.vg.name.clone()),
                ("LV UUID", lv.id.to_string()),
                ("LV Write Access", "read/write".into()),
                (
                    "LV Creation host, time",
                    format!("{}, {when}", lv.creation_host.clone().unwrap_or_default()),
                ),
                (
                    "LV Status",
                    if st.is_some() {
                        "available".into()
                    } else {
                        "NOT available".into()
                    },
                ),
                ("LV Size", display_size(lv.extents() * ext)),
                ("Current LE", lv.extents().to_string()),
                ("Segments", lv.segments.len().to_string()),
                ("Allocation", "inherit".into()),
                ("Read ahead sectors", "auto".into()),
            ];
            c.say("--- Logical volume ---");
            for (k, v) in lines {
                c.say(format!("{k:<23}{v}"));
            }
            c.print("   ");
        }
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS +0000` in UTC.
fn format_time(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn pvscan(c: &mut Cmd<'_>) -> Result<()> {
    let vgs = read_vgs(c, &[])?;
    let devs = c.store.devs.clone();
    let (mut total, mut in_use, mut free_pvs) = ((0u64, 0u64), (0u64, 0u64), (0u64, 0u64));
    // lvm2 pads names to the longest plus 2, VG names to at least 13 + 2.
    let width = devs
        .iter()
        .filter(|s| s.pv.is_some())
        .map(|s| s.name.len())
        .max()
        .unwrap_or(0)
        + 2;
    let vgw = vgs
        .iter()
        .map(|v| v.vg.name.len())
        .max()
        .unwrap_or(0)
        .max(13)
        + 2;
    for s in &devs {
        let Some(p) = &s.pv else { continue };
        let owner = vgs
            .iter()
            .find(|vr| vr.vg.pvs.iter().any(|m| m.id == p.uuid));
        match owner {
            Some(vr) => {
                let m = vr.vg.pv(&p.uuid).expect("found");
                let ext = vr.vg.extent_size * 512;
                let size = m.pe_count * ext;
                let free = (m.pe_count - vr.vg.pv_used(&m.id)) * ext;
                c.say(format!(
                    "PV {:<width$} VG {:<vgw$} lvm2 [{} / {} free]",
                    s.name,
                    vr.vg.name,
                    display_size(size),
                    display_size(free)
                ));
                total = (total.0 + 1, total.1 + size);
                in_use = (in_use.0 + 1, in_use.1 + size);
            }
            None => {
                let size = s.dev.size() / 512 * 512;
                c.say(format!(
                    "PV {:<width$} {:<w3$} lvm2 [{}]",
                    s.name,
                    "",
                    display_size(size),
                    w3 = vgw + 3
                ));
                total = (total.0 + 1, total.1 + size);
                free_pvs = (free_pvs.0 + 1, free_pvs.1 + size);
            }
        }
    }
    if total.0 == 0 {
        c.say("No matching physical volumes found");
        return Ok(());
    }
    c.say(format!(
        "Total: {} [{}] / in use: {} [{}] / in no VG: {} [{}]",
        total.0,
        display_size(total.1),
        in_use.0,
        display_size(in_use.1),
        free_pvs.0,
        display_size(free_pvs.1)
    ));
    Ok(())
}

fn vgscan(c: &mut Cmd<'_>) -> Result<()> {
    for d in c.store.damaged() {
        c.warn(d);
    }
    for n in c.store.vg_names() {
        c.say(format!(
            "Found volume group \"{n}\" using metadata type lvm2"
        ));
    }
    Ok(())
}

fn lvscan(c: &mut Cmd<'_>) -> Result<()> {
    let dev_dir = c.conf.dev_dir();
    for vr in read_vgs(c, &[])? {
        for lv in &vr.vg.lvs {
            let active = activate::state(&c.conf, &vr.vg.name, &lv.name).is_some();
            c.say(format!(
                "{:<10} '{}/{}/{}' [{}] inherit",
                if active { "ACTIVE" } else { "inactive" },
                dev_dir.display(),
                vr.vg.name,
                lv.name,
                display_size(lv.extents() * vr.vg.extent_size * 512)
            ));
        }
    }
    Ok(())
}

fn pvck(c: &mut Cmd<'_>) -> Result<()> {
    let names = pos_required(c, "a physical volume path")?;
    let mut bad = false;
    for n in names {
        let i = c.store.device(&n)?;
        let s = c.store.devs[i].clone();
        if let Some(e) = &s.error {
            c.warn(format!("{n}: {e}"));
            bad = true;
            continue;
        }
        let Some(p) = &s.pv else {
            c.warn(format!("Could not find LVM label on {n}"));
            bad = true;
            continue;
        };
        c.say(format!(
            "Found label on {n}, sector {}, type=LVM2 001",
            p.label.sector
        ));
        for (m, (start, text)) in p.label.pv_header.metadata_areas.iter().zip(&p.mdas) {
            c.say(format!(
                "Found text metadata area: offset={start}, size={}",
                m.size
            ));
            if let Err(e) = text {
                c.warn(e);
                bad = true;
            }
        }
    }
    if bad {
        Err(LvmError("pvck found errors.".into()))
    } else {
        Ok(())
    }
}

fn vgck(c: &mut Cmd<'_>) -> Result<()> {
    let names = if c.args.pos.is_empty() {
        c.store.vg_names()
    } else {
        c.args.pos.clone()
    };
    for n in names {
        let r = lock_and_read(c, &n, LockMode::Pr)?;
        if !r.problems.is_empty() {
            return Err(LvmError(format!("Volume group {n} has problems.")));
        }
        r.vg.check()
            .map_err(|e| LvmError(format!("Volume group {n}: {e}")))?;
        c.locker.unlock(&vg_lock_name(&n))?;
    }
    Ok(())
}

// ---- VG commands ------------------------------------------------------------

fn extent_size_arg(c: &Cmd<'_>) -> Result<u64> {
    match c.args.value(&["-s", "--physicalextentsize"]) {
        None => Ok(8192),
        Some(s) => {
            let (_, b) = parse_size(s).map_err(LvmError)?;
            let sectors = b / 512;
            if sectors == 0 || !sectors.is_power_of_two() {
                return Err(LvmError(format!(
                    "Invalid physical extent size {s}: must be a power of 2 of at least one sector"
                )));
            }
            Ok(sectors)
        }
    }
}

/// The PVs named, made PVs when they are not, all orphans.
fn orphan_pvs(c: &mut Cmd<'_>, names: &[String]) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for n in names {
        let i = c.store.device(n)?;
        let idx = match &c.store.devs[i].pv {
            None => make_pv(c, n)?,
            Some(p) => {
                if let Some(vg) = vg_of_pv(&c.store, &p.uuid) {
                    return Err(LvmError(format!(
                        "Physical volume '{n}' is already in volume group '{vg}'"
                    )));
                }
                i
            }
        };
        if c.store.devs[idx]
            .pv
            .as_ref()
            .is_some_and(|p| p.mdas.iter().any(|(_, t)| t.is_err()))
        {
            return Err(LvmError(format!(
                "Metadata area on {n} is damaged; nothing was written."
            )));
        }
        out.push(idx);
    }
    Ok(out)
}

fn pv_meta(c: &Cmd<'_>, i: usize, extent_size: u64) -> Result<PvMeta> {
    let s = &c.store.devs[i];
    let p = s.pv.as_ref().expect("a PV");
    let dev_size = s.dev.size() / 512;
    let pe_start = p.pe_start() / 512;
    let pe_count = dev_size.saturating_sub(pe_start) / extent_size;
    if pe_count == 0 {
        return Err(LvmError(format!(
            "{}: too small for an extent of {}",
            s.name,
            display_size(extent_size * 512)
        )));
    }
    Ok(PvMeta {
        id: p.uuid,
        device: s.name.clone(),
        status: vec!["ALLOCATABLE".into()],
        dev_size,
        pe_start,
        pe_count,
    })
}

fn vgcreate(c: &mut Cmd<'_>) -> Result<()> {
    let pos = c.args.pos.clone();
    let (name, devs) = match pos.split_first() {
        Some((n, d)) if !d.is_empty() => (n.clone(), d.to_vec()),
        _ => {
            return Err(LvmError(
                "Please provide volume group name and physical volumes".into(),
            ))
        }
    };
    if !valid_name(&name) {
        return Err(LvmError(format!(
            "New volume group name \"{name}\" is invalid."
        )));
    }
    let clustered = match c.args.value(&["-c", "--clustered"]) {
        Some(v) => yes(v)?,
        None => c.locker.clustered(),
    };
    if clustered && !c.locker.clustered() {
        return Err(LvmError("Clustered volume groups need clustered locking (lvmconf --enable-cluster, then start clvmd).".into()));
    }
    c.locker.lock(GLOBAL_LOCK, LockMode::Pw)?;
    c.locker.lock(&vg_lock_name(&name), LockMode::Pw)?;
    c.store.reread();
    if c.store.vg_names().contains(&name) {
        return Err(LvmError(format!(
            "A volume group called {name} already exists."
        )));
    }
    let extent_size = extent_size_arg(c)?;
    let idx = orphan_pvs(c, &devs)?;
    let pvs = idx
        .iter()
        .map(|&i| pv_meta(c, i, extent_size))
        .collect::<Result<Vec<_>>>()?;
    let mut vg = Vg {
        name: name.clone(),
        id: Uuid::generate(),
        seqno: 0,
        status: vec!["RESIZEABLE".into(), "READ".into(), "WRITE".into()],
        flags: vec![],
        extent_size,
        max_lv: 0,
        max_pv: 0,
        metadata_copies: 0,
        pvs,
        lvs: vec![],
    };
    vg.set_clustered(clustered);
    commit(c, vg, &[])?;
    if clustered {
        c.say(format!(
            "Clustered volume group \"{name}\" successfully created"
        ));
    } else {
        c.say(format!("Volume group \"{name}\" successfully created"));
    }
    Ok(())
}

fn vgextend(c: &mut Cmd<'_>) -> Result<()> {
    let pos = c.args.pos.clone();
    let Some((name, devs)) = pos.split_first().filter(|(_, d)| !d.is_empty()) else {
        return Err(LvmError(
            "Please enter volume group name and physical volume(s)".into(),
        ));
    };
    // P_#global before V_<vg>, as vgcreate takes them.
    c.locker.lock(GLOBAL_LOCK, LockMode::Pw)?;
    let r = lock_and_read(c, name, LockMode::Pw)?;
    let idx = orphan_pvs(c, devs)?;
    let mut vg = r.vg;
    for i in idx {
        let m = pv_meta(c, i, vg.extent_size)?;
        vg.pvs.push(m);
    }
    commit(c, vg, &[])?;
    c.say(format!("Volume group \"{name}\" successfully extended"));
    Ok(())
}

fn vgreduce(c: &mut Cmd<'_>) -> Result<()> {
    let pos = c.args.pos.clone();
    let Some((name, devs)) = pos.split_first().filter(|(_, d)| !d.is_empty()) else {
        return Err(LvmError(
            "Please give volume group name and physical volume paths".into(),
        ));
    };
    let r = lock_and_read(c, name, LockMode::Pw)?;
    let mut vg = r.vg;
    let mut released = Vec::new();
    for d in devs {
        let i = c.store.device(d)?;
        let uuid = c.store.devs[i].pv.as_ref().map(|p| p.uuid);
        let Some(uuid) = uuid.filter(|u| vg.pv(u).is_some()) else {
            return Err(LvmError(format!(
                "Physical Volume \"{d}\" not found in Volume Group \"{name}\"."
            )));
        };
        if vg.pv_used(&uuid) > 0 {
            return Err(LvmError(format!("Physical volume \"{d}\" still in use")));
        }
        if vg.pvs.len() == 1 {
            return Err(LvmError(format!(
                "Can't remove final physical volume \"{d}\" from volume group \"{name}\""
            )));
        }
        vg.pvs.retain(|p| p.id != uuid);
        released.push((i, d.clone()));
    }
    let idx: Vec<usize> = released.iter().map(|(i, _)| *i).collect();
    commit(c, vg, &idx)?;
    for (_, d) in released {
        c.say(format!("Removed \"{d}\" from volume group \"{name}\""));
    }
    Ok(())
}

fn vgremove(c: &mut Cmd<'_>) -> Result<()> {
    let names = pos_required(c, "one or more volume group paths")?;
    let force = c.args.has(&["-f", "--force", "-y", "--yes"]);
    for name in names {
        let r = lock_and_read(c, &name, LockMode::Pw)?;
        if !r.vg.lvs.is_empty() && !force {
            return Err(LvmError(format!(
                "Volume group \"{name}\" still contains {} logical volume(s); use -f to remove them.",
                r.vg.lvs.len()
            )));
        }
        for lv in &r.vg.lvs {
            if activate::state(&c.conf, &name, &lv.name).is_some() {
                return Err(LvmError(format!(
                    "Logical volume {name}/{} is active: deactivate it first.",
                    lv.name
                )));
            }
        }
        for lv in &r.vg.lvs {
            c.say(format!(
                "Logical volume \"{}\" successfully removed.",
                lv.name
            ));
        }
        let idx: Vec<usize> = r.pv_devs.values().copied().collect();
        for &i in &idx {
            c.store.release(i)?;
        }
        c.store.reread();
        c.locker.vg_changed(&name)?;
        c.say(format!("Volume group \"{name}\" successfully removed"));
    }
    Ok(())
}

fn vgchange(c: &mut Cmd<'_>) -> Result<()> {
    let names = if c.args.pos.is_empty() {
        c.store.vg_names()
    } else {
        c.args.pos.clone()
    };
    if let Some(v) = c.args.value(&["-c", "--clustered"]).map(str::to_string) {
        let on = yes(&v)?;
        for n in &names {
            let r = lock_and_read(c, n, LockMode::Pw)?;
            if on && !c.locker.clustered() {
                return Err(LvmError("Clustered volume groups need clustered locking (lvmconf --enable-cluster, then start clvmd).".into()));
            }
            if r.vg.is_clustered() == on {
                c.say(format!(
                    "Volume group \"{n}\" is already {}clustered",
                    if on { "" } else { "not " }
                ));
                continue;
            }
            let mut vg = r.vg;
            vg.set_clustered(on);
            commit(c, vg, &[])?;
            c.say(format!("Volume group \"{n}\" successfully changed"));
            c.locker.unlock(&vg_lock_name(n))?;
        }
    }
    if let Some(a) = c.args.value(&["-a", "--activate"]).map(str::to_string) {
        for n in &names {
            let r = lock_and_read(c, n, LockMode::Pr)?;
            let lvs: Vec<String> = r.vg.lvs.iter().map(|l| l.name.clone()).collect();
            let mut active = 0;
            for lv in &lvs {
                change_activation(c, &r, lv, &a)?;
            }
            for lv in &lvs {
                if activate::state(&c.conf, n, lv).is_some() {
                    active += 1;
                }
            }
            c.locker.unlock(&vg_lock_name(n))?;
            c.say(format!(
                "{active} logical volume(s) in volume group \"{n}\" now active"
            ));
        }
    }
    Ok(())
}

/// `-a y|n|ey|ly` of one LV: the activation lock (CR shared, EX exclusive,
/// none local-only), then the device file.
fn change_activation(c: &mut Cmd<'_>, r: &VgRef, lv: &str, how: &str) -> Result<()> {
    let l = r.vg.lv(lv).ok_or_else(|| {
        LvmError(format!(
            "Failed to find logical volume \"{}/{lv}\"",
            r.vg.name
        ))
    })?;
    let lvid = format!("{}{}", r.vg.id.raw(), l.id.raw());
    let clustered = r.vg.is_clustered();
    match how {
        "n" | "ln" => {
            activate::deactivate(&c.conf, &r.vg.name, lv)?;
            if clustered {
                c.locker.unlock_lv(&lvid)?;
            }
            Ok(())
        }
        "y" | "ay" | "ey" | "ly" | "sy" => {
            if clustered && how != "ly" {
                let mode = if how == "ey" {
                    LockMode::Ex
                } else {
                    LockMode::Cr
                };
                c.locker.lock_lv(&lvid, mode)?;
            }
            if activate::state(&c.conf, &r.vg.name, lv).is_some() {
                return Ok(());
            }
            activate::activate(&c.conf, &r.vg.name, lv).inspect_err(|_| {
                if clustered {
                    let _ = c.locker.unlock_lv(&lvid);
                }
            })
        }
        _ => Err(LvmError(format!("Invalid argument for --activate: {how}"))),
    }
}

// ---- LV commands ------------------------------------------------------------

/// Extents wanted by `-L`/`-l`, relative (`+`) or absolute, against the
/// LV's current size and the VG.
fn wanted_extents(c: &mut Cmd<'_>, vg: &Vg, current: u64) -> Result<u64> {
    let ext_bytes = vg.extent_size * 512;
    if let Some(l) = c.args.value(&["-l", "--extents"]).map(str::to_string) {
        let (sign, body) = match l.chars().next() {
            Some(s @ '+') => (Some(s), &l[1..]),
            _ => (None, l.as_str()),
        };
        let n = match body.split_once('%') {
            Some((p, what)) => {
                let p: u64 = p
                    .parse()
                    .map_err(|_| LvmError(format!("Invalid argument for --extents: {l}")))?;
                let base = match what {
                    "FREE" => vg.free_count(),
                    "VG" => vg.extent_count(),
                    _ => return Err(LvmError(format!("Invalid argument for --extents: {l}"))),
                };
                base * p / 100
            }
            None => body
                .parse()
                .map_err(|_| LvmError(format!("Invalid argument for --extents: {l}")))?,
        };
        return Ok(if sign.is_some() { current + n } else { n });
    }
    let l = c
        .args
        .value(&["-L", "--size"])
        .ok_or_else(|| LvmError("Please specify either size or extents".into()))?;
    let (sign, bytes) = parse_size(l).map_err(LvmError)?;
    let target = if sign == Some('+') {
        current * ext_bytes + bytes
    } else {
        bytes
    };
    let n = target.div_ceil(ext_bytes);
    if target % ext_bytes != 0 {
        c.say(format!(
            "Rounding size to boundary between physical extents: {}.",
            display_size(n * ext_bytes)
        ));
    }
    Ok(n)
}

/// Allocates `n` more extents at the end of `lv`: first after its last
/// segment on the same PV, then free ranges in PV order (lvm2's "normal"
/// policy in the simple cases); only on `allowed` PVs when given.
fn allocate(vg: &Vg, lv: &mut LvMeta, mut n: u64, allowed: &[Uuid]) -> Result<()> {
    let free = vg.free_ranges();
    let usable: Vec<_> = free
        .into_iter()
        .filter(|(p, _, _)| allowed.is_empty() || allowed.contains(p))
        .collect();
    let total: u64 = usable.iter().map(|(_, _, k)| k).sum();
    if total < n {
        return Err(LvmError(format!(
            "Insufficient free space: {n} extents needed, but only {total} available"
        )));
    }
    let mut ranges = usable;
    if let Some(last) = lv.segments.last() {
        let end = (last.pv, last.pe + last.extent_count);
        if let Some(pos) = ranges.iter().position(|(p, a, _)| (*p, *a) == end) {
            let r = ranges.remove(pos);
            ranges.insert(0, r);
        }
    }
    for (pv, pe, count) in ranges {
        if n == 0 {
            break;
        }
        let take = count.min(n);
        let start = lv.extents();
        match lv.segments.last_mut() {
            Some(s) if s.pv == pv && s.pe + s.extent_count == pe => s.extent_count += take,
            _ => lv.segments.push(Segment {
                start_extent: start,
                extent_count: take,
                pv,
                pe,
            }),
        }
        n -= take;
    }
    Ok(())
}

fn allowed_pvs(c: &mut Cmd<'_>, vg: &Vg, names: &[String]) -> Result<Vec<Uuid>> {
    let mut out = Vec::new();
    for n in names {
        let i = c.store.device(n)?;
        let id = c.store.devs[i]
            .pv
            .as_ref()
            .map(|p| p.uuid)
            .filter(|u| vg.pv(u).is_some());
        out.push(id.ok_or_else(|| {
            LvmError(format!(
                "Physical Volume \"{n}\" not found in Volume Group \"{}\".",
                vg.name
            ))
        })?);
    }
    Ok(out)
}

fn lvcreate(c: &mut Cmd<'_>) -> Result<()> {
    let pos = c.args.pos.clone();
    let Some((target, pvs)) = pos.split_first() else {
        return Err(LvmError("Please specify a volume group to use.".into()));
    };
    let (vgname, lvname_in_path) = split_lv_arg(target);
    let r = lock_and_read(c, &vgname, LockMode::Pw)?;
    let mut vg = r.vg.clone();
    let name = match c
        .args
        .value(&["-n", "--name"])
        .map(str::to_string)
        .or(lvname_in_path)
    {
        Some(n) => n,
        None => (0..)
            .map(|i| format!("lvol{i}"))
            .find(|n| vg.lv(n).is_none())
            .expect("a free name"),
    };
    if !valid_name(&name) || name.starts_with("snapshot") || name.starts_with("pvmove") {
        return Err(LvmError(format!(
            "Logical volume name \"{name}\" is invalid."
        )));
    }
    if vg.lv(&name).is_some() {
        return Err(LvmError(format!(
            "Logical Volume \"{name}\" already exists in volume group \"{vgname}\""
        )));
    }
    let n = wanted_extents(c, &vg, 0)?;
    if n == 0 {
        return Err(LvmError(
            "Unable to create new logical volume with no extents.".into(),
        ));
    }
    let allowed = allowed_pvs(c, &vg, pvs)?;
    let mut lv = LvMeta {
        name: name.clone(),
        id: Uuid::generate(),
        status: vec!["READ".into(), "WRITE".into(), "VISIBLE".into()],
        flags: vec![],
        creation_time: Some(crate::store::now()),
        creation_host: Some(crate::store::host()),
        segments: vec![],
    };
    allocate(&vg, &mut lv, n, &allowed)?;
    vg.lvs.push(lv);
    let vg = commit(c, vg, &[])?;
    c.say(format!("Logical volume \"{name}\" created."));
    let act = c
        .args
        .value(&["-a", "--activate"])
        .unwrap_or("y")
        .to_string();
    let driverless = c.args.value(&["--driverloaded"]) == Some("n");
    if act != "n" && !driverless {
        let r = VgRef {
            vg,
            pv_devs: r.pv_devs,
            problems: vec![],
        };
        change_activation(c, &r, &name, &act)?;
    }
    Ok(())
}

fn lv_target(c: &Cmd<'_>) -> Result<(String, String)> {
    let t = c
        .args
        .pos
        .first()
        .ok_or_else(|| LvmError("Please provide a logical volume path.".into()))?;
    match split_lv_arg(t) {
        (v, Some(l)) => Ok((v, l)),
        (_, None) => Err(LvmError(format!(
            "Path required for Logical Volume \"{t}\"."
        ))),
    }
}

fn lvextend(c: &mut Cmd<'_>) -> Result<()> {
    let (vgname, lvname) = lv_target(c)?;
    let r = lock_and_read(c, &vgname, LockMode::Pw)?;
    let mut vg = r.vg.clone();
    let i = vg
        .lvs
        .iter()
        .position(|l| l.name == lvname)
        .ok_or_else(|| {
            LvmError(format!(
                "Failed to find logical volume \"{vgname}/{lvname}\""
            ))
        })?;
    let old = vg.lvs[i].extents();
    let want = wanted_extents(c, &vg, old)?;
    let ext = vg.extent_size * 512;
    if want < old {
        return Err(LvmError(format!(
            "New size given ({want} extents) not larger than existing size ({old} extents)"
        )));
    }
    if want == old {
        return Err(LvmError(format!(
            "New size ({want} extents) matches existing size ({old} extents)."
        )));
    }
    let extra: Vec<String> = c.args.pos[1..].to_vec();
    let allowed = allowed_pvs(c, &vg, &extra)?;
    let mut lv = vg.lvs[i].clone();
    allocate(&vg, &mut lv, want - old, &allowed)?;
    vg.lvs[i] = lv;
    commit(c, vg, &[])?;
    if activate::state(&c.conf, &vgname, &lvname).is_some() {
        activate::refresh(&c.conf, &vgname, &lvname)?;
    }
    c.say(format!(
        "Size of logical volume {vgname}/{lvname} changed from {} ({old} extents) to {} ({want} extents).",
        display_size(old * ext),
        display_size(want * ext)
    ));
    c.say(format!(
        "Logical volume {vgname}/{lvname} successfully resized."
    ));
    Ok(())
}

fn lvremove(c: &mut Cmd<'_>) -> Result<()> {
    let targets = pos_required(c, "a logical volume path")?;
    for t in targets {
        let (vgname, lvname) = split_lv_arg(&t);
        let r = lock_and_read(c, &vgname, LockMode::Pw)?;
        let mut vg = r.vg.clone();
        let names: Vec<String> = match lvname {
            Some(l) => vec![l],
            None => vg.lvs.iter().map(|l| l.name.clone()).collect(),
        };
        for l in &names {
            if vg.lv(l).is_none() {
                return Err(LvmError(format!(
                    "Failed to find logical volume \"{vgname}/{l}\""
                )));
            }
            if activate::state(&c.conf, &vgname, l).is_some() {
                change_activation(c, &r, l, "n")?;
            }
            if r.vg.is_clustered() {
                // Active anywhere else, another node holds its lock.
                let lvid = format!("{}{}", r.vg.id.raw(), r.vg.lv(l).expect("checked").id.raw());
                c.locker.lock_lv(&lvid, LockMode::Ex).map_err(|e| {
                    LvmError(format!(
                        "Logical volume {vgname}/{l} is active on another node ({e})."
                    ))
                })?;
                c.locker.unlock_lv(&lvid)?;
            }
        }
        vg.lvs.retain(|l| !names.contains(&l.name));
        commit(c, vg, &[])?;
        for l in names {
            c.say(format!("Logical volume \"{l}\" successfully removed."));
        }
        c.locker.unlock(&vg_lock_name(&vgname))?;
    }
    Ok(())
}

fn lvchange(c: &mut Cmd<'_>) -> Result<()> {
    let Some(how) = c.args.value(&["-a", "--activate"]).map(str::to_string) else {
        return Err(LvmError(
            "Need one or more command options (only -a is supported).".into(),
        ));
    };
    for t in pos_required(c, "a logical volume path")? {
        let (vgname, lvname) = split_lv_arg(&t);
        let r = lock_and_read(c, &vgname, LockMode::Pr)?;
        let lvs: Vec<String> = match lvname {
            Some(l) => vec![l],
            None => r.vg.lvs.iter().map(|l| l.name.clone()).collect(),
        };
        for l in lvs {
            change_activation(c, &r, &l, &how)?;
        }
        c.locker.unlock(&vg_lock_name(&vgname))?;
    }
    Ok(())
}

/// `lvmconf --enable-cluster | --disable-cluster [--file F]`: sets
/// `global/locking_type` to 3 or 1 in lvm.conf.
fn lvmconf(args: &Args, conf: &Conf, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let t = match (
        args.has(&["--enable-cluster"]),
        args.has(&["--disable-cluster"]),
    ) {
        (true, false) => 3,
        (false, true) => 1,
        _ => {
            let _ = writeln!(
                err,
                "  usage: lvmconf --enable-cluster | --disable-cluster [--file FILE]"
            );
            return EINVALID_CMD_LINE;
        }
    };
    let file = args
        .value(&["--file"])
        .map(std::path::PathBuf::from)
        .or_else(|| conf.file.clone())
        .unwrap_or_else(|| conf::system_dir().join("lvm.conf"));
    match conf::set_locking_type(&file, t) {
        Ok(()) => {
            let _ = writeln!(out, "  locking_type = {t} in {}", file.display());
            0
        }
        Err(e) => {
            let _ = writeln!(err, "  {}: {e}", file.display());
            ECMD_FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_as_lvdisplay_prints_them() {
        assert_eq!(format_time(1_796_299_168), "2026-12-03 11:59:28 +0000");
        assert_eq!(format_time(0), "1970-01-01 00:00:00 +0000");
    }
}
