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

use super::fields::{hex_group_at, ipv4_at, ipv4_mapped};
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

/// Reads the first line of `text`, a line's start. Returns the line and
/// the offset in `text` of the next line (past the `\n`), `None` when this
/// line is the last one; or `None` if the general parser must read it.
pub(crate) fn line(text: &str) -> Option<(Line, Option<usize>)> {
    let mut scan = Scan {
        s: text.as_bytes(),
        i: 0,
    };
    scan.skip_blanks();
    let at = scan.i;
    if scan.at_line_end() {
        return scan.finish().map(|next| (Line::Blank, next));
    }
    let dest = scan.dest()?;
    scan.skip_to_next_token()?;

    let mut proto = ProtoMatch::Any;
    let word = scan.word();
    let p = match word {
        b"tcp" => Some(ProtoMatch::Tcp),
        b"udp" => Some(ProtoMatch::Udp),
        b"any" => Some(ProtoMatch::Any),
        _ => None,
    };
    if let Some(p) = p {
        proto = p;
        scan.i += word.len();
        scan.skip_to_next_token()?;
    }

    let mut ports = None;
    if scan.peek().is_some_and(|b| b.is_ascii_digit()) {
        let lo = scan.port()?;
        let hi = if scan.peek() == Some(b'-') {
            scan.i += 1;
            scan.port()?
        } else {
            lo
        };
        if !scan.at_token_end() || lo > hi {
            return None;
        }
        ports = Some(PortRange { lo, hi });
        scan.skip_to_next_token()?;
    }

    let word = scan.word();
    let action = match word {
        b"saref" | b"mark" | b"dev" => {
            scan.i += word.len();
            scan.skip_to_next_token()?;
            match word {
                b"saref" => Action::Saref(Saref::new(scan.decimal()?)?),
                b"mark" => scan.mark()?,
                _ => Action::Dev(scan.ifname(text)?),
            }
        }
        b"reflect" if proto != ProtoMatch::Tcp => Action::Reflect,
        b"pass" => Action::Pass,
        b"deny" => Action::Deny,
        _ => return None,
    };
    if matches!(action, Action::Reflect | Action::Pass | Action::Deny) {
        scan.i += word.len();
    }
    if !scan.at_token_end() {
        return None;
    }
    scan.skip_blanks();
    if !scan.at_line_end() {
        return None;
    }
    let next = scan.finish()?;
    let spec = RuleSpec {
        dest,
        proto,
        ports,
        action,
        at,
    };
    Some((Line::Rule(spec), next))
}

/// A position in the text.
struct Scan<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    /// Whether the line's content ends here: at the end of the text, a
    /// `\n`, a `#`, or a `\r` that the line splitter drops (before `\n` or
    /// at the very end of the text).
    fn at_line_end(&self) -> bool {
        match self.peek() {
            None | Some(b'\n' | b'#') => true,
            Some(b'\r') => matches!(self.s.get(self.i + 1), None | Some(b'\n')),
            _ => false,
        }
    }

    /// Whether a token ends here: at a blank or at the line's end.
    fn at_token_end(&self) -> bool {
        matches!(self.peek(), Some(b' ' | b'\t')) || self.at_line_end()
    }

    /// Moves past the blanks that must follow a token to the next token of
    /// the line; `None` if there are no blanks or no next token.
    fn skip_to_next_token(&mut self) -> Option<()> {
        let start = self.i;
        self.skip_blanks();
        (self.i > start && !self.at_line_end()).then_some(())
    }

    /// The offset of the next line once at the end of this one's content
    /// (see [`line`]).
    fn finish(&self) -> Option<Option<usize>> {
        let i = self.i;
        match self.peek() {
            None => Some(None),
            Some(b'\n') => Some(Some(i + 1)),
            Some(b'\r') => match self.s.get(i + 1) {
                None => Some(None),
                Some(b'\n') => Some(Some(i + 2)),
                Some(_) => None,
            },
            Some(b'#') => Some(
                self.s[i + 1..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|nl| i + 1 + nl + 1),
            ),
            Some(_) => None,
        }
    }

    /// The lowercase word here if a token ends after it (a keyword, maybe),
    /// without moving; empty otherwise.
    fn word(&self) -> &'a [u8] {
        let rest: &'a [u8] = &self.s[self.i..];
        let len = rest
            .iter()
            .position(|b| !b.is_ascii_lowercase())
            .unwrap_or(rest.len());
        let after = Scan {
            s: self.s,
            i: self.i + len,
        };
        if after.at_token_end() {
            &rest[..len]
        } else {
            &[]
        }
    }

    /// Decimal digits, at least one; `u32::MAX` if the value is larger.
    fn decimal(&mut self) -> Option<u32> {
        let start = self.i;
        let mut value = 0u32;
        while let Some(b) = self.peek().filter(u8::is_ascii_digit) {
            value = value.saturating_mul(10).saturating_add(u32::from(b - b'0'));
            self.i += 1;
        }
        (self.i > start).then_some(value)
    }

    /// A port, `1..=65535`.
    fn port(&mut self) -> Option<u16> {
        let p = self.decimal()?;
        u16::try_from(p).ok().filter(|&p| p != 0)
    }

    /// A number of a mark: decimal, or hex after `0x` or `0X`; `None` past
    /// `u32`.
    fn mark_number(&mut self) -> Option<u32> {
        let hex = self.peek() == Some(b'0') && matches!(self.s.get(self.i + 1), Some(b'x' | b'X'));
        if hex {
            self.i += 2;
        }
        let radix = if hex { 16 } else { 10 };
        let start = self.i;
        let mut value = 0u32;
        while let Some(digit) = self.peek().and_then(|b| char::from(b).to_digit(radix)) {
            value = value.checked_mul(radix)?.checked_add(digit)?;
            self.i += 1;
        }
        (self.i > start).then_some(value)
    }

    /// `mark`'s argument: `N` or `N/MASK`, the mask not 0 and covering N.
    fn mark(&mut self) -> Option<Action> {
        let value = self.mark_number()?;
        let mask = if self.peek() == Some(b'/') {
            self.i += 1;
            self.mark_number()?
        } else {
            Action::FULL_MASK
        };
        (mask != 0 && value & !mask == 0).then_some(Action::Mark { value, mask })
    }

    /// `dev`'s argument, the token here; `text` is the whole text.
    fn ifname(&mut self, text: &str) -> Option<IfName> {
        let start = self.i;
        while !self.at_token_end() {
            self.i += 1;
        }
        // A token ends at an ASCII byte or at the end: a character boundary.
        IfName::new(text.get(start..self.i)?).ok()
    }

    /// A destination: `any`, or an address, maybe with a prefix length;
    /// a network without host bits, not IPv4-mapped.
    fn dest(&mut self) -> Option<Dest> {
        let start = self.i;
        if self.s[start..].starts_with(b"any") {
            self.i += 3;
            return self.at_token_end().then_some(Dest::Any);
        }
        if let Some((v4, end)) = ipv4_at(self.s, start) {
            self.i = end;
            let len = self.prefix_len(32)?;
            let host_bits = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            return (v4 & host_bits == 0).then_some(Dest::Net {
                addr: IpAddr::V4(v4.into()),
                len,
            });
        }
        let key = self.ipv6()?;
        let len = self.prefix_len(128)?;
        if mask(key, len) != key {
            return None;
        }
        let addr = IpAddr::V6(key.into());
        if ipv4_mapped(addr, len).is_some() {
            return None;
        }
        Some(Dest::Net { addr, len })
    }

    /// `/LEN` (at most `width`) or nothing (then `width`), and the end of
    /// the destination.
    fn prefix_len(&mut self, width: u8) -> Option<u8> {
        let len = if self.peek() == Some(b'/') {
            self.i += 1;
            u8::try_from(self.decimal()?).ok().filter(|&l| l <= width)?
        } else {
            width
        };
        self.at_token_end().then_some(len)
    }

    /// An IPv6 address made of groups only (an embedded IPv4 address is
    /// left to the general parser): groups of one to four hex digits
    /// separated by `:`, eight of them, or at most seven with one `::`
    /// standing for the zero groups missing. Stops before what follows.
    fn ipv6(&mut self) -> Option<u128> {
        let s = self.s;
        let mut at = self.i;
        let mut groups = [0u16; 8];
        let mut n = 0;
        // Where the `::` is, in groups.
        let mut gap = None;
        // Whether the address may end here: only just after a `::`.
        let mut may_end = false;
        if s.get(at..at + 2) == Some(b"::") {
            gap = Some(0);
            at += 2;
            may_end = true;
        }
        loop {
            let Some((group, end)) = hex_group_at(s, at) else {
                if may_end {
                    break;
                }
                return None;
            };
            *groups.get_mut(n)? = group;
            n += 1;
            at = end;
            if s.get(at) != Some(&b':') {
                break;
            }
            if s.get(at + 1) == Some(&b':') {
                if gap.is_some() {
                    return None;
                }
                gap = Some(n);
                at += 2;
                may_end = true;
            } else {
                at += 1;
                may_end = false;
            }
        }
        match gap {
            None if n == 8 => {}
            Some(gap) if n <= 7 => {
                // The groups after the gap go to the end.
                let tail = n - gap;
                groups.copy_within(gap..n, 8 - tail);
                groups[gap..8 - tail].fill(0);
            }
            _ => return None,
        }
        self.i = at;
        Some(groups.iter().fold(0u128, |a, &g| a << 16 | u128::from(g)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::lexer::split_line;
    use super::super::{parse_line, Item};
    use super::*;

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

    /// A xorshift generator: deterministic, and enough to explore.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
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
            let len = rng.below(32);
            let text: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            check(&text);
        }
    }

    #[test]
    fn ipv6_agrees_with_std() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let alphabet: Vec<char> = "0123456789abcdefABCDEFg:::. /".chars().collect();
        for _ in 0..200_000 {
            let len = rng.below(40);
            let case: String = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let mut scan = Scan {
                s: case.as_bytes(),
                i: 0,
            };
            if let Some(key) = scan.ipv6() {
                let addr = &case[..scan.i];
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
                    let mut scan = Scan {
                        s: case.as_bytes(),
                        i: 0,
                    };
                    let std = case.parse::<std::net::Ipv6Addr>().ok().map(u128::from);
                    let fast = scan.ipv6().filter(|_| scan.i == case.len());
                    assert!(fast.is_none() || fast == std, "{case:?}");
                    assert_eq!(fast.is_some(), std.is_some(), "{case:?}");
                }
            }
        }
    }
}
