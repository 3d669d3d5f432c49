#!/usr/bin/env bash
# Cross-builds shturman-agent and the shturman CLI for the edge targets
# without Docker: Debian's cross gcc packages link the glibc builds, and the
# same gcc links the static musl builds against Rust's self-contained musl
# (crt objects and libc.a ship with the target's rust-std). No OpenSSL is
# involved anywhere (rustls with ring). See cross/README.md.
#
# Output (the contract with the packaging scripts): stripped binaries at
#   target/cross/<arch>/shturman-agent
#   target/cross/<arch>/shturman
# where <arch> is the Debian architecture: amd64, arm64, armhf, and
# arm64-musl, armhf-musl for the static builds. With --agent-features the
# agent alone is built, as target/cross/<arch>/shturman-agent-<features>.
# With another --profile than release-small: target/cross/<profile>/<arch>/.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: cross/build.sh [--target NAME]... [--profile PROFILE] [--agent-only]
                      [--agent-features FEATURES]

  --target NAME   aarch64 | armv7 | aarch64-musl | armv7-musl | amd64 | all
                  (repeatable; default: all)
  --profile P     cargo profile (default: release-small, the size-tuned one;
                  the test command uses cross-test, which compiles faster)
  --agent-only    build shturman-agent only, not the shturman CLI
  --agent-features F
                  build the agent alone with --no-default-features
                  --features F (e.g. wasm, oci); output shturman-agent-<F>
EOF
}

targets=()
profile=release-small
agent_only=0
agent_features=""
while [ $# -gt 0 ]; do
  case "$1" in
    --target) targets+=("${2:?--target needs a value}"); shift 2 ;;
    --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
    --agent-only) agent_only=1; shift ;;
    --agent-features) agent_features="${2:?--agent-features needs a value}"; agent_only=1; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "cross/build.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] || targets=(all)
if [[ " ${targets[*]} " == *" all "* ]]; then
  targets=(amd64 aarch64 armv7 aarch64-musl armv7-musl)
fi

# name → Rust triple, Debian arch directory, cross toolchain prefix.
spec() {
  case "$1" in
    amd64) echo "x86_64-unknown-linux-gnu amd64 -" ;;
    aarch64) echo "aarch64-unknown-linux-gnu arm64 aarch64-linux-gnu-" ;;
    armv7) echo "armv7-unknown-linux-gnueabihf armhf arm-linux-gnueabihf-" ;;
    aarch64-musl) echo "aarch64-unknown-linux-musl arm64-musl aarch64-linux-gnu-" ;;
    armv7-musl) echo "armv7-unknown-linux-musleabihf armhf-musl arm-linux-gnueabihf-" ;;
    *) return 1 ;;
  esac
}

fail() {
  echo "cross/build.sh: $*" >&2
  exit 1
}

command -v protoc >/dev/null ||
  fail "protoc not found: the CRI client's build needs it (apt-get install protobuf-compiler, or run scripts/setup.sh)"

# The target directory cargo uses (honours CARGO_TARGET_DIR).
target_dir=$(cargo metadata --format-version 1 --no-deps |
  grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)
[ -n "$target_dir" ] || fail "could not read the target directory from cargo metadata"
# Cargo names the `dev` profile's directory `debug`.
profile_dir=$profile
[ "$profile" = dev ] && profile_dir=debug

build_one() {
  local name=$1 triple arch prefix
  read -r triple arch prefix <<<"$(spec "$name")"
  [ "$prefix" = - ] && prefix=""

  local cargo_target=() out_dir="$target_dir/$profile_dir"
  if [ "$name" != amd64 ]; then
    command -v "${prefix}gcc" >/dev/null ||
      fail "${prefix}gcc not found: install the cross compiler (apt-get install gcc-${prefix%-}) or run scripts/setup.sh"
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$triple"; then
      rustup target add "$triple" ||
        fail "no Rust standard library for $triple from rustup for this toolchain ($(rustc -V)); see cross/README.md"
    fi
    cargo_target=(--target "$triple")
    out_dir="$target_dir/$triple/$profile_dir"
    # Linker and C compiler for this target only: native builds are untouched.
    local up=${triple^^}
    up=${up//-/_}
    local low=${triple//-/_}
    export "CARGO_TARGET_${up}_LINKER=${prefix}gcc"
    export "CC_${low}=${prefix}gcc"
    export "AR_${low}=${prefix}ar"
  fi

  # Other profiles than the release one go to a folder of their own, so a
  # test build never stands in for the binaries that get packaged.
  local dest="$target_dir/cross/$arch"
  [ "$profile" = release-small ] || dest="$target_dir/cross/$profile/$arch"
  mkdir -p "$dest"

  # One cargo run per binary: built together, the agent would get the
  # features the CLI turns on in shared dependencies (and grow).
  local start=$SECONDS
  if [ -n "$agent_features" ]; then
    ship shturman-agent "shturman-agent-${agent_features//,/-}" --no-default-features --features "$agent_features"
  else
    ship shturman-agent shturman-agent
    [ "$agent_only" -eq 1 ] || ship shturman shturman
  fi
  echo "== $name built in $((SECONDS - start)) s"
}

# ship PACKAGE OUTPUT-NAME [CARGO-ARGS…]: builds PACKAGE's binary of the
# same name for the current target and leaves it stripped at $dest/OUTPUT-NAME.
ship() {
  local pkg=$1 to=$2
  shift 2
  echo "== $name ($triple, profile $profile): $to"
  cargo build --locked --profile "$profile" "${cargo_target[@]}" -p "$pkg" --bin "$pkg" "$@"
  # Copy to a temp name and rename: a reader never sees a half-written file.
  cp "$out_dir/$pkg" "$dest/.$to.tmp"
  "${prefix}strip" "$dest/.$to.tmp"
  mv "$dest/.$to.tmp" "$dest/$to"
  printf '%s\t%s bytes\n' "$dest/$to" "$(stat -c %s "$dest/$to")"
}

# Every name checked before the first (long) build starts.
for t in "${targets[@]}"; do
  spec "$t" >/dev/null || fail "unknown target '$t' (aarch64, armv7, aarch64-musl, armv7-musl, amd64, all)"
done
for t in "${targets[@]}"; do
  build_one "$t"
done
