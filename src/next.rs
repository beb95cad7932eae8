//! The next definition of each hooked symbol (`dlsym(RTLD_NEXT, …)`).
//!
//! Every socket call the library makes goes through here, never to a raw
//! syscall, so that whatever is loaded after it (libc, a test emulator,
//! another preload) sees it. Symbols are resolved on first use and cached
//! in an atomic: resolving twice from two threads is harmless.

use std::sync::atomic::{AtomicUsize, Ordering};

use libc::{
    c_char, c_int, c_uint, c_void, iovec, mmsghdr, msghdr, size_t, sockaddr, socklen_t, ssize_t,
    timespec,
};

/// The lookup on first use (or again, while there is no next definition).
#[cold]
#[inline(never)]
fn resolve(slot: &AtomicUsize, name: &'static [u8]) -> usize {
    // SAFETY: `name` is a NUL-terminated literal; RTLD_NEXT asks for the
    // next object after this library in the lookup order.
    let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast::<c_char>()) } as usize;
    slot.store(p, Ordering::Release);
    p
}

/// No next definition of a symbol: `-1`/`ENOSYS`.
#[cold]
#[inline(never)]
fn missing<T: From<i8>>() -> T {
    crate::errno::set(libc::ENOSYS);
    T::from(-1)
}

macro_rules! next_fns {
    ($( $name:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty ; )*) => {
        $(
            /// Calls the next definition of the symbol of the same name;
            /// `-1`/`ENOSYS` if there is none.
            ///
            /// # Safety
            /// Same contract as the C function.
            // The usual case is a load, a test and a jump to the cached
            // address; the first call's lookup is out of line (`first_call`),
            // so that a hook that only forwards needs no stack frame.
            #[inline]
            pub unsafe fn $name($($arg: $ty),*) -> $ret {
                static SLOT: AtomicUsize = AtomicUsize::new(0);

                #[cold]
                #[inline(never)]
                unsafe fn first_call($($arg: $ty),*) -> $ret {
                    let p = resolve(&SLOT, concat!(stringify!($name), "\0").as_bytes());
                    if p == 0 {
                        return missing();
                    }
                    // SAFETY: as below.
                    let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
                    // SAFETY: the caller's contract is the C function's.
                    unsafe { f($($arg),*) }
                }

                let p = SLOT.load(Ordering::Acquire);
                if p == 0 {
                    // SAFETY: the caller's contract is the C function's.
                    return unsafe { first_call($($arg),*) };
                }
                // SAFETY: `p` is the address of the C function of this name,
                // whose prototype is the one declared here.
                let f: unsafe extern "C" fn($($ty),*) -> $ret = unsafe { std::mem::transmute(p) };
                // SAFETY: the caller's contract is the C function's.
                unsafe { f($($arg),*) }
            }
        )*
    };
}

next_fns! {
    socket(domain: c_int, ty: c_int, protocol: c_int) -> c_int;
    socketpair(domain: c_int, ty: c_int, protocol: c_int, sv: *mut c_int) -> c_int;
    connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int;
    accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int;
    accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int;
    sendto(fd: c_int, buf: *const c_void, len: size_t, flags: c_int, addr: *const sockaddr, alen: socklen_t) -> ssize_t;
    sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t;
    sendmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int) -> c_int;
    send(fd: c_int, buf: *const c_void, len: size_t, flags: c_int) -> ssize_t;
    write(fd: c_int, buf: *const c_void, len: size_t) -> ssize_t;
    writev(fd: c_int, iov: *const iovec, iovcnt: c_int) -> ssize_t;
    setsockopt(fd: c_int, level: c_int, opt: c_int, val: *const c_void, len: socklen_t) -> c_int;
    getsockopt(fd: c_int, level: c_int, opt: c_int, val: *mut c_void, len: *mut socklen_t) -> c_int;
    recvfrom(fd: c_int, buf: *mut c_void, len: size_t, flags: c_int, addr: *mut sockaddr, alen: *mut socklen_t) -> ssize_t;
    recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t;
    recvmmsg(fd: c_int, msgs: *mut mmsghdr, vlen: c_uint, flags: c_int, timeout: *mut timespec) -> c_int;
    close(fd: c_int) -> c_int;
    dup(fd: c_int) -> c_int;
    dup2(old: c_int, new: c_int) -> c_int;
    dup3(old: c_int, new: c_int, flags: c_int) -> c_int;
    close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int;
}
