#!/usr/bin/env bash
# An experiment, not part of ldsaref: what a cgroup BPF path for connect()
# would cost per call, side by side with ldsaref's nftables table, for the
# per-packet target of the cgroup backend (BENCHMARKS.md, "The cgroup
# backend at scale"; docs/cgroup-backend.md, "Cgroup BPF").
#
#   sudo scripts/bench/bpf-connect.sh [--rules N] [--out FILE]
#
# Needs clang, bpftool and libbpf-dev (`apt-get install clang llvm
# libbpf-dev bpftool`), which ldsaref itself does not. In a network
# namespace of its own (loopback only, deleted on exit), the program of
# scripts/bench/hotpath.c in ldsaref.slice/ldsaref-bench.slice makes TCP
# connections (socket/connect/close) and sends UDP datagrams (sendto) to
# 127.0.0.1 under, round after round:
#   none       no table, no BPF program;
#   self-mark  the program sets SO_MARK itself (setsockopt before connect,
#              an SO_MARK cmsg per datagram): what any steered socket pays
#              for its mark, whoever sets it;
#   nft-miss   ldsaref's table of N generated rules (genrules.py), which
#              127.0.0.1 misses (the bench of cgroup.sh);
#   nft-hit    the same plus `127.0.0.1/32 mark 0x1234` in the profile:
#              every packet marked by the table, and re-routed;
#   bpf-miss   no table; scripts/bench/bpf-connect4.c attached to the
#              profile's cgroup with the same rules' IPv4 prefixes in its
#              LPM trie (their ports ignored), which 127.0.0.1 misses;
#   bpf-hit    the same plus 127.0.0.1/32 -> 0x1234 in the trie: the socket
#              gets its mark in connect(), before the route lookup.
# The UDP column of the bpf rows is the no-table path again: connect4 does
# not run for unconnected sendto, and sendmsg4 runs after the datagram's
# mark is taken (docs/cgroup-backend.md). Figures: medians of ROUNDS
# (default 7) rounds, CPU ns per call of the program.
# LDSAREF_BIN=PATH measures that ldsaref binary instead of building this
# tree's (scripts/bench/tools.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."
n=100000
out=""
while (($#)); do
    case $1 in
        --rules) n=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h | --help) sed -n '2,31p' "$0"; exit 0 ;;
        *) echo "bpf-connect.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
rounds=${ROUNDS:-7}
tcp_n=${TCP_N:-4000}
udp_n=${UDP_N:-100000}
[ "$(id -u)" -eq 0 ] || { echo "bpf-connect.sh: needs root" >&2; exit 1; }
for t in clang bpftool; do
    command -v $t >/dev/null || {
        echo "bpf-connect.sh: needs $t (apt-get install clang llvm libbpf-dev bpftool)" >&2
        exit 1
    }
done
[ -e /usr/include/bpf/bpf_helpers.h ] || { echo "bpf-connect.sh: needs libbpf-dev" >&2; exit 1; }

work=$(mktemp -d /tmp/ldsaref-bpfbench.XXXXXX)
ns=ldsaref-bpfbench-$$
pin=""
cg=""
cleanup() {
    if [ -n "$cg" ]; then
        [ -z "$pin" ] || bpftool cgroup detach "$cg" connect4 pinned "$pin/prog" 2>/dev/null || true
        rmdir "$cg" 2>/dev/null || true
    fi
    [ -z "$pin" ] || rm -rf "$pin"
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

. scripts/bench/tools.sh
bench_tools "$work"
clang -O2 -g -target bpf -I"/usr/include/$(gcc -print-multiarch)" \
    -c scripts/bench/bpf-connect4.c -o "$work/prog.o"

mount=$(awk '$9 == "cgroup2" && $4 == "/" {print $5; exit}' /proc/self/mountinfo)
[ -n "$mount" ] || { echo "bpf-connect.sh: no cgroup2 mount" >&2; exit 1; }
cg=$mount/ldsaref.slice/ldsaref-bench.slice
mkdir -p "$cg"
bpffs=$(awk '$9 == "bpf" {print $5; exit}' /proc/self/mountinfo)
if [ -z "$bpffs" ]; then
    mkdir -p /sys/fs/bpf
    mount -t bpf bpf /sys/fs/bpf
    bpffs=/sys/fs/bpf
fi
pin=$bpffs/ldsaref-bpfbench-$$
mkdir -p "$pin"
bpftool prog load "$work/prog.o" "$pin/prog" type cgroup/connect4 pinmaps "$pin"
map=$pin/rules4

ip netns add "$ns"
ip netns exec "$ns" ip link set lo up
in_ns() { nsenter --net="/run/netns/$ns" "$@"; }

python3 scripts/bench/genrules.py "$n" >"$work/miss.rules"
printf '[bench]\n' >>"$work/miss.rules"
cp "$work/miss.rules" "$work/hit.rules"
printf '127.0.0.1/32 mark 0x1234\n' >>"$work/hit.rules"
# The trie: the rules' IPv4 prefixes as global entries (cgroup id 0), the
# value each rule's mark (saref N as its mast mark; pass 0, deny DENY).
python3 - "$work/miss.rules" "$map" >"$work/fill.batch" <<'PY'
import ipaddress, struct, sys
for line in open(sys.argv[1]):
    f = line.split()
    if not f or f[0].startswith(('[', '#')):
        continue
    net = ipaddress.ip_network(f[0])
    if net.version != 4:
        continue
    a = f[1:]
    if a[0] in ('tcp', 'udp'):
        a = a[2:]
    v = {'saref': lambda: ((int(a[1]) & 0x7fff) << 16) | 0x80000000,
         'mark': lambda: int(a[1].split('/')[0], 0),
         'deny': lambda: 0xffffffff}.get(a[0], lambda: 0)()
    key = struct.pack('<IQ', 64 + net.prefixlen, 0) + net.network_address.packed
    print(f"map update pinned {sys.argv[2]} key hex {key.hex(' ')} value hex {struct.pack('<I', v).hex(' ')}")
PY
bpftool batch file "$work/fill.batch" >/dev/null
hit="hex $(python3 -c "import struct; print((struct.pack('<IQ', 96, 0) + bytes([127, 0, 0, 1])).hex(' '))")"

drive() { # mode n [mark]: CPU ns per call
    in_ns sh -c 'echo $$ > "$1/cgroup.procs" && exec "$2" "$3" "$4" $5' sh "$cg" "$driver" "$1" "$2" "${3:-}" |
        awk '{print $4}'
}
row() { # label tcp-mode udp-mode [mark]
    printf '%s\t%s\t%s\n' "$1" "$(drive "$2" "$tcp_n" "${4:-}")" "$(drive "$3" "$udp_n" "${4:-}")" >>"$work/raw.tsv"
}
nft_off() { in_ns nft delete table inet ldsaref 2>/dev/null || true; }
bpf_on() { bpftool cgroup attach "$cg" connect4 pinned "$pin/prog"; }
bpf_off() {
    bpftool cgroup detach "$cg" connect4 pinned "$pin/prog" 2>/dev/null || true
    bpftool map delete pinned "$map" key $hit 2>/dev/null || true
}
# The program does what the rows say: a connect to 127.0.0.1 from the
# cgroup gets the trie's mark.
bpf_on
bpftool map update pinned "$map" key $hit value hex 34 12 00 00
got=$(in_ns sh -c 'echo $$ > "$1/cgroup.procs" && exec python3 -c "
import socket
l = socket.socket(); l.bind((\"127.0.0.1\", 0)); l.listen()
s = socket.socket(); s.connect(l.getsockname())
print(hex(s.getsockopt(socket.SOL_SOCKET, 36)))"' sh "$cg")
bpf_off
[ "$got" = 0x1234 ] || { echo "bpf-connect.sh: the program did not mark the socket ($got)" >&2; exit 1; }
: >"$work/raw.tsv"
for r in $(seq "$rounds"); do
    echo "round $r" >&2
    nft_off
    bpf_off
    row none tcp udp
    row self-mark tcp-mark udp-mark 0x1234
    in_ns "$cli" apply --rules "$work/miss.rules" >/dev/null
    row nft-miss tcp udp
    in_ns "$cli" apply --rules "$work/hit.rules" >/dev/null
    row nft-hit tcp udp
    nft_off
    bpf_on
    row bpf-miss tcp udp
    bpftool map update pinned "$map" key $hit value hex 34 12 00 00
    row bpf-hit tcp udp
    bpf_off
done
in_ns "$cli" apply --rules "$work/miss.rules" --remove >/dev/null 2>&1 || true

python3 - "$work/raw.tsv" "$rounds" "$n" <<'PY' | tee ${out:+"$out"}
import statistics, sys
raw, rounds, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = {}
for line in open(raw):
    label, tcp, udp = line.split('\t')
    m.setdefault(label, []).append((float(tcp), float(udp)))
med = {k: (statistics.median(t for t, _ in v), statistics.median(u for _, u in v)) for k, v in m.items()}
t0, u0 = med['none']
print(f"Per call, median of {rounds} rounds, CPU ns of the program in ldsaref-bench.slice, to 127.0.0.1; {n} rules.\n")
print("| variant | TCP connect | vs none | UDP sendto | vs none |")
print("|---|---|---|---|---|")
for k, (t, u) in med.items():
    print(f"| {k} | {t:.0f} | {t / t0:.2f}x | {u:.0f} | {u / u0:.2f}x |")
PY
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
