//! The compiled table decides like the library: on random rule sets, the
//! maps, evaluated as the kernel does, give for every profile and random
//! (destination, protocol, port) the verdict of `Policy::decide`; and no
//! two elements of a map overlap (the kernel would refuse the table).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use ldsaref_nft::{compile, CatchKind, Element, Verdict};
use ldsaref_rules::{Action, Dest, Policy, PortRange, Proto, ProtoMatch, RuleSet, Saref};

/// Few networks, so that generated rules nest and share bounds.
const V4_POOL: [u32; 4] = [0xc000_0200, 0xc633_6400, 0xc612_0005, 0xc612_0080];
const V6_POOL: [u128; 2] = [
    0x2001_0db8_0000_0000_0000_0000_0000_0001,
    0x2001_0db8_0012_0000_0000_0000_0000_0005,
];
const V4_LENS: [u8; 7] = [0, 8, 15, 24, 25, 31, 32];
const V6_LENS: [u8; 5] = [0, 32, 64, 127, 128];
const PROFILES: [&str; 3] = ["client1", "client-2", "c3"];

fn mask4(a: u32, len: u8) -> u32 {
    a & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask6(a: u128, len: u8) -> u128 {
    a & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

fn dest() -> impl Strategy<Value = Dest> {
    prop_oneof![
        1 => Just(Dest::Any),
        5 => (0..V4_POOL.len(), 0..V4_LENS.len()).prop_map(|(a, l)| Dest::Net {
            addr: IpAddr::V4(mask4(V4_POOL[a], V4_LENS[l]).into()),
            len: V4_LENS[l],
        }),
        2 => (0..V6_POOL.len(), 0..V6_LENS.len()).prop_map(|(a, l)| Dest::Net {
            addr: IpAddr::V6(mask6(V6_POOL[a], V6_LENS[l]).into()),
            len: V6_LENS[l],
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

fn ports() -> impl Strategy<Value = Option<PortRange>> {
    let edge = prop_oneof![1..=40u16, 65500..=65535u16];
    prop::option::of((edge, 0..=40u16).prop_map(|(lo, w)| PortRange {
        lo,
        hi: lo.saturating_add(w),
    }))
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (1..=4u32).prop_map(|n| Action::Saref(Saref::new(n * 101).unwrap())),
        (0..4u32, prop_oneof![Just(u32::MAX), Just(0xff00u32)]).prop_map(|(v, mask)| {
            Action::Mark {
                value: (v << 8) & mask,
                mask,
            }
        }),
        // A whole mark among the codes of the address maps: written
        // through a chain, as 0 is.
        Just(Action::Mark {
            value: ldsaref_nft::CODE_BASE + 1,
            mask: u32::MAX
        }),
        Just(Action::Reflect),
        Just(Action::Pass),
        Just(Action::Deny),
    ]
}

#[derive(Clone, Debug)]
struct Spec {
    dest: Dest,
    proto: ProtoMatch,
    ports: Option<PortRange>,
    action: Action,
    profile: Option<usize>,
}

fn spec() -> impl Strategy<Value = Spec> {
    let profile = prop_oneof![2 => Just(None), 1 => (0..PROFILES.len()).prop_map(Some)];
    (dest(), proto(), ports(), action(), profile).prop_map(
        |(dest, proto, ports, action, profile)| {
            Spec {
                dest,
                proto,
                ports,
                // `tcp ... reflect` does not parse.
                action: if proto == ProtoMatch::Tcp && action == Action::Reflect {
                    Action::Deny
                } else {
                    action
                },
                profile,
            }
        },
    )
}

fn text(specs: &[Spec]) -> String {
    let mut s = String::new();
    for sp in specs.iter().filter(|s| s.profile.is_none()) {
        s.push_str(&line(sp));
    }
    for (i, name) in PROFILES.iter().enumerate() {
        s.push_str(&format!("[{name}]\n"));
        for sp in specs.iter().filter(|s| s.profile == Some(i)) {
            s.push_str(&line(sp));
        }
    }
    s
}

fn line(sp: &Spec) -> String {
    let mut s = sp.dest.to_string();
    if sp.proto != ProtoMatch::Any {
        s.push_str(&format!(" {}", sp.proto));
    }
    if let Some(p) = sp.ports {
        s.push_str(&format!(" {}-{}", p.lo, p.hi));
    }
    format!("{s} {}\n", sp.action)
}

/// Destinations worth asking about: every rule network's bounds and their
/// neighbours, in both families, v4-mapped too, plus random ones.
fn probes(specs: &[Spec], seed: u128) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = Vec::new();
    let mut v4 = |a: u32| {
        for b in [a.wrapping_sub(1), a, a.wrapping_add(1)] {
            v.push(IpAddr::V4(Ipv4Addr::from(b)));
        }
    };
    for sp in specs {
        if let Dest::Net {
            addr: IpAddr::V4(a),
            len,
        } = sp.dest
        {
            let lo = u32::from(a);
            v4(lo);
            v4(lo | u32::MAX.checked_shr(u32::from(len)).unwrap_or(0));
        }
    }
    v4(0);
    v4(u32::MAX);
    v4(seed as u32);
    let mut v6: Vec<u128> = vec![
        0,
        u128::MAX,
        seed,
        0xffff_0000_0000 - 1,
        0xffff_ffff_ffff + 1,
    ];
    for sp in specs {
        if let Dest::Net {
            addr: IpAddr::V6(a),
            len,
        } = sp.dest
        {
            let lo = u128::from(a);
            v6.push(lo);
            v6.push(lo | u128::MAX.checked_shr(u32::from(len)).unwrap_or(0));
        }
    }
    for a in v6 {
        for b in [a.wrapping_sub(1), a, a.wrapping_add(1)] {
            v.push(IpAddr::V6(Ipv6Addr::from(b)));
        }
    }
    let mapped: Vec<IpAddr> = v
        .iter()
        .filter_map(|a| match a {
            IpAddr::V4(a) => Some(IpAddr::V6(a.to_ipv6_mapped())),
            IpAddr::V6(_) => None,
        })
        .collect();
    v.extend(mapped);
    v
}

fn port_probes(specs: &[Spec], seed: u16) -> Vec<u16> {
    let mut v = vec![0, 1, 65535, seed];
    for sp in specs {
        if let Some(p) = sp.ports {
            for x in [p.lo, p.hi] {
                v.extend([x.wrapping_sub(1), x, x.wrapping_add(1)]);
            }
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

fn assert_disjoint(name: &str, elements: &[Element]) {
    for (i, a) in elements.iter().enumerate() {
        for b in &elements[i + 1..] {
            assert!(
                !a.overlaps(b),
                "[{name}] overlapping elements {a:?} and {b:?}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_table_decides_like_the_policy(
        specs in prop::collection::vec(spec(), 0..14),
        seed in any::<u128>(),
        port_seed in any::<u16>(),
        catch_seed in 1..=32767u32,
    ) {
        let text = text(&specs);
        // Ties are load errors: nothing to compile.
        let Ok(set) = RuleSet::parse(&text, "rules") else { return Ok(()) };
        let compiled = compile(&set).unwrap();
        assert_disjoint("global", &compiled.global.v4);
        assert_disjoint("global", &compiled.global.v6);
        for p in &compiled.profiles {
            assert_disjoint(&p.name, &p.maps.v4);
            assert_disjoint(&p.name, &p.maps.v6);
        }
        let table = compiled.rendered();
        let dests = probes(&specs, seed);
        let ports = port_probes(&specs, port_seed);
        for name in PROFILES {
            // The library's catch-all SAref, and the cgroup backend's
            // catch-all mark (the library has none: where no rule decides,
            // the mark).
            let mark = catch_seed.wrapping_mul(0x9e37_79b9) | 1;
            let kinds = [
                None,
                Saref::new(catch_seed).map(|s| CatchKind::Saref(s.get())),
                Some(CatchKind::Mark(mark)),
            ];
            for catch_all in kinds {
                let saref = match catch_all {
                    Some(CatchKind::Saref(n)) => Saref::new(u32::from(n)),
                    _ => None,
                };
                let policy = Policy::new(Some(set.clone()), Some(name), saref).unwrap();
                let mark_catch_all = match catch_all {
                    Some(CatchKind::Mark(value)) => Some(Verdict::Mark {
                        value,
                        mask: u32::MAX,
                    }),
                    _ => None,
                };
                for &dest in &dests {
                    for proto in [Proto::Tcp, Proto::Udp] {
                        for &port in &ports {
                            let want = policy
                                .decide(dest, proto, port)
                                .map(|d| Verdict::of(d.action).unwrap())
                                .or(mark_catch_all);
                            let got = compiled.decide_with(name, catch_all, dest, proto, port);
                            let rendered = table.decide_with(name, catch_all, dest, proto, port);
                            prop_assert_eq!(
                                rendered, want,
                                "rendered: [{}] catch-all {:?} {} {} {}\n{}", name, catch_all, dest, proto, port, text
                            );
                            prop_assert_eq!(
                                got, want,
                                "[{}] catch-all {:?} {} {} {}\n{}", name, catch_all, dest, proto, port, text
                            );
                        }
                    }
                }
            }
        }
    }
}
