//! KLIPS semantics, end to end, on a stock kernel: real programs run under
//! the library with the test-only KLIPS emulator (`tests/emu/`) loaded
//! after it. The emulator plays the SAref kernel patch (it records BINDREF
//! per socket and validates and strips REFINFO cmsgs) so the datagrams
//! really leave; its log says which SAref each socket and datagram ended
//! up with. All traffic is to loopback addresses.

mod common;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{python3, run_with_timeout, EmuLog, Event, RunOutput, TempDir};

fn driver() -> PathBuf {
    common::source_dir().join("tests/programs/steer.py")
}

struct Run {
    out: RunOutput,
    log: EmuLog,
    _dir: TempDir,
}

impl Run {
    /// Events of `kind` on the driver's first reported fd (`fd=N` line).
    fn on_fd(&self, kind: &str) -> Vec<Event> {
        let fd = self
            .out
            .stdout
            .lines()
            .find_map(|l| {
                l.strip_prefix("fd=")
                    .map(|r| r.split_whitespace().next().unwrap().to_string())
            })
            .unwrap_or_else(|| panic!("driver printed no fd: {}", self.out));
        self.log.find(kind, &[("fd", &fd)])
    }

    fn values(events: &[Event], key: &str) -> Vec<String> {
        events.iter().map(|e| e.field(key).to_string()).collect()
    }
}

/// Runs `program args` with the library, the emulator, `rules` and `env`.
fn run_program(rules: Option<&str>, env: &[(&str, &str)], program: &str, args: &[&str]) -> Run {
    let dir = TempDir::new("emulated");
    let log = EmuLog::new();
    let mut c = Command::new(program);
    c.args(args);
    common::clear_ldsaref_env(&mut c);
    c.env("LD_PRELOAD", common::preload_with_emulator());
    let (k, v) = log.env();
    c.env(k, v);
    if let Some(r) = rules {
        c.env("LDSAREF_RULES", dir.write("rules", r));
    }
    for (k, v) in env {
        c.env(k, v);
    }
    let out = run_with_timeout(&mut c, Duration::from_secs(30));
    Run {
        out,
        log,
        _dir: dir,
    }
}

fn run(rules: Option<&str>, env: &[(&str, &str)], args: &[&str]) -> Run {
    let py = python3();
    let d = driver();
    let mut all = vec![d.to_str().unwrap()];
    all.extend_from_slice(args);
    run_program(rules, env, py.to_str().unwrap(), &all)
}

#[test]
fn tcp_connect_binds_per_destination() {
    let r = run(
        Some("127.0.3.1 tcp saref 1001\n"),
        &[],
        &["tcp", "127.0.3.1:4201", "127.0.3.2:4201"],
    );
    assert_eq!(
        r.out.stdout.matches("step=connect result=ok").count(),
        2,
        "{}",
        r.out
    );
    let c = r.log.of_kind("connect");
    let by_dst = |d: &str| {
        c.iter()
            .find(|e| e.field("dst") == d)
            .unwrap_or_else(|| panic!("{}", r.log.text()))
            .field("bindref")
            .to_string()
    };
    assert_eq!(by_dst("127.0.3.1:4201"), "1001");
    assert_eq!(by_dst("127.0.3.2:4201"), "0");
    // The TCP payload goes out on the bound socket.
    assert!(
        r.log
            .find("send", &[("proto", "tcp"), ("bindref", "1001")])
            .len()
            == 1,
        "{}",
        r.log.text()
    );
}

#[test]
fn tcp_fast_open_is_steered() {
    let r = run(
        Some("127.0.3.3 tcp saref 1002\n"),
        &[],
        &["tfo", "127.0.3.3:4202"],
    );
    assert!(
        r.out.stdout.contains("step=sendto_fastopen result=ok"),
        "{}",
        r.out
    );
    let sets = r.on_fd("setsockopt");
    assert_eq!(Run::values(&sets, "value"), ["1002"], "{}", r.log.text());
    let sends = r.on_fd("send");
    assert_eq!(sends.len(), 1, "{}", r.log.text());
    assert_eq!(sends[0].field("bindref"), "1002");
}

#[test]
fn connected_udp_is_bound_and_every_datagram_tagged() {
    let r = run(
        Some("127.0.3.4 udp saref 1003\n"),
        &[],
        &["udp-connected", "127.0.3.4:4203"],
    );
    assert!(r.out.stdout.contains("received=4"), "{}", r.out);
    let c = r.on_fd("connect");
    assert_eq!(Run::values(&c, "bindref"), ["1003"], "{}", r.log.text());
    // send, write, writev and sendto: each datagram carries REFINFO too
    // (the UDP caveat: a BINDREF alone likely does not tag UDP).
    let s = r.on_fd("send");
    assert_eq!(
        Run::values(&s, "refinfo"),
        ["1003", "1003", "1003", "1003"],
        "{}",
        r.log.text()
    );
    assert!(s.iter().all(|e| e.field("bindref") == "1003"));
}

#[test]
fn unconnected_udp_is_tagged_per_datagram() {
    let r = run(
        Some("127.0.3.5 udp saref 1004\n127.0.3.7 udp 4204 saref 1005\n"),
        &[],
        &[
            "udp-sendto",
            "127.0.3.5:4204",
            "127.0.3.6:4204",
            "127.0.3.7:4204",
        ],
    );
    assert_eq!(r.out.stdout.matches("result=ok").count(), 3, "{}", r.out);
    let s = r.on_fd("send");
    let tags: Vec<(String, String)> = s
        .iter()
        .map(|e| (e.field("dst").to_string(), e.field("refinfo").to_string()))
        .collect();
    assert_eq!(
        tags,
        [
            ("127.0.3.5:4204".to_string(), "1004".to_string()),
            ("127.0.3.6:4204".to_string(), "none".to_string()),
            ("127.0.3.7:4204".to_string(), "1005".to_string()),
        ],
        "{}",
        r.log.text()
    );
}

#[test]
fn sendmsg_keeps_application_cmsgs() {
    let r = run(
        Some("127.0.3.8 udp saref 1006\n"),
        &[],
        &["udp-sendmsg", "127.0.3.8:4205"],
    );
    // The receiver saw the application's IP_TOS: its cmsg was kept.
    assert!(
        r.out.stdout.contains("first=with tos tos=0x28"),
        "{}",
        r.out
    );
    let s = r.on_fd("send");
    assert_eq!(
        Run::values(&s, "refinfo"),
        ["1006", "1006"],
        "{}",
        r.log.text()
    );
}

#[test]
fn sendmmsg_tags_each_message_by_its_destination() {
    let r = run(
        Some("127.0.3.9 udp saref 1007\n127.0.3.11 udp saref 1008\n"),
        &[],
        &[
            "sendmmsg",
            "127.0.3.9:4206",
            "127.0.3.10:4206",
            "127.0.3.9:4206",
            "127.0.3.11:4206",
            "127.0.3.10:4206",
        ],
    );
    assert!(
        r.out.stdout.contains("sendmmsg=5 errno=0 lens=4,4,4,4,4"),
        "{}",
        r.out
    );
    let s = r.on_fd("send");
    assert_eq!(
        Run::values(&s, "refinfo"),
        ["1007", "none", "1007", "1008", "none"],
        "{}",
        r.log.text()
    );
    assert_eq!(
        Run::values(&s, "dst"),
        [
            "127.0.3.9:4206",
            "127.0.3.10:4206",
            "127.0.3.9:4206",
            "127.0.3.11:4206",
            "127.0.3.10:4206"
        ]
    );
}

#[test]
fn sendmmsg_stops_at_a_denied_message() {
    let r = run(
        Some("127.0.3.9 udp saref 1007\n127.0.3.12 deny\n"),
        &[],
        &[
            "sendmmsg",
            "127.0.3.9:4207",
            "127.0.3.9:4207",
            "127.0.3.12:4207",
            "127.0.3.9:4207",
        ],
    );
    // Like the kernel on an error mid-vector: the count sent so far.
    assert!(r.out.stdout.contains("sendmmsg=2 errno=0"), "{}", r.out);
    assert_eq!(r.on_fd("send").len(), 2, "{}", r.log.text());
    let r = run(
        Some("127.0.3.12 deny\n"),
        &[],
        &["sendmmsg", "127.0.3.12:4207", "127.0.3.9:4207"],
    );
    assert!(r.out.stdout.contains("sendmmsg=-1 errno=13"), "{}", r.out);
    assert!(r.on_fd("send").is_empty(), "{}", r.log.text());
}

#[test]
fn reconnecting_rebinds_and_unbinds() {
    let r = run(
        Some("127.0.3.13 saref 1009\n127.0.3.14 saref 1010\n"),
        &[],
        &[
            "reconnect",
            "127.0.3.13:4208",
            "127.0.3.14:4208",
            "127.0.3.15:4208",
            "127.0.3.13:4208",
        ],
    );
    let c = r.on_fd("connect");
    assert_eq!(
        Run::values(&c, "bindref"),
        ["1009", "1010", "0", "1009"],
        "{}",
        r.log.text()
    );
    let s = r.on_fd("send");
    assert_eq!(
        Run::values(&s, "refinfo"),
        ["1009", "1010", "none", "1009"],
        "{}",
        r.log.text()
    );
}

#[test]
fn an_application_that_binds_itself_wins() {
    let r = run(
        Some("127.0.3.16 saref 1011\n"),
        &[],
        &["own-bindref", "127.0.3.16:4209", "77"],
    );
    assert!(r.out.stdout.contains("step=connect result=ok"), "{}", r.out);
    assert_eq!(
        Run::values(&r.on_fd("connect"), "bindref"),
        ["77"],
        "{}",
        r.log.text()
    );
    assert_eq!(
        Run::values(&r.on_fd("setsockopt"), "value"),
        ["77"],
        "{}",
        r.log.text()
    );
}

#[test]
fn an_application_that_tags_itself_wins() {
    let r = run(
        Some("127.0.3.17 saref 1012\n"),
        &[],
        &["own-refinfo", "127.0.3.17:4210", "99"],
    );
    // Two REFINFO cmsgs would be EINVAL: the library added none.
    assert!(
        r.out.stdout.contains("step=sendmsg_own result=ok"),
        "{}",
        r.out
    );
    assert_eq!(
        Run::values(&r.on_fd("send"), "refinfo"),
        ["99"],
        "{}",
        r.log.text()
    );
}

#[test]
fn profiles_choose_between_overlapping_destinations() {
    let rules = "127.0.3.18 udp saref 1\n[client1]\n127.0.3.0/24 saref 101\n[client2]\n127.0.3.0/24 saref 202\n";
    for (profile, want) in [("client1", "101"), ("client2", "202")] {
        let r = run(
            Some(rules),
            &[("LDSAREF_PROFILE", profile)],
            &["udp-sendto", "127.0.3.18:4211"],
        );
        assert_eq!(
            Run::values(&r.on_fd("send"), "refinfo"),
            [want],
            "{profile}: {}",
            r.log.text()
        );
    }
    // Without a profile, only the global rules.
    let r = run(
        Some(rules),
        &[],
        &["udp-sendto", "127.0.3.18:4211", "127.0.3.19:4211"],
    );
    assert_eq!(
        Run::values(&r.on_fd("send"), "refinfo"),
        ["1", "none"],
        "{}",
        r.log.text()
    );
}

#[test]
fn ipsec_saref_is_the_catch_all_and_pass_unbinds() {
    let r = run(
        Some("127.0.3.20 saref 1013\n127.0.3.21 pass\n"),
        &[("IPSEC_SAREF", "5")],
        &[
            "reconnect",
            "127.0.3.22:4212",
            "127.0.3.20:4212",
            "127.0.3.21:4212",
        ],
    );
    // Bound to 5 at socket() (Openswan semantics), then per destination.
    assert_eq!(
        Run::values(&r.on_fd("setsockopt"), "value")[0],
        "5",
        "{}",
        r.log.text()
    );
    assert_eq!(
        Run::values(&r.on_fd("connect"), "bindref"),
        ["5", "1013", "0"],
        "{}",
        r.log.text()
    );
}

#[test]
fn deny_refuses_with_eacces_and_sends_nothing() {
    let r = run(Some("127.0.3.23 deny\n"), &[], &["tcp", "127.0.3.23:4213"]);
    assert!(
        r.out.stdout.contains("step=connect result=error errno=13"),
        "{}",
        r.out
    );
    assert!(
        r.log
            .find("connect", &[("dst", "127.0.3.23:4213")])
            .is_empty(),
        "{}",
        r.log.text()
    );
    assert!(
        r.out
            .stderr
            .contains("denies tcp traffic to 127.0.3.23:4213"),
        "{}",
        r.out
    );
}

#[test]
fn ipv6_sockets_are_steered_only_for_v4_mapped_destinations() {
    let r = run(
        Some("127.0.3.24 saref 1014\n"),
        &[],
        &["udp-sendto", "[::ffff:127.0.3.24]:4214"],
    );
    assert_eq!(
        Run::values(&r.on_fd("send"), "refinfo"),
        ["1014"],
        "{}",
        r.log.text()
    );
    // A pure IPv6 destination cannot carry a KLIPS SAref: error, fail closed.
    let r = run(Some("::1 saref 1015\n"), &[], &["udp-sendto", "[::1]:4215"]);
    assert!(r.out.stdout.contains("result=error errno=97"), "{}", r.out);
    assert!(r.on_fd("send").is_empty(), "{}", r.log.text());
    assert!(r.out.stderr.contains("IPv4 only"), "{}", r.out);
}

#[test]
fn errno_after_a_successful_socket_is_what_libc_left() {
    let r = run(None, &[("IPSEC_SAREF", "5")], &["errno-after-socket"]);
    assert!(r.out.stdout.contains("errno=77"), "{}", r.out);
    // ...and the socket was bound (the errno is not untouched by accident).
    assert_eq!(
        r.log
            .find("setsockopt", &[("opt", "bindref"), ("value", "5")])
            .len(),
        1,
        "{}",
        r.log.text()
    );
}

#[test]
fn legacy_abi_22_23() {
    let r = run(
        Some("127.0.3.25 saref 1016\n"),
        &[("LDSAREF_KLIPS_ABI", "22"), ("KLIPS_EMU_ABI", "22")],
        &["udp-connected", "127.0.3.25:4216"],
    );
    assert_eq!(
        Run::values(&r.on_fd("connect"), "bindref"),
        ["1016"],
        "{}",
        r.log.text()
    );
    assert_eq!(
        Run::values(&r.on_fd("send"), "refinfo"),
        ["1016"; 4],
        "{}",
        r.log.text()
    );
}

fn wait_for_tcp(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn curl_is_steered() {
    let mut server = Command::new(python3())
        .args(["-m", "http.server", "--bind", "127.0.3.26", "4217"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m http.server");
    wait_for_tcp("127.0.3.26:4217");
    let r = run_program(
        Some("[agent]\n127.0.3.26 tcp 4217 saref 1017\n"),
        &[("LDSAREF_PROFILE", "agent")],
        "curl",
        &[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "http://127.0.3.26:4217/",
        ],
    );
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(r.out.stdout, "200", "{}", r.out);
    let c = r.log.find("connect", &[("dst", "127.0.3.26:4217")]);
    assert_eq!(Run::values(&c, "bindref"), ["1017"], "{}", r.log.text());
}

#[test]
fn socat_and_nc_udp_are_steered() {
    let rules = "127.0.3.27 udp saref 1018\n127.0.3.28 udp saref 1019\n";
    // socat: unconnected sendto.
    let r = run_program(
        Some(rules),
        &[],
        "/bin/sh",
        &["-c", "echo hello | socat - UDP-SENDTO:127.0.3.27:4218"],
    );
    assert!(r.out.success(), "{}", r.out);
    let s = r.log.find("send", &[("dst", "127.0.3.27:4218")]);
    assert_eq!(Run::values(&s, "refinfo"), ["1018"], "{}", r.log.text());
    // nc: connected UDP socket written with write().
    let r = run_program(
        Some(rules),
        &[],
        "/bin/sh",
        &["-c", "echo hello | nc -u -w1 -q0 127.0.3.28 4219"],
    );
    let c = r.log.find("connect", &[("dst", "127.0.3.28:4219")]);
    assert_eq!(Run::values(&c, "bindref"), ["1019"], "{}", r.log.text());
    let s = r.log.find("send", &[("dst", "connected")]);
    assert!(!s.is_empty(), "{}", r.log.text());
    assert!(
        s.iter().all(|e| e.field("refinfo") == "1019"),
        "{}",
        r.log.text()
    );
}

#[test]
fn debug_log_has_one_line_per_decision_and_ignores_rust_log() {
    let rules = "127.0.3.29 tcp saref 1020\n[p1]\n127.0.3.30 udp saref 1021\n";
    // The host's RUST_LOG must not make the library talk.
    let r = run(
        Some(rules),
        &[("RUST_LOG", "trace")],
        &["tcp", "127.0.3.29:4220"],
    );
    assert!(!r.out.stderr.contains("ldsaref["), "{}", r.out);
    let r = run(
        Some(rules),
        &[("LDSAREF_LOG", "debug"), ("LDSAREF_PROFILE", "p1")],
        &["tcp", "127.0.3.29:4220"],
    );
    let line = r
        .out
        .stderr
        .lines()
        .find(|l| l.contains(" connect dst=127.0.3.29:4220"))
        .unwrap_or_else(|| panic!("{}", r.out))
        .to_string();
    // pid prefix, fd, call, destination, proto, rule (file:line), action,
    // kernel operation and its result.
    assert!(line.starts_with("ldsaref["), "{line}");
    assert!(line.contains(": debug: fd="), "{line}");
    assert!(line.contains("proto=tcp: "), "{line}");
    assert!(line.contains("/rules:1 saref 1020 -> setsockopt(fd, SOL_IP, IP_IPSEC_BINDREF=31, [1020], 4) before connect: ok"), "{line}");
    let r = run(
        Some(rules),
        &[("LDSAREF_LOG", "debug"), ("LDSAREF_PROFILE", "p1")],
        &["udp-sendto", "127.0.3.30:4221"],
    );
    assert!(
        r.out.stderr.contains("/rules:3 [p1] saref 1021 -> sendmsg with cmsg SOL_IP/IP_IPSEC_REFINFO=30 [1021] (cmsg_len 20): ok"),
        "{}",
        r.out
    );
}

/// A running program whose profile's rules file is removed (its tunnel
/// went down: `ldsaref updown` deletes the file) fails closed until the
/// file comes back, then follows the new SAref.
#[test]
fn a_vanished_profile_fails_closed_until_it_returns() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("vanish");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let conn = dir.join("conn.rules");
    std::fs::write(&conn, "[conn]\n127.0.3.31 udp saref 1022\n").unwrap();
    let log = EmuLog::new();
    let (k, v) = log.env();
    let mut c = Command::new(python3());
    c.arg(driver())
        .args(["udp-loop", "127.0.3.31:4222", "60", "50"])
        .env("LD_PRELOAD", common::preload_with_emulator())
        .env(k, v)
        .env("LDSAREF_RULES", dir.path())
        .env("LDSAREF_PROFILE", "conn")
        .env_remove("IPSEC_SAREF")
        .env_remove("LDSAREF_ON_ERROR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    std::fs::remove_file(&conn).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    std::fs::write(dir.join(".tmp"), "[conn]\n127.0.3.31 udp saref 1023\n").unwrap();
    std::fs::rename(dir.join(".tmp"), &conn).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let results: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("i="))
        .map(|l| {
            if l.contains("result=ok") {
                "ok"
            } else if l.contains("errno=13") {
                "refused"
            } else {
                "other"
            }
        })
        .collect();
    assert_eq!(results.len(), 60, "{stdout}");
    assert!(!results.contains(&"other"), "{stdout}");
    // ok... then refused... then ok again, in that order.
    let first_refused = results
        .iter()
        .position(|r| *r == "refused")
        .unwrap_or_else(|| panic!("{stdout}\n{stderr}"));
    let back = results[first_refused..]
        .iter()
        .position(|r| *r == "ok")
        .map(|p| p + first_refused)
        .unwrap_or_else(|| panic!("{stdout}\n{stderr}"));
    assert!(
        results[..first_refused].iter().all(|r| *r == "ok"),
        "{stdout}"
    );
    assert!(
        results[first_refused..back].iter().all(|r| *r == "refused"),
        "{stdout}"
    );
    assert!(results[back..].iter().all(|r| *r == "ok"), "{stdout}");
    // The directory is empty now: "no rules loaded" for profile conn.
    assert!(
        stderr.contains("LDSAREF_PROFILE=conn") && stderr.contains("refused with EACCES"),
        "{stderr}"
    );
    let tags: Vec<String> = log
        .of_kind("send")
        .iter()
        .map(|e| e.field("refinfo").to_string())
        .collect();
    let n1 = tags.iter().filter(|t| *t == "1022").count();
    let n2 = tags.iter().filter(|t| *t == "1023").count();
    assert_eq!(n1 + n2, tags.len(), "only tagged datagrams left: {tags:?}");
    assert!(n1 > 0 && n2 > 0, "{tags:?}");
    assert!(
        tags.iter().position(|t| t == "1023") > tags.iter().rposition(|t| t == "1022"),
        "{tags:?}"
    );
}

/// The library remembers its last datagram decision per thread; a change of
/// the socket's state (here the application binding it itself) must not
/// reuse it.
#[test]
fn a_remembered_decision_is_not_reused_after_the_socket_changes() {
    let r = run(
        Some("127.0.3.32 udp saref 1024\n"),
        &[],
        &["bind-late", "127.0.3.32:4223", "77"],
    );
    assert_eq!(r.out.stdout.matches("result=ok").count(), 4, "{}", r.out);
    let s = r.on_fd("send");
    assert_eq!(
        Run::values(&s, "refinfo"),
        ["1024", "1024", "none"],
        "{}",
        r.log.text()
    );
    assert_eq!(
        Run::values(&s, "bindref"),
        ["0", "0", "77"],
        "{}",
        r.log.text()
    );
}
