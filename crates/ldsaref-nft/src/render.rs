//! The text of the table, for `nft -f`.

use std::collections::HashMap;
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ldsaref_rules::Proto;

use crate::{CatchAll, Compiled, Maps, Verdict, SLICE, TABLE};

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
            Verdict::Deny => vec![
                "meta l4proto tcp reject with tcp reset".to_owned(),
                "drop".to_owned(),
            ],
            Verdict::Reflect => {
                vec!["ct direction reply ct mark != 0 meta mark set ct mark".to_owned()]
            }
            Verdict::Saref(n) => vec![format!("meta mark set {:#010x}", crate::mast_mark(n))],
            Verdict::Mark { value, mask } if mask == u32::MAX => {
                vec![format!("meta mark set {value:#010x}")]
            }
            Verdict::Mark { value, mask } => vec![format!(
                "meta mark set meta mark and {:#010x} or {value:#010x}",
                !mask
            )],
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

/// What an address interval of a section's map leads to: one verdict for
/// every TCP and UDP port, or a small chain of port rules (an index into
/// [`Layout::chains`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Target {
    /// The same verdict for all of TCP and UDP.
    Verdict(Verdict),
    /// The port rules of [`Layout::chains`]`[i]`; where none matches, the
    /// section decides nothing.
    Ports(usize),
}

/// The pieces of a port chain: `(proto, first port, last port, verdict)`.
pub type PortPieces = Vec<(Proto, u16, u16, Verdict)>;

/// A section's maps as the table holds them: a *non-concatenated* interval
/// map per family keyed by the destination address alone (a red-black
/// tree in the kernel: lookups in O(log n), and fast to load), whose
/// elements lead either to a verdict or, for the few address pieces where
/// ports or protocols matter, to a small chain of port rules (shared by the
/// pieces that need the same one). Concatenated interval maps (pipapo)
/// cost time linear in the number of elements per lookup and per insert,
/// which 100k rules make seconds to load.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Layout {
    /// IPv4: `(first, last, target)`, disjoint, in order.
    pub v4: Vec<(u128, u128, Target)>,
    /// IPv6, the same.
    pub v6: Vec<(u128, u128, Target)>,
    /// The port chains.
    pub chains: Vec<PortPieces>,
}

impl Layout {
    /// The layout of `maps`: each address cell's elements (consecutive,
    /// with the same address interval) become one address element.
    pub fn of(maps: &Maps) -> Layout {
        let mut l = Layout::default();
        let mut index: HashMap<PortPieces, usize> = HashMap::new();
        for v6 in [false, true] {
            let elements = if v6 { &maps.v6 } else { &maps.v4 };
            let mut out: Vec<(u128, u128, Target)> = Vec::new();
            let mut i = 0;
            while i < elements.len() {
                let (lo, hi) = (elements[i].addr_lo, elements[i].addr_hi);
                let mut j = i;
                while j < elements.len() && elements[j].addr_lo == lo && elements[j].addr_hi == hi {
                    j += 1;
                }
                let cell = &elements[i..j];
                let uniform = cell.len() == 2
                    && cell[0].verdict == cell[1].verdict
                    && cell.iter().all(|e| e.port_lo == 0 && e.port_hi == u16::MAX)
                    && cell[0].proto != cell[1].proto;
                let target = if uniform {
                    Target::Verdict(cell[0].verdict)
                } else {
                    let pieces: PortPieces = cell
                        .iter()
                        .map(|e| (e.proto, e.port_lo, e.port_hi, e.verdict))
                        .collect();
                    let n = l.chains.len();
                    let k = *index.entry(pieces.clone()).or_insert(n);
                    if k == n {
                        l.chains.push(pieces);
                    }
                    Target::Ports(k)
                };
                match out.last_mut() {
                    Some((_, last, t)) if *t == target && last.checked_add(1) == Some(lo) => {
                        *last = hi;
                    }
                    _ => out.push((lo, hi, target)),
                }
                i = j;
            }
            if v6 {
                l.v6 = out;
            } else {
                l.v4 = out;
            }
        }
        l
    }

    /// The verdict the table gives: the address element, then its port
    /// chain's first matching rule; `None` where the section decides
    /// nothing (the table goes on to the next section).
    pub fn lookup(&self, dest: IpAddr, proto: Proto, port: u16) -> Option<Verdict> {
        let (v6, key) = crate::family_key(dest);
        let elements = if v6 { &self.v6 } else { &self.v4 };
        let i = elements.partition_point(|(_, hi, _)| *hi < key);
        let &(lo, _, target) = elements.get(i)?;
        if lo > key {
            return None;
        }
        match target {
            Target::Verdict(v) => Some(v),
            Target::Ports(k) => self.chains[k]
                .iter()
                .find(|(p, lo, hi, _)| *p == proto && (*lo..=*hi).contains(&port))
                .map(|(.., v)| *v),
        }
    }

    /// The number of map elements and port rules.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len() + self.chains.iter().map(Vec::len).sum::<usize>()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The mark a verdict sets whole (`saref N`, `mark V` without a mask):
/// those need no chain of their own; a section's mark map holds them.
fn full_mark(v: Verdict) -> Option<u32> {
    match v {
        Verdict::Saref(n) => Some(crate::mast_mark(n)),
        Verdict::Mark { value, mask } if mask == u32::MAX => Some(value),
        _ => None,
    }
}

/// The version of the table's layout, in every section's fingerprint and
/// in the shape `ldsaref apply` records: a new layout replaces the whole
/// table (3: the IPv6 catch-all map `catchall6`).
pub const LAYOUT_VERSION: u32 = 3;

/// Whether a verdict has a chain in the table.
pub(crate) fn has_chain(v: Verdict) -> bool {
    full_mark(v).is_none() && v.chain().is_some()
}

/// The value of an address map's element as written.
fn map_value(section: &str, t: Target, v6: bool) -> String {
    match t {
        Target::Ports(k) => format!("goto {section}_x{k}"),
        Target::Verdict(v) if full_mark(v).is_some() => {
            format!("goto {section}_mark{}", if v6 { 6 } else { 4 })
        }
        Target::Verdict(v) => match v.chain() {
            None => "accept".to_owned(),
            Some(chain) => format!("goto {chain}"),
        },
    }
}

/// A section's address-map elements (neighbours with the same value
/// merged) and mark-map elements, for one family.
#[allow(clippy::type_complexity)]
fn elements_of(
    name: &str,
    elements: &[(u128, u128, Target)],
    v6: bool,
) -> (Vec<(u128, u128, String)>, Vec<(u128, u128, u32)>) {
    let mut merged: Vec<(u128, u128, String)> = Vec::with_capacity(elements.len());
    for &(lo, hi, t) in elements {
        let value = map_value(name, t, v6);
        match merged.last_mut() {
            Some((_, last, v)) if *v == value && last.checked_add(1) == Some(lo) => *last = hi,
            _ => merged.push((lo, hi, value)),
        }
    }
    let marks = elements
        .iter()
        .filter_map(|&(lo, hi, t)| match t {
            Target::Verdict(v) => full_mark(v).map(|m| (lo, hi, m)),
            Target::Ports(_) => None,
        })
        .collect();
    (merged, marks)
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

/// The rule of a port chain for one piece.
fn port_rule(p: Proto, lo: u16, hi: u16, v: Verdict) -> String {
    let mut r = format!("meta l4proto {}", proto(p));
    if (lo, hi) != (0, u16::MAX) {
        r.push_str(&format!(" th dport {}", port_range(lo, hi)));
    }
    match (full_mark(v), v.chain()) {
        (Some(m), _) => r.push_str(&format!(" meta mark set {m:#010x} accept")),
        (None, None) => r.push_str(" accept"),
        (None, Some(chain)) => r.push_str(&format!(" goto {chain}")),
    }
    r
}

/// The address maps `NAME_v4`, `NAME_v6` (address → verdict), the mark
/// maps `NAME_m4`, `NAME_m6` (address → mark, for the elements that set
/// a whole mark: one lookup more for them, instead of one chain per mark),
/// and the port chains `NAME_xK` (ending with `goto NEXT`: where no port
/// rule decides, the next section decides).
fn write_maps(s: &mut String, name: &str, layout: &Layout, next: &str) -> std::fmt::Result {
    for (family, elements, v6) in [
        ("ipv4_addr", &layout.v4, false),
        ("ipv6_addr", &layout.v6, true),
    ] {
        let suffix = if v6 { "v6" } else { "v4" };
        let (merged, marks) = elements_of(name, elements, v6);
        writeln!(s, "\tmap {name}_{suffix} {{")?;
        writeln!(s, "\t\ttype {family} : verdict")?;
        writeln!(s, "\t\tflags interval")?;
        if !merged.is_empty() {
            writeln!(s, "\t\telements = {{")?;
            write_elements(s, &merged, v6, String::clone);
            writeln!(s, "\t\t}}")?;
        }
        writeln!(s, "\t}}")?;
        let n = if v6 { 6 } else { 4 };
        writeln!(s, "\tmap {name}_m{n} {{")?;
        writeln!(s, "\t\ttype {family} : mark")?;
        writeln!(s, "\t\tflags interval")?;
        if !marks.is_empty() {
            writeln!(s, "\t\telements = {{")?;
            write_elements(s, &marks, v6, |m| format!("{m:#010x}"));
            writeln!(s, "\t\t}}")?;
        }
        writeln!(s, "\t}}")?;
        writeln!(s, "\tchain {name}_mark{n} {{")?;
        writeln!(
            s,
            "\t\tmeta mark set {} daddr map @{name}_m{n}",
            if v6 { "ip6" } else { "ip" }
        )?;
        writeln!(s, "\t}}")?;
    }
    for (k, pieces) in layout.chains.iter().enumerate() {
        writeln!(s, "\tchain {name}_x{k} {{")?;
        for &(p, lo, hi, v) in pieces {
            writeln!(s, "\t\t{}", port_rule(p, lo, hi, v))?;
        }
        writeln!(s, "\t\tgoto {next}")?;
        writeln!(s, "\t}}")?;
    }
    Ok(())
}

/// The empty chain that records a section's fingerprint.
pub const SECTION_CHAIN: &str = "sum_";
/// The empty chain that records the fingerprint of the table's shape
/// (profiles, cgroups, verdict chains): sections can be replaced alone
/// only while it is the same.
pub const SHAPE_CHAIN: &str = "shape_";

/// The rules of a section's chain that look its maps up.
fn write_lookups(s: &mut String, name: &str) -> std::fmt::Result {
    writeln!(
        s,
        "\t\tmeta l4proto {{ tcp, udp }} ip daddr vmap @{name}_v4"
    )?;
    writeln!(
        s,
        "\t\tmeta l4proto {{ tcp, udp }} ip6 daddr vmap @{name}_v6"
    )
}

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
        let (name, maps, fp, next) = match profile {
            None => (
                "global".to_owned(),
                &self.global,
                &self.global_fingerprint,
                "tail",
            ),
            Some(i) => (
                format!("p{i}"),
                &self.profiles[i].maps,
                &self.profiles[i].fingerprint,
                "global",
            ),
        };
        let layout = Layout::of(maps);
        let mut s = String::new();
        let t = TABLE;
        s.push_str(&format!(
            "# ldsaref: section {name} replaced (ldsaref apply)\n"
        ));
        // The maps are made again, elements inline: nft 1.0.6 reads every
        // element of every set before an `add element` command (seconds
        // for 100k rules), not before a new map's `elements = { }`. The
        // chains that name them are flushed first, the old maps (which
        // name the port chains) deleted before the port chains change.
        for c in [
            name.clone(),
            format!("{name}_mark4"),
            format!("{name}_mark6"),
        ] {
            s.push_str(&format!("flush chain {t} {c}\n"));
        }
        for m in ["v4", "m4", "v6", "m6"] {
            s.push_str(&format!("delete map {t} {name}_{m}\n"));
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
        for k in 0..old_port_chains.max(new_chains) {
            if k >= new_chains {
                s.push_str(&format!("delete chain {t} {name}_x{k}\n"));
            } else if k < old_port_chains {
                s.push_str(&format!("flush chain {t} {name}_x{k}\n"));
            } else {
                s.push_str(&format!("add chain {t} {name}_x{k}\n"));
            }
        }
        for (k, pieces) in layout.chains.iter().enumerate() {
            for &(p, lo, hi, v) in pieces {
                s.push_str(&format!(
                    "add rule {t} {name}_x{k} {}\n",
                    port_rule(p, lo, hi, v)
                ));
            }
            s.push_str(&format!("add rule {t} {name}_x{k} goto {next}\n"));
        }
        for (family, elements, v6) in [
            ("ipv4_addr", &layout.v4, false),
            ("ipv6_addr", &layout.v6, true),
        ] {
            let (merged, marks) = elements_of(&name, elements, v6);
            let n = if v6 { 6 } else { 4 };
            s.push_str(&format!(
                "add map {t} {name}_v{n} {{ type {family} : verdict; flags interval;"
            ));
            if !merged.is_empty() {
                s.push_str(" elements = {\n");
                write_elements(&mut s, &merged, v6, String::clone);
                s.push('}');
            }
            s.push_str(" }\n");
            s.push_str(&format!(
                "add map {t} {name}_m{n} {{ type {family} : mark; flags interval;"
            ));
            if !marks.is_empty() {
                s.push_str(" elements = {\n");
                write_elements(&mut s, &marks, v6, |m| format!("{m:#010x}"));
                s.push('}');
            }
            s.push_str(" }\n");
            s.push_str(&format!(
                "add rule {t} {name}_mark{n} meta mark set {} daddr map @{name}_m{n}\n",
                if v6 { "ip6" } else { "ip" }
            ));
        }
        s.push_str(&format!(
            "add rule {t} {name} meta l4proto {{ tcp, udp }} ip daddr vmap @{name}_v4\n\
             add rule {t} {name} meta l4proto {{ tcp, udp }} ip6 daddr vmap @{name}_v6\n\
             add rule {t} {name} goto {next}\n"
        ));
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
        for (i, p) in self.profiles.iter().enumerate() {
            writeln!(s, "\tchain {SECTION_CHAIN}p{i}_{} {{\n\t}}", p.fingerprint)?;
        }
        writeln!(s)?;
        writeln!(s, "\t# The global rules, after a profile's own.")?;
        write_maps(s, "global", &Layout::of(&self.global), "tail")?;
        writeln!(s, "\tchain global {{")?;
        write_lookups(s, "global")?;
        writeln!(s, "\t\tgoto tail")?;
        writeln!(s, "\t}}")?;
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
        for (i, p) in self.profiles.iter().enumerate() {
            writeln!(s)?;
            writeln!(s, "\t# [{}]: cgroup {}", p.name, p.cgroup())?;
            let name = format!("p{i}");
            write_maps(s, &name, &Layout::of(&p.maps), "global")?;
            writeln!(s, "\tchain {name} {{")?;
            write_lookups(s, &name)?;
            writeln!(s, "\t\tgoto global")?;
            writeln!(s, "\t}}")?;
        }
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
        for (i, p) in self.profiles.iter().enumerate() {
            writeln!(
                s,
                "\t\tsocket cgroupv2 level 2 \"{root}{}\" goto p{i}",
                p.cgroup()
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
