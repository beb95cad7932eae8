//! Builds the C test programs of `tests/programs/` with gcc, once per
//! source version: `target/<profile>/test-programs/NAME-<hash>`.
//!
//! Included by the hardening tests with
//! `#[path = "programs/cprog.rs"] mod cprog;` next to `mod common;`.
//! The programs call the libc socket functions normally (no raw
//! syscalls), so that a preloaded library interposes them.
#![allow(dead_code)]

use std::path::PathBuf;

use crate::common;

const CFLAGS: &[&str] = &["-O2", "-Wall", "-Wextra", "-Werror", "-pthread"];

/// Compiles `tests/programs/NAME.c` (if not already built) and returns the
/// executable's absolute path (see [`common::compile_c`]).
pub fn build(name: &str) -> PathBuf {
    let src = common::source_dir().join(format!("tests/programs/{name}.c"));
    common::compile_c(&src, "test-programs", name, "", CFLAGS)
}
