#!/usr/bin/env bash
# The benchmarks: one table, printed and written to BENCHMARKS.md with the
# command and the machine, and plots in docs/bench-scaling.png and (the
# cgroup backend, scripts/bench/cgroup.sh) docs/bench-cgroup.png.
#
#   sudo scripts/bench.sh          # a few minutes: reduced counts
#   sudo scripts/bench.sh --full   # the sizes the targets are stated for:
#                                  # 1M sendto, 50k connects, 200k packets
#                                  # through the chains, every table size
#
# Needs root: SO_MARK, a network namespace of its own for the nftables
# chain. Traffic only ever goes to loopback (127.0.0.1), in this namespace
# or in the one it creates; the namespace has no other interface and no
# route out, and is deleted on exit.
#
# Every figure is a median over ROUNDS runs (default 5; ROUNDS=7 ... to
# change), and the variants being compared run interleaved, round after
# round, so that a colleague's build slows them alike. Targets are
# reported, never asserted: the script exits 0 whatever it measured.
set -euo pipefail

# All of it in one function, which bash reads whole before running: editing
# the script during a run cannot change what the run does.
main() {
cd "$(dirname "$0")/.."
root=$PWD

full=0
for arg in "$@"; do
    case $arg in
        --full) full=1 ;;
        -h | --help)
            sed -n '2,18p' "$0"
            exit 0
            ;;
        *)
            echo "bench: unknown argument $arg (only --full)" >&2
            exit 2
            ;;
    esac
done
command_line="scripts/bench.sh${1:+ $*}"
rounds=${ROUNDS:-5}
if ((full)); then
    udp_n=1000000 tcp_n=50000 chain_n=200000 cg_udp=(5000 25000) cg_tcp=(500 2500)
else
    udp_n=200000 tcp_n=10000 chain_n=50000 cg_udp=(2000 10000) cg_tcp=(200 1000)
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "bench: needs root (SO_MARK, network namespaces, nftables)" >&2
    exit 1
fi

# The benchmark's own packages (the tests do not need them).
packages=(gcc libc6-dev python3 python3-matplotlib hyperfine valgrind strace nftables iproute2 time)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "bench: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's interpreter, where python3-matplotlib is.
py=/usr/bin/python3

work=$(mktemp -d /tmp/ldsaref-bench.XXXXXX)
ns=ldsaref-bench-$$
cleanup() {
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
raw=$work/raw.tsv
: >"$raw"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$raw"; }
median() { sort -g | awk '{v[NR]=$1} END {if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
step() { printf '\n== %s\n' "$*" >&2; }

step "build (release)"
cargo build --release --workspace
# A private copy: a colleague's build must not swap the library mid-run.
lib=$work/libldsaref.so
cli=$work/ldsaref
cp target/release/libldsaref.so "$lib"
cp target/release/ldsaref "$cli"
driver=$work/hotpath
gcc -O2 -Wall -Wextra -o "$driver" scripts/bench/hotpath.c
emu=$work/libklipsemu.so
gcc -shared -fPIC -O2 -o "$emu" tests/emu/klips_emu.c -ldl -lpthread

record machine cpu "$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
record machine cores "$(nproc)"
record machine kernel "$(uname -r)"
record machine rustc "$(rustc -V)"
record machine gcc "$(gcc -dumpfullversion)"
record machine load "$(cut -d' ' -f1-3 /proc/loadavg)"
record machine command "$command_line"
gcc -O2 -Wall -Wextra -o "$work/memlat" scripts/bench/memlat.c
for _ in $(seq "$rounds"); do "$work/memlat" 16 256 4096 16384 65536; done >"$work/memlat.txt"
for kib in 16 256 4096 16384 65536; do
    awk -v k=$kib '$1 == k {print $2}' "$work/memlat.txt" | median | { read -r v; record memlat "$kib" "$v"; }
done
record machine rounds "$rounds"

# ---------------------------------------------------------------------
step "rule lookup and parsing (criterion)"
rm -rf target/criterion/lookup target/criterion/parse
LDSAREF_BENCH_FULL=$full cargo bench -p ldsaref-rules --bench lookup -- --noplot
for f in target/criterion/lookup/*/*/new/estimates.json target/criterion/parse/*/*/new/estimates.json; do
    [ -f "$f" ] || continue
    id=${f#target/criterion/}
    id=${id%/new/estimates.json}
    record criterion "$id" "$($py -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' "$f")"
done

# ---------------------------------------------------------------------
step "rules files"
gen=scripts/bench/genrules.py
$py $gen 100000 >"$work/nomatch.rules"
$py $gen 100000 --append "127.0.0.1/32 mark 0x4d" >"$work/mark.rules"
$py $gen 100000 --append "127.0.0.1/32 saref 77" >"$work/saref.rules"
echo "# nothing" >"$work/empty.rules"

step "loading 100k rules: ldsaref check"
"$cli" check "$work/nomatch.rules" >/dev/null
hyperfine -N --warmup 2 --runs $((rounds * 2)) --export-json "$work/check.json" \
    "$cli check $work/empty.rules" "$cli check $work/nomatch.rules" >&2
# Median wall time, and mean CPU time (user + system: hyperfine keeps
# no per-run CPU times), of the I-th command of a hyperfine export.
hf_wall() { $py -c 'import json,sys; print(json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]["median"])' "$1" "$2"; }
hf_cpu() { $py -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"][int(sys.argv[2])]; print(r["user"] + r["system"])' "$1" "$2"; }
record load check_empty_s "$(hf_wall "$work/check.json" 0)"
record load check_100k_s "$(hf_wall "$work/check.json" 1)"
record load check_empty_cpu_s "$(hf_cpu "$work/check.json" 0)"
record load check_100k_cpu_s "$(hf_cpu "$work/check.json" 1)"
for _ in $(seq "$rounds"); do
    /usr/bin/time -f %M "$cli" check "$work/nomatch.rules" 2>&1 >/dev/null | tail -1
done | median | { read -r kb; record load check_100k_rss_kib "$kb"; }
for _ in $(seq "$rounds"); do
    /usr/bin/time -f %M "$cli" check "$work/empty.rules" 2>&1 >/dev/null | tail -1
done | median | { read -r kb; record load check_empty_rss_kib "$kb"; }

step "a program without inet sockets pays no parsing"
w=2000
hyperfine -N --warmup 3 --runs $((rounds * 6)) --export-json "$work/noparse.json" \
    "env $driver write $w" \
    "env LD_PRELOAD=$lib $driver write $w" \
    "env LD_PRELOAD=$lib LDSAREF_RULES=$work/nomatch.rules $driver write $w" \
    "env LD_PRELOAD=$lib $driver udp 1" \
    "env LD_PRELOAD=$lib LDSAREF_RULES=$work/nomatch.rules $driver udp 1" >&2
i=0
for key in write_nolib write_lib write_lib_rules udp1_lib udp1_lib_rules; do
    record noparse "$key" "$(hf_wall "$work/noparse.json" $i)"
    record noparse "${key}_cpu" "$(hf_cpu "$work/noparse.json" $i)"
    i=$((i + 1))
done
opens() { grep -c "nomatch.rules" "$1" || true; }
LD_PRELOAD=$lib LDSAREF_RULES=$work/nomatch.rules strace -f -qq -e trace=openat,open -o "$work/st-write" "$driver" write $w >/dev/null
LD_PRELOAD=$lib LDSAREF_RULES=$work/nomatch.rules strace -f -qq -e trace=openat,open -o "$work/st-udp" "$driver" udp 1 >/dev/null
record noparse opens_write "$(opens "$work/st-write")"
record noparse opens_udp "$(opens "$work/st-udp")"

# ---------------------------------------------------------------------
# Hot path: each variant is an environment for the driver.
variant_env() {
    case $1 in
        none) ;;
        lib-inert) echo "LD_PRELOAD=$lib" ;;
        lib-nomatch) echo "LD_PRELOAD=$lib LDSAREF_RULES=$work/nomatch.rules" ;;
        self-mark) ;;
        lib-mark) echo "LD_PRELOAD=$lib LDSAREF_RULES=$work/mark.rules" ;;
        lib-saref-emu) echo "LD_PRELOAD=$lib:$emu LDSAREF_RULES=$work/saref.rules" ;;
        emu) echo "LD_PRELOAD=$emu" ;;
    esac
}
variant_mode() { # proto variant
    case $2 in
        self-mark) echo "$1-mark" ;;
        *) echo "$1" ;;
    esac
}
clean_env=(env -u LD_PRELOAD -u LDSAREF_RULES -u LDSAREF_PROFILE -u LDSAREF_MODE
    -u LDSAREF_ON_ERROR -u LDSAREF_LOG -u IPSEC_SAREF -u LDSAREF_PROBE
    -u KLIPS_EMU_ABI -u KLIPS_EMU_MARK -u KLIPS_EMU_LOG)
run_driver() { # proto variant n
    # shellcheck disable=SC2046
    "${clean_env[@]}" $(variant_env "$2") "$driver" "$(variant_mode "$1" "$2")" "$3" 0x4d | awk '{print $3, $4}'
}
variants=(none lib-inert lib-nomatch self-mark lib-mark lib-saref-emu)

# Sanity: the mark variants really carry the mark (and only once).
# shellcheck disable=SC2046
"${clean_env[@]}" $(variant_env lib-mark) strace -f -qq -e trace=sendto,sendmsg -o "$work/st-mark" "$driver" udp 10 0x4d >/dev/null
# (strace prints SO_MARK's cmsg type as 0x24 and not its payload.)
record check udp_lib_mark_cmsgs "$(grep -c 'cmsg_level=SOL_SOCKET, cmsg_type=0x24' "$work/st-mark" || true)"

for proto in udp tcp; do
    n=$udp_n
    [ "$proto" = tcp ] && n=$tcp_n
    step "hot path: $proto, $n calls x ${#variants[@]} variants x $rounds rounds"
    for r in $(seq "$rounds"); do
        # Rotate the order each round: no variant always runs first.
        for k in "${!variants[@]}"; do
            v=${variants[$(((k + r) % ${#variants[@]}))]}
            read -r wall cpu < <(run_driver "$proto" "$v" "$n")
            record "hot-$proto" "$v" "$wall"
            record "hotcpu-$proto" "$v" "$cpu"
            printf '  round %d %-14s %9.1f ns/call wall %9.1f ns/call CPU\n' "$r" "$v" "$wall" "$cpu" >&2
        done
    done
done

step "hot path: user-space instructions per call (callgrind)"
# Two runs of different lengths: the difference divided by the extra
# calls is the cost of one call, without start-up and rules loading.
cg_ir() { # proto variant n
    local out=$work/cg.$1.$2.$3
    # shellcheck disable=SC2046
    "${clean_env[@]}" $(variant_env "$2") valgrind --tool=callgrind --callgrind-out-file="$out.%p" \
        "$driver" "$(variant_mode "$1" "$2")" "$3" 0x4d >/dev/null 2>"$out.log" &
    local pid=$!
    wait "$pid"
    sed -n 's/^summary: //p' "$out.$pid"
}
for proto in udp tcp; do
    if [ "$proto" = udp ]; then pair=("${cg_udp[@]}"); else pair=("${cg_tcp[@]}"); fi
    for v in "${variants[@]}"; do
        a=$(cg_ir "$proto" "$v" "${pair[0]}")
        b=$(cg_ir "$proto" "$v" "${pair[1]}")
        # The driver's warm-up is n/10 calls: 1.1 n calls in all.
        per=$(awk -v a="$a" -v b="$b" -v x="${pair[0]}" -v y="${pair[1]}" 'BEGIN {printf "%.1f", (b - a) / (1.1 * (y - x))}')
        record "ir-$proto" "$v" "$per"
        printf '  %s %-14s %8s instructions/call\n' "$proto" "$v" "$per" >&2
    done
done

# ---------------------------------------------------------------------
step "against the mast chain: nftables in namespace $ns, $chain_n packets"
ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
mark=0x80010000
for n in 10 1000 10000; do
    $py $gen --chain $n $mark >"$work/chain-$n.nft"
    $py $gen --hosts $n $mark >"$work/hosts-$n.rules"
done
in_ns() { ip netns exec "$ns" "${clean_env[@]}" "$@"; }
chain_run() { # kind n
    case $1 in
        plain) in_ns "$driver" udp "$chain_n" ;;
        chain) in_ns "$driver" udp "$chain_n" ;;
        ldsaref) in_ns LD_PRELOAD="$lib" LDSAREF_RULES="$work/hosts-$2.rules" "$driver" udp "$chain_n" ;;
    esac | awk '{print $3, $4}'
}
chain_record() { # key round label kind n
    local wall cpu
    read -r wall cpu < <(chain_run "$4" "$5")
    record chain "$1" "$wall"
    record chaincpu "$1" "$cpu"
    printf '  round %d %-16s %10.1f ns/packet wall %10.1f ns/packet CPU\n' "$2" "$3" "$wall" "$cpu" >&2
}
for r in $(seq "$rounds"); do
    chain_record plain/0 "$r" "no chain" plain 0
    for n in 10 1000 10000; do
        ip netns exec "$ns" nft -f "$work/chain-$n.nft"
        chain_record "chain/$n" "$r" "chain $n" chain $n
        ip netns exec "$ns" nft delete table ip ldsaref_bench
        chain_record "ldsaref/$n" "$r" "ldsaref $n" ldsaref $n
    done
done
# The chain really marks: its last entry counts the packets it matched.
ip netns exec "$ns" nft -f "$work/chain-10.nft"
ip netns exec "$ns" nft add rule ip ldsaref_bench updown_mast meta mark $mark counter
in_ns "$driver" udp 100 >/dev/null
record check chain_marked "$(ip netns exec "$ns" nft list chain ip ldsaref_bench updown_mast | sed -n 's/.*counter packets \([0-9]*\).*/\1/p')"
ip netns del "$ns"

# ---------------------------------------------------------------------
step "compiled rules index: start-up, USS/PSS, 100 processes, compiling 1M"
# Its own table (BENCHMARKS.md, "The compiled rules index"), kept beside
# the raw figures; a failure here does not lose the rest of the run.
ROUNDS=$rounds scripts/bench/index.sh >"$root/target/bench-index.md" || echo "bench: index.sh failed" >&2
cat "$root/target/bench-index.md" >&2 || true

# ---------------------------------------------------------------------
step "the cgroup backend at scale (scripts/bench/cgroup.sh)"
if ((full)); then cg_sizes="0 10000 100000 1000000"; else cg_sizes="0 10000 100000"; fi
ROUNDS=$rounds scripts/bench/cgroup.sh --sizes "$cg_sizes" --markdown BENCHMARKS.md \
    --plot docs/bench-cgroup.png --raw "$root/target/bench-cgroup-raw.tsv"

# ---------------------------------------------------------------------
step "report"
cp "$raw" "$root/target/bench-raw.tsv"
$py scripts/bench/report.py "$raw" --markdown BENCHMARKS.md --plot docs/bench-scaling.png
}

main "$@"
