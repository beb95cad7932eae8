//! The environment the library will see, built from the command line and
//! the current environment, and validated the way the library will read
//! it, so that `run` refuses to start a program that would run unprotected
//! because of a typo.

use std::path::{Path, PathBuf};

use ldsaref_rules::settings::{vars, Settings, DEFAULT_RULES_PATH};
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

/// Reads a rules file as the library does.
pub fn load_rules(path: &Path) -> Result<RuleSet, String> {
    let name = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| format!("{name}: cannot read the rules file: {e}"))?;
    let mut b = RuleSet::builder();
    b.add_bytes(&bytes, &name).map_err(|e| e.to_string())?;
    b.build().map_err(|e| e.to_string())
}

/// The rules file the library will load: `LDSAREF_RULES`, else the system
/// file if it exists.
pub fn rules_path(settings: &Settings) -> Option<PathBuf> {
    settings.rules.clone().or_else(|| {
        let p = Path::new(DEFAULT_RULES_PATH);
        p.exists().then(|| p.to_path_buf())
    })
}

/// Everything the library would complain about, all at once.
pub fn validate(ov: &Overrides) -> Result<(Settings, Policy), Vec<String>> {
    let (settings, errors) = Settings::from_lookup(|k| get(ov, k));
    let mut problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
    let rules = match rules_path(&settings) {
        Some(p) => match load_rules(&p) {
            Ok(r) => Some(r),
            Err(e) => {
                problems.push(e);
                None
            }
        },
        None => None,
    };
    if !problems.is_empty() {
        return Err(problems);
    }
    match Policy::new(rules, settings.profile.as_deref(), settings.saref) {
        Ok(p) => Ok((settings, p)),
        Err(e) => Err(vec![e.to_string()]),
    }
}

/// `ldsaref check [FILE]`.
pub fn check(file: Option<&Path>) -> u8 {
    let path = match file {
        Some(p) => p.to_path_buf(),
        None => match get(&Overrides::new(), vars::LDSAREF_RULES) {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(DEFAULT_RULES_PATH),
        },
    };
    match load_rules(&path) {
        Ok(set) => {
            let profiles: Vec<&str> = set.profile_names().collect();
            println!(
                "{}: ok, {} rule{}{}",
                path.display(),
                set.len(),
                if set.len() == 1 { "" } else { "s" },
                if profiles.is_empty() {
                    String::new()
                } else {
                    format!(", profiles: {}", profiles.join(", "))
                }
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
