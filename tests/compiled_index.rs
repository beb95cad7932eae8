//! The compiled rules index in real programs: a python3 process under the
//! library maps the index and never opens the rules text while the index
//! is valid (checked with strace); once the rules file is edited without
//! compiling, the index is stale and the text is parsed again, with one
//! log line that says why; a running program moves back to the index when
//! it is compiled again. Loopback only.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cli_path, lib_path, python3, run_with_timeout, RunOutput, TempDir};

/// Sends one datagram to 127.0.0.2:9 and says whether it was refused.
const SEND: &str = "\
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
try:
    s.sendto(b'x', ('127.0.0.2', 9))
    print('sent')
except PermissionError:
    print('denied')
";

fn rules_dir() -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new("compiled-index");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let rules = dir.write("rules", "127.0.0.2 udp deny\n");
    fs::set_permissions(&rules, fs::Permissions::from_mode(0o644)).unwrap();
    (dir, rules)
}

fn compile(rules: &Path) {
    let out = run_with_timeout(
        Command::new(cli_path())
            .arg("compile")
            .arg("--rules")
            .arg(rules),
        Duration::from_secs(30),
    );
    out.assert_success();
    assert!(
        out.stdout.contains("rules.index: compiled"),
        "{}",
        out.stdout
    );
}

/// Runs SEND under strace (file opens only) with the library.
fn traced_send(dir: &TempDir, rules: &Path) -> (RunOutput, String) {
    let trace = dir.join("trace");
    let mut c = Command::new("strace");
    c.args(["-f", "-e", "trace=open,openat", "-e", "signal=none", "-o"])
        .arg(&trace)
        .arg("/usr/bin/env")
        .arg(format!("LD_PRELOAD={}", lib_path().display()))
        .arg(format!("LDSAREF_RULES={}", rules.display()))
        .arg("LDSAREF_PROBE=off")
        .arg(python3())
        .args(["-c", SEND]);
    common::clear_ldsaref_env(&mut c);
    let out = run_with_timeout(&mut c, Duration::from_secs(30));
    (out, fs::read_to_string(&trace).unwrap_or_default())
}

fn opens(trace: &str, path: &Path) -> bool {
    let quoted = format!("\"{}\"", path.display());
    trace
        .lines()
        .any(|l| l.contains("open") && l.contains(&quoted))
}

#[test]
fn a_valid_index_is_used_and_the_text_is_not_read() {
    let (dir, rules) = rules_dir();
    compile(&rules);
    let index = dir.join("rules.index");
    let (out, trace) = traced_send(&dir, &rules);
    out.assert_success();
    assert_eq!(out.stdout.trim(), "denied", "{}", out.stderr);
    assert!(opens(&trace, &index), "the index is opened:\n{trace}");
    assert!(
        !opens(&trace, &rules),
        "the rules text is not opened while the index is valid:\n{trace}"
    );
    assert!(!out.stderr.contains("not used"), "{}", out.stderr);

    // Edited in place, not compiled: the index is stale, the text is read,
    // and one line says why.
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&rules, "127.0.0.2 udp pass\n").unwrap();
    let (out, trace) = traced_send(&dir, &rules);
    out.assert_success();
    assert_eq!(out.stdout.trim(), "sent", "{}", out.stderr);
    assert!(opens(&trace, &rules), "fallback reads the text:\n{trace}");
    let why: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("not used"))
        .collect();
    assert_eq!(why.len(), 1, "{}", out.stderr);
    assert!(
        why[0].contains(&format!(
            "stale: {} changed since the index was compiled",
            rules.display()
        )) && why[0].contains("run ldsaref compile"),
        "{}",
        why[0]
    );

    // Compiled again: the index again.
    compile(&rules);
    let (out, trace) = traced_send(&dir, &rules);
    assert_eq!(out.stdout.trim(), "sent", "{}", out.stderr);
    assert!(!opens(&trace, &rules), "{trace}");
}

#[test]
fn an_unsafe_index_is_not_used() {
    let (dir, rules) = rules_dir();
    compile(&rules);
    let index = dir.join("rules.index");
    fs::set_permissions(&index, fs::Permissions::from_mode(0o666)).unwrap();
    let (out, trace) = traced_send(&dir, &rules);
    assert_eq!(out.stdout.trim(), "denied", "{}", out.stderr);
    assert!(opens(&trace, &rules), "{trace}");
    assert!(
        out.stderr.contains("unsafe") && out.stderr.contains("mode 0666"),
        "{}",
        out.stderr
    );
}

/// A running program notices a new index within the reload period: it
/// moves from parsing (stale index) to the compiled index, and decides
/// the new rules.
#[test]
fn a_running_program_moves_to_a_recompiled_index() {
    let (dir, rules) = rules_dir();
    compile(&rules);
    std::thread::sleep(Duration::from_millis(20));
    fs::write(&rules, "127.0.0.2 udp pass\n").unwrap();
    let stderr = dir.join("stderr");
    let loop_send = format!(
        "import time, sys\nfor i in range(200):\n{}\n    sys.stdout.flush()\n    time.sleep(0.05)\n",
        SEND.lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut c = Command::new(python3());
    c.args(["-c", &loop_send]);
    common::clear_ldsaref_env(&mut c);
    let mut child = c
        .env("LD_PRELOAD", lib_path())
        .env("LDSAREF_RULES", &rules)
        .env("LDSAREF_PROBE", "off")
        .env("LDSAREF_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let wait_for = |what: &str| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if fs::read_to_string(&stderr)
                .unwrap_or_default()
                .contains(what)
            {
                return start.elapsed();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {what:?} in:\n{}", fs::read_to_string(&stderr).unwrap());
    };
    wait_for("stale:");
    // New rules, compiled: the program takes the index within 1 s.
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    fs::write(&rules, "127.0.0.2 udp deny\n").unwrap();
    compile(&rules);
    wait_for("(compiled index");
    let took = t.elapsed();
    eprintln!("moved to the new index after {took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    std::thread::sleep(Duration::from_millis(200));
    let _ = child.kill();
    let _ = child.wait();
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(out.starts_with("sent"), "{out}");
    assert!(out.trim_end().ends_with("denied"), "{out}");
}
