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

/// A model of the lvm2 commands `lvm.sh` runs (Debian's lvm2 cannot
/// activate here: no device-mapper in this kernel). One VG in `$S`:
/// `vg_attr` (a `c` in sixth place when clustered), its LVs (`lvs`), the
/// VG's and LVs' tags, activation per node (`$RGMANAGER_NODE`), and each
/// node's lvm.conf `activation/volume_list` (`$S/volume_list.NODE`): as
/// in lvm2, `-ay` activates only an LV whose VG or LV carries a tag the
/// list names (`@tag`), or that the list names itself.
const LVM_MODEL: &str = r#"#!/bin/bash
S=@STATE@
N=$RGMANAGER_NODE
echo "lvm $*" >> $S/calls
[[ $1 == lvm ]] && shift
cmd=$1; shift
opt() { local o; for o in "$@"; do :; done; echo "$o"; }   # the last word: VG or VG/LV
target=$(opt "$@")
vg=${target%%/*}; lv=${target#*/}; [[ $lv == "$target" ]] && lv=
[[ $cmd == dumpconfig ]] || [[ $vg == $(cat $S/vg_name) ]] || { echo "  Volume group \"$vg\" not found" >&2; exit 5; }
lvs_of() { if [[ -n $lv ]]; then echo $lv; else cat $S/lvs; fi; }
tagfile() { if [[ -n $1 ]]; then echo $S/tags.lv.$1; else echo $S/tags.vg; fi; }
allowed() {   # may node N activate LV $1 of this VG?
  [[ -f $S/volume_list.$N ]] || return 0
  local e t
  for e in $(tr -d '[],"' < $S/volume_list.$N); do
    [[ $e == "$vg" || $e == "$vg/$1" ]] && return 0
    if [[ $e == @* ]]; then
      for t in $(tr ',' ' ' < $S/tags.vg 2>/dev/null) $(tr ',' ' ' < $S/tags.lv.$1 2>/dev/null); do
        [[ @$t == "$e" ]] && return 0
      done
    fi
  done
  return 1
}
case $cmd in
dumpconfig)
  [[ -f $S/volume_list.$N ]] || { echo "Configuration node activation/volume_list not found" >&2; exit 5; }
  echo "volume_list=$(cat $S/volume_list.$N)" ;;
vgs)
  case "$*" in
    *vg_attr*) echo "  $(cat $S/vg_attr)" ;;
    *vg_tags*) echo "  $(cat $S/tags.vg 2>/dev/null)" ;;
  esac ;;
lvs)
  for l in $(lvs_of); do
    case "$*" in
      *lv_attr*) if [[ -e $S/active.$N.$l ]]; then echo "  -wi-a-----"; else echo "  -wi-------"; fi ;;
      *lv_tags*) echo "  $(cat $S/tags.lv.$l 2>/dev/null)" ;;
      *lv_name*) echo "  $l" ;;
    esac
  done ;;
vgchange|lvchange)
  f=$(tagfile $lv)
  case $1 in
    --addtag) t=$(cat $f 2>/dev/null); echo "${t:+$t,}$2" > $f ;;
    --deltag) t=$(tr ',' '\n' < $f | grep -vx -- "$2" | paste -sd,); echo "$t" > $f ;;
    -ay|-aey) for l in $(lvs_of); do allowed $l && touch $S/active.$N.$l; done ;;
    -an) for l in $(lvs_of); do rm -f $S/active.$N.$l; done ;;
  esac ;;
esac
exit 0
"#;

/// clustat's XML for `-x -m NODE`: a member when `$S/members` lists it.
const CLUSTAT_MODEL: &str = r#"#!/bin/bash
S=@STATE@
while [[ $# -gt 0 ]]; do [[ $1 == -m ]] && n=$2; shift; done
m=0; grep -qx -- "$n" $S/members && m=1
echo "<?xml version=\"1.0\"?>"
echo "<clustat version=\"4.1.1\">"
echo "  <nodes>"
echo "    <node name=\"$n\" state=\"$m\" local=\"0\" estranged=\"0\" rgmanager=\"$m\" rgmanager_master=\"0\" qdisk=\"0\" nodeid=\"0x00000001\"/>"
echo "  </nodes>"
echo "</clustat>"
"#;

/// `lvm.sh` on a VG that is not clustered: HA-LVM by tags. It refuses a
/// node without `@NODE` in volume_list (or with the VG in it), claims a
/// free VG with its tag, refuses one a live member owns, strips a dead
/// owner's tag, deactivates and fails status where it does not own the VG,
/// and drops its tag on stop. A clustered VG is activated `-aey`; with
/// `lv_name`, the tag goes on the LV and a second LV in the VG is refused.
#[test]
fn lvm_agent_tags_and_clustered_modes() {
    let d = tempfile::tempdir().unwrap();
    let s = d.path().join("state");
    let bin = d.path().join("bin");
    std::fs::create_dir_all(&s).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let state = s.display().to_string();
    executable(&bin.join("lvm"), &LVM_MODEL.replace("@STATE@", &state));
    executable(
        &bin.join("clustat"),
        &CLUSTAT_MODEL.replace("@STATE@", &state),
    );
    let w = |f: &str, t: &str| std::fs::write(s.join(f), t).unwrap();
    w("vg_name", "webvg\n");
    w("vg_attr", "wz--n-\n");
    w("lvs", "webvg_lv1\n");
    w("members", "node1\nnode2\n");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let on = |node: &str| {
        let mut a = Agents::new(shipped_agents_dir());
        a.env = vec![
            ("PATH".into(), path.clone()),
            ("RGMANAGER_NODE".into(), node.into()),
            ("CMAN_STATE_DIR".into(), state.clone()),
        ];
        a
    };
    let (n1, n2) = (on("node1"), on("node2"));
    let vg = resource(r#"<lvm name="vg" vg_name="webvg"/>"#);
    let read = |f: &str| {
        std::fs::read_to_string(s.join(f))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let active = |node: &str| s.join(format!("active.{node}.webvg_lv1")).exists();

    // No volume_list, or one without @node1, or one naming the VG: refused.
    assert_eq!(call(&n1, &vg, "start", 0), 1);
    w("volume_list.node1", "[\"@node2\"]\n");
    assert_eq!(call(&n1, &vg, "start", 0), 1);
    w("volume_list.node1", "[\"rootvg\", \"webvg\", \"@node1\"]\n");
    assert_eq!(call(&n1, &vg, "start", 0), 1);
    assert!(!active("node1") && read("tags.vg").is_empty());

    // Set up as HA-LVM wants: node 1 claims the free VG.
    w("volume_list.node1", "[\"rootvg\", \"@node1\"]\n");
    w("volume_list.node2", "[\"rootvg\", \"@node2\"]\n");
    assert_eq!(call(&n1, &vg, "status", 0), 7, "not running yet");
    assert_eq!(call(&n1, &vg, "start", 0), 0);
    assert_eq!(read("tags.vg"), "node1");
    assert!(active("node1"));
    assert_eq!(call(&n1, &vg, "status", 0), 0);
    // Without its tag no node activates it: lvm2's volume_list at work.
    let o = Command::new(bin.join("lvm"))
        .args(["vgchange", "-ay", "webvg"])
        .env("RGMANAGER_NODE", "node2")
        .status()
        .unwrap();
    assert!(o.success());
    assert!(!active("node2"));

    // Node 2 may not take it while node 1 is a member.
    assert_eq!(call(&n2, &vg, "start", 0), 1);
    assert_eq!(read("tags.vg"), "node1");
    assert!(!active("node2"));

    // Node 1 gone (fenced): node 2 strips its tag and takes the VG.
    w("members", "node2\n");
    assert_eq!(call(&n2, &vg, "start", 0), 0);
    assert_eq!(read("tags.vg"), "node2");
    assert!(active("node2"));
    // Node 1, back with the VG still active from before, does not own
    // it: its status deactivates it and fails.
    w("members", "node1\nnode2\n");
    assert_eq!(call(&n1, &vg, "status", 0), 1);
    assert!(!active("node1"));
    // Node 2 stops: deactivated, its tag dropped; node 1 may claim it.
    assert_eq!(call(&n2, &vg, "stop", 0), 0);
    assert!(!active("node2") && read("tags.vg").is_empty());
    assert_eq!(call(&n1, &vg, "start", 0), 0);
    assert_eq!(call(&n1, &vg, "stop", 0), 0);

    // One LV: the tag goes on the LV; a VG with two LVs is refused.
    let lv = resource(r#"<lvm name="lv" vg_name="webvg" lv_name="webvg_lv1"/>"#);
    assert_eq!(call(&n1, &lv, "start", 0), 0);
    assert_eq!(read("tags.lv.webvg_lv1"), "node1");
    assert!(read("tags.vg").is_empty());
    assert_eq!(call(&n1, &lv, "status", 0), 0);
    assert_eq!(call(&n1, &lv, "stop", 0), 0);
    assert!(read("tags.lv.webvg_lv1").is_empty());
    w("lvs", "webvg_lv1\nwebvg_lv2\n");
    assert_eq!(call(&n1, &lv, "start", 0), 1);
    w("lvs", "webvg_lv1\n");

    // A clustered VG: clvmd's exclusive activation, no tags, no
    // volume_list needed.
    w("vg_attr", "wz--nc\n");
    std::fs::remove_file(s.join("volume_list.node1")).unwrap();
    std::fs::write(s.join("calls"), "").unwrap();
    assert_eq!(call(&n1, &vg, "start", 0), 0);
    assert!(
        read("calls").contains("lvm vgchange -aey webvg"),
        "{}",
        read("calls")
    );
    assert!(read("tags.vg").is_empty());
    assert_eq!(call(&n1, &vg, "status", 0), 0);
    assert_eq!(call(&n1, &vg, "stop", 0), 0);
    assert!(read("calls").contains("lvm vgchange -an webvg"));
    let md = n1.metadata("lvm");
    assert_eq!(md.status, vec![(0, 3600)]);
}
