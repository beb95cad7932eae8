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
