#!/usr/bin/env python3
"""Writes a generated rules file for scripts/bench.sh.

    genrules.py N [--seed S] [--append LINE]...   > rules
    genrules.py --chain N MARK                     > chain.nft
    genrules.py --hosts N MARK                     > rules

The first form: N rules with distinct prefixes, shaped like the criterion
benchmark's tables (crates/ldsaref-rules/benches/lookup.rs): 70% IPv4,
mostly /24../32, IPv6 in 2001:db8::/32, mostly /48../64, a tenth with a
protocol and port. No generated rule covers 127.0.0.0/8, so loopback
traffic is decided only by the --append lines. Nothing is ever sent to the
generated addresses.

--chain: an nftables ruleset of N mast-style entries in a route/mangle
output chain, one per destination, as Openswan's _updown.mast builds them
in iptables: N-1 entries for hosts of 198.18.0.0/15, then the entry for
127.0.0.1, last, so that every loopback packet walks the whole chain.
--hosts: the same N destinations as ldsaref rules.
"""
import argparse
import ipaddress
import random
import sys

V4_LENS = [(4500, 24), (2000, 32), (800, 28), (700, 27), (500, 29), (500, 30),
           (500, 22), (300, 20), (150, 16), (4, 12), (1, 8)]
V6_LENS = [(4000, 48), (4000, 64), (1000, 56), (500, 128), (300, 44), (150, 40), (10, 36)]


def weighted(rng, table):
    return rng.choices([v for _, v in table], weights=[w for w, _ in table])[0]


def v4(rng):
    while True:
        a = rng.getrandbits(32)
        if a >> 24 != 127:
            return a


def v6(rng):
    return (0x20010DB8 << 96) | rng.getrandbits(96)


def rules(n, seed, out):
    rng = random.Random(seed)
    seen = set()
    lines = []
    while len(lines) < n:
        if rng.random() < 0.7:
            width, length, key = 32, weighted(rng, V4_LENS), v4(rng)
        else:
            width, length, key = 128, weighted(rng, V6_LENS), v6(rng)
        key &= ~((1 << (width - length)) - 1)
        if (width, key, length) in seen:
            continue
        seen.add((width, key, length))
        addr = ipaddress.IPv4Address(key) if width == 32 else ipaddress.IPv6Address(key)
        line = f"{addr}/{length}"
        r = rng.randrange(20)
        if r == 0:
            line += "\ttcp\t22"
        elif r == 1:
            line += "\tudp\t500-4500"
        r = rng.randrange(10)
        if r <= 5:
            line += f"\tsaref {rng.randrange(1, 32768)}"
        elif r <= 8:
            line += f"\tmark {rng.getrandbits(32):#x}"
        else:
            line += "\tpass"
        lines.append(line)
    out.write("\n".join(lines))
    out.write("\n")


def hosts(n):
    """N-1 hosts of 198.18.0.0/15, then loopback."""
    base = int(ipaddress.IPv4Address("198.18.0.1"))
    if n - 1 > (1 << 17) - 2:
        sys.exit("at most 131070 hosts fit in 198.18.0.0/15")
    return [str(ipaddress.IPv4Address(base + i)) for i in range(n - 1)] + ["127.0.0.1"]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("n", type=int)
    p.add_argument("mark", nargs="?", default="0x80010000")
    p.add_argument("--seed", type=int, default=20260001)
    p.add_argument("--append", action="append", default=[])
    p.add_argument("--chain", action="store_true")
    p.add_argument("--hosts", action="store_true")
    a = p.parse_args()
    out = sys.stdout
    if a.chain:
        out.write("table ip ldsaref_bench {\n\tchain updown_mast {\n"
                  "\t\ttype route hook output priority mangle; policy accept;\n")
        for h in hosts(a.n):
            out.write(f"\t\tip daddr {h} meta mark set {a.mark}\n")
        out.write("\t}\n}\n")
    elif a.hosts:
        for h in hosts(a.n):
            out.write(f"{h}/32\tmark {a.mark}\n")
    else:
        rules(a.n, a.seed, out)
        for line in a.append:
            out.write(line + "\n")


if __name__ == "__main__":
    main()
