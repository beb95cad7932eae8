//! A rule line: `DESTINATION [PROTO] [PORT|LO-HI] ACTION [ARGS]`.

use super::lexer::Token;
use super::{action, fields, Cursor, Fault, RuleSpec};
use crate::{Action, ProtoMatch};

/// Said when the action is missing; lists the actions so that a reader of
/// the message alone knows what to write.
const MISSING_ACTION: &str =
    "missing action (saref N, mark N[/MASK], dev IFNAME, reflect, pass or deny)";

/// Parses a rule whose first token is `first`.
pub(crate) fn parse<'a>(first: Token<'a>, mut cursor: Cursor<'a>) -> Result<RuleSpec, Fault> {
    if fields::proto(first.text).is_some_and(|p| p.is_specific()) || action::is_keyword(first.text)
    {
        return Err(Fault::new(
            first.at,
            format!(
                "missing destination before {:?} (a rule starts with an address, a CIDR or any)",
                first.text
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
        return Err(not_an_action(tok, cursor.peek(), seen));
    };
    let action = action::parse(keyword, &mut cursor)?;
    if let Some(extra) = cursor.next() {
        return Err(Fault::new(
            extra.at,
            format!("unexpected {:?} after the action", extra.text),
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

/// Which optional fields came before the token in action position.
#[derive(Clone, Copy)]
struct Seen {
    proto: bool,
    ports: bool,
}

/// Explains a token found where the action should be. Most of the time it
/// is a misspelt action, but a misspelt protocol (`tpc 22 saref 5`) or
/// fields out of order land here too, and deserve their own message.
fn not_an_action(tok: Token<'_>, next: Option<Token<'_>>, seen: Seen) -> Fault {
    let text = tok.text;
    let lower = text.to_ascii_lowercase();
    let message = if fields::proto(text).is_some() {
        if seen.proto {
            format!("unexpected protocol {text:?}: a rule has at most one protocol")
        } else {
            format!("the protocol {text:?} must come before the port")
        }
    } else if fields::looks_like_port(text) {
        format!("unexpected port {text:?}: a rule has at most one port or range (LO-HI)")
    } else if fields::proto(&lower).is_some() {
        format!("unknown protocol {text:?} (keywords are lowercase: {lower})")
    } else if action::is_keyword(&lower) {
        format!("unknown action {text:?} (keywords are lowercase: {lower})")
    } else if !seen.proto
        && !seen.ports
        && next.is_some_and(|n| fields::looks_like_port(n.text) || action::is_keyword(n.text))
    {
        format!("unknown protocol {text:?} (expected tcp, udp or any)")
    } else {
        format!("unknown action {text:?} (expected saref, mark, dev, reflect, pass or deny)")
    };
    Fault::new(tok.at, message)
}
