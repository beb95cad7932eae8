//! `ldsaref status` lists a sleeping program run under each backend: the
//! preload (`ldsaref run`, found by its maps and environment, no root
//! needed) and the cgroup backend (`ldsaref run --cgroup`, found in its
//! profile's cgroup; root, in a network namespace of the test's own, whose
//! table the test installs and so can report up to date, then older than
//! the rules).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::bed::{cgroup2_mount, ldsaref_cgroup_name, Cgroups};
use common::{cli_path, run_with_timeout, Netns, RunOutput, TempDir};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Kills the child on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the child has exec'd `sleep`.
fn wait_for_sleep(c: &mut Running) {
    let exe = format!("/proc/{}/exe", c.0.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_link(&exe).is_ok_and(|p| p.ends_with("sleep")) {
        if let Ok(Some(st)) = c.0.try_wait() {
            panic!("ldsaref run exited: {st:?}");
        }
        assert!(Instant::now() < deadline, "the program never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The report's row for `pid`, split in columns.
fn row(out: &RunOutput, pid: u32) -> Vec<String> {
    out.stdout
        .lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .find(|cols| cols.get(1) == Some(&pid.to_string()))
        .unwrap_or_else(|| panic!("pid {pid} not listed: {out}"))
}

#[test]
fn status_lists_a_preloaded_program() {
    let d = TempDir::new("status");
    let rules = d.write("rules", "[st1]\n198.18.0.0/24 saref 101\n");
    let mut c = Command::new(cli_path());
    common::clear_ldsaref_env(&mut c);
    c.arg("run")
        .arg("--rules")
        .arg(&rules)
        .args(["--profile", "st1", "--saref", "9", "--", "sleep", "30"])
        .stdout(Stdio::null());
    let mut child = Running(c.spawn().unwrap());
    wait_for_sleep(&mut child);
    let mut s = Command::new(cli_path());
    common::clear_ldsaref_env(&mut s);
    s.arg("status").arg("--rules").arg(&rules);
    let out = run_with_timeout(&mut s, TIMEOUT);
    assert_eq!(out.code(), Some(0), "{out}");
    // Other steered processes of the machine may be listed too.
    assert!(
        out.stdout.lines().any(|l| l
            .split_whitespace()
            .eq(["PROFILE", "PID", "BACKEND", "SAREF", "COMMAND"])),
        "{out}"
    );
    assert_eq!(
        row(&out, child.0.id()),
        ["st1", &child.0.id().to_string(), "preload", "9", "sleep"],
        "{out}"
    );
}

/// The profile's cgroups, removed on drop (after the processes).
#[test]
fn status_lists_a_program_in_its_cgroup() {
    require_root!();
    let Some(mount) = cgroup2_mount() else {
        eprintln!("SKIPPED (no cgroup v2): status_lists_a_program_in_its_cgroup");
        return;
    };
    // A profile name the cgroup test's sweep recognises (`-t<PID>`).
    let profile = format!("st-t{}", std::process::id());
    let slice = mount.join("ldsaref.slice");
    let dir = slice.join(ldsaref_cgroup_name(&profile));
    let _cgroups = Cgroups(vec![
        dir.clone(),
        dir.join(format!(
            "{}-saref7.slice",
            ldsaref_cgroup_name(&profile).trim_end_matches(".slice")
        )),
    ]);
    let ns = Netns::new();
    let d = TempDir::new("status");
    let rules = d.write("rules", format!("[{profile}]\n198.18.0.0/24 saref 101\n"));
    let rules = rules.to_str().unwrap().to_owned();
    let netns = format!("--net=/run/netns/{}", ns.name());
    let ldsaref = |args: &[&str]| {
        let mut c = Command::new("nsenter");
        c.arg(&netns).arg(cli_path()).args(args);
        common::clear_ldsaref_env(&mut c);
        run_with_timeout(&mut c, TIMEOUT)
    };
    let out = ldsaref(&["status", "--rules", &rules]);
    assert!(out.stdout.contains("not installed"), "{out}");
    ldsaref(&["apply", "--rules", &rules]).assert_success();

    let spawn = |extra: &[&str]| {
        let mut c = Command::new("nsenter");
        c.arg(&netns)
            .arg(cli_path())
            .args(["run", "--cgroup", "--rules", &rules, "--profile", &profile])
            .args(extra)
            .args(["--", "sleep", "30"])
            .stdout(Stdio::null());
        common::clear_ldsaref_env(&mut c);
        Running(c.spawn().unwrap())
    };
    // nsenter forks: the program is its child.
    let mut plain = spawn(&[]);
    let mut catch_all = spawn(&["--saref", "7"]);
    let pids: Vec<u32> = [&mut plain, &mut catch_all]
        .into_iter()
        .map(sleeping_child_of)
        .collect();

    let out = ldsaref(&["status", "--rules", &rules]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stdout.contains("installed, up to date with the rules"),
        "{out}"
    );
    assert_eq!(
        row(&out, pids[0]),
        [
            profile.as_str(),
            &pids[0].to_string(),
            "cgroup",
            "-",
            "sleep"
        ],
        "{out}"
    );
    assert_eq!(
        row(&out, pids[1]),
        [
            profile.as_str(),
            &pids[1].to_string(),
            "cgroup",
            "7",
            "sleep"
        ],
        "{out}"
    );
    // The rules change: the table is older than them.
    let rules2 = d.write("rules2", format!("[{profile}]\n198.18.0.0/24 saref 102\n"));
    let out = ldsaref(&["status", "--rules", rules2.to_str().unwrap()]);
    assert!(out.stdout.contains("OLDER than the rules"), "{out}");
    drop(plain);
    drop(catch_all);
    for pid in pids {
        let _ = Command::new("kill")
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status();
    }
    // Let the cgroups empty before their removal on drop.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|t| !t.trim().is_empty())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
}

/// The `sleep` nsenter runs (its child, or itself if it exec'd).
fn sleeping_child_of(r: &mut Running) -> u32 {
    let pid = r.0.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        for c in
            std::iter::once(pid).chain(children.split_whitespace().filter_map(|c| c.parse().ok()))
        {
            if std::fs::read_link(format!("/proc/{c}/exe")).is_ok_and(|p| p.ends_with("sleep")) {
                return c;
            }
        }
        if let Ok(Some(st)) = r.0.try_wait() {
            panic!("ldsaref run --cgroup exited: {st:?}");
        }
        assert!(Instant::now() < deadline, "the program never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
}
