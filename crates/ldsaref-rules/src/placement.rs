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

/// Digit width of [`radix_sort`], and the size under which it leaves a
/// bucket to `sort_unstable`.
const DIGIT_BITS: u32 = 12;
const SMALL: usize = 512;

/// Sorts `keys`. Random keys of a large rule set (random networks) sort
/// three times faster by distributing them on the 12 bits below the
/// highest bit in which they differ, then sorting each bucket (again by
/// digits if it is still large: the IPv6 networks of one provider block
/// share their first 32 bits), than by comparisons alone.
fn radix_sort(keys: &mut [u128], scratch: &mut Vec<u128>) {
    if keys.len() <= SMALL {
        keys.sort_unstable();
        return;
    }
    let first = keys[0];
    let differ = keys.iter().fold(0, |acc, &k| acc | (k ^ first));
    if differ == 0 {
        return;
    }
    let shift = (127 - differ.leading_zeros()).saturating_sub(DIGIT_BITS - 1);
    let digit = |k: u128| (k >> shift) as usize & ((1 << DIGIT_BITS) - 1);
    // Where each bucket starts, then a stable distribution into `scratch`.
    let mut start = vec![0usize; (1 << DIGIT_BITS) + 1];
    for &k in keys.iter() {
        start[digit(k) + 1] += 1;
    }
    for d in 1..start.len() {
        start[d] += start[d - 1];
    }
    scratch.clear();
    scratch.resize(keys.len(), 0);
    let mut next = start.clone();
    for &k in keys.iter() {
        let d = digit(k);
        scratch[next[d]] = k;
        next[d] += 1;
    }
    keys.copy_from_slice(scratch);
    for bucket in start.windows(2) {
        if bucket[1] - bucket[0] > 1 {
            radix_sort(&mut keys[bucket[0]..bucket[1]], scratch);
        }
    }
}

/// Puts `items[order[j] as u32]` at `j`, for every `j`, in place: `order`
/// (whose low 32 bits are indices) is a permutation of `items`' indices.
/// Each cycle of the permutation is followed once, marked in a bitmap.
fn permute<T: Copy>(items: &mut [T], order: &[u128]) {
    let index = |j: usize| order.get(j).map_or(j, |&k| k as u32 as usize);
    let mut done = vec![0u64; items.len().div_ceil(64)];
    let mut mark = |j: usize| {
        let word = done.get_mut(j / 64);
        let was = word.as_ref().is_some_and(|w| **w >> (j % 64) & 1 == 1);
        if let Some(w) = word {
            *w |= 1 << (j % 64);
        }
        was
    };
    for start in 0..items.len() {
        if mark(start) {
            continue;
        }
        let first = items[start];
        let mut j = start;
        loop {
            let k = index(j);
            if k == start || k >= items.len() {
                items[j] = first;
                break;
            }
            items[j] = items[k];
            mark(k);
            j = k;
        }
    }
}

/// Places every rule, sorted.
///
/// Sorting the 48-byte placements with their derived order is slow for
/// large sets. Rather, 128-bit sort keys are sorted: the set, the family,
/// the first 80 bits of the network, and the rule; the placements are then
/// built in that order, and the rare runs that these keys do not fully
/// order (networks that differ only past their first 80 bits, or not at
/// all) sorted again with the full order.
pub(crate) fn place(rules: &[Rule]) -> Vec<Placed> {
    // Set and family fit in the top 16 bits of a sort key, unless there are
    // more than 32767 profiles.
    let sets = rules
        .iter()
        .map(|r| set_of(r.profile))
        .max()
        .unwrap_or(GLOBAL);
    if sets >= 1 << 15 {
        let mut placed = Vec::with_capacity(rules.len());
        for (index, rule) in rules.iter().enumerate() {
            placements(rule, index, |p| placed.push(p));
        }
        placed.sort_unstable();
        return placed;
    }
    // Sort compact keys, then move the placements in that order: made in
    // rule order, they are numbered in that order, so the number in the
    // low 32 bits orders as the rule index does. The move reads the
    // placements (32 bytes each) at random, rather than the much larger
    // rules, and in place, without a second copy.
    let mut unsorted = Vec::with_capacity(rules.len());
    for (index, rule) in rules.iter().enumerate() {
        placements(rule, index, |p| unsorted.push(p));
    }
    let mut order: Vec<u128> = unsorted
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let trie = u128::from(p.set) << 1 | u128::from(p.family == Family::V6);
            trie << 112 | (p.key >> 48) << 32 | i as u128
        })
        .collect();
    radix_sort(&mut order, &mut Vec::new());
    let mut placed = unsorted;
    permute(&mut placed, &order);
    let top = |p: &Placed| (p.set, p.family, p.key >> 48);
    let mut rest = &mut placed[..];
    while let Some(first) = rest.first() {
        let first = top(first);
        let n = rest.iter().take_while(|p| top(p) == first).count();
        let (run, tail) = rest.split_at_mut(n);
        if run.len() > 1 {
            run.sort_unstable();
        }
        rest = tail;
    }
    placed
}

/// Gives the placements of `rule`, of index `index`: one, or two for `any`
/// (IPv4 first).
fn placements(rule: &Rule, index: usize, mut give: impl FnMut(Placed)) {
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
            give(base);
            give(Placed {
                family: Family::V6,
                ..base
            });
        }
        Dest::Net { addr, len } => {
            let (family, key) = key_of(addr);
            give(Placed {
                family,
                key,
                len,
                ..base
            });
        }
    }
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
    fn radix_sort_sorts() {
        let mut rng = crate::test_rng::Rng(0x1234_5678_9abc_def1);
        let mut next = move || rng.next();
        for n in [0usize, 1, 2, 600, 5_000, 40_000] {
            // Random keys, keys sharing long prefixes, duplicates.
            let mut keys: Vec<u128> = (0..n)
                .map(|i| match i % 4 {
                    0 => u128::from(next()) << 64 | u128::from(next()),
                    1 => 0x2001_0db8 << 96 | u128::from(next() >> 20),
                    2 => 7,
                    _ => 1 << 112 | u128::from(next() as u32) << 32 | i as u128,
                })
                .collect();
            let mut want = keys.clone();
            want.sort_unstable();
            radix_sort(&mut keys, &mut Vec::new());
            assert_eq!(keys, want, "{n} keys");
        }
    }

    #[test]
    fn permute_follows_every_cycle() {
        // Cycles (0 2 4), (1 3), fixed point 5; high bits are not indices.
        let order: Vec<u128> = [2u128, 3, 4, 1, 0, 5]
            .iter()
            .map(|&i| 7 << 100 | i)
            .collect();
        let mut items = ['a', 'b', 'c', 'd', 'e', 'f'];
        permute(&mut items, &order);
        assert_eq!(items, ['c', 'd', 'e', 'b', 'a', 'f']);
        let mut none: [u8; 0] = [];
        permute(&mut none, &[]);
    }

    /// The placements of `rules` sorted with their derived order: what
    /// [`place`] must give.
    fn place_naive(rules: &[Rule]) -> Vec<Placed> {
        let mut placed = Vec::new();
        for (index, rule) in rules.iter().enumerate() {
            placements(rule, index, |p| placed.push(p));
        }
        placed.sort();
        placed
    }

    #[test]
    fn compact_keys_sort_like_placements() {
        use crate::{Action, Origin, PortRange};
        // A small deterministic generator: many equal prefixes, both
        // families, profiles, ports and protocols, so that every field of
        // the order gets to decide.
        let mut rng = crate::test_rng::Rng(0x2545_f491_4f6c_dd1d);
        let mut next = move |n: u64| rng.next() % n;
        let mut rules = Vec::new();
        for _ in 0..5000 {
            let dest = match next(5) {
                0 => Dest::Any,
                1 | 2 => {
                    let len = [0, 8, 16, 24, 32][next(5) as usize];
                    let key = crate::key::mask(
                        (next(4) as u128 + 1) << 120 | (next(4) as u128) << 100,
                        len,
                    );
                    Dest::Net {
                        addr: crate::key::addr_of(Family::V4, key),
                        len,
                    }
                }
                _ => {
                    let len = [0, 1, 48, 64, 127, 128][next(6) as usize];
                    let key = crate::key::mask(
                        (next(4) as u128) << 126 | (next(3) as u128) << 60 | next(3) as u128,
                        len,
                    );
                    Dest::Net {
                        addr: crate::key::addr_of(Family::V6, key),
                        len,
                    }
                }
            };
            let proto = [ProtoMatch::Any, ProtoMatch::Tcp, ProtoMatch::Udp][next(3) as usize];
            let ports = match next(3) {
                0 => None,
                _ => {
                    let lo = next(3) as u16 + 1;
                    Some(PortRange {
                        lo,
                        hi: lo + next(3) as u16,
                    })
                }
            };
            let profile = match next(3) {
                0 => None,
                n => Some(ProfileId::new(n as usize)),
            };
            rules.push(Rule {
                dest,
                proto,
                ports,
                action: Action::Pass,
                origin: Origin { file: 0, line: 1 },
                profile,
            });
        }
        assert_eq!(place(&rules), place_naive(&rules));
        assert_eq!(place(&[]), vec![]);
        // More profiles than the sort keys hold: the plain sort.
        for (i, rule) in rules.iter_mut().enumerate() {
            rule.profile = Some(ProfileId::new(40_000 - i % 7));
        }
        assert_eq!(place(&rules), place_naive(&rules));
    }

    #[test]
    fn runs_split_on_change() {
        let v = [1, 1, 2, 3, 3, 3];
        let got: Vec<&[i32]> = runs(&v, |a, b| a == b).collect();
        assert_eq!(got, vec![&[1, 1][..], &[2], &[3, 3, 3]]);
        assert_eq!(runs(&[] as &[i32], |a, b| a == b).count(), 0);
    }
}
