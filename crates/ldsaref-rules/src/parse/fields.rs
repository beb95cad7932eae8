//! The fields of a rule before its action: destination, protocol, ports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::lexer::Token;
use super::Fault;
use crate::error::shown;
use crate::key::{addr_of, key_of, mask};
use crate::{Dest, PortRange, ProtoMatch};

/// Why a string is not a number.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NumError {
    /// Not digits at all (or nothing).
    Invalid,
    /// Digits, but too large for the type.
    TooBig,
}

/// Parses digits of `radix` only: no sign, no blanks, no prefix.
fn digits(s: &str, radix: u32) -> Result<u32, NumError> {
    if s.is_empty() {
        return Err(NumError::Invalid);
    }
    let mut value = Some(0u32);
    for c in s.chars() {
        let digit = c.to_digit(radix).ok_or(NumError::Invalid)?;
        // Keep reading after an overflow: a later non-digit makes the
        // whole thing invalid rather than too big.
        value = value
            .and_then(|v| v.checked_mul(radix))
            .and_then(|v| v.checked_add(digit));
    }
    value.ok_or(NumError::TooBig)
}

/// A decimal `u32`.
pub(crate) fn decimal(s: &str) -> Result<u32, NumError> {
    digits(s, 10)
}

/// A `u32` in decimal or in hex with a `0x` prefix.
pub(crate) fn decimal_or_hex(s: &str) -> Result<u32, NumError> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => digits(hex, 16),
        None => digits(s, 10),
    }
}

/// The protocol keywords.
pub(crate) fn proto(word: &str) -> Option<ProtoMatch> {
    match word {
        "tcp" => Some(ProtoMatch::Tcp),
        "udp" => Some(ProtoMatch::Udp),
        "any" => Some(ProtoMatch::Any),
        _ => None,
    }
}

/// Whether a token is meant as a port: ports are the only field that starts
/// with a digit after the destination.
pub(crate) fn looks_like_port(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_digit())
}

/// `any`, an address (a full-length network), or `ADDR/LEN`.
pub(crate) fn dest(tok: Token<'_>) -> Result<Dest, Fault> {
    let text = tok.text;
    if text == "any" {
        return Ok(Dest::Any);
    }
    // Byte searches rather than `split_once`: on short tokens, the general
    // string searcher costs more than the rest of the parsing.
    let (addr_text, len_text) = match text.bytes().position(|b| b == b'/') {
        Some(slash) => (&text[..slash], Some(&text[slash + 1..])),
        None => (text, None),
    };
    let addr = if addr_text.bytes().any(|b| b == b':') {
        addr_text.parse::<Ipv6Addr>().map(IpAddr::V6).ok()
    } else {
        dotted_quad(addr_text).map(IpAddr::V4)
    };
    let addr = addr.ok_or_else(|| Fault::new(tok.at, bad_dest_message(text)))?;
    let (family, key) = key_of(addr);
    let width = family.width();
    let len = match len_text {
        None => width,
        Some(len_text) => match decimal(len_text) {
            Ok(len) if len <= u32::from(width) => len as u8,
            Ok(_) | Err(NumError::TooBig) => {
                return Err(Fault::new(
                    tok.at,
                    format!(
                        "prefix length {len_text} out of range for {} (0..{width})",
                        family.name()
                    ),
                ))
            }
            Err(NumError::Invalid) => {
                return Err(Fault::new(
                    tok.at,
                    format!(
                        "invalid prefix length {:?} in {:?} (expected a number in 0..{width})",
                        shown(len_text),
                        shown(text)
                    ),
                ))
            }
        },
    };
    let network = mask(key, len);
    if network != key {
        let suggestion = Dest::Net {
            addr: addr_of(family, network),
            len,
        };
        return Err(Fault::new(
            tok.at,
            format!("host bits set in {text}: did you mean {suggestion}?"),
        ));
    }
    if let Some(v4) = ipv4_mapped(addr, len) {
        return Err(Fault::new(
            tok.at,
            format!(
                "{text} is IPv4-mapped, and IPv4-mapped destinations are matched as IPv4: write {v4}"
            ),
        ));
    }
    Ok(Dest::Net { addr, len })
}

/// An IPv4 address in dotted-quad form, accepting exactly what the standard
/// parser accepts: four decimal octets, no leading zeros. Written out for
/// speed: the standard parser, generic over address kinds, takes a large
/// share of the time spent loading big rules files.
fn dotted_quad(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.as_bytes().split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        let plain = match part {
            [b'0'] => true,
            [b'1'..=b'9', rest @ ..] => rest.len() <= 2 && rest.iter().all(u8::is_ascii_digit),
            _ => false,
        };
        if !plain {
            return None;
        }
        let value = part.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
        *octet = u8::try_from(value).ok()?;
    }
    match parts.next() {
        None => Some(Ipv4Addr::from(octets)),
        Some(_) => None,
    }
}

/// The IPv4 form of a network inside `::ffff:0:0/96`. Such a rule could
/// never match: the matcher turns IPv4-mapped destinations into IPv4.
fn ipv4_mapped(addr: IpAddr, len: u8) -> Option<Dest> {
    let IpAddr::V6(v6) = addr else { return None };
    if len < 96 {
        return None;
    }
    v6.to_ipv4_mapped().map(|v4| Dest::Net {
        addr: IpAddr::V4(v4),
        len: len - 96,
    })
}

fn bad_dest_message(text: &str) -> String {
    let q = shown(text);
    if text.eq_ignore_ascii_case("any") {
        return format!("invalid destination {q:?} (keywords are lowercase: any)");
    }
    format!(
        "invalid destination {q:?} (expected an IP address, a CIDR such as 10.1.0.0/16, or any)"
    )
}

/// `PORT` or `LO-HI`, ports in `1..=65535`.
pub(crate) fn ports(tok: Token<'_>) -> Result<PortRange, Fault> {
    let port = |s: &str| match decimal(s) {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(_) | Err(NumError::TooBig) => Err(Fault::new(
            tok.at,
            format!("port {} out of range (1..65535)", shown(s)),
        )),
        Err(NumError::Invalid) => Err(Fault::new(
            tok.at,
            format!(
                "invalid port {:?} (expected a port in 1..65535 or a range LO-HI)",
                shown(tok.text)
            ),
        )),
    };
    let range = match tok.text.bytes().position(|b| b == b'-') {
        None => {
            let p = port(tok.text)?;
            PortRange { lo: p, hi: p }
        }
        Some(dash) => PortRange {
            lo: port(&tok.text[..dash])?,
            hi: port(&tok.text[dash + 1..])?,
        },
    };
    if range.lo > range.hi {
        return Err(Fault::new(
            tok.at,
            format!("port range {}-{} is reversed", range.lo, range.hi),
        ));
    }
    Ok(range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(decimal("42"), Ok(42));
        assert_eq!(decimal("4294967295"), Ok(u32::MAX));
        assert_eq!(decimal("4294967296"), Err(NumError::TooBig));
        assert_eq!(decimal("+4"), Err(NumError::Invalid));
        assert_eq!(decimal(""), Err(NumError::Invalid));
        assert_eq!(decimal("0x10"), Err(NumError::Invalid));
        assert_eq!(decimal_or_hex("0x10"), Ok(16));
        assert_eq!(decimal_or_hex("0XfF"), Ok(255));
        assert_eq!(decimal_or_hex("0x"), Err(NumError::Invalid));
        assert_eq!(decimal_or_hex("0xffffffff"), Ok(u32::MAX));
        assert_eq!(decimal_or_hex("0x100000000"), Err(NumError::TooBig));
        assert_eq!(decimal_or_hex("10"), Ok(10));
    }

    fn tok(text: &str) -> Token<'_> {
        Token { text, at: 0 }
    }

    #[test]
    fn destinations() {
        assert_eq!(dest(tok("any")).unwrap(), Dest::Any);
        assert_eq!(dest(tok("10.1.0.0/16")).unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(dest(tok("10.1.2.3")).unwrap().prefix_len(), 32);
        assert_eq!(
            dest(tok("2001:db8::/32")).unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(dest(tok("::/0")).unwrap().prefix_len(), 0);
        assert_eq!(dest(tok("0.0.0.0/0")).unwrap().prefix_len(), 0);
        assert!(dest(tok("::/80")).is_ok());
        assert!(dest(tok("::ffff:0:0/96"))
            .unwrap_err()
            .message
            .contains("write 0.0.0.0/0"));
        let e = dest(tok("::ffff:10.0.0.0/104")).unwrap_err();
        assert!(e.message.contains("write 10.0.0.0/8"), "{}", e.message);
        let e = dest(tok("::ffff:10.1.2.3")).unwrap_err();
        assert!(e.message.contains("write 10.1.2.3"), "{}", e.message);
        let e = dest(tok("2001:db8::1/32")).unwrap_err();
        assert!(
            e.message.contains("did you mean 2001:db8::/32?"),
            "{}",
            e.message
        );
    }

    #[test]
    fn dotted_quad_agrees_with_std() {
        let cases = [
            "0.0.0.0",
            "10.1.2.3",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.2.3.04",
            "00.0.0.0",
            "1..2.3",
            ".1.2.3",
            "1.2.3.",
            "1.2.3.4 ",
            "+1.2.3.4",
            "1.2.3.-4",
            "1000.1.1.1",
            "a.b.c.d",
            "",
            "::1",
            "1.2.3.4/8",
            "١.2.3.4",
            "199.255.9.100",
            "0.00.0.0",
        ];
        for case in cases {
            assert_eq!(dotted_quad(case), case.parse::<Ipv4Addr>().ok(), "{case:?}");
        }
    }

    #[test]
    fn port_ranges() {
        assert_eq!(ports(tok("1")).unwrap(), PortRange { lo: 1, hi: 1 });
        assert_eq!(
            ports(tok("1-65535")).unwrap(),
            PortRange { lo: 1, hi: 65535 }
        );
        assert_eq!(ports(tok("20-20")).unwrap(), PortRange { lo: 20, hi: 20 });
        for (bad, want) in [
            ("0", "port 0 out of range"),
            ("65536", "port 65536 out of range"),
            ("99999999999", "out of range"),
            ("0-5", "port 0 out of range"),
            ("5-", "invalid port \"5-\""),
            ("5-6-7", "invalid port"),
            ("22x", "invalid port"),
            ("30-20", "port range 30-20 is reversed"),
        ] {
            let e = ports(tok(bad)).unwrap_err();
            assert!(e.message.contains(want), "{bad}: {}", e.message);
        }
    }
}
