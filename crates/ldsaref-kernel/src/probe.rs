//! What this kernel and these privileges support, asked once.
//!
//! A stock kernel answers `ENOPROTOOPT` to the SAref options and `EINVAL`
//! to a REFINFO cmsg; since `EINVAL` from `sendmsg` has many causes, the
//! library asks here, once, on a throw-away socket, instead of guessing
//! from each failed datagram.

use ldsaref_rules::settings::KlipsAbi;

use crate::opts::{SarefOpts, SOL_IP, SOL_SOCKET, SO_MARK, SO_RCVMARK};

/// The few socket calls a probe needs. The library implements it with the
/// next definitions in the link chain (so a test emulator sees the probe);
/// the command line with plain libc ([`Libc`]).
pub trait SockCalls {
    /// `socket(domain, SOCK_DGRAM | SOCK_CLOEXEC, 0)`, or the errno.
    fn udp_socket(&self, domain: i32) -> Result<i32, i32>;
    /// `setsockopt` of an int, or the errno.
    fn set_int(&self, fd: i32, level: i32, opt: i32, value: i32) -> Result<(), i32>;
    /// `close`, result ignored: the socket was only a probe.
    fn close(&self, fd: i32);
}

/// One capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    Yes,
    /// The errno the kernel answered.
    No(i32),
}

impl Support {
    pub fn is_yes(self) -> bool {
        self == Support::Yes
    }

    fn of(r: Result<(), i32>) -> Support {
        match r {
            Ok(()) => Support::Yes,
            Err(e) => Support::No(e),
        }
    }
}

/// SAref support of one ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SarefSupport {
    pub bindref: Support,
    pub refinfo: Support,
}

/// Asks the kernel whether it has the SAref patches for `abi`.
///
/// `IP_IPSEC_REFINFO` is asked as the receive flag on a UDP socket. For
/// `IP_IPSEC_BINDREF`, binding to 0 (none) is harmless. Under the legacy
/// numbers a mainline kernel accepts 23 as `IP_CHECKSUM`, so BINDREF only
/// counts there when REFINFO (22, `IP_NODEFRAG`, raw sockets only on
/// mainline) was accepted too.
pub fn saref_support(calls: &dyn SockCalls, abi: KlipsAbi) -> SarefSupport {
    let o = SarefOpts::for_abi(abi);
    let fd = match calls.udp_socket(libc::AF_INET) {
        Ok(fd) => fd,
        Err(e) => {
            return SarefSupport {
                bindref: Support::No(e),
                refinfo: Support::No(e),
            }
        }
    };
    let refinfo = Support::of(calls.set_int(fd, SOL_IP, o.refinfo, 1));
    let _ = calls.set_int(fd, SOL_IP, o.refinfo, 0);
    let mut bindref = Support::of(calls.set_int(fd, SOL_IP, o.bindref, 0));
    if abi == KlipsAbi::Legacy && !refinfo.is_yes() {
        bindref = refinfo;
    }
    calls.close(fd);
    SarefSupport { bindref, refinfo }
}

/// Whether `SO_MARK` may be set (needs `CAP_NET_ADMIN`).
pub fn mark_support(calls: &dyn SockCalls) -> Support {
    sock_opt_support(calls, SO_MARK, 0)
}

/// Whether `SO_RCVMARK` exists (Linux 5.19+).
pub fn rcvmark_support(calls: &dyn SockCalls) -> Support {
    sock_opt_support(calls, SO_RCVMARK, 1)
}

fn sock_opt_support(calls: &dyn SockCalls, opt: i32, value: i32) -> Support {
    match calls.udp_socket(libc::AF_INET) {
        Ok(fd) => {
            let r = Support::of(calls.set_int(fd, SOL_SOCKET, opt, value));
            calls.close(fd);
            r
        }
        Err(e) => Support::No(e),
    }
}

/// [`SockCalls`] through the C library, for the command line.
pub struct Libc;

impl SockCalls for Libc {
    fn udp_socket(&self, domain: i32) -> Result<i32, i32> {
        // SAFETY: plain syscall wrapper with integer arguments.
        let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            Err(errno())
        } else {
            Ok(fd)
        }
    }

    fn set_int(&self, fd: i32, level: i32, opt: i32, value: i32) -> Result<(), i32> {
        // SAFETY: `value` lives across the call and its size is passed.
        let r = unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                (&value as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if r < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }

    fn close(&self, fd: i32) {
        // SAFETY: `fd` was returned by `udp_socket` and is closed once.
        unsafe { libc::close(fd) };
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A kernel that knows only the options in `known`.
    struct Fake {
        known: Vec<(i32, i32)>,
        calls: RefCell<Vec<(i32, i32, i32)>>,
    }

    impl SockCalls for Fake {
        fn udp_socket(&self, _: i32) -> Result<i32, i32> {
            Ok(7)
        }
        fn set_int(&self, _: i32, level: i32, opt: i32, value: i32) -> Result<(), i32> {
            self.calls.borrow_mut().push((level, opt, value));
            if self.known.contains(&(level, opt)) {
                Ok(())
            } else {
                Err(libc::ENOPROTOOPT)
            }
        }
        fn close(&self, _: i32) {}
    }

    #[test]
    fn stock_kernel_has_no_saref() {
        let k = Fake {
            known: vec![],
            calls: RefCell::new(vec![]),
        };
        let s = saref_support(&k, KlipsAbi::Current);
        assert_eq!(s.bindref, Support::No(libc::ENOPROTOOPT));
        assert_eq!(s.refinfo, Support::No(libc::ENOPROTOOPT));
    }

    #[test]
    fn legacy_numbers_on_mainline_are_not_mistaken_for_klips() {
        // Mainline accepts 23 (IP_CHECKSUM) but not 22 on a UDP socket.
        let k = Fake {
            known: vec![(SOL_IP, 23)],
            calls: RefCell::new(vec![]),
        };
        let s = saref_support(&k, KlipsAbi::Legacy);
        assert!(!s.bindref.is_yes());
        assert!(!s.refinfo.is_yes());
    }

    #[test]
    fn patched_kernel_is_recognised() {
        let k = Fake {
            known: vec![(SOL_IP, 30), (SOL_IP, 31)],
            calls: RefCell::new(vec![]),
        };
        let s = saref_support(&k, KlipsAbi::Current);
        assert!(s.bindref.is_yes() && s.refinfo.is_yes());
        // The probe binds to 0 (none), never to a real SAref.
        assert!(k.calls.borrow().contains(&(SOL_IP, 31, 0)));
    }
}
