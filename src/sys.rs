//! The socket calls the library itself makes, through the next definitions
//! (see [`crate::next`]), as small safe functions returning the errno.

use std::mem::size_of;

use ldsaref_kernel::opts::{SOL_SOCKET, SO_BINDTODEVICE};
use ldsaref_kernel::probe::SockCalls;
use libc::{c_int, c_void, socklen_t};

use crate::errno;
use crate::fdtable::{Family, Kind};
use crate::next;

pub type Errno = i32;

fn check(r: c_int) -> Result<(), Errno> {
    if r < 0 {
        Err(errno::get())
    } else {
        Ok(())
    }
}

/// `setsockopt` of an `int`.
pub fn set_int(fd: c_int, level: c_int, opt: c_int, value: i32) -> Result<(), Errno> {
    // SAFETY: `value` outlives the call and its exact size is passed.
    check(unsafe {
        next::setsockopt(
            fd,
            level,
            opt,
            (&value as *const i32).cast::<c_void>(),
            size_of::<i32>() as socklen_t,
        )
    })
}

/// `getsockopt` of an `int`.
pub fn get_int(fd: c_int, level: c_int, opt: c_int) -> Result<i32, Errno> {
    let mut v: i32 = 0;
    let mut len = size_of::<i32>() as socklen_t;
    // SAFETY: `v` and `len` outlive the call; `len` is the size of `v`.
    check(unsafe {
        next::getsockopt(
            fd,
            level,
            opt,
            (&mut v as *mut i32).cast::<c_void>(),
            &mut len,
        )
    })?;
    Ok(v)
}

/// `SO_BINDTODEVICE`; an empty name unbinds.
pub fn bind_device(fd: c_int, name: &[u8]) -> Result<(), Errno> {
    // SAFETY: `name` outlives the call and its exact length is passed
    // (the kernel does not need a NUL when the length is given).
    check(unsafe {
        next::setsockopt(
            fd,
            SOL_SOCKET,
            SO_BINDTODEVICE,
            name.as_ptr().cast::<c_void>(),
            name.len() as socklen_t,
        )
    })
}

/// The interface index of `name`, or `ENODEV`.
pub fn if_index(name: &[u8]) -> Result<u32, Errno> {
    let mut buf = [0u8; 17];
    let n = name.len().min(16);
    buf[..n].copy_from_slice(&name[..n]);
    // SAFETY: `buf` is NUL-terminated (at least one trailing zero).
    let i = unsafe { libc::if_nametoindex(buf.as_ptr().cast()) };
    if i == 0 {
        Err(libc::ENODEV)
    } else {
        Ok(i)
    }
}

/// Family and type of a descriptor the library has not seen created.
pub fn socket_kind(fd: c_int) -> Result<(Family, Kind), Errno> {
    let domain = get_int(fd, SOL_SOCKET, libc::SO_DOMAIN)?;
    let ty = get_int(fd, SOL_SOCKET, libc::SO_TYPE)?;
    Ok((family_of(domain), kind_of(ty)))
}

pub fn family_of(domain: c_int) -> Family {
    match domain {
        libc::AF_INET => Family::Inet4,
        libc::AF_INET6 => Family::Inet6,
        _ => Family::Other,
    }
}

/// The type with `SOCK_NONBLOCK`/`SOCK_CLOEXEC` masked off.
pub fn kind_of(ty: c_int) -> Kind {
    match ty & !(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
        libc::SOCK_STREAM => Kind::Stream,
        libc::SOCK_DGRAM => Kind::Dgram,
        _ => Kind::Other,
    }
}

/// [`SockCalls`] for the capability probe, through the next definitions.
pub struct NextCalls;

impl SockCalls for NextCalls {
    fn udp_socket(&self, domain: i32) -> Result<i32, i32> {
        // SAFETY: integer arguments only.
        let fd = unsafe { next::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            Err(errno::get())
        } else {
            Ok(fd)
        }
    }

    fn set_int(&self, fd: i32, level: i32, opt: i32, value: i32) -> Result<(), i32> {
        set_int(fd, level, opt, value)
    }

    fn close(&self, fd: i32) {
        // SAFETY: the probe's own socket, closed once; it never reaches the
        // fd table, which only the hooks fill.
        unsafe { next::close(fd) };
    }
}
