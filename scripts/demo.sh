#!/usr/bin/env bash
# ldsaref demo: builds the project, builds the two-tunnel test bed
# (scripts/testbed.sh) and shows unmodified programs (curl, socat, python3)
# steered into the tunnel chosen per process.
#
# The bed: a server and two IPsec "clients" whose private networks overlap:
# both own 198.18.0.5. Each veth pair stands for one tunnel; fwmark policy
# routing in the server picks the tunnel from the socket's mark, and the
# server's main table has no route at all to 198.18.0.0/24. Each client's web
# server answers with its name, so you see which tunnel a request took.
#
# This machine's kernel has no KLIPS SAref patches, so the demo uses
# LDSAREF_MODE=nfmark: SAref N becomes the mast mark (N << 16) | 0x80000000
# on the socket or datagram (SO_MARK). It then shows the KLIPS path failing
# closed on this kernel, with the exact syscalls under strace.
#
# Needs root (network namespaces, SO_MARK, nftables). Sends nothing outside
# the namespaces it creates, which have no route out; removes them on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "demo: needs root (network namespaces, SO_MARK, nftables); run: sudo $0" >&2
    exit 1
fi
scripts/setup.sh

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '   %s\n' "$@"; }
# Prints the command as typed, then its output indented; never stops the
# demo, a failure is part of what is shown.
show() {
    local line='$' a rc=0
    for a in "$@"; do
        if [[ $a =~ [[:space:]\"\'\|\;\<\>\$] || -z $a ]]; then line+=" '${a//\'/\'\\\'\'}'"; else line+=" $a"; fi
    done
    printf '%s\n' "$line"
    "$@" >"$out" 2>&1 || rc=$?
    sed 's/^/    /' "$out"
    [ "$rc" -eq 0 ] || printf '    (exit status %s)\n' "$rc"
}

say "Building (cargo build --release --workspace)"
cargo build --release --workspace -q
bin=$PWD/target/release
export PATH=$bin:$PATH
py=/usr/bin/python3

p=ldsaref-demo-$$-
out=$(mktemp)
cleanup() {
    scripts/testbed.sh down "$p" || true
    rm -f "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "The test bed (scripts/testbed.sh up $p)"
scripts/testbed.sh up "$p"
cat <<EOF
    namespace ${p}srv: the server, inner address 203.0.113.1
       s-c1 ──── tunnel 1 ──── ${p}c1: client1, owns 198.18.0.5 (web, UDP echo, DNS)
       s-c2 ──── tunnel 2 ──── ${p}c2: client2, owns 198.18.0.5 (web, UDP echo, DNS)
    In the server, a mark picks the tunnel; with no mark there is no route:
EOF
ip -n "${p}srv" rule show | sed -n 's/^/      /; /fwmark 0x80/p'
ip -n "${p}srv" route show table 101 | sed 's/^/      table 101: /'
ip -n "${p}srv" route show table 102 | sed 's/^/      table 102: /'
srv=(ip netns exec "${p}srv")
# Waits until a UDP server in the server's namespace listens on port $1.
wait_udp() {
    local _
    for _ in $(seq 100); do
        ss -N "${p}srv" -Hunl "sport = :$1" | grep -q . && return 0
        sleep 0.05
    done
    echo "demo: nothing listens on udp port $1" >&2
    return 1
}

rules=$PWD/scripts/demo/demo.rules
say "The rules (scripts/demo/demo.rules)"
sed 's/^/    /' "$rules"

say "What ldsaref will do for 198.18.0.5:80, per profile"
show ldsaref explain --rules "$rules" --profile client1 --mode nfmark --proto tcp 198.18.0.5:80
show ldsaref explain --rules "$rules" --profile client2 --mode nfmark --proto tcp 198.18.0.5:80

say "Unwrapped curl in the server: 198.18.0.5 exists twice, no route to either"
show "${srv[@]}" curl -sS --max-time 5 http://198.18.0.5/

say "The same curl under ldsaref: profile client1, then client2"
show "${srv[@]}" ldsaref run --rules "$rules" --profile client1 --mode nfmark -- curl -sS --max-time 5 http://198.18.0.5/
show "${srv[@]}" ldsaref run --rules "$rules" --profile client2 --mode nfmark -- curl -sS --max-time 5 http://198.18.0.5/

say "Without a profile, the global deny rule: refused before anything is sent"
show "${srv[@]}" ldsaref run --rules "$rules" -- curl -sS --max-time 5 http://198.18.0.5/

say "Openswan-compatible: the library alone, IPSEC_SAREF=202"
show "${srv[@]}" env LD_PRELOAD="$bin/libldsaref.so" IPSEC_SAREF=202 LDSAREF_MODE=nfmark curl -sS --max-time 5 http://198.18.0.5/

say "IPv6: the same choice for [2001:db8:18::5]"
show "${srv[@]}" ldsaref run --rules "$rules" --profile client1 --mode nfmark -- curl -sS --max-time 5 'http://[2001:db8:18::5]/'
show "${srv[@]}" ldsaref run --rules "$rules" --profile client2 --mode nfmark -- curl -sS --max-time 5 'http://[2001:db8:18::5]/'

say "UDP: socat and python3 to the echo server on 198.18.0.5:7 (each datagram carries the mark)"
show "${srv[@]}" ldsaref run --rules "$rules" --profile client1 --mode nfmark -- sh -c 'echo hello from socat | socat -t 2 - UDP-SENDTO:198.18.0.5:7'
show "${srv[@]}" ldsaref run --rules "$rules" --profile client2 --mode nfmark -- $py -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(2)
s.sendto(b"hello from python", ("198.18.0.5", 7))
print(s.recv(100).decode().strip())'

say "reflect: a UDP server answering two peers that look the same (198.18.0.5:5000)"
reflect=$PWD/scripts/demo/reflect.rules
sed 's/^/    /' "$reflect"
note "An unmodified python3 echo server (recvfrom/sendto) runs in the server under" \
    "ldsaref with these rules; nftables marks what arrives from each tunnel, the" \
    "library reads that mark (SO_RCVMARK) and puts it on the reply."
setsid "${srv[@]}" ldsaref run --rules "$reflect" -- $py tests/programs/echo_server.py recvfrom 203.0.113.1 7000 \
    </dev/null >/dev/null 2>&1 &
disown
wait_udp 7000
ask() { # client port
    show ip netns exec "$p$1" sh -c "r=\$(echo I am $1 | socat -t 2 - UDP:203.0.113.1:$2,bind=198.18.0.5:5000); echo \"\${r:-(no answer in 2 s)}\""
}
ask c1 7000
ask c2 7000
ask c1 7000
note "Without the library the same server has no route back to either:"
setsid "${srv[@]}" $py tests/programs/echo_server.py recvfrom 203.0.113.1 7001 </dev/null >/dev/null 2>&1 &
disown
wait_udp 7001
ask c1 7001
ask c2 7001

say "DNS: glibc's resolver is not steered"
dns=$PWD/scripts/demo/dns.rules
note "The server's resolv.conf names 198.18.0.5 (client1's DNS answers 198.18.1.1," \
    "client2's 198.18.2.2); the rule: $(grep -v '^#' "$dns")"
show "${srv[@]}" ldsaref run --rules "$dns" --mode nfmark -- $py tests/programs/dns_query.py 198.18.0.5 web.tunnel.test
note "That program's own socket was steered. getent asks through glibc's resolver," \
    "which calls the kernel through internal aliases the preload cannot see:"
show "${srv[@]}" ldsaref run --rules "$dns" --mode nfmark -- getent ahostsv4 web.tunnel.test
note "Under strace: glibc connects its DNS socket with no SO_MARK before it, and the" \
    "kernel, finding no route outside the tunnels, says ENETUNREACH:"
show "${srv[@]}" sh -c "strace -f -qq -e trace=connect -e signal=none ldsaref run --rules $dns --mode nfmark -- getent ahostsv4 web.tunnel.test 2>&1 | grep AF_INET"
note "Fix: a local forwarder (scripts/testbed/dns_forwarder.py) run under ldsaref;" \
    "resolv.conf names it, and its upstream queries are steered:"
setsid "${srv[@]}" ldsaref run --rules "$dns" --mode nfmark -- $py scripts/testbed/dns_forwarder.py 127.0.0.1 198.18.0.5 \
    </dev/null >/dev/null 2>&1 &
disown
wait_udp 53
scripts/testbed.sh resolver "$p" 127.0.0.1
show "${srv[@]}" getent ahostsv4 web.tunnel.test
scripts/testbed.sh resolver "$p" 198.18.0.5
note "Or a kernel rule for DNS to that server, here into tunnel 2:"
show ip -n "${p}srv" rule add to 198.18.0.5 ipproto udp dport 53 table 102
show "${srv[@]}" getent ahostsv4 web.tunnel.test

say "KLIPS mode on this stock kernel: it fails closed, with one log line"
show "${srv[@]}" ldsaref run --saref 1234 -- curl -sS --max-time 5 http://198.18.0.5/

say "The exact syscalls of the KLIPS path (LDSAREF_PROBE=off: every operation reaches the kernel)"
show "${srv[@]}" env LDSAREF_PROBE=off strace -f -qq -e trace=setsockopt,connect -e signal=none \
    ldsaref run --saref 1234 --log error -- $py -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.connect(("198.18.0.5", 80))'
note "setsockopt(fd, SOL_IP, 0x1f = 31 = IP_IPSEC_BINDREF, [1234], 4): on a KLIPS kernel" \
    "with the SAref patches this binds the socket to SAref 1234 (IPSEC_SAREF binds every" \
    "AF_INET socket when it is created); here the kernel says ENOPROTOOPT, so the" \
    "library makes socket() fail and nothing can leave unprotected."

say "Done: the test bed $p is removed on exit"
