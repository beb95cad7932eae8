//! The decision a process makes for each connection or datagram: its
//! profile's rules, then the global rules, then the catch-all SAref.
//!
//! Shared by the preload library, which acts on decisions, and by
//! `ldsaref explain`, which prints them, so that both always agree.

use std::fmt;
use std::net::IpAddr;

use crate::key::{match_key, Family};
use crate::{Action, ProfileId, Proto, Rule, RuleSet, Saref};

/// What a process applies: a rule set, the profile it runs in, and the
/// catch-all SAref (`IPSEC_SAREF`). `Send + Sync`.
#[derive(Clone, Debug)]
pub struct Policy {
    rules: Option<RuleSet>,
    profile: Option<ProfileId>,
    catch_all: Option<Saref>,
}

/// Why a [`Policy`] cannot be made.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PolicyError {
    /// `LDSAREF_PROFILE` names a section the rules do not have.
    UnknownProfile {
        /// The name asked for.
        name: String,
        /// The sections the rules have, in order of appearance.
        known: Vec<String>,
    },
    /// `LDSAREF_PROFILE` is set but there are no rules to take it from.
    ProfileWithoutRules {
        /// The name asked for.
        name: String,
    },
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::UnknownProfile { name, known } if known.is_empty() => write!(
                f,
                "unknown profile {name:?} (the rules file has no profile sections)"
            ),
            PolicyError::UnknownProfile { name, known } => write!(
                f,
                "unknown profile {name:?} (the rules file has: {})",
                known.join(", ")
            ),
            PolicyError::ProfileWithoutRules { name } => write!(
                f,
                "LDSAREF_PROFILE={name} is set but no rules file is loaded"
            ),
        }
    }
}

impl std::error::Error for PolicyError {}

/// The outcome for one connection or datagram.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Decision<'a> {
    /// What to do.
    pub action: Action,
    /// Why.
    pub source: DecisionSource<'a>,
}

/// Where a [`Decision`] comes from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum DecisionSource<'a> {
    /// A rule of the rules file.
    Rule(RuleRef<'a>),
    /// The catch-all SAref of `IPSEC_SAREF`.
    CatchAll,
}

/// A rule of a rule set. Deciding does not read the rule itself (a cache
/// miss in a large set, on every decision): only what is asked of it here,
/// when a decision is explained or logged.
#[derive(Clone, Copy)]
pub struct RuleRef<'a> {
    set: &'a RuleSet,
    index: u32,
}

impl<'a> RuleRef<'a> {
    pub(crate) fn new(set: &'a RuleSet, index: u32) -> RuleRef<'a> {
        RuleRef { set, index }
    }

    /// The rule (from a corrupt index, one that does not decode is
    /// `any deny`, with no origin).
    pub fn rule(&self) -> Rule {
        self.set.rule(self.index).unwrap_or(Rule {
            dest: crate::Dest::Any,
            proto: crate::ProtoMatch::Any,
            ports: None,
            action: Action::Deny,
            origin: crate::Origin {
                file: u32::MAX,
                line: 0,
            },
            profile: None,
        })
    }

    /// The name of the file it comes from.
    pub fn file(&self) -> &'a str {
        self.set.file_name(self.rule().origin)
    }

    /// Its profile section, `None` for a global rule.
    pub fn profile(&self) -> Option<&'a str> {
        let set = self.set;
        self.rule().profile.map(|id| set.profile_name(id))
    }
}

impl PartialEq for RuleRef<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.set, other.set) && self.index == other.index
    }
}

impl Eq for RuleRef<'_> {}

impl fmt::Debug for RuleRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuleRef")
            .field("rule", &self.rule())
            .field("file", &self.file())
            .field("profile", &self.profile())
            .finish()
    }
}

/// `rules:12 [client1]` (file, line, and the section if any), or
/// `IPSEC_SAREF`.
impl fmt::Display for DecisionSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionSource::Rule(r) => {
                write!(f, "{}:{}", r.file(), r.rule().origin.line)?;
                match r.profile() {
                    Some(name) => write!(f, " [{name}]"),
                    None => Ok(()),
                }
            }
            DecisionSource::CatchAll => f.write_str("IPSEC_SAREF"),
        }
    }
}

/// `saref 1234 (rules:12 [client1])`.
impl fmt::Display for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.action, self.source)
    }
}

impl Policy {
    /// A policy of `rules`, run as `profile`, with the catch-all SAref.
    /// Fails when `profile` is given but `rules` has no such section (or
    /// there are no rules): running with the wrong rules must not start.
    pub fn new(
        rules: Option<RuleSet>,
        profile: Option<&str>,
        catch_all: Option<Saref>,
    ) -> Result<Policy, PolicyError> {
        let profile = match (profile, &rules) {
            (None, _) => None,
            (Some(name), None) => {
                return Err(PolicyError::ProfileWithoutRules {
                    name: name.to_owned(),
                })
            }
            (Some(name), Some(set)) => match set.profile(name) {
                Some(id) => Some(id),
                None => {
                    return Err(PolicyError::UnknownProfile {
                        name: name.to_owned(),
                        known: set.profile_names().map(str::to_owned).collect(),
                    })
                }
            },
        };
        Ok(Policy {
            rules,
            profile,
            catch_all,
        })
    }

    /// The rule set, if any.
    pub fn rules(&self) -> Option<&RuleSet> {
        self.rules.as_ref()
    }

    /// The profile the process runs in, if any.
    pub fn profile(&self) -> Option<&str> {
        let (set, id) = (self.rules.as_ref()?, self.profile?);
        Some(set.profile_name(id))
    }

    /// The catch-all SAref, if any.
    pub fn catch_all(&self) -> Option<Saref> {
        self.catch_all
    }

    /// No rules and no catch-all: nothing can ever be decided, and the
    /// library can skip all work.
    pub fn is_empty(&self) -> bool {
        self.rules.as_ref().map_or(true, RuleSet::is_empty) && self.catch_all.is_none()
    }

    /// The decision for traffic to `dest` (`proto`, remote `port`), if any:
    /// the profile's rules, then the global rules (see
    /// [`RuleSet::lookup`]), then the catch-all SAref, which applies to
    /// IPv4 destinations only (IPv4-mapped ones included), like Openswan's
    /// `IPSEC_SAREF` binding that only ever applied to `AF_INET` sockets.
    ///
    /// Hot path: does not allocate, does not panic.
    pub fn decide(&self, dest: IpAddr, proto: Proto, port: u16) -> Option<Decision<'_>> {
        if let Some(set) = &self.rules {
            if let Some((rule, action)) = set.lookup_action(self.profile, dest, proto, port) {
                return Some(Decision {
                    action,
                    source: DecisionSource::Rule(RuleRef::new(set, rule)),
                });
            }
        }
        match (self.catch_all, match_key(dest).0) {
            (Some(saref), Family::V4) => Some(Decision {
                action: Action::Saref(saref),
                source: DecisionSource::CatchAll,
            }),
            _ => None,
        }
    }
}
