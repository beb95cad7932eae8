#!/usr/bin/env python3
"""Asks SERVER:53 for the A record of NAME with its own UDP socket (plain
sendto/recvfrom, which a preload sees, unlike glibc's resolver) and prints
`answer=ADDR`, `error=ERRNO` or `timeout`.

Usage: dns_query.py SERVER NAME
"""
import socket
import struct
import sys


def query(name):
    q = struct.pack("!HHHHHH", 0x1d5a, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack("!HH", 1, 1)


def main():
    server, name = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        s.sendto(query(name), (server, 53))
        reply, _ = s.recvfrom(4096)
    except socket.timeout:
        print("timeout")
        return
    except OSError as e:
        print(f"error={e.errno}")
        return
    ancount = struct.unpack("!H", reply[6:8])[0]
    if ancount < 1 or len(reply) < 4:
        print("answer=none")
        return
    print("answer=" + socket.inet_ntoa(reply[-4:]))


if __name__ == "__main__":
    main()
