//! Real cmand processes whose cluster.conf names nodes by host name, as
//! the tutorial's does (`RealServer1`), resolved through a hosts file
//! (`CMAN_HOSTS_FILE`, standing for each node's /etc/hosts), and started
//! without a key file (the key derived from the cluster name, with its
//! warning); and `cman_tool keygen`.

use cman::api::Client;
use cman::node::Status;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NAMES: [&str; 2] = ["nodea", "nodeb"];

struct Lab {
    dir: tempfile::TempDir,
    hosts: PathBuf,
    nodes: Vec<Child>,
}

fn conf_text(port: u16, lab_dir: &Path) -> String {
    let mut nodes = String::new();
    for (i, name) in NAMES.iter().enumerate() {
        let id = i + 1;
        nodes.push_str(&format!(
            "    <clusternode name=\"{name}\" nodeid=\"{id}\" votes=\"1\"><fence><method name=\"1\"><device name=\"lab\" port=\"{name}\"/></method></fence></clusternode>\n"
        ));
    }
    format!(
        "<?xml version=\"1.0\"?>\n<cluster name=\"namescl\" config_version=\"1\">\n  <totem token=\"800\"/>\n  <cman port=\"{port}\" two_node=\"1\" expected_votes=\"1\"/>\n  <clusternodes>\n{nodes}  </clusternodes>\n  <fencedevices>\n    <fencedevice name=\"lab\" agent=\"fence_lab\" lab_dir=\"{}\"/>\n  </fencedevices>\n</cluster>\n",
        lab_dir.display()
    )
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let port = tests::free_port_on(&["127.0.1.1", "127.0.1.2"], true);
        let hosts = dir.path().join("hosts");
        // Aliases, comments, an IPv6 line and upper case, as a real
        // /etc/hosts may have them.
        std::fs::write(
            &hosts,
            "# lab hosts\n127.0.0.1 localhost\n::1 localhost nodea\n\
             127.0.1.1 NodeA nodea.lab # first\n127.0.1.2 nodeb.lab nodeb\n",
        )
        .unwrap();
        let text = conf_text(port, dir.path());
        for name in NAMES {
            let state = dir.path().join(name);
            std::fs::create_dir_all(&state).unwrap();
            std::fs::write(state.join("cluster.conf"), &text).unwrap();
        }
        Lab {
            dir,
            hosts,
            nodes: Vec::new(),
        }
    }

    fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// cmand for `name`, with the lab's hosts file and `extra` arguments;
    /// no `--key-file` unless `extra` has one (as `tests::spawn_cmand`, but
    /// with the environment variable and without the key).
    fn cmand(&self, name: &str, extra: &[&str]) -> Command {
        let state = self.state(name);
        let log = std::fs::File::create(state.join("cmand.log")).unwrap();
        let mut cmd = Command::new(tests::bin("cmand"));
        cmd.arg("-f")
            .arg("-c")
            .arg(state.join("cluster.conf"))
            .arg("-n")
            .arg(name)
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .env(cman::hosts::HOSTS_FILE_ENV, &self.hosts)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd
    }

    fn start(&mut self, name: &str) {
        let child = tests::spawn(&mut self.cmand(name, &[])).expect("spawn cmand");
        self.nodes.push(child);
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.state(name).join("cmand.log")).unwrap_or_default()
    }

    fn status(&self, name: &str) -> Option<Status> {
        Client::connect(&self.state(name)).ok()?.status().ok()
    }

    fn wait_for(&self, name: &str, what: &str, f: impl Fn(&Status) -> bool) -> Status {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.status(name) {
                if f(&s) {
                    return s;
                }
            }
            assert!(
                Instant::now() < end,
                "{name}: timed out waiting for {what}; last status {:?}\nlog:\n{}",
                self.status(name),
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.nodes {
            tests::reap(c);
        }
    }
}

/// Runs `cmd` to its end (at most 30 s) and returns its exit code and
/// output.
fn run_to_end(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = tests::spawn(cmd.stdout(Stdio::piped()).stderr(Stdio::piped())).unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            tests::reap(&mut child);
            panic!("{cmd:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn nodes_named_by_host_name_without_a_key_file_become_quorate_members() {
    let mut lab = Lab::new();
    for name in NAMES {
        lab.start(name);
    }
    for (i, name) in NAMES.iter().enumerate() {
        let s = lab.wait_for(name, "both members, quorate", |s| {
            s.members.iter().map(|m| m.id.0).collect::<Vec<_>>() == [1, 2] && s.quorum.quorate
        });
        assert_eq!(s.node_id.0, i as u32 + 1, "{name} knows which node it is");
        let names: Vec<&str> = s.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, NAMES);
    }
    let system_key = Path::new(cman::authkey::DEFAULT_KEY_FILE);
    if system_key.exists() {
        eprintln!(
            "{} exists on this machine: the nodes used it, so the derived-key warning is not checked",
            system_key.display()
        );
        return;
    }
    for name in NAMES {
        let log = lab.log(name);
        assert!(
            log.contains("using a key derived from the cluster name \"namescl\"")
                && log.contains("NOT attackers")
                && log.contains("cman_tool keygen"),
            "{name}: no derived-key warning in its log:\n{log}"
        );
    }
}

#[test]
fn a_missing_explicit_key_file_or_an_unknown_name_is_an_error() {
    let lab = Lab::new();
    let missing = lab.dir.path().join("no-such-key");
    let missing = missing.to_str().unwrap();
    let (code, out) = run_to_end(&mut lab.cmand("nodea", &["--key-file", missing]));
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(missing), "{out}");

    // A clusternode that resolves nowhere: an error naming it.
    let state = lab.state("nodea");
    let text = std::fs::read_to_string(state.join("cluster.conf")).unwrap();
    let bad = text.replace("\"nodeb\"", "\"nodec.invalid\"");
    std::fs::write(state.join("cluster.conf"), bad).unwrap();
    let (code, out) = run_to_end(&mut lab.cmand("nodea", &[]));
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("cannot resolve clusternode nodec.invalid"),
        "{out}"
    );
}

#[test]
fn cman_tool_keygen_writes_a_private_key_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster/authkey");
    let keygen = |force: bool| {
        let mut cmd = Command::new(tests::bin("cman_tool"));
        cmd.arg("keygen")
            .arg("-k")
            .arg(&key)
            .env("RUST_BACKTRACE", "0");
        if force {
            cmd.arg("-f");
        }
        run_to_end(&mut cmd)
    };
    let (code, out) = keygen(false);
    assert_eq!(code, Some(0), "{out}");
    let first = std::fs::read(&key).unwrap();
    assert_eq!(first.len(), cman::authkey::NEW_KEY_BYTES);
    assert!(first.len() >= cman::wire::MIN_KEY_BYTES);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o400, "mode {mode:o}");

    let (code, out) = keygen(false);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("already exists"), "{out}");
    assert_eq!(std::fs::read(&key).unwrap(), first, "key left as it was");

    let (code, out) = keygen(true);
    assert_eq!(code, Some(0), "{out}");
    let second = std::fs::read(&key).unwrap();
    assert_eq!(second.len(), cman::authkey::NEW_KEY_BYTES);
    assert_ne!(second, first);
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o400, "mode {mode:o}");
}
