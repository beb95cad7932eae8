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

use ldsaref_kernel::cmsg::{AppendError, Tag};
use libc::{
    c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, sockaddr_storage, socklen_t,
    ssize_t, timespec,
};

use crate::ops::{self, RecvMode, Send};
use crate::sys::Errno;
use crate::{addr, errno, fdtable, next, sys};

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

/// `sendmsg` with `tag` appended to `app`'s control data.
///
/// # Safety
/// `msg` is valid as for `sendmsg`.
unsafe fn sendmsg_tagged(
    fd: c_int,
    msg: &msghdr,
    app: Result<&[u8], ()>,
    tag: Tag,
    flags: c_int,
) -> ssize_t {
    let mut buf = ControlBuf::<CONTROL_CAP>::new();
    let appended = match app {
        Ok(app) => tag.append_to(&mut buf.0, app),
        Err(()) => Err(AppendError::TooLarge { needed: usize::MAX }),
    };
    match appended {
        Ok(n) => {
            let mut m = *msg;
            m.msg_control = buf.0.as_mut_ptr().cast::<c_void>();
            m.msg_controllen = n;
            // SAFETY: `m` is the caller's message with our control buffer,
            // which lives until the call returns.
            unsafe { next::sendmsg(fd, &m, flags) }
        }
        Err(e) => match ops::control_error(matches!(e, AppendError::TooLarge { .. })) {
            // SAFETY: the caller's message, unchanged.
            Ok(()) => unsafe { next::sendmsg(fd, msg, flags) },
            Err(e) => fail(e),
        },
    }
}

/// `send`/`write`/`writev` of a connected datagram socket that must carry
/// `tag`, as a `sendmsg`. A descriptor that turns out not to be a socket
/// any more (closed behind the library's back) falls back to `plain`.
///
/// # Safety
/// `iov` is valid for `iovcnt` entries.
unsafe fn write_tagged(
    fd: c_int,
    iov: *const iovec,
    iovcnt: usize,
    flags: c_int,
    tag: Tag,
    plain: impl FnOnce() -> ssize_t,
) -> ssize_t {
    // SAFETY: a zeroed msghdr is a valid empty message.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = iov.cast_mut();
    m.msg_iovlen = iovcnt;
    let saved = errno::get();
    // SAFETY: `m` points at the caller's buffers only.
    let r = unsafe { sendmsg_tagged(fd, &m, Ok(&[]), tag, flags) };
    if r < 0 && errno::get() == libc::ENOTSOCK {
        ops::not_a_socket(fd);
        errno::set(saved);
        return plain();
    }
    r
}

/// # Safety
/// libc's `socket`.
#[no_mangle]
pub unsafe extern "C" fn socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int {
    // SAFETY: forwarding the caller's arguments.
    let fd = unsafe { next::socket(domain, ty, protocol) };
    if fd < 0 {
        return fd;
    }
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
/// libc's `connect`.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let saved = errno::get();
    // SAFETY: `addr` is valid for `len` bytes per connect's contract.
    if let Some(dest) = unsafe { addr::decode(addr, len) } {
        if let Err(e) = guarded(|| ops::before_connect(fd, dest), ()) {
            return fail(e);
        }
        errno::set(saved);
    }
    // SAFETY: forwarding the caller's arguments.
    unsafe { next::connect(fd, addr, len) }
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
/// libc's `sendto`.
#[no_mangle]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    let saved = errno::get();
    // SAFETY: `addr` is valid for `alen` bytes per sendto's contract.
    let dest = unsafe { addr::decode(addr, alen) };
    match guarded(|| ops::plan_send(fd, dest, flags, &[]), Send::Plain) {
        Err(e) => fail(e),
        Ok(Send::Plain) => {
            errno::set(saved);
            // SAFETY: forwarding the caller's arguments.
            unsafe { next::sendto(fd, buf, len, flags, addr, alen) }
        }
        Ok(Send::Tag(tag)) => {
            errno::set(saved);
            let iov = iovec {
                iov_base: buf.cast_mut(),
                iov_len: len,
            };
            // SAFETY: a zeroed msghdr is a valid empty message.
            let mut m: msghdr = unsafe { std::mem::zeroed() };
            m.msg_name = addr.cast_mut().cast::<c_void>();
            m.msg_namelen = alen;
            m.msg_iov = (&iov as *const iovec).cast_mut();
            m.msg_iovlen = 1;
            // SAFETY: `m` points at the caller's buffer and address.
            unsafe { sendmsg_tagged(fd, &m, Ok(&[]), tag, flags) }
        }
    }
}

/// # Safety
/// libc's `sendmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t {
    if msg.is_null() {
        // SAFETY: the kernel answers EFAULT.
        return unsafe { next::sendmsg(fd, msg, flags) };
    }
    let saved = errno::get();
    // SAFETY: non-null, and valid per sendmsg's contract.
    let m = unsafe { &*msg };
    // SAFETY: as above, for the name and control buffers.
    let (dest, control) = unsafe {
        (
            addr::decode(m.msg_name.cast::<sockaddr>(), m.msg_namelen),
            control_of(m),
        )
    };
    match guarded(
        || ops::plan_send(fd, dest, flags, control.unwrap_or(&[])),
        Send::Plain,
    ) {
        Err(e) => fail(e),
        Ok(Send::Plain) => {
            errno::set(saved);
            // SAFETY: forwarding the caller's arguments.
            unsafe { next::sendmsg(fd, msg, flags) }
        }
        Ok(Send::Tag(tag)) => {
            errno::set(saved);
            // SAFETY: the caller's message, valid as above.
            unsafe { sendmsg_tagged(fd, m, control, tag, flags) }
        }
    }
}

/// # Safety
/// libc's `sendmmsg`.
#[no_mangle]
pub unsafe extern "C" fn sendmmsg(
    fd: c_int,
    msgs: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
) -> c_int {
    if msgs.is_null() || vlen == 0 {
        // SAFETY: forwarding; the kernel validates.
        return unsafe { next::sendmmsg(fd, msgs, vlen, flags) };
    }
    let n = (vlen as usize).min(UIO_MAXIOV);
    let saved = errno::get();
    // SAFETY: `msgs` is valid for `vlen` entries per sendmmsg's contract.
    let plan = |i: usize| -> Result<Send, Errno> {
        let m = unsafe { &(*msgs.add(i)).msg_hdr };
        // SAFETY: as above, for each message's name and control buffers.
        let (dest, control) = unsafe {
            (
                addr::decode(m.msg_name.cast::<sockaddr>(), m.msg_namelen),
                control_of(m),
            )
        };
        match guarded(
            || ops::plan_send(fd, dest, flags, control.unwrap_or(&[])),
            Send::Plain,
        ) {
            Ok(Send::Tag(_)) if control.is_err() => ops::control_error(true).map(|()| Send::Plain),
            r => r,
        }
    };
    // The common case: nothing to add to any message, send the caller's
    // vector as it is.
    let mut all_plain = true;
    for i in 0..n {
        match plan(i) {
            Ok(Send::Plain) => {}
            _ => {
                all_plain = false;
                break;
            }
        }
    }
    errno::set(saved);
    if all_plain {
        // SAFETY: forwarding the caller's arguments.
        return unsafe { next::sendmmsg(fd, msgs, vlen, flags) };
    }
    // SAFETY: as above.
    unsafe { sendmmsg_rewritten(fd, msgs, n, flags, &plan) }
}

/// Sends `msgs` in batches whose messages carry the library's cmsgs,
/// stopping at the first message that must not be sent, with the kernel's
/// own partial-success convention (the count sent, or -1 if none).
///
/// # Safety
/// `msgs` is valid for `n` entries.
unsafe fn sendmmsg_rewritten(
    fd: c_int,
    msgs: *mut mmsghdr,
    n: usize,
    flags: c_int,
    plan: &dyn Fn(usize) -> Result<Send, Errno>,
) -> c_int {
    let mut sent = 0usize;
    while sent < n {
        // SAFETY: zeroed mmsghdrs are valid empty messages.
        let mut batch: [mmsghdr; MMSG_BATCH] = unsafe { std::mem::zeroed() };
        let mut bufs =
            [const { ControlBuf::<MMSG_CONTROL_CAP>([0; MMSG_CONTROL_CAP]) }; MMSG_BATCH];
        let mut len = 0;
        let mut stop = None;
        while len < MMSG_BATCH && sent + len < n {
            // SAFETY: index below `n`.
            let m = unsafe { &(*msgs.add(sent + len)).msg_hdr };
            match plan(sent + len) {
                Ok(Send::Plain) => batch[len].msg_hdr = *m,
                Ok(Send::Tag(tag)) => {
                    // SAFETY: as in `plan`.
                    let app = unsafe { control_of(m) }.unwrap_or(&[]);
                    match tag.append_to(&mut bufs[len].0, app) {
                        Ok(clen) => {
                            batch[len].msg_hdr = *m;
                            batch[len].msg_hdr.msg_control =
                                bufs[len].0.as_mut_ptr().cast::<c_void>();
                            batch[len].msg_hdr.msg_controllen = clen;
                        }
                        Err(e) => {
                            match ops::control_error(matches!(e, AppendError::TooLarge { .. })) {
                                Ok(()) => batch[len].msg_hdr = *m,
                                Err(e) => {
                                    stop = Some(e);
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    stop = Some(e);
                    break;
                }
            }
            len += 1;
        }
        if len > 0 {
            // SAFETY: `batch` holds `len` messages pointing at the caller's
            // buffers and at `bufs`, alive until the call returns.
            let r = unsafe { next::sendmmsg(fd, batch.as_mut_ptr(), len as c_uint, flags) };
            if r < 0 {
                return if sent > 0 { sent as c_int } else { r };
            }
            let r = r as usize;
            for (j, b) in batch.iter().enumerate().take(r) {
                // SAFETY: index below `n`.
                unsafe { (*msgs.add(sent + j)).msg_len = b.msg_len };
            }
            sent += r;
            if r < len {
                return sent as c_int;
            }
        }
        if let Some(e) = stop {
            return if sent > 0 { sent as c_int } else { fail(e) };
        }
    }
    sent as c_int
}

/// # Safety
/// libc's `send`.
#[no_mangle]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t {
    match guarded(|| Ok(ops::connected_tag(fd)), None) {
        // SAFETY: forwarding the caller's arguments.
        Ok(None) => unsafe { next::send(fd, buf, len, flags) },
        Ok(Some(tag)) => {
            let iov = iovec {
                iov_base: buf.cast_mut(),
                iov_len: len,
            };
            // SAFETY: one iovec over the caller's buffer.
            unsafe { write_tagged(fd, &iov, 1, flags, tag, || next::send(fd, buf, len, flags)) }
        }
        Err(e) => fail(e),
    }
}

/// # Safety
/// libc's `write`.
#[no_mangle]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, count: size_t) -> ssize_t {
    match guarded(|| Ok(ops::connected_tag(fd)), None) {
        // SAFETY: forwarding the caller's arguments.
        Ok(None) => unsafe { next::write(fd, buf, count) },
        Ok(Some(tag)) => {
            let iov = iovec {
                iov_base: buf.cast_mut(),
                iov_len: count,
            };
            // SAFETY: one iovec over the caller's buffer.
            unsafe { write_tagged(fd, &iov, 1, 0, tag, || next::write(fd, buf, count)) }
        }
        Err(e) => fail(e),
    }
}

/// # Safety
/// libc's `writev`.
#[no_mangle]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t {
    match guarded(|| Ok(ops::connected_tag(fd)), None) {
        // SAFETY: forwarding the caller's arguments.
        Ok(None) => unsafe { next::writev(fd, iov, iovcnt) },
        Ok(Some(tag)) => {
            let cnt = usize::try_from(iovcnt).unwrap_or(0);
            // SAFETY: the caller's iovec array, valid for `iovcnt` entries.
            unsafe { write_tagged(fd, iov, cnt, 0, tag, || next::writev(fd, iov, iovcnt)) }
        }
        Err(e) => fail(e),
    }
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

// ---------------------------------------------------------------------
// Receiving, for `reflect`: the library asks the kernel for the SA of each
// datagram, records it per peer, and hides the cmsg from an application
// that did not ask for it.

/// Room the library's receive cmsg needs (REFINFO: two u32; a mark: one).
const RECV_EXTRA: usize = ldsaref_kernel::cmsg::cmsg_space(8);

/// Records the SA of a received datagram from our copy of the message,
/// then gives the application its name and control data as the kernel
/// would have: the library's cmsg removed unless asked for, `MSG_CTRUNC`
/// only if the application's own buffer was too small.
///
/// # Safety
/// `app` is the application's message, `ours` the one the kernel filled,
/// whose name and control buffers are the library's.
unsafe fn finish_recv(
    fd: c_int,
    mode: RecvMode,
    app: &mut msghdr,
    ours: &msghdr,
    kernel_ctrunc: bool,
) {
    // SAFETY: the kernel wrote `msg_namelen` bytes of our name buffer.
    let peer = unsafe { addr::decode(ours.msg_name.cast::<sockaddr>(), ours.msg_namelen) };
    let clen = ours.msg_controllen;
    // SAFETY: our control buffer, `clen` bytes written by the kernel.
    let ctl = unsafe { std::slice::from_raw_parts_mut(ours.msg_control.cast::<u8>(), clen) };
    if let Some(peer) = peer {
        let found = ldsaref_kernel::cmsg::find(ctl, mode.level, mode.ty)
            .ok()
            .flatten()
            .map(|c| c.data);
        let _ = guarded(
            || {
                ops::on_received(fd, peer, mode, found);
                Ok(())
            },
            (),
        );
    }
    let len = if mode.strip {
        ldsaref_kernel::cmsg::remove(ctl, clen, mode.level, mode.ty)
    } else {
        clen
    };
    // Whole cmsgs that fit the application's buffer.
    let cap = if app.msg_control.is_null() {
        0
    } else {
        app.msg_controllen
    };
    let mut fit = 0;
    for c in ldsaref_kernel::cmsg::iter(&ctl[..len]).flatten() {
        let end = c.offset + ldsaref_kernel::cmsg::HDR_LEN + c.data.len();
        if end > cap {
            break;
        }
        fit = ldsaref_kernel::cmsg::align(end).min(cap);
    }
    if fit > 0 {
        // SAFETY: the application's control buffer holds `cap >= fit` bytes.
        unsafe { std::ptr::copy_nonoverlapping(ctl.as_ptr(), app.msg_control.cast::<u8>(), fit) };
    }
    let truncated = kernel_ctrunc || fit < len;
    app.msg_controllen = fit;
    app.msg_flags =
        (ours.msg_flags & !libc::MSG_CTRUNC) | if truncated { libc::MSG_CTRUNC } else { 0 };
    if !app.msg_name.is_null() {
        let n = (app.msg_namelen as usize).min(ours.msg_namelen as usize);
        // SAFETY: the application's name buffer holds `msg_namelen >= n` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(ours.msg_name.cast::<u8>(), app.msg_name.cast::<u8>(), n)
        };
    }
    app.msg_namelen = ours.msg_namelen;
}

fn recv_mode(fd: c_int) -> Option<RecvMode> {
    guarded(|| Ok(ops::recv_mode(fd)), None).ok().flatten()
}

/// # Safety
/// libc's `recvfrom`.
#[no_mangle]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: size_t,
    flags: c_int,
    addr: *mut sockaddr,
    alen: *mut socklen_t,
) -> ssize_t {
    let saved = errno::get();
    let Some(mode) = recv_mode(fd) else {
        errno::set(saved);
        // SAFETY: forwarding the caller's arguments.
        return unsafe { next::recvfrom(fd, buf, len, flags, addr, alen) };
    };
    errno::set(saved);
    // SAFETY: zeroed sockaddr_storage and msghdr are valid empty values.
    let mut name: sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut ctl = ControlBuf::<RECV_EXTRA>::new();
    let mut iov = iovec {
        iov_base: buf,
        iov_len: len,
    };
    let mut ours: msghdr = unsafe { std::mem::zeroed() };
    ours.msg_name = (&mut name as *mut sockaddr_storage).cast::<c_void>();
    ours.msg_namelen = std::mem::size_of::<sockaddr_storage>() as socklen_t;
    ours.msg_iov = &mut iov;
    ours.msg_iovlen = 1;
    ours.msg_control = ctl.0.as_mut_ptr().cast::<c_void>();
    ours.msg_controllen = RECV_EXTRA;
    // SAFETY: `ours` points at the caller's buffer and our own name and
    // control buffers, alive for the call.
    let r = unsafe { next::recvmsg(fd, &mut ours, flags) };
    if r >= 0 {
        // SAFETY: an application message with no control buffer and the
        // caller's name buffer (valid for `*alen` bytes when non-null).
        let mut app: msghdr = unsafe { std::mem::zeroed() };
        if !addr.is_null() && !alen.is_null() {
            app.msg_name = addr.cast::<c_void>();
            // SAFETY: non-null, per recvfrom's contract.
            app.msg_namelen = unsafe { *alen };
        }
        let ctrunc = ours.msg_flags & libc::MSG_CTRUNC != 0;
        // SAFETY: as documented on `finish_recv`.
        unsafe { finish_recv(fd, mode, &mut app, &ours, ctrunc) };
        if !addr.is_null() && !alen.is_null() {
            // SAFETY: as above.
            unsafe { *alen = app.msg_namelen };
        }
    }
    r
}

/// # Safety
/// libc's `recvmsg`.
#[no_mangle]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t {
    let saved = errno::get();
    let mode = if msg.is_null() { None } else { recv_mode(fd) };
    errno::set(saved);
    let Some(mode) = mode else {
        // SAFETY: forwarding the caller's arguments.
        return unsafe { next::recvmsg(fd, msg, flags) };
    };
    // SAFETY: non-null, valid per recvmsg's contract.
    let app = unsafe { &mut *msg };
    let app_cap = if app.msg_control.is_null() {
        0
    } else {
        app.msg_controllen
    };
    if app_cap + RECV_EXTRA > CONTROL_CAP {
        // Too large for the library's buffer: receive into the
        // application's own and clean it up in place.
        // SAFETY: forwarding the caller's arguments.
        let r = unsafe { next::recvmsg(fd, msg, flags) };
        if r >= 0 {
            let ours = *app;
            // SAFETY: here "ours" is the application's own buffers, which
            // finish_recv copies onto themselves (same addresses).
            unsafe { finish_recv_in_place(fd, mode, app, &ours) };
        }
        return r;
    }
    let mut name: sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut ctl = ControlBuf::<CONTROL_CAP>::new();
    let mut ours = *app;
    ours.msg_name = (&mut name as *mut sockaddr_storage).cast::<c_void>();
    ours.msg_namelen = std::mem::size_of::<sockaddr_storage>() as socklen_t;
    ours.msg_control = ctl.0.as_mut_ptr().cast::<c_void>();
    ours.msg_controllen = app_cap + RECV_EXTRA;
    // SAFETY: the caller's iovecs with our name and control buffers.
    let r = unsafe { next::recvmsg(fd, &mut ours, flags) };
    if r >= 0 {
        let ctrunc = ours.msg_flags & libc::MSG_CTRUNC != 0;
        // SAFETY: as documented on `finish_recv`.
        unsafe { finish_recv(fd, mode, app, &ours, ctrunc) };
    }
    r
}

/// The rare case of a control buffer larger than the library's: the
/// application's own buffer held the reply.
///
/// # Safety
/// `app` is a message the kernel just filled.
unsafe fn finish_recv_in_place(fd: c_int, mode: RecvMode, app: &mut msghdr, filled: &msghdr) {
    let clen = filled.msg_controllen;
    if filled.msg_control.is_null() {
        return;
    }
    // SAFETY: the application's control buffer, `clen` bytes written.
    let ctl = unsafe { std::slice::from_raw_parts_mut(filled.msg_control.cast::<u8>(), clen) };
    // SAFETY: the kernel wrote `msg_namelen` bytes (or the name is null).
    if let Some(peer) =
        unsafe { addr::decode(filled.msg_name.cast::<sockaddr>(), filled.msg_namelen) }
    {
        let found = ldsaref_kernel::cmsg::find(ctl, mode.level, mode.ty)
            .ok()
            .flatten()
            .map(|c| c.data);
        let _ = guarded(
            || {
                ops::on_received(fd, peer, mode, found);
                Ok(())
            },
            (),
        );
    }
    if mode.strip {
        app.msg_controllen = ldsaref_kernel::cmsg::remove(ctl, clen, mode.level, mode.ty);
    }
}

/// Messages per `recvmmsg` call on a reflecting socket: each needs its own
/// name and control buffers on the stack. Fewer than asked is a normal
/// `recvmmsg` result.
const RMMSG_BATCH: usize = 16;

/// # Safety
/// libc's `recvmmsg`.
#[no_mangle]
pub unsafe extern "C" fn recvmmsg(
    fd: c_int,
    msgs: *mut mmsghdr,
    vlen: c_uint,
    flags: c_int,
    timeout: *mut timespec,
) -> c_int {
    let saved = errno::get();
    let mode = if msgs.is_null() || vlen == 0 {
        None
    } else {
        recv_mode(fd)
    };
    errno::set(saved);
    let Some(mode) = mode else {
        // SAFETY: forwarding the caller's arguments.
        return unsafe { next::recvmmsg(fd, msgs, vlen, flags, timeout) };
    };
    let n = (vlen as usize).min(RMMSG_BATCH);
    // SAFETY: zeroed values are valid empty messages and addresses.
    let mut batch: [mmsghdr; RMMSG_BATCH] = unsafe { std::mem::zeroed() };
    let mut names: [sockaddr_storage; RMMSG_BATCH] = unsafe { std::mem::zeroed() };
    let mut ctls = [const { ControlBuf::<MMSG_CONTROL_CAP>([0; MMSG_CONTROL_CAP]) }; RMMSG_BATCH];
    for i in 0..n {
        // SAFETY: `msgs` is valid for `vlen >= n` entries.
        let app = unsafe { &(*msgs.add(i)).msg_hdr };
        let cap = if app.msg_control.is_null() {
            0
        } else {
            app.msg_controllen
        };
        batch[i].msg_hdr = *app;
        batch[i].msg_hdr.msg_name = (&mut names[i] as *mut sockaddr_storage).cast::<c_void>();
        batch[i].msg_hdr.msg_namelen = std::mem::size_of::<sockaddr_storage>() as socklen_t;
        batch[i].msg_hdr.msg_control = ctls[i].0.as_mut_ptr().cast::<c_void>();
        batch[i].msg_hdr.msg_controllen = (cap + RECV_EXTRA).min(MMSG_CONTROL_CAP);
    }
    // SAFETY: `batch` points at the caller's iovecs and our buffers.
    let r = unsafe { next::recvmmsg(fd, batch.as_mut_ptr(), n as c_uint, flags, timeout) };
    for (i, b) in batch.iter().enumerate().take(r.max(0) as usize) {
        // SAFETY: index below `n`; the caller's message.
        let app = unsafe { &mut (*msgs.add(i)).msg_hdr };
        let ctrunc = b.msg_hdr.msg_flags & libc::MSG_CTRUNC != 0;
        // SAFETY: as documented on `finish_recv`.
        unsafe { finish_recv(fd, mode, app, &b.msg_hdr, ctrunc) };
        // SAFETY: as above.
        unsafe { (*msgs.add(i)).msg_len = b.msg_len };
    }
    r
}
