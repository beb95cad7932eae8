//! Where rules come from: a file, a directory of `*.rules` files, or the
//! system locations — and a cheap stamp to notice when they change.
//!
//! This is the crate's only I/O (plain `std::fs`), shared by the library,
//! which loads and reloads, and the command, which checks and explains,
//! so both read exactly the same rules.

use std::ffi::OsString;
use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::compiled::{AlignedBytes, Bytes, Fingerprint};
use crate::{RuleSet, RuleSetBuilder};

/// The system rules file.
pub const SYSTEM_FILE: &str = "/etc/ldsaref/rules";
/// The system rules directory: every `*.rules` file in it (e.g. written by
/// `ldsaref updown`, one per connection).
pub const SYSTEM_DIR: &str = "/etc/ldsaref/rules.d";
/// The compiled index of the system rules (see [`Location::index_path`]).
pub const SYSTEM_INDEX: &str = "/etc/ldsaref/rules.index";
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
    /// Where the compiled index of these rules is, like postfix's
    /// `postmap` (`virtual` → `virtual.db`): beside the rules file or
    /// directory `P` (a trailing slash dropped), `P.index`; for the system
    /// rules, [`SYSTEM_INDEX`].
    pub fn index_path(&self) -> PathBuf {
        match self {
            Location::System => PathBuf::from(SYSTEM_INDEX),
            Location::Explicit(p) => {
                let mut bytes = p.as_os_str().as_bytes();
                while bytes.len() > 1 && bytes.ends_with(b"/") {
                    bytes = &bytes[..bytes.len() - 1];
                }
                let mut name = OsString::from(std::ffi::OsStr::from_bytes(bytes));
                name.push(".index");
                PathBuf::from(name)
            }
        }
    }

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

/// Why the compiled index was not used, when it was not: `serious` is
/// false when there is simply none (compiling is optional).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexNote {
    /// Worth a warning: an index is there but not usable.
    pub serious: bool,
    /// One line, naming the index and why.
    pub message: String,
}

/// The identity of `path` as the rules are read from it now.
pub fn fingerprint(path: &Path) -> Result<Fingerprint, String> {
    let m = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Fingerprint {
        path: path.as_os_str().as_bytes().to_vec(),
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: m
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.mtime_nsec()),
        ctime_ns: m
            .ctime()
            .saturating_mul(1_000_000_000)
            .saturating_add(m.ctime_nsec()),
    })
}

/// The files of `location`, in load order, as they are now.
pub fn fingerprints(location: &Location) -> Result<Vec<Fingerprint>, String> {
    location.files()?.iter().map(|p| fingerprint(p)).collect()
}

/// The checks an index gets before it is read, on the metadata of the
/// open file: a regular file, not writable by group or others, owned by
/// root or by `euid` (the user running).
pub fn check_index_metadata(meta: &fs::Metadata, path: &Path, euid: u32) -> Result<(), String> {
    let mode = meta.mode() & 0o7777;
    if !meta.file_type().is_file() {
        return Err(format!("unsafe: {} is not a regular file", path.display()));
    }
    if mode & 0o022 != 0 {
        return Err(format!(
            "unsafe: {} is writable by others than its owner (mode {mode:04o})",
            path.display()
        ));
    }
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!(
            "unsafe: {} is owned by uid {}, neither root nor the user running",
            path.display(),
            meta.uid()
        ));
    }
    Ok(())
}

/// Opens the index at `path` and checks it ([`check_index_metadata`]) on
/// the open file, so that the file checked is the file read or mapped;
/// with its length. `Ok(None)` if there is none.
pub fn open_index(path: &Path, euid: u32) -> Result<Option<(fs::File, usize)>, String> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    check_index_metadata(&meta, path, euid)?;
    let len = usize::try_from(meta.len()).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some((file, len)))
}

/// Reads the index at `path` into memory (for the command; the library
/// maps it instead), after [`check_index_metadata`]. `Ok(None)` if there
/// is none.
pub fn read_index(path: &Path, euid: u32) -> Result<Option<Bytes>, String> {
    let Some((mut file, len)) = open_index(path, euid)? else {
        return Ok(None);
    };
    let bytes =
        AlignedBytes::read(&mut file, len).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(Arc::new(bytes)))
}

/// Loads the rules of `location`: from its compiled index when `open`
/// gives one (`Ok(None)`: there is none) that matches the files as they
/// are now, else by parsing them, with a note of why the index was not
/// used. Rules as [`load`] gives them.
pub fn load_with_index(
    location: &Location,
    open: impl FnOnce(&Path) -> Result<Option<Bytes>, String>,
) -> (Result<Option<RuleSet>, String>, Option<IndexNote>) {
    let index = location.index_path();
    let shown = index.display();
    let note = |serious: bool, why: String| IndexNote {
        serious,
        message: format!(
            "rules index {shown} not used ({why}): parsing the rules instead{}",
            if serious { "; run ldsaref compile" } else { "" }
        ),
    };
    let sources = match fingerprints(location) {
        Ok(s) if s.is_empty() => return (Ok(None), None),
        Ok(s) => s,
        // The parser says it better.
        Err(_) => return (load(location), None),
    };
    let note = match open(&index) {
        Ok(None) => note(false, "there is none".to_owned()),
        Err(e) => note(true, e),
        Ok(Some(bytes)) => match RuleSet::from_index(bytes, &sources) {
            Ok(set) => return (Ok(Some(set)), None),
            Err(refusal) => note(true, refusal.to_string()),
        },
    };
    (load(location), Some(note))
}

/// How recent a change to a rules file may be for its fingerprint to be
/// trusted: the kernel stamps files with a clock that ticks every few
/// milliseconds, so two writes within one tick can leave the same size,
/// mtime and ctime. A file changed less than this long ago is waited for.
const RACY_NS: i64 = 50_000_000;

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The fingerprints of `location`, once its newest change is old enough
/// that any later change shows in them (see [`RACY_NS`]).
fn settled_fingerprints(location: &Location) -> Result<Vec<Fingerprint>, String> {
    for _ in 0..40 {
        let fps = fingerprints(location)?;
        let newest = fps
            .iter()
            .map(|f| f.ctime_ns.max(f.mtime_ns))
            .max()
            .unwrap_or(0);
        let age = now_ns().saturating_sub(newest);
        if !(0..RACY_NS).contains(&age) {
            return Ok(fps);
        }
        std::thread::sleep(std::time::Duration::from_nanos(
            (RACY_NS - age) as u64 + 1_000_000,
        ));
    }
    fingerprints(location)
}

/// The compiled index of the rules of `location` (checked as [`load`]
/// checks them), with the number of rules. The files are fingerprinted
/// before they are read and again after: a change while compiling means
/// compiling again.
pub fn compile(location: &Location) -> Result<(Vec<u8>, usize), String> {
    for _ in 0..5 {
        let before = settled_fingerprints(location)?;
        if before.is_empty() {
            return Err(match location {
                Location::System => format!(
                    "no rules to compile ({SYSTEM_FILE} and {SYSTEM_DIR}/*.rules do not exist)"
                ),
                Location::Explicit(p) => format!("{}: no rules files to compile", p.display()),
            });
        }
        let Some(set) = load(location)? else {
            continue;
        };
        if fingerprints(location)? != before {
            continue;
        }
        let bytes = set.compile(&before).ok_or("not a parsed rule set")?;
        return Ok((bytes, set.len()));
    }
    Err("the rules kept changing while being compiled".to_owned())
}

/// The directory `path` is in (`.` for a bare file name): where
/// [`write_atomically`] puts its temporary file.
pub fn containing_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it,
/// flushed to disk, mode 0644, renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let shown = path.display();
    let dir = containing_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| format!("{shown}: not a file name"))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(0o644))?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("{shown}: cannot write the index: {e}")
    })
}

/// Compiles the rules of `location` and writes their index where the
/// library looks for it ([`Location::index_path`]), atomically. For
/// `ldsaref compile`, and for every tool that changes rules files, right
/// after the change (`ldsaref updown`): until then, running programs
/// parse the rules themselves. Returns the index's path.
pub fn compile_for(location: &Location) -> Result<PathBuf, String> {
    let (bytes, _) = compile(location)?;
    let path = location.index_path();
    write_atomically(&path, &bytes)?;
    Ok(path)
}

/// The fingerprints of `location` now, and whether they are settled: the
/// newest change is old enough that any later change shows in them (see
/// [`RACY_NS`]). Never waits.
pub fn fingerprints_now(location: &Location) -> Result<(Vec<Fingerprint>, bool), String> {
    let fps = fingerprints(location)?;
    let newest = fps
        .iter()
        .map(|f| f.ctime_ns.max(f.mtime_ns))
        .max()
        .unwrap_or(0);
    let age = now_ns().saturating_sub(newest);
    Ok((fps, !(0..RACY_NS).contains(&age)))
}

/// [`compile_for`] of a rule set already read from `location`, whose
/// files had the fingerprints `before` ([`fingerprints_now`], settled)
/// when it was read: compiled from it, without reading the files again,
/// when they still have them; else [`compile_for`] (which waits for
/// fingerprints to settle, and reads the files again).
pub fn compile_loaded(
    location: &Location,
    set: &RuleSet,
    before: &[Fingerprint],
    settled: bool,
) -> Result<PathBuf, String> {
    if settled && !before.is_empty() && fingerprints(location)? == before {
        if let Some(bytes) = set.compile(before) {
            let path = location.index_path();
            write_atomically(&path, &bytes)?;
            return Ok(path);
        }
    }
    compile_for(location)
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
    // A new index (compiled after the rules changed) is a reason to load
    // again too.
    paths.push(location.index_path());
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
