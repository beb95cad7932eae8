//! How `RuleSet::lookup` chooses a rule: one test per matching rule of the
//! rules file format.

use std::net::IpAddr;

use ldsaref_rules::Proto::{Tcp, Udp};
use ldsaref_rules::{Action, Dest, Proto, ProtoMatch, RuleSet, Saref};

fn set(text: &str) -> RuleSet {
    RuleSet::parse(text, "rules").unwrap_or_else(|e| panic!("{e}"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The line of the rule that applies, 0 for none.
fn line(set: &RuleSet, profile: Option<&str>, dest: &str, proto: Proto, port: u16) -> u32 {
    let profile = profile.map(|name| set.profile(name).expect("profile exists"));
    set.lookup(profile, ip(dest), proto, port)
        .map_or(0, |rule| rule.origin.line)
}

/// The line that applies to traffic with no profile.
fn global(set: &RuleSet, dest: &str, proto: Proto, port: u16) -> u32 {
    line(set, None, dest, proto, port)
}

#[test]
fn longest_prefix_wins() {
    let rules = "\
        10.0.0.0/8 saref 1
        10.1.0.0/16 saref 2
        10.1.2.0/24 saref 3
        10.1.2.3 saref 4
        0.0.0.0/0 saref 5
    ";
    let s = set(rules);
    assert_eq!(global(&s, "10.1.2.3", Tcp, 80), 4);
    assert_eq!(global(&s, "10.1.2.4", Tcp, 80), 3);
    assert_eq!(global(&s, "10.1.3.4", Tcp, 80), 2);
    assert_eq!(global(&s, "10.2.3.4", Tcp, 80), 1);
    assert_eq!(global(&s, "11.0.0.1", Tcp, 80), 5);
    assert_eq!(global(&s, "2001:db8::1", Tcp, 80), 0, "IPv4 rules only");

    // The order of the rules does not matter.
    let reversed: Vec<&str> = rules.lines().rev().collect();
    let s = set(&reversed.join("\n"));
    let action = |dest| s.lookup(None, ip(dest), Udp, 53).map(|r| r.action);
    assert_eq!(
        action("10.1.2.3"),
        Some(Action::Saref(Saref::new(4).unwrap()))
    );
    assert_eq!(
        action("10.2.3.4"),
        Some(Action::Saref(Saref::new(1).unwrap()))
    );
}

#[test]
fn longest_prefix_at_every_length() {
    // Nested prefixes of all lengths along one address.
    let base: u32 = 0xc0a8_fe01; // 192.168.254.1
    let mut text = String::new();
    for len in 0..=32u32 {
        let net = if len == 0 {
            0
        } else {
            base & (u32::MAX << (32 - len))
        };
        text.push_str(&format!(
            "{}/{len} saref {}\n",
            std::net::Ipv4Addr::from(net),
            len + 1
        ));
    }
    let s = set(&text);
    for len in 0..=32u32 {
        // An address that shares exactly `len` bits with `base`.
        let probe = if len == 32 {
            base
        } else {
            base ^ (1 << (31 - len))
        };
        let probe = std::net::Ipv4Addr::from(probe).to_string();
        assert_eq!(global(&s, &probe, Tcp, 1), len + 1, "{probe}");
    }
}

#[test]
fn ipv6_longest_prefix() {
    let s = set("\
        2001:db8::/32 saref 1
        2001:db8:1::/48 saref 2
        2001:db8:1:2::/64 saref 3
        2001:db8:1:2::42 saref 4
        ::/0 saref 5
        2001:db8:ffff:ffff:ffff:ffff:ffff:ff00/120 saref 6
    ");
    assert_eq!(global(&s, "2001:db8:1:2::42", Tcp, 1), 4);
    assert_eq!(global(&s, "2001:db8:1:2::43", Tcp, 1), 3);
    assert_eq!(global(&s, "2001:db8:1:3::", Tcp, 1), 2);
    assert_eq!(global(&s, "2001:db8:2::", Tcp, 1), 1);
    assert_eq!(global(&s, "2001:db9::", Tcp, 1), 5);
    assert_eq!(
        global(&s, "2001:db8:ffff:ffff:ffff:ffff:ffff:ff42", Tcp, 1),
        6
    );
    assert_eq!(
        global(&s, "2001:db8:ffff:ffff:ffff:ffff:fffe:ff42", Tcp, 1),
        1
    );
    assert_eq!(global(&s, "10.0.0.1", Tcp, 1), 0, "IPv6 rules only");
}

#[test]
fn port_beats_no_port() {
    let s = set("\
        10.0.0.0/8 saref 1
        10.0.0.0/8 22 saref 2
    ");
    assert_eq!(global(&s, "10.1.1.1", Tcp, 22), 2);
    assert_eq!(global(&s, "10.1.1.1", Udp, 22), 2);
    assert_eq!(global(&s, "10.1.1.1", Tcp, 23), 1);
}

#[test]
fn specific_proto_beats_none_or_any() {
    let s = set("\
        10.0.0.0/8 saref 1
        10.0.0.0/8 tcp saref 2
    ");
    assert_eq!(global(&s, "10.1.1.1", Tcp, 22), 2);
    assert_eq!(global(&s, "10.1.1.1", Udp, 22), 1);
    // `any` is the same as no protocol.
    let s = set("\
        10.0.0.0/8 udp saref 1
        10.0.0.0/8 any saref 2
    ");
    assert_eq!(global(&s, "10.1.1.1", Udp, 22), 1);
    assert_eq!(global(&s, "10.1.1.1", Tcp, 22), 2);
}

#[test]
fn full_precedence_at_equal_prefix() {
    // Port first, then protocol: a port without protocol beats a protocol
    // without port.
    let s = set("\
        10.0.0.0/8 saref 4
        10.0.0.0/8 tcp saref 3
        10.0.0.0/8 22 saref 2
        10.0.0.0/8 tcp 22 saref 1
    ");
    assert_eq!(global(&s, "10.0.0.1", Tcp, 22), 4);
    assert_eq!(global(&s, "10.0.0.1", Udp, 22), 3);
    assert_eq!(global(&s, "10.0.0.1", Tcp, 23), 2);
    assert_eq!(global(&s, "10.0.0.1", Udp, 23), 1);
}

#[test]
fn prefix_beats_port_and_proto() {
    let s = set("\
        10.0.0.0/8 tcp 22 saref 1
        10.1.0.0/16 saref 2
    ");
    assert_eq!(global(&s, "10.1.0.1", Tcp, 22), 2);
    assert_eq!(global(&s, "10.2.0.1", Tcp, 22), 1);
}

#[test]
fn longer_prefix_not_matching_falls_back() {
    let s = set("\
        10.0.0.0/8 saref 1
        10.1.0.0/16 tcp 22 saref 2
        10.1.2.0/24 udp 53 saref 3
        10.1.2.3 tcp 1000-2000 saref 4
    ");
    assert_eq!(global(&s, "10.1.2.3", Tcp, 1500), 4);
    assert_eq!(global(&s, "10.1.2.3", Udp, 53), 3);
    assert_eq!(global(&s, "10.1.2.3", Tcp, 22), 2);
    assert_eq!(global(&s, "10.1.2.3", Tcp, 23), 1);
    assert_eq!(global(&s, "10.1.2.3", Udp, 1500), 1);
    assert_eq!(global(&s, "10.1.9.9", Udp, 53), 1);

    // And to nothing when no shorter prefix has a rule.
    let s = set("10.1.0.0/16 tcp saref 2");
    assert_eq!(global(&s, "10.1.0.1", Udp, 22), 0);
}

#[test]
fn port_range_edges() {
    let s = set("\
        10.0.0.0/8 20-30 saref 1
        10.0.0.0/8 31 saref 2
        10.0.0.0/8 udp 1-65535 saref 3
        10.0.0.0/8 tcp 65535 saref 4
    ");
    assert_eq!(global(&s, "10.0.0.1", Tcp, 19), 0);
    assert_eq!(global(&s, "10.0.0.1", Tcp, 20), 1);
    assert_eq!(global(&s, "10.0.0.1", Tcp, 25), 1);
    assert_eq!(global(&s, "10.0.0.1", Tcp, 30), 1);
    assert_eq!(global(&s, "10.0.0.1", Tcp, 31), 2);
    assert_eq!(global(&s, "10.0.0.1", Tcp, 32), 0);
    assert_eq!(global(&s, "10.0.0.1", Tcp, 65535), 4);
    assert_eq!(global(&s, "10.0.0.1", Udp, 1), 3);
    assert_eq!(global(&s, "10.0.0.1", Udp, 65535), 3);
    // Port 0 is in no range, but a rule without ports covers it.
    assert_eq!(global(&s, "10.0.0.1", Udp, 0), 0);
    let s = set("10.0.0.0/8 saref 1");
    assert_eq!(global(&s, "10.0.0.1", Udp, 0), 1);
}

#[test]
fn profile_before_global() {
    let s = set("\
        10.0.0.0/8 saref 1
        10.1.0.0/16 saref 2
        [client1]
        10.0.0.0/8 saref 4
        [client2]
        192.168.0.0/24 saref 6
    ");
    assert_eq!(line(&s, Some("client1"), "10.2.0.1", Tcp, 1), 4);
    // The profile's rules come first as a whole: its /8 beats the global
    // /16.
    assert_eq!(line(&s, Some("client1"), "10.1.0.1", Tcp, 1), 4);
    assert_eq!(line(&s, None, "10.1.0.1", Tcp, 1), 2);
    assert_eq!(line(&s, None, "10.2.0.1", Tcp, 1), 1);
    // The global rules when the profile has no match.
    assert_eq!(line(&s, Some("client2"), "10.1.0.1", Tcp, 1), 2);
    assert_eq!(line(&s, Some("client2"), "192.168.0.9", Tcp, 1), 6);
    assert_eq!(line(&s, Some("client1"), "192.168.0.9", Tcp, 1), 0);
    assert_eq!(line(&s, None, "192.168.0.9", Tcp, 1), 0);
}

#[test]
fn profile_falls_back_to_global_when_proto_or_port_differ() {
    let s = set("\
        10.0.0.0/8 saref 1
        [p]
        10.1.0.0/16 tcp 22 saref 3
    ");
    assert_eq!(line(&s, Some("p"), "10.1.0.1", Tcp, 22), 3);
    assert_eq!(line(&s, Some("p"), "10.1.0.1", Tcp, 80), 1);
}

#[test]
fn sections_merge() {
    let s = set("\
        [a]
        10.0.0.0/8 saref 2
        [b]
        10.0.0.0/8 saref 4
        [a]                # continues [a]
        10.1.0.0/16 saref 6
    ");
    assert_eq!(s.profile_names().collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(line(&s, Some("a"), "10.1.0.1", Tcp, 1), 6);
    assert_eq!(line(&s, Some("a"), "10.2.0.1", Tcp, 1), 2);
    assert_eq!(line(&s, Some("b"), "10.1.0.1", Tcp, 1), 4);
    let a = s.profile("a").unwrap();
    assert_eq!(s.profile_name(a), "a");
    assert_eq!(s.profile("c"), None);
}

#[test]
fn ipv4_mapped_matches_as_ipv4() {
    let s = set("\
        10.0.0.0/8 saref 1
        ::/0 saref 2
    ");
    assert_eq!(global(&s, "::ffff:10.1.2.3", Tcp, 1), 1);
    // ::/0 is IPv6 only: a mapped address is not IPv6 traffic.
    assert_eq!(global(&s, "::ffff:11.1.2.3", Tcp, 1), 0);
    assert_eq!(
        global(&s, "::10.1.2.3", Tcp, 1),
        2,
        "IPv4-compatible is IPv6"
    );
    assert_eq!(global(&s, "2001:db8::1", Tcp, 1), 2);
}

#[test]
fn any_covers_both_families() {
    let s = set("\
        any saref 1
        10.0.0.0/8 saref 2
        2001:db8::/32 saref 3
    ");
    assert_eq!(global(&s, "10.0.0.1", Tcp, 1), 2);
    assert_eq!(global(&s, "11.0.0.1", Tcp, 1), 1);
    assert_eq!(global(&s, "::ffff:11.0.0.1", Tcp, 1), 1);
    assert_eq!(global(&s, "2001:db8::1", Tcp, 1), 3);
    assert_eq!(global(&s, "2001:db9::1", Tcp, 1), 1);
    assert_eq!(global(&s, "::", Udp, 1), 1);
    // With ports, `any` still beats 0.0.0.0/0 without (no tie).
    let s = set("\
        0.0.0.0/0 saref 1
        ::/0 saref 2
        any 22 saref 3
    ");
    assert_eq!(global(&s, "1.2.3.4", Tcp, 22), 3);
    assert_eq!(global(&s, "1.2.3.4", Tcp, 23), 1);
    assert_eq!(global(&s, "2001:db8::1", Tcp, 23), 2);
    assert_eq!(global(&s, "2001:db8::1", Udp, 22), 3);
}

#[test]
fn reflect_is_udp_only() {
    let s = set("\
        0.0.0.0/0 saref 9
        any udp 1701 reflect
        10.0.0.0/8 reflect
    ");
    assert_eq!(global(&s, "1.2.3.4", Udp, 1701), 2);
    assert_eq!(global(&s, "1.2.3.4", Tcp, 1701), 1);
    assert_eq!(global(&s, "10.1.2.3", Udp, 53), 3);
    // No protocol written, but TCP falls back to the shorter prefix.
    assert_eq!(global(&s, "10.1.2.3", Tcp, 53), 1);
    assert_eq!(global(&s, "2001:db8::1", Tcp, 1701), 0);
    let rule = s.rules().nth(2).unwrap();
    assert_eq!(rule.proto, ProtoMatch::Any);
    assert_eq!(rule.effective_proto(), ProtoMatch::Udp);
    // `reflect` with no protocol and a udp rule at the same prefix do not
    // tie: the udp one is more specific.
    let s = set("\
        10.0.0.0/8 reflect
        10.0.0.0/8 udp saref 5
    ");
    assert_eq!(global(&s, "10.0.0.1", Udp, 5), 2);
}

#[test]
fn pass_and_deny_are_answers() {
    let s = set("\
        0.0.0.0/0 saref 1
        10.0.0.0/8 pass
        192.168.0.0/16 deny
    ");
    let action = |dest| s.lookup(None, ip(dest), Tcp, 1).map(|r| r.action);
    assert_eq!(action("10.0.0.1"), Some(Action::Pass));
    assert_eq!(action("192.168.3.4"), Some(Action::Deny));
}

#[test]
fn actions_are_parsed() {
    let s = set("\
        10.1.0.0/16 saref 1234
        10.2.0.0/16 mark 512
        10.3.0.0/16 mark 0x200/0xff00
        10.4.0.0/16 mark 0XFF/255
        10.5.0.0/16 dev ipsec1
        10.6.0.0/16 reflect
        10.7.0.0/16 pass
        10.8.0.0/16 deny
        10.9.0.0/16 mark 0
    ");
    let texts: Vec<String> = s.rules().map(|r| r.action.to_string()).collect();
    assert_eq!(
        texts,
        [
            "saref 1234",
            "mark 0x200",
            "mark 0x200/0xff00",
            "mark 0xff/0xff",
            "dev ipsec1",
            "reflect",
            "pass",
            "deny",
            "mark 0x0",
        ]
    );
    assert!(matches!(
        s.rules().nth(2).unwrap().action,
        Action::Mark {
            value: 0x200,
            mask: 0xff00
        }
    ));
    match s.rules().nth(4).unwrap().action {
        Action::Dev(name) => assert_eq!(name.as_bytes(), b"ipsec1"),
        other => panic!("{other:?}"),
    };
}

#[test]
fn layout_comments_tabs_crlf_bom() {
    let text = "\u{feff}# header\r\n\r\n\t10.0.0.0/8\ttcp\t22\tsaref 5 # why\r\n   \t  \r\n[p] # profile\r\n2001:db8::/32 deny#tight\r\n";
    let s = set(text);
    assert_eq!(s.len(), 2);
    let rules: Vec<_> = s.rules().collect();
    assert_eq!(rules[0].origin.line, 3);
    assert_eq!(rules[0].to_string(), "10.0.0.0/8 tcp 22 saref 5");
    assert_eq!(rules[1].origin.line, 6);
    assert_eq!(rules[1].to_string(), "2001:db8::/32 deny");
    assert_eq!(s.profile_name(rules[1].profile.unwrap()), "p");
    assert!(RuleSet::parse("", "empty").unwrap().is_empty());
    assert!(RuleSet::parse("# nothing\n\n", "c").unwrap().is_empty());
}

#[test]
fn display_round_trips() {
    let text = "\
        10.2.0.0/16 tcp 22 saref 2000
        10.1.2.3 any 20-30 mark 0x200/0xff00
        any udp 1701 reflect
        2001:db8::/32 dev ipsec1
        ::1 deny
        0.0.0.0/0 pass
    ";
    let s = set(text);
    let canonical: Vec<String> = s.rules().map(|r| r.to_string()).collect();
    assert_eq!(
        canonical,
        [
            "10.2.0.0/16 tcp 22 saref 2000",
            "10.1.2.3 20-30 mark 0x200/0xff00",
            "any udp 1701 reflect",
            "2001:db8::/32 dev ipsec1",
            "::1 deny",
            "0.0.0.0/0 pass",
        ]
    );
    let again = set(&canonical.join("\n"));
    let fields = |set: &RuleSet| -> Vec<_> {
        set.rules()
            .map(|r| (r.dest, r.proto, r.ports, r.action))
            .collect()
    };
    assert_eq!(fields(&s), fields(&again));
    assert_eq!(s.rules().nth(3).unwrap().dest.prefix_len(), 32);
    assert!(matches!(s.rules().nth(2).unwrap().dest, Dest::Any));
}

#[test]
fn several_sources_form_one_set() {
    let mut builder = RuleSet::builder();
    builder
        .add_source("10.0.0.0/8 saref 1\n[a]\n10.1.0.0/16 saref 3\n", "00-base")
        .unwrap();
    // Each source starts global; [a] merges with the first file's.
    builder
        .add_source("11.0.0.0/8 saref 1\n[a]\n11.1.0.0/16 saref 3\n", "10-more")
        .unwrap();
    let s = builder.build().unwrap();
    assert_eq!(s.len(), 4);
    assert_eq!(s.file_names().collect::<Vec<_>>(), ["00-base", "10-more"]);
    let files: Vec<(&str, u32)> = s
        .rules()
        .map(|r| (s.file_name(r.origin), r.origin.line))
        .collect();
    assert_eq!(
        files,
        [
            ("00-base", 1),
            ("00-base", 3),
            ("10-more", 1),
            ("10-more", 3)
        ]
    );
    assert!(s.rules().nth(2).unwrap().profile.is_none());
    assert_eq!(line(&s, Some("a"), "11.1.0.1", Tcp, 1), 3);
    assert_eq!(line(&s, None, "11.1.0.1", Tcp, 1), 1);
    assert_eq!(s.profile_names().count(), 1);
}

#[test]
fn failed_source_leaves_builder_unchanged() {
    let mut builder = RuleSet::builder();
    builder.add_source("10.0.0.0/8 saref 1", "a").unwrap();
    let err = builder
        .add_source("[new]\n12.0.0.0/8 saref 1\n12.0.0.0/8 sarf 1", "b")
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "b:3:12: unknown action \"sarf\" (expected saref, mark, dev, reflect, pass or deny)"
    );
    let err = builder
        .add_bytes(b"13.0.0.0/8 saref 1\n\xff", "c")
        .unwrap_err();
    assert_eq!((err.line, err.col), (2, 1));
    builder.add_source("11.0.0.0/8 saref 1", "d").unwrap();
    let s = builder.build().unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s.profile("new"), None);
    assert_eq!(s.file_names().collect::<Vec<_>>(), ["a", "d"]);
    assert_eq!(s.file_name(s.rules().nth(1).unwrap().origin), "d");
}

#[test]
fn lookup_never_panics_on_foreign_ids() {
    let mut many = String::new();
    for i in 0..10 {
        many.push_str(&format!("[p{i}]\n10.{i}.0.0/16 deny\n"));
    }
    let big = set(&many);
    let small = set("10.0.0.0/8 pass");
    let foreign = big.profile("p9").unwrap();
    assert_eq!(small.profile_name(foreign), "");
    let rule = small.lookup(Some(foreign), ip("10.9.0.1"), Tcp, 1).unwrap();
    assert_eq!(rule.action, Action::Pass);
    let origin = big.rules().last().unwrap().origin;
    assert_eq!(big.file_name(origin), "rules");
}

#[test]
fn rule_set_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<RuleSet>();
    check::<ldsaref_rules::Policy>();
}
