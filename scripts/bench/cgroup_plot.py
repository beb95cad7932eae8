#!/usr/bin/env python3
"""The cgroup backend's per-packet cost against the number of rules, as a plot.

    cgroup_plot.py RAW.tsv PNG [--title TEXT]

RAW.tsv is what scripts/bench/cgroup.sh measures (its --raw): one line per
round and variant, `LABEL<TAB>udp|tcp<TAB>wall ns<TAB>CPU ns` per call,
LABEL being `none`, `ldsaref/N` or `linear/N`. Two panels, UDP sendto and
TCP connect: CPU ns per call (median of the rounds; the bars span the
rounds' minimum and maximum) of ldsaref's table and of a linear nft chain
of the same N rules, with no table at all as a line. Needs
python3-matplotlib.
"""

import argparse
import statistics


def load(path):
    m = {}
    for line in open(path, encoding="utf-8"):
        f = line.rstrip("\n").split("\t")
        if len(f) != 4:
            continue
        label, proto, _wall, cpu = f
        m.setdefault((label, proto), []).append(float(cpu))
    return m


def series(m, kind, proto):
    """(N, median, min, max) of `kind/N` for every N measured, by N."""
    out = []
    for (label, p), v in m.items():
        if p != proto or not label.startswith(kind + "/"):
            continue
        out.append((int(label.split("/", 1)[1]), statistics.median(v), min(v), max(v)))
    return sorted(out)


def plot(m, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    sizes = sorted({n for kind in ("ldsaref", "linear") for p in ("udp", "tcp") for n, *_ in series(m, kind, p)})
    for ax, proto, what in zip(axes, ("udp", "tcp"), ("UDP sendto", "TCP socket/connect/close")):
        for kind, label, style, color in (
            ("linear", "linear nft chain of the same rules", "s--", "tab:red"),
            ("ldsaref", "ldsaref's table (ldsaref apply)", "o-", "tab:green"),
        ):
            pts = series(m, kind, proto)
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
            ax.errorbar(xs, ys, yerr=err, fmt=style, color=color, capsize=3, label=label)
            none = m.get(("none", proto))
            if none:
                base = statistics.median(none)
                for x, y in zip(xs, ys):
                    ax.annotate(f"{y / base:.2f}x", (x, y), textcoords="offset points", xytext=(6, 6), fontsize=7, color=color)
        none = m.get(("none", proto))
        if none:
            ax.axhline(statistics.median(none), color="grey", linestyle=":", label=f"no table ({statistics.median(none):,.0f} ns = 1x)")
        # 0 rules on the same axis as 1k..1M: linear below 1000.
        ax.set_xscale("symlog", linthresh=1000)
        ax.set_xticks(sizes)
        ax.set_xticklabels([f"{n // 1000}k" if n >= 1000 else str(n) for n in sizes])
        ax.set_xlim(-300 if 0 in sizes else None, max(sizes) * 1.8 if sizes else None)
        ax.set_yscale("log")
        ax.set_ylim(top=max((max(v) for (_, p), v in m.items() if p == proto), default=1) * 2)
        ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("rules")
        ax.set_ylabel("CPU ns per call (median)")
        ax.set_title(what)
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("raw")
    p.add_argument("png")
    p.add_argument("--title", default="")
    a = p.parse_args()
    head = "ldsaref's cgroup backend: CPU ns per call of a program in a profile's cgroup, to 127.0.0.1"
    plot(load(a.raw), a.png, head + ("\n" + a.title if a.title else ""))


if __name__ == "__main__":
    main()
