#!/usr/bin/env python3
"""The servers of one test-bed client (client1 or client2), run inside that
client's network namespace by `scripts/testbed.sh up`.

Both clients own the same address (198.18.0.5, 2001:db8:18::5): every answer
carries the client's name so that whoever asked can tell which tunnel its
traffic went through.

  HTTP  198.18.0.5:80 and [2001:db8:18::5]:80   body "<name>\n"
  UDP   198.18.0.5:7                            echo "<name>: <data>"
  DNS   198.18.0.5:53 (UDP)                     A for any name: 198.18.<n>.<n>
                                                (client1 -> 198.18.1.1,
                                                client2 -> 198.18.2.2)

Usage: client.py NAME N
"""
import http.server
import socket
import struct
import sys
import threading

V4 = "198.18.0.5"
V6 = "2001:db8:18::5"


def http_servers(name):
    body = f"{name}\n".encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):
            print(f"{name} http {self.client_address[0]} {fmt % args}", flush=True)

    class V6Server(http.server.ThreadingHTTPServer):
        address_family = socket.AF_INET6

    servers = [
        http.server.ThreadingHTTPServer((V4, 80), Handler),
        V6Server((V6, 80), Handler),
    ]
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()


def udp_echo(name, sock):
    while True:
        data, peer = sock.recvfrom(65535)
        print(f"{name} echo {peer[0]}:{peer[1]} {data!r}", flush=True)
        sock.sendto(f"{name}: ".encode() + data, peer)


def dns_answer(query, n):
    """A minimal authoritative answer: the question copied back, and for an
    A question one A record 198.18.n.n (TTL 0); any other type gets an empty
    NOERROR answer, so that resolvers asking AAAA in parallel move on."""
    if len(query) < 12:
        return None
    qid, flags, qdcount = struct.unpack("!HHH", query[:6])
    if flags & 0x8000 or qdcount != 1:
        return None
    i = 12
    while i < len(query) and query[i] != 0:
        i += 1 + query[i]
    end = i + 5
    if end > len(query):
        return None
    question = query[12:end]
    qtype = struct.unpack("!H", query[end - 4:end - 2])[0]
    rd = flags & 0x0100
    answers = b""
    ancount = 0
    if qtype == 1:
        answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + bytes([198, 18, n, n])
        ancount = 1
    header = struct.pack("!HHHHHH", qid, 0x8400 | rd, 1, ancount, 0, 0)
    return header + question + answers


def dns(name, n, sock):
    while True:
        query, peer = sock.recvfrom(4096)
        reply = dns_answer(query, n)
        print(f"{name} dns {peer[0]}:{peer[1]} answered={reply is not None}", flush=True)
        if reply is not None:
            sock.sendto(reply, peer)


def main():
    name, n = sys.argv[1], int(sys.argv[2])
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind((V4, 7))
    resolver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    resolver.bind((V4, 53))
    threading.Thread(target=udp_echo, args=(name, echo), daemon=True).start()
    threading.Thread(target=dns, args=(name, n, resolver), daemon=True).start()
    http_servers(name)
    print(f"{name} ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
