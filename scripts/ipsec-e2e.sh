#!/usr/bin/env bash
# Real IPsec end to end: boots a Debian guest kernel under qemu (software
# emulation only), with the host's filesystem shared read-only over 9p, and
# runs scripts/ipsec-e2e/guest.sh inside it: a server and two clients whose
# private networks overlap (198.18.0.5 behind both), joined by ESP tunnels
# that strongSwan negotiates with IKEv2, once with XFRM marks and once with
# xfrm interfaces, and unmodified programs wrapped by ldsaref choosing the
# tunnel. The host kernel has no ESP, hence the guest.
#
#   sudo scripts/ipsec-e2e.sh [--no-build] [--timeout SECONDS]
#
# Exit status 0 only when the guest reported that every check passed. The
# guest's console is shown as it runs; on a failure it also dumps the xfrm
# state, policy routing and addresses of its namespaces.
set -euo pipefail

start=$SECONDS
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
build=1
timeout_s=1200
while [ $# -gt 0 ]; do
    case $1 in
    --no-build) build= ;;
    --timeout) timeout_s=$2; shift ;;
    *) sed -n '10p' "$0" >&2; exit 2 ;;
    esac
    shift
done

say() { echo "ipsec-e2e: $*"; }
finish() {
    local rc=$?
    [ -n "${qemu_pid:-}" ] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null || true
    [ -n "${tail_pid:-}" ] && kill "$tail_pid" 2>/dev/null || true
    [ -n "${work:-}" ] && rm -rf "$work"
    say "total time $((SECONDS - start)) s"
    exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

if [ "$(id -u)" -ne 0 ]; then
    say "needs root (package installation, qemu's 9p export of /)" >&2
    exit 1
fi

# Everything the guest runs comes from the host's filesystem, so it is
# installed here.
packages=(qemu-system-x86 qemu-system-data linux-image-amd64 busybox-static cpio kmod gzip
    strongswan-charon strongswan-swanctl python3 curl socat iproute2 nftables tcpdump procps)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -n "$build" ]; then
    say "building (release)"
    (cd "$repo" && cargo build --release --workspace --quiet)
fi
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$repo/$target ;; esac
bin=$target/release
for f in "$bin/ldsaref" "$bin/libldsaref.so"; do
    [ -f "$f" ] || { say "missing $f: build first" >&2; exit 1; }
done

# The newest Debian kernel that has its modules installed.
kernel= kver=
for k in $(ls -v /boot/vmlinuz-* 2>/dev/null); do
    v=${k#/boot/vmlinuz-}
    [ -d "/lib/modules/$v/kernel/net/xfrm" ] && kernel=$k kver=$v
done
[ -n "$kernel" ] || { say "no /boot/vmlinuz-* with modules (linux-image-amd64)" >&2; exit 1; }

# The guest sees the host's / except where it mounts its own file systems.
for p in "$here" "$bin"; do
    case $p/ in /run/* | /mnt/* | /proc/* | /sys/* | /dev/*)
        say "$p is hidden inside the guest (it mounts its own /run, /mnt, /proc, /sys, /dev): use another directory" >&2
        exit 1 ;;
    esac
done
[ -d /mnt ] || mkdir /mnt

work=$(mktemp -d /tmp/ldsaref-ipsec-e2e.XXXXXX)
say "guest kernel $kver, work dir $work"

# A tiny initramfs: static busybox and the modules needed to mount the
# host's / over virtio-9p; the rest is loaded by modprobe from the host's
# /lib/modules once the guest runs on it.
ird=$work/initramfs
mkdir -p "$ird/bin" "$ird/mod" "$ird/proc" "$ird/dev" "$ird/sys" "$ird/newroot"
cp /bin/busybox "$ird/bin/busybox"
i=0
: >"$ird/mod/order"
while read -r _ ko _; do
    i=$((i + 1))
    name=$(printf '%02d-%s' "$i" "$(basename "$ko")")
    case $ko in
    *.ko) cp "$ko" "$ird/mod/$name" ;;
    *.ko.xz) xz -dc "$ko" >"$ird/mod/${name%.xz}"; name=${name%.xz} ;;
    *.ko.zst) zstd -qdc "$ko" >"$ird/mod/${name%.zst}"; name=${name%.zst} ;;
    *.ko.gz) gzip -dc "$ko" >"$ird/mod/${name%.gz}"; name=${name%.gz} ;;
    esac
    echo "$name" >>"$ird/mod/order"
done < <(for m in virtio_pci 9pnet_virtio 9p; do modprobe -S "$kver" --show-depends "$m"; done |
    awk '$1 == "insmod" && !seen[$2]++')

# The guest's own deadline comes first, so that it can still show where it
# stood; the host's catches a guest that hangs outright.
guest_timeout=$((timeout_s > 240 ? timeout_s - 120 : timeout_s / 2))
cat >"$ird/init" <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t devtmpfs dev /dev
for m in \$(cat /mod/order); do insmod /mod/\$m || echo "init: insmod \$m failed"; done
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144,cache=loose hostroot /newroot || {
    echo "LDSAREF-E2E-RESULT: fail (cannot mount the host's / over 9p)"
    echo o >/proc/sysrq-trigger
}
umount /dev /proc
# switch_root, not chroot: module autoload (crypto, xfrm) resolves paths
# from the kernel threads' root.
exec switch_root /newroot /bin/bash "$here/ipsec-e2e/guest-init.sh" "$here/ipsec-e2e" "$bin" "$guest_timeout"
INIT
chmod +x "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd.gz"

say "booting the guest (qemu, software emulation; timeout ${timeout_s} s)"
console=$work/console.log
# -net none: the guest has no network device at all, so nothing it sends
# can leave it; every address it uses lives in its own namespaces.
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
    -machine pc -accel tcg -cpu max -bios /usr/share/qemu/qboot.rom \
    -smp 2 -m 1G -display none -no-reboot -nodefaults -serial stdio -net none \
    -kernel "$kernel" -initrd "$work/initrd.gz" \
    -append "console=ttyS0 quiet loglevel=3 panic=-1" \
    -fsdev local,id=hostroot,path=/,security_model=passthrough,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
    </dev/null >"$console" 2>&1 &
qemu_pid=$!
# The console is shown live so that the CI log alone explains a failure.
tail -n +1 -f --pid="$qemu_pid" "$console" &
tail_pid=$!
set +e
wait "$qemu_pid"
wait "$tail_pid"
set -e
qemu_pid=

result=$(grep -a '^LDSAREF-E2E-RESULT: ' "$console" | tail -1 | tr -d '\r' || true)
if [ -z "$result" ]; then
    say "FAIL: the guest gave no result line (timeout or crash); its console is above"
    exit 1
fi
say "guest: ${result#LDSAREF-E2E-RESULT: }"
case $result in
"LDSAREF-E2E-RESULT: pass"*) exit 0 ;;
*) exit 1 ;;
esac
