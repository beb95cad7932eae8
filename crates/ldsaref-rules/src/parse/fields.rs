//! The fields of a rule before its action: destination, protocol, ports.

use std::net::IpAddr;

use super::lexer::Token;
use super::Fault;
use crate::error::shown;
use crate::key::{addr_of, mask, Family};
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
    // Bytes rather than characters: a non-ASCII character is not a digit,
    // and neither is its first byte.
    for &b in s.as_bytes() {
        let digit = char::from(b).to_digit(radix).ok_or(NumError::Invalid)?;
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
    // The standard parsers, generic over address kinds, take a large share
    // of the time spent loading big rules files: these accept exactly the
    // same text (see the tests), faster.
    let bytes = text.as_bytes();
    let (family, key, len_text) = match ipv4_at(bytes, 0) {
        // Most destinations: IPv4, read in the same pass that finds the "/"
        // (an IPv4 address has none).
        Some((v4, end)) if end == bytes.len() || bytes[end] == b'/' => {
            (Family::V4, u128::from(v4) << 96, text.get(end + 1..))
        }
        _ => {
            let (addr_text, len_text) = match bytes.iter().position(|&b| b == b'/') {
                Some(slash) => (&bytes[..slash], text.get(slash + 1..)),
                None => (bytes, None),
            };
            let parsed = match dotted_quad(addr_text) {
                Some(v4) => Some((Family::V4, u128::from(v4) << 96)),
                None if addr_text.contains(&b':') => ipv6(addr_text).map(|v6| (Family::V6, v6)),
                None => None,
            };
            let (family, key) = parsed.ok_or_else(|| Fault::new(tok.at, bad_dest_message(text)))?;
            (family, key, len_text)
        }
    };
    let addr = addr_of(family, key);
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
/// parser accepts: four decimal octets, no leading zeros.
fn dotted_quad(s: &[u8]) -> Option<u32> {
    let (addr, end) = ipv4_at(s, 0)?;
    (end == s.len()).then_some(addr)
}

/// An IPv4 address at the start of `s[at..]`, as the standard parser reads
/// one (also inside an IPv6 address): four octets separated by dots, each
/// one to three decimal digits, read greedily, at most 255, without a
/// leading zero. Returns the address and the offset just past it.
pub(super) fn ipv4_at(s: &[u8], mut at: usize) -> Option<(u32, usize)> {
    let digit = |at: usize| match s.get(at) {
        Some(&b) if b.is_ascii_digit() => Some(u32::from(b - b'0')),
        _ => None,
    };
    let mut addr = 0u32;
    for i in 0..4 {
        if i > 0 {
            if s.get(at) != Some(&b'.') {
                return None;
            }
            at += 1;
        }
        let first = digit(at)?;
        at += 1;
        let mut octet = first;
        if let Some(second) = digit(at) {
            // A leading zero, then more digits.
            if first == 0 {
                return None;
            }
            octet = octet * 10 + second;
            at += 1;
            if let Some(third) = digit(at) {
                octet = octet * 10 + third;
                at += 1;
                // Digits are read greedily: a fourth one fails the octet.
                if octet > 255 || digit(at).is_some() {
                    return None;
                }
            }
        }
        addr = addr << 8 | octet;
    }
    Some((addr, at))
}

/// A group of an IPv6 address at `s[at..]`: one to four hex digits, read
/// greedily. Returns the group and the offset just past it.
pub(super) fn hex_group_at(s: &[u8], mut at: usize) -> Option<(u16, usize)> {
    let start = at;
    let mut group = 0u32;
    while let Some(&b) = s.get(at) {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => break,
        };
        if at - start == 4 {
            return None;
        }
        group = group << 4 | u32::from(digit);
        at += 1;
    }
    // At most four hex digits: the group fits.
    (at > start).then_some((group as u16, at))
}

/// Reads up to `groups.len()` groups separated by `:` from `s[*at..]`, as
/// the standard parser does: an embedded IPv4 address is tried first where
/// two groups are left, and ends the groups. Stops before the first group
/// (and its `:`) that does not read. Returns how many groups were read and
/// whether the last two came from an IPv4 address.
fn ipv6_groups(s: &[u8], at: &mut usize, groups: &mut [u16]) -> (usize, bool) {
    let limit = groups.len();
    // Without a dot, no IPv4 address to try.
    let dotted = s.contains(&b'.');
    for i in 0..limit {
        let start = if i > 0 {
            if s.get(*at) != Some(&b':') {
                return (i, false);
            }
            *at + 1
        } else {
            *at
        };
        if dotted && i + 1 < limit {
            if let Some((v4, end)) = ipv4_at(s, start) {
                groups[i] = (v4 >> 16) as u16;
                groups[i + 1] = v4 as u16;
                *at = end;
                return (i + 2, true);
            }
        }
        match hex_group_at(s, start) {
            Some((group, end)) => {
                groups[i] = group;
                *at = end;
            }
            None => return (i, false),
        }
    }
    (limit, false)
}

/// An IPv6 address, as a 128-bit number, accepting exactly what the
/// standard parser accepts (the same algorithm, on bytes): up to eight
/// groups, at most one `::` standing for at least one zero group, and an
/// IPv4 address in place of the last two groups.
fn ipv6(s: &[u8]) -> Option<u128> {
    let mut at = 0;
    let mut head = [0u16; 8];
    let (head_size, head_ipv4) = ipv6_groups(s, &mut at, &mut head);
    if head_size < 8 {
        // An IPv4 address only ends an address, and "::" must follow here.
        if head_ipv4 || s.get(at..at + 2) != Some(b"::") {
            return None;
        }
        at += 2;
        let mut tail = [0u16; 7];
        let limit = 8 - (head_size + 1);
        let (tail_size, _) = ipv6_groups(s, &mut at, &mut tail[..limit]);
        head[8 - tail_size..].copy_from_slice(&tail[..tail_size]);
    }
    if at != s.len() {
        return None;
    }
    Some(head.iter().fold(0u128, |a, &g| a << 16 | u128::from(g)))
}

/// The IPv4 form of a network inside `::ffff:0:0/96`. Such a rule could
/// never match: the matcher turns IPv4-mapped destinations into IPv4.
pub(super) fn ipv4_mapped(addr: IpAddr, len: u8) -> Option<Dest> {
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
    use crate::test_rng::Rng;

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
            let std = case.parse::<std::net::Ipv4Addr>().ok().map(u32::from);
            assert_eq!(dotted_quad(case.as_bytes()), std, "{case:?}");
        }
    }

    /// Whether both parsers agree on `case`, as an IPv4 and an IPv6 address.
    fn agree(case: &str) {
        let v6 = case.parse::<std::net::Ipv6Addr>().ok().map(u128::from);
        assert_eq!(ipv6(case.as_bytes()), v6, "{case:?}");
        let v4 = case.parse::<std::net::Ipv4Addr>().ok().map(u32::from);
        assert_eq!(dotted_quad(case.as_bytes()), v4, "{case:?}");
    }

    #[test]
    fn ipv6_agrees_with_std_on_edge_cases() {
        let cases = [
            "",
            ":",
            "::",
            ":::",
            "::1",
            "1::",
            "1:",
            ":1",
            ":1::",
            "::1:",
            "1::2::3",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1::3:4:5:6:7:8",
            "1::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8",
            "12345::",
            "::12345",
            "ffff::",
            "FFFF::ABCD",
            "0000:0000::0",
            "00000::",
            "g::",
            "::g",
            "2001:db8::/32",
            "2001:db8:: ",
            " ::1",
            "::ffff:10.1.2.3",
            "::10.1.2.3",
            "::1.2.3.4.5",
            "::1.2.3",
            "::1.2.3.",
            "::01.2.3.4",
            "::1.2.3.04",
            "::256.1.1.1",
            "::1.2.3.4:5",
            "1.2.3.4::",
            "1.2.3.4",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "1:2:3:4:5::1.2.3.4",
            "1:2:3:4:5:6::1.2.3.4",
            "1:2:3:4:5:6:7::1.2.3.4",
            "::1:2:3:4:5:1.2.3.4",
            "::1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:1.2.3",
            "::1234.1.1.1",
            "::1.2.3.4567",
            "::123.1.1.1",
            "::0.0.0.0",
            "::ffff:255.255.255.255",
            "2001:db8::1%eth0",
            "[::1]",
            "::١",
            "é::",
            "::é",
            "+1::",
            "-1::",
            "0x1::",
        ];
        for case in cases {
            agree(case);
        }
    }

    #[test]
    fn address_parsers_agree_with_std_on_generated_strings() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        // Random strings over the characters that matter.
        let alphabet: Vec<char> = "0123456789abcdefABCDEFg:.:.:.0 /é".chars().collect();
        for _ in 0..50_000 {
            let case: String = rng.some_of(&alphabet, 24).into_iter().collect();
            agree(&case);
        }
        // Valid addresses in every form std writes (with `::`, embedded
        // IPv4), and mutations of them: a character dropped, doubled, or
        // replaced.
        for _ in 0..20_000 {
            let mut groups = [0u16; 8];
            for g in &mut groups {
                *g = match rng.below(4) {
                    0 => 0,
                    1 => rng.below(16) as u16,
                    2 => 0xffff,
                    _ => rng.below(65536) as u16,
                };
            }
            let v6 = std::net::Ipv6Addr::from(groups);
            let v4 = std::net::Ipv4Addr::from(rng.below(1 << 32) as u32);
            let mut forms = vec![v6.to_string(), v4.to_string()];
            let o = v4.octets();
            forms.push(format!(
                "{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{v4}",
                groups[0], groups[1], groups[2], groups[3], groups[4], groups[5]
            ));
            forms.push(format!("::{v4}"));
            forms.push(format!("::ffff:{v4}"));
            forms.push(format!("{:x}::{v4}", groups[0]));
            forms.push(format!("{:04x}::{:X}", groups[0], groups[7]));
            forms.push(format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]));
            for form in forms {
                agree(&form);
                let bytes: Vec<char> = form.chars().collect();
                let at = rng.below(bytes.len());
                let mut dropped = bytes.clone();
                dropped.remove(at);
                agree(&dropped.iter().collect::<String>());
                let mut doubled = bytes.clone();
                doubled.insert(at, bytes[at]);
                agree(&doubled.iter().collect::<String>());
                let mut replaced = bytes.clone();
                replaced[at] = alphabet[rng.below(alphabet.len())];
                agree(&replaced.iter().collect::<String>());
            }
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
