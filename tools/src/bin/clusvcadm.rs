//! clusvcadm: ask rgmanager to enable, disable, relocate, restart, stop,
//! freeze, unfreeze or migrate a service. Prints rgmanager's messages and
//! exits with its result code (0 success, else the low byte of RG_E*).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use rgmanager::config::full_name;
use rgmanager::control::{request, AdminAction, Request, Response};
use rgmanager::report::{now_running, progress};

#[derive(Parser, Debug)]
#[command(name = "clusvcadm", about = "Resource group (service) administration")]
struct Args {
    /// Enable a service (on this node, -m NODE, or by its domain with -F).
    #[arg(short = 'e', value_name = "SERVICE")]
    enable: Option<String>,
    /// Disable a service.
    #[arg(short = 'd', value_name = "SERVICE")]
    disable: Option<String>,
    /// Relocate a service (to -m NODE, or the best other node).
    #[arg(short = 'r', value_name = "SERVICE")]
    relocate: Option<String>,
    /// Restart a service in place.
    #[arg(short = 'R', value_name = "SERVICE")]
    restart: Option<String>,
    /// Stop a service (it starts again at the next membership change).
    #[arg(short = 's', value_name = "SERVICE")]
    stop: Option<String>,
    /// Freeze a service: no status checks, no recovery.
    #[arg(short = 'Z', value_name = "SERVICE")]
    freeze: Option<String>,
    /// Unfreeze a service.
    #[arg(short = 'U', value_name = "SERVICE")]
    unfreeze: Option<String>,
    /// Migrate a service to -m NODE.
    #[arg(short = 'M', value_name = "SERVICE")]
    migrate: Option<String>,
    /// Target member.
    #[arg(short = 'm', value_name = "NODE")]
    member: Option<String>,
    /// Follow the failover domain (with -e).
    #[arg(short = 'F')]
    follow_domain: bool,
    /// Quiet: no output.
    #[arg(short = 'q')]
    quiet: bool,
    /// The node's state directory (rgmanager's socket).
    #[arg(long, default_value = cman::api::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let actions = [
        (AdminAction::Enable, &a.enable),
        (AdminAction::Disable, &a.disable),
        (AdminAction::Relocate, &a.relocate),
        (AdminAction::Restart, &a.restart),
        (AdminAction::Stop, &a.stop),
        (AdminAction::Freeze, &a.freeze),
        (AdminAction::Unfreeze, &a.unfreeze),
        (AdminAction::Migrate, &a.migrate),
    ];
    let chosen: Vec<(AdminAction, String)> = actions
        .iter()
        .filter_map(|(act, s)| s.as_ref().map(|s| (*act, full_name(s))))
        .collect();
    let [(action, svc)] = chosen.as_slice() else {
        eprintln!("clusvcadm: give exactly one of -e -d -r -R -s -Z -U -M SERVICE");
        return ExitCode::from(1);
    };
    if *action == AdminAction::Migrate && a.member.is_none() {
        eprintln!("clusvcadm: -M needs -m NODE");
        return ExitCode::from(1);
    }
    let say = |s: &str, newline: bool| {
        if !a.quiet {
            if newline {
                println!("{s}");
            } else {
                print!("{s}");
                let _ = std::io::stdout().flush();
            }
        }
    };
    // A target that is not a configured member is refused here.
    if let Some(m) = &a.member {
        if let Ok(Response::Status(v)) =
            request(&a.state_dir, &Request::Status, Duration::from_secs(10))
        {
            if !v.nodes.iter().any(|n| n.name == *m) {
                say(&format!("Member {m} not in membership list"), true);
                return ExitCode::from(1);
            }
        }
    }
    say(&progress(*action, svc, a.member.as_deref()), false);
    let req = Request::Admin {
        service: svc.clone(),
        action: *action,
        node: a.member.clone(),
        follow_domain: a.follow_domain,
    };
    match request(&a.state_dir, &req, Duration::from_secs(3600)) {
        Ok(Response::Admin(r)) => {
            say(&r.message, true);
            let moves = matches!(
                action,
                AdminAction::Enable | AdminAction::Relocate | AdminAction::Migrate
            );
            if r.code == 0 && moves {
                if let Some(owner) = &r.owner {
                    say(&now_running(svc, owner, a.member.as_deref()), true);
                }
            }
            ExitCode::from((r.code & 0xff) as u8)
        }
        Ok(Response::Error { msg }) => {
            say(&msg, true);
            ExitCode::from(1)
        }
        Ok(Response::Status(_)) => {
            say("bad response from rgmanager", true);
            ExitCode::from(1)
        }
        Err(e) => {
            say(
                &format!("Could not connect to resource group manager: {e}"),
                true,
            );
            ExitCode::from(1)
        }
    }
}
