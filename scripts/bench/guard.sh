#!/usr/bin/env bash
# What `ldsaref updown`'s netfilter guard (table inet ldsaref_guard, one
# chain per marked connection, see crates/ldsaref-cli/src/updown/guard.rs)
# costs every packet the gateway sends.
#
#   sudo scripts/bench/guard.sh [--guards "2 100"]
#
# In a network namespace of its own (loopback only, deleted on exit),
# scripts/bench/hotpath.c sends UDP datagrams (sendto) to 127.0.0.1,
# unmarked and with its own SO_MARK cmsg (mark 1, a guarded mark: the
# packet walks every guard chain and matches none, 127.0.0.1 being in no
# guarded network), side by side, round after round, with no guard table
# and with the table `ldsaref updown` builds for each count of --guards
# connections (installed by real up-client calls, marks 1..N, networks
# 198.18.0.0/24 and up). Prints a markdown table of the medians over
# ROUNDS rounds (default 5) of CPU ns per call, and their ratio to no table.
# LDSAREF_BIN=PATH measures that ldsaref binary instead of building this
# tree's.
set -euo pipefail
cd "$(dirname "$0")/../.."
guards="2 100"
while (($#)); do
    case $1 in
        --guards) guards=$2; shift 2 ;;
        -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "guard.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
rounds=${ROUNDS:-5}
n=${UDP_N:-200000}
[ "$(id -u)" -eq 0 ] || { echo "guard.sh: needs root" >&2; exit 1; }

work=$(mktemp -d /tmp/ldsaref-guardbench.XXXXXX)
ns=ldsaref-guardbench-$$
trap 'ip netns del "$ns" 2>/dev/null || true; rm -rf "$work"' EXIT
. scripts/bench/tools.sh
bench_tools "$work"
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
in_ns() { ip netns exec "$ns" "$@"; }

# The table of `count` connections, as updown builds it (one up-client
# each), saved so that the rounds can load and remove it.
for count in $guards; do
    in_ns nft delete table inet ldsaref_guard 2>/dev/null || true
    for ((i = 1; i <= count; i++)); do
        in_ns env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin PLUTO_VERSION=1.1 PLUTO_VERB=up-client \
            PLUTO_CONNECTION="g$i" PLUTO_MY_CLIENT=203.0.113.1/32 \
            PLUTO_PEER_CLIENT="198.$((18 + i / 256)).$((i % 256)).0/24" PLUTO_MARK_OUT="$i/0xffffffff" \
            "$cli" updown --dir "$work/rules.d" --no-block-policy >/dev/null
    done
    in_ns nft list table inet ldsaref_guard >"$work/guard$count.nft"
    chains=$(grep -c 'jump g_' "$work/guard$count.nft")
    [ "$chains" -eq "$count" ] || { echo "guard.sh: $chains guard chains for $count connections" >&2; exit 1; }
    in_ns nft delete table inet ldsaref_guard
done

load() { # label
    in_ns nft delete table inet ldsaref_guard 2>/dev/null || true
    [ "$1" = none ] || in_ns nft -f "$work/${1}.nft"
}
labels="none"
for count in $guards; do labels="$labels guard$count"; done
raw=$work/raw
for ((r = 1; r <= rounds; r++)); do
    for label in $labels; do
        load "$label"
        for mode in udp udp-mark; do
            # "MODE N wall_ns cpu_ns"
            set -- $(in_ns "$driver" "$mode" "$n" 1)
            echo "$label $mode $4" >>"$raw"
        done
    done
done
in_ns nft delete table inet ldsaref_guard 2>/dev/null || true

python3 - "$raw" "$labels" "$n" "$rounds" <<'EOF'
import sys, statistics
raw, labels, n, rounds = sys.argv[1], sys.argv[2].split(), sys.argv[3], sys.argv[4]
d = {}
for line in open(raw):
    label, mode, cpu = line.split()
    d.setdefault((label, mode), []).append(float(cpu))
print(f"UDP sendto to 127.0.0.1, {n} calls, median of {rounds} rounds, CPU ns per call (ratio to no table)")
print()
print("| table | unmarked | marked (mark 1, guarded) |")
print("|---|---|---|")
for label in labels:
    cells = []
    for mode in ("udp", "udp-mark"):
        m = statistics.median(d[(label, mode)])
        base = statistics.median(d[("none", mode)])
        cells.append(f"{m:.0f} ({m / base:.2f}x)")
    name = "no guard table" if label == "none" else f"{label[5:]} guards"
    print(f"| {name} | {cells[0]} | {cells[1]} |")
EOF
