//! rgmanager in network namespaces this test creates and deletes: two
//! cluster nodes and a client, each in its own namespace, joined by a
//! bridge in a fourth; addresses only inside them (10.213.N.0/24). A
//! service of `ip` (a floating address) + `script` (a real web server,
//! Python's http.server, bound to the floating address) starts on the
//! preferred node and the client fetches the page from the floating
//! address. The document root is an `fs` resource: an ext4 image on the
//! shared disk (a file of the test's, loop-mounted by our `fs.sh` where
//! the service runs), holding the page the test wrote, and each start
//! writes `whoami.txt` there. `clusvcadm -r -m node2` moves address, mount
//! and server; when node 2 dies (its cmand and rgmanager SIGKILLed, its
//! link cut, as power off would), `fence_lab` fences it and the client
//! gets the pages from node 1 again.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cman::api::Client;
use tests::{bin, spawn};

/// The namespaces of one test run; all deleted on drop.
struct Net {
    prefix: String,
    subnet: String,
}

impl Net {
    fn new() -> Net {
        let id = std::process::id();
        let net = Net {
            prefix: format!("rg{id}"),
            subnet: format!("10.213.{}", id % 250),
        };
        net.cleanup();
        net.sh(&format!("ip netns add {}", net.ns("br")));
        net.ip("br", "link add br0 type bridge");
        net.ip("br", "link set br0 up");
        for (n, host) in [("n1", 1), ("n2", 2), ("cl", 100)] {
            let ns = net.ns(n);
            net.sh(&format!("ip netns add {ns}"));
            net.ip(n, "link set lo up");
            net.ip(
                "br",
                &format!("link add v{n} type veth peer name e0 netns {ns}"),
            );
            net.ip("br", &format!("link set v{n} master br0 up"));
            net.ip(n, &format!("addr add {}.{host}/24 dev e0", net.subnet));
            net.ip(n, "link set e0 up");
        }
        // The client forgets a moved address's old owner quickly (no
        // gratuitous ARP without arping).
        net.sh(&format!(
            "ip netns exec {} sysctl -q -w net.ipv4.neigh.e0.base_reachable_time_ms=500 net.ipv4.neigh.e0.delay_first_probe_time=1",
            net.ns("cl")
        ));
        net
    }

    fn ns(&self, n: &str) -> String {
        format!("{}{n}", self.prefix)
    }

    fn addr(&self, host: u32) -> String {
        format!("{}.{host}", self.subnet)
    }

    fn sh(&self, cmd: &str) {
        let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
        assert!(st.success(), "{cmd}: {st}");
    }

    fn ip(&self, n: &str, args: &str) {
        self.sh(&format!("ip -n {} {args}", self.ns(n)));
    }

    /// The page the client gets from `http://addr/path` (None: no answer).
    fn fetch(&self, addr: &str, path: &str) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns("cl"),
                "curl",
                "-s",
                "-f",
                "-m",
                "1",
            ])
            .arg(format!("http://{addr}/{path}"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    fn cleanup(&self) {
        for n in ["n1", "n2", "cl", "br"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.cleanup();
    }
}

const INIT: &str = r#"#!/bin/sh
# LSB script of a web server on the floating address.
D=@DIR@
N=$RGMANAGER_NODE
W=$D/docroot
case "$1" in
start)
  echo "served by $N" > $W/whoami.txt || exit 1
  setsid python3 -m http.server 80 --bind @FLOAT@ --directory $W </dev/null >/dev/null 2>&1 &
  echo $! > $D/httpd.$N
  for i in $(seq 50); do
    curl -s -m 1 -o /dev/null http://@FLOAT@/ && exit 0
    sleep 0.1
  done
  exit 1 ;;
stop)
  [ -e $D/httpd.$N ] && kill $(cat $D/httpd.$N) 2>/dev/null
  rm -f $D/httpd.$N ;;
status)
  [ -e $D/httpd.$N ] && kill -0 $(cat $D/httpd.$N) 2>/dev/null || exit 3 ;;
esac
exit 0
"#;

struct Lab {
    dir: tempfile::TempDir,
    key: PathBuf,
    net: Net,
    float: String,
}

impl Lab {
    fn new() -> Lab {
        let net = Net::new();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let float = net.addr(50);
        let init = dir.path().join("init-httpd");
        std::fs::write(&init, INIT.replace("@DIR@", &d).replace("@FLOAT@", &float)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (a1, a2) = (net.addr(1), net.addr(2));
        // The shared disk: an ext4 image with the site on it.
        let disk = dir.path().join("disk.img");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        net.sh(&format!("mkfs.ext4 -q -F {}", disk.display()));
        let docroot = dir.path().join("docroot");
        std::fs::create_dir_all(&docroot).unwrap();
        net.sh(&format!(
            "mount -o loop {} {}",
            disk.display(),
            docroot.display()
        ));
        std::fs::write(
            docroot.join("index.html"),
            "the site, from the shared disk\n",
        )
        .unwrap();
        net.sh(&format!("umount {}", docroot.display()));
        let node = |i: u32, a: &str| {
            format!("<clusternode name=\"{a}\" nodeid=\"{i}\" votes=\"1\"><fence><method name=\"1\"><device name=\"lab\" port=\"{a}\"/></method></fence></clusternode>")
        };
        let text = format!(
            r#"<?xml version="1.0"?>
<cluster name="httpd_cluster" config_version="1">
  <totem token="800"/>
  <cman port="5405" two_node="1" expected_votes="1"/>
  <clusternodes>
    {}
    {}
  </clusternodes>
  <fencedevices><fencedevice name="lab" agent="fence_lab" lab_dir="{d}"/></fencedevices>
  <rm>
    <failoverdomains>
      <failoverdomain name="httpd_fail" ordered="1" restricted="1">
        <failoverdomainnode name="{a1}" priority="1"/>
        <failoverdomainnode name="{a2}" priority="2"/>
      </failoverdomain>
    </failoverdomains>
    <resources>
      <ip address="{float}" monitor_link="1" sleeptime="0"/>
      <script file="{d}/init-httpd" name="httpd"/>
      <fs name="docroot" device="{d}/disk.img" fstype="ext4" options="loop" mountpoint="{d}/docroot" force_unmount="1"/>
    </resources>
    <service autostart="1" domain="httpd_fail" name="httpd_srv" recovery="relocate">
      <ip ref="{float}"/>
      <script ref="httpd"/>
      <fs ref="docroot"/>
    </service>
  </rm>
</cluster>
"#,
            node(1, &a1),
            node(2, &a2)
        );
        let key = dir.path().join("authkey");
        std::fs::write(&key, b"lab cluster key 0123456789abcdef").unwrap();
        // cmand refuses a key file other users can read.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let lab = Lab {
            dir,
            key,
            net,
            float,
        };
        for i in 1..=2 {
            std::fs::create_dir_all(lab.state(i)).unwrap();
            std::fs::write(lab.state(i).join("cluster.conf"), &text).unwrap();
        }
        lab
    }

    fn name(&self, i: u32) -> String {
        self.net.addr(i)
    }

    fn state(&self, i: u32) -> PathBuf {
        self.dir.path().join(self.name(i))
    }

    /// `prog args` inside node `i`'s namespace, output in `state/log`.
    fn daemon(&self, i: u32, prog: &str, args: &[String], log: &str) -> Child {
        let log = std::fs::File::create(self.state(i).join(log)).unwrap();
        spawn(
            Command::new("ip")
                .args(["netns", "exec", &self.net.ns(&format!("n{i}"))])
                .arg(bin(prog))
                .args(args)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .unwrap()
    }

    fn cmand(&self, i: u32) -> Child {
        let s = self.state(i).display().to_string();
        let args = [
            "-f".into(),
            "-c".into(),
            format!("{s}/cluster.conf"),
            "-n".into(),
            self.name(i),
            "--state-dir".into(),
            s,
            "--key-file".into(),
            self.key.display().to_string(),
        ];
        self.daemon(i, "cmand", &args, "cmand.log")
    }

    fn rgmanager(&self, i: u32) -> Child {
        let args = [
            "-f".into(),
            "--state-dir".into(),
            self.state(i).display().to_string(),
            "--agent-dir".into(),
            rgmanager::agent::shipped_agents_dir().display().to_string(),
            "--status-interval".into(),
            "1".into(),
        ];
        self.daemon(i, "rgmanager", &args, "rgmanager.log")
    }

    fn clusvcadm(&self, i: u32, args: &[&str]) -> String {
        let out = Command::new(bin("clusvcadm"))
            .args(args)
            .arg("--state-dir")
            .arg(self.state(i))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until `from` serves; then the site's page comes from the
    /// shared disk.
    fn wait_page(&self, from: u32) -> Duration {
        let want = format!("served by {}", self.name(from));
        let t = Instant::now();
        tests::wait_for(
            &format!("the page from {}", self.name(from)),
            Duration::from_secs(60),
            || self.net.fetch(&self.float, "whoami.txt").as_deref() == Some(want.as_str()),
        );
        let took = t.elapsed();
        assert_eq!(
            self.net.fetch(&self.float, "index.html").as_deref(),
            Some("the site, from the shared disk")
        );
        took
    }

    /// True when this rgmanager's mount namespace has the document root
    /// mounted (`ip netns exec` gives each node's processes their own).
    fn mounted_in(&self, rgmanager: &Child) -> bool {
        let mounts =
            std::fs::read_to_string(format!("/proc/{}/mounts", rgmanager.id())).unwrap_or_default();
        let mnt = self.dir.path().join("docroot");
        let mnt = mnt.to_string_lossy();
        mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*mnt))
    }

    /// Waits until node `i`'s rgmanager has the service started on `owner`.
    fn wait_started(&self, i: u32, owner: u32) {
        use rgmanager::control::{request, Request, Response};
        let owner = self.name(owner);
        tests::wait_for(
            "httpd_srv started",
            Duration::from_secs(60),
            || match request(&self.state(i), &Request::Status, Duration::from_secs(5)) {
                Ok(Response::Status(v)) => v.services.iter().any(|s| {
                    s.name == "service:httpd_srv"
                        && s.record.state.as_str() == "started"
                        && s.owner.as_deref() == Some(owner.as_str())
                }),
                _ => false,
            },
        );
    }

    fn wait_quorate(&self, i: u32, members: usize) {
        tests::wait_for("the nodes quorate", Duration::from_secs(60), || {
            Client::connect(&self.state(i))
                .and_then(|mut c| c.status())
                .is_ok_and(|s| s.members.len() == members && s.quorum.quorate)
        });
    }

    /// Once both rgmanagers agree the service is started on one node and
    /// the client gets its page from there: that node.
    fn settled_owner(&self) -> u32 {
        use rgmanager::control::{request, Request, Response};
        let mut owner = 0;
        tests::wait_for("the service settled", Duration::from_secs(60), || {
            let owners: Vec<Option<String>> = (1..=2)
                .map(
                    |i| match request(&self.state(i), &Request::Status, Duration::from_secs(5)) {
                        Ok(Response::Status(v)) if v.synced => v
                            .services
                            .iter()
                            .find(|s| {
                                s.name == "service:httpd_srv"
                                    && s.record.state.as_str() == "started"
                            })
                            .and_then(|s| s.owner.clone()),
                        _ => None,
                    },
                )
                .collect();
            let Some(o) = owners[0].clone().filter(|o| owners[1].as_ref() == Some(o)) else {
                return false;
            };
            owner = if o == self.name(1) { 1 } else { 2 };
            let want = format!("served by {o}");
            self.net.fetch(&self.float, "whoami.txt").as_deref() == Some(want.as_str())
        });
        owner
    }

    fn dump_logs(&self) {
        for i in 1..=2 {
            for f in ["cmand.log", "rgmanager.log"] {
                let t = std::fs::read_to_string(self.state(i).join(f)).unwrap_or_default();
                eprintln!("==== node {i} {f}\n{t}");
            }
        }
    }
}

/// Dumps the logs when the test fails; then, pass or fail, takes every
/// node down as `fence_lab` would (what the services started was
/// registered by rgmanager and would otherwise outlive the test).
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

#[test]
fn floating_ip_and_web_server_move_between_namespaced_nodes() {
    if !tests::require_root("network namespaces")
        || !tests::require_all(&["ip", "curl", "python3", "mkfs.ext4", "losetup"])
    {
        return;
    }
    let lab = Lab::new();
    let _dump = DumpOnPanic(&lab);
    let mut cmands: Vec<Child> = (1..=2).map(|i| lab.cmand(i)).collect();
    for i in 1..=2 {
        tests::wait_for("both nodes quorate", Duration::from_secs(60), || {
            Client::connect(&lab.state(i))
                .and_then(|mut c| c.status())
                .is_ok_and(|s| s.members.len() == 2 && s.quorum.quorate)
        });
    }
    let mut rgm: Vec<Child> = (1..=2).map(|i| lab.rgmanager(i)).collect();

    // The preferred node serves the floating address.
    lab.wait_page(1);
    lab.wait_started(1, 1);
    assert!(lab.mounted_in(&rgm[0]) && !lab.mounted_in(&rgm[1]));

    // Moved by hand.
    let out = lab.clusvcadm(1, &["-r", "httpd_srv", "-m", &lab.name(2)]);
    assert_eq!(
        out,
        format!(
            "Trying to relocate service:httpd_srv to {0}...Success\nservice:httpd_srv is now running on {0}\n",
            lab.name(2)
        )
    );
    lab.wait_page(2);
    assert!(lab.mounted_in(&rgm[1]) && !lab.mounted_in(&rgm[0]));

    // Node 2 dies: daemons killed, link cut; fenced, then node 1 serves.
    let t = Instant::now();
    tests::reap(&mut cmands[1]);
    tests::reap(&mut rgm[1]);
    lab.net.ip("n2", "link set e0 down");
    lab.wait_page(1);
    let took = t.elapsed();
    assert!(lab.mounted_in(&rgm[0]));
    let fenced = std::fs::read_to_string(lab.state(2).join("fence_lab.log")).unwrap_or_default();
    assert!(!fenced.is_empty(), "fence_lab fenced node 2");
    eprintln!("failover: first page from the survivor {took:?} after the kill");
    tests::reap(&mut rgm[0]);
    tests::reap(&mut cmands[0]);
}

/// The failover benchmark (not a timed test): `RG_BENCH_KILLS` (default
/// 10) times, the node running the service dies (cmand and rgmanager
/// SIGKILLed, link cut); printed: the time to the first HTTP 200 from the
/// survivor on the floating address as the client sees it, beside the
/// survivor's detection (its new view) and fencing times. The dead node is
/// restarted between kills (the service may fail back to it).
///
/// `cargo test -p tests --test rgmanager_netns -- --ignored --nocapture bench`
#[test]
#[ignore]
fn bench_failover() {
    if !tests::require_root("network namespaces")
        || !tests::require_all(&["ip", "curl", "python3", "mkfs.ext4", "losetup"])
    {
        return;
    }
    let kills: usize = std::env::var("RG_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let lab = Lab::new();
    let _dump = DumpOnPanic(&lab);
    let mut cmands: Vec<Child> = (1..=2).map(|i| lab.cmand(i)).collect();
    for i in 1..=2 {
        lab.wait_quorate(i, 2);
    }
    let mut rgm: Vec<Child> = (1..=2).map(|i| lab.rgmanager(i)).collect();
    let (mut http, mut detect, mut fence) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..kills {
        let owner = lab.settled_owner();
        let (o, s) = (owner as usize - 1, 3 - owner);
        let t = Instant::now();
        tests::reap(&mut cmands[o]);
        tests::reap(&mut rgm[o]);
        lab.net.ip(&format!("n{owner}"), "link set e0 down");
        lab.wait_page(s);
        http.push(t.elapsed());
        let st = Client::connect(&lab.state(s)).unwrap().status().unwrap();
        let asked = Instant::now();
        let view_at = asked - Duration::from_millis(st.view_age_ms);
        detect.push(view_at.saturating_duration_since(t));
        let fenced_ms = st
            .nodes
            .iter()
            .find(|n| n.id.0 == owner)
            .and_then(|n| n.last_fenced.as_ref())
            .map(|(ms, _)| *ms)
            .expect("fenced");
        fence.push((asked - Duration::from_millis(fenced_ms)).saturating_duration_since(t));
        eprintln!(
            "kill {k}: node {owner}: page from node {s} after {:?} (view {:?}, fenced {:?})",
            http[k], detect[k], fence[k]
        );
        // The dead node comes back.
        lab.net.ip(&format!("n{owner}"), "link set e0 up");
        cmands[o] = lab.cmand(owner);
        lab.wait_quorate(owner, 2);
        rgm[o] = lab.rgmanager(owner);
    }
    let show = |name: &str, v: &mut Vec<Duration>| {
        v.sort();
        eprintln!(
            "{name}: min {:?} median {:?} max {:?} over {} kills",
            v[0],
            v[v.len() / 2],
            v[v.len() - 1],
            v.len()
        );
    };
    show("first HTTP 200 on the floating address", &mut http);
    show("detection (survivor's new view)", &mut detect);
    show("fencing done", &mut fence);
    for mut c in rgm.into_iter().chain(cmands) {
        tests::reap(&mut c);
    }
}
