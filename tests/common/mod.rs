//! Shared harness for the integration tests of the root package.
//!
//! Use it from `tests/<name>.rs` with `mod common;`.  Everything here is std
//! only.  Not every test uses every helper, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod bed;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Counter shared by everything that needs a process-unique name.
static UNIQUE: AtomicUsize = AtomicUsize::new(0);

fn unique_suffix() -> String {
    let n = UNIQUE.fetch_add(1, Ordering::SeqCst);
    format!("{}-{}", std::process::id(), n)
}

// ---------------------------------------------------------------------------
// Paths of the build products

/// `target/<profile>`: the directory holding `libldsaref.so` and `ldsaref`.
///
/// Integration tests run as `target/<profile>/deps/<test>-<hash>`, so this is
/// the parent of the directory of the current executable.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary has a parent directory");
    if deps.file_name() == Some(OsStr::new("deps")) {
        deps.parent().expect("deps has a parent").to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

fn must_exist(p: PathBuf, what: &str) -> PathBuf {
    assert!(
        p.exists(),
        "{what} not found at {}: build the workspace first \
         (`cargo build --workspace`, or run the tests with `cargo test --workspace`, \
         which builds it)",
        p.display()
    );
    p
}

/// Absolute path of `libldsaref.so` of the profile the tests were built with.
pub fn lib_path() -> PathBuf {
    must_exist(target_dir().join("libldsaref.so"), "libldsaref.so")
}

/// Absolute path of the `ldsaref` command of the profile the tests were built with.
pub fn cli_path() -> PathBuf {
    must_exist(target_dir().join("ldsaref"), "the ldsaref binary")
}

/// Root of the source tree (the root package's manifest directory).
pub fn source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The KLIPS emulator interposer (`tests/emu/klips_emu.c`), compiled once per
/// test process into `target/<profile>/klips-emu/libklipsemu-<hash>.so`.
///
/// The file name carries a hash of the source and of the compiler flags, and
/// the library is written under a temporary name and renamed into place, so
/// parallel test processes never see a half-written file.
pub fn emulator() -> PathBuf {
    static EMU: OnceLock<PathBuf> = OnceLock::new();
    EMU.get_or_init(build_emulator).clone()
}

const EMU_CFLAGS: &[&str] = &["-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror"];
const EMU_LIBS: &[&str] = &["-ldl", "-lpthread"];

fn build_emulator() -> PathBuf {
    let mut flags = EMU_CFLAGS.to_vec();
    flags.extend_from_slice(EMU_LIBS);
    compile_c(
        &source_dir().join("tests/emu/klips_emu.c"),
        "klips-emu",
        "libklipsemu",
        ".so",
        &flags,
    )
}

/// Compiles the C file `src` with gcc and `flags` (if not already built)
/// into `target/<profile>/DIR/STEM-<hash>SUFFIX`, the hash covering the
/// source and the flags, and returns its path. Written under a temporary
/// name and renamed into place, so parallel test processes never see a
/// half-written file.
pub fn compile_c(src: &Path, dir: &str, stem: &str, suffix: &str, flags: &[&str]) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let code = std::fs::read(src).unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    code.hash(&mut h);
    flags.hash(&mut h);
    let dir = target_dir().join(dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let out = dir.join(format!("{stem}-{:016x}{suffix}", h.finish()));
    if out.exists() {
        return out;
    }
    let tmp = dir.join(format!(".{stem}-{}.tmp", unique_suffix()));
    let res = Command::new("gcc")
        .arg("-o")
        .arg(&tmp)
        .arg(src)
        .args(flags)
        .output()
        .expect("cannot run gcc (is it installed?)");
    if !res.status.success() {
        let _ = std::fs::remove_file(&tmp);
        panic!(
            "gcc failed to build {}:\n{}{}",
            src.display(),
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
    }
    std::fs::rename(&tmp, &out).expect("rename the build into place");
    out
}

/// `LD_PRELOAD` value that puts ldsaref first and the emulator after it.
pub fn preload_with_emulator() -> String {
    format!("{} {}", lib_path().display(), emulator().display())
}

/// A python3 interpreter: `/usr/bin/python3` when it exists (the one on PATH
/// may be a slow pyenv shim, or missing), else `python3` from PATH.
pub fn python3() -> PathBuf {
    let sys = Path::new("/usr/bin/python3");
    if sys.exists() {
        sys.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

// ---------------------------------------------------------------------------
// Root

/// Whether the effective uid is 0 (read from /proc/self/status).
pub fn is_root() -> bool {
    let status = match std::fs::read_to_string("/proc/self/status") {
        Ok(s) => s,
        Err(_) => return false,
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false)
}

/// Prints `SKIPPED (needs root): <test>` to stderr and returns whether the
/// test may go on.  Prefer the `require_root!()` macro.
///
/// The line is written to the process's stderr directly, not through
/// `eprintln!`, so that the test harness's output capture does not hide it.
pub fn check_root(test: &str) -> bool {
    use std::io::Write;
    if is_root() {
        return true;
    }
    let _ = writeln!(std::io::stderr(), "SKIPPED (needs root): {test}");
    false
}

/// Name of the current test (the thread name the libtest harness gives it).
pub fn test_name() -> String {
    thread::current()
        .name()
        .unwrap_or("<unknown test>")
        .to_string()
}

/// Return from the enclosing test (printing a visible SKIPPED line) unless we
/// are root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::common::check_root(&$crate::common::test_name()) {
            return;
        }
    };
}

// ---------------------------------------------------------------------------
// Temporary directories and files

/// A directory under the system temp dir, removed (recursively) on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos}", unique_suffix()));
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Write `contents` to `name` inside the directory and return its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------
// Running commands

/// What a command run by [`run_with_timeout`] did.
#[derive(Debug)]
pub struct RunOutput {
    /// `None` when the command was killed for running past its timeout.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
}

impl RunOutput {
    pub fn success(&self) -> bool {
        self.status.map(|s| s.success()).unwrap_or(false)
    }

    /// Exit code (None if killed by a signal or by the timeout).
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Panic with everything we know unless the command exited 0.
    #[track_caller]
    pub fn assert_success(&self) -> &RunOutput {
        assert!(self.success(), "command failed: {self}");
        self
    }
}

impl std::fmt::Display for RunOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status={:?} timed_out={}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.status, self.timed_out, self.stdout, self.stderr
        )
    }
}

fn pump(mut r: impl Read + Send + 'static, buf: Arc<Mutex<Vec<u8>>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.lock().unwrap().extend_from_slice(&chunk[..n]),
            }
        }
    })
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Run `cmd` (stdin closed, stdout/stderr captured) and kill it, with every
/// process of its own process group, after `timeout`.
///
/// The command is put in a new process group, so that children it leaves
/// behind are killed too and cannot hold the output pipes open forever.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> RunOutput {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pgid = child.id();
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let t_out = pump(child.stdout.take().unwrap(), out.clone());
    let t_err = pump(child.stderr.take().unwrap(), err.clone());
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) => {}
            Err(e) => panic!("wait for {cmd:?}: {e}"),
        }
        if Instant::now() >= deadline {
            timed_out = true;
            kill_group(pgid);
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    // Leftover members of the group may still hold the pipes: give the
    // readers a moment, then kill the group so they see EOF.
    let grace = Instant::now() + Duration::from_millis(500);
    while !(t_out.is_finished() && t_err.is_finished()) && Instant::now() < grace {
        thread::sleep(Duration::from_millis(5));
    }
    if !(t_out.is_finished() && t_err.is_finished()) {
        kill_group(pgid);
    }
    let _ = t_out.join();
    let _ = t_err.join();
    let stdout = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&err.lock().unwrap()).into_owned();
    RunOutput {
        status,
        timed_out,
        stdout,
        stderr,
    }
}

/// Run a command that must succeed (no timeout); panics with its output otherwise.
#[track_caller]
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

// ---------------------------------------------------------------------------
// Network namespaces

/// A network namespace of our own (`ldsaref-t-<pid>-<n>`) with `lo` up and no
/// default route, deleted (after killing whatever still runs in it) on drop.
/// Needs root.
pub struct Netns {
    name: String,
}

/// Delete namespaces `ldsaref-t-<pid>-<n>` left behind by test processes
/// that no longer run (killed before their `Drop` could run).
fn sweep_stale_namespaces() {
    let list = match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(_) => return,
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let pid = name
            .strip_prefix("ldsaref-t-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                drop(Netns {
                    name: name.to_string(),
                });
            }
        }
    }
}

impl Netns {
    pub fn new() -> Netns {
        static SWEPT: OnceLock<()> = OnceLock::new();
        SWEPT.get_or_init(sweep_stale_namespaces);
        let name = format!("ldsaref-t-{}", unique_suffix());
        run_ok("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME <args>`, which must succeed; returns its stdout.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run_ok("ip", &all)
    }

    /// Add an address, e.g. `ns.add_addr("lo", "192.0.2.1/32")`.
    #[track_caller]
    pub fn add_addr(&self, dev: &str, cidr: &str) {
        self.ip(&["addr", "add", cidr, "dev", dev]);
    }

    /// Join this namespace and `other` with a veth pair (`my_if` here with
    /// `my_cidr`, `other_if` there with `other_cidr`), both ends up.
    /// IPv6 addresses are added with `nodad` so that they are usable at once.
    #[track_caller]
    pub fn veth_to(
        &self,
        other: &Netns,
        my_if: &str,
        my_cidr: &str,
        other_if: &str,
        other_cidr: &str,
    ) {
        self.ip(&[
            "link",
            "add",
            my_if,
            "type",
            "veth",
            "peer",
            "name",
            other_if,
            "netns",
            other.name(),
        ]);
        for (ns, ifname, cidr) in [(self, my_if, my_cidr), (other, other_if, other_cidr)] {
            if cidr.contains(':') {
                ns.ip(&["addr", "add", cidr, "dev", ifname, "nodad"]);
            } else {
                ns.ip(&["addr", "add", cidr, "dev", ifname]);
            }
            ns.ip(&["link", "set", ifname, "up"]);
        }
    }

    /// `ip netns exec NAME program`: add args, env, etc. to the result.
    /// Environment set on it also reaches the `ip` wrapper; use
    /// [`Netns::command_env`] for variables (LD_PRELOAD) that only the
    /// program itself should see.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(&self.name).arg(program);
        c
    }

    /// Like [`Netns::command`], but `vars` are set by `/usr/bin/env` inside
    /// the namespace, so that only `program` (not `ip`) gets them.
    pub fn command_env(&self, vars: &[(&str, &str)], program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns")
            .arg("exec")
            .arg(&self.name)
            .arg("/usr/bin/env");
        for (k, v) in vars {
            c.arg(format!("{k}={v}"));
        }
        c.arg(program);
        c
    }

    /// Pids of the processes still running in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for _ in 0..3 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            let mut kill = Command::new("kill");
            kill.arg("-9");
            for p in &pids {
                kill.arg(p.to_string());
            }
            let _ = kill.stdout(Stdio::null()).stderr(Stdio::null()).status();
            thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------
// The emulator's log

/// One line of the emulator's log: `kind key=value key=value ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: String,
    pub fields: BTreeMap<String, String>,
    /// The line as written, for messages.
    pub line: String,
}

impl Event {
    pub fn parse(line: &str) -> Option<Event> {
        let mut words = line.split_whitespace();
        let kind = words.next()?.to_string();
        let mut fields = BTreeMap::new();
        for w in words {
            let (k, v) = w.split_once('=')?;
            fields.insert(k.to_string(), v.to_string());
        }
        Some(Event {
            kind,
            fields,
            line: line.to_string(),
        })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// The field, which must be there.
    #[track_caller]
    pub fn field(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("no field {key:?} in event: {}", self.line))
    }

    /// The field as a number (None if missing or `none`).
    pub fn num(&self, key: &str) -> Option<i64> {
        self.get(key).and_then(|v| v.parse().ok())
    }

    /// Whether every `(key, value)` pair matches.
    pub fn matches(&self, want: &[(&str, &str)]) -> bool {
        want.iter().all(|(k, v)| self.get(k) == Some(*v))
    }
}

/// The KLIPS emulator's log file (`KLIPS_EMU_LOG`): a fresh path in its own
/// temporary directory (removed on drop), and a parser for it.
pub struct EmuLog {
    dir: TempDir,
    path: PathBuf,
}

impl EmuLog {
    pub fn new() -> EmuLog {
        let dir = TempDir::new("ldsaref-emulog");
        let path = dir.join("klips-emu.log");
        EmuLog { dir, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `("KLIPS_EMU_LOG", path)`, for `Command::env` or `Netns::command_env`.
    pub fn env(&self) -> (&'static str, String) {
        ("KLIPS_EMU_LOG", self.path.display().to_string())
    }

    /// The raw text of the log (empty if nothing was logged yet).
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }

    /// Every event logged so far. Panics on a malformed line.
    #[track_caller]
    pub fn events(&self) -> Vec<Event> {
        self.text()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                Event::parse(l).unwrap_or_else(|| panic!("malformed emulator log line: {l:?}"))
            })
            .collect()
    }

    /// Events of one kind: `setsockopt`, `connect`, `send`, `recv`, `accept`.
    pub fn of_kind(&self, kind: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }

    /// Events of one kind whose fields match all of `want`.
    pub fn find(&self, kind: &str, want: &[(&str, &str)]) -> Vec<Event> {
        self.of_kind(kind)
            .into_iter()
            .filter(|e| e.matches(want))
            .collect()
    }

    /// Empty the log (between phases of a test).
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Wait up to `timeout` for an event satisfying `pred` (for logs written
    /// by processes still running).
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Event) -> bool) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The directory holding the log (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for EmuLog {
    fn default() -> Self {
        EmuLog::new()
    }
}

/// Filters over an event list.
pub fn of_kind<'a>(events: &'a [Event], kind: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.kind == kind).collect()
}

// ---------------------------------------------------------------------------
// The environment

/// Every variable the library or the command reads, and `LD_PRELOAD`: a
/// test starts from none of them, whatever environment it runs in.
pub const LDSAREF_VARS: &[&str] = &[
    "IPSEC_SAREF",
    "LDSAREF_RULES",
    "LDSAREF_PROFILE",
    "LDSAREF_MODE",
    "LDSAREF_ON_ERROR",
    "LDSAREF_KLIPS_ABI",
    "LDSAREF_LOG",
    "LDSAREF_PROBE",
    "LDSAREF_TEST_PANIC",
    "LDSAREF_LIB",
    "LD_PRELOAD",
];

/// Removes [`LDSAREF_VARS`] from what `c` will pass on; set the ones a test
/// wants afterwards.
pub fn clear_ldsaref_env(c: &mut Command) -> &mut Command {
    for v in LDSAREF_VARS {
        c.env_remove(v);
    }
    c
}
