//! The library exports the hooked libc symbols and nothing else; the
//! `ldsaref` command neither defines nor exports any of them (checked with
//! `nm -D`, as a packager would).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

const HOOKS: &[&str] = &[
    "accept",
    "accept4",
    "close",
    "close_range",
    "connect",
    "dup",
    "dup2",
    "dup3",
    "recvfrom",
    "recvmmsg",
    "recvmsg",
    "send",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setsockopt",
    "socket",
    "socketpair",
    "write",
    "writev",
];

/// Names of the symbols `nm` lists with `args` for `file`, with their type letter.
fn symbols(args: &[&str], file: &std::path::Path) -> Vec<(char, String)> {
    let out = Command::new("nm")
        .args(args)
        .arg(file)
        .output()
        .expect("nm (binutils) is installed by scripts/setup.sh");
    assert!(
        out.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().rev();
            let name = f.next()?;
            let ty = f.next()?.chars().next()?;
            Some((ty, name.split('@').next().unwrap_or(name).to_string()))
        })
        .collect()
}

#[test]
fn library_exports_exactly_the_hooks() {
    let exported: BTreeSet<String> = symbols(&["-D", "--defined-only"], &common::lib_path())
        .into_iter()
        .map(|(_, n)| n)
        .collect();
    let hooks: BTreeSet<String> = HOOKS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        exported, hooks,
        "exported symbols differ from the hook list"
    );
}

#[test]
fn library_has_its_soname() {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(common::lib_path())
        .output()
        .expect("readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Library soname: [libldsaref.so]"), "{text}");
}

#[test]
fn command_defines_no_hooked_symbol() {
    let cli = common::cli_path();
    for (ty, name) in symbols(&["-D"], &cli) {
        if HOOKS.contains(&name.as_str()) {
            assert_eq!(ty, 'U', "ldsaref exports {name} ({ty})");
        }
    }
    // Nor in its static symbol table (a local definition would still
    // shadow libc's for its own calls).
    for (ty, name) in symbols(&["--defined-only"], &cli) {
        assert!(
            !HOOKS.contains(&name.as_str()),
            "ldsaref defines {name} ({ty})"
        );
    }
}
