//! The environment the library will see, built from the command line and
//! the current environment, and validated the way the library will read
//! it, so that `run` refuses to start a program that would run unprotected
//! because of a typo.

use std::path::{Path, PathBuf};

use ldsaref_rules::files::{self, Location};
use ldsaref_rules::settings::{vars, Settings};
use ldsaref_rules::{Policy, RuleSet};

use crate::SteerOpts;

/// Variables the command line sets, overriding the environment.
pub type Overrides = Vec<(&'static str, String)>;

/// Turns the options into variables; a relative `--rules` is made absolute
/// here, where the user typed it (the library never resolves one).
pub fn overrides(opts: &SteerOpts) -> Result<Overrides, String> {
    let mut v = Overrides::new();
    if let Some(s) = &opts.saref {
        v.push((vars::IPSEC_SAREF, s.clone()));
    }
    if let Some(p) = &opts.rules {
        v.push((vars::LDSAREF_RULES, absolute(p)?.display().to_string()));
    }
    if let Some(s) = &opts.profile {
        v.push((vars::LDSAREF_PROFILE, s.clone()));
    }
    if let Some(s) = &opts.mode {
        v.push((vars::LDSAREF_MODE, s.clone()));
    }
    if let Some(s) = &opts.on_error {
        v.push((vars::LDSAREF_ON_ERROR, s.clone()));
    }
    if let Some(s) = &opts.log {
        v.push((vars::LDSAREF_LOG, s.clone()));
    }
    if let Some(s) = &opts.klips_abi {
        v.push((vars::LDSAREF_KLIPS_ABI, s.clone()));
    }
    Ok(v)
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    std::env::current_dir()
        .map(|d| d.join(p))
        .map_err(|e| format!("{}: cannot make the path absolute: {e}", p.display()))
}

/// A variable as the library will see it.
pub fn get(ov: &Overrides, name: &str) -> Option<String> {
    ov.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
}

/// Reads the rules exactly as the library does: a file, a directory of
/// `*.rules`, or the system file and directory.
pub fn load_rules(location: &Location) -> Result<Option<RuleSet>, String> {
    files::load(location)
}

/// The rules as the library finds them: from their compiled index when it
/// is valid, else parsed (and a warning says why the index was not used).
pub fn load_rules_or_index(location: &Location) -> Result<Option<RuleSet>, String> {
    let (rules, note) = files::load_with_index(location, ldsaref_kernel::mapped::map);
    if let Some(note) = note.filter(|n| n.serious) {
        eprintln!("ldsaref: warning: {}", note.message);
    }
    rules
}

/// `ldsaref compile [--rules F]`, and `check --compile` once the rules
/// check: writes the index of `location` beside it.
pub fn compile(location: &Location) -> u8 {
    let start = std::time::Instant::now();
    match crate::index::compile_for(location) {
        Ok(path) => {
            let size = std::fs::metadata(&path).map_or(0, |m| m.len());
            println!(
                "{}: compiled, {size} bytes, in {} ms",
                path.display(),
                start.elapsed().as_millis()
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

/// The rules location of `file`, else of `LDSAREF_RULES`, else the
/// system's.
pub fn location_of(file: Option<&Path>) -> Location {
    match file {
        Some(p) => Location::Explicit(p.to_path_buf()),
        None => Location::from_setting(
            get(&Overrides::new(), vars::LDSAREF_RULES)
                .map(PathBuf::from)
                .as_deref(),
        ),
    }
}

/// Where the library will read its rules.
pub fn settings_location(settings: &Settings) -> Location {
    Location::from_setting(settings.rules.as_deref())
}

/// Everything the library would complain about, all at once.
pub fn validate(ov: &Overrides) -> Result<(Settings, Policy), Vec<String>> {
    let (settings, errors) = Settings::from_lookup(|k| get(ov, k));
    let mut problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let rules = match load_rules_or_index(&settings_location(&settings)) {
        Ok(r) => r,
        Err(e) => {
            problems.push(e);
            None
        }
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    match Policy::new(rules, settings.profile.as_deref(), settings.saref) {
        Ok(p) => Ok((settings, p)),
        Err(e) => Err(vec![e.to_string()]),
    }
}

/// Why a process run with `policy` (rules read from `location`) would
/// have nothing steered, or `None` when something would be: a rule of its
/// profile, a global rule, or a catch-all SAref. Rules of other profiles
/// do not count, nor does a rules file with only comments (the packaged
/// `/etc/ldsaref/rules`). `ldsaref run` refuses to start such a program:
/// it would run silently unsteered.
pub fn nothing_to_steer(policy: &Policy, location: &Location) -> Option<String> {
    if policy.catch_all().is_some() {
        return None;
    }
    const FIX: &str = "write rules (see ldsaref-rules(5); `ldsaref check` checks them), \
                       point --rules (LDSAREF_RULES) at them, or give a catch-all --saref N \
                       (IPSEC_SAREF; with --cgroup, --mark V too)";
    let Some(set) = policy.rules() else {
        return Some(format!(
            "nothing to steer: no rules file ({}) and no --saref (IPSEC_SAREF), so the program \
             would run unsteered; refusing to start it: {FIX}",
            match location {
                Location::Explicit(p) => format!("{} has no *.rules files", p.display()),
                Location::System => format!(
                    "LDSAREF_RULES is not set and neither {} nor {}/*.rules exists",
                    files::SYSTEM_FILE,
                    files::SYSTEM_DIR
                ),
            }
        ));
    };
    let id = policy.profile().and_then(|name| set.profile(name));
    if set.rules().any(|r| r.profile.is_none() || r.profile == id) {
        return None;
    }
    let files: Vec<&str> = set.file_names().collect();
    let files = if files.is_empty() {
        describe(location)
    } else {
        files.join(", ")
    };
    Some(match policy.profile() {
        Some(p) => format!(
            "nothing to steer: {files} has no rule in profile [{p}] and no global rule, and \
             there is no --saref (IPSEC_SAREF), so the program would run unsteered; refusing \
             to start it: {FIX}"
        ),
        None => format!(
            "nothing to steer: {files} has no global rule{}, and there is no --saref \
             (IPSEC_SAREF), so the program would run unsteered; refusing to start it: {FIX}{}",
            if set.profile_names().next().is_some() {
                " (only profile sections)"
            } else {
                ""
            },
            if set.profile_names().next().is_some() {
                ", or choose a profile with --profile (LDSAREF_PROFILE)"
            } else {
                ""
            }
        ),
    })
}

fn describe(location: &Location) -> String {
    match location {
        Location::Explicit(p) => p.display().to_string(),
        Location::System => format!("{} and {}", files::SYSTEM_FILE, files::SYSTEM_DIR),
    }
}

/// `ldsaref check [PATH]`: a file or a directory; by default what the
/// library would load.
pub fn check(file: Option<&Path>, and_compile: bool) -> u8 {
    let location = location_of(file);
    let path = match &location {
        Location::Explicit(p) => p.display().to_string(),
        Location::System => format!("{} and {}", files::SYSTEM_FILE, files::SYSTEM_DIR),
    };
    match load_rules(&location) {
        Ok(None) => {
            eprintln!("{path}: no rules file");
            1
        }
        Ok(Some(set)) => {
            let profiles: Vec<&str> = set.profile_names().collect();
            println!(
                "{path}: ok, {} rule{}{}",
                set.len(),
                if set.len() == 1 { "" } else { "s" },
                if profiles.is_empty() {
                    String::new()
                } else {
                    format!(", profiles: {}", profiles.join(", "))
                }
            );
            if and_compile {
                compile(&location)
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
