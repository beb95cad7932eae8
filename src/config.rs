//! The process's configuration: read from the environment and the rules
//! on first need, then immutable. It sits behind an `ArcSwap`: the hot
//! path does one lock-free load, and a changed rules file or directory
//! replaces the whole configuration atomically.
//!
//! Reload needs no thread (which `fork` would lose): at most once a
//! second, the first hooked call that notices the time has come stats the
//! rules (one `stat` per file) and, if they changed, rebuilds. A new rules
//! set that does not load (a typo mid-edit) keeps the last good one, with
//! one log line per broken version; one that loads but no longer has the
//! process's profile (its tunnel is down) fails closed until it returns.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, Guard};
use ldsaref_kernel::opts::SarefOpts;
use ldsaref_rules::files::{self, Location, Stamp};
use ldsaref_rules::settings::{vars, KlipsAbi, Mode, OnError, Settings};
use ldsaref_rules::{Action, Policy, RuleSet};

use crate::logging;

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
    /// Monotonic milliseconds of the next check.
    next_check_ms: AtomicI64,
    /// The pid of the process checking now (0: nobody). A pid, not a flag,
    /// so that a child forked in the middle of a check is not stuck.
    checking: AtomicU32,
}

static STATE: OnceLock<State> = OnceLock::new();

/// [`Config::inert`] of the configuration in force, kept beside it so that
/// the calls of a process with nothing to steer cost no `ArcSwap` load.
static INERT: AtomicBool = AtomicBool::new(false);

/// Bumped each time a configuration is installed: a decision remembered
/// under one generation is never reused under another.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Installs a configuration (at load and on reload).
fn install(st_current: &ArcSwap<Config>, cfg: Config) {
    INERT.store(cfg.inert(), Ordering::Release);
    st_current.store(Arc::new(cfg));
    GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The generation of the configuration in force (loads it on first call,
/// and notices changed rules like [`current`]). Read it *before* loading
/// the configuration a decision is made with: then a decision can only be
/// filed under an older generation than its configuration, never a newer.
pub fn generation() -> u64 {
    let st = STATE.get_or_init(init);
    maybe_reload(st);
    GENERATION.load(Ordering::Acquire)
}

/// [`generation`], or `None` when the configuration steers nothing: one
/// reload check for both questions a send asks first.
pub fn active_generation() -> Option<u64> {
    let g = generation();
    (!INERT.load(Ordering::Acquire)).then_some(g)
}

/// How often the rules are looked at.
const RELOAD_INTERVAL_MS: i64 = 500;

/// The configuration in force, loaded on first call.
pub fn current() -> Guard<Arc<Config>> {
    let st = STATE.get_or_init(init);
    maybe_reload(st);
    st.current.load()
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

fn now_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; the coarse clock is a
    // vDSO read, a few nanoseconds.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
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
    let rules = files::load(&location);
    let mut cfg = build(&settings, &env_problems, probe, rules);
    cfg.inject_panic = inject_panic;
    log_outcome(&cfg, &settings, &location);
    INERT.store(cfg.inert(), Ordering::Release);
    State {
        current: ArcSwap::from_pointee(cfg),
        settings,
        env_problems,
        probe,
        inject_panic,
        location,
        stamp: ArcSwap::from_pointee(stamp),
        failed: ArcSwap::from_pointee(Stamp::default()),
        next_check_ms: AtomicI64::new(now_ms() + RELOAD_INTERVAL_MS),
        checking: AtomicU32::new(0),
    }
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
    let reflect = rules
        .as_ref()
        .is_some_and(|set| set.rules().any(|r| matches!(r.action, Action::Reflect)));
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
            "{} rules from {}{}{}, mode {}",
            p.rules().map_or(0, RuleSet::len),
            match location {
                Location::Explicit(p) => p.display().to_string(),
                Location::System => format!("{} and {}", files::SYSTEM_FILE, files::SYSTEM_DIR),
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
    let now = now_ms();
    let next = st.next_check_ms.load(Ordering::Relaxed);
    if now < next {
        return;
    }
    if st
        .next_check_ms
        .compare_exchange(
            next,
            now + RELOAD_INTERVAL_MS,
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
    match files::load(&st.location) {
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
