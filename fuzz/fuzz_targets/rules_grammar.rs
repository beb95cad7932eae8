//! Rules files built from the grammar's pieces, so that most inputs get
//! past the lexer: many valid rules, near-misses, sections, comments and
//! ties. Small address and port pools make rules collide on purpose.

#![no_main]

use std::fmt::Write;

use arbitrary::Arbitrary;
use ldsaref_fuzz::{check_error, check_set};
use ldsaref_rules::RuleSet;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Line {
    Blank,
    Comment,
    Header(Name),
    Rule(RuleLine),
    /// One piece of rule text out of place.
    Junk(Piece),
}

#[derive(Arbitrary, Debug)]
enum Name {
    Client(u8),
    Long(u8),
    Bad(u8),
}

#[derive(Arbitrary, Debug)]
struct RuleLine {
    dest: DestPiece,
    proto: Option<ProtoPiece>,
    ports: Option<PortsPiece>,
    action: ActionPiece,
    extra: Option<Piece>,
    sep: Sep,
    comment: bool,
    crlf: bool,
}

#[derive(Arbitrary, Debug)]
enum DestPiece {
    Any,
    /// From a small pool, so that prefixes nest and collide.
    V4Pool {
        pick: u8,
        len: u8,
    },
    V6Pool {
        pick: u8,
        len: u8,
    },
    /// Anything, host bits and all.
    V4Raw {
        addr: u32,
        len: u8,
    },
    V6Raw {
        addr: u128,
        len: u8,
    },
    Mapped {
        addr: u32,
        len: u8,
    },
    Text(Piece),
}

#[derive(Arbitrary, Debug)]
enum ProtoPiece {
    Tcp,
    Udp,
    Any,
    Upper,
}

#[derive(Arbitrary, Debug)]
enum PortsPiece {
    Pool(u8),
    Range(u8, u8),
    Raw(u32, u32),
    Text(Piece),
}

#[derive(Arbitrary, Debug)]
enum ActionPiece {
    Saref(u32),
    SarefText(Piece),
    Mark(u32),
    MarkMask(u32, u32),
    MarkHex(u32),
    Dev(u8),
    DevRaw(Vec<u8>),
    Reflect,
    Pass,
    Deny,
    Missing,
    Text(Piece),
}

#[derive(Arbitrary, Debug)]
enum Sep {
    Space,
    Tabs,
    Mixed,
}

/// Tokens that are near the grammar: keywords, their misspellings,
/// separators and numbers at the edges of their ranges.
#[derive(Arbitrary, Debug)]
enum Piece {
    Word(u8),
    Bytes(Vec<u8>),
}

const WORDS: &[&str] = &[
    "any",
    "ANY",
    "tcp",
    "udp",
    "TCP",
    "tpc",
    "saref",
    "SAREF",
    "mark",
    "dev",
    "reflect",
    "pass",
    "deny",
    "[",
    "]",
    "[x]",
    "#",
    "/",
    "-",
    "0",
    "1",
    "32767",
    "32768",
    "65535",
    "65536",
    "0x",
    "0xffffffff",
    "0x100000000",
    "4294967296",
    "1-0",
    "0-1",
    "::",
    "::/0",
    "0.0.0.0/0",
    "::ffff:0:0/96",
    "1.2.3.4/33",
    "2001:db8::/129",
    "01.2.3.4",
    "\u{feff}",
    "é",
    "\u{0}",
    "\r",
    "1.2.3.4/",
    "/8",
    "a b",
    "\t",
    "lo",
    "nosuch0",
    "..",
    "eth0/1",
];

const V4: &[u32] = &[
    0xc000_0200,
    0xc633_6400,
    0xcb00_7100,
    0xc612_0000,
    0,
    0xffff_ffff,
];
const V6: &[u128] = &[0x2001_0db8 << 96, (0x2001_0db8 << 96) | 1, 0, u128::MAX];
const PORTS: &[u16] = &[1, 22, 53, 80, 443, 1701, 65535];

fn piece(p: &Piece, out: &mut String) {
    match p {
        Piece::Word(i) => out.push_str(WORDS[usize::from(*i) % WORDS.len()]),
        // A line break would renumber the lines after it.
        Piece::Bytes(b) => out.push_str(&String::from_utf8_lossy(b).replace('\n', " ")),
    }
}

impl RuleLine {
    /// Whether the line is made of grammar pieces only, so that it must
    /// give a rule if the file loads (free text could turn it into a
    /// comment or a header).
    fn certain(&self) -> bool {
        !matches!(self.dest, DestPiece::Text(_))
            && !matches!(self.ports, Some(PortsPiece::Text(_)))
            && !matches!(
                self.action,
                ActionPiece::Text(_) | ActionPiece::SarefText(_) | ActionPiece::DevRaw(_)
            )
            && self.extra.is_none()
    }
}

fn mask4(a: u32, len: u8) -> u32 {
    a & u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

fn mask6(a: u128, len: u8) -> u128 {
    a & u128::MAX
        .checked_shl(128 - u32::from(len.min(128)))
        .unwrap_or(0)
}

/// The text, the lines that must hold a rule, and those that may.
fn render(lines: &[Line]) -> (String, Vec<u32>, Vec<u32>) {
    let mut text = String::new();
    let mut rule_lines = Vec::new();
    let mut maybe_lines = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match line {
            Line::Blank => {}
            Line::Comment => text.push_str("# a comment"),
            Line::Header(Name::Client(n)) => {
                let _ = write!(text, "[client{}]", n % 4);
            }
            Line::Header(Name::Long(n)) => {
                let _ = write!(text, "[{}]", "p".repeat(60 + usize::from(n % 8)));
            }
            Line::Header(Name::Bad(n)) => {
                let bad = ["[]", "[a b]", "[x", "[x] y", "[é]", "[ x ]"];
                text.push_str(bad[usize::from(*n) % bad.len()]);
            }
            Line::Junk(p) => {
                maybe_lines.push(u32::try_from(i + 1).unwrap_or(u32::MAX));
                piece(p, &mut text);
            }
            Line::Rule(r) => {
                let n = u32::try_from(i + 1).unwrap_or(u32::MAX);
                if r.certain() {
                    rule_lines.push(n);
                } else {
                    maybe_lines.push(n);
                }
                rule(r, &mut text);
                if r.crlf {
                    text.push('\r');
                }
            }
        }
        text.push('\n');
    }
    (text, rule_lines, maybe_lines)
}

fn rule(r: &RuleLine, out: &mut String) {
    let sep = match r.sep {
        Sep::Space => " ",
        Sep::Tabs => "\t\t",
        Sep::Mixed => " \t ",
    };
    match &r.dest {
        DestPiece::Any => out.push_str("any"),
        DestPiece::V4Pool { pick, len } => {
            let len = len % 33;
            let a = mask4(V4[usize::from(*pick) % V4.len()], len);
            let _ = write!(out, "{}/{len}", std::net::Ipv4Addr::from(a));
        }
        DestPiece::V6Pool { pick, len } => {
            let len = len % 129;
            let a = mask6(V6[usize::from(*pick) % V6.len()], len);
            let _ = write!(out, "{}/{len}", std::net::Ipv6Addr::from(a));
        }
        DestPiece::V4Raw { addr, len } => {
            let _ = write!(out, "{}/{}", std::net::Ipv4Addr::from(*addr), len % 40);
        }
        DestPiece::V6Raw { addr, len } => {
            let _ = write!(out, "{}/{len}", std::net::Ipv6Addr::from(*addr));
        }
        DestPiece::Mapped { addr, len } => {
            let a = std::net::Ipv4Addr::from(*addr).to_ipv6_mapped();
            let _ = write!(out, "{a}/{}", 96 + len % 33);
        }
        DestPiece::Text(p) => piece(p, out),
    }
    if let Some(p) = &r.proto {
        out.push_str(sep);
        out.push_str(match p {
            ProtoPiece::Tcp => "tcp",
            ProtoPiece::Udp => "udp",
            ProtoPiece::Any => "any",
            ProtoPiece::Upper => "UDP",
        });
    }
    if let Some(p) = &r.ports {
        out.push_str(sep);
        match p {
            PortsPiece::Pool(i) => {
                let _ = write!(out, "{}", PORTS[usize::from(*i) % PORTS.len()]);
            }
            PortsPiece::Range(a, b) => {
                let (a, b) = (
                    PORTS[usize::from(*a) % PORTS.len()],
                    PORTS[usize::from(*b) % PORTS.len()],
                );
                let _ = write!(out, "{a}-{b}");
            }
            PortsPiece::Raw(a, b) => {
                let _ = write!(out, "{a}-{b}");
            }
            PortsPiece::Text(p) => piece(p, out),
        }
    }
    out.push_str(sep);
    match &r.action {
        ActionPiece::Saref(n) => {
            let _ = write!(out, "saref {}", n % 40000);
        }
        ActionPiece::SarefText(p) => {
            out.push_str("saref ");
            piece(p, out);
        }
        ActionPiece::Mark(v) => {
            let _ = write!(out, "mark {v}");
        }
        ActionPiece::MarkMask(v, m) => {
            let _ = write!(out, "mark {v:#x}/{m:#x}");
        }
        ActionPiece::MarkHex(v) => {
            let _ = write!(out, "mark 0X{v:X}");
        }
        ActionPiece::Dev(n) => {
            let _ = write!(out, "dev ipsec{}", n % 4);
        }
        ActionPiece::DevRaw(b) => {
            out.push_str("dev ");
            out.push_str(&String::from_utf8_lossy(b));
        }
        ActionPiece::Reflect => out.push_str("reflect"),
        ActionPiece::Pass => out.push_str("pass"),
        ActionPiece::Deny => out.push_str("deny"),
        ActionPiece::Missing => {}
        ActionPiece::Text(p) => piece(p, out),
    }
    if let Some(p) = &r.extra {
        out.push_str(sep);
        piece(p, out);
    }
    if r.comment {
        out.push_str(" # why");
    }
}

fuzz_target!(|lines: Vec<Line>| {
    let (text, rule_lines, maybe_lines) = render(&lines);
    match RuleSet::parse(&text, "rules") {
        Ok(set) => {
            // Every rule line became exactly one rule, at its own line:
            // nothing dropped, nothing merged, nothing invented.
            let got: Vec<u32> = set.rules().map(|r| r.origin.line).collect();
            assert!(got.windows(2).all(|w| w[0] < w[1]), "{text:?}: {got:?}");
            for line in &rule_lines {
                assert!(got.contains(line), "rule line {line} dropped: {text:?}");
            }
            for line in &got {
                assert!(
                    rule_lines.contains(line) || maybe_lines.contains(line),
                    "a rule at line {line}, where none was written: {text:?}"
                );
            }
            check_set(&set, 20_000);
        }
        Err(e) => check_error(&e, &[("rules", text.as_bytes())]),
    }
});
