#!/bin/bash
# Instructions and cache misses per lookup, counted by cachegrind: the same
# figures whatever else the machine is doing.
#
#   scripts/bench/cachegrind-lookup.sh RULES [LL_BYTES] [PROBE]
#
# Runs the lookup_probe example (built here unless PROBE, a built binary,
# is given, e.g. an older build to compare with) over its mixed list of
# 64k destinations, once with 1 pass and once with 3, and prints the
# difference per lookup, which leaves out loading the rules. LL_BYTES is
# the simulated last-level cache (default 8 MiB, this machine's L3; 1 MiB
# models its L2, 16-way, 64-byte lines). Needs valgrind.
set -euo pipefail
rules=${1:?usage: cachegrind-lookup.sh RULES [LL_BYTES] [PROBE]}
ll=${2:-8388608}
probe=${3:-}
cd "$(dirname "$0")/../.."
if [ -z "$probe" ]; then
    cargo build --release -q -p ldsaref-rules --example lookup_probe
    probe=target/release/examples/lookup_probe
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
summary() {
    valgrind --tool=cachegrind --cache-sim=yes --LL="$ll,16,64" \
        --cachegrind-out-file="$out/cg.$1" "$probe" "$rules" "$1" >/dev/null 2>&1
    # Events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw
    grep '^summary:' "$out/cg.$1" | cut -d' ' -f2-
}
one=$(summary 1)
three=$(summary 3)
python3 - "$one" "$three" <<'PY'
import sys
one, three = (list(map(int, a.split())) for a in sys.argv[1:3])
per = [(b - a) / (2 * 65536) for a, b in zip(one, three)]
print(f"per lookup: {per[0]:.1f} instructions, {per[4]:.3f} L1 read misses, "
      f"{per[5]:.3f} last-level read misses")
PY
