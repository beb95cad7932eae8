//! The exact calls that reach the real (stock) kernel, observed with
//! strace: option numbers, values, lengths, cmsg headers, and their order
//! relative to connect/send. `LDSAREF_PROBE=off` lets every operation
//! reach the kernel, which then refuses the SAref ones itself
//! (ENOPROTOOPT, EINVAL): exactly what a KLIPS kernel would have accepted.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{lib_path, python3, run_with_timeout, RunOutput, TempDir};

fn driver() -> PathBuf {
    common::source_dir().join("tests/programs/steer.py")
}

struct Traced {
    out: RunOutput,
    trace: String,
    _dir: TempDir,
}

impl Traced {
    /// The trace lines, with `[pid N] ` prefixes removed.
    fn lines(&self) -> Vec<&str> {
        self.trace
            .lines()
            .map(|l| match l.strip_prefix("[pid ") {
                Some(rest) => rest.split_once("] ").map_or(l, |(_, r)| r),
                None => l
                    .split_once(' ')
                    .filter(|(p, _)| p.parse::<u32>().is_ok())
                    .map_or(l, |(_, r)| r.trim_start()),
            })
            .collect()
    }

    fn position(&self, pred: impl Fn(&str) -> bool) -> Option<usize> {
        self.lines().iter().position(|l| pred(l))
    }
}

/// Runs the driver scenario under strace with the library and `env`.
fn traced(rules: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> Traced {
    let dir = TempDir::new("strace");
    let trace = dir.join("trace");
    let mut c = Command::new("strace");
    c.args(["-f", "-e", "trace=%network", "-e", "signal=none", "-o"])
        .arg(&trace)
        .arg("/usr/bin/env");
    c.arg(format!("LD_PRELOAD={}", lib_path().display()));
    if let Some(r) = rules {
        let f = dir.write("rules", r);
        c.arg(format!("LDSAREF_RULES={}", f.display()));
    }
    for (k, v) in env {
        c.arg(format!("{k}={v}"));
    }
    c.arg(python3()).arg(driver()).args(args);
    common::clear_ldsaref_env(&mut c);
    let out = run_with_timeout(&mut c, Duration::from_secs(30));
    let trace = std::fs::read_to_string(&trace).unwrap_or_default();
    Traced {
        out,
        trace,
        _dir: dir,
    }
}

#[test]
fn tcp_connect_is_bound_to_the_saref_before_connect() {
    let t = traced(
        Some("127.0.2.1 tcp saref 2000\n"),
        &[("LDSAREF_PROBE", "off"), ("LDSAREF_ON_ERROR", "warn")],
        &["tcp", "127.0.2.1:4101"],
    );
    let set = t
        .position(|l| l.contains("SOL_IP, 0x1f /* IP_??? */, [2000], 4) = -1 ENOPROTOOPT"))
        .unwrap_or_else(|| panic!("no BINDREF setsockopt:\n{}\n{}", t.trace, t.out));
    let conn = t
        .position(|l| l.starts_with("connect(") && l.contains("inet_addr(\"127.0.2.1\")"))
        .unwrap_or_else(|| panic!("no connect:\n{}", t.trace));
    assert!(set < conn, "BINDREF must come before connect:\n{}", t.trace);
    // Same descriptor.
    let fd = |l: &str| l.split(['(', ',']).nth(1).map(str::to_string);
    assert_eq!(fd(t.lines()[set]), fd(t.lines()[conn]));
}

#[test]
fn fail_closed_tcp_never_reaches_connect() {
    let t = traced(
        Some("127.0.2.2 tcp saref 2000\n"),
        &[("LDSAREF_PROBE", "off")],
        &["tcp", "127.0.2.2:4102"],
    );
    assert!(
        t.trace.contains("[2000], 4) = -1 ENOPROTOOPT"),
        "{}",
        t.trace
    );
    assert!(
        t.position(|l| l.starts_with("connect(") && l.contains("127.0.2.2"))
            .is_none(),
        "connect reached the kernel:\n{}",
        t.trace
    );
    assert!(
        t.out.stdout.contains("step=connect result=error errno=92"),
        "{}",
        t.out
    );
}

#[test]
fn udp_sendto_becomes_sendmsg_with_a_refinfo_cmsg() {
    let t = traced(
        Some("127.0.2.3 udp saref 101\n"),
        &[("LDSAREF_PROBE", "off")],
        &["udp-sendto", "127.0.2.3:4103", "127.0.2.4:4103"],
    );
    let tagged = t
        .lines()
        .into_iter()
        .find(|l| l.starts_with("sendmsg(") && l.contains("127.0.2.3"))
        .unwrap_or_else(|| panic!("no sendmsg to 127.0.2.3:\n{}", t.trace))
        .to_string();
    assert!(
        tagged.contains("msg_control=[{cmsg_len=20, cmsg_level=SOL_IP, cmsg_type=0x1e /* IP_??? */}], msg_controllen=24"),
        "{tagged}"
    );
    // The stock kernel refuses the unknown cmsg: nothing was sent.
    assert!(
        tagged.ends_with("= -1 EINVAL (Invalid argument)"),
        "{tagged}"
    );
    // The other destination has no rule: a plain sendto.
    assert!(
        t.position(|l| l.starts_with("sendto(") && l.contains("127.0.2.4") && l.ends_with("= 8"))
            .is_some(),
        "{}",
        t.trace
    );
}

#[test]
fn application_cmsgs_are_kept_and_refinfo_appended() {
    let t = traced(
        Some("127.0.2.5 udp saref 101\n"),
        &[("LDSAREF_PROBE", "off")],
        &["udp-sendmsg", "127.0.2.5:4105"],
    );
    let line = t
        .lines()
        .into_iter()
        .find(|l| l.starts_with("sendmsg(") && l.contains("with tos"))
        .unwrap_or_else(|| panic!("{}", t.trace))
        .to_string();
    assert!(
        line.contains("msg_control=[{cmsg_len=20, cmsg_level=SOL_IP, cmsg_type=IP_TOS, cmsg_data=[0x28, 0, 0, 0]}, {cmsg_len=20, cmsg_level=SOL_IP, cmsg_type=0x1e /* IP_??? */}], msg_controllen=48"),
        "{line}"
    );
}

#[test]
fn ipsec_saref_binds_inet_sockets_at_creation_only() {
    let t = traced(
        None,
        &[
            ("LDSAREF_PROBE", "off"),
            ("LDSAREF_ON_ERROR", "warn"),
            ("IPSEC_SAREF", "1234"),
        ],
        &["listener", "127.0.2.6:4106"],
    );
    let lines = t.lines();
    let sock = lines
        .iter()
        .position(|l| l.starts_with("socket(AF_INET, SOCK_STREAM"))
        .unwrap_or_else(|| panic!("{}", t.trace));
    assert!(
        lines[sock + 1].starts_with("setsockopt(")
            && lines[sock + 1].contains("SOL_IP, 0x1f /* IP_??? */, [1234], 4)"),
        "{}",
        t.trace
    );
    // Unix sockets (python's own, if any) are never touched.
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("socket(AF_UNIX") || l.starts_with("socketpair(") {
            assert!(
                !lines.get(i + 1).is_some_and(|n| n.contains("0x1f")),
                "{}",
                t.trace
            );
        }
    }
}

#[test]
fn legacy_abi_uses_22_and_23_and_is_not_fooled_by_mainline() {
    // Without the probe, the legacy BINDREF number reaches the kernel: on
    // mainline 23 is IP_CHECKSUM, which accepts it...
    let t = traced(
        Some("127.0.2.7 tcp saref 2000\n"),
        &[("LDSAREF_PROBE", "off"), ("LDSAREF_KLIPS_ABI", "22")],
        &["tcp", "127.0.2.7:4107"],
    );
    assert!(
        t.trace.contains("SOL_IP, IP_CHECKSUM, [2000], 4) = 0"),
        "{}",
        t.trace
    );
    // ...which is why the probe asks REFINFO (22, IP_NODEFRAG: raw sockets
    // only on mainline) first, and refuses the connect.
    let t = traced(
        Some("127.0.2.7 tcp saref 2000\n"),
        &[("LDSAREF_KLIPS_ABI", "22")],
        &["tcp", "127.0.2.7:4108"],
    );
    assert!(
        t.trace
            .contains("SOL_IP, IP_NODEFRAG, [1], 4) = -1 ENOPROTOOPT"),
        "{}",
        t.trace
    );
    assert!(!t.trace.contains("IP_CHECKSUM, [2000]"), "{}", t.trace);
    assert!(
        t.out.stdout.contains("step=connect result=error errno=92"),
        "{}",
        t.out
    );
}

#[test]
fn the_kernel_is_probed_once_not_per_packet() {
    let t = traced(
        Some("127.0.2.8 udp saref 101\n"),
        &[],
        &[
            "udp-sendto",
            "127.0.2.8:4109",
            "127.0.2.8:4110",
            "127.0.2.8:4111",
        ],
    );
    let probes = t
        .lines()
        .iter()
        .filter(|l| l.contains("0x1e /* IP_??? */, [1], 4)"))
        .count();
    assert_eq!(probes, 1, "{}", t.trace);
    assert_eq!(
        t.out.stdout.matches("result=error errno=92").count(),
        3,
        "{}",
        t.out
    );
    assert!(
        !t.trace.contains("sendmsg("),
        "nothing may be sent:\n{}",
        t.trace
    );
    assert!(
        !t.trace
            .lines()
            .any(|l| l.contains("sendto(") && l.contains("127.0.2.8")),
        "{}",
        t.trace
    );
    // One log line for the cause, not one per datagram.
    assert_eq!(
        t.out.stderr.matches("no SAref support").count(),
        1,
        "{}",
        t.out
    );
}

#[test]
fn nfmark_mode_sets_the_mast_mark() {
    require_root!();
    let t = traced(
        Some("127.0.2.9 saref 101\n"),
        &[("LDSAREF_MODE", "nfmark")],
        &["tcp", "127.0.2.9:4112"],
    );
    // (101 << 16) | 0x80000000 = 0x80650000, printed by strace as a signed int
    let set = t
        .position(|l| l.contains("SOL_SOCKET, SO_MARK, [-2140864512], 4) = 0"))
        .unwrap_or_else(|| panic!("{}", t.trace));
    let conn = t
        .position(|l| l.starts_with("connect(") && l.contains("127.0.2.9"))
        .unwrap_or_else(|| panic!("{}", t.trace));
    assert!(set < conn, "{}", t.trace);
    assert!(t.out.stdout.contains("step=connect result=ok"), "{}", t.out);

    let t = traced(
        Some("127.0.2.9 saref 101\n"),
        &[("LDSAREF_MODE", "nfmark")],
        &["udp-sendto", "127.0.2.9:4113"],
    );
    assert!(
        t.trace.contains("msg_control=[{cmsg_len=20, cmsg_level=SOL_SOCKET, cmsg_type=0x24 /* SCM_??? */}], msg_controllen=24"),
        "{}",
        t.trace
    );
    assert!(t.out.stdout.contains("result=ok"), "{}", t.out);
}

/// strace does not print the payload of an unknown cmsg; gdb stops the
/// process at the sendmsg syscall and dumps the bytes the kernel receives.
#[cfg(target_arch = "x86_64")]
#[test]
fn refinfo_payload_bytes_reach_the_kernel() {
    let dir = TempDir::new("gdb");
    let rules = dir.write("rules", "127.0.2.10 udp saref 4660\n");
    let mut c = Command::new("gdb");
    c.args(["-q", "-batch", "-nx"])
        .arg("-ex")
        .arg(format!(
            "set environment LD_PRELOAD={}",
            lib_path().display()
        ))
        .arg("-ex")
        .arg(format!("set environment LDSAREF_RULES={}", rules.display()))
        .args(["-ex", "set environment LDSAREF_PROBE=off"])
        .args(["-ex", "catch syscall sendmsg", "-ex", "run"])
        // struct msghdr: msg_control at +32, msg_controllen at +40.
        .args([
            "-ex",
            "printf \"controllen=%lu\\n\", *(unsigned long *)($rsi + 40)",
        ])
        .args(["-ex", "x/24xb *(void **)($rsi + 32)", "-ex", "kill"])
        .arg("--args")
        .arg(python3())
        .arg(driver())
        .args(["udp-sendto", "127.0.2.10:4114"]);
    c.env_remove("LD_PRELOAD");
    let out = run_with_timeout(&mut c, Duration::from_secs(60));
    assert!(out.stdout.contains("controllen=24"), "{out}");
    let bytes: Vec<u8> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("0x") && l.contains(':'))
        .flat_map(|l| {
            l.split(':')
                .nth(1)
                .unwrap_or("")
                .split_whitespace()
                .map(|b| u8::from_str_radix(b.trim_start_matches("0x"), 16).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(bytes.len(), 24, "{out}");
    assert_eq!(&bytes[..8], &20u64.to_ne_bytes(), "cmsg_len == CMSG_LEN(4)");
    assert_eq!(
        &bytes[8..12],
        &0i32.to_ne_bytes(),
        "cmsg_level == IPPROTO_IP"
    );
    assert_eq!(
        &bytes[12..16],
        &30i32.to_ne_bytes(),
        "cmsg_type == IP_IPSEC_REFINFO"
    );
    assert_eq!(&bytes[16..20], &4660u32.to_ne_bytes(), "payload == SAref");
}
