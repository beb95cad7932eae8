//! The one place that changes the table: a whole batch through `nft -f -`
//! (one transaction), or changes of elements alone over netlink (one
//! transaction too); and what the installed table says about itself (its
//! chains' names, read over netlink).

use std::io::Write;
use std::process::{Command, Stdio};

use ldsaref_kernel::nft_batch::{Addr, Batch};
use ldsaref_nft::{Change, MapElements, ABSENT_SET, FINGERPRINT_CHAIN};

use crate::cgroup::Cgroup2;

fn nft() -> Command {
    // Root's PATH has /usr/sbin; a user's may not.
    let path = ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft");
    Command::new(path)
}

/// Runs `batch` as one `nft -f -` transaction: all of it or nothing.
pub fn run_batch(batch: &str) -> Result<(), String> {
    let mut child = nft()
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft (install nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(batch.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the table: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes `changes` to table inet ldsaref in one netlink transaction (no
/// `nft` process); the cgroups they name are resolved in `cg` to the ids
/// the kernel matches. An error changed nothing.
pub fn commit_changes(changes: &[Change], cg: &Cgroup2) -> Result<(), String> {
    let mut b = Batch::new(ldsaref_kernel::nftables::INET, "ldsaref");
    for c in changes {
        match c {
            Change::Flush(map) => b.flush_set(map),
            Change::Add(map, MapElements::Marks { v6, elements }) => {
                let addr = if *v6 { Addr::V6 } else { Addr::V4 };
                b.add_intervals(map, addr, elements);
            }
            Change::Add(map, MapElements::Gotos(elements)) => b.add_gotos(map, elements),
            Change::Absent { cgroup, add } => {
                let id = cg
                    .id(cgroup)
                    .ok_or_else(|| format!("{}: no such cgroup", cg.dir(cgroup).display()))?;
                if *add {
                    b.add_ids(ABSENT_SET, &[id]);
                } else {
                    b.delete_ids(ABSENT_SET, &[id]);
                }
            }
            Change::AddChain(name) => b.add_chain(name),
            Change::DeleteChain(name) => b.delete_chain(name),
        }
    }
    b.commit()
        .map_err(|e| format!("table inet ldsaref: the kernel refused the change: {e}"))
}

/// The chains of `table inet ldsaref` as the kernel has them now
/// (`None`: no table in this network namespace); read over netlink, not
/// by an `nft` process (see `ldsaref_kernel::nftables`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chains(Option<Vec<String>>);

impl Chains {
    #[cfg(test)]
    pub fn of(names: Option<&[&str]>) -> Chains {
        Chains(names.map(|n| n.iter().map(|s| s.to_string()).collect()))
    }

    /// Whether the table is there.
    pub fn installed(&self) -> bool {
        self.0.is_some()
    }

    /// The names, none when there is no table.
    pub fn names(&self) -> &[String] {
        self.0.as_deref().unwrap_or_default()
    }

    /// The table's fingerprint, read from its fingerprint chain's name;
    /// `None` when the table is not there. A table without the chain (not
    /// made by `ldsaref apply`) has the empty fingerprint.
    pub fn fingerprint(&self) -> Option<String> {
        let names = self.0.as_ref()?;
        Some(
            names
                .iter()
                .find_map(|n| n.strip_prefix(FINGERPRINT_CHAIN))
                .unwrap_or_default()
                .to_owned(),
        )
    }
}

/// The table's fingerprint: `Ok(None)` when no `inet ldsaref` table is
/// installed in this network namespace.
pub fn installed_fingerprint() -> Result<Option<String>, String> {
    Ok(list_chains()?.fingerprint())
}

/// The installed table's chains.
pub fn list_chains() -> Result<Chains, String> {
    ldsaref_kernel::nftables::chains(ldsaref_kernel::nftables::INET, "ldsaref")
        .map(Chains)
        .map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EPERM) {
                " (reading the nftables tables needs root: CAP_NET_ADMIN)"
            } else {
                ""
            };
            format!("cannot list the chains of table inet ldsaref: {e}{hint}")
        })
}

/// Deletes the table; `Ok(false)` if there was none.
pub fn delete_table() -> Result<bool, String> {
    if installed_fingerprint()?.is_none() {
        return Ok(false);
    }
    run_batch("delete table inet ldsaref\n").map(|()| true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_is_the_fingerprint_chains_suffix() {
        let t = Chains::of(Some(&["output", "rules_00ff", "p0"]));
        assert_eq!(t.fingerprint().as_deref(), Some("00ff"));
        assert!(t.installed());
        assert_eq!(Chains::of(None).fingerprint(), None);
        assert!(Chains::of(None).names().is_empty());
        assert_eq!(Chains::of(Some(&["p0"])).fingerprint().as_deref(), Some(""));
    }
}
