//! A section replaced by its elements alone: what [`Compiled::element_update`]
//! describes, for `ldsaref apply` to write over netlink in one transaction
//! without an `nft` process (whose start alone costs an emulated or busy
//! gateway more than the change: a connection's up or down is one
//! section's elements).

use crate::render::{section_maps, Layout, MapElements, Part};
use crate::{Compiled, FINGERPRINT_CHAIN, SECTION_CHAIN};

/// One change of the installed table, neither a rule nor a declaration.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Change {
    /// Every element of a map removed.
    Flush(String),
    /// Elements added to a map.
    Add(String, MapElements),
    /// A profile's cgroup (relative to the cgroup2 root) added to
    /// ([`ABSENT_SET`](crate::ABSENT_SET)) or removed from the set of profiles without rules.
    Absent {
        /// The cgroup.
        cgroup: String,
        /// Added (the profile went), or removed (it came back).
        add: bool,
    },
    /// An empty chain added.
    AddChain(String),
    /// An empty chain deleted.
    DeleteChain(String),
}

impl Compiled {
    /// What [`render_update`](Self::render_update) does (same arguments,
    /// but the cgroups are named relative to the cgroup2 root), as changes
    /// of elements and empty chains only: `None` when the section's port
    /// chains change (installed or new ones: their rules differ), which
    /// only `nft` writes. Every section's chain has the same rules
    /// whatever its elements, so the rest is its maps' elements, its
    /// profile's place in [`ABSENT_SET`](crate::ABSENT_SET), and the fingerprint chains.
    pub fn element_update(
        &self,
        profile: Option<usize>,
        old_port_chains: usize,
        old_section: &str,
        old_fingerprint: &str,
        fingerprint: &str,
    ) -> Option<Vec<Change>> {
        let Part {
            name,
            fingerprint: fp,
            layout,
            cgroup,
            ..
        } = self.part(profile);
        if old_port_chains > 0 || !layout.chains.is_empty() {
            return None;
        }
        let moved = cgroup.filter(|_| self.absence_changed(profile, old_section));
        Some(changes(
            &name,
            &layout,
            moved,
            (old_section, fp),
            (old_fingerprint, fingerprint),
        ))
    }
}

/// Section `name`'s maps emptied and given `layout`'s elements; the
/// profile's cgroup `moved` into the absent set (`true`) or out of it;
/// the section's and the table's fingerprint chains renamed (old, new).
fn changes(
    name: &str,
    layout: &Layout,
    moved: Option<(String, bool)>,
    section: (&str, &str),
    table: (&str, &str),
) -> Vec<Change> {
    let maps = section_maps(layout, name);
    let mut v: Vec<Change> = maps.iter().map(|(m, _)| Change::Flush(m.clone())).collect();
    v.extend(maps.into_iter().filter_map(|(m, elements)| {
        let empty = match &elements {
            MapElements::Marks { elements, .. } => elements.is_empty(),
            MapElements::Gotos(elements) => elements.is_empty(),
        };
        (!empty).then_some(Change::Add(m, elements))
    }));
    if let Some((cgroup, add)) = moved {
        v.push(Change::Absent { cgroup, add });
    }
    for (prefix, (old, new)) in [
        (format!("{SECTION_CHAIN}{name}_"), section),
        (FINGERPRINT_CHAIN.to_owned(), table),
    ] {
        if old != new {
            v.push(Change::DeleteChain(format!("{prefix}{old}")));
            v.push(Change::AddChain(format!("{prefix}{new}")));
        }
    }
    v
}
