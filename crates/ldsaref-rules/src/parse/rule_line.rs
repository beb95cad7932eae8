//! A rule line: `DESTINATION [PROTO] [PORT|LO-HI] ACTION [ARGS]`.

use super::lexer::{Token, Tokens};
use super::{action, fields, Cursor, Fault, RuleSpec};
use crate::error::shown;
use crate::{Action, ProtoMatch};

/// Said when the action is missing; lists the actions so that a reader of
/// the message alone knows what to write.
const MISSING_ACTION: &str =
    "missing action (saref N, mark N[/MASK], dev IFNAME, reflect, pass or deny)";

/// Parses a rule whose first token is `first`.
pub(crate) fn parse<'a>(first: Token<'a>, mut cursor: Cursor<'a>) -> Result<RuleSpec, Fault> {
    // Keywords start with a letter; most destinations do not.
    let maybe_keyword = first.text.starts_with(|c: char| c.is_ascii_lowercase());
    if maybe_keyword
        && (fields::proto(first.text).is_some_and(|p| p.is_specific())
            || action::is_keyword(first.text))
    {
        return Err(Fault::new(
            first.at,
            format!(
                "missing destination before {:?} (a rule starts with an address, a CIDR or any)",
                shown(first.text)
            ),
        ));
    }
    let dest = fields::dest(first)?;

    let mut tok = cursor.expect(MISSING_ACTION)?;
    let mut proto = None;
    if let Some(p) = fields::proto(tok.text) {
        proto = Some((p, tok));
        tok = cursor.expect(MISSING_ACTION)?;
    }
    let mut ports = None;
    if fields::looks_like_port(tok.text) {
        ports = Some(fields::ports(tok)?);
        tok = cursor.expect(MISSING_ACTION)?;
    }

    let Some(keyword) = action::keyword(tok.text) else {
        let seen = Seen {
            proto: proto.is_some(),
            ports: ports.is_some(),
        };
        return Err(not_an_action(tok, cursor.ahead(), seen));
    };
    let action = action::parse(keyword, &mut cursor)?;
    if let Some(extra) = cursor.next() {
        return Err(Fault::new(
            extra.at,
            format!("unexpected {:?} after the action", shown(extra.text)),
        ));
    }

    let proto = proto.map_or(ProtoMatch::Any, |(p, _)| p);
    if action == Action::Reflect && proto == ProtoMatch::Tcp {
        return Err(Fault::new(tok.at, "reflect applies to UDP only, not tcp"));
    }
    Ok(RuleSpec {
        dest,
        proto,
        ports,
        action,
        at: first.at,
    })
}

/// Whether the tokens left read as `[PORT] ACTION ...`: then the token
/// before them was meant as a protocol.
fn rest_is_ports_and_action(ahead: &mut Tokens<'_>) -> bool {
    match ahead.next() {
        Some(t) if fields::looks_like_port(t.text) => {
            ahead.next().is_some_and(|t| action::is_keyword(t.text))
        }
        Some(t) => action::is_keyword(t.text),
        None => false,
    }
}

/// Which optional fields came before the token in action position.
#[derive(Clone, Copy)]
struct Seen {
    proto: bool,
    ports: bool,
}

/// Explains a token found where the action should be. Most of the time it
/// is a misspelt action, but a misspelt protocol (`tpc 22 saref 5`) or
/// fields out of order land here too, and deserve their own message.
fn not_an_action(tok: Token<'_>, mut ahead: Tokens<'_>, seen: Seen) -> Fault {
    let text = tok.text;
    let q = shown(text);
    let lower = text.to_ascii_lowercase();
    let message = if fields::proto(text).is_some() {
        if seen.proto {
            format!("unexpected protocol {q:?}: a rule has at most one protocol")
        } else {
            format!("the protocol {q:?} must come before the port")
        }
    } else if fields::looks_like_port(text) {
        format!("unexpected port {q:?}: a rule has at most one port or range (LO-HI)")
    } else if fields::proto(&lower).is_some() {
        format!("unknown protocol {q:?} (keywords are lowercase: {lower})")
    } else if action::is_keyword(&lower) {
        format!("unknown action {q:?} (keywords are lowercase: {lower})")
    } else if !seen.proto && !seen.ports && rest_is_ports_and_action(&mut ahead) {
        format!("unknown protocol {q:?} (expected tcp, udp or any)")
    } else {
        format!("unknown action {q:?} (expected saref, mark, dev, reflect, pass or deny)")
    };
    Fault::new(tok.at, message)
}
