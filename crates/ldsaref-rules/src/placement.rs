//! Where each rule sits: in which rule set (the global rules or a profile's),
//! in which family's trie, at which prefix, and with which precedence among
//! the rules of that same prefix.
//!
//! Sorted, placements group rules prefix by prefix, best first: that one
//! order serves both the tie check and the construction of the index.

use crate::key::{key_of, Family};
use crate::{Dest, ProfileId, ProtoMatch, Rule};

/// The set of the global rules; profile `p` has set `p + 1`.
pub(crate) const GLOBAL: usize = 0;

/// The set that holds the rules of `profile`.
pub(crate) fn set_of(profile: Option<ProfileId>) -> usize {
    profile.map_or(GLOBAL, |p| p.index().saturating_add(1))
}

/// One rule in one family (an `any` rule is placed in both).
///
/// The field order is the sort order, and matters: rules of one prefix of
/// one trie end up together, by rank, then by protocol, then in load order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct Placed {
    pub set: u32,
    pub family: Family,
    /// The network, left-aligned (see [`crate::key`]).
    pub key: u128,
    pub len: u8,
    /// Precedence at equal prefix, 0 first: a port beats no port, then a
    /// specific protocol beats none.
    pub rank: u8,
    /// The protocol as written (0 any, 1 tcp, 2 udp): rules tie only within
    /// one rank and one protocol.
    pub proto: u8,
    /// Index of the rule, in load order.
    pub rule: u32,
    /// The ports covered; all of them for a rule without ports.
    pub lo: u16,
    pub hi: u16,
}

impl Placed {
    /// Whether two placements are at the same prefix of the same trie.
    pub(crate) fn same_prefix(&self, other: &Placed) -> bool {
        (self.set, self.family, self.key, self.len)
            == (other.set, other.family, other.key, other.len)
    }
}

/// Places every rule, sorted.
pub(crate) fn place(rules: &[Rule]) -> Vec<Placed> {
    let mut placed = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        let (lo, hi) = rule.ports.map_or((0, u16::MAX), |p| (p.lo, p.hi));
        let rank = match (rule.ports.is_some(), rule.proto.is_specific()) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        };
        let proto = match rule.proto {
            ProtoMatch::Any => 0,
            ProtoMatch::Tcp => 1,
            ProtoMatch::Udp => 2,
        };
        let base = Placed {
            // The builder keeps both counts far below u32::MAX.
            set: u32::try_from(set_of(rule.profile)).unwrap_or(u32::MAX),
            family: Family::V4,
            key: 0,
            len: 0,
            rank,
            proto,
            rule: u32::try_from(index).unwrap_or(u32::MAX),
            lo,
            hi,
        };
        match rule.dest {
            Dest::Any => {
                placed.push(base);
                placed.push(Placed {
                    family: Family::V6,
                    ..base
                });
            }
            Dest::Net { addr, len } => {
                let (family, key) = key_of(addr);
                placed.push(Placed {
                    family,
                    key,
                    len,
                    ..base
                });
            }
        }
    }
    placed.sort_unstable();
    placed
}

/// The maximal runs of consecutive items that are `same` as the run's first.
pub(crate) fn runs<T, F>(items: &[T], same: F) -> impl Iterator<Item = &[T]>
where
    F: Fn(&T, &T) -> bool,
{
    let mut rest = items;
    std::iter::from_fn(move || {
        let first = rest.first()?;
        let n = rest.iter().take_while(|item| same(first, item)).count();
        let (run, tail) = rest.split_at(n);
        rest = tail;
        Some(run)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_split_on_change() {
        let v = [1, 1, 2, 3, 3, 3];
        let got: Vec<&[i32]> = runs(&v, |a, b| a == b).collect();
        assert_eq!(got, vec![&[1, 1][..], &[2], &[3, 3, 3]]);
        assert_eq!(runs(&[] as &[i32], |a, b| a == b).count(), 0);
    }
}
