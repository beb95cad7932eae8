//! `ldsaref updown --apply` keeps the cgroup backend's table current: once
//! table `inet ldsaref` is installed in the network namespace, every change
//! the daemon makes to the rules directory is applied to it at once, so that
//! a connection going down stops its profile's traffic in the kernel too
//! (the profile's cgroup then has no rules: fail closed).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{cli_path, run_with_timeout, Netns, RunOutput, TempDir};

/// The tests of this file one at a time: `apply --remove` removes every
/// empty cgroup under ldsaref.slice, which is shared by all namespaces,
/// so one test's could remove the other's before its table loads.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What every test here starts from, taken in this order: its turn, a
/// network namespace and a directory of its own.
fn begin(dir: &str) -> (std::sync::MutexGuard<'static, ()>, Netns, TempDir) {
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    (turn, Netns::new(), TempDir::new(dir))
}

/// `ldsaref ARGS` in `ns` through nsenter (which keeps /sys and its cgroup2
/// mount), with exactly `vars` and a PATH in the environment.
fn ldsaref_in(ns: &Netns, args: &[&str], vars: &[(&str, &str)]) -> RunOutput {
    run_with_timeout(
        &mut ldsaref_command(ns, args, vars),
        Duration::from_secs(60),
    )
}

/// The command [`ldsaref_in`] runs.
fn ldsaref_command(ns: &Netns, args: &[&str], vars: &[(&str, &str)]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", ns.name()))
        .arg("/usr/bin/env")
        .arg("-i")
        .arg("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
    for (k, v) in vars {
        c.arg(format!("{k}={v}"));
    }
    c.arg(cli_path()).args(args);
    c
}

/// `nft list table inet ldsaref` in `ns`.
fn list_table(ns: &Netns) -> RunOutput {
    nft_list(ns, "ldsaref")
}

/// `nft list table inet TABLE` in `ns`.
fn nft_list(ns: &Netns, table: &str) -> RunOutput {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", ns.name()))
        .args(["nft", "list", "table", "inet", table]);
    run_with_timeout(&mut c, Duration::from_secs(30))
}

fn table(ns: &Netns) -> String {
    let out = list_table(ns);
    assert!(out.success(), "{out}");
    out.stdout
}

/// `nft list table inet ldsaref_guard` in `ns` (updown's guards).
fn list_guards(ns: &Netns) -> String {
    let out = nft_list(ns, "ldsaref_guard");
    assert!(out.success(), "{out}");
    out.stdout
}

fn has_table(ns: &Netns) -> bool {
    list_table(ns).success()
}

/// Waits (at most 10 s: a background apply on a loaded machine) until the
/// table satisfies `ok`; how long it took.
fn wait_for_table(ns: &Netns, ok: impl Fn(&str) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let t = table(ns);
        if ok(&t) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the table did not follow within 10 s:\n{t}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The tickets of `ns`'s background applies: handed out, followed (see
/// `apply_queue.rs`).
fn tickets(ns: &Netns) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/run/ldsaref/apply-{}.queue", ns_id(ns)))
        .unwrap_or_default();
    let mut n = text
        .split(' ')
        .map(|x| x.trim().parse::<u64>().unwrap_or(0));
    (n.next().unwrap_or(0), n.next().unwrap_or(0))
}

/// `DEV-INO` of `ns`, as ldsaref names its files in /run/ldsaref.
fn ns_id(ns: &Netns) -> String {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", ns.name())).args([
        "stat",
        "-L",
        "-c",
        "%d %i",
        "/proc/self/ns/net",
    ]);
    let out = run_with_timeout(&mut c, Duration::from_secs(30));
    assert!(out.success(), "{out}");
    out.stdout.trim().replace(' ', "-")
}

fn updown(ns: &Netns, dir: &Path, verb: &str, conn: &str, peer: &str, mark: &str) -> RunOutput {
    updown_with(ns, dir, &[], verb, conn, peer, mark)
}

/// `updown` with `extra` arguments.
fn updown_with(
    ns: &Netns,
    dir: &Path,
    extra: &[&str],
    verb: &str,
    conn: &str,
    peer: &str,
    mark: &str,
) -> RunOutput {
    let mut args = vec!["updown", "--apply", "--dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = ldsaref_in(
        ns,
        &args,
        &[
            ("PLUTO_VERSION", "1.1"),
            ("PLUTO_VERB", verb),
            ("PLUTO_CONNECTION", conn),
            ("PLUTO_MY_CLIENT", "203.0.113.1/32"),
            ("PLUTO_PEER_CLIENT", peer),
            ("PLUTO_MARK_OUT", mark),
        ],
    );
    assert_eq!(out.code(), Some(0), "{verb} {conn}: {out}");
    out
}

#[test]
fn updown_applies_the_table_again_after_each_change() {
    require_root!();
    let (_turn, ns, t) = begin("updown-cgroup");
    let dir = t.join("rules.d");
    let tag = std::process::id();
    let (c1, c2) = (format!("udc1x{tag}"), format!("udc2x{tag}"));

    // Before any table: updown leaves the cgroup backend alone (its
    // background apply finds no table and installs none).
    updown(&ns, &dir, "up-client", &c1, "198.18.0.0/24", "1/0xffffffff");
    updown(&ns, &dir, "up-client", &c2, "198.19.0.0/24", "2/0xffffffff");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !has_table(&ns),
        "updown --apply installed a table by itself"
    );
    let applied = ldsaref_in(&ns, &["apply", "--rules", dir.to_str().unwrap()], &[]);
    assert_eq!(applied.code(), Some(0), "{applied}");
    let before = table(&ns);
    assert!(
        before.contains("198.18.0.0") && before.contains("198.19.0.0"),
        "{before}"
    );

    // client1's tunnel goes down: its network leaves the table in the
    // background (its guard holds the mark meanwhile).
    let start = Instant::now();
    let out = updown(
        &ns,
        &dir,
        "down-client",
        &c1,
        "198.18.0.0/24",
        "1/0xffffffff",
    );
    let took = start.elapsed();
    assert!(out.stdout.contains("follow in the background"), "{out}");
    let followed = wait_for_table(&ns, |t| {
        !t.contains("198.18.0.0") && t.contains("198.19.0.0")
    });
    eprintln!("updown down-client returned after {took:?}; the table followed after {followed:?}");
    let guards = list_guards(&ns);
    assert!(
        guards.contains("meta mark 0x00000001 ip daddr 198.18.0.0/24 rt ipsec missing"),
        "{guards}"
    );

    // The last one, without the guard: the table follows before updown
    // returns (nothing else would hold the profile's traffic), stays,
    // empty, and still drops what the profiles' cgroups send.
    let start = Instant::now();
    let out = updown_with(
        &ns,
        &dir,
        &["--no-guard"],
        "down-client",
        &c2,
        "198.19.0.0/24",
        "2/0xffffffff",
    );
    let took = start.elapsed();
    // The profiles keep their places (their cgroups are there): one
    // section changes.
    assert!(
        out.stdout.contains(
            "table inet ldsaref updated (0 profiles, 0 rules, 2 profiles without rules (their \
             cgroups' packets dropped)): 1 section replaced"
        ),
        "{out}"
    );
    let empty = table(&ns);
    assert!(!empty.contains("198.19.0.0"), "{empty}");
    assert!(empty.contains("drop"), "{empty}");
    eprintln!("updown down-client --no-guard with the table re-applied: {took:?}");

    // Up again: the table follows in the background, so that the daemon
    // is not held from answering its peer.
    let start = Instant::now();
    let out = updown(&ns, &dir, "up-client", &c1, "198.18.0.0/24", "1/0xffffffff");
    let returned = start.elapsed();
    assert!(out.stdout.contains("follow in the background"), "{out}");
    let followed = wait_for_table(&ns, |t| t.contains("198.18.0.0"));
    eprintln!(
        "updown up-client returned after {returned:?}; the table followed after {followed:?}"
    );

    // A burst of calls, as a daemon bringing up many tunnels makes: the
    // background applies queue on the table's lock, each reading the rules
    // once it holds it, so the table ends with every network.
    let nets: Vec<(String, String)> = (0..5)
        .map(|i| (format!("udb{i}x{tag}"), format!("198.18.{}.0/24", 10 + i)))
        .collect();
    for (i, (conn, net)) in nets.iter().enumerate() {
        updown(
            &ns,
            &dir,
            "up-client",
            conn,
            net,
            &format!("{}/0xffffffff", 10 + i),
        );
    }
    wait_for_table(&ns, |t| {
        nets.iter()
            .all(|(_, net)| t.contains(net.trim_end_matches("/24")))
    });
    // Each up took a ticket; once the last apply that read the rules has
    // installed them, an apply holding any of those tickets has nothing
    // to do (a burst's queued applies stop at once), and one holding a
    // later ticket reads the rules as before.
    let start = Instant::now();
    let (handed_out, followed) = loop {
        let (h, f) = tickets(&ns);
        if (h > 0 && f == h) || start.elapsed() > Duration::from_secs(10) {
            break (h, f);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        handed_out >= 6 && followed == handed_out,
        "{handed_out} {followed}"
    );
    let rules = dir.to_str().unwrap();
    for (ticket, expect) in [
        (handed_out, "already follows the rules of ticket"),
        (handed_out - 3, "already follows the rules of ticket"),
        (handed_out + 1, "table inet ldsaref is up to date"),
    ] {
        let t = ticket.to_string();
        let out = ldsaref_in(
            &ns,
            &["apply", "--if-installed", "--ticket", &t, "--rules", rules],
            &[],
        );
        assert_eq!(out.code(), Some(0), "{out}");
        assert!(out.stdout.contains(expect), "ticket {ticket}: {out}");
    }
    for (i, (conn, net)) in nets.iter().enumerate() {
        updown(
            &ns,
            &dir,
            "down-client",
            conn,
            net,
            &format!("{}/0xffffffff", 10 + i),
        );
    }
    wait_for_table(&ns, |t| {
        !t.contains("198.18.10.0") && !t.contains("198.18.14.0")
    });
    updown(
        &ns,
        &dir,
        "down-client",
        &c1,
        "198.18.0.0/24",
        "1/0xffffffff",
    );
    // No rules file left: the background apply installs the empty table.
    wait_for_table(&ns, |t| !t.contains("198.18.0.0") && t.contains("drop"));

    // Without --apply the table is left as it is.
    let out = ldsaref_in(
        &ns,
        &["updown", "--dir", dir.to_str().unwrap()],
        &[
            ("PLUTO_VERB", "up-client"),
            ("PLUTO_CONNECTION", &c1),
            ("PLUTO_PEER_CLIENT", "198.18.0.0/24"),
            ("PLUTO_MARK_OUT", "1/0xffffffff"),
        ],
    );
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!table(&ns).contains("198.18.0.0"));

    let removed = ldsaref_in(&ns, &["apply", "--remove"], &[]);
    assert_eq!(removed.code(), Some(0), "{removed}");
}

#[test]
fn apply_if_installed_keeps_a_table_current_and_installs_none() {
    require_root!();
    let (_turn, ns, t) = begin("apply-if-installed");
    let rules = t.join("rules");
    let tag = std::process::id();
    std::fs::write(&rules, format!("[aii{tag}]\n198.18.0.0/24 mark 0x1\n")).unwrap();
    let r = rules.to_str().unwrap();

    // No table: nothing installed, the index compiled all the same.
    let out = ldsaref_in(&ns, &["apply", "--if-installed", "--rules", r], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("nothing to keep current"), "{out}");
    assert!(!has_table(&ns), "--if-installed installed a table");
    assert!(t.join("rules.index").exists(), "{out}");

    // Installed: it follows a change.
    let out = ldsaref_in(&ns, &["apply", "--rules", r], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    std::fs::write(&rules, format!("[aii{tag}]\n198.19.0.0/24 mark 0x2\n")).unwrap();
    let out = ldsaref_in(&ns, &["apply", "--if-installed", "--rules", r], &[]);
    assert_eq!(out.code(), Some(0), "{out}");
    let now = table(&ns);
    assert!(
        now.contains("198.19.0.0") && !now.contains("198.18.0.0"),
        "{now}"
    );

    let removed = ldsaref_in(&ns, &["apply", "--remove"], &[]);
    assert_eq!(removed.code(), Some(0), "{removed}");
}

/// The daemon reads updown's output until every holder of the pipe is
/// gone: the background apply after an up (a child forked from updown)
/// must not hold it, even while it waits for the table's lock.
#[test]
fn the_background_apply_lets_go_of_the_daemons_pipe() {
    require_root!();
    let (_turn, ns, t) = begin("updown-pipe");
    let dir = t.join("rules.d");
    let tag = std::process::id();
    let conn = format!("udp{tag}");
    updown(
        &ns,
        &dir,
        "up-client",
        &conn,
        "198.18.0.0/24",
        "1/0xffffffff",
    );
    let applied = ldsaref_in(&ns, &["apply", "--rules", dir.to_str().unwrap()], &[]);
    assert_eq!(applied.code(), Some(0), "{applied}");

    // Another change of the table holds the lock for 3 s.
    let lock = format!("/run/ldsaref/apply-{}.lock", ns_id(&ns));
    let mut holder = Command::new("flock")
        .args([&lock, "-c", "echo held; sleep 3"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("flock (util-linux)");
    let mut held = [0u8; 5];
    std::io::Read::read_exact(holder.stdout.as_mut().unwrap(), &mut held).unwrap();

    // updown's output reaches its end when updown exits, with the apply
    // it started still waiting for the lock.
    let start = Instant::now();
    let mut c = ldsaref_command(
        &ns,
        &["updown", "--apply", "--dir", dir.to_str().unwrap()],
        &[
            ("PLUTO_VERSION", "1.1"),
            ("PLUTO_VERB", "up-client"),
            ("PLUTO_CONNECTION", &conn),
            ("PLUTO_MY_CLIENT", "203.0.113.1/32"),
            ("PLUTO_PEER_CLIENT", "198.19.0.0/24"),
            ("PLUTO_MARK_OUT", "1/0xffffffff"),
        ],
    );
    c.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    let eof = start.elapsed();
    assert!(child.wait().unwrap().success(), "{out}{err}");
    assert!(out.contains("follow in the background"), "{out}{err}");
    assert!(
        eof < Duration::from_secs(2),
        "updown's output ended only after {eof:?}: the background apply held it"
    );
    assert!(
        !table(&ns).contains("198.19.0.0"),
        "applied through the lock"
    );

    // Once the lock is free, the apply that waited installs the change.
    assert!(holder.wait().unwrap().success());
    let followed = wait_for_table(&ns, |t| t.contains("198.19.0.0"));
    eprintln!(
        "output ended after {eof:?}; the table followed {followed:?} after the lock's release"
    );

    let removed = ldsaref_in(&ns, &["apply", "--remove"], &[]);
    assert_eq!(removed.code(), Some(0), "{removed}");
}
