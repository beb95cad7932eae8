//! The lookup structure of a rule set: for each set (global, or a profile)
//! and each family, a trie of the prefixes that have rules; for each prefix,
//! its rules in precedence order and the next shorter prefix to fall back
//! to when none of them matches the protocol and port.
//!
//! A prefix with a single rule for every protocol and port (most of them)
//! is stored in the trie as that rule, flagged [`DIRECT`]: when the trie
//! says its candidate is exact, that is the answer, and the lookup reads
//! nothing but trie nodes. Other candidates go through the prefix records.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::key::{mask, Family};
use crate::placement::{runs, set_of, Placed, GLOBAL};
use crate::trie::{self, Block, Root, Tries, NONE};
use crate::{Dest, Proto, ProtoMatch, Rule};

/// The rules of one prefix of one trie, in 32 bytes (two records per cache
/// line, aligned so that none straddles two): most prefixes have a single
/// rule, so the best-ranked one is stored inline, and the others, rarely
/// there, elsewhere.
///
/// Laid out as stored in a compiled index: no padding, and any bit pattern
/// is a record a lookup can read without harm.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(32))]
pub(crate) struct PrefixRules {
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
    /// A [`proto_code`].
    proto: u8,
    len: u8,
    /// Whether more rules follow, listed in [`Index::more`]: 0 or 1.
    has_more: u8,
    _pad: u8,
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
            _pad: [0; 3],
        }
    }
}

/// What the lookup needs of a rule, kept apart from [`Rule`], which is
/// larger and not needed to decide.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Entry {
    rule: u32,
    /// Ports covered, `0..=65535` for a rule without ports.
    lo: u16,
    hi: u16,
    /// The effective protocol, a [`proto_code`]: `reflect` is UDP only.
    proto: u8,
    _pad: [u8; 3],
}

/// A protocol match as stored: 0 any, 1 TCP, 2 UDP. Any other value (a
/// corrupt index) matches nothing.
pub(crate) fn proto_code(p: ProtoMatch) -> u8 {
    match p {
        ProtoMatch::Any => 0,
        ProtoMatch::Tcp => 1,
        ProtoMatch::Udp => 2,
    }
}

#[inline]
fn proto_matches(code: u8, proto: Proto) -> bool {
    match proto {
        Proto::Tcp => code == 0 || code == 1,
        Proto::Udp => code == 0 || code == 2,
    }
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
            proto: proto_code(proto),
            _pad: [0; 3],
        }
    }

    #[inline]
    fn matches(&self, proto: Proto, port: u16) -> bool {
        proto_matches(self.proto, proto) && self.lo <= port && port <= self.hi
    }

    fn matches_everything(&self) -> bool {
        self.proto == 0 && (self.lo, self.hi) == (0, u16::MAX)
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
    more: Vec<[u32; 3]>,
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
                    index.more.push([id, start, to_u32(index.entries.len())]);
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
                    has_more: u8::from(at_prefix.len() > 1),
                    _pad: 0,
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

    /// The arrays a lookup reads, borrowed.
    #[inline]
    pub(crate) fn view(&self) -> IndexView<&Index> {
        IndexView(self)
    }

    /// The arrays, borrowed.
    pub(crate) fn slices(&self) -> Slices<'_> {
        let (blocks, results) = self.tries.arrays();
        Slices {
            roots: &self.roots,
            blocks,
            results,
            prefixes: &self.prefixes,
            more: &self.more,
            entries: &self.entries,
            direct_prefix: &self.direct_prefix,
        }
    }

    /// Bytes used, for tests and diagnostics.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.roots.capacity() * std::mem::size_of::<[Root; 2]>()
            + self.tries.heap_bytes()
            + self.prefixes.capacity() * std::mem::size_of::<PrefixRules>()
            + self.more.capacity() * std::mem::size_of::<[u32; 3]>()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.direct_prefix.capacity() * std::mem::size_of::<u32>()
    }
}

/// Read access to the arrays of an index, by element: the index built in
/// this process (`&Index`), or borrowed slices ([`Slices`]: of that index,
/// or of a compiled index's bytes, see [`crate::compiled`]). One lookup
/// ([`IndexView::lookup`], [`trie::candidate`]) over both, so one
/// precedence. Every accessor is bounds-checked and `None` past the end,
/// whatever the arrays hold.
pub(crate) trait Arrays<'a>: Copy {
    /// The root of set `set`'s trie of `family` (0: IPv4, 1: IPv6).
    fn root(self, set: usize, family: usize) -> Option<Root>;
    fn block(self, i: usize) -> Option<Block>;
    /// The 8-byte unit `i` of the blocks (a leaf), read alone.
    fn unit(self, i: usize) -> Option<u64>;
    fn result(self, i: usize) -> Option<u32>;
    fn prefix(self, i: usize) -> Option<PrefixRules>;
    fn direct_prefix(self, rule: usize) -> Option<u32>;
    /// The (rarely used) lists of further rules: whole.
    fn more(self) -> &'a [[u32; 3]];
    fn entries(self) -> &'a [Entry];
}

/// The arrays of an [`Index`], borrowed.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Slices<'a> {
    pub(crate) roots: &'a [[Root; 2]],
    pub(crate) blocks: &'a [Block],
    pub(crate) results: &'a [u32],
    pub(crate) prefixes: &'a [PrefixRules],
    pub(crate) more: &'a [[u32; 3]],
    pub(crate) entries: &'a [Entry],
    pub(crate) direct_prefix: &'a [u32],
}

impl<'a> Arrays<'a> for Slices<'a> {
    #[inline(always)]
    fn root(self, set: usize, family: usize) -> Option<Root> {
        self.roots.get(set)?.get(family).copied()
    }
    #[inline(always)]
    fn block(self, i: usize) -> Option<Block> {
        self.blocks.get(i).copied()
    }
    #[inline(always)]
    fn unit(self, i: usize) -> Option<u64> {
        self.blocks.get(i / 4).map(|b| b.unit(i % 4))
    }
    #[inline(always)]
    fn result(self, i: usize) -> Option<u32> {
        self.results.get(i).copied()
    }
    #[inline(always)]
    fn prefix(self, i: usize) -> Option<PrefixRules> {
        self.prefixes.get(i).copied()
    }
    #[inline(always)]
    fn direct_prefix(self, rule: usize) -> Option<u32> {
        self.direct_prefix.get(rule).copied()
    }
    #[inline(always)]
    fn more(self) -> &'a [[u32; 3]] {
        self.more
    }
    #[inline(always)]
    fn entries(self) -> &'a [Entry] {
        self.entries
    }
}

/// Slices kept somewhere (a compiled index's, see [`crate::compiled`]),
/// read where they are rather than copied into the lookup.
impl<'a> Arrays<'a> for &'a Slices<'a> {
    #[inline(always)]
    fn root(self, set: usize, family: usize) -> Option<Root> {
        (*self).root(set, family)
    }
    #[inline(always)]
    fn block(self, i: usize) -> Option<Block> {
        (*self).block(i)
    }
    #[inline(always)]
    fn unit(self, i: usize) -> Option<u64> {
        (*self).unit(i)
    }
    #[inline(always)]
    fn result(self, i: usize) -> Option<u32> {
        (*self).result(i)
    }
    #[inline(always)]
    fn prefix(self, i: usize) -> Option<PrefixRules> {
        (*self).prefix(i)
    }
    #[inline(always)]
    fn direct_prefix(self, rule: usize) -> Option<u32> {
        (*self).direct_prefix(rule)
    }
    #[inline(always)]
    fn more(self) -> &'a [[u32; 3]] {
        self.more
    }
    #[inline(always)]
    fn entries(self) -> &'a [Entry] {
        self.entries
    }
}

/// The index built in this process, read directly (no [`Slices`] to
/// assemble on every lookup).
impl<'a> Arrays<'a> for &'a Index {
    #[inline(always)]
    fn root(self, set: usize, family: usize) -> Option<Root> {
        self.roots.get(set)?.get(family).copied()
    }
    #[inline(always)]
    fn block(self, i: usize) -> Option<Block> {
        self.tries.arrays().0.get(i).copied()
    }
    #[inline(always)]
    fn unit(self, i: usize) -> Option<u64> {
        self.tries.arrays().0.get(i / 4).map(|b| b.unit(i % 4))
    }
    #[inline(always)]
    fn result(self, i: usize) -> Option<u32> {
        self.tries.arrays().1.get(i).copied()
    }
    #[inline(always)]
    fn prefix(self, i: usize) -> Option<PrefixRules> {
        self.prefixes.get(i).copied()
    }
    #[inline(always)]
    fn direct_prefix(self, rule: usize) -> Option<u32> {
        self.direct_prefix.get(rule).copied()
    }
    #[inline(always)]
    fn more(self) -> &'a [[u32; 3]] {
        &self.more
    }
    #[inline(always)]
    fn entries(self) -> &'a [Entry] {
        &self.entries
    }
}

/// The lookup, over any [`Arrays`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct IndexView<A>(pub(crate) A);

impl<'a, A: Arrays<'a>> IndexView<A> {
    /// The index of the rule of set `set` that applies to traffic to `key`
    /// (see [`crate::key::match_key`]), if any. Allocation-free,
    /// panic-free, and bounded whatever the arrays hold.
    #[inline]
    pub(crate) fn lookup(
        self,
        set: usize,
        family: Family,
        key: u128,
        proto: Proto,
        port: u16,
    ) -> Option<u32> {
        let arrays = self.0;
        let root = arrays.root(set, family_slot(family))?;
        let (value, exact) = trie::candidate(arrays, root, key);
        let mut prefix = value;
        if value != NONE && value & DIRECT != 0 {
            let rule = value & !DIRECT;
            if exact {
                return Some(rule);
            }
            prefix = arrays.direct_prefix(rule as usize).unwrap_or(NONE);
        }
        // From the longest prefix to the shortest, the first rule that
        // matches the protocol and port. The trie's candidate may be too
        // long (see `trie`): prefixes that do not contain the key are
        // skipped on the way up. Parents have smaller indices, so this ends
        // (a mapped index is not trusted to: a parent that is not smaller
        // ends the walk).
        while let Some(rules) = arrays.prefix(prefix as usize) {
            let parent = if rules.parent < prefix {
                rules.parent
            } else {
                NONE
            };
            if !rules.contains(key) {
                prefix = parent;
                continue;
            }
            if rules.best().matches(proto, port) {
                return Some(rules.rule);
            }
            if rules.has_more != 0 {
                // Rare: a search is fine here.
                let more = arrays.more();
                let (start, end) = match more.binary_search_by_key(&prefix, |m| m[0]) {
                    Ok(i) => more.get(i).map_or((0, 0), |m| (m[1], m[2])),
                    Err(_) => (0, 0),
                };
                let entries = arrays
                    .entries()
                    .get(start as usize..end as usize)
                    .unwrap_or_default();
                if let Some(entry) = entries.iter().find(|e| e.matches(proto, port)) {
                    return Some(entry.rule);
                }
            }
            prefix = parent;
        }
        None
    }
}

/// The profile's rules, then the global rules.
#[inline(always)]
pub(crate) fn in_sets<'a, A: Arrays<'a>>(
    view: IndexView<A>,
    profile: Option<crate::ProfileId>,
    family: Family,
    key: u128,
    proto: Proto,
    port: u16,
) -> Option<u32> {
    let lookup_in = |set| view.lookup(set, family, key, proto, port);
    profile
        .and_then(|p| lookup_in(set_of(Some(p))))
        .or_else(|| lookup_in(GLOBAL))
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
