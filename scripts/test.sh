#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every unit and
# integration test. Tests that need root (network namespaces, SO_MARK)
# say SKIPPED when run without it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace
cargo test --workspace "$@"
