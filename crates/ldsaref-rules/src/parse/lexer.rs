//! Lines and tokens of a rules file.
//!
//! Positions are byte offsets into the line's content while parsing, and
//! only become character columns when an error is reported: counting
//! characters for every token would slow down loading large files for
//! nothing.

/// Lines of `text` numbered from 1, each without its line end (`\n` or
/// `\r\n`) and without its comment (`#` to the end of the line).
pub(crate) fn lines(text: &str) -> Lines<'_> {
    Lines {
        rest: Some(text),
        number: 0,
    }
}

/// See [`lines`].
pub(crate) struct Lines<'a> {
    /// `None` once the last line is given.
    rest: Option<&'a str>,
    number: u32,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (u32, &'a str);

    fn next(&mut self) -> Option<(u32, &'a str)> {
        let rest = self.rest?;
        // One pass for both the line end and the comment: lines are short,
        // and a search per character costs more than the scan itself.
        let mut end = rest.len();
        let mut hash = None;
        for (i, &b) in rest.as_bytes().iter().enumerate() {
            match b {
                b'\n' => {
                    end = i;
                    break;
                }
                b'#' if hash.is_none() => hash = Some(i),
                _ => {}
            }
        }
        // '\n' and '#' are ASCII: the offsets are character boundaries.
        self.rest = rest.get(end + 1..);
        let raw = &rest[..end];
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let content = hash.map_or(raw, |hash| &rest[..hash]);
        // Past 4 billion lines, numbers stick at the last one rather than wrap.
        self.number = self.number.saturating_add(1);
        Some((self.number, content))
    }
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
        let is_blank = |b: &u8| *b == b' ' || *b == b'\t';
        let bytes = self.rest.as_bytes();
        let start = bytes.iter().position(|b| !is_blank(b))?;
        let len = bytes[start..]
            .iter()
            .position(is_blank)
            .unwrap_or(bytes.len() - start);
        let text = self.rest.get(start..start + len)?;
        let token = Token {
            text,
            at: self.at + start,
        };
        self.at += start + len;
        self.rest = self.rest.get(start + len..).unwrap_or_default();
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
