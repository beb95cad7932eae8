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
