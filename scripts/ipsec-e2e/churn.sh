# Sourced by guest.sh (after daemons.sh): a daemon phase. The server's IKE
# daemon (strongSwan or libreswan) runs `ldsaref updown` itself; programs
# wrapped with `ldsaref run --rules RULES --profile CONN` send to both
# clients the whole time, never restarted, while the tunnels come up, rekey,
# are taken down by the server and lost to a peer that vanishes (kill -9,
# noticed by DPD), and come back, CYCLES times. Then:
#   - the wire: captures at both ends of both veths, the whole phase; any
#     packet to or from the client networks that is not ESP/IKE is a leak
#   - the receivers: a message tagged for the other client is a wrong one
#   - recovery: from each up-client call to the first message received
# and the updown environments of the first cycle and of the daemon's stop
# are printed between marker lines (the host's --record keeps them).

# The profile a program uses to reach client I: the connection's name,
# the section `ldsaref updown` wrote. strongSwan passes the child's name
# (c1); libreswan's rightsubnets={a b} makes one connection per subnet
# ("c1/0x1", "c1/0x2"), which ldsaref updown files as their connection,
# c1. (An older ldsaref wrote c1_0x1, c1_0x2: then the first.)
profile_of() { # DAEMON I
    local f
    if [ -e "$RULES/c$2.rules" ] || [ "$1" = strongswan ]; then
        echo "c$2"
        return
    fi
    for f in "$RULES/c$2"_*.rules; do
        [ -e "$f" ] && basename "$f" .rules && return
    done
    echo "c$2"
}

# Brings both clients' tunnels up (in parallel) and waits until the server
# has called up-client for each subnet of each; N: the count to reach.
cycle_up() { # DAEMON N
    local daemon=$1 n=$2 i pids=()
    for i in 1 2; do
        client_initiate "$i" "$daemon" &
        pids+=($!)
    done
    wait "${pids[@]}"
    echo "$(stamp)        initiated"
    for i in 1 2; do
        wait_calls up-client "c$i" "$n" 30 || {
            bad "$tag: up-client for c$i (wanted $n calls so far)" "$(sort -n "$REC/calls.log" 2>/dev/null | tail -n 8)"
            return 1
        }
    done
}

# Client I's tunnel goes down: the server terminates it (how=term) or the
# client vanishes and the server's DPD notices (how=kill); waits for the
# server's down-client calls (N so far).
cycle_down_one() { # DAEMON I HOW N
    local daemon=$1 i=$2 how=$3 n=$4
    echo "$(stamp)        c$i: down ($how)"
    if [ "$how" = term ]; then
        # A terminate that meets a rekey in progress can fail ("terminating
        # SA failed"): the operator tries again.
        local try
        for try in 1 2 3; do
            server_terminate "$daemon" "$i"
            wait_calls down-client "c$i" "$n" 12 && break
            echo "$(stamp)        c$i: no down-client yet, terminating again"
        done
    else
        client_kill "$i"
        # The peer reboots at once: its new charon knows nothing of the
        # old IKE SA (the server's DPD still has to notice), and is ready
        # to initiate by the time the server has given up on it.
        client_start "$i" "$daemon" && echo "$(stamp)        c$i: charon restarted"
    fi
    wait_calls down-client "c$i" "$n" 30 || return 1
    echo "$(stamp)        c$i: down-client called"
    # A client that missed the server's DELETE (pluto busy, a lost
    # packet) would go on using a dead IKE SA: it forgets it too.
    [ "$how" = term ] && swanctl_ --terminate --ike srv --force --timeout 5 --uri "unix://$E/c$i.vici" >/dev/null 2>&1
    return 0
}

rec_on() { touch "$REC/on"; }
rec_off() { rm -f "$REC/on"; }

# Prints the recorded environments, renumbered in call order, between
# marker lines: NAME is DAEMON/VARIANT/NN-VERB-CONN.env.
print_records() { # DAEMON VARIANT
    local f n=0 base
    for f in $(ls "$REC/env" 2>/dev/null | sort); do
        n=$((n + 1))
        base=${f#*-}
        echo "LDSAREF-E2E-RECORD-BEGIN $1/$2/$(printf %02d $n)-$base"
        cat "$REC/env/$f"
        echo "LDSAREF-E2E-RECORD-END"
    done
    echo "$(stamp)        ($n updown environments recorded for $1/$2)"
}

wire_count() { # FILTER: packets matching it, summed over the four captures
    local f total=0 c
    for f in srv-c1 c1-srv srv-c2 c2-srv; do
        c=$(tcpdump -n -r "$E/$f.pcap" "$1" 2>/dev/null | wc -l)
        total=$((total + c))
    done
    echo $total
}

# The clients' XFRM statistics (/proc/net/xfrm_stat is per network
# namespace), saved as $E/xfrm_stat-cI.SUFFIX: the kernel's own count of
# what each client's SAs decrypted and then refused, which no receiver's
# tag can see.
xfrm_stats() { # SUFFIX
    local ns
    for ns in srv c1 c2; do
        ip netns exec "$ns" cat /proc/net/xfrm_stat >"$E/xfrm_stat-$ns.$1" 2>/dev/null
    done
    # The server's netfilter guards (updown's, behind each mark rule):
    # "CHAINS DROPPED", the guard chains and the packets they dropped.
    ip netns exec srv nft list table inet ldsaref_guard 2>/dev/null |
        awk '/^\tchain g_/ {c++} /counter packets/ {for (i = 1; i < NF; i++) if ($i == "packets") d += $(i + 1)}
             END {print c + 0, d + 0}' >"$E/guard-srv.$1"
}

# One line per namespace: the counters that moved between the two
# snapshots. The server's are reported: its outbound counters say what its
# policies did with the senders' packets (XfrmOutPolBlock: ldsaref's
# fallback blocks or a daemon's; XfrmOutNoStates: a policy without its SA).
# Each client's are followed by a CHECK that no decrypted packet was
# refused for not matching its SA's selector (XfrmInStateMismatch:
# decrypted by an SA negotiated for other addresses). Reported, not failed
# on: packets for an SA already gone (XfrmInNoStates) and decrypted ones
# whose policy was just removed (XfrmInNoPols), what a tunnel going down
# leaves in flight; and XfrmInTmplMismatch, decrypted by one of this
# client's own SAs while its policy's template names another of them:
# seen only with libreswan, which negotiates one SA per subnet pair (a few
# in 20 cycles, none in the other phases; not pinned down: perhaps the
# client's charon, restarted in the DPD cycles, handing the two CHILD_SAs'
# reqids out afresh). The outer addresses are the client's own either way:
# which client a message was meant for, only its tag says (the receivers'
# check).
xfrm_stats_check() {
    python3 - "$E" "$tag" <<'PY'
import sys
E, tag = sys.argv[1], sys.argv[2]
def read(p):
    try:
        return {k: int(v) for k, v in (l.split() for l in open(p) if l.strip())}
    except (OSError, ValueError):
        return None
def guard(p):
    try:
        return [int(w) for w in open(p).read().split()]
    except (OSError, ValueError):
        return None
ga, gb = guard(f"{E}/guard-srv.before"), guard(f"{E}/guard-srv.after")
if ga and gb and len(ga) == 2 and len(gb) == 2:
    print(f"DETAIL srv: the netfilter guard dropped {gb[1] - ga[1]} packets during the phase "
          f"(marked, to a client network, not transformed by IPsec; {gb[0]} guard chains)")
    if tag.endswith("/marks"):
        print(f"CHECK {int(gb[0] >= 1)} {tag}: updown installed its netfilter guards on the server ({gb[0]} chains)")
else:
    print(f"CHECK 0 {tag}: the server's guard table could be read before and after the phase")
for who in ("srv", "c1", "c2"):
    a, b = read(f"{E}/xfrm_stat-{who}.before"), read(f"{E}/xfrm_stat-{who}.after")
    if a is None or b is None:
        if who == "srv":
            print("DETAIL srv: XFRM statistics not read")
        else:
            print(f"CHECK 0 {tag}: {who}'s XFRM statistics could be read before and after the phase")
        continue
    moved = {k: b[k] - a.get(k, 0) for k in b if b[k] != a.get(k, 0)}
    print(f"DETAIL {who}: XFRM statistics that moved during the phase: "
          + (", ".join(f"{k} {v}" for k, v in sorted(moved.items())) or "none"))
    if who != "srv":
        wrong = moved.get("XfrmInStateMismatch", 0)
        print(f"CHECK {int(wrong == 0)} {tag}: {who}'s SAs decrypted nothing outside their own selectors "
              f"(XfrmInStateMismatch: {wrong}; XfrmInTmplMismatch, reported: {moved.get('XfrmInTmplMismatch', 0)})")
PY
}

capture_stop() {
    local ns p
    for ns in srv c1 c2; do
        for p in $(ip netns pids "$ns"); do
            [ "$(cat /proc/"$p"/comm 2>/dev/null)" = tcpdump ] && kill -INT "$p"
        done
    done
    sleep 1
}

# daemon_phase DAEMON VARIANT CYCLES
daemon_phase() {
    local daemon=$1 variant=$2 cycles=$3 i k t=$SECONDS
    tag=$daemon/$variant
    phase_failed=0
    echo "$(stamp) ==== $tag: $daemon runs ldsaref updown; $cycles churn cycles"
    # The cgroup backend rides along with marks: a static Go sender per
    # client under `ldsaref run --cgroup`, which no preload reaches.
    CGROUP=
    [ "$variant" = marks ] && [ -n "${GOSENDER:-}" ] && CGROUP=1
    rm -rf "$REC" "$RULES" "$E"/churn-*.log "$E"/xfrm_stat-* "$E"/guard-srv.* "$E/c1.initiate.out" "$E/c2.initiate.out"
    mkdir -p "$REC/env" "$RULES"
    chmod 755 "$RULES"
    daemon_net_up "$daemon" "$variant"
    # Every packet on the wires that is not ESP, IKE or ARP is kept, for
    # the whole phase (the static checks count the ESP itself; keeping it
    # all here cost a minute per phase reading it back in the emulator).
    capture_start 'not esp and not arp and not (udp port 500 or udp port 4500)'
    rec_on
    if ! server_start "$daemon" "$variant"; then
        bad "$tag: the server's $daemon did not start" "$(tail -n 20 "$E/srv.load.out" "$E/pluto.log" "$E/pluto.out" 2>/dev/null)"
        daemon_phase_end "$daemon" "$variant" "$t"
        return
    fi
    if [ "$daemon" = strongswan ]; then
        echo "$(stamp)        server swanctl.conf ($variant):"
        sed 's/^/           | /' "$E/srv.swanctl.conf"
    else
        echo "$(stamp)        server ipsec.conf ($variant):"
        sed 's/^/           | /' "$E/lsw/ipsec.conf"
    fi
    for i in 1 2; do
        client_block "$i"
        client_start "$i" "$daemon" || bad "$tag: client c$i's charon" "$(cat "$E/c$i.load.out")"
        bg ip netns exec "c$i" /usr/bin/python3 "$dir/churn.py" sink "client$i" "$E/churn-sink-c$i.log" \
            >"$E/churn-sink-c$i.out" 2>&1
    done
    local nsub
    nsub=$(wc -w <<<"$SUBNETS")
    if ! cycle_up "$daemon" "$nsub"; then
        daemon_phase_end "$daemon" "$variant" "$t"
        return
    fi
    [ "$variant" = xfrmi ] && daemon_xfrmi_routes
    ok "$tag: both tunnels up, updown called by $daemon ($(wc -l <"$REC/calls.log") calls)"
    for f in "$RULES"/*; do
        [ -e "$f" ] && echo "       $f:" && sed 's/^/         | /' "$f"
    done
    # The senders: started once the rules exist (ldsaref run refuses an
    # unknown profile), never restarted.
    local since
    xfrm_stats before
    since=$(date +%s.%N)
    for i in 1 2; do
        bg ip netns exec srv "$lds" run --rules "$RULES" --profile "$(profile_of "$daemon" $i)" --mode nfmark -- \
            /usr/bin/python3 "$dir/churn.py" send "client$i" "$E/churn-send-c$i.log" >"$E/churn-send-c$i.out" 2>&1
    done
    [ -n "$CGROUP" ] && cgroup_senders_start "$daemon"
    for i in 1 2; do
        if ! wait_for "$E/churn-send-c$i.out" ready 30; then
            bad "$tag: the sender for c$i did not start" "$(cat "$E/churn-send-c$i.out")"
        fi
        if [ -n "$CGROUP" ] && ! wait_for "$E/churn-gosend-c$i.out" ready 30; then
            bad "$tag: the cgroup sender for c$i did not start" "$(cat "$E/churn-gosend-c$i.out")"
        fi
    done
    sleep 4
    # Each cycle: one client's tunnel terminated by the server, the
    # other's peer killed (DPD), alternating; a pause while down; both
    # back up; a hold of 2 s (twice the 1 s target; CHILD rekeys still
    # come, with lifetimes this short, while the next down is noticed).
    local downs=$nsub ups=$nsub
    for ((k = 1; k <= cycles; k++)); do
        [ "$k" = 2 ] && rec_off
        local how1=term how2=kill pids=() rc=0
        ((k % 2 == 0)) && how1=kill how2=term
        cycle_down_one "$daemon" 1 $how1 "$downs" &
        pids+=($!)
        cycle_down_one "$daemon" 2 $how2 "$downs" &
        pids+=($!)
        for i in 0 1; do wait "${pids[$i]}" || rc=1; done
        if [ "$rc" != 0 ]; then
            bad "$tag: cycle $k: the server did not call down-client for both tunnels" \
                "$(sort -n "$REC/calls.log" | tail -n 8)" "$(tail -n 5 "$E/srv.terminate.out" 2>/dev/null)"
            break
        fi
        downs=$((downs + nsub))
        sleep 1
        for i in 1 2; do
            if ! ns_pid "c$i" charon >/dev/null; then
                client_start "$i" "$daemon" || bad "$tag: cycle $k: restarting c$i's charon"
                echo "$(stamp)        c$i: charon restarted"
            fi
        done
        ups=$((ups + nsub))
        cycle_up "$daemon" "$ups" || break
        [ "$variant" = xfrmi ] && daemon_xfrmi_routes
        echo "$(stamp)        cycle $k/$cycles done ($(wc -l <"$REC/calls.log") updown calls)"
        sleep 2
    done
    rec_on
    server_stop "$daemon"
    echo "$(stamp)        $daemon stopped"
    sleep 1
    rec_off
    daemon_phase_end "$daemon" "$variant" "$t" "$since" "$cycles"
}

# The cgroup backend's side of a phase, as its recipe in the README says:
# table inet ldsaref applied once (updown --apply keeps it current from
# then on), the operator's route for the first lookup (no route to the
# client networks in the server's main table; `dev lo`, so nothing unmarked
# leaves, and the source the tunnels' policies name), and a static Go
# sender per client in its profile's cgroup.
cgroup_senders_start() { # DAEMON
    local i out
    ip -n srv route add 198.18.0.0/15 dev lo src 203.0.113.1
    if ! out=$(ip netns exec srv "$lds" apply --rules "$RULES" 2>&1); then
        bad "$tag: ldsaref apply" "$out"
        return 1
    fi
    echo "$(stamp)        ldsaref apply: $out"
    for i in 1 2; do
        bg ip netns exec srv "$lds" run --cgroup --rules "$RULES" --profile "$(profile_of "$1" $i)" -- \
            "$GOSENDER" "client$i" "$E/churn-gosend-c$i.log" >"$E/churn-gosend-c$i.out" 2>&1
    done
}

cgroup_senders_stop() {
    local p
    for p in $(ip netns pids srv 2>/dev/null); do
        [ "$(cat /proc/"$p"/comm 2>/dev/null)" = gosender ] && kill -9 "$p"
    done
    sleep 0.3
    ip netns exec srv "$lds" apply --rules "$RULES" --remove >/dev/null 2>&1
    ip -n srv route del 198.18.0.0/15 dev lo 2>/dev/null
    CGROUP=
}

# Stops everything of the phase, reads the wire and the logs, prints the
# summary line and the checks.
daemon_phase_end() { # DAEMON VARIANT T0 [SINCE CYCLES]
    local daemon=$1 variant=$2 t=$3 since=${4:-} cycles=${5:-0}
    capture_stop
    kill_all_daemons
    local backends=""
    [ -n "$CGROUP" ] && backends=', "cgroup": "g"'
    [ -n "$CGROUP" ] && cgroup_senders_stop
    if [ -n "$since" ]; then
        local leaked other rekeys
        leaked=$(wire_count 'not esp and not arp and not (udp port 500 or udp port 4500) and net 198.18.0.0/15')
        other=$(wire_count 'not esp and not arp and not (udp port 500 or udp port 4500) and not net 198.18.0.0/15')
        local conn1 conn2 json
        conn1=$(profile_of "$daemon" 1) conn2=$(profile_of "$daemon" 2)
        # senders per backend: the library's (its log churn-send-cI.log,
        # plain sequence numbers) and, with the cgroup backend, the Go
        # sender's (churn-gosend-cI.log, sequence numbers "gN")
        json=$(printf '{"daemon": "%s", "cycles": %d, "leaked": %d, "grace": 0.5, "since": %s, "calls": "%s",
            "backends": {"library": ""%s}, "logs": "%s"}' \
            "$tag" "$cycles" "$leaked" "$since" "$REC/calls.log" "$backends" "$E")
        local r
        r=$(python3 "$dir/churn.py" report "$json")
        xfrm_stats after
        if [ "$daemon" = strongswan ]; then
            rekeys=$(grep -c 'CHILD_SA .* established' "$E/srv.charon.log")
        else
            rekeys=$(grep -c 'established Child SA\|rekeyed Child SA' "$E/pluto.log")
        fi
        echo "$(stamp)        report: $r"
        if [ "$leaked" != 0 ]; then
            echo "       the cleartext packets (first 20 of each capture):"
            for f in srv-c1 c1-srv srv-c2 c2-srv; do
                tcpdump -tt -n -r "$E/$f.pcap" 'not esp and not arp and not (udp port 500 or udp port 4500) and net 198.18.0.0/15' 2>/dev/null |
                    head -n 20 | sed "s/^/         $f: /"
            done
            # What the daemon and ldsaref did around each (the first 5):
            # the updown calls from 3 s before to 1 s after, and the
            # server's outbound XFRM policies and routing rules as the
            # phase ends.
            for f in srv-c1 srv-c2; do
                tcpdump -tt -n -r "$E/$f.pcap" 'not esp and not arp and not (udp port 500 or udp port 4500) and net 198.18.0.0/15' 2>/dev/null |
                    head -n 5 | while read -r t _; do
                    echo "         updown calls around $t ($f): EPOCH VERB CONN CLIENT IF_ID EXIT END"
                    awk -v t="$t" '$1 >= t - 3 && $1 <= t + 1' "$REC/calls.log" | sort -n | sed 's/^/           /'
                    echo "         the daemons' logs from 2 s before to 1 s after:"
                    python3 "$dir/churn.py" window "$t" 2 1 \
                        "$E/srv.charon.log" "$E/pluto.log" "$E/c1.charon.log" "$E/c2.charon.log" |
                        grep -av 'sending packet\|received packet\|^.*: *$' | head -n 80 | sed 's/^/           /'
                done
            done
            echo "         the server's outbound policies now:"
            ip -n srv xfrm policy list dir out 2>&1 | grep -E '^src|mark|action|priority' | head -n 40 | sed 's/^/           /'
        fi
        echo "$(stamp)        other non-ESP/IKE/ARP packets on the wire (not to/from the client networks): $other; CHILD SAs established by the server: $rekeys"
        python3 - "$r" "$tag" <<'EOF' >"$E/churn-verdict"
import json, sys
r = json.loads(sys.argv[1]); tag = sys.argv[2]
print(f"SUMMARY {tag}: cycles {r['cycles']}, sent {r['sent']}, refused {r['refused']}, "
      f"delivered {r['delivered']}, leaked {r['leaked']}, wrong {r['wrong']}, "
      f"worst recovery {r['recovery_ms']} ms (from the call's return {r['recovery_after_return_ms']} ms; "
      f"longest updown call {r['updown_call_max_ms']} ms; ups {r['ups']}, unrecovered {len(r['unrecovered'])}, "
      f"ok-while-down {r['ok_while_down']}, errnos {r['errnos']}; "
      f"ups the daemons failed at the peer {len(r['peer_failed'])})")
print(f"DETAIL ldsaref updown calls, median/longest per verb: "
      + ", ".join(f"{v} {t}" for v, t in r["updown_calls"].items()))
for d in r["peer_failed"][:6]:
    print(f"DETAIL up-client whose SA the peer never established (not counted in recovery): {d}")
for b, o in r["backends"].items():
    print(f"SUMMARY {tag} [{b}]: sent {o['sent']}, refused {o['refused']}, delivered {o['delivered']}, "
          f"wrong {o['wrong']}, worst recovery {o['recovery_ms']} ms (from the call's return "
          f"{o['recovery_after_return_ms']} ms; first successful send after the return "
          f"{o['steered_after_return_ms']} ms; split where the client's SA was established: "
          f"daemons {o['peer_ms']} ms, then to the first message {o['after_peer_ms']} ms), "
          f"ups {o['ups']}, ok-while-down {o['ok_while_down']}, "
          f"errnos {o['errnos']}; slowest: {'; '.join(o['slowest']) or 'none'}")
print(f"CHECK {int(not r['updown_failed'])} {tag}: every ldsaref updown call exited 0 ({len(r['updown_failed'])} did not: {'; '.join(r['updown_failed'][:3]) or 'none'})")
print(f"CHECK {int(r['leaked'] == 0)} {tag}: no cleartext to/from the client networks on the wire ({r['leaked']} packets)")
print(f"CHECK {int(r['wrong'] == 0)} {tag}: no message in the wrong tunnel ({r['wrong']})")
# Recovery: a hard check that every tunnel that came back carried the
# running senders' traffic again (no restart) within 10 s of its up-client
# call, and the issue's 1 s target reported beside it. In this emulated
# guest the daemon answers the peer only after its updown calls, and every
# process start costs hundreds of ms, so the 1 s target measures the
# emulator as much as ldsaref; it is reported, not failed on.
okrec = r['recovery_ms'] <= 10000 and not r['unrecovered'] and r['ups'] > 0
print(f"CHECK {int(okrec)} {tag}: every tunnel back up carried the running senders again within 10 s of its up-client call (worst {r['recovery_ms']} ms over {r['ups']} calls; unrecovered: {'; '.join(r['unrecovered'][:5]) or 'none'})")
for d in r.get("unrecovered_detail", [])[:6]:
    print(f"DETAIL unrecovered: {d}")
for u in r["unrecovered"][:2]:
    print(f"WINDOW {float(u.rsplit(' ', 1)[1]):.3f} 8 12 unrecovered up")
# what the daemons did between the slowest up-client call and the first
# message through the tunnel (the 1 s target)
if r["recovery_ms"] > 1000 and "slowest_up_at" in r:
    print(f"WINDOW {r['slowest_up_at']:.3f} 1 {r['recovery_ms'] / 1000 + 0.5:.1f} slowest recovery")
for b, o in r["backends"].items():
    print(f"TARGET {tag} [{b}]: first packet within 1 s of each up-client call: {'met' if o['recovery_ms'] <= 1000 else 'NOT met'} (worst {o['recovery_ms']} ms from the call, {o['recovery_after_return_ms']} ms from its return; the first successful send came at worst {o['steered_after_return_ms']} ms after the return; from the call to the client's SA at worst {o['peer_ms']} ms, from the client's SA to the first message at worst {o['after_peer_ms']} ms; {o['within_1s']} of {o['recovered']} ups within 1 s, median {o['recovery_p50_ms']} ms, 90th percentile {o['recovery_p90_ms']} ms; without the time in updown calls: daemons' own part at worst {o['peer_own_ms']} ms, {o['within_1s_without_updown']} of {o['split_ups']} ups within 1 s)")
    print(f"CHECK {int(o['delivered'] > 0)} {tag} [{b}]: messages delivered through the tunnels ({o['delivered']})")
EOF
        xfrm_stats_check >>"$E/churn-verdict"
        local line
        while read -r line; do
            case $line in
            SUMMARY*) echo "$(stamp) ${line#SUMMARY }" ;;
            TARGET*) echo "$(stamp) target: ${line#TARGET }" ;;
            "CHECK 1 "*) ok "${line#CHECK 1 }" ;;
            "CHECK 0 "*) bad "${line#CHECK 0 }" ;;
            DETAIL*) echo "       ${line#DETAIL }" ;;
            WINDOW*)
                # the daemons' logs around an up (at most 150 lines)
                local w before after why
                read -r w before after why <<<"${line#WINDOW }"
                echo "       the daemons' logs from $before s before to $after s after $w ($why):"
                python3 "$dir/churn.py" window "$w" "$before" "$after" \
                    "$E/srv.charon.log" "$E/pluto.log" "$E/c1.charon.log" "$E/c2.charon.log" |
                    grep -av 'sending packet\|received packet\|^.*: *$' | head -n 150 | sed 's/^/         /'
                ;;
            esac
        done <"$E/churn-verdict"
    fi
    # The environments (thousands of lines) only when the host keeps them.
    if [ -n "${opt_record:-}" ]; then
        print_records "$daemon" "$variant"
    else
        echo "$(stamp)        ($(ls "$REC/env" 2>/dev/null | wc -l) updown environments recorded for $daemon/$variant; --record DIR keeps them)"
    fi
    if [ "$phase_failed" != 0 ]; then
        echo "---- $tag: updown calls (last 30)"
        sort -n "$REC/calls.log" 2>&1 | tail -n 30
        echo "---- $tag: rules"
        head -n 20 "$RULES"/* 2>&1
        echo "---- server log (last 40 lines; libreswan: its events)"
        tail -n 40 "$E/srv.charon.log" 2>/dev/null
        grep -a 'established\|output\|TS_\|NO_PROPOSAL\|liveness\|rekey\|deleting\|ERROR\|failed\|0x2\|terminat' "$E/pluto.log" 2>/dev/null | tail -n 80
        echo "---- clients: initiate"
        tail -n 12 "$E"/c?.initiate.out 2>/dev/null
        echo "---- senders"
        tail -n 5 "$E"/churn-send-c*.out "$E"/churn-send-c*.log 2>&1
    fi
    daemon_net_down
    counts
    echo "$(stamp) ==== $tag: done in $((SECONDS - t)) s"
}
