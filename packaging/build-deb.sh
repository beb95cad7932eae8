#!/usr/bin/env bash
# Builds target/debian/ldsaref_<version>_<arch>.deb: the release build of
# the whole workspace (the command and the library are two packages), the
# command statically linked (packaging/static-cli.sh), the shell
# completions generated from the command itself, then cargo-deb.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: the asset syntax of [package.metadata.deb] is cargo-deb's.
CARGO_DEB_VERSION=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb ${CARGO_DEB_VERSION}" ]; then
    cargo install cargo-deb --version "${CARGO_DEB_VERSION}" --locked
fi

arch=$(dpkg --print-architecture)
if [ "$arch" != amd64 ]; then
    # The library's multiarch path is written out in the package metadata.
    echo "build-deb: the package metadata installs the library in /usr/lib/x86_64-linux-gnu; adjust it for $arch" >&2
    exit 1
fi

cargo build --release --workspace
# The command the package installs: statically linked (see the script).
packaging/static-cli.sh >/dev/null
target_dir=${CARGO_TARGET_DIR:-target}
out="$target_dir/release/completions"
mkdir -p "$out"
"$target_dir/release/ldsaref" completions bash > "$out/ldsaref.bash"
"$target_dir/release/ldsaref" completions zsh > "$out/_ldsaref"
"$target_dir/release/ldsaref" completions fish > "$out/ldsaref.fish"

# Stripped: the release profile keeps debug info for backtraces in tests.
cargo deb -p ldsaref-cli --no-build --strip "$@"
