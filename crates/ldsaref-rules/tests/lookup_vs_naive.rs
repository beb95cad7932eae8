//! `RuleSet::lookup` against a naive reference: a linear scan with the
//! documented precedence, on random rule sets without ties.
//!
//! The rule sets are built from a few anchor addresses with random bits
//! flipped and random prefix lengths, so that prefixes nest and overlap,
//! and with small port ranges, so that rules at one prefix compete.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use ldsaref_rules::{Proto, RuleSet};

const V4_ANCHORS: [u32; 3] = [0x0a01_0203, 0xc0a8_0001, 0x0000_0000];
const V6_ANCHORS: [u128; 2] = [0x2001_0db8_0001_0002_0000_0000_0000_0042, !0];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dest {
    Any,
    V4(u32, u8),
    V6(u128, u8),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Written {
    None,
    Any,
    Tcp,
    Udp,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Act {
    Saref(u16),
    Pass,
    Deny,
    Reflect,
}

#[derive(Clone, Debug)]
struct Spec {
    dest: Dest,
    proto: Written,
    ports: Option<(u16, u16)>,
    action: Act,
    profile: Option<usize>,
}

fn mask4(a: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - len))
    }
}

fn mask6(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(len)))
    }
}

impl Spec {
    /// (family, network, length) for each family the rule covers.
    fn nets(&self) -> Vec<(u8, u128, u8)> {
        match self.dest {
            Dest::Any => vec![(4, 0, 0), (6, 0, 0)],
            Dest::V4(a, len) => vec![(4, u128::from(a), len)],
            Dest::V6(a, len) => vec![(6, a, len)],
        }
    }

    fn specific(&self) -> bool {
        matches!(self.proto, Written::Tcp | Written::Udp)
    }

    /// The protocols the rule applies to: `reflect` is UDP only.
    fn covers(&self, proto: Proto) -> bool {
        match (self.proto, self.action, proto) {
            (Written::Tcp, _, Proto::Tcp) | (Written::Udp, _, Proto::Udp) => true,
            (Written::Tcp | Written::Udp, _, _) => false,
            (_, Act::Reflect, p) => p == Proto::Udp,
            _ => true,
        }
    }

    fn contains(&self, addr: IpAddr) -> bool {
        match (self.dest, addr) {
            (Dest::Any, _) => true,
            (Dest::V4(net, len), IpAddr::V4(a)) => mask4(u32::from(a), len) == net,
            (Dest::V6(net, len), IpAddr::V6(a)) => mask6(u128::from(a), len) == net,
            _ => false,
        }
    }

    fn prefix_len(&self) -> u8 {
        match self.dest {
            Dest::Any => 0,
            Dest::V4(_, len) | Dest::V6(_, len) => len,
        }
    }

    fn matches(&self, addr: IpAddr, proto: Proto, port: u16) -> bool {
        self.contains(addr)
            && self.covers(proto)
            && self.ports.map_or(true, |(lo, hi)| lo <= port && port <= hi)
    }

    /// The tie of the rules file format, straight from its definition.
    fn ties(&self, other: &Spec) -> bool {
        let same_dest = self.nets().iter().any(|n| other.nets().contains(n));
        let protos_overlap = match (self.proto, other.proto) {
            (Written::None | Written::Any, _) | (_, Written::None | Written::Any) => true,
            (a, b) => a == b,
        };
        let ports_overlap = match (self.ports, other.ports) {
            (None, None) => true,
            (Some((a, b)), Some((c, d))) => a <= d && c <= b,
            _ => false,
        };
        self.profile == other.profile
            && same_dest
            && self.ports.is_some() == other.ports.is_some()
            && self.specific() == other.specific()
            && protos_overlap
            && ports_overlap
    }

    fn text(&self) -> String {
        let mut s = match self.dest {
            Dest::Any => "any".to_owned(),
            Dest::V4(a, len) => format!("{}/{len}", Ipv4Addr::from(a)),
            Dest::V6(a, len) => format!("{}/{len}", Ipv6Addr::from(a)),
        };
        match self.proto {
            Written::None => {}
            Written::Any => s.push_str(" any"),
            Written::Tcp => s.push_str(" tcp"),
            Written::Udp => s.push_str(" udp"),
        }
        match self.ports {
            None => {}
            Some((lo, hi)) if lo == hi => s.push_str(&format!(" {lo}")),
            Some((lo, hi)) => s.push_str(&format!(" {lo}-{hi}")),
        }
        match self.action {
            Act::Saref(n) => s.push_str(&format!(" saref {n}")),
            Act::Pass => s.push_str(" pass"),
            Act::Deny => s.push_str(" deny"),
            Act::Reflect => s.push_str(" reflect"),
        }
        s
    }
}

/// An address near an anchor: a few of its bits flipped.
fn near_v4() -> impl Strategy<Value = u32> {
    (0..V4_ANCHORS.len(), prop::collection::vec(0..32u32, 0..3))
        .prop_map(|(i, flips)| flips.iter().fold(V4_ANCHORS[i], |a, b| a ^ (1 << b)))
}

fn near_v6() -> impl Strategy<Value = u128> {
    (0..V6_ANCHORS.len(), prop::collection::vec(0..128u32, 0..3))
        .prop_map(|(i, flips)| flips.iter().fold(V6_ANCHORS[i], |a, b| a ^ (1 << b)))
}

fn dest() -> impl Strategy<Value = Dest> {
    prop_oneof![
        1 => Just(Dest::Any),
        6 => (near_v4(), 0..=32u8).prop_map(|(a, len)| Dest::V4(mask4(a, len), len)),
        4 => (near_v6(), 0..=128u8).prop_map(|(a, len)| Dest::V6(mask6(a, len), len)),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let proto = prop_oneof![
        Just(Written::None),
        Just(Written::Any),
        Just(Written::Tcp),
        Just(Written::Udp)
    ];
    let ports = prop::option::of((1..40u16, 0..8u16).prop_map(|(lo, w)| (lo, lo + w)));
    let action = prop_oneof![
        (1..=32767u16).prop_map(Act::Saref),
        Just(Act::Pass),
        Just(Act::Deny),
        Just(Act::Reflect)
    ];
    let profile = prop_oneof![2 => Just(None), 1 => Just(Some(0)), 1 => Just(Some(1))];
    (dest(), proto, ports, action, profile).prop_map(|(dest, proto, ports, action, profile)| {
        // reflect with tcp is an error; make it something else.
        let action = if action == Act::Reflect && proto == Written::Tcp {
            Act::Deny
        } else {
            action
        };
        Spec {
            dest,
            proto,
            ports,
            action,
            profile,
        }
    })
}

fn query_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        4 => near_v4().prop_map(|a| IpAddr::V4(a.into())),
        1 => near_v4().prop_map(|a| IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped())),
        3 => near_v6().prop_map(|a| IpAddr::V6(a.into())),
        1 => any::<u128>().prop_map(|a| IpAddr::V6(a.into())),
    ]
}

fn query() -> impl Strategy<Value = (Option<usize>, IpAddr, Proto, u16)> {
    (
        prop_oneof![Just(None), Just(Some(0)), Just(Some(1))],
        query_addr(),
        prop_oneof![Just(Proto::Tcp), Just(Proto::Udp)],
        0..50u16,
    )
}

fn profile_name(p: usize) -> String {
    format!("p{p}")
}

/// Where each kept rule was written: (file, line).
type Origin = (usize, u32);

/// Renders the rules as two sources, split after `split` rules: global
/// rules first (a header cannot go back to global), then profile rules,
/// headers repeated as needed, which also exercises merging.
fn render(specs: &[Spec], split: usize) -> (Vec<String>, Vec<Origin>) {
    let mut order: Vec<usize> = (0..specs.len())
        .filter(|&i| specs[i].profile.is_none())
        .collect();
    order.extend((0..specs.len()).filter(|&i| specs[i].profile.is_some()));
    let mut files = vec![String::new(), String::new()];
    let mut origins = vec![(0, 0); specs.len()];
    let mut section = None;
    let mut lines = [0u32; 2];
    for (k, &i) in order.iter().enumerate() {
        let file = usize::from(k >= split);
        if k == split && split > 0 {
            section = None; // a new source starts global
        }
        if specs[i].profile != section {
            let p = specs[i].profile.expect("global rules come first");
            files[file].push_str(&format!("[{}]\n", profile_name(p)));
            lines[file] += 1;
            section = specs[i].profile;
        }
        files[file].push_str(&specs[i].text());
        files[file].push('\n');
        lines[file] += 1;
        origins[i] = (file, lines[file]);
    }
    (files, origins)
}

fn reference(
    specs: &[Spec],
    origins: &[Origin],
    q: (Option<usize>, IpAddr, Proto, u16),
) -> Option<Origin> {
    let (profile, addr, proto, port) = q;
    let addr = match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    };
    let best = |set: Option<usize>| {
        (0..specs.len())
            .filter(|&i| specs[i].profile == set && specs[i].matches(addr, proto, port))
            .max_by_key(|&i| {
                let s = &specs[i];
                (s.prefix_len(), s.ports.is_some(), s.specific())
            })
            .map(|i| origins[i])
    };
    profile.and_then(|p| best(Some(p))).or_else(|| best(None))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn lookup_agrees_with_linear_scan(
        candidates in prop::collection::vec(spec(), 0..60),
        queries in prop::collection::vec(query(), 1..80),
        split_at in 0.0..1.0f64,
    ) {
        // Drop the rules that tie with one kept before them.
        let mut specs: Vec<Spec> = Vec::new();
        for c in candidates {
            if !specs.iter().any(|s| s.ties(&c)) {
                specs.push(c);
            }
        }
        let split = (specs.len() as f64 * split_at) as usize;
        let (files, origins) = render(&specs, split);
        let mut builder = RuleSet::builder();
        builder.add_source(&files[0], "a").unwrap();
        builder.add_source(&files[1], "b").unwrap();
        let set = builder.build().unwrap_or_else(|e| panic!("{e}\n{}{}", files[0], files[1]));
        prop_assert_eq!(set.len(), specs.len());

        for q in queries {
            let (profile, addr, proto, port) = q;
            let id = profile.and_then(|p| set.profile(&profile_name(p)));
            let got = set
                .lookup(id, addr, proto, port)
                .map(|r| (r.origin.file as usize, r.origin.line));
            let want = reference(&specs, &origins, q);
            prop_assert_eq!(got, want, "query {:?}\n--- a\n{}--- b\n{}", q, files[0], files[1]);
        }
    }

    #[test]
    fn any_text_fails_cleanly_or_loads(text in "[ -~\t\n#\\[\\]é]{0,200}") {
        // Never a panic: either a set or an error at a real position.
        match RuleSet::parse(&text, "fuzz") {
            Ok(set) => prop_assert!(set.len() <= text.lines().count()),
            Err(e) => {
                let lines = text.split('\n').count() as u32;
                prop_assert!(e.line >= 1 && e.line <= lines, "{}", e);
                prop_assert!(e.col >= 1, "{}", e);
            }
        }
    }
}
