#!/bin/bash
# Throughput of our tgtd against Debian's tgtd on the same backing file,
# measured with libiscsi's iscsi-perf (reads only: it has no write mode):
# sequential 128 KiB and random 4 KiB reads, 32 commands in flight.
#
#   bench/iscsi_perf.sh [SECONDS] [FILE_MB]
#
# Needs: our tgtd/tgtadm built (CARGO_TARGET_DIR or target/), Debian's
# /usr/sbin/tgtd and tgtadm, iscsi-perf. Both daemons run on loopback with
# their own control sockets; both are stopped (by PID) at the end.
set -euo pipefail
SECS=${1:-8}
MB=${2:-256}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# The release build when there is one (cargo build --release -p tools --bin tgtd --bin tgtadm).
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
[ -x "$BIN/tgtd" ] || BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug
echo "our tgtd: $BIN/tgtd"
for p in "$BIN/tgtd" "$BIN/tgtadm" /usr/sbin/tgtd iscsi-perf; do
    command -v "$p" >/dev/null || { echo "missing $p" >&2; exit 2; }
done
WORK=$(mktemp -d)
OUR_PORT=${OUR_PORT:-3290}
THEIR_PORT=${THEIR_PORT:-3291}
THEIR_C=${THEIR_C:-77}
IQN=iqn.2026-01.bench:perf
PIDS=()
cleanup() {
    # Debian's tgtd ignores SIGTERM while it has targets: SIGKILL follows.
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

dd if=/dev/urandom of="$WORK/lun.img" bs=1M count="$MB" status=none
cat "$WORK/lun.img" >/dev/null   # both read from the page cache

"$BIN/tgtd" -f --iscsi "portal=127.0.0.1:$OUR_PORT" -C 0 --control-dir "$WORK" \
    --state-dir "$WORK/state" 2>"$WORK/ours.log" &
PIDS+=($!)
/usr/sbin/tgtd -f --iscsi "portal=127.0.0.1:$THEIR_PORT" -C "$THEIR_C" >"$WORK/theirs.log" 2>&1 &
PIDS+=($!)
sleep 1
setup() { # tgtadm-command...
    "$@" --lld iscsi --op new --mode target --tid 1 -T "$IQN"
    "$@" --lld iscsi --op new --mode logicalunit --tid 1 --lun 1 -b "$WORK/lun.img"
    "$@" --lld iscsi --op bind --mode target --tid 1 -I ALL
}
setup "$BIN/tgtadm" --control-dir "$WORK" -C 0
setup tgtadm -C "$THEIR_C"

# Prints the average MB/s of one iscsi-perf run.
run_perf() { # port blocks [-r]
    iscsi-perf -m 32 -b "$2" -t "$SECS" ${3:-} "iscsi://127.0.0.1:$1/$IQN/1" 2>&1 |
        tr '\r' '\n' | sed -n 's/^iops average \([0-9]*\) (\([0-9]*\) MB\/s).*/\2/p' | tail -1
}

# Warm both up with large reads first: glibc raises its mmap threshold
# once a big buffer is freed, after which tgt serves 128 KiB reads from the
# heap instead of mmap + page faults (a long-running tgtd is in that state).
for port in $OUR_PORT $THEIR_PORT; do
    iscsi-perf -m 8 -b 2048 -t 2 "iscsi://127.0.0.1:$port/$IQN/1" >/dev/null 2>&1 || true
done

printf '%-28s %10s %10s %7s\n' workload "ours MB/s" "tgt MB/s" ratio
for spec in "seq-read-128KiB:256:" "rand-read-4KiB:8:-r"; do
    IFS=: read -r name blocks flag <<<"$spec"
    # Alternate the two targets twice and keep the better of each.
    o1=$(run_perf $OUR_PORT "$blocks" "$flag"); t1=$(run_perf $THEIR_PORT "$blocks" "$flag")
    o2=$(run_perf $OUR_PORT "$blocks" "$flag"); t2=$(run_perf $THEIR_PORT "$blocks" "$flag")
    ours=$(( o1 > o2 ? o1 : o2 )); theirs=$(( t1 > t2 ? t1 : t2 ))
    ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
    printf '%-28s %10s %10s %7s\n' "$name" "$ours" "$theirs" "$ratio"
done
