//! Builds the C test programs of `tests/programs/` with gcc, once per
//! source version: `target/<profile>/test-programs/NAME-<hash>`.
//!
//! Included by the hardening tests with
//! `#[path = "programs/cprog.rs"] mod cprog;` next to `mod common;`.
//! The programs call the libc socket functions normally (no raw
//! syscalls), so that a preloaded library interposes them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use crate::common;

const CFLAGS: &[&str] = &["-O2", "-Wall", "-Wextra", "-Werror", "-pthread"];

/// Compiles `tests/programs/NAME.c` (if not already built) and returns the
/// executable's absolute path.
///
/// Written under a temporary name and renamed into place, so parallel test
/// processes never run a half-written file.
pub fn build(name: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let src = common::source_dir().join(format!("tests/programs/{name}.c"));
    let code = std::fs::read(&src).unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    code.hash(&mut h);
    CFLAGS.hash(&mut h);
    let dir = common::target_dir().join("test-programs");
    std::fs::create_dir_all(&dir).expect("create target/<profile>/test-programs");
    let out = dir.join(format!("{name}-{:016x}", h.finish()));
    if out.exists() {
        return out;
    }
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}-{}-{n}.tmp", std::process::id()));
    let res = Command::new("gcc")
        .args(CFLAGS)
        .arg("-o")
        .arg(&tmp)
        .arg(&src)
        .output()
        .expect("cannot run gcc (is it installed?)");
    if !res.status.success() {
        let _ = std::fs::remove_file(&tmp);
        panic!(
            "gcc failed to build {}:\n{}{}",
            src.display(),
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
    }
    std::fs::rename(&tmp, &out).expect("rename the program into place");
    out
}
