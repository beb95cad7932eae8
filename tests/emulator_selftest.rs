//! Proves that the KLIPS emulator (tests/emu/klips_emu.c) does what the
//! other integration tests rely on, without ldsaref: python3 runs under
//! `LD_PRELOAD=<emulator>` alone, checks what the sockets see, and the tests
//! here check the emulator's log.
//!
//! Traffic goes to 127.0.0.1 only, or (for the SO_MARK tests, root) to
//! loopback inside a network namespace made for the test.

mod common;

use common::{emulator, python3, run_with_timeout, EmuLog, Event, Netns, RunOutput};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

/// Helpers available to every script.
const PRELUDE: &str = r#"
import ctypes, errno, os, socket, struct, sys, threading
IPPROTO_IP = 0
ABI = int(os.environ.get("T_ABI", "30"))
REFINFO = ABI
BINDREF = ABI + 1
SOL_SOCKET = socket.SOL_SOCKET
SO_MARK = 36
SO_RCVMARK = 75
IP_TTL = 2
IP_RECVTTL = 12
MSG_WAITFORONE = 0x10000

def out(k, v):
    print(f"{k}={v}", flush=True)

def mast(s):
    return ((s & 0x7fff) << 16) | 0x80000000

def tag(v, fmt="I", typ=None):
    extra = [0] * (len(fmt.lstrip("=<>!@")) - 1)
    return (IPPROTO_IP, REFINFO if typ is None else typ, struct.pack(fmt, v, *extra))

def expect_errno(code, fn, *a):
    try:
        fn(*a)
    except OSError as e:
        assert e.errno == code, f"expected errno {code}, got {e.errno} ({e})"
        return
    raise AssertionError(f"expected errno {code}, but the call succeeded")

def udp_pair(fam=socket.AF_INET, host="127.0.0.1"):
    r = socket.socket(fam, socket.SOCK_DGRAM)
    r.bind((host, 0))
    r.settimeout(2)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    return s, r

def nothing_arrives(r, t=0.3):
    r.settimeout(t)
    try:
        d = r.recv(2048)
    except socket.timeout:
        return
    finally:
        r.settimeout(2)
    raise AssertionError(f"unexpected datagram {d!r}")

def sock_mark(sock):
    return sock.getsockopt(SOL_SOCKET, SO_MARK) & 0xffffffff

def mark_of(anc):
    for lvl, typ, d in anc:
        if lvl == SOL_SOCKET and typ == SO_MARK:
            return struct.unpack("I", d)[0]
    return None

def refinfo_of(anc):
    for lvl, typ, d in anc:
        if lvl == IPPROTO_IP and typ == REFINFO:
            return struct.unpack("II", d)
    return None

# --- raw sendmmsg / recvmmsg through libc (so through the interposer) -------
libc = ctypes.CDLL(None, use_errno=True)

class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]

class mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", msghdr), ("len", ctypes.c_uint)]

libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(mmsghdr), ctypes.c_uint, ctypes.c_int]
libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.POINTER(mmsghdr), ctypes.c_uint, ctypes.c_int,
                          ctypes.c_void_p]
libc.connect.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]

def cmsg(level, typ, data):
    ln = 16 + len(data)
    return struct.pack("=Qii", ln, level, typ) + data + b"\0" * ((-ln) % 8)

def parse_cmsgs(raw):
    res, off = [], 0
    while off + 16 <= len(raw):
        ln, lvl, typ = struct.unpack_from("=Qii", raw, off)
        if ln < 16:
            break
        res.append((lvl, typ, raw[off + 16: off + ln]))
        off += (ln + 7) & ~7
    return res

def sockaddr_in(host, port):
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(host) + b"\0" * 8

_keep = []
def _buf(b):
    cb = ctypes.create_string_buffer(b, len(b))
    _keep.append(cb)
    return ctypes.cast(cb, ctypes.c_void_p)

def sendmmsg(sock, items):
    """items: (payload, sockaddr bytes or None, control bytes or b"")"""
    arr = (mmsghdr * len(items))()
    for i, (payload, addr, ctl) in enumerate(items):
        iovs = (iovec * 1)(iovec(_buf(payload), len(payload)))
        _keep.append(iovs)
        h = arr[i].hdr
        if addr:
            h.name, h.namelen = _buf(addr), len(addr)
        h.iov, h.iovlen = iovs, 1
        if ctl:
            h.control, h.controllen = _buf(ctl), len(ctl)
    n = libc.sendmmsg(sock.fileno(), arr, len(items), 0)
    if n < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return n, [arr[i].len for i in range(len(items))]

def recvmmsg(sock, n, ctl=256):
    arr = (mmsghdr * n)()
    bufs = []
    for i in range(n):
        pb, cb, nb = (ctypes.create_string_buffer(2048), ctypes.create_string_buffer(ctl),
                      ctypes.create_string_buffer(128))
        iovs = (iovec * 1)(iovec(ctypes.cast(pb, ctypes.c_void_p), 2048))
        bufs.append((pb, cb, nb, iovs))
        h = arr[i].hdr
        h.name, h.namelen = ctypes.cast(nb, ctypes.c_void_p), 128
        h.iov, h.iovlen = iovs, 1
        h.control, h.controllen = ctypes.cast(cb, ctypes.c_void_p), ctl
    got = libc.recvmmsg(sock.fileno(), arr, n, MSG_WAITFORONE, None)
    if got < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    res = []
    for i in range(got):
        h = arr[i].hdr
        pb, cb = bufs[i][0], bufs[i][1]
        res.append((pb.raw[:arr[i].len], parse_cmsgs(cb.raw[:h.controllen]), h.flags))
    return res
"#;

/// Result of one python run: its output and the `key=value` lines it printed.
struct Py {
    out: RunOutput,
    vals: BTreeMap<String, String>,
}

impl Py {
    #[track_caller]
    fn val(&self, k: &str) -> &str {
        self.vals
            .get(k)
            .unwrap_or_else(|| panic!("script printed no {k}=...:\n{}", self.out))
    }
}

/// Run PRELUDE + `script` under python3 with the emulator preloaded (unless
/// `preload` is false), `KLIPS_EMU_LOG=log` and `vars`, on the host or in `ns`.
fn run_py(
    script: &str,
    log: &EmuLog,
    vars: &[(&str, &str)],
    ns: Option<&Netns>,
    preload: bool,
) -> Py {
    let code = format!("{PRELUDE}\n{script}\nout('done', 1)\n");
    let emu = emulator().display().to_string();
    let (logk, logv) = log.env();
    let mut env: Vec<(&str, &str)> = vec![(logk, &logv)];
    if preload {
        env.push(("LD_PRELOAD", &emu));
    }
    env.extend_from_slice(vars);
    let mut cmd = match ns {
        Some(ns) => ns.command_env(&env, python3()),
        None => {
            let mut c = Command::new(python3());
            for k in ["KLIPS_EMU_ABI", "KLIPS_EMU_MARK", "LD_PRELOAD"] {
                c.env_remove(k);
            }
            c.envs(env.iter().copied());
            c
        }
    };
    cmd.arg("-c").arg(&code);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(
        out.success(),
        "python script failed: {out}\nemulator log:\n{}",
        log.text()
    );
    let vals = out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<BTreeMap<_, _>>();
    let py = Py { out, vals };
    assert_eq!(py.val("done"), "1");
    py
}

fn sends_of(log: &EmuLog, fd: &str) -> Vec<Event> {
    log.find("send", &[("fd", fd)])
}

// ---------------------------------------------------------------------------

#[test]
fn stock_kernel_rejects_saref_options_without_emulator() {
    // The baseline the emulator exists for: on this kernel options 30/31 are
    // unknown and a REFINFO cmsg makes sendmsg fail.
    let log = EmuLog::new();
    run_py(
        r#"
s, r = udp_pair()
expect_errno(errno.ENOPROTOOPT, s.setsockopt, IPPROTO_IP, BINDREF, 1234)
expect_errno(errno.ENOPROTOOPT, s.setsockopt, IPPROTO_IP, REFINFO, 1)
expect_errno(errno.EINVAL, s.sendmsg, [b"x"], [tag(101)], 0, r.getsockname())
nothing_arrives(r)
"#,
        &log,
        &[],
        None,
        false,
    );
    assert!(
        log.events().is_empty(),
        "no emulator, no log: {}",
        log.text()
    );
}

#[test]
fn bindref_set_get_and_einval() {
    let log = EmuLog::new();
    let py = run_py(
        r#"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
out("fd", s.fileno())
assert s.getsockopt(IPPROTO_IP, BINDREF) == 0
s.setsockopt(IPPROTO_IP, BINDREF, 1234)
assert s.getsockopt(IPPROTO_IP, BINDREF) == 1234
assert struct.unpack("i", s.getsockopt(IPPROTO_IP, BINDREF, 4))[0] == 1234
expect_errno(errno.EINVAL, s.setsockopt, IPPROTO_IP, BINDREF, 40000)
expect_errno(errno.EINVAL, s.setsockopt, IPPROTO_IP, BINDREF, 32768)
expect_errno(errno.EINVAL, s.setsockopt, IPPROTO_IP, BINDREF, -1)
expect_errno(errno.EINVAL, s.setsockopt, IPPROTO_IP, BINDREF, b"\x01\x00")
expect_errno(errno.EINVAL, s.setsockopt, IPPROTO_IP, BINDREF, struct.pack("q", 5))
assert s.getsockopt(IPPROTO_IP, BINDREF) == 1234, "failed sets change nothing"
s.setsockopt(IPPROTO_IP, BINDREF, 32767)
assert s.getsockopt(IPPROTO_IP, BINDREF) == 32767
s.setsockopt(IPPROTO_IP, BINDREF, 0)
assert s.getsockopt(IPPROTO_IP, BINDREF) == 0

assert s.getsockopt(IPPROTO_IP, REFINFO) == 0
s.setsockopt(IPPROTO_IP, REFINFO, 1)
assert s.getsockopt(IPPROTO_IP, REFINFO) == 1
expect_errno(errno.EINVAL, s.setsockopt, IPPROTO_IP, REFINFO, b"\x01")

t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(IPPROTO_IP, BINDREF, 7)
assert t.getsockopt(IPPROTO_IP, BINDREF) == 7
out("tcp_fd", t.fileno())

s6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s6.setsockopt(IPPROTO_IP, BINDREF, 66)
assert s6.getsockopt(IPPROTO_IP, BINDREF) == 66
out("v6_fd", s6.fileno())

# not an inet socket: the kernel answers (AF_UNIX: EOPNOTSUPP)
u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
try:
    u.setsockopt(IPPROTO_IP, BINDREF, 5)
    raise AssertionError("AF_UNIX accepted BINDREF")
except OSError as e:
    out("unix_errno", e.errno)
out("unix_fd", u.fileno())

# dup()ed fds share the socket; close() forgets it
d = s.dup()
d.setsockopt(IPPROTO_IP, BINDREF, 99)
assert s.getsockopt(IPPROTO_IP, BINDREF) == 99
assert d.getsockopt(IPPROTO_IP, BINDREF) == 99
os.dup2(t.fileno(), 200)
assert socket.socket(fileno=200).getsockopt(IPPROTO_IP, BINDREF) == 7
fd = s.fileno()
s.close(); d.close()
n = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
assert n.fileno() == fd, (n.fileno(), fd)
assert n.getsockopt(IPPROTO_IP, BINDREF) == 0, "a new socket on a reused fd starts unbound"
"#,
        &log,
        &[],
        None,
        true,
    );
    let fd = py.val("fd");
    let values: Vec<(String, String)> = log
        .find("setsockopt", &[("fd", fd)])
        .iter()
        .map(|e| (e.field("opt").to_string(), e.field("value").to_string()))
        .collect();
    let want: Vec<(String, String)> = [
        ("bindref", "1234"),
        ("bindref", "32767"),
        ("bindref", "0"),
        ("refinfo", "1"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(values, want, "log:\n{}", log.text());
    assert_eq!(
        log.find(
            "setsockopt",
            &[("fd", py.val("v6_fd")), ("opt", "bindref"), ("value", "66")]
        )
        .len(),
        1
    );
    assert_eq!(
        log.find("setsockopt", &[("fd", py.val("unix_fd"))]).len(),
        0,
        "AF_UNIX sockets are not emulated"
    );
    assert_eq!(
        py.val("unix_errno"),
        "95",
        "AF_UNIX: the kernel's EOPNOTSUPP"
    );
    let e = &log.find("setsockopt", &[("fd", py.val("tcp_fd"))])[0];
    assert_eq!(
        e.line,
        format!(
            "setsockopt pid={} fd={} opt=bindref value=7",
            e.field("pid"),
            py.val("tcp_fd")
        )
    );
}

#[test]
fn refinfo_cmsg_is_validated_stripped_and_logged() {
    let log = EmuLog::new();
    let py = run_py(
        r#"
s, r = udp_pair()
out("fd", s.fileno())
out("port", r.getsockname()[1])
r.setsockopt(IPPROTO_IP, IP_RECVTTL, 1)
# a valid tag: stripped, so the stock kernel takes the datagram
assert s.sendmsg([b"hello"], [tag(101)], 0, r.getsockname()) == 5
data, anc, flags, _ = r.recvmsg(2048, 256)
assert data == b"hello", data
assert refinfo_of(anc) is None, anc
# wrong lengths, and two tags: EINVAL, nothing sent
expect_errno(errno.EINVAL, s.sendmsg, [b"bad8"], [tag(101, "II")], 0, r.getsockname())
expect_errno(errno.EINVAL, s.sendmsg, [b"bad2"], [tag(101, "H")], 0, r.getsockname())
expect_errno(errno.EINVAL, s.sendmsg, [b"two"], [tag(1), tag(2)], 0, r.getsockname())
nothing_arrives(r)
# other cmsgs are kept, before and after the tag
s.sendmsg([b"ttl-after"], [tag(102), (IPPROTO_IP, IP_TTL, struct.pack("i", 7))], 0, r.getsockname())
data, anc, flags, _ = r.recvmsg(2048, 256)
assert data == b"ttl-after"
assert (IPPROTO_IP, IP_TTL, struct.pack("i", 7)) in anc, anc
s.sendmsg([b"ttl-before"], [(IPPROTO_IP, IP_TTL, struct.pack("i", 9)), tag(103)], 0, r.getsockname())
data, anc, flags, _ = r.recvmsg(2048, 256)
assert data == b"ttl-before"
assert (IPPROTO_IP, IP_TTL, struct.pack("i", 9)) in anc, anc
# a tag on a connected socket, and a plain sendto
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.connect(r.getsockname())
out("cfd", c.fileno())
c.sendmsg([b"conn"], [tag(104)])
assert r.recv(100) == b"conn"
s.sendto(b"plain", r.getsockname())
assert r.recv(100) == b"plain"
"#,
        &log,
        &[],
        None,
        true,
    );
    let fd = py.val("fd");
    let port = py.val("port");
    let sends = sends_of(&log, fd);
    let tags: Vec<&str> = sends.iter().map(|e| e.field("refinfo")).collect();
    assert_eq!(tags, ["101", "102", "103", "none"], "log:\n{}", log.text());
    let first = &sends[0];
    assert_eq!(
        first.line,
        format!(
            "send pid={} fd={fd} call=sendmsg proto=udp dst=127.0.0.1:{port} bindref=0 refinfo=101 len=5",
            first.field("pid")
        )
    );
    assert_eq!(sends[3].field("call"), "sendto");
    let c = sends_of(&log, py.val("cfd"));
    assert_eq!(c.len(), 1);
    assert!(c[0].matches(&[("dst", "connected"), ("refinfo", "104"), ("len", "4")]));
    let connects = log.find("connect", &[("fd", py.val("cfd"))]);
    assert_eq!(connects.len(), 1);
    assert!(connects[0].matches(&[
        ("proto", "udp"),
        ("dst", &format!("127.0.0.1:{port}")),
        ("bindref", "0")
    ]));
}

#[test]
fn sendmmsg_mixed_tagged_and_untagged() {
    let log = EmuLog::new();
    let py = run_py(
        r#"
s, r = udp_pair()
out("fd", s.fileno())
r.setsockopt(IPPROTO_IP, IP_RECVTTL, 1)
dst = sockaddr_in("127.0.0.1", r.getsockname()[1])
n, lens = sendmmsg(s, [
    (b"m-seven", dst, cmsg(IPPROTO_IP, REFINFO, struct.pack("I", 7))),
    (b"m-plain", dst, b""),
    (b"m-nine", dst, cmsg(IPPROTO_IP, IP_TTL, struct.pack("i", 5)) + cmsg(IPPROTO_IP, REFINFO, struct.pack("I", 9))),
])
assert n == 3 and lens == [7, 7, 6], (n, lens)
got = [r.recvmsg(100, 256) for _ in range(3)]
assert [g[0] for g in got] == [b"m-seven", b"m-plain", b"m-nine"], got
assert (IPPROTO_IP, IP_TTL, struct.pack("i", 5)) in got[2][1], got[2]
# the second message is invalid: only the first goes
n, lens = sendmmsg(s, [
    (b"ok-one", dst, cmsg(IPPROTO_IP, REFINFO, struct.pack("I", 1))),
    (b"bad", dst, cmsg(IPPROTO_IP, REFINFO, struct.pack("II", 2, 0))),
    (b"never", dst, b""),
])
assert n == 1, n
assert r.recv(100) == b"ok-one"
nothing_arrives(r)
# the first message is invalid: the call fails
expect_errno(errno.EINVAL, sendmmsg, s, [(b"bad", dst, cmsg(IPPROTO_IP, REFINFO, struct.pack("H", 2)))])
nothing_arrives(r)
"#,
        &log,
        &[],
        None,
        true,
    );
    let sends = sends_of(&log, py.val("fd"));
    let got: Vec<(&str, &str, &str)> = sends
        .iter()
        .map(|e| (e.field("call"), e.field("refinfo"), e.field("len")))
        .collect();
    assert_eq!(
        got,
        [
            ("sendmmsg", "7", "7"),
            ("sendmmsg", "none", "7"),
            ("sendmmsg", "9", "6"),
            ("sendmmsg", "1", "6")
        ],
        "log:\n{}",
        log.text()
    );
    assert!(sends
        .iter()
        .all(|e| e.field("dst").starts_with("127.0.0.1:")));
}

#[test]
fn tcp_connect_accept_inheritance_and_stream_writes() {
    let log = EmuLog::new();
    let py = run_py(
        r#"
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen()
l.setsockopt(IPPROTO_IP, BINDREF, 77)
out("lfd", l.fileno())
out("port", l.getsockname()[1])
c = socket.socket()
c.setsockopt(IPPROTO_IP, BINDREF, 42)
out("cfd", c.fileno())
c.connect(l.getsockname())
a, _ = l.accept()
out("afd", a.fileno())
assert a.getsockopt(IPPROTO_IP, BINDREF) == 77, "accepted sockets inherit the listener's SAref"
assert a.getsockopt(IPPROTO_IP, REFINFO) == 0
c.send(b"abc")
os.write(c.fileno(), b"de")
os.writev(c.fileno(), [b"f", b"gh"])
c.sendmsg([b"i"])
want = b"abcdefghi"
got = b""
while len(got) < len(want):
    got += a.recv(100)
assert got == want, got
# AF_UNSPEC connect on a UDP socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect(("127.0.0.1", 9))
assert libc.connect(u.fileno(), struct.pack("<H", 0) + b"\0" * 14, 16) == 0
out("ufd", u.fileno())
"#,
        &log,
        &[],
        None,
        true,
    );
    let port = py.val("port");
    let con = log.find("connect", &[("fd", py.val("cfd"))]);
    assert_eq!(con.len(), 1, "log:\n{}", log.text());
    assert_eq!(
        con[0].line,
        format!(
            "connect pid={} fd={} proto=tcp dst=127.0.0.1:{port} bindref=42",
            con[0].field("pid"),
            py.val("cfd")
        )
    );
    let acc = log.of_kind("accept");
    assert_eq!(acc.len(), 1);
    assert!(acc[0].matches(&[
        ("fd", py.val("afd")),
        ("listen", py.val("lfd")),
        ("bindref", "77")
    ]));
    assert!(acc[0].field("src").starts_with("127.0.0.1:"));
    let csends = sends_of(&log, py.val("cfd"));
    let calls: Vec<(&str, &str, &str)> = csends
        .iter()
        .map(|e| (e.field("call"), e.field("proto"), e.field("len")))
        .collect();
    assert_eq!(
        calls,
        [
            ("send", "tcp", "3"),
            ("write", "tcp", "2"),
            ("writev", "tcp", "3"),
            ("sendmsg", "tcp", "1")
        ]
    );
    assert!(sends_of(&log, py.val("cfd")).iter().all(|e| e.matches(&[
        ("dst", "connected"),
        ("bindref", "42"),
        ("refinfo", "none")
    ])));
    let recvs = log.find("recv", &[("fd", py.val("afd"))]);
    assert!(!recvs.is_empty());
    assert!(recvs.iter().all(|e| e.matches(&[
        ("call", "recv"),
        ("src", "connected"),
        ("refhim", "none")
    ])));
    let u: Vec<String> = log
        .find("connect", &[("fd", py.val("ufd"))])
        .iter()
        .map(|e| e.field("dst").to_string())
        .collect();
    assert_eq!(u, ["127.0.0.1:9", "unspec"]);
    assert!(log
        .find("connect", &[("fd", py.val("ufd"))])
        .iter()
        .all(|e| e.get("proto") == Some("udp")));
}

#[test]
fn legacy_abi_22() {
    let log = EmuLog::new();
    let py = run_py(
        r#"
assert BINDREF == 23 and REFINFO == 22
s, r = udp_pair()
out("fd", s.fileno())
s.setsockopt(IPPROTO_IP, 23, 1234)
assert s.getsockopt(IPPROTO_IP, 23) == 1234
expect_errno(errno.EINVAL, s.setsockopt, IPPROTO_IP, 23, 40000)
s.setsockopt(IPPROTO_IP, 22, 1)
assert s.getsockopt(IPPROTO_IP, 22) == 1
# the current numbers now reach the kernel
expect_errno(errno.ENOPROTOOPT, s.setsockopt, IPPROTO_IP, 31, 5)
s.sendmsg([b"legacy"], [tag(55, typ=22)], 0, r.getsockname())
assert r.recv(100) == b"legacy"
expect_errno(errno.EINVAL, s.sendmsg, [b"new"], [tag(55, typ=30)], 0, r.getsockname())
expect_errno(errno.EINVAL, s.sendmsg, [b"bad"], [tag(55, "Q", typ=22)], 0, r.getsockname())
nothing_arrives(r)
"#,
        &log,
        &[("KLIPS_EMU_ABI", "22"), ("T_ABI", "22")],
        None,
        true,
    );
    let fd = py.val("fd");
    let opts: Vec<String> = log
        .find("setsockopt", &[("fd", fd)])
        .iter()
        .map(|e| format!("{}={}", e.field("opt"), e.field("value")))
        .collect();
    assert_eq!(opts, ["bindref=1234", "refinfo=1"]);
    let sends = sends_of(&log, fd);
    assert_eq!(sends.len(), 1, "log:\n{}", log.text());
    assert!(sends[0].matches(&[("refinfo", "55"), ("bindref", "1234"), ("len", "6")]));
}

#[test]
fn log_lines_never_interleave() {
    let log = EmuLog::new();
    run_py(
        r#"
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.bind(("127.0.0.1", 0))
dst = r.getsockname()
def worker(i):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(IPPROTO_IP, BINDREF, i + 1)
    for k in range(100):
        s.sendmsg([b"x" * (k % 7 + 1)], [tag(1000 + i)], 0, dst)
pids = []
for p in range(2):
    pid = os.fork()
    if pid == 0:
        ts = [threading.Thread(target=worker, args=(p * 10 + i,)) for i in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        os._exit(0)
    pids.append(pid)
for pid in pids:
    _, st = os.waitpid(pid, 0)
    assert st == 0
"#,
        &log,
        &[],
        None,
        true,
    );
    let sends = log.of_kind("send");
    assert_eq!(sends.len(), 800, "log:\n{}", log.text());
    for e in &sends {
        let b: i64 = e.num("bindref").unwrap();
        let t: i64 = e.num("refinfo").unwrap();
        assert_eq!(t, 1000 + b - 1, "{}", e.line);
        assert_eq!(e.fields.len(), 8, "{}", e.line);
    }
    assert_eq!(log.of_kind("setsockopt").len(), 8);
}

// ---------------------------------------------------------------------------
// KLIPS_EMU_MARK=1: inside a namespace of our own (root)

#[test]
fn mark_mode_carries_sarefs_as_marks() {
    require_root!();
    let ns = Netns::new();
    let log = EmuLog::new();
    let py = run_py(
        r#"
# a receiver that asked for SO_RCVMARK itself sees the raw marks
s, r = udp_pair()
out("sfd", s.fileno())
r.setsockopt(SOL_SOCKET, SO_RCVMARK, 1)
assert r.getsockopt(SOL_SOCKET, SO_RCVMARK) == 1
dst = r.getsockname()
s.sendmsg([b"t101"], [tag(101)], 0, dst)
data, anc, flags, _ = r.recvmsg(100, 256)
assert data == b"t101" and mark_of(anc) == 0x80650000, anc
assert refinfo_of(anc) is None, "no REFINFO cmsg without the REFINFO flag"
s.sendto(b"plain", dst)
data, anc, flags, _ = r.recvmsg(100, 256)
assert mark_of(anc) == 0, anc
# a bound socket gets SO_MARK = mast(saref); 0 clears it; a tag overrides it
b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
b.setsockopt(IPPROTO_IP, BINDREF, 5)
assert sock_mark(b) == mast(5) == 0x80050000
b.sendto(b"b5", dst)
assert mark_of(r.recvmsg(100, 256)[1]) == 0x80050000
b.sendmsg([b"b5t9"], [tag(9)], 0, dst)
assert mark_of(r.recvmsg(100, 256)[1]) == mast(9)
b.setsockopt(IPPROTO_IP, BINDREF, 0)
assert sock_mark(b) == 0
b.sendto(b"b0", dst)
assert mark_of(r.recvmsg(100, 256)[1]) == 0
# sendmmsg: one mark per message
sa = sockaddr_in("127.0.0.1", dst[1])
n, _ = sendmmsg(s, [
    (b"m7", sa, cmsg(IPPROTO_IP, REFINFO, struct.pack("I", 7))),
    (b"m0", sa, b""),
    (b"m9", sa, cmsg(IPPROTO_IP, REFINFO, struct.pack("I", 9))),
])
assert n == 3
assert [mark_of(r.recvmsg(100, 256)[1]) for _ in range(3)] == [mast(7), 0, mast(9)]

# a REFINFO receiver gets the KLIPS receive cmsg {refme=0, refhim}
q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
q.bind(("127.0.0.1", 0))
q.settimeout(2)
out("qfd", q.fileno())
q.setsockopt(IPPROTO_IP, REFINFO, 1)
assert q.getsockopt(IPPROTO_IP, REFINFO) == 1
assert q.getsockopt(SOL_SOCKET, SO_RCVMARK) == 0, "the emulator's SO_RCVMARK is hidden"
qa = q.getsockname()
s.sendmsg([b"to-q"], [tag(101)], 0, qa)
data, anc, flags, _ = q.recvmsg(100, 256)
assert data == b"to-q"
assert anc == [(IPPROTO_IP, REFINFO, struct.pack("II", 0, 101))], anc
s.sendto(b"untagged", qa)
data, anc, flags, _ = q.recvmsg(100, 256)
assert anc == [], anc
# with other cmsgs
q.setsockopt(IPPROTO_IP, IP_RECVTTL, 1)
s.sendmsg([b"ttl"], [tag(102)], 0, qa)
data, anc, flags, _ = q.recvmsg(100, 256)
assert refinfo_of(anc) == (0, 102), anc
assert [a[:2] for a in anc] == [(IPPROTO_IP, REFINFO), (IPPROTO_IP, IP_TTL)], anc
q.setsockopt(IPPROTO_IP, IP_RECVTTL, 0)
# no room: MSG_CTRUNC
s.sendmsg([b"small"], [tag(103)], 0, qa)
data, anc, flags, _ = q.recvmsg(100, 16)
assert data == b"small" and flags & socket.MSG_CTRUNC, (anc, flags)
s.sendmsg([b"none"], [tag(104)], 0, qa)
data, anc, flags, _ = q.recvmsg(100)
assert data == b"none" and anc == [] and flags & socket.MSG_CTRUNC, (anc, flags)
# recvfrom / recv: no control buffer, but the log knows
s.sendmsg([b"rf"], [tag(77)], 0, qa)
assert q.recvfrom(100)[0] == b"rf"
s.sendmsg([b"rv"], [tag(78)], 0, qa)
assert q.recv(100) == b"rv"
# recvmmsg
s.sendmsg([b"mm11"], [tag(11)], 0, qa)
s.sendmsg([b"mm12"], [tag(12)], 0, qa)
got = recvmmsg(q, 2)
assert [g[0] for g in got] == [b"mm11", b"mm12"], got
assert [g[1] for g in got] == [[(IPPROTO_IP, REFINFO, struct.pack("II", 0, k))] for k in (11, 12)], got
# the application wants SO_RCVMARK too: it gets both cmsgs
q.setsockopt(SOL_SOCKET, SO_RCVMARK, 1)
assert q.getsockopt(SOL_SOCKET, SO_RCVMARK) == 1
s.sendmsg([b"both"], [tag(105)], 0, qa)
data, anc, flags, _ = q.recvmsg(100, 256)
assert anc == [(SOL_SOCKET, SO_MARK, struct.pack("I", mast(105))),
               (IPPROTO_IP, REFINFO, struct.pack("II", 0, 105))], anc
# it turns SO_RCVMARK off again: REFINFO still works
q.setsockopt(SOL_SOCKET, SO_RCVMARK, 0)
assert q.getsockopt(SOL_SOCKET, SO_RCVMARK) == 0
s.sendmsg([b"again"], [tag(106)], 0, qa)
data, anc, flags, _ = q.recvmsg(100, 256)
assert anc == [(IPPROTO_IP, REFINFO, struct.pack("II", 0, 106))], anc
# REFINFO off: no more cmsgs
q.setsockopt(IPPROTO_IP, REFINFO, 0)
s.sendmsg([b"off"], [tag(107)], 0, qa)
data, anc, flags, _ = q.recvmsg(100, 256)
assert anc == [], anc

# IPv6
s6, r6 = udp_pair(socket.AF_INET6, "::1")
r6.setsockopt(SOL_SOCKET, SO_RCVMARK, 1)
s6.sendmsg([b"v6"], [tag(33)], 0, r6.getsockname())
assert mark_of(r6.recvmsg(100, 256)[1]) == mast(33)
q6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
q6.bind(("::1", 0))
q6.settimeout(2)
q6.setsockopt(IPPROTO_IP, REFINFO, 1)
b6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
b6.setsockopt(IPPROTO_IP, BINDREF, 34)
b6.sendto(b"v6b", q6.getsockname())
data, anc, flags, _ = q6.recvmsg(100, 256)
assert anc == [(IPPROTO_IP, REFINFO, struct.pack("II", 0, 34))], anc
out("q6fd", q6.fileno())

# TCP: the accepted socket inherits the SAref, and its mark
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen()
l.setsockopt(IPPROTO_IP, BINDREF, 77)
c = socket.socket()
c.connect(l.getsockname())
a, _ = l.accept()
assert a.getsockopt(IPPROTO_IP, BINDREF) == 77
assert sock_mark(a) == mast(77)
"#,
        &log,
        &[("KLIPS_EMU_MARK", "1")],
        Some(&ns),
        true,
    );
    let qfd = py.val("qfd");
    let recvs: Vec<(String, String)> = log
        .find("recv", &[("fd", qfd)])
        .iter()
        .map(|e| (e.field("call").to_string(), e.field("refhim").to_string()))
        .collect();
    let want: Vec<(String, String)> = [
        ("recvmsg", "101"),
        ("recvmsg", "none"),
        ("recvmsg", "102"),
        ("recvmsg", "103"),
        ("recvmsg", "104"),
        ("recvfrom", "77"),
        ("recv", "78"),
        ("recvmmsg", "11"),
        ("recvmmsg", "12"),
        ("recvmsg", "105"),
        ("recvmsg", "106"),
        ("recvmsg", "none"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(recvs, want, "log:\n{}", log.text());
    let r = &log.find("recv", &[("fd", qfd)])[0];
    assert!(r.field("src").starts_with("127.0.0.1:"), "{}", r.line);
    let r6 = log.find("recv", &[("fd", py.val("q6fd"))]);
    assert_eq!(r6.len(), 1);
    assert!(r6[0].field("src").starts_with("[::1]:"), "{}", r6[0].line);
    assert_eq!(r6[0].field("refhim"), "34");
    assert_eq!(
        log.find("send", &[("fd", py.val("sfd")), ("call", "sendmmsg")])
            .len(),
        3
    );
}

#[test]
fn mark_mode_between_two_namespaces() {
    // Real packets across a veth: the mark survives only within a namespace
    // (skb->mark is scrubbed when a packet crosses into another netns), so
    // the SA choice is checked on the sending side with a raw socket there.
    require_root!();
    let a = Netns::new();
    let b = Netns::new();
    a.veth_to(&b, "va", "192.0.2.1/24", "vb", "192.0.2.2/24");
    let log = EmuLog::new();
    // In namespace b, a plain UDP echo-less sink.
    let mut sink = b.command(python3());
    sink.arg("-c").arg(
        r#"
import socket, sys
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.bind(("192.0.2.2", 4500))
r.settimeout(10)
print(r.recvfrom(100)[0].decode(), flush=True)
"#,
    );
    let sink_out = std::thread::spawn(move || run_with_timeout(&mut sink, Duration::from_secs(20)));
    // wait until the sink is bound
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(
        &b.command("ss")
            .args(["-Hlun", "sport", "=", ":4500"])
            .output()
            .unwrap()
            .stdout,
    )
    .contains("4500")
    {
        assert!(std::time::Instant::now() < deadline, "the sink never bound");
        std::thread::sleep(Duration::from_millis(20));
    }
    let py = run_py(
        r#"
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(IPPROTO_IP, BINDREF, 21)
assert sock_mark(s) == mast(21)
s.sendmsg([b"crossed"], [tag(22)], 0, ("192.0.2.2", 4500))
out("fd", s.fileno())
"#,
        &log,
        &[("KLIPS_EMU_MARK", "1")],
        Some(&a),
        true,
    );
    let out = sink_out.join().unwrap();
    assert!(out.success(), "sink: {out}");
    assert_eq!(out.stdout.trim(), "crossed");
    let sends = sends_of(&log, py.val("fd"));
    assert_eq!(sends.len(), 1);
    assert!(sends[0].matches(&[
        ("dst", "192.0.2.2:4500"),
        ("bindref", "21"),
        ("refinfo", "22")
    ]));
}

#[test]
fn bad_input_gives_errors_not_crashes() {
    let dir = common::TempDir::new("klips-emu-badinput");
    let bin = dir.join("badinput");
    let src = common::source_dir().join("tests/emu/badinput.c");
    let cc = run_with_timeout(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&bin)
            .arg(&src),
        Duration::from_secs(120),
    );
    cc.assert_success();
    let log = EmuLog::new();
    let (k, v) = log.env();
    let out = run_with_timeout(
        Command::new(&bin)
            .env("LD_PRELOAD", emulator())
            .env(k, v)
            .env_remove("KLIPS_EMU_ABI")
            .env_remove("KLIPS_EMU_MARK"),
        Duration::from_secs(30),
    );
    assert!(
        out.success() && !out.stdout.contains("FAIL"),
        "{out}\nlog:\n{}",
        log.text()
    );
    assert!(out.stdout.lines().filter(|l| l.starts_with("ok ")).count() >= 30);
    // Every line the emulator wrote is well formed.
    assert!(!log.events().is_empty());
}
