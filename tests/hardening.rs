//! No panic crosses the FFI boundary, and errors pass through untouched.
//!
//! `LDSAREF_TEST_PANIC=1` makes every connect/send decision panic: the
//! call must fail with EACCES under `LDSAREF_ON_ERROR=fail` and go out
//! unsteered under `warn`, the program must keep running, and one log
//! line must say `internal error`. Non-blocking connects, EAGAIN, EINTR
//! and errno after successful and failing calls must be what they are
//! without the library: the driver (`tests/programs/edge.c`) runs once
//! without any preload and once under the library and the KLIPS emulator
//! with rules matching every destination, in a network namespace of the
//! test's own, and the two transcripts must be identical.

mod common;
#[path = "programs/cprog.rs"]
mod cprog;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{run_with_timeout, EmuLog, Netns, RunOutput, TempDir};

const RULES: &str = "\
127.0.3.40          saref 801
127.0.3.41          saref 802
198.51.100.0/24 tcp saref 803
";

/// Answers nothing: the namespace sends SYNs to it through a veth pair
/// whose other end drops them (no address there, no forwarding).
const SILENT: &str = "198.51.100.2";

// The variables each run starts without.
use common::LDSAREF_VARS as VARS;

struct Bed {
    ns: Netns,
    dir: TempDir,
    log: EmuLog,
}

impl Bed {
    fn new() -> Bed {
        let ns = Netns::new();
        ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        ns.add_addr("v0", "198.51.100.1/24");
        ns.ip(&["link", "set", "v0", "up"]);
        ns.ip(&["link", "set", "v1", "up"]);
        // No ARP: the SYN leaves at once and is dropped at v1.
        ns.ip(&[
            "neigh",
            "add",
            SILENT,
            "lladdr",
            "02:00:00:00:00:02",
            "dev",
            "v0",
            "nud",
            "permanent",
        ]);
        let dir = TempDir::new("hardening");
        let rules = dir.write("rules", RULES);
        fs::set_permissions(&rules, fs::Permissions::from_mode(0o644)).unwrap();
        Bed {
            ns,
            dir,
            log: EmuLog::new(),
        }
    }

    /// The driver in the namespace; `preload`: under the library and the
    /// emulator with [`RULES`], else with no preload at all.
    fn edge(&self, preload: bool, extra: &[(&str, &str)], args: &[&str]) -> RunOutput {
        let pre = common::preload_with_emulator();
        let (k, v) = self.log.env();
        let rules = self.dir.join("rules").display().to_string();
        let mut vars: Vec<(&str, &str)> = vec![];
        if preload {
            vars.extend([
                ("LD_PRELOAD", pre.as_str()),
                (k, v.as_str()),
                ("LDSAREF_RULES", rules.as_str()),
            ]);
        }
        vars.extend_from_slice(extra);
        let mut c = self.ns.command_env(&vars, cprog::build("edge"));
        c.args(args);
        for v in VARS {
            c.env_remove(v);
        }
        run_with_timeout(&mut c, Duration::from_secs(30))
    }

    /// Runs `args` without and with the library; both must succeed and
    /// print the same steps. Returns the transcript.
    #[track_caller]
    fn same_both_ways(&self, args: &[&str]) -> String {
        let plain = self.edge(false, &[], args);
        let wrapped = self.edge(true, &[], args);
        assert!(plain.success(), "without the library: {plain}");
        assert!(wrapped.success(), "with the library: {wrapped}");
        println!("{args:?}:\n{}", wrapped.stdout);
        assert_eq!(
            wrapped.stdout, plain.stdout,
            "with the library (left) vs without (right); stderr: {}",
            wrapped.stderr
        );
        assert!(
            !wrapped.stderr.contains("ldsaref["),
            "the library complained: {}",
            wrapped.stderr
        );
        wrapped.stdout
    }
}

/// `step=NAME ret=R errno=E` lines as (name, "ret=R errno=E").
fn steps(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("step="))
        .map(|l| {
            let (name, rest) = l.split_once(' ').unwrap();
            (name.to_string(), rest.to_string())
        })
        .collect()
}

fn step<'a>(s: &'a [(String, String)], name: &str) -> &'a str {
    s.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no step {name}: {s:?}"))
        .1
        .as_str()
}

fn internal_error_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("internal error"))
        .collect()
}

#[test]
fn injected_panic_fails_closed_under_fail() {
    require_root!();
    let bed = Bed::new();
    let out = bed.edge(
        true,
        &[("LDSAREF_TEST_PANIC", "1")],
        &["panic", "127.0.3.40:4600"],
    );
    println!("{out}");
    assert!(
        out.success(),
        "the program must keep running (no abort): {out}"
    );
    assert!(out.stdout.contains("\nalive\n"), "{out}");
    let s = steps(&out.stdout);
    let refused: Vec<_> = s
        .iter()
        .filter(|(n, _)| n.starts_with("connect") || n == "sendto")
        .collect();
    assert_eq!(refused.len(), 8, "{s:?}");
    for (n, r) in refused {
        assert_eq!(r, "ret=-1 errno=13", "{n} under fail: {s:?}");
    }
    // Nothing reached the (emulated) kernel.
    assert!(
        bed.log.events().iter().all(|e| e.kind == "setsockopt"),
        "{}",
        bed.log.text()
    );
    let lines = internal_error_lines(&out.stderr);
    assert_eq!(
        lines.len(),
        1,
        "one log line should say `internal error`, got {}:\n{}",
        lines.len(),
        out.stderr
    );
}

#[test]
fn injected_panic_goes_through_unsteered_under_warn() {
    require_root!();
    let bed = Bed::new();
    let out = bed.edge(
        true,
        &[("LDSAREF_TEST_PANIC", "1"), ("LDSAREF_ON_ERROR", "warn")],
        &["panic", "127.0.3.40:4601"],
    );
    println!("{out}");
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("\nalive\n"), "{out}");
    let s = steps(&out.stdout);
    for (n, r) in &s {
        let want = match n.as_str() {
            "sendto" | "send" => "ret=1 errno=77",
            "connect_udp" => "ret=0 errno=77",
            // Went out; the closed port answered.
            "connect_tcp" => "ret=-1 errno=111",
            _ => unreachable!(),
        };
        assert_eq!(r, want, "{n} under warn: {s:?}");
    }
    let ev: Vec<_> = bed
        .log
        .events()
        .into_iter()
        .filter(|e| e.kind != "setsockopt")
        .collect();
    assert_eq!(ev.len(), 11, "{}", bed.log.text());
    assert!(
        ev.iter()
            .all(|e| e.get("bindref") == Some("0") && e.get("refinfo").is_none_or(|r| r == "none")),
        "unsteered expected: {}",
        bed.log.text()
    );
    let lines = internal_error_lines(&out.stderr);
    assert_eq!(
        lines.len(),
        1,
        "one log line should say `internal error`, got {}:\n{}",
        lines.len(),
        out.stderr
    );
}

#[test]
fn nonblocking_connect_passes_through() {
    require_root!();
    let bed = Bed::new();
    let silent = format!("{SILENT}:4610");
    let out = bed.same_both_ways(&["nonblock", &silent, "127.0.3.41:4611"]);
    let s = steps(&out);
    assert_eq!(step(&s, "silent_connect1"), "ret=-1 errno=115"); // EINPROGRESS
    assert_eq!(step(&s, "silent_connect2"), "ret=-1 errno=114"); // EALREADY
    assert_eq!(step(&s, "local_connect1"), "ret=-1 errno=115");
    assert_eq!(step(&s, "local_connect2"), "ret=0 errno=77");
    assert_eq!(step(&s, "local_connect3"), "ret=-1 errno=106"); // EISCONN
                                                                // And the rule was applied on the way.
    let c = bed.log.of_kind("connect");
    let bound: Vec<(&str, &str)> = c
        .iter()
        .map(|e| (e.field("dst"), e.field("bindref")))
        .collect();
    assert_eq!(
        bound,
        [
            (silent.as_str(), "803"),
            (silent.as_str(), "803"),
            ("127.0.3.41:4611", "802"),
            ("127.0.3.41:4611", "802"),
            ("127.0.3.41:4611", "802"),
        ],
        "{}",
        bed.log.text()
    );
}

#[test]
fn eagain_passes_through() {
    require_root!();
    let bed = Bed::new();
    // Each run its own port: the first run's unread connection lingers.
    let plain = bed.edge(false, &[], &["eagain", "127.0.3.41:4620"]);
    let wrapped = bed.edge(true, &[], &["eagain", "127.0.3.41:4621"]);
    assert!(plain.success() && wrapped.success(), "{plain}\n{wrapped}");
    println!("{}", wrapped.stdout);
    assert_eq!(wrapped.stdout, plain.stdout, "{wrapped}");
    for (n, r) in steps(&wrapped.stdout) {
        assert_eq!(r, "ret=-1 errno=11", "{n}: EAGAIN expected");
    }
    assert_eq!(steps(&wrapped.stdout).len(), 9);
    assert_eq!(
        bed.log.find("connect", &[("bindref", "802")]).len(),
        1,
        "{}",
        bed.log.text()
    );
}

#[test]
fn eintr_passes_through() {
    require_root!();
    let bed = Bed::new();
    let silent = format!("{SILENT}:4630");
    let out = bed.same_both_ways(&["eintr", &silent]);
    let s = steps(&out);
    assert_eq!(step(&s, "connect"), "ret=-1 errno=4");
    assert_eq!(step(&s, "recvfrom"), "ret=-1 errno=4");
    assert_eq!(
        bed.log
            .find("connect", &[("dst", &silent), ("bindref", "803")])
            .len(),
        1,
        "{}",
        bed.log.text()
    );
}

#[test]
fn errno_is_preserved_on_every_path() {
    require_root!();
    let bed = Bed::new();
    let out = bed.same_both_ways(&["errno", "127.0.3.40:4640", "127.0.3.41:4641"]);
    let s = steps(&out);
    assert!(s.len() > 25, "{s:?}");
    // The first socket() loads the configuration and probes the kernel:
    // errno must still be the caller's.
    assert_eq!(step(&s, "socket_first"), "ret=4 errno=77");
    assert_eq!(step(&s, "sendto"), "ret=5 errno=77");
    assert_eq!(step(&s, "send_refused"), "ret=-1 errno=111");
    // The library did act on these calls (so its paths were exercised).
    let tagged = bed.log.find("send", &[("refinfo", "801")]);
    assert!(tagged.len() >= 6, "{}", bed.log.text());
    assert!(
        !bed.log.find("connect", &[("bindref", "802")]).is_empty(),
        "{}",
        bed.log.text()
    );
}

/// A bad pointer is the program's bug, but the kernel answers it with
/// EFAULT. A process the library has nothing to steer for (no rules, no
/// `IPSEC_SAREF`) must behave exactly as without it, down to that EFAULT:
/// the library reads none of the caller's structures then. With rules in
/// force it must read the destination to decide, and a bad pointer faults
/// there as in any user-space code (a documented limit, README "Limits").
#[test]
fn bad_pointers_give_efault_when_nothing_is_steered() {
    require_root!();
    let bed = Bed::new();
    let lib = common::lib_path().display().to_string();
    for case in ["sendmsg", "sendmmsg", "sendto", "connect"] {
        let plain = bed.edge(false, &[], &["efault", case, "127.0.3.40:4650"]);
        assert_eq!(
            plain.stdout.trim(),
            format!("step={case} ret=-1 errno=14"),
            "{plain}"
        );
        let wrapped = bed.edge(
            false,
            &[("LD_PRELOAD", lib.as_str())],
            &["efault", case, "127.0.3.40:4650"],
        );
        assert!(wrapped.success(), "{case}: {wrapped}");
        assert_eq!(wrapped.stdout, plain.stdout, "{case}");
    }
}
