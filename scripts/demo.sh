#!/usr/bin/env bash
# ldsaref demo: builds the project and shows unmodified programs (curl,
# socat, python3) steered into the SA chosen per process.
#
# This machine's kernel has no KLIPS SAref patches, so the demo uses
# LDSAREF_MODE=nfmark: each SAref N becomes the mast mark
# (N << 16) | 0x80000000 on the socket or datagram, and a receiver in a
# private network namespace reports the mark every connection and datagram
# arrived with. It then shows the KLIPS path failing closed on this kernel,
# with the exact syscalls under strace.
#
# Needs root (network namespaces, SO_MARK). Sends nothing outside the
# namespace it creates, which has no route out.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "demo: needs root for network namespaces and SO_MARK; run: sudo $0" >&2
    exit 1
fi
scripts/setup.sh

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
show() {
    local line='$' a
    for a in "$@"; do
        if [[ $a =~ [[:space:]\"\'\|\;] ]]; then line+=" '${a//\'/\'\\\'\'}'"; else line+=" $a"; fi
    done
    printf '%s\n' "$line"
    "$@" 2>&1 | sed 's/^/    /'
}

say "Building (cargo build --release)"
cargo build --release --workspace -q
bin=$PWD/target/release
export PATH=$bin:$PATH

ns=ldsaref-demo-$$
cleanup() {
    ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
inns() { ip netns exec "$ns" "$@"; }
inns ip link set lo up
inns ip addr add 192.0.2.10/32 dev lo
inns ip addr add 192.0.2.99/32 dev lo
inns sysctl -qw net.ipv4.tcp_fwmark_accept=1
# Debian's python3, not a version manager's shim: the demo's programs must
# be the plain ones the library is meant for.
py=/usr/bin/python3
setsid ip netns exec "$ns" $py scripts/demo/mark_server.py 192.0.2.10 5000 &
disown
for _ in $(seq 50); do inns curl -s -o /dev/null http://192.0.2.10:5000/ && break; sleep 0.1; done

rules=$PWD/scripts/demo/demo.rules
say "The rules (scripts/demo/demo.rules)"
sed 's/^/    /' "$rules"

say "What ldsaref would do for 192.0.2.10:5000, per profile"
show ldsaref explain --rules "$rules" --profile client1 --proto tcp 192.0.2.10:5000
show ldsaref explain --rules "$rules" --profile client2 --mode nfmark --proto tcp 192.0.2.10:5000

say "Unwrapped curl: no SA"
show inns curl -s http://192.0.2.10:5000/

say "The same curl, profile client1, then client2 (LDSAREF_MODE=nfmark)"
show inns ldsaref run --rules "$rules" --profile client1 --mode nfmark -- curl -s http://192.0.2.10:5000/
show inns ldsaref run --rules "$rules" --profile client2 --mode nfmark -- curl -s http://192.0.2.10:5000/

say "UDP from socat, no profile: the global rule for udp/5000 (SAref 300)"
show inns ldsaref run --rules "$rules" --mode nfmark -- sh -c 'echo hello from socat | socat - UDP-SENDTO:192.0.2.10:5000'
sleep 0.3

say "UDP from python3 with IPSEC_SAREF=77 (Openswan-compatible catch-all)"
show inns ldsaref run --saref 77 --mode nfmark -- $py -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"hello from python", ("192.0.2.10", 5000))'
sleep 0.3

say "A deny rule: 192.0.2.99 is never reached in the clear"
show inns ldsaref run --rules "$rules" -- curl -sS http://192.0.2.99:5000/ || true

say "KLIPS mode on this stock kernel: it fails closed, with one log line"
show inns ldsaref run --saref 1234 -- curl -sS http://192.0.2.10:5000/ || true

say "The exact syscalls of the KLIPS path (LDSAREF_PROBE=off: every operation reaches the kernel)"
show inns env LDSAREF_PROBE=off strace -f -qq -e trace=setsockopt,connect -e signal=none \
    ldsaref run --saref 1234 --log error -- $py -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect(("192.0.2.10", 5000))' || true

say "Done: the namespace $ns is removed on exit"
