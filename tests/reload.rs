//! Reloading the rules of a running program: a python3 process sending a
//! UDP datagram every 50 ms (`tests/programs/udp_ticker.py`) under the
//! library and the KLIPS emulator, whose log says which SAref each
//! datagram carried. The rules file is replaced by rename, edited in
//! place, a rules directory gains and loses a file, and a broken version
//! keeps the last good rules with one log line. Loopback only.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{python3, EmuLog, Event, TempDir};

/// How long a change may take to be seen: the library looks every 100 ms;
/// the margin is for a loaded machine. The measured latency is printed.
const DEADLINE: Duration = Duration::from_secs(3);

/// Writes `text` to `path` atomically: a hidden temporary file in the same
/// directory (which a rules directory ignores), then rename.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    fs::write(&tmp, text).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
    fs::rename(&tmp, path).unwrap();
}

/// A wrapped `udp_ticker.py`, killed on drop.
struct Ticker {
    child: Child,
    log: EmuLog,
    stderr: PathBuf,
    _dir: TempDir,
}

impl Ticker {
    fn start(rules: &Path, dsts: &[&str]) -> Ticker {
        let dir = TempDir::new("reload-out");
        let log = EmuLog::new();
        let stderr = dir.join("stderr");
        let mut c = Command::new(python3());
        c.arg(common::source_dir().join("tests/programs/udp_ticker.py"))
            .arg("25")
            .args(dsts);
        common::clear_ldsaref_env(&mut c);
        let (k, v) = log.env();
        c.env("LD_PRELOAD", common::preload_with_emulator())
            .env(k, v)
            .env("LDSAREF_RULES", rules)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap());
        let child = c.spawn().expect("start udp_ticker.py");
        Ticker {
            child,
            log,
            stderr,
            _dir: dir,
        }
    }

    /// The datagrams to `dst` logged so far, as their REFINFO value.
    fn tags(&self, dst: &str) -> Vec<String> {
        self.sends(dst)
            .iter()
            .map(|e| e.field("refinfo").to_string())
            .collect()
    }

    fn sends(&self, dst: &str) -> Vec<Event> {
        self.log.find("send", &[("dst", dst)])
    }

    /// Waits until a datagram to `dst` carries `refinfo` after the `skip`
    /// first ones; returns how long that took.
    #[track_caller]
    fn wait_tag(&self, dst: &str, refinfo: &str, skip: usize) -> Duration {
        let t0 = Instant::now();
        loop {
            if self.tags(dst).iter().skip(skip).any(|t| t == refinfo) {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < DEADLINE,
                "no datagram to {dst} with refinfo={refinfo} within {DEADLINE:?}: {:?}\nstderr: {}",
                self.tags(dst),
                self.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Once `new` was seen, `old` must never come back (one thread sends).
#[track_caller]
fn switched_for_good(tags: &[String], old: &str, new: &str) {
    let first = tags
        .iter()
        .position(|t| t == new)
        .expect("new tag never seen");
    assert!(
        tags[first..].iter().all(|t| t != old),
        "the old rules came back after the switch: {tags:?}"
    );
}

#[test]
fn rules_file_replaced_by_rename_is_picked_up_within_a_second() {
    const DST: &str = "127.0.4.1:4301";
    let dir = TempDir::new("reload-file");
    let rules = dir.join("rules");
    replace(&rules, "127.0.4.1 udp saref 501\n");
    let t = Ticker::start(&rules, &[DST]);
    t.wait_tag(DST, "501", 0);

    let seen = t.tags(DST).len();
    replace(&rules, "127.0.4.1 udp saref 502\n");
    let renamed = t.wait_tag(DST, "502", seen);

    // An edit in place (same inode, new size and mtime) counts too.
    let seen = t.tags(DST).len();
    fs::write(&rules, "# edited in place\n127.0.4.1 udp saref 503\n").unwrap();
    let edited = t.wait_tag(DST, "503", seen);

    println!(
        "reload latency (rename, then edit in place), measured from the change to the \
         first datagram seen with the new SAref, 50 ms between datagrams: {renamed:?}, {edited:?}"
    );
    let tags = t.tags(DST);
    switched_for_good(&tags, "501", "502");
    switched_for_good(&tags, "502", "503");
    assert!(
        tags.iter().all(|x| x == "501" || x == "502" || x == "503"),
        "a datagram went out without an SAref: {tags:?}"
    );
    assert!(
        renamed < Duration::from_secs(1) && edited < Duration::from_secs(1),
        "reload took longer than 1 s: {renamed:?}, {edited:?}"
    );
    assert!(!t.stderr_text().contains("error"), "{}", t.stderr_text());
}

#[test]
fn rules_directory_gains_and_loses_a_file() {
    const A: &str = "127.0.4.11:4302";
    const B: &str = "127.0.4.12:4302";
    let dir = TempDir::new("reload-dir");
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    replace(&dir.join("a.rules"), "127.0.4.11 udp saref 511\n");
    // Not `*.rules`: never read, or this deny would refuse B.
    replace(&dir.join("b.rules.disabled"), "127.0.4.12 deny\n");
    let t = Ticker::start(dir.path(), &[A, B]);
    t.wait_tag(A, "511", 0);
    assert!(t.tags(B).iter().all(|x| x == "none"), "{:?}", t.tags(B));

    let seen = t.tags(B).len();
    replace(&dir.join("b.rules"), "127.0.4.12 udp saref 512\n");
    let gained = t.wait_tag(B, "512", seen);

    let seen = t.tags(B).len();
    fs::remove_file(dir.join("b.rules")).unwrap();
    let lost = t.wait_tag(B, "none", seen);

    println!("rules directory: file added seen after {gained:?}, removed after {lost:?}");
    let tags_b = t.tags(B);
    switched_for_good(&tags_b[..seen], "none", "512");
    switched_for_good(&tags_b[seen..], "512", "none");
    // A's rule stayed in force throughout.
    assert!(t.tags(A).iter().all(|x| x == "511"), "{:?}", t.tags(A));
    assert!(!t.stderr_text().contains("error"), "{}", t.stderr_text());
}

#[test]
fn broken_new_rules_keep_the_last_good_ones_and_log_once() {
    const DST: &str = "127.0.4.21:4303";
    let dir = TempDir::new("reload-broken");
    let rules = dir.join("rules");
    replace(&rules, "127.0.4.21 udp saref 521\n");
    let t = Ticker::start(&rules, &[DST]);
    t.wait_tag(DST, "521", 0);

    replace(
        &rules,
        "127.0.4.21 udp saref 521\n127.0.4.22 udp saref many\n",
    );
    // Wait for the error line, then let the broken file stay for several
    // reload intervals while the program keeps sending.
    let t0 = Instant::now();
    while !t.stderr_text().contains("keeping the previous rules") {
        assert!(
            t0.elapsed() < DEADLINE,
            "no error logged for the broken rules: {}",
            t.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let noticed = t0.elapsed();
    let during = t.tags(DST).len();
    std::thread::sleep(Duration::from_millis(2_000));
    let stderr = t.stderr_text();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("ldsaref[")).collect();
    println!(
        "broken rules noticed after {noticed:?}; log while it stayed 2 s more ({} datagrams): {lines:?}",
        t.tags(DST).len() - during
    );
    assert_eq!(lines.len(), 1, "expected exactly one log line: {stderr}");
    assert!(
        lines[0].contains(&format!("{}:2:", rules.display())) && lines[0].contains("error"),
        "the line should name file and line: {}",
        lines[0]
    );
    assert!(
        t.tags(DST).len() > during + 10,
        "the program stopped sending"
    );
    assert!(
        t.tags(DST).iter().all(|x| x == "521"),
        "the last good rules were not kept: {:?}",
        t.tags(DST)
    );

    // Fixed: the new version is taken, with no further error.
    let seen = t.tags(DST).len();
    replace(&rules, "127.0.4.21 udp saref 522\n");
    t.wait_tag(DST, "522", seen);
    assert_eq!(
        t.stderr_text()
            .lines()
            .filter(|l| l.contains("keeping the previous rules"))
            .count(),
        1,
        "{}",
        t.stderr_text()
    );
}
