//! The one place that runs `nft`: a whole batch through `nft -f -` (one
//! transaction), and what the installed table says about itself.

use std::io::Write;
use std::process::{Command, Stdio};

use ldsaref_nft::FINGERPRINT_CHAIN;

fn nft() -> Command {
    // Root's PATH has /usr/sbin; a user's may not.
    let path = ["/usr/sbin/nft", "/sbin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("nft");
    Command::new(path)
}

fn output(args: &[&str]) -> Result<std::process::Output, String> {
    nft()
        .args(args)
        .output()
        .map_err(|e| format!("cannot run nft (install nftables): {e}"))
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

/// The table's fingerprint: `Ok(None)` when no `inet ldsaref` table is
/// installed in this network namespace.
pub fn installed_fingerprint() -> Result<Option<String>, String> {
    let out = output(&["list", "chains", "inet"])?;
    if !out.status.success() {
        return Err(format!(
            "nft list chains: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(fingerprint_in(&String::from_utf8_lossy(&out.stdout)))
}

/// Reads the fingerprint chain of `table inet ldsaref` in `nft list
/// chains` output; `None` when the table is not there. A table without
/// the chain (not made by `ldsaref apply`) has the empty fingerprint.
fn fingerprint_in(listing: &str) -> Option<String> {
    let mut in_table = false;
    let mut found = false;
    for line in listing.lines() {
        if line.starts_with("table ") {
            in_table = line.trim_end() == "table inet ldsaref {";
            found |= in_table;
            continue;
        }
        if in_table {
            if let Some(rest) = line.trim().strip_prefix("chain ") {
                if let Some(fp) = rest.strip_prefix(FINGERPRINT_CHAIN) {
                    return Some(fp.trim_end_matches(" {").trim().to_owned());
                }
            }
        }
    }
    found.then(String::new)
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
    fn finds_the_fingerprint_among_other_tables() {
        let listing = "table inet other {\n\tchain rules_x {\n\t}\n}\n\
                       table inet ldsaref {\n\tchain rules_00ff {\n\t}\n\tchain p0 {\n\t}\n\
                       \tchain output {\n\t\ttype route hook output priority mangle; policy accept;\n\t}\n}\n";
        assert_eq!(fingerprint_in(listing).as_deref(), Some("00ff"));
        assert_eq!(fingerprint_in("table inet other {\n}\n"), None);
        assert_eq!(
            fingerprint_in("table inet ldsaref {\n\tchain p0 {\n\t}\n}\n").as_deref(),
            Some("")
        );
    }
}
