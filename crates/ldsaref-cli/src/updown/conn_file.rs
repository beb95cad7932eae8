//! The rules file of one connection: what its SAs carry, one entry per
//! subnet pair (charon and pluto call updown once per pair, with the same
//! connection name), and the rules those entries give. Pure: text in,
//! text out.
//!
//! ```text
//! # ldsaref updown: connection "net" (charon: up-client); kept by ldsaref updown, do not edit
//! # entry: 203.0.113.1/32 198.18.0.0/24 0 0 up=1 routed=0 mark 0x80650000
//! # entry: 203.0.113.1/32 198.19.0.0/24 0 0 up=0 routed=0 mark 0x80650000
//! [net]
//! 198.18.0.0/24 mark 0x80650000
//! 198.19.0.0/24 deny
//! ```
//!
//! An entry counts the SAs that are up for its subnet pair (a daemon that
//! makes the new SA before it breaks the old one calls up, then down) and
//! whether the daemon's policy is routed (a trap: traffic waits for the
//! SA, never leaves in the clear). An entry with neither is down: its
//! network is denied while other entries of the connection live, so the
//! connection's traffic never falls through to other rules.

use super::call::{Kind, Selector};

/// One subnet pair of the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub sel: Selector,
    /// SAs up.
    pub up: u32,
    /// Routed (`route-client` without `unroute-client` since).
    pub routed: bool,
    /// The rule's action, as the last up or route call named it.
    pub action: String,
}

impl Entry {
    fn live(&self) -> bool {
        self.up > 0 || self.routed
    }

    fn same_pair(&self, sel: &Selector) -> bool {
        self.sel == *sel
    }
}

/// The connection's entries, in the order they first came.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnFile {
    pub entries: Vec<Entry>,
}

/// What the connection's traffic gets once every SA of it is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenDown {
    /// No rules and no section: the profile is gone.
    Remove,
    /// `NETWORK deny` for each network.
    Deny,
    /// The section without rules.
    Empty,
}

const ENTRY: &str = "# entry: ";
const HEADER: &str = "# ldsaref updown: connection ";

impl ConnFile {
    /// Reads the entries of a file this module wrote. A file of an earlier
    /// version (no entries) reads as none: the next call rewrites it.
    pub fn parse(text: &str) -> Result<ConnFile, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let Some(rest) = line.strip_prefix(ENTRY) else {
                continue;
            };
            let bad = || {
                format!(
                    "line {}: not an entry ldsaref updown wrote: {line:?}",
                    n + 1
                )
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() < 7 {
                return Err(bad());
            }
            let up = f[4]
                .strip_prefix("up=")
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad)?;
            let routed = match f[5] {
                "routed=0" => false,
                "routed=1" => true,
                _ => return Err(bad()),
            };
            entries.push(Entry {
                sel: Selector {
                    mine: f[0].to_owned(),
                    peer: f[1].to_owned(),
                    proto: f[2].parse().map_err(|_| bad())?,
                    port: f[3].parse().map_err(|_| bad())?,
                },
                up,
                routed,
                action: f[6..].join(" "),
            });
        }
        Ok(ConnFile { entries })
    }

    /// Records a call. `action` is needed for up and route (the caller
    /// has it); `sel` is `None` for a down call that names no subnet
    /// pair, which takes every entry down.
    pub fn apply(&mut self, kind: Kind, sel: Option<&Selector>, action: Option<&str>) {
        let pos = sel.and_then(|s| self.entries.iter().position(|e| e.same_pair(s)));
        match (kind, sel) {
            (Kind::Up | Kind::Route, Some(sel)) => {
                let i = pos.unwrap_or_else(|| {
                    self.entries.push(Entry {
                        sel: sel.clone(),
                        up: 0,
                        routed: false,
                        action: String::new(),
                    });
                    self.entries.len() - 1
                });
                let e = &mut self.entries[i];
                if let Some(a) = action {
                    e.action = a.to_owned();
                }
                match kind {
                    Kind::Up => e.up = e.up.saturating_add(1),
                    _ => e.routed = true,
                }
            }
            (Kind::Down, Some(_)) => {
                if let Some(i) = pos {
                    let e = &mut self.entries[i];
                    e.up = e.up.saturating_sub(1);
                }
            }
            (Kind::Unroute, Some(_)) => {
                if let Some(i) = pos {
                    self.entries[i].routed = false;
                    // The daemon unroutes after its last down: whatever
                    // count is left was a down it never sent.
                    self.entries[i].up = 0;
                }
            }
            (Kind::Down | Kind::Unroute, None) => {
                for e in &mut self.entries {
                    e.up = 0;
                    e.routed = false;
                }
            }
            _ => {}
        }
    }

    /// Whether any SA or routed policy of the connection is left.
    pub fn live(&self) -> bool {
        self.entries.iter().any(Entry::live)
    }

    /// The rule lines: one per remote network, protocol and port. A live
    /// entry's action wins (the last one written, should two disagree);
    /// a network with no live entry is denied, or with [`WhenDown::Empty`]
    /// left to the global rules.
    pub fn rules(&self, when_down: WhenDown) -> Vec<String> {
        let mut out: Vec<(String, Option<String>)> = Vec::new();
        for e in &self.entries {
            let key = e.sel.rule_prefix();
            let slot = match out.iter().position(|(k, _)| *k == key) {
                Some(i) => i,
                None => {
                    out.push((key, None));
                    out.len() - 1
                }
            };
            if e.live() {
                out[slot].1 = Some(e.action.clone());
            }
        }
        out.into_iter()
            .filter_map(|(key, action)| match (action, when_down) {
                (Some(a), _) => Some(format!("{key} {a}")),
                (None, WhenDown::Empty) => None,
                (None, _) => Some(format!("{key} deny")),
            })
            .collect()
    }

    /// The whole file, or `None` when it is to be removed.
    pub fn render(
        &self,
        conn: &str,
        daemon: &str,
        verb: &str,
        section: Option<&str>,
        when_down: WhenDown,
    ) -> Option<String> {
        if !self.live() && when_down == WhenDown::Remove {
            return None;
        }
        let mut s =
            format!("{HEADER}{conn:?} ({daemon}: {verb}); kept by ldsaref updown, do not edit\n");
        for e in &self.entries {
            s.push_str(&format!(
                "{ENTRY}{} {} {} {} up={} routed={} {}\n",
                e.sel.mine,
                e.sel.peer,
                e.sel.proto,
                e.sel.port,
                e.up,
                u8::from(e.routed),
                e.action
            ));
        }
        if let Some(name) = section {
            s.push_str(&format!("[{name}]\n"));
        }
        let rules = self.rules(when_down);
        if rules.is_empty() {
            s.push_str("# connection down: no rules\n");
        }
        for r in rules {
            s.push_str(&r);
            s.push('\n');
        }
        Some(s)
    }
}

/// The connection an existing file was written for, as its first line
/// quotes it (`{:?}`).
pub fn owner(text: &str) -> Option<&str> {
    let rest = text.lines().next()?.strip_prefix(HEADER)?;
    rest.rsplit_once(" (").map(|(quoted, _)| quoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(peer: &str) -> Selector {
        Selector {
            mine: "203.0.113.1/32".into(),
            peer: peer.into(),
            proto: 0,
            port: 0,
        }
    }

    fn file_after(calls: &[(Kind, &str)]) -> ConnFile {
        let mut f = ConnFile::default();
        for (kind, peer) in calls {
            f.apply(*kind, Some(&sel(peer)), Some("mark 0x1"));
        }
        f
    }

    #[test]
    fn several_subnets_survive_each_other() {
        let a = "198.18.0.0/24";
        let b = "198.19.0.0/24";
        let f = file_after(&[(Kind::Up, a), (Kind::Up, b)]);
        assert_eq!(
            f.rules(WhenDown::Remove),
            ["198.18.0.0/24 mark 0x1", "198.19.0.0/24 mark 0x1"]
        );
        // One subnet down: its network is denied, the other still steered.
        let f = file_after(&[(Kind::Up, a), (Kind::Up, b), (Kind::Down, a)]);
        assert_eq!(
            f.rules(WhenDown::Remove),
            ["198.18.0.0/24 deny", "198.19.0.0/24 mark 0x1"]
        );
        assert!(f.live());
        assert!(f
            .render(
                "net",
                "charon",
                "down-client",
                Some("net"),
                WhenDown::Remove
            )
            .is_some());
        // Both down: with remove, the file goes; with deny, both denied.
        let f = file_after(&[
            (Kind::Up, a),
            (Kind::Up, b),
            (Kind::Down, a),
            (Kind::Down, b),
        ]);
        assert!(!f.live());
        assert_eq!(
            f.render(
                "net",
                "charon",
                "down-client",
                Some("net"),
                WhenDown::Remove
            ),
            None
        );
        assert_eq!(
            f.rules(WhenDown::Deny),
            ["198.18.0.0/24 deny", "198.19.0.0/24 deny"]
        );
        assert!(f.rules(WhenDown::Empty).is_empty());
    }

    #[test]
    fn make_before_break_keeps_the_rule() {
        let a = "198.18.0.0/24";
        // New SA up, then the old one down (reauthentication).
        let f = file_after(&[(Kind::Up, a), (Kind::Up, a), (Kind::Down, a)]);
        assert_eq!(f.rules(WhenDown::Remove), ["198.18.0.0/24 mark 0x1"]);
        // Break before make: a gap, then up again.
        let f = file_after(&[(Kind::Up, a), (Kind::Down, a), (Kind::Up, a)]);
        assert_eq!(f.rules(WhenDown::Remove), ["198.18.0.0/24 mark 0x1"]);
        // More downs than ups never go below zero.
        let f = file_after(&[(Kind::Down, a), (Kind::Up, a)]);
        assert_eq!(f.entries[0].up, 1);
    }

    #[test]
    fn a_routed_policy_keeps_the_rule_until_unrouted() {
        let a = "198.18.0.0/24";
        // libreswan: up, route; terminate: down only (the trap stays).
        let f = file_after(&[(Kind::Up, a), (Kind::Route, a), (Kind::Down, a)]);
        assert_eq!(f.rules(WhenDown::Remove), ["198.18.0.0/24 mark 0x1"]);
        // Shutdown: down and unroute.
        let f = file_after(&[
            (Kind::Up, a),
            (Kind::Route, a),
            (Kind::Down, a),
            (Kind::Unroute, a),
        ]);
        assert!(!f.live());
        // An unroute clears an up count a missed down left behind.
        let f = file_after(&[
            (Kind::Up, a),
            (Kind::Up, a),
            (Kind::Route, a),
            (Kind::Down, a),
            (Kind::Unroute, a),
        ]);
        assert!(!f.live());
    }

    #[test]
    fn a_down_that_names_no_pair_takes_every_entry_down() {
        let mut f = file_after(&[(Kind::Up, "198.18.0.0/24"), (Kind::Up, "198.19.0.0/24")]);
        f.apply(Kind::Down, None, None);
        assert!(!f.live());
    }

    #[test]
    fn a_live_rule_and_a_dead_one_for_the_same_network_do_not_tie() {
        // Two local subnets to one remote network: one pair down leaves
        // the network steered by the other.
        let mut f = ConnFile::default();
        let mut s2 = sel("198.18.0.0/24");
        s2.mine = "203.0.113.2/32".into();
        f.apply(Kind::Up, Some(&sel("198.18.0.0/24")), Some("mark 0x1"));
        f.apply(Kind::Up, Some(&s2), Some("mark 0x1"));
        f.apply(Kind::Down, Some(&s2), None);
        assert_eq!(f.rules(WhenDown::Deny), ["198.18.0.0/24 mark 0x1"]);
        // The latest action wins.
        f.apply(Kind::Up, Some(&s2), Some("mark 0x2"));
        assert_eq!(f.rules(WhenDown::Deny), ["198.18.0.0/24 mark 0x2"]);
    }

    #[test]
    fn round_trips_and_loads() {
        let mut f = file_after(&[(Kind::Up, "198.18.0.0/24"), (Kind::Up, "2001:db8:1::/48")]);
        let mut tcp = sel("198.51.100.0/24");
        tcp.proto = 6;
        tcp.port = 22;
        f.apply(Kind::Route, Some(&tcp), Some("mark 0x200/0xff00"));
        f.apply(Kind::Down, Some(&sel("198.18.0.0/24")), None);
        let text = f
            .render(
                "a \"b\" (c)",
                "pluto",
                "route-client",
                Some("a__b___c_"),
                WhenDown::Remove,
            )
            .unwrap();
        assert_eq!(ConnFile::parse(&text).unwrap(), f);
        assert_eq!(owner(&text), Some("\"a \\\"b\\\" (c)\""));
        let set = ldsaref_rules::RuleSet::parse(&text, "f").unwrap();
        assert_eq!(set.len(), 3, "{text}");
        assert!(
            text.contains("\n198.51.100.0/24 tcp 22 mark 0x200/0xff00\n"),
            "{text}"
        );
    }

    #[test]
    fn foreign_lines_are_refused_and_old_files_read_as_empty() {
        assert!(ConnFile::parse("# entry: x y 0 0 up=z routed=0 pass\n")
            .unwrap_err()
            .contains("line 1"));
        assert!(ConnFile::parse("# entry: x y 0 0 up=1 routed=2 pass\n").is_err());
        let old = "# ldsaref updown: connection \"c\" (up-client); written by pluto's updown, do not edit\n[c]\n198.18.0.0/24 saref 101\n";
        assert_eq!(ConnFile::parse(old).unwrap(), ConnFile::default());
        assert_eq!(owner(old), Some("\"c\""));
    }
}
