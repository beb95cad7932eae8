#!/usr/bin/env python3
"""Turns the raw measurements of scripts/bench.sh into its one table.

    report.py RAW.tsv [--markdown BENCHMARKS.md] [--plot docs/bench-scaling.png]

RAW.tsv has one measurement a line: SECTION<TAB>KEY<TAB>VALUE; a key
measured several times (one line per round) is reported as its median.
The table is printed, and written into the markdown file between the
markers `<!-- bench:begin -->` and `<!-- bench:end -->` (the prose around
them is kept). Targets are reported, never asserted.
"""
import argparse
import collections
import statistics
import sys


def load(path):
    data = collections.defaultdict(list)
    for line in open(path, encoding="utf-8"):
        parts = line.rstrip("\n").split("\t", 2)
        if len(parts) == 3:
            data[(parts[0], parts[1])].append(parts[2])
    return data


class Results:
    def __init__(self, data):
        self.data = data

    def text(self, section, key, default="?"):
        v = self.data.get((section, key))
        return v[-1] if v else default

    def med(self, section, key):
        v = self.data.get((section, key))
        if not v:
            return None
        try:
            return statistics.median(float(x) for x in v)
        except ValueError:
            return None

    def count(self, section, key):
        return len(self.data.get((section, key), []))


def ns(v):
    if v is None:
        return "n/a"
    if v >= 1e6:
        return f"{v / 1e6:.2f} ms"
    if v >= 1e4:
        return f"{v / 1e3:.1f} µs"
    if v >= 100:
        return f"{v:.0f} ns"
    return f"{v:.1f} ns"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.3f}×"


def met(ok):
    if ok is None:
        return ""
    return "yes" if ok else "**no**"


SIZES = [10, 100, 1000, 10000, 100000, 1000000]


def size_name(n):
    return {10: "10", 100: "100", 1000: "1k", 10000: "10k", 100000: "100k", 1000000: "1M"}[n]


def criterion(r, func, n):
    return r.med("criterion", f"lookup/{func}/{n}")


def rows(r):
    """(measure, wall, CPU, compared with, ratio, instructions/call, target, met).

    Ratios and targets are judged on CPU time (user + system of the
    measured process), the wall-time ratio follows in brackets: on a small
    shared machine wall time mostly says how often the process waited for
    a core.
    """
    out = []

    def both(cpu_r, wall_r):
        if cpu_r is None:
            return fmt_ratio(wall_r)
        return f"{fmt_ratio(cpu_r)} ({fmt_ratio(wall_r)})" if wall_r is not None else fmt_ratio(cpu_r)

    # Rule lookup (criterion, thread CPU time).
    lookups = (
        ("RuleSet__lookup", "RuleSet::lookup", "64k random destinations, hits and misses", True),
        ("Policy__decide", "Policy::decide", "64k random destinations, hits and misses", True),
        ("RuleSet__lookup-hot64", "RuleSet::lookup", "the same 64 destinations (cache-warm)", False),
    )
    for func, label, what, targeted in lookups:
        for n in SIZES:
            v = criterion(r, func, n)
            if v is None:
                continue
            target, ok = "", None
            if n == 100000 and targeted:
                target, ok = "≤ 100 ns", v <= 100
            out.append((f"{label}, {size_name(n)} rules, {what}", "", ns(v), "", "", "", target, met(ok)))
        lo, hi = criterion(r, func, 10), criterion(r, func, 1000000)
        g = ratio(hi, lo)
        if g is not None:
            out.append((f"{label}: growth from 10 to 1M rules ({what})", "", "", "10 rules", fmt_ratio(g), "",
                        "≤ 2×" if targeted else "", met(g <= 2) if targeted else ""))
    for kib, name in ((16, "16 KiB"), (256, "256 KiB"), (4096, "4 MiB"), (16384, "16 MiB"), (65536, "64 MiB")):
        v = r.med("memlat", str(kib))
        if v is not None:
            out.append((f"machine: one dependent load at random in {name} (memlat.c)", ns(v), "", "", "", "", "context", ""))
    v = r.med("criterion", "parse/RuleSet__parse/100000")
    if v is not None:
        out.append(("RuleSet::parse of 100k rules, in process", "", ns(v), "", "", "", "", ""))

    # Loading a file.
    c0, c1 = r.med("load", "check_empty_s"), r.med("load", "check_100k_s")
    p0, p1 = r.med("load", "check_empty_cpu_s"), r.med("load", "check_100k_cpu_s")
    if c1 is not None:
        out.append(("`ldsaref check` of 100k rules (whole process)", ns(c1 * 1e9), ns(p1 * 1e9) if p1 else "",
                    "empty file", both(ratio(p1, p0), ratio(c1, c0)), "", "≤ 50 ms",
                    met(p1 <= 0.050) if p1 is not None else met(c1 <= 0.050)))
    m0, m1 = r.med("load", "check_empty_rss_kib"), r.med("load", "check_100k_rss_kib")
    if m1 is not None:
        out.append(("`ldsaref check` of 100k rules: max RSS", f"{m1 / 1024:.1f} MiB", "",
                    f"empty file: {m0 / 1024:.1f} MiB" if m0 else "", "", "", "≤ 32 MiB", met(m1 / 1024 <= 32)))

    # No inet socket, no parsing.
    def hfrow(label, key, ref_key, ref_label, target="", ok=None):
        w, c = r.med("noparse", key), r.med("noparse", key + "_cpu")
        rw, rc = r.med("noparse", ref_key), r.med("noparse", ref_key + "_cpu")
        if w is None:
            return
        q = ratio(c, rc)
        judged = met(q <= ok) if (ok and q is not None) else ""
        out.append((label, ns(w * 1e9), ns(c * 1e9) if c else "", ref_label, both(q, ratio(w, rw)), "", target, judged))

    hfrow("write-only program, library + 100k-rule LDSAREF_RULES", "write_lib_rules", "write_nolib", "no library", "same cost (≤ 1.05×)", 1.05)
    hfrow("  the same, against the library without rules (parsing)", "write_lib_rules", "write_lib", "library, no rules", "1.0× (≤ 1.05×)", 1.05)
    opened = r.text("noparse", "opens_write", None)
    if opened is not None:
        out.append(("  rules file opened (strace -e openat)", f"{opened} times", "", "", "", "", "never", met(opened == "0")))
    hfrow(f"one datagram, library + 100k rules (parses them: file opened {r.text('noparse', 'opens_udp')}×)",
          "udp1_lib_rules", "udp1_lib", "library, no rules")

    # Hot path.
    labels = {
        "none": "no library",
        "lib-inert": "library, no configuration",
        "lib-nomatch": "library, 100k rules, none matches",
        "self-mark": "no library, program adds SO_MARK itself",
        "lib-mark": "library, 100k rules, `mark` rule matches",
        "lib-saref-emu": "library + KLIPS emulator, `saref` rule matches",
    }
    refs = {"lib-inert": "none", "lib-nomatch": "none", "self-mark": "none", "lib-mark": "self-mark", "lib-saref-emu": "none"}
    targets = {"lib-nomatch": 1.03, "lib-mark": 1.10}
    for proto, what in (("udp", "UDP sendto"), ("tcp", "TCP socket+connect+close")):
        base_ir = {}
        for v, label in labels.items():
            w, c = r.med(f"hot-{proto}", v), r.med(f"hotcpu-{proto}", v)
            if w is None:
                continue
            ir = r.med(f"ir-{proto}", v)
            base_ir[v] = ir
            ref = refs.get(v)
            rc = ratio(c, r.med(f"hotcpu-{proto}", ref)) if ref else None
            rw = ratio(w, r.med(f"hot-{proto}", ref)) if ref else None
            irs = "" if ir is None else f"{ir:.0f}"
            if ref and ir is not None and base_ir.get(ref) is not None:
                irs += f" ({ir - base_ir[ref]:+.0f})"
            lim = targets.get(v)
            judged = rc if rc is not None else rw
            out.append((f"{what}: {label}", ns(w), ns(c), labels[ref] if ref else "", both(rc, rw) if ref else "", irs,
                        f"≤ {lim:.2f}×" if lim else ("informational" if ref else ""),
                        met(judged <= lim) if (lim and judged) else ""))

    # Against the chain.
    def chain(key):
        return r.med("chain", key), r.med("chaincpu", key)

    pw, pc = chain("plain/0")
    if pw is not None:
        out.append(("UDP packet in the namespace, no chain, no library", ns(pw), ns(pc), "", "", "", "", ""))
    for n in (10, 1000, 10000):
        (cw, cc), (lw, lc) = chain(f"chain/{n}"), chain(f"ldsaref/{n}")
        if cw is None or lw is None:
            continue
        q = ratio(cc, lc) if cc and lc else ratio(cw, lw)
        target, ok = ("≥ 10×", q >= 10) if n == 10000 else ("", None)
        out.append((f"UDP packet, nftables chain of {size_name(n)} `meta mark set`, last entry hits", ns(cw), ns(cc), "", "", "", "", ""))
        out.append((f"UDP packet, library with {size_name(n)} rules, no chain", ns(lw), ns(lc), f"chain of {size_name(n)}",
                    f"chain costs {q:.1f}× the library", "", target, met(ok)))
    (l10w, l10c), (lkw, lkc) = chain("ldsaref/10"), chain("ldsaref/10000")
    if l10w and lkw:
        g = ratio(lkc, l10c) if l10c and lkc else ratio(lkw, l10w)
        out.append(("library per packet: 10k rules against 10 rules (flat in N)", "", "", "10 rules", fmt_ratio(g), "", "flat (≤ 1.10×)", met(g <= 1.10)))
    return out


def table(r):
    header = ("measure", "wall (median)", "CPU (median)", "compared with", "ratio: CPU (wall)", "user instructions/call (Δ)", "target", "met")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows(r):
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def facts(r):
    keys = [("command", "command"), ("cpu", "CPU"), ("cores", "cores"), ("kernel", "kernel"),
            ("rustc", "rustc"), ("gcc", "gcc"), ("load", "load average at start"), ("rounds", "rounds per median")]
    out = []
    for k, label in keys:
        v = r.text("machine", k)
        out.append(f"- {label}: `{v}`" if k in ("command", "rustc", "kernel") else f"- {label}: {v}")
    checks = []
    cm = r.text("check", "udp_lib_mark_cmsgs", None)
    if cm is not None:
        checks.append(f"strace saw the `SO_MARK` cmsg on {cm} of the 11 datagrams of a `mark` run")
    cc = r.text("check", "chain_marked", None)
    if cc is not None:
        checks.append(f"the chain marked {cc} of 110 packets of a check run")
    if checks:
        out.append("- checks: " + "; ".join(checks))
    return "\n".join(out)


def write_markdown(path, r):
    section = (
        "<!-- bench:begin -->\n"
        "<!-- Written by scripts/bench.sh: edit the prose outside the markers. -->\n\n"
        f"{facts(r)}\n\n{table(r)}\n\n"
        "<!-- bench:end -->"
    )
    try:
        text = open(path, encoding="utf-8").read()
    except FileNotFoundError:
        text = "# Benchmarks\n\n<!-- bench:begin -->\n<!-- bench:end -->\n"
    begin, end = text.find("<!-- bench:begin -->"), text.find("<!-- bench:end -->")
    if begin < 0 or end < 0:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        text = text[:begin] + section + text[end + len("<!-- bench:end -->"):]
    open(path, "w", encoding="utf-8").write(text)


def plot(path, r):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for func, label, style in (("RuleSet__lookup", "RuleSet::lookup, random", "o-"), ("Policy__decide", "Policy::decide, random", "s--"),
                               ("RuleSet__lookup-hot64", "RuleSet::lookup, 64 hot destinations", "^-")):
        pts = [(n, criterion(r, func, n)) for n in SIZES if criterion(r, func, n) is not None]
        if pts:
            a.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label)
    a.axhline(100, color="grey", linestyle=":", label="target at 100k: 100 ns")
    a.set_xscale("log")
    a.set_ylim(bottom=0)
    a.set_xlabel("rules in the table")
    a.set_ylabel("CPU ns per decision (median)")
    a.set_title("Rule lookup (criterion)")
    a.legend()
    a.grid(True, which="both", alpha=0.3)

    ns_ = [10, 1000, 10000]
    sec = "chaincpu" if r.med("chaincpu", "plain/0") is not None else "chain"
    chain = [r.med(sec, f"chain/{n}") for n in ns_]
    lib = [r.med(sec, f"ldsaref/{n}") for n in ns_]
    plain = r.med(sec, "plain/0")
    if all(v is not None for v in chain + lib):
        b.plot(ns_, [v / 1e3 for v in chain], "o-", color="tab:red", label="nftables chain, last entry hits")
        b.plot(ns_, [v / 1e3 for v in lib], "s-", color="tab:green", label="ldsaref rules, no chain")
        if plain:
            b.axhline(plain / 1e3, color="grey", linestyle=":", label="no chain, no library")
        b.set_xscale("log")
        b.set_yscale("log")
    b.set_xlabel("tunnels (chain entries / rules)")
    b.set_ylabel(("CPU " if sec == "chaincpu" else "") + "µs per UDP sendto (median)")
    b.set_title("Marking each packet: chain vs library")
    b.legend()
    b.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"ldsaref benchmarks: {r.text('machine', 'command')} ({r.text('machine', 'cpu')}, {r.text('machine', 'cores')} cores)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("raw")
    p.add_argument("--markdown")
    p.add_argument("--plot")
    a = p.parse_args()
    r = Results(load(a.raw))
    print(facts(r))
    print()
    print(table(r))
    if a.markdown:
        write_markdown(a.markdown, r)
        print(f"\nwritten to {a.markdown}", file=sys.stderr)
    if a.plot:
        plot(a.plot, r)
        print(f"plot: {a.plot}", file=sys.stderr)


if __name__ == "__main__":
    main()
