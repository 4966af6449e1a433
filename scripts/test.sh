#!/usr/bin/env bash
# The project's test command (README quick start and CI run exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_THREAD_LIMIT=1
# The chaos tests run the `overlord` binary. Without OVERLORD_BIN they build it themselves with
# `cargo build -p overlord-cli`, whose feature set differs from this workspace build: that
# rebuilt overlord-coordinator and overlord-cli (about a minute of both cores) in the middle of the
# timing-sensitive chaos tests. `cargo test --workspace` builds target/debug/overlord (the CLI's
# own tests need it) before it runs any test.
target_dir=${CARGO_TARGET_DIR:-target}
case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
export OVERLORD_BIN=$target_dir/debug/overlord
cargo test --workspace --no-fail-fast
