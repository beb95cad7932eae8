#!/usr/bin/env bash
# The cgroup backend at scale: per-packet cost and `ldsaref apply` time.
#
#   sudo scripts/bench/cgroup.sh [--sizes "0 10000 100000 1000000"] [--out FILE]
#                                [--markdown BENCHMARKS.md]
#                                [--plot docs/bench-cgroup.png] [--raw FILE]
#
# In a network namespace of its own (loopback only, deleted on exit), a
# program in the profile cgroup ldsaref.slice/ldsaref-bench.slice sends
# UDP datagrams (sendto) and makes TCP connections (socket/connect/close)
# to 127.0.0.1 (scripts/bench/hotpath.c), side by side, round after
# round, under:
#   - no table at all;
#   - the floor of any per-packet decision in nftables: an empty route
#     chain on output, and one rule matching the cgroup that jumps to an
#     empty chain;
#   - the table `ldsaref apply` makes of N generated rules
#     (scripts/bench/genrules.py N, global rules, plus an empty [bench]
#     section) for each N of --sizes: every packet is looked up in the
#     profile's maps, then in the global maps of N rules (127.0.0.1 is in
#     none), then in the catch-all map;
#   - the same N rules as a linear nft chain, one rule each (only up to
#     100k: a packet walks all of them).
# Then `ldsaref apply` of 100k rules into an empty namespace, of the same
# rules again (unchanged), and of one changed connection (a profile
# section of 2 rules edited) on top of them.
#
# Prints a markdown table (and writes it to --out; with --markdown, into
# that file between <!-- bench-cgroup:begin --> and <!-- bench-cgroup:end -->,
# with the command and the machine). Figures are medians
# over ROUNDS rounds (default 3), CPU ns per call (user + system of the
# program: what the kernel's hooks cost it), and wall ns per call.
# --raw keeps the per-round figures (LABEL, udp|tcp, wall ns, CPU ns per
# call); --plot draws the per-call CPU cost against the rules from them
# (scripts/bench/cgroup_plot.py, python3-matplotlib), without touching
# any markdown: `--plot` alone leaves BENCHMARKS.md as it is.
# LDSAREF_BIN=PATH measures that ldsaref binary instead of building this
# tree's.
set -euo pipefail

main() {
cd "$(dirname "$0")/../.."
sizes="0 10000 100000 1000000"
out=""
markdown=""
plot=""
raw_copy=""
command_line="scripts/bench/cgroup.sh${*:+ $*}"
while (($#)); do
    case $1 in
        --sizes) sizes=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --markdown) markdown=$2; shift 2 ;;
        --plot) plot=$2; shift 2 ;;
        --raw) raw_copy=$2; shift 2 ;;
        -h | --help) sed -n '2,35p' "$0"; exit 0 ;;
        *) echo "cgroup.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
rounds=${ROUNDS:-3}
udp_n=${UDP_N:-100000}
tcp_n=${TCP_N:-5000}
[ "$(id -u)" -eq 0 ] || { echo "cgroup.sh: needs root" >&2; exit 1; }

work=$(mktemp -d /tmp/ldsaref-cgbench.XXXXXX)
ns=ldsaref-cgbench-$$
keepers=""
cgdir=""
conndir=""
cleanup() {
    for k in $keepers; do { kill "$k" 2>/dev/null; wait "$k" 2>/dev/null; } || true; done
    # Whatever of ours is left in the bench's cgroups (the keepers, once
    # nsenter has exec'd them).
    for d in "$cgdir" "$conndir"; do
        if [ -n "$d" ] && [ -f "$d/cgroup.procs" ]; then
            while read -r p; do kill "$p" 2>/dev/null || true; done <"$d/cgroup.procs"
            sleep 0.2
        fi
        # The program's cgroups first (empty once the drivers exit).
        rmdir "$d" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
. scripts/bench/tools.sh
bench_tools "$work"
gen=scripts/bench/genrules.py

ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
in_ns() { nsenter --net="/run/netns/$ns" "$@"; }
mount=$(awk '$9 == "cgroup2" && $4 == "/" {print $5; exit}' /proc/self/mountinfo)
[ -n "$mount" ] || { echo "cgroup.sh: no cgroup2 mount" >&2; exit 1; }
prefix=${mount#/sys/fs/cgroup}
prefix=${prefix#/}
prefix=${prefix:+$prefix/}
cgdir=$mount/ldsaref.slice/ldsaref-bench.slice
conndir=$mount/ldsaref.slice/ldsaref-conn.slice

for n in $sizes; do
    if [ "$n" -eq 0 ]; then : >"$work/r$n.rules"; else python3 $gen "$n" >"$work/r$n.rules"; fi
    printf '[bench]\n' >>"$work/r$n.rules"
done
# A linear chain of the same rules: one nft rule per rule, longest
# prefix first, in the same cgroup's output path.
linear() { # rules-file
    python3 - "$1" "$prefix" <<'EOF'
import sys, ipaddress
rules, prefix = sys.argv[1], sys.argv[2]
out = []
for line in open(rules):
    f = line.split()
    if not f or f[0].startswith('[') or f[0].startswith('#'):
        continue
    net = ipaddress.ip_network(f[0])
    fam = 'ip' if net.version == 4 else 'ip6'
    m = f"{fam} daddr {net}"
    rest = f[1:]
    if rest[0] in ('tcp', 'udp'):
        m += f" {rest[0]} dport {rest[1]}"
        rest = rest[2:]
    act = rest
    if act[0] == 'saref':
        v = f"meta mark set {((int(act[1]) & 0x7fff) << 16) | 0x80000000:#x}"
    elif act[0] == 'mark':
        v = f"meta mark set {act[1]}"
    else:
        v = 'accept'
    out.append((net.prefixlen if net.version == 6 else net.prefixlen + 96, f"\t\t{m} {v}\n"))
out.sort(key=lambda x: -x[0])
sys.stdout.write("table inet ldsaref_linear {\n\tchain lin {\n")
sys.stdout.write("".join(r for _, r in out))
sys.stdout.write("\t}\n\tchain output {\n\t\ttype route hook output priority mangle; policy accept;\n")
sys.stdout.write(f'\t\tsocket cgroupv2 level 1 "{prefix}ldsaref.slice" jump lin\n\t}}\n}}\n')
EOF
}

# The driver, in the profile's cgroup, in the namespace.
drive() { # mode n
    mkdir -p "$cgdir"
    in_ns sh -c 'echo $$ > "$1/cgroup.procs" && exec "$2" "$3" "$4"' sh "$cgdir" "$driver" "$1" "$2" |
        awk '{print $3, $4}'
}
raw=$work/raw.tsv
: >"$raw"
measure() { # label
    local w c
    read -r w c < <(drive udp "$udp_n")
    printf '%s\tudp\t%s\t%s\n' "$1" "$w" "$c" >>"$raw"
    read -r w c < <(drive tcp "$tcp_n")
    printf '%s\ttcp\t%s\t%s\n' "$1" "$w" "$c" >>"$raw"
    printf '  %-16s done\n' "$1" >&2
}
apply_n() { # n
    in_ns "$cli" apply --rules "$work/r$1.rules" >/dev/null
}
clear_tables() {
    in_ns nft delete table inet ldsaref 2>/dev/null || true
    in_ns nft delete table inet ldsaref_linear 2>/dev/null || true
    in_ns nft delete table inet ldsaref_floor 2>/dev/null || true
}
# The floor of any per-packet decision in nftables: an empty route chain
# on output (the hook alone), and one that matches the program's cgroup
# and jumps to an empty chain (the least a decision for a cgroup costs).
floor() { # hook|cgroup
    {
        printf 'table inet ldsaref_floor {\n\tchain decide {\n\t}\n'
        printf '\tchain output {\n\t\ttype route hook output priority mangle; policy accept;\n'
        [ "$1" = hook ] || printf '\t\tsocket cgroupv2 level 1 "%sldsaref.slice" jump decide\n' "$prefix"
        printf '\t}\n}\n'
    } | in_ns nft -f -
}

# The tables are loaded once per size and round (loading 1M rules takes
# a while); the variants of a round run back to back.
# A process of this namespace in each profile's cgroup keeps it (and its
# id, which the table recorded) alive: `apply --remove` elsewhere, and
# other programs' clean-ups on a shared machine, remove empty ones (once
# between `apply` creating the [conn] cgroup and nft loading the table).
for d in "$cgdir" "$conndir"; do
    mkdir -p "$d"
    in_ns sh -c 'echo $$ > "$1/cgroup.procs" && exec sleep infinity' sh "$d" &
    keepers="$keepers $!"
done
for r in $(seq "$rounds"); do
    echo "round $r" >&2
    clear_tables
    measure none
    for f in hook cgroup; do
        floor $f
        measure "floor/$f"
        clear_tables
    done
    for n in $sizes; do
        clear_tables
        apply_n "$n"
        measure "ldsaref/$n"
        if [ "$n" -gt 0 ] && [ "$n" -le 100000 ]; then
            clear_tables
            linear "$work/r$n.rules" >"$work/lin.nft"
            in_ns nft -f "$work/lin.nft"
            # A linear chain of 100k rules: fewer calls, or it runs for hours.
            local_udp=$udp_n local_tcp=$tcp_n
            if [ "$n" -ge 100000 ]; then udp_n=$((local_udp / 100)) tcp_n=$((local_tcp / 50)); fi
            measure "linear/$n"
            udp_n=$local_udp tcp_n=$local_tcp
        fi
    done
done
clear_tables

# apply: 100k rules, from nothing, unchanged, and one connection changed.
apply_times=$work/apply.tsv
: >"$apply_times"
python3 $gen 100000 >"$work/a.rules"
cp "$work/a.rules" "$work/b.rules"
printf '[bench]\n[conn]\n198.18.7.0/24 saref 71\n198.18.8.0/24 saref 72\n' >>"$work/a.rules"
printf '[bench]\n[conn]\n198.18.7.0/24 saref 71\n198.18.9.0/24 saref 73\n' >>"$work/b.rules"
timed() { # label args...
    local label=$1
    shift
    local t0 t1
    t0=$(date +%s.%N)
    in_ns "$cli" apply "$@" >/dev/null
    t1=$(date +%s.%N)
    printf '%s\t%s\n' "$label" "$(echo "$t1 - $t0" | bc)" >>"$apply_times"
}
for r in $(seq "$rounds"); do
    clear_tables
    timed fresh --rules "$work/a.rules"
    timed unchanged --rules "$work/a.rules"
    timed one_connection --rules "$work/b.rules"
done
clear_tables
elements=$(in_ns "$cli" apply --rules "$work/b.rules" | sed -n 's/.*, \([0-9]*\) map elements.*/\1/p')
clear_tables

python3 - "$raw" "$apply_times" "$sizes" "$elements" "$rounds" <<'EOF' | tee "$work/table.md" ${out:+"$out"}
import sys, statistics
raw, apply_times, sizes, elements, rounds = sys.argv[1:]
m = {}
for line in open(raw):
    label, proto, wall, cpu = line.split('\t')
    m.setdefault((label, proto), []).append((float(wall), float(cpu)))
def med(label, proto, i):
    v = m.get((label, proto))
    return statistics.median(x[i] for x in v) if v else None
sizes = [int(s) for s in sizes.split()]
print(f"Per call, median of {rounds} rounds: CPU ns (wall ns) of the program in ldsaref-bench.slice, to 127.0.0.1.\n")
print("| table | UDP sendto | vs none | TCP connect | vs none |")
print("|---|---|---|---|---|")
def row(name, label):
    cells = []
    for p in ('udp', 'tcp'):
        c, w, base = med(label, p, 1), med(label, p, 0), med('none', p, 1)
        if c is None:
            cells += ['-', '-']
        else:
            cells += [f"{c:.0f} ({w:.0f})", f"{c / base:.2f}x"]
    print(f"| {name} | " + " | ".join(cells) + " |")
row("no table", "none")
row("nft floor: an empty route chain", "floor/hook")
row("nft floor: a route chain matching the cgroup, jumping to an empty chain", "floor/cgroup")
for n in sizes:
    row(f"ldsaref, {n} rules", f"ldsaref/{n}")
for n in sizes:
    if (f"linear/{n}", 'udp') in m:
        row(f"linear chain, {n} rules", f"linear/{n}")
a = {}
for line in open(apply_times):
    k, v = line.split('\t')
    a.setdefault(k, []).append(float(v))
print(f"\n`ldsaref apply`, 100k rules ({elements} flattened pieces), wall seconds, median of {rounds}:\n")
print("| apply | seconds |")
print("|---|---|")
for k, name in (('fresh', 'into an empty namespace'), ('unchanged', 'the same rules again'), ('one_connection', 'one connection changed (its 2-rule section replaced alone)')):
    print(f"| {name} | {statistics.median(a[k]):.3f} |")
EOF
[ -z "$raw_copy" ] || cp "$raw" "$raw_copy"
if [ -n "$plot" ]; then
    /usr/bin/python3 scripts/bench/cgroup_plot.py "$raw" "$plot" --title \
        "sudo ROUNDS=$rounds $command_line; $(nproc) cores, kernel $(uname -r), $(nft --version | cut -d' ' -f1-2)"
    echo "plot: $plot" >&2
fi
if [ -n "$markdown" ]; then
    {
        echo "<!-- bench-cgroup:begin -->"
        echo "<!-- Written by scripts/bench/cgroup.sh: edit the prose outside the markers. -->"
        echo
        echo "\`sudo ${LDSAREF_BIN:+LDSAREF_BIN=$LDSAREF_BIN }ROUNDS=$rounds $command_line\` on $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, kernel $(uname -r), $(nft --version), load average $(cut -d' ' -f1-3 /proc/loadavg) at the end."
        echo
        cat "$work/table.md"
        echo
        echo "<!-- bench-cgroup:end -->"
    } >"$work/section.md"
    python3 - "$markdown" "$work/section.md" <<'PY'
import sys
path, section = sys.argv[1], open(sys.argv[2]).read().rstrip("\n")
text = open(path).read()
b, e = text.find("<!-- bench-cgroup:begin -->"), text.find("<!-- bench-cgroup:end -->")
if b < 0 or e < 0:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
else:
    text = text[:b] + section + text[e + len("<!-- bench-cgroup:end -->"):]
open(path, "w").write(text)
PY
fi
}

# One line: bash reads the file as it goes, so an edit during a run
# cannot change what follows.
main "$@"; exit
