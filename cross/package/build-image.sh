#!/usr/bin/env bash
# Builds the agent's OCI image without Docker: one image per architecture
# and a multi-arch index over them, as an OCI image layout directory and as
# an OCI archive (a tar of it) that `ctr images import` takes:
#   <out>/shturman-agent-oci/                       the layout
#   <out>/shturman-agent_<version>_oci.tar          the archive
# The binaries are the ones cross/build.sh leaves in target/cross/: the
# static musl build of an architecture when there is one (the image is then
# that one file plus the default config), else the glibc build with the
# libraries it needs. The writer is the shturman-oci-image helper
# (cross/package/oci_image_tool.rs). See cross/package/README.md.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() {
  cat <<'EOF'
usage: cross/package/build-image.sh [--arch ARCH]... [--binary ARCH=PATH]...
                                    [--out DIR] [--name NAME] [--tag TAG]
                                    [--tool PATH]

  --arch ARCH         amd64 | arm64 | armhf, from target/cross/ (repeatable;
                      default: all three unless --binary is given)
  --binary ARCH=PATH  an agent binary to use for ARCH (repeatable)
  --out DIR           where the layout and the archive go (default
                      target/package)
  --name NAME         image name (default shturman.local/shturman-agent);
                      e.g. registry.example.com/edge/shturman-agent
  --tag TAG           image tag (default: the workspace's version)
  --tool PATH         a built shturman-oci-image (default: built here with
                      cargo build --release -p shturman-e2e)
EOF
}

fail() {
  echo "build-image.sh: $*" >&2
  exit 1
}

arches=()
binaries=()
out=""
name=shturman.local/shturman-agent
tag=""
tool=""
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arches+=("${2:?--arch needs a value}"); shift 2 ;;
    --binary) binaries+=("${2:?--binary needs ARCH=PATH}"); shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --name) name="${2:?--name needs a value}"; shift 2 ;;
    --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
    --tool) tool="${2:?--tool needs a path}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-image.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

# The workspace's version (the agent's) and cargo's target directory.
workspace_version() {
  local id
  id=$(cd "$repo" && cargo pkgid -p shturman-agent)
  echo "${id##*[@#]}"
}
target_dir=""
target() {
  [ -n "$target_dir" ] || target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
    grep -o '"target_directory":"[^"]*"' | sed 's/.*:"\(.*\)"/\1/')
  echo "$target_dir"
}
[ -n "$tag" ] ||
  tag=$(workspace_version)

if [ "${#arches[@]}" -eq 0 ] && [ "${#binaries[@]}" -eq 0 ]; then
  arches=(amd64 arm64 armhf)
fi
for arch in "${arches[@]}"; do
  case "$arch" in amd64 | arm64 | armhf) ;; *) fail "unknown architecture '$arch': use amd64, arm64 or armhf" ;; esac
  static="$(target)/cross/$arch-musl/shturman-agent"
  glibc="$(target)/cross/$arch/shturman-agent"
  if [ -f "$static" ]; then
    binaries+=("$arch=$static")
  elif [ -f "$glibc" ]; then
    binaries+=("$arch=$glibc")
  else
    fail "no $arch agent in $(target)/cross/$arch-musl/ or $(target)/cross/$arch/: build it with cross/build.sh"
  fi
done

if [ -z "$tool" ]; then
  (cd "$repo" && cargo build --locked --release -p shturman-e2e --bin shturman-oci-image)
  tool="$(target)/release/shturman-oci-image"
fi
[ -x "$tool" ] || fail "$tool is not an executable shturman-oci-image"

[ -n "$out" ] || out="$(target)/package"
mkdir -p "$out"
layout="$out/shturman-agent-oci"
archive="$out/shturman-agent_${tag}_oci.tar"
# A previous layout's blobs would linger in the new one: start afresh (only
# ever a directory this script made).
if [ -e "$layout" ]; then
  [ -f "$layout/oci-layout" ] || fail "$layout exists and is not an OCI layout; move it away"
  rm -rf "$layout"
fi

args=(--out "$layout" --archive "$archive" --name "$name" --tag "$tag" --config "$here/agent.yaml")
# The CAs the agent trusts for https module downloads (package ca-certificates).
ca=/etc/ssl/certs/ca-certificates.crt
if [ -f "$ca" ]; then
  args+=(--ca-bundle "$ca")
else
  echo "build-image.sh: $ca missing (package ca-certificates): the image will trust no CA for https modules" >&2
fi
for b in "${binaries[@]}"; do
  args+=(--binary "$b")
done
"$tool" "${args[@]}"
printf '%s\t%s bytes\n' "$archive" "$(stat -c %s "$archive")"
