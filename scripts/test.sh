#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every unit and
# integration test. Tests that need root (network namespaces, SO_MARK)
# say SKIPPED when run without it. Ends with one line of totals.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --workspace
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" 2>&1 | tee "$log" || status=$?
# cargo prints one "test result" line per test binary; add them up.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$log" | tee "${LDSAREF_TEST_SUMMARY:-/dev/null}"
exit "$status"
