#!/usr/bin/env bash
# Runs every test: builds all binaries first (the end-to-end tests in tests/
# run them), then the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --bins
cargo test --workspace "$@"
