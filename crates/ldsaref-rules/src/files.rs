//! Where rules come from: a file, a directory of `*.rules` files, or the
//! system locations — and a cheap stamp to notice when they change.
//!
//! This is the crate's only I/O (plain `std::fs`), shared by the library,
//! which loads and reloads, and the command, which checks and explains,
//! so both read exactly the same rules.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::{RuleSet, RuleSetBuilder};

/// The system rules file.
pub const SYSTEM_FILE: &str = "/etc/ldsaref/rules";
/// The system rules directory: every `*.rules` file in it (e.g. written by
/// `ldsaref updown`, one per connection).
pub const SYSTEM_DIR: &str = "/etc/ldsaref/rules.d";
/// Files of a rules directory end with this.
pub const EXTENSION: &str = "rules";

/// Where a process's rules are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `LDSAREF_RULES`: one file, or a directory of `*.rules` files.
    Explicit(PathBuf),
    /// [`SYSTEM_FILE`] and [`SYSTEM_DIR`], each only if it exists.
    System,
}

impl Location {
    /// The location for an optional `LDSAREF_RULES` value.
    pub fn from_setting(path: Option<&Path>) -> Location {
        match path {
            Some(p) => Location::Explicit(p.to_path_buf()),
            None => Location::System,
        }
    }

    /// The files to load, in order: a directory's `*.rules` by name.
    /// `Ok(vec![])` when the system locations do not exist.
    pub fn files(&self) -> Result<Vec<PathBuf>, String> {
        match self {
            Location::Explicit(p) => {
                let meta = fs::metadata(p)
                    .map_err(|e| format!("{}: cannot read the rules: {e}", p.display()))?;
                if meta.is_dir() {
                    dir_files(p)
                } else {
                    Ok(vec![p.clone()])
                }
            }
            Location::System => {
                let mut v = Vec::new();
                if Path::new(SYSTEM_FILE).exists() {
                    v.push(PathBuf::from(SYSTEM_FILE));
                }
                if Path::new(SYSTEM_DIR).is_dir() {
                    v.extend(dir_files(Path::new(SYSTEM_DIR))?);
                }
                Ok(v)
            }
        }
    }

    /// The directories whose listing matters (a file appearing there is a
    /// change).
    fn dirs(&self) -> Vec<PathBuf> {
        match self {
            Location::Explicit(p) if p.is_dir() => vec![p.clone()],
            Location::Explicit(_) => vec![],
            Location::System => vec![PathBuf::from(SYSTEM_DIR), PathBuf::from("/etc/ldsaref")],
        }
    }
}

fn dir_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    check_permissions(dir)?;
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{}: cannot read the rules directory: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        // Hidden files are editors' and `updown`'s temporary files.
        .filter(|p| {
            p.extension().is_some_and(|x| x == EXTENSION)
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// A rules file or directory that someone other than root or its owner may
/// write could be used to take traffic out of its SA: refuse it, like ssh
/// refuses such a key file.
pub fn check_permissions(path: &Path) -> Result<(), String> {
    let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mode = meta.mode() & 0o7777;
    // A sticky world-writable directory (like /tmp) still lets anyone add
    // files: no exception for it.
    if mode & 0o022 != 0 {
        return Err(format!(
            "{}: refusing rules writable by others than root and its owner (mode {mode:04o}); chmod go-w it",
            path.display()
        ));
    }
    Ok(())
}

/// Loads every file of `location` into one rule set. The first error
/// aborts the whole load (a bad file never half-loads) and says
/// `file:line:col: message`.
pub fn load(location: &Location) -> Result<Option<RuleSet>, String> {
    let files = location.files()?;
    if files.is_empty() {
        return Ok(None);
    }
    let mut b = RuleSet::builder();
    for f in &files {
        add_file(&mut b, f)?;
    }
    b.build().map(Some).map_err(|e| e.to_string())
}

fn add_file(b: &mut RuleSetBuilder, path: &Path) -> Result<(), String> {
    let name = path.display().to_string();
    check_permissions(path)?;
    let bytes = fs::read(path).map_err(|e| format!("{name}: cannot read the rules file: {e}"))?;
    b.add_bytes(&bytes, &name).map_err(|e| e.to_string())
}

/// What the rules looked like on disk: identity, size and times of every
/// file and directory involved. Two equal stamps mean nothing changed
/// (an atomic replace by rename changes the inode; an in-place edit the
/// mtime or size).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp(Vec<(PathBuf, Option<FileId>)>);

/// Device, inode, size, mtime and ctime (seconds, nanoseconds).
type FileId = (u64, u64, u64, i64, i64, i64, i64);

/// Stamps `location` now. Costs one `stat` per file and directory.
pub fn stamp(location: &Location) -> Stamp {
    let mut paths = location.dirs();
    match location.files() {
        Ok(f) => paths.extend(f),
        Err(_) => {
            if let Location::Explicit(p) = location {
                paths.push(p.clone());
            }
        }
    }
    if let Location::System = location {
        paths.push(PathBuf::from(SYSTEM_FILE));
    }
    Stamp(
        paths
            .into_iter()
            .map(|p| {
                let m = fs::metadata(&p).ok().map(|m| {
                    (
                        m.dev(),
                        m.ino(),
                        m.size(),
                        m.mtime(),
                        m.mtime_nsec(),
                        m.ctime(),
                        m.ctime_nsec(),
                    )
                });
                (p, m)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ldsaref-files-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        d
    }

    fn write(p: &Path, text: &str) {
        fs::write(p, text).unwrap();
        fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
    }

    #[test]
    fn a_directory_loads_its_rules_files_in_name_order() {
        let d = tmpdir("dir");
        write(&d.join("b.rules"), "[conn-b]\n198.18.0.0/24 saref 202\n");
        write(&d.join("a.rules"), "[conn-a]\n198.18.0.0/24 saref 101\n");
        write(&d.join("notes.txt"), "not rules\n");
        write(&d.join(".a.rules.tmp"), "garbage\n");
        let set = load(&Location::Explicit(d.clone())).unwrap().unwrap();
        assert_eq!(set.len(), 2);
        let names: Vec<&str> = set.profile_names().collect();
        assert_eq!(names, ["conn-a", "conn-b"]);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn ties_across_files_are_errors() {
        let d = tmpdir("ties");
        write(&d.join("a.rules"), "198.18.0.0/24 saref 101\n");
        write(&d.join("b.rules"), "198.18.0.0/24 saref 202\n");
        let e = load(&Location::Explicit(d.clone())).unwrap_err();
        assert!(e.contains("b.rules:1:1:"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn writable_by_others_is_refused() {
        let d = tmpdir("perm");
        let f = d.join("r.rules");
        write(&f, "198.18.0.0/24 saref 101\n");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
        let e = load(&Location::Explicit(f.clone())).unwrap_err();
        assert!(e.contains("mode 0666"), "{e}");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&d, fs::Permissions::from_mode(0o777)).unwrap();
        let e = load(&Location::Explicit(d.clone())).unwrap_err();
        assert!(e.contains("mode 0777"), "{e}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn stamps_change_with_content_and_listing() {
        let d = tmpdir("stamp");
        let loc = Location::Explicit(d.clone());
        let s0 = stamp(&loc);
        write(&d.join("a.rules"), "198.18.0.0/24 saref 101\n");
        let s1 = stamp(&loc);
        assert_ne!(s0, s1);
        assert_eq!(s1, stamp(&loc));
        write(&d.join("a.rules"), "198.18.0.0/24 saref 102\n# longer\n");
        assert_ne!(s1, stamp(&loc));
        fs::remove_dir_all(&d).unwrap();
    }
}
