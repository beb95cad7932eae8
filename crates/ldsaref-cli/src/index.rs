//! Compiling the rules' index, for `ldsaref compile`, `check --compile`
//! and every command that changes rules files.

use std::path::PathBuf;

use ldsaref_rules::files::{self, Location};

use crate::updown::fsio::DirLock;

/// Compiles the rules of `location` into their index
/// ([`Location::index_path`]: `P.index` beside the rules file or directory
/// `P`, `/etc/ldsaref/rules.index` for the system rules), written
/// atomically, and returns its path. Call it right after changing a rules
/// file (`ldsaref updown` does): until then running programs find the
/// index stale and parse the rules themselves.
///
/// [`files::compile_for`], then the page cache's copy of the new index is
/// dropped ([`ldsaref_kernel::mapped::drop_cache`]) so that programs map
/// only the pages they read.
pub fn compile_for(location: &Location) -> Result<PathBuf, String> {
    let _turn = turn(location)?;
    let path = files::compile_for(location)?;
    ldsaref_kernel::mapped::drop_cache(&path);
    Ok(path)
}

/// [`compile_for`] from a rule set already read (see
/// [`files::compile_loaded`]).
pub fn compile_loaded(
    location: &Location,
    set: &ldsaref_rules::RuleSet,
    before: &[ldsaref_rules::compiled::Fingerprint],
    settled: bool,
) -> Result<PathBuf, String> {
    let _turn = turn(location)?;
    let path = files::compile_loaded(location, set, before, settled)?;
    ldsaref_kernel::mapped::drop_cache(&path);
    Ok(path)
}

/// One compile of a location at a time: each reads the rules once it holds
/// this, so the last index written is of the newest rules (an index older
/// than its files is only ignored by the library, which parses the text
/// then: right, but slower).
///
/// The lock of the directory that holds the index, not of the rules
/// directory that `ldsaref updown` locks: a background compile waits for
/// the rules to settle (50 ms) and compiles, and the daemon's next updown
/// call, which it holds its event bus for, must not wait for that.
fn turn(location: &Location) -> Result<DirLock, String> {
    DirLock::take(files::containing_dir(&location.index_path()))
}
