//! Fail closed on this stock kernel: when a rule says the traffic must go
//! through an SA and that cannot be done (no SAref support, a broken rules
//! file, a bad variable, an unknown profile), the call fails and a
//! listener in the test's own network namespace receives nothing. With
//! `LDSAREF_ON_ERROR=warn` the same traffic arrives, unsteered.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use common::{lib_path, python3, run_with_timeout, Netns, RunOutput, TempDir};

const TARGET: &str = "192.0.2.1";
const PORT: &str = "4300";

struct Bed {
    ns: Netns,
    dir: TempDir,
}

impl Bed {
    fn new() -> Bed {
        let ns = Netns::new();
        ns.add_addr("lo", "192.0.2.1/32");
        Bed {
            ns,
            dir: TempDir::new("failclosed"),
        }
    }

    fn listen(&self) -> Child {
        let mut child = self
            .ns
            .command(python3())
            .arg(common::source_dir().join("tests/programs/listener.py"))
            .args([TARGET, PORT, "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        child
    }

    /// Runs `program args` in the namespace under the library with `env`.
    fn client(&self, env: &[(&str, &str)], program: &str, args: &[&str]) -> RunOutput {
        let lib = lib_path().display().to_string();
        let mut vars = vec![("LD_PRELOAD", lib.as_str())];
        vars.extend_from_slice(env);
        let mut c = self.ns.command_env(&vars, program);
        c.args(args);
        common::clear_ldsaref_env(&mut c);
        run_with_timeout(&mut c, Duration::from_secs(20))
    }

    fn rules(&self, text: &str) -> String {
        self.dir.write("rules", text).display().to_string()
    }
}

fn counts(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn curl(bed: &Bed, env: &[(&str, &str)]) -> RunOutput {
    bed.client(
        env,
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            &format!("http://{TARGET}:{PORT}/"),
        ],
    )
}

fn python_udp(bed: &Bed, env: &[(&str, &str)]) -> RunOutput {
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ntry:\n s.sendto(b'x',('{TARGET}',{PORT})); print('sent')\nexcept OSError as e: print('errno', e.errno)"
    );
    bed.client(env, python3().to_str().unwrap(), &["-c", &code])
}

#[test]
fn no_saref_support_refuses_tcp_and_udp() {
    require_root!();
    let bed = Bed::new();
    let rules = bed.rules(&format!("{TARGET} saref 100\n"));
    let l = bed.listen();
    let c = curl(&bed, &[("LDSAREF_RULES", &rules)]);
    assert_eq!(c.code(), Some(7), "curl must fail to connect: {c}");
    assert!(
        c.stderr
            .contains("this kernel has no SAref support (IP_IPSEC_BINDREF=31)"),
        "{c}"
    );
    assert!(
        c.stderr.contains("LDSAREF_ON_ERROR=warn sends without it"),
        "{c}"
    );
    let p = python_udp(&bed, &[("LDSAREF_RULES", &rules)]);
    assert!(p.stdout.contains("errno 92"), "{p}");
    let n = bed.client(
        &[("LDSAREF_RULES", &rules)],
        "/bin/sh",
        &["-c", &format!("echo hi | nc -u -w1 -q0 {TARGET} {PORT}")],
    );
    assert!(
        !n.success() || n.stderr.contains("Protocol not available"),
        "{n}"
    );
    assert_eq!(counts(l), "tcp=0 udp=0");
}

#[test]
fn warn_lets_the_traffic_through_unsteered() {
    require_root!();
    let bed = Bed::new();
    let rules = bed.rules(&format!("{TARGET} saref 100\n"));
    let l = bed.listen();
    let env = [
        ("LDSAREF_RULES", rules.as_str()),
        ("LDSAREF_ON_ERROR", "warn"),
    ];
    let c = curl(&bed, &env);
    assert!(
        c.stderr
            .contains("sending without it (LDSAREF_ON_ERROR=warn)"),
        "{c}"
    );
    let p = python_udp(&bed, &env);
    assert!(p.stdout.contains("sent"), "{p}");
    assert_eq!(counts(l), "tcp=1 udp=1");
}

#[test]
fn a_broken_rules_file_refuses_every_inet_connect_and_send() {
    require_root!();
    let bed = Bed::new();
    let rules = bed.rules("198.18.0.0/15 saref 100\n198.18.0.0/15 mark 0x5\n");
    let l = bed.listen();
    // Even to a destination no rule could have matched: the library cannot
    // know what must be protected.
    let c = curl(
        &bed,
        &[("LDSAREF_RULES", &rules), ("LDSAREF_MODE", "nfmark")],
    );
    assert_eq!(c.code(), Some(7), "{c}");
    assert!(c.stderr.contains(&format!("{rules}:2:1: ")), "{c}");
    assert!(
        c.stderr
            .contains("refused with EACCES (LDSAREF_ON_ERROR=fail)"),
        "{c}"
    );
    assert_eq!(c.stderr.matches("ldsaref[").count(), 1, "one log line: {c}");
    let p = python_udp(&bed, &[("LDSAREF_RULES", &rules)]);
    assert!(p.stdout.contains("errno 13"), "{p}");
    assert_eq!(counts(l), "tcp=0 udp=0");
}

#[test]
fn bad_variables_and_unknown_profiles_fail_closed() {
    require_root!();
    let bed = Bed::new();
    let rules = bed.rules("[client1]\n198.18.0.0/15 saref 100\n");
    let l = bed.listen();
    for (env, needle) in [
        (vec![("IPSEC_SAREF", "0")], "IPSEC_SAREF"),
        (vec![("IPSEC_SAREF", "40000")], "IPSEC_SAREF"),
        (vec![("IPSEC_SAREF", "")], "IPSEC_SAREF"),
        (vec![("IPSEC_SAREF", "12abc")], "IPSEC_SAREF"),
        (vec![("LDSAREF_MODE", "tunnel")], "LDSAREF_MODE"),
        (vec![("LDSAREF_KLIPS_ABI", "31")], "LDSAREF_KLIPS_ABI"),
        (vec![("LDSAREF_RULES", "relative/rules")], "LDSAREF_RULES"),
        (
            vec![("LDSAREF_RULES", "/nonexistent/rules")],
            "/nonexistent/rules",
        ),
        (
            vec![
                ("LDSAREF_RULES", rules.as_str()),
                ("LDSAREF_PROFILE", "client9"),
            ],
            "client9",
        ),
    ] {
        let c = curl(&bed, &env);
        assert_eq!(c.code(), Some(7), "{env:?}: {c}");
        assert!(c.stderr.contains(needle), "{env:?}: {c}");
    }
    assert_eq!(counts(l), "tcp=0 udp=0");
}

#[test]
fn unix_sockets_and_unmatched_traffic_are_untouched() {
    require_root!();
    let bed = Bed::new();
    let rules = bed.rules("198.18.0.0/15 saref 100\n");
    let l = bed.listen();
    // No rule matches the target: nothing to protect, nothing refused,
    // even though this kernel has no SAref support.
    let c = curl(&bed, &[("LDSAREF_RULES", &rules)]);
    assert!(!c.stderr.contains("ldsaref["), "{c}");
    let p = bed.client(
        &[("IPSEC_SAREF", "7")],
        python3().to_str().unwrap(),
        &[
            "-c",
            "import socket\na,b=socket.socketpair()\na.send(b'x')\nprint(b.recv(1))",
        ],
    );
    assert!(p.stdout.contains("b'x'"), "{p}");
    assert_eq!(counts(l), "tcp=1 udp=0");
}
