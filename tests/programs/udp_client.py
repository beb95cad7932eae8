#!/usr/bin/env python3
"""An ordinary UDP client: sends MESSAGE to HOST:PORT and prints the reply,
`error=ERRNO` when the send fails, or `timeout`.

MODE is how it sends: `sendto` (unconnected socket), `connect` (connect,
then send), `sendmsg` (unconnected, sendmsg with the address).

Usage: udp_client.py MODE HOST PORT MESSAGE
"""
import socket
import sys


def main():
    mode, host, port, message = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4].encode()
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        if mode == "sendto":
            s.sendto(message, (host, port))
        elif mode == "connect":
            s.connect((host, port))
            s.send(message)
        elif mode == "sendmsg":
            s.sendmsg([message], [], 0, (host, port))
        else:
            sys.exit(f"unknown mode {mode}")
        print(s.recv(65535).decode(errors="replace").strip())
    except socket.timeout:
        print("timeout")
    except OSError as e:
        print(f"error={e.errno}")


if __name__ == "__main__":
    main()
