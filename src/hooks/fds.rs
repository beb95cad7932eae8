//! Hooks that create, copy and close descriptors, or set their options:
//! they keep the library's per-fd table right and bind new sockets to
//! `IPSEC_SAREF`.

use libc::{c_int, c_uint, c_void, sockaddr, socklen_t};

use super::{fail, guarded};
use crate::{config, errno, fdtable, next, ops, sys};

/// # Safety
/// libc's `socket`.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    let fd = unsafe { next::socket(domain, ty, protocol) };
    if fd < 0 {
        return fd;
    }
    // Recorded in the table; most sockets need nothing more (and touch
    // neither the configuration nor errno).
    if !ops::new_socket(config::snapshot, fd, domain, ty) {
        return fd;
    }
    // SAFETY: our own fresh descriptor.
    unsafe { socket_setup(fd, domain, ty) }
}

/// The rest of `socket()` for a socket the rules may bind or set up.
///
/// # Safety
/// `fd` is the fresh descriptor `socket()` returned, not yet handed out.
#[inline(never)]
unsafe fn socket_setup(fd: c_int, domain: c_int, ty: c_int) -> c_int {
    let saved = errno::get();
    match guarded(|| ops::on_socket(fd, domain, ty), ()) {
        Ok(()) => {
            errno::set(saved);
            fd
        }
        Err(e) => {
            // Fail closed: a socket the library could not bind is not handed out.
            fdtable::clear(fd);
            // SAFETY: our own fresh descriptor, never seen by the caller.
            unsafe { next::close(fd) };
            fail(e)
        }
    }
}

/// # Safety
/// libc's `socketpair`.
#[no_mangle]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    ty: c_int,
    protocol: c_int,
    sv: *mut c_int,
) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { next::socketpair(domain, ty, protocol, sv) };
    if r == 0 && !sv.is_null() {
        let st = fdtable::FdState::new(sys::family_of(domain), sys::kind_of(ty));
        // SAFETY: on success the kernel wrote two descriptors to `sv`.
        let (a, b) = unsafe { (*sv, *sv.add(1)) };
        fdtable::set(a, st);
        fdtable::set(b, st);
    }
    r
}

/// # Safety
/// libc's `accept`.
#[no_mangle]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { next::accept(fd, addr, len) };
    if r >= 0 {
        // A new socket (inheriting the listener's binding in the kernel):
        // learned on first use.
        fdtable::clear(r);
    }
    r
}

/// # Safety
/// libc's `accept4`.
#[no_mangle]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { next::accept4(fd, addr, len, flags) };
    if r >= 0 {
        fdtable::clear(r);
    }
    r
}

/// # Safety
/// libc's `setsockopt`.
#[no_mangle]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    opt: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    // Only a few options concern the library; `SO_LINGER`, `TCP_NODELAY`
    // and the like go straight through.
    if ops::setsockopt_watched(level, opt) {
        // SAFETY: the caller's arguments.
        return unsafe { setsockopt_watched(fd, level, opt, val, len) };
    }
    // SAFETY: forwarding the caller's arguments.
    unsafe { next::setsockopt(fd, level, opt, val, len) }
}

/// `setsockopt` of an option the library would set itself (see
/// `ops::on_setsockopt`). Out of line, so that the hook's usual case is a
/// compare and a jump to the next definition.
///
/// # Safety
/// libc's `setsockopt`.
#[inline(never)]
unsafe fn setsockopt_watched(
    fd: c_int,
    level: c_int,
    opt: c_int,
    val: *const c_void,
    len: socklen_t,
) -> c_int {
    let saved = errno::get();
    let _ = guarded(
        || {
            ops::on_setsockopt(fd, level, opt);
            Ok(())
        },
        (),
    );
    errno::set(saved);
    // SAFETY: forwarding the caller's arguments.
    unsafe { next::setsockopt(fd, level, opt, val, len) }
}

/// # Safety
/// libc's `close`.
#[no_mangle]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    // Forget first: once closed, the number may be reused by another thread.
    ops::on_close(fd);
    // SAFETY: forwarding the caller's arguments.
    unsafe { next::close(fd) }
}

/// # Safety
/// libc's `dup`.
#[no_mangle]
pub unsafe extern "C" fn dup(fd: c_int) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { next::dup(fd) };
    if r >= 0 {
        fdtable::copy(fd, r);
    }
    r
}

/// # Safety
/// libc's `dup2`.
#[no_mangle]
pub unsafe extern "C" fn dup2(old: c_int, new: c_int) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { next::dup2(old, new) };
    if r >= 0 && old != new {
        fdtable::copy(old, new);
    }
    r
}

/// # Safety
/// libc's `dup3`.
#[no_mangle]
pub unsafe extern "C" fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { next::dup3(old, new, flags) };
    if r >= 0 {
        fdtable::copy(old, new);
    }
    r
}

/// # Safety
/// libc's `close_range`.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    let r = unsafe { next::close_range(first, last, flags) };
    const CLOSE_RANGE_CLOEXEC: c_int = 1 << 2;
    if r == 0 && flags & CLOSE_RANGE_CLOEXEC == 0 {
        fdtable::clear_range(first, last);
    }
    r
}
