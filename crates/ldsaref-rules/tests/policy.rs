//! `Policy::decide`: the profile's rules, the global rules, then the
//! catch-all SAref for IPv4.

use std::net::IpAddr;

use ldsaref_rules::Proto::{Tcp, Udp};
use ldsaref_rules::{Action, DecisionSource, Policy, PolicyError, RuleSet, Saref};

const RULES: &str = "\
10.0.0.0/8 saref 1
192.168.0.0/16 pass
[client1]
10.1.0.0/16 saref 101
[client2]
10.1.0.0/16 saref 202
";

fn rules() -> RuleSet {
    RuleSet::parse(RULES, "rules").unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn saref(n: u32) -> Saref {
    Saref::new(n).unwrap()
}

#[test]
fn profile_then_global_then_catch_all() {
    let p = Policy::new(Some(rules()), Some("client1"), Some(saref(7))).unwrap();
    let d = p.decide(ip("10.1.2.3"), Tcp, 22).unwrap();
    assert_eq!(d.action, Action::Saref(saref(101)));
    assert_eq!(d.source.to_string(), "rules:4 [client1]");
    assert_eq!(d.to_string(), "saref 101 (rules:4 [client1])");
    let d = p.decide(ip("10.2.0.1"), Udp, 53).unwrap();
    assert_eq!(d.action, Action::Saref(saref(1)));
    assert_eq!(d.source.to_string(), "rules:1");
    match d.source {
        DecisionSource::Rule(r) => {
            assert_eq!(r.rule().origin.line, 1);
            assert_eq!(r.file(), "rules");
            assert_eq!(r.profile(), None);
        }
        DecisionSource::CatchAll => panic!("a rule applies"),
    }
    // A `pass` rule is an answer: the catch-all does not apply.
    assert_eq!(
        p.decide(ip("192.168.1.1"), Tcp, 1).unwrap().action,
        Action::Pass
    );
    let d = p.decide(ip("8.8.8.8"), Tcp, 443).unwrap();
    assert_eq!(d.action, Action::Saref(saref(7)));
    assert_eq!(d.source, DecisionSource::CatchAll);
    assert_eq!(d.source.to_string(), "IPSEC_SAREF");
    assert_eq!(p.profile(), Some("client1"));
}

#[test]
fn catch_all_is_ipv4_only() {
    let p = Policy::new(None, None, Some(saref(7))).unwrap();
    assert!(!p.is_empty());
    assert_eq!(p.catch_all(), Some(saref(7)));
    assert!(p.rules().is_none());
    assert_eq!(
        p.decide(ip("1.2.3.4"), Udp, 1).map(|d| d.action),
        Some(Action::Saref(saref(7)))
    );
    assert_eq!(
        p.decide(ip("::ffff:1.2.3.4"), Udp, 1).map(|d| d.action),
        Some(Action::Saref(saref(7))),
        "IPv4-mapped is IPv4"
    );
    assert_eq!(p.decide(ip("2001:db8::1"), Udp, 1), None);
    assert_eq!(p.decide(ip("::1"), Tcp, 1), None);
}

#[test]
fn other_profiles_and_no_profile() {
    let p = Policy::new(Some(rules()), Some("client2"), None).unwrap();
    assert_eq!(
        p.decide(ip("10.1.0.1"), Tcp, 1).map(|d| d.action),
        Some(Action::Saref(saref(202)))
    );
    let p = Policy::new(Some(rules()), None, None).unwrap();
    assert_eq!(
        p.decide(ip("10.1.0.1"), Tcp, 1).map(|d| d.action),
        Some(Action::Saref(saref(1)))
    );
    assert_eq!(p.decide(ip("8.8.8.8"), Tcp, 1), None);
    assert_eq!(p.profile(), None);
}

#[test]
fn unknown_profile() {
    let e = Policy::new(Some(rules()), Some("client3"), None).unwrap_err();
    assert_eq!(
        e,
        PolicyError::UnknownProfile {
            name: "client3".to_owned(),
            known: vec!["client1".to_owned(), "client2".to_owned()],
        }
    );
    assert_eq!(
        e.to_string(),
        "unknown profile \"client3\" (the rules file has: client1, client2)"
    );
    let none = RuleSet::parse("10.0.0.0/8 deny", "rules").unwrap();
    let e = Policy::new(Some(none), Some("x"), None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unknown profile \"x\" (the rules file has no profile sections)"
    );
}

#[test]
fn profile_without_rules() {
    let e = Policy::new(None, Some("x"), Some(saref(3))).unwrap_err();
    assert_eq!(
        e,
        PolicyError::ProfileWithoutRules {
            name: "x".to_owned()
        }
    );
    assert_eq!(
        e.to_string(),
        "LDSAREF_PROFILE=x is set but no rules file is loaded"
    );
}

#[test]
fn emptiness() {
    assert!(Policy::new(None, None, None).unwrap().is_empty());
    let empty = RuleSet::parse("# nothing yet\n", "rules").unwrap();
    assert!(Policy::new(Some(empty), None, None).unwrap().is_empty());
    let empty = RuleSet::parse("[p]\n", "rules").unwrap();
    let p = Policy::new(Some(empty), Some("p"), None).unwrap();
    assert!(p.is_empty());
    assert_eq!(p.decide(ip("1.2.3.4"), Tcp, 1), None);
    assert!(!Policy::new(Some(rules()), None, None).unwrap().is_empty());
}

#[test]
fn decisions_name_their_file() {
    let mut b = RuleSet::builder();
    b.add_source("10.0.0.0/8 deny", "/etc/ldsaref/rules.d/00-base")
        .unwrap();
    b.add_source(
        "\n[web]\n10.1.0.0/16 mark 0x200/0xff00",
        "/etc/ldsaref/rules.d/10-web",
    )
    .unwrap();
    let p = Policy::new(Some(b.build().unwrap()), Some("web"), None).unwrap();
    let d = p.decide(ip("10.1.0.1"), Tcp, 80).unwrap();
    assert_eq!(
        d.to_string(),
        "mark 0x200/0xff00 (/etc/ldsaref/rules.d/10-web:3 [web])"
    );
    let d = p.decide(ip("10.2.0.1"), Tcp, 80).unwrap();
    assert_eq!(d.source.to_string(), "/etc/ldsaref/rules.d/00-base:1");
}
