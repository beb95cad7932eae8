#!/bin/bash
# Runs inside the guest (see ../ipsec-e2e.sh): real ESP tunnels negotiated by
# strongSwan, and unmodified programs wrapped by ldsaref choosing between two
# clients that own the same address.
#
#   srv  s-c1 192.0.2.1/30 ==ESP== c1 c-srv 192.0.2.2/30, lan 198.18.0.5/24
#        s-c2 192.0.2.5/30 ==ESP== c2 c-srv 192.0.2.6/30, lan 198.18.0.5/24
#        inner 203.0.113.1/32 (the server's end of both tunnels)
#
# The namespaces and the unmodified peers are set up once; the server's
# IPsec is set up twice, once per mainline way of telling the two SAs apart:
#   marks  XFRM marks: the server's SAs and policies carry the mast nfmark
#          of SAref 101/202, fwmark rules route it towards its client
#   xfrmi  xfrm interfaces ipsec1/ipsec2 (if_id 1/2), fwmark rules (1/2 and
#          the mast nfmarks) and the device itself lead into them
# Then the daemon phases (daemons.sh, churn.sh): the server's IKE daemon,
# strongSwan then libreswan, runs `ldsaref updown` itself, and wrapped
# programs keep sending while the tunnels churn.
# Each check prints "ok" or "FAIL"; the exit status is 0 only when all passed.
#   guest.sh SCRIPTDIR BINDIR [OPTIONS]
# OPTIONS, one word, comma-separated KEY=VALUE (from ipsec-e2e.sh):
#   only=all|static|churn   daemons=strongswan+libreswan   churn=N
#   variants=marks+xfrmi    lsw=DIR (libreswan unpacked on the host)
#   gosender=PATH (the cgroup backend's static sender, built on the host)
#   recorder=PATH (updown-record.c, built on the host)
set -uo pipefail

dir=$1
# ldsaref from the guest's own disk (tmpfs), as installed on a gateway:
# run from the host's / over 9p, every exec paged the binary in again
# through the emulated device (about 15 ms of each updown call, and of
# every `ldsaref run` and background apply).
# The statically linked command when it was built (packaging/static-cli.sh:
# what the package installs), else the workspace's.
mkdir -p /mnt/bin
if [ -f "$2/ldsaref-static" ]; then
    cp "$2/ldsaref-static" /mnt/bin/ldsaref
else
    cp "$2/ldsaref" /mnt/bin/ldsaref
fi
cp "$2/libldsaref.so" /mnt/bin/
lds=/mnt/bin/ldsaref
opt_only=all opt_daemons=strongswan+libreswan opt_churn=20 opt_variants=marks+xfrmi opt_record=
IFS=, read -ra _opts <<<"${3:-}"
for _o in "${_opts[@]}"; do
    case $_o in
    only=*) opt_only=${_o#*=} ;;
    daemons=*) opt_daemons=${_o#*=} ;;
    churn=*) opt_churn=${_o#*=} ;;
    variants=*) opt_variants=${_o#*=} ;;
    lsw=*) LSW=${_o#*=} ;;
    gosender=*) GOSENDER=${_o#*=} ;;
    recorder=*) cp "${_o#*=}" /mnt/bin/updown-record ;;
    record=*) opt_record=${_o#*=} ;;
    esac
done
E=/mnt/e2e
mkdir -p "$E"
passed=0 failed=0 phase_failed=0
# The names of the failed checks, repeated at the end: CI shows only the
# tail of a long log.
failures=()
t0=$SECONDS

stamp() { printf '[%4ds]' $((SECONDS - t0)); }
ok() {
    passed=$((passed + 1))
    echo "$(stamp) ok   - $*"
}
bad() {
    failed=$((failed + 1))
    phase_failed=1
    echo "$(stamp) FAIL - $1"
    failures+=("$(stamp) $1")
    shift
    local l
    for l in "$@"; do echo "       $l"; done
}
counts() { echo "$passed passed, $failed failed" >/mnt/e2e-counts; }

in_ns() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

outer_srv() { [ "$1" = 1 ] && echo 192.0.2.1 || echo 192.0.2.5; }
outer_cli() { [ "$1" = 1 ] && echo 192.0.2.2 || echo 192.0.2.6; }
mast() { [ "$1" = 1 ] && echo 0x80650000 || echo 0x80ca0000; }

# "out1 in1 out2 in2": packets through the server's four SAs so far
# (srv->c1, c1->srv, srv->c2, c2->srv), from `ip -s xfrm state`.
sa_snapshot() {
    ip -n srv -s xfrm state | awk '
        /^src / { k = $2 ">" $4 }
        /\(packets\)/ { for (i = 1; i <= NF; i++) if ($i ~ /\(packets\)/) { sub(/\(packets\).*/, "", $i); n[k] += $i } }
        END { printf "%d %d %d %d\n", n["192.0.2.1>192.0.2.2"], n["192.0.2.2>192.0.2.1"],
                                        n["192.0.2.5>192.0.2.6"], n["192.0.2.6>192.0.2.5"] }'
}
# check_sas DESC BEFORE AFTER WHICH: WHICH (1, 2 or none) is the tunnel whose
# SAs, both directions, must have carried packets; the other's must not.
# in1: only client1's inbound SA (a request that got no reply).
check_sas() {
    local desc=$1 which=$4
    local -a b=($2) a=($3)
    local d1o=$((a[0] - b[0])) d1i=$((a[1] - b[1])) d2o=$((a[2] - b[2])) d2i=$((a[3] - b[3]))
    local got="SA packets: srv->c1 +$d1o, c1->srv +$d1i, srv->c2 +$d2o, c2->srv +$d2i"
    local good
    case $which in
    1) good=$((d1o > 0 && d1i > 0 && d2o == 0 && d2i == 0)) ;;
    2) good=$((d2o > 0 && d2i > 0 && d1o == 0 && d1i == 0)) ;;
    none) good=$((d1o == 0 && d1i == 0 && d2o == 0 && d2i == 0)) ;;
    in1) good=$((d1i > 0 && d1o == 0 && d2o == 0 && d2i == 0)) ;;
    esac
    if [ "$good" = 1 ]; then
        ok "$desc: $got"
    else
        bad "$desc: wrong SA counters (expected tunnel $which only)" "$got"
    fi
}

wait_for() { # FILE PATTERN SECONDS
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# bg CMD...: a daemon, detached from the shell's job table (no "Killed"
# notices when it is stopped) and from the console's input.
bg() { (setsid "$@" </dev/null &); }

topology_up() {
    local ns i
    for ns in srv c1 c2; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # Tunnel traffic comes from addresses without a main-table route
        # back (rp_filter would drop it); no IPv6: nothing on the wire but
        # what the test sends.
        in_ns "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
            net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    done
    ip -n srv link add inner type dummy
    ip -n srv addr add 203.0.113.1/32 dev inner
    ip -n srv link set inner up
    for i in 1 2; do
        local s c
        s=$(outer_srv $i) c=$(outer_cli $i)
        ip -n srv link add "s-c$i" type veth peer name c-srv netns "c$i"
        ip -n srv addr add "$s/30" dev "s-c$i"
        ip -n srv link set "s-c$i" up
        ip -n "c$i" addr add "$c/30" dev c-srv
        ip -n "c$i" link set c-srv up
        # The overlapping private network, and the way back to the server
        # (from 198.18.0.5, to match the tunnel's traffic selectors).
        ip -n "c$i" link add lan type dummy
        ip -n "c$i" addr add 198.18.0.5/24 dev lan
        # A second subnet for the daemon phases (one updown call per pair).
        ip -n "c$i" addr add 198.19.0.5/24 dev lan
        ip -n "c$i" link set lan up
        ip -n "c$i" route add 203.0.113.1/32 via "$s" dev c-srv src 198.18.0.5
    done
}

# The server's main table never has a route to 198.18.0.0/24: only a mark
# (or a device) leads there, through the style's tables 101/102.
style_up() {
    local style=$1 i
    for i in 1 2; do
        local table=$((100 + i))
        if [ "$style" = marks ]; then
            ip -n srv route add 198.18.0.0/24 via "$(outer_cli $i)" dev "s-c$i" src 203.0.113.1 table $table
            ip -n srv rule add fwmark "$(mast $i)" table $table pref $((1000 + i))
        else
            ip -n srv link add "ipsec$i" type xfrm dev "s-c$i" if_id $i
            ip -n srv link set "ipsec$i" up
            ip -n srv route add 198.18.0.0/24 dev "ipsec$i" src 203.0.113.1 table $table
            ip -n srv rule add fwmark $i table $table pref $((1000 + i))
            ip -n srv rule add fwmark "$(mast $i)" table $table pref $((1010 + i))
            ip -n srv rule add oif "ipsec$i" table $table pref $((1020 + i))
        fi
    done
}

# Stops the daemons the phase started and removes everything of its style,
# so that the next style starts from the bare topology.
style_down() {
    local ns p i
    for ns in srv c1 c2; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do
            case $(cat /proc/"$p"/comm 2>/dev/null) in charon | tcpdump) kill -9 "$p" ;; esac
        done
    done
    sleep 0.3
    for ns in srv c1 c2; do
        ip -n "$ns" xfrm state flush
        ip -n "$ns" xfrm policy flush
    done
    for i in 1 2; do
        ip -n srv link del "ipsec$i" 2>/dev/null
        ip -n srv route flush table $((100 + i)) 2>/dev/null
    done
    local pref
    for pref in $(ip -n srv rule show | sed -n 's/^\(10[0-9][0-9]\):.*/\1/p'); do
        ip -n srv rule del pref "$pref"
    done
    rm -f "$E"/*.vici "$E"/*.pcap
}

charon_conf() { # NS
    cat <<EOF
charon {
    load = random nonce aes sha1 sha2 hmac kdf gmp kernel-netlink socket-default vici
    # Routes are the test's business: table 220 would override the fwmark tables.
    install_routes = no
    plugins {
        vici {
            socket = unix://$E/$1.vici
        }
    }
    filelog {
        log {
            path = $E/$1.charon.log
            time_format = %H:%M:%S
            default = 1
        }
    }
}
EOF
}

# swanctl needs no plugin for what it does here; without a configuration
# it tries the whole default list and reports each one missing.
# Bounded: a daemon that takes the connection but never answers must not
# hang the test.
swanctl_() { STRONGSWAN_CONF=$E/swanctl.conf timeout 150 swanctl "$@"; }

ike_up() {
    local style=$1 ns conf i
    for ns in srv c1 c2; do
        charon_conf "$ns" >"$E/$ns.strongswan.conf"
        # Each charon gets its own /run (its pid file is fixed there).
        : >"$E/$ns.charon.log"
        STRONGSWAN_CONF=$E/$ns.strongswan.conf bg ip netns exec "$ns" \
            sh -c 'mount -t tmpfs tmpfs /run && exec /usr/lib/ipsec/charon' >"$E/$ns.charon.out" 2>&1
    done
    for ns in srv c1 c2; do
        for ((i = 0; i < 300; i++)); do
            [ -S "$E/$ns.vici" ] && break
            sleep 0.1
        done
        conf=$dir/swanctl-$ns.conf
        [ "$ns" = srv ] && conf=$dir/swanctl-srv-$style.conf
        if ! swanctl_ --load-all --file "$conf" --uri "unix://$E/$ns.vici" >"$E/$ns.load.out" 2>&1; then
            bad "$style: swanctl --load-all in $ns" "$(cat "$E/$ns.load.out")"
            return 1
        fi
    done
    local t=$SECONDS pids=()
    for i in 1 2; do
        swanctl_ --initiate --child net --timeout 120 --uri "unix://$E/c$i.vici" >"$E/c$i.initiate.out" 2>&1 &
        pids+=($!)
    done
    local rc=0
    for i in 1 2; do
        if wait "${pids[$((i - 1))]}"; then
            ok "$style: IKEv2 tunnel c$i <-> srv established"
        else
            bad "$style: IKEv2 tunnel c$i <-> srv" "$(tail -n 5 "$E/c$i.initiate.out")"
            rc=1
        fi
    done
    echo "$(stamp)        (IKE took $((SECONDS - t)) s)"
    return $rc
}

peers_up() {
    local i
    for i in 1 2; do
        bg ip netns exec "c$i" /usr/bin/python3 "$dir/peer.py" client "client$i" >"$E/c$i.peer.log" 2>&1
    done
    # reflect: one unmodified echo server answering two peers that are both
    # 198.18.0.5:5000, each through its own tunnel; the same server without
    # ldsaref (port 8) has no way back at all.
    install -m 600 "$dir/rules-reflect" "$E/rules-reflect"
    bg ip netns exec srv "$lds" run --rules "$E/rules-reflect" --profile echo --mode nfmark -- \
        /usr/bin/python3 "$dir/peer.py" echo 7 >"$E/echo.log" 2>&1
    # Appending: tests() empties this log while the server runs.
    bg ip netns exec srv /usr/bin/python3 "$dir/peer.py" echo 8 >>"$E/echo-plain.log" 2>&1
    local f
    for f in c1.peer c2.peer echo echo-plain; do
        wait_for "$E/$f.log" ready 120 || { bad "$f did not start" "$(cat "$E/$f.log")"; return 1; }
    done
}

# What each end of each veth transmits is what is on the wire (captured
# inbound, the server's decapsulated packets would show up too: without an
# xfrm interface the kernel re-injects them on the same device).
capture_start() { # [FILTER]: keep only the packets it matches
    local i filter=()
    [ -n "${1:-}" ] && filter=("$1")
    for i in 1 2; do
        bg ip netns exec srv tcpdump -Z root -n -U -Q out -i "s-c$i" -w "$E/srv-c$i.pcap" "${filter[@]}" >"$E/srv-c$i.tcpdump.log" 2>&1
        bg ip netns exec "c$i" tcpdump -Z root -n -U -Q out -i c-srv -w "$E/c$i-srv.pcap" "${filter[@]}" >"$E/c$i-srv.tcpdump.log" 2>&1
    done
    local f
    for f in srv-c1 c1-srv srv-c2 c2-srv; do
        wait_for "$E/$f.tcpdump.log" "listening on" 60 || bad "tcpdump $f did not start" "$(cat "$E/$f.tcpdump.log")"
    done
}

# The wire between server and clients must have carried ESP and nothing
# else but IKE (and ARP).
capture_check() {
    local style=$1 ns p f
    for ns in srv c1 c2; do
        for p in $(ip netns pids "$ns"); do
            [ "$(cat /proc/"$p"/comm 2>/dev/null)" = tcpdump ] && kill -INT "$p"
        done
    done
    sleep 1
    for f in srv-c1 c1-srv srv-c2 c2-srv; do
        local esp plain
        esp=$(tcpdump -n -r "$E/$f.pcap" esp 2>/dev/null | wc -l)
        plain=$(tcpdump -n -r "$E/$f.pcap" 'not esp and not arp and not (udp port 500 or udp port 4500)' 2>/dev/null)
        if [ "$esp" -gt 0 ] && [ -z "$plain" ]; then
            ok "$style: the wire, sent ${f/-/ -> }: $esp ESP packets and no plaintext"
        else
            bad "$style: the wire, sent ${f/-/ -> }: $esp ESP packets; plaintext:" "$(echo "$plain" | head -n 10)"
        fi
    done
}

# http DESC EXPECTED WHICH [ldsaref run options...]: curl from the server
# to http://198.18.0.5/, wrapped when options are given.
http() {
    local desc=$1 want=$2 which=$3
    shift 3
    local -a wrap=()
    [ $# -gt 0 ] && wrap=("$lds" run --rules "$rules" "$@" --)
    local before after out rc
    before=$(sa_snapshot)
    out=$(in_ns srv "${wrap[@]}" curl -sS --max-time 10 http://198.18.0.5/ 2>&1)
    rc=$?
    after=$(sa_snapshot)
    if [ -n "$want" ]; then
        if [ "$rc" = 0 ] && [ "$out" = "$want" ]; then
            ok "$desc: curl answered '$out'"
        else
            bad "$desc: curl expected '$want'" "exit $rc: $out"
        fi
    elif [ "$rc" != 0 ] && ! grep -q client <<<"$out"; then
        ok "$desc: curl got no answer (exit $rc: ${out//$'\n'/ })"
    else
        bad "$desc: curl should have failed" "exit $rc: $out"
    fi
    check_sas "$desc" "$before" "$after" "$which"
}

# udp DESC EXPECTED WHICH SOCAT-ADDRESS [ldsaref run options...]: one datagram
# from the server to 198.18.0.5:7 and the answer, if any.
udp() {
    local desc=$1 want=$2 which=$3 addr=$4
    shift 4
    local -a wrap=()
    [ $# -gt 0 ] && wrap=("$lds" run --rules "$rules" "$@" --)
    local before after out t=10
    [ -z "$want" ] && t=3
    rm -f "$E/udp.out"
    before=$(sa_snapshot)
    # The shell sends one line, waits for one answer, and ends socat.
    in_ns srv "${wrap[@]}" socat -T "$t" "$addr" \
        SYSTEM:"echo ping; read -r r; echo \"\$r\" >$E/udp.out" >"$E/udp.err" 2>&1
    out=$(cat "$E/udp.out" 2>/dev/null)
    after=$(sa_snapshot)
    if [ "$out" = "$want" ]; then
        ok "$desc: $([ -n "$want" ] && echo "answered '$want'" || echo "no answer")"
    else
        bad "$desc: expected '${want:-no answer}'" "got '$out'" "$(cat "$E/udp.err")"
    fi
    check_sas "$desc" "$before" "$after" "$which"
}

# reflect_send DESC CLIENT PORT EXPECTED: client$CLIENT sends from
# 198.18.0.5:5000 (both clients use the same address and port) to the
# server's echo on PORT.
reflect_send() {
    local desc=$1 i=$2 port=$3 want=$4 t=10
    [ -z "$want" ] && t=3
    local before after out
    rm -f "$E/refl.out"
    before=$(sa_snapshot)
    in_ns "c$i" socat -T "$t" UDP4:203.0.113.1:"$port",bind=198.18.0.5:5000 \
        SYSTEM:"echo from-c$i; read -r r; echo \"\$r\" >$E/refl.out" >"$E/refl.err" 2>&1
    out=$(cat "$E/refl.out" 2>/dev/null)
    after=$(sa_snapshot)
    if [ "$out" = "$want" ]; then
        ok "$desc: client$i got $([ -n "$want" ] && echo "'$want' back" || echo "no answer")"
    else
        bad "$desc: client$i expected '${want:-no answer}'" "got '$out'" "$(cat "$E/refl.err")"
    fi
    local which=$i
    [ -z "$want" ] && which=in$i
    check_sas "$desc" "$before" "$after" "$which"
}

tests() {
    local style=$1 i
    rules=$E/rules-$style
    # ldsaref refuses rules that others can write; the checkout's mode
    # depends on the umask it was made with.
    install -m 600 "$dir/rules-$style" "$rules"

    http "$style: unwrapped" "" none
    for i in 1 2; do
        http "$style: --profile c$i (mark)" "client$i" $i --profile "c$i"
        http "$style: --profile sa-c$i --mode nfmark (saref $((101 * i)))" "client$i" $i --profile "sa-c$i" --mode nfmark
    done
    if [ "$style" = xfrmi ]; then
        for i in 2 1; do
            http "$style: --profile dev-c$i (dev ipsec$i)" "client$i" $i --profile "dev-c$i"
        done
    fi
    udp "$style: UDP unwrapped" "" none UDP4:198.18.0.5:7
    udp "$style: UDP connected, --profile c1" client1 1 UDP4:198.18.0.5:7 --profile c1
    udp "$style: UDP sendto, --profile c2" client2 2 UDP4-SENDTO:198.18.0.5:7 --profile c2
    udp "$style: UDP sendto, --profile sa-c1 --mode nfmark" client1 1 UDP4-SENDTO:198.18.0.5:7 --profile sa-c1 --mode nfmark
    if [ "$style" = xfrmi ]; then
        udp "$style: UDP sendto, --profile dev-c2" client2 2 UDP4-SENDTO:198.18.0.5:7 --profile dev-c2
    fi

    # reflect (the echo servers run since peers_up)
    reflect_send "$style: reflect" 1 7 from-c1
    reflect_send "$style: reflect" 2 7 from-c2
    reflect_send "$style: reflect" 1 7 from-c1
    : >"$E/echo-plain.log"
    reflect_send "$style: unwrapped echo" 1 8 ""
    if grep -aq "unreachable" "$E/echo-plain.log"; then
        ok "$style: the unwrapped echo's reply had no route ($(grep -a -m1 unreachable "$E/echo-plain.log"))"
    else
        bad "$style: the unwrapped echo should have failed to reply" "$(cat "$E/echo-plain.log")"
    fi
}

dump() {
    local ns
    echo "======== diagnostics ($1)"
    for ns in srv c1 c2; do
        echo "---- $ns: addresses"
        ip -n "$ns" -br addr 2>&1
        echo "---- $ns: rules and routes"
        ip -n "$ns" rule 2>&1
        ip -n "$ns" route show table all 2>&1 | grep -v '^local\|^broadcast'
        echo "---- $ns: xfrm state"
        ip -n "$ns" -s xfrm state 2>&1
        echo "---- $ns: xfrm policy"
        ip -n "$ns" xfrm policy 2>&1
        echo "---- $ns: swanctl --list-sas"
        swanctl_ --list-sas --uri "unix://$E/$ns.vici" 2>&1
        echo "---- $ns: charon log (last 40 lines)"
        tail -n 40 "$E/$ns.charon.log" "$E/$ns.charon.out" 2>&1
    done
    echo "---- peers"
    tail -n 20 "$E"/*.peer.log "$E"/echo*.log 2>&1
    echo "======== end of diagnostics"
}

phase() {
    local style=$1 t=$SECONDS
    phase_failed=0
    echo "$(stamp) ==== $style: $(
        [ "$style" = marks ] && echo "XFRM marks (mark_in/mark_out/set_mark_in = mast nfmark)" ||
            echo "xfrm interfaces (if_id_in/if_id_out, fwmark routing into ipsec1/ipsec2)"
    )"
    style_up "$style"
    if ike_up "$style"; then
        capture_start
        tests "$style"
        capture_check "$style"
    fi
    [ "$phase_failed" = 0 ] || dump "$style"
    style_down
    counts
    echo "$(stamp) ==== $style: done in $((SECONDS - t)) s"
}

modprobe -a esp4 xfrm_user xfrm_interface veth dummy
echo 'swanctl { load = random }' >"$E/swanctl.conf"
counts
topology_up
if [ "$opt_only" != churn ]; then
    if peers_up; then
        phase marks
        phase xfrmi
    else
        dump setup
    fi
fi
if [ "$opt_only" != static ]; then
    . "$dir/daemons.sh"
    . "$dir/churn.sh"
    # The cgroup backend's hierarchy (the guest's init mounts only what
    # the rest needs).
    [ -n "${GOSENDER:-}" ] && mount -t cgroup2 cgroup2 /sys/fs/cgroup
    kill_all_daemons
    for d in ${opt_daemons//+/ }; do
        if [ "$d" = libreswan ] && ! libreswan_install; then
            bad "libreswan: cannot install it in the guest from $LSW"
            continue
        fi
        for v in ${opt_variants//+/ }; do
            # The churn runs with marks (where a leak would show); the xfrm
            # interfaces get one cycle (recordings and the same checks).
            n=$opt_churn
            [ "$v" = xfrmi ] && n=1
            daemon_phase "$d" "$v" "$n"
        done
    done
fi
echo "$(stamp) ==== guest: $passed passed, $failed failed"
for f in "${failures[@]}"; do echo "       failed: $f"; done
counts
[ "$failed" = 0 ] && [ "$passed" -gt 0 ]
