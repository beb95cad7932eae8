//! Hooks on the way in, for `reflect`: the library asks the kernel for the
//! SA of each datagram, records it per peer, and hides the cmsg from an
//! application that did not ask for it.

use libc::{
    c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, sockaddr_storage, socklen_t,
    ssize_t, timespec,
};

use super::{guarded, ControlBuf, CONTROL_CAP, MMSG_CONTROL_CAP};
use crate::ops::{self, RecvMode};
use crate::{addr, errno, next};

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
    // SAFETY: `ours` was just filled by the kernel.
    let ctl = unsafe { record(fd, mode, ours) };
    let clen = ctl.len();
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
    // SAFETY: `filled` was just filled by the kernel.
    let ctl = unsafe { record(fd, mode, filled) };
    if mode.strip && !ctl.is_empty() {
        app.msg_controllen = ldsaref_kernel::cmsg::remove(ctl, ctl.len(), mode.level, mode.ty);
    }
}

/// Records what the datagram the kernel just put in `filled` came in with
/// (its peer and the mode's cmsg), and returns its control data.
///
/// # Safety
/// `filled` was just filled by the kernel: its name holds `msg_namelen`
/// bytes (or is null) and its control `msg_controllen` bytes (or is null).
unsafe fn record<'a>(fd: c_int, mode: RecvMode, filled: &msghdr) -> &'a mut [u8] {
    let clen = filled.msg_controllen;
    let ctl: &mut [u8] = if filled.msg_control.is_null() || clen == 0 {
        &mut []
    } else {
        // SAFETY: per the function's contract.
        unsafe { std::slice::from_raw_parts_mut(filled.msg_control.cast::<u8>(), clen) }
    };
    // SAFETY: per the function's contract.
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
    ctl
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
