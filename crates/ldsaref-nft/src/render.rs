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

/// The rules of a section's chain `name`, the same whatever its elements:
/// a section whose rules and port chains stay is then changed by its maps'
/// elements alone, which `ldsaref apply` writes over netlink without an
/// `nft` process (see [`Compiled::element_update`]). A lookup in an empty
/// map costs a packet one tree walk of nothing.
pub(crate) fn section_rules(name: &str, next: &str) -> Vec<String> {
    vec![
        // Only TCP and UDP are looked up: the others go on at once.
        format!("meta l4proto != {{ tcp, udp }} goto {next}"),
        // The mark is 0 here (steer returns on any other), and stays 0
        // where a map has no element (the lookup breaks its rule).
        format!("meta mark set ip daddr map @{name}_4"),
        format!("meta mark set ip6 daddr map @{name}_6"),
        format!("meta mark 0x00000000 goto {next}"),
        // A code goes to its chain; a whole mark misses and is accepted.
        format!("meta mark vmap @{name}_d"),
        "accept".to_owned(),
    ]
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
/// section and family; 5: both; 6: sections' chains the same whatever
/// their elements, profiles without rules in the set `absent`).
pub const LAYOUT_VERSION: u32 = 6;

/// Whether a verdict has a chain in the table.
pub(crate) fn has_chain(v: Verdict) -> bool {
    full_mark(v).is_none() && v.chain().is_some()
}

/// The chain the dispatch map sends a code's target to.
fn dispatch_chain(section: &str, t: Target) -> String {
    match t {
        Target::Ports(k) => format!("{section}_x{k}"),
        // Address maps hold no whole marks as codes (Layout::of).
        Target::Verdict(v) => v.chain().unwrap_or_else(|| "pass".to_owned()),
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

/// What a section's map holds, as the kernel stores it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum MapElements {
    /// An address map or a mark map: address intervals (`v6`: IPv6
    /// addresses) → mark.
    Marks {
        /// IPv6 keys.
        v6: bool,
        /// The elements.
        elements: Intervals<u32>,
    },
    /// The dispatch map: a code → `goto CHAIN`.
    Gotos(Vec<(u32, String)>),
}

impl MapElements {
    /// The map's `type` in `nft -f` syntax, and whether it has intervals.
    fn declaration(&self) -> (&'static str, bool) {
        match self {
            MapElements::Marks { v6: false, .. } => ("ipv4_addr : mark", true),
            MapElements::Marks { v6: true, .. } => ("ipv6_addr : mark", true),
            MapElements::Gotos(_) => ("mark : verdict", false),
        }
    }

    /// The elements in `nft -f` syntax, one per line.
    fn text(&self) -> String {
        let mut s = String::new();
        match self {
            MapElements::Marks { v6, elements } => {
                for (lo, hi, m) in elements {
                    let _ = writeln!(s, "\t\t\t{} : {m:#010x},", addr_range(*lo, *hi, *v6));
                }
            }
            MapElements::Gotos(elements) => {
                for (code, chain) in elements {
                    let _ = writeln!(s, "\t\t\t{code:#010x} : goto {chain},");
                }
            }
        }
        s
    }
}

/// The maps of one section and their elements, always the same seven
/// names: per family the address map `NAME_4`/`NAME_6` (address → mark
/// or code) and the port chains' mark maps (`NAME_m4`, `NAME_m4s1`, …),
/// then the dispatch map `NAME_d` (code → chain).
pub(crate) fn section_maps(layout: &Layout, name: &str) -> Vec<(String, MapElements)> {
    let codes = layout.codes();
    let code: HashMap<Target, u32> = codes
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, CODE_BASE + u32::try_from(i).unwrap_or(u32::MAX)))
        .collect();
    let marks = |elements: &Intervals<Verdict>| -> Intervals<u32> {
        elements
            .iter()
            .map(|&(lo, hi, v)| (lo, hi, full_mark(v).unwrap_or(0)))
            .collect()
    };
    let mut out = Vec::with_capacity(3 + 2 * SLOTS);
    for v6 in [false, true] {
        let (entries, slots) = if v6 {
            (&layout.v6, &layout.marks6)
        } else {
            (&layout.v4, &layout.marks4)
        };
        let elements = entries
            .iter()
            .map(|&(lo, hi, e)| {
                let m = match e {
                    Entry::Mark(v) => full_mark(v).unwrap_or(0),
                    Entry::Code(t) => code.get(&t).copied().unwrap_or(0),
                };
                (lo, hi, m)
            })
            .collect();
        out.push((
            format!("{name}_{}", if v6 { 6 } else { 4 }),
            MapElements::Marks { v6, elements },
        ));
        for (slot, elements) in slots.iter().enumerate() {
            out.push((
                mark_map(name, v6, slot),
                MapElements::Marks {
                    v6,
                    elements: marks(elements),
                },
            ));
        }
    }
    let gotos = codes
        .iter()
        .enumerate()
        .map(|(i, t)| {
            (
                CODE_BASE + u32::try_from(i).unwrap_or(u32::MAX),
                dispatch_chain(name, *t),
            )
        })
        .collect();
    out.push((format!("{name}_d"), MapElements::Gotos(gotos)));
    out
}

/// The maps of one section in `nft -f` syntax (see [`section_maps`]):
/// `decl` writes a map: its name, type, whether it is an interval map,
/// and its elements' text.
fn for_each_map(layout: &Layout, name: &str, mut decl: impl FnMut(String, &str, bool, String)) {
    let maps = section_maps(layout, name);
    // The texts are written by two threads (100k rules: most of the
    // table's text is elements, most of them in one family).
    let (first, second) = maps.split_at(maps.len() / 2);
    let (t1, t2) = std::thread::scope(|s| {
        let t2 = s.spawn(|| second.iter().map(|(_, m)| m.text()).collect::<Vec<_>>());
        let t1: Vec<String> = first.iter().map(|(_, m)| m.text()).collect();
        (
            t1,
            t2.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
        )
    });
    for ((map, elements), text) in maps.iter().zip(t1.into_iter().chain(t2)) {
        let (typ, interval) = elements.declaration();
        decl(map.clone(), typ, interval, text);
    }
}

/// The rules of `steer`: a mark the program set itself is left alone;
/// the cgroups of [`ABSENT_SET`] go to [`ABSENT_CHAIN`], each profile's
/// cgroup (`root`: see [`Compiled::render`]) to its section; then the
/// fall-through (fail closed: a cgroup whose profile has no rules here).
fn steer_rules(sections: &[Section<'_>], root: &str) -> (Vec<String>, [&'static str; 2]) {
    let mut dispatch = vec![
        "meta mark != 0 return".to_owned(),
        format!("socket cgroupv2 level 2 @{ABSENT_SET} goto {ABSENT_CHAIN}"),
    ];
    dispatch.extend(sections.iter().enumerate().map(|(i, sec)| {
        format!(
            "socket cgroupv2 level 2 \"{root}{}\" goto p{i}",
            sec.cgroup()
        )
    }));
    // Traffic to this host passes. Not "oifname lo": an operator's route
    // of the client networks to lo (the no-route gateway's remedy) would
    // let a dropped profile's sends "succeed" into the loopback, where the
    // program would never learn they failed.
    (dispatch, absent_rules())
}

/// The elements of [`ABSENT_SET`]: the absent profiles' cgroups, quoted.
fn absent_elements(sections: &[Section<'_>], root: &str) -> Vec<String> {
    sections
        .iter()
        .filter(|sec| matches!(sec, Section::Absent(_)))
        .map(|sec| format!("\"{root}{}\"", sec.cgroup()))
        .collect()
}

/// The rules of [`ABSENT_CHAIN`]: what `steer`'s fall-through does.
fn absent_rules() -> [&'static str; 2] {
    ["fib daddr type local return", "drop"]
}

/// The chain that profiles without rules go to, from `steer` (see
/// [`Compiled::absent`]): what `steer` does to a cgroup whose profile has
/// no section. Traffic to this host passes; the rest is dropped (a
/// `sendto` fails with `EPERM`, a `connect` never completes).
pub const ABSENT_CHAIN: &str = "absent";
/// The set of the cgroups of the profiles without rules (`cgroupsv2`):
/// a profile goes absent and comes back by an element of it, its section
/// emptied or filled, and the table's shape stays.
pub const ABSENT_SET: &str = "absent";

/// One section as an update writes it.
pub(crate) struct Part<'a> {
    /// Its chain: `global`, `pN`.
    pub name: String,
    /// The fingerprint its rules record.
    pub fingerprint: &'a str,
    /// The chain after it.
    pub next: &'static str,
    /// Its maps and port chains.
    pub layout: Layout,
    /// A profile's cgroup (relative to the cgroup2 root) and whether the
    /// profile is absent; `None` for the global rules.
    pub cgroup: Option<(String, bool)>,
}

/// A profile section's layout (empty for an absent profile).
fn section_layout(sec: Section<'_>) -> Layout {
    match sec {
        Section::Rules(p) => Layout::of(&p.maps),
        Section::Absent(_) => Layout::default(),
    }
}

/// A section's maps and port chains `NAME_xK` (ending with `goto NEXT`:
/// where no port rule decides, the next section decides), then its chain.
fn write_section(s: &mut String, name: &str, layout: &Layout, next: &str) -> std::fmt::Result {
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
    for r in section_rules(name, next) {
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

    /// Section `profile` (its index, `None` for the global rules) as an
    /// update writes it.
    pub(crate) fn part(&self, profile: Option<usize>) -> Part<'_> {
        match profile {
            None => Part {
                name: "global".to_owned(),
                fingerprint: &self.global_fingerprint,
                next: "tail",
                layout: Layout::of(&self.global),
                cgroup: None,
            },
            Some(i) => {
                let sec = self.sections()[i];
                Part {
                    name: format!("p{i}"),
                    fingerprint: sec.fingerprint(),
                    next: "global",
                    layout: section_layout(sec),
                    cgroup: Some((sec.cgroup(), matches!(sec, Section::Absent(_)))),
                }
            }
        }
    }

    /// The `nft -f` batch that replaces one section's maps and port
    /// chains (`profile`: its index, `None` for the global rules) in the
    /// installed table, in one transaction: its maps made again, its port
    /// chains flushed, added or deleted (`old_port_chains` were
    /// installed), and the fingerprint chains renamed (`old_section`,
    /// `old_fingerprint` → this section's and `fingerprint`). Only valid
    /// when the installed table has the same shape (see [`SHAPE_CHAIN`]).
    /// When its profile went or came back ([`absence_changed`]), the
    /// batch also needs [`render_absent`] (once, whatever the number of
    /// such sections).
    ///
    /// [`absence_changed`]: Self::absence_changed
    /// [`render_absent`]: Self::render_absent
    pub fn render_update(
        &self,
        profile: Option<usize>,
        old_port_chains: usize,
        old_section: &str,
        old_fingerprint: &str,
        fingerprint: &str,
    ) -> String {
        let Part {
            name,
            fingerprint: fp,
            next,
            layout,
            ..
        } = self.part(profile);
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
        for (map, _) in section_maps(&Layout::default(), &name) {
            s.push_str(&format!("delete map {t} {map}\n"));
        }
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
        for r in section_rules(&name, next) {
            s.push_str(&format!("add rule {t} {name} {r}\n"));
        }
        s
    }

    /// Whether section `profile` (its index; `None`, the global rules,
    /// never) went absent or came back since the installed table recorded
    /// `old_section` for it.
    pub fn absence_changed(&self, profile: Option<usize>, old_section: &str) -> bool {
        // From the sections alone: `part` would lay the section out too.
        profile.is_some_and(|i| {
            matches!(self.sections()[i], Section::Absent(_))
                != (old_section == crate::ABSENT_SECTION)
        })
    }

    /// The `nft -f` commands that make [`ABSENT_SET`] again with the
    /// absent profiles' cgroups (`cgroup_prefix`: see [`render`](Self::render)),
    /// and `steer`, which names it: what an update in which a profile
    /// went or came back adds. Not `add element`/`delete element`: nft
    /// 1.0.6 reads every element of the table before those (seconds for
    /// 100k rules), not before a new set's inline elements.
    pub fn render_absent(&self, cgroup_prefix: &str) -> String {
        let t = TABLE;
        let sections = self.sections();
        let mut s = format!(
            "flush chain {t} steer\ndelete set {t} {ABSENT_SET}\n\
             add set {t} {ABSENT_SET} {{ type cgroupsv2;"
        );
        let elements = absent_elements(&sections, cgroup_prefix);
        if !elements.is_empty() {
            s.push_str(&format!(" elements = {{ {} }}", elements.join(", ")));
        }
        s.push_str(" }\n");
        let (dispatch, fall_through) = steer_rules(&sections, cgroup_prefix);
        for r in dispatch.iter().map(String::as_str).chain(fall_through) {
            s.push_str(&format!("add rule {t} steer {r}\n"));
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
        write_section(s, "global", &Layout::of(&self.global), "tail")?;
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
                    "\t# No rules now (a connection down): its cgroup is in @{ABSENT_SET}."
                )?;
            }
            write_section(s, &format!("p{i}"), &section_layout(*sec), "global")?;
        }
        writeln!(s)?;
        writeln!(
            s,
            "\t# The profiles without rules now (a connection down), by cgroup."
        )?;
        writeln!(s, "\tset {ABSENT_SET} {{")?;
        writeln!(s, "\t\ttype cgroupsv2")?;
        let absent = absent_elements(&sections, root);
        if !absent.is_empty() {
            writeln!(s, "\t\telements = {{")?;
            for e in absent {
                writeln!(s, "\t\t\t{e},")?;
            }
            writeln!(s, "\t\t}}")?;
        }
        writeln!(s, "\t}}")?;
        writeln!(s, "\tchain {ABSENT_CHAIN} {{")?;
        for r in absent_rules() {
            writeln!(s, "\t\t{r}")?;
        }
        writeln!(s, "\t}}")?;
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
        let (dispatch, fall_through) = steer_rules(&sections, root);
        for r in dispatch {
            writeln!(s, "\t\t{r}")?;
        }
        writeln!(
            s,
            "\t\t# Fail closed: a cgroup whose profile has no rules here."
        )?;
        for r in fall_through {
            writeln!(s, "\t\t{r}")?;
        }
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
