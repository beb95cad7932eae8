//! `ldsaref updown` as pluto runs it: the environment pluto gives its
//! updown script, the rules directory it keeps, and what `explain` and a
//! wrapped program (under the KLIPS emulator) then do. All traffic is to
//! loopback addresses.

mod common;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cli_path, python3, run_with_timeout, EmuLog, Netns, RunOutput, TempDir};

/// `ldsaref ARGS` with exactly `vars` in its environment (plus PATH).
fn ldsaref(args: &[&str], vars: &[(&str, &str)]) -> RunOutput {
    let mut c = Command::new(cli_path());
    c.args(args).env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in vars {
        c.env(k, v);
    }
    run_with_timeout(&mut c, Duration::from_secs(30))
}

/// The variables pluto sets for `verb` on connection `conn`.
fn pluto<'a>(verb: &'a str, conn: &'a str, client: &'a str, r: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("PLUTO_VERB", verb),
        ("PLUTO_CONNECTION", conn),
        ("PLUTO_PEER_CLIENT", client),
        ("PLUTO_PEER_PROTOCOL", "0"),
        ("PLUTO_PEER_PORT", "0"),
        ("PLUTO_PEER_REF", r),
        ("PLUTO_MY_REF", "7"),
    ]
}

fn updown(dir: &Path, extra: &[&str], vars: &[(&str, &str)]) -> RunOutput {
    let d = dir.to_str().unwrap();
    let mut args = vec!["updown", "--dir", d];
    args.extend_from_slice(extra);
    ldsaref(&args, vars)
}

/// `ldsaref explain --rules DIR [--profile P] ADDR --proto PROTO`.
fn explain(dir: &Path, profile: Option<&str>, addr: &str, proto: &str) -> RunOutput {
    let mut args = vec!["explain", "--rules", dir.to_str().unwrap()];
    if let Some(p) = profile {
        args.extend(["--profile", p]);
    }
    args.extend([addr, "--proto", proto]);
    ldsaref(&args, &[])
}

/// The `decided by:` line of an explain run that must succeed.
#[track_caller]
fn decided_by(out: &RunOutput) -> String {
    assert_eq!(out.code(), Some(0), "{out}");
    out.stdout
        .lines()
        .find(|l| l.starts_with("decided by:"))
        .unwrap_or_else(|| panic!("{out}"))
        .to_string()
}

fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// A rules directory inside a fresh temporary directory (created by
/// `updown` itself, as on a fresh machine).
/// Whether `path` exists within 10 s (what updown leaves running writes it).
fn appears(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    path.exists()
}

fn rules_dir() -> (TempDir, PathBuf) {
    let t = TempDir::new("updown");
    let d = t.join("rules.d");
    (t, d)
}

#[test]
fn overlapping_clients_get_one_profile_each() {
    let (_t, dir) = rules_dir();
    for (conn, r) in [("client1", "101"), ("client2", "202")] {
        let out = updown(&dir, &[], &pluto("up-client", conn, "198.18.0.0/24", r));
        assert_eq!(out.code(), Some(0), "{out}");
    }
    assert_eq!(
        listing(&dir),
        BTreeSet::from(["client1.rules".into(), "client2.rules".into()])
    );
    let text = std::fs::read_to_string(dir.join("client1.rules")).unwrap();
    assert!(
        text.contains("\n[client1]\n198.18.0.0/24 saref 101\n"),
        "{text}"
    );

    let check = ldsaref(&["check", dir.to_str().unwrap()], &[]);
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(
        check.stdout.contains("2 rules, profiles: client1, client2"),
        "{check}"
    );

    let one = decided_by(&explain(&dir, Some("client1"), "198.18.0.5:22", "tcp"));
    assert!(one.ends_with("[client1]: 198.18.0.0/24 saref 101"), "{one}");
    let two = explain(&dir, Some("client2"), "198.18.0.5:22", "tcp");
    assert!(decided_by(&two).ends_with("saref 202"), "{two}");
    assert!(two.stdout.contains("IP_IPSEC_BINDREF=31, [202]"), "{two}");
    // Outside any profile the tunnels' networks are nobody's.
    let none = decided_by(&explain(&dir, None, "198.18.0.5:22", "tcp"));
    assert_eq!(none, "decided by:  no rule");
}

#[test]
fn protocol_port_and_marks_become_the_rule() {
    let (_t, dir) = rules_dir();
    let mut v = pluto("route-client", "ssh", "198.51.100.0/24", "0");
    v.retain(|(k, _)| !k.starts_with("PLUTO_PEER_P"));
    v.extend([
        ("PLUTO_PEER_PROTOCOL", "6"),
        ("PLUTO_PEER_PORT", "22"),
        ("CONNMARK_OUT", "1001/0xffffffff"),
    ]);
    // The block policy behind a mark rule is tested in a namespace of its
    // own (below), not in the host's.
    let out = updown(&dir, &["--no-block-policy", "--no-guard"], &v);
    assert_eq!(out.code(), Some(0), "{out}");
    let hit = decided_by(&explain(&dir, Some("ssh"), "198.51.100.9:22", "tcp"));
    assert!(hit.ends_with("198.51.100.0/24 tcp 22 mark 0x3e9"), "{hit}");
    for (addr, proto) in [("198.51.100.9:23", "tcp"), ("198.51.100.9:22", "udp")] {
        let miss = decided_by(&explain(&dir, Some("ssh"), addr, proto));
        assert_eq!(miss, "decided by:  no rule", "{addr} {proto}");
    }

    // --mark wins over the SAref; IPv6 verbs and clients work the same.
    let v6 = pluto("up-client-v6", "six", "2001:db8:1::/48", "101");
    let out = updown(
        &dir,
        &["--mark", "0x200/0xff00", "--no-block-policy", "--no-guard"],
        &v6,
    );
    assert_eq!(out.code(), Some(0), "{out}");
    let six = explain(&dir, Some("six"), "[2001:db8:1::5]:443", "udp");
    assert!(
        decided_by(&six).ends_with("2001:db8:1::/48 mark 0x200/0xff00"),
        "{six}"
    );
}

#[test]
fn down_removes_the_file_and_other_verbs_do_nothing() {
    let (_t, dir) = rules_dir();
    let up = pluto("up-client", "client1", "198.18.0.0/24", "101");
    assert_eq!(updown(&dir, &[], &up).code(), Some(0));
    // A second SA for the same subnets (a daemon making the new SA before
    // breaking the old one): the rule stays until both are down.
    assert_eq!(updown(&dir, &[], &up).code(), Some(0));
    let mut down_one = up.clone();
    down_one[0] = ("PLUTO_VERB", "down-client");
    assert_eq!(updown(&dir, &[], &down_one).code(), Some(0));
    let hit = decided_by(&explain(&dir, Some("client1"), "198.18.0.5", "tcp"));
    assert!(hit.ends_with("198.18.0.0/24 saref 101"), "{hit}");

    for verb in [
        "prepare-host",
        "prepare-client",
        "update-client",
        "something-new",
    ] {
        let out = ldsaref(
            &["updown", "--dir", dir.to_str().unwrap()],
            &[("PLUTO_VERB", verb)],
        );
        assert_eq!(out.code(), Some(0), "{verb}: {out}");
        assert_eq!(out.stdout, "", "{verb}: {out}");
        assert!(dir.join("client1.rules").exists(), "{verb}");
    }

    // A down that names no subnets takes the whole connection down; a
    // second one finds nothing to do.
    for verb in ["down-client", "down-client"] {
        let out = updown(
            &dir,
            &[],
            &[("PLUTO_VERB", verb), ("PLUTO_CONNECTION", "client1")],
        );
        assert_eq!(out.code(), Some(0), "{out}");
    }
    assert!(listing(&dir).is_empty(), "{:?}", listing(&dir));
    // With the section gone, the profile is unknown: explain (like the
    // library) refuses rather than guess.
    let other = pluto("up-client", "client2", "198.18.0.0/24", "202");
    assert_eq!(updown(&dir, &[], &other).code(), Some(0));
    let gone = explain(&dir, Some("client1"), "198.18.0.5", "tcp");
    assert_eq!(gone.code(), Some(1), "{gone}");
    assert!(
        gone.stderr.contains("unknown profile \"client1\""),
        "{gone}"
    );

    // --on-down empty leaves the section without rules: the global rules
    // apply; --on-down deny refuses the client network until the next up.
    for (mode, want) in [
        ("empty", "decided by:  no rule".to_string()),
        (
            "deny",
            format!(
                "decided by:  {}:4 [client1]: 198.18.0.0/24 deny",
                dir.join("client1.rules").display()
            ),
        ),
    ] {
        assert_eq!(updown(&dir, &[], &up).code(), Some(0));
        let mut down = up.clone();
        down[0] = ("PLUTO_VERB", "unroute-client");
        let out = updown(&dir, &["--on-down", mode], &down);
        assert_eq!(out.code(), Some(0), "{out}");
        let after = decided_by(&explain(&dir, Some("client1"), "198.18.0.5", "tcp"));
        assert_eq!(after, want, "--on-down {mode}");
    }
}

#[test]
fn bad_or_missing_variables_are_named() {
    let (_t, dir) = rules_dir();
    let base = pluto("up-client", "c", "198.18.0.0/24", "101");
    let with = |var: &str, value: Option<&str>| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = base
            .iter()
            .filter(|(k, _)| *k != var)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(value) = value {
            v.push((var.to_string(), value.to_string()));
        }
        v
    };
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("PLUTO_VERB", None, "PLUTO_VERB is not set"),
        ("PLUTO_CONNECTION", None, "PLUTO_CONNECTION is not set"),
        ("PLUTO_CONNECTION", Some(""), "PLUTO_CONNECTION is empty"),
        ("PLUTO_PEER_CLIENT", None, "PLUTO_PEER_CLIENT is not set"),
        (
            "PLUTO_PEER_CLIENT",
            Some("client.example"),
            "PLUTO_PEER_CLIENT=\"client.example\"",
        ),
        ("PLUTO_PEER_CLIENT", Some("198.18.0.1/24"), "host bits set"),
        ("PLUTO_PEER_PROTOCOL", Some("1"), "PLUTO_PEER_PROTOCOL=1"),
        (
            "PLUTO_PEER_PORT",
            Some("65536"),
            "PLUTO_PEER_PORT=\"65536\"",
        ),
        ("PLUTO_PEER_REF", Some("40000"), "PLUTO_PEER_REF"),
        ("PLUTO_PEER_REF", Some("x"), "PLUTO_PEER_REF=\"x\""),
        ("PLUTO_PEER_REF", None, "PLUTO_PEER_REF is unset"),
        ("PLUTO_PEER_REF", Some("0"), "PLUTO_PEER_REF=0"),
    ];
    for (var, value, msg) in cases {
        let vars = with(var, *value);
        let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let out = updown(&dir, &[], &refs);
        assert_eq!(out.code(), Some(1), "{var}={value:?}: {out}");
        assert!(
            out.stderr.starts_with("ldsaref updown: ") && out.stderr.contains(msg),
            "{var}={value:?}: {out}"
        );
        assert!(
            !dir.join("c.rules").exists(),
            "{var}={value:?} wrote a file"
        );
    }
    let bad_mark = updown(&dir, &["--mark", "0xfffffffff"], &base);
    assert_eq!(bad_mark.code(), Some(1), "{bad_mark}");
    assert!(bad_mark.stderr.contains("--mark"), "{bad_mark}");
    // route-client of a connection not up yet has no SA: nothing to write,
    // and no failure (pluto would fail the route).
    let mut route = with("PLUTO_PEER_REF", Some("0"));
    route[0].1 = "route-client".into();
    let refs: Vec<(&str, &str)> = route
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let out = updown(&dir, &[], &refs);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("no SA yet"), "{out}");
    assert!(!dir.join("c.rules").exists());
    let relative = ldsaref(&["updown", "--dir", "rules.d"], &base);
    assert_eq!(relative.code(), Some(1), "{relative}");
    assert!(relative.stderr.contains("absolute"), "{relative}");
}

#[test]
fn names_are_sanitised_and_collisions_refused() {
    let (_t, dir) = rules_dir();
    let out = updown(
        &dir,
        &[],
        &pluto("up-client", "net/1x2", "198.18.1.0/24", "11"),
    );
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(dir.join("net_1x2.rules").exists(), "{:?}", listing(&dir));
    let hit = decided_by(&explain(&dir, Some("net_1x2"), "198.18.1.1", "udp"));
    assert!(hit.ends_with("saref 11"), "{hit}");

    // Another connection whose name sanitises the same way must not take
    // the file over, nor remove it.
    let other = updown(
        &dir,
        &[],
        &pluto("up-client", "net_1x2", "198.18.2.0/24", "12"),
    );
    assert_eq!(other.code(), Some(1), "{other}");
    assert!(other.stderr.contains("\"net/1x2\""), "{other}");
    let down = updown(
        &dir,
        &[],
        &[
            ("PLUTO_VERB", "down-client"),
            ("PLUTO_CONNECTION", "net_1x2"),
        ],
    );
    assert_eq!(down.code(), Some(1), "{down}");
    assert!(dir.join("net_1x2.rules").exists());

    // Never a hidden file, which the loader would skip.
    let out = updown(&dir, &[], &pluto("up-client", ".x", "198.18.3.0/24", "13"));
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(dir.join("_x.rules").exists(), "{:?}", listing(&dir));
}

#[test]
fn a_global_rule_that_would_break_the_directory_is_not_written() {
    let (_t, dir) = rules_dir();
    let a = updown(
        &dir,
        &["--global"],
        &pluto("up-client", "a", "198.18.0.0/24", "1"),
    );
    assert_eq!(a.code(), Some(0), "{a}");
    let text = std::fs::read_to_string(dir.join("a.rules")).unwrap();
    assert!(!text.contains('['), "--global writes no section: {text}");
    let b = updown(
        &dir,
        &["--global"],
        &pluto("up-client", "b", "198.18.0.0/24", "2"),
    );
    assert_eq!(b.code(), Some(1), "{b}");
    assert!(b.stderr.contains("ties with"), "{b}");
    assert_eq!(listing(&dir), BTreeSet::from(["a.rules".to_string()]));
    let hit = decided_by(&explain(&dir, None, "198.18.0.1", "tcp"));
    assert!(hit.ends_with("saref 1"), "{hit}");
}

#[test]
fn files_are_writable_by_their_owner_only_whatever_the_umask() {
    let (_t, dir) = rules_dir();
    let mut c = Command::new("/bin/sh");
    c.args(["-c", "umask 000; exec \"$0\" updown --dir \"$1\""])
        .arg(cli_path())
        .arg(&dir)
        .env_clear();
    for (k, v) in pluto("up-client", "c", "198.18.0.0/24", "5") {
        c.env(k, v);
    }
    let out = run_with_timeout(&mut c, Duration::from_secs(30));
    assert_eq!(out.code(), Some(0), "{out}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("c.rules")), 0o644);
    assert_eq!(mode(&dir), 0o755);
    // The loader refuses rules others may write; these load.
    let check = ldsaref(&["check", dir.to_str().unwrap()], &[]);
    assert_eq!(check.code(), Some(0), "{check}");
}

#[test]
fn many_parallel_invocations_lose_nothing() {
    let (_t, dir) = rules_dir();
    let d = dir.to_str().unwrap().to_string();
    let mut children = Vec::new();
    // 24 connections up at once, each twice; and one connection brought up
    // with 16 different SArefs at once.
    for i in 0..48 {
        let conn = format!("conn{}", i % 24);
        let client = format!("198.18.{}.0/24", i % 24);
        let r = format!("{}", 100 + i % 24);
        children.push(spawn_updown(&d, &conn, &client, &r));
    }
    for i in 0..16 {
        children.push(spawn_updown(
            &d,
            "shared",
            "198.19.0.0/16",
            &format!("{}", 500 + i),
        ));
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let names = listing(&dir);
    assert_eq!(names.len(), 25, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".rules")), "{names:?}");
    let check = ldsaref(&["check", &d], &[]);
    assert_eq!(check.code(), Some(0), "{check}");
    assert!(check.stdout.contains("ok, 25 rules"), "{check}");
    for i in [0, 7, 23] {
        let hit = decided_by(&explain(
            &dir,
            Some(&format!("conn{i}")),
            &format!("198.18.{i}.9"),
            "tcp",
        ));
        assert!(hit.ends_with(&format!("saref {}", 100 + i)), "{hit}");
    }
    // The shared connection's file is one whole version, whichever won.
    let shared = std::fs::read_to_string(dir.join("shared.rules")).unwrap();
    let rule = shared.lines().last().unwrap();
    let r: u32 = rule
        .strip_prefix("198.19.0.0/16 saref ")
        .unwrap()
        .parse()
        .unwrap();
    assert!((500..516).contains(&r), "{shared}");
    assert_eq!(shared.lines().count(), 4, "{shared}");
    // ... and counts every one of the 16 SAs: no call lost another's.
    assert!(shared.contains(" up=16 "), "{shared}");

    // All down at once.
    let children: Vec<_> = (0..24)
        .map(|i| {
            let mut c = Command::new(cli_path());
            c.args(["updown", "--dir", &d])
                .env_clear()
                .env("PLUTO_VERB", "down-client")
                .env("PLUTO_CONNECTION", format!("conn{i}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            c.spawn().unwrap()
        })
        .collect();
    for c in children {
        assert!(c.wait_with_output().unwrap().status.success());
    }
    assert_eq!(listing(&dir), BTreeSet::from(["shared.rules".to_string()]));
}

fn spawn_updown(dir: &str, conn: &str, client: &str, r: &str) -> std::process::Child {
    let mut c = Command::new(cli_path());
    c.args(["updown", "--dir", dir])
        .env_clear()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in pluto("up-client", conn, client, r) {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// A program started under the library with `LDSAREF_PROFILE=CONN` and
/// the KLIPS emulator behind it binds its sockets to that connection's
/// SAref.
#[test]
fn a_wrapped_program_uses_its_connection_sa() {
    let (_t, dir) = rules_dir();
    for (conn, r) in [("client1", "101"), ("client2", "202")] {
        let out = updown(&dir, &[], &pluto("up-client", conn, "127.0.9.0/24", r));
        assert_eq!(out.code(), Some(0), "{out}");
    }
    for (profile, want, port) in [("client1", "101", "4301"), ("client2", "202", "4302")] {
        let log = EmuLog::new();
        let mut c = Command::new(python3());
        c.arg(common::source_dir().join("tests/programs/steer.py"))
            .args(["tcp", &format!("127.0.9.1:{port}")])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("LD_PRELOAD", common::preload_with_emulator())
            .env("LDSAREF_RULES", &dir)
            .env("LDSAREF_PROFILE", profile)
            .env(log.env().0, log.env().1);
        let out = run_with_timeout(&mut c, Duration::from_secs(30));
        assert!(out.stdout.contains("step=connect result=ok"), "{out}");
        let connects = log.find("connect", &[("dst", &format!("127.0.9.1:{port}"))]);
        assert_eq!(connects.len(), 1, "{}", log.text());
        assert_eq!(connects[0].field("bindref"), want, "{}", log.text());
    }
}

/// The operator's whole story: a long-running program, a tunnel coming up
/// (pluto runs updown), then going down; the program follows within a
/// second each time, without a restart.
#[test]
fn a_running_program_follows_the_tunnel_up_and_down() {
    let (t, dir) = rules_dir();
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = EmuLog::new();
    let stop = t.join("stop");
    // Connects every 50 ms until told to stop (or 30 s).
    let script = format!(
        "import socket, os, time\n\
         l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         l.bind(('127.0.9.2', 4303)); l.listen(64)\n\
         end = time.time() + 30\n\
         while time.time() < end and not os.path.exists({stop:?}):\n\
         \x20   s = socket.socket(); s.connect(('127.0.9.2', 4303)); s.close(); l.accept()[0].close()\n\
         \x20   time.sleep(0.05)\n",
        stop = stop.display().to_string()
    );
    let mut c = Command::new(python3());
    c.args(["-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LD_PRELOAD", common::preload_with_emulator())
        .env("LDSAREF_RULES", &dir)
        .env(log.env().0, log.env().1)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();

    let bindref_seen = |want: &str, after: usize| -> Option<usize> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let c = log.find("connect", &[("dst", "127.0.9.2:4303")]);
            if let Some(i) = c
                .iter()
                .skip(after)
                .position(|e| e.field("bindref") == want)
            {
                return Some(after + i);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    };
    let first = bindref_seen("0", 0).expect("the program never connected");

    let up = updown(
        &dir,
        &["--global"],
        &pluto("up-client", "t", "127.0.9.0/24", "77"),
    );
    assert_eq!(up.code(), Some(0), "{up}");
    let t_up = Instant::now();
    let bound = bindref_seen("77", first).unwrap_or_else(|| panic!("{}", log.text()));
    assert!(t_up.elapsed() < Duration::from_secs(3));

    let down = updown(
        &dir,
        &[],
        &[("PLUTO_VERB", "down-client"), ("PLUTO_CONNECTION", "t")],
    );
    assert_eq!(down.code(), Some(0), "{down}");
    bindref_seen("0", bound + 1).unwrap_or_else(|| panic!("{}", log.text()));

    std::fs::write(&stop, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The recommended setup for long-running programs: a profile per tunnel
/// and `--on-down deny`. While the tunnel is down the program's connects
/// to the client network are refused (EACCES), not sent in the clear nor
/// through the SA that was; when it comes up again with a new SAref, the
/// program uses that one.
#[test]
fn a_running_program_is_refused_while_its_tunnel_is_down() {
    let (t, dir) = rules_dir();
    let up = |r: &'static str| pluto("up-client", "t2", "127.0.9.0/24", r);
    assert_eq!(updown(&dir, &[], &up("88")).code(), Some(0));
    let log = EmuLog::new();
    let stop = t.join("stop");
    let results = t.join("results");
    // Connects every 50 ms, appending "ok" or the errno to `results`.
    let script = format!(
        "import socket, os, time\n\
         l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         l.bind(('127.0.9.3', 4304)); l.listen(64)\n\
         end = time.time() + 30\n\
         while time.time() < end and not os.path.exists({stop:?}):\n\
         \x20   s = socket.socket()\n\
         \x20   try:\n\
         \x20       s.connect(('127.0.9.3', 4304)); l.accept()[0].close(); r = 'ok'\n\
         \x20   except OSError as e:\n\
         \x20       r = 'errno=%d' % e.errno\n\
         \x20   s.close()\n\
         \x20   with open({results:?}, 'a') as f: f.write(r + '\\n')\n\
         \x20   time.sleep(0.05)\n",
        stop = stop.display().to_string(),
        results = results.display().to_string(),
    );
    let mut c = Command::new(python3());
    c.args(["-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LD_PRELOAD", common::preload_with_emulator())
        .env("LDSAREF_RULES", &dir)
        .env("LDSAREF_PROFILE", "t2")
        .env(log.env().0, log.env().1)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = c.spawn().unwrap();

    let wait_for = |what: &str, pred: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pred() {
            assert!(
                Instant::now() < deadline,
                "{what}: {}\n{}",
                log.text(),
                std::fs::read_to_string(&results).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let bound_to = |r: &str| {
        !log.find("connect", &[("dst", "127.0.9.3:4304"), ("bindref", r)])
            .is_empty()
    };
    let lines = || std::fs::read_to_string(&results).unwrap_or_default();
    wait_for("bound to 88", &|| bound_to("88"));

    let mut down = up("88");
    down[0] = ("PLUTO_VERB", "down-client");
    let out = updown(&dir, &["--on-down", "deny"], &down);
    assert_eq!(out.code(), Some(0), "{out}");
    let refused_from = lines().lines().count();
    wait_for("refused with EACCES", &|| {
        lines().lines().skip(refused_from).any(|l| l == "errno=13")
    });

    assert_eq!(updown(&dir, &[], &up("89")).code(), Some(0));
    wait_for("bound to 89", &|| bound_to("89"));

    std::fs::write(&stop, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Never a connect without the SA: refused ones never reach connect().
    assert!(
        log.find("connect", &[("dst", "127.0.9.3:4304"), ("bindref", "0")])
            .is_empty(),
        "{}",
        log.text()
    );
}

/// Packets received on `dev` in `ns` so far.
fn rx_packets(ns: &Netns, dev: &str) -> u64 {
    let out = ns.ip(&["-s", "-o", "link", "show", dev]);
    // `... RX: bytes packets ...\    1234 5 ...`: the second number after "RX:".
    let after = out.split("RX:").nth(1).unwrap_or_else(|| panic!("{out}"));
    let nums: Vec<u64> = after
        .split(|c: char| c.is_whitespace() || c == '\\')
        .filter_map(|w| w.parse().ok())
        .collect();
    nums[1]
}

/// A gateway namespace with a route to the client network 198.18.0.0/24
/// through a veth to a peer namespace (the mark's route) and no IPsec
/// policy of a daemon: the state right after the daemon removed its own.
struct Gateway {
    _t: TempDir,
    dir: PathBuf,
    gw: Netns,
    peer: Netns,
}

/// What the probes send: a datagram or a connect with the connection's
/// mark, or a datagram without it; each prints `sent` or the errno.
const PROBE: &str = r#"
import errno, socket, struct, sys
mark = struct.pack("I", 0x80650000)
def outcome(f):
    try:
        f()
        return "sent"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return errno.errorcode[e.errno]
def udp(marked):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if marked:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    s.sendto(b"x", ("198.18.0.5", 7))
def tcp():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, mark)
    s.settimeout(2)
    s.connect(("198.18.0.5", 80))
which = sys.argv[1]
print(outcome({"udp-marked": lambda: udp(True), "tcp-marked": tcp, "udp-plain": lambda: udp(False)}[which]))
"#;

impl Gateway {
    fn new() -> Gateway {
        let (t, dir) = rules_dir();
        let gw = Netns::new();
        let peer = Netns::new();
        // No IPv6: its neighbour discovery would be counted on the wire.
        for ns in [&gw, &peer] {
            let mut c = ns.command("sysctl");
            c.args([
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
            run_with_timeout(&mut c, Duration::from_secs(10)).assert_success();
        }
        gw.veth_to(&peer, "s-c1", "192.0.2.1/30", "c-srv", "192.0.2.2/30");
        gw.ip(&[
            "route",
            "add",
            "198.18.0.0/24",
            "via",
            "192.0.2.2",
            "dev",
            "s-c1",
        ]);
        Gateway {
            _t: t,
            dir,
            gw,
            peer,
        }
    }

    /// charon's call of `ldsaref updown [extra]` for connection c1, whose
    /// mark is 0x80650000.
    fn call(&self, verb: &str, extra: &[&str]) {
        let vars = [
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            ("PLUTO_VERSION", "1.1"),
            ("PLUTO_VERB", verb),
            ("PLUTO_CONNECTION", "c1"),
            ("PLUTO_MY_CLIENT", "203.0.113.1/32"),
            ("PLUTO_PEER_CLIENT", "198.18.0.0/24"),
            ("PLUTO_MARK_OUT", "2154102784/0xffffffff"),
        ];
        let mut c = self.gw.command_env(&vars, cli_path());
        c.args(["updown", "--dir", self.dir.to_str().unwrap()])
            .args(extra);
        let out = run_with_timeout(&mut c, Duration::from_secs(30));
        assert_eq!(out.code(), Some(0), "{verb}: {out}");
    }

    fn probe(&self, which: &str) -> String {
        let mut c = self.gw.command(python3());
        c.args(["-c", PROBE, which]);
        let out = run_with_timeout(&mut c, Duration::from_secs(30));
        assert_eq!(out.code(), Some(0), "{out}");
        out.stdout.trim().to_string()
    }

    /// Packets that reached the peer so far.
    fn wire(&self) -> u64 {
        rx_packets(&self.peer, "c-srv")
    }

    fn policies(&self) -> String {
        self.gw.ip(&["xfrm", "policy", "list"])
    }
}

/// The fallback block policy, in the kernel. Once `updown` has brought
/// the marked connection up, and after it went down again, a datagram or
/// a connect with the connection's mark fails at once (EPERM) and nothing
/// reaches the wire; without the mark the same datagram leaves, so the
/// route was there to take.
#[test]
fn a_marked_packet_meets_a_block_not_the_clear_once_the_policy_is_gone() {
    require_root!();
    let g = Gateway::new();
    g.call("up-client", &[]);
    let blocks = g.policies();
    assert_eq!(blocks.matches("action block").count(), 2, "{blocks}");
    for verb in ["up-client", "down-client"] {
        if verb == "down-client" {
            g.call(verb, &[]);
            assert!(listing(&g.dir).is_empty(), "the file goes with the last SA");
        }
        let before = g.wire();
        assert_eq!(g.probe("udp-marked"), "EPERM", "after {verb}");
        assert_eq!(g.probe("tcp-marked"), "EPERM", "after {verb}");
        assert_eq!(g.wire(), before, "after {verb}: nothing on the wire");
    }
    // The blocks stay for the next time the tunnel is down.
    let blocks = g.policies();
    assert_eq!(blocks.matches("action block").count(), 2, "{blocks}");
    let before = g.wire();
    assert_eq!(g.probe("udp-plain"), "sent");
    assert!(g.wire() > before, "unmarked, the route is taken");
}

/// The netfilter guard, in the kernel: a policy that lets the client
/// network through in the clear and matches every mark (as a daemon's
/// passthrough shunt installed without the connection's mark would),
/// with a better precedence than the block. The kernel picks it, not the
/// block; the guard still drops the marked packets (UDP fails with EPERM,
/// a connect gets no answer) and nothing reaches the wire. Without the
/// guard the same datagram leaves in the clear: what it guards against.
#[test]
fn a_marked_packet_never_leaves_in_the_clear_whatever_policy_matches_it() {
    require_root!();
    let g = Gateway::new();
    g.call("up-client", &[]);
    // A second up finds its guard installed and changes nothing.
    let table = || {
        let mut c = g.gw.command("nft");
        c.args(["list", "table", "inet", "ldsaref_guard"]);
        let out = run_with_timeout(&mut c, Duration::from_secs(10));
        assert_eq!(out.code(), Some(0), "{out}");
        out.stdout
    };
    let first = table();
    g.call("up-client", &[]);
    assert_eq!(table(), first);
    assert_eq!(first.matches("jump g_").count(), 1, "{first}");
    assert!(
        first.contains("meta mark 0x80650000 ip daddr 198.18.0.0/24 rt ipsec missing"),
        "{first}"
    );
    g.call("down-client", &[]);

    g.gw.ip(&[
        "xfrm",
        "policy",
        "add",
        "src",
        "0.0.0.0/0",
        "dst",
        "198.18.0.0/24",
        "dir",
        "out",
        "priority",
        "100",
        "action",
        "allow",
    ]);
    let before = g.wire();
    assert_eq!(g.probe("udp-marked"), "EPERM");
    assert_eq!(g.probe("tcp-marked"), "timeout");
    assert_eq!(g.wire(), before, "nothing on the wire");
    let dropped = table();
    assert!(
        !dropped.contains("counter packets 0 bytes 0 drop"),
        "the guard's counter: {dropped}"
    );

    let mut c = g.gw.command("nft");
    c.args(["delete", "table", "inet", "ldsaref_guard"]);
    run_with_timeout(&mut c, Duration::from_secs(10)).assert_success();
    assert_eq!(g.probe("udp-marked"), "sent", "without the guard");
    assert!(g.wire() > before, "without the guard, in the clear");
}

/// An xfrm-interface connection whose interface is not there: the real
/// dump of this namespace's links (over netlink) finds none with the
/// id, and the call fails naming it, with nothing written. (This host's
/// kernel may have no xfrm interfaces at all; the end-to-end guest names
/// real ones.)
#[test]
fn an_interface_id_without_its_interface_is_refused() {
    require_root!();
    let (_t, dir) = rules_dir();
    let ns = Netns::new();
    let other = Netns::new();
    ns.veth_to(&other, "s-c1", "192.0.2.1/30", "c-srv", "192.0.2.2/30");
    let vars = [
        ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        ("PLUTO_VERSION", "1.1"),
        ("PLUTO_VERB", "up-client"),
        ("PLUTO_CONNECTION", "c1"),
        ("PLUTO_PEER_CLIENT", "198.18.0.0/24"),
        ("PLUTO_IF_ID_OUT", "7"),
    ];
    let mut c = ns.command_env(&vars, cli_path());
    c.args(["updown", "--dir", dir.to_str().unwrap()]);
    let out = run_with_timeout(&mut c, Duration::from_secs(30));
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("PLUTO_IF_ID_OUT=7: no xfrm interface has if_id 7"),
        "{out}"
    );
    assert!(!dir.exists() || listing(&dir).is_empty(), "nothing written");
}

/// A background compile waits for its turn (another compile of the same
/// rules) without holding the rules directory: while the turn is held,
/// the daemon's next updown calls still return, and the index, once the
/// turn comes, has the newest rules. (The daemon holds its event bus for
/// each call: a compile holding the directory delayed every next call by
/// the rules' 50 ms settling time and the compile itself.)
#[test]
fn a_waiting_compile_does_not_hold_up_the_next_updown() {
    let (t, dir) = rules_dir();
    let index = t.join("rules.d.index");
    // The compiles' turn: a lock on the directory that holds the index,
    // held here by flock(1) itself (-o: not by its sleep), until killed.
    let mut holder = Command::new("flock")
        .args([
            "-o",
            t.path().to_str().unwrap(),
            "-c",
            "echo held; exec sleep 120",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock (util-linux)");
    let mut held = [0u8; 5];
    std::io::Read::read_exact(holder.stdout.as_mut().unwrap(), &mut held).unwrap();

    for (conn, net, r) in [
        ("c1", "198.18.0.0/24", "101"),
        ("c2", "198.18.1.0/24", "202"),
    ] {
        let out = updown(&dir, &[], &pluto("up-client", conn, net, r));
        assert_eq!(out.code(), Some(0), "{out}");
        assert!(out.stdout.contains("compiling in the background"), "{out}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(!index.exists(), "compiled without waiting for its turn");

    let _ = holder.kill();
    let _ = holder.wait();
    assert!(appears(&index), "no index 10 s after the turn came");
    let hit = decided_by(&explain(&dir, Some("c2"), "198.18.1.5", "udp"));
    assert!(hit.ends_with("198.18.1.0/24 saref 202"), "{hit}");
}

/// The index follows the directory: compiled in the background after an
/// up (updown itself does not wait for it: the daemon waits for updown),
/// removed with the last rules file.
#[test]
fn the_index_follows_the_rules_directory() {
    let (t, dir) = rules_dir();
    let index = t.join("rules.d.index");
    let up = pluto("up-client", "c1", "198.18.0.0/24", "101");
    let out = updown(&dir, &[], &up);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("compiling in the background"), "{out}");
    assert!(appears(&index), "no index after 10 s");
    // A valid index: check --compile's reader takes it (explain uses it).
    let hit = decided_by(&explain(&dir, Some("c1"), "198.18.0.5", "tcp"));
    assert!(hit.ends_with("198.18.0.0/24 saref 101"), "{hit}");
    let mut down = up.clone();
    down[0] = ("PLUTO_VERB", "down-client");
    let out = updown(&dir, &[], &down);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        !index.exists(),
        "the index goes with the last rules file: {out}"
    );
}
