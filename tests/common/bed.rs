//! The two-tunnel test bed (`scripts/testbed.sh`) as the cgroup backend's
//! tests use it (`tests/cgroup.rs`, `tests/cgroup_programs.rs`), and the
//! bits `tests/testbed.rs` shares with them.
//!
//! The cgroup tests name their beds `ldcg<PID>-` and their profiles
//! `…-t<PID>`, so that either test sweeps what a killed run of the other
//! left ([`sweep_stale`]).
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{cli_path, run_with_timeout, source_dir, RunOutput};

const TIMEOUT: Duration = Duration::from_secs(30);

pub fn testbed_sh() -> PathBuf {
    source_dir().join("scripts/testbed.sh")
}

/// `testbed.sh down PREFIX`, its stdout dropped: what a bed's `Drop` does.
pub fn testbed_down(prefix: &str) {
    let _ = Command::new(testbed_sh())
        .args(["down", prefix])
        .stdout(Stdio::null())
        .status();
}

/// Packets that reached client `c`'s inner address through its tunnel
/// (`testbed.sh hits PREFIX c`).
pub fn testbed_hits(prefix: &str, c: &str) -> u64 {
    let out = run_with_timeout(
        Command::new(testbed_sh()).args(["hits", prefix, c]),
        TIMEOUT,
    );
    assert!(out.success(), "testbed.sh hits: {out}");
    out.stdout
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("testbed.sh hits printed {:?}", out.stdout))
}

/// The cgroup2 mount, from mountinfo (None: no cgroup v2 here).
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.starts_with("cgroup2 ") && left.split(' ').nth(3) == Some("/"))
            .then(|| left.split(' ').nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// `<cgroup2 mount>/ldsaref.slice`, or None after saying why `test` is
/// skipped (no cgroup v2 mounted, or no nft).
pub fn ldsaref_slice(test: &str) -> Option<PathBuf> {
    let Some(mount) = cgroup2_mount() else {
        eprintln!("SKIPPED (no cgroup v2 mounted): {test}");
        return None;
    };
    if !Path::new("/usr/sbin/nft").exists() && !Path::new("/sbin/nft").exists() {
        eprintln!("SKIPPED (no nft): {test}");
        return None;
    }
    Some(mount.join("ldsaref.slice"))
}

/// Cgroups a test made, removed when it ends (children listed after
/// their parents: removed in reverse), then their parent (`ldsaref.slice`)
/// if nothing else uses it.
pub struct Cgroups(pub Vec<PathBuf>);

impl Drop for Cgroups {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        if let Some(parent) = self.0.first().and_then(|c| c.parent()) {
            // rmdir refuses a cgroup with children or processes.
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// `ldsaref-NAME.slice`, `-` escaped as systemd does (`\x2d`).
pub fn ldsaref_cgroup_name(profile: &str) -> String {
    format!("ldsaref-{}.slice", profile.replace('-', "\\x2d"))
}

/// What earlier runs killed before their `Drop` left: their beds (named
/// `ldcg<PID>-`) and their cgroups (profiles `…-t<PID>`), for dead PIDs.
pub fn sweep_stale(slice: &Path) {
    let dead = |pid: &str| {
        pid.parse::<u32>()
            .is_ok_and(|p| p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists())
    };
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for name in String::from_utf8_lossy(&out.stdout).lines() {
            let name = name.split_whitespace().next().unwrap_or_default();
            if let Some(pid) = name
                .strip_prefix("ldcg")
                .and_then(|r| r.strip_suffix("-srv"))
            {
                if dead(pid) {
                    let prefix = format!("ldcg{pid}-");
                    let _ = Command::new(testbed_sh()).args(["down", &prefix]).status();
                }
            }
        }
    }
    let Ok(entries) = std::fs::read_dir(slice) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .strip_suffix(".slice")
            .and_then(|n| n.rsplit_once("\\x2dt").or_else(|| n.rsplit_once("-t")))
            .map(|(_, pid)| pid.to_owned());
        if pid.is_some_and(|p| dead(&p)) {
            if let Ok(children) = std::fs::read_dir(e.path()) {
                for c in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(c.path());
                }
            }
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// A cgroup test's bed, `ldcg<PID>-`, and its profile cgroups: on drop the
/// bed goes down (the table lives in the server's namespace and goes with
/// it) and the cgroups are removed.
pub struct CgroupBed {
    pub prefix: String,
    /// The test's profile cgroups, removed on drop.
    pub cgroups: Vec<PathBuf>,
}

impl Drop for CgroupBed {
    fn drop(&mut self) {
        // The table lives in the server's namespace and goes with it.
        testbed_down(&self.prefix);
        // Children (pushed after their parents) first.
        for cg in self.cgroups.iter().rev() {
            let _ = std::fs::remove_dir(cg);
        }
        if let Some(parent) = self.cgroups.first().and_then(|c| c.parent()) {
            // Only if no one else uses it.
            let _ = std::fs::remove_dir(parent);
        }
    }
}

impl CgroupBed {
    /// The bed `ldcg<PID>-`, not up yet, with the cgroups of `profiles`
    /// in `slice`.
    pub fn new(slice: &Path, profiles: &[&str]) -> CgroupBed {
        CgroupBed {
            prefix: format!("ldcg{}-", std::process::id()),
            cgroups: profiles
                .iter()
                .map(|p| slice.join(ldsaref_cgroup_name(p)))
                .collect(),
        }
    }

    /// `testbed.sh up PREFIX`.
    pub fn up(&self) {
        let out = run_with_timeout(
            Command::new(testbed_sh()).args(["up", &self.prefix]),
            Duration::from_secs(60),
        );
        assert!(out.success(), "testbed.sh up: {out}");
    }

    pub fn srv(&self) -> String {
        format!("/run/netns/{}srv", self.prefix)
    }

    /// `args` in the server's network namespace, entered with nsenter
    /// (which keeps /sys, and so the cgroup2 mount, unlike `ip netns
    /// exec`), without ldsaref's variables.
    pub fn nsenter<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.srv())).args(args);
        super::clear_ldsaref_env(&mut c);
        c
    }

    /// Runs [`CgroupBed::nsenter`]`(args)`.
    pub fn in_srv<S: AsRef<OsStr>>(&self, args: &[S]) -> RunOutput {
        run_with_timeout(&mut self.nsenter(args), TIMEOUT)
    }

    pub fn hits(&self, c: &str) -> u64 {
        testbed_hits(&self.prefix, c)
    }

    /// `ip -n <server> ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let out = run_with_timeout(
            Command::new("ip")
                .args(["-n", &format!("{}srv", self.prefix)])
                .args(args),
            TIMEOUT,
        );
        assert!(out.success(), "ip {args:?}: {out}");
    }
}

/// `ldsaref run --cgroup --rules R --profile P -- CMD…`
pub fn under(rules: &str, profile: &str, cmd: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        &cli_path().display().to_string(),
        "run",
        "--cgroup",
        "--rules",
        rules,
        "--profile",
        profile,
        "--",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(cmd.iter().map(|s| s.to_string()));
    v
}

/// The first line of stdout, trimmed: a client's answer or `error NAME
/// after N ms`.
#[track_caller]
pub fn answer(out: &RunOutput) -> String {
    out.stdout
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// `error NAME after N ms` with N under a second.
#[track_caller]
pub fn failed_at_once(out: &RunOutput, errno: &str) {
    let line = answer(out);
    let ms: u64 = line
        .strip_prefix(&format!("error {errno} after "))
        .and_then(|r| r.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("expected error {errno}: {out}"));
    assert!(ms < 1000, "{errno} only after {ms} ms: {out}");
}
