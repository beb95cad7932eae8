//! The process's configuration: read once from the environment and the
//! rules file, on first need, then immutable. It sits behind an
//! `ArcSwap` so a reload can replace it atomically while the hot path
//! only does a lock-free load.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, Guard};
use ldsaref_kernel::opts::SarefOpts;
use ldsaref_rules::settings::{vars, KlipsAbi, Mode, OnError, Settings, DEFAULT_RULES_PATH};
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
}

impl Config {
    /// Nothing to do for any socket: no rules, no `IPSEC_SAREF`, no error.
    pub fn inert(&self) -> bool {
        self.broken.is_none() && self.policy.as_ref().is_none_or(Policy::is_empty)
    }
}

static CURRENT: OnceLock<ArcSwap<Config>> = OnceLock::new();

/// The configuration in force, loaded on first call.
pub fn current() -> Guard<Arc<Config>> {
    CURRENT.get_or_init(|| ArcSwap::from_pointee(load())).load()
}

/// `LDSAREF_PROBE`: not part of the user contract's core, a switch for
/// tests and for kernels whose answers to the probe cannot be trusted.
const LDSAREF_PROBE: &str = "LDSAREF_PROBE";

fn secure_execution() -> bool {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

fn load() -> Config {
    let secure = secure_execution();
    let env = |name: &str| -> Option<String> {
        // In secure-execution mode (setuid, setgid, file capabilities) the
        // environment belongs to a less privileged caller: no path from it.
        if secure && name == vars::LDSAREF_RULES {
            return None;
        }
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    };
    let (settings, errors) = Settings::from_lookup(env);
    logging::init(settings.log);

    let mut reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let probe = match env(LDSAREF_PROBE).as_deref() {
        None | Some("1") | Some("on") => true,
        Some("0") | Some("off") => false,
        Some(v) => {
            reasons.push(format!(
                "{LDSAREF_PROBE}=\"{v}\": expected \"on\" or \"off\""
            ));
            true
        }
    };

    let rules = match rules_path(&settings) {
        Some(path) => match load_rules(&path) {
            Ok(set) => Some(set),
            Err(e) => {
                reasons.push(e);
                None
            }
        },
        None => None,
    };
    if let Some(set) = &rules {
        reasons.extend(unsupported(set));
    }

    let policy = if reasons.is_empty() {
        match Policy::new(rules, settings.profile.as_deref(), settings.saref) {
            Ok(p) => Some(p),
            Err(e) => {
                reasons.push(e.to_string());
                None
            }
        }
    } else {
        None
    };

    let broken = if reasons.is_empty() {
        None
    } else {
        Some(reasons.join("; "))
    };
    if let Some(why) = &broken {
        if logging::once(logging::Cause::Broken) {
            match settings.on_error {
                OnError::Fail => log::error!(
                    "{why}: every inet connect and send is refused with EACCES (LDSAREF_ON_ERROR=fail)"
                ),
                OnError::Warn => log::warn!(
                    "{why}: traffic goes unsteered (LDSAREF_ON_ERROR=warn)"
                ),
            }
        }
    } else if let Some(p) = &policy {
        log::info!(
            "{} rules{}{}, mode {:?}",
            p.rules().map_or(0, RuleSet::len),
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

    Config {
        policy,
        mode: settings.mode,
        abi: settings.abi,
        opts: SarefOpts::for_abi(settings.abi),
        on_error: settings.on_error,
        broken,
        probe,
    }
}

/// `LDSAREF_RULES`, else the system file when it exists. Never relative to
/// the current directory (the settings refuse relative paths).
fn rules_path(settings: &Settings) -> Option<PathBuf> {
    settings.rules.clone().or_else(|| {
        let p = Path::new(DEFAULT_RULES_PATH);
        p.exists().then(|| p.to_path_buf())
    })
}

fn load_rules(path: &Path) -> Result<RuleSet, String> {
    let name = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| format!("{name}: cannot read the rules file: {e}"))?;
    let mut b = RuleSet::builder();
    b.add_bytes(&bytes, &name).map_err(|e| e.to_string())?;
    b.build().map_err(|e| e.to_string())
}

/// Actions the rules language has but this library does not apply yet:
/// a rule the library cannot honour must not be silently ignored.
fn unsupported(set: &RuleSet) -> Vec<String> {
    set.rules()
        .filter(|r| matches!(r.action, Action::Reflect))
        .map(|r| {
            format!(
                "{}:{}: {} is not supported yet",
                set.file_name(r.origin),
                r.origin.line,
                r.action
            )
        })
        .collect()
}
