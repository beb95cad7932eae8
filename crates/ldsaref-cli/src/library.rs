//! Where `libldsaref.so` is: `LDSAREF_LIB`, next to this binary, or in the
//! library directories of the prefix it is installed in. Never relative to
//! the current directory.

use std::path::{Path, PathBuf};

pub const LIB_NAME: &str = "libldsaref.so";

/// The Debian multiarch directory name of this build, e.g. `x86_64-linux-gnu`.
fn multiarch() -> String {
    format!("{}-linux-gnu", std::env::consts::ARCH)
}

/// The places looked at, in order, for a binary at `exe`.
pub fn candidates(exe: &Path) -> Vec<PathBuf> {
    let Some(dir) = exe.parent() else {
        return vec![];
    };
    let ma = multiarch();
    vec![
        dir.join(LIB_NAME),
        dir.join("../lib/ldsaref").join(LIB_NAME),
        dir.join("../lib").join(&ma).join(LIB_NAME),
        dir.join("../lib").join(&ma).join("ldsaref").join(LIB_NAME),
        dir.join("../lib").join(LIB_NAME),
    ]
}

/// The absolute path of the library, or a message saying where it looked.
pub fn find() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("LDSAREF_LIB") {
        let p = PathBuf::from(p);
        if !p.is_absolute() {
            return Err(format!(
                "LDSAREF_LIB={} is not an absolute path",
                p.display()
            ));
        }
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("LDSAREF_LIB={}: no such file", p.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this program: {e}"))?;
    let tried = candidates(&exe);
    for c in &tried {
        if c.is_file() {
            return c
                .canonicalize()
                .map_err(|e| format!("{}: {e}", c.display()));
        }
    }
    Err(format!(
        "cannot find {LIB_NAME}; looked in: {}; set LDSAREF_LIB to its absolute path",
        tried
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
