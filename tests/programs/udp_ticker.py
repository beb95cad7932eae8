#!/usr/bin/env python3
"""A long-running UDP sender for the reload tests: every 50 ms, one
datagram to each HOST:PORT from one unconnected socket (sendto), for
SECONDS at most. A failed send prints `error dst=HOST:PORT errno=N`.

Usage: udp_ticker.py SECONDS HOST:PORT...
"""
import socket
import sys
import time


def main():
    end = time.monotonic() + float(sys.argv[1])
    dsts = []
    for a in sys.argv[2:]:
        host, port = a.rsplit(":", 1)
        dsts.append((host, int(port)))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while time.monotonic() < end:
        for d in dsts:
            try:
                s.sendto(b"tick", d)
            except OSError as e:
                print(f"error dst={d[0]}:{d[1]} errno={e.errno}", flush=True)
        time.sleep(0.05)


if __name__ == "__main__":
    main()
