//! End to end on the two-tunnel test bed (`scripts/testbed.sh`): a server
//! and two clients that both own 198.18.0.5. Unmodified programs (curl,
//! socat, nc, python3, getent) run in the server's namespace under the
//! library, and every test asserts WHICH client answered: the mark or device
//! the library gave the socket is the only thing that picks the tunnel.
//!
//! Each test builds its own bed under a unique prefix (tests run in
//! parallel) and removes it on drop. Needs root.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use common::bed::{testbed_down, testbed_hits, testbed_sh};
use common::{cli_path, lib_path, python3, run_with_timeout, source_dir, RunOutput, TempDir};

const TIMEOUT: Duration = Duration::from_secs(30);

const PROFILES: &str = "\
[client1]
198.18.0.0/24 saref 101
[client2]
198.18.0.0/24 saref 202
";

fn program(name: &str) -> String {
    source_dir()
        .join("tests/programs")
        .join(name)
        .display()
        .to_string()
}

fn py() -> String {
    python3().display().to_string()
}

/// Beds of test processes that were killed before their `Drop` ran.
fn sweep_stale_beds() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(prefix) = name.strip_suffix("srv") else {
            continue;
        };
        let pid = prefix
            .strip_prefix("ldtb")
            .and_then(|r| r.split('n').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = Command::new(testbed_sh()).args(["down", prefix]).status();
            }
        }
    }
}

struct Bed {
    prefix: String,
    dir: TempDir,
}

impl Bed {
    fn up() -> Bed {
        static SWEPT: OnceLock<()> = OnceLock::new();
        static N: AtomicUsize = AtomicUsize::new(0);
        SWEPT.get_or_init(sweep_stale_beds);
        let prefix = format!(
            "ldtb{}n{}-",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let bed = Bed {
            prefix,
            dir: TempDir::new("testbed"),
        };
        let out = run_with_timeout(
            Command::new(testbed_sh()).args(["up", &bed.prefix]),
            Duration::from_secs(60),
        );
        assert!(out.success(), "testbed.sh up failed: {out}");
        bed
    }

    fn ns(&self, which: &str) -> String {
        format!("{}{which}", self.prefix)
    }

    /// `program args` in namespace `which`, with exactly `vars` of ours.
    fn command(&self, which: &str, vars: &[(&str, &str)], program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(which), "/usr/bin/env"]);
        for (k, v) in vars {
            c.arg(format!("{k}={v}"));
        }
        c.arg(program).args(args);
        common::clear_ldsaref_env(&mut c);
        c
    }

    /// Runs `program` in the server under the library (LD_PRELOAD) with `vars`.
    fn wrapped(&self, vars: &[(&str, &str)], program: &str, args: &[&str]) -> RunOutput {
        let lib = lib_path().display().to_string();
        let mut all = vec![("LD_PRELOAD", lib.as_str())];
        all.extend_from_slice(vars);
        run_with_timeout(&mut self.command("srv", &all, program, args), TIMEOUT)
    }

    /// Runs `program` in namespace `which` without the library.
    fn plain(&self, which: &str, program: &str, args: &[&str]) -> RunOutput {
        run_with_timeout(&mut self.command(which, &[], program, args), TIMEOUT)
    }

    fn rules(&self, text: &str) -> String {
        self.dir.write("rules", text).display().to_string()
    }

    /// Packets that reached client `c`'s inner address through its tunnel.
    fn hits(&self, c: &str) -> u64 {
        testbed_hits(&self.prefix, c)
    }

    /// Starts a long-running program in the server, waiting for its `ready`
    /// line; killed with the bed.
    fn spawn_srv(&self, vars: &[(&str, &str)], program: &str, args: &[&str]) -> Child {
        let mut c = self.command("srv", vars, program, args);
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "{program} did not start");
        child
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        testbed_down(&self.prefix);
    }
}

fn curl(bed: &Bed, vars: &[(&str, &str)], url: &str) -> RunOutput {
    bed.wrapped(vars, "curl", &["-sS", "--max-time", "5", url])
}

/// curl's answer, which must be a success.
#[track_caller]
fn answered(out: &RunOutput) -> String {
    assert!(out.success(), "curl failed: {out}");
    out.stdout.trim().to_string()
}

#[test]
fn profile_picks_the_tunnel_in_nfmark_mode() {
    require_root!();
    let bed = Bed::up();
    let rules = bed.rules(PROFILES);
    for (profile, want) in [("client1", "client1"), ("client2", "client2")] {
        let out = curl(
            &bed,
            &[
                ("LDSAREF_RULES", &rules),
                ("LDSAREF_PROFILE", profile),
                ("LDSAREF_MODE", "nfmark"),
            ],
            "http://198.18.0.5/",
        );
        assert_eq!(answered(&out), want, "profile {profile}");
    }
    // The same through the command, as the README shows it.
    for (profile, want) in [("client2", "client2"), ("client1", "client1")] {
        let cli = cli_path().display().to_string();
        let out = bed.plain(
            "srv",
            &cli,
            &[
                "run",
                "--rules",
                &rules,
                "--profile",
                profile,
                "--mode",
                "nfmark",
                "--",
                "curl",
                "-sS",
                "--max-time",
                "5",
                "http://198.18.0.5/",
            ],
        );
        assert_eq!(answered(&out), want, "ldsaref run --profile {profile}");
    }
}

#[test]
fn plain_marks_pick_the_tunnel() {
    require_root!();
    let bed = Bed::up();
    for (mark, want) in [("1", "client1"), ("2", "client2")] {
        let rules = bed.rules(&format!("198.18.0.5 tcp 80 mark {mark}\n"));
        let out = curl(&bed, &[("LDSAREF_RULES", &rules)], "http://198.18.0.5/");
        assert_eq!(answered(&out), want, "mark {mark}");
    }
}

#[test]
fn masked_mark_picks_the_tunnel() {
    require_root!();
    let bed = Bed::up();
    let rules = bed.rules("198.18.0.0/24 mark 0x80650000/0xffff0000\n");
    let out = curl(&bed, &[("LDSAREF_RULES", &rules)], "http://198.18.0.5/");
    assert_eq!(answered(&out), "client1");
    let rules = bed.rules("198.18.0.0/24 mark 0x80ca0000/0xffff0000\n");
    let out = curl(&bed, &[("LDSAREF_RULES", &rules)], "http://198.18.0.5/");
    assert_eq!(answered(&out), "client2");
}

#[test]
fn devices_pick_the_tunnel() {
    require_root!();
    let bed = Bed::up();
    for (dev, want) in [("s-c1", "client1"), ("s-c2", "client2")] {
        let rules = bed.rules(&format!("198.18.0.5 dev {dev}\n"));
        let out = curl(&bed, &[("LDSAREF_RULES", &rules)], "http://198.18.0.5/");
        assert_eq!(answered(&out), want, "dev {dev}");
        let out = bed.wrapped(
            &[("LDSAREF_RULES", &rules)],
            &py(),
            &[&program("udp_client.py"), "sendto", "198.18.0.5", "7", "d"],
        );
        assert_eq!(out.stdout.trim(), format!("{want}: d"), "{out}");
    }
}

#[test]
fn ipsec_saref_in_nfmark_mode_reaches_client2() {
    require_root!();
    let bed = Bed::up();
    let out = curl(
        &bed,
        &[("IPSEC_SAREF", "202"), ("LDSAREF_MODE", "nfmark")],
        "http://198.18.0.5/",
    );
    assert_eq!(answered(&out), "client2");
    let out = curl(
        &bed,
        &[("IPSEC_SAREF", "101"), ("LDSAREF_MODE", "nfmark")],
        "http://198.18.0.5/",
    );
    assert_eq!(answered(&out), "client1");
}

#[test]
fn ipv6_marks_pick_the_tunnel() {
    require_root!();
    let bed = Bed::up();
    for (mark, want) in [("2", "client2"), ("1", "client1")] {
        let rules = bed.rules(&format!("2001:db8:18::/64 mark {mark}\n"));
        let out = curl(
            &bed,
            &[("LDSAREF_RULES", &rules)],
            "http://[2001:db8:18::5]/",
        );
        assert_eq!(answered(&out), want, "IPv6, mark {mark}");
    }
    let out = bed.plain(
        "srv",
        "curl",
        &["-sS", "--max-time", "5", "http://[2001:db8:18::5]/"],
    );
    assert_eq!(out.code(), Some(7), "unwrapped IPv6 curl must fail: {out}");
}

#[test]
fn unwrapped_programs_have_no_route() {
    require_root!();
    let bed = Bed::up();
    let (h1, h2) = (bed.hits("c1"), bed.hits("c2"));
    let out = bed.plain(
        "srv",
        "curl",
        &["-sS", "--max-time", "5", "http://198.18.0.5/"],
    );
    assert_eq!(out.code(), Some(7), "curl must fail to connect: {out}");
    let out = bed.plain(
        "srv",
        &py(),
        &[&program("udp_client.py"), "sendto", "198.18.0.5", "7", "x"],
    );
    assert_eq!(out.stdout.trim(), "error=101", "ENETUNREACH: {out}");
    assert_eq!((bed.hits("c1"), bed.hits("c2")), (h1, h2));
}

#[test]
fn deny_blocks_and_nothing_reaches_either_client() {
    require_root!();
    let bed = Bed::up();
    // Longest prefix wins: the /24 would go to client1, the host is denied.
    let rules = bed.rules("198.18.0.5 deny\n198.18.0.0/24 mark 1\n");
    let (h1, h2) = (bed.hits("c1"), bed.hits("c2"));
    let vars = [("LDSAREF_RULES", rules.as_str())];
    let out = curl(&bed, &vars, "http://198.18.0.5/");
    assert_eq!(out.code(), Some(7), "curl must fail: {out}");
    let out = bed.wrapped(
        &vars,
        &py(),
        &[&program("udp_client.py"), "sendto", "198.18.0.5", "7", "x"],
    );
    assert_eq!(out.stdout.trim(), "error=13", "EACCES: {out}");
    assert_eq!(
        (bed.hits("c1"), bed.hits("c2")),
        (h1, h2),
        "nothing arrived"
    );

    // Denying only tcp/80: UDP to the same host still reaches client1, and
    // the counter that stayed still above does count it.
    let rules = bed.rules("198.18.0.5 tcp 80 deny\n198.18.0.5 mark 1\n");
    let vars = [("LDSAREF_RULES", rules.as_str())];
    let out = curl(&bed, &vars, "http://198.18.0.5/");
    assert_eq!(out.code(), Some(7), "curl must fail: {out}");
    assert_eq!(bed.hits("c1"), h1, "the denied curl sent nothing");
    let out = bed.wrapped(
        &vars,
        &py(),
        &[&program("udp_client.py"), "sendto", "198.18.0.5", "7", "x"],
    );
    assert_eq!(out.stdout.trim(), "client1: x", "{out}");
    assert!(bed.hits("c1") > h1, "the datagram was counted");
    assert_eq!(bed.hits("c2"), h2);
}

#[test]
fn udp_socat_nc_and_python_pick_the_tunnel() {
    require_root!();
    let bed = Bed::up();
    let rules = bed.rules(PROFILES);
    for (profile, want) in [("client1", "client1"), ("client2", "client2")] {
        let vars = [
            ("LDSAREF_RULES", rules.as_str()),
            ("LDSAREF_PROFILE", profile),
            ("LDSAREF_MODE", "nfmark"),
        ];
        // socat: UDP-SENDTO sends with sendto on an unconnected socket,
        // UDP: connects first.
        for addr in ["UDP-SENDTO:198.18.0.5:7", "UDP:198.18.0.5:7"] {
            let out = bed.wrapped(
                &vars,
                "sh",
                &["-c", &format!("echo via-socat | socat -t 2 - {addr}")],
            );
            assert_eq!(
                out.stdout.trim(),
                format!("{want}: via-socat"),
                "{addr}: {out}"
            );
        }
        let out = bed.wrapped(
            &vars,
            "sh",
            &["-c", "echo via-nc | nc -u -w 2 198.18.0.5 7"],
        );
        assert_eq!(out.stdout.trim(), format!("{want}: via-nc"), "nc: {out}");
        for mode in ["sendto", "connect", "sendmsg"] {
            let out = bed.wrapped(
                &vars,
                &py(),
                &[&program("udp_client.py"), mode, "198.18.0.5", "7", mode],
            );
            assert_eq!(
                out.stdout.trim(),
                format!("{want}: {mode}"),
                "python {mode}: {out}"
            );
        }
    }
}

/// Both clients send from the same address and port, 198.18.0.5:5000, to
/// an echo server in the server; `socat` in each client prints the reply.
fn ask_from(bed: &Bed, client: &str, port: u16, message: &str) -> String {
    let out = bed.plain(
        client,
        "sh",
        &[
            "-c",
            &format!("echo {message} | socat -t 2 - UDP:203.0.113.1:{port},bind=198.18.0.5:5000"),
        ],
    );
    out.stdout.trim().to_string()
}

/// A server's output, read as it comes. On a loaded machine a server may
/// answer after the client gave up waiting, so a test that counts what the
/// server said waits for it (up to a deadline) before killing the server.
struct Log(std::sync::mpsc::Receiver<String>);

impl Log {
    fn follow(stream: impl std::io::Read + Send + 'static) -> Self {
        let (lines, log) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stream)
                .lines()
                .map_while(Result::ok)
            {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        Log(log)
    }

    /// Everything said until `done` holds for it, or 20 s have passed.
    fn until(self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut text = String::new();
        while !done(&text) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.0.recv_timeout(left) {
                Ok(line) => {
                    text.push_str(&line);
                    text.push('\n');
                }
                Err(_) => break,
            }
        }
        text
    }
}

fn reflect_with(mode: &str, port: u16) {
    let bed = Bed::up();
    let rules = bed.rules("198.18.0.5 udp 5000 reflect\n");
    let lib = lib_path().display().to_string();
    let port_s = port.to_string();
    let server = program("echo_server.py");
    let mut child = bed.spawn_srv(
        &[("LD_PRELOAD", &lib), ("LDSAREF_RULES", &rules)],
        &py(),
        &[&server, mode, "203.0.113.1", &port_s],
    );
    // Alternating, so that a reply going to the previous sender's tunnel
    // would show.
    let mut got = Vec::new();
    for client in ["c1", "c2", "c2", "c1"] {
        let msg = format!("from-{client}");
        got.push((client, ask_from(&bed, client, port, &msg)));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let server_said = String::from_utf8_lossy(&out.stdout).into_owned();
    for (client, reply) in &got {
        assert_eq!(
            reply,
            &format!("echo: from-{client}"),
            "{mode}: {got:?}; the server printed:\n{server_said}"
        );
    }

    // Without the library the same server has no route back to either.
    let mut child = bed.spawn_srv(&[], &py(), &[&server, mode, "203.0.113.1", &port_s]);
    let log = Log::follow(child.stdout.take().unwrap());
    for client in ["c1", "c2"] {
        assert_eq!(
            ask_from(&bed, client, port, "plain"),
            "",
            "{mode}: no answer"
        );
    }
    let errors = |text: &str| text.lines().filter(|l| *l == "error=101").count();
    let lines = log.until(|text| errors(text) >= 2);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        lines.lines().filter(|l| *l == "error=101").count(),
        2,
        "the unwrapped server's replies fail with ENETUNREACH: {lines}"
    );
}

#[test]
fn reflect_recvfrom_sendto() {
    require_root!();
    reflect_with("recvfrom", 7001);
}

#[test]
fn reflect_recvmsg_sendmsg() {
    require_root!();
    reflect_with("recvmsg", 7002);
}

#[test]
fn reflect_recvmmsg_sendmmsg() {
    require_root!();
    reflect_with("mmsg", 7003);
}

/// glibc's resolver calls the kernel through internal aliases (`__socket`,
/// `__connect`, `__sendmmsg`...), so a wrapped program's DNS queries are not
/// steered even when a rule covers the nameserver. The test shows it, then
/// shows the two ways around it.
#[test]
fn dns_is_not_steered_and_two_ways_to_steer_it() {
    require_root!();
    let bed = Bed::up();
    let rules = bed.rules("198.18.0.5 udp 53 mark 1\n");
    let vars = [("LDSAREF_RULES", rules.as_str())];
    let name = "web.tunnel.test";

    // The rule works for a program's own sockets: client1's DNS answers.
    let out = bed.wrapped(
        &vars,
        &py(),
        &[&program("dns_query.py"), "198.18.0.5", name],
    );
    assert_eq!(out.stdout.trim(), "answer=198.18.1.1", "{out}");

    // glibc's resolver, wrapped the same way, is not steered: the query has
    // no route (ENETUNREACH) and nothing reaches either client.
    let (h1, h2) = (bed.hits("c1"), bed.hits("c2"));
    let out = bed.wrapped(&vars, "getent", &["ahostsv4", name]);
    assert_eq!(out.code(), Some(2), "getent must find nothing: {out}");
    let out = bed.wrapped(
        &vars,
        &py(),
        &[
            "-c",
            &format!(
                "import socket\ntry:\n print(socket.getaddrinfo('{name}', 80, socket.AF_INET)[0][4][0])\nexcept socket.gaierror as e:\n print('gaierror', e.errno)"
            ),
        ],
    );
    assert_eq!(out.stdout.trim(), "gaierror -3", "EAI_AGAIN: {out}");
    assert_eq!((bed.hits("c1"), bed.hits("c2")), (h1, h2), "no query left");
    // What glibc did: connect its DNS socket, with no SO_MARK before it.
    let lib = lib_path().display().to_string();
    let out = bed.plain(
        "srv",
        "strace",
        &[
            "-f",
            "-qq",
            "-e",
            "trace=connect,setsockopt",
            "-e",
            "signal=none",
            "/usr/bin/env",
            &format!("LD_PRELOAD={lib}"),
            &format!("LDSAREF_RULES={rules}"),
            "getent",
            "ahostsv4",
            name,
        ],
    );
    assert!(
        out.stderr.lines().any(|l| l.contains("htons(53)")
            && l.contains("198.18.0.5")
            && l.contains("ENETUNREACH")),
        "glibc's own connect to the nameserver: {out}"
    );
    assert!(!out.stderr.contains("SO_MARK, [1]"), "{out}");

    // Way 1: a local forwarder whose upstream traffic is wrapped. Programs
    // name it in resolv.conf and need no wrapping for their lookups.
    let mut fwd = bed.spawn_srv(
        &[("LD_PRELOAD", &lib), ("LDSAREF_RULES", &rules)],
        &py(),
        &[
            &source_dir()
                .join("scripts/testbed/dns_forwarder.py")
                .display()
                .to_string(),
            "127.0.0.1",
            "198.18.0.5",
        ],
    );
    let set = |addr: &str| {
        let out = run_with_timeout(
            Command::new(testbed_sh()).args(["resolver", &bed.prefix, addr]),
            TIMEOUT,
        );
        assert!(out.success(), "{out}");
    };
    set("127.0.0.1");
    let out = bed.plain("srv", "getent", &["ahostsv4", name]);
    assert!(
        out.stdout.starts_with("198.18.1.1 "),
        "through the wrapped forwarder: {out}"
    );
    let out = bed.wrapped(&vars, "getent", &["ahostsv4", name]);
    assert!(out.stdout.starts_with("198.18.1.1 "), "{out}");
    let _ = fwd.kill();
    let _ = fwd.wait();

    // Way 2: a kernel policy rule for DNS to that server, here into
    // tunnel 2.
    set("198.18.0.5");
    let srv = bed.ns("srv");
    let out = run_with_timeout(
        Command::new("ip").args([
            "-n",
            &srv,
            "rule",
            "add",
            "to",
            "198.18.0.5",
            "ipproto",
            "udp",
            "dport",
            "53",
            "table",
            "102",
            "pref",
            "900",
        ]),
        TIMEOUT,
    );
    assert!(out.success(), "{out}");
    let out = bed.plain("srv", "getent", &["ahostsv4", name]);
    assert!(
        out.stdout.starts_with("198.18.2.2 "),
        "through the kernel rule: {out}"
    );
}

/// socat's own UDP server: the parent peeks at each datagram and forks a
/// child that reads it and answers with sendto (here through `cat`).
#[test]
fn reflect_socat_fork_server() {
    require_root!();
    let bed = Bed::up();
    let rules = bed.rules("198.18.0.5 udp 5000 reflect\n");
    let lib = lib_path().display().to_string();
    let socat = |vars: &[(&str, &str)]| {
        bed.command(
            "srv",
            vars,
            "socat",
            &["UDP-RECVFROM:7005,bind=203.0.113.1,fork", "EXEC:cat"],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let wait_listening = || {
        for _ in 0..100 {
            let ss = bed.plain("srv", "ss", &["-Hunl", "sport = :7005"]);
            if ss.stdout.contains("7005") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("socat did not start listening");
    };

    let mut child = socat(&[("LD_PRELOAD", &lib), ("LDSAREF_RULES", &rules)]);
    wait_listening();
    let got: Vec<_> = ["c1", "c2", "c2", "c1"]
        .iter()
        .map(|c| (*c, ask_from(&bed, c, 7005, &format!("socat-{c}"))))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    for (c, reply) in &got {
        assert_eq!(reply, &format!("socat-{c}"), "{got:?}");
    }

    let mut child = socat(&[]);
    let log = Log::follow(child.stderr.take().unwrap());
    wait_listening();
    for c in ["c1", "c2"] {
        assert_eq!(ask_from(&bed, c, 7005, "plain"), "", "no route back");
    }
    let err = log.until(|text| text.matches("Network is unreachable").count() >= 2);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        err.matches("Network is unreachable").count(),
        2,
        "socat's replies fail unwrapped: {err}"
    );
}

/// `testbed.sh run` removes the bed even when the command fails, and keeps
/// its exit status.
#[test]
fn testbed_run_tears_down_on_failure() {
    require_root!();
    let prefix = format!("ldtb{}nrun-", std::process::id());
    let out = run_with_timeout(
        Command::new(testbed_sh()).args([
            "run",
            &prefix,
            "--",
            "sh",
            "-c",
            &format!(
                "ip netns exec {prefix}srv ip -o link show s-c2 >/dev/null && \
                 ip netns exec {prefix}c1 curl -sS --max-time 5 http://198.18.0.5/ && exit 3"
            ),
        ]),
        Duration::from_secs(60),
    );
    assert_eq!(out.code(), Some(3), "the command's status: {out}");
    assert_eq!(out.stdout.trim(), "client1", "the bed was up: {out}");
    let list = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!list.contains(&prefix), "left behind: {list}");
    assert!(!std::path::Path::new(&format!("/etc/netns/{prefix}srv")).exists());
}
