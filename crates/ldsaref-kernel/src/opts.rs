//! Option numbers and encodings, from the Openswan SAref kernel patches
//! and the mainline kernel's headers.

use ldsaref_rules::settings::KlipsAbi;
use ldsaref_rules::Saref;

/// `SOL_IP` / `IPPROTO_IP`, the level of both SAref options and cmsgs.
pub const SOL_IP: i32 = 0;
/// `SOL_SOCKET`.
pub const SOL_SOCKET: i32 = 1;
/// `SOL_IPV6` / `IPPROTO_IPV6`.
pub const SOL_IPV6: i32 = 41;
/// `SO_BINDTODEVICE` (level `SOL_SOCKET`).
pub const SO_BINDTODEVICE: i32 = 25;
/// `SO_MARK` (level `SOL_SOCKET`); also a send cmsg type. Needs `CAP_NET_ADMIN`.
pub const SO_MARK: i32 = 36;
/// `SO_RCVMARK` (level `SOL_SOCKET`, Linux 5.19+): report the mark of
/// received datagrams as an `SO_MARK` cmsg.
pub const SO_RCVMARK: i32 = 75;
/// `IP_PKTINFO` (level `SOL_IP`): send cmsg choosing the outgoing interface.
pub const IP_PKTINFO: i32 = 8;
/// `IPV6_PKTINFO` (level `SOL_IPV6`).
pub const IPV6_PKTINFO: i32 = 50;

/// The two SAref socket options of one kernel ABI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SarefOpts {
    /// `IP_IPSEC_REFINFO`: per-datagram cmsg, and the setsockopt flag that
    /// asks for a receive cmsg.
    pub refinfo: i32,
    /// `IP_IPSEC_BINDREF`: binds a socket to an SAref.
    pub bindref: i32,
}

impl SarefOpts {
    /// Options 30/31 of current patches, or 22/23 of legacy ones. Mainline
    /// Linux later reused 22/23 for `IP_NODEFRAG`/`IP_CHECKSUM`, which is
    /// why the legacy numbers are only used when asked for.
    pub const fn for_abi(abi: KlipsAbi) -> SarefOpts {
        match abi {
            KlipsAbi::Current => SarefOpts {
                refinfo: 30,
                bindref: 31,
            },
            KlipsAbi::Legacy => SarefOpts {
                refinfo: 22,
                bindref: 23,
            },
        }
    }
}

/// The nfmark `_updown.mast` writes for an SAref: KLIPS in mast mode reads
/// the SAref back from it, and fwmark rules can match it on any kernel.
pub fn mast_mark(saref: Saref) -> u32 {
    (((saref.get() as u32) & 0x7fff) << 16) | 0x8000_0000
}

/// The SAref carried by a mast-encoded mark, if it is one.
pub const fn saref_of_mast_mark(mark: u32) -> Option<u16> {
    if mark & 0x8000_0000 == 0 {
        return None;
    }
    let v = ((mark >> 16) & 0x7fff) as u16;
    if v == 0 {
        None
    } else {
        Some(v)
    }
}

/// Applies a masked mark to the mark a socket already has: only the bits
/// in `mask` change.
pub const fn merge_mark(current: u32, value: u32, mask: u32) -> u32 {
    (current & !mask) | (value & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mast_encoding_matches_updown_mast() {
        let s = Saref::new(101).unwrap();
        assert_eq!(mast_mark(s), 0x8065_0000);
        assert_eq!(saref_of_mast_mark(0x8065_0000), Some(101));
        let max = Saref::new(32767).unwrap();
        assert_eq!(mast_mark(max), 0xffff_0000);
        assert_eq!(saref_of_mast_mark(0x0065_0000), None);
        assert_eq!(saref_of_mast_mark(0x8000_0000), None);
    }

    #[test]
    fn abi_numbers() {
        assert_eq!(SarefOpts::for_abi(KlipsAbi::Current).bindref, 31);
        assert_eq!(SarefOpts::for_abi(KlipsAbi::Current).refinfo, 30);
        assert_eq!(SarefOpts::for_abi(KlipsAbi::Legacy).bindref, 23);
        assert_eq!(SarefOpts::for_abi(KlipsAbi::Legacy).refinfo, 22);
    }

    #[test]
    fn masked_mark_changes_only_masked_bits() {
        assert_eq!(merge_mark(0x1234_0001, 0x200, 0xff00), 0x1234_0201);
        assert_eq!(merge_mark(0xffff_ffff, 0x5, 0xffff_ffff), 0x5);
    }
}
