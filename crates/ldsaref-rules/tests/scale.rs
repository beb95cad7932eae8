//! A large generated set: every rule is found again at its own network, and
//! the set stays compact.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ldsaref_rules::{Dest, Proto, RuleSet};

/// xorshift64: deterministic, good enough to spread addresses.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn every_rule_is_found_at_its_network() {
    let mut state = 0x5eed_1234_abcd_0001;
    let mut text = String::new();
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 20_000 {
        let r = next(&mut state);
        let (addr, len): (IpAddr, u8) = if r % 3 == 0 {
            let len = [32, 40, 48, 56, 64, 128][(r >> 8) as usize % 6];
            let key = (0x2001_0db8u128 << 96) | (u128::from(next(&mut state)) << 32);
            let key = key & !u128::MAX.checked_shr(len.into()).unwrap_or(0);
            (IpAddr::V6(Ipv6Addr::from(key)), len)
        } else {
            let len = [8, 16, 20, 24, 24, 28, 32][(r >> 8) as usize % 7];
            let key = (next(&mut state) as u32) & !u32::MAX.checked_shr(len.into()).unwrap_or(0);
            (IpAddr::V4(Ipv4Addr::from(key)), len)
        };
        if seen.insert((addr, len)) {
            let _ = writeln!(text, "{addr}/{len} saref {}", seen.len() % 32767 + 1);
        }
    }
    let set = RuleSet::parse(&text, "big").unwrap();
    assert_eq!(set.len(), 20_000);
    for rule in set.rules() {
        let Dest::Net { addr, .. } = rule.dest else {
            unreachable!()
        };
        // Its network address finds this rule, or one of a longer prefix
        // that starts at the same address.
        let found = set.lookup(None, addr, Proto::Tcp, 1).unwrap();
        assert!(
            found.dest.prefix_len() >= rule.dest.prefix_len(),
            "{rule} found {found}"
        );
        assert!(found.dest.contains(addr));
    }
    // Well under the budget of 32 MiB for 100k rules.
    let per_rule = set.heap_bytes() / set.len();
    assert!(per_rule < 192, "{per_rule} bytes per rule");
}

/// Large enough for every shortcut of the lookup (the root fan-out of both
/// families, inline nodes, single-rule prefixes answered from the trie,
/// skipped levels): its answers against a plain scan of the rules.
#[test]
fn large_set_against_a_scan() {
    let mut state = 0x0bad_cafe_1234_5678;
    let mut text = String::new();
    let mut seen = std::collections::HashSet::new();
    let mut nets = Vec::new();
    while seen.len() < 12_000 {
        let r = next(&mut state);
        let (addr, len): (IpAddr, u8) = if r % 2 == 0 {
            let len = [32, 36, 44, 48, 56, 64, 100, 128][(r >> 8) as usize % 8];
            let low = u128::from(next(&mut state)) << 64 | u128::from(next(&mut state));
            let key = (0x2001_0db8u128 << 96) | (low >> 32);
            let key = key & !u128::MAX.checked_shr(len.into()).unwrap_or(0);
            (IpAddr::V6(Ipv6Addr::from(key)), len)
        } else {
            let len = [0, 8, 12, 16, 20, 22, 24, 24, 27, 28, 30, 32, 32][(r >> 8) as usize % 13];
            let key = (next(&mut state) as u32) & !u32::MAX.checked_shr(len.into()).unwrap_or(0);
            (IpAddr::V4(Ipv4Addr::from(key)), len)
        };
        if !seen.insert((addr, len)) {
            continue;
        }
        nets.push((addr, len));
        let n = seen.len() % 32767 + 1;
        // Most prefixes have one rule for everything; some a rule for one
        // service, some both (different ranks: never a tie).
        match (r >> 20) % 10 {
            0 => writeln!(text, "{addr}/{len} tcp 22 saref {n}"),
            1 => writeln!(text, "{addr}/{len} udp 500-4500 mark {n:#x}"),
            2 => writeln!(text, "{addr}/{len} tcp 22 deny\n{addr}/{len} saref {n}"),
            3 => writeln!(text, "{addr}/{len} reflect"),
            _ => writeln!(text, "{addr}/{len} saref {n}"),
        }
        .unwrap();
    }
    let set = RuleSet::parse(&text, "big").unwrap();
    let rules: Vec<_> = set.rules().collect();
    // The winner among the rules that match: longest prefix, then a port,
    // then a protocol (the set has no ties, so this is unique).
    let scan = |addr: IpAddr, proto: Proto, port: u16| {
        rules
            .iter()
            .filter(|r| r.matches(addr, proto, port))
            .max_by_key(|r| {
                (
                    r.dest.prefix_len(),
                    r.ports.is_some(),
                    r.proto.is_specific(),
                )
            })
            .copied()
    };
    let mut checked = 0;
    for i in 0..1_500 {
        let (net, len) = nets[next(&mut state) as usize % nets.len()];
        let addr = match (i % 3, net) {
            // Inside a rule's network.
            (0, IpAddr::V4(a)) => {
                let host = (next(&mut state) as u32)
                    .checked_shr(len.into())
                    .unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) | host))
            }
            (0, IpAddr::V6(a)) => {
                let host = u128::from(next(&mut state))
                    .checked_shr(len.into())
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) | host))
            }
            // Near one: a bit flipped.
            (1, IpAddr::V4(a)) => {
                IpAddr::V4(Ipv4Addr::from(u32::from(a) ^ 1 << (next(&mut state) % 32)))
            }
            (1, IpAddr::V6(a)) => IpAddr::V6(Ipv6Addr::from(
                u128::from(a) ^ 1 << (next(&mut state) % 128),
            )),
            // Anywhere.
            (_, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::from(next(&mut state) as u32)),
            (_, IpAddr::V6(_)) => {
                let low = u128::from(next(&mut state)) << 64 | u128::from(next(&mut state));
                IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (low >> 32)))
            }
        };
        for (proto, port) in [(Proto::Tcp, 22), (Proto::Udp, 500), (Proto::Udp, 53)] {
            let got = set.lookup(None, addr, proto, port);
            let want = scan(addr, proto, port);
            assert_eq!(
                got.map(|r| r.origin),
                want.map(|r| r.origin),
                "{addr} {proto} {port}"
            );
            checked += usize::from(got.is_some());
        }
    }
    // Most probes inside a network are decided by a rule.
    assert!(checked > 1_000, "{checked} decided");
}
