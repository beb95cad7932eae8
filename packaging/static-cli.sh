#!/usr/bin/env bash
# Builds the command statically linked (glibc, static-pie) as
# $CARGO_TARGET_DIR/release/ldsaref-static (target/ by default): the
# `ldsaref` the package installs and the IPsec guest test runs.
#
# Why: IKE daemons run `ldsaref updown` for every tunnel event and wait for
# it (charon holds its event bus meanwhile), so its start-up is on every
# tunnel's path. Without the dynamic loader's work (two libraries mapped,
# symbols bound at start) a call in the emulated guest took 106 ms instead
# of 158 (median of 84 up-client calls each, scripts/ipsec-e2e.sh --only
# churn --daemon strongswan --variant marks), ~0.3 ms less natively.
#
# A separate cargo run with its own target directory: crt-static would
# drop the library's cdylib, and the flags would otherwise rebuild the
# workspace's dependencies every time one or the other is built. The
# command calls none of glibc's NSS or dlopen paths (no user, group or
# host name lookups), which static glibc cannot serve.
set -euo pipefail
cd "$(dirname "$0")/.."

target_dir=${CARGO_TARGET_DIR:-target}
case $target_dir in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    CARGO_TARGET_DIR="$target_dir/static" \
    cargo build --release --quiet -p ldsaref-cli --target "$triple"
mkdir -p "$target_dir/release"
install -m 755 "$target_dir/static/$triple/release/ldsaref" "$target_dir/release/ldsaref-static"
echo "$target_dir/release/ldsaref-static"
