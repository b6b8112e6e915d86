//! clusvcadm: ask rgmanager to enable, disable, relocate, restart, stop,
//! freeze, unfreeze, convalesce or migrate a service, or lock, unlock and
//! query the resource managers. Options are read as rgmanager 3's getopt
//! string `lSue:M:d:r:n:c:m:FvR:s:Z:U:qh?` (the last service option wins;
//! `-l`, `-u`, `-S` act at once); the messages and exit codes are
//! rgmanager 3's: the service's result is `rg_strerror`'s text and the
//! exit status its `RG_E*` code (its low byte), except "already running",
//! which exits 0.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use rgmanager::config::full_name;
use rgmanager::control::{request, AdminAction, NodeView, Request, Response};
use rgmanager::report::{now_running, progress};

const RG_ERUN: i32 = -10;

fn usage(name: &str) {
    let lines = [
        format!("usage: {name} [command]"),
        String::new(),
        "Resource Group Control Commands:".into(),
        "  -v                     Display version and exit".into(),
        "  -d <group>             Disable <group>: stop it until it is enabled again".into(),
        "  -e <group>             Enable <group>".into(),
        "  -e <group> -F          Enable <group> where its failover domain prefers".into(),
        "  -e <group> -m <member> Enable <group> on <member>".into(),
        "  -r <group> -m <member> Relocate <group> [to <member>]".into(),
        "  -M <group> -m <member> Migrate <group> to <member>".into(),
        "  -q                     Quiet operation".into(),
        "  -R <group>             Restart a group in place.".into(),
        "  -s <group>             Stop <group> until the next member transition".into(),
        "  -Z <group>             Freeze <group>: no status checks, no failover".into(),
        "  -U <group>             Unfreeze (thaw) <group>".into(),
        "  -c <group>             Convalesce (repair) <group>: start its failed,".into(),
        "                         non-critical resources".into(),
        "Resource Group Locking (for cluster Shutdown / Debugging):".into(),
        "  -l                     Lock the resource group managers: no group starts".into(),
        "  -S                     Show lock state".into(),
        "  -u                     Unlock the resource group managers".into(),
        String::new(),
        "  --state-dir DIR        The node's state directory (rgmanager's socket)".into(),
    ];
    for l in lines {
        println!("{l}");
    }
}

/// What the command line asks.
#[derive(Default)]
struct Args {
    action: Option<(AdminAction, String)>,
    node: Option<String>,
    follow_domain: bool,
    quiet: bool,
    state_dir: PathBuf,
}

enum Parsed {
    Run(Args),
    /// `-l` (true) or `-u` (false), and where.
    Lock(bool, PathBuf),
    Query(PathBuf),
    Exit(u8),
}

fn parse(argv: &[String]) -> Parsed {
    let name = argv
        .first()
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or("clusvcadm")
        .to_string();
    let mut a = Args {
        state_dir: PathBuf::from(cman::api::DEFAULT_STATE_DIR),
        ..Args::default()
    };
    // Our own long option, wherever it is, before the getopt pass (the
    // locking options act as soon as they are seen).
    let mut rest = Vec::new();
    let mut it = argv.iter().skip(1);
    while let Some(arg) = it.next() {
        if arg == "--state-dir" {
            match it.next() {
                Some(d) => a.state_dir = PathBuf::from(d),
                None => {
                    usage(&name);
                    return Parsed::Exit(1);
                }
            }
        } else if let Some(d) = arg.strip_prefix("--state-dir=") {
            a.state_dir = PathBuf::from(d);
        } else if arg == "--help" {
            usage(&name);
            return Parsed::Exit(1);
        } else {
            rest.push(arg.clone());
        }
    }
    let with_arg = "edrMsRZUcmn";
    let mut i = 0;
    while i < rest.len() {
        let arg = &rest[i];
        i += 1;
        if arg == "--" {
            break;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            // getopt stops at the first non-option here (POSIXLY_CORRECT
            // aside, later ones would be permuted; none are meaningful).
            continue;
        };
        for (pos, c) in flags.char_indices() {
            let optarg = if with_arg.contains(c) {
                let inline = &flags[pos + c.len_utf8()..];
                let v = if !inline.is_empty() {
                    Some(inline.to_string())
                } else if i < rest.len() {
                    i += 1;
                    Some(rest[i - 1].clone())
                } else {
                    None
                };
                match v {
                    Some(v) => Some(v),
                    None => {
                        eprintln!("{name}: option requires an argument -- '{c}'");
                        usage(&name);
                        return Parsed::Exit(1);
                    }
                }
            } else {
                None
            };
            let act = match c {
                'e' => Some(AdminAction::Enable),
                'd' => Some(AdminAction::Disable),
                'r' => Some(AdminAction::Relocate),
                'M' => Some(AdminAction::Migrate),
                's' => Some(AdminAction::Stop),
                'R' => Some(AdminAction::Restart),
                'Z' => Some(AdminAction::Freeze),
                'U' => Some(AdminAction::Unfreeze),
                'c' => Some(AdminAction::Convalesce),
                _ => None,
            };
            if let Some(act) = act {
                a.action = Some((act, optarg.clone().unwrap_or_default()));
                break;
            }
            match c {
                'l' => return Parsed::Lock(true, a.state_dir),
                'S' => return Parsed::Query(a.state_dir),
                'u' => return Parsed::Lock(false, a.state_dir),
                'F' => {
                    if a.node.is_some() {
                        eprintln!("Cannot use '-F' with '-n' or '-m'");
                        return Parsed::Exit(1);
                    }
                    a.follow_domain = true;
                }
                'm' | 'n' => {
                    if a.follow_domain {
                        eprintln!("Cannot use '-F' with '-n' or '-m'");
                        return Parsed::Exit(1);
                    }
                    a.node = optarg.clone();
                }
                'v' => {
                    println!("{}", env!("CARGO_PKG_VERSION"));
                    return Parsed::Exit(0);
                }
                'q' => a.quiet = true,
                _ => {
                    if c != 'h' && c != '?' {
                        eprintln!("{name}: invalid option -- '{c}'");
                    }
                    usage(&name);
                    return Parsed::Exit(1);
                }
            }
            if optarg.is_some() {
                break;
            }
        }
    }
    if a.action.is_none() {
        usage(&name);
        return Parsed::Exit(1);
    }
    Parsed::Run(a)
}

/// `-l`, `-u`: "Resource groups locked" / "unlocked", or "Lock operation
/// failed" / "Unlock operation failed" (exit 1).
fn lock(lock: bool, state_dir: &Path) -> ExitCode {
    let r = request(state_dir, &Request::Lock { lock }, Duration::from_secs(90));
    let ok = match r {
        Ok(Response::Admin(a)) => a.code == 0,
        Ok(_) => false,
        Err(_) => {
            println!("Could not connect to resource group manager");
            false
        }
    };
    match (ok, lock) {
        (true, true) => println!("Resource groups locked"),
        (true, false) => println!("Resource groups unlocked"),
        (false, true) => println!("Lock operation failed"),
        (false, false) => println!("Unlock operation failed"),
    }
    ExitCode::from(if ok { 0 } else { 1 })
}

/// `-S`: the lock state, or "Query operation failed" (exit 1).
fn query(state_dir: &Path) -> ExitCode {
    match request(state_dir, &Request::QueryLock, Duration::from_secs(10)) {
        Ok(Response::Locked { locked: true }) => println!("Resource groups locked"),
        Ok(Response::Locked { locked: false }) => println!("Resource groups unlocked"),
        r => {
            if r.is_err() {
                println!("Could not connect to resource group manager");
            }
            println!("Query operation failed");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

/// rgmanager 3's `find_closest_node`: the member whose name shares the
/// longest prefix with `name`, if exactly one does.
fn closest<'a>(nodes: &'a [NodeView], name: &str) -> Result<&'a NodeView, String> {
    let common = |n: &NodeView| {
        n.name
            .bytes()
            .zip(name.bytes())
            .take_while(|(a, b)| a == b)
            .count()
    };
    let best = nodes.iter().map(common).max().unwrap_or(0);
    if best == 0 {
        return Err(format!("No matches for '{name}' found"));
    }
    let mut hits = nodes.iter().filter(|n| common(n) == best);
    match (hits.next(), hits.next()) {
        (Some(n), None) => Ok(n),
        _ => Err(format!("More than one possible match for '{name}' found")),
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let mut a = match parse(&argv) {
        Parsed::Run(a) => a,
        Parsed::Lock(l, dir) => return lock(l, &dir),
        Parsed::Query(dir) => return query(&dir),
        Parsed::Exit(c) => return ExitCode::from(c),
    };
    let (action, svc) = a.action.take().expect("checked by parse");
    let quiet = a.quiet;
    let say = |s: &str, newline: bool| {
        if !quiet {
            if newline {
                println!("{s}");
            } else {
                print!("{s}");
                let _ = std::io::stdout().flush();
            }
        }
    };
    if action == AdminAction::Migrate && a.node.is_none() {
        say("Migration requires a target cluster member", true);
        return ExitCode::from(1);
    }
    let svc = full_name(&svc);
    // The membership list (configured nodes, online or not).
    let view = match request(&a.state_dir, &Request::Status, Duration::from_secs(10)) {
        Ok(Response::Status(v)) => Some(v),
        _ => None,
    };
    if let (Some(m), Some(v)) = (&a.node, &view) {
        let node = match v.nodes.iter().find(|n| n.name == *m) {
            Some(n) => n,
            None => {
                say(&format!("'{m}' not in membership list"), true);
                match closest(&v.nodes, m) {
                    Ok(n) => {
                        say(&format!("Closest match: '{}'", n.name), true);
                        n
                    }
                    Err(e) => {
                        say(&e, true);
                        return ExitCode::from(1);
                    }
                }
            }
        };
        if action == AdminAction::Migrate && !node.online {
            say(&format!("'{}' is offline", node.name), true);
            return ExitCode::from(1);
        }
        a.node = Some(node.name.clone());
    }
    say(&progress(action, &svc, a.node.as_deref()), false);
    let req = Request::Admin {
        service: svc.clone(),
        action,
        node: a.node.clone(),
        follow_domain: a.follow_domain,
    };
    match request(&a.state_dir, &req, Duration::from_secs(3600)) {
        Ok(Response::Admin(r)) => {
            say(&r.message, true);
            if r.code == RG_ERUN {
                return ExitCode::SUCCESS;
            }
            if r.code == 0 && matches!(action, AdminAction::Enable | AdminAction::Relocate) {
                if let Some(owner) = &r.owner {
                    say(&now_running(&svc, owner, a.node.as_deref()), true);
                }
            }
            ExitCode::from((r.code & 0xff) as u8)
        }
        Ok(Response::Error { msg }) => {
            say(&msg, true);
            ExitCode::from(1)
        }
        Ok(_) => {
            say("Error receiving reply!", true);
            ExitCode::from(1)
        }
        Err(_) => {
            say("Could not connect to resource group manager", true);
            ExitCode::from(1)
        }
    }
}
