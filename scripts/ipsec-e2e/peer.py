#!/usr/bin/python3
"""Unmodified test peers for the guest.

  peer.py client NAME   HTTP on 198.18.0.5:80 and UDP on 198.18.0.5:7, both
                        answering NAME (which of the overlapping clients).
  peer.py echo PORT     a plain UDP echo on 203.0.113.1:PORT. It knows
                        nothing of tunnels: under ldsaref's `reflect` its
                        replies go back through the SA each datagram came in on.
"""
import socket
import sys
import threading


def udp_loop(sock, reply):
    while True:
        data, peer = sock.recvfrom(2048)
        try:
            sock.sendto(reply(data), peer)
        except OSError as e:
            # Logged, not fatal: the unwrapped echo is expected to fail here.
            print(f"sendto {peer}: {e}", flush=True)


def main():
    mode = sys.argv[1]
    if mode == "client":
        import http.server

        name = sys.argv[2].encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(name) + 1))
                self.end_headers()
                self.wfile.write(name + b"\n")

            def log_message(self, fmt, *args):
                pass

        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("198.18.0.5", 7))
        threading.Thread(target=udp_loop, args=(u, lambda _: name + b"\n"), daemon=True).start()
        srv = http.server.ThreadingHTTPServer(("198.18.0.5", 80), Handler)
        print("ready", flush=True)
        srv.serve_forever()
    elif mode == "echo":
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("203.0.113.1", int(sys.argv[2])))
        print("ready", flush=True)
        udp_loop(u, lambda d: d)
    else:
        sys.exit(f"usage: {sys.argv[0]} client NAME | echo PORT")


main()
