#!/usr/bin/env python3
"""A minimal caching-free DNS forwarder: every UDP query received on
LISTEN_ADDR:53 is sent on to UPSTREAM:53 from a socket of its own, and the
answer relayed back.

It knows nothing of tunnels. Run under ldsaref with a rule for the upstream
(`198.18.0.5 udp 53 saref 101`), its upstream queries are steered, and so
are, indirectly, the lookups of every program whose resolv.conf names it -
including glibc's resolver, whose own sockets the preload cannot reach.

Usage: dns_forwarder.py LISTEN_ADDR UPSTREAM_ADDR
"""
import socket
import sys
import threading


def relay(listener, query, client, upstream):
    up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    up.settimeout(2)
    try:
        up.sendto(query, (upstream, 53))
        answer, _ = up.recvfrom(4096)
    except OSError as e:
        print(f"forwarder: upstream {upstream}: {e}", flush=True)
        return
    finally:
        up.close()
    listener.sendto(answer, client)


def main():
    listen, upstream = sys.argv[1], sys.argv[2]
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind((listen, 53))
    print("ready", flush=True)
    while True:
        query, client = listener.recvfrom(4096)
        threading.Thread(target=relay, args=(listener, query, client, upstream), daemon=True).start()


if __name__ == "__main__":
    main()
