//! The SAref: the number that names one IPsec SA in a KLIPS/mast kernel.

use crate::error::shown;
use std::fmt;
use std::str::FromStr;

/// An SAref, always in `1..=Saref::MAX`.
///
/// The kernel stores an SAref in a 15-bit field and uses 0 for "no SAref",
/// so 0 can never name an SA: this type cannot hold it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Saref(u16);

impl Saref {
    /// The largest SAref (15 bits).
    pub const MAX: u16 = 32767;

    /// `Some` if `v` is in `1..=Saref::MAX`.
    #[inline]
    pub fn new(v: u32) -> Option<Saref> {
        // One comparison: 0 wraps around to u32::MAX. Read from every
        // decision of a compiled index (see `compiled`).
        (v.wrapping_sub(1) < u32::from(Self::MAX)).then_some(Saref(v as u16))
    }

    /// `Some` if `tagged` is an SAref in its low 32 bits with 0 in its
    /// high 32 bits (a tag that says "an SAref"): one comparison, where
    /// the tag and [`Saref::new`] would take two (see `compiled`).
    #[inline(always)]
    pub(crate) fn tagged(tagged: u64) -> Option<Saref> {
        (tagged.wrapping_sub(1) < u64::from(Self::MAX)).then_some(Saref(tagged as u16))
    }

    /// The number, in `1..=Saref::MAX`.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Saref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Saref {
    type Err = String;

    /// Parses a decimal SAref. Signs, spaces and hex are refused: an SAref is
    /// written the way `ipsec look` prints it.
    fn from_str(s: &str) -> Result<Saref, String> {
        let invalid = || {
            format!(
                "invalid SAref {:?} (expected a number in 1..{})",
                shown(s),
                Self::MAX
            )
        };
        if s.is_empty() {
            return Err(invalid());
        }
        // One pass; past u32 the value is simply out of range.
        let mut value = 0u32;
        for b in s.bytes() {
            if !b.is_ascii_digit() {
                return Err(invalid());
            }
            value = value.saturating_mul(10).saturating_add(u32::from(b - b'0'));
        }
        Saref::new(value)
            .ok_or_else(|| format!("SAref {} out of range (1..{})", shown(s), Self::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range() {
        assert_eq!(Saref::new(0), None);
        assert_eq!(Saref::new(1).map(Saref::get), Some(1));
        assert_eq!(Saref::new(32767).map(Saref::get), Some(32767));
        assert_eq!(Saref::new(32768), None);
        assert_eq!(Saref::new(65536 + 5), None);
    }

    #[test]
    fn from_str() {
        assert_eq!("1234".parse::<Saref>().map(Saref::get), Ok(1234));
        assert_eq!(Saref::new(1234).unwrap().to_string(), "1234");
        for bad in ["0", "40000", "99999999999999999999"] {
            let e = bad.parse::<Saref>().unwrap_err();
            assert!(e.contains("out of range (1..32767)"), "{e}");
        }
        for bad in ["x", "", "+5", "0x10", " 5", "-1"] {
            let e = bad.parse::<Saref>().unwrap_err();
            assert!(e.contains("expected a number in 1..32767"), "{e}");
        }
    }
}
