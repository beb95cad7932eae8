//! The catalogue of bad inputs (docs/bad-inputs.md), one test per section.
//!
//! Every case runs an ordinary program (python3) under the library inside
//! a network namespace the test creates, next to a listener that reports
//! every TCP connection and every UDP datagram it gets, with the mark the
//! datagram arrived with. Each case asserts the exact errno the program
//! sees and the exact log line; each test ends by asserting what the
//! listener got: nothing, or only datagrams carrying the rule's mark.
//! `catalogue_is_documented` keeps the document in step with the tables
//! below.

mod common;

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use common::{emulator, lib_path, python3, run_with_timeout, Netns, RunOutput, TempDir};

const TARGET: &str = "192.0.2.1";
const PORT: &str = "4500";

/// The end of the one line the library logs when it cannot know what must
/// be protected.
const REFUSED: &str =
    ": every inet connect and send is refused with EACCES (LDSAREF_ON_ERROR=fail)";
/// The end of the line it logs when a matched rule cannot be applied.
const NOT_SENT: &str =
    "; the call fails and nothing is sent (LDSAREF_ON_ERROR=fail; LDSAREF_ON_ERROR=warn sends without it)";

/// Every TCP connection and UDP datagram reaching TARGET:PORT, one line
/// each, until its standard input closes. Datagrams are reported with
/// their payload and the mark they arrived with (`SO_RCVMARK`).
const LISTENER: &str = r#"
import os, select, socket, struct, sys
addr, port = sys.argv[1], int(sys.argv[2])
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind((addr, port))
t.listen(64)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.setsockopt(socket.SOL_SOCKET, 75, 1)
u.bind((addr, port))
print("ready", flush=True)
while True:
    r, _, _ = select.select([t, u, 0], [], [])
    if t in r:
        c, _ = t.accept()
        print("tcp", flush=True)
        c.close()
    if u in r:
        data, anc, _, _ = u.recvmsg(4096, 64)
        marks = [struct.unpack("=I", d[:4])[0] for l, ty, d in anc if (l, ty) == (socket.SOL_SOCKET, 36)]
        print("udp", data.decode(errors="replace"), "mark=%#x" % marks[0] if marks else "mark=none", flush=True)
    if 0 in r and not os.read(0, 1):
        break
"#;

/// An ordinary client: one TCP connect, one UDP sendto (payload LABEL).
const CLIENT: &str = r#"
import socket, sys
host, port, label = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    t.connect((host, port))
    print("tcp ok")
except OSError as e:
    print("tcp errno", e.errno)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    u.sendto(label.encode(), (host, port))
    print("udp ok")
except OSError as e:
    print("udp errno", e.errno)
"#;

/// `sendmsg` through libc (so through the library's hook) with a control
/// buffer no well-behaved program would build. Prints `CASE ok` or
/// `CASE errno N`; the datagram's payload is CASE.
const HOSTILE_SENDMSG: &str = r#"
import ctypes, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.POINTER(iovec)), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]
host, port, case = sys.argv[1], int(sys.argv[2]), sys.argv[3]
HDR = 16
def cm(level, ty, data, length=None):
    b = struct.pack("=Qii", HDR + len(data) if length is None else length, level, ty) + data
    return b + b"\0" * (-len(b) % 8)
tos = struct.pack("=i", 0x28)
cases = {
    "cmsg_len_0": (cm(0, 1, tos, 0), None),
    "cmsg_len_8": (cm(0, 1, tos, 8), None),
    "cmsg_len_1000": (cm(0, 1, tos, 1000), None),
    "controllen_1g": (cm(0, 1, tos), 1 << 30),
    "controllen_10": (b"\x01" * 10, None),
    "own_mark_len_2": (cm(1, 36, b"\x07\x00"), None),
    "own_refinfo_len_2": (cm(0, 30, b"\x07\x00"), None),
    "cmsgs_50": (cm(0, 1, tos) * 50, None),
    "cmsgs_41": (cm(0, 1, tos) * 41, None),
}
ctl, clen = cases[case]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sa = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton(host) + b"\0" * 8
name = ctypes.create_string_buffer(sa, len(sa))
payload = ctypes.create_string_buffer(case.encode(), len(case))
iov = iovec(ctypes.cast(payload, ctypes.c_void_p), len(case))
control = ctypes.create_string_buffer(ctl, len(ctl))
m = msghdr(ctypes.cast(name, ctypes.c_void_p), len(sa), ctypes.pointer(iov), 1,
           ctypes.cast(control, ctypes.c_void_p), len(ctl) if clen is None else clen, 0)
r = libc.sendmsg(s.fileno(), ctypes.byref(m), 0)
print(case, "ok" if r >= 0 else "errno %d" % ctypes.get_errno())
"#;

/// How the program is started inside the namespace.
#[derive(Clone, Copy)]
enum Wrap {
    Plain,
    /// `setpriv --reuid=nobody --regid=nogroup --clear-groups`.
    Nobody,
    /// `capsh --drop=CAPS`: root without these capabilities.
    DropCaps(&'static str),
}

struct Bed {
    ns: Netns,
    dir: TempDir,
    listener: Child,
    stdin: Option<ChildStdin>,
}

impl Bed {
    fn new() -> Bed {
        let ns = Netns::new();
        ns.add_addr("lo", &format!("{TARGET}/32"));
        let dir = TempDir::new("bad-inputs");
        for (name, code) in [
            ("listener.py", LISTENER),
            ("client.py", CLIENT),
            ("sendmsg.py", HOSTILE_SENDMSG),
        ] {
            dir.write(name, code);
        }
        let mut listener = ns
            .command(python3())
            .arg(dir.join("listener.py"))
            .args([TARGET, PORT])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the listener");
        let mut line = String::new();
        let mut out = BufReader::new(listener.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        listener.stdout = Some(out.into_inner());
        let stdin = listener.stdin.take();
        Bed {
            ns,
            dir,
            listener,
            stdin,
        }
    }

    /// Runs `script ARGS` with python3 in the namespace, under the library
    /// (or `preload`) with `env` and nothing else of ldsaref's settings.
    fn run(
        &self,
        wrap: Wrap,
        preload: Option<&str>,
        env: &[(&str, &OsStr)],
        script: &str,
        args: &[&str],
    ) -> RunOutput {
        let lib = lib_path().display().to_string();
        let mut argv: Vec<OsString> = vec!["/usr/bin/env".into()];
        argv.push(format!("LD_PRELOAD={}", preload.unwrap_or(&lib)).into());
        for (k, v) in env {
            let mut kv = OsString::from(format!("{k}="));
            kv.push(v);
            argv.push(kv);
        }
        argv.push(python3().into());
        argv.push(self.dir.join(script).into());
        argv.extend([TARGET, PORT].iter().chain(args).map(OsString::from));
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.ns.name()]);
        match wrap {
            Wrap::Plain => {}
            Wrap::Nobody => {
                c.args([
                    "setpriv",
                    "--reuid=nobody",
                    "--regid=nogroup",
                    "--clear-groups",
                ]);
            }
            Wrap::DropCaps(caps) => {
                c.args(["capsh", &format!("--drop={caps}"), "--", "-c"]);
                c.arg("exec \"$0\" \"$@\"");
            }
        }
        c.args(argv);
        common::clear_ldsaref_env(&mut c).env_remove("RUST_LOG");
        run_with_timeout(&mut c, Duration::from_secs(120))
    }

    fn client(&self, env: &[(&str, &OsStr)], label: &str) -> RunOutput {
        self.run(Wrap::Plain, None, env, "client.py", &[label])
    }

    fn rules(&self, name: &str, text: impl AsRef<[u8]>) -> String {
        self.dir.write(name, text).display().to_string()
    }

    /// Stops the listener and returns what reached it.
    fn received(mut self) -> Vec<String> {
        drop(self.stdin.take());
        let mut text = String::new();
        self.listener
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        let _ = self.listener.wait();
        text.lines().map(str::to_owned).collect()
    }
}

/// The library's log lines, without the `ldsaref[PID]: ` prefix.
fn log_lines(out: &RunOutput) -> Vec<String> {
    out.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("ldsaref["))
        .filter_map(|l| l.split_once("]: ").map(|(_, rest)| rest.to_owned()))
        .collect()
}

#[track_caller]
fn assert_refused(out: &RunOutput, errno: i32, line: &str) {
    assert_eq!(
        out.stdout,
        format!("tcp errno {errno}\nudp errno {errno}\n"),
        "{out}"
    );
    assert_eq!(log_lines(out), vec![line.to_owned()], "{out}");
}

/// Malformed rules files: (id, content, message after the file name).
const MALFORMED: &[(&str, &[u8], &str)] = &[
    ("bad-address", b"10.1.0.300/16 saref 5\n", ":1:1: invalid destination \"10.1.0.300/16\" (expected an IP address, a CIDR such as 10.1.0.0/16, or any)"),
    ("host-bits", b"192.0.2.1/24 saref 5\n", ":1:1: host bits set in 192.0.2.1/24: did you mean 192.0.2.0/24?"),
    ("prefix-too-long", b"192.0.2.0/33 saref 5\n", ":1:1: prefix length 33 out of range for IPv4 (0..32)"),
    ("ipv4-mapped", b"::ffff:192.0.2.0/120 saref 5\n", ":1:1: ::ffff:192.0.2.0/120 is IPv4-mapped, and IPv4-mapped destinations are matched as IPv4: write 192.0.2.0/24"),
    ("uppercase-any", b"ANY saref 5\n", ":1:1: invalid destination \"ANY\" (keywords are lowercase: any)"),
    ("no-destination", b"saref 5\n", ":1:1: missing destination before \"saref\" (a rule starts with an address, a CIDR or any)"),
    ("saref-0", b"192.0.2.0/24 saref 0\n", ":1:20: SAref 0 out of range (1..32767)"),
    ("saref-40000", b"192.0.2.0/24 saref 40000\n", ":1:20: SAref 40000 out of range (1..32767)"),
    ("saref-12abc", b"192.0.2.0/24 saref 12abc\n", ":1:20: invalid SAref \"12abc\" (expected a number in 1..32767)"),
    ("saref-nul", b"192.0.2.0/24 saref 5\x00\n", ":1:20: invalid SAref \"5\\0\" (expected a number in 1..32767)"),
    ("missing-action", b"192.0.2.0/24\n", ":1:13: missing action (saref N, mark N[/MASK], dev IFNAME, reflect, pass or deny)"),
    ("unknown-action", b"192.0.2.0/24 sarf 5\n", ":1:14: unknown action \"sarf\" (expected saref, mark, dev, reflect, pass or deny)"),
    ("uppercase-proto", b"192.0.2.0/24 TCP saref 5\n", ":1:14: unknown protocol \"TCP\" (keywords are lowercase: tcp)"),
    ("port-70000", b"192.0.2.0/24 tcp 70000 saref 5\n", ":1:18: port 70000 out of range (1..65535)"),
    ("port-range-reversed", b"192.0.2.0/24 tcp 30-20 saref 5\n", ":1:18: port range 30-20 is reversed"),
    ("mark-mask-0", b"192.0.2.0/24 mark 0x5/0\n", ":1:19: mark mask is 0: no bit of the mark would change"),
    ("mark-outside-mask", b"192.0.2.0/24 mark 0x15/0xf\n", ":1:19: mark value 0x15 has bits outside its mask 0xf"),
    ("dev-name-too-long", b"192.0.2.0/24 dev abcdefghijklmnopq\n", ":1:18: interface name \"abcdefghijklmnopq\" is 17 bytes long (at most 15)"),
    ("reflect-tcp", b"192.0.2.0/24 tcp 53 reflect\n", ":1:21: reflect applies to UDP only, not tcp"),
    ("trailing-junk", b"192.0.2.0/24 saref 5 extra\n", ":1:22: unexpected \"extra\" after the action"),
    ("header-blank", b"[a b]\n", ":1:3: section header: invalid character ' ' in profile name \"a b\" (allowed: A-Z a-z 0-9 _ . -)"),
    ("header-unclosed", b"[client1\n", ":1:9: section header: missing \"]\""),
    ("tie", b"192.0.2.0/24 saref 5\n192.0.2.0/24 mark 0x5\n", ":2:1: rule ties with RULES:1 (same destination, port and proto): only one can apply"),
    ("invalid-utf8", b"192.0.2.0/24 saref 5\n\xff\xfe\n", ":2:1: invalid UTF-8 (a rules file must be UTF-8 text)"),
];

#[test]
fn malformed_rules_refuse_every_inet_call() {
    require_root!();
    let bed = Bed::new();
    for (id, text, message) in MALFORMED {
        let path = bed.rules(&format!("{id}.rules"), text);
        let out = bed.client(&[("LDSAREF_RULES", OsStr::new(&path))], id);
        let message = message.replace("RULES", &path);
        assert_refused(&out, 13, &format!("error: {path}{message}{REFUSED}"));
    }
    assert_eq!(bed.received(), Vec::<String>::new());
}

/// Bad environment values: (id, variable, value, reason logged).
const ENVIRONMENT: &[(&str, &str, &[u8], &str)] = &[
    ("saref-empty", "IPSEC_SAREF", b"", "IPSEC_SAREF=\"\": empty value: set it to a number in 1..32767, or unset it"),
    ("saref-zero", "IPSEC_SAREF", b"0", "IPSEC_SAREF=\"0\": SAref must be a number in 1..32767"),
    ("saref-40000", "IPSEC_SAREF", b"40000", "IPSEC_SAREF=\"40000\": SAref must be a number in 1..32767"),
    ("saref-huge", "IPSEC_SAREF", b"99999999999999999999", "IPSEC_SAREF=\"99999999999999999999\": SAref must be a number in 1..32767"),
    ("saref-12abc", "IPSEC_SAREF", b"12abc", "IPSEC_SAREF=\"12abc\": SAref must be a number in 1..32767"),
    ("saref-negative", "IPSEC_SAREF", b"-1", "IPSEC_SAREF=\"-1\": SAref must be a number in 1..32767"),
    ("saref-blank", "IPSEC_SAREF", b" 5", "IPSEC_SAREF=\" 5\": SAref must be a number in 1..32767"),
    ("saref-hex", "IPSEC_SAREF", b"0x10", "IPSEC_SAREF=\"0x10\": SAref must be a number in 1..32767"),
    ("saref-non-utf8", "IPSEC_SAREF", b"\xff", "IPSEC_SAREF=\"\u{fffd}\": SAref must be a number in 1..32767"),
    ("rules-empty", "LDSAREF_RULES", b"", "LDSAREF_RULES=\"\": empty value: set it to an absolute path, or unset it"),
    ("rules-relative", "LDSAREF_RULES", b"etc/rules", "LDSAREF_RULES=\"etc/rules\": must be an absolute path (the library never loads anything relative to the current directory)"),
    ("rules-missing", "LDSAREF_RULES", b"/nonexistent/rules", "/nonexistent/rules: cannot read the rules: No such file or directory (os error 2)"),
    ("mode-uppercase", "LDSAREF_MODE", b"KLIPS", "LDSAREF_MODE=\"KLIPS\": must be klips or nfmark"),
    ("abi-31", "LDSAREF_KLIPS_ABI", b"31", "LDSAREF_KLIPS_ABI=\"31\": must be 30 or 22"),
    ("on-error-empty", "LDSAREF_ON_ERROR", b"", "LDSAREF_ON_ERROR=\"\": empty value: set it to fail or warn, or unset it"),
    ("on-error-ignore", "LDSAREF_ON_ERROR", b"ignore", "LDSAREF_ON_ERROR=\"ignore\": must be fail or warn"),
    ("log-verbose", "LDSAREF_LOG", b"verbose", "LDSAREF_LOG=\"verbose\": must be off, error, warn, info, debug or trace"),
    ("profile-blank", "LDSAREF_PROFILE", b"a b", "LDSAREF_PROFILE=\"a b\": invalid character ' ' in profile name \"a b\" (allowed: A-Z a-z 0-9 _ . -)"),
];

#[test]
fn bad_environment_values_refuse_every_inet_call() {
    require_root!();
    let bed = Bed::new();
    for (id, var, value, reason) in ENVIRONMENT {
        let value = OsString::from_vec(value.to_vec());
        let out = bed.client(&[(var, &value)], id);
        assert_refused(&out, 13, &format!("error: {reason}{REFUSED}"));
    }
    // A rules file whose absolute path is not UTF-8 is used as the OS
    // names it: the rule applies (the datagram carries its mark).
    let odd = bed.dir.join(OsStr::from_bytes(b"rules-\xff"));
    std::fs::write(&odd, format!("{TARGET} mark 0x5\n")).unwrap();
    let out = bed.client(&[("LDSAREF_RULES", odd.as_os_str())], "rules-non-utf8");
    assert!(log_lines(&out).is_empty(), "{out}");
    assert_eq!(bed.received(), vec!["tcp", "udp rules-non-utf8 mark=0x5"]);
}

#[test]
fn unknown_profiles_refuse_every_inet_call() {
    require_root!();
    let bed = Bed::new();
    let rules = bed.rules(
        "profiles.rules",
        "[client1]\n198.18.0.0/15 saref 101\n[client2]\n198.18.0.0/15 saref 202\n",
    );
    let none = bed.rules("no-sections.rules", "198.18.0.0/15 saref 101\n");
    type Env<'a> = Vec<(&'a str, &'a OsStr)>;
    let cases: [(&str, Env, String); 3] = [
        (
            "profile-unknown",
            vec![
                ("LDSAREF_RULES", rules.as_ref()),
                ("LDSAREF_PROFILE", "client9".as_ref()),
            ],
            "unknown profile \"client9\" (the rules file has: client1, client2)".to_owned(),
        ),
        (
            "profile-no-sections",
            vec![
                ("LDSAREF_RULES", none.as_ref()),
                ("LDSAREF_PROFILE", "client1".as_ref()),
            ],
            "unknown profile \"client1\" (the rules file has no profile sections)".to_owned(),
        ),
        (
            "profile-without-rules",
            vec![("LDSAREF_PROFILE", "client1".as_ref())],
            "LDSAREF_PROFILE=client1 is set but no rules file is loaded".to_owned(),
        ),
    ];
    for (id, env, reason) in &cases {
        let out = bed.client(env, id);
        assert_refused(&out, 13, &format!("error: {reason}{REFUSED}"));
    }
    assert_eq!(bed.received(), Vec::<String>::new());
}

#[test]
fn huge_rules_files() {
    require_root!();
    let bed = Bed::new();

    // One million good lines, then a bad one: nothing of it loads.
    let mut text = String::with_capacity(40_000_000);
    for i in 0..1_000_000u32 {
        text.push_str(&format!(
            "2001:db8::{:x}:{:x} mark {:#x}\n",
            i >> 16,
            i & 0xffff,
            i + 1
        ));
    }
    let good = text.clone();
    text.push_str("192.0.2.0/24 sarf 5\n");
    let path = bed.rules("million-then-bad.rules", &text);
    let out = bed.client(&[("LDSAREF_RULES", OsStr::new(&path))], "million-then-bad");
    assert_refused(
        &out,
        13,
        &format!("error: {path}:1000001:14: unknown action \"sarf\" (expected saref, mark, dev, reflect, pass or deny){REFUSED}"),
    );

    // One million good rules and one for the target: all load, and the
    // target's datagram carries its mark.
    let path = bed.rules("million.rules", good + &format!("{TARGET} udp mark 0x77\n"));
    let out = bed.client(
        &[
            ("LDSAREF_RULES", OsStr::new(&path)),
            ("LDSAREF_LOG", OsStr::new("info")),
        ],
        "million",
    );
    assert_eq!(out.stdout, "tcp ok\nudp ok\n", "{out}");
    assert_eq!(
        log_lines(&out),
        vec![format!("info: 1000001 rules from {path}, mode klips")],
        "{out}"
    );

    // A single line of 100 MB: refused; the error quotes the first 64
    // characters of the token, not all of it.
    let mut line = format!("{TARGET} saref 5 ").into_bytes();
    line.resize(line.len() + 100_000_000, b'x');
    line.push(b'\n');
    let path = bed.rules("long-line.rules", &line);
    drop(line);
    let out = bed.client(&[("LDSAREF_RULES", OsStr::new(&path))], "long-line");
    assert_eq!(out.stdout, "tcp errno 13\nudp errno 13\n", "{}", out.stdout);
    let lines = log_lines(&out);
    assert_eq!(lines.len(), 1);
    let x64 = "x".repeat(64);
    assert_eq!(
        lines[0],
        format!("error: {path}:1:19: unexpected \"{x64}…\" after the action{REFUSED}")
    );
    eprintln!("100 MB line: the log line is {} bytes long", lines[0].len());
    std::fs::remove_file(&path).unwrap();

    assert_eq!(bed.received(), vec!["tcp", "udp million mark=0x77"]);
}

/// Hostile control buffers passed to `sendmsg`: (case, rules, extra
/// preload, what the program sees, the log line or none).
const CONTROL: &[(&str, &str, bool, &str, Option<&str>)] = &[
    ("cmsg_len_0", "udp mark 0x5", false, "errno 22", None),
    ("cmsg_len_8", "udp mark 0x5", false, "errno 22", None),
    ("cmsg_len_1000", "udp mark 0x5", false, "errno 22", None),
    (
        "controllen_1g",
        "udp mark 0x5",
        false,
        "errno 105",
        Some("error: the application's control data is too large to add the steering cmsg to (No buffer space available (ENOBUFS))"),
    ),
    ("controllen_10", "udp mark 0x5", false, "ok", None),
    ("own_mark_len_2", "udp mark 0x5", false, "errno 22", None),
    ("own_refinfo_len_2", "udp saref 7", true, "errno 22", None),
    (
        "cmsgs_50",
        "udp mark 0x5",
        false,
        "errno 105",
        Some("error: the application's control data is too large to add the steering cmsg to (No buffer space available (ENOBUFS))"),
    ),
    ("cmsgs_41", "udp mark 0x5", false, "ok", None),
];

#[test]
fn hostile_control_buffers() {
    require_root!();
    let bed = Bed::new();
    let preload = format!("{} {}", lib_path().display(), emulator().display());
    for (case, rule, emulated, result, line) in CONTROL {
        let path = bed.rules(&format!("{case}.rules"), format!("{TARGET} {rule}\n"));
        let out = bed.run(
            Wrap::Plain,
            emulated.then_some(preload.as_str()),
            &[("LDSAREF_RULES", OsStr::new(&path))],
            "sendmsg.py",
            &[case],
        );
        assert_eq!(out.stdout, format!("{case} {result}\n"), "{out}");
        let want: Vec<String> = line.iter().map(|l| format!("{l}{NOT_SENT}")).collect();
        assert_eq!(log_lines(&out), want, "{out}");
    }
    // Only the two datagrams that were accepted arrive, both marked.
    assert_eq!(
        bed.received(),
        vec!["udp controllen_10 mark=0x5", "udp cmsgs_41 mark=0x5"]
    );
}

#[test]
fn missing_privileges_and_interfaces() {
    require_root!();
    let bed = Bed::new();
    let mark = bed.rules("mark.rules", format!("{TARGET} mark 0x5\n"));
    let dev = bed.rules("dev.rules", format!("{TARGET} dev nosuch0\n"));
    let eperm = format!(
        "error: setting SO_MARK needs CAP_NET_ADMIN (or CAP_NET_RAW on Linux 5.17 and later), which this process does not have (Operation not permitted (EPERM)){NOT_SENT}"
    );
    let env = [("LDSAREF_RULES", OsStr::new(&mark))];

    let out = bed.run(Wrap::Nobody, None, &env, "client.py", &["nobody"]);
    assert_refused(&out, 1, &eperm);
    let nfmark = [
        ("LDSAREF_RULES", OsStr::new(&mark)),
        ("LDSAREF_MODE", OsStr::new("nfmark")),
    ];
    let out = bed.run(Wrap::Nobody, None, &nfmark, "client.py", &["nobody-nfmark"]);
    assert_refused(&out, 1, &eperm);
    let out = bed.run(
        Wrap::DropCaps("cap_net_admin,cap_net_raw"),
        None,
        &env,
        "client.py",
        &["no-admin-no-raw"],
    );
    assert_refused(&out, 1, &eperm);
    // Since Linux 5.17, CAP_NET_RAW alone lets a process set SO_MARK: then
    // the traffic goes out, marked (checked with the listener below).
    let out = bed.run(
        Wrap::DropCaps("cap_net_admin"),
        None,
        &env,
        "client.py",
        &["no-admin"],
    );
    let raw_suffices = out.stdout == "tcp ok\nudp ok\n";
    if !raw_suffices {
        assert_refused(&out, 1, &eperm);
    }

    let out = bed.client(&[("LDSAREF_RULES", OsStr::new(&dev))], "nosuch0");
    assert_refused(
        &out,
        19,
        &format!("error: interface \"nosuch0\" does not exist (No such device (ENODEV)){NOT_SENT}"),
    );

    let expected: Vec<&str> = if raw_suffices {
        vec!["tcp", "udp no-admin mark=0x5"]
    } else {
        vec![]
    };
    assert_eq!(bed.received(), expected);
}

/// docs/bad-inputs.md shows every case of the tables above with the
/// message this file asserts.
#[test]
fn catalogue_is_documented() {
    let doc = std::fs::read_to_string(common::source_dir().join("docs/bad-inputs.md"))
        .expect("docs/bad-inputs.md");
    let mut missing = Vec::new();
    for (id, _, message) in MALFORMED {
        if !doc.contains(&format!("`{id}`")) || !doc.contains(message) {
            missing.push(*id);
        }
    }
    for (id, _, _, reason) in ENVIRONMENT {
        if !doc.contains(&format!("`{id}`")) || !doc.contains(reason) {
            missing.push(*id);
        }
    }
    for (case, _, _, _, line) in CONTROL {
        let line = line.map(|l| l.trim_start_matches("error: "));
        if !doc.contains(&format!("`{case}`")) || !line.is_none_or(|l| doc.contains(l)) {
            missing.push(*case);
        }
    }
    for text in [REFUSED, NOT_SENT] {
        if !doc.contains(text.trim_start_matches([':', ';', ' '])) {
            missing.push(text);
        }
    }
    assert!(missing.is_empty(), "not in docs/bad-inputs.md: {missing:?}");
}
