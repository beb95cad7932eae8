//! Loading rules files into a [`RuleSet`]: sections, origins, the
//! all-or-nothing rule, and the order in which errors are reported.

use crate::index::Index;
use crate::parse::{self, Fault, Item, RuleSpec};
use crate::placement;
use crate::profiles::Profiles;
use crate::ties::{self, Tie};
use crate::{Origin, ParseError, ProfileId, Rule, RuleSet};

/// The most rules one set may hold: far more than memory allows anyway,
/// and low enough that internal `u32` indices (an `any` rule counts twice)
/// never reach their "none" value.
const MAX_RULES: usize = 1 << 28;

const BOM: char = '\u{feff}';

/// Builds a [`RuleSet`] from one or several sources (the files of a rules
/// directory, say), which form one set: profile sections of the same name
/// merge across sources, and rules tie across sources too.
///
/// Each source starts with global rules, whatever section the previous
/// source ended in. A source that fails to load leaves the builder as it
/// was before it.
///
/// Errors are reported in load order: the first error a reader going down
/// the sources would meet. Ties are only fully checked by
/// [`build`](Self::build), but when a source has a syntax error, a tie
/// among the rules before it is reported instead, since it comes first.
#[derive(Clone, Debug, Default)]
pub struct RuleSetBuilder {
    rules: Vec<Rule>,
    /// Column of each rule's destination, where errors about a whole rule
    /// point.
    cols: Vec<u32>,
    files: Vec<String>,
    profiles: Profiles,
}

/// The number of `\n` in `bytes`, counted in blocks small enough for a
/// byte counter, which the compiler turns into vector code.
fn count_newlines(bytes: &[u8]) -> usize {
    bytes
        .chunks(255)
        .map(|block| {
            let n: u8 = block.iter().map(|&b| u8::from(b == b'\n')).sum();
            usize::from(n)
        })
        .sum()
}

/// The builder's size before a source, to undo a source that fails.
#[derive(Clone, Copy)]
struct Checkpoint {
    rules: usize,
    files: usize,
    profiles: usize,
}

impl RuleSetBuilder {
    /// An empty builder; same as [`RuleSet::builder`].
    pub fn new() -> RuleSetBuilder {
        RuleSetBuilder::default()
    }

    /// Adds the rules of `text`, read from `file` (the name errors and
    /// [`RuleSet::file_name`] give). A leading byte-order mark is ignored.
    pub fn add_source(&mut self, text: &str, file: &str) -> Result<(), ParseError> {
        let text = text.strip_prefix(BOM).unwrap_or(text);
        self.load(text, file, None)
    }

    /// Like [`add_source`](Self::add_source) for raw bytes, which must be
    /// UTF-8: invalid UTF-8 is an error at its line and column (unless an
    /// earlier line has an error of its own).
    pub fn add_bytes(&mut self, bytes: &[u8], file: &str) -> Result<(), ParseError> {
        let mut bom = [0; 3];
        let bom = BOM.encode_utf8(&mut bom).as_bytes();
        let bytes = bytes.strip_prefix(bom).unwrap_or(bytes);
        let invalid = match std::str::from_utf8(bytes) {
            Ok(text) => return self.load(text, file, None),
            Err(e) => e,
        };
        // Parse the lines before the bad one, so that an error there is
        // still reported first.
        let valid = bytes.get(..invalid.valid_up_to()).unwrap_or_default();
        let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let before = std::str::from_utf8(&valid[..line_start]).unwrap_or_default();
        let on_line = std::str::from_utf8(&valid[line_start..]).unwrap_or_default();
        let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
        let error = ParseError {
            file: file.to_owned(),
            line: u32::try_from(line).unwrap_or(u32::MAX),
            col: parse::char_count(on_line).saturating_add(1),
            message: "invalid UTF-8 (a rules file must be UTF-8 text)".to_owned(),
        };
        self.load(before, file, Some(error))
    }

    /// Checks the rules as a whole (ties) and builds the set.
    pub fn build(self) -> Result<RuleSet, ParseError> {
        let placed = placement::place(&self.rules);
        if let Some(tie) = ties::first_tie(&placed) {
            return Err(self.tie_error(tie));
        }
        let RuleSetBuilder {
            mut rules,
            files,
            profiles,
            ..
        } = self;
        let index = Index::build(&rules, &placed, profiles.len() + 1);
        drop(placed);
        // Lines without rules left some spare room; give it back unless it
        // is small, since shrinking copies every rule.
        if rules.capacity() - rules.len() > rules.len() / 8 {
            rules.shrink_to_fit();
        }
        Ok(RuleSet::new(rules, files, profiles, index))
    }

    /// Loads `text` as a whole, or not at all. `then` is an error that
    /// follows the text (invalid UTF-8 past it).
    fn load(&mut self, text: &str, file: &str, then: Option<ParseError>) -> Result<(), ParseError> {
        let checkpoint = Checkpoint {
            rules: self.rules.len(),
            files: self.files.len(),
            profiles: self.profiles.len(),
        };
        let result = self
            .read(text, file)
            .and_then(|()| then.map_or(Ok(()), Err));
        if let Err(error) = result {
            // All the rules read so far come before `error`: a tie among
            // them is the first error.
            let placed = placement::place(&self.rules);
            let error = ties::first_tie(&placed).map_or(error, |tie| self.tie_error(tie));
            self.rules.truncate(checkpoint.rules);
            self.cols.truncate(checkpoint.rules);
            self.files.truncate(checkpoint.files);
            self.profiles.truncate(checkpoint.profiles);
            return Err(error);
        }
        Ok(())
    }

    /// Reads the rules of `text` into the builder, up to the first error.
    fn read(&mut self, text: &str, file: &str) -> Result<(), ParseError> {
        let file_index = self.files.len();
        self.files.push(file.to_owned());
        // At most one rule a line: reserving once spares the copies of a
        // growing vector, which matter for files of 100k rules.
        let lines = count_newlines(text.as_bytes()) + 1;
        self.rules.reserve(lines);
        self.cols.reserve(lines);
        let mut profile = None;
        let mut rest = text;
        let mut line = 0u32;
        loop {
            // Past 4 billion lines, numbers stick at the last one rather than wrap.
            line = line.saturating_add(1);
            let (content, next) = parse::split_line(rest);
            let locate = |fault: Fault| ParseError {
                file: file.to_owned(),
                line,
                col: parse::column(content, fault.at),
                message: fault.message,
            };
            match parse::parse_line(content).map_err(locate)? {
                None => {}
                Some(Item::Header(name)) => profile = Some(self.profiles.intern(name)),
                Some(Item::Rule(spec)) => {
                    if self.rules.len() >= MAX_RULES {
                        let message = format!("too many rules (at most {MAX_RULES})");
                        return Err(locate(Fault::new(spec.at, message)));
                    }
                    let col = parse::column(content, spec.at);
                    self.push(spec, file_index, line, profile, col);
                }
            }
            match next {
                Some(next) => rest = next,
                None => break,
            }
        }
        Ok(())
    }

    /// Adds a rule read from line `line` of file `file`, in section `profile`.
    fn push(
        &mut self,
        spec: RuleSpec,
        file: usize,
        line: u32,
        profile: Option<ProfileId>,
        col: u32,
    ) {
        self.rules.push(Rule {
            dest: spec.dest,
            proto: spec.proto,
            ports: spec.ports,
            action: spec.action,
            origin: Origin {
                file: u32::try_from(file).unwrap_or(u32::MAX),
                line,
            },
            profile,
        });
        self.cols.push(col);
    }

    /// The error for a tie, at the later rule, naming the earlier one.
    fn tie_error(&self, tie: Tie) -> ParseError {
        let origin = |rule: u32| {
            self.rules
                .get(rule as usize)
                .map_or(Origin { file: 0, line: 0 }, |r| r.origin)
        };
        let file = |origin: Origin| {
            self.files
                .get(origin.file as usize)
                .map_or("", String::as_str)
        };
        let (later, earlier) = (origin(tie.later), origin(tie.earlier));
        ParseError {
            file: file(later).to_owned(),
            line: later.line,
            col: self.cols.get(tie.later as usize).copied().unwrap_or(1),
            message: format!(
                "rule ties with {}:{} (same destination, port and proto): only one can apply",
                file(earlier),
                earlier.line
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_newlines() {
        assert_eq!(count_newlines(b""), 0);
        assert_eq!(count_newlines(b"\n"), 1);
        let text: Vec<u8> = (0..100_000u32)
            .map(|i| {
                if i % 7 == 0 || i % 256 == 255 {
                    b'\n'
                } else {
                    b'x'
                }
            })
            .collect();
        let want = text.iter().filter(|&&b| b == b'\n').count();
        assert_eq!(count_newlines(&text), want);
        assert_eq!(count_newlines(&vec![b'\n'; 1000]), 1000);
    }

    /// The rules (with their columns) of `text` read line by line with the
    /// general parser only (the builder reads the whole text in one loop;
    /// it had a second, one-pass reader for rule lines until the compiled
    /// index took parsing off the per-process path).
    fn read_by_lines(text: &str) -> Result<Vec<(Rule, u32)>, ParseError> {
        let mut b = RuleSetBuilder::new();
        b.files.push("f".to_owned());
        let mut out = Vec::new();
        let mut profile = None;
        for (line, content) in parse::lines(text) {
            let locate = |fault: Fault| ParseError {
                file: "f".to_owned(),
                line,
                col: parse::column(content, fault.at),
                message: fault.message,
            };
            match parse::parse_line(content).map_err(locate)? {
                None => {}
                Some(Item::Header(name)) => profile = Some(b.profiles.intern(name)),
                Some(Item::Rule(spec)) => {
                    let col = parse::column(content, spec.at);
                    b.push(spec, 0, line, profile, col);
                    out.push((b.rules[b.rules.len() - 1], col));
                }
            }
        }
        Ok(out)
    }

    fn read_fast(text: &str) -> Result<Vec<(Rule, u32)>, ParseError> {
        let mut b = RuleSetBuilder::new();
        b.read(text, "f")?;
        Ok(b.rules
            .iter()
            .copied()
            .zip(b.cols.iter().copied())
            .collect())
    }

    #[test]
    fn reads_like_the_general_parser_line_by_line() {
        let mut rng = crate::test_rng::Rng(0x5555_aaaa_1234_9876);
        let pieces = [
            "\n",
            "\r\n",
            "\r",
            "#",
            " # c\n",
            " ",
            "\t",
            "10.0.0.0/8 saref 5",
            "10.1.0.0/16 tcp 22 mark 0x1/0x1",
            "any udp 500-4500 reflect",
            "2001:db8::/32 pass",
            "::ffff:1.2.3.4 deny",
            "1.2.3.4/8 pass",
            "[prof]",
            "[bad name]",
            "é",
            "dev eth0",
            "saref 7",
            "10.2.0.0/16",
            "deny",
        ];
        for _ in 0..20_000 {
            let text = rng.text(&pieces, 12);
            assert_eq!(read_fast(&text), read_by_lines(&text), "{text:?}");
        }
        let text = "  10.0.0.0/8 saref 5\n\n[p]\n\t2001:db8::/32 tcp 1-2 pass # c\r\n";
        let got = read_fast(text).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got, read_by_lines(text).unwrap());
        assert_eq!((got[1].0.origin.line, got[1].1), (4, 2));
        assert!(got[1].0.profile.is_some());
    }
}
