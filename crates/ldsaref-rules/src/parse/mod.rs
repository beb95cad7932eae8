//! The syntax of one line of a rules file.
//!
//! A line is parsed on its own: what spans lines (which section a rule is
//! in, rules that tie) is the builder's business.

mod action;
mod fields;
mod header;
mod lexer;
mod rule_line;

use crate::{Action, Dest, PortRange, ProtoMatch};
use lexer::{Token, Tokens};

pub(crate) use action::mark_text;
pub(crate) use header::check_profile_name;
#[cfg(test)]
pub(crate) use lexer::lines;
pub(crate) use lexer::{char_count, column, split_line};

/// What a line says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Item<'a> {
    /// `[NAME]`: the rules that follow belong to profile NAME.
    Header(&'a str),
    /// A rule.
    Rule(RuleSpec),
}

/// A rule as one line gives it, before it is placed in a section.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RuleSpec {
    pub dest: Dest,
    pub proto: ProtoMatch,
    pub ports: Option<PortRange>,
    pub action: Action,
    /// Byte offset of the destination in the line, where errors about the
    /// whole rule point.
    pub at: usize,
}

/// A syntax error on a line: the byte offset at fault in the line (see
/// [`column()`]) and the message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fault {
    pub at: usize,
    pub message: String,
}

impl Fault {
    pub(crate) fn new(at: usize, message: impl Into<String>) -> Fault {
        Fault {
            at,
            message: message.into(),
        }
    }
}

/// Parses the content of a line (as given by [`split_line`]); `None` for a
/// blank line.
pub(crate) fn parse_line(content: &str) -> Result<Option<Item<'_>>, Fault> {
    let mut cursor = Cursor::new(content);
    let Some(first) = cursor.next() else {
        return Ok(None);
    };
    if first.text.starts_with('[') {
        let name = header::parse(content, first.at)?;
        return Ok(Some(Item::Header(name)));
    }
    rule_line::parse(first, cursor).map(|rule| Some(Item::Rule(rule)))
}

/// The tokens of a line, with what is needed to report a missing one.
pub(crate) struct Cursor<'a> {
    tokens: Tokens<'a>,
    content: &'a str,
}

impl<'a> Cursor<'a> {
    fn new(content: &'a str) -> Cursor<'a> {
        Cursor {
            tokens: Tokens::new(content, 0),
            content,
        }
    }

    fn next(&mut self) -> Option<Token<'a>> {
        self.tokens.next()
    }

    /// The tokens after the current one, without consuming them.
    fn ahead(&self) -> Tokens<'a> {
        self.tokens.clone()
    }

    /// The next token, or a fault at the end of the line saying `missing`.
    fn expect(&mut self, missing: &str) -> Result<Token<'a>, Fault> {
        let content = self.content;
        self.next()
            .ok_or_else(|| Fault::new(lexer::end_of(content), missing))
    }
}
