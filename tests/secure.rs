//! Secure execution and rules-file permissions.
//!
//! Secure-execution mode (`AT_SECURE`: setuid, setgid, file capabilities)
//! is reached the way glibc allows a preload in it: a setuid-root copy of
//! a small C probe (`tests/programs/secure_probe.c`) run as `nobody`, with
//! `LD_PRELOAD` naming (without a slash) setuid copies of the library and
//! the KLIPS emulator placed in a standard search directory for the
//! duration of the test (removed by a guard, and by the next run if the
//! test was killed). `/etc/ld.so.preload` and `/etc/ldsaref` are never
//! touched. The same probe, not setuid, with the same environment, is the
//! control: only secure mode differs between the two runs.

mod common;
#[path = "programs/cprog.rs"]
mod cprog;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{run_with_timeout, EmuLog, RunOutput, TempDir};

// The variables each run starts without.
use common::LDSAREF_VARS as VARS;

/// The standard search directory the copies go to (`ld.so --help` lists
/// them as "system search path").
fn system_dir() -> &'static Path {
    ["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_dir())
        .expect("no system library directory")
}

const MARK: &str = "-securetest-";

/// Removes copies left by test processes that were killed before their
/// guard could.
fn sweep_stale() {
    let Ok(rd) = fs::read_dir(system_dir()) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name
            .split_once(MARK)
            .and_then(|(_, rest)| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if name.ends_with(".so") && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// A setuid copy of a shared object in the system library directory,
/// removed on drop.
struct SystemLib {
    path: PathBuf,
}

impl SystemLib {
    fn install(src: &Path, stem: &str) -> SystemLib {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let name = format!("lib{stem}{MARK}{}-{n}.so", std::process::id());
        let path = system_dir().join(name);
        let lib = SystemLib { path };
        fs::copy(src, &lib.path).unwrap();
        fs::set_permissions(&lib.path, fs::Permissions::from_mode(0o4755)).unwrap();
        lib
    }

    /// The name for `LD_PRELOAD`: no slash, as secure mode requires.
    fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for SystemLib {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Everything one secure-mode experiment needs.
struct Bed {
    dir: TempDir,
    /// Setuid-root copy of the probe.
    setuid_probe: PathBuf,
    /// Plain copy, the control.
    plain_probe: PathBuf,
    preload: String,
    log: EmuLog,
    _libs: (SystemLib, SystemLib),
}

impl Bed {
    fn new() -> Bed {
        sweep_stale();
        let dir = TempDir::new("secure");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let probe = cprog::build("secure_probe");
        let setuid_probe = dir.join("probe-setuid");
        let plain_probe = dir.join("probe-plain");
        fs::copy(&probe, &setuid_probe).unwrap();
        fs::set_permissions(&setuid_probe, fs::Permissions::from_mode(0o4755)).unwrap();
        fs::copy(&probe, &plain_probe).unwrap();
        fs::set_permissions(&plain_probe, fs::Permissions::from_mode(0o755)).unwrap();
        let lib = SystemLib::install(&common::lib_path(), "ldsaref");
        let emu = SystemLib::install(&common::emulator(), "klipsemu");
        let preload = format!("{} {}", lib.name(), emu.name());
        let log = EmuLog::new();
        fs::set_permissions(log.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(log.path(), "").unwrap();
        fs::set_permissions(log.path(), fs::Permissions::from_mode(0o666)).unwrap();
        Bed {
            dir,
            setuid_probe,
            plain_probe,
            preload,
            log,
            _libs: (lib, emu),
        }
    }

    /// A rules file `nobody` can read.
    fn rules(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.write(name, text);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    /// The probe as `nobody`, setuid root (secure) or not (control).
    fn probe(&self, secure: bool, env: &[(&str, &str)], args: &[&str]) -> RunOutput {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(if secure {
                &self.setuid_probe
            } else {
                &self.plain_probe
            })
            .args(args)
            .current_dir(self.dir.path());
        self.env(&mut c, env);
        let out = run_with_timeout(&mut c, Duration::from_secs(20));
        assert!(out.success(), "{out}");
        let want = if secure {
            "secure=1 euid=0 uid=65534 ldsaref=loaded"
        } else {
            "secure=0 euid=65534 uid=65534 ldsaref=loaded"
        };
        assert_eq!(out.stdout.lines().next(), Some(want), "{out}");
        out
    }

    fn env(&self, c: &mut Command, env: &[(&str, &str)]) {
        for v in VARS {
            c.env_remove(v);
        }
        let (k, v) = self.log.env();
        c.env("LD_PRELOAD", &self.preload).env(k, v);
        for (k, v) in env {
            c.env(k, v);
        }
    }

    /// REFINFO of the datagrams to `dst` logged since the last clear.
    fn tags(&self, dst: &str) -> Vec<String> {
        self.log
            .find("send", &[("dst", dst)])
            .iter()
            .map(|e| e.field("refinfo").to_string())
            .collect()
    }

    fn clear_log(&self) {
        fs::write(self.log.path(), "").unwrap();
    }
}

fn result(out: &RunOutput, action: &str, dst: &str) -> String {
    let prefix = format!("{action} {dst} ");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no result for {prefix}: {out}"))
        .to_string()
}

/// Secure mode: no system rules exist here, so an `LDSAREF_RULES` from the
/// environment that would steer one destination and deny another must
/// change nothing; the control run shows the same file does both.
#[test]
fn secure_mode_ignores_rules_from_the_environment() {
    require_root!();
    assert!(
        !Path::new("/etc/ldsaref").exists(),
        "/etc/ldsaref exists on this machine: this test assumes it does not"
    );
    let bed = Bed::new();
    let rules = bed.rules("rules", "127.0.3.9 udp saref 777\n127.0.3.10 deny\n");
    let rules = rules.to_str().unwrap();
    let env = [("LDSAREF_RULES", rules), ("LDSAREF_LOG", "info")];
    let args = ["sendto", "127.0.3.9:4400", "sendto", "127.0.3.10:4400"];

    let control = bed.probe(false, &env, &args);
    assert_eq!(result(&control, "sendto", "127.0.3.9:4400"), "ok");
    assert_eq!(result(&control, "sendto", "127.0.3.10:4400"), "errno=13");
    assert_eq!(bed.tags("127.0.3.9:4400"), ["777"], "{}", bed.log.text());
    assert!(bed.tags("127.0.3.10:4400").is_empty());

    bed.clear_log();
    let secure = bed.probe(true, &env, &args);
    println!("control:\n{control}\nsecure:\n{secure}");
    assert_eq!(result(&secure, "sendto", "127.0.3.9:4400"), "ok");
    assert_eq!(result(&secure, "sendto", "127.0.3.10:4400"), "ok");
    assert_eq!(bed.tags("127.0.3.9:4400"), ["none"], "{}", bed.log.text());
    assert_eq!(bed.tags("127.0.3.10:4400"), ["none"], "{}", bed.log.text());
    assert!(!secure.stderr.contains(rules), "{secure}");
}

/// Secure mode keeps fail-closed: `LDSAREF_ON_ERROR=warn` from the
/// environment is ignored. The configuration is broken on purpose (an
/// invalid `IPSEC_SAREF`, which secure mode still reads: it is no path).
#[test]
fn secure_mode_ignores_on_error_warn_from_the_environment() {
    require_root!();
    let bed = Bed::new();
    let env = [("IPSEC_SAREF", "lots"), ("LDSAREF_ON_ERROR", "warn")];
    let args = ["sendto", "127.0.3.11:4401", "tcp", "127.0.3.11:4401"];

    let control = bed.probe(false, &env, &args);
    assert_eq!(result(&control, "sendto", "127.0.3.11:4401"), "ok");
    assert_eq!(result(&control, "tcp", "127.0.3.11:4401"), "errno=111");
    assert!(
        control.stderr.contains("LDSAREF_ON_ERROR=warn"),
        "{control}"
    );

    let secure = bed.probe(true, &env, &args);
    println!("control:\n{control}\nsecure:\n{secure}");
    assert_eq!(result(&secure, "sendto", "127.0.3.11:4401"), "errno=13");
    assert_eq!(result(&secure, "tcp", "127.0.3.11:4401"), "errno=13");
    assert!(
        secure.stderr.contains("LDSAREF_ON_ERROR=fail"),
        "the refusal should be logged as fail: {secure}"
    );
}

/// Path arguments of file system calls in an strace log that are relative
/// (resolved against the current directory).
fn relative_paths(trace: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for line in trace.lines() {
        for pat in [
            "AT_FDCWD, \"",
            "open(\"",
            "stat(\"",
            "lstat(\"",
            "access(\"",
            "readlink(\"",
            "statfs(\"",
        ] {
            let mut rest = line;
            while let Some(i) = rest.find(pat) {
                rest = &rest[i + pat.len()..];
                if !rest.starts_with('/') {
                    bad.push(line.to_string());
                }
            }
        }
    }
    bad
}

/// Nothing is looked up relative to the current directory: the probe runs
/// in a directory full of decoy rules (each would deny the destination)
/// with a relative `LDSAREF_RULES`, under strace (`-u nobody` keeps the
/// setuid bit effective). Secure mode ignores the variable and looks only
/// at the system locations; the control refuses the relative path (fail
/// closed) instead of resolving it.
#[test]
fn nothing_is_loaded_relative_to_the_current_directory() {
    require_root!();
    let bed = Bed::new();
    for (name, dir) in [
        ("rules", None),
        ("ldsaref.rules", None),
        ("etc/ldsaref/rules", Some("etc/ldsaref")),
        ("etc/ldsaref/rules.d/a.rules", Some("etc/ldsaref/rules.d")),
        ("rules.d/a.rules", Some("rules.d")),
    ] {
        if let Some(d) = dir {
            fs::create_dir_all(bed.dir.join(d)).unwrap();
            fs::set_permissions(bed.dir.join(d), fs::Permissions::from_mode(0o755)).unwrap();
        }
        bed.rules(name, "127.0.3.12 deny\n");
    }
    let env = [("LDSAREF_RULES", "rules"), ("LDSAREF_LOG", "info")];
    let args = ["sendto", "127.0.3.12:4402"];

    let trace_file = bed.dir.join("strace.out");
    let mut c = Command::new("strace");
    c.args(["-f", "-u", "nobody", "-e", "trace=%file", "-o"])
        .arg(&trace_file)
        .arg(&bed.setuid_probe)
        .args(args)
        .current_dir(bed.dir.path());
    bed.env(&mut c, &env);
    let secure = run_with_timeout(&mut c, Duration::from_secs(20));
    assert!(secure.success(), "{secure}");
    let trace = fs::read_to_string(&trace_file).unwrap();
    println!("secure:\n{secure}\nstrace:\n{trace}");
    assert!(
        secure
            .stdout
            .starts_with("secure=1 euid=0 uid=65534 ldsaref=loaded"),
        "{secure}"
    );
    assert_eq!(result(&secure, "sendto", "127.0.3.12:4402"), "ok");
    // The library looked where it should (so the trace does see it)...
    assert!(
        trace.contains("\"/etc/ldsaref/rules\""),
        "the library never looked at /etc/ldsaref/rules: {trace}"
    );
    // ...and nowhere relative.
    let bad = relative_paths(&trace);
    assert!(bad.is_empty(), "relative lookups:\n{}", bad.join("\n"));
    assert_eq!(bed.tags("127.0.3.12:4402"), ["none"]);

    let control = bed.probe(false, &env, &args);
    println!("control:\n{control}");
    assert_eq!(result(&control, "sendto", "127.0.3.12:4402"), "errno=13");
    assert!(
        control.stderr.contains("must be an absolute path"),
        "{control}"
    );
}

/// A rules file (or directory) that someone other than root and its owner
/// may write is refused: every inet connect and send fails with EACCES
/// (fail closed), and one log line names the file and its mode.
#[test]
fn rules_writable_by_others_are_refused() {
    for (mode, what) in [
        (0o666, "file"),
        (0o664, "file"),
        (0o777, "dir"),
        (0o775, "dir"),
    ] {
        let dir = TempDir::new("writable");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let (target, rules_var) = if what == "file" {
            let f = dir.write("rules", "127.0.3.13 udp saref 131\n");
            fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
            (f.clone(), f)
        } else {
            let d = dir.join("rules.d");
            fs::create_dir(&d).unwrap();
            let f = d.join("a.rules");
            fs::write(&f, "127.0.3.13 udp saref 131\n").unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
            fs::set_permissions(&d, fs::Permissions::from_mode(mode)).unwrap();
            (d.clone(), d)
        };
        let log = EmuLog::new();
        let mut c = Command::new(cprog::build("secure_probe"));
        c.args([
            "sendto",
            "127.0.3.13:4403",
            "connect",
            "127.0.3.13:4403",
            "tcp",
            "127.0.3.13:4403",
        ]);
        for v in VARS {
            c.env_remove(v);
        }
        let (k, v) = log.env();
        c.env("LD_PRELOAD", common::preload_with_emulator())
            .env(k, v)
            .env("LDSAREF_RULES", &rules_var);
        let out = run_with_timeout(&mut c, Duration::from_secs(20));
        assert!(out.success(), "{out}");
        println!("{what} mode {mode:04o}:\n{out}");
        for action in ["sendto", "connect", "tcp"] {
            assert_eq!(
                result(&out, action, "127.0.3.13:4403"),
                "errno=13",
                "{what} {mode:o}: {out}"
            );
        }
        let want = format!(
            "{}: refusing rules writable by others than root and its owner (mode {mode:04o})",
            target.display()
        );
        let lines: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.contains("ldsaref["))
            .collect();
        assert_eq!(lines.len(), 1, "one log line expected: {out}");
        assert!(lines[0].contains(&want), "{want:?} not in {out}");
        // Nothing left the process (a refused connect is not logged either).
        assert!(
            log.events().iter().all(|e| e.kind == "setsockopt"),
            "{}",
            log.text()
        );
    }
}
