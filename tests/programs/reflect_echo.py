#!/usr/bin/env python3
"""An ordinary UDP echo server (it knows nothing of ldsaref or marks):
`reflect_echo.py ADDR PORT COUNT recvfrom|recvmsg|recvmmsg`. Replies to each
datagram with the same bytes, then exits after COUNT datagrams. Prints the
ancillary data it received, so a test can see that none leaked to it."""
import ctypes
import socket
import struct
import sys

addr, port, count, how = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((addr, port))
print("ready", flush=True)

if how == "recvmmsg":
    libc = ctypes.CDLL(None, use_errno=True)  # global scope: preloads first

    class iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    class msghdr(ctypes.Structure):
        _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p),
                    ("iovlen", ctypes.c_size_t), ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                    ("flags", ctypes.c_int)]

    class mmsghdr(ctypes.Structure):
        _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

    done = 0
    while done < count:
        n = 4
        msgs = (mmsghdr * n)()
        keep = []
        for i in range(n):
            buf = ctypes.create_string_buffer(2048)
            name = ctypes.create_string_buffer(128)
            iov = iovec(ctypes.cast(buf, ctypes.c_void_p), 2048)
            keep += [buf, name, iov]
            msgs[i].hdr.name = ctypes.cast(name, ctypes.c_void_p)
            msgs[i].hdr.namelen = 128
            msgs[i].hdr.iov = ctypes.cast(ctypes.pointer(iov), ctypes.c_void_p)
            msgs[i].hdr.iovlen = 1
        r = libc.recvmmsg(s.fileno(), msgs, n, 0x10000, None)  # MSG_WAITFORONE
        replies = (mmsghdr * max(r, 1))()
        for i in range(r):
            replies[i].hdr.name = msgs[i].hdr.name
            replies[i].hdr.namelen = msgs[i].hdr.namelen
            keep_iov = iovec(keep[3 * i + 2].base, msgs[i].len)
            keep.append(keep_iov)
            replies[i].hdr.iov = ctypes.cast(ctypes.pointer(keep_iov), ctypes.c_void_p)
            replies[i].hdr.iovlen = 1
            print(f"got controllen={msgs[i].hdr.controllen}", flush=True)
        libc.sendmmsg(s.fileno(), replies, r, 0)
        done += r
else:
    for _ in range(count):
        if how == "recvmsg":
            data, anc, flags, peer = s.recvmsg(2048, 64)
            print(f"got anc={anc} flags={flags}", flush=True)
            s.sendmsg([data], [], 0, peer)
        else:
            data, peer = s.recvfrom(2048)
            s.sendto(data, peer)
print("done", flush=True)
