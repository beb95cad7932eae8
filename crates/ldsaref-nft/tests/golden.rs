//! Small rule sets and the exact table text they give.

use ldsaref_nft::{
    compile, profile_chain, profile_of_chain, CatchAll, CatchKind, Change, MapElements, Verdict,
    CODE_BASE,
};
use ldsaref_rules::{Proto, RuleSet};

fn table(text: &str, prefix: &str) -> String {
    let set = RuleSet::parse(text, "rules").unwrap();
    compile(&set)
        .unwrap()
        .render(prefix, "0123456789abcdef", &[])
}

#[test]
fn two_profiles_over_a_global_deny() {
    let got = table(
        "198.18.0.0/15 deny\n\
         [client1]\n198.18.0.0/24 saref 101\n198.18.0.5 udp 53 pass\n\
         [client-2]\n198.18.0.0/24 mark 2\n2001:db8:18::/64 tcp 80 mark 0x20/0xf0\n",
        "unified/",
    );
    let want = r#"# ldsaref: the cgroup backend's table (ldsaref apply)
table inet ldsaref
delete table inet ldsaref
table inet ldsaref {
	comment "ldsaref rules (ldsaref apply)"
	chain rules_0123456789abcdef {
	}
	chain sum_global_cdd9219e87c6c4f4 {
	}
	chain sum_p0_9fa7b7237c666466 {
	}
	chain profile_636c69656e742d32 {
	}
	chain sum_p1_b6154769555d3ed4 {
	}
	chain profile_636c69656e7431 {
	}

	# The global rules, after a profile's own.
	map global_4 {
		type ipv4_addr : mark
		flags interval
		elements = {
			198.18.0.0/15 : 0x7ffe0000,
		}
	}
	map global_m4 {
		type ipv4_addr : mark
		flags interval
	}
	map global_m4s1 {
		type ipv4_addr : mark
		flags interval
	}
	map global_6 {
		type ipv6_addr : mark
		flags interval
	}
	map global_m6 {
		type ipv6_addr : mark
		flags interval
	}
	map global_m6s1 {
		type ipv6_addr : mark
		flags interval
	}
	map global_d {
		type mark : verdict
		elements = {
			0x7ffe0000 : goto deny,
		}
	}
	chain global_mark4 {
		meta mark set ip daddr map @global_m4 accept
	}
	chain global_mark4s1 {
		meta mark set ip daddr map @global_m4s1 accept
	}
	chain global_mark6 {
		meta mark set ip6 daddr map @global_m6 accept
	}
	chain global_mark6s1 {
		meta mark set ip6 daddr map @global_m6s1 accept
	}
	chain global {
		meta l4proto != { tcp, udp } goto tail
		meta mark set ip daddr map @global_4
		meta mark set ip6 daddr map @global_6
		meta mark 0x00000000 goto tail
		meta mark vmap @global_d
		accept
	}
	chain tail {
		meta nfproto ipv4 meta mark set socket cgroupv2 level 3 map @catchall
		meta nfproto ipv6 meta mark set socket cgroupv2 level 3 map @catchall6
	}
	# The catch-alls of run --cgroup: --saref (IPv4 only) and --mark.
	map catchall {
		type cgroupsv2 : mark
	}
	map catchall6 {
		type cgroupsv2 : mark
	}

	# [client-2]: cgroup ldsaref.slice/ldsaref-client\x2d2.slice
	map p0_4 {
		type ipv4_addr : mark
		flags interval
		elements = {
			198.18.0.0/24 : 0x00000002,
		}
	}
	map p0_m4 {
		type ipv4_addr : mark
		flags interval
	}
	map p0_m4s1 {
		type ipv4_addr : mark
		flags interval
	}
	map p0_6 {
		type ipv6_addr : mark
		flags interval
		elements = {
			2001:db8:18::/64 : 0x7ffe0000,
		}
	}
	map p0_m6 {
		type ipv6_addr : mark
		flags interval
	}
	map p0_m6s1 {
		type ipv6_addr : mark
		flags interval
	}
	map p0_d {
		type mark : verdict
		elements = {
			0x7ffe0000 : goto p0_x0,
		}
	}
	chain p0_mark4 {
		meta mark set ip daddr map @p0_m4 accept
	}
	chain p0_mark4s1 {
		meta mark set ip daddr map @p0_m4s1 accept
	}
	chain p0_mark6 {
		meta mark set ip6 daddr map @p0_m6 accept
	}
	chain p0_mark6s1 {
		meta mark set ip6 daddr map @p0_m6s1 accept
	}
	chain p0_x0 {
		meta mark set 0x00000000
		meta l4proto tcp th dport 80 goto mark_20_f0
		goto global
	}
	chain p0 {
		meta l4proto != { tcp, udp } goto global
		meta mark set ip daddr map @p0_4
		meta mark set ip6 daddr map @p0_6
		meta mark 0x00000000 goto global
		meta mark vmap @p0_d
		accept
	}

"#;
    assert!(got.starts_with(want), "{got}");
}

#[test]
fn a_small_table_in_full() {
    let got = table("[c1]\n198.18.0.0/24 saref 101\nany udp 1701 reflect\n", "");
    let want = r#"# ldsaref: the cgroup backend's table (ldsaref apply)
table inet ldsaref
delete table inet ldsaref
table inet ldsaref {
	comment "ldsaref rules (ldsaref apply)"
	chain rules_0123456789abcdef {
	}
	chain sum_global_1fbbd112cf37624e {
	}
	chain sum_p0_e8d37110ce485d50 {
	}
	chain profile_6331 {
	}

	# The global rules, after a profile's own.
	map global_4 {
		type ipv4_addr : mark
		flags interval
	}
	map global_m4 {
		type ipv4_addr : mark
		flags interval
	}
	map global_m4s1 {
		type ipv4_addr : mark
		flags interval
	}
	map global_6 {
		type ipv6_addr : mark
		flags interval
	}
	map global_m6 {
		type ipv6_addr : mark
		flags interval
	}
	map global_m6s1 {
		type ipv6_addr : mark
		flags interval
	}
	map global_d {
		type mark : verdict
	}
	chain global_mark4 {
		meta mark set ip daddr map @global_m4 accept
	}
	chain global_mark4s1 {
		meta mark set ip daddr map @global_m4s1 accept
	}
	chain global_mark6 {
		meta mark set ip6 daddr map @global_m6 accept
	}
	chain global_mark6s1 {
		meta mark set ip6 daddr map @global_m6s1 accept
	}
	chain global {
		meta l4proto != { tcp, udp } goto tail
		meta mark set ip daddr map @global_4
		meta mark set ip6 daddr map @global_6
		meta mark 0x00000000 goto tail
		meta mark vmap @global_d
		accept
	}
	chain tail {
		meta nfproto ipv4 meta mark set socket cgroupv2 level 3 map @catchall
		meta nfproto ipv6 meta mark set socket cgroupv2 level 3 map @catchall6
	}
	# The catch-alls of run --cgroup: --saref (IPv4 only) and --mark.
	map catchall {
		type cgroupsv2 : mark
	}
	map catchall6 {
		type cgroupsv2 : mark
	}

	# [c1]: cgroup ldsaref.slice/ldsaref-c1.slice
	map p0_4 {
		type ipv4_addr : mark
		flags interval
		elements = {
			0.0.0.0-198.17.255.255 : 0x7ffe0000,
			198.18.0.0/24 : 0x80650000,
			198.18.1.0-255.255.255.255 : 0x7ffe0000,
		}
	}
	map p0_m4 {
		type ipv4_addr : mark
		flags interval
	}
	map p0_m4s1 {
		type ipv4_addr : mark
		flags interval
	}
	map p0_6 {
		type ipv6_addr : mark
		flags interval
		elements = {
			::-::fffe:ffff:ffff : 0x7ffe0000,
			::1:0:0:0-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff : 0x7ffe0000,
		}
	}
	map p0_m6 {
		type ipv6_addr : mark
		flags interval
	}
	map p0_m6s1 {
		type ipv6_addr : mark
		flags interval
	}
	map p0_d {
		type mark : verdict
		elements = {
			0x7ffe0000 : goto p0_x0,
		}
	}
	chain p0_mark4 {
		meta mark set ip daddr map @p0_m4 accept
	}
	chain p0_mark4s1 {
		meta mark set ip daddr map @p0_m4s1 accept
	}
	chain p0_mark6 {
		meta mark set ip6 daddr map @p0_m6 accept
	}
	chain p0_mark6s1 {
		meta mark set ip6 daddr map @p0_m6s1 accept
	}
	chain p0_x0 {
		meta mark set 0x00000000
		meta l4proto udp th dport 1701 goto reflect
		goto global
	}
	chain p0 {
		meta l4proto != { tcp, udp } goto global
		meta mark set ip daddr map @p0_4
		meta mark set ip6 daddr map @p0_6
		meta mark 0x00000000 goto global
		meta mark vmap @p0_d
		accept
	}

	# The profiles without rules now (a connection down), by cgroup.
	set absent {
		type cgroupsv2
	}
	chain absent {
		fib daddr type local return
		drop
	}

	# pass, from a dispatch map: the code set back to 0.
	chain pass {
		meta mark set 0x00000000 accept
	}

	chain deny {
		meta mark set 0x00000000
		meta l4proto tcp reject with tcp reset
		drop
	}

	chain reflect {
		meta mark set 0x00000000
		ct direction reply ct mark != 0 meta mark set ct mark
	}

	# A mark set by the program itself is left alone.
	chain steer {
		meta mark != 0 return
		socket cgroupv2 level 2 @absent goto absent
		socket cgroupv2 level 2 "ldsaref.slice/ldsaref-c1.slice" goto p0
		# Fail closed: a cgroup whose profile has no rules here.
		fib daddr type local return
		drop
	}

	chain output {
		type route hook output priority mangle; policy accept;
		socket cgroupv2 level 1 "ldsaref.slice" jump steer
	}

	# reflect: the mark a flow came in with, for its replies.
	chain input {
		type filter hook input priority mangle + 10; policy accept;
		ct direction original ct mark 0 meta mark != 0 ct mark set meta mark
	}
}
"#;
    assert_eq!(got, want);
}

#[test]
fn no_profiles_still_fail_closed() {
    let got = table("198.18.0.0/24 saref 101\n", "unified/");
    assert!(
        got.contains(
            "\tchain steer {\n\t\tmeta mark != 0 return\n\
             \t\tsocket cgroupv2 level 2 @absent goto absent\n\t\t# Fail closed"
        ),
        "{got}"
    );
    assert!(got.contains("socket cgroupv2 level 1 \"unified/ldsaref.slice\" jump steer"));
    assert!(
        !got.contains("goto global_mark4") && got.contains("\t\t\t198.18.0.0/24 : 0x80650000,\n"),
        "{got}"
    );
    assert!(!got.contains("map p0"), "{got}");
}

#[test]
fn dev_is_refused_with_its_line() {
    let set = RuleSet::parse(
        "[c1]\n198.18.0.0/24 saref 101\n10.0.0.0/8 dev ipsec0\n",
        "/etc/r",
    )
    .unwrap();
    let e = compile(&set).unwrap_err();
    assert_eq!(e.line, 3);
    assert!(
        e.to_string()
            .starts_with("/etc/r:3: `dev ipsec0`: the cgroup backend cannot"),
        "{e}"
    );
}

#[test]
fn decide_reads_the_maps() {
    let set = RuleSet::parse(
        "198.18.0.0/15 deny\n[c1]\n198.18.0.0/24 saref 101\n198.18.0.5 udp 53 pass\n",
        "r",
    )
    .unwrap();
    let c = compile(&set).unwrap();
    let a = |s: &str| s.parse().unwrap();
    assert_eq!(
        c.decide("c1", a("198.18.0.5"), Proto::Udp, 53),
        Some(Verdict::Pass)
    );
    assert_eq!(
        c.decide("c1", a("198.18.0.5"), Proto::Udp, 54),
        Some(Verdict::Saref(101))
    );
    assert_eq!(
        c.decide("c1", a("::ffff:198.18.0.5"), Proto::Tcp, 1),
        Some(Verdict::Saref(101))
    );
    assert_eq!(
        c.decide("c1", a("198.19.0.1"), Proto::Tcp, 1),
        Some(Verdict::Deny)
    );
    assert_eq!(c.decide("c1", a("192.0.2.1"), Proto::Tcp, 1), None);
    assert_eq!(c.decide("c2", a("198.18.0.5"), Proto::Tcp, 1), None);
}

#[test]
fn catch_alls_are_map_elements() {
    let set = RuleSet::parse("[c1]\n198.18.0.0/24 saref 101\n", "r").unwrap();
    let c = compile(&set).unwrap();
    let got = c.render(
        "unified/",
        "f",
        &[
            CatchAll {
                profile: "c1".to_owned(),
                kind: CatchKind::Saref(202),
            },
            CatchAll {
                profile: "c1".to_owned(),
                kind: CatchKind::Mark(0x200),
            },
        ],
    );
    let want = "\tmap catchall {\n\t\ttype cgroupsv2 : mark\n\t\telements = {\n\t\t\t\
                \"unified/ldsaref.slice/ldsaref-c1.slice/ldsaref-c1-saref202.slice\" : 0x80ca0000,\n\
                \t\t\t\"unified/ldsaref.slice/ldsaref-c1.slice/ldsaref-c1-mark0x200.slice\" : 0x00000200,\n\
                \t\t}\n\t}\n\
                \tmap catchall6 {\n\t\ttype cgroupsv2 : mark\n\t\telements = {\n\t\t\t\
                \"unified/ldsaref.slice/ldsaref-c1.slice/ldsaref-c1-mark0x200.slice\" : 0x00000200,\n\
                \t\t}\n\t}\n";
    assert!(got.contains(want), "{got}");
    let saref = Some(CatchKind::Saref(202));
    let mark = Some(CatchKind::Mark(0x200));
    let a = |s: &str| s.parse().unwrap();
    assert_eq!(
        c.decide_with("c1", saref, a("198.18.0.5"), Proto::Udp, 7),
        Some(Verdict::Saref(101))
    );
    assert_eq!(
        c.decide_with("c1", saref, a("192.0.2.1"), Proto::Udp, 7),
        Some(Verdict::Saref(202))
    );
    assert_eq!(
        c.decide_with("c1", saref, a("::ffff:192.0.2.1"), Proto::Tcp, 7),
        Some(Verdict::Saref(202))
    );
    assert_eq!(
        c.decide_with("c1", saref, a("2001:db8::1"), Proto::Tcp, 7),
        None
    );
    // A mark: both families, the rules first.
    let m = Some(Verdict::Mark {
        value: 0x200,
        mask: u32::MAX,
    });
    assert_eq!(
        c.decide_with("c1", mark, a("198.18.0.5"), Proto::Udp, 7),
        Some(Verdict::Saref(101))
    );
    for dest in ["192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1"] {
        assert_eq!(
            c.decide_with("c1", mark, a(dest), Proto::Tcp, 7),
            m,
            "{dest}"
        );
        assert_eq!(
            c.rendered().decide_with("c1", mark, a(dest), Proto::Udp, 7),
            m,
            "{dest}"
        );
    }
}

/// The text of chain `name` in a rendered table.
fn chain_text<'a>(table: &'a str, name: &str) -> &'a str {
    let start = table
        .find(&format!("\tchain {name} {{\n"))
        .unwrap_or_else(|| panic!("no chain {name} in {table}"));
    let end = start + table[start..].find("\t}\n").unwrap();
    &table[start..end]
}

#[test]
fn an_absent_profile_keeps_its_place_and_drops() {
    let set = RuleSet::parse(
        "198.18.0.0/15 saref 9\n[a]\n198.18.1.0/24 saref 101\n[c]\n198.18.3.0/24 saref 103\n",
        "rules",
    )
    .unwrap();
    let mut c = compile(&set).unwrap();
    // "a" has rules: kept is ignored for it.
    c.keep(["b".to_owned(), "a".to_owned()]);
    let names: Vec<&str> = c.sections().iter().map(|s| s.name()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    let t = c.render("", "0123456789abcdef", &[]);
    // Its place: p1, between a and c, with its name recorded.
    assert!(t.contains("\tchain sum_p1_absent {\n\t}\n"), "{t}");
    assert!(t.contains("\tchain profile_62 {\n\t}\n"), "{t}");
    assert!(
        t.contains(
            "\t\tsocket cgroupv2 level 2 \"ldsaref.slice/ldsaref-a.slice\" goto p0\n\
             \t\tsocket cgroupv2 level 2 \"ldsaref.slice/ldsaref-b.slice\" goto p1\n\
             \t\tsocket cgroupv2 level 2 \"ldsaref.slice/ldsaref-c.slice\" goto p2\n"
        ),
        "{t}"
    );
    // Dropped, loopback aside (not the global rules' saref 9): its
    // cgroup is in @absent, which steer sends to the drop before any
    // section; its own section is empty.
    assert!(
        t.contains(
            "\tset absent {\n\t\ttype cgroupsv2\n\t\telements = {\n\
             \t\t\t\"ldsaref.slice/ldsaref-b.slice\",\n\t\t}\n\t}\n"
        ),
        "{t}"
    );
    assert_eq!(
        chain_text(&t, "absent"),
        "\tchain absent {\n\t\tfib daddr type local return\n\t\tdrop\n"
    );
    assert!(
        t.contains(
            "\t\tmeta mark != 0 return\n\
             \t\tsocket cgroupv2 level 2 @absent goto absent\n\
             \t\tsocket cgroupv2 level 2 \"ldsaref.slice/ldsaref-a.slice\" goto p0\n"
        ),
        "{t}"
    );
    assert_eq!(
        chain_text(&t, "p1").replace("p1", "p2"),
        chain_text(&t, "p2"),
        "every section's chain has the same rules"
    );
    assert!(t.contains("\tmap p1_4 {\n\t\ttype ipv4_addr : mark\n\t\tflags interval\n\t}\n"));
    assert!(
        chain_text(&t, "p2").contains("meta mark set ip daddr map @p2_4"),
        "{t}"
    );
    // For decisions, an absent profile is unknown (the kernel drops it).
    let a = |s: &str| s.parse().unwrap();
    assert_eq!(c.decide("b", a("198.18.1.1"), Proto::Udp, 7), None);
    assert_eq!(
        c.decide("a", a("198.18.1.1"), Proto::Udp, 7),
        Some(Verdict::Saref(101))
    );
    assert_eq!(c.len(), compile(&set).unwrap().len());
    // Replaced alone: its maps emptied, its port chains gone, its cgroup
    // absent.
    let u = c.render_update(Some(1), 2, "0011223344556677", "aa", "bb");
    assert!(u.contains("add chain inet ldsaref sum_p1_absent\n"), "{u}");
    assert!(u.contains("delete chain inet ldsaref p1_x1\n"), "{u}");
    assert!(u.ends_with("add rule inet ldsaref p1 accept\n"), "{u}");
    // b went: @absent made again with b in it (not `add element`: nft
    // would read every element of the table first), and steer, which
    // names it.
    assert!(c.absence_changed(Some(1), "0011223344556677"));
    assert!(!c.absence_changed(Some(1), "absent"));
    assert!(!c.absence_changed(Some(0), "0011223344556677"));
    assert!(!c.absence_changed(None, "absent"));
    let a = c.render_absent("unified/");
    assert!(
        a.starts_with(
            "flush chain inet ldsaref steer\n\
             delete set inet ldsaref absent\n\
             add set inet ldsaref absent { type cgroupsv2; elements = { \
             \"unified/ldsaref.slice/ldsaref-b.slice\" } }\n\
             add rule inet ldsaref steer meta mark != 0 return\n\
             add rule inet ldsaref steer socket cgroupv2 level 2 @absent goto absent\n\
             add rule inet ldsaref steer socket cgroupv2 level 2 \
             \"unified/ldsaref.slice/ldsaref-a.slice\" goto p0\n"
        ),
        "{a}"
    );
    assert!(
        a.ends_with(
            "add rule inet ldsaref steer fib daddr type local return\n\
             add rule inet ldsaref steer drop\n"
        ),
        "{a}"
    );
    // Installed port chains: only nft deletes them.
    assert_eq!(
        c.element_update(Some(1), 2, "0011223344556677", "aa", "bb"),
        None
    );
    // Without: the same as changes of elements.
    let e = c
        .element_update(Some(1), 0, "0011223344556677", "aa", "bb")
        .unwrap();
    let flushed: Vec<&str> = e
        .iter()
        .filter_map(|c| match c {
            Change::Flush(m) => Some(m.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        flushed,
        ["p1_4", "p1_m4", "p1_m4s1", "p1_6", "p1_m6", "p1_m6s1", "p1_d"]
    );
    assert_eq!(
        e[flushed.len()..],
        [
            Change::Absent {
                cgroup: "ldsaref.slice/ldsaref-b.slice".to_owned(),
                add: true
            },
            Change::DeleteChain("sum_p1_0011223344556677".to_owned()),
            Change::AddChain("sum_p1_absent".to_owned()),
            Change::DeleteChain("rules_aa".to_owned()),
            Change::AddChain("rules_bb".to_owned()),
        ]
    );
    // Coming back: its elements, out of @absent.
    let mut with_b = RuleSet::parse(
        "198.18.0.0/15 saref 9\n[a]\n198.18.1.0/24 saref 101\n[b]\n198.18.2.0/24 saref 102\n\
         198.18.4.0/24 deny\n[c]\n198.18.3.0/24 saref 103\n",
        "rules",
    )
    .map(|set| compile(&set).unwrap())
    .unwrap();
    with_b.keep(["b".to_owned()]);
    let e = with_b
        .element_update(Some(1), 0, "absent", "bb", "cc")
        .unwrap();
    let net = |third: u8| u128::from(u32::from_be_bytes([198, 18, third, 0]));
    assert!(e.contains(&Change::Add(
        "p1_4".to_owned(),
        MapElements::Marks {
            v6: false,
            elements: vec![
                (net(2), net(2) + 255, 0x8066_0000),
                (net(4), net(4) + 255, CODE_BASE)
            ]
        }
    )));
    assert!(e.contains(&Change::Add(
        "p1_d".to_owned(),
        MapElements::Gotos(vec![(CODE_BASE, "deny".to_owned())])
    )));
    assert!(e.contains(&Change::Absent {
        cgroup: "ldsaref.slice/ldsaref-b.slice".to_owned(),
        add: false
    }));
}

#[test]
fn profile_chains_name_profiles() {
    for name in ["c1", "client-1", ".x_Y.9", &"z".repeat(64)] {
        let chain = profile_chain(name);
        assert!(chain.len() <= 136, "{chain}");
        assert_eq!(profile_of_chain(&chain).as_deref(), Some(name), "{chain}");
    }
    assert_eq!(profile_chain("a-1"), "profile_612d31");
    for other in [
        "profile_",
        "profile_6",
        "profile_+f",
        "profile_4A",
        "profile_20",
        "profile_zz",
        "sum_p0_6331",
        "p0",
        "rules_6331",
    ] {
        assert_eq!(profile_of_chain(other), None, "{other}");
    }
}
