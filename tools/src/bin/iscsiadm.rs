//! iscsiadm: open-iscsi's administration tool over the userspace initiator.
//!
//! Modes: `-m discovery -t sendtargets -p ADDR[:PORT]`, `-m node` (list,
//! `--login`, `--logout`, `-o update -n KEY -v VALUE`), `-m session`.
//! There is no kernel initiator: `--login` starts a session holder process
//! that keeps the session and exposes each disk LUN as a regular file in a
//! FUSE mount, with a udev-like by-path symlink
//! `<mountdir>/ip-ADDR:PORT-iscsi-IQN-lun-N`; `--logout` stops it.
//! State (node records, session records) lives under `--state-dir`
//! ($ISCSI_STATE_DIR, default /var/lib/iscsi); the mount directory is
//! `--mount-dir` ($ISCSI_MOUNT_DIR, default /run/iscsi/by-path).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use iscsi::initiator::login::{ChapCredentials, LoginConfig};
use iscsi::initiator::lun::{default_initiator_name, report_disk_luns, Lun};
use iscsi::initiator::lunfs::{self, LunFs};
use iscsi::initiator::url::{format_portal, parse_portal, IscsiUrl};
use iscsi::initiator::{discover, Connection, SessionConfig};

#[derive(Parser, Debug)]
#[command(
    name = "iscsiadm",
    about = "open-iscsi administration utility (userspace initiator)"
)]
struct Args {
    /// discovery, node or session.
    #[arg(short = 'm', long = "mode")]
    mode: String,
    /// Discovery type (sendtargets / st).
    #[arg(short = 't', long = "type")]
    kind: Option<String>,
    /// Portal ADDR[:PORT].
    #[arg(short = 'p', long = "portal")]
    portal: Option<String>,
    /// Target IQN.
    #[arg(short = 'T', long = "targetname")]
    target: Option<String>,
    /// Log in to the matching nodes.
    #[arg(short = 'l', long = "login")]
    login: bool,
    /// Log out of the matching sessions.
    #[arg(short = 'u', long = "logout")]
    logout: bool,
    /// Operation on node records: new, delete, update, show.
    #[arg(short = 'o', long = "op")]
    op: Option<String>,
    /// Record key for `-o update`.
    #[arg(short = 'n', long = "name")]
    name: Option<String>,
    /// Record value for `-o update`.
    #[arg(short = 'v', long = "value")]
    value: Option<String>,
    /// Interface (only "default" exists).
    #[arg(short = 'I', long = "interface")]
    iface: Option<String>,
    /// Print more (accepted for compatibility).
    #[arg(short = 'P', long = "print")]
    print: Option<u32>,
    /// State directory (node and session records).
    #[arg(long = "state-dir")]
    state_dir: Option<PathBuf>,
    /// Where LUN files are exposed.
    #[arg(long = "mount-dir")]
    mount_dir: Option<PathBuf>,
    /// Internal: run as the session holder of this node record.
    #[arg(long = "session-holder", hide = true)]
    session_holder: Option<PathBuf>,
    /// Internal: the session id for the holder.
    #[arg(long = "sid", hide = true)]
    sid: Option<u32>,
}

fn state(args: &Args) -> &Path {
    args.state_dir.as_deref().expect("set in main")
}

fn mount(args: &Args) -> &Path {
    args.mount_dir.as_deref().expect("set in main")
}

/// A node record: open-iscsi's `node.*` keys.
type Record = BTreeMap<String, String>;

fn dir_or_env(arg: &Option<PathBuf>, env: &str, default: &str) -> PathBuf {
    arg.clone()
        .or_else(|| {
            std::env::var_os(env)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(default))
}

fn main() {
    tools::init_logging();
    let mut args = Args::parse();
    args.state_dir = Some(dir_or_env(
        &args.state_dir,
        "ISCSI_STATE_DIR",
        "/var/lib/iscsi",
    ));
    args.mount_dir = Some(dir_or_env(
        &args.mount_dir,
        "ISCSI_MOUNT_DIR",
        "/run/iscsi/by-path",
    ));
    let code = match run(&args) {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<ExitCode>() {
            // The message was printed where the error arose.
            Some(ExitCode(c)) => *c,
            None => {
                eprintln!("iscsiadm: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}

/// open-iscsi's exit codes that scripts look at.
#[derive(Debug)]
struct ExitCode(i32);
impl std::fmt::Display for ExitCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit code {}", self.0)
    }
}
impl std::error::Error for ExitCode {}

const ERR_NO_OBJS: i32 = 21;
const ERR_LOGIN_AUTH: i32 = 24;

fn run(args: &Args) -> Result<()> {
    if let Some(rec) = &args.session_holder {
        return holder::run(args, rec);
    }
    if args.iface.as_deref().is_some_and(|i| i != "default") {
        bail!("only the default interface exists");
    }
    let _ = args.print;
    match args.mode.as_str() {
        "discovery" | "discoverydb" => discovery(args),
        "node" => node(args),
        "session" => session_list(args),
        other => bail!("invalid mode {other:?}"),
    }
}

fn initiator_name() -> String {
    if std::env::var_os("ISCSI_INITIATOR_NAME").is_none() {
        if let Ok(text) = fs::read_to_string("/etc/iscsi/initiatorname.iscsi") {
            for line in text.lines() {
                if let Some(n) = line.trim().strip_prefix("InitiatorName=") {
                    return n.trim().to_string();
                }
            }
        }
    }
    default_initiator_name()
}

fn portal_arg(args: &Args) -> Result<Option<(String, u16)>> {
    args.portal
        .as_deref()
        .map(|p| {
            // open-iscsi accepts ADDR:PORT,TPGT too.
            let p = p.split(',').next().unwrap_or(p);
            parse_portal(p).ok_or_else(|| anyhow!("bad portal {p:?}"))
        })
        .transpose()
}

fn nodes_dir(args: &Args) -> PathBuf {
    state(args).join("nodes")
}

fn node_path(args: &Args, target: &str, host: &str, port: u16, tpgt: &str) -> PathBuf {
    nodes_dir(args)
        .join(target)
        .join(format!("{host},{port},{tpgt}"))
        .join("default")
}

fn read_record(path: &Path) -> Result<Record> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(" = "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn write_record(path: &Path, rec: &Record) -> Result<()> {
    fs::create_dir_all(path.parent().expect("record has a parent"))?;
    let mut text = String::from("# BEGIN RECORD (rhcs-rs iscsiadm)\n");
    for (k, v) in rec {
        text.push_str(&format!("{k} = {v}\n"));
    }
    text.push_str("# END RECORD\n");
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// All node records: (path, record).
fn all_nodes(args: &Args) -> Result<Vec<(PathBuf, Record)>> {
    let mut out = Vec::new();
    let Ok(targets) = fs::read_dir(nodes_dir(args)) else {
        return Ok(out);
    };
    for t in targets.flatten() {
        for p in fs::read_dir(t.path())?.flatten() {
            let path = p.path().join("default");
            if let Ok(rec) = read_record(&path) {
                out.push((path, rec));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn rec_portal(rec: &Record) -> (String, u16, String) {
    let host = rec.get("node.conn[0].address").cloned().unwrap_or_default();
    let port = rec
        .get("node.conn[0].port")
        .and_then(|p| p.parse().ok())
        .unwrap_or(3260);
    let tpgt = rec.get("node.tpgt").cloned().unwrap_or_else(|| "1".into());
    (host, port, tpgt)
}

fn matching_nodes(args: &Args) -> Result<Vec<(PathBuf, Record)>> {
    let portal = portal_arg(args)?;
    Ok(all_nodes(args)?
        .into_iter()
        .filter(|(_, r)| {
            args.target
                .as_deref()
                .is_none_or(|t| r.get("node.name").map(String::as_str) == Some(t))
        })
        .filter(|(_, r)| {
            let (h, p, _) = rec_portal(r);
            portal.as_ref().is_none_or(|(ph, pp)| *ph == h && *pp == p)
        })
        .collect())
}

fn discovery(args: &Args) -> Result<()> {
    match args.kind.as_deref() {
        Some("sendtargets") | Some("st") => {}
        Some(other) => bail!("discovery type {other:?} is not supported (sendtargets only)"),
        None => bail!("discovery needs -t sendtargets"),
    }
    let (host, port) =
        portal_arg(args)?.ok_or_else(|| anyhow!("discovery needs -p ADDR[:PORT]"))?;
    let portal = format_portal(&host, port);
    let chap = match (
        std::env::var("ISCSI_DISCOVERY_USERNAME"),
        std::env::var("ISCSI_DISCOVERY_PASSWORD"),
    ) {
        (Ok(user), Ok(secret)) => Some(ChapCredentials { user, secret }),
        _ => None,
    };
    let found = discover(&portal, &initiator_name(), chap)
        .with_context(|| format!("cannot discover targets at {portal}"))?;
    if found.is_empty() {
        eprintln!("iscsiadm: No portals found");
        return Err(ExitCode(ERR_NO_OBJS).into());
    }
    for t in found {
        for addr in &t.portals {
            let (a, tpgt) = addr.split_once(',').unwrap_or((addr.as_str(), "1"));
            let Some((h, p)) = parse_portal(a) else {
                continue;
            };
            let path = node_path(args, &t.name, &h, p, tpgt);
            let mut rec = read_record(&path).unwrap_or_default();
            rec.insert("node.name".into(), t.name.clone());
            rec.insert("node.tpgt".into(), tpgt.into());
            rec.insert("node.conn[0].address".into(), h.clone());
            rec.insert("node.conn[0].port".into(), p.to_string());
            rec.insert("node.discovery_address".into(), host.clone());
            rec.insert("node.discovery_port".into(), port.to_string());
            rec.insert("node.discovery_type".into(), "send_targets".into());
            rec.entry("node.session.auth.authmethod".into())
                .or_insert_with(|| "None".into());
            rec.entry("node.startup".into())
                .or_insert_with(|| "manual".into());
            write_record(&path, &rec)?;
            println!("{},{tpgt} {}", format_portal(&h, p), t.name);
        }
    }
    Ok(())
}

fn node(args: &Args) -> Result<()> {
    if args.login {
        return node_login(args);
    }
    if args.logout {
        return logout(args);
    }
    match args.op.as_deref() {
        Some("update") => node_update(args),
        Some("delete") => {
            for (path, _) in matching_nodes(args)? {
                fs::remove_dir_all(path.parent().unwrap())?;
            }
            Ok(())
        }
        Some("show") => {
            for (_, rec) in matching_nodes(args)? {
                for (k, v) in rec {
                    let v = if k.contains("password") {
                        "********".into()
                    } else {
                        v
                    };
                    println!("{k} = {v}");
                }
            }
            Ok(())
        }
        Some(other) => bail!("operation {other:?} is not supported"),
        None => {
            let nodes = matching_nodes(args)?;
            if nodes.is_empty() {
                eprintln!("iscsiadm: No records found");
                return Err(ExitCode(ERR_NO_OBJS).into());
            }
            for (_, rec) in nodes {
                let (h, p, tpgt) = rec_portal(&rec);
                println!("{},{tpgt} {}", format_portal(&h, p), rec["node.name"]);
            }
            Ok(())
        }
    }
}

fn node_update(args: &Args) -> Result<()> {
    let key = args
        .name
        .as_deref()
        .ok_or_else(|| anyhow!("-o update needs -n KEY"))?;
    let value = args
        .value
        .as_deref()
        .ok_or_else(|| anyhow!("-o update needs -v VALUE"))?;
    if !key.starts_with("node.") {
        bail!("unknown record key {key:?}");
    }
    let nodes = matching_nodes(args)?;
    if nodes.is_empty() {
        eprintln!("iscsiadm: No records found");
        return Err(ExitCode(ERR_NO_OBJS).into());
    }
    for (path, mut rec) in nodes {
        rec.insert(key.to_string(), value.to_string());
        write_record(&path, &rec)?;
    }
    Ok(())
}

fn login_banner(rec: &Record) -> String {
    let (h, p, _) = rec_portal(rec);
    format!(
        "[iface: default, target: {}, portal: {h},{p}]",
        rec["node.name"]
    )
}

fn node_login(args: &Args) -> Result<()> {
    let nodes = matching_nodes(args)?;
    if nodes.is_empty() {
        eprintln!("iscsiadm: No records found");
        return Err(ExitCode(ERR_NO_OBJS).into());
    }
    let mut failed = None;
    for (path, rec) in nodes {
        if find_sessions(args)?.iter().any(|s| s.record == path) {
            eprintln!("iscsiadm: default: 1 session requested, but 1 already present.");
            continue;
        }
        println!("Logging in to {}", login_banner(&rec));
        match start_holder(args, &path) {
            Ok(()) => println!("Login to {} successful.", login_banner(&rec)),
            Err(e) => {
                eprintln!("iscsiadm: Could not login to {}.", login_banner(&rec));
                eprintln!("iscsiadm: {e:#}");
                failed = Some(if format!("{e:#}").contains("authentication") {
                    ERR_LOGIN_AUTH
                } else {
                    8
                });
            }
        }
    }
    match failed {
        Some(code) => Err(ExitCode(code).into()),
        None => Ok(()),
    }
}

fn next_sid(args: &Args) -> Result<u32> {
    let used: Vec<u32> = find_sessions(args)?.iter().map(|s| s.sid).collect();
    Ok((1..).find(|s| !used.contains(s)).expect("a free sid"))
}

/// Starts the session holder for a node and waits for its READY line.
fn start_holder(args: &Args, record: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let sid = next_sid(args)?;
    // The holder outlives us: its log goes to a file, never to our stderr
    // (a caller waiting for our output would wait for the holder too).
    fs::create_dir_all(sessions_dir(args))?;
    let log = fs::File::create(sessions_dir(args).join(format!("holder-{sid}.log")))?;
    let mut child = Command::new(exe)
        .args(["-m", "session", "--session-holder"])
        .arg(record)
        .arg("--sid")
        .arg(sid.to_string())
        .arg("--state-dir")
        .arg(state(args))
        .arg("--mount-dir")
        .arg(mount(args))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the session holder")?;
    let out = child.stdout.take().expect("piped");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line)?;
    match line.trim_end().strip_prefix("READY") {
        Some(_) => Ok(()),
        None => {
            let _ = child.wait();
            Err(anyhow!(
                "{}",
                line.trim_end()
                    .strip_prefix("ERROR ")
                    .unwrap_or("session holder exited")
            ))
        }
    }
}

/// A live session record written by its holder.
#[derive(Debug)]
struct SessionRec {
    sid: u32,
    pid: i32,
    target: String,
    portal: String,
    tpgt: String,
    record: PathBuf,
    path: PathBuf,
}

fn sessions_dir(args: &Args) -> PathBuf {
    state(args).join("sessions")
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn find_sessions(args: &Args) -> Result<Vec<SessionRec>> {
    let mut out = Vec::new();
    let Ok(dir) = fs::read_dir(sessions_dir(args)) else {
        return Ok(out);
    };
    for e in dir.flatten() {
        if e.file_name().to_string_lossy().ends_with(".log") {
            continue;
        }
        let Ok(rec) = read_record(&e.path()) else {
            continue;
        };
        let get = |k: &str| rec.get(k).cloned().unwrap_or_default();
        let s = SessionRec {
            sid: get("sid").parse().unwrap_or(0),
            pid: get("pid").parse().unwrap_or(0),
            target: get("target"),
            portal: get("portal"),
            tpgt: get("tpgt"),
            record: PathBuf::from(get("record")),
            path: e.path(),
        };
        if s.pid > 0 && pid_alive(s.pid) {
            out.push(s);
        } else {
            let _ = fs::remove_file(e.path()); // stale: its holder died
        }
    }
    out.sort_by_key(|s| s.sid);
    Ok(out)
}

fn session_list(args: &Args) -> Result<()> {
    let sessions = find_sessions(args)?;
    if sessions.is_empty() {
        eprintln!("iscsiadm: No active sessions.");
        return Err(ExitCode(ERR_NO_OBJS).into());
    }
    for s in sessions {
        println!(
            "tcp: [{}] {},{} {} (non-flash)",
            s.sid, s.portal, s.tpgt, s.target
        );
    }
    Ok(())
}

fn logout(args: &Args) -> Result<()> {
    let portal = portal_arg(args)?.map(|(h, p)| format_portal(&h, p));
    let sessions: Vec<SessionRec> = find_sessions(args)?
        .into_iter()
        .filter(|s| args.target.as_deref().is_none_or(|t| t == s.target))
        .filter(|s| portal.as_deref().is_none_or(|p| p == s.portal))
        .collect();
    if sessions.is_empty() {
        eprintln!("iscsiadm: No matching sessions found");
        return Err(ExitCode(ERR_NO_OBJS).into());
    }
    for s in sessions {
        let what = format!(
            "[sid: {}, target: {}, portal: {}]",
            s.sid,
            s.target,
            s.portal.replacen(':', ",", 1)
        );
        println!("Logging out of session {what}");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(s.pid),
            nix::sys::signal::Signal::SIGTERM,
        )?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while pid_alive(s.pid) && s.path.exists() {
            if Instant::now() > deadline {
                bail!("session holder {} did not exit", s.pid);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("Logout of {what} successful.");
    }
    Ok(())
}

/// The session holder: logs in, mounts the LUN files, waits for SIGTERM.
mod holder {
    use super::*;
    use nix::sys::signal::{SigSet, Signal};

    fn url_for(rec: &Record) -> Result<(IscsiUrl, SessionConfig)> {
        let (host, port, _) = rec_portal(rec);
        let target = rec
            .get("node.name")
            .ok_or_else(|| anyhow!("node record without node.name"))?;
        let url = IscsiUrl {
            host: host.clone(),
            port,
            target: target.clone(),
            lun: 0,
            user: None,
            secret: None,
            target_user: None,
            target_secret: None,
            header_digest: false,
        };
        let mut login = LoginConfig::new(&initiator_name(), Some(target));
        let get = |k: &str| rec.get(k).filter(|v| !v.is_empty()).cloned();
        if get("node.session.auth.authmethod").as_deref() == Some("CHAP")
            || get("node.session.auth.username").is_some()
        {
            let user = get("node.session.auth.username")
                .ok_or_else(|| anyhow!("CHAP without node.session.auth.username"))?;
            let secret = get("node.session.auth.password")
                .ok_or_else(|| anyhow!("CHAP without node.session.auth.password"))?;
            login.chap = Some(ChapCredentials { user, secret });
            if let (Some(user), Some(secret)) = (
                get("node.session.auth.username_in"),
                get("node.session.auth.password_in"),
            ) {
                login.mutual_chap = Some(ChapCredentials { user, secret });
            }
        }
        Ok((url, SessionConfig::new(&format_portal(&host, port), login)))
    }

    pub fn run(args: &Args, record: &Path) -> Result<()> {
        // Signals go to the waiting thread only.
        let mut sigs = SigSet::empty();
        for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            sigs.add(s);
        }
        sigs.thread_block()?;
        let mut ready = std::io::stdout();
        match setup(args, record) {
            Ok(mounted) => mounted.serve(args, sigs, &mut ready),
            Err(e) => {
                let _ = writeln!(ready, "ERROR {e:#}");
                Err(e)
            }
        }
    }

    struct Mounted {
        rec: Record,
        conn: Arc<Connection>,
        files: Vec<(String, Arc<Lun>)>,
        mountpoint: PathBuf,
        links: Vec<PathBuf>,
    }

    fn setup(args: &Args, record: &Path) -> Result<Mounted> {
        let rec = read_record(record)?;
        let (url, cfg) = url_for(&rec)?;
        let conn = Arc::new(Connection::connect(cfg)?);
        let luns = report_disk_luns(&conn)?;
        let mut files = Vec::new();
        let mut links = Vec::new();
        let sid = args.sid.unwrap_or(1);
        let mountpoint = mount(args).join(format!(".session-{sid}"));
        fs::create_dir_all(&mountpoint)
            .with_context(|| format!("creating {}", mountpoint.display()))?;
        for lun in luns {
            let u = IscsiUrl { lun, ..url.clone() };
            let l = Arc::new(Lun::attach_shared(conn.clone(), u)?);
            let name = format!("lun-{lun}");
            let link = mount(args).join(format!(
                "ip-{}-iscsi-{}-lun-{lun}",
                url.portal(),
                url.target
            ));
            files.push((name, l));
            links.push(link);
        }
        Ok(Mounted {
            rec,
            conn,
            files,
            mountpoint,
            links,
        })
    }

    impl Mounted {
        fn serve(self, args: &Args, sigs: SigSet, ready: &mut impl Write) -> Result<()> {
            let sid = args.sid.unwrap_or(1);
            let (host, port, tpgt) = rec_portal(&self.rec);
            let session_file = sessions_dir(args).join(format!("{sid}"));
            let names: Vec<String> = self.files.iter().map(|(n, _)| n.clone()).collect();
            let fs_ = LunFs::new(self.files.clone());
            let fsname = format!("iscsi:{}", self.rec["node.name"]);
            let links = self.links.clone();
            let mountpoint = self.mountpoint.clone();
            let mut srec = Record::new();
            srec.insert("sid".into(), sid.to_string());
            srec.insert("pid".into(), std::process::id().to_string());
            srec.insert("target".into(), self.rec["node.name"].clone());
            srec.insert("portal".into(), format_portal(&host, port));
            srec.insert("tpgt".into(), tpgt);
            srec.insert("mountpoint".into(), mountpoint.display().to_string());
            srec.insert(
                "record".into(),
                args.session_holder.clone().unwrap().display().to_string(),
            );
            let served = lunfs::serve(fs_, &mountpoint, &fsname, |mut unmounter| {
                let mut ok = write_record(&session_file, &srec).map_err(|e| e.to_string());
                for (link, name) in links.iter().zip(&names) {
                    let _ = fs::remove_file(link);
                    if ok.is_ok() {
                        ok = std::os::unix::fs::symlink(mountpoint.join(name), link)
                            .map_err(|e| format!("{}: {e}", link.display()));
                    }
                }
                let _ = match &ok {
                    Ok(()) => writeln!(ready, "READY"),
                    Err(e) => writeln!(ready, "ERROR {e}"),
                };
                let _ = ready.flush();
                std::thread::spawn(move || {
                    let _ = sigs.wait();
                    let _ = unmounter.unmount();
                });
            });
            for link in &self.links {
                let _ = fs::remove_file(link);
            }
            let _ = fs::remove_dir(&self.mountpoint);
            drop(self.files);
            let logout = match Arc::try_unwrap(self.conn) {
                Ok(conn) => conn.logout().map_err(anyhow::Error::from),
                Err(_) => Ok(()),
            };
            let _ = fs::remove_file(&session_file);
            if let Err(e) = &served {
                let _ = writeln!(ready, "ERROR mount failed: {e}");
            }
            served.context("FUSE mount")?;
            logout
        }
    }
}
