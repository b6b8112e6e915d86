//! rgmanager with real processes: two cluster nodes on 127.0.1.1 and
//! 127.0.1.2 (cmand + rgmanager each, own state directories, `fence_lab`),
//! one service made of a `script` resource (our `script.sh` agent running
//! an LSB script that starts a process and records where it runs) in an
//! ordered, restricted failover domain preferring node 1, with
//! `recovery="restart" max_restarts="2"`.
//!
//! Checked in order: it starts on the preferred node; `clusvcadm -r -m`
//! moves it (the original messages, exit 0); clustat's text, `-s`, `-x`
//! and `--json`; unknown names get rgmanager's errors (a member name's
//! closest match too); clusvcadm's other flags as rgmanager 3.1's (`-Z`,
//! `-U`, `-c`, `-R` on a frozen service, `-l`/`-S`/`-u`: nothing starts
//! while locked, usage errors); a status failure
//! restarts it in place twice, then relocates it past `max_restarts`;
//! SIGKILL of the owner's cmand and rgmanager: the node is fenced by
//! `fence_lab` (which kills the service's process too) and only then does
//! the service come up on the survivor.

use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use cman::api::Client;
use cman::node::Status;
use rgmanager::control::{request, Request, Response};
use tests::{bin, spawn_cmand};

struct Lab {
    dir: tempfile::TempDir,
    key: PathBuf,
    conf: String,
}

/// The LSB script of the service: `start` runs a `sleep` in the
/// background and writes `running.NODE` (its PID) and a line to `log`;
/// `stop` kills it; `status` fails while `broken.NODE` exists.
const INIT: &str = r#"#!/bin/sh
D=@DIR@
N=$RGMANAGER_NODE
case "$1" in
start)
  setsid sleep 1000 </dev/null >/dev/null 2>&1 &
  echo $! > $D/running.$N
  echo "start $N" >> $D/log ;;
stop)
  [ -e $D/running.$N ] && kill -9 $(cat $D/running.$N) 2>/dev/null
  rm -f $D/running.$N
  echo "stop $N" >> $D/log ;;
status)
  [ -e $D/broken.$N ] && exit 1
  [ -e $D/running.$N ] && kill -0 $(cat $D/running.$N) 2>/dev/null || exit 3 ;;
esac
exit 0
"#;

impl Lab {
    fn new() -> Lab {
        Lab::with_fence_manual(false)
    }

    /// With `manual`, node 2 fences with fence_manual (waiting in its
    /// state directory for fence_ack_manual) instead of fence_lab.
    fn with_fence_manual(manual: bool) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let ips = ["127.0.1.1", "127.0.1.2"];
        let port = tests::free_port_on(&ips, true);
        let d = dir.path().display().to_string();
        let init = dir.path().join("init-web");
        std::fs::write(&init, INIT.replace("@DIR@", &d)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut nodes = String::new();
        for i in 1..=2 {
            nodes.push_str(&format!(
                "    <clusternode name=\"127.0.1.{i}\" nodeid=\"{i}\" votes=\"1\"><fence><method name=\"1\"><device name=\"lab\" port=\"127.0.1.{i}\"/></method></fence></clusternode>\n"
            ));
        }
        let device = if manual {
            format!(
                "<fencedevice name=\"lab\" agent=\"fence_manual\" state_dir=\"{d}/127.0.1.2\"/>"
            )
        } else {
            format!("<fencedevice name=\"lab\" agent=\"fence_lab\" lab_dir=\"{d}\"/>")
        };
        let text = format!(
            r#"<?xml version="1.0"?>
<cluster name="rgcl" config_version="1">
  <totem token="800"/>
  <cman port="{port}" two_node="1" expected_votes="1"/>
  <fence_daemon post_fail_delay="0" post_join_delay="3"/>
  <clusternodes>
{nodes}  </clusternodes>
  <fencedevices>
    {device}
  </fencedevices>
  <rm>
    <failoverdomains>
      <failoverdomain name="pref" ordered="1" restricted="1">
        <failoverdomainnode name="127.0.1.1" priority="1"/>
        <failoverdomainnode name="127.0.1.2" priority="2"/>
      </failoverdomain>
    </failoverdomains>
    <resources>
      <script name="web" file="{d}/init-web"/>
    </resources>
    <service name="web" domain="pref" recovery="restart" max_restarts="2" restart_expire_time="300">
      <script ref="web"><action name="status" depth="0" interval="1"/></script>
    </service>
  </rm>
</cluster>
"#
        );
        let key = dir.path().join("authkey");
        std::fs::write(&key, b"lab cluster key 0123456789abcdef").unwrap();
        let lab = Lab {
            dir,
            key,
            conf: text.clone(),
        };
        for i in 1..=2 {
            std::fs::create_dir_all(lab.state(i)).unwrap();
            std::fs::write(lab.state(i).join("cluster.conf"), &text).unwrap();
        }
        lab
    }

    /// Pushes cluster.conf version `v`, with `services` added to `<rm>`,
    /// to node `i`'s cmand.
    fn push_config(&self, i: u32, v: u32, services: &str) {
        let text = self
            .conf
            .replace("config_version=\"1\"", &format!("config_version=\"{v}\""))
            .replace("  </rm>", &format!("    {services}\n  </rm>"));
        let mut c = Client::connect(&self.state(i)).unwrap();
        c.request(&cman::api::ApiRequest::ConfigUpdate { text })
            .unwrap();
    }

    fn rg_log(&self, i: u32) -> String {
        std::fs::read_to_string(self.state(i).join("rgmanager.log")).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn state(&self, i: u32) -> PathBuf {
        self.path(&format!("127.0.1.{i}"))
    }

    fn status(&self, i: u32) -> Option<Status> {
        Client::connect(&self.state(i)).ok()?.status().ok()
    }

    fn rgmanager(&self, i: u32) -> Child {
        tests::rglab::rgmanager(&self.state(i), "0.3")
    }

    fn tool(&self, i: u32, name: &str, args: &[&str]) -> Output {
        Command::new(bin(name))
            .args(args)
            .arg("--state-dir")
            .arg(self.state(i))
            .output()
            .unwrap()
    }

    /// (owner name, state) of service:web as node `i`'s rgmanager says.
    fn web(&self, i: u32) -> Option<(String, String)> {
        tests::rglab::service(&self.state(i), "service:web")
    }

    fn wait_web(&self, i: u32, owner: &str, state: &str) {
        tests::wait_for(
            &format!("service:web {state} on {owner}"),
            Duration::from_secs(60),
            || self.web(i).is_some_and(|(o, s)| o == owner && s == state),
        );
    }

    /// The PID of the service's process on `node`, if it runs.
    fn running(&self, node: &str) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.path(&format!("running.{node}")))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        cman::registry::alive(nix::unistd::Pid::from_raw(pid)).then_some(pid)
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn dump_logs(&self) {
        tests::rglab::dump_logs(&[self.state(1), self.state(2)]);
    }
}

/// Prints every daemon's log when the test fails; then, pass or fail,
/// takes every node down as `fence_lab` would (what the service started
/// was registered by rgmanager and would otherwise outlive the test).
struct DumpOnPanic<'a>(&'a Lab);

impl Drop for DumpOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.dump_logs();
        }
        for i in 1..=2 {
            for r in cman::registry::registered(&self.0.state(i)) {
                let _ = nix::sys::signal::kill(r.pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

impl Lab {
    /// Both cmands up and quorate, then both rgmanagers.
    fn up(&self) -> (Vec<Child>, Vec<Child>) {
        let cmands: Vec<Child> = (1..=2)
            .map(|i| spawn_cmand(&self.state(i), i, &self.key))
            .collect();
        for i in 1..=2 {
            tests::wait_for(
                "both nodes members and quorate",
                Duration::from_secs(60),
                || {
                    self.status(i)
                        .is_some_and(|s| s.members.len() == 2 && s.quorum.quorate)
                },
            );
        }
        let rgm = (1..=2).map(|i| self.rgmanager(i)).collect();
        (cmands, rgm)
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const N1: &str = "127.0.1.1";
const N2: &str = "127.0.1.2";

#[test]
fn a_script_service_starts_moves_recovers_and_fails_over() {
    if !tests::require_root("cluster nodes on 127.0.1.N addresses") {
        return;
    }
    let lab = Lab::new();
    let _dump = DumpOnPanic(&lab);
    let (mut cmands, mut rgm) = lab.up();

    // It starts on the preferred node, and only there.
    lab.wait_web(2, N1, "started");
    assert!(lab.running(N1).is_some());
    assert!(lab.running(N2).is_none());
    tests::wait_for("node 2's rgmanager shown", Duration::from_secs(30), || {
        stdout(&lab.tool(1, "clustat", &[])).contains(", rgmanager\n 127.0.1.2")
            || stdout(&lab.tool(1, "clustat", &[])).contains("2 Online, rgmanager")
    });

    // clustat's text layout.
    let out = stdout(&lab.tool(1, "clustat", &[]));
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("Cluster Status for rgcl @ "), "{out}");
    assert_eq!(
        &lines[1..],
        [
            "Member Status: Quorate",
            "",
            " Member Name     ID   Status",
            " ------ ----     ---- ------",
            " 127.0.1.1          1 Online, Local, rgmanager",
            " 127.0.1.2          2 Online, rgmanager",
            "",
            " Service Name    Owner (Last)    State",
            " ------- ----    ----- ------    -----",
            " service:web     127.0.1.1       started",
        ],
        "{out}"
    );
    let o = lab.tool(2, "clustat", &["-s", "web"]);
    assert!(o.status.success());
    assert!(!stdout(&o).contains("Member Name"));
    let json = stdout(&lab.tool(2, "clustat", &["--json"]));
    assert!(json.contains("\"state\": \"started\""), "{json}");
    assert!(json.contains("\"owner\": \"127.0.1.1\""), "{json}");
    let x = stdout(&lab.tool(2, "clustat", &["-x"]));
    assert!(
        x.starts_with(
            "<?xml version=\"1.0\"?>\n<clustat version=\"4.1.1\">\n  <cluster name=\"rgcl\" id=\""
        ),
        "{x}"
    );
    assert!(
        x.contains("  <quorum quorate=\"1\" groupmember=\"1\"/>\n"),
        "{x}"
    );
    assert!(
        x.contains(
            "    <node name=\"127.0.1.2\" state=\"1\" local=\"1\" estranged=\"0\" rgmanager=\"1\""
        ),
        "{x}"
    );
    // (Its last owner is node 2 when node 2's rgmanager came first and
    // the service failed back to node 1.)
    assert!(x.contains("    <group name=\"service:web\" state=\"112\" state_str=\"started\" flags=\"0\" flags_str=\"\" owner=\"127.0.1.1\" last_owner=\""), "{x}");
    assert!(x.contains("\" restarts=\"0\" last_transition=\""), "{x}");

    // clusvcadm -r -m: the original messages, and it moved.
    let o = lab.tool(2, "clusvcadm", &["-r", "web", "-m", N2]);
    assert_eq!(
        stdout(&o),
        "Trying to relocate service:web to 127.0.1.2...Success\nservice:web is now running on 127.0.1.2\n"
    );
    assert_eq!(o.status.code(), Some(0));
    assert!(lab.running(N2).is_some());
    assert!(lab.running(N1).is_none());
    assert_eq!(lab.web(2), Some((N2.into(), "started".into())));
    // Node 1's copy of the record follows (group messages, agreed order).
    lab.wait_web(1, N2, "started");

    // Bad names.
    let o = lab.tool(1, "clusvcadm", &["-e", "nope"]);
    assert_eq!(
        stdout(&o),
        "Local machine trying to enable service:nope...Service does not exist\n"
    );
    assert_eq!(o.status.code(), Some(252));
    let o = lab.tool(1, "clusvcadm", &["-r", "web", "-m", "node9"]);
    assert_eq!(
        stdout(&o),
        "'node9' not in membership list\nNo matches for 'node9' found\n"
    );
    assert_eq!(o.status.code(), Some(1));
    let o = lab.tool(1, "clusvcadm", &["-r", "web", "-m", "127.0.1."]);
    assert_eq!(
        stdout(&o),
        "'127.0.1.' not in membership list\nMore than one possible match for '127.0.1.' found\n"
    );
    assert_eq!(o.status.code(), Some(1));
    // "Already running" is rgmanager 3's one error that exits 0.
    let o = lab.tool(1, "clusvcadm", &["-e", "web"]);
    assert_eq!(
        stdout(&o),
        "Local machine trying to enable service:web...Service is already running\n"
    );
    assert_eq!(o.status.code(), Some(0));
    // A prefix of a member's name: the closest match is used.
    let o = lab.tool(1, "clusvcadm", &["-Z", "web", "-m", "127.0.1.2x"]);
    assert_eq!(
        stdout(&o),
        "'127.0.1.2x' not in membership list\nClosest match: '127.0.1.2'\nMember 127.0.1.2 freezing service:web...Success\n"
    );
    assert_eq!(o.status.code(), Some(0));
    let o = lab.tool(1, "clusvcadm", &["-R", "web"]);
    assert_eq!(
        stdout(&o),
        "Local machine trying to restart service:web...Failure: Service is frozen\n"
    );
    assert_eq!(o.status.code(), Some(245));
    let o = lab.tool(1, "clusvcadm", &["-c", "web"]);
    assert_eq!(
        stdout(&o),
        "Local machine convalescing service:web...Failure: Service is frozen\n"
    );
    assert_eq!(o.status.code(), Some(245));
    let o = lab.tool(1, "clusvcadm", &["-U", "web"]);
    assert_eq!(
        stdout(&o),
        "Local machine unfreezing service:web...Success\n"
    );
    // Convalesce: nothing of ours is non-critical, so nothing to repair.
    let o = lab.tool(1, "clusvcadm", &["-c", "web"]);
    assert_eq!(
        stdout(&o),
        "Local machine convalescing service:web...Service is already running\n"
    );
    assert_eq!(o.status.code(), Some(0));
    // Usage errors.
    let o = lab.tool(1, "clusvcadm", &["-M", "web"]);
    assert_eq!(stdout(&o), "Migration requires a target cluster member\n");
    assert_eq!(o.status.code(), Some(1));
    let o = lab.tool(1, "clusvcadm", &["-e", "web", "-F", "-m", N1]);
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "Cannot use '-F' with '-n' or '-m'\n"
    );
    assert_eq!(o.status.code(), Some(1));
    let o = lab.tool(1, "clusvcadm", &[]);
    assert!(
        stdout(&o).starts_with("usage: clusvcadm [command]\n"),
        "{}",
        stdout(&o)
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        lab.tool(1, "clustat", &["-s", "nope"]).status.code(),
        Some(1)
    );

    // Locked (-l): the managers start nothing until unlocked (-u);
    // stopping is still allowed.
    let o = lab.tool(1, "clusvcadm", &["-S"]);
    assert_eq!(
        (stdout(&o).as_str(), o.status.code()),
        ("Resource groups unlocked\n", Some(0))
    );
    let o = lab.tool(1, "clusvcadm", &["-l"]);
    assert_eq!(
        (stdout(&o).as_str(), o.status.code()),
        ("Resource groups locked\n", Some(0))
    );
    // Every member applies it in the agreed order; the other one maybe
    // a moment after the one asked.
    let shows = |i: u32, want: &str| {
        tests::wait_for(want, Duration::from_secs(10), || {
            stdout(&lab.tool(i, "clusvcadm", &["-S"])) == want
        })
    };
    for i in 1..=2 {
        shows(i, "Resource groups locked\n");
    }
    let o = lab.tool(1, "clusvcadm", &["-d", "web"]);
    assert_eq!(
        stdout(&o),
        "Local machine disabling service:web...Success\n"
    );
    let o = lab.tool(2, "clusvcadm", &["-e", "web"]);
    assert_eq!(
        stdout(&o),
        "Local machine trying to enable service:web...Temporary failure; try again\n"
    );
    assert_eq!(o.status.code(), Some(250));
    let o = lab.tool(2, "clusvcadm", &["-c", "web"]);
    assert_eq!(
        stdout(&o),
        "Local machine convalescing service:web...Invalid operation for resource\n"
    );
    assert_eq!(o.status.code(), Some(248));
    let o = lab.tool(2, "clusvcadm", &["-u"]);
    assert_eq!(
        (stdout(&o).as_str(), o.status.code()),
        ("Resource groups unlocked\n", Some(0))
    );
    shows(1, "Resource groups unlocked\n");
    assert!(lab.rg_log(1).contains("Resource Groups Locked"));
    assert!(lab.rg_log(2).contains("Resource Groups Unlocked"));

    // Disabled; enabled again, on node 2.
    assert!(lab.running(N2).is_none() && lab.running(N1).is_none());
    let out = stdout(&lab.tool(1, "clustat", &["-s", "web"]));
    assert!(
        out.contains(" service:web     (127.0.1.2)     disabled"),
        "{out}"
    );
    assert_eq!(
        lab.tool(1, "clustat", &["-s", "web"]).status.code(),
        Some(119)
    );
    let o = lab.tool(1, "clusvcadm", &["-e", "web", "-m", N2]);
    assert_eq!(
        stdout(&o),
        "Member 127.0.1.2 trying to enable service:web...Success\nservice:web is now running on 127.0.1.2\n"
    );

    // A status failure restarts it in place, twice; the third relocates.
    let starts_before = lab.log().iter().filter(|l| *l == "start 127.0.1.2").count();
    std::fs::write(lab.path("broken.127.0.1.2"), "").unwrap();
    lab.wait_web(1, N1, "started");
    let log = lab.log();
    let starts_on_2 = log.iter().filter(|l| *l == "start 127.0.1.2").count();
    assert_eq!(
        starts_on_2 - starts_before,
        2,
        "two restarts in place: {log:?}"
    );
    assert_eq!(
        log.last().map(String::as_str),
        Some("start 127.0.1.1"),
        "{log:?}"
    );
    std::fs::remove_file(lab.path("broken.127.0.1.2")).unwrap();
    let rg2 = std::fs::read_to_string(lab.state(2).join("rgmanager.log")).unwrap();
    assert!(
        rg2.contains("Restart threshold for service:web exceeded; attempting to relocate"),
        "{rg2}"
    );

    // A pushed cluster.conf: the new service starts, the running one is
    // left alone; an invalid <rm> is refused and the running one kept.
    let web_starts = lab.log().len();
    lab.push_config(
        2,
        2,
        r#"<service name="extra"><script name="extra" file="/bin/true"/></service>"#,
    );
    tests::wait_for("service:extra started", Duration::from_secs(30), || {
        request(&lab.state(1), &Request::Status, Duration::from_secs(5))
            .ok()
            .and_then(|r| match r {
                Response::Status(v) => v
                    .services
                    .iter()
                    .find(|s| s.name == "service:extra")
                    .map(|s| s.record.state.as_str() == "started"),
                _ => None,
            })
            .unwrap_or(false)
    });
    assert_eq!(
        lab.log().len(),
        web_starts,
        "service:web untouched: {:?}",
        lab.log()
    );
    lab.push_config(1, 3, r#"<service name="bad" recovery="reboot"/>"#);
    tests::wait_for("the bad config refused", Duration::from_secs(30), || {
        lab.rg_log(1)
            .contains("Refusing configuration version 3 (cluster.conf line")
            && lab
                .rg_log(2)
                .contains("Refusing configuration version 3 (cluster.conf line")
    });
    let out = stdout(&lab.tool(2, "clustat", &[]));
    assert!(
        out.contains(" service:extra ") && !out.contains("service:bad"),
        "{out}"
    );
    assert_eq!(lab.web(2), Some((N1.into(), "started".into())));

    // SIGKILL of the owner's daemons: fenced, then taken over.
    let victim_pid = lab.running(N1).expect("runs on node 1");
    tests::reap(&mut cmands[0]);
    tests::reap(&mut rgm[0]);
    let killed = Instant::now();
    lab.wait_web(2, N2, "started");
    let took = killed.elapsed();
    let st = lab.status(2).unwrap();
    let fenced = st
        .nodes
        .iter()
        .find(|n| n.id.0 == 1)
        .and_then(|n| n.last_fenced.clone());
    assert!(fenced.is_some(), "node 1 was fenced: {st:?}");
    let fence_log = std::fs::read_to_string(lab.state(1).join("fence_lab.log")).unwrap_or_default();
    assert!(!fence_log.is_empty(), "fence_lab acted on node 1");
    assert!(
        !cman::registry::alive(nix::unistd::Pid::from_raw(victim_pid)),
        "node 1's service process died with its node"
    );
    assert!(lab.running(N2).is_some());
    let rg2 = std::fs::read_to_string(lab.state(2).join("rgmanager.log")).unwrap();
    let fence_at = rg2.find("node fenced").expect("rgmanager saw the fence");
    let takeover_at = rg2
        .find("Taking over service service:web from down member 1")
        .expect("takeover logged");
    assert!(fence_at < takeover_at, "takeover only after the fence");
    eprintln!("failover: service up on node 2 {took:?} after SIGKILL");

    // Node 2's rgmanager stops its service on SIGTERM.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(rgm[1].id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = rgm[1].wait().unwrap();
    assert!(st.success(), "{st:?}");
    assert!(lab.running(N2).is_none(), "stopped on shutdown");
    tests::reap(&mut cmands[1]);
}

/// A node whose cmand dies (alone) stops its services at once, before
/// anyone fences it: its rgmanager runs the stop, kills what the service
/// left and exits 3; the other node takes over after the fence.
#[test]
fn losing_cmand_stops_the_services_at_once() {
    if !tests::require_root("cluster nodes on 127.0.1.N addresses") {
        return;
    }
    let lab = Lab::new();
    let _dump = DumpOnPanic(&lab);
    let (mut cmands, mut rgm) = lab.up();
    lab.wait_web(2, N1, "started");
    let pid = lab.running(N1).expect("runs on node 1");
    tests::reap(&mut cmands[0]);
    let mut code = None;
    tests::wait_for("node 1's rgmanager exits", Duration::from_secs(30), || {
        code = rgm[0].try_wait().unwrap().map(|s| s.code());
        code.is_some()
    });
    assert_eq!(code, Some(Some(3)), "exit code 3: lost cmand");
    assert!(!cman::registry::alive(nix::unistd::Pid::from_raw(pid)));
    assert!(
        lab.log().contains(&"stop 127.0.1.1".to_string()),
        "{:?}",
        lab.log()
    );
    lab.wait_web(2, N2, "started");
    let rg2 = std::fs::read_to_string(lab.state(2).join("rgmanager.log")).unwrap();
    assert!(rg2.contains("node fenced"), "{rg2}");
    tests::reap(&mut rgm[1]);
    tests::reap(&mut cmands[1]);
}

/// With fence_manual, a dead owner's service stays put (recoverable)
/// until an operator acknowledges the reset with fence_ack_manual.
#[test]
fn with_fence_manual_nothing_moves_until_fence_ack_manual() {
    if !tests::require_root("cluster nodes on 127.0.1.N addresses") {
        return;
    }
    let lab = Lab::with_fence_manual(true);
    let _dump = DumpOnPanic(&lab);
    let (mut cmands, mut rgm) = lab.up();
    lab.wait_web(2, N1, "started");
    let pid = lab.running(N1).expect("runs on node 1");
    // rgmanager first: a node that hangs keeps its service running.
    tests::reap(&mut rgm[0]);
    tests::reap(&mut cmands[0]);
    tests::wait_for("node 1 out of the view", Duration::from_secs(30), || {
        lab.status(2).is_some_and(|s| s.members.len() == 1)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lab.web(2), Some((N1.into(), "recoverable".into())));
    assert!(lab.running(N2).is_none(), "nothing moved before the ack");
    // The operator resets node 1 (here: what was left of it), then says so.
    assert!(cman::registry::alive(nix::unistd::Pid::from_raw(pid)));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let ack = Command::new(bin("fence_ack_manual"))
        .arg("--state-dir")
        .arg(lab.state(2))
        .arg(N1)
        .output()
        .unwrap();
    assert!(ack.status.success(), "{ack:?}");
    lab.wait_web(2, N2, "started");
    assert!(lab.running(N2).is_some());
    tests::reap(&mut rgm[1]);
    tests::reap(&mut cmands[1]);
}
