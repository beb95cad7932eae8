//! The rules directory as updown changes it: under an exclusive lock,
//! one whole file renamed into place at a time, never a change that
//! would stop the directory from loading.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use ldsaref_rules::files::Location;
use ldsaref_rules::RuleSet;

/// Holds an exclusive `flock` on the rules directory until dropped.
pub struct DirLock(File);

impl DirLock {
    pub fn take(dir: &Path) -> Result<DirLock, String> {
        let f = File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        lock_exclusive(&f).map_err(|e| format!("{}: cannot lock: {e}", dir.display()))?;
        Ok(DirLock(f))
    }

    pub fn sync(&self) -> std::io::Result<()> {
        self.0.sync_all()
    }
}

/// Waits for an exclusive `flock` on `f`, released when `f` is closed.
pub fn lock_exclusive(f: &File) -> std::io::Result<()> {
    loop {
        // SAFETY: flock only takes a descriptor number and a flag; the
        // descriptor is open and owned by `f` for the whole call.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Would the directory still load with `file` holding `text` (or gone)?
pub fn check_directory(dir: &Path, file: &Path, text: Option<&str>) -> Result<(), String> {
    let mut names = Location::Explicit(dir.to_path_buf()).files()?;
    names.retain(|f| f != file);
    if text.is_some() {
        names.push(file.to_path_buf());
        names.sort();
    }
    let mut b = RuleSet::builder();
    for f in &names {
        let name = f.display().to_string();
        if f == file {
            b.add_source(text.unwrap_or_default(), &name)
        } else {
            let bytes = fs::read(f).map_err(|e| format!("{name}: {e}"))?;
            b.add_bytes(&bytes, &name)
        }
        .map_err(|e| e.to_string())?;
    }
    b.build().map(drop).map_err(|e| e.to_string())
}

/// Writes `text` to `file` atomically: a hidden temporary file in the same
/// directory, fsynced, renamed over it, then the directory fsynced.
pub fn write_atomically(dir: &DirLock, file: &Path, text: &str) -> Result<(), String> {
    let parent = file.parent().unwrap_or(Path::new("/"));
    let base = file.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(".{base}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            // Fixed, not from the umask: the loader refuses files that
            // others may write.
            .mode(0o644)
            .open(&tmp)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, file)?;
        dir.sync()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("{}: cannot write: {e}", file.display())
    })
}

/// Removes `file` (gone already is fine), then fsyncs the directory.
pub fn remove(dir: &DirLock, file: &Path) -> Result<(), String> {
    match fs::remove_file(file) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: cannot remove: {e}", file.display())),
    }
    dir.sync()
        .map_err(|e| format!("{}: {e}", file.parent().unwrap_or(file).display()))
}

pub fn create_dir(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("{}: cannot create the rules directory: {e}", dir.display()))
}
