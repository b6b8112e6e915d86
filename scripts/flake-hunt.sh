#!/usr/bin/env bash
# Flake hunt: runs the multi-process and timing-dependent test binaries
# RUNS times each (default 50) beside BUSY busy loops (default 2, one per
# core here), and prints per binary how many runs failed. A failed run's
# output is kept in $OUT (default /tmp/flake-hunt) as BINARY.RUN.log.
#
#   scripts/flake-hunt.sh                 # every binary below, 50 runs
#   RUNS=10 scripts/flake-hunt.sh transport lock_dlm
#
# Binaries are cargo test targets (the file names under */tests/).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-50}
BUSY=${BUSY:-2}
OUT=${OUT:-/tmp/flake-hunt}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(transport driver lock_dlm dlm_multiprocess dlm_cman cman_cluster
           clusterfs_cluster clusterfs_fuse clusterfs_iscsi lab)
fi
mkdir -p "$OUT"
cargo build --workspace --bins -q
# One build of every test binary; then find each target's newest binary.
cargo test --workspace --no-run -q 2>/dev/null || cargo test --workspace --no-run
busy=()
for _ in $(seq 1 "$BUSY"); do
  ( while :; do :; done ) &
  busy+=($!)
done
trap 'kill "${busy[@]}" 2>/dev/null' EXIT
export LAB_SKIP_LOG=$OUT/skips
total_failed=0
for t in "${targets[@]}"; do
  bin=$(ls -t target/debug/deps/"$t"-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
  if [ -z "$bin" ]; then
    echo "$t: no test binary" >&2
    continue
  fi
  # Each binary runs from its crate's directory, as cargo runs it.
  crate=$(dirname "$(ls -d */tests/"$t".rs | head -1)")
  crate=${crate%/tests}
  failed=0
  for i in $(seq 1 "$RUNS"); do
    if ! (cd "$crate" && "../$bin") >"$OUT/$t.$i.log" 2>&1; then
      failed=$((failed + 1))
    else
      rm -f "$OUT/$t.$i.log"
    fi
  done
  total_failed=$((total_failed + failed))
  echo "$t: $failed of $RUNS runs failed"
done
echo "flake hunt: $total_failed failed runs (logs in $OUT)"
[ "$total_failed" -eq 0 ]
