//! Lookup cost by kind of destination, for one rules file: a quick A/B
//! tool for the matcher, beside the criterion benchmark.
//!
//! ```sh
//! python3 scripts/bench/genrules.py 100000 > /tmp/100k.rules
//! cargo run --release -p ldsaref-rules --example lookup_probe -- /tmp/100k.rules
//! cargo run --release -p ldsaref-rules --example lookup_probe -- /tmp/100k.rules 3
//! ```
//!
//! The first form prints, for each list of 64k destinations (addresses
//! inside a random rule's prefix, per family; random addresses, per family;
//! and a mix of the four like the criterion benchmark's), the best of 7
//! timings of 4 passes, in wall-clock ns per lookup, and how many of the
//! destinations a rule decides. Wall clock, best of 7: compare two builds
//! by alternating them, not with figures from another moment.
//!
//! The second form does nothing but N passes over the mixed list, for
//! `valgrind --tool=cachegrind`: the difference between two pass counts is
//! the lookups' own count of instructions and cache misses, independent of
//! the machine's load (`scripts/bench/cachegrind-lookup.sh` does this).
//!
//! Every lookup is UDP to port 53. Nothing is sent anywhere.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::ExitCode;
use std::time::Instant;

use ldsaref_rules::{Dest, Proto, RuleSet};

const LIST: usize = 1 << 16;

/// xorshift64*, seeded: every run probes the same destinations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn wide(&mut self) -> u128 {
        u128::from(self.next()) << 64 | u128::from(self.next())
    }
}

/// An address inside `addr/len`, the host bits random.
fn member(rng: &mut Rng, addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let host = u32::MAX.checked_shr(len.into()).unwrap_or(0) & rng.next() as u32;
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | host))
        }
        IpAddr::V6(a) => {
            let host = u128::MAX.checked_shr(len.into()).unwrap_or(0) & rng.wide();
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | host))
        }
    }
}

/// The destination lists: name and addresses.
fn lists(set: &RuleSet) -> Vec<(&'static str, Vec<IpAddr>)> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let nets: Vec<(IpAddr, u8)> = set
        .rules()
        .filter_map(|r| match r.dest {
            Dest::Net { addr, len } => Some((addr, len)),
            Dest::Any => None,
        })
        .collect();
    let (mut v4_hits, mut v6_hits) = (Vec::new(), Vec::new());
    let (mut v4_random, mut v6_random) = (Vec::new(), Vec::new());
    for _ in 0..LIST {
        if !nets.is_empty() {
            let (addr, len) = nets[(rng.next() % nets.len() as u64) as usize];
            match member(&mut rng, addr, len) {
                a @ IpAddr::V4(_) => v4_hits.push(a),
                a @ IpAddr::V6(_) => v6_hits.push(a),
            }
        }
        v4_random.push(IpAddr::V4(Ipv4Addr::from(rng.next() as u32)));
        // Random addresses of the documentation prefix, which the
        // generated IPv6 rules are in.
        let low = rng.wide() >> 32;
        v6_random.push(IpAddr::V6(Ipv6Addr::from(0x2001_0db8u128 << 96 | low)));
    }
    // Half hits, half random; 7 in 10 IPv4.
    let mut mixed = Vec::with_capacity(LIST);
    for i in 0..LIST {
        let v4 = rng.next() % 10 < 7;
        let pick = |list: &Vec<IpAddr>| list.get(i % list.len().max(1)).copied();
        let dest = match (i % 2 == 0, v4) {
            (true, true) => pick(&v4_hits),
            (true, false) => pick(&v6_hits),
            (false, true) => pick(&v4_random),
            (false, false) => pick(&v6_random),
        };
        mixed.extend(dest);
    }
    vec![
        ("v4 hit", v4_hits),
        ("v6 hit", v6_hits),
        ("v4 rand", v4_random),
        ("v6 rand", v6_random),
        ("mixed", mixed),
    ]
}

fn decided(set: &RuleSet, list: &[IpAddr]) -> usize {
    list.iter()
        .filter(|&&d| black_box(set.lookup(None, black_box(d), Proto::Udp, 53)).is_some())
        .count()
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: lookup_probe RULES [PASSES]");
        return ExitCode::from(2);
    };
    let set = match std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|text| RuleSet::parse(&text, &path).map_err(|e| e.to_string()))
    {
        Ok(set) => set,
        Err(e) => {
            eprintln!("lookup_probe: {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let lists = lists(&set);
    if let Some(passes) = args.next() {
        let Ok(passes) = passes.parse::<usize>() else {
            eprintln!("lookup_probe: PASSES must be a number");
            return ExitCode::from(2);
        };
        let mixed = &lists[lists.len() - 1].1;
        let total: usize = (0..passes).map(|_| decided(&set, mixed)).sum();
        println!("{total}");
        return ExitCode::SUCCESS;
    }
    for (name, list) in &lists {
        let best = (0..7)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..4 {
                    decided(&set, list);
                }
                start.elapsed().as_nanos() as f64 / (4 * list.len().max(1)) as f64
            })
            .fold(f64::MAX, f64::min);
        let hits = decided(&set, list);
        println!("{name:8} {best:6.1} ns  ({hits} of {} decided)", list.len());
    }
    ExitCode::SUCCESS
}
