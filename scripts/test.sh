#!/usr/bin/env bash
# The project's test command (README quick start and CI run exactly this).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_THREAD_LIMIT=1
cargo test --workspace --no-fail-fast
