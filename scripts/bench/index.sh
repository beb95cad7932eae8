#!/usr/bin/env bash
# The compiled rules index (issue 14), side by side in one run: start-up
# to the first steered socket call, memory of one wrapped process (USS,
# PSS) and of 100 at once, with the rules parsed from their text (no
# index) and mapped from their compiled index, at 100k and 1M rules; and
# the time and size of compiling 1M rules.
#
#   sudo scripts/bench/index.sh          # ROUNDS=5 by default
#
# Prints a Markdown table (BENCHMARKS.md has the last one). Needs root
# (the steering rule sets SO_MARK). Traffic: one datagram per process to
# 127.0.0.1:9, nothing else. Uses target/release (built here).
set -euo pipefail

main() {
cd "$(dirname "$0")/../.."
rounds=${ROUNDS:-5}
py=/usr/bin/python3
work=$(mktemp -d /tmp/ldsaref-index-bench.XXXXXX)
pids=()
cleanup() {
    if ((${#pids[@]})); then kill "${pids[@]}" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT
step() { printf '\n== %s\n' "$*" >&2; }
median() { sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }

step "build (release)"
nice -n 10 cargo build --release -p ldsaref -p ldsaref-cli >&2
lib=$work/libldsaref.so
cli=$work/ldsaref
cp target/release/libldsaref.so "$lib"
cp target/release/ldsaref "$cli"
drv=$work/firstcall
gcc -O2 -Wall -Wextra -o "$drv" scripts/bench/firstcall.c

step "rules: 100k and 1M, parsed (no index) and compiled"
for n in 100k 1M; do
    count=${n/k/000}
    count=${count/M/000000}
    for kind in text index; do
        mkdir -p "$work/$kind-$n"
    done
    $py scripts/bench/genrules.py "$count" --append "127.0.0.1/32 udp mark 0x4d" >"$work/text-$n/rules"
    cp "$work/text-$n/rules" "$work/index-$n/rules"
done
mkdir -p "$work/index-1"
echo "127.0.0.1/32 udp mark 0x4d" >"$work/index-1/rules"
chmod -R go-w "$work"
sleep 0.1
for d in index-1 index-100k index-1M; do
    /usr/bin/time -f '%e s %M KiB' -o "$work/compile-$d.time" "$cli" compile --rules "$work/$d/rules" >&2
done
compile_s=$(cut -d' ' -f1 "$work/compile-index-1M.time")
compile_kib=$(cut -d' ' -f3 "$work/compile-index-1M.time")
size_1m=$(stat -c %s "$work/index-1M/rules.index")
size_100k=$(stat -c %s "$work/index-100k/rules.index")
bytes_1m=$(stat -c %s "$work/text-1M/rules")

variants=(none lib-1rule text-100k index-100k text-1M index-1M)
envof() {
    case $1 in
        none) echo "env" ;;
        lib-1rule) echo "env LD_PRELOAD=$lib LDSAREF_RULES=$work/index-1/rules" ;;
        *) echo "env LD_PRELOAD=$lib LDSAREF_RULES=$work/$1/rules" ;;
    esac
}
clean_env=(env -u LD_PRELOAD -u LDSAREF_RULES -u LDSAREF_PROFILE -u LDSAREF_MODE
    -u LDSAREF_ON_ERROR -u LDSAREF_LOG -u IPSEC_SAREF -u LDSAREF_PROBE)

step "start-up: exec to exit, one socket() + sendto(), $rounds rounds x 4 runs"
for r in $(seq "$rounds"); do
    for k in "${!variants[@]}"; do
        v=${variants[$(((k + r) % ${#variants[@]}))]}
        # shellcheck disable=SC2046
        "${clean_env[@]}" "$drv" spawn 4 $(envof "$v") "$drv" once >>"$work/start-$v"
        # shellcheck disable=SC2046
        "${clean_env[@]}" $(envof "$v") "$drv" once >>"$work/first-$v"
    done
done
declare -A start first
for v in "${variants[@]}"; do
    start[$v]=$(median <"$work/start-$v")
    first[$v]=$(median <"$work/first-$v")
    printf '  %-11s start %10.1f us  first call %10.1f us\n' "$v" "${start[$v]}" "${first[$v]}" >&2
done

# USS (private), PSS of a process that made its first steered call.
mem() { # pid -> "uss_kib pss_kib index_pss_kib"
    awk '/^Private_(Clean|Dirty):/ {u += $2} /^Pss:/ {p += $2} END {printf "%d %d ", u, p}' "/proc/$1/smaps_rollup"
    awk '/^[0-9a-f]+-[0-9a-f]+ / {inidx = ($NF ~ /rules\.index$/)} inidx && /^Pss:/ {s += $2} END {printf "%d\n", s}' "/proc/$1/smaps"
}
start_stay() { # variant -> pid (ready)
    local out=$work/stay.$RANDOM$RANDOM
    # shellcheck disable=SC2046
    "${clean_env[@]}" $(envof "$1") "$drv" stay >"$out" &
    local pid=$!
    for _ in $(seq 3000); do
        grep -q ready "$out" 2>/dev/null && break
        sleep 0.01
    done
    echo "$pid"
}

step "memory of one wrapped process, $rounds rounds"
declare -A uss pss
for r in $(seq "$rounds"); do
    for v in "${variants[@]}"; do
        pid=$(start_stay "$v")
        mem "$pid" >>"$work/mem-$v"
        kill "$pid"
        wait "$pid" 2>/dev/null || true
    done
done
for v in "${variants[@]}"; do
    uss[$v]=$(cut -d' ' -f1 "$work/mem-$v" | median)
    pss[$v]=$(cut -d' ' -f2 "$work/mem-$v" | median)
    printf '  %-11s USS %8d KiB  PSS %8d KiB\n' "$v" "${uss[$v]}" "${pss[$v]}" >&2
done

step "100 wrapped processes at once (1M rules, index), and 100 without the library"
declare -A pss100 idx100
for v in none lib-1rule index-1M; do
    pids=()
    for _ in $(seq 100); do pids+=("$(start_stay "$v")"); done
    total=0
    itotal=0
    for pid in "${pids[@]}"; do
        read -r _ p i < <(mem "$pid")
        total=$((total + p))
        itotal=$((itotal + i))
    done
    kill "${pids[@]}"
    wait 2>/dev/null || true
    pids=()
    pss100[$v]=$total
    idx100[$v]=$itotal
    printf '  %-11s PSS of 100: %8d KiB (of which the index mapping %d KiB)\n' "$v" "$total" "$itotal" >&2
done
pid=$(start_stay index-1M)
read -r _ _ idx1 < <(mem "$pid")
kill "$pid"
wait 2>/dev/null || true

kib() { awk -v k="$1" 'BEGIN {printf "%.2f MiB", k / 1024}'; }
ms() { awk -v u="$1" 'BEGIN {printf "%.2f ms", u / 1000}'; }
dms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.2f ms", (a - b) / 1000}'; }
dkib() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%+.2f MiB", (a - b) / 1024}'; }
cat <<TABLE

Compiled rules index (scripts/bench/index.sh, ROUNDS=$rounds, $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)):

| variant | start to exit (median) | vs none | first socket()+sendto() | USS | USS vs none | PSS |
|---|---|---|---|---|---|---|
TABLE
for v in "${variants[@]}"; do
    echo "| $v | $(ms "${start[$v]}") | $(dms "${start[$v]}" "${start[none]}") | $(ms "${first[$v]}") | $(kib "${uss[$v]}") | $(dkib "${uss[$v]}" "${uss[none]}") | $(kib "${pss[$v]}") |"
done
cat <<TABLE

| 100 processes at once | total PSS | minus 100 without the library | minus 100 with a 1-rule index | index mapping's PSS, all 100 | one alone |
|---|---|---|---|---|---|
| index-1M | $(kib "${pss100[index-1M]}") | $(dkib "${pss100[index-1M]}" "${pss100[none]}") | $(dkib "${pss100[index-1M]}" "${pss100[lib-1rule]}") | $(kib "${idx100[index-1M]}") | $(kib "$idx1") |

Compiling 1M rules ($(kib $((bytes_1m / 1024))) of text): ${compile_s} s, peak RSS $(kib "$compile_kib"); index $(kib $((size_1m / 1024))) (100k rules: $(kib $((size_100k / 1024)))).
TABLE
}

main "$@"
