//! `Policy::decide` over a rules file, N passes over 64k mixed
//! destinations (half inside a rule's prefix, half random, 7 in 10 IPv4),
//! for `valgrind --tool=cachegrind`: the difference between two pass
//! counts is the decisions' own instructions and cache misses, whatever
//! the machine's load. `decide_probe RULES PASSES [index]`: with `index`,
//! the rules are compiled and read back as an index first (what the
//! library maps), so that the two can be compared.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ldsaref_rules::compiled::{AlignedBytes, Bytes};
use ldsaref_rules::{Dest, Policy, Proto, RuleSet};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let text = std::fs::read_to_string(&args[1]).expect("rules");
    let passes: usize = args[2].parse().expect("passes");
    let parsed = RuleSet::parse(&text, &args[1]).expect("loads");
    drop(text);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let nets: Vec<(IpAddr, u8)> = parsed
        .rules()
        .filter_map(|r| match r.dest {
            Dest::Net { addr, len } => Some((addr, len)),
            Dest::Any => None,
        })
        .collect();
    let mut list = Vec::with_capacity(1 << 16);
    for i in 0..1 << 16 {
        let r = next();
        let dest = if i % 2 == 0 {
            let (addr, len) = nets[(r % nets.len() as u64) as usize];
            match addr {
                IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(
                    u32::from(a) | (u32::MAX.checked_shr(len.into()).unwrap_or(0) & next() as u32),
                )),
                IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
                    u128::from(a)
                        | (u128::MAX.checked_shr(len.into()).unwrap_or(0) & u128::from(next())),
                )),
            }
        } else if r % 10 < 7 {
            IpAddr::V4(Ipv4Addr::from(next() as u32))
        } else {
            IpAddr::V6(Ipv6Addr::from(0x2001_0db8u128 << 96 | u128::from(next())))
        };
        list.push(dest);
    }
    let set = if args.get(3).map(String::as_str) == Some("index") {
        let bytes = parsed.compile(&[]).expect("compiles");
        drop(parsed);
        let owner: Bytes = Arc::new(AlignedBytes::new(&bytes));
        RuleSet::from_index(owner, &[]).expect("opens")
    } else {
        parsed
    };
    let policy = Policy::new(Some(set), None, None).expect("policy");
    let mut decided = 0usize;
    for _ in 0..passes {
        for &d in &list {
            decided +=
                usize::from(black_box(policy.decide(black_box(d), Proto::Udp, 53)).is_some());
        }
    }
    println!("{decided}");
}
