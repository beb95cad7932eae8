//! The cgroup backend on real programs that no LD_PRELOAD reaches, on the
//! two-tunnel test bed (`scripts/testbed.sh`): under `ldsaref run
//! --cgroup`, each reaches client1 or client2 as its profile says;
//! unwrapped it reaches neither (the clients' tunnel counters do not
//! move); with a `deny` profile it fails at once and the clients receive
//! nothing.
//!
//! - `busybox wget` (busybox-static: a static binary);
//! - a Go HTTP and UDP client built with `CGO_ENABLED=0`
//!   (`tests/programs/goclient`: static, raw syscalls, no libc);
//!   `ldsaref run` (the preload) refuses both static ones, naming
//!   `--cgroup`;
//! - an io_uring client (`tests/programs/uringclient.c`, liburing):
//!   the socket from `IORING_OP_SOCKET`, then CONNECT/SEND/RECV or an
//!   unconnected SENDMSG, all through the ring (under the preload it
//!   reaches neither client: `ldsaref run` cannot tell it apart);
//! - glibc's own resolver (`getent ahostsv4`, python's
//!   `socket.getaddrinfo`) asking the DNS server behind the tunnel: the
//!   server's /etc/resolv.conf is replaced by one naming 198.18.0.5 only
//!   in a private mount namespace (`unshare -m` and a bind mount);
//! - a setuid-root copy of a (dynamically linked) client run as `nobody`:
//!   the preload's `ldsaref run` refuses it and names `--cgroup`;
//! - the placement a systemd unit with `Slice=ldsaref-P.slice` gets,
//!   emulated by a shell that writes its PID into the slice's
//!   `cgroup.procs` and execs the client (no `ldsaref run` at all).
//!
//! Both gateway shapes of docs/cgroup-backend.md, in turn: first the
//! bed's "no route to the client networks" plus the operator's route
//! `198.18.0.0/24 dev lo src 203.0.113.1` (steered packets are re-routed
//! into their tunnel, unsteered ones are looped back and never leave):
//! steered, unwrapped, deny; then "a default route that leads elsewhere"
//! (a veth whose peer forwards nothing, source 203.0.113.1): steered,
//! unwrapped. The unwrapped runs only wait for their timeouts and run
//! in parallel.
//!
//! The bed's helpers are those of `tests/cgroup.rs`, in
//! `tests/common/bed.rs` (same names for the beds, `ldcg<PID>-`, and the
//! profiles, `…-t<PID>`, so that either test sweeps what a killed run of
//! the other left). Needs root, nft, gcc (with libc.a), liburing-dev,
//! golang-go, busybox-static and cgroup v2 (`scripts/setup.sh` installs
//! the packages).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::bed::{
    answer, failed_at_once, ldsaref_cgroup_name, ldsaref_slice, sweep_stale, under, CgroupBed,
};
use common::{cli_path, run_with_timeout, source_dir, RunOutput, TempDir};

const TIMEOUT: Duration = Duration::from_secs(30);
const NAME: &str = "www.example.test";

/// The programs, built for this run into a directory removed at the end.
struct Programs {
    dir: TempDir,
    go: PathBuf,
    uring: PathBuf,
    /// A dynamically linked cgclient, setuid root, mode 4755.
    suid: PathBuf,
}

fn build(cmd: &mut Command, what: &str) {
    let out = run_with_timeout(cmd, Duration::from_secs(300));
    assert!(out.success(), "cannot build {what}: {out}");
}

fn build_programs() -> Programs {
    let dir = TempDir::new("cgroup-programs");
    // Reachable by `nobody`, for the setuid copy.
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let go = dir.join("goclient");
    let cache = common::target_dir().join("go-cache");
    build(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&go)
            .arg("main.go")
            .current_dir(source_dir().join("tests/programs/goclient"))
            .env("CGO_ENABLED", "0")
            .env("GOCACHE", &cache)
            .env("GOPATH", cache.join("path"))
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", ""),
        "tests/programs/goclient with `CGO_ENABLED=0 go build` (golang-go)",
    );
    let uring = dir.join("uringclient");
    build(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&uring)
            .arg(source_dir().join("tests/programs/uringclient.c"))
            .arg("-luring"),
        "tests/programs/uringclient.c with gcc -luring (liburing-dev)",
    );
    let suid = dir.join("cgclient-suid");
    build(
        Command::new("gcc")
            .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&suid)
            .arg(source_dir().join("tests/programs/cgclient.c")),
        "tests/programs/cgclient.c",
    );
    std::os::unix::fs::chown(&suid, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&suid, std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
    Programs {
        dir,
        go,
        uring,
        suid,
    }
}

/// The shared bed, whose `in_srv` here also clears the proxy variables
/// (busybox wget and Go's HTTP client read them).
struct Bed(CgroupBed);

impl Bed {
    /// `args` in the server's network namespace (nsenter keeps /sys).
    fn in_srv<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> RunOutput {
        let mut c = self.0.nsenter(args);
        for v in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ] {
            c.env_remove(v);
        }
        run_with_timeout(&mut c, TIMEOUT)
    }

    fn hits(&self) -> (u64, u64) {
        (self.0.hits("c1"), self.0.hits("c2"))
    }
}

/// CMD… in a private mount namespace whose /etc/resolv.conf is `resolv`.
fn with_resolv(resolv: &Path, cmd: Vec<String>) -> Vec<String> {
    let mut v: Vec<String> = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(resolv.display().to_string());
    v.extend(cmd);
    v
}

/// Runs `f` and says how long it took.
fn timed(f: impl FnOnce() -> RunOutput) -> (RunOutput, Duration) {
    let t = Instant::now();
    let out = f();
    (out, t.elapsed())
}

#[test]
fn programs_no_preload_reaches_are_steered_by_their_cgroup() {
    require_root!();
    let test = "programs_no_preload_reaches_are_steered_by_their_cgroup";
    let Some(slice) = ldsaref_slice(test) else {
        return;
    };
    let progs = build_programs();
    let pid = std::process::id();
    let (pa, pb, pd) = (
        format!("pa-t{pid}"),
        format!("pb-t{pid}"),
        format!("pd-t{pid}"),
    );
    sweep_stale(&slice);
    let bed = Bed(CgroupBed::new(&slice, &[&pa, &pb, &pd]));
    bed.0.up();
    let rules = progs
        .dir
        .write(
            "rules",
            format!(
                "[{pa}]\n198.18.0.0/24 saref 101\n\
                 [{pb}]\n198.18.0.0/24 saref 202\n\
                 [{pd}]\n198.18.0.0/24 deny\n"
            ),
        )
        .display()
        .to_string();
    let resolv = progs.dir.write(
        "resolv.conf",
        "nameserver 198.18.0.5\noptions timeout:2 attempts:1\n",
    );
    let out = bed.in_srv(&[
        cli_path().display().to_string().as_str(),
        "apply",
        "--rules",
        &rules,
    ]);
    assert!(out.success(), "{out}");
    // The operator's route for the no-route shape.
    let out = run_with_timeout(
        Command::new("ip").args([
            "-n",
            &format!("{}srv", bed.0.prefix),
            "route",
            "add",
            "198.18.0.0/24",
            "dev",
            "lo",
            "src",
            "203.0.113.1",
        ]),
        TIMEOUT,
    );
    assert!(out.success(), "{out}");

    let go = progs.go.display().to_string();
    let uring = progs.uring.display().to_string();
    let suid = progs.suid.display().to_string();
    let url = "http://198.18.0.5/";
    let wget = [
        "timeout", "-s", "KILL", "3", "busybox", "wget", "-q", "-O", "-", url,
    ];
    let getent = ["getent", "ahostsv4", NAME];
    let py3 = common::python3().display().to_string();
    let getaddrinfo_script = format!(
        "import socket, time\n\
         t = time.monotonic()\n\
         try:\n    print(socket.getaddrinfo({NAME:?}, 80, socket.AF_INET, socket.SOCK_STREAM)[0][4][0])\n\
         except socket.gaierror as e:\n    print(f'error gaierror {{e.errno}} after {{int((time.monotonic() - t) * 1000)}} ms')\n"
    );
    let getaddrinfo = [py3.as_str(), "-c", &getaddrinfo_script];
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let suid_udp: Vec<&str> = nobody
        .iter()
        .copied()
        .chain([suid.as_str(), "udp", "198.18.0.5", "7"])
        .collect();
    let suid_tcp: Vec<&str> = nobody
        .iter()
        .copied()
        .chain([suid.as_str(), "tcp", "198.18.0.5", "80"])
        .collect();
    let placed = |profile: &str, cmd: &str| -> Vec<String> {
        let procs = slice
            .join(ldsaref_cgroup_name(profile))
            .join("cgroup.procs");
        vec![
            "sh".into(),
            "-c".into(),
            format!("echo $$ > '{}' && exec {cmd}", procs.display()),
        ]
    };

    // Steered: each program reaches the tunnel its profile names.
    let steered = |shape: &str| {
        for (profile, c, n) in [(&pa, "client1", 1), (&pb, "client2", 2)] {
            // Shown with a failure's output.
            eprintln!("steered, {shape}, profile {profile}");
            let ping = format!("{c}: ping");
            let out = bed.in_srv(&under(&rules, profile, &wget));
            assert_eq!(out.stdout.trim(), c, "busybox wget: {out}");
            let out = bed.in_srv(&under(&rules, profile, &[&go, "http", url]));
            assert_eq!(answer(&out), c, "go http: {out}");
            let out = bed.in_srv(&under(&rules, profile, &[&go, "udp", "198.18.0.5", "7"]));
            assert_eq!(answer(&out), ping, "go udp: {out}");
            let out = bed.in_srv(&under(
                &rules,
                profile,
                &[&uring, "tcp", "198.18.0.5", "80"],
            ));
            assert_eq!(answer(&out), c, "io_uring tcp: {out}");
            assert!(
                out.stderr.contains("socket: io_uring"),
                "IORING_OP_SOCKET: {out}"
            );
            let out = bed.in_srv(&under(&rules, profile, &[&uring, "udp", "198.18.0.5", "7"]));
            assert_eq!(answer(&out), ping, "io_uring udp: {out}");
            // glibc's resolver: the answer says which DNS server replied.
            let addr = format!("198.18.{n}.{n}");
            let out = bed.in_srv(&with_resolv(&resolv, under(&rules, profile, &getent)));
            assert!(out.stdout.starts_with(&format!("{addr} ")), "getent: {out}");
            let out = bed.in_srv(&with_resolv(&resolv, under(&rules, profile, &getaddrinfo)));
            assert_eq!(answer(&out), addr, "getaddrinfo: {out}");
            // A setuid-root program run by nobody.
            let out = bed.in_srv(&under(&rules, profile, &suid_udp));
            assert_eq!(answer(&out), ping, "setuid udp: {out}");
            assert!(out.stderr.contains("cgclient: uid 65534 euid 0"), "{out}");
            let out = bed.in_srv(&under(&rules, profile, &suid_tcp));
            assert_eq!(answer(&out), c, "setuid tcp: {out}");
            // Placed in the slice as systemd would (no ldsaref run).
            let out = bed.in_srv(&placed(profile, &format!("'{go}' http {url}")));
            assert_eq!(answer(&out), c, "slice placement, go: {out}");
            let out = bed.in_srv(&placed(profile, &format!("'{uring}' udp 198.18.0.5 7")));
            assert_eq!(answer(&out), ping, "slice placement, io_uring: {out}");
        }
    };
    steered("the loopback route");

    // The preload cannot reach the setuid copy: `ldsaref run` refuses it
    // and names the cgroup backend.
    let mut c = Command::new("setpriv");
    c.args(nobody[1..].iter())
        .arg(cli_path())
        .args(["run", "--saref", "101", "--"])
        .args(&suid_udp[nobody.len()..]);
    common::clear_ldsaref_env(&mut c);
    let out = run_with_timeout(&mut c, TIMEOUT);
    assert_eq!(out.code(), Some(126), "{out}");
    assert!(out.stderr.contains("it is setuid (owner uid 0)"), "{out}");
    assert!(
        out.stderr.contains("`ldsaref run --cgroup` steers it"),
        "{out}"
    );

    // Nor the static ones: refused the same way.
    for (what, prog) in [("busybox", "busybox"), ("go", go.as_str())] {
        let out = bed.in_srv(&[
            cli_path().display().to_string().as_str(),
            "run",
            "--rules",
            &rules,
            "--profile",
            &pa,
            "--",
            prog,
            "true",
        ]);
        assert_eq!(out.code(), Some(126), "{what}: {out}");
        assert!(
            out.stderr.contains("it is statically linked"),
            "{what}: {out}"
        );
        assert!(
            out.stderr.contains("`ldsaref run --cgroup` steers it"),
            "{what}: {out}"
        );
    }
    // A dynamically linked client under the preload (SO_MARK) is steered
    // (the cgclient copy, run by root, for whom its setuid bit changes
    // nothing); the io_uring one is not (`ldsaref run` cannot tell): it
    // is among the unwrapped runs below.
    let preload = |cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            cli_path().display().to_string().as_str(),
            "run",
            "--mode",
            "nfmark",
            "--rules",
            &rules,
            "--profile",
            &pa,
            "--",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    };
    let out = bed.in_srv(&preload(&[&suid, "udp", "198.18.0.5", "7"]));
    assert_eq!(answer(&out), "client1: ping", "preload: {out}");

    // Unwrapped: each program reaches neither client. They only wait for
    // their timeouts: all at once.
    let unwrapped = |shape: &str| {
        let before = bed.hits();
        let mut runs: Vec<(&str, Vec<String>)> = vec![
            ("busybox wget", wget.iter().map(|s| s.to_string()).collect()),
            (
                "getent",
                with_resolv(&resolv, getent.iter().map(|s| s.to_string()).collect()),
            ),
            (
                "getaddrinfo",
                with_resolv(&resolv, getaddrinfo.iter().map(|s| s.to_string()).collect()),
            ),
        ];
        for args in [
            vec![go.as_str(), "http", url],
            vec![go.as_str(), "udp", "198.18.0.5", "7"],
            vec![uring.as_str(), "tcp", "198.18.0.5", "80"],
            vec![uring.as_str(), "udp", "198.18.0.5", "7"],
            suid_udp.clone(),
            suid_tcp.clone(),
        ] {
            runs.push(("client", args.iter().map(|s| s.to_string()).collect()));
        }
        // io_uring under the preload: the same as unwrapped.
        runs.push(("client", preload(&[&uring, "tcp", "198.18.0.5", "80"])));
        runs.push(("client", preload(&[&uring, "udp", "198.18.0.5", "7"])));
        let outs: Vec<(&str, RunOutput)> = std::thread::scope(|sc| {
            let handles: Vec<_> = runs
                .iter()
                .map(|(what, args)| {
                    let bed = &bed;
                    sc.spawn(move || (*what, bed.in_srv(args)))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (what, out) in &outs {
            match *what {
                "busybox wget" => assert!(
                    !out.success() && out.stdout.is_empty(),
                    "{shape}: busybox wget: {out}"
                ),
                "getent" => assert_eq!(out.code(), Some(2), "{shape}: getent: {out}"),
                "getaddrinfo" => assert!(
                    answer(out).starts_with("error gaierror "),
                    "{shape}: getaddrinfo: {out}"
                ),
                _ => assert!(answer(out).starts_with("error "), "{shape}: {out}"),
            }
        }
        assert_eq!(
            bed.hits(),
            before,
            "{shape}: an unwrapped program reached a client"
        );
    };
    unwrapped("the loopback route");

    let before = bed.hits();
    // deny: each fails at once (TCP ECONNREFUSED, UDP EPERM) and nothing
    // reaches a client.
    let (out, took) = timed(|| bed.in_srv(&under(&rules, &pd, &wget)));
    assert_eq!(out.code(), Some(1), "busybox wget: {out}");
    assert!(
        out.stderr
            .contains("can't connect to remote host (198.18.0.5): Connection refused"),
        "busybox wget: {out}"
    );
    assert!(
        took < Duration::from_secs(1),
        "busybox wget took {took:?}: {out}"
    );
    failed_at_once(
        &bed.in_srv(&under(&rules, &pd, &[&go, "http", url])),
        "ECONNREFUSED",
    );
    failed_at_once(
        &bed.in_srv(&under(&rules, &pd, &[&go, "udp", "198.18.0.5", "7"])),
        "EPERM",
    );
    failed_at_once(
        &bed.in_srv(&under(&rules, &pd, &[&uring, "tcp", "198.18.0.5", "80"])),
        "ECONNREFUSED",
    );
    failed_at_once(
        &bed.in_srv(&under(&rules, &pd, &[&uring, "udp", "198.18.0.5", "7"])),
        "EPERM",
    );
    failed_at_once(&bed.in_srv(&under(&rules, &pd, &suid_tcp)), "ECONNREFUSED");
    failed_at_once(&bed.in_srv(&under(&rules, &pd, &suid_udp)), "EPERM");
    failed_at_once(
        &bed.in_srv(&placed(&pd, &format!("'{go}' http {url}"))),
        "ECONNREFUSED",
    );
    // The resolver's datagram is refused (EPERM): no answer at once,
    // where unwrapped it waits for its 2 s timeout.
    let (out, took) = timed(|| bed.in_srv(&with_resolv(&resolv, under(&rules, &pd, &getent))));
    assert_eq!(out.code(), Some(2), "getent: {out}");
    assert!(
        took < Duration::from_millis(1500),
        "getent took {took:?}: {out}"
    );
    let out = bed.in_srv(&with_resolv(&resolv, under(&rules, &pd, &getaddrinfo)));
    let line = answer(&out);
    let ms: u64 = line
        .strip_prefix("error gaierror -3 after ")
        .and_then(|r| r.strip_suffix(" ms"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("getaddrinfo: {out}"));
    assert!(ms < 500, "getaddrinfo failed only after {ms} ms: {out}");
    assert_eq!(bed.hits(), before, "a denied program reached a client");

    // The other gateway shape: a default route that leads elsewhere (a
    // veth whose peer forwards nothing), source 203.0.113.1; the table's
    // mark re-routes steered packets into their tunnel.
    let ip = |args: &[&str]| bed.0.ip(args);
    ip(&["route", "del", "198.18.0.0/24", "dev", "lo"]);
    ip(&[
        "link", "add", "els", "type", "veth", "peer", "name", "els-p",
    ]);
    ip(&["link", "set", "els", "up"]);
    ip(&["link", "set", "els-p", "up"]);
    ip(&[
        "route",
        "add",
        "default",
        "dev",
        "els",
        "src",
        "203.0.113.1",
    ]);
    steered("a default route elsewhere");
    unwrapped("a default route elsewhere");

    let out = bed.in_srv(&[
        cli_path().display().to_string().as_str(),
        "apply",
        "--remove",
    ]);
    assert!(out.success(), "{out}");
    drop(bed);
    drop(progs);
}
