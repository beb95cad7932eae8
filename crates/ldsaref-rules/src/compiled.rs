//! The compiled index: a rule set written once, as the arrays its lookup
//! reads, to a file every process maps read-only and looks rules up in,
//! in place (see `ldsaref compile`).
//!
//! # Format (version `VERSION`)
//!
//! All integers native-endian; the file is only ever read on the machine
//! (architecture) it was written for, which the header records.
//!
//! - a `Header`: magic `LDSAIDX\n`, format version, an endianness
//!   marker, the architecture name, the sizes of every record type (a
//!   layout change is a version change, this double-checks it), the total
//!   size, counts, and a table of sections (byte offset and length);
//! - the sections, each at an offset that is a multiple of 64:
//!   the lookup's arrays (`IndexView`: trie roots, trie blocks, trie
//!   results, prefix records, the list of prefixes with more rules, their
//!   entries, the prefix of each direct rule), then one `RuleRecord` per
//!   rule (its destination, protocol, ports, action, origin and profile:
//!   what a decision, a log line and `explain` say), the file and profile
//!   names (offset and length in the string table), the `SourceRecord`s
//!   of the files the index was compiled from, the string table, and the
//!   action of each rule again, dense (12 bytes: what deciding reads:
//!   value, kind and mask, the value first so that value and kind read
//!   as one 64-bit word, which for a valid `saref` is one comparison).
//!
//! # Trust
//!
//! Opening an index checks everything that is O(1) or O(files): the
//! header, that every section lies inside the file, is aligned and holds
//! whole records, that counts agree, and that the recorded sources are the
//! files the rules would be read from now, unchanged (path, device, inode,
//! size, mtime and ctime, in load order). It does not read the arrays:
//! that would be O(rules), which is what the index is there to avoid.
//! Instead every read is checked where it happens (the lookup's indices,
//! the parent walk that must go to smaller prefixes, the records' fields),
//! so that an index corrupt past its header gives no panic, no loop and no
//! read out of bounds; an action or a rule record that does not decode
//! (an SAref out of range, a `mark` with no mask or with bits outside it,
//! an unknown kind) is `deny`.
//!
//! Opening casts each section once to a typed slice of the bytes (the
//! checks above make every cast succeed), and decisions read those slices
//! as the lookup reads the index built in this process: the same
//! `Slices`, the same code (`IndexView`), every element read through
//! `get` (its one bounds check). Nothing is read unchecked, so none of
//! this depends on what the arrays hold, nor on the bytes staying as they
//! were when opened. Keeping the slices beside the bytes they borrow is
//! the crate's one `unsafe` (a lifetime extension, see `detach`).
//!
//! Version 2: leaves hold their prefix's bits and length (see `trie`),
//! and the dense actions are [value, kind, mask] (version 1: [kind,
//! value, mask], and leaves as depth and slot span).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::index::{in_sets, proto_code, Entry, IndexView, PrefixRules, Slices};
use crate::key::Family;
use crate::trie::{Block, Root, NONE};
use crate::{Action, Dest, IfName, Origin, PortRange, ProfileId, Proto, ProtoMatch, Rule, Saref};

/// The format version: any change of layout or meaning bumps it.
pub const VERSION: u32 = 2;
const MAGIC: [u8; 8] = *b"LDSAIDX\n";
const ENDIAN: u32 = 0x0102_0304;
/// Sections start at multiples of this (a cache line, and more than the
/// alignment of any record).
const ALIGN: usize = 64;

/// Header flag: some rule says `reflect`.
const FLAG_REFLECT: u32 = 1;

/// The sections, in file order.
#[derive(Clone, Copy)]
enum Section {
    Roots,
    Blocks,
    Results,
    Prefixes,
    More,
    Entries,
    DirectPrefix,
    Rules,
    Files,
    Profiles,
    Sources,
    Strings,
    /// What deciding reads of a rule, dense: [value, kind, mask] (see
    /// [`RuleRecord`]; for `dev`, the name is in the rule's record).
    Actions,
}
const SECTIONS: usize = 13;

#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Header {
    magic: [u8; 8],
    version: u32,
    endian: u32,
    /// `std::env::consts::ARCH`, NUL-padded.
    arch: [u8; 16],
    /// The size of each record type and of a pointer, see [`layout`].
    layout: [u32; 8],
    /// The size of the whole file.
    total: u64,
    rules: u32,
    /// Rule sets: the global one and one per profile.
    sets: u32,
    files: u32,
    profiles: u32,
    sources: u32,
    flags: u32,
    /// Byte offset and length of each [`Section`].
    sections: [[u64; 2]; SECTIONS],
}

/// One rule, as `explain` and the log show it and as a decision applies
/// it: 64 bytes, a cache line.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub(crate) struct RuleRecord {
    /// The destination's address: IPv4 in the first 4 bytes.
    addr: [u8; 16],
    /// SAref or mark value.
    value: u32,
    /// Mark mask.
    mask: u32,
    file: u32,
    line: u32,
    /// Profile id, or [`NONE`] for a global rule.
    profile: u32,
    lo: u16,
    hi: u16,
    ifname: [u8; 16],
    /// 0 `any`, 4 IPv4, 6 IPv6.
    family: u8,
    len: u8,
    /// The rule's own protocol (not the effective one), a `proto_code`.
    proto: u8,
    /// 1 if the rule has ports.
    ports: u8,
    /// 0 saref, 1 mark, 2 dev, 3 reflect, 4 pass, 5 deny.
    action: u8,
    ifname_len: u8,
    _pad: [u8; 2],
}

/// One source file, as it was when compiled.
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct SourceRecord {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    /// The path, in the string table.
    path: [u32; 2],
}

/// What identifies one version of a source file: a file changed in any
/// way (rewritten, renamed over, truncated, touched) has other values.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Fingerprint {
    /// The path, as the rules are read from it.
    pub path: Vec<u8>,
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
}

fn layout() -> [u32; 8] {
    let size = |n: usize| n as u32;
    [
        size(std::mem::size_of::<Header>()),
        size(std::mem::size_of::<Block>()),
        size(std::mem::size_of::<Root>()),
        size(std::mem::size_of::<PrefixRules>()),
        size(std::mem::size_of::<Entry>()),
        size(std::mem::size_of::<RuleRecord>()),
        size(std::mem::size_of::<SourceRecord>()),
        size(std::mem::size_of::<usize>()),
    ]
}

fn arch() -> [u8; 16] {
    let mut a = [0u8; 16];
    let name = std::env::consts::ARCH.as_bytes();
    let n = name.len().min(16);
    a[..n].copy_from_slice(&name[..n]);
    a
}

/// Why an index is not used.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Refusal {
    /// Not an index of this version, architecture or layout.
    Format(String),
    /// Inconsistent: truncated, a section out of bounds, counts that
    /// disagree.
    Corrupt(String),
    /// Compiled from other files, or from these files as they were before
    /// a change.
    Stale(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Format(why) => write!(f, "not usable here: {why}"),
            Refusal::Corrupt(why) => write!(f, "corrupt: {why}"),
            Refusal::Stale(why) => write!(f, "stale: {why}"),
        }
    }
}

/// The bytes of an index, held by whoever mapped or read them.
pub type Bytes = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// A validated index: its bytes, where each section is, and the arrays a
/// decision reads, cast once by [`Compiled::open`].
#[derive(Clone)]
pub(crate) struct Compiled {
    bytes: Bytes,
    sections: [(usize, usize); SECTIONS],
    rules: usize,
    flags: u32,
    /// Borrowed from `bytes` (see [`detach`]): never handed out for
    /// longer than a borrow of `self`, see [`Compiled::arrays`].
    arrays: Cast<'static>,
}

/// The sections a decision reads, as typed slices of the index's bytes.
#[derive(Clone, Copy, Default)]
struct Cast<'a> {
    lookup: Slices<'a>,
    /// The dense actions: [value, kind, mask].
    actions: &'a [[u32; 3]],
    records: &'a [RuleRecord],
}

/// `cast`, with its lifetime extended to `'static`, so that [`Compiled`]
/// can keep the slices beside the `Arc` that owns the bytes they borrow
/// (a self-reference, which safe Rust cannot spell).
///
/// Sound because, as `Compiled` uses it:
/// - the slices point into `*bytes` (the `AsRef` of the `Arc` the same
///   `Compiled` holds, and every clone of it holds a clone of the `Arc`),
///   and an `Arc`'s pointee neither moves nor drops while the `Arc` lives;
/// - `AsRef::as_ref(&self) -> &[u8]` promises its slice for as long as the
///   pointee is borrowed shared, and the pointee of an `Arc` that is kept
///   can be borrowed shared for as long as it is kept (no `&mut` to it can
///   exist: `Compiled` never calls `Arc::get_mut`); this is the reasoning
///   of `StableDeref`-based crates such as `yoke`;
/// - the field is private, and [`Compiled::arrays`] returns it with the
///   lifetime of `&self` (`Cast` is covariant), so no `'static` borrow
///   escapes, and no borrow outlives the `Compiled` it came from.
///
/// Every read of the slices is still bounds-checked (`get`): this only
/// spares each decision re-deriving them from the bytes.
#[allow(unsafe_code)]
fn detach(cast: Cast<'_>) -> Cast<'static> {
    // SAFETY: see above: `cast` borrows the bytes of the `Arc` that the
    // `Compiled` storing the result holds for as long as it exists, and
    // only `Compiled::arrays` reads the result, shortened to `&self`.
    unsafe { std::mem::transmute::<Cast<'_>, Cast<'static>>(cast) }
}

fn cast<T: FromBytes + Immutable + KnownLayout>(bytes: &[u8]) -> Option<&[T]> {
    <[T]>::ref_from_bytes(bytes).ok()
}

impl Compiled {
    /// Checks the format and structure of `bytes` (not the sources: see
    /// [`Compiled::sources_match`]). O(1).
    pub(crate) fn open(bytes: Bytes) -> Result<Compiled, Refusal> {
        let data: &[u8] = (*bytes).as_ref();
        let head_len = std::mem::size_of::<Header>();
        let Some(head) = data
            .get(..head_len)
            .and_then(|h| Header::ref_from_bytes(h).ok())
        else {
            return Err(if data.len() < head_len {
                Refusal::Corrupt(format!("{} bytes, shorter than a header", data.len()))
            } else {
                Refusal::Format("misaligned in memory".to_owned())
            });
        };
        if head.magic != MAGIC {
            return Err(Refusal::Format("not an ldsaref index".to_owned()));
        }
        if head.version != VERSION {
            return Err(Refusal::Format(format!(
                "format version {} (this library reads version {VERSION})",
                head.version
            )));
        }
        if head.endian != ENDIAN || head.arch != arch() || head.layout != layout() {
            return Err(Refusal::Format(format!(
                "compiled for another architecture ({})",
                String::from_utf8_lossy(&head.arch).trim_end_matches('\0')
            )));
        }
        if head.total != data.len() as u64 {
            return Err(Refusal::Corrupt(format!(
                "{} bytes, the header says {}",
                data.len(),
                head.total
            )));
        }
        let mut sections = [(0usize, 0usize); SECTIONS];
        for (i, &[off, len]) in head.sections.iter().enumerate() {
            let end = off.checked_add(len).filter(|&e| e <= head.total);
            let (Some(end), true) = (end, off as usize % ALIGN == 0) else {
                return Err(Refusal::Corrupt(format!("section {i} out of bounds")));
            };
            sections[i] = (off as usize, end as usize);
        }
        let mut compiled = Compiled {
            rules: head.rules as usize,
            flags: head.flags,
            sections,
            bytes: bytes.clone(),
            arrays: Cast::default(),
        };
        // Every array casts (aligned, whole records), and the counts agree.
        let counts = [
            (
                Section::Roots,
                compiled.count::<[Root; 2]>(Section::Roots),
                head.sets as usize,
            ),
            (
                Section::Blocks,
                compiled.count::<Block>(Section::Blocks),
                usize::MAX,
            ),
            (
                Section::Results,
                compiled.count::<u32>(Section::Results),
                usize::MAX,
            ),
            (
                Section::Prefixes,
                compiled.count::<PrefixRules>(Section::Prefixes),
                usize::MAX,
            ),
            (
                Section::More,
                compiled.count::<[u32; 3]>(Section::More),
                usize::MAX,
            ),
            (
                Section::Entries,
                compiled.count::<Entry>(Section::Entries),
                usize::MAX,
            ),
            (
                Section::DirectPrefix,
                compiled.count::<u32>(Section::DirectPrefix),
                head.rules as usize,
            ),
            (
                Section::Rules,
                compiled.count::<RuleRecord>(Section::Rules),
                head.rules as usize,
            ),
            (
                Section::Files,
                compiled.count::<[u32; 2]>(Section::Files),
                head.files as usize,
            ),
            (
                Section::Profiles,
                compiled.count::<[u32; 2]>(Section::Profiles),
                head.profiles as usize,
            ),
            (
                Section::Sources,
                compiled.count::<SourceRecord>(Section::Sources),
                head.sources as usize,
            ),
            (
                Section::Actions,
                compiled.count::<[u32; 3]>(Section::Actions),
                head.rules as usize,
            ),
            (
                Section::Strings,
                compiled.count::<u8>(Section::Strings),
                usize::MAX,
            ),
        ];
        for (section, count, want) in counts {
            match count {
                None => {
                    return Err(Refusal::Corrupt(format!(
                        "section {} misaligned or not whole records",
                        section as usize
                    )))
                }
                Some(n) if want != usize::MAX && n != want => {
                    return Err(Refusal::Corrupt(format!(
                        "section {} has {n} records, the header says {want}",
                        section as usize
                    )))
                }
                Some(_) => {}
            }
        }
        if head.sets as u64 != u64::from(head.profiles) + 1 {
            return Err(Refusal::Corrupt(
                "set and profile counts disagree".to_owned(),
            ));
        }
        // Every section casts (checked above): each array once, here,
        // rather than on every read of one of its elements.
        let cast = Cast {
            lookup: Slices {
                roots: compiled.array(Section::Roots),
                blocks: compiled.array(Section::Blocks),
                results: compiled.array(Section::Results),
                prefixes: compiled.array(Section::Prefixes),
                more: compiled.array(Section::More),
                entries: compiled.array(Section::Entries),
                direct_prefix: compiled.array(Section::DirectPrefix),
            },
            actions: compiled.array(Section::Actions),
            records: compiled.array(Section::Rules),
        };
        compiled.arrays = detach(cast);
        Ok(compiled)
    }

    /// The arrays a decision reads, borrowed from the bytes `self` holds.
    #[inline(always)]
    fn arrays(&self) -> &Cast<'_> {
        &self.arrays
    }

    fn data(&self) -> &[u8] {
        (*self.bytes).as_ref()
    }

    fn raw(&self, section: Section) -> Option<&[u8]> {
        let (start, end) = self.sections[section as usize];
        self.data().get(start..end)
    }

    fn count<T: FromBytes + Immutable + KnownLayout>(&self, section: Section) -> Option<usize> {
        self.raw(section).and_then(cast::<T>).map(<[T]>::len)
    }

    /// A section as records; empty if it does not cast (never, once open
    /// checked it).
    #[inline]
    fn array<T: FromBytes + Immutable + KnownLayout>(&self, section: Section) -> &[T] {
        self.raw(section).and_then(cast::<T>).unwrap_or_default()
    }

    /// The lookup's arrays, read in place.
    #[inline]
    pub(crate) fn view(&self) -> IndexView<&Slices<'_>> {
        IndexView(&self.arrays().lookup)
    }

    pub(crate) fn len(&self) -> usize {
        self.rules
    }

    pub(crate) fn has_reflect(&self) -> bool {
        self.flags & FLAG_REFLECT != 0
    }

    fn string(&self, table: Section, i: usize) -> Option<&[u8]> {
        let &[off, len] = self.array::<[u32; 2]>(table).get(i)?;
        let start = off as usize;
        self.array::<u8>(Section::Strings)
            .get(start..start.checked_add(len as usize)?)
    }

    fn names(&self, table: Section) -> impl Iterator<Item = &str> {
        let n = self.array::<[u32; 2]>(table).len();
        (0..n).map(move |i| self.name(table, i))
    }

    fn name(&self, table: Section, i: usize) -> &str {
        self.string(table, i)
            .and_then(|s| std::str::from_utf8(s).ok())
            .unwrap_or_default()
    }

    pub(crate) fn file_name(&self, file: u32) -> &str {
        self.name(Section::Files, file as usize)
    }

    pub(crate) fn file_names(&self) -> impl Iterator<Item = &str> {
        self.names(Section::Files)
    }

    pub(crate) fn profile_names(&self) -> impl Iterator<Item = &str> {
        self.names(Section::Profiles)
    }

    pub(crate) fn profile_name(&self, id: ProfileId) -> &str {
        self.name(Section::Profiles, id.index())
    }

    pub(crate) fn profile(&self, name: &str) -> Option<ProfileId> {
        self.profile_names()
            .position(|n| n == name && !n.is_empty())
            .map(ProfileId::new)
    }

    /// The rule `i`; a record that does not decode (a corrupt index) is
    /// `any deny`, with no origin: fail closed.
    pub(crate) fn rule(&self, i: u32) -> Rule {
        self.arrays()
            .records
            .get(i as usize)
            .and_then(|r| self.decode(r))
            .unwrap_or(Rule {
                dest: Dest::Any,
                proto: ProtoMatch::Any,
                ports: None,
                action: Action::Deny,
                origin: Origin {
                    file: NONE,
                    line: 0,
                },
                profile: None,
            })
    }

    /// The rule that decides, and its action.
    #[inline]
    pub(crate) fn decide(
        &self,
        profile: Option<ProfileId>,
        family: Family,
        key: u128,
        proto: Proto,
        port: u16,
    ) -> Option<(u32, Action)> {
        let found = in_sets(self.view(), profile, family, key, proto, port)?;
        Some((found, self.action(found)))
    }

    /// The action of rule `i` (`deny` if it does not decode, as
    /// [`decode_action`] would say). Built in place rather than through an
    /// `Option`: this is on every decision's path.
    #[inline]
    fn action(&self, i: u32) -> Action {
        let arrays = self.arrays();
        let i = i as usize;
        let Some(&[value, kind, mask]) = arrays.actions.get(i) else {
            return Action::Deny;
        };
        // The commonest first: a valid `saref` (kind 0, and a value in
        // range) is one comparison. A kind 0 that is not falls to `deny`.
        if let Some(saref) = Saref::tagged(u64::from(kind) << 32 | u64::from(value)) {
            return Action::Saref(saref);
        }
        // A valid `mark` (kind 1, a mask, no bit of the value outside it):
        // one test of kind and value together, then the mask.
        if (kind ^ 1) | (value & !mask) == 0 && mask != 0 {
            return Action::Mark { value, mask };
        }
        match kind {
            2 => match arrays.records.get(i).and_then(decode_action) {
                Some(action) => action,
                None => Action::Deny,
            },
            3 => Action::Reflect,
            4 => Action::Pass,
            _ => Action::Deny,
        }
    }

    fn decode(&self, r: &RuleRecord) -> Option<Rule> {
        let dest = match (r.family, r.len) {
            (0, 0) => Dest::Any,
            (4, len @ 0..=32) => {
                let [a, b, c, d, ..] = r.addr;
                Dest::Net {
                    addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
                    len,
                }
            }
            (6, len @ 0..=128) => Dest::Net {
                addr: IpAddr::V6(Ipv6Addr::from(r.addr)),
                len,
            },
            _ => return None,
        };
        let proto = match r.proto {
            0 => ProtoMatch::Any,
            1 => ProtoMatch::Tcp,
            2 => ProtoMatch::Udp,
            _ => return None,
        };
        let ports = match r.ports {
            0 => None,
            1 if r.lo <= r.hi => Some(PortRange { lo: r.lo, hi: r.hi }),
            _ => return None,
        };
        let profile = match r.profile {
            NONE => None,
            p if (p as usize) < self.array::<[u32; 2]>(Section::Profiles).len() => {
                Some(ProfileId::new(p as usize))
            }
            _ => return None,
        };
        Some(Rule {
            dest,
            proto,
            ports,
            action: decode_action(r)?,
            origin: Origin {
                file: r.file,
                line: r.line,
            },
            profile,
        })
    }

    /// Whether the index was compiled from exactly `now`, the files the
    /// rules would be read from, as they are: same paths in the same order,
    /// each unchanged. O(files).
    pub(crate) fn sources_match(&self, now: &[Fingerprint]) -> Result<(), Refusal> {
        let recorded = self.array::<SourceRecord>(Section::Sources);
        let path_of = |r: &SourceRecord| {
            let start = r.path[0] as usize;
            self.array::<u8>(Section::Strings)
                .get(start..start.saturating_add(r.path[1] as usize))
                .unwrap_or_default()
        };
        for (i, fp) in now.iter().enumerate() {
            let shown = String::from_utf8_lossy(&fp.path);
            let Some(r) = recorded.get(i) else {
                return Err(Refusal::Stale(format!(
                    "{shown} is not among the files the index was compiled from"
                )));
            };
            if path_of(r) != fp.path.as_slice() {
                return Err(Refusal::Stale(format!(
                    "compiled from {} where the rules now include {shown}",
                    String::from_utf8_lossy(path_of(r))
                )));
            }
            if (r.dev, r.ino, r.size, r.mtime_ns, r.ctime_ns)
                != (fp.dev, fp.ino, fp.size, fp.mtime_ns, fp.ctime_ns)
            {
                return Err(Refusal::Stale(format!(
                    "{shown} changed since the index was compiled"
                )));
            }
        }
        if let Some(r) = recorded.get(now.len()) {
            return Err(Refusal::Stale(format!(
                "compiled from {}, which the rules no longer include",
                String::from_utf8_lossy(path_of(r))
            )));
        }
        Ok(())
    }
}

/// What the parser guarantees of a `mark` (see [`Action::Mark`]): a mask,
/// and no bit of the value outside it.
#[inline(always)]
fn mark_holds(value: u32, mask: u32) -> bool {
    mask != 0 && value & !mask == 0
}

fn decode_action(r: &RuleRecord) -> Option<Action> {
    Some(match r.action {
        0 => Action::Saref(Saref::new(r.value)?),
        1 if mark_holds(r.value, r.mask) => Action::Mark {
            value: r.value,
            mask: r.mask,
        },
        2 => {
            let name = r.ifname.get(..usize::from(r.ifname_len))?;
            Action::Dev(IfName::new(std::str::from_utf8(name).ok()?).ok()?)
        }
        3 => Action::Reflect,
        4 => Action::Pass,
        5 => Action::Deny,
        _ => return None,
    })
}

fn encode_rule(rule: &Rule) -> RuleRecord {
    let mut r = RuleRecord::new_zeroed();
    match rule.dest {
        Dest::Any => {}
        Dest::Net { addr, len } => {
            r.len = len;
            match addr {
                IpAddr::V4(a) => {
                    r.family = 4;
                    r.addr[..4].copy_from_slice(&a.octets());
                }
                IpAddr::V6(a) => {
                    r.family = 6;
                    r.addr = a.octets();
                }
            }
        }
    }
    r.proto = proto_code(rule.proto);
    if let Some(p) = rule.ports {
        r.ports = 1;
        (r.lo, r.hi) = (p.lo, p.hi);
    }
    r.action = match rule.action {
        Action::Saref(s) => {
            r.value = u32::from(s.get());
            0
        }
        Action::Mark { value, mask } => {
            (r.value, r.mask) = (value, mask);
            1
        }
        Action::Dev(name) => {
            let b = name.as_bytes();
            r.ifname[..b.len()].copy_from_slice(b);
            r.ifname_len = b.len() as u8;
            2
        }
        Action::Reflect => 3,
        Action::Pass => 4,
        Action::Deny => 5,
    };
    r.file = rule.origin.file;
    r.line = rule.origin.line;
    r.profile = rule.profile.map_or(NONE, |p| p.index() as u32);
    r
}

/// What the writer needs of a parsed set.
pub(crate) struct Parts<'a> {
    pub view: Slices<'a>,
    pub rules: &'a [Rule],
    pub files: Vec<&'a str>,
    pub profiles: Vec<&'a str>,
    pub reflect: bool,
}

/// The index of `parts`, compiled from the files `sources`.
pub(crate) fn write(parts: &Parts<'_>, sources: &[Fingerprint]) -> Vec<u8> {
    let mut strings: Vec<u8> = Vec::new();
    let mut intern = |s: &[u8]| {
        let at = [strings.len() as u32, s.len() as u32];
        strings.extend_from_slice(s);
        at
    };
    let files: Vec<[u32; 2]> = parts.files.iter().map(|f| intern(f.as_bytes())).collect();
    let profiles: Vec<[u32; 2]> = parts
        .profiles
        .iter()
        .map(|p| intern(p.as_bytes()))
        .collect();
    let source_records: Vec<SourceRecord> = sources
        .iter()
        .map(|s| SourceRecord {
            dev: s.dev,
            ino: s.ino,
            size: s.size,
            mtime_ns: s.mtime_ns,
            ctime_ns: s.ctime_ns,
            path: intern(&s.path),
        })
        .collect();
    let records: Vec<RuleRecord> = parts.rules.iter().map(encode_rule).collect();
    let actions: Vec<[u32; 3]> = records
        .iter()
        .map(|r| [r.value, u32::from(r.action), r.mask])
        .collect();
    let v = parts.view;
    let sections: [&[u8]; SECTIONS] = [
        v.roots.as_bytes(),
        v.blocks.as_bytes(),
        v.results.as_bytes(),
        v.prefixes.as_bytes(),
        v.more.as_bytes(),
        v.entries.as_bytes(),
        v.direct_prefix.as_bytes(),
        records.as_bytes(),
        files.as_bytes(),
        profiles.as_bytes(),
        source_records.as_bytes(),
        &strings,
        actions.as_bytes(),
    ];
    let mut head = Header {
        magic: MAGIC,
        version: VERSION,
        endian: ENDIAN,
        arch: arch(),
        layout: layout(),
        total: 0,
        rules: parts.rules.len() as u32,
        sets: parts.profiles.len() as u32 + 1,
        files: files.len() as u32,
        profiles: profiles.len() as u32,
        sources: source_records.len() as u32,
        flags: if parts.reflect { FLAG_REFLECT } else { 0 },
        sections: [[0; 2]; SECTIONS],
    };
    let mut out = vec![0u8; std::mem::size_of::<Header>().next_multiple_of(ALIGN)];
    for (i, s) in sections.iter().enumerate() {
        head.sections[i] = [out.len() as u64, s.len() as u64];
        out.extend_from_slice(s);
        out.resize(out.len().next_multiple_of(ALIGN), 0);
    }
    head.total = out.len() as u64;
    out[..std::mem::size_of::<Header>()].copy_from_slice(head.as_bytes());
    out
}

/// Bytes with the alignment an index needs, for an index read into memory
/// rather than mapped (the command, tests).
pub struct AlignedBytes {
    words: Vec<Line>,
    len: usize,
}

/// 64 bytes, 64-byte aligned.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl AlignedBytes {
    /// A copy of `bytes`, 64-byte aligned.
    pub fn new(bytes: &[u8]) -> AlignedBytes {
        let mut words = vec![Line([0; 64]); bytes.len().div_ceil(64)];
        words.as_mut_bytes()[..bytes.len()].copy_from_slice(bytes);
        AlignedBytes {
            words,
            len: bytes.len(),
        }
    }
}

impl AlignedBytes {
    /// The next `len` bytes of `reader`, 64-byte aligned.
    pub fn read(reader: &mut impl std::io::Read, len: usize) -> std::io::Result<AlignedBytes> {
        let mut words = vec![Line([0; 64]); len.div_ceil(64)];
        reader.read_exact(&mut words.as_mut_bytes()[..len])?;
        Ok(AlignedBytes { words, len })
    }
}

impl AsRef<[u8]> for AlignedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.words.as_bytes()[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the dense actions hold, a decision gets a valid action:
    /// the one stored, or `deny`.
    #[test]
    fn actions_that_do_not_decode_are_deny() {
        let set = crate::RuleSet::parse("10.0.0.0/8 dev ipsec0\n", "t").unwrap();
        let good = set.compile(&[]).unwrap();
        let head = Header::read_from_bytes(&good[..std::mem::size_of::<Header>()]).unwrap();
        let at = head.sections[Section::Actions as usize][0] as usize;
        let saref = |v| Action::Saref(Saref::new(v).unwrap());
        let mark = |value, mask| Action::Mark { value, mask };
        let dev = Action::Dev(IfName::new("ipsec0").unwrap());
        let cases = [
            // [value, kind, mask]
            ([1, 0, 0], saref(1)),
            ([32767, 0, 7], saref(32767)),
            ([0, 0, 0], Action::Deny),
            ([32768, 0, 0], Action::Deny),
            ([u32::MAX, 0, 0], Action::Deny),
            ([5, 1 << 31, 0], Action::Deny),
            ([0x200, 1, 0xff00], mark(0x200, 0xff00)),
            ([0, 1, u32::MAX], mark(0, u32::MAX)),
            ([0x200, 1, 0], Action::Deny),
            ([0x201, 1, 0xff00], Action::Deny),
            ([0, 2, 0], dev),
            ([0, 3, 0], Action::Reflect),
            ([0, 4, 0], Action::Pass),
            ([0, 5, 0], Action::Deny),
            ([0, 6, 0], Action::Deny),
            ([1, u32::MAX, 1], Action::Deny),
        ];
        for (stored, want) in cases {
            let mut b = good.clone();
            b[at..at + 12].copy_from_slice(stored.as_bytes());
            let c = Compiled::open(Arc::new(AlignedBytes::new(&b))).unwrap();
            assert_eq!(c.action(0), want, "{stored:?}");
            assert_eq!(c.action(1), Action::Deny, "no rule 1");
        }
    }

    #[test]
    fn records_have_their_sizes() {
        assert_eq!(std::mem::size_of::<RuleRecord>(), 64);
        assert_eq!(std::mem::size_of::<Root>(), 32);
        assert_eq!(std::mem::size_of::<Entry>(), 12);
        assert_eq!(std::mem::size_of::<SourceRecord>(), 48);
        assert_eq!(std::mem::size_of::<Header>() % 8, 0);
    }
}
