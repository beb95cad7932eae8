//! The `extern "C"` layer: one function per libc symbol, each decoding its
//! arguments, asking [`crate::ops`], and calling the next definition.
//!
//! Rules every hook follows:
//! - errno is saved on entry and restored before the real call, so the
//!   host sees what libc set;
//! - the decision runs under [`guarded`]: a panic never unwinds into C and
//!   is handled by `LDSAREF_ON_ERROR` (fail closed by default);
//! - the library's own socket calls go to [`crate::next`], never back here.

use std::panic::{catch_unwind, AssertUnwindSafe};

use libc::msghdr;

use crate::sys::Errno;
use crate::{errno, ops};

mod fds;
mod recv;
mod send;

/// Room for the application's control data plus the library's cmsg, on the
/// stack: control data on inet sockets is a few dozen bytes; more than
/// this is refused under `LDSAREF_ON_ERROR=fail` rather than sent untagged.
const CONTROL_CAP: usize = 1024;

/// Per message of a `sendmmsg` batch.
const MMSG_CONTROL_CAP: usize = 160;
/// Messages per batch when a `sendmmsg` vector must be rewritten.
const MMSG_BATCH: usize = 16;
/// The kernel's limit on a `sendmmsg` vector.
const UIO_MAXIOV: usize = 1024;

#[repr(C, align(8))]
struct ControlBuf<const N: usize>([u8; N]);

impl<const N: usize> ControlBuf<N> {
    fn new() -> Self {
        ControlBuf([0; N])
    }
}

/// Runs a decision; a panic inside becomes the `LDSAREF_ON_ERROR` outcome
/// (`fallback` when it says warn).
fn guarded<T>(f: impl FnOnce() -> Result<T, Errno>, fallback: T) -> Result<T, Errno> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => ops::on_panic().map(|()| fallback),
    }
}

fn fail<T: From<i8>>(e: Errno) -> T {
    errno::set(e);
    T::from(-1)
}

/// The application's control data, if it fits the library's buffer.
///
/// # Safety
/// `m` is a `msghdr` the caller passed to `sendmsg`: its control pointer is
/// valid for `msg_controllen` bytes.
unsafe fn control_of(m: &msghdr) -> Result<&[u8], ()> {
    if m.msg_control.is_null() || m.msg_controllen == 0 {
        return Ok(&[]);
    }
    if m.msg_controllen > CONTROL_CAP {
        return Err(());
    }
    // SAFETY: per the caller's sendmsg contract.
    Ok(unsafe { std::slice::from_raw_parts(m.msg_control.cast::<u8>(), m.msg_controllen) })
}
