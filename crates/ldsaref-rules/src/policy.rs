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
    Rule {
        /// The rule.
        rule: &'a Rule,
        /// The name of its file.
        file: &'a str,
        /// Its profile section, `None` for a global rule.
        profile: Option<&'a str>,
    },
    /// The catch-all SAref of `IPSEC_SAREF`.
    CatchAll,
}

/// `rules:12 [client1]` (file, line, and the section if any), or
/// `IPSEC_SAREF`.
impl fmt::Display for DecisionSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecisionSource::Rule {
                rule,
                file,
                profile,
            } => {
                write!(f, "{file}:{}", rule.origin.line)?;
                match profile {
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
            if let Some(rule) = set.lookup(self.profile, dest, proto, port) {
                return Some(Decision {
                    action: rule.action,
                    source: DecisionSource::Rule {
                        rule,
                        file: set.file_name(rule.origin),
                        profile: rule.profile.map(|id| set.profile_name(id)),
                    },
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
