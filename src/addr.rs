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

/// A destination as the remembered decisions ([`crate::ops`]' memo) compare
/// it: the bytes of the `sockaddr` that [`decode`] reads, as words, so
/// that a repeated call is recognised without decoding its address. Two
/// keys are equal exactly when [`decode`] gives equal addresses (the family
/// is part of the first word, so a v4 key never equals a v6 one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key(pub [u64; 4]);

/// [`Key`] of the address at `addr`, under the same conditions as
/// [`decode`]: `None` exactly when it returns `None`.
///
/// # Safety
/// As for [`decode`].
#[inline]
pub unsafe fn key(addr: *const sockaddr, len: socklen_t) -> Option<Key> {
    let len = len as usize;
    if addr.is_null() || len < size_of::<sa_family_t>() {
        return None;
    }
    let p = addr.cast::<u8>();
    // SAFETY: as in `decode`: the family first, then only as many bytes as
    // the family's whole structure, which `len` covers.
    unsafe {
        let family = std::ptr::read_unaligned(p.cast::<sa_family_t>());
        let word = |at: usize| std::ptr::read_unaligned(p.add(at).cast::<u64>());
        match i32::from(family) {
            // family, port, address: all that decode reads.
            libc::AF_INET if len >= size_of::<sockaddr_in>() => Some(Key([word(0), 0, 0, 0])),
            // family, port, flowinfo; address; scope id.
            libc::AF_INET6 if len >= size_of::<sockaddr_in6>() => Some(Key([
                word(0),
                word(8),
                word(16),
                u64::from(std::ptr::read_unaligned(p.add(24).cast::<u32>())),
            ])),
            _ => None,
        }
    }
}

impl Key {
    /// The key of an address [`decode`] returned (equal to [`key`] of the
    /// `sockaddr` it was decoded from).
    pub fn of(a: SocketAddr) -> Key {
        let mut w = [0u8; 32];
        match a {
            SocketAddr::V4(a) => {
                w[..2].copy_from_slice(&(libc::AF_INET as sa_family_t).to_ne_bytes());
                w[2..4].copy_from_slice(&a.port().to_be_bytes());
                w[4..8].copy_from_slice(&a.ip().octets());
            }
            SocketAddr::V6(a) => {
                w[..2].copy_from_slice(&(libc::AF_INET6 as sa_family_t).to_ne_bytes());
                w[2..4].copy_from_slice(&a.port().to_be_bytes());
                w[4..8].copy_from_slice(&a.flowinfo().to_ne_bytes());
                w[8..24].copy_from_slice(&a.ip().octets());
                // The scope id is a u32 read into the low half of a u64.
                w[24..32].copy_from_slice(&u64::from(a.scope_id()).to_ne_bytes());
            }
        }
        let word = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&w[i * 8..i * 8 + 8]);
            u64::from_ne_bytes(b)
        };
        Key([word(0), word(1), word(2), word(3)])
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

    #[test]
    fn key_agrees_with_decode() {
        let mut sin: sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as sa_family_t;
        sin.sin_port = 8080u16.to_be();
        sin.sin_addr.s_addr = u32::from(Ipv4Addr::new(192, 0, 2, 1)).to_be();
        // Garbage where decode does not look.
        sin.sin_zero = [0xa5; 8];
        let p = (&sin as *const sockaddr_in).cast::<sockaddr>();
        let n = size_of::<sockaddr_in>() as socklen_t;
        let k = unsafe { key(p, n) }.unwrap();
        assert_eq!(k, Key::of(unsafe { decode(p, n) }.unwrap()));
        assert_eq!(unsafe { key(p, n - 1) }, None);
        assert_eq!(unsafe { key(std::ptr::null(), n) }, None);
        sin.sin_port = 8081u16.to_be();
        let p = (&sin as *const sockaddr_in).cast::<sockaddr>();
        assert_ne!(unsafe { key(p, n) }, Some(k));

        let mut sin6: sockaddr_in6 = unsafe { std::mem::zeroed() };
        sin6.sin6_family = libc::AF_INET6 as sa_family_t;
        sin6.sin6_port = 53u16.to_be();
        sin6.sin6_flowinfo = 0x12345;
        sin6.sin6_scope_id = 7;
        sin6.sin6_addr.s6_addr = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        let p = (&sin6 as *const sockaddr_in6).cast::<sockaddr>();
        let n = size_of::<sockaddr_in6>() as socklen_t;
        let k6 = unsafe { key(p, n) }.unwrap();
        assert_eq!(k6, Key::of(unsafe { decode(p, n) }.unwrap()));
        assert_ne!(k6, k);
        assert_eq!(unsafe { key(p, n - 1) }, None);
        sin6.sin6_scope_id = 8;
        let p = (&sin6 as *const sockaddr_in6).cast::<sockaddr>();
        assert_ne!(unsafe { key(p, n) }, Some(k6));

        let mut un: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        un.sun_family = libc::AF_UNIX as sa_family_t;
        let p = (&un as *const libc::sockaddr_un).cast::<sockaddr>();
        assert_eq!(
            unsafe { key(p, size_of::<libc::sockaddr_un>() as socklen_t) },
            None
        );
    }
}
