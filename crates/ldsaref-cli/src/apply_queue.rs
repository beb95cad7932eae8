//! Tickets for `ldsaref updown`'s background applies, so that a burst of
//! ups costs one or two applies, not one per call.
//!
//! An IKE daemon runs updown once per subnet pair and per connection, one
//! call after the other; each up starts `ldsaref apply --if-installed` in
//! the background, and those applies queue on the table's lock. Any of
//! them that starts reading the rules after the others' files were
//! written brings the table up to all of them, so the rest have nothing
//! left to do but cost a process, a listing and a transaction each (in an
//! emulated gateway, seconds in a row for the last tunnel of a burst).
//!
//! `/run/ldsaref/apply-DEV-INO.queue` (the network namespace's, next to
//! its lock) holds two numbers: the tickets handed out, and the highest
//! ticket the table is known to follow; and which rules it follows (an
//! apply of other rules in the same namespace replaced the table with
//! those: a ticket for these is then not followed). updown takes a ticket after it has
//! written its file and passes it to the background apply. An apply,
//! holding the table's lock, reads the tickets handed out *before* it reads
//! the rules; when it has installed them, every ticket up to that number is
//! followed (each was taken after its file was written, so that file was
//! read). An apply whose ticket is already followed stops there.
//!
//! Anything that goes wrong here (no /run, not root) only costs the
//! coalescing: an apply without a ticket, or that cannot read the file,
//! applies as before.

use std::io::{Read, Seek, Write};

/// The counters, in the order of the file, and the rules followed (the
/// index path of their location: one per location).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub handed_out: u64,
    pub followed: u64,
    pub rules: String,
}

impl Counters {
    /// Reads `"HANDED FOLLOWED RULES\n"`; anything else is a fresh start.
    pub fn parse(text: &str) -> Counters {
        let mut it = text.trim_end_matches('\n').splitn(3, ' ');
        let mut num = || it.next().and_then(|n| n.parse::<u64>().ok());
        match (num(), num()) {
            (Some(handed_out), Some(followed)) => Counters {
                handed_out,
                followed,
                rules: it.next().unwrap_or_default().to_owned(),
            },
            _ => Counters::default(),
        }
    }

    pub fn render(&self) -> String {
        format!("{} {} {}\n", self.handed_out, self.followed, self.rules)
    }

    /// Whether an apply of `rules` holding `ticket` has nothing left to do.
    pub fn covers(&self, ticket: u64, rules: &str) -> bool {
        ticket != 0 && ticket <= self.followed && rules == self.rules
    }
}

/// Runs `change` on the counters under the file's own lock (held for
/// microseconds, never while an apply works); the counters after it.
fn update(change: impl FnOnce(&mut Counters)) -> Option<Counters> {
    let mut f = crate::apply::namespace_file_locked("queue")
        .ok()
        .flatten()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    let mut c = Counters::parse(&text);
    let before = c.clone();
    change(&mut c);
    if c != before {
        f.rewind().ok()?;
        f.set_len(0).ok()?;
        f.write_all(c.render().as_bytes()).ok()?;
    }
    Some(c)
}

/// A new ticket (updown, once its file is written); `None` when the file
/// cannot be used.
pub fn take() -> Option<u64> {
    update(|c| c.handed_out += 1).map(|c| c.handed_out)
}

/// The counters as they are (an apply, holding the table's lock, before it
/// reads the rules).
pub fn read() -> Option<Counters> {
    update(|_| {})
}

/// Every ticket up to `handed_out` (read before the rules were) is
/// followed by the table now installed from `rules`.
pub fn followed(handed_out: u64, rules: &str) {
    update(|c| {
        if c.rules != rules {
            c.rules = rules.to_owned();
            c.followed = 0;
        }
        c.followed = c.followed.max(handed_out);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_round_trip_and_a_bad_file_is_a_fresh_start() {
        let c = Counters {
            handed_out: 7,
            followed: 5,
            rules: "/etc/ldsaref/my rules.index".into(),
        };
        assert_eq!(Counters::parse(&c.render()), c);
        assert_eq!(Counters::parse(""), Counters::default());
        assert_eq!(Counters::parse("7 x\n"), Counters::default());
    }

    #[test]
    fn a_ticket_is_covered_once_an_apply_read_the_rules_after_it() {
        let c = Counters {
            handed_out: 9,
            followed: 5,
            rules: "/r.index".into(),
        };
        assert!(c.covers(5, "/r.index"));
        assert!(
            !c.covers(6, "/r.index"),
            "taken after the last apply read its counters"
        );
        assert!(!c.covers(0, "/r.index"), "no ticket: always applies");
        assert!(
            !c.covers(5, "/other.index"),
            "the table follows other rules"
        );
    }
}
