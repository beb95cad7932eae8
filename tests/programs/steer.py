#!/usr/bin/env python3
"""Test driver: an ordinary program (it knows nothing of ldsaref) that
exercises one socket path per scenario. The integration tests run it under
the library, with the KLIPS emulator or strace behind it, and check what the
kernel was told. It prints one line per interesting fact, `key=value`.

Every address it uses is given on the command line: the tests only pass
loopback addresses or addresses inside their own network namespaces.
"""
import ctypes
import os
import socket
import struct
import sys
import threading

IP_TOS = 1
REFINFO = int(os.environ.get("TEST_REFINFO", "30"))
BINDREF = int(os.environ.get("TEST_BINDREF", "31"))


def hostport(s):
    host, port = s.rsplit(":", 1)
    return host.strip("[]"), int(port)


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def udp_sink(host, port):
    """A receiver, so that connected UDP sockets do not get ICMP errors."""
    r = socket.socket(family(host), socket.SOCK_DGRAM)
    r.bind((host, port))
    return r


def tcp_listener(host, port):
    l = socket.socket(family(host), socket.SOCK_STREAM)
    l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    l.bind((host, port))
    l.listen(16)

    def serve():
        while True:
            try:
                c, _ = l.accept()
            except OSError:
                return
            c.recv(100)
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    return l


def report(**kv):
    print(" ".join(f"{k}={v}" for k, v in kv.items()), flush=True)


def attempt(label, fn):
    try:
        fn()
        report(step=label, result="ok")
    except OSError as e:
        report(step=label, result="error", errno=e.errno)


def tcp(args):
    dests = [hostport(a) for a in args]
    for h, p in dests:
        tcp_listener(h, p)
    for h, p in dests:
        s = socket.socket(family(h), socket.SOCK_STREAM)
        report(fd=s.fileno(), dst=f"{h}:{p}")
        attempt("connect", lambda: s.connect((h, p)))
        attempt("send", lambda: s.send(b"x"))
        s.close()


def tfo(args):
    h, p = hostport(args[0])
    tcp_listener(h, p)
    s = socket.socket(family(h), socket.SOCK_STREAM)
    report(fd=s.fileno(), dst=f"{h}:{p}")
    attempt("sendto_fastopen", lambda: s.sendto(b"hello", socket.MSG_FASTOPEN, (h, p)))
    s.close()


def udp_connected(args):
    h, p = hostport(args[0])
    sink = udp_sink(h, p)
    s = socket.socket(family(h), socket.SOCK_DGRAM)
    report(fd=s.fileno(), dst=f"{h}:{p}")
    attempt("connect", lambda: s.connect((h, p)))
    attempt("send", lambda: s.send(b"via send"))
    attempt("write", lambda: os.write(s.fileno(), b"via write"))
    attempt("writev", lambda: os.writev(s.fileno(), [b"via ", b"writev"]))
    attempt("sendto_none", lambda: s.sendto(b"via sendto", (h, p)))
    sink.settimeout(2)
    got = 0
    try:
        while got < 4:
            sink.recv(100)
            got += 1
    except OSError:
        pass
    report(received=got)


def udp_sendto(args):
    dests = [hostport(a) for a in args]
    sinks = [udp_sink(h, p) for h, p in set(dests)]
    s = socket.socket(family(dests[0][0]), socket.SOCK_DGRAM)
    report(fd=s.fileno())
    for h, p in dests:
        attempt(f"sendto {h}:{p}", lambda: s.sendto(b"datagram", (h, p)))
    del sinks


def udp_sendmsg(args):
    """sendmsg with an application cmsg (IP_TOS), then without any."""
    h, p = hostport(args[0])
    sink = udp_sink(h, p)
    sink.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    report(fd=s.fileno())
    attempt("sendmsg_tos", lambda: s.sendmsg([b"with tos"], [(socket.IPPROTO_IP, IP_TOS, struct.pack("i", 0x28))], 0, (h, p)))
    attempt("sendmsg_plain", lambda: s.sendmsg([b"plain"], [], 0, (h, p)))
    sink.settimeout(2)
    try:
        data, anc, _, _ = sink.recvmsg(100, 64)
        tos = [struct.unpack("B", d[:1])[0] for lvl, ty, d in anc if lvl == socket.IPPROTO_IP and ty == socket.IP_TOS]
        report(first=data.decode(), tos=hex(tos[0]) if tos else "none")
    except OSError as e:
        report(first="none", errno=e.errno)


def own_refinfo(args):
    """The application tags its datagram itself: it must win."""
    h, p = hostport(args[0])
    saref = int(args[1])
    sink = udp_sink(h, p)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    report(fd=s.fileno())
    attempt("sendmsg_own", lambda: s.sendmsg([b"own"], [(socket.IPPROTO_IP, REFINFO, struct.pack("I", saref))], 0, (h, p)))
    del sink


def own_bindref(args):
    """The application binds its socket itself: it must win."""
    h, p = hostport(args[0])
    saref = int(args[1])
    tcp_listener(h, p)
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    report(fd=s.fileno())
    attempt("setsockopt_bindref", lambda: s.setsockopt(socket.IPPROTO_IP, BINDREF, saref))
    attempt("connect", lambda: s.connect((h, p)))
    s.close()


class sockaddr_in(ctypes.Structure):
    _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_uint16), ("addr", ctypes.c_uint32), ("zero", ctypes.c_char * 8)]


class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]


def sendmmsg(args):
    """One sendmmsg call, one message per destination, in order."""
    dests = [hostport(a) for a in args]
    sinks = [udp_sink(h, p) for h, p in set(dests)]
    libc = ctypes.CDLL(None, use_errno=True)  # global scope: preloads first
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    report(fd=s.fileno())
    n = len(dests)
    msgs = (mmsghdr * n)()
    keep = []
    for i, (h, p) in enumerate(dests):
        sa = sockaddr_in(socket.AF_INET, socket.htons(p), struct.unpack("I", socket.inet_aton(h))[0])
        payload = ctypes.create_string_buffer(f"msg{i}".encode())
        iov = iovec(ctypes.cast(payload, ctypes.c_void_p), len(f"msg{i}"))
        keep += [sa, payload, iov]
        msgs[i].hdr.name = ctypes.cast(ctypes.pointer(sa), ctypes.c_void_p)
        msgs[i].hdr.namelen = ctypes.sizeof(sa)
        msgs[i].hdr.iov = ctypes.cast(ctypes.pointer(iov), ctypes.c_void_p)
        msgs[i].hdr.iovlen = 1
    r = libc.sendmmsg(s.fileno(), msgs, n, 0)
    report(sendmmsg=r, errno=ctypes.get_errno() if r < 0 else 0, lens=",".join(str(msgs[i].len) for i in range(n)))
    del sinks


def reconnect(args):
    """One UDP socket connected to each destination in turn."""
    dests = [hostport(a) for a in args]
    sinks = [udp_sink(h, p) for h, p in set(dests)]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    report(fd=s.fileno())
    for h, p in dests:
        attempt(f"connect {h}:{p}", lambda: s.connect((h, p)))
        attempt(f"send {h}:{p}", lambda: s.send(b"r"))
    del sinks


def errno_after_socket(args):
    """errno after a successful socket() must be what libc left."""
    libc = ctypes.CDLL(None, use_errno=True)  # global scope: preloads first
    ctypes.set_errno(77)
    fd = libc.socket(socket.AF_INET, socket.SOCK_DGRAM, 0)
    report(fd=fd, errno=ctypes.get_errno())


def listener(args):
    """A listener and an accepted connection from itself."""
    h, p = hostport(args[0])
    l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    report(fd=l.fileno())
    l.bind((h, p))
    l.listen(1)
    report(listening=1)


def udp_loop(args):
    """One datagram every INTERVAL ms, COUNT times: a long-running program
    for reload tests. Prints `i=N result=ok|error errno=E` per datagram."""
    import time
    h, p = hostport(args[0])
    count, interval = int(args[1]), int(args[2]) / 1000
    sink = udp_sink(h, p)
    s = socket.socket(family(h), socket.SOCK_DGRAM)
    report(fd=s.fileno())
    for i in range(count):
        try:
            s.sendto(b"tick", (h, p))
            report(i=i, result="ok")
        except OSError as e:
            report(i=i, result="error", errno=e.errno)
        time.sleep(interval)
    del sink


def bind_late(args):
    """Datagrams to one peer before and after the application binds the
    socket itself: the library's earlier decision must not be reused."""
    h, p = hostport(args[0])
    saref = int(args[1])
    sink = udp_sink(h, p)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    report(fd=s.fileno())
    attempt("before-1", lambda: s.sendto(b"a", (h, p)))
    attempt("before-2", lambda: s.sendto(b"b", (h, p)))
    attempt("setsockopt_bindref", lambda: s.setsockopt(socket.IPPROTO_IP, BINDREF, saref))
    attempt("after", lambda: s.sendto(b"c", (h, p)))
    del sink


SCENARIOS = {
    "bind-late": bind_late,
    "udp-loop": udp_loop,
    "tcp": tcp,
    "tfo": tfo,
    "udp-connected": udp_connected,
    "udp-sendto": udp_sendto,
    "udp-sendmsg": udp_sendmsg,
    "own-refinfo": own_refinfo,
    "own-bindref": own_bindref,
    "sendmmsg": sendmmsg,
    "reconnect": reconnect,
    "errno-after-socket": errno_after_socket,
    "listener": listener,
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]](sys.argv[2:])
