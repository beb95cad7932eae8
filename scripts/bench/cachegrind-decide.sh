#!/bin/bash
# Instructions and cache misses per `Policy::decide`, counted by cachegrind,
# with the rules parsed or read from their compiled index: the same figures
# whatever else the machine is doing.
#
#   scripts/bench/cachegrind-decide.sh RULES [parsed|index] [LL_BYTES] [PROBE]
#
# Runs the decide_probe example (built here unless PROBE, a built binary,
# is given, e.g. an older build to compare with) over its mixed list of
# 64k destinations, once with 1 pass and once with 3, and prints the
# difference per decision, which leaves out loading the rules (and, for
# `index`, compiling and opening the index). LL_BYTES is the simulated
# last-level cache (default 8 MiB; 2 MiB models this machine's L2, 16-way,
# 64-byte lines). Needs valgrind. Rules: scripts/bench/genrules.py.
set -euo pipefail
rules=${1:?usage: cachegrind-decide.sh RULES [parsed|index] [LL_BYTES] [PROBE]}
mode=${2:-parsed}
ll=${3:-8388608}
probe=${4:-}
case $mode in
    parsed) arg=() ;;
    index) arg=(index) ;;
    *) echo "mode: parsed or index, not $mode" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../.."
if [ -z "$probe" ]; then
    cargo build --release -q -p ldsaref-rules --example decide_probe
    probe=target/release/examples/decide_probe
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
summary() {
    valgrind --tool=cachegrind --cache-sim=yes --LL="$ll,16,64" \
        --cachegrind-out-file="$out/cg.$1" "$probe" "$rules" "$1" "${arg[@]}" >/dev/null 2>&1
    # Events: Ir I1mr ILmr Dr D1mr DLmr Dw D1mw DLmw
    grep '^summary:' "$out/cg.$1" | cut -d' ' -f2-
}
one=$(summary 1)
three=$(summary 3)
python3 - "$one" "$three" "$mode" <<'PY'
import sys
one, three = (list(map(int, a.split())) for a in sys.argv[1:3])
per = [(b - a) / (2 * 65536) for a, b in zip(one, three)]
print(f"{sys.argv[3]}: per decision: {per[0]:.1f} instructions, {per[4]:.3f} L1 read misses, "
      f"{per[5]:.3f} last-level read misses")
PY
