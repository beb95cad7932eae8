//! Arbitrary bytes as a compiled rules index: opening it (the checks the
//! library makes when it maps one) and then every lookup and question a
//! process or `explain` can ask must never panic, hang or read out of
//! bounds, whatever the bytes.
//!
//! The first byte chooses the input: even, the rest is the index itself;
//! odd, the rest patches a valid index (4-byte offset, 1-byte xor, …), so
//! that inputs get past the header's checks to the arrays behind it.

#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use ldsaref_rules::compiled::{AlignedBytes, Bytes};
use ldsaref_rules::{Policy, Proto, RuleSet};
use libfuzzer_sys::fuzz_target;

const RULES: &str = "\
10.1.0.0/16 saref 1234
10.2.0.0/16 tcp 22 saref 2000
10.2.0.0/16 udp 53 pass
10.2.3.0/24 mark 0x10/0xff
2001:db8::/32 mark 0x200
2001:db8:1::/48 tcp 443 deny
192.168.0.0/16 deny
any udp 1701 reflect
198.51.100.7 dev ipsec1
[client1]
192.168.0.0/24 saref 101
192.168.0.128/25 udp 1000-2000 saref 102
[client2]
192.168.0.0/24 saref 202
";

fn base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let mut text = String::from(RULES);
        // Enough prefixes for a fan-out, leaves and inline nodes.
        for i in 0..4096u32 {
            text.push_str(&format!("172.{}.{}.0/24 saref {}\n", 16 + i / 256, i % 256, 1 + i));
        }
        RuleSet::parse(&text, "rules").expect("sample rules").compile(&[]).expect("compiles")
    })
}

fn probes(data: &[u8]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = [
        "10.1.2.3", "10.2.3.4", "192.168.0.200", "172.16.5.9", "172.31.255.1", "198.51.100.7",
        "2001:db8:1::1", "::ffff:10.1.0.1", "0.0.0.0", "255.255.255.255", "::",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    for c in data.chunks_exact(16).take(8) {
        let mut b = [0u8; 16];
        b.copy_from_slice(c);
        v.push(IpAddr::V6(Ipv6Addr::from(b)));
        v.push(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])));
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let mut b = base().to_vec();
        for patch in rest.chunks_exact(5) {
            let at = u32::from_le_bytes([patch[0], patch[1], patch[2], patch[3]]) as usize;
            if !b.is_empty() {
                let at = at % b.len();
                b[at] ^= patch[4];
            }
        }
        b
    };
    let owner: Bytes = Arc::new(AlignedBytes::new(&bytes));
    let Ok(set) = RuleSet::from_index(owner, &[]) else {
        return;
    };
    let names: Vec<String> = set.profile_names().take(64).map(str::to_owned).collect();
    let _ = set.file_names().take(64).count();
    let _ = set.has_reflect();
    for rule in set.rules().take(128) {
        let _ = rule.to_string();
        let _ = set.file_name(rule.origin);
    }
    let addrs = probes(rest);
    let profiles = std::iter::once(None).chain(names.iter().map(|n| Some(n.as_str())));
    for profile in profiles.take(8) {
        let Ok(policy) = Policy::new(Some(set.clone()), profile, None) else {
            continue;
        };
        for &addr in &addrs {
            for proto in [Proto::Tcp, Proto::Udp] {
                for port in [0, 22, 53, 443, 1500, 1701, 65535] {
                    if let Some(d) = policy.decide(addr, proto, port) {
                        let _ = d.to_string();
                    }
                }
            }
        }
    }
});
