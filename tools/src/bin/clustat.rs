//! clustat: cluster members (from cmand) and services (from rgmanager) in
//! cluster 3's layout, rgmanager 3's XML (-x) or JSON (--json).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use rgmanager::config::full_name;
use rgmanager::control::{request, NodeView, Request, Response, StatusView};
use rgmanager::report::{text, xml, Filter};

#[derive(Parser, Debug)]
#[command(name = "clustat", about = "Cluster status: members and services")]
struct Args {
    /// Show this service only.
    #[arg(short = 's', value_name = "SERVICE")]
    service: Option<String>,
    /// Show this member only.
    #[arg(short = 'm', value_name = "NODE")]
    member: Option<String>,
    /// Long service format.
    #[arg(short = 'l')]
    long: bool,
    /// Refresh every SECONDS.
    #[arg(short = 'i', value_name = "SECONDS")]
    interval: Option<u64>,
    /// XML (rgmanager 3's).
    #[arg(short = 'x', conflicts_with = "interval")]
    xml: bool,
    /// JSON.
    #[arg(long, conflicts_with_all = ["xml", "interval"])]
    json: bool,
    /// Exit 0 if quorate, 1 if not (no output).
    #[arg(short = 'Q')]
    quorum_only: bool,
    /// The node's state directory (cmand's and rgmanager's sockets).
    #[arg(long, default_value = cman::api::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

/// Members from cmand, services from rgmanager (if it runs).
fn gather(state_dir: &std::path::Path) -> Result<(StatusView, bool), String> {
    let st = cman::api::Client::connect(state_dir)
        .and_then(|mut c| c.status())
        .map_err(|e| format!("Could not connect to CMAN: {e}"))?;
    let rg = match request(state_dir, &Request::Status, Duration::from_secs(10)) {
        Ok(Response::Status(v)) => Some(*v),
        _ => None,
    };
    let members: Vec<u32> = st.members.iter().map(|m| m.id.0).collect();
    let nodes = st
        .nodes
        .iter()
        .map(|n| {
            let rgv = rg
                .as_ref()
                .and_then(|v| v.nodes.iter().find(|x| x.id == n.id.0));
            NodeView {
                name: n.name.clone(),
                id: n.id.0,
                online: members.contains(&n.id.0),
                local: n.id == st.node_id,
                rgmanager: rgv.is_some_and(|x| x.rgmanager),
                rgmanager_master: rgv.is_some_and(|x| x.rgmanager_master),
            }
        })
        .collect();
    let view = StatusView {
        cluster: st.cluster_name.clone(),
        local: st.node_name.clone(),
        generation: st.view.seq,
        quorate: st.quorum.quorate,
        synced: rg.as_ref().is_some_and(|v| v.synced),
        nodes,
        services: rg.as_ref().map(|v| v.services.clone()).unwrap_or_default(),
        locked: rg.as_ref().is_some_and(|v| v.locked),
    };
    Ok((view, rg.is_some()))
}

fn main() -> ExitCode {
    let a = Args::parse();
    let filter = Filter {
        service: a.service.as_deref().map(full_name),
        member: a.member.clone(),
        long: a.long,
    };
    loop {
        let (view, rg) = match gather(&a.state_dir) {
            Ok(v) => v,
            Err(e) => {
                println!("{e}");
                return ExitCode::from(1);
            }
        };
        if a.quorum_only {
            return ExitCode::from(u8::from(!view.quorate));
        }
        let code = if a.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&view).unwrap_or_default()
            );
            0
        } else if a.xml {
            let id = cman::report::cluster_id(&view.cluster);
            print!("{}", xml(&view, id, &filter, rg));
            0
        } else {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let (out, code) = text(&view, &filter, now, rg);
            if a.interval.is_some() {
                print!("\x1b[H\x1b[2J");
            }
            print!("{out}");
            code
        };
        match a.interval {
            Some(s) => std::thread::sleep(Duration::from_secs(s.max(1))),
            None => return ExitCode::from((code & 0xff) as u8),
        }
    }
}
