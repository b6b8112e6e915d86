#!/usr/bin/env bash
# Long fuzz runs of the parsers (issue 15): cargo-fuzz targets of
# clusterfs/fuzz, dlm/fuzz, cman/fuzz and iscsi/fuzz.
#
#   scripts/fuzz.sh [-t SECONDS] [-m] [-l] TARGET...
#
# TARGET is CRATE:NAME (clusterfs:image), CRATE (all of its targets) or
# "all". Each target runs SECONDS (default 3600) under SCHED_IDLE (only
# CPU time that nothing else wants, so it can run beside builds and
# benchmarks), one after the other, with the committed corpus (CRATE/fuzz/corpus/NAME) as seeds; new
# inputs go to target/fuzz/work/CRATE-NAME (not committed). -m merges
# them into the committed corpus afterwards, keeping only inputs that add
# coverage (libFuzzer -merge=1). -l lists the targets. A crash or timeout
# leaves its input in CRATE/fuzz/artifacts/NAME/ and makes the script exit
# 1; copy it to CRATE/fuzz/regressions/NAME/ with the fix, so the crate's
# tests/fuzz_corpus.rs replays it in CI.
#
# Do not pause a fuzzer (SIGSTOP) to free the CPU: libFuzzer's timeout
# counts wall time, so it reports the input that ran across the pause as a
# timeout (and the run ends), which replays in milliseconds.
#
# Needs a nightly toolchain and cargo-fuzz (cargo install cargo-fuzz).
# The fuzz crates share one build directory, target/fuzz (FUZZ_TARGET_DIR),
# and start from the workspace's Cargo.lock. Logs: target/fuzz/logs/
# CRATE-NAME.log; one summary line per target (seconds, executions, corpus
# size, crash or not) on stdout.
set -euo pipefail

cd "$(dirname "$0")/.."
secs=3600
merge=0
crates=(clusterfs dlm cman iscsi)

targets_of() {
    sed -n 's/^name = "\(.*\)"$/\1/p' "$1/fuzz/Cargo.toml" | grep -v -- '-fuzz$'
}

list() {
    for c in "${crates[@]}"; do
        for t in $(targets_of "$c"); do echo "$c:$t"; done
    done
}

while getopts "t:ml" o; do
    case $o in
    t) secs=$OPTARG ;;
    m) merge=1 ;;
    l) list; exit 0 ;;
    *) sed -n '2,26p' "$0"; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { sed -n '2,26p' "$0"; exit 2; }

want=()
for a in "$@"; do
    case $a in
    all) mapfile -t -O "${#want[@]}" want < <(list) ;;
    *:*) want+=("$a") ;;
    *) for t in $(targets_of "$a"); do want+=("$a:$t"); done ;;
    esac
done

tdir=${FUZZ_TARGET_DIR:-$PWD/target/fuzz}
failed=0
for ct in "${want[@]}"; do
    c=${ct%%:*}
    t=${ct#*:}
    dir=$c/fuzz
    work=$tdir/work/$c-$t
    mkdir -p "$work" "$tdir/logs" "$dir/corpus/$t"
    [ -f "$dir/Cargo.lock" ] || cp Cargo.lock "$dir/Cargo.lock"
    log=$tdir/logs/$c-$t.log
    start=$(date +%s)
    rc=0
    (cd "$dir" && chrt --idle 0 nice -n 19 cargo +nightly fuzz run -O --target-dir "$tdir" "$t" "$work" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=3072 -print_final_stats=1) \
        >"$log" 2>&1 || rc=$?
    took=$(($(date +%s) - start))
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    units=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1)
    verdict=ok
    if [ "$rc" -ne 0 ]; then
        verdict="FAILED (rc $rc; see $log and $dir/artifacts/$t/)"
        failed=1
    fi
    if [ "$merge" = 1 ] && [ "$rc" -eq 0 ]; then
        (cd "$dir" && chrt --idle 0 nice -n 19 cargo +nightly fuzz run -O --target-dir "$tdir" "$t" "corpus/$t" "$work" -- \
            -merge=1 -timeout=20 -rss_limit_mb=3072) >>"$log" 2>&1
    fi
    echo "$c:$t ${took}s execs=${execs:-?} ${units:-corp: ?} $verdict"
done
exit $failed
