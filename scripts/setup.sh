#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine.
# Idempotent; needs root (or sudo) only when something is missing.
set -euo pipefail

# golang-go, liburing-dev, busybox-static: the programs the cgroup backend is
# proven on (tests/cgroup_programs.rs).
packages=(strace curl socat netcat-openbsd python3 iproute2 gcc libc6-dev binutils gdb nftables dpkg-dev groff-base man-db g++ libcap2-bin golang-go liburing-dev busybox-static)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust) is needed: https://rustup.rs" >&2; exit 1; }
