#!/usr/bin/env bash
# The tutorial (../shared/seed/README.md) end to end on one machine, with
# our programs: a storage node, RealServer1 and RealServer2, and a client,
# each in its own network namespace, joined by a bridge in a namespace of
# its own (no link and no route to the host: the tutorial's 192.168.10.0/24
# exists only in there). Each node also has its own mount and UTS
# namespaces, so the tutorial's paths are real per node: its /etc is the
# host's with an overlay of its own (/etc/hosts, /etc/cluster/cluster.conf,
# /etc/lvm/lvm.conf, /etc/init.d/httpd), its /dev an overlay too
# (/dev/disk/by-path, /dev/webvg/webvg_lv1), /run a tmpfs (/var/run/cluster).
#
#   scripts/tutorial.sh [--keep] [--fence manual|scsi] [--bench N] [--bins DIR]
#
#   --keep        leave the lab running, print how to enter each node
#   --fence scsi  fence with fence_scsi on the shared LUN instead of the
#                 tutorial's fence_manual (the cluster.conf is then not
#                 verbatim): devices= names the LUN's by-path file, whose
#                 session holder runs the reservation commands on the
#                 node's own session, as sg_persist does on /dev/sdX
#   --bench N     after the tutorial, kill the owner N times, one line of
#                 times each, then min/median/max
#   --bins DIR    take the programs from DIR (cargo's target/debug, say)
#                 instead of building and installing the release ones
#
# Needs root, /dev/fuse, ip netns, unshare/nsenter, apache2, curl,
# fsck.gfs2. LAB_DIR (default /tmp/rhcs-tutorial) holds the lab's files and
# logs; NS_PREFIX (default empty) prefixes the namespaces' names.

# The whole script is one compound command: bash reads it all before it
# runs, so the file may change (a git pull, an edit) under a running lab.
{
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

LAB_DIR=${LAB_DIR:-/tmp/rhcs-tutorial}
NS_PREFIX=${NS_PREFIX:-}
keep= fence=manual bench=0 bins=
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=1 ;;
    --fence) fence=${2:?--fence manual|scsi}; shift ;;
    --bench) bench=${2:?--bench N}; shift ;;
    --bins) bins=$(realpath "${2:?--bins DIR}"); shift ;;
    -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "tutorial.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case $fence in manual|scsi) ;; *) echo "tutorial.sh: --fence manual or scsi" >&2; exit 2 ;; esac

# The tutorial's names and addresses.
STORAGE_IP=192.168.10.130
VIP=192.168.10.254
CLIENT_IP=192.168.10.10
# (The tutorial's "iqp.2014-08-25..." is a typo that RFC 3720 names, and
# our tgtadm, refuse: iqn.)
IQN=iqn.2014-08-25.edu.nuist.com:storage.disk
LUN=/dev/disk/by-path/ip-$STORAGE_IP:3260-iscsi-$IQN-lun-1
declare -A IP=([storage]=$STORAGE_IP [node1]=192.168.10.121 [node2]=192.168.10.122 [client]=$CLIENT_IP)
declare -A HOST=([storage]=Node1 [node1]=RealServer1 [node2]=RealServer2 [client]=client)
ns() { echo "$NS_PREFIX$1"; }
PREFIX=$LAB_DIR/usr
# The tutorial's cluster.conf, verbatim.
seed_conf=$repo/cman/testdata/seed-cluster.conf

# ---------------------------------------------------------------- checks
need() { echo "tutorial.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || need "run me as root (network namespaces, mounts, FUSE): sudo $0 $*"
[ -c /dev/fuse ] && (exec 3<>/dev/fuse) 2>/dev/null \
  || need "/dev/fuse is missing or unusable: modprobe fuse (in a container: --device /dev/fuse)"
ip netns list >/dev/null 2>&1 || need "'ip netns' does not work: apt-get install iproute2 (and a kernel with network namespaces)"
grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null || need "overlayfs is missing (each node's /etc and /dev are overlays): modprobe overlay"
missing=()
for tool in unshare:util-linux nsenter:util-linux curl:curl apache2:apache2 fsck.gfs2:gfs2-utils \
    fusermount3:fuse3; do
  command -v "${tool%%:*}" >/dev/null || [ -x "/usr/sbin/${tool%%:*}" ] || missing+=("${tool#*:}")
done
[ ${#missing[@]} = 0 ] || need "missing programs; apt-get install ${missing[*]} (.ci/run installs them)"
apache_modules=/usr/lib/apache2/modules
[ -f $apache_modules/mod_mpm_event.so ] || need "apache2's modules are not in $apache_modules: apt-get install apache2"
if [ -z "$bins" ] && ! command -v cargo >/dev/null; then
  need "cargo is missing (https://rustup.rs), or give --bins DIR with built programs"
fi

# ---------------------------------------------------------------- output
bold=; dim=; off=
if [ -t 1 ]; then bold=$'\e[1m'; dim=$'\e[2m'; off=$'\e[0m'; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
# Comments between the commands start with "# ".
note() { printf '%s# %s%s\n' "$dim" "$*" "$off"; }
# (quiet=1: the benchmark's reboots, printed to $quiet_log only.)
quiet= quiet_log=/dev/null
prompt() {
  if [ -n "$quiet" ]; then printf '[root@%s ~]# %s\n' "${HOST[$1]}" "$2" >>"$quiet_log"; return; fi
  printf '%s[root@%s ~]# %s%s\n' "$bold" "${HOST[$1]}" "$2" "$off"
}
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- teardown
# Everything the lab started runs in its network namespaces: killing the
# processes of those namespaces (by pid) takes down daemons, FUSE servers
# and the nodes' mount namespaces with them.
kill_ns() {
  local n=$1 pids
  ip netns list 2>/dev/null | grep -qx "$(ns "$n")\( .*\)\?" || return 0
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    pids=$(ip netns pids "$(ns "$n")" 2>/dev/null || true)
    [ -z "$pids" ] && return 0
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
    sleep 0.2
  done
}
teardown() {
  local -
  set +e
  local n
  for n in node1 node2 storage client; do kill_ns "$n"; done
  for n in node1 node2 storage client switch; do
    ip netns del "$(ns "$n")" 2>/dev/null
  done
  rm -rf "$LAB_DIR/nodes"
}
on_exit() {
  local rc=$?
  if [ -n "$keep" ] && [ "$rc" = 0 ]; then return; fi
  if [ "$rc" != 0 ]; then
    note "failed (exit $rc); logs in $LAB_DIR/nodes/*/log until the teardown: kept in $LAB_DIR/last-logs"
    rm -rf "$LAB_DIR/last-logs"; mkdir -p "$LAB_DIR/last-logs"
    for n in node1 node2 storage; do
      [ -d "$LAB_DIR/nodes/$n/log" ] && cp -r "$LAB_DIR/nodes/$n/log" "$LAB_DIR/last-logs/$n"
    done
  fi
  step "teardown"
  trap - EXIT INT TERM
  teardown
  note "namespaces, mounts and processes of the lab are gone"
}

# A previous lab (kept, or interrupted) goes first.
for n in node1 node2 storage client switch; do
  if ip netns list | grep -qx "$(ns "$n")\( .*\)\?" && ! [ -e "$LAB_DIR/nodes" ]; then
    need "a network namespace named $(ns "$n") exists and is not this lab's: set NS_PREFIX"
  fi
done
teardown
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$LAB_DIR/nodes"

# ---------------------------------------------------------------- programs
step "our programs, under their usual names, in $PREFIX"
if [ -n "$bins" ]; then
  mkdir -p "$PREFIX/sbin" "$PREFIX/share/cluster"
  for bin in "$bins"/*; do
    [ -f "$bin" ] && [ -x "$bin" ] || continue
    name=$(basename "$bin")
    case $name in
      mkfs_clusterfs|mount_clusterfs|fsck_clusterfs) name=${name/_/.} ;;
    esac
    ln -sf "$bin" "$PREFIX/sbin/$name"
  done
  for cmd in pvcreate pvremove pvs pvdisplay pvscan vgcreate vgchange vgs vgdisplay vgscan \
      lvcreate lvextend lvremove lvchange lvs lvdisplay lvscan lvmconf; do
    ln -sf lvm "$PREFIX/sbin/$cmd"
  done
  cp "$repo"/rgmanager/agents/*.sh "$PREFIX/share/cluster/"
  note "linked from $bins"
else
  PREFIX=$PREFIX scripts/install.sh
fi
for p in cmand rgmanager clvmd lvm tgtd tgtadm iscsiadm mkfs.clusterfs mount.clusterfs clustat clusvcadm \
    fence_ack_manual $([ "$fence" = scsi ] && echo fence_scsi fence_node); do
  [ -x "$PREFIX/sbin/$p" ] || need "$p was not built (in $PREFIX/sbin)"
done

# ---------------------------------------------------------------- network
step "network: namespaces $(ns storage), $(ns node1), $(ns node2), $(ns client) on a bridge in $(ns switch)"
ip netns add "$(ns switch)"
ip -n "$(ns switch)" link add br0 type bridge
ip -n "$(ns switch)" link set br0 up
for n in storage node1 node2 client; do
  ip netns add "$(ns "$n")"
  ip -n "$(ns "$n")" link set lo up
  ip -n "$(ns switch)" link add "v$n" type veth peer name eth0 netns "$(ns "$n")"
  ip -n "$(ns switch)" link set "v$n" master br0 up
  ip -n "$(ns "$n")" addr add "${IP[$n]}/24" dev eth0
  ip -n "$(ns "$n")" link set eth0 up
  note "$(ns "$n"): ${HOST[$n]} ${IP[$n]}/24"
done
# The client forgets a moved address's old owner quickly, should the
# gratuitous ARP be missed.
ip netns exec "$(ns client)" sysctl -q -w net.ipv4.neigh.eth0.base_reachable_time_ms=500 \
  net.ipv4.neigh.eth0.delay_first_probe_time=1

# ---------------------------------------------------------------- nodes
# A node is a process holding its mount and UTS namespaces (inside its
# network namespace); every command of the node enters all three.
declare -A HOLDER
boot_namespaces() {
  local n=$1 d=$LAB_DIR/nodes/$1
  rm -rf "$d"/{etc.upper,etc.work,dev.upper,dev.work,ready}
  mkdir -p "$d"/{etc.upper,etc.work,dev.upper,dev.work,log}
  chmod 755 "$d"
  cat > "$d/setup.sh" <<EOF
set -e
mount -t overlay overlay -o lowerdir=/etc,upperdir=$d/etc.upper,workdir=$d/etc.work /etc
mount -t overlay overlay -o lowerdir=/dev,upperdir=$d/dev.upper,workdir=$d/dev.work /dev
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/cluster /run/lvm /run/lock/lvm /run/httpd /run/tgtd /dev/disk/by-path
hostname ${HOST[$n]}
echo ${HOST[$n]} > /etc/hostname
printf '127.0.0.1\tlocalhost\n%s\tRealServer1\n%s\tRealServer2\n%s\tNode1 storage\n' \
  ${IP[node1]} ${IP[node2]} ${IP[storage]} > /etc/hosts
touch $d/ready
exec sleep infinity
EOF
  ip netns exec "$(ns "$n")" unshare -m -u --propagation private bash "$d/setup.sh" \
    >"$d/log/setup.log" 2>&1 </dev/null &
  HOLDER[$n]=$!
  disown
  for _ in $(seq 100); do
    [ -e "$d/ready" ] && break
    kill -0 "${HOLDER[$n]}" 2>/dev/null || need "${HOST[$n]}'s namespaces: $(cat "$d/log/setup.log")"
    sleep 0.05
  done
  [ -e "$d/ready" ] || need "${HOST[$n]}'s namespaces did not come up: $(cat "$d/log/setup.log")"
}
# Runs a shell command line on node $1 (no prompt printed).
in_node() {
  local n=$1; shift
  nsenter -t "${HOLDER[$n]}" -m -u -n -- env -i HOME=/root TERM="${TERM:-dumb}" \
    PATH="$PREFIX/sbin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    ISCSI_STATE_DIR=/etc/iscsi ISCSI_MOUNT_DIR=/dev/disk/by-path \
    bash -c "cd /root 2>/dev/null || cd /; $*"
}
# Prints the command as the tutorial's reader types it, then runs it.
on() {
  prompt "$1" "$2"
  if [ -n "$quiet" ]; then in_node "$1" "$2" >>"$quiet_log" 2>&1; else in_node "$1" "$2"; fi
}
# Starts a daemon on node $1: `service $2 start` in the tutorial, here the
# command line $3, its output in the node's log directory.
service_start() {
  local n=$1 svc=$2 cmd=$3 log=$LAB_DIR/nodes/$1/log/$2.log
  prompt "$n" "service $svc start"
  [ -n "$quiet" ] || note "here: $cmd, log in $log"
  in_node "$n" "export RUST_LOG=${RUST_LOG:-info}; exec setsid $cmd" >>"$log" 2>&1 </dev/null &
  disown
}
in_client() { ip netns exec "$(ns client)" "$@"; }
# The page at $1 on the floating address, as the client gets it ($2:
# seconds to connect, default 2).
fetch() { in_client curl -s -f --noproxy '*' --connect-timeout "${2:-2}" -m 5 "http://$VIP/$1"; }

# ---------------------------------------------------------------- storage
step "storage node ${HOST[storage]} (${IP[storage]}): an iSCSI target with one LUN"
boot_namespaces storage
# Its second disk, /dev/sdb in the tutorial: a sparse file in its /dev.
in_node storage "truncate -s 4G /dev/sdb"
service_start storage tgtd "tgtd -f --state-dir $LAB_DIR/nodes/storage/tgtd"
for _ in $(seq 100); do
  in_node storage "tgtadm --op show --mode target" >/dev/null 2>&1 && break
  sleep 0.1
done
on storage "tgtadm --lld iscsi --mode target --op new --tid 1 --targetname $IQN"
on storage "tgtadm --lld iscsi --op new --mode logicalunit --lun 1 --tid 1 -b /dev/sdb"
on storage "tgtadm --lld iscsi --op bind --mode target --tid 1 -I ALL"
on storage "tgtadm --lld iscsi --op show --mode target"

# ---------------------------------------------------------------- cluster nodes
# The seed's cluster.conf, verbatim (or with fence_scsi on the LUN).
conf=$LAB_DIR/cluster.conf
if [ "$fence" = manual ]; then
  cp "$seed_conf" "$conf"
else
  # fence_scsi on the LUN: the victim's key (port) preempted with the
  # fencer's (nodename: in two nodes, the other one), and each node's
  # unfencing (its key registered) at boot. The device is the LUN's
  # by-path file, so that the keys are registered on the sessions that
  # carry the nodes' writes.
  awk -v url="$LUN" '
    /<clusternode name=/ { split($0, a, "\""); me = a[2]; other = (me == "RealServer1") ? "RealServer2" : "RealServer1" }
    /<device name="fence[12]" nodename=/ { sub(/nodename="[^"]*"/, "port=\"" me "\" nodename=\"" other "\"") }
    /<fencedevice agent="fence_manual"/ { sub(/agent="fence_manual"/, "agent=\"fence_scsi\""); sub(/\/>/, " devices=\"" url "\"/>") }
    { print }
    /<\/fence>/ { print "      <unfence>"; print "        <device name=\"" (me == "RealServer1" ? "fence1" : "fence2") "\"/>"; print "      </unfence>" }
  ' "$seed_conf" > "$conf"
fi

# One node's boot up to cman and clvmd: its namespaces, the iSCSI login,
# cman (membership), clvmd and the VG's activation, as the init scripts
# run at boot (cman, clvmd, then rgmanager).
login() {
  local n=$1
  on "$n" "iscsiadm -m discovery -t sendtargets -p $STORAGE_IP:3260"
  on "$n" "iscsiadm -m node --targetname $IQN -p $STORAGE_IP:3260 --login"
}
boot_node() {
  local n=$1
  boot_namespaces "$n"
  in_node "$n" "mkdir -p /etc/cluster /etc/lvm /etc/httpd/conf /var/www/html"
  in_node "$n" "cat > /etc/cluster/cluster.conf" < "$conf"
  write_lvm_conf "$n"
  write_httpd "$n"
}
write_lvm_conf() {
  # Scanned for PVs: the iSCSI disks (lvm2's filter would say the same:
  # a|^/dev/disk/by-path/|, r|.*|).
  in_node "$1" "cat > /etc/lvm/lvm.conf" <<'EOF'
devices {
	scan = [ "/dev/disk/by-path" ]
}
global {
	locking_type = 1
}
EOF
}

# Apache as RHEL's httpd: /etc/init.d/httpd and /etc/httpd/conf/httpd.conf
# on each node, the document root /var/www/html (the GFS2 volume, mounted
# by rgmanager), /node.txt saying which node answers.
write_httpd() {
  local n=$1
  in_node "$n" "cat > /etc/httpd/conf/httpd.conf" <<EOF
ServerRoot "/run/httpd"
ServerName www.example.com
Listen 80
PidFile "/run/httpd/httpd.pid"
DefaultRuntimeDir "/run/httpd"
ErrorLog "$LAB_DIR/nodes/$n/log/httpd-error.log"
LogLevel notice
ErrorLogFormat "[%{cu}t] [%l] %M"
LoadModule mpm_event_module $apache_modules/mod_mpm_event.so
LoadModule authz_core_module $apache_modules/mod_authz_core.so
LoadModule dir_module $apache_modules/mod_dir.so
LoadModule alias_module $apache_modules/mod_alias.so
LoadModule mime_module $apache_modules/mod_mime.so
TypesConfig /etc/mime.types
User www-data
Group www-data
DocumentRoot "/var/www/html"
<Directory "/var/www/html">
  Require all granted
</Directory>
Alias /node.txt /run/httpd/node.txt
<Directory "/run/httpd">
  Require all granted
</Directory>
DirectoryIndex index.html
EOF
  in_node "$n" "cat > /etc/init.d/httpd && chmod 755 /etc/init.d/httpd" <<'EOF'
#!/bin/sh
# httpd: Apache (Debian's apache2) with /etc/httpd/conf/httpd.conf.
P=/run/httpd/httpd.pid
runs() {
  read -r l 2>/dev/null < /proc/$1/stat || return 1
  set -- ${l##*) }
  [ "$1" != Z ]
}
# True while a process of group $1 runs.
group_runs() {
  for f in /proc/[0-9]*/stat; do
    read -r l 2>/dev/null < $f || continue
    set -- ${l##*) }
    [ "$1" != Z ] && [ "$3" = "$g" ] && return 0
  done
  return 1
}
case "$1" in
start)
  hostname > /run/httpd/node.txt
  if [ -s $P ]; then runs $(cat $P) && exit 0; rm -f $P; fi
  apache2 -f /etc/httpd/conf/httpd.conf -k start ;;
stop)
  [ -s $P ] || exit 0
  g=$(cat $P)
  if runs $g; then
    kill -TERM $g
    for i in $(seq 100); do group_runs || break; sleep 0.1; done
  fi
  kill -KILL -$g 2>/dev/null
  rm -f $P ;;
status)
  [ -s $P ] && runs $(cat $P) || exit 3 ;;
restart) $0 stop; $0 start ;;
esac
EOF
}

# cman, clvmd and rgmanager on a node (its cluster.conf in place).
start_cman() { service_start "$1" cman "cmand -f"; }
start_clvmd() {
  service_start "$1" clvmd "clvmd -f"
  for _ in $(seq 100); do
    in_node "$1" "test -S /run/lvm/clvmd.sock" && break
    sleep 0.1
  done
  # What clvmd's init script does next: activate the VGs.
  on "$1" "vgchange -ay"
}
start_rgmanager() { service_start "$1" rgmanager "rgmanager -f --agent-dir $PREFIX/share/cluster"; }

# Waits until node $1 has both nodes as members (cman_tool nodes), or
# with $2 = rgmanager, both nodes' rgmanagers (clustat).
wait_members() {
  local n=$1 what=${2:-cman} count
  for _ in $(seq 600); do
    if [ "$what" = cman ]; then
      count=$(in_node "$n" "cman_tool nodes" 2>/dev/null | grep -c '^ *[0-9]\+ \+M ' || true)
    else
      count=$(in_node "$n" "clustat" 2>/dev/null | grep -c "Online.*rgmanager" || true)
    fi
    [ "$count" = 2 ] && return 0
    sleep 0.1
  done
  need "${HOST[$n]} did not see both nodes ($what) in 60 s: see $LAB_DIR/nodes/$n/log/"
}
# fence_scsi's unfencing, as cman's init script does it at boot: the node
# registers its key on the LUN (the first one reserves it).
unfence() {
  if [ "$fence" = scsi ]; then on "$1" "fence_node -U ${HOST[$1]}"; fi
}

step "cluster nodes RealServer1 (${IP[node1]}) and RealServer2 (${IP[node2]}): log in to the LUN"
for n in node1 node2; do boot_node "$n"; done
for n in node1 node2; do login "$n"; done
on node1 "ls -l /dev/disk/by-path/"

step "on one node: LVM and the GFS2 file system"
on node1 "pvcreate $LUN"
on node1 "vgcreate webvg $LUN"
on node1 "lvcreate -L 2G -n webvg_lv1 webvg"
echo y | on node1 "mkfs.clusterfs -p lock_dlm -t httpd_cluster:webvg_lv1 -j 2 /dev/webvg/webvg_lv1"
note "answered y; mkfs.clusterfs is our mkfs.gfs2"

step "the cluster configuration, the same on both nodes"
on node1 "cat /etc/cluster/cluster.conf"
on node2 "md5sum /etc/cluster/cluster.conf"
on node1 "md5sum /etc/cluster/cluster.conf"

step "start the cluster"
note "in the init scripts' boot order: cman, clvmd, rgmanager (the tutorial lists rgmanager first)"
for n in node1 node2; do start_cman "$n"; done
for n in node1 node2; do wait_members "$n"; done
for n in node1 node2; do unfence "$n"; done
grep -h "^cmand: WARNING" "$LAB_DIR/nodes/node1/log/cman.log" | head -1 || true
for n in node1 node2; do on "$n" "lvmconf --enable-cluster"; done
for n in node1 node2; do start_clvmd "$n"; done
for n in node1 node2; do start_rgmanager "$n"; done

# ---------------------------------------------------------------- operate
# Node (node1/node2) that rgmanager on $1 says runs httpd_srv, once started.
owner_of() {
  local line
  line=$(in_node "$1" "clustat -s httpd_srv" 2>/dev/null | grep 'service:httpd_srv' || true)
  case $line in
    *RealServer1*started*) echo node1 ;;
    *RealServer2*started*) echo node2 ;;
  esac
}
# Waits until the client gets the site from the floating address and
# node $1 answers; prints the milliseconds since $2.
wait_served_by() {
  local want=${HOST[$1]} since=$2
  # Polled often: an attempt while nobody holds the address is given up
  # after 0.1 s.
  for _ in $(seq 2400); do
    if [ "$(fetch node.txt 0.1 2>/dev/null)" = "$want" ]; then
      echo $(( $(now_ms) - since ))
      return 0
    fi
    sleep 0.02
  done
  need "the floating address did not answer from $want in 60 s: see $LAB_DIR/nodes/$1/log/"
}
show_client() {
  prompt client "curl http://$VIP/"
  fetch "" || fetch "" || need "the client got no page from $VIP"
  prompt client "curl http://$VIP/node.txt"
  fetch node.txt || fetch node.txt || need "the client got no /node.txt from $VIP"
}

step "the service: httpd_srv starts where rgmanager places it"
t0=$(now_ms)
first=
for _ in $(seq 600); do
  for n in node1 node2; do
    o=$(owner_of "$n")
    [ -n "$o" ] && { first=$o; break 2; }
  done
  sleep 0.1
done
[ -n "$first" ] || need "httpd_srv did not start in 60 s: see $LAB_DIR/nodes/node*/log/rgmanager.log"
owner=$first other=$([ "$first" = node1 ] && echo node2 || echo node1)
on "$owner" "clustat"
on "$owner" "mount | grep /var/www/html"
on "$owner" "ip addr show eth0"
on "$owner" "echo '<h1>httpd_cluster: served from the GFS2 volume</h1>' > /var/www/html/index.html"
took=$(wait_served_by "$owner" "$t0")
show_client

step "move the service: clusvcadm -r"
on "$owner" "clusvcadm -r httpd_srv -m ${HOST[$other]}"
t0=$(now_ms)
took=$(wait_served_by "$other" "$t0")
owner=$other other=$([ "$other" = node1 ] && echo node2 || echo node1)
on "$owner" "clustat"
on "$owner" "ip addr show eth0"
show_client
note "served by ${HOST[$owner]} ${took} ms after clusvcadm returned"

# ---------------------------------------------------------------- failover
# Node $1 loses power: every process of its namespaces SIGKILLed (its
# daemons, FUSE servers, Apache; its mount namespace goes with them), its
# link down.
power_off() {
  kill_ns "$1"
  ip -n "$(ns "$1")" link set eth0 down
}
# With fence_manual, what the operator does once the survivor $1 asks:
# (the dead node is already off) fence_ack_manual. Prints nothing else.
ack_when_asked() {
  local s=$1 victim=${HOST[$2]} log=$LAB_DIR/nodes/$1/log/cman.log
  for _ in $(seq 1200); do
    if grep -q "fence_manual: reset node \"$victim\"" "$log" 2>/dev/null \
        && [ "$(grep -c "fence_manual: reset node \"$victim\"" "$log")" -gt "${acked[$victim]:-0}" ]; then
      acked[$victim]=$(grep -c "fence_manual: reset node \"$victim\"" "$log")
      [ -n "$quiet" ] || grep "fence_manual: reset node \"$victim\"" "$log" | tail -1
      on "$s" "fence_ack_manual $victim"
      return 0
    fi
    sleep 0.05
  done
  need "${HOST[$s]} never asked to fence $victim: see $log"
}
declare -A acked

step "the owner ${HOST[$owner]} dies: kill -9 of all its processes, its link down"
survivor=$other
t0=$(now_ms)
power_off "$owner"
note "every process in namespace $(ns "$owner") killed, ip link set eth0 down there"
[ "$fence" = manual ] && ack_when_asked "$survivor" "$owner"
took=$(wait_served_by "$survivor" "$t0")
# Apache answers before rgmanager has marked the service started (its
# start ends after the script resource's): wait for that before clustat.
for _ in $(seq 100); do
  [ "$(owner_of "$survivor")" = "$survivor" ] && break
  sleep 0.1
done
on "$survivor" "clustat"
show_client
note "served again by ${HOST[$survivor]} ${took} ms after the kill"
if [ "$fence" = scsi ]; then
  # The dead node's key is gone from the LUN: were it still running, its
  # writes would end with RESERVATION CONFLICT.
  on "$survivor" "fence_scsi -o status -n ${HOST[$owner]} -d $LUN" || true
  on "$survivor" "fence_scsi -o status -n ${HOST[$survivor]} -d $LUN"
fi
failover_ms=$took
dead=$owner owner=$survivor

step "the end: the service stopped, the volume checked"
on "$owner" "clusvcadm -d httpd_srv"
on "$owner" "fsck.gfs2 -n /dev/webvg/webvg_lv1"

# ---------------------------------------------------------------- benchmark
# Node $1 comes back after its power cut: link up (the floating address
# it held is gone with the reboot), the same boot as at first, quietly.
reboot_node() {
  local n=$1
  ip -n "$(ns "$n")" addr flush dev eth0
  ip -n "$(ns "$n")" addr add "${IP[$n]}/24" dev eth0
  ip -n "$(ns "$n")" link set eth0 up
  boot_node "$n"
  login "$n"
  start_cman "$n"
  wait_members "$n"
  unfence "$n"
  on "$n" "lvmconf --enable-cluster"
  start_clvmd "$n"
  start_rgmanager "$n"
  wait_members "$n" rgmanager
}
# Milliseconds since the epoch of the first line of log $1 after line $2
# that matches $3 (our daemons' and Apache's timestamps).
log_ms() {
  local line ts
  line=$(tail -n +"$(( $2 + 1 ))" "$1" 2>/dev/null | grep -m1 -- "$3") || { echo -; return; }
  case $line in
    '['*) ts=${line#[}; ts=${ts%%]*} ;;
    *) ts=${line%% *} ;;
  esac
  date -d "$ts" +%s%3N
}
lines() { wc -l < "$1" 2>/dev/null || echo 0; }
since() { [ "$2" = - ] && echo - || echo $(( $2 - $1 )); }
# min median max of the numbers on stdin.
stats() {
  sort -n | awk '$1 != "-" {v[n++] = $1} END {
    if (n == 0) { print "-"; exit }
    printf "min %d ms, median %d ms, max %d ms (%d kills)\n", v[0], (n % 2 ? v[(n-1)/2] : (v[n/2-1] + v[n/2]) / 2), v[n-1], n }'
}
bench_failover() {
  local kills=$1 k victim surv l_cman l_rg l_httpd t0 http det fen rec start
  local out=$LAB_DIR/bench.txt
  quiet_log=$LAB_DIR/bench-reboots.log
  : > "$out"
  step "benchmark: $kills kills of the owner (fence_$fence), times since the kill"
  for k in $(seq "$kills"); do
    victim=$(owner_of "$owner")
    for _ in $(seq 600); do
      [ -n "$victim" ] && [ "$(fetch node.txt 2>/dev/null)" = "${HOST[$victim]}" ] && break
      sleep 0.1
      victim=$(owner_of "$owner")
    done
    [ -n "$victim" ] || need "no owner of httpd_srv before kill $k"
    surv=$([ "$victim" = node1 ] && echo node2 || echo node1)
    local d=$LAB_DIR/nodes/$surv/log
    l_cman=$(lines "$d/cman.log") l_rg=$(lines "$d/rgmanager.log") l_httpd=$(lines "$d/httpd-error.log")
    t0=$(now_ms)
    power_off "$victim"
    if [ "$fence" = manual ]; then quiet=1 ack_when_asked "$surv" "$victim"; fi
    http=$(wait_served_by "$surv" "$t0")
    det=$(since "$t0" "$(log_ms "$d/cman.log" "$l_cman" "view installed")")
    # The fencer's own log line when its agent succeeded (rgmanager's
    # "node fenced" was missing in 2 of 10 kills with fence_scsi), else
    # rgmanager's (fence_ack_manual ends the agent's wait from outside).
    fen=$(log_ms "$d/cman.log" "$l_cman" "fence succeeded")
    [ "$fen" != - ] || fen=$(log_ms "$d/rgmanager.log" "$l_rg" "node fenced")
    fen=$(since "$t0" "$fen")
    rec=$(since "$t0" "$(log_ms "$d/rgmanager.log" "$l_rg" "mounted in the cluster")")
    start=$(since "$t0" "$(log_ms "$d/httpd-error.log" "$l_httpd" "resuming normal operations")")
    echo "$det $fen $rec $start $http" >> "$out"
    printf 'kill %2d: %s down, %s: detected %s ms, fenced %s ms, journals recovered and mounted %s ms, Apache started %s ms, HTTP 200 on %s %s ms\n' \
      "$k" "${HOST[$victim]}" "${HOST[$surv]}" "$det" "$fen" "$rec" "$start" "$VIP" "$http"
    owner=$surv
    quiet=1 reboot_node "$victim"
  done
  echo
  printf '%-36s %s\n' "detection (survivor's new view):" "$(awk '{print $1}' "$out" | stats)"
  printf '%-36s %s\n' "fencing done:" "$(awk '{print $2}' "$out" | stats)"
  printf '%-36s %s\n' "journal recovery, volume mounted:" "$(awk '{print $3}' "$out" | stats)"
  printf '%-36s %s\n' "service started (Apache up):" "$(awk '{print $4}' "$out" | stats)"
  printf '%-36s %s\n' "first HTTP 200 on $VIP:" "$(awk '{print $5}' "$out" | stats)"
  dead=
}

if [ "$bench" -gt 0 ]; then
  on "$owner" "clusvcadm -e httpd_srv"
  note "(${HOST[$dead]} reboots: log in $LAB_DIR/bench-reboots.log)"
  quiet_log=$LAB_DIR/bench-reboots.log quiet=1 reboot_node "$dead"
  bench_failover "$bench"
fi

step "what was shown"
cat <<EOT
- a storage node served one LUN (tgtadm); both nodes logged in (iscsiadm)
- LVM on it (pvcreate, vgcreate webvg, lvcreate webvg_lv1), a lock_dlm GFS2
  volume (mkfs.clusterfs -p lock_dlm -j 2), $([ "$fence" = manual ] && echo "the tutorial's cluster.conf as is" || echo "the tutorial's cluster.conf with fence_scsi")
- cman, clvmd and rgmanager on both nodes; httpd_srv (floating IP, Apache,
  the GFS2 volume on /var/www/html) served the page on http://$VIP/
- clusvcadm -r moved it to the other node; the owner's death was fenced
  (fence_$fence) and the survivor served again ${failover_ms} ms after the kill
- fsck.gfs2 -n found the volume clean
EOT
if [ -n "$keep" ]; then
  [ "$bench" -gt 0 ] || on "$owner" "clusvcadm -e httpd_srv"
  step "the lab keeps running (--keep)"
  for n in storage node1 node2; do
    [ "$n" = "$dead" ] && continue
    echo "  ${HOST[$n]}: nsenter -t ${HOLDER[$n]} -m -u -n env PATH=$PREFIX/sbin:\$PATH ISCSI_STATE_DIR=/etc/iscsi ISCSI_MOUNT_DIR=/dev/disk/by-path bash"
  done
  echo "  client: ip netns exec $(ns client) curl http://$VIP/"
  [ -z "$dead" ] || echo "  ${HOST[$dead]} is down (killed)."
  echo "  Logs: $LAB_DIR/nodes/*/log"
  echo "  to tear it all down: run $0 again and Ctrl-C it, or:"
  echo "    for n in node1 node2 storage client; do ip netns pids $(ns '$n') | xargs -r kill -9; done;"
  echo "    for n in node1 node2 storage client switch; do ip netns del $(ns '$n'); done"
fi
exit
}
