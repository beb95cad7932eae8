//! Longest-prefix match: which of a set of prefixes is the longest one that
//! contains an address.
//!
//! A multibit trie with a stride of 6 bits: a node looks at 6 bits of the
//! key, so a lookup visits at most 6 nodes for IPv4 and 22 for IPv6 however
//! many prefixes there are. A prefix whose length is not a multiple of 6 is
//! expanded to every slot it covers, so each slot directly holds its result:
//! the longest prefix covering it.
//!
//! Nodes are compressed as in Poptrie (Asai and Ohara, SIGCOMM 2015): rather
//! than 64 slots, a node has two 64-bit maps, one marking the slots that
//! have a child, and one marking which children are leaves (below) and,
//! among the other slots, where a run of equal results starts. Children
//! and results are stored contiguously and found by counting bits.
//! Nothing is allocated per node.
//!
//! A node whose free slots hold at most two distinct results (most nodes
//! of a large table: one prefix among inherited results) keeps them
//! inline, with a map of which slots hold the second: a lookup that ends
//! there reads nothing more than the node, one cache line.
//!
//! Most children of a large table hold one prefix and nothing else: no
//! longer prefix below it, no shorter one above covering it. Such a child
//! is a *leaf* of 8 bytes rather than a node of 32 (see [`Leaf`]), which
//! cuts the memory a large table's lookups roam over by about 40% (3.0 to
//! 1.8 MB for 100k rules), and with it the share of them that miss the
//! processor's caches.
//!
//! Levels where nothing happens (no prefix ends there and all prefixes go
//! through the same slot, as in sparse IPv6 tables) are skipped: the node
//! below records its depth, and a lookup jumps over those bits. A node
//! keeps the bits it skipped when there are at most 24 of them, and the
//! root of a trie keeps its whole path, so a lookup usually checks the
//! skipped bits as it goes and knows its answer is *exact*. When it cannot
//! (a longer skip) or they differ, it returns a *candidate*: a longer
//! prefix that the real answer encloses (or one with no real answer at
//! all). The caller then checks the candidate against the key and walks
//! up the enclosing prefixes until one contains it, a walk it needs anyway
//! to fall back when a prefix's rules do not match the protocol or port
//! (see [`crate::index`]).
//!
//! Keys are left-aligned 128-bit values (see [`crate::key`]): IPv4 and IPv6
//! tries share this code and one arena.

/// "No node" and "no prefix".
pub(crate) const NONE: u32 = u32::MAX;

/// Bits consumed per node.
const STRIDE: u32 = 6;
const SLOTS: usize = 1 << STRIDE;
/// The most nodes a lookup visits: nodes sit at depths 0, 6, ..., 126.
const MAX_LEVELS: usize = 22;

/// A prefix to store: `key` has no bit set past `len`; `value` is what a
/// lookup of an address it contains returns, if no longer prefix does.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Prefix {
    pub key: u128,
    pub len: u8,
    pub value: u32,
}

/// The arena's unit: one node, or four leaves. Aligned to 32 bytes, two
/// per cache line, so that no node straddles two lines (with the
/// allocator's 16-byte alignment, every other one did).
#[derive(Clone, Copy, Default, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(32))]
pub(crate) struct Block([u64; 4]);

impl Block {
    /// Unit `i % 4` (a leaf), read where it is.
    #[inline(always)]
    pub(crate) fn unit(&self, i: usize) -> u64 {
        self.0[i % 4]
    }
}

/// A node, as [`Node::encode`] packs it into a [`Block`].
#[derive(Clone, Copy, Default, Debug)]
struct Node {
    /// Slot `s` has a child, a node or a leaf: bit `s`.
    children: u64,
    /// For a slot with a child: the child is a leaf. Among the others: in a
    /// node with results in the arena, slot `s` starts a new run of equal
    /// results (the first such slot always starts a run); in an inline
    /// node, slot `s` holds `second` rather than `first`.
    marks: u64,
    /// The block of the child node of the lowest slot that has one. The
    /// leaf children follow the child nodes, packed four to a block.
    first_child: u32,
    /// Index in `results` of the first run's result, or in an inline node
    /// the result of the free slots not in `marks`.
    first: u32,
    /// In an inline node, the result of the free slots in `marks`.
    second: u32,
    /// The first key bit the node looks at (a multiple of 6, below 128),
    /// plus [`INLINE`] for an inline node.
    depth: u8,
    /// The key bits of the levels skipped above this node, right-aligned,
    /// when there are at most [`SKIP_BITS`] of them.
    skipped: u32,
}

impl Node {
    fn encode(self) -> Block {
        Block([
            self.children,
            self.marks,
            u64::from(self.first_child) | u64::from(self.first) << 32,
            u64::from(self.second) | u64::from(self.depth) << 32 | u64::from(self.skipped) << 40,
        ])
    }

    #[inline(always)]
    fn decode(block: &Block) -> Node {
        let [children, marks, c, d] = block.0;
        Node {
            children,
            marks,
            first_child: c as u32,
            first: (c >> 32) as u32,
            second: d as u32,
            depth: (d >> 32) as u8,
            skipped: (d >> 40) as u32,
        }
    }
}

/// A child holding one prefix and nothing else (no longer prefix below
/// it, no result around it), in 8 bytes:
///
/// - bits 0..32: the value;
/// - 32..40: the prefix's length;
/// - 40..64: the prefix's key bits from the first bit the child looks at
///   to its length, right-aligned: at most [`LEAF_BITS`] of them.
///
/// A key that reaches the child has the value if it has those bits, and
/// no result in this trie otherwise: the leaf knows that exactly, at any
/// depth.
#[derive(Clone, Copy, Debug)]
struct Leaf(u64);

/// The most key bits a leaf records: a child whose prefix is longer, past
/// the bits above it, is a node.
const LEAF_BITS: u32 = 24;

impl Leaf {
    /// The leaf of `prefix`, a child whose key bits start at `from` (see
    /// [`is_leaf`]).
    fn new(prefix: &Prefix, from: u32) -> Leaf {
        let len = u32::from(prefix.len);
        Leaf(
            u64::from(prefix.value)
                | u64::from(len) << 32
                | u64::from(bits(prefix.key, from, len - from)) << 40,
        )
    }

    /// The result of `key`, which went through the levels above `from`.
    /// Whatever the leaf holds, at most a wrong value: `bits` takes any
    /// length.
    #[inline(always)]
    fn lookup(self, key: u128, from: u32) -> u32 {
        let len = u32::from((self.0 >> 32) as u8);
        if bits(key, from, len.wrapping_sub(from)) == (self.0 >> 40) as u32 {
            self.0 as u32
        } else {
            NONE
        }
    }
}

/// The most skipped bits a node records.
const SKIP_BITS: u32 = 24;

/// Key bits the fan-out of a large trie looks at.
const FANOUT_BITS: u32 = 12;
/// Tries of at least this many prefixes get a fan-out: below, its 4096
/// nodes (128 KiB) would outweigh the two levels it saves.
const FANOUT_MIN: usize = 4096;

/// Where a lookup of one trie starts.
///
/// Laid out as stored in a compiled index (see [`crate::compiled`]): no
/// padding, every bit pattern a valid (if useless) root.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct Root {
    /// The key bits above the root (the levels skipped there), left
    /// aligned: every prefix of the trie starts with them.
    path: u128,
    /// The root node, or the first node of the fan-out; [`NONE`] for an
    /// empty trie.
    node: u32,
    /// How many they are.
    depth: u8,
    /// Whether the root is a fan-out: rather than a node and its children,
    /// the nodes of the next [`FANOUT_BITS`] bits in slot order, found
    /// without counting bits, and without the two levels of nodes above
    /// them. 0 or 1.
    fanout: u8,
    _pad: [u8; 10],
}

impl Root {
    /// The root of an empty trie.
    pub(crate) const EMPTY: Root = Root {
        node: NONE,
        path: 0,
        depth: 0,
        fanout: 0,
        _pad: [0; 10],
    };
}

/// The flag of an inline node in [`Node::depth`].
const INLINE: u8 = 0x80;

use crate::index::Arrays;
use crate::key::mask;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// An arena of tries.
#[derive(Clone, Default, Debug)]
pub(crate) struct Tries {
    blocks: Vec<Block>,
    results: Vec<u32>,
}

/// The slot of `key` in a node at `depth` (its bits `depth..depth + 6`).
#[inline(always)]
fn slot(key: u128, depth: u32) -> usize {
    // One 128-bit shift rather than two. `depth` < 128 always; past 122
    // (the deepest node is at 126) the bits past the end read as zeros.
    const LAST: u32 = 128 - STRIDE;
    if depth <= LAST {
        (key >> (LAST - depth)) as usize & (SLOTS - 1)
    } else {
        (key << (depth - LAST).min(STRIDE)) as usize & (SLOTS - 1)
    }
}

impl Tries {
    /// Adds a trie holding `prefixes` and returns its root
    /// ([`Root::EMPTY`] if there are none). `prefixes` must be sorted by key
    /// then length (so that a prefix comes before the ones it contains) and
    /// unique.
    pub(crate) fn add(&mut self, prefixes: &[Prefix]) -> Root {
        let Some(first) = prefixes.first() else {
            return Root::EMPTY;
        };
        let depth = skip_idle_levels(0, prefixes);
        if prefixes.len() >= FANOUT_MIN && depth + FANOUT_BITS <= 128 - STRIDE {
            return Root {
                node: self.fanout(depth, prefixes),
                path: mask(first.key, depth as u8),
                depth: depth as u8,
                fanout: 1,
                _pad: [0; 10],
            };
        }
        let root = self.blocks.len();
        self.blocks.push(Block::default());
        let node = self.build(0, prefixes, NONE);
        self.blocks[root] = node.encode();
        Root {
            node: index_u32(root),
            path: mask(first.key, depth as u8),
            depth: depth as u8,
            fanout: 0,
            _pad: [0; 10],
        }
    }

    /// Builds the fan-out of `prefixes` at `depth` (see [`Root`]) and
    /// returns its first node: one node per value of the key bits
    /// `depth..depth + FANOUT_BITS`, holding the prefixes under it, or just
    /// the result there when none goes deeper.
    fn fanout(&mut self, depth: u32, prefixes: &[Prefix]) -> u32 {
        let end = depth + FANOUT_BITS;
        let ends_here = |p: &Prefix| u32::from(p.len) <= end;
        let fanout = 1usize << FANOUT_BITS;
        // The longest prefix ending in the fan-out that covers each slot:
        // sorted order puts an enclosing prefix first, the longer one wins.
        let mut results = vec![NONE; fanout];
        for p in prefixes.iter().filter(|p| ends_here(p)) {
            let span = 1usize << (end - u32::from(p.len));
            let first = bits(p.key, depth, FANOUT_BITS) as usize & !(span - 1);
            if let Some(slots) = results.get_mut(first..first + span) {
                slots.fill(p.value);
            }
        }
        let base = self.blocks.len();
        self.blocks.resize(base + fanout, Block::default());
        for (s, &result) in results.iter().enumerate() {
            self.blocks[base + s] = Node {
                first: result,
                second: NONE,
                depth: end as u8 | INLINE,
                ..Node::default()
            }
            .encode();
        }
        for (s, group) in groups(prefixes, |p| {
            (!ends_here(p)).then(|| bits(p.key, depth, FANOUT_BITS) as usize)
        }) {
            let node = self.build(end, group, results[s]);
            self.blocks[base + s] = node.encode();
        }
        index_u32(base)
    }

    /// Builds the node for `prefixes`, which are longer than `depth` and
    /// share the first `depth` bits of their keys (the node's path).
    /// `inherited` is the result of the longest prefix ending above the
    /// node that contains its path.
    fn build(&mut self, start: u32, prefixes: &[Prefix], inherited: u32) -> Node {
        let depth = skip_idle_levels(start, prefixes);
        // All prefixes share the skipped bits: take them from any.
        let skipped = match (depth - start, prefixes.first()) {
            (1..=SKIP_BITS, Some(p)) => bits(p.key, start, depth - start),
            _ => 0,
        };
        let end = depth + STRIDE;
        let ends_here = |p: &Prefix| u32::from(p.len) <= end;

        // Most nodes of a large table hold a single prefix, which ends
        // there (levels are skipped until it does): its slots and the
        // inherited result, inline, without going through the slot array.
        if let [p] = prefixes {
            if ends_here(p) {
                let span = end - u32::from(p.len);
                let first = slot(p.key, depth) as u32 & !((1 << span) - 1);
                let run = u64::MAX >> (64 - (1u32 << span));
                return Node {
                    children: 0,
                    marks: run << first,
                    first_child: index_u32(self.blocks.len()),
                    first: inherited,
                    second: p.value,
                    depth: depth as u8 | INLINE,
                    skipped,
                };
            }
        }

        // Expand the prefixes that end in this node to their slots. An
        // enclosing prefix comes before those it encloses (sorted order), so
        // a longer prefix overwrites a shorter one: the longest wins.
        let mut results = [inherited; SLOTS];
        let mut children = 0u64;
        // The slots where an expanded prefix starts or ends: only there can
        // two neighbouring slots differ.
        let mut bounds = 0u64;
        for p in prefixes {
            let s = slot(p.key, depth);
            if ends_here(p) {
                let span = 1usize << (end - u32::from(p.len));
                let first = s & !(span - 1);
                results[first..first + span].fill(p.value);
                bounds |= 1 << first;
                bounds |= 1u64.checked_shl((first + span) as u32).unwrap_or(0);
            } else {
                children |= 1 << s;
            }
        }

        let starts = run_starts(&results, children, bounds);
        let (marks, first, second, inline) = match inline_results(&results, children, starts) {
            Some((marks, first, second)) => (marks, first, second, INLINE),
            None => {
                let first = index_u32(self.results.len());
                encode_runs(&results, starts, &mut self.results);
                (starts, first, NONE, 0)
            }
        };

        // The children, in slot order.
        let under_slot = |p: &Prefix| (!ends_here(p)).then(|| slot(p.key, depth));
        let mut leaves = 0u64;
        for (s, group) in groups(prefixes, under_slot) {
            if is_leaf(end, group, results[s]) {
                leaves |= 1 << s;
            }
        }
        // Reserve them now, contiguously: the nodes, then the leaves.
        let first_child = self.blocks.len();
        let node_count = (children & !leaves).count_ones() as usize;
        let leaf_blocks = (leaves.count_ones() as usize).div_ceil(4);
        self.blocks
            .resize(first_child + node_count + leaf_blocks, Block::default());
        let mut next_node = first_child;
        let mut next_leaf = (first_child + node_count) * 4;
        for (s, group) in groups(prefixes, under_slot) {
            if is_leaf(end, group, results[s]) {
                self.blocks[next_leaf / 4].0[next_leaf % 4] = Leaf::new(&group[0], end).0;
                next_leaf += 1;
            } else {
                let child = self.build(end, group, results[s]);
                self.blocks[next_node] = child.encode();
                next_node += 1;
            }
        }
        debug_assert_eq!(next_node, first_child + node_count);

        Node {
            children,
            marks: marks | leaves,
            first_child: index_u32(first_child),
            first,
            second,
            // At most 126, see `skip_idle_levels`: the flag bit is free.
            depth: depth as u8 | inline,
            skipped,
        }
    }

    /// A candidate for the longest prefix of the trie at `root` that
    /// contains `key` (see the module documentation), or [`NONE`], and
    /// whether it is exact: no level was skipped on the way, so the
    /// candidate is the longest prefix containing `key`, with no need to
    /// check it. Allocation-free, panic-free, at most 22 nodes.
    #[cfg(test)]
    pub(crate) fn candidate(&self, root: Root, key: u128) -> (u32, bool) {
        let arrays = crate::index::Slices {
            blocks: &self.blocks,
            results: &self.results,
            ..crate::index::Slices::default()
        };
        candidate(arrays, root, key)
    }

    /// The arrays a lookup reads.
    #[inline(always)]
    pub(crate) fn arrays(&self) -> (&[Block], &[u32]) {
        (&self.blocks, &self.results)
    }

    /// Makes room for tries of `prefixes` prefixes in all, so that large
    /// sets are not copied over and over as the arena grows. Typical
    /// tables need about one result and well under one block per prefix,
    /// plus the fan-outs; the blocks are reserved for the worst case, as
    /// pages never written cost nothing but address space.
    pub(crate) fn reserve(&mut self, prefixes: usize) {
        // The fan-outs of one large set, one a family (only tries of
        // FANOUT_MIN prefixes get one; more large sets grow the arena).
        let fanouts = if prefixes >= FANOUT_MIN {
            2 << FANOUT_BITS
        } else {
            0
        };
        self.blocks.reserve(prefixes.saturating_add(fanouts));
        self.results.reserve(prefixes);
    }

    /// Releases the spare capacity of the results once every trie is
    /// built. The blocks keep theirs: shrinking would copy them (their
    /// alignment rules out resizing in place), and their unused tail was
    /// never written, so it takes no memory.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.results.shrink_to_fit();
    }

    /// Bytes used, for tests and diagnostics: the blocks written (the
    /// reserve past them is never touched, see [`Tries::shrink_to_fit`]).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<Block>()
            + self.results.capacity() * std::mem::size_of::<u32>()
    }
}

/// The lookup of one trie of an arena, over its arrays (owned, or mapped
/// from a compiled index): the candidate result for `key` and whether it
/// is exact (see the module's documentation). Bounded and panic-free
/// whatever the arrays hold: at most [`MAX_LEVELS`] nodes, every index
/// checked.
#[inline]
pub(crate) fn candidate<'a>(arrays: impl Arrays<'a>, root: Root, key: u128) -> (u32, bool) {
    let mut exact = mask(key, root.depth) == root.path;
    // The first bit the next node looks at, were no level skipped.
    let mut expected = u32::from(root.depth);
    let mut index = root.node;
    if root.fanout != 0 {
        index = index.wrapping_add(bits(key, expected, FANOUT_BITS));
        expected += FANOUT_BITS;
    }
    for _ in 0..MAX_LEVELS {
        let Some(node) = arrays.block(index as usize).as_ref().map(Node::decode) else {
            break;
        };
        let depth = u32::from(node.depth & !INLINE) & 127;
        if depth != expected {
            let skip = depth.wrapping_sub(expected);
            exact &= skip <= SKIP_BITS && bits(key, expected, skip) == node.skipped;
        }
        let s = slot(key, depth);
        let bit = 1u64 << s;
        if node.children & bit != 0 {
            // Children of the lower slots come first, nodes before
            // leaves. Counting bits is slow without a popcnt
            // instruction (not in the x86-64 baseline), and full nodes,
            // common near the root of large tables, need no counting.
            let nodes = node.children & !node.marks;
            if node.marks & bit == 0 {
                let rank = if nodes == u64::MAX {
                    s as u32
                } else {
                    (nodes & (bit - 1)).count_ones()
                };
                index = node.first_child.wrapping_add(rank);
                expected = depth + STRIDE;
                continue;
            }
            let leaves = node.children & node.marks;
            let unit = (node.first_child as usize + nodes.count_ones() as usize) * 4
                + (leaves & (bit - 1)).count_ones() as usize;
            let Some(leaf) = arrays.unit(unit).map(Leaf) else {
                break;
            };
            return (leaf.lookup(key, depth + STRIDE), exact);
        } else if node.depth & INLINE != 0 {
            let value = if node.marks & bit != 0 {
                node.second
            } else {
                node.first
            };
            return (value, exact);
        } else {
            // The run holding slot `s` is the last free slot marked at
            // or before it.
            let runs = node.marks & !node.children;
            let run = (runs & (u64::MAX >> (63 - s))).count_ones();
            let Some(run) = run.checked_sub(1) else { break };
            let at = node.first as usize + run as usize;
            return (arrays.result(at).unwrap_or(NONE), exact);
        }
    }
    (NONE, false)
}

/// The slots without a child that start a run of equal results: the first
/// one, and any whose result differs from the free slot before it (runs go
/// on across child slots). `bounds` has a bit wherever `results` may differ
/// from the slot before, so only those slots, and those right after a child,
/// are compared.
fn run_starts(results: &[u32; SLOTS], children: u64, bounds: u64) -> u64 {
    let free = !children;
    let mut starts = free & free.wrapping_neg();
    let mut candidates = (bounds | children << 1) & free & !starts;
    while candidates != 0 {
        let s = candidates.trailing_zeros();
        candidates &= candidates - 1;
        // The free slot before `s`; there is one, as `s` is not the first.
        let before = free & ((1u64 << s) - 1);
        let prev = 63 - before.leading_zeros();
        if before != 0 && results[s as usize] != results[prev as usize] {
            starts |= 1 << s;
        }
    }
    starts
}

/// The inline form of a node's results, if its free slots hold at most two
/// distinct ones: (map of the slots holding the second, first, second).
/// `starts` are the [`run_starts`].
fn inline_results(results: &[u32; SLOTS], children: u64, starts: u64) -> Option<(u64, u32, u32)> {
    let free = !children;
    if free == 0 {
        return Some((0, NONE, NONE));
    }
    let first = results[starts.trailing_zeros() as usize];
    let mut second = NONE;
    let mut leaves = 0u64;
    let mut rest = starts;
    while rest != 0 {
        let s = rest.trailing_zeros();
        rest &= rest - 1;
        let value = results[s as usize];
        if value == first {
            continue;
        }
        if leaves != 0 && value != second {
            return None;
        }
        second = value;
        // The run covers the free slots from `s` to the next start.
        let end = if rest == 0 {
            0
        } else {
            !0u64 << rest.trailing_zeros()
        };
        leaves |= !0u64 << s & !end & free;
    }
    Some((leaves, first, second))
}

/// Run-length encodes the results of the slots that have no child, given
/// their [`run_starts`]: pushes one result per run to `out`.
fn encode_runs(results: &[u32; SLOTS], starts: u64, out: &mut Vec<u32>) {
    let mut rest = starts;
    while rest != 0 {
        out.push(results[rest.trailing_zeros() as usize]);
        rest &= rest - 1;
    }
}

/// The groups of `prefixes` under each slot of a node, in slot order, as
/// (slot, prefixes); `slot_of` gives a prefix's slot, or `None` for one
/// that ends in the node. The prefixes under one slot are contiguous:
/// sorted by key, they share the slot's bits, and no prefix ending in the
/// node sorts between two of them (it would have to share those bits and
/// be shorter, and then it sorts before them all).
fn groups<'a>(
    prefixes: &'a [Prefix],
    slot_of: impl Fn(&Prefix) -> Option<usize> + 'a,
) -> impl Iterator<Item = (usize, &'a [Prefix])> + 'a {
    let mut i = 0;
    std::iter::from_fn(move || {
        let (start, s) = loop {
            let p = prefixes.get(i)?;
            i += 1;
            if let Some(s) = slot_of(p) {
                break (i - 1, s);
            }
        };
        while prefixes.get(i).is_some_and(|p| slot_of(p) == Some(s)) {
            i += 1;
        }
        Some((s, &prefixes[start..i]))
    })
}

/// Whether the child starting at `from` that holds `group` is a [`Leaf`]:
/// it holds a single prefix, no result is `inherited` around it, and the
/// prefix has at most [`LEAF_BITS`] past `from` (it has some: it does not
/// end above the child).
fn is_leaf(from: u32, group: &[Prefix], inherited: u32) -> bool {
    match group {
        [p] => inherited == NONE && u32::from(p.len) - from <= LEAF_BITS,
        _ => false,
    }
}

/// The depth of the node for `prefixes`, starting from `depth` and going
/// down as long as a level would hold nothing but one child: no prefix ends
/// in it, and all prefixes go through the same slot.
fn skip_idle_levels(mut depth: u32, prefixes: &[Prefix]) -> u32 {
    let (Some(first), Some(last)) = (prefixes.first(), prefixes.last()) else {
        return depth;
    };
    // Sorted keys: the bits the first and last share, all share.
    let shared = (first.key ^ last.key).leading_zeros();
    let shortest = prefixes.iter().map(|p| u32::from(p.len)).min().unwrap_or(0);
    // `shortest` is at most 128, so `depth` stays below 128 - 6.
    while depth + STRIDE <= shared && depth + STRIDE < shortest {
        depth += STRIDE;
    }
    depth
}

/// `len` (1 to 32) bits of `key` from bit `from`, right-aligned.
#[inline(always)]
fn bits(key: u128, from: u32, len: u32) -> u32 {
    ((key << (from & 127)) >> (128 - len.clamp(1, 32))) as u32
}

/// Arena indices are u32; the builder caps rules far below that.
fn index_u32(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(NONE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contains(p: &Prefix, key: u128) -> bool {
        mask(key, p.len) == p.key
    }

    /// The reference: the longest of `prefixes` containing `key`.
    fn naive(prefixes: &[Prefix], key: u128) -> u32 {
        prefixes
            .iter()
            .filter(|p| contains(p, key))
            .max_by_key(|p| p.len)
            .map_or(NONE, |p| p.value)
    }

    /// What the index does with a candidate: walk up to the first prefix
    /// that contains the key.
    fn resolve(prefixes: &[Prefix], mut value: u32, key: u128) -> u32 {
        while let Some(p) = prefixes.get(value as usize) {
            if contains(p, key) {
                return value;
            }
            // The longest prefix enclosing `p`.
            value = prefixes
                .iter()
                .filter(|q| q.len < p.len && contains(q, p.key))
                .max_by_key(|q| q.len)
                .map_or(NONE, |q| q.value);
        }
        NONE
    }

    fn trie(raw: &[(u128, u8)]) -> (Tries, Root, Vec<Prefix>) {
        let mut prefixes: Vec<Prefix> = raw
            .iter()
            .map(|&(key, len)| Prefix {
                key: mask(key, len),
                len,
                value: 0,
            })
            .collect();
        prefixes.sort_by_key(|p| (p.key, p.len));
        prefixes.dedup_by_key(|p| (p.key, p.len));
        for (i, p) in prefixes.iter_mut().enumerate() {
            p.value = i as u32;
        }
        let mut tries = Tries::default();
        let root = tries.add(&prefixes);
        (tries, root, prefixes)
    }

    fn check(raw: &[(u128, u8)], probes: &[u128]) {
        let (tries, root, prefixes) = trie(raw);
        for &probe in probes {
            let (candidate, exact) = tries.candidate(root, probe);
            let want = naive(&prefixes, probe);
            assert_eq!(
                resolve(&prefixes, candidate, probe),
                want,
                "probe {probe:#x}"
            );
            // An exact candidate needs no check.
            if exact {
                assert_eq!(candidate, want, "exact candidate, probe {probe:#x}");
            }
        }
    }

    /// Run-length encoding of `results`: (starts, one result per run).
    fn runs(results: &[u32; SLOTS], children: u64, bounds: u64) -> (u64, Vec<u32>) {
        let starts = run_starts(results, children, bounds);
        let mut out = Vec::new();
        encode_runs(results, starts, &mut out);
        (starts, out)
    }

    #[test]
    fn runs_skip_children() {
        let mut results = [7; SLOTS];
        results[10..20].fill(8);
        results[40] = 9;
        // Slot 0 and 40 have children; 10..20 are an 8-run, interrupted by
        // child slot 15, and the run of 7 resumes at 20.
        let children = 1 | 1 << 15 | 1 << 40;
        let bounds = 1 << 10 | 1 << 20 | 1 << 40 | 1 << 41;
        let want = (1 << 1 | 1 << 10 | 1 << 20, vec![7, 8, 7]);
        assert_eq!(runs(&results, children, bounds), want);
        // Comparing every slot finds the same runs.
        assert_eq!(runs(&results, children, u64::MAX), want);
        assert_eq!(runs(&results, u64::MAX, bounds), (0, vec![]));
        assert_eq!(runs(&[3; SLOTS], 0, 0), (1, vec![3]));
        // A run starting right after a child, at no bound.
        let mut results = [1; SLOTS];
        results[4..8].fill(2);
        let want = (1 | 1 << 6 | 1 << 8, vec![1, 2, 1]);
        assert_eq!(runs(&results, 0b110000, 1 << 4 | 1 << 8), want);
    }

    #[test]
    fn empty() {
        let (tries, root, _) = trie(&[]);
        assert_eq!(root.node, NONE);
        assert_eq!(tries.candidate(root, 5).0, NONE);
    }

    #[test]
    fn default_route_only() {
        let (tries, root, _) = trie(&[(0, 0)]);
        assert_eq!(tries.candidate(root, 0), (0, true));
        assert_eq!(tries.candidate(root, u128::MAX), (0, true));
    }

    /// Probes at and around every bit of the given keys.
    fn probes(keys: &[u128]) -> Vec<u128> {
        let mut probes = vec![0, u128::MAX];
        for &k in keys {
            probes.push(k);
            for bit in 0..128 {
                probes.push(k ^ (1 << bit));
                probes.push(k ^ (u128::MAX >> bit));
            }
        }
        probes
    }

    #[test]
    fn every_length_against_naive() {
        // Nested prefixes of many lengths along two addresses, plus
        // neighbours.
        let a: u128 = 0x2001_0db8_85a3_0000_0000_8a2e_0370_7334;
        let b: u128 = !a;
        let mut raw = Vec::new();
        for len in (0..=128u8).step_by(5).chain([1, 6, 7, 12, 13, 127, 128]) {
            raw.push((a, len));
            raw.push((b, len));
            raw.push((a ^ (1u128 << (127 - u32::from(len.min(127)))), len));
        }
        check(&raw, &probes(&[a, b]));
    }

    #[test]
    fn skipped_levels_are_verified() {
        // Long prefixes under one short one, far apart: the levels between
        // are skipped, and keys that differ there must fall back.
        let a: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0000;
        let raw = [
            (a, 16),
            (a | 0x1234 << 64, 64),
            (a | 0x1235 << 64, 64),
            (a | 0x1234 << 64 | 1, 128),
            (0xffff << 112, 120),
        ];
        check(&raw, &probes(&[a, a | 0x1234 << 64, a | 0x1234 << 64 | 1]));
        // Nothing at all above the skipped levels.
        check(&raw[1..], &probes(&[a, a | 0x1234 << 64]));
        check(&[(a, 100)], &probes(&[a]));
    }

    #[test]
    fn inline_only_with_two_results() {
        let mut results = [NONE; SLOTS];
        results[8..12].fill(4);
        // Slot 9 has a child: its value does not count.
        let inline = |results: &[u32; SLOTS], children: u64| {
            inline_results(results, children, run_starts(results, children, u64::MAX))
        };
        let (leaves, first, second) = inline(&results, 1 << 9).unwrap();
        assert_eq!((first, second), (NONE, 4));
        assert_eq!(leaves, 0b1101 << 8);
        // Two runs of the second value.
        results[30] = 4;
        let (leaves, _, _) = inline(&results, 1 << 9).unwrap();
        assert_eq!(leaves, 0b1101 << 8 | 1 << 30);
        results[20] = 5;
        assert_eq!(inline(&results, 1 << 9), None);
        // ... unless the third is under a child.
        assert!(inline(&results, 1 << 20).is_some());
        assert_eq!(inline(&[3; SLOTS], 0), Some((0, 3, NONE)));
        assert_eq!(inline(&[3; SLOTS], u64::MAX), Some((0, NONE, NONE)));
    }

    /// (nodes, leaves) reachable from the node at `index`.
    fn shape(tries: &Tries, index: u32) -> (usize, usize) {
        let node = Node::decode(&tries.blocks[index as usize]);
        let child_nodes = node.children & !node.marks;
        let leaves = (node.children & node.marks).count_ones() as usize;
        (0..child_nodes.count_ones())
            .map(|i| shape(tries, node.first_child + i))
            .fold((1, leaves), |(n, l), (cn, cl)| (n + cn, l + cl))
    }

    #[test]
    fn lone_prefixes_are_leaves_up_to_the_skip_they_can_check() {
        let top = |byte: u128, rest: u128| byte << 120 | rest << 96;
        // Under different root slots (first 6 bits): a /28 whose child
        // skips 18 bits (a leaf), a /32 whose child skips 24 (a node), a /8
        // that skips none (a leaf).
        let raw = [
            (top(0x04, 0x12_3456), 28),
            (top(0x44, 0x12_3456), 32),
            (top(0x84, 0), 8),
        ];
        let (tries, root, _) = trie(&raw);
        assert_eq!(shape(&tries, root.node), (2, 2));
        let keys: Vec<u128> = raw.iter().map(|&(k, _)| k).collect();
        check(&raw, &probes(&keys));
        // With a shorter prefix around each, no child is a leaf: their
        // other slots hold its result.
        let mut nested = raw.to_vec();
        nested.extend(raw.iter().map(|&(k, _)| (k, 7)));
        let (tries, root, _) = trie(&nested);
        assert_eq!(shape(&tries, root.node).1, 0);
        check(&nested, &probes(&keys));
    }

    #[test]
    fn sparse_tables_are_mostly_leaves() {
        // IPv4-like /24s and /32s, apart: most children hold one prefix.
        let mut rng = crate::test_rng::Rng(0x0123_4567_89ab_cdef);
        let raw: Vec<(u128, u8)> = (0..3000)
            .map(|i| {
                (
                    rng.wide() & (u128::MAX << 96),
                    if i % 3 == 0 { 32 } else { 24 },
                )
            })
            .collect();
        let (tries, root, prefixes) = trie(&raw);
        let (nodes, leaves) = shape(&tries, root.node);
        assert!(leaves > 2 * nodes, "{nodes} nodes, {leaves} leaves");
        // With a node of 32 bytes for each, this took over 32 bytes a
        // prefix; leaves bring it to about 20.
        let bytes = tries.heap_bytes();
        assert!(bytes < 24 * prefixes.len(), "{bytes} bytes");
        let mut probes: Vec<u128> = raw.iter().map(|&(k, _)| k | 0x5a << 96).collect();
        probes.extend((0..3000).map(|_| rng.wide()));
        check(&raw, &probes);
    }

    #[test]
    fn random_tables_against_naive() {
        // Dense and sparse random tables in a few small regions, so that
        // nodes hold one, two or many results, and levels get skipped.
        let mut rng = crate::test_rng::Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..40 {
            let base = rng.wide();
            let spread = 8 + (round % 5) * 20;
            let mut raw = Vec::new();
            let mut keys = Vec::new();
            for _ in 0..(10 + round * 5) {
                let noise = (rng.wide()) >> spread;
                let key = base ^ noise;
                let len = rng.below(129) as u8;
                raw.push((key, len));
                keys.push(key);
            }
            check(&raw, &probes(&keys[..keys.len().min(6)]));
            let randoms: Vec<u128> = (0..500).map(|_| base ^ ((rng.wide()) >> spread)).collect();
            check(&raw, &randoms);
        }
    }

    #[test]
    fn fanout_against_naive() {
        let mut rng = crate::test_rng::Rng(0x9e37_79b9_7f4a_7c15);
        // IPv4-like (keys in the top 32 bits, a default route and short
        // prefixes expanded into the fan-out), and IPv6-like under one /32
        // (the fan-out starts below the root's skipped bits).
        let v6_base: u128 = 0x2001_0db8 << 96;
        for (base, spread, lens) in [(0u128, 0u32, (0u8, 32u8)), (v6_base, 32, (33, 128))] {
            let mut raw = vec![(base, lens.0)];
            while raw.len() < FANOUT_MIN * 2 {
                let noise = (rng.wide()) >> spread;
                let len = lens.0 + rng.below(usize::from(lens.1 - lens.0) + 1) as u8;
                raw.push((base ^ noise, len));
            }
            let (_, root, _) = trie(&raw);
            assert!(root.fanout != 0, "a fan-out for {} prefixes", raw.len());
            let mut probes: Vec<u128> = raw.iter().step_by(7).map(|&(k, _)| k).collect();
            probes.extend(
                raw.iter()
                    .step_by(11)
                    .map(|&(k, _)| k ^ 1 << rng.below(128)),
            );
            probes.extend((0..1000).map(|_| base ^ ((rng.wide()) >> spread)));
            check(&raw, &probes);
        }
    }
}
