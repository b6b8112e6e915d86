//! rgmanager in network namespaces this test creates and deletes: two
//! cluster nodes, a storage node and a client, each in its own namespace,
//! joined by a bridge in a fifth; addresses only inside them
//! (10.213.N.0/24). The tutorial's service: `ip` (a floating address) +
//! `script` (Debian's apache2, started by an LSB script with its own
//! configuration, ServerRoot, PidFile and Listen on the floating address,
//! never the host's /etc/apache2) + `fs` (ext4 on an iSCSI LUN of our
//! tgtd, which runs on the storage node).
//!
//! Each node boots as the tutorial's servers do: `iscsiadm -m discovery`
//! and `--login` (our userspace initiator: a session holder exposing the
//! LUN as a file under a tmpfs private to the node's mount namespace, at
//! the same path on both nodes), then rgmanager in that same mount
//! namespace; `fs.sh` loop-mounts the LUN where the service runs. The
//! session holder is registered in the node's state directory, so the
//! node's fencing (`fence_lab`) cuts its storage too, as a power switch
//! would.
//!
//! The client fetches the site from the floating address; `clusvcadm -r
//! -m node2` moves address, mount and server; a status failure (the server
//! killed) restarts it in place, then relocates past `max_restarts`; the
//! owner's death (daemons SIGKILLed, link cut) is fenced by `fence_lab`
//! and the survivor serves; with `fence_manual` nothing moves until
//! `fence_ack_manual`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cman::api::Client;
use rgmanager::control::{request, Request, Response};
use tests::{bin, spawn};

/// One namespaced lab at a time: they are heavy, and their timings are
/// what the tests look at.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const IQN: &str = "iqn.2026-12.lab:web";
const SVC: &str = "service:httpd_srv";

/// The namespaces of one lab; all deleted on drop.
struct Net {
    prefix: String,
    subnet: String,
}

impl Net {
    fn new() -> Net {
        static LABS: AtomicU32 = AtomicU32::new(0);
        let id = std::process::id();
        let k = LABS.fetch_add(1, Ordering::Relaxed);
        let net = Net {
            prefix: format!("rg{id}x{k}"),
            subnet: format!("10.213.{}", (id + k) % 250),
        };
        net.cleanup();
        net.sh(&format!("ip netns add {}", net.ns("br")));
        net.ip("br", "link add br0 type bridge");
        net.ip("br", "link set br0 up");
        for (n, host) in [("n1", 1), ("n2", 2), ("st", 200), ("cl", 100)] {
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
        // The client forgets a moved address's old owner quickly (should
        // the gratuitous ARP be missed).
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

    fn curl(&self, args: &[&str], url: &str) -> Option<String> {
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
            .args(args)
            .arg(url)
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The page the client gets from `http://addr/path` (None: no answer).
    fn fetch(&self, addr: &str, path: &str) -> Option<String> {
        self.curl(&[], &format!("http://{addr}/{path}"))
    }

    fn cleanup(&self) {
        for n in ["n1", "n2", "st", "cl", "br"] {
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

/// The LSB script of the web server: Debian's apache2 with the node's own
/// configuration (`STATE/httpd.conf`, written by the test), its server
/// process group stopped as a whole.
const INIT: &str = r#"#!/bin/sh
# LSB init script of Apache on the floating address.
D=@DIR@
N=$RGMANAGER_NODE
C=$D/$N/httpd.conf
P=$D/$N/httpd.pid
# True while a process of group $1 runs (zombies aside: nobody reaps the
# daemonized server here).
group_runs() {
  g=$1
  for f in /proc/[0-9]*/stat; do
    read -r l 2>/dev/null < $f || continue
    set -- ${l##*) }
    [ "$1" != Z ] && [ "$3" = "$g" ] && return 0
  done
  return 1
}
# True while process $1 runs (not a zombie).
runs() {
  read -r l 2>/dev/null < /proc/$1/stat || return 1
  set -- ${l##*) }
  [ "$1" != Z ]
}
case "$1" in
start)
  echo "served by $N" > $D/docroot/whoami.txt || exit 1
  if [ -s $P ]; then
    runs $(cat $P) && exit 0
    # Left by a server killed with its node.
    rm -f $P
  fi
  apache2 -f $C -k start || exit 1
  for i in $(seq 100); do
    curl -s -f -m 1 -o /dev/null http://@FLOAT@/ && exit 0
    sleep 0.1
  done
  exit 1 ;;
stop)
  if [ -s $P ]; then
    # The server's process group (it calls setsid): the server stops its
    # workers; if it is gone, its orphaned workers are killed.
    pg=$(cat $P)
    if runs $pg; then
      kill -TERM $pg
      for i in $(seq 100); do
        group_runs $pg || break
        sleep 0.1
      done
    fi
    kill -KILL -$pg 2>/dev/null
    rm -f $P
  fi
  exit 0 ;;
status)
  [ -s $P ] && runs $(cat $P) || exit 3 ;;
esac
exit 0
"#;

/// Apache's configuration on one node: nothing from /etc/apache2.
fn httpd_conf(dir: &Path, state: &Path, float: &str) -> String {
    let (d, s) = (dir.display(), state.display());
    let m = "/usr/lib/apache2/modules";
    format!(
        r#"ServerRoot "{s}"
ServerName httpd_srv
Listen {float}:80
PidFile "{s}/httpd.pid"
DefaultRuntimeDir "{s}"
ErrorLog "{s}/httpd-error.log"
LogLevel warn
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule dir_module {m}/mod_dir.so
User www-data
Group www-data
DocumentRoot "{d}/docroot"
<Directory "{d}/docroot">
  Require all granted
</Directory>
DirectoryIndex index.html
"#
    )
}

/// How a node is fenced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fencing {
    /// `fence_lab`: kills the node's registered processes.
    Lab,
    /// `fence_manual`, waiting in node 2's state directory.
    Manual,
}

struct Lab {
    dir: tempfile::TempDir,
    key: PathBuf,
    net: Net,
    float: String,
    tgtd: Option<Child>,
    /// The FUSE connections (minor numbers) of every session holder seen.
    sessions: std::cell::RefCell<std::collections::BTreeSet<String>>,
    _on_runner_death: tests::OnRunnerDeath,
}

impl Lab {
    fn new(fencing: Fencing) -> Lab {
        let net = Net::new();
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        // Apache's workers (www-data) walk down to the document root.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path().display().to_string();
        let float = net.addr(50);
        let storage = net.addr(200);
        let init = dir.path().join("init-httpd");
        std::fs::write(&init, INIT.replace("@DIR@", &d).replace("@FLOAT@", &float)).unwrap();
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["docroot", "iscsi", "tgt"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        // The LUN's backing file: an ext4 made with the site on it.
        let site = dir.path().join("site");
        std::fs::create_dir_all(&site).unwrap();
        std::fs::set_permissions(&site, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(site.join("index.html"), "the site, from the shared disk\n").unwrap();
        let lun = dir.path().join("tgt/lun1.img");
        std::fs::File::create(&lun)
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
        net.sh(&format!(
            "mkfs.ext4 -q -F -d {} {}",
            site.display(),
            lun.display()
        ));
        let (a1, a2) = (net.addr(1), net.addr(2));
        let node = |i: u32, a: &str| {
            format!("<clusternode name=\"{a}\" nodeid=\"{i}\" votes=\"1\"><fence><method name=\"1\"><device name=\"lab\" port=\"{a}\"/></method></fence></clusternode>")
        };
        let device = match fencing {
            Fencing::Lab => {
                format!("<fencedevice name=\"lab\" agent=\"fence_lab\" lab_dir=\"{d}\"/>")
            }
            Fencing::Manual => {
                format!("<fencedevice name=\"lab\" agent=\"fence_manual\" state_dir=\"{d}/{a2}\"/>")
            }
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
  <fencedevices>{device}</fencedevices>
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
      <fs name="docroot" device="{d}/iscsi/ip-{storage}:3260-iscsi-{IQN}-lun-1" fstype="ext4" options="loop" mountpoint="{d}/docroot" force_unmount="1"/>
    </resources>
    <service autostart="1" domain="httpd_fail" name="httpd_srv" recovery="restart" max_restarts="2" restart_expire_time="600">
      <ip ref="{float}"/>
      <script ref="httpd"><action name="status" depth="0" interval="1"/></script>
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
        // If the runner dies, every node's registered processes (services,
        // session holders) go, and so do the namespaces.
        let states: Vec<String> = [&a1, &a2].iter().map(|a| format!("{d}/{a}")).collect();
        let mut reaper = Command::new("sh");
        reaper.arg("-c").arg(format!(
            "for f in {0}/*.pid {1}/*.pid; do kill -9 $(cat $f) 2>/dev/null; done; for n in n1 n2 st cl br; do ip netns del {2}$n 2>/dev/null; done",
            states[0], states[1], net.prefix
        ));
        let lab = Lab {
            dir,
            key,
            net,
            float,
            tgtd: None,
            sessions: Default::default(),
            _on_runner_death: tests::OnRunnerDeath::new(&reaper),
        };
        for i in 1..=2 {
            std::fs::create_dir_all(lab.state(i)).unwrap();
            std::fs::write(lab.state(i).join("cluster.conf"), &text).unwrap();
            std::fs::write(
                lab.state(i).join("httpd.conf"),
                httpd_conf(lab.dir.path(), &lab.state(i), &lab.float),
            )
            .unwrap();
        }
        lab
    }

    fn name(&self, i: u32) -> String {
        self.net.addr(i)
    }

    fn state(&self, i: u32) -> PathBuf {
        self.dir.path().join(self.name(i))
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn tgtadm(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin("tgtadm"))
            .arg("--control-dir")
            .arg(self.path("tgt"))
            .args(["-C", "0", "--lld", "iscsi"])
            .args(args)
            .output()
            .unwrap()
    }

    /// Our tgtd on the storage node, exporting the LUN to everyone.
    fn storage(&mut self) {
        let log = std::fs::File::create(self.path("tgt/tgtd.log")).unwrap();
        let portal = format!("portal={}:3260", self.net.addr(200));
        let child = spawn(
            Command::new("ip")
                .args(["netns", "exec", &self.net.ns("st")])
                .arg(bin("tgtd"))
                .args(["-f", "-C", "0", "--iscsi", &portal])
                .arg("--control-dir")
                .arg(self.path("tgt"))
                .arg("--state-dir")
                .arg(self.path("tgt/state"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .unwrap();
        self.tgtd = Some(child);
        tests::wait_for("tgtd's control socket", Duration::from_secs(30), || {
            self.tgtadm(&["--op", "show", "--mode", "target"])
                .status
                .success()
        });
        let lun = self.path("tgt/lun1.img").display().to_string();
        for args in [
            vec!["--op", "new", "--mode", "target", "--tid", "1", "-T", IQN],
            vec![
                "--op",
                "new",
                "--mode",
                "logicalunit",
                "--tid",
                "1",
                "--lun",
                "1",
                "-b",
                &lun,
            ],
            vec![
                "--op", "bind", "--mode", "target", "--tid", "1", "-I", "ALL",
            ],
        ] {
            let o = self.tgtadm(&args);
            assert!(o.status.success(), "tgtadm {args:?}: {o:?}");
        }
    }

    /// `prog args` inside node `i`'s namespace, output in `state/log`.
    fn daemon(&self, i: u32, cmd: &mut Command, log: &str) -> Child {
        let log = std::fs::File::create(self.state(i).join(log)).unwrap();
        spawn(
            Command::new("ip")
                .args(["netns", "exec", &self.net.ns(&format!("n{i}"))])
                .arg(cmd.get_program())
                .args(cmd.get_args())
                .env(
                    "RUST_LOG",
                    std::env::var("RG_RUST_LOG").unwrap_or_else(|_| "info".into()),
                )
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .unwrap()
    }

    fn cmand(&self, i: u32) -> Child {
        let mut c = Command::new(bin("cmand"));
        c.arg("-f")
            .arg("-c")
            .arg(self.state(i).join("cluster.conf"))
            .arg("-n")
            .arg(self.name(i))
            .arg("--state-dir")
            .arg(self.state(i))
            .arg("--key-file")
            .arg(&self.key);
        self.daemon(i, &mut c, "cmand.log")
    }

    /// Node `i`'s boot after cmand: a tmpfs for the iSCSI files (private
    /// to the node's mount namespace), discovery and login (the session
    /// holder registered as one of the node's processes), then rgmanager
    /// in a mount namespace of its own that starts as a copy of the
    /// holder's. The child is rgmanager.
    ///
    /// Not the holder's namespace itself: the last process of a mount
    /// namespace unmounts what is left in it as it exits, and if that
    /// were the holder, with the LUN's ext4 still mounted (its node
    /// killed), it would wait for its own FUSE mount to write the ext4's
    /// journal back, forever (seen: a zombie holder with one thread in
    /// `jbd2_log_wait_commit`, its FUSE connection alive, every later
    /// `mount -o loop` on the machine hanging on its loop device).
    fn boot(&self, i: u32) -> Child {
        let s = self.state(i).display().to_string();
        let d = self.dir.path().display().to_string();
        let script = format!(
            r#"set -e
mount -t tmpfs -o mode=0755 tmpfs {d}/iscsi
export ISCSI_STATE_DIR={s}/iscsi ISCSI_MOUNT_DIR={d}/iscsi ISCSI_INITIATOR_NAME=iqn.2026-12.lab:node{i}
rm -rf {s}/iscsi/sessions
{adm} -m discovery -t st -p {portal}
{adm} -m node --login
sed -n 's/^pid = //p' {s}/iscsi/sessions/1 > {s}/iscsi.pid.tmp
mv {s}/iscsi.pid.tmp {s}/iscsi.pid
exec unshare -m {rgm} -f --state-dir {s} --agent-dir {agents} --status-interval 1
"#,
            adm = bin("iscsiadm").display(),
            portal = self.net.addr(200),
            rgm = bin("rgmanager").display(),
            agents = rgmanager::agent::shipped_agents_dir().display(),
        );
        self.daemon(i, Command::new("sh").arg("-c").arg(script), "rgmanager.log")
    }

    /// Both cmands up and quorate, then both nodes' rgmanagers.
    fn up(&self) -> (Vec<Child>, Vec<Child>) {
        let cmands: Vec<Child> = (1..=2).map(|i| self.cmand(i)).collect();
        for i in 1..=2 {
            self.wait_quorate(i, 2);
        }
        let rgm = (1..=2).map(|i| self.boot(i)).collect();
        (cmands, rgm)
    }

    /// clusvcadm on node `i`: its output and exit code (bounded: a
    /// request that does not settle in 120 s fails the test).
    fn clusvcadm(&self, i: u32, args: &[&str]) -> (String, Option<i32>) {
        use std::io::Read;
        let mut child = Command::new(bin("clusvcadm"))
            .args(args)
            .arg("--state-dir")
            .arg(self.state(i))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if t.elapsed() > Duration::from_secs(120) {
                tests::reap(&mut child);
                panic!("clusvcadm {args:?} on node {i} did not answer in 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        (out, status.code())
    }

    /// Notes the FUSE connections of the nodes' session holders (for the
    /// teardown).
    fn note_sessions(&self) {
        for i in 1..=2 {
            let Ok(pid) = std::fs::read_to_string(self.state(i).join("iscsi.pid")) else {
                continue;
            };
            let info = std::fs::read_to_string(format!("/proc/{}/mountinfo", pid.trim()))
                .unwrap_or_default();
            for l in info.lines().filter(|l| l.contains("/.session-")) {
                if let Some(minor) = l.split(' ').nth(2).and_then(|d| d.split(':').nth(1)) {
                    self.sessions.borrow_mut().insert(minor.to_string());
                }
            }
        }
    }

    /// Waits until `from` serves; then the site's page comes from the
    /// shared disk, and Apache serves it.
    fn wait_page(&self, from: u32) -> Duration {
        self.note_sessions();
        let want = format!("served by {}", self.name(from));
        let t = Instant::now();
        tests::wait_for(
            &format!("the page from {}", self.name(from)),
            Duration::from_secs(60),
            || {
                // Polled often: a connection attempt to the address while
                // nobody holds it is given up after 0.25 s, an answer
                // (once connected) may take 2 s.
                let url = format!("http://{}/whoami.txt", self.float);
                self.net
                    .curl(&["--connect-timeout", "0.25", "-m", "2"], &url)
                    .as_deref()
                    == Some(want.as_str())
            },
        );
        let took = t.elapsed();
        // (A loaded machine may take more than curl's second to answer.)
        let mut page = None;
        for _ in 0..5 {
            page = self.net.fetch(&self.float, "index.html");
            if page.is_some() {
                break;
            }
        }
        assert_eq!(page.as_deref(), Some("the site, from the shared disk"));
        took
    }

    /// The response headers of `/` as the client gets them.
    fn head(&self) -> String {
        (0..5)
            .find_map(|_| self.net.curl(&["-I"], &format!("http://{}/", self.float)))
            .unwrap_or_default()
    }

    /// True when this rgmanager's mount namespace has the document root
    /// mounted (each node's processes have their own).
    fn mounted_in(&self, rgmanager: &Child) -> bool {
        let mounts =
            std::fs::read_to_string(format!("/proc/{}/mounts", rgmanager.id())).unwrap_or_default();
        let mnt = self.path("docroot");
        let mnt = mnt.to_string_lossy();
        mounts.lines().any(|l| l.split(' ').nth(1) == Some(&*mnt))
    }

    /// (owner, state, restarts) of the service as node `i` has it.
    fn record(&self, i: u32) -> Option<(Option<String>, String, u32)> {
        match request(&self.state(i), &Request::Status, Duration::from_secs(5)) {
            Ok(Response::Status(v)) => v.services.iter().find(|s| s.name == SVC).map(|s| {
                (
                    s.owner.clone(),
                    s.record.state.as_str().to_string(),
                    s.record.restarts,
                )
            }),
            _ => None,
        }
    }

    /// Waits until node `i`'s rgmanager has the service started on `owner`.
    fn wait_started(&self, i: u32, owner: u32) {
        let owner = self.name(owner);
        tests::wait_for("httpd_srv started", Duration::from_secs(60), || {
            self.record(i)
                .is_some_and(|(o, s, _)| s == "started" && o.as_deref() == Some(owner.as_str()))
        });
    }

    fn wait_quorate(&self, i: u32, members: usize) {
        tests::wait_for("the nodes quorate", Duration::from_secs(60), || {
            Client::connect(&self.state(i))
                .and_then(|mut c| c.status())
                .is_ok_and(|s| s.members.len() == members && s.quorum.quorate)
        });
    }

    /// Apache's server process on node `i`, if it runs.
    fn httpd(&self, i: u32) -> Option<nix::unistd::Pid> {
        let pid: i32 = std::fs::read_to_string(self.state(i).join("httpd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let pid = nix::unistd::Pid::from_raw(pid);
        cman::registry::alive(pid).then_some(pid)
    }

    /// Node `i`'s iSCSI session holder.
    fn holder(&self, i: u32) -> nix::unistd::Pid {
        let pid: i32 = std::fs::read_to_string(self.state(i).join("iscsi.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        nix::unistd::Pid::from_raw(pid)
    }

    /// Once both rgmanagers agree the service is started on one node and
    /// the client gets its page from there: that node.
    fn settled_owner(&self) -> u32 {
        let mut owner = 0;
        tests::wait_for("the service settled", Duration::from_secs(60), || {
            let owners: Vec<Option<String>> = (1..=2)
                .map(|i| {
                    self.record(i)
                        .filter(|(_, s, _)| s == "started")
                        .and_then(|(o, _, _)| o)
                })
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

    /// Node `i` dies as at a power cut: its cmand and rgmanager SIGKILLed
    /// (rgmanager first: its services go on running), its link cut.
    fn kill_node(&self, i: u32, cmand: &mut Child, rgm: &mut Child) {
        tests::reap(rgm);
        tests::reap(cmand);
        self.net.ip(&format!("n{i}"), "link set e0 down");
    }

    fn rg_log(&self, i: u32) -> String {
        std::fs::read_to_string(self.state(i).join("rgmanager.log")).unwrap_or_default()
    }

    fn dump_logs(&self) {
        for i in 1..=2 {
            for f in ["cmand.log", "rgmanager.log", "httpd-error.log"] {
                let t = std::fs::read_to_string(self.state(i).join(f)).unwrap_or_default();
                eprintln!("==== node {i} {f}\n{t}");
            }
        }
        let t = std::fs::read_to_string(self.path("tgt/tgtd.log")).unwrap_or_default();
        eprintln!("==== tgtd.log\n{t}");
    }
}

/// Dumps the logs when the test fails (or `RG_DUMP_LOGS` is set); then, pass or fail, takes every
/// node down as `fence_lab` would (what the services started and the
/// session holders were registered and would otherwise outlive the test),
/// and stops tgtd.
struct DumpOnPanic<'a>(&'a mut Lab);

impl Drop for DumpOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("RG_DUMP_LOGS").is_some() {
            self.0.dump_logs();
        }
        if std::thread::panicking() && std::env::var_os("RG_HOLD_ON_PANIC").is_some() {
            eprintln!("RG_HOLD_ON_PANIC: holding for 900 s");
            std::thread::sleep(Duration::from_secs(900));
        }
        self.0.note_sessions();
        // First everything of the nodes but their iSCSI sessions: the
        // file systems of their services go with the last processes of
        // their mount namespaces, written back through the sessions.
        let is_session =
            |r: &cman::registry::Registered| r.file.file_name().is_some_and(|n| n == "iscsi.pid");
        let kill_all = |sessions: bool| {
            let mut pids = Vec::new();
            for i in 1..=2 {
                for r in cman::registry::registered(&self.0.state(i)) {
                    if is_session(&r) == sessions {
                        let _ = nix::sys::signal::kill(r.pid, nix::sys::signal::Signal::SIGKILL);
                        pids.push(r.pid);
                    }
                }
            }
            let t = Instant::now();
            while pids.iter().any(|p| cman::registry::alive(*p))
                && t.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        kill_all(false);
        std::thread::sleep(Duration::from_millis(300));
        // Then the sessions, and their FUSE connections should anything
        // still wait on them.
        kill_all(true);
        std::thread::sleep(Duration::from_millis(300));
        for c in self.0.sessions.borrow().iter() {
            abort_if_stuck(c);
        }
        if let Some(mut t) = self.0.tgtd.take() {
            tests::reap(&mut t);
        }
    }
}

/// Aborts FUSE connection `minor` (a dead holder's) if requests still
/// wait on it and no mount of it other than ours (its minor reused by
/// another FUSE mount meanwhile) is to be seen.
fn abort_if_stuck(minor: &str) {
    let conn = format!("/sys/fs/fuse/connections/{minor}");
    let waiting = std::fs::read_to_string(format!("{conn}/waiting")).unwrap_or_default();
    if waiting.trim().parse::<u64>().unwrap_or(0) == 0 {
        return;
    }
    let dev = format!(" 0:{minor} ");
    let ours = format!(" iscsi:{IQN} ");
    let foreign = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("mountinfo")).ok())
        .any(|info| info.lines().any(|l| l.contains(&dev) && !l.contains(&ours)));
    if !foreign {
        let _ = std::fs::write(format!("{conn}/abort"), "1");
    }
}

fn required() -> bool {
    tests::require_root("network namespaces")
        && tests::require_dev_fuse()
        && tests::require_all(&["ip", "unshare", "curl", "apache2", "mkfs.ext4", "losetup"])
}

#[test]
fn apache_on_iscsi_moves_restarts_and_fails_over_between_namespaced_nodes() {
    if !required() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new(Fencing::Lab);
    lab.storage();
    let dump = DumpOnPanic(&mut lab);
    let lab = &*dump.0;
    let (mut cmands, mut rgm) = lab.up();

    // The preferred node serves the floating address: Apache, the site
    // from the iSCSI LUN, mounted there only.
    lab.wait_page(1);
    lab.wait_started(1, 1);
    lab.wait_started(2, 1);
    let head = lab.head();
    assert!(head.contains("Server: Apache"), "{head}");
    assert!(lab.mounted_in(&rgm[0]) && !lab.mounted_in(&rgm[1]));
    assert!(lab.httpd(1).is_some() && lab.httpd(2).is_none());

    // Moved by hand.
    let (out, code) = lab.clusvcadm(1, &["-r", "httpd_srv", "-m", &lab.name(2)]);
    assert_eq!(
        out,
        format!(
            "Trying to relocate service:httpd_srv to {0}...Success\nservice:httpd_srv is now running on {0}\n",
            lab.name(2)
        )
    );
    assert_eq!(code, Some(0));
    lab.wait_page(2);
    assert!(lab.mounted_in(&rgm[1]) && !lab.mounted_in(&rgm[0]));
    assert!(lab.httpd(2).is_some() && lab.httpd(1).is_none());

    // The server dies: restarted in place twice (max_restarts="2"), the
    // third time the service relocates.
    for restarts in 1..=3u32 {
        let pid = lab.httpd(2).expect("apache runs on node 2");
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        if restarts <= 2 {
            tests::wait_for("restarted in place", Duration::from_secs(60), || {
                lab.record(1).is_some_and(|(o, s, r)| {
                    s == "started" && o == Some(lab.name(2)) && r == restarts
                }) && lab.httpd(2).is_some_and(|p| p != pid)
            });
            lab.wait_page(2);
            assert!(lab.mounted_in(&rgm[1]) && !lab.mounted_in(&rgm[0]));
        } else {
            lab.wait_started(1, 1);
            lab.wait_page(1);
            assert!(lab.mounted_in(&rgm[0]) && !lab.mounted_in(&rgm[1]));
        }
    }
    assert!(
        lab.rg_log(2)
            .contains("Restart threshold for service:httpd_srv exceeded; attempting to relocate"),
        "{}",
        lab.rg_log(2)
    );
    assert!(lab.httpd(2).is_none(), "node 2's server stopped");

    // Node 1 dies: fenced by fence_lab (its server and its iSCSI session
    // with it), then node 2 serves.
    let (httpd1, holder1) = (lab.httpd(1).unwrap(), lab.holder(1));
    let t = Instant::now();
    {
        let (c, r) = (&mut cmands[0], &mut rgm[0]);
        lab.kill_node(1, c, r);
    }
    lab.wait_page(2);
    let took = t.elapsed();
    assert!(lab.mounted_in(&rgm[1]));
    let fenced = std::fs::read_to_string(lab.state(1).join("fence_lab.log")).unwrap_or_default();
    assert!(!fenced.is_empty(), "fence_lab fenced node 1");
    assert!(
        !cman::registry::alive(httpd1),
        "node 1's server died with it"
    );
    assert!(!cman::registry::alive(holder1), "and its iSCSI session");
    let rg2 = lab.rg_log(2);
    let fence_at = rg2.find("node fenced").expect("rgmanager saw the fence");
    let takeover_at = rg2
        .find("Taking over service service:httpd_srv from down member 1")
        .expect("takeover logged");
    assert!(fence_at < takeover_at, "takeover only after the fence");
    eprintln!("failover: first page from the survivor {took:?} after the kill");

    // Disabled: stopped, unmounted, the address gone.
    lab.wait_started(2, 2);
    let (out, code) = lab.clusvcadm(2, &["-d", "httpd_srv"]);
    assert_eq!(out, "Local machine disabling service:httpd_srv...Success\n");
    assert_eq!(code, Some(0));
    assert!(!lab.mounted_in(&rgm[1]));
    assert!(lab.httpd(2).is_none());
    assert_eq!(lab.net.fetch(&lab.float, "index.html"), None);
    tests::reap(&mut rgm[1]);
    tests::reap(&mut cmands[1]);
}

/// With fence_manual, the dead owner's service stays where it was
/// (recoverable) until an operator resets the node and runs
/// fence_ack_manual; then the survivor mounts the LUN and serves.
#[test]
fn with_fence_manual_nothing_moves_until_fence_ack_manual() {
    if !required() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new(Fencing::Manual);
    lab.storage();
    let dump = DumpOnPanic(&mut lab);
    let lab = &*dump.0;
    let (mut cmands, mut rgm) = lab.up();
    lab.wait_page(1);
    lab.wait_started(2, 1);

    {
        let (c, r) = (&mut cmands[0], &mut rgm[0]);
        lab.kill_node(1, c, r);
    }
    tests::wait_for("node 1 out of the view", Duration::from_secs(30), || {
        Client::connect(&lab.state(2))
            .and_then(|mut c| c.status())
            .is_ok_and(|s| s.members.len() == 1)
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        lab.record(2).map(|(o, s, _)| (o, s)),
        Some((Some(lab.name(1)), "recoverable".to_string()))
    );
    assert!(!lab.mounted_in(&rgm[1]), "nothing mounted before the ack");
    assert!(lab.httpd(2).is_none(), "nothing started before the ack");
    assert_eq!(lab.net.fetch(&lab.float, "whoami.txt"), None);

    // The operator resets node 1 (here: what was left of it, its server
    // and its iSCSI session), then says so.
    let left = cman::registry::still_running(&lab.state(1));
    assert!(!left.is_empty(), "node 1's processes still run");
    for r in &left {
        let _ = nix::sys::signal::kill(r.pid, nix::sys::signal::Signal::SIGKILL);
    }
    let t = Instant::now();
    let ack = Command::new(bin("fence_ack_manual"))
        .arg("--state-dir")
        .arg(lab.state(2))
        .arg(lab.name(1))
        .output()
        .unwrap();
    assert!(ack.status.success(), "{ack:?}");
    lab.wait_page(2);
    eprintln!("after the ack: first page from node 2 {:?}", t.elapsed());
    assert!(lab.mounted_in(&rgm[1]));
    lab.wait_started(2, 2);
    let (out, _) = lab.clusvcadm(2, &["-d", "httpd_srv"]);
    assert_eq!(out, "Local machine disabling service:httpd_srv...Success\n");
    tests::reap(&mut rgm[1]);
    tests::reap(&mut cmands[1]);
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
    if !required() {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let kills: usize = std::env::var("RG_BENCH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut lab = Lab::new(Fencing::Lab);
    lab.storage();
    let dump = DumpOnPanic(&mut lab);
    let lab = &*dump.0;
    let (mut cmands, mut rgm) = lab.up();
    let (mut http, mut detect, mut fence) = (Vec::new(), Vec::new(), Vec::new());
    for k in 0..kills {
        let owner = lab.settled_owner();
        let (o, s) = (owner as usize - 1, 3 - owner);
        let t = Instant::now();
        {
            let (c, r) = (&mut cmands[o], &mut rgm[o]);
            lab.kill_node(owner, c, r);
        }
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
        // The dead node comes back (its session holder and server went
        // with the fence; the floating address goes with the reboot).
        let _ = Command::new("ip")
            .args(["-n", &lab.net.ns(&format!("n{owner}"))])
            .args(["addr", "del", &format!("{}/24", lab.float), "dev", "e0"])
            .stderr(Stdio::null())
            .status();
        lab.net.ip(&format!("n{owner}"), "link set e0 up");
        cmands[o] = lab.cmand(owner);
        lab.wait_quorate(owner, 2);
        rgm[o] = lab.boot(owner);
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
    let owner = lab.settled_owner();
    lab.clusvcadm(owner, &["-d", "httpd_srv"]);
    for mut c in rgm.into_iter().chain(cmands) {
        tests::reap(&mut c);
    }
}
