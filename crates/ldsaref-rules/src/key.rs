//! Addresses as 128-bit keys, the form the matcher works on.
//!
//! An IPv4 address is put in the top 32 bits, so that both families share
//! one bit order ("bit 0" is the first bit of the address) and one trie
//! implementation; the family is kept apart, never inferred from the key.

use std::net::IpAddr;

/// Address family of a key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    /// Number of address bits.
    pub(crate) fn width(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// The family and left-aligned key of an address (no unmapping here).
pub(crate) fn key_of(addr: IpAddr) -> (Family, u128) {
    match addr {
        IpAddr::V4(a) => (Family::V4, u128::from(u32::from(a)) << 96),
        IpAddr::V6(a) => (Family::V6, u128::from(a)),
    }
}

/// The family and key a destination is matched with: an IPv4-mapped IPv6
/// address (`::ffff:a.b.c.d`) is matched as the IPv4 address it carries,
/// since a dual-stack socket connecting to it really talks IPv4, which only
/// IPv4 SAs can carry.
#[inline]
pub(crate) fn match_key(addr: IpAddr) -> (Family, u128) {
    match key_of(addr) {
        // 80 zero bits, 16 one bits, then the IPv4 address.
        (Family::V6, key) if key >> 32 == 0xffff => (Family::V4, key << 96),
        other => other,
    }
}

/// The address of a key, the inverse of [`key_of`].
pub(crate) fn addr_of(family: Family, key: u128) -> IpAddr {
    match family {
        // The low 96 bits of an IPv4 key are zero; the cast keeps the top 32.
        Family::V4 => IpAddr::V4(((key >> 96) as u32).into()),
        Family::V6 => IpAddr::V6(key.into()),
    }
}

/// `key` with every bit past the first `len` cleared.
pub(crate) fn mask(key: u128, len: u8) -> u128 {
    match u32::from(len) {
        0 => 0,
        n if n >= 128 => key,
        n => key & !(u128::MAX >> n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let (f, k) = key_of("10.1.2.3".parse().unwrap());
        assert_eq!(f, Family::V4);
        assert_eq!(k, 0x0a01_0203 << 96);
        assert_eq!(
            addr_of(f, mask(k, 16)),
            "10.1.0.0".parse::<IpAddr>().unwrap()
        );
        let (f, k) = key_of("2001:db8::1".parse().unwrap());
        assert_eq!(f, Family::V6);
        assert_eq!(
            addr_of(f, mask(k, 32)),
            "2001:db8::".parse::<IpAddr>().unwrap()
        );
        assert_eq!(mask(k, 128), k);
        assert_eq!(mask(k, 0), 0);
        assert_eq!(mask(u128::MAX, 1), 1 << 127);
    }

    #[test]
    fn mapped_addresses_match_as_ipv4() {
        let v4 = key_of("10.1.2.3".parse().unwrap());
        assert_eq!(match_key("::ffff:10.1.2.3".parse().unwrap()), v4);
        assert_eq!(match_key("10.1.2.3".parse().unwrap()), v4);
        for other in [
            "::10.1.2.3",
            "::1:ffff:10.1.2.3",
            "64:ff9b::10.1.2.3",
            "::fffe:10.1.2.3",
        ] {
            let addr: IpAddr = other.parse().unwrap();
            assert_eq!(match_key(addr), key_of(addr), "{other}");
        }
    }
}
