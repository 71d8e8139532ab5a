#!/bin/bash
# Install what hablock needs to build, test, benchmark and demo on Debian 12.
# Idempotent: apt-get runs only when a package is missing. Run as root.
set -euo pipefail

packages=(
  # build
  gcc meson ninja-build pkg-config
  clang libclang-rt-14-dev   # the fuzz build (libFuzzer)
  nbdkit nbdkit-plugin-dev liburing-dev libaio-dev libssl-dev libinih-dev libcmocka-dev
  # clients and tools used by the tests, the demo and the benchmark
  libnbd-bin python3-libnbd fuse3 fio   # libnbd-bin carries nbdfuse qemu-utils qemu-system-x86 qemu-block-extra
  e2fsprogs util-linux openssl iproute2 nftables procps psmisc
  # the kernel NBD client test: a tiny VM with Debian's kernel and nbd-client
  linux-image-amd64 busybox-static nbd-client cpio
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing ${missing[*]}: run as root" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
