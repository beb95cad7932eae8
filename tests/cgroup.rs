//! The cgroup backend end to end (`ldsaref apply`, `ldsaref run --cgroup`)
//! on the two-tunnel test bed (`scripts/testbed.sh`): a statically linked
//! client (`tests/programs/cgclient.c`, `gcc -static`, out of any
//! LD_PRELOAD's reach) reaches client1 or client2 as its profile says,
//! over TCP (IPv4 and IPv6) and unconnected UDP; unwrapped it reaches
//! neither; `deny` fails at once (TCP `ECONNREFUSED`, UDP `EPERM`) and the
//! clients receive nothing; a cgroup of `ldsaref.slice` without rules in
//! the table has its output dropped (fail closed); the per-process
//! catch-alls (`--saref N`: IPv4 only; `--mark V[/M]`: IPv4 and IPv6)
//! mark what the profile's rules leave undecided.
//!
//! The route is chosen inside connect()/sendto(), before netfilter: in the
//! bed's shape "no route to the client networks" the call fails with
//! `ENETUNREACH` before the table can mark anything (asserted, it is the
//! documented limit). The documented remedy, a route of ldsaref's own to
//! the loopback device with the inner address as source, is tested next
//! (steered packets reach their tunnel, the others never leave); then the
//! other gateway shape, "a default route that leads elsewhere" (a veth
//! whose peer forwards nothing), where the table's mark re-routes every
//! packet into its tunnel.
//!
//! One test, in steps: the cgroups are machine-wide, and the steps share
//! them. Profile names carry the test's PID so that concurrent runs do not
//! meet. Needs root, nft, gcc with a static libc, and cgroup v2; the bed's
//! namespaces (and with them the table) and the test's cgroups are removed
//! at the end, also on failure.

mod common;

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::bed::{
    answer, failed_at_once, ldsaref_cgroup_name, ldsaref_slice, sweep_stale, under, CgroupBed,
};
use common::{cli_path, run_with_timeout, source_dir, RunOutput, TempDir};

const TIMEOUT: Duration = Duration::from_secs(30);

fn static_client() -> Option<PathBuf> {
    let src = source_dir().join("tests/programs/cgclient.c");
    let dir = common::target_dir().join("test-programs");
    std::fs::create_dir_all(&dir).ok()?;
    let out = dir.join(format!("cgclient-static-{}", std::process::id()));
    let ok = Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(out)
}

/// The shared bed (`prefix`, `cgroups`, `srv()`, `in_srv()`, `hits()`,
/// `ip()`), the test's rules directory and the static client, removed on
/// drop.
struct Bed {
    bed: CgroupBed,
    dir: TempDir,
    client: PathBuf,
}

impl Deref for Bed {
    type Target = CgroupBed;
    fn deref(&self) -> &CgroupBed {
        &self.bed
    }
}

impl DerefMut for Bed {
    fn deref_mut(&mut self) -> &mut CgroupBed {
        &mut self.bed
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        // The bed and the cgroups go with `self.bed`.
        let _ = std::fs::remove_file(&self.client);
    }
}

impl Bed {
    fn ldsaref(&self, args: &[&str]) -> RunOutput {
        let cli = cli_path().display().to_string();
        let mut all = vec![cli.as_str()];
        all.extend_from_slice(args);
        self.in_srv(&all)
    }

    /// The static client under `run --cgroup --profile profile`.
    fn steered(&self, rules: &str, profile: &str, what: &str) -> RunOutput {
        let client = self.client.display().to_string();
        let mut cmd = vec![client.as_str()];
        cmd.extend(what.split(' '));
        self.in_srv(&under(rules, profile, &cmd))
    }

    /// The static client, moved into the cgroup `dir` by hand (not by
    /// `run --cgroup`, which knows only the rules' profiles).
    fn in_cgroup(&self, dir: &std::path::Path, what: &str) -> RunOutput {
        let procs = dir.join("cgroup.procs");
        self.in_srv(&[
            "sh",
            "-c",
            &format!(
                "echo $$ > '{}' && exec '{}' {what}",
                procs.display(),
                self.client.display()
            ),
        ])
    }

    fn unwrapped(&self, what: &str) -> RunOutput {
        let client = self.client.display().to_string();
        let mut args = vec![client.as_str()];
        args.extend(what.split(' '));
        self.in_srv(&args)
    }
}

#[test]
fn a_static_binary_is_steered_by_its_cgroup() {
    require_root!();
    let Some(slice) = ldsaref_slice("a_static_binary_is_steered_by_its_cgroup") else {
        return;
    };
    let client = static_client()
        .expect("gcc -static cannot build tests/programs/cgclient.c (libc6-dev has libc.a)");
    let pid = std::process::id();
    let (p1, p2, pd, pr, pc) = (
        format!("c1-t{pid}"),
        format!("c2-t{pid}"),
        format!("deny-t{pid}"),
        format!("refl-t{pid}"),
        format!("catch-t{pid}"),
    );
    sweep_stale(&slice);
    let mut bed = Bed {
        bed: CgroupBed::new(&slice, &[&p1, &p2, &pd, &pr, &pc]),
        dir: TempDir::new("cgroup"),
        client,
    };
    bed.up();
    let rules_text = format!(
        "[{p1}]\n198.18.0.0/24 saref 101\n2001:db8:18::/64 mark 1\n\
         [{p2}]\n198.18.0.0/24 saref 202\n2001:db8:18::/64 mark 2\n\
         [{pd}]\n198.18.0.0/24 deny\n2001:db8:18::/64 deny\n\
         [{pr}]\n198.18.0.0/24 reflect\n\
         [{pc}]\n198.51.100.0/24 deny\n"
    );
    let rules = bed.dir.write("rules", &rules_text).display().to_string();

    // No table yet: run --cgroup refuses, naming the fix.
    let out = bed.steered(&rules, &p1, "udp 198.18.0.5 7");
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("no table inet ldsaref is installed"),
        "{out}"
    );
    assert!(out.stderr.contains("run `ldsaref apply`"), "{out}");

    let out = bed.ldsaref(&["apply", "--rules", &rules]);
    assert!(out.success(), "{out}");
    assert!(out.stdout.contains("installed (5 profiles"), "{out}");
    for cg in &bed.cgroups {
        assert!(cg.is_dir(), "{} was not created", cg.display());
    }
    let out = bed.ldsaref(&["apply", "--rules", &rules]);
    assert!(out.stdout.contains("up to date"), "{out}");

    // Shape 1, no route to the client networks: the route lookup in
    // sendto()/connect() fails before netfilter runs.
    let out = bed.steered(&rules, &p1, "udp 198.18.0.5 7");
    failed_at_once(&out, "ENETUNREACH");
    let out = bed.steered(&rules, &p1, "tcp 198.18.0.5 80");
    failed_at_once(&out, "ENETUNREACH");

    // The remedy for that shape: a route of ldsaref's own for the client
    // networks, to the loopback device, with the inner address as source.
    // Marked packets are re-routed into their tunnel; the others are
    // looped back and never leave.
    let before = (bed.hits("c1"), bed.hits("c2"));
    bed.ip(&[
        "route",
        "add",
        "198.18.0.0/24",
        "dev",
        "lo",
        "src",
        "203.0.113.1",
    ]);
    bed.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8:18::/64",
        "dev",
        "lo",
        "src",
        "2001:db8:113::1",
    ]);
    let out = bed.unwrapped("udp 198.18.0.5 7");
    assert!(answer(&out).starts_with("error "), "{out}");
    let out = bed.unwrapped("tcp 198.18.0.5 80");
    assert!(answer(&out).starts_with("error "), "{out}");
    assert_eq!(
        (bed.hits("c1"), bed.hits("c2")),
        before,
        "unsteered packets left"
    );
    for (profile, name) in [(&p1, "client1"), (&p2, "client2")] {
        let out = bed.steered(&rules, profile, "udp 198.18.0.5 7");
        assert_eq!(answer(&out), format!("{name}: ping"), "{out}");
        let out = bed.steered(&rules, profile, "tcp 198.18.0.5 80");
        assert_eq!(answer(&out), name, "{out}");
        let out = bed.steered(&rules, profile, "tcp 2001:db8:18::5 80");
        assert_eq!(answer(&out), name, "{out}");
    }
    bed.ip(&["route", "del", "198.18.0.0/24", "dev", "lo"]);
    bed.ip(&["-6", "route", "del", "2001:db8:18::/64", "dev", "lo"]);

    // Shape 2, a default route that leads elsewhere (nothing forwards
    // from it): the table's mark re-routes into the tunnel, keeping the
    // source address of that route.
    bed.ip(&[
        "link", "add", "els", "type", "veth", "peer", "name", "els-p",
    ]);
    bed.ip(&["link", "set", "els", "up"]);
    bed.ip(&["link", "set", "els-p", "up"]);
    bed.ip(&[
        "route",
        "add",
        "default",
        "dev",
        "els",
        "src",
        "203.0.113.1",
    ]);
    bed.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "dev",
        "els",
        "src",
        "2001:db8:113::1",
    ]);

    for (profile, name) in [(&p1, "client1"), (&p2, "client2")] {
        let out = bed.steered(&rules, profile, "udp 198.18.0.5 7");
        assert_eq!(answer(&out), format!("{name}: ping"), "{out}");
        let out = bed.steered(&rules, profile, "tcp 198.18.0.5 80");
        assert_eq!(answer(&out), name, "{out}");
        let out = bed.steered(&rules, profile, "tcp 2001:db8:18::5 80");
        assert_eq!(answer(&out), name, "{out}");
    }

    // A catch-all SAref (run --cgroup --saref, like IPSEC_SAREF): what the
    // profile's rules leave undecided, IPv4 only.
    let catch = slice.join(ldsaref_cgroup_name(&pc)).join(format!(
        "{}-saref202.slice",
        ldsaref_cgroup_name(&pc).trim_end_matches(".slice")
    ));
    bed.cgroups.push(catch.clone());
    let client = bed.client.display().to_string();
    let with_catch_all = |what: &str| {
        let mut args = vec![
            "run",
            "--cgroup",
            "--rules",
            &rules,
            "--profile",
            &pc,
            "--saref",
            "202",
            "--",
            &client,
        ];
        args.extend(what.split(' '));
        bed.ldsaref(&args)
    };
    let out = with_catch_all("udp 198.18.0.5 7");
    assert_eq!(answer(&out), "client2: ping", "{out}");
    assert!(catch.is_dir(), "{} was not made", catch.display());
    let out = with_catch_all("tcp 198.18.0.5 80");
    assert_eq!(answer(&out), "client2", "{out}");
    let out = with_catch_all("tcp 2001:db8:18::5 80");
    assert!(
        answer(&out).starts_with("error "),
        "IPv6 took the catch-all: {out}"
    );
    failed_at_once(&with_catch_all("udp 198.51.100.1 7"), "EPERM");
    let out = bed.steered(&rules, &pc, "udp 198.18.0.5 7");
    assert!(answer(&out).starts_with("error "), "{out}");

    // A catch-all mark (run --cgroup --mark, the cgroup backend's own):
    // IPv4 and IPv6; on the packets it reaches (mark 0) a mask changes
    // nothing, as the library's `mark V/M` on a socket without a mark,
    // so `0x2/0xff` marks 2 (the bed routes fwmark 1 and 2 like the mast
    // marks of 101 and 202), in the same cgroup as `--mark 2`.
    let mark_cgroup = |v: &str| {
        slice.join(ldsaref_cgroup_name(&pc)).join(format!(
            "{}-mark{v}.slice",
            ldsaref_cgroup_name(&pc).trim_end_matches(".slice")
        ))
    };
    bed.cgroups.push(mark_cgroup("0x1"));
    bed.cgroups.push(mark_cgroup("0x2"));
    let client = bed.client.display().to_string();
    let with_mark = |mark: &str, what: &str| {
        let mut args = vec![
            "run",
            "--cgroup",
            "--rules",
            &rules,
            "--profile",
            &pc,
            "--mark",
            mark,
            "--",
            &client,
        ];
        args.extend(what.split(' '));
        bed.ldsaref(&args)
    };
    for (mark, name) in [("1", "client1"), ("0x2/0xff", "client2")] {
        let out = with_mark(mark, "udp 198.18.0.5 7");
        assert_eq!(
            answer(&out),
            format!("{name}: ping"),
            "--mark {mark}: {out}"
        );
        let out = with_mark(mark, "tcp 198.18.0.5 80");
        assert_eq!(answer(&out), name, "--mark {mark}: {out}");
        let out = with_mark(mark, "tcp 2001:db8:18::5 80");
        assert_eq!(answer(&out), name, "--mark {mark}: {out}");
        // The profile's rules first.
        failed_at_once(&with_mark(mark, "udp 198.51.100.1 7"), "EPERM");
    }
    for v in ["0x1", "0x2"] {
        assert!(
            mark_cgroup(v).is_dir(),
            "{} was not made",
            mark_cgroup(v).display()
        );
    }
    let out = bed.in_srv(&["nft", "list", "map", "inet", "ldsaref", "catchall6"]);
    assert!(
        out.stdout.contains("-mark0x2.slice\" : 0x00000002"),
        "{out}"
    );
    assert!(!out.stdout.contains("-saref202.slice"), "{out}");

    let before = (bed.hits("c1"), bed.hits("c2"));
    // Unwrapped: neither tunnel.
    let out = bed.unwrapped("udp 198.18.0.5 7");
    assert!(answer(&out).starts_with("error "), "{out}");
    let out = bed.unwrapped("tcp 198.18.0.5 80");
    assert!(answer(&out).starts_with("error "), "{out}");
    // deny: at once, and nothing leaves.
    failed_at_once(
        &bed.steered(&rules, &pd, "tcp 198.18.0.5 80"),
        "ECONNREFUSED",
    );
    failed_at_once(
        &bed.steered(&rules, &pd, "tcp 2001:db8:18::5 80"),
        "ECONNREFUSED",
    );
    failed_at_once(&bed.steered(&rules, &pd, "udp 198.18.0.5 7"), "EPERM");
    assert_eq!(
        (bed.hits("c1"), bed.hits("c2")),
        before,
        "something reached a client"
    );

    // Fail closed: a cgroup of ldsaref.slice whose profile has no rules in
    // the table (here: one the table never heard of).
    let stray = slice.join(format!("ldsaref-stray-t{pid}.slice"));
    std::fs::create_dir_all(&stray).unwrap();
    bed.cgroups.push(stray.clone());
    failed_at_once(&bed.in_cgroup(&stray, "udp 198.18.0.5 7"), "EPERM");
    assert_eq!(
        (bed.hits("c1"), bed.hits("c2")),
        before,
        "something reached a client"
    );

    // A connection down (its rules gone, as updown's --on-down remove
    // leaves them): its profile keeps its place in the table, and what
    // its cgroup sends is dropped; back up, it is steered again. One
    // section changes each time.
    let without_p2 = bed
        .dir
        .write(
            "rules-down",
            rules_text.replace(
                &format!("[{p2}]\n198.18.0.0/24 saref 202\n2001:db8:18::/64 mark 2\n"),
                "",
            ),
        )
        .display()
        .to_string();
    let out = bed.ldsaref(&["apply", "--rules", &without_p2]);
    assert!(
        out.stdout.contains("updated (4 profiles, 6 rules, 1 profile without rules (its cgroup's packets dropped)): 1 section replaced"),
        "{out}"
    );
    let out = bed.steered(&without_p2, &p2, "udp 198.18.0.5 7");
    assert!(out.stderr.contains("unknown profile"), "{out}");
    let p2_dir = slice.join(ldsaref_cgroup_name(&p2));
    for what in ["udp 198.18.0.5 7", "udp 2001:db8:18::5 7"] {
        failed_at_once(&bed.in_cgroup(&p2_dir, what), "EPERM");
    }
    assert_eq!(
        (bed.hits("c1"), bed.hits("c2")),
        before,
        "something reached a client"
    );
    let out = bed.ldsaref(&["apply", "--rules", &rules]);
    assert!(
        out.stdout
            .contains("updated (5 profiles, 8 rules): 1 section replaced"),
        "{out}"
    );
    let out = bed.steered(&rules, &p2, "udp 198.18.0.5 7");
    assert_eq!(answer(&out), "client2: ping", "{out}");

    // reflect: an ordinary UDP server answers each tunnel's peer (both
    // 198.18.0.5) through the tunnel its datagram came in on (the bed marks
    // arrivals per tunnel; the table keeps that mark on the flow).
    let server = source_dir().join("tests/programs/reflect_echo.py");
    let cli = cli_path().display().to_string();
    let echo_server = |steered: bool, count: &str| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", bed.srv()));
        if steered {
            c.args([
                &cli,
                "run",
                "--cgroup",
                "--rules",
                &rules,
                "--profile",
                &pr,
                "--",
            ]);
        }
        c.arg(common::python3())
            .arg(&server)
            .args(["203.0.113.1", "5000", count, "recvfrom"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        common::clear_ldsaref_env(&mut c);
        let mut child = c.spawn().unwrap();
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut ready,
        )
        .unwrap();
        assert_eq!(ready.trim(), "ready", "the echo server did not start");
        child
    };
    let ask = |c: &str| {
        let script = format!(
            "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.settimeout(2); s.sendto(b'from {c}', ('203.0.113.1', 5000)); \
             print(s.recv(100).decode())"
        );
        let ns = format!("{}{c}", bed.prefix);
        run_with_timeout(
            Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(common::python3())
                .args(["-c", &script]),
            TIMEOUT,
        )
    };
    // Unsteered, the reply takes the default route, elsewhere.
    let mut echo = echo_server(false, "1");
    let out = ask("c1");
    assert!(!out.success() && out.stdout.is_empty(), "{out}");
    let _ = echo.kill();
    let _ = echo.wait();

    let mut echo = echo_server(true, "2");
    // Meanwhile --remove refuses: the server would lose its steering.
    let out = bed.ldsaref(&["apply", "--remove"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("not removing table inet ldsaref: 1 process"),
        "{out}"
    );
    for c in ["c1", "c2"] {
        let out = ask(c);
        assert_eq!(out.stdout.trim(), format!("from {c}"), "{out}");
    }
    let status = echo.wait().unwrap();
    assert!(status.success(), "the echo server failed: {status}");

    // Changed rules: run --cgroup refuses until they are applied.
    let rules = bed
        .dir
        .write(
            "rules",
            format!("{rules_text}[{p1}]\n198.51.100.0/24 mark 7\n"),
        )
        .display()
        .to_string();
    let out = bed.steered(&rules, &p1, "udp 198.18.0.5 7");
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("older than the rules"), "{out}");
    let out = bed.ldsaref(&["apply", "--rules", &rules]);
    assert!(out.stdout.contains("replaced"), "{out}");
    // The new table keeps the catch-all cgroups that exist.
    let out = bed.in_srv(&["nft", "list", "map", "inet", "ldsaref", "catchall"]);
    assert!(
        out.stdout.contains("-saref202.slice\" : 0x80ca0000"),
        "{out}"
    );
    assert!(
        out.stdout.contains("-mark0x1.slice\" : 0x00000001"),
        "{out}"
    );
    let out = bed.in_srv(&["nft", "list", "map", "inet", "ldsaref", "catchall6"]);
    assert!(
        out.stdout.contains("-mark0x1.slice\" : 0x00000001")
            && !out.stdout.contains("-saref202.slice"),
        "{out}"
    );
    let out = bed.steered(&rules, &p1, "udp 198.18.0.5 7");
    assert_eq!(answer(&out), "client1: ping", "{out}");

    // `ip netns exec` mounts a fresh /sys without cgroup2: ldsaref mounts
    // the hierarchy in a mount namespace of its own, so `apply` there
    // gives the same table (same cgroup ids; the fingerprint ignores the
    // mount's prefix) and `run --cgroup` steers; the program then sees
    // the mounts `ip netns exec` gave it (no cgroup2).
    let netns_exec = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &format!("{}srv", bed.prefix), &cli])
            .args(args);
        common::clear_ldsaref_env(&mut c);
        run_with_timeout(&mut c, TIMEOUT)
    };
    let out = netns_exec(&["apply", "--rules", &rules]);
    assert!(out.stdout.contains("up to date"), "{out}");
    let client = bed.client.display().to_string();
    let out = netns_exec(&[
        "run",
        "--cgroup",
        "--rules",
        &rules,
        "--profile",
        &p2,
        "--",
        &client,
        "udp",
        "198.18.0.5",
        "7",
    ]);
    assert_eq!(answer(&out), "client2: ping", "{out}");
    let out = netns_exec(&[
        "run",
        "--cgroup",
        "--rules",
        &rules,
        "--profile",
        &p1,
        "--",
        "sh",
        "-c",
        "grep -c ' - cgroup2 ' /proc/self/mountinfo; grep ^0:: /proc/self/cgroup",
    ]);
    assert_eq!(
        out.stdout,
        format!("0\n0::/ldsaref.slice/{}\n", ldsaref_cgroup_name(&p1)),
        "{out}"
    );
    // A table applied from there (here: after a change) is one the host's
    // view agrees with.
    let rules = bed
        .dir
        .write(
            "rules",
            format!("{rules_text}[{p1}]\n198.51.100.0/24 mark 8\n"),
        )
        .display()
        .to_string();
    let out = netns_exec(&["apply", "--rules", &rules]);
    assert!(out.stdout.contains("replaced"), "{out}");
    let out = bed.ldsaref(&["apply", "--rules", &rules]);
    assert!(out.stdout.contains("up to date"), "{out}");
    let out = bed.steered(&rules, &p1, "tcp 198.18.0.5 80");
    assert_eq!(answer(&out), "client1", "{out}");

    // In a cgroup namespace of its own, a cgroup2 mount's root is not the
    // hierarchy's (the table's levels would be wrong): no private view.
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &format!("{}srv", bed.prefix)])
        .args(["unshare", "--cgroup", "--"])
        .arg(&cli)
        .args([
            "run",
            "--cgroup",
            "--rules",
            &rules,
            "--profile",
            &p1,
            "--",
            "true",
        ]);
    common::clear_ldsaref_env(&mut c);
    let out = run_with_timeout(&mut c, TIMEOUT);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("in a cgroup namespace"), "{out}");

    // --remove (here under `ip netns exec` too): the table goes; the
    // cgroups nobody uses too.
    let out = netns_exec(&["apply", "--remove"]);
    assert!(out.success(), "{out}");
    let out = bed.in_srv(&["nft", "list", "tables"]);
    assert!(!out.stdout.contains("ldsaref\n"), "{out}");
    assert!(
        !bed.cgroups[0].exists(),
        "{} left",
        bed.cgroups[0].display()
    );
    let out = bed.steered(&rules, &p1, "udp 198.18.0.5 7");
    assert!(
        out.stderr.contains("no table inet ldsaref is installed"),
        "{out}"
    );
}

/// `ldsaref apply ARGS` here, without root.
fn apply_here(args: &[&str]) -> RunOutput {
    let mut c = Command::new(cli_path());
    c.arg("apply").args(args);
    common::clear_ldsaref_env(&mut c);
    run_with_timeout(&mut c, TIMEOUT)
}

#[test]
fn print_shows_the_table_without_root() {
    let dir = TempDir::new("cgroup-print");
    let rules = dir.write(
        "rules",
        "198.18.0.0/15 deny\n[client-1]\n198.18.0.0/24 saref 101\n",
    );
    let out = apply_here(&["--print", "--rules", &rules.display().to_string()]);
    assert!(out.success(), "{out}");
    for want in [
        "table inet ldsaref\ndelete table inet ldsaref\ntable inet ldsaref {\n",
        "\t\t\t198.18.0.0/15 : 0x7ffe0000,\n",
        "\t\t\t0x7ffe0000 : goto deny,\n",
        "\t\t\t198.18.0.0/24 : 0x80650000,\n",
        "ldsaref.slice/ldsaref-client\\x2d1.slice\" goto p0\n",
        "\t\tmeta mark set ip daddr map @p0_4\n",
        "\t\tmeta l4proto tcp reject with tcp reset\n",
    ] {
        assert!(out.stdout.contains(want), "no {want:?} in {out}");
    }
}

#[test]
fn apply_names_the_line_of_what_it_cannot_do() {
    let dir = TempDir::new("cgroup-errors");
    let rules = dir.write(
        "rules",
        "[c1]\n198.18.0.0/24 saref 101\n10.0.0.0/8 dev eth0\n",
    );
    let path = rules.display().to_string();
    let out = apply_here(&["--print", "--rules", &path]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains(&format!("{path}:3: `dev eth0`: the cgroup backend cannot")),
        "{out}"
    );
    assert!(out.stdout.is_empty(), "{out}");
    // Rules errors are the library's, with the column.
    let rules = dir.write("rules", "[c1]\n198.18.0.0/33 saref 101\n");
    let out = apply_here(&["--rules", &path]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains(&format!("{path}:2:1: prefix length 33")),
        "{out}"
    );
    let _ = rules;
}

#[test]
fn run_cgroup_refuses_what_it_cannot_do() {
    let dir = TempDir::new("cgroup-run");
    let rules = dir.write("rules", "[c1]\n198.18.0.0/24 saref 101\n");
    let rules = rules.display().to_string();
    let run = |args: &[&str]| {
        let mut c = Command::new(cli_path());
        c.args(["run", "--cgroup", "--rules", &rules]).args(args);
        common::clear_ldsaref_env(&mut c);
        run_with_timeout(&mut c, TIMEOUT)
    };
    let out = run(&["--", "true"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("--cgroup needs --profile"), "{out}");
    let out = run(&["--profile", "c1", "--mode", "nfmark", "--", "true"]);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr.contains("--mode is an option of the preload"),
        "{out}"
    );
    let out = run(&["--profile", "c1", "--saref", "0", "--", "true"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("--saref/IPSEC_SAREF: SAref 0 out of range"),
        "{out}"
    );
    // --mark: the rules' own mark parser and its messages.
    for (mark, message) in [
        (
            "zz",
            "--mark: invalid mark value \"zz\" (expected a number, decimal or 0x hex)",
        ),
        (
            "0x1/",
            "--mark: invalid mark mask \"\" (expected a number, decimal or 0x hex)",
        ),
        (
            "0x100000000",
            "--mark: mark value 0x100000000 out of range (at most 0xffffffff)",
        ),
        (
            "0x5/0",
            "--mark: mark mask is 0: no bit of the mark would change",
        ),
        (
            "0x15/0xf",
            "--mark: mark value 0x15 has bits outside its mask 0xf",
        ),
        ("0/0xff", "--mark: mark value 0 would steer nothing"),
    ] {
        let out = run(&["--profile", "c1", "--mark", mark, "--", "true"]);
        assert_eq!(out.code(), Some(1), "{out}");
        assert!(out.stderr.contains(message), "{out}");
    }
    let out = run(&[
        "--profile",
        "c1",
        "--mark",
        "1",
        "--saref",
        "5",
        "--",
        "true",
    ]);
    assert_eq!(out.code(), Some(2), "{out}");
    let mut c = Command::new(cli_path());
    c.args(["run", "--cgroup", "--rules", &rules]).args([
        "--profile",
        "c1",
        "--mark",
        "1",
        "--",
        "true",
    ]);
    common::clear_ldsaref_env(&mut c);
    c.env("IPSEC_SAREF", "5");
    let out = run_with_timeout(&mut c, TIMEOUT);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("--mark and IPSEC_SAREF"), "{out}");
    // The library has no catch-all mark.
    let mut c = Command::new(cli_path());
    c.args([
        "run",
        "--rules",
        &rules,
        "--profile",
        "c1",
        "--mark",
        "1",
        "--",
        "true",
    ]);
    common::clear_ldsaref_env(&mut c);
    let out = run_with_timeout(&mut c, TIMEOUT);
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(
        out.stderr
            .contains("--mark is a catch-all of the cgroup backend"),
        "{out}"
    );
    let out = run(&["--profile", "c9", "--", "true"]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("unknown profile \"c9\" (the rules have: c1)"),
        "{out}"
    );
    let out = run(&["--allow-unsteered", "--profile", "c1", "--", "true"]);
    assert_eq!(out.code(), Some(2), "{out}");
}
