#!/usr/bin/env python3
"""An ordinary UDP echo server, written as if it had never heard of
tunnels: it answers each datagram with `echo: <data>` to the address it came
from. Prints `ready` once bound, then one line per datagram (`sent` or
`error=ERRNO` for the reply).

MODE is the socket API it uses:
  recvfrom  recvfrom + sendto
  recvmsg   recvmsg + sendmsg
  mmsg      recvmmsg + sendmmsg, through ctypes (looked up with
            CDLL(None), the process's global scope, so that a preloaded
            definition wins as it does for a C program; a
            CDLL("libc.so.6") handle would bypass LD_PRELOAD)

Usage: echo_server.py MODE ADDR PORT
"""
import ctypes
import os
import socket
import sys


def reply(sock, data, peer, send):
    try:
        send(b"echo: " + data, peer)
        print("sent", flush=True)
    except OSError as e:
        print(f"error={e.errno}", flush=True)


def serve_recvfrom(s):
    while True:
        data, peer = s.recvfrom(65535)
        reply(s, data, peer, s.sendto)


def serve_recvmsg(s):
    while True:
        data, _anc, _flags, peer = s.recvmsg(65535)
        reply(s, data, peer, lambda d, p: s.sendmsg([d], [], 0, p))


class sockaddr_in(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_ushort),
                ("addr", ctypes.c_ubyte * 4), ("zero", ctypes.c_ubyte * 8)]


class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint),
                ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]


MSG_WAITFORONE = 0x10000
BATCH = 8


def serve_mmsg(s):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = s.fileno()
    bufs = [ctypes.create_string_buffer(2048) for _ in range(BATCH)]
    names = [sockaddr_in() for _ in range(BATCH)]
    iovs = [iovec(ctypes.cast(b, ctypes.c_void_p), 2048) for b in bufs]
    msgs = (mmsghdr * BATCH)()
    out_bufs = [ctypes.create_string_buffer(2100) for _ in range(BATCH)]
    out_iovs = [iovec(ctypes.cast(b, ctypes.c_void_p), 0) for b in out_bufs]
    out = (mmsghdr * BATCH)()
    while True:
        for i in range(BATCH):
            msgs[i].hdr = msghdr(ctypes.cast(ctypes.pointer(names[i]), ctypes.c_void_p),
                                 ctypes.sizeof(sockaddr_in), ctypes.pointer(iovs[i]), 1,
                                 None, 0, 0)
            msgs[i].len = 0
        n = libc.recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, None)
        if n < 0:
            sys.exit(f"recvmmsg: {os.strerror(ctypes.get_errno())}")
        for i in range(n):
            data = b"echo: " + bufs[i].raw[:msgs[i].len]
            ctypes.memmove(out_bufs[i], data, len(data))
            out_iovs[i].len = len(data)
            out[i].hdr = msghdr(ctypes.cast(ctypes.pointer(names[i]), ctypes.c_void_p),
                                msgs[i].hdr.namelen, ctypes.pointer(out_iovs[i]), 1,
                                None, 0, 0)
        sent = libc.sendmmsg(fd, out, n, 0)
        if sent < 0:
            print(f"error={ctypes.get_errno()}", flush=True)
        else:
            for _ in range(sent):
                print("sent", flush=True)


def main():
    mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    print("ready", flush=True)
    {"recvfrom": serve_recvfrom, "recvmsg": serve_recvmsg, "mmsg": serve_mmsg}[mode](s)


if __name__ == "__main__":
    main()
