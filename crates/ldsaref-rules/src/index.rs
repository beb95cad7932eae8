//! The lookup structure of a rule set: for each set (global, or a profile)
//! and each family, a trie of the prefixes that have rules; for each prefix,
//! its rules in precedence order and the next shorter prefix to fall back
//! to when none of them matches the protocol and port.
//!
//! A prefix with a single rule for every protocol and port (most of them)
//! is stored in the trie as that rule, flagged [`DIRECT`]: when the trie
//! says its candidate is exact, that is the answer, and the lookup reads
//! nothing but trie nodes. Other candidates go through the prefix records.

use crate::key::{mask, Family};
use crate::placement::{runs, Placed};
use crate::trie::{self, Root, Tries, NONE};
use crate::{Dest, Proto, ProtoMatch, Rule};

/// The rules of one prefix of one trie, in 32 bytes (two records per cache
/// line, aligned so that none straddles two): most prefixes have a single
/// rule, so the best-ranked one is stored inline, and the others, rarely
/// there, elsewhere.
#[derive(Clone, Copy, Debug)]
#[repr(align(32))]
struct PrefixRules {
    /// The prefix, to check a candidate of the trie against the key.
    key: u128,
    /// The longest shorter prefix of the same trie that contains this one,
    /// or [`NONE`]. Always a smaller index: prefixes are numbered in order.
    parent: u32,
    /// The best-ranked rule, an [`Entry`] spelt out field by field so
    /// that the record has no padding to spare.
    rule: u32,
    lo: u16,
    hi: u16,
    proto: ProtoMatch,
    len: u8,
    /// Whether more rules follow, listed in [`Index::more`].
    has_more: bool,
}

impl PrefixRules {
    #[inline]
    fn contains(&self, key: u128) -> bool {
        mask(key, self.len) == self.key
    }

    #[inline]
    fn best(&self) -> Entry {
        Entry {
            rule: self.rule,
            lo: self.lo,
            hi: self.hi,
            proto: self.proto,
        }
    }
}

/// What the lookup needs of a rule, kept apart from [`Rule`], which is
/// larger and not needed to decide.
#[derive(Clone, Copy, Debug)]
struct Entry {
    rule: u32,
    /// Ports covered, `0..=65535` for a rule without ports.
    lo: u16,
    hi: u16,
    /// The effective protocol: `reflect` is UDP only.
    proto: ProtoMatch,
}

impl Entry {
    /// The entry of `placed`, given the effective protocol of each rule.
    fn new(protos: &[ProtoMatch], placed: &Placed) -> Entry {
        let proto = protos
            .get(placed.rule as usize)
            .copied()
            .unwrap_or(ProtoMatch::Any);
        Entry {
            rule: placed.rule,
            lo: placed.lo,
            hi: placed.hi,
            proto,
        }
    }

    #[inline]
    fn matches(&self, proto: Proto, port: u16) -> bool {
        self.proto.matches(proto) && self.lo <= port && port <= self.hi
    }

    fn matches_everything(&self) -> bool {
        self.proto == ProtoMatch::Any && (self.lo, self.hi) == (0, u16::MAX)
    }
}

/// In a trie result: the value is a rule, not a prefix record.
const DIRECT: u32 = 1 << 31;

#[derive(Clone, Debug, Default)]
pub(crate) struct Index {
    /// Per set, the root of its IPv4 trie and of its IPv6 trie.
    roots: Vec<[Root; 2]>,
    tries: Tries,
    prefixes: Vec<PrefixRules>,
    /// The prefixes with more than one rule (`has_more`), in order, and
    /// where their other rules are in `entries`: (prefix, start, end).
    more: Vec<(u32, u32, u32)>,
    entries: Vec<Entry>,
    /// The prefix record of each rule stored [`DIRECT`] in a trie, to check
    /// a candidate that is not exact; [`NONE`] for the others.
    direct_prefix: Vec<u32>,
}

fn family_slot(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

impl Index {
    /// Builds the index of `rules`, whose placements are `placed` (sorted,
    /// and free of ties), for `sets` sets.
    pub(crate) fn build(rules: &[Rule], placed: &[Placed], sets: usize) -> Index {
        let prefix_count = runs(placed, Placed::same_prefix).count();
        let mut index = Index {
            roots: vec![[Root::EMPTY; 2]; sets],
            tries: Tries::default(),
            prefixes: Vec::with_capacity(prefix_count),
            more: Vec::new(),
            entries: Vec::with_capacity(placed.len() - prefix_count),
            direct_prefix: vec![NONE; rules.len()],
        };
        index.tries.reserve(prefix_count);
        // Placements come in prefix order, rules in load order: reading
        // rules at random is slow for large sets, this small table is not.
        // Both in one pass: the rules are the largest array loading
        // touches, and each pass over them reads all of it.
        let (protos, one_placement): (Vec<ProtoMatch>, Vec<bool>) = rules
            .iter()
            .map(|r| (r.effective_proto(), matches!(r.dest, Dest::Net { .. })))
            .unzip();
        let same_trie = |a: &Placed, b: &Placed| (a.set, a.family) == (b.set, b.family);
        // Reused for each trie; sized for the largest, so that filling it
        // never copies (a doubling vector would touch twice the memory).
        let mut trie_prefixes = Vec::with_capacity(prefix_count);
        // Prefixes of the trie being built that contain the current one,
        // innermost last: (key, len, prefix index).
        let mut enclosing: Vec<(u128, u8, u32)> = Vec::new();
        for in_trie in runs(placed, same_trie) {
            trie_prefixes.clear();
            enclosing.clear();
            for at_prefix in runs(in_trie, Placed::same_prefix) {
                let head = at_prefix[0];
                let id = to_u32(index.prefixes.len());
                // Sorted order visits a prefix before the ones it contains,
                // so the innermost open prefix that contains this one is its
                // parent; the others are closed for good.
                while let Some(&(key, len, _)) = enclosing.last() {
                    if len < head.len && mask(head.key, len) == key {
                        break;
                    }
                    enclosing.pop();
                }
                let parent = enclosing.last().map_or(NONE, |&(_, _, id)| id);
                enclosing.push((head.key, head.len, id));

                // Already in precedence order: by rank (see placement).
                let start = to_u32(index.entries.len());
                for p in &at_prefix[1..] {
                    index.entries.push(Entry::new(&protos, p));
                }
                if at_prefix.len() > 1 {
                    index.more.push((id, start, to_u32(index.entries.len())));
                }
                let best = Entry::new(&protos, &head);
                index.prefixes.push(PrefixRules {
                    key: head.key,
                    parent,
                    rule: best.rule,
                    lo: best.lo,
                    hi: best.hi,
                    proto: best.proto,
                    len: head.len,
                    has_more: at_prefix.len() > 1,
                });
                // Direct only when the rule has this one placement (not
                // `any`, placed in both families), so that it maps back to
                // one prefix record. Rule indices stay far below the flag.
                let direct = at_prefix.len() == 1
                    && best.matches_everything()
                    && head.rule < DIRECT
                    && one_placement.get(head.rule as usize) == Some(&true);
                let value = if direct {
                    if let Some(slot) = index.direct_prefix.get_mut(head.rule as usize) {
                        *slot = id;
                    }
                    DIRECT | head.rule
                } else {
                    id
                };
                trie_prefixes.push(trie::Prefix {
                    key: head.key,
                    len: head.len,
                    value,
                });
            }
            let head = in_trie[0];
            let root = index.tries.add(&trie_prefixes);
            if let Some(roots) = index.roots.get_mut(head.set as usize) {
                roots[family_slot(head.family)] = root;
            }
        }
        index.tries.shrink_to_fit();
        index
    }

    /// The index of the rule of set `set` that applies to traffic to `key`
    /// (see [`crate::key::match_key`]), if any. Allocation-free,
    /// panic-free.
    #[inline]
    pub(crate) fn lookup(
        &self,
        set: usize,
        family: Family,
        key: u128,
        proto: Proto,
        port: u16,
    ) -> Option<u32> {
        let roots = self.roots.get(set)?;
        let (value, exact) = self.tries.candidate(roots[family_slot(family)], key);
        let mut prefix = value;
        if value != NONE && value & DIRECT != 0 {
            let rule = value & !DIRECT;
            if exact {
                return Some(rule);
            }
            prefix = self
                .direct_prefix
                .get(rule as usize)
                .copied()
                .unwrap_or(NONE);
        }
        // From the longest prefix to the shortest, the first rule that
        // matches the protocol and port. The trie's candidate may be too
        // long (see `trie`): prefixes that do not contain the key are
        // skipped on the way up. Parents have smaller indices, so this ends.
        while let Some(rules) = self.prefixes.get(prefix as usize) {
            if !rules.contains(key) {
                prefix = rules.parent;
                continue;
            }
            if rules.best().matches(proto, port) {
                return Some(rules.rule);
            }
            if rules.has_more {
                // Rare: a search is fine here.
                let (start, end) = match self.more.binary_search_by_key(&prefix, |m| m.0) {
                    Ok(i) => self.more.get(i).map_or((0, 0), |m| (m.1, m.2)),
                    Err(_) => (0, 0),
                };
                let entries = self
                    .entries
                    .get(start as usize..end as usize)
                    .unwrap_or_default();
                if let Some(entry) = entries.iter().find(|e| e.matches(proto, port)) {
                    return Some(entry.rule);
                }
            }
            prefix = rules.parent;
        }
        None
    }

    /// Bytes used, for tests and diagnostics.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.roots.capacity() * std::mem::size_of::<[Root; 2]>()
            + self.tries.heap_bytes()
            + self.prefixes.capacity() * std::mem::size_of::<PrefixRules>()
            + self.more.capacity() * std::mem::size_of::<(u32, u32, u32)>()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.direct_prefix.capacity() * std::mem::size_of::<u32>()
    }
}

/// Arena indices are u32; the builder caps rules far below that.
fn to_u32(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(NONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stay_small() {
        // Two per cache line; see `PrefixRules`.
        assert_eq!(std::mem::size_of::<PrefixRules>(), 32);
    }
}
