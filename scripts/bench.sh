#!/usr/bin/env bash
# The benchmark suite: one release build, then every scenario with its anchor
# measured in the same run. Prints a table; writes target/bench/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --workspace --bins --locked
# The heartbeat scenario holds one MQTT connection per simulated node in the
# bench process and one in the control plane: raise the open-files soft limit
# to the hard limit (no root needed). The bench checks it and says so if low.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/shturman-bench "$@"
