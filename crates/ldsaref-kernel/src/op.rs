//! The kernel operation an action turns into.
//!
//! The policy says *which* SA (an SAref, a mark, a device); this module
//! says *how* the kernel is told, given `LDSAREF_MODE` and the ABI, and
//! describes it in the words `ldsaref explain` and the debug log use.

use std::fmt;

use ldsaref_rules::settings::{KlipsAbi, Mode};
use ldsaref_rules::{Action, IfName, Proto, Saref};

use crate::cmsg;
use crate::opts::{mast_mark, SarefOpts};

/// How one socket or datagram is steered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steer {
    /// KLIPS: `IP_IPSEC_BINDREF` on the socket, `IP_IPSEC_REFINFO` cmsg on
    /// a datagram.
    Saref(Saref),
    /// `SO_MARK`; only the bits in `mask` change.
    Mark { value: u32, mask: u32 },
    /// `SO_BINDTODEVICE` on the socket, a `PKTINFO` cmsg on a datagram.
    Dev(IfName),
}

/// What a rule's action asks for, once the mode is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Tell the kernel this.
    Steer(Steer),
    /// Leave the socket or datagram as the application made it.
    Pass,
    /// Refuse the call with `EACCES`.
    Deny,
    /// Reply through the SA the peer's last datagram came in on.
    Reflect,
}

impl Verdict {
    /// `saref N` becomes the mast mark in nfmark mode: that is the whole
    /// difference between the two modes.
    pub fn of(action: Action, mode: Mode) -> Verdict {
        match action {
            Action::Saref(s) => match mode {
                Mode::Klips => Verdict::Steer(Steer::Saref(s)),
                Mode::Nfmark => Verdict::Steer(Steer::Mark {
                    value: mast_mark(s),
                    mask: u32::MAX,
                }),
            },
            Action::Mark { value, mask } => Verdict::Steer(Steer::Mark { value, mask }),
            Action::Dev(d) => Verdict::Steer(Steer::Dev(d)),
            Action::Reflect => Verdict::Reflect,
            Action::Pass => Verdict::Pass,
            Action::Deny => Verdict::Deny,
        }
    }
}

/// Where the steering is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A socket about to `connect` (TCP, connected UDP, TCP Fast Open).
    Socket(Proto),
    /// One datagram sent with a destination address.
    Datagram,
}

/// A human description of the kernel calls, e.g. for `ldsaref explain`.
pub struct Describe {
    pub steer: Steer,
    pub target: Target,
    pub abi: KlipsAbi,
}

fn mark_text(value: u32, mask: u32) -> String {
    if mask == u32::MAX {
        format!("0x{value:x}")
    } else {
        format!("0x{value:x} under mask 0x{mask:x}")
    }
}

impl fmt::Display for Describe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = SarefOpts::for_abi(self.abi);
        match (self.steer, self.target) {
            (Steer::Saref(s), Target::Socket(p)) => {
                write!(
                    f,
                    "setsockopt(fd, SOL_IP, IP_IPSEC_BINDREF={}, [{}], 4) before connect",
                    o.bindref, s
                )?;
                if p == Proto::Udp {
                    write!(
                        f,
                        "; every datagram also carries an IP_IPSEC_REFINFO={} cmsg [{}]",
                        o.refinfo, s
                    )?;
                }
                Ok(())
            }
            (Steer::Saref(s), Target::Datagram) => write!(
                f,
                "sendmsg with cmsg SOL_IP/IP_IPSEC_REFINFO={} [{}] (cmsg_len {})",
                o.refinfo,
                s,
                cmsg::cmsg_len(4)
            ),
            (Steer::Mark { value, mask }, Target::Socket(_)) => write!(
                f,
                "setsockopt(fd, SOL_SOCKET, SO_MARK, [{}], 4) before connect",
                mark_text(value, mask)
            ),
            (Steer::Mark { value, mask }, Target::Datagram) => write!(
                f,
                "sendmsg with cmsg SOL_SOCKET/SO_MARK [{}]",
                mark_text(value, mask)
            ),
            (Steer::Dev(d), Target::Socket(_)) => write!(
                f,
                "setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, \"{}\") before connect",
                d.as_str()
            ),
            (Steer::Dev(d), Target::Datagram) => write!(
                f,
                "sendmsg with cmsg IP_PKTINFO/IPV6_PKTINFO ifindex of \"{}\"",
                d.as_str()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nfmark_mode_turns_sarefs_into_mast_marks() {
        let s = Saref::new(101).unwrap();
        assert_eq!(
            Verdict::of(Action::Saref(s), Mode::Nfmark),
            Verdict::Steer(Steer::Mark {
                value: 0x8065_0000,
                mask: u32::MAX
            })
        );
        assert_eq!(
            Verdict::of(Action::Saref(s), Mode::Klips),
            Verdict::Steer(Steer::Saref(s))
        );
    }

    #[test]
    fn descriptions_name_the_option_numbers() {
        let s = Saref::new(1234).unwrap();
        let d = Describe {
            steer: Steer::Saref(s),
            target: Target::Socket(Proto::Tcp),
            abi: KlipsAbi::Current,
        };
        assert_eq!(
            d.to_string(),
            "setsockopt(fd, SOL_IP, IP_IPSEC_BINDREF=31, [1234], 4) before connect"
        );
        let d = Describe {
            steer: Steer::Saref(s),
            target: Target::Datagram,
            abi: KlipsAbi::Legacy,
        };
        assert!(d.to_string().contains("IP_IPSEC_REFINFO=22 [1234]"));
    }
}
