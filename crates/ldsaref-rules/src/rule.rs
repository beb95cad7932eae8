//! One rule of a rules file and the pieces it is made of.

use std::fmt;
use std::net::IpAddr;

use crate::key::{key_of, mask, match_key};
use crate::Action;

/// The transport protocol of the traffic being decided.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Proto {
    /// TCP (stream sockets).
    Tcp,
    /// UDP (datagram sockets).
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// The protocol a rule asks for.
///
/// A rule written without a protocol and one written with `any` mean the
/// same thing (both protocols, and no "specific protocol" precedence), so
/// both are `Any`; the canonical text of a rule leaves `any` out.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ProtoMatch {
    /// No protocol, or `any`: TCP and UDP.
    Any,
    /// `tcp` only.
    Tcp,
    /// `udp` only.
    Udp,
}

impl ProtoMatch {
    /// Whether traffic of protocol `proto` is covered.
    pub fn matches(self, proto: Proto) -> bool {
        match self {
            ProtoMatch::Any => true,
            ProtoMatch::Tcp => proto == Proto::Tcp,
            ProtoMatch::Udp => proto == Proto::Udp,
        }
    }

    /// `tcp` or `udp`: such a rule beats an `Any` one at equal prefix and
    /// port class.
    pub fn is_specific(self) -> bool {
        self != ProtoMatch::Any
    }
}

impl fmt::Display for ProtoMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProtoMatch::Any => "any",
            ProtoMatch::Tcp => "tcp",
            ProtoMatch::Udp => "udp",
        })
    }
}

/// A remote port or an inclusive range of them (`lo <= hi`, both in
/// `1..=65535` when parsed from a rules file).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct PortRange {
    /// First port of the range.
    pub lo: u16,
    /// Last port of the range (equal to `lo` for a single port).
    pub hi: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

/// `22` for a single port, `20-30` for a range.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// The remote addresses a rule covers.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Dest {
    /// `any`: every IPv4 and every IPv6 destination (it counts as both
    /// `0.0.0.0/0` and `::/0`).
    Any,
    /// A network: `addr` has no bits set past the first `len`, and `len`
    /// is at most 32 (IPv4) or 128 (IPv6). An address written alone is a
    /// network of full length.
    Net {
        /// The network address.
        addr: IpAddr,
        /// The prefix length.
        len: u8,
    },
}

impl Dest {
    /// Whether `addr` is covered, matching an IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`) as the IPv4 address it maps, like the matcher does.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match self {
            Dest::Any => true,
            Dest::Net { addr: net, len } => {
                let (net_family, net_key) = key_of(*net);
                let (family, key) = match_key(addr);
                family == net_family && mask(key, *len) == mask(net_key, *len)
            }
        }
    }

    /// The prefix length; 0 for `any`.
    pub fn prefix_len(&self) -> u8 {
        match self {
            Dest::Any => 0,
            Dest::Net { len, .. } => *len,
        }
    }
}

/// `any`, `10.1.0.0/16`, or the bare address for a full-length prefix.
impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dest::Any => f.write_str("any"),
            Dest::Net { addr, len } => {
                let full = if addr.is_ipv4() { 32 } else { 128 };
                if *len == full {
                    write!(f, "{addr}")
                } else {
                    write!(f, "{addr}/{len}")
                }
            }
        }
    }
}

/// A profile section (`[NAME]`) of a [`RuleSet`](crate::RuleSet); only
/// meaningful with the set that gave it out.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ProfileId(u32);

impl ProfileId {
    pub(crate) fn new(index: usize) -> ProfileId {
        // The builder caps the number of profiles far below u32::MAX.
        ProfileId(u32::try_from(index).unwrap_or(u32::MAX))
    }

    /// Position among the set's profiles, in order of first appearance.
    pub(crate) fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a rule was written.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Origin {
    /// Index of the file among the set's sources, in load order; see
    /// [`RuleSet::file_name`](crate::RuleSet::file_name). (32 bits: with
    /// the line, a rule's origin takes 8 bytes, and a rule 64.)
    pub file: u32,
    /// 1-based line number.
    pub line: u32,
}

/// One rule: traffic to `dest` (and `proto`, `ports`, if given) gets `action`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Rule {
    /// Remote addresses covered.
    pub dest: Dest,
    /// Protocol asked for (`Any` when none was written).
    pub proto: ProtoMatch,
    /// Remote ports covered; `None` for all ports.
    pub ports: Option<PortRange>,
    /// What to do.
    pub action: Action,
    /// Where the rule was written.
    pub origin: Origin,
    /// The profile section it belongs to; `None` for a global rule.
    pub profile: Option<ProfileId>,
}

impl Rule {
    /// The protocols the rule really applies to: as written, except that
    /// `reflect` only ever applies to UDP.
    pub fn effective_proto(&self) -> ProtoMatch {
        match (self.action, self.proto) {
            (Action::Reflect, ProtoMatch::Any) => ProtoMatch::Udp,
            (_, proto) => proto,
        }
    }

    /// Whether this rule covers the traffic, regardless of other rules that
    /// may take precedence over it.
    pub fn matches(&self, dest: IpAddr, proto: Proto, port: u16) -> bool {
        self.dest.contains(dest)
            && self.effective_proto().matches(proto)
            && self.ports.map_or(true, |p| p.contains(port))
    }
}

/// The canonical one-line text of the rule, as it could be written in a
/// rules file: `10.2.0.0/16 tcp 22 saref 2000`.
impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dest)?;
        if self.proto.is_specific() {
            write!(f, " {}", self.proto)?;
        }
        if let Some(ports) = self.ports {
            write!(f, " {ports}")?;
        }
        write!(f, " {}", self.action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Saref;

    fn net(s: &str, len: u8) -> Dest {
        Dest::Net {
            addr: s.parse().unwrap(),
            len,
        }
    }

    #[test]
    fn dest_contains() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(net("10.1.0.0", 16).contains(a("10.1.255.3")));
        assert!(!net("10.1.0.0", 16).contains(a("10.2.0.0")));
        assert!(net("10.1.0.0", 16).contains(a("::ffff:10.1.0.1")));
        assert!(!net("::", 0).contains(a("::ffff:10.1.0.1")));
        assert!(net("::", 0).contains(a("2001:db8::1")));
        assert!(!net("0.0.0.0", 0).contains(a("2001:db8::1")));
        assert!(net("0.0.0.0", 0).contains(a("1.2.3.4")));
        assert!(net("1.2.3.4", 32).contains(a("1.2.3.4")));
        assert!(!net("1.2.3.4", 32).contains(a("1.2.3.5")));
        assert!(net("2001:db8::1", 128).contains(a("2001:db8::1")));
        assert!(!net("2001:db8::1", 128).contains(a("2001:db8::")));
        assert!(Dest::Any.contains(a("2001:db8::1")));
        assert!(Dest::Any.contains(a("1.2.3.4")));
    }

    #[test]
    fn display() {
        let rule = Rule {
            dest: net("10.2.0.0", 16),
            proto: ProtoMatch::Tcp,
            ports: Some(PortRange { lo: 22, hi: 22 }),
            action: Action::Saref(Saref::new(2000).unwrap()),
            origin: Origin { file: 0, line: 1 },
            profile: None,
        };
        assert_eq!(rule.to_string(), "10.2.0.0/16 tcp 22 saref 2000");
        let rule = Rule {
            dest: Dest::Any,
            proto: ProtoMatch::Any,
            ports: Some(PortRange { lo: 20, hi: 30 }),
            action: Action::Reflect,
            ..rule
        };
        assert_eq!(rule.to_string(), "any 20-30 reflect");
        let rule = Rule {
            dest: net("2001:db8::1", 128),
            ports: None,
            action: Action::Deny,
            ..rule
        };
        assert_eq!(rule.to_string(), "2001:db8::1 deny");
    }

    #[test]
    fn reflect_is_udp_only() {
        let rule = Rule {
            dest: Dest::Any,
            proto: ProtoMatch::Any,
            ports: None,
            action: Action::Reflect,
            origin: Origin { file: 0, line: 1 },
            profile: None,
        };
        let a = "1.2.3.4".parse().unwrap();
        assert!(rule.matches(a, Proto::Udp, 1701));
        assert!(!rule.matches(a, Proto::Tcp, 1701));
        assert_eq!(rule.effective_proto(), ProtoMatch::Udp);
    }
}
