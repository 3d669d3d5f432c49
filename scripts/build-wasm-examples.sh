#!/usr/bin/env bash
# Builds the example Wasm workloads in wasm-examples/ for wasm32-wasip2
# (components, WASI preview 2) and wasm32-wasip1 (core modules), installing
# the Rust targets with rustup when they are missing. Output:
#   wasm-examples/<name>/target/wasm32-wasip2/release/<name>.wasm
#   wasm-examples/<name>/target/wasm32-wasip1/release/<name>.wasm
# and the wasi:http component (wasm32-wasip2 only: a library, so `-` → `_`):
#   wasm-examples/http-hello/target/wasm32-wasip2/release/http_hello.wasm
set -euo pipefail
cd "$(dirname "$0")/../wasm-examples"

targets=(wasm32-wasip2 wasm32-wasip1)
installed=$(rustup target list --installed)
for t in "${targets[@]}"; do
  grep -qx "$t" <<<"$installed" || rustup target add "$t"
done

for crate in hello ticker; do
  for t in "${targets[@]}"; do
    echo "== $crate ($t)"
    cargo build --quiet --release --manifest-path "$crate/Cargo.toml" --target "$t"
  done
done
# wasi:http/proxy components exist in WASI preview 2 only.
echo "== http-hello (wasm32-wasip2)"
cargo build --quiet --release --manifest-path http-hello/Cargo.toml --target wasm32-wasip2
for crate in hello ticker; do
  for t in "${targets[@]}"; do
    ls -l "$crate/target/$t/release/$crate.wasm"
  done
done
ls -l http-hello/target/wasm32-wasip2/release/http_hello.wasm
