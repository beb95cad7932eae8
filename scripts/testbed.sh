#!/usr/bin/env bash
# The two-tunnel test bed: one server, two IPsec "clients" whose private
# networks overlap, built from network namespaces, veth pairs and fwmark
# policy routing. No IPsec is involved: each veth pair stands for one tunnel,
# and the mark (or device) a socket carries decides which one it takes, as
# XFRM marks or a KLIPS mast nfmark would.
#
#   scripts/testbed.sh up PREFIX          build it (cleaning a leftover first)
#   scripts/testbed.sh down PREFIX        remove everything of PREFIX
#   scripts/testbed.sh run PREFIX -- CMD  up, CMD, down (even when CMD fails)
#   scripts/testbed.sh hits PREFIX c1|c2  packets that reached that client's
#                                          inner address from the server
#   scripts/testbed.sh resolver PREFIX ADDR  the nameserver the server's
#                                          programs use (198.18.0.5 after up)
#
#   ${PREFIX}srv  s-c1 192.0.2.1/30  2001:db8:1::1/64   (tunnel 1, to c1)
#                 s-c2 192.0.2.5/30  2001:db8:2::1/64   (tunnel 2, to c2)
#                 lo   203.0.113.1   2001:db8:113::1    (the server's inner address)
#   ${PREFIX}c1   c-srv 192.0.2.2/30 2001:db8:1::2/64,  lo 198.18.0.5 2001:db8:18::5
#   ${PREFIX}c2   c-srv 192.0.2.6/30 2001:db8:2::2/64,  lo 198.18.0.5 2001:db8:18::5
#
# In the server the main table has no route to 198.18.0.0/24: unsteered
# traffic gets ENETUNREACH. Policy rules pick a tunnel's table:
#   fwmark 0x80650000 (mast nfmark of SAref 101) or 1, or oif s-c1 -> table 101
#   fwmark 0x80ca0000 (mast nfmark of SAref 202) or 2, or oif s-c2 -> table 102
# nftables marks what arrives from each tunnel with that tunnel's mast mark,
# so that a UDP server reading SO_RCVMARK (ldsaref's `reflect`) can put its
# reply back into the same tunnel.
#
# Each client runs scripts/testbed/client.py: HTTP on port 80 (v4 and v6)
# answering "client1"/"client2", a UDP echo on 198.18.0.5:7 and a tiny DNS
# server on 198.18.0.5:53. The server's namespace gets its own resolv.conf
# (/etc/netns/${PREFIX}srv/resolv.conf, seen through `ip netns exec`) naming
# 198.18.0.5, reachable only through a tunnel.
#
# Needs root. Never adds a default route: nothing leaves the namespaces.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
[ -x "$py" ] || py=python3

usage() {
    sed -n '10,16p' "$0" >&2
    exit 2
}

check_prefix() {
    [[ ${1:-} =~ ^[A-Za-z0-9_.-]{1,40}$ ]] || {
        echo "testbed: PREFIX must be 1-40 characters of [A-Za-z0-9_.-], got '${1:-}'" >&2
        exit 2
    }
}

state_dir() { echo "${TMPDIR:-/tmp}/ldsaref-testbed-$1"; }

down() {
    local p=$1 ns pids
    for ns in "${p}srv" "${p}c1" "${p}c2"; do
        # A namespace lives on while a process runs in it: kill its
        # processes first, or `ip netns del` only unlinks the name.
        for _ in 1 2 3; do
            pids=$(ip netns pids "$ns" 2>/dev/null || true)
            [ -n "$pids" ] || break
            # shellcheck disable=SC2086
            kill -9 $pids 2>/dev/null || true
            sleep 0.05
        done
        ip netns del "$ns" 2>/dev/null || true
        rm -rf "/etc/netns/$ns"
    done
    rm -rf "$(state_dir "$p")"
}

up() {
    local p=$1
    local srv=${p}srv
    down "$p"
    local dir
    dir=$(state_dir "$p")
    mkdir -p "$dir"

    local ns
    for ns in "$srv" "${p}c1" "${p}c2"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # Tunnel traffic comes from addresses the receiving side has no
        # main-table route to: reverse-path filtering would drop it.
        ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 \
            net.ipv4.conf.default.rp_filter=0 net.ipv6.conf.all.accept_dad=0 \
            net.ipv6.conf.default.accept_dad=0
    done
    ip -n "$srv" addr add 203.0.113.1/32 dev lo
    ip -n "$srv" addr add 2001:db8:113::1/128 dev lo nodad

    local i
    for i in 1 2; do
        local c=${p}c$i if=s-c$i table=$((100 + i))
        local v4s v4c v6s v6c mark
        if [ "$i" = 1 ]; then
            v4s=192.0.2.1 v4c=192.0.2.2 mark=0x80650000
        else
            v4s=192.0.2.5 v4c=192.0.2.6 mark=0x80ca0000
        fi
        v6s=2001:db8:$i::1 v6c=2001:db8:$i::2
        ip -n "$srv" link add "$if" type veth peer name c-srv netns "$c"
        ip -n "$srv" addr add "$v4s/30" dev "$if"
        ip -n "$srv" addr add "$v6s/64" dev "$if" nodad
        ip -n "$srv" link set "$if" up
        ip -n "$c" addr add "$v4c/30" dev c-srv
        ip -n "$c" addr add "$v6c/64" dev c-srv nodad
        ip -n "$c" link set c-srv up

        # The tunnel's table, and the three ways into it.
        ip -n "$srv" route add 198.18.0.0/24 via "$v4c" dev "$if" src 203.0.113.1 table "$table"
        ip -n "$srv" -6 route add 2001:db8:18::/64 via "$v6c" dev "$if" src 2001:db8:113::1 table "$table"
        local fam
        for fam in -4 -6; do
            ip -n "$srv" "$fam" rule add fwmark "$mark" table "$table" pref $((1000 + i))
            ip -n "$srv" "$fam" rule add fwmark "$i" table "$table" pref $((1010 + i))
            ip -n "$srv" "$fam" rule add oif "$if" table "$table" pref $((1020 + i))
        done

        # The client's overlapping private network, and the way back to
        # the server's inner address through its one tunnel.
        ip -n "$c" addr add 198.18.0.5/32 dev lo
        ip -n "$c" addr add 2001:db8:18::5/128 dev lo nodad
        ip -n "$c" route add 203.0.113.1/32 via "$v4s" dev c-srv src 198.18.0.5
        ip -n "$c" -6 route add 2001:db8:113::1/128 via "$v6s" dev c-srv src 2001:db8:18::5

        # Counts what reaches the inner address from the tunnel, so that a
        # test can show that nothing did.
        ip netns exec "$c" nft -f - <<EOF
table inet ldsaref_testbed {
    counter tunnel_in { }
    chain input {
        type filter hook input priority 0; policy accept;
        iifname "c-srv" ip daddr 198.18.0.5 counter name "tunnel_in"
        iifname "c-srv" ip6 daddr 2001:db8:18::5 counter name "tunnel_in"
    }
}
EOF
    done

    ip netns exec "$srv" nft -f - <<'EOF'
table inet ldsaref_testbed {
    chain prerouting {
        type filter hook prerouting priority mangle; policy accept;
        iifname "s-c1" meta mark set 0x80650000
        iifname "s-c2" meta mark set 0x80ca0000
    }
}
EOF

    mkdir -p "/etc/netns/$srv"
    resolver "$p" 198.18.0.5

    for i in 1 2; do
        # setsid and a log file: the servers must not hold the caller's
        # terminal or output pipes open.
        setsid ip netns exec "${p}c$i" "$py" "$here/testbed/client.py" "client$i" "$i" \
            </dev/null >"$dir/client$i.log" 2>&1 &
    done
    for i in 1 2; do
        local ok=
        for _ in $(seq 100); do
            if grep -q "client$i ready" "$dir/client$i.log" 2>/dev/null; then
                ok=1
                break
            fi
            sleep 0.05
        done
        [ -n "$ok" ] || {
            echo "testbed: client$i's servers did not start:" >&2
            cat "$dir/client$i.log" >&2
            exit 1
        }
    done
}

resolver() {
    local p=$1 addr=$2
    [[ $addr =~ ^[0-9a-fA-F.:]+$ ]] || usage
    printf 'nameserver %s\noptions timeout:1 attempts:1\n' "$addr" >"/etc/netns/${p}srv/resolv.conf"
}

hits() {
    local p=$1 c=$2
    [[ $c == c1 || $c == c2 ]] || usage
    ip netns exec "$p$c" nft list counter inet ldsaref_testbed tunnel_in |
        awk '/packets/ { for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1) }'
}

[ $# -ge 2 ] || usage
cmd=$1 prefix=$2
shift 2
check_prefix "$prefix"
if [ "$(id -u)" -ne 0 ]; then
    echo "testbed: needs root (network namespaces, nftables)" >&2
    exit 1
fi
case $cmd in
up) up "$prefix" ;;
down) down "$prefix" ;;
hits) hits "$prefix" "${1:-}" ;;
resolver) resolver "$prefix" "${1:-}" ;;
run)
    [ "${1:-}" = -- ] && shift
    [ $# -ge 1 ] || usage
    trap 'down "$prefix"' EXIT
    trap 'exit 130' INT TERM
    up "$prefix"
    set +e
    "$@"
    rc=$?
    set -e
    exit "$rc"
    ;;
*) usage ;;
esac
