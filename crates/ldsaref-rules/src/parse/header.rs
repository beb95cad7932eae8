//! Section headers: `[NAME]` starts the rules of profile NAME.

use super::lexer::{end_of, Tokens};
use super::Fault;
use crate::error::shown;

/// The longest profile name, in characters.
const MAX_PROFILE_NAME: usize = 64;

/// Parses a header line: `content` is the line's content (comment
/// removed), whose first token starts with the `[` at byte `bracket`.
/// Returns the name.
pub(crate) fn parse(content: &str, bracket: usize) -> Result<&str, Fault> {
    let name_at = bracket + 1;
    let after_bracket = content.get(name_at..).unwrap_or_default();
    // The name may not contain blanks, but `[a b]` must be reported as a bad
    // character rather than as a missing "]": search the whole line for "]".
    let Some(close) = after_bracket.find(']') else {
        return Err(Fault::new(end_of(content), "section header: missing \"]\""));
    };
    let name = &after_bracket[..close];
    if let Err((offset, message)) = check_profile_name(name) {
        return Err(Fault::new(
            name_at + offset,
            format!("section header: {message}"),
        ));
    }
    let after_close = name_at + close + 1;
    if let Some(extra) = Tokens::new(&after_bracket[close + 1..], after_close).next() {
        return Err(Fault::new(
            extra.at,
            format!(
                "section header: unexpected {:?} after \"]\"",
                shown(extra.text)
            ),
        ));
    }
    Ok(name)
}

/// Checks a profile name: 1 to 64 characters of `A-Z a-z 0-9 _ . -`.
/// On error, gives the byte offset of the fault in `name` and a message.
pub(crate) fn check_profile_name(name: &str) -> Result<(), (usize, String)> {
    if name.is_empty() {
        return Err((0, "empty profile name".to_owned()));
    }
    let bad = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
    if let Some((offset, c)) = bad {
        return Err((
            offset,
            format!(
                "invalid character {c:?} in profile name {:?} (allowed: A-Z a-z 0-9 _ . -)",
                shown(name)
            ),
        ));
    }
    // All ASCII from here on: bytes are characters.
    if name.len() > MAX_PROFILE_NAME {
        return Err((
            0,
            format!(
                "profile name is {} characters long (at most {MAX_PROFILE_NAME})",
                name.len()
            ),
        ));
    }
    Ok(())
}
