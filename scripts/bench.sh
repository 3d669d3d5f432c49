#!/usr/bin/env bash
# The benchmark suite: one release build, then every scenario with its anchor
# measured in the same run. Prints a table; writes target/bench/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
exec target/release/shturman-bench "$@"
