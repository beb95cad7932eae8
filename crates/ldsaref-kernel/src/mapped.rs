//! The compiled rules index, mapped read-only: every process that maps it
//! shares the page cache's one copy, and looks rules up in place (see
//! `ldsaref_rules::compiled`). The file descriptor is closed as soon as
//! the mapping exists: the library keeps none open. Shared by the library
//! and the command (`explain`, `run`), which read the same index alike.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use ldsaref_rules::compiled::Bytes;
use ldsaref_rules::files;

/// A read-only shared mapping of a whole file, unmapped when dropped.
struct Mapping {
    ptr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is read-only and never changed through this
// process; nothing about it is tied to a thread.
unsafe impl Send for Mapping {}
// SAFETY: as above: shared reads only.
unsafe impl Sync for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes (see
        // `map`), unmapped only in `drop`, after every borrow of `self`
        // has ended. The file is only ever replaced by rename, never
        // written in place, by ldsaref's tools; a file truncated in place
        // by hand would make reads past its new end fault (SIGBUS), which
        // is documented (docs/bad-inputs.md).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped
        // once, here.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

/// Maps the index at `path` if there is one and it passes the checks of
/// `files::open_index` (on the open file, so the file checked is the file
/// mapped). `Ok(None)`: there is none.
pub fn map(path: &Path) -> Result<Option<Bytes>, String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let Some((file, len)) = files::open_index(path, euid)? else {
        return Ok(None);
    };
    if len == 0 {
        return Err(format!("corrupt: {} is empty", path.display()));
    }
    // SAFETY: a fresh read-only shared mapping of `len` bytes of an open
    // file; the kernel picks the address. The result is checked below.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    let failed = (ptr == libc::MAP_FAILED).then(std::io::Error::last_os_error);
    // The mapping holds the file; the descriptor is not needed any more.
    drop(file);
    if let Some(e) = failed {
        return Err(format!("{}: cannot map it: {e}", path.display()));
    }
    // Lookups read a few scattered lines of a large file: without this,
    // a fault could read ahead, and map a whole 2 MiB folio of the page
    // cache (measured: 4 MiB mapped for one lookup in 1M rules), pages
    // that count as this process's own until another maps them.
    // SAFETY: advice on the mapping just made, of its exact length; a
    // failure only leaves the defaults.
    unsafe {
        libc::madvise(ptr, len, libc::MADV_RANDOM);
        libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE);
    }
    Ok(Some(Arc::new(Mapping { ptr, len })))
}

/// Drops the page cache's copy of a freshly written index (flushed to
/// disk already), so that programs fault in only the pages their lookups
/// read, one by one: left in the cache from being written, the file is in
/// large folios, and a program's first lookup would map megabytes of it
/// (measured on Linux 6.18, ext4: 4 MiB for one lookup in 1M rules).
/// Advice only: errors are ignored.
pub fn drop_cache(path: &Path) {
    if let Ok(file) = File::open(path) {
        // SAFETY: advice on an open descriptor, whole file; no memory is
        // involved.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}
