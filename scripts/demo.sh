#!/usr/bin/env bash
# The storage path of the tutorial on one machine, with our programs only:
#   storage node: tgtd + tgtadm serve a 1 GiB file as LUN 1 of a target;
#   a cluster node: iscsiadm discovers and logs in (the LUN appears as a
#   file), mkfs.clusterfs makes a GFS2 volume on it, mount.clusterfs mounts it.
# Everything stays on 127.0.0.1 and under $DEMO_DIR; Ctrl-C or the end of the
# script tears it down.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO_DIR=${DEMO_DIR:-/tmp/rhcs-demo}
PORT=${PORT:-3260}
IQN=iqn.2026-11.com.example:storage.disk1
profile=${PROFILE:-release}   # PROFILE=debug for a quicker build
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
bin=$target_dir/$profile

if [ "$profile" = release ]; then cargo build --release --workspace --bins; else cargo build --workspace --bins; fi
mkdir -p "$DEMO_DIR"
export ISCSI_STATE_DIR="$DEMO_DIR/iscsi" ISCSI_MOUNT_DIR="$DEMO_DIR/by-path"
rm -f "$DEMO_DIR/lun1.img"
truncate -s 1G "$DEMO_DIR/lun1.img"

pids=()
cleanup() {
  set +e
  if mountpoint -q "$DEMO_DIR/mnt" 2>/dev/null; then fusermount3 -u "$DEMO_DIR/mnt"; fi
  "$bin/iscsiadm" -m node --logout >/dev/null 2>&1
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
}
trap cleanup EXIT

echo "== storage node: tgtd on 127.0.0.1:$PORT"
"$bin/tgtd" -f -C 0 --control-dir "$DEMO_DIR/tgtd" --iscsi portal=127.0.0.1:$PORT &
pids+=($!)
sleep 0.5
tgtadm() { "$bin/tgtadm" --control-dir "$DEMO_DIR/tgtd" "$@"; }
tgtadm --lld iscsi --op new --mode target --tid 1 -T "$IQN"
tgtadm --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$DEMO_DIR/lun1.img"
tgtadm --lld iscsi --op bind --mode target --tid 1 -I ALL
tgtadm --lld iscsi --op show --mode target

echo "== cluster node: iscsiadm"
"$bin/iscsiadm" -m discovery -t sendtargets -p 127.0.0.1:$PORT
"$bin/iscsiadm" -m node --targetname "$IQN" -p 127.0.0.1:$PORT --login
"$bin/iscsiadm" -m session
lun="$ISCSI_MOUNT_DIR/ip-127.0.0.1:$PORT-iscsi-$IQN-lun-1"
echo "LUN 1 is $lun"

echo "== mkfs.clusterfs + mount.clusterfs"
"$bin/mkfs_clusterfs" -O -p lock_nolock -t httpd_cluster:webvg_lv1 -j 2 "$lun"
mkdir -p "$DEMO_DIR/mnt"
"$bin/mount_clusterfs" "$lun" "$DEMO_DIR/mnt" -o lockproto=lock_nolock
echo "hello from the cluster filesystem" > "$DEMO_DIR/mnt/index.html"
ls -l "$DEMO_DIR/mnt"; df -h "$DEMO_DIR/mnt"
fusermount3 -u "$DEMO_DIR/mnt"
fsck.gfs2 -n "$lun" && echo "fsck.gfs2: clean"
