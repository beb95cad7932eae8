//! What a rule does to a matching socket.

use std::fmt;

use crate::{IfName, Saref};

/// The action of a rule, written after its destination, protocol and port.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Action {
    /// `saref N`: bind the socket to the SA with this SAref.
    Saref(Saref),
    /// `mark N[/MASK]`: set these bits of the socket mark. `value` never has
    /// bits outside `mask`, and `mask` is never 0.
    Mark {
        /// The bits to set.
        value: u32,
        /// Which bits of the mark the rule owns; [`Action::FULL_MASK`] when
        /// the rule gives none.
        mask: u32,
    },
    /// `dev IFNAME`: bind the socket to this interface (`SO_BINDTODEVICE`).
    Dev(IfName),
    /// `reflect`: answer each UDP datagram through the SA it arrived on.
    /// Applies to UDP traffic only, even when the rule gives no protocol.
    Reflect,
    /// `pass`: leave the socket alone (stops the search, unlike no match:
    /// the catch-all SAref is not applied either).
    Pass,
    /// `deny`: refuse the connection or datagram.
    Deny,
}

impl Action {
    /// The mask of a `mark` action written without one.
    pub const FULL_MASK: u32 = u32::MAX;

    /// A mark written `N` or `N/MASK` (each decimal or `0x` hex; the mask
    /// is [`Action::FULL_MASK`] when not given), as the `mark` action of a
    /// rules file reads it, with the same messages (without the position):
    /// `(value, mask)`, the value never having bits outside the mask, the
    /// mask never 0. `ldsaref run --cgroup --mark` reads its catch-all mark
    /// with it.
    pub fn parse_mark(text: &str) -> Result<(u32, u32), String> {
        crate::parse::mark_text(text)
    }

    /// The keyword that starts this action in a rules file.
    pub fn keyword(&self) -> &'static str {
        match self {
            Action::Saref(_) => "saref",
            Action::Mark { .. } => "mark",
            Action::Dev(_) => "dev",
            Action::Reflect => "reflect",
            Action::Pass => "pass",
            Action::Deny => "deny",
        }
    }
}

/// As written in a rules file, in canonical form: marks in hex, the mask
/// only when it is not the full mask.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Saref(s) => write!(f, "saref {s}"),
            Action::Mark { value, mask } if *mask == Self::FULL_MASK => {
                write!(f, "mark {value:#x}")
            }
            Action::Mark { value, mask } => write!(f, "mark {value:#x}/{mask:#x}"),
            Action::Dev(name) => write!(f, "dev {name}"),
            Action::Reflect | Action::Pass | Action::Deny => f.write_str(self.keyword()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let cases = [
            (Action::Saref(Saref::new(1234).unwrap()), "saref 1234"),
            (
                Action::Mark {
                    value: 0x200,
                    mask: u32::MAX,
                },
                "mark 0x200",
            ),
            (
                Action::Mark {
                    value: 0x200,
                    mask: 0xff00,
                },
                "mark 0x200/0xff00",
            ),
            (
                Action::Mark {
                    value: 0,
                    mask: u32::MAX,
                },
                "mark 0x0",
            ),
            (Action::Dev(IfName::new("ipsec1").unwrap()), "dev ipsec1"),
            (Action::Reflect, "reflect"),
            (Action::Pass, "pass"),
            (Action::Deny, "deny"),
        ];
        for (action, text) in cases {
            assert_eq!(action.to_string(), text);
        }
    }

    #[test]
    fn marks_parse_as_the_rules_read_them() {
        assert_eq!(Action::parse_mark("0x200"), Ok((0x200, u32::MAX)));
        assert_eq!(Action::parse_mark("512/0xFF00"), Ok((0x200, 0xff00)));
        assert_eq!(Action::parse_mark("0"), Ok((0, u32::MAX)));
        for (text, message) in [
            (
                "zz",
                "invalid mark value \"zz\" (expected a number, decimal or 0x hex)",
            ),
            (
                "1/",
                "invalid mark mask \"\" (expected a number, decimal or 0x hex)",
            ),
            (
                "0x100000000",
                "mark value 0x100000000 out of range (at most 0xffffffff)",
            ),
            ("1/0", "mark mask is 0: no bit of the mark would change"),
            ("0x15/0xf", "mark value 0x15 has bits outside its mask 0xf"),
        ] {
            assert_eq!(Action::parse_mark(text), Err(message.to_owned()), "{text}");
        }
    }
}
