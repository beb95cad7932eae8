//! Properties of the rules crate beyond `lookup` (which `lookup_vs_naive`
//! covers): the whole [`Policy`] decision (profile, then global rules, then
//! the catch-all SAref) against a reference written from the README; the
//! canonical text of rules parsing back to the same rules; and the tie
//! check agreeing with a pairwise reading of its definition, including
//! which pair the error names.
//!
//! Unlike `lookup_vs_naive`, the generated rule sets here keep their ties
//! (the tie property wants them) and use every action, marks with masks and
//! interface names included.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use ldsaref_rules::{
    Action, DecisionSource, Dest, IfName, Policy, PolicyError, PortRange, Proto, ProtoMatch,
    RuleSet, Saref,
};

/// Few networks, so that generated rules share prefixes and tie.
const V4_POOL: [u32; 4] = [0xc000_0200, 0xc633_6400, 0xc612_0000, 0];
const V6_POOL: [u128; 2] = [0x2001_0db8_0000_0000_0000_0000_0000_0001, 0];
const V4_LENS: [u8; 5] = [0, 8, 15, 24, 32];
const V6_LENS: [u8; 4] = [0, 32, 64, 128];

fn mask4(a: u32, len: u8) -> u32 {
    a & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask6(a: u128, len: u8) -> u128 {
    a & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

fn dest() -> impl Strategy<Value = Dest> {
    prop_oneof![
        1 => Just(Dest::Any),
        4 => (0..V4_POOL.len(), 0..V4_LENS.len()).prop_map(|(a, l)| Dest::Net {
            addr: IpAddr::V4(mask4(V4_POOL[a], V4_LENS[l]).into()),
            len: V4_LENS[l],
        }),
        2 => (0..V6_POOL.len(), 0..V6_LENS.len()).prop_map(|(a, l)| Dest::Net {
            addr: IpAddr::V6(mask6(V6_POOL[a], V6_LENS[l]).into()),
            len: V6_LENS[l],
        }),
    ]
}

/// Any valid destination, for the round trip: random networks of random
/// length, except inside `::ffff:0:0/96`, which the parser refuses on
/// purpose (it is matched as IPv4).
fn any_dest() -> impl Strategy<Value = Dest> {
    prop_oneof![
        Just(Dest::Any),
        (any::<u32>(), 0..=32u8).prop_map(|(a, len)| Dest::Net {
            addr: IpAddr::V4(mask4(a, len).into()),
            len,
        }),
        (any::<u128>(), 0..=128u8)
            .prop_filter("IPv4-mapped", |&(a, len)| {
                len < 96 || Ipv6Addr::from(a).to_ipv4_mapped().is_none()
            })
            .prop_map(|(a, len)| Dest::Net {
                addr: IpAddr::V6(mask6(a, len).into()),
                len,
            }),
    ]
}

fn proto() -> impl Strategy<Value = ProtoMatch> {
    prop_oneof![
        Just(ProtoMatch::Any),
        Just(ProtoMatch::Tcp),
        Just(ProtoMatch::Udp)
    ]
}

fn ports(max: u16) -> impl Strategy<Value = Option<PortRange>> {
    prop::option::of((1..=max, 0..=max).prop_map(move |(lo, w)| PortRange {
        lo,
        hi: lo.saturating_add(w).min(max),
    }))
}

fn ifname() -> impl Strategy<Value = IfName> {
    "[a-zA-Z0-9_.:-]{1,15}"
        .prop_filter("reserved", |s| s != "." && s != "..")
        .prop_map(|s| IfName::new(&s).unwrap())
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (1..=u32::from(Saref::MAX)).prop_map(|n| Action::Saref(Saref::new(n).unwrap())),
        (any::<u32>(), 1..=u32::MAX).prop_map(|(v, mask)| Action::Mark {
            value: v & mask,
            mask
        }),
        any::<u32>().prop_map(|value| Action::Mark {
            value,
            mask: Action::FULL_MASK
        }),
        ifname().prop_map(Action::Dev),
        Just(Action::Reflect),
        Just(Action::Pass),
        Just(Action::Deny),
    ]
}

/// One generated rule; `profile` indexes [`PROFILES`], `None` is global.
#[derive(Clone, Debug)]
struct Spec {
    dest: Dest,
    proto: ProtoMatch,
    ports: Option<PortRange>,
    action: Action,
    profile: Option<usize>,
}

const PROFILES: [&str; 2] = ["client1", "client2"];

fn fix_reflect(proto: ProtoMatch, action: Action) -> Action {
    // `tcp ... reflect` is a syntax error, tested elsewhere.
    if proto == ProtoMatch::Tcp && action == Action::Reflect {
        Action::Deny
    } else {
        action
    }
}

fn spec() -> impl Strategy<Value = Spec> {
    let profile = prop_oneof![2 => Just(None), 1 => Just(Some(0)), 1 => Just(Some(1))];
    (dest(), proto(), ports(30), action(), profile).prop_map(
        |(dest, proto, ports, action, profile)| Spec {
            dest,
            proto,
            ports,
            action: fix_reflect(proto, action),
            profile,
        },
    )
}

impl Spec {
    /// The rule's line as a person would write it, `any` proto spelt out
    /// half of the time (not the canonical text: that is `Display`'s job).
    fn text(&self, spell_any: bool) -> String {
        let mut s = self.dest.to_string();
        match self.proto {
            ProtoMatch::Any if spell_any => s.push_str("\tany"),
            ProtoMatch::Any => {}
            p => s.push_str(&format!(" {p}")),
        }
        if let Some(p) = self.ports {
            s.push_str(&format!(" {}-{}", p.lo, p.hi));
        }
        s.push_str(&format!("  {}", self.action));
        s
    }

    /// (IPv4?, network, length) of each family the destination covers.
    fn nets(&self) -> Vec<(bool, u128, u8)> {
        match self.dest {
            Dest::Any => vec![(true, 0, 0), (false, 0, 0)],
            Dest::Net {
                addr: IpAddr::V4(a),
                len,
            } => vec![(true, u128::from(u32::from(a)), len)],
            Dest::Net {
                addr: IpAddr::V6(a),
                len,
            } => vec![(false, u128::from(a), len)],
        }
    }

    /// The README: "inside one set the longest prefix wins, then a rule
    /// with a port beats one without, then one with a proto. Two rules
    /// that tie are a load error" - read pairwise.
    fn ties(&self, other: &Spec) -> bool {
        let overlap = match (self.ports, other.ports) {
            (None, None) => true,
            (Some(a), Some(b)) => a.lo <= b.hi && b.lo <= a.hi,
            _ => false,
        };
        self.profile == other.profile
            && self.nets().iter().any(|n| other.nets().contains(n))
            && self.proto == other.proto
            && self.ports.is_some() == other.ports.is_some()
            && overlap
    }

    fn contains(&self, addr: IpAddr) -> bool {
        match (self.dest, addr) {
            (Dest::Any, _) => true,
            (
                Dest::Net {
                    addr: IpAddr::V4(n),
                    len,
                },
                IpAddr::V4(a),
            ) => mask4(u32::from(a), len) == u32::from(n),
            (
                Dest::Net {
                    addr: IpAddr::V6(n),
                    len,
                },
                IpAddr::V6(a),
            ) => mask6(u128::from(a), len) == u128::from(n),
            _ => false,
        }
    }

    fn applies(&self, addr: IpAddr, proto: Proto, port: u16) -> bool {
        let proto_ok = match (self.proto, self.action) {
            (ProtoMatch::Any, Action::Reflect) => proto == Proto::Udp,
            (ProtoMatch::Any, _) => true,
            (ProtoMatch::Tcp, _) => proto == Proto::Tcp,
            (ProtoMatch::Udp, _) => proto == Proto::Udp,
        };
        self.contains(addr) && proto_ok && self.ports.map_or(true, |p| p.contains(port))
    }
}

/// The text of `specs` (global rules first: a header cannot go back) and
/// the line of each spec.
fn render(specs: &[Spec], spell_any: bool) -> (String, Vec<u32>) {
    let mut order: Vec<usize> = (0..specs.len())
        .filter(|&i| specs[i].profile.is_none())
        .collect();
    order.extend((0..specs.len()).filter(|&i| specs[i].profile.is_some()));
    let mut text = String::new();
    let mut lines = vec![0; specs.len()];
    let mut line = 0;
    let mut section = None;
    for i in order {
        if specs[i].profile != section {
            section = specs[i].profile;
            text.push_str(&format!("[{}]   # section\n", PROFILES[section.unwrap()]));
            line += 1;
        }
        text.push_str(&specs[i].text(spell_any));
        text.push('\n');
        line += 1;
        lines[i] = line;
    }
    (text, lines)
}

/// The first tie a reader going down the file meets: the earliest line
/// that ties with a line above it, and the first such line above.
fn first_tie(specs: &[Spec], lines: &[u32]) -> Option<(u32, u32)> {
    let mut by_line: Vec<usize> = (0..specs.len()).collect();
    by_line.sort_by_key(|&i| lines[i]);
    for (k, &later) in by_line.iter().enumerate() {
        if let Some(&earlier) = by_line[..k].iter().find(|&&e| specs[e].ties(&specs[later])) {
            return Some((lines[later], lines[earlier]));
        }
    }
    None
}

/// The README's decision, with the catch-all: the profile's rules, then
/// the global rules, then `IPSEC_SAREF` for IPv4 (mapped included).
fn reference(
    specs: &[Spec],
    lines: &[u32],
    profile: Option<usize>,
    catch_all: Option<Saref>,
    addr: IpAddr,
    proto: Proto,
    port: u16,
) -> Option<(Action, Option<u32>)> {
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    let best = |set: Option<usize>| {
        (0..specs.len())
            .filter(|&i| specs[i].profile == set && specs[i].applies(addr, proto, port))
            .max_by_key(|&i| {
                let s = &specs[i];
                (
                    s.dest.prefix_len(),
                    s.ports.is_some(),
                    s.proto != ProtoMatch::Any,
                )
            })
    };
    let rule = profile.and_then(|p| best(Some(p))).or_else(|| best(None));
    match (rule, catch_all, addr) {
        (Some(i), _, _) => Some((specs[i].action, Some(lines[i]))),
        (None, Some(s), IpAddr::V4(_)) => Some((Action::Saref(s), None)),
        _ => None,
    }
}

fn query_addr() -> impl Strategy<Value = IpAddr> {
    let v4 = (0..V4_POOL.len(), any::<u32>(), 0..33u32)
        .prop_map(|(i, noise, keep)| V4_POOL[i] ^ noise.checked_shr(keep).unwrap_or(0));
    let v6 = (0..V6_POOL.len(), any::<u128>(), 0..129u32)
        .prop_map(|(i, noise, keep)| V6_POOL[i] ^ noise.checked_shr(keep).unwrap_or(0));
    prop_oneof![
        3 => v4.clone().prop_map(|a| IpAddr::V4(a.into())),
        1 => v4.prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
        2 => v6.prop_map(|a| IpAddr::V6(a.into())),
    ]
}

fn no_persistence(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(no_persistence(300))]

    /// `Policy::decide` against the README's words, for every profile
    /// (and none), with and without a catch-all.
    #[test]
    fn policy_agrees_with_reference(
        candidates in prop::collection::vec(spec(), 0..25),
        catch_all in prop::option::of((1..=u32::from(Saref::MAX)).prop_map(|n| Saref::new(n).unwrap())),
        queries in prop::collection::vec(
            (prop::option::of(0..PROFILES.len()), query_addr(),
             prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)], 0..35u16),
            1..40),
    ) {
        let mut specs: Vec<Spec> = Vec::new();
        for c in candidates {
            if !specs.iter().any(|s| s.ties(&c)) {
                specs.push(c);
            }
        }
        let (text, lines) = render(&specs, true);
        let set = RuleSet::parse(&text, "rules").unwrap_or_else(|e| panic!("{e}\n{text}"));
        for (profile, addr, proto, port) in queries {
            let name = profile.map(|p| PROFILES[p]);
            let present = profile.map_or(true, |p| specs.iter().any(|s| s.profile == Some(p)));
            let policy = match Policy::new(Some(set.clone()), name, catch_all) {
                Ok(p) => p,
                Err(PolicyError::UnknownProfile { name: n, known }) => {
                    // A section that has no rule was never written.
                    prop_assert!(!present, "{n} is in {text}");
                    prop_assert!(!known.iter().any(|k| k == &n));
                    continue;
                }
                Err(e) => panic!("{e}"),
            };
            prop_assert!(present);
            let got = policy.decide(addr, proto, port);
            let want = reference(&specs, &lines, profile, catch_all, addr, proto, port);
            let got_view = got.map(|d| match d.source {
                DecisionSource::Rule(r) => {
                    assert_eq!(r.file(), "rules");
                    assert_eq!(r.profile(), r.rule().profile.map(|id| set.profile_name(id)));
                    assert_eq!(d.action, r.rule().action);
                    (d.action, Some(r.rule().origin.line))
                }
                DecisionSource::CatchAll => (d.action, None),
            });
            prop_assert_eq!(got_view, want, "{:?} {} {} {}\n{}", name, addr, proto, port, text);
        }
    }

    /// A compiled index, read back (as the library maps it), decides
    /// exactly as the parsed set: same action, same rule (file, line,
    /// profile, the rule itself), for every profile and none.
    #[test]
    fn compiled_index_agrees_with_parsed(
        candidates in prop::collection::vec(spec(), 0..40),
        catch_all in prop::option::of((1..=u32::from(Saref::MAX)).prop_map(|n| Saref::new(n).unwrap())),
        queries in prop::collection::vec(
            (prop::option::of(0..PROFILES.len()), query_addr(),
             prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)], 0..35u16),
            1..60),
    ) {
        let mut specs: Vec<Spec> = Vec::new();
        for c in candidates {
            if !specs.iter().any(|s| s.ties(&c)) {
                specs.push(c);
            }
        }
        let (text, _) = render(&specs, true);
        let parsed = RuleSet::parse(&text, "rules").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let bytes = parsed.compile(&[]).expect("a parsed set compiles");
        let owner: ldsaref_rules::compiled::Bytes =
            std::sync::Arc::new(ldsaref_rules::compiled::AlignedBytes::new(&bytes));
        let compiled = RuleSet::from_index(owner, &[]).expect("its own index opens");
        prop_assert!(compiled.is_compiled());
        prop_assert_eq!(compiled.len(), parsed.len());
        prop_assert_eq!(compiled.has_reflect(), parsed.has_reflect());
        prop_assert_eq!(compiled.rules().collect::<Vec<_>>(), parsed.rules().collect::<Vec<_>>());
        prop_assert_eq!(
            compiled.profile_names().collect::<Vec<_>>(),
            parsed.profile_names().collect::<Vec<_>>()
        );
        for (profile, addr, proto, port) in queries {
            let name = profile.map(|p| PROFILES[p]);
            let (Ok(a), Ok(b)) = (
                Policy::new(Some(parsed.clone()), name, catch_all),
                Policy::new(Some(compiled.clone()), name, catch_all),
            ) else {
                prop_assert_eq!(parsed.profile(name.unwrap_or("")), compiled.profile(name.unwrap_or("")));
                continue;
            };
            let view = |d: Option<ldsaref_rules::Decision<'_>>| d.map(|d| (d.to_string(), match d.source {
                DecisionSource::Rule(r) => Some((r.rule(), r.file().to_owned(), r.profile().map(str::to_owned))),
                DecisionSource::CatchAll => None,
            }));
            prop_assert_eq!(view(a.decide(addr, proto, port)), view(b.decide(addr, proto, port)),
                "{:?} {} {} {}\n{}", name, addr, proto, port, text);
        }
    }

    /// Ties: the file loads exactly when no two rules tie pairwise, and
    /// the error is at the first tying line and names the line it ties with.
    #[test]
    fn ties_agree_with_pairwise_check(specs in prop::collection::vec(spec(), 0..14)) {
        let (text, lines) = render(&specs, false);
        let result = RuleSet::parse(&text, "rules");
        match (first_tie(&specs, &lines), result) {
            (None, Ok(set)) => prop_assert_eq!(set.len(), specs.len()),
            (Some((later, earlier)), Err(e)) => {
                prop_assert_eq!(e.line, later, "{}\n{}", e, text);
                prop_assert_eq!(e.col, 1);
                let names = format!("rule ties with rules:{earlier} ");
                prop_assert!(e.message.contains(&names), "{} should name line {}\n{}", e, earlier, text);
            }
            (None, Err(e)) => panic!("no pair ties, yet: {e}\n{text}"),
            (Some(pair), Ok(_)) => panic!("lines {pair:?} tie, yet the file loaded:\n{text}"),
        }
    }

    /// The canonical text of any rule parses back to the same rule, and is
    /// a fixed point.
    #[test]
    fn display_parses_back(
        dest in any_dest(),
        proto in proto(),
        ports in ports(u16::MAX),
        action in action(),
    ) {
        let action = fix_reflect(proto, action);
        let spec = Spec { dest, proto, ports, action, profile: None };
        let set = RuleSet::parse(&spec.text(true), "a").unwrap();
        let rule = set.rules().next().unwrap();
        let canonical = rule.to_string();
        let again = RuleSet::parse(&canonical, "b").unwrap();
        let back = again.rules().next().unwrap();
        prop_assert_eq!(
            (back.dest, back.proto, back.ports, back.action),
            (dest, proto, ports, action)
        );
        prop_assert_eq!(back.to_string(), canonical);
    }

    /// A whole file written back from its rules (canonical lines under
    /// their section headers) loads to the same rules in the same order.
    #[test]
    fn files_round_trip(candidates in prop::collection::vec(spec(), 0..20)) {
        let mut specs: Vec<Spec> = Vec::new();
        for c in candidates {
            if !specs.iter().any(|s| s.ties(&c)) {
                specs.push(c);
            }
        }
        let (text, _) = render(&specs, true);
        let set = RuleSet::parse(&text, "rules").unwrap();
        let mut out = String::new();
        let mut section = None;
        for r in set.rules() {
            if r.profile != section {
                section = r.profile;
                out.push_str(&format!("[{}]\n", set.profile_name(r.profile.unwrap())));
            }
            out.push_str(&format!("{r}\n"));
        }
        let again = RuleSet::parse(&out, "rules").unwrap_or_else(|e| panic!("{e}\n{out}"));
        let view = |s: &RuleSet| -> Vec<String> {
            s.rules()
                .map(|r| format!("{:?} {r}", r.profile.map(|p| s.profile_name(p).to_owned())))
                .collect()
        };
        prop_assert_eq!(view(&again), view(&set));
    }
}
