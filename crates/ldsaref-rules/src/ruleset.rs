//! A loaded, immutable rule set and its lookup.

use std::fmt;
use std::net::IpAddr;

use crate::compiled::{self, Bytes, Compiled, Fingerprint, Refusal};
use crate::index::{in_sets, Index};
use crate::key::match_key;
use crate::profiles::Profiles;
use crate::{Action, Origin, ParseError, ProfileId, Proto, Rule, RuleSetBuilder};

/// The rules of one rules file (or directory), ready for lookups: parsed
/// from the text in this process, or a compiled index (see
/// [`crate::compiled`] and [`crate::files`]) looked up in place. Both
/// answer through the same lookup code, so always alike.
///
/// Immutable once built, and `Send + Sync`: one set can serve every thread
/// of the host program.
#[derive(Clone)]
pub struct RuleSet {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Parsed(Parsed),
    Compiled(Compiled),
}

#[derive(Clone)]
struct Parsed {
    /// In load order.
    rules: Vec<Rule>,
    /// The action of each rule, apart: deciding reads only this of a rule,
    /// and a dense array stays in cache where the rules would not.
    actions: Vec<Action>,
    files: Vec<String>,
    profiles: Profiles,
    index: Index,
    reflect: bool,
}

impl RuleSet {
    pub(crate) fn new(
        rules: Vec<Rule>,
        files: Vec<String>,
        profiles: Profiles,
        index: Index,
    ) -> RuleSet {
        let actions: Vec<Action> = rules.iter().map(|r| r.action).collect();
        let reflect = actions.iter().any(|a| matches!(a, Action::Reflect));
        RuleSet {
            inner: Inner::Parsed(Parsed {
                rules,
                actions,
                files,
                profiles,
                index,
                reflect,
            }),
        }
    }

    /// The set of a compiled index, as [`Self::compile`] wrote it, if it
    /// is one this code reads (format version, architecture) and whole.
    /// Checks the header and the bounds of every section, not the arrays
    /// (O(1), not O(rules)): every read of them is checked where it
    /// happens. `sources` are the files the rules would be loaded from
    /// now: the index is refused unless it was compiled from exactly
    /// these, unchanged.
    pub fn from_index(bytes: Bytes, sources: &[Fingerprint]) -> Result<RuleSet, Refusal> {
        let compiled = Compiled::open(bytes)?;
        compiled.sources_match(sources)?;
        Ok(RuleSet {
            inner: Inner::Compiled(compiled),
        })
    }

    /// The compiled index of this set, recording `sources` as the files
    /// it comes from. `None` for a set that was itself read from an index.
    pub fn compile(&self, sources: &[Fingerprint]) -> Option<Vec<u8>> {
        let Inner::Parsed(p) = &self.inner else {
            return None;
        };
        Some(compiled::write(
            &compiled::Parts {
                view: p.index.slices(),
                rules: &p.rules,
                files: p.files.iter().map(String::as_str).collect(),
                profiles: p.profiles.names().collect(),
                reflect: p.reflect,
            },
            sources,
        ))
    }

    /// Whether the set was read from a compiled index.
    pub fn is_compiled(&self) -> bool {
        matches!(self.inner, Inner::Compiled(_))
    }

    /// Parses one source; `file` is the name errors and
    /// [`file_name`](Self::file_name) give.
    pub fn parse(text: &str, file: &str) -> Result<RuleSet, ParseError> {
        let mut builder = RuleSet::builder();
        builder.add_source(text, file)?;
        builder.build()
    }

    /// A builder, to load several sources as one set.
    pub fn builder() -> RuleSetBuilder {
        RuleSetBuilder::new()
    }

    /// The profile section named `name`, if the set has one.
    pub fn profile(&self, name: &str) -> Option<ProfileId> {
        match &self.inner {
            Inner::Parsed(p) => p.profiles.get(name),
            Inner::Compiled(c) => c.profile(name),
        }
    }

    /// The name of a profile of this set (`""` for an id from another set).
    pub fn profile_name(&self, id: ProfileId) -> &str {
        match &self.inner {
            Inner::Parsed(p) => p.profiles.name(id).unwrap_or_default(),
            Inner::Compiled(c) => c.profile_name(id),
        }
    }

    /// The profile names, in order of first appearance.
    pub fn profile_names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.inner {
            Inner::Parsed(p) => Box::new(p.profiles.names()),
            Inner::Compiled(c) => Box::new(c.profile_names()),
        }
    }

    /// The name of the file a rule comes from (`""` for an origin from
    /// another set).
    pub fn file_name(&self, origin: Origin) -> &str {
        match &self.inner {
            Inner::Parsed(p) => p.files.get(origin.file as usize).map_or("", String::as_str),
            Inner::Compiled(c) => c.file_name(origin.file),
        }
    }

    /// The names of the sources, in load order.
    pub fn file_names(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match &self.inner {
            Inner::Parsed(p) => Box::new(p.files.iter().map(String::as_str)),
            Inner::Compiled(c) => Box::new(c.file_names()),
        }
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Parsed(p) => p.rules.len(),
            Inner::Compiled(c) => c.len(),
        }
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some rule says `reflect`.
    pub fn has_reflect(&self) -> bool {
        match &self.inner {
            Inner::Parsed(p) => p.reflect,
            Inner::Compiled(c) => c.has_reflect(),
        }
    }

    /// The rule at `index` in load order (see [`Self::rules`]). From a
    /// corrupt index, a rule that does not decode is `any deny`.
    pub fn rule(&self, index: u32) -> Option<Rule> {
        match &self.inner {
            Inner::Parsed(p) => p.rules.get(index as usize).copied(),
            Inner::Compiled(c) => ((index as usize) < c.len()).then(|| c.rule(index)),
        }
    }

    /// The rules, in load order.
    pub fn rules(&self) -> impl Iterator<Item = Rule> + '_ {
        (0..self.len() as u32).filter_map(|i| self.rule(i))
    }

    /// The rule that applies to traffic to `dest` (`proto`, remote `port`)
    /// for a process in `profile`, if any.
    ///
    /// The profile's rules are searched first, then the global rules.
    /// Within each: the longest prefix that has a rule matching the protocol
    /// and port wins; at equal prefix a rule with a port beats one without,
    /// then a rule with a specific protocol beats one without. An
    /// IPv4-mapped IPv6 destination is matched as IPv4. A `reflect` rule
    /// only ever matches UDP.
    ///
    /// This is the hot path, called on every connect and send of the host
    /// program: it does not allocate, does not panic (a `profile` from
    /// another set simply has no rules), and visits at most 6 trie nodes for
    /// IPv4 and 22 for IPv6 per set, then the candidate rules of the
    /// matching prefixes.
    #[inline]
    pub fn lookup(
        &self,
        profile: Option<ProfileId>,
        dest: IpAddr,
        proto: Proto,
        port: u16,
    ) -> Option<Rule> {
        let found = self.lookup_index(profile, dest, proto, port)?;
        self.rule(found)
    }

    /// [`lookup`](Self::lookup), as the rule's index and action: all a
    /// decision needs, read without reading the rule.
    #[inline]
    pub(crate) fn lookup_action(
        &self,
        profile: Option<ProfileId>,
        dest: IpAddr,
        proto: Proto,
        port: u16,
    ) -> Option<(u32, Action)> {
        match &self.inner {
            Inner::Parsed(p) => {
                let found = self.lookup_index(profile, dest, proto, port)?;
                Some((found, *p.actions.get(found as usize)?))
            }
            // An action that does not decode (a corrupt index): `deny`.
            Inner::Compiled(c) => {
                let (family, key) = match_key(dest);
                c.decide(profile, family, key, proto, port)
            }
        }
    }

    #[inline]
    fn lookup_index(
        &self,
        profile: Option<ProfileId>,
        dest: IpAddr,
        proto: Proto,
        port: u16,
    ) -> Option<u32> {
        let (family, key) = match_key(dest);
        match &self.inner {
            Inner::Parsed(p) => in_sets(p.index.view(), profile, family, key, proto, port),
            Inner::Compiled(c) => in_sets(c.view(), profile, family, key, proto, port),
        }
    }

    /// Approximate heap memory held by the set, in bytes (a compiled
    /// index's mapping is not heap: 0).
    pub fn heap_bytes(&self) -> usize {
        let Inner::Parsed(p) = &self.inner else {
            return 0;
        };
        p.rules.capacity() * std::mem::size_of::<Rule>()
            + p.actions.capacity() * std::mem::size_of::<Action>()
            + p.files.iter().map(String::capacity).sum::<usize>()
            + p.profiles.names().map(|n| 2 * n.len() + 64).sum::<usize>()
            + p.index.heap_bytes()
    }
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.len())
            .field("compiled", &self.is_compiled())
            .field("files", &self.file_names().collect::<Vec<_>>())
            .field("profiles", &self.profile_names().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
