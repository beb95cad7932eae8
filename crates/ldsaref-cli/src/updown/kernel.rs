//! What `ldsaref updown` asks of the kernel: the fallback block policy
//! behind a marked connection (over netlink, in process:
//! `ldsaref_kernel::xfrm`), its netfilter guard (`guard`), and the name
//! of the xfrm interface with a given id (over netlink too:
//! `ldsaref_kernel::link`).
//!
//! # Why a block policy
//!
//! The daemon runs updown on a tunnel's way down, waits for it, then
//! removes its IPsec policies at once. A program keeps the rules it has
//! for up to half a second, and a socket connected while the tunnel was
//! up keeps its mark for ever: the mark's route (fwmark policy routing)
//! would then carry its packets out in the clear. So on up, before the
//! rule that sets the mark is written, updown installs an outbound XFRM
//! policy for the same network and mark with action `block` and the
//! lowest precedence there is. While the daemon's policy is there it wins;
//! once it is gone, a marked packet hits the block and the call fails
//! (`EPERM`) instead of leaving unprotected, whatever the timing. The
//! block is never removed by updown: it costs nothing while the tunnel is
//! up and is what protects it while it is down. Being the last policy the
//! kernel would pick, it does not hold against a policy a daemon installs
//! without the mark; the netfilter guard (`guard`) does.
//!
//! xfrm interfaces need none: a packet routed into one without a policy
//! is dropped by the interface.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ldsaref_kernel::xfrm::{self, OutPolicy};
use ldsaref_kernel::{link, nftables};

use super::call::{Sa, Selector};
use super::guard::{self, Guard};

/// Lower precedence than any daemon's policy (pluto's are in the
/// thousands, charon's below 2^20, trap and fallback ones included).
pub const BLOCK_PRIORITY: u32 = 0xffff_ff00;

/// The kernel operations updown needs; a trait so that the command's
/// logic is tested without root.
pub trait Xfrm {
    /// Installs (or refreshes) the block policy behind `sel` for `sa`.
    fn block(&self, sel: &Selector, sa: &Sa) -> Result<(), String>;
    /// Installs (unless it is there) the netfilter guard behind `sel` for
    /// `sa` (see `guard`).
    fn guard(&self, sel: &Selector, sa: &Sa) -> Result<(), String>;
    /// The name of the xfrm interface whose `if_id` is `id`.
    fn interface(&self, id: u32) -> Result<String, String>;
}

/// The block policies for a connection's network and mark: two, one per
/// half of the source address space, because a policy with the same
/// selector and mark as the daemon's would *replace* it (the kernel keys
/// policies by selector and mark, not priority), and no daemon installs
/// /1 source selectors.
pub fn block_policies(sel: &Selector, value: u32, mask: u32) -> Result<Vec<OutPolicy>, String> {
    let (dst, len) = sel.peer_net()?;
    let halves: [IpAddr; 2] = if dst.is_ipv4() {
        [
            Ipv4Addr::new(0, 0, 0, 0).into(),
            Ipv4Addr::new(128, 0, 0, 0).into(),
        ]
    } else {
        [
            Ipv6Addr::UNSPECIFIED.into(),
            Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0).into(),
        ]
    };
    Ok(halves
        .into_iter()
        .map(|src| OutPolicy {
            src: (src, 1),
            dst: (dst, len),
            proto: sel.proto,
            dport: if sel.proto != 0 { sel.port } else { 0 },
            mark: value,
            mask,
            priority: BLOCK_PRIORITY,
        })
        .collect())
}

/// `p` as iproute2 would install it, to name it in messages:
/// `xfrm policy update src … dst … [proto P [dport D]] dir out mark … mask
/// … action block priority …`.
pub fn command(p: &OutPolicy) -> String {
    let mut c = format!(
        "xfrm policy update src {}/{} dst {}/{}",
        p.src.0, p.src.1, p.dst.0, p.dst.1
    );
    // The selector's protocol and port come before `dir`.
    if p.proto != 0 {
        c += &format!(" proto {}", p.proto);
        if p.dport != 0 {
            c += &format!(" dport {}", p.dport);
        }
    }
    c + &format!(
        " dir out mark {:#x} mask {:#x} action block priority {}",
        p.mark, p.mask, p.priority
    )
}

/// The real kernel, over netlink: policies, interfaces, and `nft` for the
/// guard.
pub struct Real;

impl Xfrm for Real {
    fn block(&self, sel: &Selector, sa: &Sa) -> Result<(), String> {
        let Sa::Mark { value, mask } = *sa else {
            return Ok(());
        };
        // Both halves on one netlink socket; a refusal names the policy
        // as `ip` would write it.
        let policies = block_policies(sel, value, mask)?;
        xfrm::send(&policies)
            .map_err(|(i, e)| format!("ip {}: {e}", command(&policies[i.min(policies.len() - 1)])))
    }

    fn guard(&self, sel: &Selector, sa: &Sa) -> Result<(), String> {
        let Sa::Mark { value, mask } = *sa else {
            return Ok(());
        };
        let guard = Guard::new(sel, value, mask)?;
        // Serialized with other updowns of this namespace whatever their
        // rules directory: each rewrites the base chain from the guard
        // chains it listed.
        let _lock = crate::apply::namespace_file_locked("guard")?;
        let chains = nftables::chains(nftables::INET, guard::TABLE)
            .map_err(|e| format!("cannot list table inet {}: {e}", guard::TABLE))?;
        match guard::batch(chains.as_deref(), &guard) {
            None => Ok(()),
            Some(batch) => crate::nft::run_batch(&batch),
        }
    }

    fn interface(&self, id: u32) -> Result<String, String> {
        match link::xfrm_interface(id) {
            Ok(Some(name)) => Ok(name),
            Ok(None) => Err(format!(
                "PLUTO_IF_ID_OUT={id}: no xfrm interface has if_id {id} (ip -d link show type xfrm)"
            )),
            Err(e) => Err(format!(
                "PLUTO_IF_ID_OUT={id}: cannot list the network interfaces: {e}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_both_halves_with_the_rules_selector() {
        let sel = Selector {
            mine: "-".into(),
            peer: "198.18.0.0/24".into(),
            proto: 6,
            port: 22,
        };
        let text: Vec<String> = block_policies(&sel, 0x8065_0000, u32::MAX)
            .unwrap()
            .iter()
            .map(command)
            .collect();
        assert_eq!(
            text,
            [
                "xfrm policy update src 0.0.0.0/1 dst 198.18.0.0/24 proto 6 dport 22 dir out mark 0x80650000 mask 0xffffffff action block priority 4294967040",
                "xfrm policy update src 128.0.0.0/1 dst 198.18.0.0/24 proto 6 dport 22 dir out mark 0x80650000 mask 0xffffffff action block priority 4294967040",
            ]
        );
        let v6 = Selector {
            mine: "-".into(),
            peer: "2001:db8:1::/48".into(),
            proto: 0,
            port: 0,
        };
        let text = command(&block_policies(&v6, 2, 0xff).unwrap()[1]);
        assert_eq!(
            text,
            "xfrm policy update src 8000::/1 dst 2001:db8:1::/48 dir out mark 0x2 mask 0xff action block priority 4294967040"
        );
    }

    #[test]
    fn policies_come_from_the_selector() {
        let sel = Selector {
            mine: "-".into(),
            peer: "198.18.0.0/24".into(),
            proto: 17,
            port: 53,
        };
        let p = block_policies(&sel, 0x8065_0000, u32::MAX).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].src, ("0.0.0.0".parse().unwrap(), 1));
        assert_eq!(p[1].src, ("128.0.0.0".parse().unwrap(), 1));
        for p in &p {
            assert_eq!(p.dst, ("198.18.0.0".parse().unwrap(), 24));
            assert_eq!((p.proto, p.dport), (17, 53));
            assert_eq!(
                (p.mark, p.mask, p.priority),
                (0x8065_0000, u32::MAX, BLOCK_PRIORITY)
            );
        }
        let v6 = Selector {
            mine: "-".into(),
            peer: "2001:db8:1::5".into(),
            proto: 0,
            port: 0,
        };
        let p = block_policies(&v6, 2, 0xff).unwrap();
        assert_eq!(p[1].src, ("8000::".parse().unwrap(), 1));
        assert_eq!(p[1].dst, ("2001:db8:1::5".parse().unwrap(), 128));
        let bad = Selector {
            peer: "198.18.0.0/33".into(),
            ..sel
        };
        assert!(block_policies(&bad, 1, 1)
            .unwrap_err()
            .contains("bad prefix length"));
    }
}
