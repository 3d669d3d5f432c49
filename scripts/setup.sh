#!/usr/bin/env bash
# Installs what building and testing Shturman needs on Debian or Ubuntu:
# Debian packages (only those missing) and Rust components. Idempotent.
# Arguments name more packages to install the same way (scripts/bench.sh
# passes the ones only the benchmarks use).
set -euo pipefail

# Debian packages the build and the end-to-end tests use. The tests start
# every service themselves, on free loopback ports under their own temp dirs:
# - mosquitto: one scenario runs against a real external broker;
# - openssl: `openssl s_server` serves Wasm modules over https;
# - containerd, runc, containernetworking-plugins: OCI pods (kubelet's route:
#   containerd's CRI service with the CNI bridge + host-local plugins);
# - docker-registry, skopeo, busybox-static: a local OCI registry, and the
#   busybox image the tests build as an OCI layout and push there;
# - protobuf-compiler: the containerd/CRI and etcd gRPC crates need protoc.
# - etcd-server: the etcd store backend's tests run a private etcd.
# - haproxy, wrk: the `proxy` benchmark's anchor and its load generator.
# - gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf: cross/build.sh links the
#   arm64 and armhf agents with them (and their cross libc); qemu-user-static
#   runs the arm64 agent in the end-to-end test (tests/cross_aarch64.rs).
PACKAGES=(gcc pkg-config mosquitto openssl containerd runc containernetworking-plugins
  docker-registry skopeo busybox-static protobuf-compiler etcd-server iproute2 haproxy wrk
  gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf qemu-user-static "$@")

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
  # The package starts a system-wide broker on 127.0.0.1:1883, the port
  # `shturman control` and `shturman up` embed theirs on by default. The
  # tests start their own Mosquitto: keep the service off if we installed it.
  # Likewise containerd, docker-registry, haproxy and etcd (package
  # etcd-server, 127.0.0.1:2379): tests and benchmarks run their own.
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    for pkg_svc in mosquitto:mosquitto containerd:containerd docker-registry:docker-registry \
      haproxy:haproxy etcd-server:etcd; do
      if [[ " ${missing[*]} " == *" ${pkg_svc%%:*} "* ]]; then
        $SUDO systemctl disable --now "${pkg_svc#*:}" >/dev/null 2>&1 || true
      fi
    done
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found; install a Rust toolchain (https://rustup.rs) and run again" >&2
  exit 1
fi
if command -v rustup >/dev/null; then
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  # The Rust standard libraries cross/build.sh links against (see
  # cross/README.md; armv7-unknown-linux-musleabihf is added there on demand).
  installed_targets=$(rustup target list --installed 2>/dev/null)
  for t in aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf aarch64-unknown-linux-musl; do
    grep -qx "$t" <<<"$installed_targets" || rustup target add "$t"
  done
fi
