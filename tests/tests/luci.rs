//! luci in a real browser: Debian's headless Chromium driven through
//! chromedriver (WebDriver) against a live two-node cluster on 127.0.1.1
//! and 127.0.1.2 (cmand + rgmanager each, `fence_lab`), one `script`
//! service in an ordered failover domain preferring node 1.
//!
//! Checked in order: the login page and a login; both nodes online; a
//! relocation from the page shows clusvcadm's text and the owner changes
//! without a reload; the failover-domain form applies version 2 and both
//! nodes' cmand run it; bad XML shows its line and nothing changes; the
//! history shows who changed what, and a rollback applies the old text as
//! version 3; the storage page shows tgtd's target and a dlm user's
//! lockspace; node 2 killed: the page marks it offline within 2 s of
//! node 1's cmand installing the view without it; a read-only user sees no
//! actions and is refused by the server; requests without the CSRF token
//! or from another origin are refused (a plain HTTP client) and change
//! nothing. Screenshots of each page go to the lab's directory and to
//! `target/luci-screenshots/`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tests::fslab::{self, Lab};
use tests::rglab;
use tests::{bin, spawn, wait_for};

#[path = "iscsi_target_util.rs"]
mod tgt;

const N1: &str = "127.0.1.1";
const N2: &str = "127.0.1.2";
const LONG: Duration = Duration::from_secs(60);
const IQN: &str = "iqn.2026-12.lab:luci.lun1";

/// The service's LSB script: `start` runs a `sleep` and writes
/// `running.NODE`; `stop` kills it; `status` fails when it is gone.
const INIT: &str = r#"#!/bin/sh
D=@DIR@
N=$RGMANAGER_NODE
case "$1" in
start)
  setsid sleep 1000 </dev/null >/dev/null 2>&1 &
  echo $! > $D/running.$N ;;
stop)
  [ -e $D/running.$N ] && kill -9 $(cat $D/running.$N) 2>/dev/null
  rm -f $D/running.$N ;;
status)
  [ -e $D/running.$N ] && kill -0 $(cat $D/running.$N) 2>/dev/null || exit 3 ;;
esac
exit 0
"#;

/// The lab's cluster.conf with an `<rm>` section: failover domain `pref`
/// (node 1 first) and service `web`.
fn add_rm(lab: &Lab) -> PathBuf {
    let dir = lab.state(1).parent().unwrap().to_path_buf();
    let init = dir.join("init-web");
    std::fs::write(&init, INIT.replace("@DIR@", &dir.display().to_string())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rm = format!(
        r#"  <rm>
    <failoverdomains>
      <failoverdomain name="pref" ordered="1" restricted="1">
        <failoverdomainnode name="{N1}" priority="1"/>
        <failoverdomainnode name="{N2}" priority="2"/>
      </failoverdomain>
    </failoverdomains>
    <resources>
      <script name="web" file="{}"/>
    </resources>
    <service name="web" domain="pref" recovery="restart">
      <script ref="web"/>
    </service>
  </rm>
</cluster>
"#,
        init.display()
    );
    for i in 1..=2 {
        let p = lab.state(i).join("cluster.conf");
        let text = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, text.replace("</cluster>\n", &rm)).unwrap();
    }
    dir
}

fn rgmanager(lab: &Lab, i: u32) -> Child {
    rglab::rgmanager(&lab.state(i), "1")
}

/// (owner, state) of service:web as node `i`'s rgmanager says.
fn web(lab: &Lab, i: u32) -> Option<(String, String)> {
    rglab::service(&lab.state(i), "service:web")
}

fn version(lab: &Lab, i: u32) -> Option<u64> {
    lab.status(i).map(|s| s.config_version)
}

/// Kills whatever the nodes registered (the service's process included)
/// and prints the daemons' logs if the test failed.
struct Teardown<'a>(&'a Lab, PathBuf);

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            rglab::dump_logs(&[self.0.state(1), self.0.state(2)]);
            for f in ["luci.log", "chromedriver.log"] {
                let t = std::fs::read_to_string(self.1.join(f)).unwrap_or_default();
                eprintln!("==== {f}\n{t}");
            }
        }
        for i in 1..=2 {
            for r in cman::registry::registered(&self.0.state(i)) {
                let _ = nix::sys::signal::kill(r.pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        // Chromium outlives a chromedriver killed with the test: its
        // processes are found by the profile directory this test made.
        let profile = self.1.join("chromium-profile").display().to_string();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(&profile) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

fn wait_port(port: u16, child: &mut Child, what: &str) {
    wait_for(what, LONG, || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what}: exited early: {st}");
        }
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

// ---------------------------------------------------------------- plain HTTP

/// A response: status, headers (lower-case names), body.
struct Http {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Http {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `NAME=VALUE` of a Set-Cookie for `name`.
    fn cookie(&self, name: &str) -> String {
        self.header("set-cookie")
            .into_iter()
            .find_map(|c| c.split(';').next().filter(|kv| kv.starts_with(name)))
            .unwrap_or_else(|| panic!("no {name} cookie"))
            .to_string()
    }
}

/// One HTTP/1.1 request over a new connection (`Connection: close`).
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Http {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(LONG)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if method == "POST"
        && !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
    {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Http {
        status,
        headers,
        body: body.to_string(),
    }
}

/// The value of the hidden `csrf` field (or meta tag) of a page.
fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\"").expect("a csrf field");
    let rest = &html[at..];
    let key = if rest.starts_with("name=\"csrf\" value=\"") {
        "value=\""
    } else {
        "content=\""
    };
    let v = &rest[rest.find(key).unwrap() + key.len()..];
    v[..v.find('"').unwrap()].to_string()
}

/// Logs in with a plain HTTP client; returns the session cookie.
fn http_login(port: u16, user: &str, password: &str) -> String {
    let page = http(port, "GET", "/login", &[], "");
    let pre = page.cookie("luci_login");
    let token = csrf_in(&page.body);
    let origin = format!("http://127.0.0.1:{port}");
    let r = http(
        port,
        "POST",
        "/login",
        &[("Cookie", &pre), ("Origin", &origin)],
        &format!("csrf={token}&user={user}&password={password}"),
    );
    assert_eq!(r.status, 303, "login: {}", r.body);
    r.cookie("luci_session")
}

// ---------------------------------------------------------------- browser

struct Browser {
    c: Client,
    base: String,
    shots: Vec<PathBuf>,
}

impl Browser {
    async fn js(&self, script: &str) -> serde_json::Value {
        self.c.execute(script, vec![]).await.unwrap()
    }

    async fn js_str(&self, script: &str) -> String {
        match self.js(script).await {
            serde_json::Value::String(s) => s,
            serde_json::Value::Null => String::new(),
            v => v.to_string(),
        }
    }

    /// Polls `script` (returning a string) until `ok` holds; panics after
    /// `limit` with the last value.
    async fn wait_js(&self, what: &str, script: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let v = self.js_str(script).await;
            if ok(&v) {
                return v;
            }
            assert!(
                start.elapsed() < LONG,
                "timed out waiting for {what}; last: {v:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn goto(&self, path: &str) {
        self.c.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn shot(&self, name: &str) {
        let png = self.c.screenshot().await.unwrap();
        for d in &self.shots {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join(format!("{name}.png")), &png).unwrap();
        }
    }

    /// Clicks the element `css` selects. The live updates replace the
    /// page's fragment while the view's age changes, so an element found
    /// may be gone by the click: then it is found again.
    async fn click(&self, css: &str) {
        for _ in 0..20 {
            let e = self.c.find(Locator::Css(css)).await.unwrap();
            match e.click().await {
                Ok(()) => return,
                Err(fantoccini::error::CmdError::Standard(w))
                    if w.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
                Err(e) => panic!("click {css}: {e}"),
            }
        }
        panic!("click {css}: the element kept going stale");
    }

    /// Chooses `value` in the menu `css` selects, again if a live update
    /// replaced the menu meanwhile (the page keeps a choice made in the
    /// menu it replaces).
    async fn choose(&self, css: &str, value: &str) {
        let now = format!("var e = document.querySelector('{css}'); return e ? e.value : ''");
        for _ in 0..20 {
            let e = self.c.find(Locator::Css(css)).await.unwrap();
            match e.select_by_value(value).await {
                Ok(()) if self.js_str(&now).await == value => return,
                Ok(()) => {}
                Err(fantoccini::error::CmdError::Standard(w))
                    if w.error == fantoccini::error::ErrorStatus::StaleElementReference => {}
                Err(e) => panic!("choose {value} in {css}: {e}"),
            }
        }
        panic!("choose {value} in {css}: the menu kept going stale");
    }

    /// Fills the login form shown and sends it.
    async fn submit_login(&self, user: &str, password: &str) {
        for (id, text) in [("user", user), ("password", password)] {
            self.c
                .find(Locator::Id(id))
                .await
                .unwrap()
                .send_keys(text)
                .await
                .unwrap();
        }
        self.click("#login-button").await;
    }

    async fn login(&self, user: &str, password: &str) {
        self.goto("/login").await;
        self.submit_login(user, password).await;
        self.wait_js(
            "the cluster page",
            "return document.getElementById('members') ? 'yes' : ''",
            |v| v == "yes",
        )
        .await;
    }

    /// The state cell of a node on the cluster page.
    fn node_state(node: &str) -> String {
        format!(
            "var r = document.getElementById('node-{node}'); return r ? r.querySelector('.state').textContent : ''"
        )
    }
}

/// An lvm configuration (in `dir`/lvm) whose only device is the iSCSI LUN
/// at `url`, with VG `lucivg` and an inactive LV `data` on it, made with
/// our `lvm`; returns the `LVM_SYSTEM_DIR`.
fn lvm_on(dir: &Path, url: &str) -> PathBuf {
    let sys = dir.join("lvm");
    std::fs::create_dir_all(&sys).unwrap();
    std::fs::write(
        sys.join("lvm.conf"),
        format!(
            "devices {{\n\tdir = \"{}\"\n\tscan = []\n\textra = [\"{url}\"]\n}}\n\
             global {{\n\tlocking_type = 1\n\tlocking_dir = \"{}\"\n}}\n",
            dir.join("lvm-dev").display(),
            dir.join("lvm-lock").display()
        ),
    )
    .unwrap();
    for args in [
        &["pvcreate", url][..],
        &["vgcreate", "lucivg", url],
        &["lvcreate", "-an", "-l", "2", "-n", "data", "lucivg"],
    ] {
        let o = Command::new(bin("lvm"))
            .args(args)
            .env("LVM_SYSTEM_DIR", &sys)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "lvm {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    sys
}

/// Two dlm nodes in this process, control sockets in `ctl`, both in
/// lockspace `lucils`.
fn dlm_pair(ctl: &Path) -> (Vec<dlm::Dlm>, Vec<dlm::Lockspace>) {
    let dlms: Vec<dlm::Dlm> = (1..=2)
        .map(|i| {
            let mut cfg = dlm::DlmConfig::new(
                dlm::NodeId(i),
                "127.0.0.1:0".parse().unwrap(),
                std::collections::HashMap::new(),
                dlm::ClusterKey::new(b"luci test dlm key").unwrap(),
            );
            cfg.ctl_dir = Some(ctl.to_path_buf());
            dlm::Dlm::start(cfg).unwrap()
        })
        .collect();
    for a in &dlms {
        for b in &dlms {
            a.add_peer(b.node(), b.local_addr());
        }
    }
    let ids = [dlm::NodeId(1), dlm::NodeId(2)];
    let lss: Vec<dlm::Lockspace> = dlms
        .iter()
        .map(|d| {
            d.join("lucils", dlm::StaticMembership::new(&ids).as_ref())
                .unwrap()
        })
        .collect();
    wait_for("the test's lockspace running", LONG, || {
        lss.iter().all(|l| l.is_running())
    });
    (dlms, lss)
}

/// Traffic for the plots, until stopped: locks on both dlm nodes (node 1
/// takes each resource first, so node 2's requests are remote ones on
/// node 1), a glock handed back and forth between them (a demote each
/// time), and READ(10)s on the tgtd LUN.
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(lss: &[dlm::Lockspace], tgtd_port: u16) -> Traffic {
        use clusterfs::glock::{GlockConfig, GlockName, GlockState, GlockType, HolderFlags};
        use clusterfs::lock_dlm::{DlmGlocks, GlockOps};
        use std::sync::atomic::{AtomicBool, Ordering};
        struct NoCache;
        impl GlockOps for NoCache {
            fn sync(&self, _: GlockName) {}
            fn invalidate(&self, _: GlockName, _: bool) {}
        }
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let going = move |s: &std::sync::Arc<AtomicBool>| !s.load(Ordering::Relaxed);
        let mut threads = Vec::new();
        let (s, l1, l2) = (stop.clone(), lss[0].clone(), lss[1].clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while going(&s) {
                let name = format!("plot-{i}");
                let a = l1.lock(name.as_bytes(), dlm::Mode::Pr, dlm::Flags::empty());
                let b = l2.lock(name.as_bytes(), dlm::Mode::Pr, dlm::Flags::empty());
                for (l, id) in [(&l1, a), (&l2, b)] {
                    l.unlock(id.unwrap(), dlm::Flags::empty(), None).unwrap();
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
        let s = stop.clone();
        let glocks: Vec<DlmGlocks> = lss
            .iter()
            .map(|l| {
                DlmGlocks::new(
                    l.clone(),
                    std::sync::Arc::new(NoCache),
                    GlockConfig {
                        min_hold_ms: 0,
                        ..GlockConfig::default()
                    },
                )
            })
            .collect();
        threads.push(std::thread::spawn(move || {
            let inode = GlockName {
                kind: GlockType::Inode,
                number: 7,
            };
            while going(&s) {
                for g in &glocks {
                    drop(
                        g.acquire(inode, GlockState::Ex, HolderFlags::default())
                            .unwrap(),
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
        let s = stop.clone();
        threads.push(std::thread::spawn(move || {
            let mut raw = tgt::Raw::connect(tgtd_port);
            raw.login_normal("iqn.2026-12.lab:luci-test", IQN, &[]);
            raw.clear_unit_attention(1);
            while going(&s) {
                let (data, status) = raw.read10(1, 0, 64);
                assert_eq!((data.len(), status), (64 * 512, 0));
                std::thread::sleep(Duration::from_millis(5));
            }
        }));
        Traffic { stop, threads }
    }

    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
    }
}

fn state_js(sel: &str) -> String {
    format!("var e = document.querySelector('{sel}'); return e ? e.textContent : ''")
}

#[test]
fn luci_in_a_browser_against_a_two_node_cluster() {
    if !tests::require_root("cluster nodes on 127.0.1.N addresses")
        || !tests::require_all(&["chromium", "chromedriver"])
    {
        return;
    }
    let lab = Lab::with_nodes(2);
    let dir = add_rm(&lab);
    let _teardown = Teardown(&lab, dir.clone());
    let mut cmands: Vec<Child> = (1..=2).map(|i| fslab::cmand(&lab, i)).collect();
    for i in 1..=2 {
        lab.wait_status(i, "both nodes members and quorate", |s| {
            s.members.len() == 2 && s.quorum.quorate
        });
    }
    let mut rgm: Vec<Child> = (1..=2).map(|i| rgmanager(&lab, i)).collect();
    wait_for("service:web started on node 1", LONG, || {
        web(&lab, 2) == Some((N1.into(), "started".into()))
    });

    // luci for the cluster (both nodes' state directories on this machine),
    // with an admin and a read-only user.
    let data = dir.join("luci");
    let users = data.join("users");
    for (name, role, pw) in [
        ("admin", "admin", "adminpw"),
        ("viewer", "readonly", "viewerpw"),
    ] {
        let mut c = Command::new(bin("luci"))
            .args(["--add-user", name, "--role", role, "--users"])
            .arg(&users)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("{pw}\n").as_bytes())
            .unwrap();
        assert!(c.wait().unwrap().success(), "luci --add-user {name}");
    }
    // Our tgtd with one target, and two dlm nodes (in this process) with
    // one lockspace, for the storage page and the plots' traffic.
    let tgtd = tgt::Tgtd::start();
    let lun = tgtd.tutorial_target(1, IQN);
    let lvm_dir = lvm_on(&dir, &tgtd.url(IQN, 1));
    let ctl = dir.join("dlm-ctl");
    let (_dlms, lss) = dlm_pair(&ctl);
    let port = tests::free_port();
    let log = std::fs::File::create(dir.join("luci.log")).unwrap();
    let mut luci = spawn(
        Command::new(bin("luci"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--state-dir")
            .arg(lab.state(1))
            .arg("--state-dir")
            .arg(lab.state(2))
            .arg("--data-dir")
            .arg(&data)
            .arg("--users")
            .arg(&users)
            .arg("--tgtd-control-dir")
            .arg(tgtd.dir.path())
            .arg("--dlm-ctl-dir")
            .arg(&ctl)
            .env("LVM_SYSTEM_DIR", &lvm_dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    )
    .unwrap();
    wait_port(port, &mut luci, "luci listening");
    let wd_port = tests::free_port();
    let wd_log = std::fs::File::create(dir.join("chromedriver.log")).unwrap();
    let mut driver = spawn(
        Command::new("chromedriver")
            .arg(format!("--port={wd_port}"))
            .stdin(Stdio::null())
            .stdout(wd_log.try_clone().unwrap())
            .stderr(wd_log),
    )
    .unwrap();
    wait_port(wd_port, &mut driver, "chromedriver listening");

    let shots = vec![
        dir.join("screenshots"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/luci-screenshots"),
    ];
    // The test's own thread runs the browser session (the daemons were
    // spawned from it, so they die with it).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        let profile = dir.join("chromium-profile");
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,2100",
                         format!("--user-data-dir={}", profile.display())],
            }),
        );
        let c = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{wd_port}"))
            .await
            .expect("a chromium session through chromedriver");
        let b = Browser {
            c,
            base: format!("http://127.0.0.1:{port}"),
            shots,
        };
        let traffic = || Traffic::start(&lss, tgtd.port);
        browse(&b, &lab, &mut cmands, &mut rgm, port, &lun, traffic).await;
        b.c.close().await.unwrap();
    });
    tests::reap(&mut driver);
    tests::reap(&mut luci);
    for c in rgm.iter_mut().chain(cmands.iter_mut()) {
        tests::reap(c);
    }
}

async fn browse(
    b: &Browser,
    lab: &Lab,
    cmands: &mut [Child],
    rgm: &mut [Child],
    port: u16,
    lun: &Path,
    traffic: impl FnOnce() -> Traffic,
) {
    // Log in; a wrong password first.
    b.goto("/login").await;
    b.shot("login").await;
    b.submit_login("admin", "nope").await;
    let err = b
        .wait_js("the login error", &state_js("#login-error"), |v| {
            !v.is_empty()
        })
        .await;
    assert_eq!(err, "Wrong user or password.");
    b.login("admin", "adminpw").await;

    // Both nodes online, the service on node 1, the data's time shown.
    for n in [N1, N2] {
        b.wait_js(&format!("{n} online"), &Browser::node_state(n), |v| {
            v == "Online"
        })
        .await;
    }
    b.wait_js("web on node 1", &state_js("#svc-web .owner"), |v| v == N1)
        .await;
    let asof = b.js_str(&state_js("#asof")).await;
    assert!(asof.contains("UTC"), "{asof}");
    let later = b
        .wait_js("the data's time to move", &state_js("#asof"), |v| v != asof)
        .await;
    assert!(later.contains("UTC"));

    // The plots: lock requests (local and remote), glock demotes and
    // iSCSI IOPS and MB/s rise from zero once this test makes traffic.
    for id in ["members", "locks", "demotes", "iscsi", "iscsi-mbps"] {
        let n = b
            .js_str(&format!(
                "return document.querySelectorAll('#plot-{id}').length"
            ))
            .await;
        assert_eq!(n, "1", "plot {id}");
    }
    let traffic = traffic();
    for id in ["lock-local", "lock-remote", "demotes", "iops", "mbps"] {
        b.wait_js(
            &format!("{id} above zero"),
            &state_js(&format!("#now-{id}")),
            |v| v.parse::<f64>().is_ok_and(|x| x > 0.0),
        )
        .await;
    }
    // A few seconds of traffic on the plots for the screenshot.
    tokio::time::sleep(Duration::from_secs(5)).await;
    b.shot("cluster").await;
    traffic.stop();

    // Relocate from the page: clusvcadm's text, and the owner changes
    // without a reload (the marker set on this document survives).
    b.js("window.lucimark = 'same page'; return null").await;
    b.choose("#svc-web select.relocate-to", N2).await;
    b.click("#svc-web button.act-relocate").await;
    let msg = b
        .wait_js("the relocation's result", &state_js("#msg"), |v| {
            !v.is_empty() && !v.starts_with("Working")
        })
        .await;
    assert_eq!(
        msg,
        format!(
            "Trying to relocate service:web to {N2}...Success\nservice:web is now running on {N2}"
        )
    );
    b.wait_js(
        "the owner cell to show node 2",
        &state_js("#svc-web .owner"),
        |v| v == N2,
    )
    .await;
    assert_eq!(b.js_str("return window.lucimark || ''").await, "same page");
    assert_eq!(web(lab, 1), Some((N2.into(), "started".into())));
    b.shot("cluster-relocated").await;

    // The failover-domain form: node 2 first. Version 2 on both nodes.
    assert_eq!((version(lab, 1), version(lab, 2)), (Some(1), Some(1)));
    b.goto("/config").await;
    b.shot("config").await;
    for (n, p) in [(N1, "2"), (N2, "1")] {
        let e =
            b.c.find(Locator::Css(&format!(
                "#domain-pref input[data-node='{n}']"
            )))
            .await
            .unwrap();
        e.clear().await.unwrap();
        e.send_keys(p).await.unwrap();
    }
    b.click("#domain-pref button.dsave").await;
    let m = b
        .wait_js("the domain applied", &state_js("#conf-message"), |v| {
            !v.is_empty()
        })
        .await;
    assert!(m.starts_with("Applied version 2;"), "{m}");
    wait_for("version 2 on both nodes", LONG, || {
        version(lab, 1) == Some(2) && version(lab, 2) == Some(2)
    });
    let on2 = std::fs::read_to_string(lab.state(2).join("cluster.conf")).unwrap();
    assert!(
        on2.contains(&format!("name=\"{N2}\" priority=\"1\"")),
        "{on2}"
    );
    b.goto("/").await;
    for row in ["#nodever-0 .ver", "#nodever-1 .ver"] {
        b.wait_js(&format!("{row} at 2"), &state_js(row), |v| v == "2")
            .await;
    }
    b.shot("cluster-version-2").await;

    // Bad XML: its line is shown, nothing changes.
    b.goto("/config").await;
    let text = b
        .js_str("return document.getElementById('conf-text').value")
        .await;
    let line = text
        .lines()
        .position(|l| l.contains("nodeid=\"2\""))
        .expect("node 2's line")
        + 1;
    let bad = text.replace("nodeid=\"2\"", "nodeid=\"two\"");
    b.c.execute(
        "document.getElementById('conf-text').value = arguments[0]; return null",
        vec![json!(bad)],
    )
    .await
    .unwrap();
    b.c.find(Locator::Id("conf-apply"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let e = b
        .wait_js("the error", &state_js("#conf-error"), |v| !v.is_empty())
        .await;
    assert!(e.starts_with(&format!("Not applied: line {line}:")), "{e}");
    let marked = b.js_str(&state_js("#bad-line")).await;
    assert!(marked.contains("nodeid=\"two\""), "{marked}");
    b.shot("config-bad-xml").await;
    // Not well-formed either: the parser's line.
    let broken = text.replacen("</clusternodes>", "</clusternode>", 1);
    let bline = text
        .lines()
        .position(|l| l.contains("</clusternodes>"))
        .unwrap()
        + 1;
    b.c.execute(
        "document.getElementById('conf-text').value = arguments[0]; return null",
        vec![json!(broken)],
    )
    .await
    .unwrap();
    b.c.find(Locator::Id("conf-apply"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let e = b
        .wait_js("the parse error", &state_js("#conf-error"), |v| {
            v.contains("expected 'clusternodes'")
        })
        .await;
    assert!(e.starts_with(&format!("Not applied: line {bline}:")), "{e}");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!((version(lab, 1), version(lab, 2)), (Some(2), Some(2)));

    // History: who changed what; a rollback to version 1 becomes version 3.
    b.goto("/config/history").await;
    let by = b.js_str(&state_js("#hist-2 .by")).await;
    assert_eq!(by, "admin");
    b.goto("/config/history?show=1").await;
    let d = b.js_str(&state_js("#diff")).await;
    assert!(d.contains(&format!("name=\"{N2}\" priority=\"1\"")), "{d}");
    b.shot("history").await;
    b.click("#hist-1 form button").await;
    let m = b
        .wait_js("the rollback", &state_js("#conf-message"), |v| {
            !v.is_empty()
        })
        .await;
    assert!(m.starts_with("Applied version 3;"), "{m}");
    wait_for("version 3 on both nodes", LONG, || {
        version(lab, 1) == Some(3) && version(lab, 2) == Some(3)
    });
    let on2 = std::fs::read_to_string(lab.state(2).join("cluster.conf")).unwrap();
    assert!(
        on2.contains(&format!("name=\"{N1}\" priority=\"1\"")),
        "{on2}"
    );

    b.goto("/storage").await;
    let t = b.js_str(&state_js("#tgtd")).await;
    assert!(t.contains(&format!("Target 1: {IQN}")), "{t}");
    assert!(
        t.contains(&format!("Backing store path: {}", lun.display())),
        "{t}"
    );
    let d = b.js_str(&state_js("#dlm")).await;
    assert!(d.contains("name          lucils"), "{d}");
    assert!(d.contains("slot          "), "{d}");
    let vgs = b.js_str(&state_js("#vgs")).await;
    assert!(vgs.contains("lucivg"), "{vgs}");
    let lvs = b.js_str(&state_js("#lvs")).await;
    assert!(
        lvs.lines()
            .any(|l| l.contains("data") && l.contains("lucivg")),
        "{lvs}"
    );
    b.shot("storage").await;
    b.goto("/service/web").await;
    let svc = b.js_str(&state_js("table.kv")).await;
    assert!(svc.contains("Statestarted"), "{svc}");
    b.shot("service").await;
    b.goto(&format!("/node/{N2}")).await;
    let node = b.js_str(&state_js("table.kv")).await;
    assert!(node.contains("StateOnline"), "{node}");
    b.shot("node").await;
    b.goto("/audit").await;
    let audit = b.js_str(&state_js("#audit")).await;
    assert!(
        audit.contains(&format!("relocate service:web on {N2}")),
        "{audit}"
    );
    assert!(audit.contains("roll back to version 1"), "{audit}");
    b.shot("audit").await;

    // Node 2 killed (its cmand and rgmanager): offline on the page within
    // 2 s of node 1's cmand installing the view without it.
    b.goto("/").await;
    b.wait_js("node 2 online", &Browser::node_state(N2), |v| v == "Online")
        .await;
    tests::reap(&mut rgm[1]);
    tests::reap(&mut cmands[1]);
    let start = Instant::now();
    let (mut view_at, mut page_at) = (None, None);
    while view_at.is_none() || page_at.is_none() {
        assert!(
            start.elapsed() < LONG,
            "node 2 never left: view {view_at:?} page {page_at:?}"
        );
        if view_at.is_none() && lab.status(1).is_some_and(|s| s.members.len() == 1) {
            view_at = Some(Instant::now());
        }
        if page_at.is_none()
            && b.js_str(&Browser::node_state(N2))
                .await
                .starts_with("Offline")
        {
            page_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (v, p) = (view_at.unwrap(), page_at.unwrap());
    let lag = p.saturating_duration_since(v);
    eprintln!("luci: node 2 offline on the page {lag:?} after cmand's view change");
    assert!(
        lag <= Duration::from_secs(2),
        "the page lagged cmand's view by {lag:?}"
    );
    b.wait_js("the loss in the events", &state_js("#events"), |v| {
        v.contains(&format!("{N2} left the view"))
    })
    .await;
    b.wait_js("web back on node 1", &state_js("#svc-web .owner"), |v| {
        v == N1
    })
    .await;
    b.shot("cluster-node-lost").await;

    // Node 2 back once fenced (a restart while fence_lab still runs could
    // be powered off by it): a loss, a fence and a join on the time line.
    b.wait_js("the fence in the events", &state_js("#events"), |v| {
        v.contains("fenced by")
    })
    .await;
    // cmand's own counters, as luci samples them: the loss and the fence.
    let counted = |v: &str, what: &str| {
        let words: Vec<&str> = v.split([' ', ',', ';']).collect();
        words
            .windows(2)
            .find(|w| w[1].trim_end_matches('.') == what)
            .and_then(|w| w[0].parse::<u64>().ok())
            .unwrap_or(0)
    };
    let c = b
        .wait_js("cmand's counters", &state_js("#cman-counts"), |v| {
            counted(v, "losses") >= 1 && counted(v, "fencings") >= 1
        })
        .await;
    assert!(counted(&c, "messages") > 0, "{c}");
    cmands[1] = fslab::cmand(lab, 2);
    b.wait_js("node 2 back", &Browser::node_state(N2), |v| v == "Online")
        .await;
    rgm[1] = rgmanager(lab, 2);
    std::thread::sleep(Duration::from_secs(2));
    b.shot("cluster-rejoined").await;

    // The read-only user: no actions shown, and the server refuses one
    // sent anyway with a valid session and token.
    b.click("nav form button").await;
    b.wait_js(
        "the login page",
        "return document.getElementById('login') ? 'yes' : ''",
        |v| v == "yes",
    )
    .await;
    b.login("viewer", "viewerpw").await;
    b.wait_js("the services table", &state_js("#svc-web .owner"), |v| {
        v == N1
    })
    .await;
    assert_eq!(
        b.js_str("return '' + document.querySelectorAll('form.act').length")
            .await,
        "0"
    );
    let r =
        b.c.execute_async(
            "const done = arguments[arguments.length - 1];
             const body = new URLSearchParams({
               csrf: document.querySelector('meta[name=csrf]').content,
               service: 'service:web', action: 'disable' });
             fetch('/service/action', { method: 'POST', body, headers: { 'X-Luci-Fetch': '1' } })
               .then(async r => done(r.status + ' ' + await r.text()));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        r.as_str(),
        Some("403 Read-only users cannot change the cluster.")
    );
    b.goto("/config").await;
    assert_eq!(
        b.js_str("return '' + document.getElementById('conf-apply').disabled")
            .await,
        "true"
    );
    b.goto("/").await;
    b.wait_js("the services table", &state_js("#svc-web .owner"), |v| {
        v == N1
    })
    .await;
    b.shot("cluster-readonly").await;
    assert_eq!(web(lab, 1), Some((N1.into(), "started".into())));

    // A plain HTTP client with an admin session: no CSRF token, or another
    // origin, is refused and changes nothing.
    let cookie = http_login(port, "admin", "adminpw");
    let page = http(port, "GET", "/", &[("Cookie", &cookie)], "");
    assert_eq!(page.status, 200);
    let token = csrf_in(&page.body);
    let origin = format!("http://127.0.0.1:{port}");
    let no_token = http(
        port,
        "POST",
        "/service/action",
        &[("Cookie", &cookie), ("Origin", &origin)],
        "service=service%3Aweb&action=disable",
    );
    assert_eq!(no_token.status, 403, "{}", no_token.body);
    assert!(
        no_token.body.contains("no valid CSRF token"),
        "{}",
        no_token.body
    );
    let wrong_token = http(
        port,
        "POST",
        "/service/action",
        &[("Cookie", &cookie), ("Origin", &origin)],
        "csrf=0123&service=service%3Aweb&action=disable",
    );
    assert_eq!(wrong_token.status, 403);
    let other_site = http(
        port,
        "POST",
        "/service/action",
        &[("Cookie", &cookie), ("Origin", "http://evil.example")],
        &format!("csrf={token}&service=service%3Aweb&action=disable"),
    );
    assert_eq!(other_site.status, 403);
    assert!(
        other_site.body.contains("Origin/Referer"),
        "{}",
        other_site.body
    );
    let conf = http(
        port,
        "POST",
        "/config/apply",
        &[("Cookie", &cookie), ("Origin", &origin)],
        "op=apply&text=%3Ccluster%2F%3E",
    );
    assert_eq!(conf.status, 403);
    let no_session = http(
        port,
        "POST",
        "/service/action",
        &[("Origin", &origin)],
        &format!("csrf={token}&service=service%3Aweb&action=disable"),
    );
    assert_eq!(no_session.status, 401);
    // A body that is not a form: luci's error page, not a bare status.
    let not_form = http(
        port,
        "POST",
        "/service/action",
        &[
            ("Cookie", &cookie),
            ("Origin", &origin),
            ("Content-Type", "text/plain"),
        ],
        "disable web",
    );
    assert_eq!(not_form.status, 415);
    assert!(
        not_form.body.contains("not a form luci understands"),
        "{}",
        not_form.body
    );
    assert!(
        not_form.body.contains("Nothing was changed."),
        "{}",
        not_form.body
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(web(lab, 1), Some((N1.into(), "started".into())));
    assert_eq!(version(lab, 1), Some(3));

    // The element form (here sent by the plain client with the admin
    // session): service web gets max_restarts="5" as version 4 on both
    // nodes; the same form made from an older version is refused.
    let page = http(port, "GET", "/config", &[("Cookie", &cookie)], "");
    let at = page
        .body
        .find("id=\"el-service-")
        .expect("the service's form")
        + 15;
    let index: String = page.body[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let element = |version: u64| {
        http(
            port,
            "POST",
            "/config/element",
            &[("Cookie", &cookie), ("Origin", &origin)],
            &format!(
                "csrf={token}&section=service&index={index}&tag=service&version={version}\
                 &a%3Aname=web&a%3Adomain=pref&a%3Arecovery=restart&newkey=max_restarts&newvalue=5"
            ),
        )
    };
    let stale = element(2);
    assert_eq!(stale.status, 409, "{}", stale.body);
    let ok = element(3);
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.body.contains("Applied version 4;"), "{}", ok.body);
    wait_for("version 4 on both nodes", LONG, || {
        version(lab, 1) == Some(4) && version(lab, 2) == Some(4)
    });
    let on2 = std::fs::read_to_string(lab.state(2).join("cluster.conf")).unwrap();
    assert!(on2.contains("max_restarts=\"5\""), "{on2}");
    let log =
        std::fs::read_to_string(lab.state(1).parent().unwrap().join("luci/audit.log")).unwrap();
    assert!(
        log.contains("user=(no session) disable service:web => refused: Not logged in"),
        "{log}"
    );
    assert!(
        log.contains("user=viewer disable service:web => refused: Read-only"),
        "{log}"
    );
    assert!(
        log.contains(
            "user=admin disable service:web => refused: The request carries no valid CSRF token"
        ),
        "{log}"
    );
}
