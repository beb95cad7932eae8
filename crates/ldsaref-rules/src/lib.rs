//! The rules of ldsaref: parsing the rules file, and deciding for each
//! connection or datagram of a process which action applies.
//!
//! Pure Rust, without libc, without I/O outside [`files`], and without
//! `unsafe` but for one lifetime extension (a compiled index keeps typed
//! slices of the bytes it holds, see `compiled::detach`);
//! shared by the preload library (which loads the rules and applies
//! decisions) and the `ldsaref` command (which checks and explains them).
//!
//! # The rules file
//!
//! ```text
//! # DESTINATION   [PROTO] [PORT|LO-HI]  ACTION
//! 10.1.0.0/16                          saref 1234
//! 10.2.0.0/16     tcp     22           saref 2000
//! 2001:db8::/32                        mark 0x200
//! 192.168.0.0/16                       deny          # never in the clear
//! any             udp     1701         reflect
//!
//! [client1]                            # LDSAREF_PROFILE=client1
//! 192.168.0.0/24                       saref 101
//! ```
//!
//! One rule a line; `#` starts a comment; fields are separated by spaces or
//! tabs. DESTINATION and PORT are those of the remote end. `reflect`
//! applies to UDP only: it is an error with `tcp`, and a `reflect` rule
//! with no protocol (or `any`) simply never matches TCP traffic. `[NAME]`
//! starts a profile section; rules before any header are global.
//!
//! # Matching
//!
//! The rules of the process's profile first, then the global rules. In
//! each, the longest prefix wins; at equal prefix a rule with a port beats
//! one without, then a specific protocol beats none. A rule applies only if
//! its protocol and port match, otherwise shorter prefixes are tried. An
//! IPv4-mapped IPv6 destination is matched as IPv4. Rules that could both
//! apply with nothing to choose between them (they *tie*) are a load error.
//! See [`RuleSet::lookup`] and [`Policy::decide`].
//!
//! # Modules
//!
//! - parsing: `parse` (one line at a time), `builder` (files into a set);
//! - checking: `ties`;
//! - matching: `key`, `trie` (longest-prefix match), `placement` and
//!   `index` (rules per prefix, in precedence order), `ruleset`;
//! - [`policy`]: profile, rules and catch-all together;
//! - [`settings`]: the environment variables;
//! - [`files`]: where the rules are on disk (the crate's only I/O).

// Denied, not forbidden: `compiled::detach` is the one exception.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod action;
mod builder;
pub mod compiled;
mod error;
pub mod files;
mod ifname;
mod index;
mod key;
mod parse;
mod placement;
pub mod policy;
mod profiles;
mod rule;
mod ruleset;
mod saref;
pub mod settings;
#[cfg(test)]
mod test_rng;
mod ties;
mod trie;

pub use action::Action;
pub use builder::RuleSetBuilder;
pub use error::ParseError;
pub use ifname::IfName;
pub use policy::{Decision, DecisionSource, Policy, PolicyError, RuleRef};
pub use rule::{Dest, Origin, PortRange, ProfileId, Proto, ProtoMatch, Rule};
pub use ruleset::RuleSet;
pub use saref::Saref;
/// Whether `name` is a valid profile name (1 to 64 characters of
/// `A-Z a-z 0-9 _ . -`), as a section header `[NAME]` needs.
pub fn is_profile_name(name: &str) -> bool {
    parse::check_profile_name(name).is_ok()
}

pub use settings::{
    vars, KlipsAbi, LogLevel, Mode, OnError, SettingError, Settings, DEFAULT_RULES_PATH,
};
