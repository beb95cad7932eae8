//! Lines and tokens of a rules file.
//!
//! Positions are byte offsets into the line's content while parsing, and
//! only become character columns when an error is reported: counting
//! characters for every token would slow down loading large files for
//! nothing.

/// Lines of `text` numbered from 1, each without its line end (`\n` or
/// `\r\n`) and without its comment (`#` to the end of the line). The
/// builder goes line by line with [`split_line`]; this is its reference.
#[cfg(test)]
pub(crate) fn lines(text: &str) -> Lines<'_> {
    Lines {
        rest: Some(text),
        number: 0,
    }
}

/// See [`lines`].
#[cfg(test)]
pub(crate) struct Lines<'a> {
    /// `None` once the last line is given.
    rest: Option<&'a str>,
    number: u32,
}

#[cfg(test)]
impl<'a> Iterator for Lines<'a> {
    type Item = (u32, &'a str);

    fn next(&mut self) -> Option<(u32, &'a str)> {
        let (content, rest) = split_line(self.rest?);
        self.rest = rest;
        // Past 4 billion lines, numbers stick at the last one rather than wrap.
        self.number = self.number.saturating_add(1);
        Some((self.number, content))
    }
}

/// The content of the first line of `rest`, without its line end (`\n` or
/// `\r\n`) and without its comment (`#` to the end of the line), and the
/// text after its line end; `None` when that line is the last one (the
/// text after a final `\n` is one more, empty, line).
pub(crate) fn split_line(rest: &str) -> (&str, Option<&str>) {
    let bytes = rest.as_bytes();
    // The first '\n' or '#', then, after a '#', the '\n': lines are
    // short, but a search per byte still costs more than the rest of
    // the parsing, so the search goes a word at a time.
    let (end, hash) = match find_newline_or_hash(bytes, 0) {
        None => (rest.len(), None),
        Some(i) if bytes[i] == b'\n' => (i, None),
        Some(hash) => {
            let end = rest
                .get(hash + 1..)
                .and_then(|after| after.find('\n'))
                .map_or(rest.len(), |i| hash + 1 + i);
            (end, Some(hash))
        }
    };
    // '\n' and '#' are ASCII: the offsets are character boundaries.
    let raw = &rest[..end];
    let raw = raw.strip_suffix('\r').unwrap_or(raw);
    let content = hash.map_or(raw, |hash| &rest[..hash]);
    (content, rest.get(end + 1..))
}

/// The offset of the first `\n` or `#` of `bytes[from..]`, in `bytes`.
fn find_newline_or_hash(bytes: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    const HASHES: u64 = u64::from_ne_bytes([b'#'; 8]);
    // The high bit of each zero byte of `x`, and maybe of bytes after the
    // first zero one (a borrow), never before: the lowest bit set marks
    // the first zero byte.
    let zeros = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut at = from;
    let mut chunks = bytes.get(from..)?.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        // Little-endian: the first byte is the lowest.
        let word = u64::from_le_bytes(word);
        let found = zeros(word ^ NEWLINES) | zeros(word ^ HASHES);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n' || b == b'#')
        .map(|i| at + i)
}

/// Field separators: spaces and tabs only.
pub(crate) fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The number of characters of `s`.
pub(crate) fn char_count(s: &str) -> u32 {
    u32::try_from(s.chars().count()).unwrap_or(u32::MAX)
}

/// The 1-based character column of byte offset `at` of `content`.
pub(crate) fn column(content: &str, at: usize) -> u32 {
    // `at` always falls on a character boundary; be lenient anyway.
    let before = content.get(..at).unwrap_or(content);
    char_count(before).saturating_add(1)
}

/// The byte offset just past the last token of a line's content: where a
/// missing token is reported.
pub(crate) fn end_of(content: &str) -> usize {
    content.trim_end_matches(is_blank).len()
}

/// A field of a line and the byte offset where it starts in the line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token<'a> {
    pub text: &'a str,
    pub at: usize,
}

/// The tokens of (part of) a line's content.
#[derive(Clone)]
pub(crate) struct Tokens<'a> {
    rest: &'a str,
    /// Offset in the line of the first byte of `rest`.
    at: usize,
}

impl<'a> Tokens<'a> {
    /// Tokens of `rest`, which starts at byte `at` of its line.
    pub(crate) fn new(rest: &'a str, at: usize) -> Tokens<'a> {
        Tokens { rest, at }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        // Blanks are ASCII, so scanning bytes finds them without decoding
        // characters, and the offsets found are character boundaries.
        // Most bytes are above ' ': one comparison tells they are not blank.
        let is_blank = |b: u8| b <= b' ' && (b == b' ' || b == b'\t');
        let bytes = self.rest.as_bytes();
        let mut start = 0;
        while start < bytes.len() && is_blank(bytes[start]) {
            start += 1;
        }
        if start == bytes.len() {
            return None;
        }
        let mut end = start + 1;
        while end < bytes.len() && !is_blank(bytes[end]) {
            end += 1;
        }
        let text = self.rest.get(start..end)?;
        let token = Token {
            text,
            at: self.at + start,
        };
        self.at += end;
        self.rest = self.rest.get(end..).unwrap_or_default();
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_comments() {
        let text = "a b # c\r\n\n  # only\r\nd#e\nlast";
        let got: Vec<_> = lines(text).collect();
        assert_eq!(
            got,
            vec![(1, "a b "), (2, ""), (3, "  "), (4, "d"), (5, "last")]
        );
        let text = "long line with a comment # here # and there\r\n1.2.3.4/32 pass\r\n#\n\r\n\r\rx\r\n# last";
        let got: Vec<_> = lines(text).collect();
        assert_eq!(
            got,
            vec![
                (1, "long line with a comment "),
                (2, "1.2.3.4/32 pass"),
                (3, ""),
                (4, ""),
                (5, "\r\rx"),
                (6, "")
            ]
        );
        assert_eq!(lines("").collect::<Vec<_>>(), vec![(1, "")]);
        assert_eq!(lines("a\n").collect::<Vec<_>>(), vec![(1, "a"), (2, "")]);
    }

    /// Lines as they were split one byte at a time, for comparison.
    fn lines_naive(text: &str) -> Vec<(u32, &str)> {
        let mut out = Vec::new();
        let mut rest = Some(text);
        let mut number = 0;
        while let Some(r) = rest {
            let mut end = r.len();
            let mut hash = None;
            for (i, &b) in r.as_bytes().iter().enumerate() {
                match b {
                    b'\n' => {
                        end = i;
                        break;
                    }
                    b'#' if hash.is_none() => hash = Some(i),
                    _ => {}
                }
            }
            rest = r.get(end + 1..);
            let raw = &r[..end];
            let raw = raw.strip_suffix('\r').unwrap_or(raw);
            number += 1;
            out.push((number, hash.map_or(raw, |hash| &r[..hash])));
        }
        out
    }

    #[test]
    fn lines_split_like_a_byte_by_byte_scan() {
        let mut rng = crate::test_rng::Rng(0x1234_5678_9abc_def1);
        let pieces = [
            "\n",
            "#",
            "\r",
            "\r\n",
            " ",
            "\t",
            "ab",
            "1.2.3.4/32",
            "é",
            "saref 5",
        ];
        for _ in 0..20_000 {
            let text = rng.text(&pieces, 24);
            assert_eq!(
                lines(&text).collect::<Vec<_>>(),
                lines_naive(&text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn finds_newlines_and_hashes_like_a_plain_search() {
        let plain = |b: &[u8], from: usize| {
            b[from..]
                .iter()
                .position(|&c| c == b'\n' || c == b'#')
                .map(|i| from + i)
        };
        // Every position of a needle, in texts of every length around the
        // word size, with bytes that differ from the needles by one bit
        // and bytes with the high bit set (a borrow must not fake a match).
        let fillers = [b'a', b'\x0b', b'\x22', b'\x8a', b'\xa3', b'\x00', b'\xff'];
        for len in 0..40 {
            for filler in fillers {
                for needle_at in 0..=len {
                    for needle in [b'\n', b'#'] {
                        let mut text = vec![filler; len];
                        if needle_at < len {
                            text[needle_at] = needle;
                        }
                        if len > 2 && needle_at + 2 < len {
                            text[needle_at + 2] = b'\n';
                        }
                        for from in 0..=len.min(9) {
                            assert_eq!(
                                find_newline_or_hash(&text, from),
                                plain(&text, from),
                                "{text:?} from {from}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn columns_count_characters() {
        let line = "\tévé  x\t y \t";
        let cols: Vec<_> = Tokens::new(line, 0)
            .map(|t| (t.text, column(line, t.at)))
            .collect();
        assert_eq!(cols, vec![("évé", 2), ("x", 7), ("y", 10)]);
        assert_eq!(column(line, end_of(line)), 11);
        assert_eq!(column("", end_of("")), 1);
        assert_eq!(column("   ", end_of("   ")), 1);
    }
}
