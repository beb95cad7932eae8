//! A one-pass reader for the rule lines that make up nearly all of a large
//! rules file.
//!
//! The general parser splits the text into lines, each line into tokens,
//! then reads each token; on files of 100k rules, the splitting costs as
//! much as the reading. This reader does all of it in one pass over the
//! bytes, but only for lines it understands completely: a valid rule (with
//! an IPv4 address, or an IPv6 address without an embedded IPv4 one), a
//! blank line, or either followed by a comment. Anything else (an error, a
//! header, an unusual spelling) it leaves to the general parser, which
//! reads the line again from its start: every error, and every message,
//! still comes from one place. On the lines it reads, it gives exactly what
//! the general parser gives (see the tests).

use std::net::IpAddr;

use super::fields::ipv4_mapped;
use super::RuleSpec;
use crate::key::mask;
use crate::{Action, Dest, IfName, PortRange, ProtoMatch, Saref};

/// A line the fast reader read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// Nothing but blanks, maybe a comment.
    Blank,
    /// A rule; its `at` is the offset of the destination, after blanks only.
    Rule(RuleSpec),
}

// The reader works on the bytes of the whole rest of the text with plain
// offsets, one small function a step, each returning the offset where it
// stopped. A token must be followed by blanks and another token, or by the
// line's end; several checks are left to the step that follows (a
// destination or a port range ends where blanks must follow, and the first
// byte of a token is never one that ends a line).

/// Reads the first line of `text`, a line's start. Returns the line and
/// the offset in `text` of the next line (past the `\n`), `None` when this
/// line is the last one; or `None` if the general parser must read it.
pub(crate) fn line(text: &str) -> Option<(Line, Option<usize>)> {
    let s = text.as_bytes();
    let at = blanks(s, 0);
    let (dest, i) = match s.get(at) {
        Some(b'0'..=b'9') => match ipv4(s, at) {
            Some((v4, end)) => ipv4_dest(s, v4, end)?,
            None => ipv6_dest(s, at)?,
        },
        Some(b'a') if s.get(at..at + 3) == Some(b"any") => (Dest::Any, at + 3),
        None | Some(b'\n' | b'#' | b'\r') => return blank(s, at),
        Some(_) => ipv6_dest(s, at)?,
    };
    let i = next_token(s, i)?;

    let (proto, i) = match s.get(i) {
        Some(b't') if keyword(s, i, b"tcp") => (ProtoMatch::Tcp, next_token(s, i + 3)?),
        Some(b'u') if keyword(s, i, b"udp") => (ProtoMatch::Udp, next_token(s, i + 3)?),
        Some(b'a') if keyword(s, i, b"any") => (ProtoMatch::Any, next_token(s, i + 3)?),
        _ => (ProtoMatch::Any, i),
    };

    let (ports, i) = match s.get(i) {
        Some(b'0'..=b'9') => {
            let (lo, j) = port(s, i)?;
            let (hi, j) = if s.get(j) == Some(&b'-') {
                port(s, j + 1)?
            } else {
                (lo, j)
            };
            if lo > hi {
                return None;
            }
            (Some(PortRange { lo, hi }), next_token(s, j)?)
        }
        _ => (None, i),
    };

    let (action, i) = match *s.get(i)? {
        b's' if s.get(i..i + 5) == Some(b"saref") => {
            let (n, j) = decimal(s, next_token(s, i + 5)?)?;
            (Action::Saref(Saref::new(n)?), j)
        }
        b'm' if s.get(i..i + 4) == Some(b"mark") => mark(s, next_token(s, i + 4)?)?,
        b'p' if s.get(i..i + 4) == Some(b"pass") => (Action::Pass, i + 4),
        b'd' if s.get(i..i + 4) == Some(b"deny") => (Action::Deny, i + 4),
        b'd' if s.get(i..i + 3) == Some(b"dev") => ifname(text, next_token(s, i + 3)?)?,
        b'r' if proto != ProtoMatch::Tcp && s.get(i..i + 7) == Some(b"reflect") => {
            (Action::Reflect, i + 7)
        }
        _ => return None,
    };
    // Past the blanks, the line must end: this also ends the last token.
    let next = finish(s, blanks(s, i))?;
    let spec = RuleSpec {
        dest,
        proto,
        ports,
        action,
        at,
    };
    Some((Line::Rule(spec), next))
}

/// A line of blanks, `i` past them.
#[cold]
fn blank(s: &[u8], i: usize) -> Option<(Line, Option<usize>)> {
    finish(s, i).map(|next| (Line::Blank, next))
}

/// The offset of the first byte at or after `i` that is not a blank.
#[inline(always)]
fn blanks(s: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t') = s.get(i) {
        i += 1;
    }
    i
}

/// Whether the line's content ends at `i`: at the end of the text, a
/// `\n`, a `#`, or a `\r` that the line splitter drops (before `\n` or at
/// the very end of the text).
#[inline(always)]
fn at_line_end(s: &[u8], i: usize) -> bool {
    match s.get(i) {
        None | Some(b'\n' | b'#') => true,
        Some(b'\r') => matches!(s.get(i + 1), None | Some(b'\n')),
        _ => false,
    }
}

/// Whether a token ends at `i`: at a blank or at the line's end.
#[inline(always)]
fn at_token_end(s: &[u8], i: usize) -> bool {
    matches!(s.get(i), Some(b' ' | b'\t')) || at_line_end(s, i)
}

/// Whether `word` is at `i`, a whole token.
#[inline(always)]
fn keyword(s: &[u8], i: usize, word: &[u8]) -> bool {
    s.get(i..i + word.len()) == Some(word) && at_token_end(s, i + word.len())
}

/// The start of the next token, past the blanks that must be at `i`: the
/// offset of a byte that is not a blank, maybe one that ends the line (no
/// token starts with one: the caller's match on it fails).
#[inline(always)]
fn next_token(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i) {
        Some(b' ' | b'\t') => Some(blanks(s, i + 1)),
        _ => None,
    }
}

/// The offset of the next line once at `i`, the end of this one's content
/// (see [`line()`]); `None` if this line's content does not end at `i`.
#[inline(always)]
fn finish(s: &[u8], i: usize) -> Option<Option<usize>> {
    match s.get(i) {
        None => Some(None),
        Some(b'\n') => Some(Some(i + 1)),
        Some(b'\r') => match s.get(i + 1) {
            None => Some(None),
            Some(b'\n') => Some(Some(i + 2)),
            Some(_) => None,
        },
        Some(b'#') => Some(comment_end(s, i + 1)),
        Some(_) => None,
    }
}

/// The offset of the line after a comment that starts before `i`.
#[cold]
fn comment_end(s: &[u8], i: usize) -> Option<usize> {
    s.get(i..)?
        .iter()
        .position(|&b| b == b'\n')
        .map(|nl| i + 1 + nl)
}

/// Bytes `0x01` each.
const ONES: u64 = u64::from_le_bytes([1; 8]);

/// The eight bytes at `i`, the first in the low bits, if there are eight.
#[inline(always)]
fn word_at(s: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(s.get(i..i + 8)?.try_into().ok()?))
}

/// How many of the bytes of `w` (the first in the low bits) are digits
/// before one that is not, 8 if all are, given `x = w ^ (0x30 * ONES)`.
#[inline(always)]
fn digit_run(x: u64) -> u32 {
    // A digit's byte in `x` is 0..=9; adding 0x76 sets the high bit of
    // the others (or they have it). Only a byte that is not a digit
    // carries into the next one: the first such byte is found exactly.
    let not_digit = (x.wrapping_add(0x76 * ONES) | x) & (0x80 * ONES);
    not_digit.trailing_zeros() / 8
}

/// The number written by the values `0..=9` of the bytes of `x`, the
/// first (most significant) in the low bits, eight of them.
#[inline(always)]
fn decimal8(x: u64) -> u32 {
    let x = (x.wrapping_mul(10) + (x >> 8)) & 0x00ff_00ff_00ff_00ff;
    let x = (x.wrapping_mul(100) + (x >> 16)) & 0x0000_ffff_0000_ffff;
    (x.wrapping_mul(10_000) + (x >> 32)) as u32
}

/// Decimal digits at `i`, at least one; `u32::MAX` if the value is larger.
#[inline(always)]
fn decimal(s: &[u8], i: usize) -> Option<(u32, usize)> {
    if let Some(w) = word_at(s, i) {
        let x = w ^ (0x30 * ONES);
        let n = digit_run(x);
        if n == 0 {
            return None;
        }
        if n < 8 {
            // The digits to the high bytes, zeros (leading ones) before.
            return Some((decimal8(x << (64 - 8 * n)), i + n as usize));
        }
    }
    decimal_loop(s, i)
}

/// [`decimal`], a byte at a time.
#[inline(never)]
fn decimal_loop(s: &[u8], mut i: usize) -> Option<(u32, usize)> {
    let start = i;
    let mut value = 0u64;
    while let Some(&b) = s.get(i) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        // `value` stays at most `u32::MAX`: no overflow.
        value = (value * 10 + u64::from(d)).min(u64::from(u32::MAX));
        i += 1;
    }
    (i > start).then_some((value as u32, i))
}

/// A port, `1..=65535`.
#[inline(always)]
fn port(s: &[u8], i: usize) -> Option<(u16, usize)> {
    let (p, i) = decimal(s, i)?;
    let p = u16::try_from(p).ok().filter(|&p| p != 0)?;
    Some((p, i))
}

/// The values of hex digits; 16 for other bytes.
static HEX: [u8; 256] = {
    let mut t = [16u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = match b as u8 {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' => c - b'a' + 10,
            c @ b'A'..=b'F' => c - b'A' + 10,
            _ => 16,
        };
        b += 1;
    }
    t
};

/// A number of a mark at `i`: decimal, or hex after `0x` or `0X`; `None`
/// past `u32`.
#[inline(always)]
fn mark_number(s: &[u8], mut i: usize) -> Option<(u32, usize)> {
    let start;
    let mut value = 0u64;
    if s.get(i) == Some(&b'0') && matches!(s.get(i + 1), Some(b'x' | b'X')) {
        i += 2;
        if let Some((v, n)) = word_at(s, i).and_then(hex8) {
            // Eight digits may be followed by more.
            if n < 8 || !matches!(s.get(i + 8), Some(&b) if HEX[usize::from(b)] < 16) {
                return Some((v, i + n));
            }
        }
        start = i;
        while let Some(&b) = s.get(i) {
            let d = HEX[usize::from(b)];
            if d >= 16 {
                break;
            }
            value = value << 4 | u64::from(d);
            if value > u64::from(u32::MAX) {
                return None;
            }
            i += 1;
        }
    } else {
        start = i;
        while let Some(&b) = s.get(i) {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            value = value * 10 + u64::from(d);
            if value > u64::from(u32::MAX) {
                return None;
            }
            i += 1;
        }
    }
    (i > start).then_some((value as u32, i))
}

/// The hex digits that start `w` (the first in the low bits), one to
/// eight of them, and their value; `None` if there are none.
#[inline(always)]
fn hex8(w: u64) -> Option<(u32, usize)> {
    // Ranges of bytes, on their low seven bits (no carry between bytes),
    // then without those with the high bit.
    let high = 0x80 * ONES;
    let at_least = |t: u64, b: u64| (t + (0x80 - b) * ONES) & high;
    let t = w & (0x7f * ONES);
    let digit = at_least(t, 0x30) & !at_least(t, 0x3a);
    // `A` to `F` become `a` to `f`, and nothing else does.
    let t = t | (0x20 * ONES);
    let letter = at_least(t, 0x61) & !at_least(t, 0x67);
    let not_hex = !(digit | letter) | (w & high);
    let n = (not_hex & high).trailing_zeros() / 8;
    if n == 0 {
        return None;
    }
    // A digit's value is its low nibble; a letter's, its low nibble + 9
    // (letters have bit 6 set, digits do not).
    let v = (w & (0x0f * ONES)) + ((w >> 6) & ONES) * 9;
    let v = v << (64 - 8 * n);
    let v = (v.wrapping_mul(16) + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v.wrapping_mul(256) + (v >> 16)) & 0x0000_ffff_0000_ffff;
    Some(((v.wrapping_mul(65_536) + (v >> 32)) as u32, n as usize))
}

/// `mark`'s argument at `i`: `N` or `N/MASK`, the mask not 0 and covering
/// N.
#[inline(always)]
fn mark(s: &[u8], i: usize) -> Option<(Action, usize)> {
    let (value, i) = mark_number(s, i)?;
    let (mask, i) = if s.get(i) == Some(&b'/') {
        mark_number(s, i + 1)?
    } else {
        (Action::FULL_MASK, i)
    };
    (mask != 0 && value & !mask == 0).then_some((Action::Mark { value, mask }, i))
}

/// `dev`'s argument, the token at `start`; `text` is the whole text.
#[cold]
fn ifname(text: &str, start: usize) -> Option<(Action, usize)> {
    let s = text.as_bytes();
    let mut i = start;
    while !at_token_end(s, i) {
        i += 1;
    }
    // A token ends at an ASCII byte or at the end: a character boundary.
    let name = IfName::new(text.get(start..i)?).ok()?;
    Some((Action::Dev(name), i))
}

/// An IPv4 address at `i` as [`super::fields::ipv4_at`] reads one, but
/// for a fourth digit in an octet: this stops before it where `ipv4_at`
/// fails, and what must follow an address (a dot, a `/` or a blank) is
/// not a digit either. Without a dot in the address, fails early, leaving
/// the text to [`ipv6`].
#[inline(always)]
fn ipv4(s: &[u8], i: usize) -> Option<(u32, usize)> {
    // On slices, with patterns: one length check an octet, not one a byte.
    let (a, rest) = octet(s.get(i..)?)?;
    let (b, rest) = octet(rest.strip_prefix(b".")?)?;
    let (c, rest) = octet(rest.strip_prefix(b".")?)?;
    let (d, rest) = octet(rest.strip_prefix(b".")?)?;
    Some((a << 24 | b << 16 | c << 8 | d, s.len() - rest.len()))
}

/// An octet of an IPv4 address at the start of `s`, and what follows it:
/// one to three digits, at most 255, without a leading zero (a zero
/// followed by a digit reads as 0: the digit fails the dot or the end that
/// must follow).
#[inline(always)]
fn octet(s: &[u8]) -> Option<(u32, &[u8])> {
    let v = u32::from;
    const ZERO: u32 = b'0' as u32;
    match *s {
        [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9', ref rest @ ..] => {
            let o = v(a) * 100 + v(b) * 10 + v(c) - ZERO * 111;
            (o <= 255).then_some((o, rest))
        }
        [a @ b'1'..=b'9', b @ b'0'..=b'9', ref rest @ ..] => {
            Some((v(a) * 10 + v(b) - ZERO * 11, rest))
        }
        [a @ b'0'..=b'9', ref rest @ ..] => Some((v(a) - ZERO, rest)),
        _ => None,
    }
}

/// The rest of an IPv4 destination, past the address `v4` that ends at
/// `i`: `/LEN` (at most 32) or nothing, a network without host bits.
/// Returns the destination and where it ends.
#[inline(always)]
fn ipv4_dest(s: &[u8], v4: u32, i: usize) -> Option<(Dest, usize)> {
    let (len, i) = prefix_len(s, i, 32)?;
    let host_bits = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
    (v4 & host_bits == 0).then_some((
        Dest::Net {
            addr: IpAddr::V4(v4.into()),
            len,
        },
        i,
    ))
}

/// An IPv6 destination at `i`: an address, `/LEN` (at most 128) or
/// nothing, a network without host bits, not IPv4-mapped.
fn ipv6_dest(s: &[u8], i: usize) -> Option<(Dest, usize)> {
    let (key, i) = ipv6(s, i)?;
    let (len, i) = prefix_len(s, i, 128)?;
    if mask(key, len) != key {
        return None;
    }
    let addr = IpAddr::V6(key.into());
    if ipv4_mapped(addr, len).is_some() {
        return None;
    }
    Some((Dest::Net { addr, len }, i))
}

/// `/LEN` (at most `width`) at `i`, or nothing (then `width`).
#[inline(always)]
fn prefix_len(s: &[u8], i: usize, width: u8) -> Option<(u8, usize)> {
    if s.get(i) != Some(&b'/') {
        return Some((width, i));
    }
    let (len, i) = decimal(s, i + 1)?;
    let len = u8::try_from(len).ok().filter(|&l| l <= width)?;
    Some((len, i))
}

/// A group of an IPv6 address at `i`: one to four hex digits, read
/// greedily (a fifth fails), as [`super::fields::hex_group_at`] reads one.
#[inline(always)]
fn hex_group(s: &[u8], mut i: usize) -> Option<(u16, usize)> {
    let start = i;
    let mut group = 0u32;
    while let Some(&b) = s.get(i) {
        let d = HEX[usize::from(b)];
        if d >= 16 {
            break;
        }
        if i - start == 4 {
            return None;
        }
        group = group << 4 | u32::from(d);
        i += 1;
    }
    // At most four hex digits: the group fits.
    (i > start).then_some((group as u16, i))
}

/// An IPv6 address at `i` made of groups only (an embedded IPv4 address
/// is left to the general parser): groups of one to four hex digits
/// separated by `:`, eight of them, or at most seven with one `::`
/// standing for the zero groups missing. Stops before what follows.
fn ipv6(s: &[u8], mut at: usize) -> Option<(u128, usize)> {
    // The groups read, the last in the low bits; those before the `::`
    // and their number, once past it.
    let mut groups = 0u128;
    let mut n = 0;
    let mut head = None;
    // Whether the address may end here: only just after a `::`.
    let mut may_end = false;
    if s.get(at..at + 2) == Some(b"::") {
        head = Some((0u128, 0));
        at += 2;
        may_end = true;
    }
    loop {
        let Some((group, end)) = hex_group(s, at) else {
            if may_end {
                break;
            }
            return None;
        };
        if n == 8 {
            return None;
        }
        groups = groups << 16 | u128::from(group);
        n += 1;
        at = end;
        if s.get(at) != Some(&b':') {
            break;
        }
        if s.get(at + 1) == Some(&b':') {
            if head.is_some() {
                return None;
            }
            head = Some((groups, n));
            groups = 0;
            at += 2;
            may_end = true;
        } else {
            at += 1;
            may_end = false;
        }
    }
    let key = match head {
        None if n == 8 => groups,
        // The groups after the gap go to the end; those before it, to the
        // start.
        Some((head, gap)) if n <= 7 => (head.checked_shl(16 * (8 - gap)).unwrap_or(0)) | groups,
        _ => return None,
    };
    Some((key, at))
}

#[cfg(test)]
mod tests {
    use super::super::lexer::split_line;
    use super::super::{parse_line, Item};
    use super::*;
    use crate::test_rng::Rng;

    /// Checks `text` against the general parser: when the fast reader
    /// reads its first line, the general one must read the same, and the
    /// line must end at the same place. Returns whether it was read.
    fn check(text: &str) -> bool {
        let Some((got, next)) = line(text) else {
            return false;
        };
        let (content, rest) = split_line(text);
        assert_eq!(
            next.map(|n| &text[n..]),
            rest,
            "next line of {text:?} (content {content:?})"
        );
        let want = match parse_line(content) {
            Ok(None) => Line::Blank,
            Ok(Some(Item::Rule(spec))) => Line::Rule(spec),
            other => panic!("{text:?}: fast {got:?}, general {other:?}"),
        };
        assert_eq!(got, want, "{text:?}");
        true
    }

    #[test]
    fn reads_common_lines() {
        let read = [
            "38.183.196.208/29\tpass",
            "2001:db8:f4e6:3318::/64\tsaref 4687\n",
            "2.176.108.0/24\tudp\t500-4500\tmark 0x102d0eaf\nnext",
            "46.38.3.128/27\ttcp\t22\tmark 0x1b8c4df3\r\n",
            "  any tcp 1-65535 deny # comment\nx",
            "any any 7 reflect",
            "10.0.0.0/8 udp reflect\r",
            "10.1.2.3 saref 32767#c",
            "10.1.2.3/032 saref 007",
            "10.0.0.0/8 mark 0XFF/0xff\t \n",
            "10.0.0.0/8 mark 4294967295",
            "10.0.0.0/8 mark 0x10/0x30",
            "10.0.0.0/8 dev eth0.100 # c",
            "10.0.0.0/8 dev ééé\n",
            "::/0 pass",
            ":: pass",
            "::1 pass",
            "1:: pass",
            "1:2:3:4:5:6:7:8 pass",
            "1:2:3:4:5:6:7:: pass",
            "::2:3:4:5:6:7:8 pass",
            "1:2::7:8 pass",
            "ABCD:ef01::/32 pass",
            "0000:0::/16 pass",
            "0.0.0.0/0 pass",
            "",
            "   \t",
            "\n",
            "# only\n1.2.3.4 pass",
            "\r\n",
            "  \r",
            "10.0.0.0/8 tcp 22-22 saref 1",
            "10.0.0.0/8 22 saref 1",
        ];
        for text in read {
            assert!(check(text), "not read: {text:?}");
        }
    }

    #[test]
    fn leaves_other_lines_to_the_general_parser() {
        let left = [
            "[profile]",
            "10.1.2.3/16 pass",
            "10.0.0.0/33 pass",
            "10.0.0.0/ pass",
            "10.0.0.0/8",
            "10.0.0.0/8 ",
            "10.0.0.0/8 pass extra",
            "10.0.0.0/8 pass\r\r\n",
            "10.0.0.0/8 pass\r#c",
            "10.0.0.0/8 pass\r x",
            "10.0.0.0/8\r\npass",
            "10.0.0.0/8 tcp reflect",
            "10.0.0.0/8 tcp tcp pass",
            "10.0.0.0/8 22 tcp pass",
            "10.0.0.0/8 0 pass",
            "10.0.0.0/8 65536 pass",
            "10.0.0.0/8 30-20 pass",
            "10.0.0.0/8 22- pass",
            "10.0.0.0/8 22x pass",
            "10.0.0.0/8 saref 0",
            "10.0.0.0/8 saref 32768",
            "10.0.0.0/8 saref",
            "10.0.0.0/8 saref x",
            "10.0.0.0/8 saref 99999999999999999999",
            "10.0.0.0/8 mark 0x",
            "10.0.0.0/8 mark 0x100000000",
            "10.0.0.0/8 mark 4294967296",
            "10.0.0.0/8 mark 1/0",
            "10.0.0.0/8 mark 3/1",
            "10.0.0.0/8 mark 1/",
            "10.0.0.0/8 mark 1/2/3",
            "10.0.0.0/8 dev a/b",
            "10.0.0.0/8 dev abcdefghijklmnop",
            "10.0.0.0/8 dev .",
            "10.0.0.0/8 dev a\u{a0}b",
            "10.0.0.0/8 dev a\rb",
            "10.0.0.0/8 PASS",
            "10.0.0.0/8 Tcp pass",
            "tcp pass",
            "pass",
            "any",
            "anyx pass",
            "ANY pass",
            "01.2.3.4 pass",
            "1.2.3.4.5 pass",
            "1.2.3.4:80 pass",
            "::ffff:10.1.2.3 pass",
            "::ffff:0:0/96 pass",
            "::10.1.2.3 pass",
            "2001:db8::1/32 pass",
            "1:2:3:4:5:6:7:8:9 pass",
            "1:2:3:4:5:6:7:8:: pass",
            "::1:2:3:4:5:6:7:8 pass",
            "1::2::3 pass",
            ":1 pass",
            "1: pass",
            "::: pass",
            "12345:: pass",
            "::12345 pass",
            "g:: pass",
            "\u{feff}1.2.3.4 pass",
            "1.2.3.4\u{a0}pass",
            "\x0b1.2.3.4 pass",
            "1.2.3.4\x0bpass",
        ];
        for text in left {
            assert!(!check(text), "read: {text:?}");
        }
    }

    #[test]
    fn agrees_with_the_general_parser_on_generated_lines() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let dests = [
            "10.0.0.0/8",
            "1.2.3.4",
            "1.2.3.4/31",
            "0.0.0.0/0",
            "255.255.255.255/32",
            "any",
            "::",
            "::/0",
            "2001:db8::/32",
            "2001:db8::1",
            "1:2:3:4:5:6:7:8",
            "fe80::/10",
            "::ffff:1.2.3.4",
            "::ffff:0:0/96",
            "::fffe:0:0/96",
            "64:ff9b::/96",
            "10.1.2.3/16",
        ];
        let protos = ["", "tcp", "udp", "any", "TCP", "icmp"];
        let ports = ["", "22", "1-65535", "500-4500", "0", "65536", "9-8", "007"];
        let actions = [
            "saref 1",
            "saref 32767",
            "saref 32768",
            "saref 0",
            "mark 0x1",
            "mark 0xff/0xff",
            "mark 255/0xf0",
            "mark 0/1",
            "mark 1/0",
            "dev eth0",
            "dev ipsec1",
            "dev x/y",
            "reflect",
            "pass",
            "deny",
            "Pass",
            "saref",
        ];
        let seps = [" ", "\t", "  ", " \t "];
        let ends = [
            "", "\n", "\r\n", " # c\n", "#\n", "\r", "\r\r\n", " ", "\t\n",
        ];
        // Characters that matter to some part of the syntax, and others.
        let alphabet: Vec<char> = "0123456789abcdefxX:./- \t\r\n#[]é\u{a0}\x0bpstuy"
            .chars()
            .collect();
        let mut read = 0;
        let mut total = 0;
        for _ in 0..200_000 {
            let mut fields: Vec<&str> = vec![dests[rng.below(dests.len())]];
            for f in [
                protos[rng.below(protos.len())],
                ports[rng.below(ports.len())],
                actions[rng.below(actions.len())],
            ] {
                if !f.is_empty() {
                    fields.push(f);
                }
            }
            let mut text = String::new();
            if rng.below(4) == 0 {
                text.push_str(seps[rng.below(seps.len())]);
            }
            for (i, f) in fields.iter().enumerate() {
                if i > 0 {
                    text.push_str(seps[rng.below(seps.len())]);
                }
                text.push_str(f);
            }
            text.push_str(ends[rng.below(ends.len())]);
            if rng.below(2) == 0 {
                text.push_str("10.0.0.0/8 pass");
            }
            // Mutations: a character dropped, doubled, or replaced.
            let mut chars: Vec<char> = text.chars().collect();
            match rng.below(4) {
                0 if !chars.is_empty() => {
                    chars.remove(rng.below(chars.len()));
                }
                1 if !chars.is_empty() => {
                    let at = rng.below(chars.len());
                    chars.insert(at, chars[at]);
                }
                2 if !chars.is_empty() => {
                    let at = rng.below(chars.len());
                    chars[at] = alphabet[rng.below(alphabet.len())];
                }
                _ => {}
            }
            let text: String = chars.into_iter().collect();
            total += 1;
            if check(&text) {
                read += 1;
            }
        }
        // Many lines are valid (fewer than half, with all these bad
        // pieces): the fast reader must read them.
        assert!(read > total / 20, "{read} of {total}");
    }

    #[test]
    fn agrees_with_the_general_parser_on_random_text() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet: Vec<char> = "0123456789abcdefABCDEF:./- \t\r\n#anyptsdrkmxX"
            .chars()
            .collect();
        for _ in 0..200_000 {
            let text: String = rng.some_of(&alphabet, 32).into_iter().collect();
            check(&text);
        }
    }

    #[test]
    fn ipv4_agrees_with_ipv4_at() {
        use super::super::fields::ipv4_at;
        let check = |case: &[u8]| {
            let fast = ipv4(case, 0);
            let general = ipv4_at(case, 0);
            match (fast, general) {
                (Some(f), Some(g)) => assert_eq!(f, g, "{case:?}"),
                // A fourth digit: this stops before it, `ipv4_at` fails.
                (Some((_, end)), None) => {
                    assert!(case[end].is_ascii_digit(), "{case:?}")
                }
                (None, Some(_)) => panic!("{case:?}"),
                (None, None) => {}
            }
            if let Some((v4, end)) = fast {
                let text = std::str::from_utf8(&case[..end]).unwrap();
                assert_eq!(text.parse::<std::net::Ipv4Addr>().map(u32::from), Ok(v4));
            }
        };
        for case in [
            "0.0.0.0",
            "1.2.3.4",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3.256",
            "01.2.3.4",
            "1.02.3.4",
            "1.2.3.04",
            "1.2.3.0",
            "1..3.4",
            ".1.2.3.4",
            "1.2.3",
            "1.2.3.",
            "1.2.3.4.",
            "1.2.3.4.5",
            "1.2.3.4/8",
            "1.2.3.4 ",
            "1.2.3.1234",
            "1234.1.1.1",
            "1.2.3.99999999999999999999",
            "199.200.249.250",
            "",
            "1",
            "10.",
            "2001:db8::",
        ] {
            check(case.as_bytes());
        }
        let mut rng = Rng(0x0bad_cafe_f00d_1234);
        for _ in 0..200_000 {
            let case = rng.some_of(b"0012345699../ :a", 24);
            check(&case);
        }
    }

    #[test]
    fn numbers_agree_with_byte_loops() {
        /// `mark_number`, a byte at a time, as it was.
        fn mark_loop(s: &[u8], mut i: usize) -> Option<(u32, usize)> {
            let hex = s.get(i) == Some(&b'0') && matches!(s.get(i + 1), Some(b'x' | b'X'));
            if hex {
                i += 2;
            }
            let radix = if hex { 16 } else { 10 };
            let start = i;
            let mut value = 0u32;
            while let Some(digit) = s.get(i).and_then(|&b| char::from(b).to_digit(radix)) {
                value = value.checked_mul(radix)?.checked_add(digit)?;
                i += 1;
            }
            (i > start).then_some((value, i))
        }
        let mut rng = Rng(0x005e_ed0f_5eed_0f00);
        for _ in 0..300_000 {
            let alphabet: &[u8] = match rng.below(3) {
                0 => b"0123456789",
                1 => b"0123456789 x/-",
                _ => b"00x0123456789abcdefABCDEFgG@`/: \xff",
            };
            let case = rng.some_of(alphabet, 24);
            for i in 0..case.len().min(3) {
                assert_eq!(decimal(&case, i), decimal_loop(&case, i), "{case:?} {i}");
                assert_eq!(mark_number(&case, i), mark_loop(&case, i), "{case:?} {i}");
            }
        }
        for case in [
            "4294967295 ",
            "4294967296 ",
            "99999999 ",
            "12345678",
            "1234567 ",
            "0000000000001 ",
            "0xffffffff ",
            "0xffffffff",
            "0x100000000 ",
            "0x0000000001 ",
            "0x1234567 ",
            "0xFfFfFfF ",
            "0xg ",
            "0x ",
            "0x12345678g",
            "0x1234\u{e9}",
            "00000042/",
        ] {
            let case = case.as_bytes();
            assert_eq!(decimal(case, 0), decimal_loop(case, 0), "{case:?}");
            assert_eq!(mark_number(case, 0), mark_loop(case, 0), "{case:?}");
        }
    }

    #[test]
    fn ipv6_agrees_with_std() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let alphabet: Vec<char> = "0123456789abcdefABCDEFg:::. /".chars().collect();
        for _ in 0..200_000 {
            let case: String = rng.some_of(&alphabet, 40).into_iter().collect();
            if let Some((key, end)) = ipv6(case.as_bytes(), 0) {
                let addr = &case[..end];
                assert_eq!(
                    addr.parse::<std::net::Ipv6Addr>().map(u128::from),
                    Ok(key),
                    "{case:?}"
                );
            }
        }
        for groups in 0..=8usize {
            for gap in 0..=groups {
                let head: Vec<String> = (1..=gap).map(|g| format!("{g:x}")).collect();
                let tail: Vec<String> = (gap + 1..=groups).map(|g| format!("{g:x}")).collect();
                for case in [
                    format!("{}::{}", head.join(":"), tail.join(":")),
                    [head.clone(), tail.clone()].concat().join(":"),
                ] {
                    let std = case.parse::<std::net::Ipv6Addr>().ok().map(u128::from);
                    let fast = ipv6(case.as_bytes(), 0)
                        .filter(|&(_, end)| end == case.len())
                        .map(|(key, _)| key);
                    assert!(fast.is_none() || fast == std, "{case:?}");
                    assert_eq!(fast.is_some(), std.is_some(), "{case:?}");
                }
            }
        }
    }
}
