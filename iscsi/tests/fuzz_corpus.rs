//! Replays the committed fuzz corpora (`iscsi/fuzz/corpus/<target>/`) and
//! any crash regressions (`iscsi/fuzz/regressions/<target>/`) through the
//! same harness `cargo fuzz` runs (`iscsi/fuzz/src/harness.rs`), so CI
//! exercises every input found without cargo-fuzz. An empty or missing
//! corpus fails. The corpora are the hour-long runs' (`scripts/fuzz.sh`),
//! merged with libFuzzer's `-merge=1` (only inputs that add coverage).

#[path = "../../clusterfs/tests/common/corpus.rs"]
mod corpus;
#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::path::Path;

#[test]
fn every_corpus_input_replays_without_a_panic() {
    corpus::replay_all(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz"),
        harness::TARGETS,
    );
}
