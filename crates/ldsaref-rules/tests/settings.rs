//! `Settings::from_lookup`: every variable, its default, its errors.

use std::collections::HashMap;
use std::path::PathBuf;

use ldsaref_rules::{
    vars, KlipsAbi, LogLevel, Mode, OnError, Saref, SettingError, Settings, DEFAULT_RULES_PATH,
};

fn read(env: &[(&str, &str)]) -> (Settings, Vec<SettingError>) {
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_lookup(|name| env.get(name).cloned())
}

/// The errors, as displayed.
fn errors(env: &[(&str, &str)]) -> Vec<String> {
    read(env).1.iter().map(ToString::to_string).collect()
}

#[test]
fn defaults() {
    let (s, errors) = read(&[]);
    assert!(errors.is_empty());
    assert_eq!(s, Settings::default());
    assert_eq!(s.saref, None);
    assert_eq!(s.rules, None);
    assert_eq!(s.profile, None);
    assert_eq!(s.mode, Mode::Klips);
    assert_eq!(s.abi, KlipsAbi::Current);
    assert_eq!(s.on_error, OnError::Fail);
    assert_eq!(s.log, LogLevel::Warn);
    assert_eq!(DEFAULT_RULES_PATH, "/etc/ldsaref/rules");
}

#[test]
fn every_value() {
    let (s, errors) = read(&[
        ("IPSEC_SAREF", "1234"),
        ("LDSAREF_RULES", "/etc/ldsaref/rules.d"),
        ("LDSAREF_PROFILE", "client1"),
        ("LDSAREF_MODE", "nfmark"),
        ("LDSAREF_KLIPS_ABI", "22"),
        ("LDSAREF_ON_ERROR", "warn"),
        ("LDSAREF_LOG", "trace"),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(s.saref, Saref::new(1234));
    assert_eq!(s.rules, Some(PathBuf::from("/etc/ldsaref/rules.d")));
    assert_eq!(s.profile.as_deref(), Some("client1"));
    assert_eq!(s.mode, Mode::Nfmark);
    assert_eq!(s.abi, KlipsAbi::Legacy);
    assert_eq!(s.on_error, OnError::Warn);
    assert_eq!(s.log, LogLevel::Trace);
    let (s, _) = read(&[
        ("LDSAREF_MODE", "klips"),
        ("LDSAREF_KLIPS_ABI", "30"),
        ("LDSAREF_ON_ERROR", "fail"),
    ]);
    assert_eq!(
        (s.mode, s.abi, s.on_error),
        (Mode::Klips, KlipsAbi::Current, OnError::Fail)
    );
    for (text, level) in [
        ("off", LogLevel::Off),
        ("error", LogLevel::Error),
        ("warn", LogLevel::Warn),
        ("info", LogLevel::Info),
        ("debug", LogLevel::Debug),
    ] {
        assert_eq!(read(&[("LDSAREF_LOG", text)]).0.log, level);
        assert_eq!(level.to_string(), text);
    }
    assert!(LogLevel::Off < LogLevel::Error && LogLevel::Debug < LogLevel::Trace);
    assert_eq!(Mode::Nfmark.to_string(), "nfmark");
    assert_eq!(KlipsAbi::Legacy.to_string(), "22");
    assert_eq!(OnError::Warn.to_string(), "warn");
}

#[test]
fn saref_errors() {
    assert_eq!(
        errors(&[("IPSEC_SAREF", "0")]),
        ["IPSEC_SAREF=\"0\": SAref must be a number in 1..32767"]
    );
    for bad in ["40000", "x", "12 ", "0x10", "-1"] {
        let e = errors(&[("IPSEC_SAREF", bad)]);
        assert_eq!(e.len(), 1);
        assert!(
            e[0].ends_with("SAref must be a number in 1..32767"),
            "{e:?}"
        );
    }
}

#[test]
fn empty_values_are_errors_except_log() {
    let (s, errs) = read(&[
        ("IPSEC_SAREF", ""),
        ("LDSAREF_RULES", ""),
        ("LDSAREF_PROFILE", ""),
        ("LDSAREF_MODE", ""),
        ("LDSAREF_KLIPS_ABI", ""),
        ("LDSAREF_ON_ERROR", ""),
        ("LDSAREF_LOG", ""),
    ]);
    let vars: Vec<&str> = errs.iter().map(|e| e.var).collect();
    assert_eq!(
        vars,
        [
            "IPSEC_SAREF",
            "LDSAREF_RULES",
            "LDSAREF_PROFILE",
            "LDSAREF_MODE",
            "LDSAREF_KLIPS_ABI",
            "LDSAREF_ON_ERROR"
        ]
    );
    assert_eq!(
        errs[0].to_string(),
        "IPSEC_SAREF=\"\": empty value: set it to a number in 1..32767, or unset it"
    );
    assert!(errs[3].message.contains("klips or nfmark"), "{}", errs[3]);
    assert_eq!(s, Settings::default());
}

#[test]
fn rules_path_must_be_absolute() {
    let e = errors(&[("LDSAREF_RULES", "rules")]);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("LDSAREF_RULES=\"rules\": must be an absolute path"),
        "{e:?}"
    );
    assert_eq!(errors(&[("LDSAREF_RULES", "./etc/rules")]).len(), 1);
    assert!(errors(&[("LDSAREF_RULES", "/r")]).is_empty());
}

#[test]
fn keywords_are_lowercase_and_listed() {
    assert_eq!(
        errors(&[("LDSAREF_MODE", "KLIPS")]),
        ["LDSAREF_MODE=\"KLIPS\": must be klips or nfmark"]
    );
    assert_eq!(
        errors(&[("LDSAREF_KLIPS_ABI", "31")]),
        ["LDSAREF_KLIPS_ABI=\"31\": must be 30 or 22"]
    );
    assert_eq!(
        errors(&[("LDSAREF_ON_ERROR", "ignore")]),
        ["LDSAREF_ON_ERROR=\"ignore\": must be fail or warn"]
    );
    assert_eq!(
        errors(&[("LDSAREF_LOG", "verbose")]),
        ["LDSAREF_LOG=\"verbose\": must be off, error, warn, info, debug or trace"]
    );
}

#[test]
fn profile_names_are_checked() {
    let e = errors(&[("LDSAREF_PROFILE", "a b")]);
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("invalid character ' '"), "{e:?}");
    assert_eq!(errors(&[("LDSAREF_PROFILE", &"x".repeat(65))]).len(), 1);
    assert!(errors(&[("LDSAREF_PROFILE", "web-1.prod_2")]).is_empty());
}

#[test]
fn all_errors_at_once_and_defaults_kept() {
    let (s, errs) = read(&[
        ("IPSEC_SAREF", "0"),
        ("LDSAREF_RULES", "relative"),
        ("LDSAREF_MODE", "x"),
        ("LDSAREF_LOG", "debug"),
    ]);
    assert_eq!(errs.len(), 3);
    assert_eq!(s.saref, None);
    assert_eq!(s.rules, None);
    assert_eq!(s.mode, Mode::Klips);
    assert_eq!(s.log, LogLevel::Debug, "valid values still apply");
    let e: Box<dyn std::error::Error> = Box::new(errs[0].clone());
    assert!(e.to_string().starts_with("IPSEC_SAREF="));
}

#[test]
fn variable_names() {
    assert_eq!(vars::IPSEC_SAREF, "IPSEC_SAREF");
    assert_eq!(
        vars::ALL,
        [
            "IPSEC_SAREF",
            "LDSAREF_RULES",
            "LDSAREF_PROFILE",
            "LDSAREF_MODE",
            "LDSAREF_KLIPS_ABI",
            "LDSAREF_ON_ERROR",
            "LDSAREF_LOG"
        ]
    );
    // Every variable is read, through the lookup only.
    let asked = std::cell::RefCell::new(Vec::new());
    let _ = Settings::from_lookup(|name| {
        asked.borrow_mut().push(name.to_owned());
        None
    });
    assert_eq!(asked.into_inner(), vars::ALL);
}
