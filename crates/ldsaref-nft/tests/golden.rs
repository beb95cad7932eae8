//! Small rule sets and the exact table text they give.

use ldsaref_nft::{compile, CatchAll, Verdict};
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
	comment "ldsaref rules 0123456789abcdef"
	chain rules_0123456789abcdef {
	}

	# The global rules, after a profile's own.
	map global_v4 {
		type ipv4_addr . inet_proto . inet_service : verdict
		flags interval
		elements = {
			198.18.0.0/15 . tcp . 0-65535 : goto deny,
			198.18.0.0/15 . udp . 0-65535 : goto deny,
		}
	}
	map global_v6 {
		type ipv6_addr . inet_proto . inet_service : verdict
		flags interval
	}
	chain global {
		ip daddr . meta l4proto . th dport vmap @global_v4
		ip6 daddr . meta l4proto . th dport vmap @global_v6
		meta nfproto ipv4 meta mark set socket cgroupv2 level 3 map @catchall
	}
	# The catch-all SArefs of run --cgroup --saref, IPv4 only.
	map catchall {
		type cgroupsv2 : mark
	}

	# [client1]: cgroup ldsaref.slice/ldsaref-client1.slice
	map p0_v4 {
		type ipv4_addr . inet_proto . inet_service : verdict
		flags interval
		elements = {
			198.18.0.0-198.18.0.4 . tcp . 0-65535 : goto saref_101,
			198.18.0.0-198.18.0.4 . udp . 0-65535 : goto saref_101,
			198.18.0.5/32 . tcp . 0-65535 : goto saref_101,
			198.18.0.5/32 . udp . 0-52 : goto saref_101,
			198.18.0.5/32 . udp . 53 : accept,
			198.18.0.5/32 . udp . 54-65535 : goto saref_101,
			198.18.0.6-198.18.0.255 . tcp . 0-65535 : goto saref_101,
			198.18.0.6-198.18.0.255 . udp . 0-65535 : goto saref_101,
		}
	}
	map p0_v6 {
		type ipv6_addr . inet_proto . inet_service : verdict
		flags interval
	}
	chain p0 {
		ip daddr . meta l4proto . th dport vmap @p0_v4
		ip6 daddr . meta l4proto . th dport vmap @p0_v6
		goto global
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
	comment "ldsaref rules 0123456789abcdef"
	chain rules_0123456789abcdef {
	}

	# The global rules, after a profile's own.
	map global_v4 {
		type ipv4_addr . inet_proto . inet_service : verdict
		flags interval
	}
	map global_v6 {
		type ipv6_addr . inet_proto . inet_service : verdict
		flags interval
	}
	chain global {
		ip daddr . meta l4proto . th dport vmap @global_v4
		ip6 daddr . meta l4proto . th dport vmap @global_v6
		meta nfproto ipv4 meta mark set socket cgroupv2 level 3 map @catchall
	}
	# The catch-all SArefs of run --cgroup --saref, IPv4 only.
	map catchall {
		type cgroupsv2 : mark
	}

	# [c1]: cgroup ldsaref.slice/ldsaref-c1.slice
	map p0_v4 {
		type ipv4_addr . inet_proto . inet_service : verdict
		flags interval
		elements = {
			0.0.0.0-198.17.255.255 . udp . 1701 : goto reflect,
			198.18.0.0/24 . tcp . 0-65535 : goto saref_101,
			198.18.0.0/24 . udp . 0-65535 : goto saref_101,
			198.18.1.0-255.255.255.255 . udp . 1701 : goto reflect,
		}
	}
	map p0_v6 {
		type ipv6_addr . inet_proto . inet_service : verdict
		flags interval
		elements = {
			::-::fffe:ffff:ffff . udp . 1701 : goto reflect,
			::1:0:0:0-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff . udp . 1701 : goto reflect,
		}
	}
	chain p0 {
		ip daddr . meta l4proto . th dport vmap @p0_v4
		ip6 daddr . meta l4proto . th dport vmap @p0_v6
		goto global
	}

	chain reflect {
		ct direction reply ct mark != 0 meta mark set ct mark
	}

	chain saref_101 {
		meta mark set 0x80650000
	}

	# A mark set by the program itself is left alone.
	chain steer {
		meta mark != 0 return
		socket cgroupv2 level 2 "ldsaref.slice/ldsaref-c1.slice" goto p0
		# Fail closed: a cgroup whose profile has no rules here.
		oifname "lo" return
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
        got.contains("\tchain steer {\n\t\tmeta mark != 0 return\n\t\t# Fail closed"),
        "{got}"
    );
    assert!(got.contains("socket cgroupv2 level 1 \"unified/ldsaref.slice\" jump steer"));
    assert!(
        got.contains("\t\t\t198.18.0.0/24 . udp . 0-65535 : goto saref_101,\n"),
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
        &[CatchAll {
            profile: "c1".to_owned(),
            saref: 202,
        }],
    );
    let want = "\tmap catchall {\n\t\ttype cgroupsv2 : mark\n\t\telements = {\n\t\t\t\
                \"unified/ldsaref.slice/ldsaref-c1.slice/ldsaref-c1-saref202.slice\" : 0x80ca0000,\n\
                \t\t}\n\t}\n";
    assert!(got.contains(want), "{got}");
    let a = |s: &str| s.parse().unwrap();
    assert_eq!(
        c.decide_with("c1", Some(202), a("198.18.0.5"), Proto::Udp, 7),
        Some(Verdict::Saref(101))
    );
    assert_eq!(
        c.decide_with("c1", Some(202), a("192.0.2.1"), Proto::Udp, 7),
        Some(Verdict::Saref(202))
    );
    assert_eq!(
        c.decide_with("c1", Some(202), a("::ffff:192.0.2.1"), Proto::Tcp, 7),
        Some(Verdict::Saref(202))
    );
    assert_eq!(
        c.decide_with("c1", Some(202), a("2001:db8::1"), Proto::Tcp, 7),
        None
    );
}
