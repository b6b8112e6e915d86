#!/usr/bin/env bash
# Runs every test: builds all binaries first (the end-to-end tests in tests/
# run them), then the whole workspace's tests, every test binary even when
# one fails, and closes with one line that adds up every test binary's
# result: `tests: N passed, N failed, N skipped`. Exits non-zero if any
# test failed.
#
# A test that returns early because a tool is missing (tgtd, mkfs.gfs2,
# fusermount3...) records `SKIPPED: <binary>::<test>: <why>` in the file
# named by LAB_SKIP_LOG (tests/src/lib.rs and clusterfs/tests/common/skip.rs);
# such a test counts as skipped, not passed, and the lines are listed
# before the closing line. With CI set, a skip fails the test instead.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
log=$(mktemp)
skips=$(mktemp)
trap 'rm -f "$log" "$skips"' EXIT
export LAB_SKIP_LOG=$skips
status=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# Per test binary (cargo's `Running ... (target/.../deps/NAME-HASH)` line),
# the tests that passed; a recorded skip turns a passed test into a skipped
# one (a test that skipped a part and then failed stays failed). A binary
# that printed no `test result:` (killed, crashed) or a target that did not
# compile counts as one failed test, named before the closing line.
awk -v skips="$skips" '
  BEGIN {
    while ((getline line < skips) > 0) {
      sub(/^SKIPPED: /, "", line)
      key = line; sub(/: .*/, "", key)
      if (!(key in why)) { why[key] = substr(line, length(key) + 3); n++; order[n] = key }
    }
  }
  function section(name) {
    if (bin != "" && !done) { f++; broken[++nb] = bin " (no test result: killed, crashed or did not compile)" }
    bin = name; done = 0
  }
  /^ *Running / && match($0, /\([^)]*\)$/) {
    name = substr($0, RSTART + 1, RLENGTH - 2)
    sub(/.*\//, "", name); sub(/-[0-9a-f]+$/, "", name)
    section(name)
  }
  /^ *Doc-tests / { section("doc-tests " $2) }
  /^error: could not compile / { f++; broken[++nb] = substr($0, 8) }
  /^test .* \.\.\. ok$/ { passed[bin "::" $2] = 1 }
  /^test result:/ { p += $4; f += $6; i += $8; done = 1 }
  END {
    section("")
    for (k = 1; k <= nb; k++) printf "failed: %s\n", broken[k]
    for (k = 1; k <= n; k++) {
      key = order[k]
      if (key in passed) { s++; printf "skipped: %s: %s\n", key, why[key] }
    }
    printf "tests: %d passed, %d failed, %d skipped\n", p - s, f, i + s
  }' "$log"
exit "$status"
