# Sourced by guest.sh: the daemon phases' IKE daemons, configured as an
# operator would, with `ldsaref updown` run by the daemon itself.
#
#   server  strongSwan charon (swanctl.conf: mark_in/mark_out or
#           if_id_in/if_id_out, updown =) or libreswan pluto (ipsec.conf:
#           mark= or ipsec-interface=, leftupdown=), responder only
#   clients strongSwan charon initiators in c1/c2 (IKEv2 interop), each
#           owning 198.18.0.0/24 and 198.19.0.0/24 (both inside the
#           allowed 198.18.0.0/15): the daemons call updown once per subnet
#
# The updown line is the recorder (updown-record.c, built on the host and
# copied beside ldsaref) followed by the real command:
#   updown-record REC LDSAREF updown --dir RULES
# so no rules file is written by the test: RULES holds only what the
# daemon's calls wrote.

LSW=${LSW:-/var/cache/ldsaref-e2e/root} # libreswan, unpacked on the host
RULES=$E/rules.d                         # what `ldsaref updown` writes
REC=$E/rec                               # the recorder's records
SUBNETS="198.18.0.0/24 198.19.0.0/24"

# With the cgroup backend in the phase (CGROUP=1), updown also keeps
# table inet ldsaref current (--apply), as an operator using it would.
CGROUP=
updown_cmd() { echo "/mnt/bin/updown-record $REC $lds updown --dir $RULES${CGROUP:+ --apply}"; }

# Server side of both daemons, per variant: marks 1/2 with fwmark routes
# to the client in the clear (exactly what would leak once the daemon's
# policy is gone), or xfrm interfaces ipsec1/ipsec2 (if_id 1/2).
daemon_net_up() { # DAEMON VARIANT
    local daemon=$1 variant=$2 i s
    for i in 1 2; do
        local table=$((200 + i))
        if [ "$variant" = marks ]; then
            for s in $SUBNETS; do
                ip -n srv route add "$s" via "$(outer_cli $i)" dev "s-c$i" src 203.0.113.1 table $table
            done
            ip -n srv rule add fwmark $i table $table pref $((1000 + i))
            if [ "$daemon" = libreswan ]; then
                # libreswan's mark= marks the policies, not the inbound SA:
                # the decrypted packets keep the mark their ESP packet had,
                # so the operator marks the ESP of each peer (else the
                # marked inbound policy refuses them).
                nft_esp_marks
            fi
        else
            # strongSwan uses interfaces the operator made; pluto makes
            # ipsecN itself (ipsec-interface=N).
            if [ "$daemon" = strongswan ]; then
                ip -n srv link add "ipsec$i" type xfrm dev "s-c$i" if_id $i
                ip -n srv link set "ipsec$i" up
            fi
            ip -n srv rule add oif "ipsec$i" table $table pref $((1020 + i))
            ip -n srv rule add fwmark $i table $table pref $((1000 + i))
        fi
    done
}

nft_esp_marks() {
    ip netns exec srv nft -f - <<'EOF'
table ip e2e-esp-marks
delete table ip e2e-esp-marks
table ip e2e-esp-marks {
    chain pre {
        type filter hook prerouting priority mangle; policy accept;
        ip protocol esp ip saddr 192.0.2.2 meta mark set 1
        ip protocol esp ip saddr 192.0.2.6 meta mark set 2
    }
}
EOF
}

# Routes into an xfrm interface need it to exist: pluto creates it on the
# first up, so these come after the tunnels (idempotent).
daemon_xfrmi_routes() {
    local i s
    for i in 1 2; do
        ip -n srv link show "ipsec$i" >/dev/null 2>&1 || continue
        ip -n srv link set "ipsec$i" up 2>/dev/null
        for s in $SUBNETS; do
            ip -n srv route replace "$s" dev "ipsec$i" src 203.0.113.1 table $((200 + i)) 2>/dev/null
        done
    done
}

daemon_net_down() {
    local ns i pref
    for ns in srv c1 c2; do
        ip -n "$ns" xfrm state flush
        ip -n "$ns" xfrm policy flush
    done
    # The receivers' last TCP connections may still retransmit their FIN:
    # the clients' block stays, or the next phase's captures would count
    # them.
    client_block 1
    client_block 2
    for i in 1 2; do
        ip -n srv link del "ipsec$i" 2>/dev/null
        ip -n srv route flush table $((200 + i)) 2>/dev/null
    done
    for pref in $(ip -n srv rule show | sed -n 's/^\(10[0-9][0-9]\):.*/\1/p'); do
        ip -n srv rule del pref "$pref"
    done
    ip netns exec srv nft delete table ip e2e-esp-marks 2>/dev/null
    return 0
}

# ---- strongSwan (charon) -------------------------------------------------

# charon.conf of one namespace. The server runs updown, and retransmits
# briefly so that a dead peer is noticed within seconds (DPD); the clients
# keep the default patience (the server may be busy with its updown calls:
# the guest is emulated).
charon_conf_daemon() { # NS
    local extra= retrans=
    if [ "$1" = srv ]; then
        extra=updown
        retrans="retransmit_timeout = 0.5
    retransmit_base = 1.4
    retransmit_tries = 2"
    fi
    cat <<EOF
charon {
    load = random nonce aes sha1 sha2 hmac kdf gmp kernel-netlink socket-default vici $extra
    install_routes = no
    $retrans
    plugins {
        vici {
            socket = unix://$E/$1.vici
        }
    }
    filelog {
        log {
            path = $E/$1.charon.log
            time_format = %H:%M:%S
            # HH:MM:SS.mmm: the churn report times each client's SA
            time_add_ms = yes
            default = 1
        }
    }
}
EOF
}

# The server's swanctl.conf: one child per client, both subnets in its
# remote_ts; short lifetimes so that rekeys happen during the churn.
swanctl_srv_conf() { # VARIANT
    local variant=$1 i sel
    echo "connections {"
    for i in 1 2; do
        if [ "$variant" = marks ]; then
            sel="mark_in = $i
                mark_out = $i
                set_mark_in = $i"
        else
            sel="if_id_in = $i
                if_id_out = $i
                set_mark_in = $i"
        fi
        cat <<EOF
    c$i {
        version = 2
        local_addrs = $(outer_srv $i)
        remote_addrs = $(outer_cli $i)
        proposals = aes128-sha256-modp2048
        rekey_time = 8s
        over_time = 30s
        dpd_delay = 1s
        local { auth = psk
                id = server.ldsaref.test }
        remote { auth = psk
                 id = client$i.ldsaref.test }
        children {
            c$i {
                local_ts = 203.0.113.1/32
                remote_ts = ${SUBNETS// /,}
                mode = tunnel
                esp_proposals = aes128-sha256
                rekey_time = 4s
                life_time = 30s
                rand_time = 0s
                dpd_action = clear
                $sel
                updown = $(updown_cmd)
            }
        }
    }
EOF
    done
    cat <<EOF
}
secrets {
    ike-e2e { secret = "ldsaref-e2e-test-only-psk" }
}
EOF
}

# A client's swanctl.conf: one child with both subnets for charon; one
# child per subnet for pluto (which has one selector pair per child).
swanctl_cli_conf() { # I DAEMON
    local i=$1 daemon=$2 s n=0
    cat <<EOF
connections {
    srv {
        version = 2
        local_addrs = $(outer_cli $i)
        remote_addrs = $(outer_srv $i)
        proposals = aes128-sha256-modp2048
        rekey_time = 1h
        local { auth = psk
                id = client$i.ldsaref.test }
        remote { auth = psk
                 id = server.ldsaref.test }
        children {
EOF
    if [ "$daemon" = strongswan ]; then
        cat <<EOF
            net {
                local_ts = ${SUBNETS// /,}
                remote_ts = 203.0.113.1/32
                esp_proposals = aes128-sha256
                rekey_time = 1h
            }
EOF
    else
        for s in $SUBNETS; do
            n=$((n + 1))
            cat <<EOF
            net$n {
                local_ts = $s
                remote_ts = 203.0.113.1/32
                esp_proposals = aes128-sha256
                rekey_time = 1h
            }
EOF
        done
    fi
    cat <<EOF
        }
    }
}
secrets {
    ike-e2e { secret = "ldsaref-e2e-test-only-psk" }
}
EOF
}

charon_start() { # NS
    local ns=$1 i
    charon_conf_daemon "$ns" >"$E/$ns.strongswan.conf"
    rm -f "$E/$ns.vici"
    STRONGSWAN_CONF=$E/$ns.strongswan.conf bg ip netns exec "$ns" \
        sh -c 'mount -t tmpfs tmpfs /run && exec /usr/lib/ipsec/charon' >>"$E/$ns.charon.out" 2>&1
    for ((i = 0; i < 300; i++)); do
        [ -S "$E/$ns.vici" ] && STRONGSWAN_CONF=$E/swanctl.conf timeout 5 swanctl --stats --uri "unix://$E/$ns.vici" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

charon_load() { # NS CONFFILE
    swanctl_ --load-all --file "$2" --uri "unix://$E/$1.vici" >"$E/$1.load.out" 2>&1
}

# pid of a daemon (by comm) in a namespace
ns_pid() { # NS COMM
    local p
    for p in $(ip netns pids "$1" 2>/dev/null); do
        [ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$2" ] && echo "$p" && return 0
    done
    return 1
}

client_start() { # I DAEMON
    local i=$1
    charon_start "c$i" || return 1
    swanctl_cli_conf "$i" "$2" >"$E/c$i.swanctl.conf"
    charon_load "c$i" "$E/c$i.swanctl.conf"
}

# Initiates every child of client I (IKE SA first, the others share it).
# Each one is tried whatever the one before gave: a child may also come
# up through the server's rekey meanwhile ("existing duplicate"); the
# server's up-client calls are what counts.
client_initiate() { # I DAEMON
    local i=$1 c children=net
    [ "$2" = libreswan ] && children="net1 net2"
    for c in $children; do
        swanctl_ --initiate --child "$c" --timeout 40 --uri "unix://$E/c$i.vici" >>"$E/c$i.initiate.out" 2>&1
    done
    return 0
}

# The peer vanishes: its charon killed (-9) and its SAs gone, as after a
# crash and reboot (its stale SAs would otherwise keep answering the
# server's ESP, and DPD, which only asks when nothing comes in, would wait
# for the next IKE rekey to notice). Its policies stay, with the block
# below: a client never sends in the clear either.
client_kill() { # I
    local p
    p=$(ns_pid "c$1" charon) && kill -9 "$p"
    while [ -n "$p" ] && [ -e "/proc/$p" ]; do sleep 0.05; done
    ip -n "c$1" xfrm state flush
}

# The clients' own fallback (not ldsaref's business, but on the same wire):
# a lowest-precedence block for their networks towards the server, so that
# a client whose SA is gone (a TCP retransmission of its receiver) drops
# instead of sending in the clear, which the captures would count.
client_block() { # I
    local dir
    for dir in out; do
        ip -n "c$1" xfrm policy update src 198.18.0.0/15 dst 203.0.113.1/32 dir $dir action block priority 4000000000
    done
}

# ---- libreswan (pluto) ---------------------------------------------------

# Puts the unpacked package where pluto expects it: /usr/libexec/ipsec
# (addconn, whack, _updown at their compiled-in paths) over the read-only
# 9p root, an NSS database in tmpfs.
libreswan_install() {
    [ -x "$LSW/usr/libexec/ipsec/pluto" ] || { echo "no libreswan under $LSW"; return 1; }
    if ! mountpoint -q /usr/libexec; then
        mount -t overlay overlay -o "lowerdir=$LSW/usr/libexec:/usr/libexec" /usr/libexec 2>/dev/null || {
            # Fallback: a tmpfs with the host's entries bound back in.
            mkdir -p /mnt/libexec.host && mount --bind /usr/libexec /mnt/libexec.host &&
                mount -t tmpfs -o mode=755 libexec /usr/libexec || return 1
            local f
            for f in /mnt/libexec.host/*; do ln -s "$f" "/usr/libexec/${f##*/}"; done
            mkdir /usr/libexec/ipsec && mount --bind "$LSW/usr/libexec/ipsec" /usr/libexec/ipsec
        }
    fi
    [ -x /usr/libexec/ipsec/addconn ] || return 1
    mkdir -p "$E/lsw/nss" "$E/lsw/run" "$E/lsw/ipsec.d"
    certutil -N -d "sql:$E/lsw/nss" --empty-password >"$E/lsw/certutil.out" 2>&1
}

# ipsec.conf, as the test runs it (printed in the log once).
libreswan_conf() { # VARIANT
    local variant=$1 i sel
    cat <<EOF
config setup
    logfile=$E/pluto.log
    logtime=yes
    logappend=yes
    dumpdir=$E/lsw/run
    ikev1-policy=drop
    uniqueids=yes
EOF
    for i in 1 2; do
        if [ "$variant" = marks ]; then
            sel="mark=$i/0xffffffff"
        else
            sel="ipsec-interface=$i"
        fi
        cat <<EOF

conn c$i
    ikev2=insist
    authby=secret
    left=$(outer_srv $i)
    leftid=@server.ldsaref.test
    leftsubnet=203.0.113.1/32
    right=$(outer_cli $i)
    rightid=@client$i.ldsaref.test
    rightsubnets={$SUBNETS}
    ike=aes128-sha2_256-modp2048
    esp=aes128-sha2_256
    pfs=no
    $sel
    leftupdown="$(updown_cmd)"
    ikelifetime=30s
    salifetime=16s
    rekeymargin=10s
    rekeyfuzz=0%
    dpddelay=1
    dpdtimeout=3
    dpdaction=clear
    retransmit-interval=500
    retransmit-timeout=4s
    auto=add
EOF
    done
}

# whack waits for pluto's answer: bounded, so that a busy pluto shows up
# as a failed step rather than a hung test.
whack_() { timeout 30 /usr/libexec/ipsec/whack --rundir "$E/lsw/run" "$@"; }

pluto_start() { # VARIANT
    libreswan_conf "$1" >"$E/lsw/ipsec.conf"
    echo '@server.ldsaref.test @client1.ldsaref.test @client2.ldsaref.test : PSK "ldsaref-e2e-test-only-psk"' \
        >"$E/lsw/ipsec.secrets"
    chmod 600 "$E/lsw/ipsec.secrets"
    rm -f "$E/lsw/run/"*
    # With the cgroup backend: pluto drops CAP_SYS_ADMIN before it runs
    # updown, so `ldsaref updown --apply` cannot mount the cgroup2 view it
    # needs where `ip netns exec` left none (a fresh /sys); mounted here,
    # as a gateway that is not in a netns has it.
    local pre=()
    [ -n "${CGROUP:-}" ] && pre=(sh -c 'mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec "$@"' sh)
    bg ip netns exec srv "${pre[@]}" /usr/libexec/ipsec/pluto --nofork --config "$E/lsw/ipsec.conf" \
        --rundir "$E/lsw/run" --nssdir "$E/lsw/nss" --ipsecdir "$E/lsw/ipsec.d" \
        --secretsfile "$E/lsw/ipsec.secrets" --logfile "$E/pluto.log" >>"$E/pluto.out" 2>&1
    local i
    for ((i = 0; i < 300; i++)); do
        [ -S "$E/lsw/run/pluto.ctl" ] && whack_ --status >/dev/null 2>&1 && break
        sleep 0.1
    done
    # pluto runs /usr/libexec/ipsec/addconn --autoall itself at start:
    # wait for the last connection to be there.
    for ((i = 0; i < 300; i++)); do
        whack_ --status 2>/dev/null | grep -q '"c2/0x2"' && return 0
        sleep 0.1
    done
    return 1
}

# ---- both ------------------------------------------------------------------

server_start() { # DAEMON VARIANT
    if [ "$1" = strongswan ]; then
        charon_start srv || return 1
        swanctl_srv_conf "$2" >"$E/srv.swanctl.conf"
        charon_load srv "$E/srv.swanctl.conf"
    else
        pluto_start "$2"
    fi
}

# The server takes client I's tunnel down (operator's command).
server_terminate() { # DAEMON I
    if [ "$1" = strongswan ]; then
        STRONGSWAN_CONF=$E/swanctl.conf timeout 30 swanctl --terminate --ike "c$2" --timeout 20 --uri "unix://$E/srv.vici" >>"$E/srv.terminate.out" 2>&1
    else
        # rightsubnets= makes one connection per subnet pair ("c1/1x0",
        # ...); --name c1 with the alias terminates them all.
        whack_ --name "c$2" --terminate >>"$E/srv.terminate.out" 2>&1
    fi
}

# The server's daemon stops (SIGTERM for charon; whack --shutdown for pluto).
server_stop() { # DAEMON
    local p
    if [ "$1" = strongswan ]; then
        p=$(ns_pid srv charon) && kill -TERM "$p"
    else
        whack_ --shutdown >/dev/null 2>&1
        p=$(ns_pid srv pluto)
    fi
    local i
    for ((i = 0; i < 100; i++)); do
        [ -n "$p" ] && [ -e "/proc/$p" ] || break
        sleep 0.1
    done
    [ -n "$p" ] && [ -e "/proc/$p" ] && kill -9 "$p"
    return 0
}

kill_all_daemons() {
    local ns p
    for ns in srv c1 c2; do
        for p in $(ip netns pids "$ns" 2>/dev/null); do
            case $(cat /proc/"$p"/comm 2>/dev/null) in charon | pluto | tcpdump | python3 | gosender) kill -9 "$p" ;; esac
        done
    done
    sleep 0.3
}

# The updown calls recorded so far whose verb is VERB for connection CONN
# or one of its instances (libreswan's "c1/0x1"), counted.
calls_count() { # VERB CONN
    grep -c " $1 $2[/ ]" "$REC/calls.log" 2>/dev/null
}

# Waits until at least N calls VERB for CONN have been made (a deadline in
# seconds, not a count of polls: under load every poll is slow).
wait_calls() { # VERB CONN N SECONDS
    local end=$((SECONDS + $4))
    while ((SECONDS < end)); do
        [ "$(calls_count "$1" "$2")" -ge "$3" ] && return 0
        sleep 0.2
    done
    return 1
}
