//! The text of the table, for `nft -f`.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ldsaref_rules::Proto;

use crate::{CatchAll, Compiled, Maps, Section, Verdict, SLICE, TABLE};

impl Verdict {
    /// The name of the verdict's chain (`pass` has none: it is `accept`).
    pub fn chain(self) -> Option<String> {
        Some(match self {
            Verdict::Pass => return None,
            Verdict::Deny => "deny".to_owned(),
            Verdict::Reflect => "reflect".to_owned(),
            Verdict::Saref(n) => format!("saref_{n}"),
            Verdict::Mark { value, mask } if mask == u32::MAX => format!("mark_{value:x}"),
            Verdict::Mark { value, mask } => format!("mark_{value:x}_{mask:x}"),
        })
    }

    /// The statements of the verdict's chain.
    fn statements(self) -> Vec<String> {
        match self {
            Verdict::Pass => vec![],
            // A reset answers the SYN at once (connect: ECONNREFUSED); a
            // plain drop would leave it retransmitting. A dropped datagram
            // fails its sendto with EPERM.
            // Each starts with the mark the section's chain found (0, or
            // the code that led here) set back to 0.
            Verdict::Deny => vec![
                "meta mark set 0x00000000".to_owned(),
                "meta l4proto tcp reject with tcp reset".to_owned(),
                "drop".to_owned(),
            ],
            Verdict::Reflect => vec![
                "meta mark set 0x00000000".to_owned(),
                "ct direction reply ct mark != 0 meta mark set ct mark".to_owned(),
            ],
            Verdict::Saref(n) => vec![format!("meta mark set {:#010x}", crate::mast_mark(n))],
            Verdict::Mark { value, mask } if mask == u32::MAX => {
                vec![format!("meta mark set {value:#010x}")]
            }
            Verdict::Mark { value, mask } => vec![
                "meta mark set 0x00000000".to_owned(),
                format!(
                    "meta mark set meta mark and {:#010x} or {value:#010x}",
                    !mask
                ),
            ],
        }
    }
}

fn proto(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

/// `lo-hi`, or a prefix when the interval is one.
fn addr_range(lo: u128, hi: u128, v6: bool) -> String {
    let bits = if v6 { 128 } else { 32 };
    let show = |k: u128| {
        if v6 {
            Ipv6Addr::from(k).to_string()
        } else {
            Ipv4Addr::from(u32::try_from(k).unwrap_or(u32::MAX)).to_string()
        }
    };
    let size = hi.wrapping_sub(lo).wrapping_add(1);
    let full = lo == 0 && hi == u128::MAX;
    if full || (size.is_power_of_two() && lo & (size - 1) == 0) {
        let host = if full { bits } else { size.trailing_zeros() };
        if host <= bits {
            return format!("{}/{}", show(lo), bits - host);
        }
    }
    format!("{}-{}", show(lo), show(hi))
}

fn port_range(lo: u16, hi: u16) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// What an address interval of a section's verdict map leads to: a
/// verdict that is not a whole mark, or a small chain of port rules (an
/// index into [`Layout::chains`]). Whole marks (`saref N`, `mark V`) are
/// not in the verdict map: the section's mark map holds them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Target {
    /// The same verdict for all of TCP and UDP (never a whole mark).
    Verdict(Verdict),
    /// The port rules of [`Layout::chains`]`[i]`; where none matches, the
    /// section decides nothing.
    Ports(usize),
}

/// What a port rule does.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PortVerdict {
    /// This verdict.
    Verdict(Verdict),
    /// The whole mark the section's mark map `slot` (of the chain's
    /// family) has for the destination address: the address cells that
    /// differ only in their marks share one port chain.
    Slot(usize),
}

/// The pieces of a port chain: `(proto, first port, last port, verdict)`.
pub type PortPieces = Vec<(Proto, u16, u16, PortVerdict)>;

/// A port chain: its rules, and the family of its mark-map lookups.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct PortChain {
    /// Its slots' lookups are of IPv6 addresses (`false` also when it
    /// has none: such a chain serves both families).
    pub v6: bool,
    /// The rules, in order; the first that matches decides.
    pub pieces: PortPieces,
}

/// How many mark maps a section has per family: slot 0 (the whole marks
/// of whole cells, and the first mark of port cells), slot 1 (the second
/// mark of port cells). A port cell with more marks writes the others in
/// its chain.
pub const SLOTS: usize = 2;

/// An element of a section's address map: a whole mark, or a code that
/// the section's dispatch map sends to a chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Entry {
    /// A whole mark (`saref N`, `mark V`), set and accepted at once.
    Mark(Verdict),
    /// The rest: written as a reserved mark value (a code, see
    /// [`CODE_BASE`]) that the dispatch map turns into a `goto`.
    Code(Target),
}

/// The first of the mark values that stand for the chain verdicts and
/// port chains in a section's address map (one per target, per section:
/// at most 65536). A whole mark of this range, or 0, is not written as
/// itself but through a chain of its own (`mark_V`), as masked marks are.
pub const CODE_BASE: u32 = 0x7ffe_0000;

/// An interval map's elements: `(first, last, value)`, disjoint, in order.
pub type Intervals<T> = Vec<(u128, u128, T)>;

/// A section's maps as the table holds them. Per family, one
/// *non-concatenated* interval map keyed by the destination address alone
/// (a red-black tree in the kernel: lookups in O(log n), fast to load):
/// a cell decided by a whole mark (`saref N`, `mark V`), nearly all of
/// them, has that mark; every other cell a code ([`CODE_BASE`] + i) that
/// the section's dispatch map sends to the chain of its verdict (`pass`,
/// `deny`, `reflect`, a masked `mark`) or to a small port chain. A packet
/// the section does not decide costs one lookup. The port chains are
/// shared by the cells whose rules differ only in their marks: a port
/// rule reads its mark from a mark map of the port cells (a slot).
/// Concatenated interval maps (pipapo) cost time linear in the number of
/// elements per lookup and per insert, which 100k rules make seconds to
/// load.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Layout {
    /// The IPv4 address map.
    pub v4: Intervals<Entry>,
    /// The IPv6 address map.
    pub v6: Intervals<Entry>,
    /// The IPv4 mark maps of the port chains, by slot (the verdicts are
    /// whole marks).
    pub marks4: [Intervals<Verdict>; SLOTS],
    /// The IPv6 ones.
    pub marks6: [Intervals<Verdict>; SLOTS],
    /// The port chains.
    pub chains: Vec<PortChain>,
}

/// Appends an element, merged with the last one when it is its neighbour
/// with the same value.
fn push_merged<T: PartialEq>(out: &mut Intervals<T>, lo: u128, hi: u128, value: T) {
    match out.last_mut() {
        Some((_, last, v)) if *v == value && last.checked_add(1) == Some(lo) => *last = hi,
        _ => out.push((lo, hi, value)),
    }
}

/// The value of the element covering `key`.
fn find<T: Copy>(elements: &Intervals<T>, key: u128) -> Option<T> {
    let i = elements.partition_point(|(_, hi, _)| *hi < key);
    let &(lo, _, v) = elements.get(i)?;
    (lo <= key).then_some(v)
}

impl Layout {
    /// The layout of `maps`: each address cell's elements (consecutive,
    /// with the same address interval) become one element of the mark map
    /// or of the verdict map (and, for a port cell, of the mark maps its
    /// chain reads).
    pub fn of(maps: &Maps) -> Layout {
        let mut l = Layout::default();
        let mut index: HashMap<PortChain, usize> = HashMap::new();
        for v6 in [false, true] {
            let elements = if v6 { &maps.v6 } else { &maps.v4 };
            let mut out: Intervals<Entry> = Vec::new();
            let mut marks: [Intervals<Verdict>; SLOTS] = Default::default();
            let mut i = 0;
            while i < elements.len() {
                let (lo, hi) = (elements[i].addr_lo, elements[i].addr_hi);
                let mut j = i;
                while j < elements.len() && elements[j].addr_lo == lo && elements[j].addr_hi == hi {
                    j += 1;
                }
                let cell = &elements[i..j];
                i = j;
                let uniform = cell.len() == 2
                    && cell[0].verdict == cell[1].verdict
                    && cell.iter().all(|e| e.port_lo == 0 && e.port_hi == u16::MAX)
                    && cell[0].proto != cell[1].proto;
                if uniform {
                    let v = cell[0].verdict;
                    if full_mark(v).is_some() {
                        push_merged(&mut out, lo, hi, Entry::Mark(v));
                    } else {
                        push_merged(&mut out, lo, hi, Entry::Code(Target::Verdict(v)));
                    }
                    continue;
                }
                // The cell's whole marks, in order of appearance, take the
                // slots; the rest are written in the chain.
                let mut slots: Vec<Verdict> = Vec::new();
                let pieces: PortPieces = cell
                    .iter()
                    .map(|e| {
                        let v = e.verdict;
                        let pv = if full_mark(v).is_none() {
                            PortVerdict::Verdict(v)
                        } else if let Some(s) = slots.iter().position(|x| *x == v) {
                            PortVerdict::Slot(s)
                        } else if slots.len() < SLOTS {
                            slots.push(v);
                            PortVerdict::Slot(slots.len() - 1)
                        } else {
                            PortVerdict::Verdict(v)
                        };
                        (e.proto, e.port_lo, e.port_hi, pv)
                    })
                    .collect();
                for (s, v) in slots.iter().enumerate() {
                    push_merged(&mut marks[s], lo, hi, *v);
                }
                let chain = PortChain {
                    v6: v6 && !slots.is_empty(),
                    pieces,
                };
                let n = l.chains.len();
                let k = *index.entry(chain.clone()).or_insert(n);
                if k == n {
                    l.chains.push(chain);
                }
                push_merged(&mut out, lo, hi, Entry::Code(Target::Ports(k)));
            }
            if v6 {
                l.v6 = out;
                l.marks6 = marks;
            } else {
                l.v4 = out;
                l.marks4 = marks;
            }
        }
        l
    }

    /// The verdict the table gives: the address map's element (a port
    /// cell's: its port chain's first matching rule); `None`
    /// where the section decides nothing (the table goes on to the next
    /// section).
    pub fn lookup(&self, dest: IpAddr, proto: Proto, port: u16) -> Option<Verdict> {
        let (v6, key) = crate::family_key(dest);
        let (verdicts, marks) = if v6 {
            (&self.v6, &self.marks6)
        } else {
            (&self.v4, &self.marks4)
        };
        match find(verdicts, key)? {
            Entry::Mark(v) | Entry::Code(Target::Verdict(v)) => Some(v),
            // The chain's rules in order; a rule whose mark map has no
            // element for the address does not match (nft: the lookup
            // breaks the rule).
            Entry::Code(Target::Ports(k)) => self.chains[k]
                .pieces
                .iter()
                .filter(|(p, lo, hi, _)| *p == proto && (*lo..=*hi).contains(&port))
                .find_map(|&(.., v)| match v {
                    PortVerdict::Verdict(v) => Some(v),
                    PortVerdict::Slot(s) => find(&marks[s], key),
                }),
        }
    }

    /// The number of map elements and port rules.
    pub fn len(&self) -> usize {
        self.v4.len()
            + self.v6.len()
            + self
                .marks4
                .iter()
                .chain(&self.marks6)
                .map(Vec::len)
                .sum::<usize>()
            + self.chains.iter().map(|c| c.pieces.len()).sum::<usize>()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rules of the section's chain `name`: the lookups of the maps
    /// that have elements (a lookup in an empty map costs every packet
    /// for nothing), then `goto NEXT`.
    fn section_rules(&self, name: &str, next: &str) -> Vec<String> {
        let mut r = Vec::new();
        for (v6, entries) in [(false, &self.v4), (true, &self.v6)] {
            if !entries.is_empty() {
                let (fam, n) = if v6 { ("ip6", 6) } else { ("ip", 4) };
                r.push(format!("meta mark set {fam} daddr map @{name}_{n}"));
            }
        }
        if r.is_empty() {
            // Nothing to look up.
            return vec![format!("goto {next}")];
        }
        // Only TCP and UDP are looked up: the others go on at once. The
        // mark is 0 here (steer returns on any other), and stays 0 where
        // the maps have no element (the lookup breaks its rule).
        r.insert(0, format!("meta l4proto != {{ tcp, udp }} goto {next}"));
        r.push(format!("meta mark 0x00000000 goto {next}"));
        if !self.codes().is_empty() {
            r.push(format!("meta mark vmap @{name}_d"));
        }
        r.push("accept".to_owned());
        r
    }

    /// The targets the address maps write as codes, in order: the code of
    /// the `i`-th is `CODE_BASE + i`.
    fn codes(&self) -> Vec<Target> {
        let mut seen = std::collections::HashSet::new();
        self.v4
            .iter()
            .chain(&self.v6)
            .filter_map(|(_, _, e)| match e {
                Entry::Code(t) => seen.insert(*t).then_some(*t),
                Entry::Mark(_) => None,
            })
            .collect()
    }

    /// The rules of port chain `k` of section `name`.
    fn port_rules(&self, name: &str, k: usize, next: &str) -> Vec<String> {
        let c = &self.chains[k];
        // The code that led here is no mark.
        let mut r = vec!["meta mark set 0x00000000".to_owned()];
        r.extend(
            c.pieces
                .iter()
                .map(|&(p, lo, hi, v)| port_rule(name, c.v6, p, lo, hi, v)),
        );
        r.push(format!("goto {next}"));
        r
    }
}

/// The name of a section's mark map of one family and slot.
fn mark_map(name: &str, v6: bool, slot: usize) -> String {
    let n = if v6 { 6 } else { 4 };
    if slot == 0 {
        format!("{name}_m{n}")
    } else {
        format!("{name}_m{n}s{slot}")
    }
}

/// The chain that sets the mark of mark map `slot` and accepts (and
/// returns where the map has no element): what port rules jump to.
fn mark_chain(name: &str, v6: bool, slot: usize) -> String {
    let n = if v6 { 6 } else { 4 };
    if slot == 0 {
        format!("{name}_mark{n}")
    } else {
        format!("{name}_mark{n}s{slot}")
    }
}

/// The rule of a mark chain.
fn mark_chain_rule(name: &str, v6: bool, slot: usize) -> String {
    format!(
        "meta mark set {} daddr map @{} accept",
        if v6 { "ip6" } else { "ip" },
        mark_map(name, v6, slot)
    )
}

/// Every mark chain of a section: `(name, rule)`.
fn mark_chains(name: &str) -> Vec<(String, String)> {
    [false, true]
        .into_iter()
        .flat_map(|v6| {
            (0..SLOTS)
                .map(move |slot| (mark_chain(name, v6, slot), mark_chain_rule(name, v6, slot)))
        })
        .collect()
}

/// The mark a verdict sets whole (`saref N`, `mark V` without a mask):
/// those need no chain of their own; a section's mark map holds them.
/// Not 0 (an address map's miss) nor a code: those have a chain.
fn full_mark(v: Verdict) -> Option<u32> {
    match v {
        Verdict::Saref(n) => Some(crate::mast_mark(n)),
        Verdict::Mark { value, mask }
            if mask == u32::MAX && value != 0 && value >> 16 != CODE_BASE >> 16 =>
        {
            Some(value)
        }
        _ => None,
    }
}

/// The version of the table's layout, in every section's fingerprint and
/// in the shape `ldsaref apply` records: a new layout replaces the whole
/// table (3: the IPv6 catch-all map `catchall6`; 4: one address map per
/// section and family; 5: both).
pub const LAYOUT_VERSION: u32 = 5;

/// Whether a verdict has a chain in the table.
pub(crate) fn has_chain(v: Verdict) -> bool {
    full_mark(v).is_none() && v.chain().is_some()
}

/// What the dispatch map sends a code's target to.
fn dispatch_value(section: &str, t: Target) -> String {
    match t {
        Target::Ports(k) => format!("goto {section}_x{k}"),
        // Address maps hold no whole marks as codes (Layout::of).
        Target::Verdict(v) => format!("goto {}", v.chain().unwrap_or_else(|| "pass".to_owned())),
    }
}

fn write_elements<T>(
    s: &mut String,
    elements: &[(u128, u128, T)],
    v6: bool,
    value: impl Fn(&T) -> String,
) {
    for (lo, hi, v) in elements {
        s.push_str("\t\t\t");
        s.push_str(&addr_range(*lo, *hi, v6));
        s.push_str(" : ");
        s.push_str(&value(v));
        s.push_str(",\n");
    }
}

/// The rule of a port chain for one piece (`v6`: the family of its mark
/// maps' lookups).
fn port_rule(section: &str, v6: bool, p: Proto, lo: u16, hi: u16, v: PortVerdict) -> String {
    let mut r = format!("meta l4proto {}", proto(p));
    if (lo, hi) != (0, u16::MAX) {
        r.push_str(&format!(" th dport {}", port_range(lo, hi)));
    }
    match v {
        // A chain of its own reads the map: the kernel checks every
        // element of a map for each rule that names it.
        PortVerdict::Slot(slot) => {
            r.push_str(&format!(" jump {}", mark_chain(section, v6, slot)));
        }
        PortVerdict::Verdict(v) => match (full_mark(v), v.chain()) {
            (Some(m), _) => r.push_str(&format!(" meta mark set {m:#010x} accept")),
            (None, None) => r.push_str(" accept"),
            (None, Some(chain)) => r.push_str(&format!(" goto {chain}")),
        },
    }
    r
}

/// The maps of one section in `nft -f` syntax: per family the address
/// map `NAME_4`/`NAME_6` (address → mark or code) and the port chains'
/// mark maps (`NAME_m4`, `NAME_m4s1`, …), then the dispatch map `NAME_d`
/// (code → verdict). `decl` writes a map: its name, type, whether it is
/// an interval map, and its elements.
fn for_each_map(layout: &Layout, name: &str, mut decl: impl FnMut(String, &str, bool, String)) {
    let codes = layout.codes();
    let code: HashMap<Target, u32> = codes
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, CODE_BASE + u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    // The elements' text of one family: the address map's, then each
    // mark map's.
    let texts = |v6: bool| -> Vec<String> {
        let (entries, marks) = if v6 {
            (&layout.v6, &layout.marks6)
        } else {
            (&layout.v4, &layout.marks4)
        };
        let mut out = Vec::with_capacity(1 + SLOTS);
        let mut text = String::new();
        write_elements(&mut text, entries, v6, |e| {
            let m = match e {
                Entry::Mark(v) => full_mark(*v).unwrap_or(0),
                Entry::Code(t) => code.get(t).copied().unwrap_or(0),
            };
            format!("{m:#010x}")
        });
        out.push(text);
        for elements in marks {
            let mut text = String::new();
            write_elements(&mut text, elements, v6, |v| {
                format!("{:#010x}", full_mark(*v).unwrap_or(0))
            });
            out.push(text);
        }
        out
    };
    // The families are written by one thread each (100k rules: most of
    // the text is elements).
    let (t4, t6) = std::thread::scope(|s| {
        let t6 = s.spawn(|| texts(true));
        let t4 = texts(false);
        (
            t4,
            t6.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
        )
    });
    for (v6, texts) in [(false, t4), (true, t6)] {
        let family = if v6 { "ipv6_addr" } else { "ipv4_addr" };
        for (i, text) in texts.into_iter().enumerate() {
            let map = if i == 0 {
                format!("{name}_{}", if v6 { 6 } else { 4 })
            } else {
                mark_map(name, v6, i - 1)
            };
            decl(map, &format!("{family} : mark"), true, text);
        }
    }
    let mut text = String::new();
    for (i, t) in codes.iter().enumerate() {
        let _ = writeln!(
            text,
            "\t\t\t{:#010x} : {},",
            CODE_BASE + u32::try_from(i).unwrap_or(u32::MAX),
            dispatch_value(name, *t)
        );
    }
    decl(format!("{name}_d"), "mark : verdict", false, text);
}

/// The rules of an absent profile's section chain (see
/// [`Compiled::absent`]): what `steer` does to a cgroup whose profile has
/// no section. Traffic to this host passes; the rest is dropped (a
/// `sendto` fails with `EPERM`, a `connect` never completes).
fn absent_rules() -> Vec<String> {
    vec!["fib daddr type local return".to_owned(), "drop".to_owned()]
}

/// A profile section's layout (empty for an absent profile) and the
/// rules of its chain `name`.
fn section_parts(sec: Section<'_>, name: &str) -> (Layout, Vec<String>) {
    match sec {
        Section::Rules(p) => {
            let layout = Layout::of(&p.maps);
            let rules = layout.section_rules(name, "global");
            (layout, rules)
        }
        Section::Absent(_) => (Layout::default(), absent_rules()),
    }
}

/// A section's maps and port chains `NAME_xK` (ending with `goto NEXT`:
/// where no port rule decides, the next section decides), then its chain
/// (`rules`).
fn write_section(
    s: &mut String,
    name: &str,
    layout: &Layout,
    next: &str,
    rules: &[String],
) -> std::fmt::Result {
    for_each_map(layout, name, |map, typ, interval, elements| {
        let _ = writeln!(s, "\tmap {map} {{");
        let _ = writeln!(s, "\t\ttype {typ}");
        if interval {
            let _ = writeln!(s, "\t\tflags interval");
        }
        if !elements.is_empty() {
            let _ = writeln!(s, "\t\telements = {{");
            s.push_str(&elements);
            let _ = writeln!(s, "\t\t}}");
        }
        let _ = writeln!(s, "\t}}");
    });
    for (chain, rule) in mark_chains(name) {
        writeln!(s, "\tchain {chain} {{\n\t\t{rule}\n\t}}")?;
    }
    for k in 0..layout.chains.len() {
        writeln!(s, "\tchain {name}_x{k} {{")?;
        for r in layout.port_rules(name, k, next) {
            writeln!(s, "\t\t{r}")?;
        }
        writeln!(s, "\t}}")?;
    }
    writeln!(s, "\tchain {name} {{")?;
    for r in rules {
        writeln!(s, "\t\t{r}")?;
    }
    writeln!(s, "\t}}")
}

/// The empty chain that records a section's fingerprint.
pub const SECTION_CHAIN: &str = "sum_";
/// The empty chain that records the fingerprint of the table's shape
/// (profiles, cgroups, verdict chains): sections can be replaced alone
/// only while it is the same.
pub const SHAPE_CHAIN: &str = "shape_";

/// A short, stable fingerprint of a text (64-bit FNV-1a, in hex): what
/// the table's comment records, to tell whether the installed table is
/// the one these rules give.
pub fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The table has an empty chain named this and the fingerprint, which
/// `nft list chains` shows cheaply.
pub const FINGERPRINT_CHAIN: &str = "rules_";

/// The map of the catch-all cgroups to their marks, for IPv4 packets
/// (every catch-all).
pub const CATCH_ALL_MAP: &str = "catchall";
/// The same for IPv6 packets (the `--mark` catch-alls only).
pub const CATCH_ALL_MAP6: &str = "catchall6";

/// The prefix of the table's comment.
pub const COMMENT_PREFIX: &str = "ldsaref rules ";

impl Compiled {
    /// The `nft -f` batch that replaces the table in one transaction: the
    /// table is added (so that deleting it cannot fail), deleted, and
    /// defined again. `cgroup_prefix` is the cgroup2 mount's path relative
    /// to `/sys/fs/cgroup` (where `nft` resolves cgroup paths) followed by
    /// `/`, or empty when cgroup2 is mounted there; `fingerprint` goes in
    /// the table's comment.
    /// `catch_alls` are the catch-all cgroups that exist (see
    /// [`CatchAll`]); `nft` refuses a path that does not.
    pub fn render(
        &self,
        cgroup_prefix: &str,
        fingerprint: &str,
        catch_alls: &[CatchAll],
    ) -> String {
        self.render_full(cgroup_prefix, fingerprint, "", catch_alls)
    }

    /// [`render`](Self::render), with the fingerprint of the table's shape
    /// (`ldsaref apply`'s: see [`SHAPE_CHAIN`]) when not empty.
    pub fn render_full(
        &self,
        cgroup_prefix: &str,
        fingerprint: &str,
        shape: &str,
        catch_alls: &[CatchAll],
    ) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut s, cgroup_prefix, fingerprint, shape, catch_alls);
        s
    }

    /// The `nft -f` batch that replaces one section's maps and port
    /// chains (`profile`: its index, `None` for the global rules) in the
    /// installed table, in one transaction: its maps made again, its port
    /// chains flushed, added or deleted (`old_port_chains` were
    /// installed), and the fingerprint chains renamed
    /// (`old_section`, `old_fingerprint` → this section's and
    /// `fingerprint`). Only valid when the installed table has the same
    /// shape (see [`SHAPE_CHAIN`]).
    pub fn render_update(
        &self,
        profile: Option<usize>,
        old_port_chains: usize,
        old_section: &str,
        old_fingerprint: &str,
        fingerprint: &str,
    ) -> String {
        let (name, fp, next, layout, rules) = match profile {
            None => {
                let layout = Layout::of(&self.global);
                let rules = layout.section_rules("global", "tail");
                (
                    "global".to_owned(),
                    self.global_fingerprint.as_str(),
                    "tail",
                    layout,
                    rules,
                )
            }
            Some(i) => {
                let sec = self.sections()[i];
                let name = format!("p{i}");
                let (layout, rules) = section_parts(sec, &name);
                (name, sec.fingerprint(), "global", layout, rules)
            }
        };
        let mut s = String::new();
        let t = TABLE;
        s.push_str(&format!(
            "# ldsaref: section {name} replaced (ldsaref apply)\n"
        ));
        // The maps are made again, elements inline: nft 1.0.6 reads every
        // element of every set before an `add element` command (seconds
        // for 100k rules), not before a new map's `elements = { }`. The
        // chains that name them (the section's, its port chains) are
        // flushed first; the old verdict maps name the port chains, so
        // they are deleted before port chains are.
        s.push_str(&format!("flush chain {t} {name}\n"));
        for k in 0..old_port_chains {
            s.push_str(&format!("flush chain {t} {name}_x{k}\n"));
        }
        for (chain, _) in mark_chains(&name) {
            s.push_str(&format!("flush chain {t} {chain}\n"));
        }
        for_each_map(&Layout::default(), &name, |map, _, _, _| {
            s.push_str(&format!("delete map {t} {map}\n"));
        });
        s.push_str(&format!(
            "delete chain {t} {SECTION_CHAIN}{name}_{old_section}\n\
             add chain {t} {SECTION_CHAIN}{name}_{fp}\n"
        ));
        if old_fingerprint != fingerprint {
            s.push_str(&format!(
                "delete chain {t} {FINGERPRINT_CHAIN}{old_fingerprint}\n\
                 add chain {t} {FINGERPRINT_CHAIN}{fingerprint}\n"
            ));
        }
        let new_chains = layout.chains.len();
        for k in new_chains..old_port_chains {
            s.push_str(&format!("delete chain {t} {name}_x{k}\n"));
        }
        for k in old_port_chains..new_chains {
            s.push_str(&format!("add chain {t} {name}_x{k}\n"));
        }
        for_each_map(&layout, &name, |map, typ, interval, elements| {
            s.push_str(&format!(
                "add map {t} {map} {{ type {typ};{}",
                if interval { " flags interval;" } else { "" }
            ));
            if !elements.is_empty() {
                s.push_str(" elements = {\n");
                s.push_str(&elements);
                s.push('}');
            }
            s.push_str(" }\n");
        });
        for (chain, rule) in mark_chains(&name) {
            s.push_str(&format!("add rule {t} {chain} {rule}\n"));
        }
        for k in 0..new_chains {
            for r in layout.port_rules(&name, k, next) {
                s.push_str(&format!("add rule {t} {name}_x{k} {r}\n"));
            }
        }
        for r in rules {
            s.push_str(&format!("add rule {t} {name} {r}\n"));
        }
        s
    }

    fn write(
        &self,
        s: &mut String,
        root: &str,
        fingerprint: &str,
        shape: &str,
        catch_alls: &[CatchAll],
    ) -> std::fmt::Result {
        writeln!(s, "# ldsaref: the cgroup backend's table (ldsaref apply)")?;
        writeln!(s, "table {TABLE}")?;
        writeln!(s, "delete table {TABLE}")?;
        writeln!(s, "table {TABLE} {{")?;
        // The fingerprints are chains' names (`ldsaref apply` renames them
        // when it replaces a section alone); a table's comment cannot change.
        writeln!(s, "\tcomment \"{COMMENT_PREFIX}(ldsaref apply)\"")?;
        // The same, where `nft list chains` shows it without the elements.
        writeln!(s, "\tchain {FINGERPRINT_CHAIN}{fingerprint} {{")?;
        writeln!(s, "\t}}")?;
        if !shape.is_empty() {
            writeln!(s, "\tchain {SHAPE_CHAIN}{shape} {{")?;
            writeln!(s, "\t}}")?;
        }
        // Each section's fingerprint, to replace only the ones that change.
        writeln!(
            s,
            "\tchain {SECTION_CHAIN}global_{} {{\n\t}}",
            self.global_fingerprint
        )?;
        let sections = self.sections();
        for (i, sec) in sections.iter().enumerate() {
            writeln!(
                s,
                "\tchain {SECTION_CHAIN}p{i}_{} {{\n\t}}",
                sec.fingerprint()
            )?;
            writeln!(s, "\tchain {} {{\n\t}}", crate::profile_chain(sec.name()))?;
        }
        writeln!(s)?;
        writeln!(s, "\t# The global rules, after a profile's own.")?;
        let global = Layout::of(&self.global);
        write_section(
            s,
            "global",
            &global,
            "tail",
            &global.section_rules("global", "tail"),
        )?;
        writeln!(s, "\tchain tail {{")?;
        writeln!(
            s,
            "\t\tmeta nfproto ipv4 meta mark set socket cgroupv2 level 3 map @{CATCH_ALL_MAP}"
        )?;
        writeln!(
            s,
            "\t\tmeta nfproto ipv6 meta mark set socket cgroupv2 level 3 map @{CATCH_ALL_MAP6}"
        )?;
        writeln!(s, "\t}}")?;
        writeln!(
            s,
            "\t# The catch-alls of run --cgroup: --saref (IPv4 only) and --mark."
        )?;
        for (map, v6) in [(CATCH_ALL_MAP, false), (CATCH_ALL_MAP6, true)] {
            writeln!(s, "\tmap {map} {{")?;
            writeln!(s, "\t\ttype cgroupsv2 : mark")?;
            let mut these = catch_alls
                .iter()
                .filter(|c| !v6 || c.kind.ipv6())
                .peekable();
            if these.peek().is_some() {
                writeln!(s, "\t\telements = {{")?;
                for c in these {
                    writeln!(
                        s,
                        "\t\t\t\"{root}{}\" : {:#010x},",
                        c.cgroup(),
                        c.kind.mark()
                    )?;
                }
                writeln!(s, "\t\t}}")?;
            }
            writeln!(s, "\t}}")?;
        }
        for (i, sec) in sections.iter().enumerate() {
            writeln!(s)?;
            writeln!(s, "\t# [{}]: cgroup {}", sec.name(), sec.cgroup())?;
            if let Section::Absent(_) = sec {
                writeln!(
                    s,
                    "\t# No rules now (a connection down): its packets are dropped."
                )?;
            }
            let name = format!("p{i}");
            let (layout, rules) = section_parts(*sec, &name);
            write_section(s, &name, &layout, "global", &rules)?;
        }
        writeln!(s)?;
        writeln!(s, "\t# pass, from a dispatch map: the code set back to 0.")?;
        writeln!(
            s,
            "\tchain pass {{\n\t\tmeta mark set 0x00000000 accept\n\t}}"
        )?;
        let verdicts = &self.chains;
        for v in verdicts.iter().filter(|v| has_chain(**v)) {
            let Some(name) = v.chain() else { continue };
            writeln!(s)?;
            writeln!(s, "\tchain {name} {{")?;
            for st in v.statements() {
                writeln!(s, "\t\t{st}")?;
            }
            writeln!(s, "\t}}")?;
        }
        writeln!(s)?;
        writeln!(s, "\t# A mark set by the program itself is left alone.")?;
        writeln!(s, "\tchain steer {{")?;
        writeln!(s, "\t\tmeta mark != 0 return")?;
        for (i, sec) in sections.iter().enumerate() {
            writeln!(
                s,
                "\t\tsocket cgroupv2 level 2 \"{root}{}\" goto p{i}",
                sec.cgroup()
            )?;
        }
        writeln!(
            s,
            "\t\t# Fail closed: a cgroup whose profile has no rules here."
        )?;
        // Traffic to this host passes. Not "oifname lo": an operator's
        // route of the client networks to lo (the no-route gateway's
        // remedy) would let a dropped profile's sends "succeed" into the
        // loopback, where the program would never learn they failed.
        writeln!(s, "\t\tfib daddr type local return")?;
        writeln!(s, "\t\tdrop")?;
        writeln!(s, "\t}}")?;
        writeln!(s)?;
        writeln!(s, "\tchain output {{")?;
        writeln!(
            s,
            "\t\ttype route hook output priority mangle; policy accept;"
        )?;
        writeln!(
            s,
            "\t\tsocket cgroupv2 level 1 \"{root}{SLICE}\" jump steer"
        )?;
        writeln!(s, "\t}}")?;
        if verdicts.contains(&Verdict::Reflect) {
            writeln!(s)?;
            writeln!(
                s,
                "\t# reflect: the mark a flow came in with, for its replies."
            )?;
            writeln!(s, "\tchain input {{")?;
            writeln!(
                s,
                "\t\ttype filter hook input priority mangle + 10; policy accept;"
            )?;
            writeln!(
                s,
                "\t\tct direction original ct mark 0 meta mark != 0 ct mark set meta mark"
            )?;
            writeln!(s, "\t}}")?;
        }
        writeln!(s, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_prefixes_when_they_can_be() {
        assert_eq!(addr_range(0, u128::from(u32::MAX), false), "0.0.0.0/0");
        assert_eq!(addr_range(0, u128::MAX, true), "::/0");
        assert_eq!(addr_range(0xc612_0000, 0xc612_00ff, false), "198.18.0.0/24");
        assert_eq!(addr_range(0xc612_0005, 0xc612_0005, false), "198.18.0.5/32");
        assert_eq!(
            addr_range(0xc612_0001, 0xc612_0005, false),
            "198.18.0.1-198.18.0.5"
        );
        assert_eq!(
            addr_range(1, u128::MAX, true),
            "::1-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(port_range(22, 22), "22");
        assert_eq!(port_range(0, 65535), "0-65535");
    }

    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(fingerprint(""), "cbf29ce484222325");
        assert_eq!(fingerprint("a"), "af63dc4c8601ec8c");
    }
}
