//! The process's configuration: read from the environment and the rules
//! on first need, then immutable. It sits behind an `ArcSwap`, which a
//! decision loads lock-free, and a changed rules file or directory
//! replaces the whole configuration atomically. Every hooked call first
//! asks [`snapshot`]: one word with the generation and what the
//! configuration can need, so that most calls never load it.
//!
//! Reload needs no thread (which `fork` would lose): at most every
//! [`RELOAD_INTERVAL_MS`], the first hooked call that notices the time
//! has come stats the rules (one `stat` per file) and, if they changed,
//! rebuilds. A new rules set that does not load (a typo mid-edit) keeps
//! the last good one, with one log line per broken version; one that loads
//! but no longer has the process's profile (its tunnel is down) fails
//! closed until it returns.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use ldsaref_kernel::opts::SarefOpts;
use ldsaref_rules::files::{self, Location, Stamp};
use ldsaref_rules::settings::{vars, KlipsAbi, Mode, OnError, Settings};
use ldsaref_rules::{Policy, RuleSet};

use crate::{errno, logging};

/// Everything a hook needs to decide.
pub struct Config {
    /// `None` when [`Config::broken`] says why there is none.
    pub policy: Option<Policy>,
    pub mode: Mode,
    pub abi: KlipsAbi,
    pub opts: SarefOpts,
    pub on_error: OnError,
    /// Why the library cannot know what must be protected (bad rules file,
    /// bad variable, unknown profile): with `fail` every inet connect and
    /// send is refused, with `warn` traffic goes unsteered.
    pub broken: Option<String>,
    /// Ask the kernel once what it supports (`LDSAREF_PROBE`, default on);
    /// off, every operation is attempted and the kernel's own answer is
    /// returned.
    pub probe: bool,
    /// Some rule says `reflect`: UDP sockets listen for the SA of each
    /// incoming datagram.
    pub reflect: bool,
    /// `LDSAREF_TEST_PANIC=1`: every decision panics, so tests can show a
    /// panic never crosses into C and is handled by `LDSAREF_ON_ERROR`.
    /// Ignored in secure-execution mode.
    pub inject_panic: bool,
}

impl Config {
    /// Nothing to do for any socket: no rules, no `IPSEC_SAREF`, no error.
    pub fn inert(&self) -> bool {
        self.broken.is_none() && self.policy.as_ref().is_none_or(Policy::is_empty)
    }
}

/// What stays fixed for the life of the process, and the reload state.
struct State {
    current: ArcSwap<Config>,
    settings: Settings,
    /// Problems with the environment itself: no reload can fix them.
    env_problems: Vec<String>,
    probe: bool,
    inject_panic: bool,
    location: Location,
    /// The rules as they were when `current` was built.
    stamp: ArcSwap<Stamp>,
    /// The last stamp whose rules failed to load, already logged.
    failed: ArcSwap<Stamp>,
    /// The pid of the process checking now (0: nobody). A pid, not a flag,
    /// so that a child forked in the middle of a check is not stuck.
    checking: AtomicU32,
}

/// The state, once loaded: set once, never freed.
static STATE: AtomicPtr<State> = AtomicPtr::new(std::ptr::null_mut());
/// The pid of the process loading the state now (0: nobody). Not a
/// `OnceLock`: a child forked while another thread of its parent was
/// loading would wait for that thread, which the child does not have, for
/// ever. A child sees its parent's pid here and loads the state itself.
static LOADING: AtomicU32 = AtomicU32::new(0);

/// The state, loaded on first use by the first thread that asks; the
/// others wait for it (a load reads the rules: milliseconds at most).
fn state() -> &'static State {
    loop {
        let ptr = STATE.load(Ordering::Acquire);
        if !ptr.is_null() {
            // SAFETY: a non-null STATE comes from Box::leak below, is
            // never freed nor written again: a valid &'static State.
            return unsafe { &*ptr };
        }
        let me = std::process::id();
        match LOADING.load(Ordering::Acquire) {
            // Nobody loads, or a thread of the parent this process was
            // forked from did and never will here: take it over.
            other if other != me => {
                if LOADING
                    .compare_exchange(other, me, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return load_state(me);
                }
            }
            // Another thread of this process is loading.
            _ => std::thread::yield_now(),
        }
    }
}

#[cold]
fn load_state(me: u32) -> &'static State {
    /// Lets another thread try again if loading panics (the panic goes on
    /// to the hook, which applies LDSAREF_ON_ERROR).
    struct Release(u32);
    impl Drop for Release {
        fn drop(&mut self) {
            let _ = LOADING.compare_exchange(self.0, 0, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
    let release = Release(me);
    let st: &'static State = Box::leak(Box::new(init()));
    STATE.store(std::ptr::from_ref(st).cast_mut(), Ordering::Release);
    drop(release);
    st
}

/// All that every hooked call reads, in one cache line: the kernel's work
/// between two calls (a loopback `sendto` is two microseconds of it) leaves
/// the library's data cold, and each further line read costs more than
/// dozens of instructions.
#[repr(C, align(64))]
struct Hot {
    /// What the hooks ask before anything else, for the configuration in
    /// force, in one word so that one load answers all of it: the
    /// generation (bumped each time a configuration is installed, so that
    /// a decision remembered under one is never reused under another)
    /// above [`FLAG_BITS`], and what the configuration can ever need
    /// below. 0 until the configuration is loaded (generations start at 1).
    snapshot: AtomicU64,
    /// When the next look at the rules is due, as a [`now`] value.
    next_check: AtomicI64,
}

static HOT: Hot = Hot {
    snapshot: AtomicU64::new(0),
    next_check: AtomicI64::new(0),
};

const FLAG_BITS: u32 = 8;
/// Nothing to do for any socket ([`Config::inert`]).
const INERT: u64 = 1;
/// Some rule says `reflect` ([`Config::reflect`]): datagram sockets must
/// be set up and their receives looked at.
const REFLECT: u64 = 1 << 1;
/// An `IPSEC_SAREF` catch-all binds every new AF_INET socket.
const CATCH_ALL: u64 = 1 << 2;

/// `LDSAREF_ON_ERROR=warn`, mirrored here so that a panic handler can
/// decide without touching the configuration it may have panicked in. It
/// comes from the environment, fixed for the life of the process.
static WARN_ON_ERROR: AtomicBool = AtomicBool::new(false);

/// The answer of [`snapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot(u64);

impl Snapshot {
    /// What a hook assumes when loading or reloading the configuration
    /// panicked: generation 0 (under which nothing is ever remembered) and
    /// every kind of work to do, so that the call goes down the decision
    /// path, meets the failure again and applies `LDSAREF_ON_ERROR`.
    const PANICKED: Snapshot = Snapshot(REFLECT | CATCH_ALL);

    fn of(generation: u64, cfg: &Config) -> Snapshot {
        let mut flags = 0;
        if cfg.inert() {
            flags |= INERT;
        }
        if cfg.reflect {
            flags |= REFLECT;
        }
        if cfg.policy.as_ref().is_some_and(|p| p.catch_all().is_some()) {
            flags |= CATCH_ALL;
        }
        Snapshot(generation << FLAG_BITS | flags)
    }

    /// The generation decisions are filed under. Read it *before* loading
    /// the configuration a decision is made with: then a decision can only
    /// be filed under an older generation than its configuration, never a
    /// newer one.
    pub fn generation(self) -> u64 {
        self.0 >> FLAG_BITS
    }

    /// Nothing is steered: the hooks call the next definition and nothing
    /// else.
    pub fn inert(self) -> bool {
        self.0 & INERT != 0
    }

    /// [`Config::reflect`].
    pub fn reflect(self) -> bool {
        self.0 & REFLECT != 0
    }

    /// The policy has an `IPSEC_SAREF` catch-all.
    pub fn catch_all(self) -> bool {
        self.0 & CATCH_ALL != 0
    }
}

/// Installs a configuration (on reload; `init` publishes the first one).
fn install(st_current: &ArcSwap<Config>, cfg: Config) {
    // The configuration first, then its generation: see
    // `Snapshot::generation`. Only one caller at a time installs (the
    // `checking` pid), so the read-increment-store is not racy.
    let generation = HOT.snapshot.load(Ordering::Acquire) >> FLAG_BITS;
    let snap = Snapshot::of(generation + 1, &cfg);
    st_current.store(Arc::new(cfg));
    HOT.snapshot.store(snap.0, Ordering::Release);
}

/// The generation and flags of the configuration in force, loading it on
/// first call and noticing changed rules (at most every
/// [`RELOAD_INTERVAL_MS`]).
///
/// The hot path of every hook: one clock read and two loads from one
/// cache line, nothing that can panic and nothing that touches `errno`.
/// Loading and reloading are out of line, catch their own panics and keep
/// `errno` as it was.
#[inline]
pub fn snapshot() -> Snapshot {
    let snap = HOT.snapshot.load(Ordering::Acquire);
    if snap == 0 || now() >= HOT.next_check.load(Ordering::Relaxed) {
        return load_or_reload();
    }
    Snapshot(snap)
}

#[cold]
#[inline(never)]
fn load_or_reload() -> Snapshot {
    let saved = errno::get();
    let r = catch_unwind(AssertUnwindSafe(|| {
        maybe_reload(state());
    }));
    errno::set(saved);
    match r {
        Ok(()) => Snapshot(HOT.snapshot.load(Ordering::Acquire)),
        Err(_) => Snapshot::PANICKED,
    }
}

/// `LDSAREF_ON_ERROR=warn` (false until the configuration is loaded).
pub fn warn_on_error() -> bool {
    WARN_ON_ERROR.load(Ordering::Relaxed)
}

/// How often the rules are looked at.
const RELOAD_INTERVAL_MS: i64 = 100;

/// The configuration in force, loaded on first call.
pub fn current() -> Guard<Arc<Config>> {
    let st = state();
    maybe_reload(st);
    st.current.load()
}

/// [`current`] for a caller that took a [`snapshot`] in this same call,
/// which looked at the clock and the rules already: the same
/// configuration, without a second reload check.
pub fn in_force() -> Guard<Arc<Config>> {
    state().current.load()
}

/// `LDSAREF_PROBE`: a switch for tests and for kernels whose answers to
/// the probe cannot be trusted.
const LDSAREF_PROBE: &str = "LDSAREF_PROBE";
/// See [`Config::inject_panic`].
const LDSAREF_TEST_PANIC: &str = "LDSAREF_TEST_PANIC";

fn secure_execution() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// The coarse monotonic clock (a vDSO read, a few nanoseconds, with the
/// resolution of a scheduler tick, which is plenty for a 100 ms period),
/// packed as `seconds << 30 | nanoseconds`: ordered like the time itself
/// (nanoseconds stay below 2^30), and no division on every call.
fn now() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write. CLOCK_MONOTONIC_COARSE
    // exists on every Linux this runs on (2.6.32 and later).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec << 30) | ts.tv_nsec
}

/// The [`now`] value `ms` milliseconds after `t`.
fn after(t: i64, ms: i64) -> i64 {
    let ns = (t & ((1 << 30) - 1)) + ms * 1_000_000;
    (((t >> 30) + ns / 1_000_000_000) << 30) | (ns % 1_000_000_000)
}

fn init() -> State {
    let secure = secure_execution();
    let env = |name: &str| -> Option<String> {
        // In secure-execution mode (setuid, setgid, file capabilities) the
        // environment belongs to a less privileged caller: no path from
        // it, and no way to turn fail-closed off.
        if secure && (name == vars::LDSAREF_RULES || name == vars::LDSAREF_ON_ERROR) {
            return None;
        }
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    };
    let (mut settings, errors) = Settings::from_lookup(env);
    // A path need not be UTF-8: once validated, take LDSAREF_RULES exactly
    // as the OS gave it, not the lossy text the settings were checked on.
    if settings.rules.is_some() {
        if let Some(os) = std::env::var_os(vars::LDSAREF_RULES) {
            settings.rules = Some(std::path::PathBuf::from(os));
        }
    }
    logging::init(settings.log);

    let mut env_problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let probe = match env(LDSAREF_PROBE).as_deref() {
        None | Some("1") | Some("on") => true,
        Some("0") | Some("off") => false,
        Some(v) => {
            env_problems.push(format!(
                "{LDSAREF_PROBE}=\"{v}\": expected \"on\" or \"off\""
            ));
            true
        }
    };
    let inject_panic = !secure && env(LDSAREF_TEST_PANIC).as_deref() == Some("1");
    let location = Location::from_setting(settings.rules.as_deref());
    let stamp = files::stamp(&location);
    let rules = load_rules(&location);
    let mut cfg = build(&settings, &env_problems, probe, rules);
    cfg.inject_panic = inject_panic;
    log_outcome(&cfg, &settings, &location);
    WARN_ON_ERROR.store(settings.on_error == OnError::Warn, Ordering::Relaxed);
    // The first check is due one interval from now. A hook of another
    // thread that sees the snapshot before `STATE` holds the configuration
    // can only use it through `state()`, which waits for this.
    HOT.next_check
        .store(after(now(), RELOAD_INTERVAL_MS), Ordering::Relaxed);
    HOT.snapshot
        .store(Snapshot::of(1, &cfg).0, Ordering::Release);
    State {
        current: ArcSwap::from_pointee(cfg),
        settings,
        env_problems,
        probe,
        inject_panic,
        location,
        stamp: ArcSwap::from_pointee(stamp),
        failed: ArcSwap::from_pointee(Stamp::default()),
        checking: AtomicU32::new(0),
    }
}

/// The rules of `location`: their compiled index, mapped, when it is valid
/// for the files as they are now; else the files, parsed, and one log line
/// that says why the index was not used (at `debug` when there is none:
/// compiling is optional, and the `info` line that says how many rules
/// were loaded says whether they came from an index).
fn load_rules(location: &Location) -> Result<Option<RuleSet>, String> {
    let (rules, note) = files::load_with_index(location, ldsaref_kernel::mapped::map);
    match note {
        Some(n) if n.serious => log::warn!("{}", n.message),
        Some(n) => log::debug!("{}", n.message),
        None => {}
    }
    rules
}

/// Builds a configuration from fixed settings and freshly loaded rules.
fn build(
    settings: &Settings,
    env_problems: &[String],
    probe: bool,
    rules: Result<Option<RuleSet>, String>,
) -> Config {
    let mut reasons = env_problems.to_vec();
    let rules = rules.unwrap_or_else(|e| {
        reasons.push(e);
        None
    });
    let reflect = rules.as_ref().is_some_and(RuleSet::has_reflect);
    let policy = if reasons.is_empty() {
        Policy::new(rules, settings.profile.as_deref(), settings.saref)
            .map_err(|e| reasons.push(e.to_string()))
            .ok()
    } else {
        None
    };
    Config {
        policy,
        mode: settings.mode,
        abi: settings.abi,
        opts: SarefOpts::for_abi(settings.abi),
        on_error: settings.on_error,
        broken: (!reasons.is_empty()).then(|| reasons.join("; ")),
        probe,
        reflect,
        inject_panic: false,
    }
}

fn log_outcome(cfg: &Config, settings: &Settings, location: &Location) {
    if let Some(why) = &cfg.broken {
        match settings.on_error {
            OnError::Fail => log::error!(
                "{why}: every inet connect and send is refused with EACCES (LDSAREF_ON_ERROR=fail)"
            ),
            OnError::Warn => log::warn!("{why}: traffic goes unsteered (LDSAREF_ON_ERROR=warn)"),
        }
    } else if let Some(p) = &cfg.policy {
        log::info!(
            "{} rules from {}{}{}{}, mode {}",
            p.rules().map_or(0, RuleSet::len),
            match location {
                Location::Explicit(p) => p.display().to_string(),
                Location::System => format!("{} and {}", files::SYSTEM_FILE, files::SYSTEM_DIR),
            },
            if p.rules().is_some_and(RuleSet::is_compiled) {
                format!(" (compiled index {})", location.index_path().display())
            } else {
                String::new()
            },
            settings
                .profile
                .as_deref()
                .map(|n| format!(", profile {n}"))
                .unwrap_or_default(),
            p.catch_all()
                .map(|s| format!(", IPSEC_SAREF={s}"))
                .unwrap_or_default(),
            settings.mode
        );
    }
}

/// At most every [`RELOAD_INTERVAL_MS`], one caller looks at the rules.
fn maybe_reload(st: &State) {
    let now = now();
    let next = HOT.next_check.load(Ordering::Relaxed);
    if now < next {
        return;
    }
    if HOT
        .next_check
        .compare_exchange(
            next,
            after(now, RELOAD_INTERVAL_MS),
            Ordering::Relaxed,
            Ordering::Relaxed,
        )
        .is_err()
    {
        return;
    }
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() } as u32;
    let other = st.checking.load(Ordering::Acquire);
    // SAFETY: as above.
    if other != 0 && other == unsafe { libc::getpid() } as u32 {
        return;
    }
    if st
        .checking
        .compare_exchange(other, me, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    reload_if_changed(st);
    st.checking.store(0, Ordering::Release);
}

fn reload_if_changed(st: &State) {
    let stamp = files::stamp(&st.location);
    if stamp == **st.stamp.load() || stamp == **st.failed.load() {
        return;
    }
    match load_rules(&st.location) {
        Ok(rules) => {
            let mut cfg = build(&st.settings, &st.env_problems, st.probe, Ok(rules));
            cfg.inject_panic = st.inject_panic;
            if cfg.broken.is_some() {
                // The new rules load but cannot be used as configured: the
                // profile in use is gone (its tunnel went down, `ldsaref
                // updown` removed its file). Keeping the old rules would
                // keep binding to an SAref the kernel may give to another
                // SA: fail closed instead, until the profile comes back.
                log_outcome(&cfg, &st.settings, &st.location);
                install(&st.current, cfg);
                st.stamp.store(Arc::new(stamp));
                return;
            }
            log::info!("rules reloaded");
            log_outcome(&cfg, &st.settings, &st.location);
            install(&st.current, cfg);
            st.stamp.store(Arc::new(stamp));
        }
        Err(e) => {
            if st.current.load().broken.is_some() {
                // Never loaded: still broken, with the new reason.
                let mut cfg = build(&st.settings, &st.env_problems, st.probe, Err(e));
                cfg.inject_panic = st.inject_panic;
                log_outcome(&cfg, &st.settings, &st.location);
                install(&st.current, cfg);
                st.stamp.store(Arc::new(stamp));
            } else {
                log::error!("{e}: keeping the previous rules");
                st.failed.store(Arc::new(stamp));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_time_is_ordered_and_adds_up() {
        let t = now();
        assert!(t > 0 && now() >= t);
        let pack = |s: i64, ns: i64| (s << 30) | ns;
        assert_eq!(after(pack(7, 900_000_000), 500), pack(8, 400_000_000));
        assert_eq!(after(pack(7, 0), 500), pack(7, 500_000_000));
        assert!(pack(7, 999_999_999) < pack(8, 0));
    }
}
