#!/usr/bin/env python3
"""Counts what reaches ADDR:PORT (TCP connections and UDP datagrams) for
SECONDS, then prints `tcp=N udp=M`. Used inside a test's own network
namespace to prove that nothing was sent."""
import select
import socket
import sys
import time

addr, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((addr, port))
t.listen(16)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((addr, port))
print("ready", flush=True)
tcp = udp = 0
end = time.monotonic() + seconds
while (left := end - time.monotonic()) > 0:
    r, _, _ = select.select([t, u], [], [], left)
    if t in r:
        c, _ = t.accept()
        tcp += 1
        c.close()
    if u in r:
        u.recv(2048)
        udp += 1
print(f"tcp={tcp} udp={udp}", flush=True)
