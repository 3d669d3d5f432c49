#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need,
# checks formatting and lints, builds once, and runs every test (unit,
# component and end-to-end against the real binaries).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# A one-off build from a fresh clone gains nothing from incremental
# artefacts (several GB); local runs keep cargo's default.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== Wasm examples (the end-to-end tests run them)"
bash scripts/build-wasm-examples.sh

echo "== build (the end-to-end tests start these binaries)"
cargo build --workspace --bins --locked

echo "== cross build: the arm64 agent as shipped (tests/cross_aarch64.rs runs it under qemu)"
bash cross/build.sh --target aarch64 --agent-only

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast
else
  cargo test --workspace --locked --no-fail-fast
fi
