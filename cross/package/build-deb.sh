#!/usr/bin/env bash
# Builds the Debian packages with dpkg-deb (no debhelper, no cargo-deb):
#   shturman-agent_<version>_<arch>.deb  the edge agent, its systemd unit and
#                                        /etc/shturman/agent.yaml (a conffile)
#   shturman_<version>_<arch>.deb        the shturman command: control plane,
#                                        `shturman up` and the client verbs
# for each <arch> of amd64, arm64, armhf, from the stripped binaries
# cross/build.sh leaves in target/cross/<arch>/ (or the ones given with
# --agent/--cli). Version: the workspace's. See cross/package/README.md.
set -euo pipefail
# Directories made on the way (usr/, usr/share/, …) get 0755 whatever the caller's umask.
umask 022

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

usage() {
  cat <<'EOF'
usage: cross/package/build-deb.sh [--arch ARCH]... [--agent PATH] [--cli PATH]
                                  [--out DIR] [--version V] [--compression C]

  --arch ARCH      amd64 | arm64 | armhf (repeatable; default: all three)
  --agent PATH     the shturman-agent binary to package (one --arch only;
                   default target/cross/<arch>/shturman-agent)
  --cli PATH       the shturman binary to package (one --arch only; default
                   target/cross/<arch>/shturman). With --agent but without
                   --cli only the agent package is built.
  --out DIR        where the .deb files go (default target/package)
  --version V      package version (default: the workspace's version)
  --compression C  xz (default) | gzip | none
EOF
}

fail() {
  echo "build-deb.sh: $*" >&2
  exit 1
}

arches=()
agent_bin=""
cli_bin=""
out=""
version=""
compression=xz
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) arches+=("${2:?--arch needs a value}"); shift 2 ;;
    --agent) agent_bin="${2:?--agent needs a path}"; shift 2 ;;
    --cli) cli_bin="${2:?--cli needs a path}"; shift 2 ;;
    --out) out="${2:?--out needs a directory}"; shift 2 ;;
    --version) version="${2:?--version needs a value}"; shift 2 ;;
    --compression) compression="${2:?--compression needs a value}"; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "build-deb.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ "${#arches[@]}" -gt 0 ] || arches=(amd64 arm64 armhf)
case "$compression" in xz | gzip | none) ;; *) fail "--compression $compression: use xz, gzip or none" ;; esac
if [ -n "$agent_bin$cli_bin" ] && [ "${#arches[@]}" -ne 1 ]; then
  fail "--agent and --cli name one architecture's binaries: give exactly one --arch"
fi
for t in dpkg-deb readelf md5sum; do
  command -v "$t" >/dev/null || fail "$t not found (Debian packages dpkg, binutils, coreutils)"
done

# The workspace's version (the agent's) and cargo's target directory.
workspace_version() {
  local id
  id=$(cd "$repo" && cargo pkgid -p shturman-agent)
  echo "${id##*[@#]}"
}
if [ -z "$version" ]; then
  version=$(workspace_version)
fi
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || fail "version '$version' is not a Debian version"
target_dir=""
target() {
  [ -n "$target_dir" ] || target_dir=$(cd "$repo" && cargo metadata --format-version 1 --no-deps |
    grep -o '"target_directory":"[^"]*"' | sed 's/.*:"\(.*\)"/\1/')
  echo "$target_dir"
}
[ -n "$out" ] || out="$(target)/package"
mkdir -p "$out"
out=$(cd "$out" && pwd)

# Reproducible packages: dpkg-deb clamps every mtime to SOURCE_DATE_EPOCH.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || echo 1577836800)
fi
export SOURCE_DATE_EPOCH
maintainer="${DEBFULLNAME:-Shturman maintainers} <${DEBEMAIL:-maintainers@shturman.invalid}>"

# Staging dirs, removed when the script ends.
scratch_dirs=()
trap 'rm -rf "${scratch_dirs[@]}"' EXIT
scratch() {
  scratch_dirs+=("$(mktemp -d)")
}

# The ELF machine readelf reports for each Debian architecture.
machine_of() {
  case "$1" in
    amd64) echo "Advanced Micro Devices X86-64" ;;
    arm64) echo "AArch64" ;;
    armhf) echo "ARM" ;;
    *) return 1 ;;
  esac
}

# Checks that $1 is an executable for Debian architecture $2.
check_binary() {
  local bin=$1 arch=$2 machine
  [ -f "$bin" ] || fail "$bin not found: build it with cross/build.sh (or pass its path)"
  machine=$(readelf -h "$bin" 2>/dev/null | sed -n 's/^ *Machine: *//p') ||
    fail "$bin is not an ELF executable"
  [ "$machine" = "$(machine_of "$arch")" ] || fail "$bin is built for '$machine', not $arch"
}

# The Depends line of a binary: nothing for a static one; for a glibc one,
# libc6 at the newest symbol version it uses, and libgcc-s1 when it needs
# libgcc_s (Rust's unwinder).
depends_of() {
  local bin=$1 needed glibc deps=()
  needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  [ -n "$needed" ] || return 0
  for lib in $needed; do
    case "$lib" in
      libc.so.6 | libm.so.6 | libdl.so.2 | libpthread.so.0 | librt.so.1 | ld-linux*) ;;
      libgcc_s.so.1) deps+=("libgcc-s1") ;;
      *) fail "$bin needs $lib: add its Debian package to depends_of in $0" ;;
    esac
  done
  glibc=$(readelf -W -V "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
  deps=("libc6${glibc:+ (>= $glibc)}" "${deps[@]}")
  local IFS=,
  echo "${deps[*]}" | sed 's/,/, /g'
}

# Writes DEBIAN/md5sums, Installed-Size and the control file, then the .deb.
# $1 staging dir, $2 package, $3 arch, $4 binary (for Depends), $5 control
# fields after Depends (Recommends, Suggests, Description…).
finish() {
  local stage=$1 pkg=$2 arch=$3 bin=$4 extra=$5 size depends
  (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
  chmod 0644 "$stage/DEBIAN/md5sums"
  size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
  depends=$(depends_of "$bin")
  {
    echo "Package: $pkg"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $size"
    [ -z "$depends" ] || echo "Depends: $depends"
    echo "Section: admin"
    echo "Priority: optional"
    printf '%s\n' "$extra"
  } >"$stage/DEBIAN/control"
  chmod 0644 "$stage/DEBIAN/control"
  local deb="$out/${pkg}_${version}_${arch}.deb"
  dpkg-deb --root-owner-group -Z"$compression" --build "$stage" "$deb" >/dev/null
  printf '%s\t%s bytes\n' "$deb" "$(stat -c %s "$deb")"
}

# usr/share/doc/<pkg>/copyright, as Debian policy asks.
copyright() {
  install -d -m 0755 "$1/usr/share/doc/$2"
  cat >"$1/usr/share/doc/$2/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: shturman

Files: *
Copyright: The Shturman authors
License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF
  chmod 0644 "$1/usr/share/doc/$2/copyright"
}

agent_deb() {
  local arch=$1 bin=$2 stage
  check_binary "$bin" "$arch"
  scratch
  stage=${scratch_dirs[-1]}
  chmod 0755 "$stage"
  install -d -m 0755 "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/systemd/system" "$stage/etc"
  install -d -m 0700 "$stage/etc/shturman"
  install -m 0755 "$bin" "$stage/usr/bin/shturman-agent"
  install -m 0644 "$here/shturman-agent.service" "$stage/usr/lib/systemd/system/shturman-agent.service"
  # The join token goes in here: readable by root only.
  install -m 0600 "$here/agent.yaml" "$stage/etc/shturman/agent.yaml"
  copyright "$stage" shturman-agent
  echo /etc/shturman/agent.yaml >"$stage/DEBIAN/conffiles"
  chmod 0644 "$stage/DEBIAN/conffiles"
  for s in postinst prerm postrm; do
    install -m 0755 "$here/debian/shturman-agent.$s" "$stage/DEBIAN/$s"
  done
  finish "$stage" shturman-agent "$arch" "$bin" "Recommends: containerd, ca-certificates, iproute2
Suggests: shturman
Description: Shturman edge agent: runs pods on this machine
 The edge agent of Shturman, a Kubernetes-style orchestrator for edge
 fleets. It dials out to the control plane's MQTT broker, joins with a
 token and runs the pods scheduled to this node: WebAssembly modules in
 wasmtime sandboxes, and OCI containers through containerd's CRI service
 when containerd is installed.
 .
 Configure /etc/shturman/agent.yaml, then: systemctl enable --now
 shturman-agent."
}

cli_deb() {
  local arch=$1 bin=$2 stage
  check_binary "$bin" "$arch"
  scratch
  stage=${scratch_dirs[-1]}
  chmod 0755 "$stage"
  install -d -m 0755 "$stage/DEBIAN" "$stage/usr/bin"
  install -m 0755 "$bin" "$stage/usr/bin/shturman"
  copyright "$stage" shturman
  finish "$stage" shturman "$arch" "$bin" "Description: Shturman control plane and command-line client
 Shturman is a Kubernetes-style orchestrator for edge fleets. The shturman
 command runs the control plane (shturman control) or a whole one-node
 cluster (shturman up), creates join tokens for edge nodes, and is the
 client: apply, get, describe, logs, drain and more, as in kubectl."
}

for arch in "${arches[@]}"; do
  machine_of "$arch" >/dev/null || fail "unknown architecture '$arch': use amd64, arm64 or armhf"
  if [ -n "$agent_bin$cli_bin" ]; then
    [ -z "$agent_bin" ] || agent_deb "$arch" "$agent_bin"
    [ -z "$cli_bin" ] || cli_deb "$arch" "$cli_bin"
  else
    agent_deb "$arch" "$(target)/cross/$arch/shturman-agent"
    cli_deb "$arch" "$(target)/cross/$arch/shturman"
  fi
done
