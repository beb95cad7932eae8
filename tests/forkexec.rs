//! Children of a wrapped program: `fork`, `vfork` + exec, `posix_spawn`,
//! `posix_spawnp`, `exec` and `system` children are steered (their UDP
//! connect gets the rule's SAref in the KLIPS emulator's log), exec'd
//! ones inherit `LD_PRELOAD` with the library's absolute path (the driver
//! `chdir("/")`s first), and a fork while other threads are busy in the
//! library, a few hundred times over, never leaves a child deadlocked.
//! Driver: `tests/programs/forkexec.c`. Loopback only.

mod common;
#[path = "programs/cprog.rs"]
mod cprog;

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_with_timeout, EmuLog, RunOutput, TempDir};

const RULES: &str = "127.0.3.20 udp saref 601\n";
const DST: &str = "127.0.3.20:4500";

// The variables each run starts without.
use common::LDSAREF_VARS as VARS;

struct Bed {
    dir: TempDir,
    rules: PathBuf,
    /// The driver, and a copy named `forkexec-child` for `posix_spawnp`.
    prog: PathBuf,
    log: EmuLog,
}

impl Bed {
    fn new() -> Bed {
        let dir = TempDir::new("forkexec");
        let rules = dir.write("rules", RULES);
        fs::set_permissions(&rules, fs::Permissions::from_mode(0o644)).unwrap();
        let built = cprog::build("forkexec");
        let prog = dir.join("forkexec");
        fs::copy(&built, &prog).unwrap();
        fs::copy(&built, dir.join("forkexec-child")).unwrap();
        Bed {
            dir,
            rules,
            prog,
            log: EmuLog::new(),
        }
    }

    /// The driver with the library and the emulator preloaded directly.
    fn run(&self, extra: &[(&str, &str)], args: &[&str]) -> RunOutput {
        let mut c = Command::new(&self.prog);
        c.args(args);
        for v in VARS {
            c.env_remove(v);
        }
        let (k, v) = self.log.env();
        c.env("LD_PRELOAD", common::preload_with_emulator())
            .env(k, v)
            .env("LDSAREF_RULES", &self.rules);
        for (k, v) in extra {
            c.env(k, v);
        }
        run_with_timeout(&mut c, Duration::from_secs(60))
    }

    /// The driver started the way users start programs: `ldsaref run`,
    /// which prepends the library's absolute path to an `LD_PRELOAD`
    /// already naming the emulator.
    fn run_cli(&self, args: &[&str]) -> RunOutput {
        let mut c = Command::new(common::cli_path());
        for v in VARS {
            c.env_remove(v);
        }
        let (k, v) = self.log.env();
        c.env("LD_PRELOAD", common::emulator())
            .env(k, v)
            .args(["run", "--rules"])
            .arg(&self.rules)
            .arg("--")
            .arg(&self.prog)
            .args(args)
            .current_dir(self.dir.path());
        run_with_timeout(&mut c, Duration::from_secs(30))
    }

    /// Checks the emulator log: `pid`'s UDP connect was bound to 601 and
    /// its datagram tagged 601.
    #[track_caller]
    fn assert_steered(&self, pid: &str) {
        let c = self.log.find("connect", &[("pid", pid), ("dst", DST)]);
        let s = self.log.find("send", &[("pid", pid)]);
        assert!(
            c.len() == 1 && c[0].field("bindref") == "601",
            "pid {pid}: connect not bound to 601:\n{}",
            self.log.text()
        );
        assert!(
            s.len() == 1 && s[0].field("refinfo") == "601" && s[0].field("bindref") == "601",
            "pid {pid}: datagram not tagged 601:\n{}",
            self.log.text()
        );
    }
}

/// `(who, pid, preload, result)` of each report line.
fn reports(out: &RunOutput) -> Vec<(String, String, String, String)> {
    out.stdout
        .lines()
        .filter(|l| l.starts_with("child ") || l.starts_with("parent "))
        .map(|l| {
            // LD_PRELOAD may hold spaces: split around it.
            let parse = || -> Option<(String, String, String, String)> {
                let (who, rest) = l.split_once(' ')?;
                let (pid, rest) = rest.split_once(' ')?;
                let (preload, result) = rest.rsplit_once(" result=")?;
                Some((
                    who.to_string(),
                    pid.strip_prefix("pid=")?.to_string(),
                    preload.strip_prefix("preload=")?.to_string(),
                    result.to_string(),
                ))
            };
            parse().unwrap_or_else(|| panic!("bad line {l:?}"))
        })
        .collect()
}

#[test]
fn forked_child_is_steered() {
    let bed = Bed::new();
    let out = bed.run(&[], &["fork", DST]);
    assert!(out.success(), "{out}");
    let r = reports(&out);
    assert_eq!(r.len(), 2, "{out}");
    assert_eq!((r[0].0.as_str(), r[1].0.as_str()), ("parent", "child"));
    assert_ne!(r[0].1, r[1].1);
    for (_, pid, _, result) in &r {
        assert_eq!(result, "ok", "{out}");
        bed.assert_steered(pid);
    }
}

#[test]
fn exec_family_children_inherit_the_library_and_are_steered() {
    let lib = common::lib_path().canonicalize().unwrap();
    for mode in ["vfork", "spawn", "spawnp", "exec", "system"] {
        let bed = Bed::new();
        let out = bed.run_cli(&[mode, DST]);
        assert!(out.success(), "{mode}: {out}");
        let r = reports(&out);
        assert_eq!(r.len(), 1, "{mode}: {out}");
        let (_, pid, preload, result) = &r[0];
        println!("{mode}: child pid {pid}, LD_PRELOAD={preload}, {result}");
        assert_eq!(result, "ok", "{mode}: {out}");
        let first = preload.split([':', ' ']).next().unwrap();
        assert!(
            first.starts_with('/') && PathBuf::from(first).canonicalize().unwrap() == lib,
            "{mode}: LD_PRELOAD should start with the library's absolute path: {preload}"
        );
        if mode == "exec" {
            // Same process: exec keeps the pid.
            assert!(out.stdout.contains(&format!("exec pid={pid}\n")), "{out}");
        }
        bed.assert_steered(pid);
    }
}

/// Runs the storm and checks every child finished and was steered.
fn storm(log_level: Option<&str>, iterations: usize, threads: usize) {
    let bed = Bed::new();
    let mut extra = vec![];
    if let Some(l) = log_level {
        extra.push(("LDSAREF_LOG", l));
    }
    let iter = iterations.to_string();
    let th = threads.to_string();
    let t0 = Instant::now();
    let out = bed.run(&extra, &["storm", DST, &iter, &th, "quiet"]);
    let wall = t0.elapsed();
    assert!(out.success(), "{out}");
    let summary = out
        .stdout
        .lines()
        .find(|l| l.starts_with("storm "))
        .unwrap_or_else(|| panic!("no summary: {out}"));
    println!(
        "fork storm, LDSAREF_LOG={}: {summary} ({threads} busy threads, {wall:?})",
        log_level.unwrap_or("(default)")
    );
    let stuck: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.ends_with("status=stuck"))
        .collect();
    assert!(
        stuck.is_empty(),
        "children deadlocked after fork (killed after 5 s): {stuck:?}; {summary}"
    );
    assert_eq!(
        summary,
        format!("storm children={iterations} ok={iterations} stuck=0 failed=0")
    );
    // Each child's own connect was steered. The log is large (the busy
    // threads' events too): scan it as text, only for the children's pids.
    let pids: HashSet<String> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("fork child="))
        .map(|l| format!("pid={}", l.split(' ').next().unwrap()))
        .collect();
    let mut bound = HashSet::new();
    let text = bed.log.text();
    for line in text.lines().filter(|l| l.starts_with("connect ")) {
        let mut w = line.split(' ');
        let pid = w.nth(1).unwrap();
        if pids.contains(pid) {
            assert!(
                line.ends_with(&format!("dst={DST} bindref=601")),
                "a child's connect was not steered: {line}"
            );
            bound.insert(pid.to_string());
        }
    }
    assert_eq!(bound.len(), iterations, "children without a connect event");
}

#[test]
fn fork_while_threads_are_busy_in_the_library_does_not_deadlock() {
    storm(None, 300, 4);
}

/// The same with a debug log: every decision writes a log line, so a fork
/// often happens while another thread is in the middle of one.
#[test]
fn fork_while_threads_are_logging_does_not_deadlock() {
    storm(Some("debug"), 300, 4);
}

/// A fork while another thread is reading the rules for the first time (a
/// large file, so that the fork falls inside the load): the child, which
/// does not have that thread, must not wait for it; it loads the rules
/// itself, and its datagram is steered.
#[test]
fn fork_during_the_first_load_does_not_wait_for_the_loading_thread() {
    use std::fmt::Write as _;
    let bed = Bed::new();
    let mut text = String::from(RULES);
    for i in 0..100_000u32 {
        let (a, b, c) = (i >> 16, (i >> 8) & 255, i & 255);
        writeln!(text, "10.{a}.{b}.{c}/32 saref {}", i % 32767 + 1).unwrap();
    }
    fs::write(&bed.rules, text).unwrap();
    let mut pids = Vec::new();
    for delay_us in ["0", "1000", "3000", "10000", "30000"] {
        let out = bed.run(&[], &["firstload", DST, delay_us]);
        assert!(out.success(), "{out}");
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with("firstload "))
            .unwrap_or_else(|| panic!("no result: {out}"));
        assert!(
            line.ends_with("status=ok"),
            "fork {delay_us} µs into the first load: {line}"
        );
        let pid = line.split(' ').nth(1).unwrap().trim_start_matches("child=");
        pids.push(format!("pid={pid}"));
    }
    let text = bed.log.text();
    for pid in &pids {
        assert!(
            text.lines().any(|l| l.starts_with("connect ")
                && l.split(' ').nth(1) == Some(pid.as_str())
                && l.ends_with(&format!("dst={DST} bindref=601"))),
            "the child {pid} was not steered"
        );
    }
}
