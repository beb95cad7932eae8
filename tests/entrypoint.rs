//! What a container entrypoint and an interactive shell rely on, checked
//! without a container engine: `ldsaref run` becomes the program (same
//! PID, signals, exit status, stdin), hands it exactly the documented
//! environment, and `ldsaref env` / `ldsaref shell on|off` give a shell the
//! same state. Traffic only to loopback.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{cli_path, python3, run_with_timeout, EmuLog, RunOutput, TempDir};

const RULES: &str = "\
[client1]
127.0.9.0/24   saref 101
[client2]
127.0.9.0/24   saref 202
";

/// The environment every test starts from: a few ordinary variables and
/// nothing of ldsaref's.
const BASE: &[(&str, &str)] = &[
    ("PATH", "/usr/bin:/bin"),
    ("HOME", "/nonexistent"),
    ("LANG", "C"),
    ("ODD", "two words; $not 'expanded'\nsecond line"),
];

fn lib() -> PathBuf {
    common::lib_path().canonicalize().unwrap()
}

fn base_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env_clear();
    for (k, v) in BASE {
        c.env(k, v);
    }
    c
}

/// `env -0` output as a map.
fn parse_env(out: &[u8]) -> BTreeMap<String, String> {
    out.split(|&b| b == 0)
        .filter(|e| !e.is_empty())
        .map(|e| {
            let s = String::from_utf8_lossy(e);
            let (k, v) = s.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn base_map() -> BTreeMap<String, String> {
    BASE.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn run_passes_exactly_the_documented_environment() {
    let d = TempDir::new("entrypoint");
    d.write("rules", RULES);
    // A relative --rules, as typed in a Dockerfile's WORKDIR.
    let mut c = base_command(cli_path());
    c.current_dir(d.path()).args([
        "run",
        "--rules",
        "rules",
        "--profile",
        "client1",
        "--mode",
        "nfmark",
        "--on-error",
        "warn",
        "--log",
        "info",
        "--klips-abi",
        "22",
        "--",
        "/usr/bin/env",
        "-0",
    ]);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut want = base_map();
    for (k, v) in [
        ("LD_PRELOAD", lib().display().to_string()),
        ("LDSAREF_RULES", d.join("rules").display().to_string()),
        ("LDSAREF_PROFILE", "client1".into()),
        ("LDSAREF_MODE", "nfmark".into()),
        ("LDSAREF_ON_ERROR", "warn".into()),
        ("LDSAREF_LOG", "info".into()),
        ("LDSAREF_KLIPS_ABI", "22".into()),
    ] {
        want.insert(k.into(), v);
    }
    assert_eq!(parse_env(&out.stdout), want);

    // Without options: only LD_PRELOAD changes. A variable already set is
    // passed on as it is; an existing preload stays, after the library.
    let emu = common::emulator();
    let mut c = base_command(cli_path());
    c.args(["run", "--", "/usr/bin/env", "-0"])
        .env("IPSEC_SAREF", "9")
        .env("LD_PRELOAD", &emu);
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut want = base_map();
    want.insert("IPSEC_SAREF".into(), "9".into());
    want.insert(
        "LD_PRELOAD".into(),
        format!("{}:{}", lib().display(), emu.display()),
    );
    assert_eq!(parse_env(&out.stdout), want);
}

#[test]
fn run_is_the_program_for_signals_and_exit_status() {
    // The program traps SIGTERM and exits 42: only the program itself can
    // answer that way, and only if the signal sent to the PID we spawned
    // reaches it.
    let mut c = base_command(cli_path());
    c.args([
        "run",
        "--saref",
        "5",
        "--",
        "/bin/sh",
        "-c",
        "trap 'exit 42' TERM; echo $$; while :; do sleep 0.05; done",
    ])
    .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), pid.to_string(), "not the same process");
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(42), "{status:?}");

    // A program killed by a signal is seen killed by it, as a direct child.
    let mut c = base_command(cli_path());
    c.args(["run", "--saref", "5", "--", "/bin/sleep", "30"]);
    let mut child = c.spawn().unwrap();
    // Signal only once the PID runs sleep: ldsaref itself would die of
    // SIGTERM the same way.
    let exe = format!("/proc/{}/exe", child.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !std::fs::read_link(&exe).is_ok_and(|p| p.ends_with("sleep")) {
        assert!(std::time::Instant::now() < deadline, "never became sleep");
        std::thread::sleep(Duration::from_millis(10));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(15), "{status:?}");
}

#[test]
fn run_as_a_dockerfile_entrypoint() {
    // ENTRYPOINT ["ldsaref", "run", "--profile", "client1", "--"]
    // CMD ["python3", "steer.py", "tcp", "127.0.9.4:4311"]
    let d = TempDir::new("entrypoint");
    let rules = d.write("rules", RULES);
    let log = EmuLog::new();
    let mut c = base_command(cli_path());
    c.args(["run", "--profile", "client1", "--"])
        .arg(python3())
        .arg(common::source_dir().join("tests/programs/steer.py"))
        .args(["tcp", "127.0.9.4:4311"])
        .env("LDSAREF_RULES", &rules)
        .env("LD_PRELOAD", common::emulator())
        .env(log.env().0, log.env().1);
    let out = run_with_timeout(&mut c, Duration::from_secs(30));
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("step=connect result=ok"), "{out}");
    let connects = log.find("connect", &[("dst", "127.0.9.4:4311")]);
    assert_eq!(connects.len(), 1, "{}", log.text());
    assert_eq!(connects[0].field("bindref"), "101");

    // stdin reaches the program (docker run -i), and its status is ours.
    let mut c = base_command(cli_path());
    c.args(["run", "--saref", "5", "--", "/bin/sh", "-c", "cat; exit 3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(out.stdout, b"hello\n");
}

/// `bash -c SCRIPT` with `ldsaref` on PATH (as when installed).
fn bash(script: &str, extra: &[(&str, &str)]) -> RunOutput {
    let bin = cli_path();
    let path = format!("{}:/usr/bin:/bin", bin.parent().unwrap().display());
    let mut c = base_command("/bin/bash");
    c.args(["-c", script]).env("PATH", path);
    for (k, v) in extra {
        c.env(k, v);
    }
    run_with_timeout(&mut c, Duration::from_secs(30))
}

/// The value bash's `env` shows for each line `NAME=VALUE` of `out`.
fn env_lines(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn env_in_a_shell_gives_what_run_gives() {
    let d = TempDir::new("entrypoint");
    let rules = d.write("rules", RULES);
    let r = rules.to_str().unwrap();
    let via_run = {
        let mut c = base_command(cli_path());
        c.args([
            "run",
            "--rules",
            r,
            "--profile",
            "client2",
            "--",
            "/usr/bin/env",
            "-0",
        ]);
        parse_env(&c.output().unwrap().stdout)
    };
    let out = bash(
        &format!("eval \"$(ldsaref env --rules {r} --profile client2)\" && exec /usr/bin/env -0"),
        &[],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    let mut via_shell = parse_env(out.stdout.as_bytes());
    // bash's own bookkeeping, not ldsaref's.
    for k in ["PWD", "SHLVL", "_", "OLDPWD"] {
        via_shell.remove(k);
    }
    let mut via_run = via_run;
    via_run.remove("PATH");
    via_shell.remove("PATH");
    assert_eq!(via_shell, via_run);
}

/// A program started from the shell, with the emulator behind whatever
/// the shell preloads, connecting to `dst`: its socket's SAref.
fn steer_line(dst: &str) -> String {
    format!(
        "{} {} tcp {dst} >/dev/null",
        python3().display(),
        common::source_dir()
            .join("tests/programs/steer.py")
            .display()
    )
}

fn bindref_of(log: &EmuLog, dst: &str) -> String {
    let c = log.find("connect", &[("dst", dst)]);
    assert_eq!(c.len(), 1, "{}", log.text());
    c[0].field("bindref").to_string()
}

#[test]
fn shell_on_and_off_steer_and_unsteer_a_bash() {
    let d = TempDir::new("entrypoint");
    let rules = d.write("rules", RULES);
    let log = EmuLog::new();
    let emu = common::emulator();
    let emu_s = emu.to_str().unwrap();
    let script = format!(
        "set -e\n\
         eval \"$(ldsaref shell on --saref 5)\"\n\
         eval \"$(ldsaref shell on --rules {r} --profile client1)\"\n\
         {a}\n\
         env | grep -E '^(LD_PRELOAD|IPSEC_SAREF|LDSAREF_[A-Z_]*)=' | sort\n\
         ldsaref shell show\n\
         eval \"$(ldsaref shell off)\"\n\
         {b}\n\
         echo ---\n\
         env | grep -E '^(LD_PRELOAD|IPSEC_SAREF|LDSAREF_[A-Z_]*)=' | sort\n\
         ldsaref shell show || echo show-exit=$?\n",
        r = rules.display(),
        a = steer_line("127.0.9.5:4321"),
        b = steer_line("127.0.9.5:4322"),
    );
    let (k, v) = log.env();
    let out = bash(&script, &[("LD_PRELOAD", emu_s), (k, &v)]);
    assert_eq!(out.code(), Some(0), "{out}");
    let (on, off) = out.stdout.split_once("---\n").unwrap();
    let on_env = env_lines(on);
    // Exactly the options given; the earlier --saref is gone; the
    // emulator stays, after the library.
    assert_eq!(
        on_env.get("LD_PRELOAD").map(String::as_str),
        Some(format!("{}:{emu_s}", lib().display()).as_str()),
        "{out}"
    );
    assert_eq!(
        on_env.get("LDSAREF_PROFILE").map(String::as_str),
        Some("client1")
    );
    assert_eq!(
        on_env.get("LDSAREF_RULES").map(String::as_str),
        rules.to_str()
    );
    assert!(!on_env.contains_key("IPSEC_SAREF"), "{out}");
    assert!(on.contains("steered: LD_PRELOAD has"), "{out}");
    assert_eq!(bindref_of(&log, "127.0.9.5:4321"), "101");

    let off_env = env_lines(off);
    assert_eq!(
        off_env.get("LD_PRELOAD").map(String::as_str),
        Some(emu_s),
        "{out}"
    );
    assert!(
        !off_env
            .keys()
            .any(|k| k.starts_with("LDSAREF_") || k == "IPSEC_SAREF"),
        "variables left after off: {out}"
    );
    assert!(
        off.contains("not steered") && off.contains("show-exit=1"),
        "{out}"
    );
    assert_eq!(bindref_of(&log, "127.0.9.5:4322"), "0");
}

#[test]
fn shell_on_with_a_bad_option_fails_the_eval_and_changes_nothing() {
    let out = bash(
        "set -e\n\
         eval \"$(ldsaref shell on --saref 0)\"\n\
         echo not reached\n",
        &[],
    );
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(!out.stdout.contains("not reached"), "{out}");
    assert!(out.stderr.contains("IPSEC_SAREF=\"0\""), "{out}");

    // Without set -e: the shell goes on, unsteered, and says so.
    let out = bash(
        "eval \"$(ldsaref shell on --profile nosuch --rules /nonexistent/rules)\" || echo failed=$?\n\
         echo \"LD_PRELOAD=${LD_PRELOAD-unset}\"\n",
        &[],
    );
    assert!(out.stdout.contains("failed=1"), "{out}");
    assert!(out.stdout.contains("LD_PRELOAD=unset"), "{out}");
}
