//! Precedence flattened into disjoint map elements (see the crate's
//! documentation).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ldsaref_rules::{Dest, ProfileId, Proto, Rule, RuleSet};

use crate::{Element, Verdict};

/// `::ffff:0:0/96`: IPv4-mapped destinations leave as IPv4 packets, and
/// the library matches them as IPv4; no IPv6 packet goes there.
const MAPPED_LO: u128 = 0xffff_0000_0000;
const MAPPED_HI: u128 = 0xffff_ffff_ffff;

fn family_max(v6: bool) -> u128 {
    if v6 {
        u128::MAX
    } else {
        u128::from(u32::MAX)
    }
}

fn host_bits(bits: u32) -> u128 {
    u128::MAX
        .checked_shr(128 - bits)
        .filter(|_| bits > 0)
        .unwrap_or(0)
}

/// The addresses of the family a rule covers, as an inclusive interval.
fn span(rule: &Rule, v6: bool) -> Option<(u128, u128)> {
    match rule.dest {
        Dest::Any => Some((0, family_max(v6))),
        Dest::Net {
            addr: IpAddr::V4(a),
            len,
        } if !v6 => {
            let lo = u128::from(u32::from(a));
            Some((lo, lo | host_bits(32 - u32::from(len))))
        }
        Dest::Net {
            addr: IpAddr::V6(a),
            len,
        } if v6 => {
            let lo = u128::from(a);
            Some((lo, lo | host_bits(128 - u32::from(len))))
        }
        Dest::Net { .. } => None,
    }
}

fn address(key: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(key))
    } else {
        // Only IPv4 keys (below 2^32) are ever made for IPv4.
        IpAddr::V4(Ipv4Addr::from(u32::try_from(key).unwrap_or(u32::MAX)))
    }
}

/// The `(proto, first port, last port, verdict)` pieces of one address cell.
type Pieces = Vec<(Proto, u16, u16, Verdict)>;

/// The disjoint elements deciding like the rules of one section of `set`
/// (`scope`: a profile, or `None` for the global rules), for one family:
/// where the section decides, its decision; elsewhere nothing (a profile
/// then falls through to the global rules, as the library does).
pub(crate) fn flatten(set: &RuleSet, scope: Option<ProfileId>, v6: bool) -> Vec<Element> {
    let rules: Vec<(&Rule, (u128, u128))> = set
        .rules()
        .filter(|r| r.profile == scope)
        .filter_map(|r| Some((r, span(r, v6)?)))
        .collect();
    let max = family_max(v6);
    // Every point where the set of covering rules may change.
    let mut cuts: BTreeSet<u128> = BTreeSet::from([0]);
    for (_, (lo, hi)) in &rules {
        cuts.insert(*lo);
        if *hi < max {
            cuts.insert(hi + 1);
        }
    }
    if v6 {
        cuts.insert(MAPPED_LO);
        cuts.insert(MAPPED_HI + 1);
    }
    let cuts: Vec<u128> = cuts.into_iter().collect();

    let mut out: Vec<Element> = Vec::new();
    // The previous cell's pieces and last address, to merge equal
    // neighbours.
    let mut prev: Option<(Pieces, u128, usize)> = None;
    for (i, &lo) in cuts.iter().enumerate() {
        let hi = cuts.get(i + 1).map_or(max, |next| next - 1);
        if v6 && lo == MAPPED_LO {
            prev = None;
            continue;
        }
        let covering: Vec<&Rule> = rules
            .iter()
            .filter(|(_, (a, b))| *a <= lo && lo <= *b)
            .map(|(r, _)| *r)
            .collect();
        let pieces = cell_pieces(set, scope, address(lo, v6), &covering);
        match &mut prev {
            Some((p, last, first_elem)) if *p == pieces && last.checked_add(1) == Some(lo) => {
                for e in &mut out[*first_elem..] {
                    e.addr_hi = hi;
                }
                *last = hi;
            }
            _ => {
                let first_elem = out.len();
                out.extend(
                    pieces
                        .iter()
                        .map(|&(proto, port_lo, port_hi, verdict)| Element {
                            addr_lo: lo,
                            addr_hi: hi,
                            proto,
                            port_lo,
                            port_hi,
                            verdict,
                        }),
                );
                prev = Some((pieces, hi, first_elem));
            }
        }
    }
    out
}

/// The pieces of one address cell, decided at `addr` (any address of the
/// cell decides the same: every rule of the section covers all of it or
/// none of it).
fn cell_pieces(
    set: &RuleSet,
    scope: Option<ProfileId>,
    addr: IpAddr,
    covering: &[&Rule],
) -> Pieces {
    let mut cuts: BTreeSet<u32> = BTreeSet::from([0]);
    for r in covering {
        if let Some(p) = r.ports {
            cuts.insert(u32::from(p.lo));
            cuts.insert(u32::from(p.hi) + 1);
        }
    }
    let cuts: Vec<u32> = cuts.into_iter().filter(|&c| c <= 0xffff).collect();
    let mut pieces: Pieces = Vec::new();
    for proto in [Proto::Tcp, Proto::Udp] {
        for (i, &lo) in cuts.iter().enumerate() {
            let hi = cuts.get(i + 1).map_or(0xffff, |next| next - 1);
            // Both fit: cuts are at most 0xffff.
            let (lo, hi) = (lo as u16, hi as u16);
            // The library's own lookup: a profile's rules, then the
            // global ones; only the section's own decisions are kept.
            let Some(verdict) = set
                .lookup(scope, addr, proto, lo)
                .filter(|r| r.profile == scope)
                .and_then(|r| Verdict::of(r.action))
            else {
                continue;
            };
            match pieces.last_mut() {
                Some((p, _, last_hi, v))
                    if *p == proto && *v == verdict && u32::from(*last_hi) + 1 == u32::from(lo) =>
                {
                    *last_hi = hi;
                }
                _ => pieces.push((proto, lo, hi, verdict)),
            }
        }
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_bits_edges() {
        assert_eq!(host_bits(0), 0);
        assert_eq!(host_bits(8), 0xff);
        assert_eq!(host_bits(128), u128::MAX);
    }
}
