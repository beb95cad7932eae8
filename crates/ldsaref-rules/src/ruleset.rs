//! A loaded, immutable rule set and its lookup.

use std::fmt;
use std::net::IpAddr;

use crate::index::Index;
use crate::key::match_key;
use crate::placement::{set_of, GLOBAL};
use crate::profiles::Profiles;
use crate::{Action, Origin, ParseError, ProfileId, Proto, Rule, RuleSetBuilder};

/// The rules of one rules file (or directory), ready for lookups.
///
/// Immutable once built, and `Send + Sync`: one set can serve every thread
/// of the host program.
#[derive(Clone)]
pub struct RuleSet {
    /// In load order.
    rules: Vec<Rule>,
    /// The action of each rule, apart: deciding reads only this of a rule,
    /// and a dense array stays in cache where the rules would not.
    actions: Vec<Action>,
    files: Vec<String>,
    profiles: Profiles,
    index: Index,
}

impl RuleSet {
    pub(crate) fn new(
        rules: Vec<Rule>,
        files: Vec<String>,
        profiles: Profiles,
        index: Index,
    ) -> RuleSet {
        let actions = rules.iter().map(|r| r.action).collect();
        RuleSet {
            rules,
            actions,
            files,
            profiles,
            index,
        }
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
        self.profiles.get(name)
    }

    /// The name of a profile of this set (`""` for an id from another set).
    pub fn profile_name(&self, id: ProfileId) -> &str {
        self.profiles.name(id).unwrap_or_default()
    }

    /// The profile names, in order of first appearance.
    pub fn profile_names(&self) -> impl Iterator<Item = &str> {
        self.profiles.names()
    }

    /// The name of the file a rule comes from (`""` for an origin from
    /// another set).
    pub fn file_name(&self, origin: Origin) -> &str {
        self.files
            .get(origin.file as usize)
            .map_or("", String::as_str)
    }

    /// The names of the sources, in load order.
    pub fn file_names(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(String::as_str)
    }

    /// The number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, in load order.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
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
    ) -> Option<&Rule> {
        let found = self.lookup_index(profile, dest, proto, port)?;
        self.rules.get(found as usize)
    }

    /// [`lookup`](Self::lookup), with the rule's action: all a decision
    /// needs, read without reading the rule.
    #[inline]
    pub(crate) fn lookup_action(
        &self,
        profile: Option<ProfileId>,
        dest: IpAddr,
        proto: Proto,
        port: u16,
    ) -> Option<(&Rule, Action)> {
        let found = self.lookup_index(profile, dest, proto, port)? as usize;
        Some((self.rules.get(found)?, *self.actions.get(found)?))
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
        let lookup_in = |set| self.index.lookup(set, family, key, proto, port);
        profile
            .and_then(|p| lookup_in(set_of(Some(p))))
            .or_else(|| lookup_in(GLOBAL))
    }

    /// Approximate heap memory held by the set, in bytes.
    pub fn heap_bytes(&self) -> usize {
        self.rules.capacity() * std::mem::size_of::<Rule>()
            + self.actions.capacity() * std::mem::size_of::<Action>()
            + self.files.iter().map(String::capacity).sum::<usize>()
            + self
                .profiles
                .names()
                .map(|n| 2 * n.len() + 64)
                .sum::<usize>()
            + self.index.heap_bytes()
    }
}

impl fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("files", &self.files)
            .field("profiles", &self.profiles.names().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}
