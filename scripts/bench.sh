#!/usr/bin/env bash
# The benchmark suite: one release build, then every scenario with its anchor
# measured in the same run. Prints one table and writes
# target/bench/results.json, results.md (the table in Markdown) and
# results.png (the chart). Arguments go to shturman-bench, e.g.
#   ./scripts/bench.sh --scenario api-create --merge
#   ./scripts/bench.sh --from-json target/bench/results.json --json docs/bench/results.json
set -euo pipefail
cd "$(dirname "$0")/.."

redraw_only=false
for a in "$@"; do
  [[ "$a" == --from-json* ]] && redraw_only=true
done

if ! $redraw_only; then
  # The package only the benchmarks use, on top of scripts/setup.sh's own
  # (etcd-server among them, for the `api-create` anchor):
  # fonts-dejavu-core, the font the chart's text is drawn with.
  bash scripts/setup.sh fonts-dejavu-core
fi

cargo build --release --workspace --bins --locked
# The `sizes` scenario reports the agent as shipped (size-tuned profile):
# build it for this machine and for arm64 unless the run leaves `sizes` out.
scenarios=()
prev=""
for a in "$@"; do
  [[ "$prev" == --scenario ]] && scenarios+=("$a")
  [[ "$a" == --scenario=* ]] && scenarios+=("${a#--scenario=}")
  prev="$a"
done
if ! $redraw_only && { [ "${#scenarios[@]}" -eq 0 ] \
  || [[ " ${scenarios[*]} " == *" all "* || " ${scenarios[*]} " == *" sizes "* ]]; }; then
  bash cross/build.sh --target amd64 --target aarch64 --agent-only
fi
# The heartbeat scenario holds one MQTT connection per simulated node in the
# bench process and one in the control plane: raise the open-files soft limit
# to the hard limit (no root needed). The bench checks it and says so if low.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec target/release/shturman-bench "$@"
