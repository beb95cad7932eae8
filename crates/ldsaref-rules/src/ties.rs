//! Rules that tie: two rules of one set that would both apply to some
//! traffic with nothing to say which one wins. Loading refuses them.
//!
//! Two rules tie when they have the same destination (family, prefix), the
//! same rank (with or without port, with or without a specific protocol),
//! overlapping protocols and overlapping ports. Within one rank, protocols
//! overlap only when equal, so a tie is: same prefix, rank and protocol, and
//! port ranges that intersect (a rule without ports covers all of them).

use std::collections::BTreeMap;

use crate::placement::{runs, Placed};

/// A pair of rules that tie, by index in load order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Tie {
    pub later: u32,
    pub earlier: u32,
}

/// The tie to report among `placed` (sorted, see [`crate::placement`]): the
/// one whose later rule comes first in load order, as a reader going down
/// the files would meet it, paired with the earliest rule it ties with.
pub(crate) fn first_tie(placed: &[Placed]) -> Option<Tie> {
    let group = |a: &Placed, b: &Placed| a.same_prefix(b) && a.rank == b.rank && a.proto == b.proto;
    runs(placed, group)
        .filter(|g| g.len() > 1)
        .filter_map(first_tie_in_group)
        .min_by_key(|t| (t.later, t.earlier))
}

/// The first tie within rules of one prefix, rank and protocol, which come
/// in load order: only port ranges remain to compare.
fn first_tie_in_group(group: &[Placed]) -> Option<Tie> {
    // The ranges accepted so far, by first port. They do not overlap (we
    // stop at the first overlap), so sorted by first port they are sorted
    // by last port too.
    let mut accepted: BTreeMap<u16, (u16, u32)> = BTreeMap::new();
    for p in group {
        // Ranges starting at or before `p.hi`, last first; they overlap `p`
        // until one ends before `p.lo`, and then none of the earlier do.
        let earliest = accepted
            .range(..=p.hi)
            .rev()
            .take_while(|(_, &(hi, _))| hi >= p.lo)
            .map(|(_, &(_, rule))| rule)
            .min();
        if let Some(earlier) = earliest {
            return Some(Tie {
                later: p.rule,
                earlier,
            });
        }
        accepted.insert(p.lo, (p.hi, p.rule));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Family;

    fn p(rule: u32, lo: u16, hi: u16) -> Placed {
        Placed {
            set: 0,
            family: Family::V4,
            key: 0,
            len: 8,
            rank: 1,
            proto: 0,
            rule,
            lo,
            hi,
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(first_tie_in_group(&[p(0, 1, 10), p(1, 11, 20)]), None);
        assert_eq!(
            first_tie_in_group(&[p(0, 1, 10), p(1, 10, 20)]),
            Some(Tie {
                later: 1,
                earlier: 0
            })
        );
        // The wide rule comes last and overlaps both: name the earliest.
        assert_eq!(
            first_tie_in_group(&[p(0, 5, 6), p(1, 1, 2), p(2, 1, 100)]),
            Some(Tie {
                later: 2,
                earlier: 0
            })
        );
        assert_eq!(
            first_tie_in_group(&[p(0, 0, u16::MAX), p(1, 0, u16::MAX)]),
            Some(Tie {
                later: 1,
                earlier: 0
            })
        );
    }

    #[test]
    fn earliest_later_rule_wins() {
        // Group A ties at rule 9, group B at rule 3.
        let mut placed = vec![p(1, 1, 1), p(9, 1, 1), p(2, 5, 5), p(3, 5, 5)];
        placed[2].len = 16;
        placed[3].len = 16;
        placed.sort_unstable();
        assert_eq!(
            first_tie(&placed),
            Some(Tie {
                later: 3,
                earlier: 2
            })
        );
    }
}
