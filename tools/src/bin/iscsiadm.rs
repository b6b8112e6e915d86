//! iscsiadm: open-iscsi's administration tool over the userspace initiator.
//!
//! Modes: `-m discovery -t sendtargets -p ADDR[:PORT]`, `-m node` (list,
//! `--login`, `--logout`, `-o update -n KEY -v VALUE`), `-m session`.
//! There is no kernel initiator: `--login` starts a session holder process
//! ([`iscsi::initiator::holder`]) that keeps the session and exposes each
//! disk LUN as a regular file in a FUSE mount, with a udev-like by-path
//! symlink `<mountdir>/ip-ADDR:PORT-iscsi-IQN-lun-N`; `--logout` stops it.
//! State (node records, session records: [`iscsi::initiator::records`])
//! lives under `--state-dir` ($ISCSI_STATE_DIR, default /var/lib/iscsi);
//! the mount directory is `--mount-dir` ($ISCSI_MOUNT_DIR, default
//! /run/iscsi/by-path).

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use iscsi::initiator::discover;
use iscsi::initiator::holder::{self, initiator_name, HolderConfig};
use iscsi::initiator::login::ChapCredentials;
use iscsi::initiator::records::{node_portal, read_record, write_record};
use iscsi::initiator::records::{Discovered, Record, SessionRecord, StateDir};
use iscsi::initiator::url::{format_portal, parse_portal};

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

/// The parsed command line with its directories resolved.
struct Adm {
    args: Args,
    state: StateDir,
    mount_dir: PathBuf,
}

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
    let args = Args::parse();
    let adm = Adm {
        state: StateDir::new(dir_or_env(
            &args.state_dir,
            "ISCSI_STATE_DIR",
            "/var/lib/iscsi",
        )),
        mount_dir: dir_or_env(&args.mount_dir, "ISCSI_MOUNT_DIR", "/run/iscsi/by-path"),
        args,
    };
    let code = match adm.run() {
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

/// Prints open-iscsi's message and fails with its exit code.
fn no_objects(msg: &str) -> Result<()> {
    eprintln!("iscsiadm: {msg}");
    Err(ExitCode(ERR_NO_OBJS).into())
}

fn login_banner(rec: &Record) -> String {
    let (h, p, _) = node_portal(rec);
    format!(
        "[iface: default, target: {}, portal: {h},{p}]",
        rec["node.name"]
    )
}

impl Adm {
    fn run(&self) -> Result<()> {
        if let Some(record) = &self.args.session_holder {
            let cfg = self.holder_config(record.clone(), self.args.sid.unwrap_or(1));
            return Ok(holder::run(&cfg, &mut std::io::stdout())?);
        }
        if self.args.iface.as_deref().is_some_and(|i| i != "default") {
            bail!("only the default interface exists");
        }
        let _ = self.args.print;
        match self.args.mode.as_str() {
            "discovery" | "discoverydb" => self.discovery(),
            "node" => self.node(),
            "session" => self.session_list(),
            other => bail!("invalid mode {other:?}"),
        }
    }

    fn holder_config(&self, record: PathBuf, sid: u32) -> HolderConfig {
        HolderConfig {
            state: self.state.clone(),
            mount_dir: self.mount_dir.clone(),
            record,
            sid,
        }
    }

    fn portal_arg(&self) -> Result<Option<(String, u16)>> {
        self.args
            .portal
            .as_deref()
            .map(|p| {
                // open-iscsi accepts ADDR:PORT,TPGT too.
                let p = p.split(',').next().unwrap_or(p);
                parse_portal(p).ok_or_else(|| anyhow!("bad portal {p:?}"))
            })
            .transpose()
    }

    fn matching_nodes(&self) -> Result<Vec<(PathBuf, Record)>> {
        let portal = self.portal_arg()?;
        Ok(self
            .state
            .matching_nodes(self.args.target.as_deref(), portal.as_ref())?)
    }

    fn discovery(&self) -> Result<()> {
        match self.args.kind.as_deref() {
            Some("sendtargets") | Some("st") => {}
            Some(other) => bail!("discovery type {other:?} is not supported (sendtargets only)"),
            None => bail!("discovery needs -t sendtargets"),
        }
        let (host, port) = self
            .portal_arg()?
            .ok_or_else(|| anyhow!("discovery needs -p ADDR[:PORT]"))?;
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
            return no_objects("No portals found");
        }
        for t in found {
            for addr in &t.portals {
                let (a, tpgt) = addr.split_once(',').unwrap_or((addr.as_str(), "1"));
                let Some((h, p)) = parse_portal(a) else {
                    continue;
                };
                let path = self.state.node_path(&t.name, &h, p, tpgt);
                let mut rec = read_record(&path).unwrap_or_default();
                Discovered {
                    name: &t.name,
                    portal: (&h, p),
                    tpgt,
                    discovery: (&host, port),
                }
                .update(&mut rec);
                write_record(&path, &rec)?;
                println!("{},{tpgt} {}", format_portal(&h, p), t.name);
            }
        }
        Ok(())
    }

    fn node(&self) -> Result<()> {
        if self.args.login {
            return self.node_login();
        }
        if self.args.logout {
            return self.logout();
        }
        match self.args.op.as_deref() {
            Some("update") => self.node_update(),
            Some("delete") => {
                for (path, _) in self.matching_nodes()? {
                    fs::remove_dir_all(path.parent().unwrap())?;
                }
                Ok(())
            }
            Some("show") => {
                for (_, rec) in self.matching_nodes()? {
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
                let nodes = self.matching_nodes()?;
                if nodes.is_empty() {
                    return no_objects("No records found");
                }
                for (_, rec) in nodes {
                    let (h, p, tpgt) = node_portal(&rec);
                    println!("{},{tpgt} {}", format_portal(&h, p), rec["node.name"]);
                }
                Ok(())
            }
        }
    }

    fn node_update(&self) -> Result<()> {
        let key = self
            .args
            .name
            .as_deref()
            .ok_or_else(|| anyhow!("-o update needs -n KEY"))?;
        let value = self
            .args
            .value
            .as_deref()
            .ok_or_else(|| anyhow!("-o update needs -v VALUE"))?;
        if !key.starts_with("node.") {
            bail!("unknown record key {key:?}");
        }
        let nodes = self.matching_nodes()?;
        if nodes.is_empty() {
            return no_objects("No records found");
        }
        for (path, mut rec) in nodes {
            rec.insert(key.to_string(), value.to_string());
            write_record(&path, &rec)?;
        }
        Ok(())
    }

    fn node_login(&self) -> Result<()> {
        let nodes = self.matching_nodes()?;
        if nodes.is_empty() {
            return no_objects("No records found");
        }
        let exe = std::env::current_exe()?;
        let mut failed = None;
        for (path, rec) in nodes {
            if self.state.sessions()?.iter().any(|s| s.record == path) {
                eprintln!("iscsiadm: default: 1 session requested, but 1 already present.");
                continue;
            }
            println!("Logging in to {}", login_banner(&rec));
            let cfg = self.holder_config(path, self.state.next_sid()?);
            match holder::start(&exe, &cfg) {
                Ok(()) => println!("Login to {} successful.", login_banner(&rec)),
                Err(e) => {
                    eprintln!("iscsiadm: Could not login to {}.", login_banner(&rec));
                    eprintln!("iscsiadm: {e}");
                    failed = Some(if e.to_string().contains("authentication") {
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

    fn session_list(&self) -> Result<()> {
        let sessions = self.state.sessions()?;
        if sessions.is_empty() {
            return no_objects("No active sessions.");
        }
        for s in sessions {
            println!(
                "tcp: [{}] {},{} {} (non-flash)",
                s.sid, s.portal, s.tpgt, s.target
            );
        }
        Ok(())
    }

    fn logout(&self) -> Result<()> {
        let portal = self.portal_arg()?.map(|(h, p)| format_portal(&h, p));
        let sessions: Vec<SessionRecord> = self
            .state
            .sessions()?
            .into_iter()
            .filter(|s| self.args.target.as_deref().is_none_or(|t| t == s.target))
            .filter(|s| portal.as_deref().is_none_or(|p| p == s.portal))
            .collect();
        if sessions.is_empty() {
            return no_objects("No matching sessions found");
        }
        for s in sessions {
            let what = format!(
                "[sid: {}, target: {}, portal: {}]",
                s.sid,
                s.target,
                s.portal.replacen(':', ",", 1)
            );
            println!("Logging out of session {what}");
            holder::stop(&self.state, &s, Duration::from_secs(60))?;
            println!("Logout of {what} successful.");
        }
        Ok(())
    }
}
