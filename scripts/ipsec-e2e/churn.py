#!/usr/bin/python3
"""The churn phase's long-running programs and its verdict.

  churn.py sink NAME LOG      in a client: UDP and TCP receivers on
                              198.18.0.5 and 198.19.0.5 (port 9000 both);
                              logs "TIME PROTO LOCALADDR TAG SEQ" for each
                              message received.
  churn.py send NAME LOG      in the server, under `ldsaref run`: sends
                              tagged messages to both of client NAME's
                              subnets for as long as it lives, UDP with
                              sendto (25/s) and TCP (a new connection
                              each time, 5/s); logs "TIME PROTO DST SEQ
                              RESULT" per attempt (ok, or the errno name).
  churn.py report ...         the numbers and the verdict (see report()).

Messages are "TAG SEQ PROTO DST": TAG is the client the sender means,
so a receiver that gets another tag got it through the wrong tunnel.
"""
import bisect
import errno
import json
import os
import socket
import sys
import threading
import time

DSTS = ["198.18.0.5", "198.19.0.5"]
PORT = 9000
UDP_INTERVAL = 0.04
TCP_INTERVAL = 0.2


class Log:
    """Line log shared by threads, flushed at least every 0.2 s."""

    def __init__(self, path):
        self.f = open(path, "a", buffering=1 << 16)
        self.lock = threading.Lock()
        self.last = time.monotonic()

    def __call__(self, line):
        with self.lock:
            self.f.write(line + "\n")
            now = time.monotonic()
            if now - self.last > 0.2:
                self.f.flush()
                self.last = now


def sink(name, logpath):
    log = Log(logpath)

    def udp(addr):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((addr, PORT))
        while True:
            data, _ = s.recvfrom(2048)
            t = time.time()
            f = data.decode(errors="replace").split()
            if len(f) >= 2:
                log(f"{t:.6f} udp {addr} {f[0]} {f[1]}")

    def tcp_conn(c, addr):
        c.settimeout(5)
        buf = b""
        try:
            while not buf.endswith(b"\n"):
                d = c.recv(256)
                if not d:
                    break
                buf += d
        except OSError:
            pass
        c.close()
        t = time.time()
        f = buf.decode(errors="replace").split()
        if len(f) >= 2:
            log(f"{t:.6f} tcp {addr} {f[0]} {f[1]}")

    def tcp(addr):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, PORT))
        s.listen(64)
        while True:
            c, _ = s.accept()
            threading.Thread(target=tcp_conn, args=(c, addr), daemon=True).start()

    for a in DSTS:
        threading.Thread(target=udp, args=(a,), daemon=True).start()
        threading.Thread(target=tcp, args=(a,), daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else type(e).__name__


def send(name, logpath):
    log = Log(logpath)

    def udp():
        # One unconnected socket for the whole run: sendto each time.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        seq = 0
        while True:
            seq += 1
            dst = DSTS[seq % 2]
            t = time.time()
            try:
                s.sendto(f"{name} {seq} udp {dst}\n".encode(), (dst, PORT))
                r = "ok"
            except OSError as e:
                r = ename(e)
            log(f"{t:.6f} udp {dst} {seq} {r}")
            time.sleep(UDP_INTERVAL)

    def tcp():
        seq = 0
        while True:
            seq += 1
            dst = DSTS[seq % 2]
            t = time.time()
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(1.0)
            try:
                s.connect((dst, PORT))
                s.sendall(f"{name} {seq} tcp {dst}\n".encode())
                r = "ok"
            except socket.timeout:
                r = "timeout"
            except OSError as e:
                r = ename(e)
            finally:
                s.close()
            log(f"{t:.6f} tcp {dst} {seq} {r}")
            time.sleep(TCP_INTERVAL)

    threading.Thread(target=udp, daemon=True).start()
    threading.Thread(target=tcp, daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


def read(path):
    try:
        with open(path) as f:
            return [l.split() for l in f if l.strip()]
    except FileNotFoundError:
        return []


def spi(text):
    """An SPI as 8 lowercase hex digits, or "" when there is none."""
    t = text.lower().removeprefix("0x")
    try:
        return f"{int(t, 16):08x}"
    except ValueError:
        return ""


def peer_sas(path):
    """What the client's charon logged of every CHILD_SA it established,
    first negotiations and rekeys alike ("HH:MM:SS.mmm ... CHILD_SA net{1}
    established with SPIs c1c806c6_i 0fe0bb89_o"): the set of their SPIs
    (inbound and outbound), and the times of day (s, with ms) at which
    they were established, sorted."""
    import re
    spis, times = set(), []
    try:
        lines = open(path, errors="replace").read().splitlines()
    except OSError:
        return spis, times
    for line in lines:
        m = re.search(r"established with SPIs ([0-9a-f]{8})_i(?:\([^)]*\))? ([0-9a-f]{8})_o", line)
        if not m:
            continue
        spis.update((m[1], m[2]))
        t = re.match(r"(\d\d):(\d\d):(\d\d)\.(\d\d\d) .*CHILD_SA \S+ established", line)
        if t:
            times.append(int(t[1]) * 3600 + int(t[2]) * 60 + int(t[3]) + int(t[4]) / 1000)
    times.sort()
    return spis, times


def epoch_near(tod, t):
    """The epoch of time of day `tod` (UTC, as in the guest) nearest `t`."""
    e = t - t % 86400 + tod
    return e - 86400 if e - t > 43200 else e + 86400 if t - e > 43200 else e


def subnet(addr):
    return ".".join(addr.split(".")[:3]) + ".0/24"


def report(a):
    """a: JSON with daemon, cycles, calls (calls.log), leaked (packets),
    grace (s), since, logs (the phase's directory), backends {NAME: PREFIX}
    (library: "", cgroup: "g"; see churn.sh).

    - sent: send attempts; refused: attempts that failed with an errno
      (EACCES: ldsaref's deny / unknown profile; EPERM: the kernel's
      policy or the cgroup table's drop); delivered: messages received
      by the right client.
    - wrong: messages received by a client they were not meant for.
    - recovery: for each up-client call for a (client, subnet), the time
      from the call to the first message of that client received on that
      subnet; the worst one counts. Per backend: each backend's own
      messages.
    - recovery_after_return_ms: the same, from when the call returned.
    - steered_after_return_ms: from the call's return to the first send
      to that subnet that succeeded (ldsaref's part of the recovery; the
      rest is the tunnel reaching the client: charon answers its peer
      only after all its updown calls).
    - peer_ms / after_peer_ms: the recovery split where the client's
      charon logged its CHILD_SA as established (the last time before the
      first message, at most 2 s before the call): peer_ms from the call
      to then (the daemons: the server's updown calls, its answer, the
      client installing the SA), after_peer_ms from then, or from the
      call's return if later, to the first message (the steering, and
      the senders' own 40 ms cadence); the worst of each.
    - peer_own_ms: the worst daemons' part less the time the server spent
      in updown calls meanwhile (any connection's); within_1s_without_updown
      of split_ups: how many of the ups whose split is known would have
      met 1 s had every updown call taken no time.
    - recovered, within_1s, recovery_p50_ms, recovery_p90_ms: how many
      ups recovered, how many of them within 1 s of the call, and the
      median and 90th percentile of their recovery times.
    - updown_calls: per verb, the median and longest ldsaref updown call.
    - ok_while_down: sends that succeeded more than `grace` s after a
      down-client call returned and before the next up-client (they
      either leaked, which the wire shows, or were dropped silently,
      e.g. by libreswan's trap policy).
    The totals are over all backends; "backends" has each one's numbers.
    """
    # EPOCH VERB CONN PEER_CLIENT IF_ID EXIT END, ordered by EPOCH
    raw = [l for l in read(a["calls"]) if len(l) >= 6]
    raw.sort(key=lambda l: float(l[0]))
    # [end, start, verb, conn, client, spi_out]
    calls = [[l[6] if len(l) > 6 else l[0], l[0], l[1], l[2], l[3], spi(l[7] if len(l) > 7 else "-")]
             for l in raw]

    def blank():
        return {"sent": 0, "refused": 0, "delivered": 0, "wrong": 0, "recovery_ms": 0,
                "recovery_after_return_ms": 0, "steered_after_return_ms": 0,
                "ok_while_down": 0, "ups": 0, "peer_ms": 0, "after_peer_ms": 0,
                "unrecovered": [], "slowest": [], "errnos": {}, "recoveries": [],
                "peer_own_ms": 0, "without_updown": []}

    def of(prefix, seq):
        return seq.startswith(prefix) and seq[len(prefix):].isdigit()

    out = {"daemon": a["daemon"], "cycles": a["cycles"], "leaked": a["leaked"],
           "updown_call_max_ms": 0, **blank(),
           # calls for which ldsaref updown exited non-zero (charon only
           # logs them; pluto fails the SA)
           "updown_failed": [f"{l[1]} {l[2]} {l[3]} at {l[0]}: exit {l[5]}"
                             for l in raw if l[5] != "0"]}
    per = {b: blank() for b in a["backends"]}
    logs = a["logs"]
    out["peer_failed"] = []
    # the server's updown calls as [start, end] intervals, merged
    spans = []
    for c in sorted(calls, key=lambda c: float(c[1])):
        lo, hi = float(c[1]), float(c[0])
        if spans and lo <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])

    def busy(lo, hi):
        """Seconds within [lo, hi] that some updown call was running."""
        return sum(max(0.0, min(hi, b) - max(lo, a)) for a, b in spans if a < hi and b > lo)
    for i in (1, 2):
        name, conn = f"client{i}", f"c{i}"
        recv = read(f"{logs}/churn-sink-c{i}.log")
        installed, established = peer_sas(f"{logs}/c{i}.charon.log")
        mine = [l for l in calls if l[3] == conn or l[3].startswith(conn + "/")]
        for l in mine:
            out["updown_call_max_ms"] = max(out["updown_call_max_ms"],
                                            int((float(l[0]) - float(l[1])) * 1000))
        for backend, prefix in a["backends"].items():
            o = per[backend]
            sends = read(f"{logs}/churn-{'send' if backend == 'library' else 'gosend'}-c{i}.log")
            got = [r for r in recv if len(r) >= 5 and of(prefix, r[4])]
            o["sent"] += len(sends)
            for s in sends:
                if s[4] != "ok":
                    o["refused"] += 1
                    o["errnos"][s[4]] = o["errnos"].get(s[4], 0) + 1
            right = [r for r in got if r[3] == name]
            o["wrong"] += len(got) - len(right)
            o["delivered"] += len({(r[1], r[4]) for r in right})
            # per subnet, sorted times: what arrived, and which sends left
            # without an error (searched by bisection: a phase has tens of
            # thousands of each, and the emulated guest runs Python slowly)
            arrived, left = {}, {}
            for r in right:
                arrived.setdefault(subnet(r[2]), []).append(float(r[0]))
            for x in sends:
                if x[4] == "ok":
                    left.setdefault(subnet(x[2]), []).append(float(x[0]))
            for times in (*arrived.values(), *left.values()):
                times.sort()

            def first_from(times, t):
                k = bisect.bisect_left(times, t)
                return times[k] if k < len(times) else None
            for l in mine:
                if l[2] not in ("up-client", "up-host"):
                    continue
                t, sub = float(l[1]), l[4]
                if t < a.get("since", 0):
                    continue  # before the senders ran
                o["ups"] += 1
                first = first_from(arrived.get(sub, []), t)
                # a later down of the same subnet ends the wait
                nxt = [float(d[1]) for d in mine
                       if d[2].startswith("down") and d[4] == sub and float(d[1]) > t]
                end = min(nxt) if nxt else None
                if first is None or (end is not None and first > end):
                    if l[5] and l[5] not in installed:
                        # The server's SA, which the peer never installed:
                        # the daemons failed the negotiation (seen: pluto
                        # 4.10 answering a CREATE_CHILD_SA that crossed its
                        # liveness probe with TS_UNACCEPTABLE after
                        # installing its side). Nothing can reach the
                        # client through it, whatever steers the sends.
                        if backend == next(iter(a["backends"])):
                            out["peer_failed"].append(
                                f"{name} {sub} up at {t:.3f} (SPI_OUT {l[5]}, "
                                f"never established at {name})")
                        continue
                    o["unrecovered"].append(f"{backend} {name} {sub} up at {t:.3f}")
                    # what explains it: the connection's calls around it,
                    # and what became of the sends to that subnet until
                    # the next down (refused by ldsaref, or sent and lost)
                    stop = end if end is not None else t + 10
                    near = [f"{float(c[1]):.3f} {c[2]} {c[3]} {c[4]} (returned {float(c[0]):.3f})"
                            for c in mine if t - 10 <= float(c[1]) <= stop + 2]
                    fates = {}
                    for x in sends:
                        if subnet(x[2]) == sub and t <= float(x[0]) < stop:
                            fates[x[4]] = fates.get(x[4], 0) + 1
                    out.setdefault("unrecovered_detail", []).append(
                        f"{backend} {name} {sub} up at {t:.3f}, next down "
                        f"{'none' if end is None else f'{end:.3f}'}; sends to {sub} meanwhile: "
                        f"{fates or 'none'}; calls of {conn}: " + " | ".join(near))
                    continue
                # ldsaref's own part: from the call's return to the first
                # send to that subnet that left the program without an
                # error (ldsaref steering it, the server's SA there); the
                # rest of the recovery is the tunnel reaching the client
                ok = first_from(left.get(sub, []), t)
                if ok is not None and (end is None or ok < end):
                    o["steered_after_return_ms"] = max(o["steered_after_return_ms"],
                                                       int(max(0.0, ok - float(l[0])) * 1000))
                o["recoveries"].append(int((first - t) * 1000))
                if int((first - t) * 1000) > o["recovery_ms"]:
                    o["recovery_ms"] = int((first - t) * 1000)
                    o["slowest_up_at"] = t
                o["slowest"].append([int((first - t) * 1000),
                                     f"{backend} {name} {sub} up at {t:.3f} (returned {float(l[0]):.3f}), first at {first:.3f}"])
                # where the client had its SA: the daemons' part before,
                # the steering's after
                k = bisect.bisect_right(established, (first % 86400) + 0.0005)
                est = epoch_near(established[k - 1], t) if k else None
                if est is not None and t - 2 <= est <= first:
                    o["peer_ms"] = max(o["peer_ms"], int((est - t) * 1000))
                    o["after_peer_ms"] = max(o["after_peer_ms"],
                                             int((first - max(est, float(l[0]))) * 1000))
                    # of the daemons' part, the time the server spent in
                    # updown calls (any connection's: charon runs them
                    # one at a time); the rest is the daemons' own
                    inside = busy(t, est)
                    o["peer_own_ms"] = max(o["peer_own_ms"], int((est - t - inside) * 1000))
                    o["without_updown"].append(int((first - t - inside) * 1000))
                # the same from when ldsaref updown returned (the rules written)
                o["recovery_after_return_ms"] = max(o["recovery_after_return_ms"],
                                                    int(max(0.0, first - float(l[0])) * 1000))
            # down windows per subnet: [down's return + grace, next up): the
            # daemon removes its policies once updown has returned
            for l in mine:
                if not l[2].startswith("down"):
                    continue
                t, sub = float(l[0]), l[4]
                ups = [float(u[1]) for u in mine if u[2].startswith("up") and u[4] == sub and float(u[1]) > t]
                end = min(ups) if ups else float("inf")
                times = left.get(sub, [])
                lo = bisect.bisect_right(times, t + a["grace"])
                hi = bisect.bisect_left(times, end)
                o["ok_while_down"] += max(0, hi - lo)
        # messages of no backend's form count as wrong too
        out["wrong"] += sum(1 for r in recv
                            if len(r) < 5 or not any(of(p, r[4]) for p in a["backends"].values()))
    def spread(o):
        # the distribution behind the worst one: how many ups met 1 s
        r = sorted(o.pop("recoveries"))
        o["recovered"] = len(r)
        o["within_1s"] = sum(1 for x in r if x <= 1000)
        o["recovery_p50_ms"] = r[len(r) // 2] if r else 0
        o["recovery_p90_ms"] = r[min(len(r) - 1, len(r) * 9 // 10)] if r else 0
        # the same ups, had every updown call taken no time at all: what
        # the daemons and the steering alone would give
        w = sorted(o.pop("without_updown"))
        o["within_1s_without_updown"] = sum(1 for x in w if x <= 1000)
        o["split_ups"] = len(w)
    for o in per.values():
        # the totals' distributions are over every backend's ups
        out["recoveries"] += o["recoveries"]
        out["without_updown"] += o["without_updown"]
        spread(o)
        o["slowest"] = [d for _, d in sorted(o["slowest"], reverse=True)[:3]]
        for k in ("sent", "refused", "delivered", "wrong", "ok_while_down", "ups"):
            out[k] += o[k]
        if o["recovery_ms"] > out["recovery_ms"]:
            out["slowest_up_at"] = o["slowest_up_at"]
        for k in ("recovery_ms", "recovery_after_return_ms", "steered_after_return_ms",
                  "peer_ms", "after_peer_ms", "peer_own_ms"):
            out[k] = max(out[k], o[k])
        out["unrecovered"] += o["unrecovered"]
        out["slowest"] += o["slowest"]
        for e, n in o["errnos"].items():
            out["errnos"][e] = out["errnos"].get(e, 0) + n
    spread(out)
    out["backends"] = per
    # how long ldsaref updown took, per verb (the daemon waits for each
    # call, and charon runs them one at a time): median / max ms, count
    took = {}
    for l in calls:
        took.setdefault(l[2], []).append((float(l[0]) - float(l[1])) * 1000)
    out["updown_calls"] = {v: f"{sorted(t)[len(t) // 2]:.0f}/{max(t):.0f} ms ({len(t)})"
                           for v, t in sorted(took.items())}
    return out


def window(t, before, after, paths):
    """Prints the lines of the daemons' logs whose time of day (the first
    HH:MM:SS in the line, UTC as in the guest) falls from `before` s
    before `t` to `after` s after."""
    import re
    lo, hi = (t - before) % 86400, (t + after) % 86400
    stamp = re.compile(r"(\d\d):(\d\d):(\d\d)")
    for path in paths:
        try:
            lines = open(path, errors="replace").read().splitlines()
        except OSError:
            continue
        for line in lines:
            m = stamp.search(line[:40])
            if not m:
                continue
            tod = int(m[1]) * 3600 + int(m[2]) * 60 + int(m[3])
            if lo - 1 <= tod <= hi:
                print(f"{path.rsplit('/', 1)[-1]}: {line}")


def main():
    mode = sys.argv[1]
    if mode == "sink":
        sink(sys.argv[2], sys.argv[3])
    elif mode == "send":
        send(sys.argv[2], sys.argv[3])
    elif mode == "report":
        r = report(json.loads(sys.argv[2]))
        print(json.dumps(r))
    elif mode == "window":
        window(float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5:])
    else:
        sys.exit(__doc__)


main()
