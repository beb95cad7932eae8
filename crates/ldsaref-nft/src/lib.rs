//! The cgroup backend's compiler: a [`RuleSet`] into one nftables table,
//! `inet ldsaref`, that steers in the kernel what the preload cannot reach
//! (static and Go binaries, io_uring, glibc's resolver, setuid programs).
//!
//! A pure function ([`compile`]) from the rules to a description of the
//! table ([`Compiled`]): for the global rules and for every profile, the
//! *disjoint* pieces `daddr . l4proto . dport → verdict` (IPv4 and IPv6)
//! that decide as the library does. A profile's chain tries its own maps,
//! then the global ones; the global rules are not copied into every
//! profile. [`Compiled::render`] writes them for `nft -f` as a [`Layout`]:
//! per section and family, one interval map keyed by the address alone
//! (a red-black tree in the kernel) whose values are the whole marks
//! (`saref`/`mark`) of the cells they decide, or codes that a dispatch
//! map sends to the other verdicts' chains and to small port chains
//! (which read their marks from mark maps too).
//! [`Compiled::decide`] evaluates the pieces and [`Rendered::decide_with`]
//! the rendered layout, so that tests can compare both with
//! [`ldsaref_rules::Policy`] without root. [`Compiled::render_update`]
//! replaces one section of an installed table; [`Compiled::element_update`]
//! says the same as changes of elements alone, where it can.
//!
//! # Precedence, flattened
//!
//! The library decides with the profile's rules first, then the global
//! rules; in each set the longest prefix, then a port, then a protocol
//! wins, and `pass` stops the search. For each section (global, each
//! profile) the compiler cuts the address space of each family at every
//! rule's network bounds, and the port space of each such cell at the port
//! bounds of the rules covering it: inside one resulting piece every rule
//! of the section either covers all of it or none of it, so the decision
//! is the same everywhere in the piece, and it is taken from the rules
//! crate itself ([`RuleSet::lookup`]) at the piece's first point (kept
//! only when the section's own rule decides).
//! The precedence is thus the library's by construction; the pieces'
//! uniformity is what the property test checks. Neighbouring pieces with
//! the same verdict are merged.
//!
//! # What the table does (see [`Compiled::render`])
//!
//! - A `type route hook output` chain jumps to `steer` for sockets of a
//!   process in `ldsaref.slice` (cgroup v2, level 1).
//! - `steer` leaves alone a packet that already has a mark (the program
//!   set `SO_MARK` itself), sends each profile's cgroup
//!   (`ldsaref.slice/ldsaref-PROFILE.slice`, level 2) to that profile's
//!   maps, and drops the rest (fail closed: a cgroup of `ldsaref.slice`
//!   whose profile has no rules in the table), loopback aside. A profile
//!   whose rules went while the table was installed keeps its section,
//!   emptied, and its cgroup joins the set `absent`, which `steer` drops
//!   the same way (see [`Compiled::absent`]).
//! - `saref N` sets the mast nfmark `(N << 16) | 0x80000000`; `mark V/M`
//!   only the bits of `M`; `pass` accepts; `deny` answers a TCP SYN with a
//!   reset (`connect` fails at once with `ECONNREFUSED`) and drops the
//!   rest (`sendto` fails at once with `EPERM`); `reflect` sets on a reply
//!   the mark its flow came in with (conntrack mark, saved by an input
//!   chain). Route-type chains re-route a packet whose mark changed.
//! - `dev IFNAME` cannot be done per packet: [`compile`] refuses it.
//!
//! A catch-all (`IPSEC_SAREF`, `run --cgroup --saref N` or `--mark V`) is
//! per process: a cgroup of its own, an element of the table's `catchall`
//! maps, not in the rules' maps (see [`CatchAll`]).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod flatten;
mod render;
mod update;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ldsaref_rules::{Action, Proto, RuleSet};

pub use render::{
    fingerprint, Entry, Intervals, Layout, MapElements, PortChain, PortPieces, PortVerdict, Target,
    ABSENT_CHAIN, ABSENT_SET, CATCH_ALL_MAP, CATCH_ALL_MAP6, CODE_BASE, COMMENT_PREFIX,
    FINGERPRINT_CHAIN, LAYOUT_VERSION, SECTION_CHAIN, SHAPE_CHAIN, SLOTS,
};
pub use update::Change;

/// The nftables family and name of the table.
pub const TABLE: &str = "inet ldsaref";
/// The parent cgroup of every profile's cgroup, under the cgroup2 root.
pub const SLICE: &str = "ldsaref.slice";

/// What the kernel does to a packet a rule decides.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Verdict {
    /// `pass`: accept, unchanged.
    Pass,
    /// `deny`: TCP reset for TCP, drop otherwise.
    Deny,
    /// `reflect`: the conntrack mark of the flow, on replies.
    Reflect,
    /// `saref N`: the mast nfmark of SAref `N` (all 32 bits).
    Saref(u16),
    /// `mark V/M`: the bits `M` of the mark set to `V`.
    Mark {
        /// The bits to set (none outside `mask`).
        value: u32,
        /// Which bits.
        mask: u32,
    },
}

impl Verdict {
    /// The verdict of a rule's action; `None` for `dev`, which nftables
    /// cannot do.
    pub fn of(action: Action) -> Option<Verdict> {
        Some(match action {
            Action::Saref(s) => Verdict::Saref(s.get()),
            Action::Mark { value, mask } => Verdict::Mark { value, mask },
            Action::Reflect => Verdict::Reflect,
            Action::Pass => Verdict::Pass,
            Action::Deny => Verdict::Deny,
            Action::Dev(_) => return None,
        })
    }

    /// The mark a packet with mark `current` leaves with, for the verdicts
    /// that set one.
    pub fn mark(self, current: u32) -> Option<u32> {
        match self {
            Verdict::Saref(n) => Some(mast_mark(n)),
            Verdict::Mark { value, mask } => Some(current & !mask | value),
            _ => None,
        }
    }
}

/// The mast nfmark of an SAref: `((saref & 0x7fff) << 16) | 0x80000000`.
pub fn mast_mark(saref: u16) -> u32 {
    (u32::from(saref & 0x7fff) << 16) | 0x8000_0000
}

/// One element of a profile's map: destinations `addr_lo..=addr_hi` (IPv4
/// addresses are in the low 32 bits), protocol, remote ports
/// `port_lo..=port_hi`, and the verdict.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Element {
    /// First destination address.
    pub addr_lo: u128,
    /// Last destination address.
    pub addr_hi: u128,
    /// TCP or UDP.
    pub proto: Proto,
    /// First remote port.
    pub port_lo: u16,
    /// Last remote port.
    pub port_hi: u16,
    /// What the kernel does.
    pub verdict: Verdict,
}

impl Element {
    fn contains(&self, addr: u128, proto: Proto, port: u16) -> bool {
        (self.addr_lo..=self.addr_hi).contains(&addr)
            && self.proto == proto
            && (self.port_lo..=self.port_hi).contains(&port)
    }

    /// Whether two elements share a point (the kernel refuses that).
    pub fn overlaps(&self, other: &Element) -> bool {
        self.proto == other.proto
            && self.addr_lo <= other.addr_hi
            && other.addr_lo <= self.addr_hi
            && self.port_lo <= other.port_hi
            && other.port_lo <= self.port_hi
    }
}

/// The two maps of one section of the rules (a profile's, or the global
/// rules): where the section decides, its verdict; elsewhere no element.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Maps {
    /// IPv4 destinations (IPv4-mapped IPv6 destinations leave as IPv4).
    pub v4: Vec<Element>,
    /// IPv6 destinations, `::ffff:0:0/96` excluded.
    pub v6: Vec<Element>,
}

/// Whether `dest` leaves as IPv6, and its key in that family's maps: a
/// v4-mapped destination of an AF_INET6 socket leaves as an IPv4 packet.
pub(crate) fn family_key(dest: IpAddr) -> (bool, u128) {
    match dest {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(a4) => (false, u128::from(u32::from(a4))),
            None => (true, u128::from(a)),
        },
    }
}

impl Maps {
    /// The verdict of the element covering the destination, read as the
    /// kernel reads an interval map.
    pub fn lookup(&self, dest: IpAddr, proto: Proto, port: u16) -> Option<Verdict> {
        let (v6, key) = family_key(dest);
        let elements = if v6 { &self.v6 } else { &self.v4 };
        elements
            .iter()
            .find(|e| e.contains(key, proto, port))
            .map(|e| e.verdict)
    }

    fn elements(&self) -> impl Iterator<Item = &Element> {
        self.v4.iter().chain(&self.v6)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A profile's maps: its own rules only; the table falls through to the
/// global maps where they have no element.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ProfileMaps {
    /// The profile's name, as in the rules file.
    pub name: String,
    /// Its rules.
    pub maps: Maps,
    /// The fingerprint of its rules (see [`section_fingerprint`]).
    pub fingerprint: String,
}

impl ProfileMaps {
    /// The cgroup of the profile, relative to the cgroup2 root.
    pub fn cgroup(&self) -> String {
        cgroup_path(&self.name)
    }
}

/// A profile's section of the table, in the table's order (by name: see
/// [`Compiled::sections`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Section<'a> {
    /// A profile of the rules.
    Rules(&'a ProfileMaps),
    /// A profile whose rules are gone but whose place the table keeps
    /// (see [`Compiled::absent`]).
    Absent(&'a str),
}

/// The fingerprint an absent profile's section records (section
/// fingerprints of rules are hex).
pub const ABSENT_SECTION: &str = "absent";

impl<'a> Section<'a> {
    /// The profile's name.
    pub fn name(&self) -> &'a str {
        match self {
            Section::Rules(p) => &p.name,
            Section::Absent(name) => name,
        }
    }

    /// The fingerprint the table records for the section.
    pub fn fingerprint(&self) -> &'a str {
        match self {
            Section::Rules(p) => &p.fingerprint,
            Section::Absent(_) => ABSENT_SECTION,
        }
    }

    /// The profile's cgroup, relative to the cgroup2 root.
    pub fn cgroup(&self) -> String {
        cgroup_path(self.name())
    }
}

/// The whole table, before rendering.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Compiled {
    /// The global rules, shared by every profile.
    pub global: Maps,
    /// The fingerprint of the global rules (see [`section_fingerprint`]).
    pub global_fingerprint: String,
    /// One per profile of the rules, in order of first appearance.
    pub profiles: Vec<ProfileMaps>,
    /// Profiles without rules whose place the table keeps: an empty
    /// section, and their cgroups in the set [`ABSENT_SET`], whose
    /// packets `steer` drops (loopback aside), as its fall-through would.
    /// A connection that goes down (its updown file removed) and comes
    /// back then leaves the table's shape (its profiles, their cgroups)
    /// as it was, so each change replaces one section's elements (and
    /// one element of the set) instead of the whole table. Empty from [`compile`];
    /// `ldsaref apply` keeps here the installed table's profiles whose
    /// cgroup still exists ([`Compiled::keep`]). Not a decision: for
    /// [`decide`](Self::decide) they are unknown profiles, whose packets
    /// the kernel drops either way.
    pub absent: BTreeSet<String>,
    /// The verdicts that have a chain of their own (`deny`, `reflect`,
    /// `mark V/M`), of every rule, and `deny` always: the same whatever
    /// sections change, so that one section can be replaced alone.
    pub chains: BTreeSet<Verdict>,
}

impl Compiled {
    /// The verdicts the maps use, each one chain (but `pass`).
    pub fn verdicts(&self) -> BTreeSet<Verdict> {
        self.profiles
            .iter()
            .flat_map(|p| p.maps.elements())
            .chain(self.global.elements())
            .map(|e| e.verdict)
            .collect()
    }

    /// What the table does to a packet of a process in `profile`'s cgroup
    /// to `dest` (`proto`, remote `port`), read from the maps as the
    /// kernel does: the profile's maps, then the global ones. `None` when
    /// no element matches (the packet leaves unchanged), and `None` also
    /// for a profile the table does not have (the caller knows that the
    /// kernel then drops it).
    pub fn decide(&self, profile: &str, dest: IpAddr, proto: Proto, port: u16) -> Option<Verdict> {
        let p = self.profiles.iter().find(|p| p.name == profile)?;
        p.maps
            .lookup(dest, proto, port)
            .or_else(|| self.global.lookup(dest, proto, port))
    }

    /// [`decide`](Self::decide) for a process that also has a catch-all
    /// (`run --cgroup --saref N` or `--mark V`, in the catch-all's cgroup):
    /// where the maps decide nothing, IPv4 packets (v4-mapped destinations
    /// included) get the mast nfmark of N, and packets of both families
    /// mark V (see [`CatchKind::verdict`]).
    pub fn decide_with(
        &self,
        profile: &str,
        catch_all: Option<CatchKind>,
        dest: IpAddr,
        proto: Proto,
        port: u16,
    ) -> Option<Verdict> {
        self.profiles.iter().find(|p| p.name == profile)?;
        self.decide(profile, dest, proto, port)
            .or_else(|| catch_all.and_then(|c| c.verdict(dest)))
    }

    /// Keeps the place of the profiles `names` that have no rules here
    /// (see [`absent`](Self::absent)); the others are ignored.
    pub fn keep(&mut self, names: impl IntoIterator<Item = String>) {
        for name in names {
            if !self.profiles.iter().any(|p| p.name == name) {
                self.absent.insert(name);
            }
        }
    }

    /// The profiles' sections, present and absent, ordered by name: the
    /// table's section `pI` is the `I`-th. The order depends only on the
    /// names, so a profile that goes absent and comes back keeps its
    /// section.
    pub fn sections(&self) -> Vec<Section<'_>> {
        let mut v: Vec<Section<'_>> = self
            .profiles
            .iter()
            .map(Section::Rules)
            .chain(self.absent.iter().map(|n| Section::Absent(n)))
            .collect();
        v.sort_by(|a, b| a.name().cmp(b.name()));
        v
    }

    /// The table as it is rendered ([`Layout`]: address maps, then port
    /// chains), to evaluate it as the kernel does.
    pub fn rendered(&self) -> Rendered {
        Rendered {
            global: Layout::of(&self.global),
            profiles: self
                .profiles
                .iter()
                .map(|p| (p.name.clone(), Layout::of(&p.maps)))
                .collect(),
        }
    }

    /// The number of map elements, all maps together.
    pub fn len(&self) -> usize {
        self.global.len() + self.profiles.iter().map(|p| p.maps.len()).sum::<usize>()
    }

    /// Whether there are no elements at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The sections' [`Layout`]s, as [`Compiled::render`] writes them.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Rendered {
    /// The global rules.
    pub global: Layout,
    /// Each profile's, by name.
    pub profiles: Vec<(String, Layout)>,
}

impl Rendered {
    /// [`Compiled::decide_with`], read from the rendered table instead of
    /// the flattened maps: what the property test compares with the
    /// library.
    pub fn decide_with(
        &self,
        profile: &str,
        catch_all: Option<CatchKind>,
        dest: IpAddr,
        proto: Proto,
        port: u16,
    ) -> Option<Verdict> {
        let (_, layout) = self.profiles.iter().find(|(n, _)| n == profile)?;
        layout
            .lookup(dest, proto, port)
            .or_else(|| self.global.lookup(dest, proto, port))
            .or_else(|| catch_all.and_then(|c| c.verdict(dest)))
    }
}

/// A rule the kernel cannot apply.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CompileError {
    /// The rules file.
    pub file: String,
    /// The rule's line.
    pub line: u32,
    /// Why.
    pub message: String,
}

/// `file:line: message`.
impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for CompileError {}

/// Compiles the global rules and every profile of `set` into the table's
/// maps (a profile's chain tries its maps, then the global ones). Fails on the first `dev` rule, naming its line.
pub fn compile(set: &RuleSet) -> Result<Compiled, CompileError> {
    compile_sections(set, |_, _| true)
}

/// [`compile`], flattening only the sections `select(profile, fingerprint)`
/// accepts (`None`: the global rules); the others are left without
/// elements (for [`Compiled::render_update`], which replaces only the
/// sections that changed).
pub fn compile_sections(
    set: &RuleSet,
    select: impl Fn(Option<&str>, &str) -> bool,
) -> Result<Compiled, CompileError> {
    if let Some(rule) = set.rules().find(|r| Verdict::of(r.action).is_none()) {
        return Err(CompileError {
            file: set.file_name(rule.origin).to_owned(),
            line: rule.origin.line,
            message: format!(
                "`{}`: the cgroup backend cannot bind packets to an interface (nftables can \
                 only mark them); use `mark` with a routing rule to that interface, or run the \
                 program under the preload",
                rule.action
            ),
        });
    }
    let maps = |scope, name: Option<&str>, fp: &str| {
        if select(name, fp) {
            flatten_maps(set, scope)
        } else {
            Maps::default()
        }
    };
    let mut fps = section_fingerprints(set);
    let mut fp_of = |scope| fps.remove(&scope).unwrap_or_else(empty_section_fingerprint);
    let profiles = set
        .profile_names()
        .map(|name| {
            let scope = set.profile(name);
            let fp = fp_of(scope);
            ProfileMaps {
                name: name.to_owned(),
                maps: maps(scope, Some(name), &fp),
                fingerprint: fp,
            }
        })
        .collect();
    let global_fingerprint = fp_of(None);
    // `deny`'s chain is always there: updown denies a connection's
    // network for as long as it is down while the connection's other
    // networks are up, and a chain that came and went with it would
    // change the table's shape at each such down and up (the whole table
    // replaced, not one section). It costs nothing unused.
    let chains = set
        .rules()
        .filter_map(|r| Verdict::of(r.action))
        .filter(|v| render::has_chain(*v))
        .chain([Verdict::Deny])
        .collect();
    Ok(Compiled {
        global: maps(None, None, &global_fingerprint),
        global_fingerprint,
        profiles,
        absent: BTreeSet::new(),
        chains,
    })
}

impl Compiled {
    /// Flattens the sections of `set` that `select(profile, fingerprint)`
    /// accepts (`None`: the global rules) into this description, which
    /// [`compile_sections`] made of the same `set` (their fingerprints are
    /// not computed again).
    pub fn flatten_sections(&mut self, set: &RuleSet, select: impl Fn(Option<&str>, &str) -> bool) {
        if select(None, &self.global_fingerprint) {
            self.global = flatten_maps(set, None);
        }
        for p in &mut self.profiles {
            if select(Some(&p.name), &p.fingerprint) {
                p.maps = flatten_maps(set, set.profile(&p.name));
            }
        }
    }
}

/// A section's maps, the two families flattened on one thread each.
fn flatten_maps(set: &RuleSet, scope: Option<ldsaref_rules::ProfileId>) -> Maps {
    std::thread::scope(|s| {
        let v6 = s.spawn(|| flatten::flatten(set, scope, true));
        let v4 = flatten::flatten(set, scope, false);
        Maps {
            v4,
            v6: v6.join().unwrap_or_else(|e| std::panic::resume_unwind(e)),
        }
    })
}

/// The fingerprint of one section's rules (`scope`: a profile, or `None`
/// for the global rules): their destinations, protocols, ports and
/// actions in order, not their files or lines, so that editing one
/// connection's file leaves the other sections' fingerprints alone. It
/// decides which sections `ldsaref apply` must replace. Stable within a
/// build of ldsaref (a new build may replace everything once).
pub fn section_fingerprint(set: &RuleSet, scope: Option<ldsaref_rules::ProfileId>) -> String {
    section_fingerprints(set)
        .remove(&scope)
        .unwrap_or_else(empty_section_fingerprint)
}

/// The bytes a section's rules hash as (their `Hash` writes, appended):
/// hashed once per section, not once per field.
#[derive(Default)]
struct Bytes(Vec<u8>);

impl std::hash::Hasher for Bytes {
    fn write(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

fn section_hash(bytes: &[u8]) -> String {
    use std::hash::{Hash, Hasher};
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    render::LAYOUT_VERSION.hash(&mut h);
    h.write(bytes);
    format!("{:016x}", h.finish())
}

/// The fingerprint of a section without rules.
fn empty_section_fingerprint() -> String {
    section_hash(&[])
}

/// [`section_fingerprint`] of every section that has rules, in one pass
/// over the rules.
fn section_fingerprints(
    set: &RuleSet,
) -> std::collections::HashMap<Option<ldsaref_rules::ProfileId>, String> {
    use std::hash::Hash;
    let mut sections: std::collections::HashMap<Option<ldsaref_rules::ProfileId>, Bytes> =
        std::collections::HashMap::new();
    // A section's rules mostly follow each other: the last one's bytes
    // are at hand.
    let mut last: Option<(Option<ldsaref_rules::ProfileId>, Bytes)> = None;
    for r in set.rules() {
        let b = match &mut last {
            Some((p, b)) if *p == r.profile => b,
            _ => {
                if let Some((p, b)) = last.take() {
                    sections.insert(p, b);
                }
                let b = sections.remove(&r.profile).unwrap_or_default();
                &mut last.insert((r.profile, b)).1
            }
        };
        r.dest.hash(b);
        r.proto.hash(b);
        r.ports.hash(b);
        r.action.hash(b);
    }
    if let Some((p, b)) = last {
        sections.insert(p, b);
    }
    sections
        .into_iter()
        .map(|(k, b)| (k, section_hash(&b.0)))
        .collect()
}

/// A profile's cgroup directory name, as systemd names a slice:
/// `ldsaref-NAME.slice`, with `-` (systemd's hierarchy separator) and a
/// leading `.` escaped the way `systemd-escape` does (`\x2d`, `\x2e`), so
/// that a unit's `Slice=` of the same name lands in the same cgroup.
pub fn cgroup_name(profile: &str) -> String {
    let mut s = String::from("ldsaref-");
    for (i, c) in profile.chars().enumerate() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' || (c == '.' && i > 0) {
            s.push(c);
        } else {
            // Profile names are ASCII (A-Z a-z 0-9 _ . -).
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                s.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    s.push_str(".slice");
    s
}

/// The empty chain `profile_HEX` that records a profile section's name
/// (its bytes in hex: chain names cannot hold every character of a
/// profile name), so that `ldsaref apply` can keep its place (see
/// [`Compiled::absent`]).
pub const PROFILE_CHAIN: &str = "profile_";

/// The name of `profile`'s [`PROFILE_CHAIN`] (at most 136 bytes: nft
/// takes 255).
pub fn profile_chain(profile: &str) -> String {
    let mut s = String::from(PROFILE_CHAIN);
    for b in profile.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The profile a chain named by [`profile_chain`] records; `None` for any
/// other chain, or a name that is not a valid profile name.
pub fn profile_of_chain(chain: &str) -> Option<String> {
    let hex = chain.strip_prefix(PROFILE_CHAIN)?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = hex
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    let name = String::from_utf8(bytes).ok()?;
    // Only what profile_chain writes ("+f" parses as hex, too).
    (ldsaref_rules::is_profile_name(&name) && profile_chain(&name) == chain).then_some(name)
}

/// A profile's cgroup relative to the cgroup2 root:
/// `ldsaref.slice/ldsaref-NAME.slice`.
pub fn cgroup_path(profile: &str) -> String {
    format!("{SLICE}/{}", cgroup_name(profile))
}

/// What a catch-all gives the packets the rules leave undecided:
/// `run --cgroup --saref N` (as the library's `IPSEC_SAREF`: IPv4 only,
/// the mast nfmark of N) or `run --cgroup --mark V[/M]` (IPv4 and IPv6:
/// mark V; the packet's mark is 0 there, since a mark the program set
/// leaves the packet alone, and on a socket without a mark the library's
/// `mark V/M` sets V too, so the mask changes nothing).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum CatchKind {
    /// A catch-all SAref, in `1..=32767`.
    Saref(u16),
    /// A catch-all mark, never 0.
    Mark(u32),
}

impl CatchKind {
    /// The mark the packets get.
    pub fn mark(self) -> u32 {
        match self {
            CatchKind::Saref(n) => mast_mark(n),
            CatchKind::Mark(v) => v,
        }
    }

    /// Whether it applies to IPv6 destinations too (a mark does; an
    /// SAref, as `IPSEC_SAREF`, is IPv4 only).
    pub fn ipv6(self) -> bool {
        matches!(self, CatchKind::Mark(_))
    }

    /// The verdict it gives a packet to `dest` that no rule decides.
    pub fn verdict(self, dest: IpAddr) -> Option<Verdict> {
        let v6 = family_key(dest).0;
        match self {
            CatchKind::Saref(n) if !v6 => Some(Verdict::Saref(n)),
            CatchKind::Saref(_) => None,
            CatchKind::Mark(value) => Some(Verdict::Mark {
                value,
                mask: u32::MAX,
            }),
        }
    }

    /// What `ldsaref status` shows: `N` for an SAref, `mark=0xV`.
    pub fn label(self) -> String {
        match self {
            CatchKind::Saref(n) => n.to_string(),
            CatchKind::Mark(v) => format!("mark={v:#x}"),
        }
    }
}

/// A process's catch-all in the kernel (`ldsaref run --cgroup --profile P
/// --saref N` or `--mark V[/M]`): its own cgroup below P's (a nested slice,
/// as systemd names them),
/// `ldsaref.slice/ldsaref-P.slice/ldsaref-P-sarefN.slice` or
/// `…/ldsaref-P-mark0xV.slice` (V in lowercase hex: one cgroup per mark
/// the packets get, whatever mask was written), which the table's
/// `catchall` map (IPv4) and, for a mark, `catchall6` map (IPv6) give
/// its mark for what the rules leave undecided.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CatchAll {
    /// The profile.
    pub profile: String,
    /// The SAref or mark.
    pub kind: CatchKind,
}

impl CatchAll {
    /// The cgroup, relative to the cgroup2 root.
    pub fn cgroup(&self) -> String {
        format!(
            "{}/{}",
            cgroup_path(&self.profile),
            catch_all_name(&self.profile, self.kind)
        )
    }

    /// The catch-all a directory below `profile`'s cgroup stands for (only
    /// the names [`cgroup`](Self::cgroup) writes).
    pub fn from_dir_name(profile: &str, name: &str) -> Option<CatchAll> {
        let base = cgroup_name(profile);
        let stem = base.strip_suffix(".slice")?;
        let rest = name.strip_prefix(stem)?.strip_suffix(".slice")?;
        let kind = if let Some(n) = rest.strip_prefix("-saref") {
            if n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            CatchKind::Saref(n.parse::<u16>().ok().filter(|v| (1..=0x7fff).contains(v))?)
        } else {
            let hex = rest.strip_prefix("-mark0x")?;
            if hex.starts_with('0')
                || !hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return None;
            }
            CatchKind::Mark(u32::from_str_radix(hex, 16).ok()?)
        };
        Some(CatchAll {
            profile: profile.to_owned(),
            kind,
        })
    }
}

fn catch_all_name(profile: &str, kind: CatchKind) -> String {
    let base = cgroup_name(profile);
    let stem = base.trim_end_matches(".slice");
    match kind {
        CatchKind::Saref(n) => format!("{stem}-saref{n}.slice"),
        CatchKind::Mark(v) => format!("{stem}-mark{v:#x}.slice"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_names_are_systemd_slices() {
        assert_eq!(cgroup_name("client1"), "ldsaref-client1.slice");
        assert_eq!(cgroup_name("client-1"), "ldsaref-client\\x2d1.slice");
        assert_eq!(cgroup_name(".x.y"), "ldsaref-\\x2ex.y.slice");
        assert_eq!(cgroup_path("c1"), "ldsaref.slice/ldsaref-c1.slice");
    }

    #[test]
    fn catch_all_cgroups() {
        let c = CatchAll {
            profile: "client-1".to_owned(),
            kind: CatchKind::Saref(101),
        };
        assert_eq!(
            c.cgroup(),
            "ldsaref.slice/ldsaref-client\\x2d1.slice/ldsaref-client\\x2d1-saref101.slice"
        );
        assert_eq!(
            CatchAll::from_dir_name("client-1", "ldsaref-client\\x2d1-saref101.slice"),
            Some(c)
        );
        for bad in [
            "ldsaref-client\\x2d1-saref0.slice",
            "ldsaref-client\\x2d1-saref040.slice",
            "ldsaref-client\\x2d1-saref40000.slice",
            "ldsaref-c2-saref1.slice",
            "ldsaref-client\\x2d1-mark0x0.slice",
            "ldsaref-client\\x2d1-mark0x01.slice",
            "ldsaref-client\\x2d1-mark0xA.slice",
            "ldsaref-client\\x2d1-mark0x100000000.slice",
            "ldsaref-client\\x2d1-mark0x.slice",
            "ldsaref-client\\x2d1-mark1.slice",
            "x",
        ] {
            assert_eq!(CatchAll::from_dir_name("client-1", bad), None, "{bad}");
        }
        let m = CatchAll {
            profile: "client-1".to_owned(),
            kind: CatchKind::Mark(0x8065_0000),
        };
        assert_eq!(
            m.cgroup(),
            "ldsaref.slice/ldsaref-client\\x2d1.slice/ldsaref-client\\x2d1-mark0x80650000.slice"
        );
        assert_eq!(
            CatchAll::from_dir_name("client-1", "ldsaref-client\\x2d1-mark0x80650000.slice"),
            Some(m)
        );
        assert_eq!(
            CatchAll::from_dir_name("c1", "ldsaref-c1-mark0xffffffff.slice").map(|c| c.kind.mark()),
            Some(u32::MAX)
        );
    }

    #[test]
    fn mast_marks() {
        assert_eq!(mast_mark(101), 0x8065_0000);
        assert_eq!(mast_mark(202), 0x80ca_0000);
        assert_eq!(mast_mark(32767), 0xffff_0000);
        assert_eq!(
            Verdict::Mark {
                value: 0x200,
                mask: 0xff00
            }
            .mark(0x1234_5678),
            Some(0x1234_0278)
        );
    }
}
