#!/bin/sh
# The updown "script" the IKE daemons of the daemon phases run (strongSwan
# `updown =`, libreswan `leftupdown=`): it records what the daemon really
# passes, then runs `ldsaref updown` with the arguments it was given.
#
#   updown-record.sh RECDIR LDSAREF updown --dir RULESDIR [options...]
#
# RECDIR/calls.log gets one line per call, in call order:
#   SEQ EPOCH PLUTO_VERB PLUTO_CONNECTION PLUTO_PEER_CLIENT IF_ID_OUT EXIT
# (EPOCH: seconds.nanoseconds when the daemon called; the churn report
# measures recovery from it). While RECDIR/on exists, the environment of the
# call is also kept as RECDIR/env/SEQ-VERB-CONN.env: NAME=value lines, sorted,
# without any variable whose name says it could hold key material (KEY,
# SECRET, PSK, PASS) and without those the shell itself adds (PWD, SHLVL, _).
rec=$1
shift
t=$(date +%s.%N)
# One counter for concurrent calls (charon runs them from its thread pool).
seq=$(
    flock 9
    n=$(($(cat "$rec/seq" 2>/dev/null || echo 0) + 1))
    echo "$n" >"$rec/seq"
    echo "$n"
) 9>"$rec/lock"
if [ -e "$rec/on" ]; then
    mkdir -p "$rec/env"
    conn=$(printf '%s' "${PLUTO_CONNECTION:-none}" | tr -c 'A-Za-z0-9_.-' '_')
    env | grep -v -e '^[^=]*\(KEY\|SECRET\|PSK\|PASS\)[^=]*=' -e '^PWD=' -e '^SHLVL=' -e '^_=' |
        grep '^[A-Za-z_][A-Za-z0-9_]*=' | LC_ALL=C sort \
        >"$rec/env/$(printf %04d "$seq")-${PLUTO_VERB:-none}-$conn.env"
fi
"$@"
rc=$?
echo "$seq $t ${PLUTO_VERB:-none} ${PLUTO_CONNECTION:-none} ${PLUTO_PEER_CLIENT:-none} ${PLUTO_IF_ID_OUT:-${PLUTO_XFRMI_IF_ID:--}} $rc" >>"$rec/calls.log"
exit $rc
