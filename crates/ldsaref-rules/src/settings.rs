//! The settings ldsaref takes from the environment, parsed without touching
//! it: the caller passes a lookup function, so that the preload library
//! (which reads its own environment early and carefully) and the CLI
//! (which also shows and checks it) parse it the same way.

use std::fmt;
use std::path::PathBuf;

use crate::parse::check_profile_name;
use crate::Saref;

/// The names of the environment variables.
pub mod vars {
    /// The catch-all SAref, applied to IPv4 traffic that no rule decides.
    pub const IPSEC_SAREF: &str = "IPSEC_SAREF";
    /// Absolute path of the rules file (or directory).
    pub const LDSAREF_RULES: &str = "LDSAREF_RULES";
    /// The profile section the process runs in.
    pub const LDSAREF_PROFILE: &str = "LDSAREF_PROFILE";
    /// `klips` or `nfmark`.
    pub const LDSAREF_MODE: &str = "LDSAREF_MODE";
    /// `30` (current) or `22` (legacy) socket option numbers.
    pub const LDSAREF_KLIPS_ABI: &str = "LDSAREF_KLIPS_ABI";
    /// `fail` or `warn`.
    pub const LDSAREF_ON_ERROR: &str = "LDSAREF_ON_ERROR";
    /// `off`, `error`, `warn`, `info`, `debug` or `trace`.
    pub const LDSAREF_LOG: &str = "LDSAREF_LOG";

    /// Every variable, in the order they are documented.
    pub const ALL: [&str; 7] = [
        IPSEC_SAREF,
        LDSAREF_RULES,
        LDSAREF_PROFILE,
        LDSAREF_MODE,
        LDSAREF_KLIPS_ABI,
        LDSAREF_ON_ERROR,
        LDSAREF_LOG,
    ];
}

/// Where the rules are read from when `LDSAREF_RULES` is not set.
pub const DEFAULT_RULES_PATH: &str = "/etc/ldsaref/rules";

/// How an SA is selected (`LDSAREF_MODE`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Mode {
    /// `klips`: the KLIPS/mast SAref socket options.
    #[default]
    Klips,
    /// `nfmark`: SAref encoded in the socket mark, for mast's nfmark path.
    Nfmark,
}

/// Which numbers the KLIPS SAref socket options have
/// (`LDSAREF_KLIPS_ABI`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum KlipsAbi {
    /// `30`: options 30 and 31.
    #[default]
    Current,
    /// `22`: options 22 and 23, of older kernels.
    Legacy,
}

/// What to do when ldsaref cannot apply a decision (`LDSAREF_ON_ERROR`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum OnError {
    /// `fail`: the call fails; no traffic goes out unprotected.
    #[default]
    Fail,
    /// `warn`: log and let the call go on as if ldsaref were not there.
    Warn,
}

/// How much ldsaref logs (`LDSAREF_LOG`), from nothing to everything:
/// a message is shown when its level is at most this one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
pub enum LogLevel {
    /// `off`.
    Off,
    /// `error`.
    Error,
    /// `warn`.
    #[default]
    Warn,
    /// `info`.
    Info,
    /// `debug`.
    Debug,
    /// `trace`.
    Trace,
}

/// The keywords of an enum setting, in the order errors list them.
trait Keywords: Sized + Copy + 'static {
    const VALUES: &'static [(&'static str, Self)];
}

impl Keywords for Mode {
    const VALUES: &'static [(&'static str, Self)] =
        &[("klips", Mode::Klips), ("nfmark", Mode::Nfmark)];
}

impl Keywords for KlipsAbi {
    const VALUES: &'static [(&'static str, Self)] =
        &[("30", KlipsAbi::Current), ("22", KlipsAbi::Legacy)];
}

impl Keywords for OnError {
    const VALUES: &'static [(&'static str, Self)] =
        &[("fail", OnError::Fail), ("warn", OnError::Warn)];
}

impl Keywords for LogLevel {
    const VALUES: &'static [(&'static str, Self)] = &[
        ("off", LogLevel::Off),
        ("error", LogLevel::Error),
        ("warn", LogLevel::Warn),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
        ("trace", LogLevel::Trace),
    ];
}

/// The keyword of a value, as the environment would hold it.
fn keyword_of<T: Keywords + PartialEq>(value: T) -> &'static str {
    T::VALUES
        .iter()
        .find(|(_, v)| *v == value)
        .map_or("", |(k, _)| k)
}

/// "a, b or c".
fn one_of<T: Keywords>() -> String {
    let words: Vec<&str> = T::VALUES.iter().map(|(k, _)| *k).collect();
    match words.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

macro_rules! display_as_keyword {
    ($($t:ty),*) => {$(
        /// The value as the environment variable holds it.
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(keyword_of(*self))
            }
        }
    )*};
}
display_as_keyword!(Mode, KlipsAbi, OnError, LogLevel);

/// Everything read from the environment.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Settings {
    /// `IPSEC_SAREF`: the catch-all SAref.
    pub saref: Option<Saref>,
    /// `LDSAREF_RULES`: an absolute path; `None` when unset.
    pub rules: Option<PathBuf>,
    /// `LDSAREF_PROFILE`: a valid profile name.
    pub profile: Option<String>,
    /// `LDSAREF_MODE`.
    pub mode: Mode,
    /// `LDSAREF_KLIPS_ABI`.
    pub abi: KlipsAbi,
    /// `LDSAREF_ON_ERROR`.
    pub on_error: OnError,
    /// `LDSAREF_LOG`.
    pub log: LogLevel,
}

/// A variable whose value is not valid.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SettingError {
    /// The variable's name (one of [`vars`]).
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong, and what would be right.
    pub message: String,
}

/// `IPSEC_SAREF="0": SAref must be a number in 1..32767`.
impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}: {}", self.var, self.value, self.message)
    }
}

impl std::error::Error for SettingError {}

impl Settings {
    /// Reads every variable through `get` (which returns a variable's value,
    /// `None` when unset).
    ///
    /// Never fails as a whole: returns the settings, with defaults in place
    /// of invalid values, and every error, so that the caller can refuse to
    /// run with all the reasons at once.
    ///
    /// An empty value is an error, except for `LDSAREF_LOG`: an operator
    /// writing `IPSEC_SAREF=$REF prog` with `REF` unset must not silently
    /// run unprotected. Keywords are lowercase.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> (Settings, Vec<SettingError>) {
        let mut reader = Reader {
            get: &get,
            errors: Vec::new(),
        };
        let saref_range = format!("a number in 1..{}", Saref::MAX);
        let settings = Settings {
            saref: reader.read(vars::IPSEC_SAREF, Some(&saref_range), |v| {
                v.parse::<Saref>()
                    .map_err(|_| format!("SAref must be {saref_range}"))
            }),
            rules: reader.read(vars::LDSAREF_RULES, Some("an absolute path"), |v| {
                let path = PathBuf::from(v);
                if path.is_absolute() {
                    Ok(path)
                } else {
                    Err("must be an absolute path (the library never loads anything relative to the current directory)".to_owned())
                }
            }),
            profile: reader.read(vars::LDSAREF_PROFILE, Some("a profile name"), |v| {
                check_profile_name(v)
                    .map(|()| v.to_owned())
                    .map_err(|(_, message)| message)
            }),
            mode: reader.keyword(vars::LDSAREF_MODE, true).unwrap_or_default(),
            abi: reader.keyword(vars::LDSAREF_KLIPS_ABI, true).unwrap_or_default(),
            on_error: reader.keyword(vars::LDSAREF_ON_ERROR, true).unwrap_or_default(),
            log: reader.keyword(vars::LDSAREF_LOG, false).unwrap_or_default(),
        };
        (settings, reader.errors)
    }
}

/// Reads variables, collecting errors.
struct Reader<'a, G: Fn(&str) -> Option<String>> {
    get: &'a G,
    errors: Vec<SettingError>,
}

impl<G: Fn(&str) -> Option<String>> Reader<'_, G> {
    /// The parsed value of `var`; `None` when unset, when invalid (with
    /// an error recorded), or when empty. An empty value is an error that
    /// says what is `expected`, unless `expected` is `None`.
    fn read<T>(
        &mut self,
        var: &'static str,
        expected: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let value = (self.get)(var)?;
        if value.is_empty() {
            if let Some(expected) = expected {
                self.errors.push(SettingError {
                    var,
                    value,
                    message: format!("empty value: set it to {expected}, or unset it"),
                });
            }
            return None;
        }
        match parse(&value) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                self.errors.push(SettingError {
                    var,
                    value,
                    message,
                });
                None
            }
        }
    }

    fn keyword<T: Keywords>(&mut self, var: &'static str, empty_is_error: bool) -> Option<T> {
        let expected = one_of::<T>();
        self.read(var, empty_is_error.then_some(expected.as_str()), |v| {
            T::VALUES
                .iter()
                .find(|(k, _)| *k == v)
                .map(|(_, value)| *value)
                .ok_or_else(|| format!("must be {expected}"))
        })
    }
}
