//! Threads under load: a C driver (`tests/programs/stress.c`) runs 16
//! threads doing connect, send, sendto, sendmmsg, dup, dup2 and close
//! against destinations with different rules, under the library and the
//! KLIPS emulator, in a network namespace of the test's own. Every event
//! the emulator logged is checked against the rule its destination
//! matches: zero wrong SArefs. A second run replaces the rules file in the
//! middle of the load and checks that no decision is lost: every event
//! matches the old or the new rules, each thread switches once and for
//! all, and the log ends on the new rules.

mod common;
#[path = "programs/cprog.rs"]
mod cprog;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{run_with_timeout, EmuLog, Netns, TempDir};

/// One emulator log line, borrowed from the log's text. The harness's
/// `Event` (a map per line) takes seconds for the 300k lines of this test
/// in a debug build; this reads the same `kind key=value...` format,
/// only the fields it needs.
#[derive(Default)]
struct Event<'a> {
    kind: &'a str,
    line: &'a str,
    /// The fields this test reads, found in one pass over the line.
    dst: Option<&'a str>,
    proto: Option<&'a str>,
    bindref: Option<&'a str>,
    refinfo: Option<&'a str>,
    len: Option<&'a str>,
    at: Option<&'a str>,
}

impl<'a> Event<'a> {
    fn parse(line: &'a str) -> Event<'a> {
        let mut e = Event {
            line,
            ..Event::default()
        };
        for (i, w) in line.split(' ').enumerate() {
            if i == 0 {
                e.kind = w;
                continue;
            }
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            let slot = match k {
                "dst" => &mut e.dst,
                "proto" => &mut e.proto,
                "bindref" => &mut e.bindref,
                "refinfo" => &mut e.refinfo,
                "len" => &mut e.len,
                "at" => &mut e.at,
                _ => continue,
            };
            *slot = Some(v);
        }
        e
    }

    fn get(&self, key: &str) -> Option<&'a str> {
        match key {
            "dst" => self.dst,
            "proto" => self.proto,
            "bindref" => self.bindref,
            "refinfo" => self.refinfo,
            "len" => self.len,
            "at" => self.at,
            _ => panic!("field {key} is not parsed"),
        }
    }

    #[track_caller]
    fn field(&self, key: &str) -> &'a str {
        self.get(key)
            .unwrap_or_else(|| panic!("no field {key:?} in event: {}", self.line))
    }
}

/// What a destination's traffic of one protocol must get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// No SAref (no rule, or `pass`).
    Clear,
    Saref(u32),
    /// Refused with EACCES: never reaches the emulator.
    Deny,
}
use Want::{Clear, Deny, Saref};

struct Dst {
    addr: &'static str,
    /// (udp, tcp) under [`OLD_RULES`].
    old: (Want, Want),
    /// (udp, tcp) under [`NEW_RULES`].
    new: (Want, Want),
}

const OLD_RULES: &str = "\
127.0.5.0/24    udp             saref 101
127.0.5.128/25                  saref 102
127.0.6.0/24    tcp             saref 201
127.0.7.0/24    udp 9000-9099   saref 301
127.0.8.0/24                    pass
127.0.9.0/24                    deny
";

const NEW_RULES: &str = "\
127.0.5.0/24    udp             saref 1101
127.0.5.128/25                  pass
127.0.6.0/24                    saref 1201
127.0.7.0/24    udp 9100        saref 1301
127.0.8.0/24                    saref 1401
127.0.9.0/24                    deny
127.0.10.0/24                   saref 1501
";

/// Expectations written out by hand from the two rule sets above (not
/// computed by the library's own matcher).
const DSTS: &[Dst] = &[
    Dst {
        addr: "127.0.5.1:9050",
        old: (Saref(101), Clear),
        new: (Saref(1101), Clear),
    },
    Dst {
        addr: "127.0.5.200:9050",
        old: (Saref(102), Saref(102)),
        new: (Clear, Clear),
    },
    Dst {
        addr: "127.0.6.1:9050",
        old: (Clear, Saref(201)),
        new: (Saref(1201), Saref(1201)),
    },
    Dst {
        addr: "127.0.7.1:9050",
        old: (Saref(301), Clear),
        new: (Clear, Clear),
    },
    Dst {
        addr: "127.0.7.1:9100",
        old: (Clear, Clear),
        new: (Saref(1301), Clear),
    },
    Dst {
        addr: "127.0.8.1:9050",
        old: (Clear, Clear),
        new: (Saref(1401), Saref(1401)),
    },
    Dst {
        addr: "127.0.9.1:9050",
        old: (Deny, Deny),
        new: (Deny, Deny),
    },
    Dst {
        addr: "127.0.10.1:9050",
        old: (Clear, Clear),
        new: (Saref(1501), Saref(1501)),
    },
];

const THREADS: usize = 16;
/// The most events one hooked call decided with one configuration can
/// log: a sendmmsg of 4, or a UDP connect followed by its two sends
/// (which carry the SAref the connect gave the socket).
const MAX_EVENTS_PER_OP: usize = 4;

fn dst_index(addr: &str) -> usize {
    DSTS.iter()
        .position(|d| d.addr == addr)
        .unwrap_or_else(|| panic!("event for an unknown destination {addr}"))
}

/// The thread and destination encoded in a datagram's length by the driver.
fn decode_len(e: &Event) -> (usize, usize) {
    let len: usize = e.field("len").parse().unwrap();
    assert!(len >= 64, "unexpected length: {}", e.line);
    ((len - 64) / 32, (len - 64) % 32)
}

fn want_for(w: (Want, Want), proto: &str) -> Want {
    match proto {
        "udp" => w.0,
        "tcp" => w.1,
        p => panic!("unexpected proto {p}"),
    }
}

/// Whether `e` is exactly what `want` asks for.
fn event_ok(e: &Event, want: Want) -> bool {
    let num = |k: &str| match e.field(k) {
        "none" => 0,
        v => v.parse::<u32>().unwrap_or(u32::MAX),
    };
    let saref = match want {
        Deny => return false,
        Clear => 0,
        Saref(n) => n,
    };
    match e.kind {
        "connect" => num("bindref") == saref,
        "send" if e.field("dst") == "connected" => {
            num("bindref") == saref && num("refinfo") == saref
        }
        // Unconnected: the library tags the datagram, never binds the socket.
        "send" => num("bindref") == 0 && num("refinfo") == saref,
        k => panic!("unexpected kind {k}"),
    }
}

/// One checked event: which destination, thread (if known), and whether
/// it fits the old and the new rules.
struct Verdict {
    thread: Option<usize>,
    old: bool,
    new: bool,
}

fn judge(e: &Event) -> Verdict {
    let (dst, thread) = match (e.kind, e.get("dst")) {
        ("send", Some("connected")) => {
            let (t, d) = decode_len(e);
            assert!(d < DSTS.len(), "bad length: {}", e.line);
            (d, Some(t))
        }
        ("send", Some(a)) => {
            let (t, d) = decode_len(e);
            assert_eq!(d, dst_index(a), "length and dst disagree: {}", e.line);
            (d, Some(t))
        }
        (_, Some(a)) => (dst_index(a), None),
        _ => panic!("event without dst: {}", e.line),
    };
    let proto = e.field("proto");
    Verdict {
        thread,
        old: event_ok(e, want_for(DSTS[dst].old, proto)),
        new: event_ok(e, want_for(DSTS[dst].new, proto)),
    }
}

/// The driver's per-destination outcome counts: (dst, call, result) -> n.
fn outcomes(stdout: &str) -> BTreeMap<(usize, String, String), u64> {
    let mut m = BTreeMap::new();
    for l in stdout.lines().filter(|l| l.starts_with("dst=")) {
        let f: BTreeMap<&str, &str> = l.split(' ').filter_map(|w| w.split_once('=')).collect();
        let get = |k: &str| *f.get(k).unwrap_or_else(|| panic!("no {k} in {l:?}"));
        m.insert(
            (
                get("dst").parse().unwrap(),
                get("call").to_string(),
                get("result").to_string(),
            ),
            get("count").parse().unwrap(),
        );
    }
    m
}

struct Outcome {
    log_text: String,
    stdout: String,
    wall: Duration,
}

fn run_driver(ops: usize, reload: Option<(&TempDir, u64)>, rules: &str) -> Outcome {
    let ns = Netns::new();
    let dir = TempDir::new("stress");
    let rules_path = dir.write("rules", rules);
    let log = EmuLog::new();
    let preload = common::preload_with_emulator();
    let (k, v) = log.env();
    let rules_s = rules_path.display().to_string();
    let vars = [
        ("LD_PRELOAD", preload.as_str()),
        (k, v.as_str()),
        ("LDSAREF_RULES", rules_s.as_str()),
        ("LDSAREF_LOG", "error"),
    ];
    let mut c = ns.command_env(&vars, cprog::build("stress"));
    c.arg(THREADS.to_string()).arg(ops.to_string());
    match reload {
        Some((new_dir, min_ms)) => {
            let new = new_dir.write("new.rules", NEW_RULES);
            c.arg(format!("{}:{}:{min_ms}", new.display(), rules_s));
        }
        None => {
            c.arg("-");
        }
    }
    for d in DSTS {
        if d.old.0 == Deny {
            c.arg(format!("!{}", d.addr));
        } else {
            c.arg(d.addr);
        }
    }
    common::clear_ldsaref_env(&mut c);
    let t0 = Instant::now();
    let out = run_with_timeout(&mut c, Duration::from_secs(90));
    let wall = t0.elapsed();
    assert!(out.success(), "the stress driver failed: {out}");
    assert!(
        !out.stderr.contains("ldsaref["),
        "the library logged an error: {}",
        out.stderr
    );
    Outcome {
        log_text: log.text(),
        stdout: out.stdout,
        wall,
    }
}

/// The driver's own results: every call to a denied destination refused
/// with EACCES, every other call succeeded (a TCP connect is refused by
/// the empty port, ECONNREFUSED, after it was decided and logged).
/// Returns how many send and connect events the emulator must have logged.
fn check_outcomes(stdout: &str) -> (u64, u64) {
    let mut sends = 0;
    let mut connects = 0;
    let o = outcomes(stdout);
    assert!(!o.is_empty(), "no outcome lines: {stdout}");
    for ((d, call, result), n) in &o {
        let denied = DSTS[*d].old.0 == Deny;
        let fine = match (denied, call.as_str(), result.as_str()) {
            (true, _, "errno=13") => true,
            (false, "connect_tcp", "errno=111") => {
                connects += n;
                true
            }
            (false, "connect_udp", "ok") => {
                connects += n;
                true
            }
            (false, "send" | "dup_send" | "sendto" | "sendmmsg", "ok") => {
                sends += n;
                true
            }
            _ => false,
        };
        assert!(
            fine,
            "unexpected outcome dst={} ({}) call={call} result={result} count={n}",
            d, DSTS[*d].addr
        );
    }
    (sends, connects)
}

#[test]
fn sixteen_threads_get_zero_wrong_sarefs() {
    require_root!();
    let ops: usize = std::env::var("LDSAREF_STRESS_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let out = run_driver(ops, None, OLD_RULES);
    let t_check = Instant::now();
    let (sends, connects) = check_outcomes(&out.stdout);
    let events: Vec<Event> = out.log_text.lines().map(Event::parse).collect();
    let mut checked = 0u64;
    let mut wrong = Vec::new();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for e in &events {
        if e.kind == "setsockopt" {
            continue;
        }
        *by_kind.entry(e.kind.to_string()).or_default() += 1;
        checked += 1;
        if !judge(e).old {
            wrong.push(e.line);
        }
    }
    println!(
        "stress: {THREADS} threads x {ops} ops in {:?} ({}); {checked} events checked in {:?} {by_kind:?}, {} wrong",
        out.wall,
        out.stdout.lines().last().unwrap_or(""),
        t_check.elapsed(),
        wrong.len()
    );
    assert!(
        wrong.is_empty(),
        "{} events with a wrong SAref, e.g.:\n{}",
        wrong.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
    // Nothing went out behind the emulator's back, nothing was lost.
    assert_eq!(by_kind.get("send").copied().unwrap_or(0), sends);
    assert_eq!(by_kind.get("connect").copied().unwrap_or(0), connects);
    assert!(sends > (THREADS * ops) as u64, "too few sends: {sends}");
}

#[test]
fn reload_under_load_loses_no_decision() {
    require_root!();
    let new_dir = TempDir::new("stress-new");
    let out = run_driver(3_000, Some((&new_dir, 1_500)), OLD_RULES);
    let (sends, connects) = check_outcomes(&out.stdout);
    let events: Vec<Event> = out.log_text.lines().map(Event::parse).collect();

    let before = events
        .iter()
        .position(|e| e.kind == "marker" && e.field("at") == "before_rename")
        .expect("no before_rename marker");
    let mut neither = Vec::new();
    let mut old_before_rename = 0u64;
    let mut first_new_only: Option<usize> = None;
    let mut old_only_after_first_new = Vec::new();
    // Per thread: seen a new-only datagram yet, and any old-only one after it.
    let mut switched = [false; THREADS];
    let mut went_back = Vec::new();
    let mut counted = (0u64, 0u64);
    let checked: Vec<(usize, &Event)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind == "send" || e.kind == "connect")
        .collect();
    for &(i, e) in &checked {
        match e.kind {
            "send" => counted.0 += 1,
            _ => counted.1 += 1,
        }
        let v = judge(e);
        if !v.old && !v.new {
            neither.push(e.line);
            continue;
        }
        if i < before {
            // Before the rename, the new rules did not exist.
            assert!(v.old, "new rules used before the rename: {}", e.line);
            old_before_rename += 1;
            continue;
        }
        if v.new && !v.old && first_new_only.is_none() {
            first_new_only = Some(i);
        }
        if v.old && !v.new && first_new_only.is_some() {
            old_only_after_first_new.push(e.line);
        }
        if let Some(t) = v.thread {
            if v.new && !v.old {
                switched[t] = true;
            } else if v.old && !v.new && switched[t] {
                went_back.push(e.line);
            }
        }
    }
    let first_new = first_new_only.expect("the new rules were never used");
    let after_rename = checked.iter().filter(|(i, _)| *i > before).count();
    let tail = &checked[checked.len() - checked.len() / 10..];
    let tail_old = tail
        .iter()
        .filter(|(_, e)| {
            let v = judge(e);
            v.old && !v.new
        })
        .count();
    println!(
        "reload under load: {} events ({old_before_rename} before the rename, {after_rename} after), \
         first new-rules event {} events after the rename marker, {} old-only events after it \
         (bound {}), {} threads switched, wall {:?}",
        checked.len(),
        first_new - before,
        old_only_after_first_new.len(),
        THREADS * MAX_EVENTS_PER_OP,
        switched.iter().filter(|s| **s).count(),
        out.wall
    );
    assert!(
        neither.is_empty(),
        "{} events match neither rule set:\n{}",
        neither.len(),
        neither[..neither.len().min(20)].join("\n")
    );
    assert!(
        went_back.is_empty(),
        "a thread went back to the old rules:\n{}",
        went_back.join("\n")
    );
    assert!(
        old_only_after_first_new.len() <= THREADS * MAX_EVENTS_PER_OP,
        "too many decisions with the old rules after the switch:\n{}",
        old_only_after_first_new.join("\n")
    );
    assert_eq!(tail_old, 0, "old rules still in use at the end");
    assert_eq!(
        switched.iter().filter(|s| **s).count(),
        THREADS,
        "not every thread saw the new rules"
    );
    assert!(old_before_rename > 0);
    assert_eq!(counted, (sends, connects));
}
