//! The action of a rule and its arguments.

use super::lexer::Token;
use super::{fields, Cursor, Fault};
use crate::error::shown;
use crate::{Action, IfName, Saref};

/// The action keywords, in the order messages list them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Keyword {
    Saref,
    Mark,
    Dev,
    Reflect,
    Pass,
    Deny,
}

pub(crate) fn keyword(word: &str) -> Option<Keyword> {
    Some(match word {
        "saref" => Keyword::Saref,
        "mark" => Keyword::Mark,
        "dev" => Keyword::Dev,
        "reflect" => Keyword::Reflect,
        "pass" => Keyword::Pass,
        "deny" => Keyword::Deny,
        _ => return None,
    })
}

pub(crate) fn is_keyword(word: &str) -> bool {
    keyword(word).is_some()
}

/// Parses the arguments of the action `keyword`, taking them from `cursor`.
pub(crate) fn parse(keyword: Keyword, cursor: &mut Cursor<'_>) -> Result<Action, Fault> {
    Ok(match keyword {
        Keyword::Saref => {
            let arg = cursor.expect("missing SAref after saref (a number in 1..32767)")?;
            let saref = arg
                .text
                .parse::<Saref>()
                .map_err(|message| Fault::new(arg.at, message))?;
            Action::Saref(saref)
        }
        Keyword::Mark => {
            let arg = cursor.expect("missing mark value after mark (mark N or mark N/MASK)")?;
            mark(arg)?
        }
        Keyword::Dev => {
            let arg = cursor.expect("missing interface name after dev (dev IFNAME)")?;
            let name = IfName::new(arg.text).map_err(|message| Fault::new(arg.at, message))?;
            Action::Dev(name)
        }
        Keyword::Reflect => Action::Reflect,
        Keyword::Pass => Action::Pass,
        Keyword::Deny => Action::Deny,
    })
}

/// `N` or `N/MASK`, each decimal or `0x` hex.
fn mark(arg: Token<'_>) -> Result<Action, Fault> {
    let (value, mask) = mark_text(arg.text).map_err(|message| Fault::new(arg.at, message))?;
    Ok(Action::Mark { value, mask })
}

/// The value and mask of a mark written `N` or `N/MASK` (each decimal or
/// `0x` hex; the mask is [`Action::FULL_MASK`] when not given): the
/// rules' `mark` action and `ldsaref run --cgroup --mark` read marks
/// with it, and so give the same messages.
pub(crate) fn mark_text(text: &str) -> Result<(u32, u32), String> {
    let (value_text, mask_text) = match text.split_once('/') {
        Some((value, mask)) => (value, Some(mask)),
        None => (text, None),
    };
    let number = |what: &str, text: &str| {
        let q = shown(text);
        fields::decimal_or_hex(text).map_err(|e| match e {
            fields::NumError::Invalid => {
                format!("invalid mark {what} {q:?} (expected a number, decimal or 0x hex)")
            }
            fields::NumError::TooBig => {
                format!("mark {what} {q} out of range (at most 0xffffffff)")
            }
        })
    };
    let value = number("value", value_text)?;
    let mask = match mask_text {
        Some(text) => number("mask", text)?,
        None => Action::FULL_MASK,
    };
    if mask == 0 {
        return Err("mark mask is 0: no bit of the mark would change".to_owned());
    }
    if value & !mask != 0 {
        return Err(format!(
            "mark value {value:#x} has bits outside its mask {mask:#x}"
        ));
    }
    Ok((value, mask))
}
