//! Socket addresses from C pointers.

use std::mem::size_of;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use libc::{sa_family_t, sockaddr, sockaddr_in, sockaddr_in6, socklen_t};

/// The inet address at `addr`, or `None` for a null pointer, a non-inet
/// family (including `AF_UNSPEC`, which dissolves a UDP association) or a
/// length too short for the family (the kernel refuses those itself).
///
/// # Safety
/// `addr` is null or valid for reads of `len` bytes: the contract of every
/// libc call that takes a `sockaddr` and a length.
pub unsafe fn decode(addr: *const sockaddr, len: socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    if addr.is_null() || len < size_of::<sa_family_t>() {
        return None;
    }
    // SAFETY: at least the family field is readable (checked above);
    // read_unaligned because C callers owe us no alignment.
    let family = unsafe { std::ptr::read_unaligned(addr.cast::<sa_family_t>()) };
    match i32::from(family) {
        libc::AF_INET if len >= size_of::<sockaddr_in>() => {
            // SAFETY: `len` covers a whole sockaddr_in.
            let sin = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in>()) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len >= size_of::<sockaddr_in6>() => {
            // SAFETY: `len` covers a whole sockaddr_in6.
            let sin6 = unsafe { std::ptr::read_unaligned(addr.cast::<sockaddr_in6>()) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_v4_and_v6_and_rejects_short() {
        let mut sin: sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as sa_family_t;
        sin.sin_port = 8080u16.to_be();
        sin.sin_addr.s_addr = u32::from(Ipv4Addr::new(192, 0, 2, 1)).to_be();
        let p = (&sin as *const sockaddr_in).cast::<sockaddr>();
        let n = size_of::<sockaddr_in>() as socklen_t;
        assert_eq!(
            unsafe { decode(p, n) },
            Some("192.0.2.1:8080".parse().unwrap())
        );
        assert_eq!(unsafe { decode(p, n - 1) }, None);
        assert_eq!(unsafe { decode(std::ptr::null(), n) }, None);

        let mut sin6: sockaddr_in6 = unsafe { std::mem::zeroed() };
        sin6.sin6_family = libc::AF_INET6 as sa_family_t;
        sin6.sin6_port = 53u16.to_be();
        sin6.sin6_addr.s6_addr = "::ffff:198.51.100.7".parse::<Ipv6Addr>().unwrap().octets();
        let p = (&sin6 as *const sockaddr_in6).cast::<sockaddr>();
        let d = unsafe { decode(p, size_of::<sockaddr_in6>() as socklen_t) }.unwrap();
        assert_eq!(d.port(), 53);
        assert_eq!(d.ip().to_canonical().to_string(), "198.51.100.7");
    }
}
