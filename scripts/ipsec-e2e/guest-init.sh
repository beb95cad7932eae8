#!/bin/bash
# PID 1 of the guest, on the host's / (read-only over 9p): mounts what a
# Linux userland needs, runs the test with a deadline, reports the result on
# the serial console as one marker line, and powers off.
#   guest-init.sh SCRIPTDIR BINDIR TIMEOUT [OPTIONS]  (OPTIONS: see guest.sh)
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 HOME=/mnt/tmp TMPDIR=/mnt/tmp
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs -o mode=755 run /run
# The test's scratch space. Not under /run: each charon gets a /run of its
# own (its pid file is fixed there). /tmp stays the host's (read-only): the
# checkout or the cargo target directory may live there.
mount -t tmpfs -o mode=755 scratch /mnt
mkdir -m 1777 /mnt/tmp
ip link set lo up

dir=$1 bin=$2 deadline=${3:-900} opts=${4:-}
rc=1
if [ -x "$dir/guest.sh" ]; then
    timeout -k 5 "$deadline" "$dir/guest.sh" "$dir" "$bin" "$opts"
    rc=$?
fi
if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
    # The test ran out of time mid-way: show where it stood.
    echo "guest: the test did not finish in time; the state it left:"
    for ns in $(ip netns list | cut -d' ' -f1); do
        echo "---- $ns"
        ip -n "$ns" -br addr
        ip -n "$ns" rule
        ip -n "$ns" -s xfrm state
    done
fi
counts=$(cat /mnt/e2e-counts 2>/dev/null)
if [ "$rc" -eq 0 ]; then
    echo "LDSAREF-E2E-RESULT: pass ($counts)"
else
    echo "LDSAREF-E2E-RESULT: fail (exit $rc; $counts)"
fi
sync
echo o >/proc/sysrq-trigger
# A builtin: the filesystem (9p) is going away with the machine.
while :; do :; done
