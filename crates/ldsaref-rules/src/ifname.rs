//! Network interface names, as `SO_BINDTODEVICE` takes them.

use std::fmt;

/// The kernel's `IFNAMSIZ`: a name plus its terminating NUL.
const IFNAMSIZ: usize = 16;

/// A network interface name of 1 to 15 bytes, stored inline (no heap) so
/// that an [`Action`](crate::Action) holding one stays `Copy`.
///
/// The rules are the kernel's (`dev_valid_name`) as far as a rules file can
/// get them wrong: not empty, at most 15 bytes, no `/`, no whitespace, not
/// `.` or `..`. A NUL byte is refused too, since it would silently shorten
/// the name the kernel sees.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IfName {
    /// Zero-padded, so the byte after the name is always a NUL.
    bytes: [u8; IFNAMSIZ],
    len: u8,
}

impl IfName {
    /// The longest name, in bytes.
    pub const MAX_LEN: usize = IFNAMSIZ - 1;

    /// Checks and stores `s`; the error says what is wrong with it.
    pub fn new(s: &str) -> Result<IfName, String> {
        if s.is_empty() {
            return Err("interface name is empty".to_owned());
        }
        if s.len() > Self::MAX_LEN {
            return Err(format!(
                "interface name {s:?} is {} bytes long (at most {})",
                s.len(),
                Self::MAX_LEN
            ));
        }
        if s == "." || s == ".." {
            return Err(format!("interface name {s:?} is not allowed"));
        }
        if s.contains('/') {
            return Err(format!("interface name {s:?} must not contain \"/\""));
        }
        if s.chars().any(char::is_whitespace) {
            return Err(format!("interface name {s:?} must not contain whitespace"));
        }
        if s.contains('\0') {
            return Err(format!("interface name {s:?} must not contain a NUL byte"));
        }
        let mut bytes = [0; IFNAMSIZ];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Ok(IfName {
            bytes,
            // At most 15, checked above.
            len: s.len() as u8,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Always valid: built from a &str.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The name's bytes, without a terminating NUL.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// The name's bytes followed by a NUL, ready for `SO_BINDTODEVICE`.
    pub fn as_bytes_with_nul(&self) -> &[u8] {
        self.bytes
            .get(..usize::from(self.len) + 1)
            .unwrap_or_default()
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IfName({:?})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid() {
        let n = IfName::new("ipsec1").unwrap();
        assert_eq!(n.as_str(), "ipsec1");
        assert_eq!(n.as_bytes(), b"ipsec1");
        assert_eq!(n.as_bytes_with_nul(), b"ipsec1\0");
        assert_eq!(n.to_string(), "ipsec1");
        assert_eq!(format!("{n:?}"), "IfName(\"ipsec1\")");
        let long = IfName::new("abcdefghijklmno").unwrap();
        assert_eq!(long.as_bytes_with_nul().len(), 16);
        assert!(IfName::new("...").is_ok());
        assert!(IfName::new("eth0.100").is_ok());
    }

    #[test]
    fn invalid() {
        let cases = [
            ("", "empty"),
            ("abcdefghijklmnop", "16 bytes long (at most 15)"),
            ("ééééééééé", "18 bytes long"),
            (".", "not allowed"),
            ("..", "not allowed"),
            ("a/b", "\"/\""),
            ("a b", "whitespace"),
            ("a\u{a0}b", "whitespace"),
            ("a\0b", "NUL"),
        ];
        for (name, want) in cases {
            let e = IfName::new(name).unwrap_err();
            assert!(e.contains(want), "{name:?}: {e}");
        }
    }
}
