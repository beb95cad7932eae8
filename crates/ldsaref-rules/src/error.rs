//! The error of a rules file that does not load.

use std::fmt;

/// Why a rules file did not load, and where: `FILE:LINE:COL: message`.
///
/// `line` and `col` are 1-based; `col` counts characters (a tab counts 1)
/// and points at the token at fault, or just past the end of the line's
/// content when a token is missing.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ParseError {
    /// The file name as given to the parser.
    pub file: String,
    /// 1-based line number.
    pub line: u32,
    /// 1-based character column.
    pub col: u32,
    /// What is wrong, and when possible how to fix it.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.col, self.message
        )
    }
}

impl std::error::Error for ParseError {}

/// A token as error messages show it: at most [`Shown::MAX`] characters,
/// then `…`, so that a 100 MB token does not make a 100 MB log line.
/// `{:?}` quotes it like a string, `{}` does not.
pub(crate) struct Shown<'a>(&'a str);

impl Shown<'_> {
    pub(crate) const MAX: usize = 64;

    fn cut(&self) -> (&str, bool) {
        match self.0.char_indices().nth(Self::MAX) {
            Some((i, _)) => (&self.0[..i], true),
            None => (self.0, false),
        }
    }
}

/// See [`Shown`].
pub(crate) fn shown(s: &str) -> Shown<'_> {
    Shown(s)
}

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, cut) = self.cut();
        let q = format!("{s:?}");
        if cut {
            // Put the ellipsis inside the quotes.
            write!(f, "{}…\"", &q[..q.len() - 1])
        } else {
            f.write_str(&q)
        }
    }
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (s, cut) = self.cut();
        f.write_str(s)?;
        if cut {
            f.write_str("…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod shown_tests {
    use super::shown;

    #[test]
    fn long_tokens_are_cut() {
        assert_eq!(format!("{:?}", shown("abc")), "\"abc\"");
        let long = "x".repeat(1000);
        let s = format!("{:?}", shown(&long));
        assert_eq!(s, format!("\"{}…\"", "x".repeat(64)));
        assert_eq!(format!("{}", shown(&long)), format!("{}…", "x".repeat(64)));
    }
}
