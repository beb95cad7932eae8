#!/usr/bin/env bash
# Real IPsec end to end: boots a Debian guest kernel under qemu (software
# emulation only), with the host's filesystem shared read-only over 9p, and
# runs scripts/ipsec-e2e/guest.sh inside it: a server and two clients whose
# private networks overlap (198.18.0.5 behind both), joined by ESP tunnels
# that strongSwan negotiates with IKEv2, once with XFRM marks and once with
# xfrm interfaces, and unmodified programs wrapped by ldsaref choosing the
# tunnel. The host kernel has no ESP, hence the guest. Then the daemon
# phases: the server's IKE daemon, strongSwan and then libreswan (unpacked
# privately: the two Debian packages conflict), runs `ldsaref updown`
# itself, and wrapped programs keep sending while the tunnels churn
# (scripts/ipsec-e2e/churn.sh).
#
#   sudo scripts/ipsec-e2e.sh [--no-build] [--timeout SECONDS] [--churn N]
#        [--only static|churn] [--daemon strongswan|libreswan]
#        [--variant marks|xfrmi] [--record DIR] [--console FILE] [--serial]
#
# By default three guests, two at a time: the static checks and xfrm
# interfaces beside libreswan's marks churn, then strongSwan's marks churn
# alone (see "The guests" below); each console line is prefixed with its
# guest's name. --serial (or a narrower --only/--variant) runs a single
# guest.
# --churn N: cycles per daemon (default 20, what CI runs; 100 is the full
# run). --record DIR: writes the updown environments the daemons passed as
# DIR/DAEMON/VARIANT/NN-VERB-CONN.env (e.g. DIR =
# crates/ldsaref-cli/tests/fixtures/updown).
#
# Exit status 0 only when the guest reported that every check passed. The
# guest's console is shown as it runs; on a failure it also dumps the xfrm
# state, policy routing and addresses of its namespaces.
set -euo pipefail

start=$SECONDS
qemu_pids=() tail_pids=()
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
build=1 serial=
timeout_s=2400
churn=20 only=all daemons=strongswan+libreswan variants=marks+xfrmi record= keep_console=
while [ $# -gt 0 ]; do
    case $1 in
    --no-build) build= ;;
    --serial) serial=1 ;;
    --timeout) timeout_s=$2; shift ;;
    --churn) churn=$2; shift ;;
    --only) only=$2; shift ;;
    --daemon) daemons=$2; shift ;;
    --variant) variants=$2; shift ;;
    --record) record=$2; shift ;;
    --console) keep_console=$2; shift ;;
    *) sed -n '14,16p' "$0" >&2; exit 2 ;;
    esac
    shift
done
case $churn in '' | *[!0-9]*) echo "--churn: a number" >&2; exit 2 ;; esac
case $only in all | static | churn) ;; *) echo "--only: static or churn" >&2; exit 2 ;; esac
for d in ${daemons//+/ }; do
    case $d in strongswan | libreswan) ;; *) echo "--daemon: strongswan or libreswan" >&2; exit 2 ;; esac
done
if [ -n "$record" ]; then
    mkdir -p "$record"
    record=$(cd "$record" && pwd)
fi

say() { echo "ipsec-e2e: $*"; }

# The updown environments the guest printed between its marker lines, as
# files under DIR (each DAEMON/VARIANT directory replaced as a whole).
save_records() { # CONSOLE DIR
    local out=$2 n
    n=$(tr -d '\r' <"$1" | awk -v out="$out" '
        /^LDSAREF-E2E-RECORD-BEGIN / {
            name = $2
            if (name ~ /(^|\/)\.\.(\/|$)/ || name ~ /^\//) { name = ""; next }
            d = name; sub(/\/[^\/]*$/, "", d)
            if (!(d in cleared)) { system("rm -rf \"" out "/" d "\"; mkdir -p \"" out "/" d "\""); cleared[d] = 1 }
            file = out "/" name; printf "" >file; n++; next
        }
        /^LDSAREF-E2E-RECORD-END/ { if (file != "") close(file); file = ""; next }
        file != "" { print >>file }
        END { print n + 0 }')
    say "recorded $n updown environments under $out"
}
finish() {
    local rc=$?
    local p
    for p in "${qemu_pids[@]}"; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
    done
    for p in "${tail_pids[@]}"; do kill "$p" 2>/dev/null || true; done
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
    strongswan-charon strongswan-swanctl python3 curl socat iproute2 nftables tcpdump procps golang-go gcc libc6-dev)
# libreswan's runtime libraries: the package itself conflicts with
# strongSwan's, so it is only unpacked (below).
packages+=(libnss3-tools libnss3 libnspr4 libunbound8 libldns3 libevent-core-2.1-7
    libevent-pthreads-2.1-7 libcap-ng0 libcurl3-nss libaudit1 libpam0g libldap-2.5-0)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
updated=
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    updated=1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# libreswan, unpacked where the guest can see it (not under /run, /mnt,
# /tmp...: the guest mounts its own there); the guest overlays its
# /usr/libexec/ipsec onto /usr/libexec.
lsw_cache=/var/cache/ldsaref-e2e
lsw=$lsw_cache/root
if [[ $daemons == *libreswan* ]] && [ "$only" != static ] && [ ! -x "$lsw/usr/libexec/ipsec/pluto" ]; then
    say "unpacking libreswan into $lsw"
    mkdir -p "$lsw_cache"
    [ -n "$updated" ] || DEBIAN_FRONTEND=noninteractive apt-get update -qq
    rm -f "$lsw_cache"/libreswan_*.deb
    (cd "$lsw_cache" && apt-get download -q libreswan 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
    deb=$(ls "$lsw_cache"/libreswan_*.deb 2>/dev/null | head -1)
    [ -n "$deb" ] || { say "apt-get download libreswan failed" >&2; exit 1; }
    rm -rf "$lsw.new"
    dpkg -x "$deb" "$lsw.new"
    rm -rf "$lsw"
    mv "$lsw.new" "$lsw"
fi

if [ -n "$build" ]; then
    say "building (release)"
    (cd "$repo" && cargo build --release --workspace --quiet && packaging/static-cli.sh >/dev/null)
fi
target=${CARGO_TARGET_DIR:-$repo/target}
case $target in /*) ;; *) target=$repo/$target ;; esac
bin=$target/release
for f in "$bin/ldsaref" "$bin/libldsaref.so"; do
    [ -f "$f" ] || { say "missing $f: build first" >&2; exit 1; }
done
# The guest runs ldsaref-static (what the package installs) when it is
# there and not older than the workspace's build.
if [ -f "$bin/ldsaref-static" ] && ! [ "$bin/ldsaref-static" -ot "$bin/ldsaref" ]; then
    say "command: $bin/ldsaref-static (statically linked)"
else
    rm -f "$bin/ldsaref-static"
    say "command: $bin/ldsaref (dynamically linked; packaging/static-cli.sh builds the static one)"
fi

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
# The daemons' updown recorder (C, static: see updown-record.c).
say "building the updown recorder"
recorder=$work/updown-record
gcc -O2 -static -o "$recorder" "$here/ipsec-e2e/updown-record.c" || {
    say "cannot build scripts/ipsec-e2e/updown-record.c" >&2
    exit 1
}
# The churn's static sender for the cgroup backend (Go, CGO_ENABLED=0).
gosender=
if [ "$only" != static ]; then
    say "building the churn's Go sender (CGO_ENABLED=0)"
    (cd "$here/ipsec-e2e/gosender" && CGO_ENABLED=0 go build -o "$work/gosender" .) &&
        gosender=$work/gosender
    [ -n "$gosender" ] || { say "cannot build scripts/ipsec-e2e/gosender" >&2; exit 1; }
fi
# The guests, NAME|WAVE|OPTIONS: the guests of a wave run at once, the
# next wave once they have all ended. By default two at once, since one
# leaves most of the second core idle (~1.2 cores on 2 while its daemons
# wait on their timers): the static checks and the xfrm-interface phases
# in one, libreswan's marks churn in the other; then strongSwan's marks
# churn alone. Its recoveries are timed against 1 s, and beside another
# emulated machine the two guests' contention alone took charon's part of
# them past 1 s (40-69 of 80 ups within 1 s with two guests, in CI and
# here; 80 of 80 alone for the library, in CI). The phase itself is
# faster alone (244 s against 429 s); the VM part as a whole took 802 s
# this way against 728 s with two guests (one run each). --serial, or
# any narrower --only/--variant, runs one guest with everything asked for.
guests=()
if [ -z "$serial" ] && [ "$only" = all ] && [ "$variants" = marks+xfrmi ]; then
    guests+=("static+xfrmi|1|only=all,variants=xfrmi")
    if [ "$daemons" = strongswan+libreswan ]; then
        guests+=("churn-libreswan|1|only=churn,variants=marks,daemons=libreswan")
        guests+=("churn-strongswan|2|only=churn,variants=marks,daemons=strongswan")
    else
        guests+=("churn|1|only=churn,variants=marks")
    fi
else
    guests+=("guest|1|only=$only,variants=$variants")
fi

# Writes the initramfs of one guest (OPTS: what it runs) to OUT.
make_initrd() { # OPTS OUT
    # the guest's own options last: they win over the run's (daemons=)
    local opts="daemons=$daemons,churn=$churn,lsw=$lsw,gosender=$gosender,recorder=$recorder,record=${record:+1},$1"
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
exec switch_root /newroot /bin/bash "$here/ipsec-e2e/guest-init.sh" "$here/ipsec-e2e" "$bin" "$guest_timeout" "$opts"
INIT
    chmod +x "$ird/init"
    (cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) >"$2"
}

# Boots one guest in the background: qemu's pid in qemu_pids, its console
# shown live (each line prefixed with the guest's name when there are
# two), so that the CI log alone explains a failure.
boot() { # NAME INITRD CONSOLE
    : >"$3" # before tail starts: qemu's redirection may come later
    # -net none: the guest has no network device at all, so nothing it
    # sends can leave it; every address it uses lives in its own namespaces.
    timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
        -machine pc -accel tcg -cpu max -bios /usr/share/qemu/qboot.rom \
        -smp 2 -m 1G -display none -no-reboot -nodefaults -serial stdio -net none \
        -kernel "$kernel" -initrd "$2" \
        -append "console=ttyS0 quiet loglevel=3 panic=-1" \
        -fsdev local,id=hostroot,path=/,security_model=passthrough,readonly=on,multidevs=remap \
        -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot \
        </dev/null >"$3" 2>&1 &
    qemu_pids+=($!)
    local prefix=
    ((${#guests[@]} > 1)) && prefix="$1| "
    tail -n +1 -f --pid="$!" "$3" | sed -u "s/^/$prefix/" &
    tail_pids+=($!)
}

say "booting ${#guests[@]} guest(s): ${guests[*]%%|*} (qemu, software emulation; timeout ${timeout_s} s each)"
consoles=()
waves=$(for g in "${guests[@]}"; do w=${g#*|}; echo "${w%%|*}"; done | sort -un)
for wave in $waves; do
    for g in "${guests[@]}"; do
        name=${g%%|*} rest=${g#*|}
        [ "${rest%%|*}" = "$wave" ] || continue
        make_initrd "${rest#*|}" "$work/initrd-$name.gz"
        consoles+=("$work/console-$name.log")
        boot "$name" "$work/initrd-$name.gz" "$work/console-$name.log"
    done
    set +e
    for p in "${qemu_pids[@]}" "${tail_pids[@]}"; do wait "$p"; done
    set -e
    qemu_pids=() tail_pids=()
    say "wave $wave ended at $((SECONDS - start)) s"
done

[ -z "$keep_console" ] || cat "${consoles[@]}" >"$keep_console"
if [ -n "$record" ]; then
    for c in "${consoles[@]}"; do save_records "$c" "$record"; done
fi

rc=0
for g in "${guests[@]}"; do
    name=${g%%|*} console=$work/console-${g%%|*}.log
    result=$(grep -a '^LDSAREF-E2E-RESULT: ' "$console" | tail -1 | tr -d '\r' || true)
    if [ -z "$result" ]; then
        say "FAIL: $name: the guest gave no result line (timeout or crash); its console is above"
        rc=1
        continue
    fi
    say "$name: ${result#LDSAREF-E2E-RESULT: }"
    case $result in
    "LDSAREF-E2E-RESULT: pass"*) ;;
    *)
        rc=1
        grep -a '^ *failed: ' "$console" | tr -d '\r' | sed "s/^ */ipsec-e2e: $name: /"
        ;;
    esac
done
exit $rc
