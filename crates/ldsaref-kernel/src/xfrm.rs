//! Outbound XFRM policies over netlink (`NETLINK_XFRM`), for `ldsaref
//! updown`'s fallback block: what `ip xfrm policy update … action block`
//! sends, without a process (the IKE daemon waits for updown, and on a
//! busy or emulated gateway each process costs more than the work).
//!
//! The message is built by a pure function ([`policy_update`]) whose
//! layout is checked by unit tests; [`send`] is the only code that touches
//! a socket. Layouts are those of `<linux/xfrm.h>` on 64-bit Linux
//! (`struct xfrm_userpolicy_info` is 168 bytes there; 32-bit userland on a
//! 64-bit kernel needs the kernel's compat layer, as for `ip`).

use std::io;
use std::net::IpAddr;

use crate::netlink::{Socket, NLMSG_HDR, NLM_F_ACK, NLM_F_REQUEST};

/// `NETLINK_XFRM`.
const NETLINK_XFRM: libc::c_int = 6;
/// `XFRM_MSG_UPDPOLICY`: add, or replace the policy with the same
/// selector, direction and mark.
const XFRM_MSG_UPDPOLICY: u16 = 0x19;
/// `XFRMA_MARK`: `struct xfrm_mark { u32 v; u32 m; }`.
const XFRMA_MARK: u16 = 21;
const XFRM_POLICY_OUT: u8 = 1;
const XFRM_POLICY_BLOCK: u8 = 1;
/// `struct xfrm_selector`.
const SELECTOR: usize = 56;
/// `struct xfrm_userpolicy_info`: the selector, `xfrm_lifetime_cfg` (64),
/// `xfrm_lifetime_cur` (32), priority, index, dir, action, flags, share,
/// padded to 8.
const POLICY_INFO: usize = 168;
const MARK_ATTR: usize = 12;
/// The whole message.
pub const POLICY_UPDATE_LEN: usize = NLMSG_HDR + POLICY_INFO + MARK_ATTR;

/// One outbound policy: a selector (source and destination prefixes, and
/// optionally a protocol and destination port), a mark, an action.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutPolicy {
    pub src: (IpAddr, u8),
    pub dst: (IpAddr, u8),
    /// 0: any.
    pub proto: u8,
    /// 0: any (only with a protocol).
    pub dport: u16,
    pub mark: u32,
    pub mask: u32,
    pub priority: u32,
}

/// The `XFRM_MSG_UPDPOLICY` request that installs `p` with action
/// `block`, sequence number `seq`, asking for an acknowledgement. `None`
/// when the two prefixes are not of the same family.
pub fn policy_update(p: &OutPolicy, seq: u32) -> Option<[u8; POLICY_UPDATE_LEN]> {
    let family = match (p.src.0, p.dst.0) {
        (IpAddr::V4(_), IpAddr::V4(_)) => libc::AF_INET as u16,
        (IpAddr::V6(_), IpAddr::V6(_)) => libc::AF_INET6 as u16,
        _ => return None,
    };
    let mut m = [0u8; POLICY_UPDATE_LEN];
    // struct nlmsghdr
    put32(&mut m, 0, POLICY_UPDATE_LEN as u32);
    put16(&mut m, 4, XFRM_MSG_UPDPOLICY);
    put16(&mut m, 6, NLM_F_REQUEST | NLM_F_ACK);
    put32(&mut m, 8, seq);
    // nlmsg_pid 0: the kernel.
    let info = NLMSG_HDR;
    // struct xfrm_selector
    addr(&mut m[info..info + 16], p.dst.0);
    addr(&mut m[info + 16..info + 32], p.src.0);
    if p.proto != 0 && p.dport != 0 {
        m[info + 32..info + 34].copy_from_slice(&p.dport.to_be_bytes());
        m[info + 34..info + 36].copy_from_slice(&[0xff, 0xff]);
    }
    put16(&mut m, info + 40, family);
    m[info + 42] = p.dst.1;
    m[info + 43] = p.src.1;
    m[info + 44] = p.proto;
    // ifindex 0, user 0.
    // struct xfrm_lifetime_cfg: no byte or packet limit (XFRM_INF), no
    // expiry; the current lifetime stays zero.
    let lft = info + SELECTOR;
    for i in 0..4 {
        m[lft + 8 * i..lft + 8 * i + 8].copy_from_slice(&u64::MAX.to_ne_bytes());
    }
    let tail = info + SELECTOR + 64 + 32;
    put32(&mut m, tail, p.priority);
    // index 0: the kernel picks one.
    m[tail + 8] = XFRM_POLICY_OUT;
    m[tail + 9] = XFRM_POLICY_BLOCK;
    // flags 0, share XFRM_SHARE_ANY (0).
    // struct nlattr + struct xfrm_mark
    let attr = NLMSG_HDR + POLICY_INFO;
    put16(&mut m, attr, MARK_ATTR as u16);
    put16(&mut m, attr + 2, XFRMA_MARK);
    put32(&mut m, attr + 4, p.mark);
    put32(&mut m, attr + 8, p.mask);
    Some(m)
}

fn put16(m: &mut [u8], at: usize, v: u16) {
    m[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}

fn put32(m: &mut [u8], at: usize, v: u32) {
    m[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

/// `xfrm_address_t`: an IPv4 address in its first four bytes.
fn addr(out: &mut [u8], a: IpAddr) {
    match a {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
}

/// Installs the policies, in order, on one netlink socket, and waits for
/// the kernel's answer to each. The first refusal is the error (with the
/// index of the policy it answers); the policies before it stay.
pub fn send(policies: &[OutPolicy]) -> Result<(), (usize, io::Error)> {
    let sock = Socket::open(NETLINK_XFRM).map_err(|e| (0, e))?;
    for (i, p) in policies.iter().enumerate() {
        let seq = i as u32 + 1;
        let msg = policy_update(p, seq).ok_or_else(|| {
            (
                i,
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "source and destination of different families",
                ),
            )
        })?;
        sock.request(&msg, seq).map_err(|e| (i, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get32(m: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(m[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn the_request_has_the_kernels_layout() {
        let p = OutPolicy {
            src: ("128.0.0.0".parse().unwrap(), 1),
            dst: ("198.18.0.0".parse().unwrap(), 24),
            proto: 6,
            dport: 22,
            mark: 0x8065_0000,
            mask: u32::MAX,
            priority: 0xffff_ff00,
        };
        let m = policy_update(&p, 7).unwrap();
        assert_eq!(m.len(), 196);
        assert_eq!(get32(&m, 0), 196);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x19);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 1 | 4);
        assert_eq!(get32(&m, 8), 7);
        let sel = 16;
        assert_eq!(&m[sel..sel + 4], &[198, 18, 0, 0]);
        assert_eq!(&m[sel + 16..sel + 20], &[128, 0, 0, 0]);
        assert_eq!(&m[sel + 32..sel + 36], &[0, 22, 0xff, 0xff]);
        assert_eq!(u16::from_ne_bytes([m[sel + 40], m[sel + 41]]), 2);
        assert_eq!(&m[sel + 42..sel + 45], &[24, 1, 6]);
        assert_eq!(&m[sel + 56..sel + 64], &[0xff; 8]);
        assert_eq!(&m[sel + 88..sel + 96], &[0; 8], "no expiry");
        assert_eq!(get32(&m, sel + 152), 0xffff_ff00);
        assert_eq!(&m[sel + 160..sel + 164], &[1, 1, 0, 0], "out, block");
        assert_eq!(&m[184..196], {
            let mut a = [0u8; 12];
            a[..2].copy_from_slice(&12u16.to_ne_bytes());
            a[2..4].copy_from_slice(&21u16.to_ne_bytes());
            a[4..8].copy_from_slice(&0x8065_0000u32.to_ne_bytes());
            a[8..].copy_from_slice(&u32::MAX.to_ne_bytes());
            a
        });
    }

    #[test]
    fn ipv6_fills_the_whole_address_and_no_port_means_no_mask() {
        let p = OutPolicy {
            src: ("8000::".parse().unwrap(), 1),
            dst: ("2001:db8:1::".parse().unwrap(), 48),
            proto: 0,
            dport: 0,
            mark: 2,
            mask: 0xff,
            priority: 1,
        };
        let m = policy_update(&p, 1).unwrap();
        let d: std::net::Ipv6Addr = "2001:db8:1::".parse().unwrap();
        assert_eq!(&m[16..32], &d.octets());
        assert_eq!(m[32], 0x80);
        assert_eq!(&m[48..52], &[0; 4]);
        assert_eq!(u16::from_ne_bytes([m[56], m[57]]), 10);
        let mixed = OutPolicy {
            src: ("0.0.0.0".parse().unwrap(), 1),
            ..p
        };
        assert!(policy_update(&mixed, 1).is_none());
    }
}
