//! Hooks on the way out: `connect` (and TCP Fast Open) binds the socket,
//! datagrams get their cmsg, connected datagram sockets bound to an SAref
//! tag every `send`/`write`/`writev`.

use ldsaref_kernel::cmsg::{AppendError, Tag};
use libc::{c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t};

use super::{
    control_of, fail, guarded, ControlBuf, CONTROL_CAP, MMSG_BATCH, MMSG_CONTROL_CAP, UIO_MAXIOV,
};
use crate::config::{self, Snapshot};
use crate::ops::memo::{self, Hit};
use crate::ops::{self, Send};
use crate::sys::Errno;
use crate::{addr, errno, fdtable, next};

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
    // The usual case, no control data of the application's: a small
    // buffer, not a kilobyte to clear on every datagram.
    if let Ok([]) = app {
        let mut c = memo::Control::of(tag);
        let len = c.len;
        // SAFETY: `words` holds `len` bytes of the encoded tag.
        let control =
            unsafe { std::slice::from_raw_parts_mut(c.words.as_mut_ptr().cast::<u8>(), len) };
        // SAFETY: as below.
        return unsafe { send_with_control(fd, msg, control, flags) };
    }
    let mut buf = ControlBuf::<CONTROL_CAP>::new();
    let appended = match app {
        Ok(app) => tag.append_to(&mut buf.0, app),
        Err(()) => Err(AppendError::TooLarge { needed: usize::MAX }),
    };
    match appended {
        // SAFETY: the caller's message with our control buffer.
        Ok(n) => unsafe { send_with_control(fd, msg, &mut buf.0[..n], flags) },
        Err(e) => match ops::control_error(matches!(e, AppendError::TooLarge { .. })) {
            // SAFETY: the caller's message, unchanged.
            Ok(()) => unsafe { next::sendmsg(fd, msg, flags) },
            Err(e) => fail(e),
        },
    }
}

/// `sendmsg` of the caller's message with `control` in place of its own.
///
/// # Safety
/// `msg` is valid as for `sendmsg`.
unsafe fn send_with_control(fd: c_int, msg: &msghdr, control: &mut [u8], flags: c_int) -> ssize_t {
    let mut m = *msg;
    m.msg_control = control.as_mut_ptr().cast::<c_void>();
    m.msg_controllen = control.len();
    // SAFETY: `m` is the caller's message with our control buffer, which
    // lives until the call returns.
    unsafe { next::sendmsg(fd, &m, flags) }
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

// Every hook below starts with `config::snapshot()`: whether this process
// steers anything at all. It is asked before reading any of the caller's
// structures: a process with no rules and no `IPSEC_SAREF` behaves exactly
// as without the library, down to the kernel's `EFAULT` for a bad pointer
// (with rules, the library must read them, and a bad pointer faults in the
// library as it would in any user-space code; see the README's limits).
//
// Then the common case, a datagram like the socket's previous one or a
// connect like a recent one (`ops::memo`): recognised from the raw
// address, without decoding it, deciding, or touching `errno` (nothing on
// that path can set it, and nothing on it can panic). Everything else is
// out of line, as before.

/// # Safety
/// libc's `connect`.
#[no_mangle]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let snap = config::snapshot();
    if !snap.inert() {
        // SAFETY: `addr` is valid for `len` bytes per connect's contract.
        let plain = unsafe { addr::key(addr, len) }
            .is_some_and(|k| memo::connect_is_plain(snap.generation(), fdtable::get(fd), k));
        if !plain {
            // SAFETY: as above.
            if let Err(e) = unsafe { connect_decide(snap, fd, addr, len) } {
                return fail(e);
            }
        }
    }
    // SAFETY: forwarding the caller's arguments.
    unsafe { next::connect(fd, addr, len) }
}

/// The decision of a `connect` that is not like the last one; `errno` as
/// the caller left it on `Ok`.
///
/// # Safety
/// As for `connect`.
#[inline(never)]
unsafe fn connect_decide(
    snap: Snapshot,
    fd: c_int,
    addr: *const sockaddr,
    len: socklen_t,
) -> Result<(), Errno> {
    let saved = errno::get();
    // SAFETY: `addr` is valid for `len` bytes per connect's contract.
    if let Some(dest) = unsafe { addr::decode(addr, len) } {
        guarded(|| ops::before_connect(snap.generation(), fd, dest), ())?;
        errno::set(saved);
    }
    Ok(())
}

/// A datagram whose decision was remembered.
///
/// # Safety
/// libc's `sendto`.
#[inline]
unsafe fn sendto_hit(
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
    hit: Hit,
) -> ssize_t {
    match hit {
        // SAFETY: forwarding the caller's arguments.
        Hit::Plain => unsafe { next::sendto(fd, buf, len, flags, addr, alen) },
        Hit::Control(mut c) => {
            let iov = iovec {
                iov_base: buf.cast_mut(),
                iov_len: len,
            };
            let mut m = sendto_as_msg(&iov, addr, alen);
            m.msg_control = c.words.as_mut_ptr().cast::<c_void>();
            m.msg_controllen = c.len;
            // SAFETY: `m` points at the caller's buffer and address and at
            // our control data, all alive until the call returns.
            unsafe { next::sendmsg(fd, &m, flags) }
        }
    }
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
    let snap = config::snapshot();
    if snap.inert() {
        // SAFETY: forwarding the caller's arguments.
        return unsafe { next::sendto(fd, buf, len, flags, addr, alen) };
    }
    // SAFETY: `addr` is valid for `alen` bytes per sendto's contract.
    if let Some(key) = unsafe { addr::key(addr, alen) } {
        if let Some(hit) = memo::datagram(snap.generation(), fd, fdtable::get(fd), key) {
            // SAFETY: the caller's arguments.
            return unsafe { sendto_hit(fd, buf, len, flags, addr, alen, hit) };
        }
    }
    // SAFETY: the caller's arguments.
    unsafe { sendto_decide(snap.generation(), fd, buf, len, flags, addr, alen) }
}

/// `sendto` of a datagram not like the last one.
///
/// # Safety
/// libc's `sendto`.
#[inline(never)]
unsafe fn sendto_decide(
    generation: u64,
    fd: c_int,
    buf: *const c_void,
    len: size_t,
    flags: c_int,
    addr: *const sockaddr,
    alen: socklen_t,
) -> ssize_t {
    let saved = errno::get();
    // SAFETY: `addr` is valid for `alen` bytes per sendto's contract.
    let (dest, key) = unsafe { (addr::decode(addr, alen), addr::key(addr, alen)) };
    match guarded(
        || ops::plan_send(generation, fd, dest, key, flags, &[]),
        Send::Plain,
    ) {
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
            let m = sendto_as_msg(&iov, addr, alen);
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
        // SAFETY: forwarding the caller's arguments.
        return unsafe { next::sendmsg(fd, msg, flags) };
    }
    let snap = config::snapshot();
    if snap.inert() {
        // SAFETY: forwarding the caller's arguments.
        return unsafe { next::sendmsg(fd, msg, flags) };
    }
    // SAFETY: non-null, and valid per sendmsg's contract.
    let m = unsafe { &*msg };
    // A remembered decision is for a datagram without control data.
    if m.msg_control.is_null() || m.msg_controllen == 0 {
        // SAFETY: the name is valid for `msg_namelen` bytes, as above.
        let key = unsafe { addr::key(m.msg_name.cast::<sockaddr>(), m.msg_namelen) };
        let hit = key.and_then(|k| memo::datagram(snap.generation(), fd, fdtable::get(fd), k));
        match hit {
            // SAFETY: forwarding the caller's arguments.
            Some(Hit::Plain) => return unsafe { next::sendmsg(fd, msg, flags) },
            Some(Hit::Control(mut c)) => {
                let mut ours = *m;
                ours.msg_control = c.words.as_mut_ptr().cast::<c_void>();
                ours.msg_controllen = c.len;
                // SAFETY: the caller's message with our control data,
                // alive until the call returns.
                return unsafe { next::sendmsg(fd, &ours, flags) };
            }
            None => {}
        }
    }
    // SAFETY: the caller's arguments.
    unsafe { sendmsg_decide(snap.generation(), fd, m, flags) }
}

/// `sendmsg` of a message not like the last one.
///
/// # Safety
/// `m` is valid as for `sendmsg`.
#[inline(never)]
unsafe fn sendmsg_decide(generation: u64, fd: c_int, m: &msghdr, flags: c_int) -> ssize_t {
    let saved = errno::get();
    // SAFETY: as above, for the name and control buffers.
    let (dest, key, control) = unsafe {
        let name = m.msg_name.cast::<sockaddr>();
        (
            addr::decode(name, m.msg_namelen),
            addr::key(name, m.msg_namelen),
            control_of(m),
        )
    };
    match guarded(
        || ops::plan_send(generation, fd, dest, key, flags, control.unwrap_or(&[])),
        Send::Plain,
    ) {
        Err(e) => fail(e),
        Ok(Send::Plain) => {
            errno::set(saved);
            // SAFETY: forwarding the caller's arguments.
            unsafe { next::sendmsg(fd, m, flags) }
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
    let snap = config::snapshot();
    if snap.inert() {
        // SAFETY: forwarding the caller's arguments.
        return unsafe { next::sendmmsg(fd, msgs, vlen, flags) };
    }
    let generation = snap.generation();
    let saved = errno::get();
    let n = (vlen as usize).min(UIO_MAXIOV);
    // SAFETY: `msgs` is valid for `vlen` entries per sendmmsg's contract.
    let plan = |i: usize| -> Result<Send, Errno> {
        let m = unsafe { &(*msgs.add(i)).msg_hdr };
        // SAFETY: as above, for each message's name and control buffers.
        let (name, control) = unsafe { (m.msg_name.cast::<sockaddr>(), control_of(m)) };
        // SAFETY: as above.
        let key = unsafe { addr::key(name, m.msg_namelen) };
        if let (Some(key), Ok([])) = (key, control) {
            if let Some(send) = memo::send_of(generation, fd, key) {
                return Ok(send);
            }
        }
        // SAFETY: as above.
        let dest = unsafe { addr::decode(name, m.msg_namelen) };
        match guarded(
            || ops::plan_send(generation, fd, dest, key, flags, control.unwrap_or(&[])),
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

/// `sendto`'s buffer and address as a message without control data, to
/// send with `sendmsg` once a cmsg is added. `iov` must outlive it.
fn sendto_as_msg(iov: &iovec, addr: *const sockaddr, alen: socklen_t) -> msghdr {
    // SAFETY: a zeroed msghdr is a valid empty message.
    let mut m: msghdr = unsafe { std::mem::zeroed() };
    m.msg_name = addr.cast_mut().cast::<c_void>();
    m.msg_namelen = alen;
    m.msg_iov = (iov as *const iovec).cast_mut();
    m.msg_iovlen = 1;
    m
}
