//! The `ldsaref` command as a user meets it: exit codes, messages, `run`
//! replacing itself with the program, refusing unreachable targets.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{cli_path, run_with_timeout, RunOutput, TempDir};

fn ldsaref(args: &[&str]) -> RunOutput {
    let mut c = Command::new(cli_path());
    c.args(args);
    common::clear_ldsaref_env(&mut c);
    run_with_timeout(&mut c, Duration::from_secs(30))
}

const GOOD: &str = "\
10.1.0.0/16                saref 1234
10.2.0.0/16   tcp 22       saref 2000
2001:db8::/32              mark 0x200
192.0.2.99                 deny
[client1]
198.18.0.0/24              saref 101
[client2]
198.18.0.0/24              saref 202
";

#[test]
fn check_accepts_a_good_file() {
    let d = TempDir::new("cli");
    let f = d.write("rules", GOOD);
    let out = ldsaref(&["check", f.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .contains("ok, 6 rules, profiles: client1, client2"),
        "{out}"
    );
}

#[test]
fn check_reports_file_line_col() {
    let d = TempDir::new("cli");
    let cases: &[(&str, &str, &str)] = &[
        ("10.0.0.0/8 sarf 1\n", ":1:12: ", "\"sarf\""),
        ("# c\n10.0.0.0/8 saref 40000\n", ":2:18: ", "40000"),
        ("10.0.0.0/33 pass\n", ":1:1: ", "33"),
        ("[a\n", ":1:", "]"),
        ("10.0.0.0/8 pass\n10.0.0.0/8 deny\n", ":2:1: ", "rules:1"),
        ("10.0.0.0/8 tcp 30-20 pass\n", ":1:16: ", "30-20"),
    ];
    for (text, pos, msg) in cases {
        let f = d.write("rules", text);
        let out = ldsaref(&["check", f.to_str().unwrap()]);
        assert_eq!(out.code(), Some(1), "{text:?}: {out}");
        let line = out.stderr.trim();
        assert!(
            line.starts_with(&format!("{}{pos}", f.display())),
            "{text:?}: {line}"
        );
        assert!(line.contains(msg), "{text:?}: {line}");
    }
}

#[test]
fn check_missing_file_is_an_error() {
    let out = ldsaref(&["check", "/nonexistent/ldsaref/rules"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("/nonexistent/ldsaref/rules"), "{out}");
}

#[test]
fn explain_names_the_rule_and_the_kernel_call() {
    let d = TempDir::new("cli");
    let f = d.write("rules", GOOD);
    let f = f.to_str().unwrap();
    let out = ldsaref(&[
        "explain",
        "--rules",
        f,
        "--profile",
        "client2",
        "--proto",
        "tcp",
        "198.18.0.5:80",
    ]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .contains(&format!("{f}:8 [client2]: 198.18.0.0/24 saref 202")),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("setsockopt(fd, SOL_IP, IP_IPSEC_BINDREF=31, [202], 4) before connect"),
        "{out}"
    );

    let out = ldsaref(&["explain", "--rules", f, "--proto", "udp", "10.1.2.3:53"]);
    assert!(
        out.stdout
            .contains("IP_IPSEC_REFINFO=30 [1234] (cmsg_len 20)"),
        "{out}"
    );

    let out = ldsaref(&[
        "explain",
        "--rules",
        f,
        "--mode",
        "nfmark",
        "--proto",
        "tcp",
        "10.1.2.3:22",
    ]);
    assert!(out.stdout.contains("SO_MARK, [0x84d20000]"), "{out}");

    let out = ldsaref(&["explain", "--rules", f, "--proto", "tcp", "192.0.2.99:80"]);
    assert!(out.stdout.contains("fails with EACCES"), "{out}");

    let out = ldsaref(&["explain", "--rules", f, "--proto", "tcp", "203.0.113.1:80"]);
    assert!(out.stdout.contains("no rule"), "{out}");

    let out = ldsaref(&["explain", "--rules", f, "--profile", "nosuch", "198.18.0.5"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("nosuch"), "{out}");

    let out = ldsaref(&["explain", "--rules", f, "not-an-address"]);
    assert_eq!(out.code(), Some(2), "{out}");
}

#[test]
fn run_replaces_itself_with_the_program() {
    // Same PID: `ldsaref run` execs, so the PID the shell reports is the
    // one the parent spawned.
    let mut c = Command::new(cli_path());
    c.args([
        "run",
        "--saref",
        "5",
        "--",
        "/bin/sh",
        "-c",
        "echo $$; echo \"$LD_PRELOAD\"; echo \"$IPSEC_SAREF\"",
    ]);
    c.env_remove("LD_PRELOAD");
    let child = c.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], pid.to_string(), "{text}");
    assert_eq!(
        lines[1],
        common::lib_path().canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(lines[2], "5");
}

#[test]
fn run_returns_the_exit_status_and_keeps_existing_preloads() {
    let out = ldsaref(&["run", "--saref", "5", "--", "/bin/sh", "-c", "exit 7"]);
    assert_eq!(out.code(), Some(7), "{out}");
    let mut c = Command::new(cli_path());
    c.args([
        "run",
        "--saref",
        "5",
        "--",
        "/bin/sh",
        "-c",
        "echo \"$LD_PRELOAD\"",
    ]);
    c.env("LD_PRELOAD", "/lib/x86_64-linux-gnu/libc.so.6");
    let out = run_with_timeout(&mut c, Duration::from_secs(30));
    let lib = common::lib_path().canonicalize().unwrap();
    assert_eq!(
        out.stdout.trim(),
        format!("{}:/lib/x86_64-linux-gnu/libc.so.6", lib.display()),
        "{out}"
    );
}

#[test]
fn run_refuses_a_broken_configuration() {
    let d = TempDir::new("cli");
    let f = d.write("rules", "10.0.0.0/8 saref 0\n");
    let out = ldsaref(&["run", "--rules", f.to_str().unwrap(), "--", "/bin/true"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains(&format!("{}:1:18", f.display())),
        "{out}"
    );
    let out = ldsaref(&["run", "--saref", "40000", "--", "/bin/true"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("IPSEC_SAREF"), "{out}");
    let f = d.write("rules2", GOOD);
    let out = ldsaref(&[
        "run",
        "--rules",
        f.to_str().unwrap(),
        "--profile",
        "client3",
        "--",
        "/bin/true",
    ]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("client3") && out.stderr.contains("client1"),
        "{out}"
    );
    let out = ldsaref(&["run", "--mode", "tunnel", "--", "/bin/true"]);
    assert_eq!(out.code(), Some(1), "{out}");
}

#[test]
fn run_refuses_to_start_with_nothing_to_steer() {
    let d = TempDir::new("cli");
    // No rules file at all (the system locations, when this machine has
    // none) and no catch-all.
    if !std::path::Path::new("/etc/ldsaref").exists() {
        let out = ldsaref(&["run", "--", "/bin/true"]);
        assert_eq!(out.code(), Some(1), "{out}");
        assert!(
            out.stderr.contains("nothing to steer")
                && out.stderr.contains("/etc/ldsaref/rules")
                && out.stderr.contains("--saref"),
            "{out}"
        );
        // The same with --cgroup, before anything needs root or a table.
        let out = ldsaref(&["run", "--cgroup", "--", "/bin/true"]);
        assert_eq!(out.code(), Some(1), "{out}");
        assert!(out.stderr.contains("nothing to steer"), "{out}");
    }
    // An empty directory of rules.
    let empty = d.join("rules.d");
    std::fs::create_dir(&empty).unwrap();
    let out = ldsaref(&["run", "--rules", empty.to_str().unwrap(), "--", "/bin/true"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("nothing to steer"), "{out}");
    // A file of comments only, like the packaged /etc/ldsaref/rules.
    let f = d.write("comments", "# nothing yet\n#10.1.0.0/16 saref 1234\n");
    let f = f.to_str().unwrap();
    let out = ldsaref(&["run", "--rules", f, "--", "/bin/true"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("nothing to steer"), "{out}");
    assert!(out.stderr.contains(f), "{out}");
    // Rules for another profile only.
    let f = d.write("other", "[client1]\n198.18.0.0/24 saref 101\n[idle]\n");
    let f = f.to_str().unwrap();
    let out = ldsaref(&["run", "--rules", f, "--", "/bin/true"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("no global rule") && out.stderr.contains("--profile"),
        "{out}"
    );
    for cgroup in [&[][..], &["--cgroup"]] {
        let out = ldsaref(
            &[
                &["run"],
                cgroup,
                &["--rules", f, "--profile", "idle", "--", "/bin/true"],
            ]
            .concat(),
        );
        assert_eq!(out.code(), Some(1), "{cgroup:?}: {out}");
        assert!(out.stderr.contains("profile [idle]"), "{cgroup:?}: {out}");
    }
    // What is steered starts: the profile's rules, a global rule, a catch-all.
    let out = ldsaref(&[
        "run",
        "--rules",
        f,
        "--profile",
        "client1",
        "--",
        "/bin/true",
    ]);
    assert_eq!(out.code(), Some(0), "{out}");
    let out = ldsaref(&[
        "run",
        "--rules",
        f,
        "--profile",
        "idle",
        "--saref",
        "7",
        "--",
        "/bin/true",
    ]);
    assert_eq!(out.code(), Some(0), "{out}");
    let g = d.write("global", "10.0.0.0/8 pass\n[idle]\n");
    let out = ldsaref(&[
        "run",
        "--rules",
        g.to_str().unwrap(),
        "--profile",
        "idle",
        "--",
        "/bin/true",
    ]);
    assert_eq!(out.code(), Some(0), "{out}");
    let out = ldsaref(&["run", "--saref", "7", "--", "/bin/true"]);
    assert_eq!(out.code(), Some(0), "{out}");
}

#[test]
fn run_reports_a_missing_program() {
    let out = ldsaref(&["run", "--saref", "5", "--", "no-such-program-for-ldsaref"]);
    assert_eq!(out.code(), Some(127), "{out}");
}

#[test]
fn run_refuses_a_static_program_unless_allowed() {
    let d = TempDir::new("cli");
    let src = d.write("s.c", "int main(void) { return 3; }\n");
    let bin = d.join("static-prog");
    let cc = Command::new("gcc")
        .args(["-static", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("gcc");
    assert!(
        cc.status.success(),
        "gcc -static: {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let out = ldsaref(&["run", "--saref", "5", "--", bin.to_str().unwrap()]);
    assert_eq!(out.code(), Some(126), "{out}");
    assert!(out.stderr.contains("statically linked"), "{out}");
    let out = ldsaref(&[
        "run",
        "--saref",
        "5",
        "--allow-unsteered",
        "--",
        bin.to_str().unwrap(),
    ]);
    assert_eq!(out.code(), Some(3), "{out}");
}

#[test]
fn run_refuses_a_setuid_program() {
    require_root!();
    let d = TempDir::new("cli");
    let bin = d.join("suid-true");
    std::fs::copy("/bin/true", &bin).unwrap();
    // Owned by nobody and setuid: exec would change the effective uid, the
    // loader would run in secure mode and ignore LD_PRELOAD.
    common::run_ok("chown", &["nobody", bin.to_str().unwrap()]);
    common::run_ok("chmod", &["4755", bin.to_str().unwrap()]);
    let out = ldsaref(&["run", "--saref", "5", "--", bin.to_str().unwrap()]);
    assert_eq!(out.code(), Some(126), "{out}");
    assert!(out.stderr.contains("setuid"), "{out}");
}

#[test]
fn env_prints_export_lines() {
    let out = ldsaref(&["env", "--saref", "12", "--mode", "nfmark"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("export IPSEC_SAREF=12\n"), "{out}");
    assert!(out.stdout.contains("export LDSAREF_MODE=nfmark\n"), "{out}");
    assert!(out.stdout.contains("export LD_PRELOAD="), "{out}");
    let out = ldsaref(&["env", "--unset"]);
    assert!(out.stdout.contains("unset IPSEC_SAREF"), "{out}");
    let out = ldsaref(&["env", "--saref", "0"]);
    assert_eq!(out.code(), Some(1), "{out}");
}

#[test]
fn probe_reports_this_stock_kernel() {
    let out = ldsaref(&["probe"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout
            .contains("IP_IPSEC_BINDREF (31):    no (Protocol not available"),
        "{out}"
    );
    assert!(out.stdout.contains("SAref support [disabled]"), "{out}");
    if common::is_root() {
        assert!(
            out.stdout.contains("SO_MARK:                  yes"),
            "{out}"
        );
    }
}

#[test]
fn every_subcommand_has_help() {
    for sub in ["run", "check", "explain", "probe", "env", "shell", "updown"] {
        let out = ldsaref(&[sub, "--help"]);
        assert_eq!(out.code(), Some(0), "{sub}: {out}");
        assert!(out.stdout.contains("Exit status"), "{sub}: {out}");
    }
}

/// A reader that stops reading ends ldsaref by SIGPIPE, silently, as it
/// ends other Unix tools (not by a panic's message and backtrace).
#[test]
fn a_closed_stdout_ends_it_by_sigpipe() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;

    let dir = TempDir::new("closed-stdout");
    // More than a pipe holds (64 KiB): the print must meet the closed end.
    let rules: String = (0..4000)
        .map(|i| format!("198.18.{}.{}/32 saref {}\n", i / 250, i % 250, 1 + i))
        .collect();
    let rules = dir.write("rules", rules);
    let mut c = Command::new(cli_path());
    c.args(["apply", "--print", "--rules"])
        .arg(&rules)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    common::clear_ldsaref_env(&mut c);
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take());
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
