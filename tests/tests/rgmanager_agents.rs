//! The shipped rgmanager agents (`rgmanager/agents/`) run for real:
//! `script.sh` on an LSB script, `fs.sh` on a tmpfs (force_unmount kills a
//! process sitting in it), `ip.sh` in a network namespace this test
//! creates and deletes (veth pairs; the address goes on the
//! interface of its subnet, status follows the link, stop removes it).
//! Each through the runner of rgmanager, so its environment and exit
//! codes are the ones rgmanager gives and reads.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rgmanager::agent::{shipped_agents_dir, Agents, Call};
use rgmanager::config::{parse, Resource};

fn resource(xml: &str) -> Resource {
    let text = format!(r#"<cluster name="c"><rm><service name="s">{xml}</service></rm></cluster>"#);
    parse(&text).unwrap().services.remove(0).children.remove(0)
}

fn call(agents: &Agents, res: &Resource, action: &str, depth: u32) -> i32 {
    let c = Call {
        res,
        action,
        depth,
        timeout: Duration::from_secs(30),
    };
    agents.call(&c).unwrap()
}

fn executable(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn script_agent_runs_an_lsb_script() {
    let d = tempfile::tempdir().unwrap();
    let flag = d.path().join("running");
    let init = d.path().join("svc");
    executable(
        &init,
        &format!(
            "#!/bin/sh\nF={}\ncase $1 in start) touch $F;; stop) rm -f $F;; status) [ -e $F ] || exit 3;; *) exit 2;; esac\n",
            flag.display()
        ),
    );
    let agents = Agents::new(shipped_agents_dir());
    let r = resource(&format!(
        r#"<script name="svc" file="{}"/>"#,
        init.display()
    ));
    assert_eq!(call(&agents, &r, "status", 0), 1, "LSB 3 is a failure");
    assert_eq!(call(&agents, &r, "start", 0), 0);
    assert!(flag.exists());
    assert_eq!(call(&agents, &r, "status", 0), 0);
    assert_eq!(call(&agents, &r, "stop", 0), 0);
    assert!(!flag.exists());
    assert_eq!(call(&agents, &r, "validate-all", 0), 0);
    let missing = resource(r#"<script name="x" file="/nonexistent/init"/>"#);
    assert_eq!(call(&agents, &missing, "start", 0), 5, "not installed");
    assert_eq!(call(&agents, &missing, "stop", 0), 0, "nothing to stop");
    assert_eq!(call(&agents, &r, "frobnicate", 0), 2);
    let md = agents.metadata("script");
    assert_eq!(md.status, vec![(0, 30)]);
}

#[test]
fn fs_agent_mounts_and_force_unmounts() {
    if !tests::require_root("mounting a tmpfs") || !tests::require("fuser") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mnt = d.path().join("m");
    let agents = Agents::new(shipped_agents_dir());
    let r = resource(&format!(
        r#"<fs name="data" device="tmpfs" fstype="tmpfs" options="size=1m" mountpoint="{}" force_unmount="1"/>"#,
        mnt.display()
    ));
    let _guard = tests::Unmounter::new(&mnt);
    assert_eq!(call(&agents, &r, "status", 0), 7);
    assert_eq!(call(&agents, &r, "start", 0), 0);
    assert!(tests::is_mounted(&mnt));
    assert_eq!(call(&agents, &r, "start", 0), 0, "start is idempotent");
    assert_eq!(call(&agents, &r, "status", 20), 0);
    // A user with its cwd inside keeps the mount busy.
    let mut user = tests::spawn(Command::new("sleep").arg("60").current_dir(&mnt)).unwrap();
    assert_eq!(call(&agents, &r, "stop", 0), 0);
    assert!(!tests::is_mounted(&mnt));
    let st = user.wait().unwrap();
    assert!(!st.success(), "the user was killed: {st:?}");
    assert_eq!(call(&agents, &r, "stop", 0), 0, "stop is idempotent");
    assert_eq!(call(&agents, &r, "status", 0), 7);
}

/// A network namespace that this test owns; deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", name]).status();
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        Netns(name.to_string())
    }

    fn ip(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.0)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "ip {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn ip_agent_in_a_namespace() {
    if !tests::require_root("network namespaces") || !tests::require("ip") {
        return;
    }
    let ns = Netns::new(&format!("rgip{}", std::process::id()));
    for i in ["0", "1"] {
        let (d, p) = (format!("d{i}"), format!("p{i}"));
        ns.ip(&["link", "add", &d, "type", "veth", "peer", "name", &p]);
        ns.ip(&[
            "addr",
            "add",
            &format!("10.77.{}.1/24", 1 + i.parse::<u32>().unwrap()),
            "dev",
            &d,
        ]);
        ns.ip(&["link", "set", &d, "up"]);
        ns.ip(&["link", "set", &p, "up"]);
    }
    // A user agent directory whose ip.sh runs ours inside the namespace:
    // agents are just programs.
    let d = tempfile::tempdir().unwrap();
    executable(
        &d.path().join("ip.sh"),
        &format!(
            "#!/bin/sh\nexec ip netns exec {} {}/ip.sh \"$@\"\n",
            ns.0,
            shipped_agents_dir().display()
        ),
    );
    let agents = Agents::new(d.path());
    let r = resource(r#"<ip address="10.77.2.200" monitor_link="1" sleeptime="0"/>"#);
    assert_eq!(call(&agents, &r, "status", 0), 7);
    assert_eq!(call(&agents, &r, "start", 0), 0);
    let addrs = ns.ip(&["-o", "-f", "inet", "addr", "show", "dev", "d1"]);
    assert!(addrs.contains("10.77.2.200/24"), "{addrs}");
    let other = ns.ip(&["-o", "-f", "inet", "addr", "show", "dev", "d0"]);
    assert!(!other.contains("10.77.2.200"), "{other}");
    assert_eq!(call(&agents, &r, "status", 0), 0);
    // The link goes down (its peer does): status fails.
    ns.ip(&["link", "set", "p1", "down"]);
    assert_eq!(call(&agents, &r, "status", 0), 1);
    ns.ip(&["link", "set", "p1", "up"]);
    assert_eq!(call(&agents, &r, "status", 0), 0);
    assert_eq!(call(&agents, &r, "stop", 0), 0);
    let addrs = ns.ip(&["-o", "-f", "inet", "addr", "show", "dev", "d1"]);
    assert!(!addrs.contains("10.77.2.200"), "{addrs}");
    assert_eq!(call(&agents, &r, "status", 0), 7);
    // No interface of that subnet: start fails.
    let nowhere = resource(r#"<ip address="10.77.9.9" sleeptime="0"/>"#);
    assert_eq!(call(&agents, &nowhere, "start", 0), 1);
    let bad = resource(r#"<ip address="10.77.2.300"/>"#);
    assert_eq!(call(&agents, &bad, "start", 0), 6);
}
