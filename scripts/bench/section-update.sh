#!/usr/bin/env bash
# What a connection's down and up costs `ldsaref apply` (the cgroup
# backend), by the way its one section is written: its elements over
# netlink (no port rules, so no port chain changes) against the same
# change through `nft -f` (the connection also has a port rule, so its
# port chain comes and goes and only nft can write it).
#
#   sudo scripts/bench/section-update.sh [--sizes "0 100000"] [--rounds 15]
#
# In a network namespace of its own (deleted on exit), with N generated
# global rules (scripts/bench/genrules.py) beside the connection's
# profile, the rules file goes from "up" to "down" (the profile's rules
# gone, as updown --on-down remove leaves them) and back, `rounds` times
# per way, the two ways interleaved round by round. Prints the median
# wall time of one `ldsaref apply` (the process, all in) per size, way
# and direction, and the ratio nft / netlink.
# LDSAREF_BIN=PATH measures that ldsaref binary instead of this tree's.
set -euo pipefail
cd "$(dirname "$0")/../.."
sizes="0 100000"
rounds=15
while (($#)); do
    case $1 in
        --sizes) sizes=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "section-update.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ "$(id -u)" -eq 0 ] || { echo "section-update.sh: needs root" >&2; exit 1; }
bin=${LDSAREF_BIN:-}
if [ -z "$bin" ]; then
    cargo build --release -q -p ldsaref
    bin=target/release/ldsaref
fi
work=$(mktemp -d /tmp/ldsaref-secbench.XXXXXX)
ns=ldsaref-secbench-$$
cleanup() {
    nsenter --net="/run/netns/$ns" "$bin" apply --remove >/dev/null 2>&1 || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
apply() { # rules-content
    cat >"$work/rules.new"
    mv "$work/rules.new" "$work/rules"
    local t0 t1 out
    t0=$(date +%s%N)
    out=$(nsenter --net="/run/netns/$ns" "$bin" apply --rules "$work/rules")
    t1=$(date +%s%N)
    echo "$out" | grep -q "table inet ldsaref" || { echo "apply: $out" >&2; exit 1; }
    printf '%s\t%s\n' "$(((t1 - t0) / 1000))" "$(echo "$out" | head -1)"
}
median() { sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
echo "| global rules | way | down (ms) | up (ms) |"
echo "|---:|---|---:|---:|"
for n in $sizes; do
    if [ "$n" -eq 0 ]; then : >"$work/global"; else python3 scripts/bench/genrules.py "$n" >"$work/global"; fi
    conn='[conn]\n198.18.0.0/24 saref 101\n'
    ports='198.18.0.0/24 tcp 22 saref 102\n'
    # Installed once, whole, and the connection taken down: the same
    # shape throughout.
    { cat "$work/global"; printf "$conn"; } | apply >/dev/null
    apply <"$work/global" >/dev/null
    : >"$work/times"
    for ((r = 0; r < rounds; r++)); do
        for way in netlink nft; do
            extra=""
            [ "$way" = nft ] && extra=$ports
            line=$({ cat "$work/global"; printf "$conn$extra"; } | apply)
            printf '%s\tup\t%s\n' "$way" "$line" >>"$work/times"
            line=$(apply <"$work/global")
            printf '%s\tdown\t%s\n' "$way" "$line" >>"$work/times"
        done
    done
    # Each way must have been written the way it is named.
    if grep -P '^netlink\t' "$work/times" | grep -qv 'over netlink'; then
        echo "section-update.sh: a netlink round went through nft:" >&2
        grep -P '^netlink\t' "$work/times" | grep -v 'over netlink' | head -3 >&2
        exit 1
    fi
    if grep -P '^nft\t' "$work/times" | grep -q 'over netlink'; then
        echo "section-update.sh: an nft round went over netlink" >&2
        exit 1
    fi
    declare -A med=()
    for way in netlink nft; do
        for dir in down up; do
            med[$way.$dir]=$(awk -F'\t' -v w="$way" -v d="$dir" '$1 == w && $2 == d {print $3 / 1000}' "$work/times" | median)
        done
        echo "| $n | $way | ${med[$way.down]} | ${med[$way.up]} |"
    done
    awk -v a="${med[nft.down]}" -v b="${med[netlink.down]}" -v c="${med[nft.up]}" -v d="${med[netlink.up]}" \
        -v n="$n" 'BEGIN {printf "| %s | nft / netlink | %.2f× | %.2f× |\n", n, a / b, c / d}'
    unset med
done
