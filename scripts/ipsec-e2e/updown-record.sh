#!/bin/bash
# The updown "script" the IKE daemons of the daemon phases run (strongSwan
# `updown =`, libreswan `leftupdown=`): it records what the daemon really
# passes, then runs `ldsaref updown` with the arguments it was given.
#
#   updown-record.sh RECDIR LDSAREF updown --dir RULESDIR [options...]
#
# RECDIR/calls.log gets one line per call:
#   EPOCH PLUTO_VERB PLUTO_CONNECTION PLUTO_PEER_CLIENT IF_ID_OUT EXIT END SPI_OUT
# (EPOCH: seconds.microseconds when the daemon called, which orders the
# calls; the churn report measures recovery from it; END: when ldsaref
# updown returned, after which the daemon acts; SPI_OUT: the SA's, which
# pluto passes and charon does not, "-" then). While RECDIR/on
# exists, the environment of the call is also kept as
# RECDIR/env/EPOCH-VERB-CONN.env: NAME=value lines, sorted, without any
# variable whose name says it could hold key material (KEY, SECRET, PSK,
# PASS) and without those bash itself adds (PWD, SHLVL, _, OLDPWD).
#
# Builtins only, but for ldsaref: the daemon waits for its updown script
# (pluto does nothing else meanwhile), and every process costs a lot in
# the emulated guest.
rec=$1
shift
t=$EPOCHREALTIME
if [ -e "$rec/on" ]; then
    conn=${PLUTO_CONNECTION:-none}
    conn=${conn//[^A-Za-z0-9_.-]/_}
    LC_ALL=C # sorting of compgen's list; not exported
    {
        for n in $(compgen -e); do
            case $n in *KEY* | *SECRET* | *PSK* | *PASS* | PWD | SHLVL | _ | OLDPWD) continue ;; esac
            printf '%s=%s\n' "$n" "${!n}"
        done
    } >"$rec/env/$t-${PLUTO_VERB:-none}-$conn.env"
fi
"$@"
rc=$?
# One short line, appended (O_APPEND): concurrent calls do not mix.
echo "$t ${PLUTO_VERB:-none} ${PLUTO_CONNECTION:-none} ${PLUTO_PEER_CLIENT:-none} ${PLUTO_IF_ID_OUT:-${PLUTO_VIRT_INTERFACE:--}} $rc $EPOCHREALTIME ${SPI_OUT:--}" >>"$rec/calls.log"
exit $rc
