#!/usr/bin/env python3
"""The demo's receiver: a TCP (HTTP) and a UDP server that tell each
client which mark its traffic arrived with, and so which SA ldsaref put it
in. Runs inside the demo's own network namespace.

TCP: with net.ipv4.tcp_fwmark_accept=1 an accepted socket takes the mark of
the SYN, read back with SO_MARK. UDP: SO_RCVMARK reports each datagram's
mark in a control message.
"""
import http.server
import socket
import struct
import sys
import threading

SO_MARK = 36
SO_RCVMARK = 75


def describe(mark):
    s = f"mark 0x{mark:08x}"
    if mark & 0x80000000:
        s += f" = SAref {(mark >> 16) & 0x7fff} (mast encoding)"
    elif mark == 0:
        s += " (none: not steered)"
    return s


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        mark = self.connection.getsockopt(socket.SOL_SOCKET, SO_MARK) & 0xFFFFFFFF
        body = f"server: your TCP connection arrived with {describe(mark)}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def udp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVMARK, 1)
    s.bind((addr, port))
    while True:
        data, anc, _, peer = s.recvmsg(2048, 256)
        mark = 0
        for level, ty, payload in anc:
            if level == socket.SOL_SOCKET and ty == SO_MARK:
                mark = struct.unpack("I", payload[:4])[0]
        msg = data.decode(errors="replace").strip()
        print(f"    [udp server] {msg!r} from {peer[0]}:{peer[1]} arrived with {describe(mark)}", flush=True)


def main():
    addr, port = sys.argv[1], int(sys.argv[2])
    threading.Thread(target=udp, args=(addr, port), daemon=True).start()
    http.server.ThreadingHTTPServer((addr, port), Handler).serve_forever()


if __name__ == "__main__":
    main()
