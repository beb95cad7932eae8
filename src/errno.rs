//! The C `errno` of the calling thread.
//!
//! Every hook saves it on entry and restores it before calling the real
//! function, so the host program sees exactly what libc would have left.

/// The calling thread's `errno`.
pub fn get() -> i32 {
    // SAFETY: `__errno_location` returns a valid pointer to this thread's errno.
    unsafe { *libc::__errno_location() }
}

/// Sets the calling thread's `errno`.
pub fn set(e: i32) {
    // SAFETY: as above; writing errno is what it is for.
    unsafe { *libc::__errno_location() = e }
}
