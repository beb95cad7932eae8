//! The names of an nf_tables table's chains over netlink
//! (`NETLINK_NETFILTER`): what `nft list chains` prints, without a
//! process. `ldsaref apply` reads its fingerprints from the chains' names
//! before every change of the table, and `ldsaref updown` before every
//! change after a down, so on a busy or emulated gateway an `nft`
//! process here costs the IKE daemon's updown calls more than the work.
//!
//! Reading only: the table itself is loaded by `nft -f` (one transaction).

use std::io;

use crate::netlink::{self, Dump, Message, Socket, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

pub(crate) const NETLINK_NETFILTER: libc::c_int = 12;
pub(crate) const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETTABLE: u16 = 1;
pub(crate) const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFTA_TABLE_NAME: u16 = 1;
pub(crate) const NFTA_CHAIN_TABLE: u16 = 1;
pub(crate) const NFTA_CHAIN_NAME: u16 = 3;
/// `struct nfgenmsg`: family, version, resource id.
const NFGENMSG: usize = 4;

/// `NFPROTO_INET`: the family of `table inet NAME`.
pub const INET: u8 = 1;

/// The names of the chains of table `family` `table` in this network
/// namespace, in the kernel's order; `None` when there is no such table.
/// Needs `CAP_NET_ADMIN` (nfnetlink refuses every request without it).
pub fn chains(family: u8, table: &str) -> io::Result<Option<Vec<String>>> {
    let sock = Socket::open(NETLINK_NETFILTER)?;
    let name = nul_terminated(table);
    match sock.request(&table_request(family, &name, 1), 1) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    }
    // A dump is retried when the table changed while it ran (another
    // process's `nft -f`): a half-old list of names could pair an old
    // fingerprint with new sections.
    sock.dump(
        2..10,
        |seq| chain_dump_request(family, &name, seq),
        |msgs, seq, names| read_chains(msgs, seq, table, names),
        "the table kept changing while its chains were listed",
    )
    .map(Some)
}

pub(crate) fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// `struct nfgenmsg`: family, version NFNETLINK_V0, resource id
/// (big-endian; 0 but for a batch's begin and end).
pub(crate) fn nfgenmsg(family: u8, res_id: u16) -> Vec<u8> {
    let mut v = vec![family, 0];
    v.extend_from_slice(&res_id.to_be_bytes());
    v
}

/// `NFT_MSG_GETTABLE` for one table, acknowledged (or `ENOENT`).
fn table_request(family: u8, name: &[u8], seq: u32) -> Vec<u8> {
    nft_request(
        NFT_MSG_GETTABLE,
        NLM_F_REQUEST | NLM_F_ACK,
        family,
        NFTA_TABLE_NAME,
        name,
        seq,
    )
}

/// A dump of the family's chains, naming the table (kernels that filter
/// dumps by table do; the answer is filtered again by [`read_chains`]).
fn chain_dump_request(family: u8, table: &[u8], seq: u32) -> Vec<u8> {
    nft_request(
        NFT_MSG_GETCHAIN,
        NLM_F_REQUEST | NLM_F_DUMP,
        family,
        NFTA_CHAIN_TABLE,
        table,
        seq,
    )
}

/// An nf_tables request of type `msg` with one attribute.
fn nft_request(msg: u16, flags: u16, family: u8, attr: u16, value: &[u8], seq: u32) -> Vec<u8> {
    let mut body = nfgenmsg(family, 0);
    netlink::put_attribute(&mut body, attr, value);
    netlink::request(NFNL_SUBSYS_NFTABLES << 8 | msg, flags, seq, &body)
}

/// Adds the names of `table`'s chains among `msgs` (one datagram of the
/// dump `seq`) to `names`.
fn read_chains(
    msgs: &[Message<'_>],
    seq: u32,
    table: &str,
    names: &mut Vec<String>,
) -> io::Result<Dump> {
    netlink::dump_datagram(msgs, seq, |m| {
        if m.kind != NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN || m.payload.len() < NFGENMSG {
            return;
        }
        let (mut in_table, mut name) = (false, None);
        for (kind, value) in netlink::attributes(&m.payload[NFGENMSG..]) {
            let text = value.strip_suffix(&[0]).unwrap_or(value);
            match kind {
                NFTA_CHAIN_TABLE => in_table = text == table.as_bytes(),
                NFTA_CHAIN_NAME => name = Some(String::from_utf8_lossy(text).into_owned()),
                _ => {}
            }
        }
        if let (true, Some(name)) = (in_table, name) {
            names.push(name);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{NLMSG_DONE, NLM_F_DUMP_INTR};

    fn chain(seq: u32, table: &str, name: &str, flags: u16) -> Vec<u8> {
        let mut body = nfgenmsg(INET, 0);
        netlink::put_attribute(&mut body, NFTA_CHAIN_TABLE, &nul_terminated(table));
        netlink::put_attribute(&mut body, 2, &7u64.to_be_bytes());
        netlink::put_attribute(&mut body, NFTA_CHAIN_NAME, &nul_terminated(name));
        netlink::request(
            NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_NEWCHAIN,
            flags | 2,
            seq,
            &body,
        )
    }

    fn read(buf: &[u8], seq: u32) -> (io::Result<Dump>, Vec<String>) {
        let mut names = Vec::new();
        let msgs = netlink::messages(buf).unwrap();
        (read_chains(&msgs, seq, "ldsaref", &mut names), names)
    }

    #[test]
    fn requests_have_the_kernels_layout() {
        let m = table_request(INET, b"ldsaref\0", 1);
        assert_eq!(m.len(), 16 + 4 + 12);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), 0x0a01);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 1 | 4);
        assert_eq!(&m[16..20], &[1, 0, 0, 0]);
        assert_eq!(&m[20..24], &[12, 0, 1, 0]);
        assert_eq!(&m[24..32], b"ldsaref\0");
        let d = chain_dump_request(INET, b"ldsaref\0", 5);
        assert_eq!(u16::from_ne_bytes([d[4], d[5]]), 0x0a04);
        assert_eq!(u16::from_ne_bytes([d[6], d[7]]), 1 | 0x300);
        assert_eq!(u32::from_ne_bytes(d[8..12].try_into().unwrap()), 5);
    }

    #[test]
    fn only_the_tables_chains_of_this_dump_are_kept() {
        let mut buf = chain(2, "ldsaref", "output", 0);
        buf.extend(chain(2, "other", "input", 0));
        buf.extend(chain(1, "ldsaref", "stale", 0));
        buf.extend(chain(2, "ldsaref", "rules_00ff", 0));
        let (dump, names) = read(&buf, 2);
        assert_eq!(dump.unwrap(), Dump::More(false));
        assert_eq!(names, ["output", "rules_00ff"]);
        buf.extend(netlink::request(NLMSG_DONE, 2, 2, &0i32.to_ne_bytes()));
        assert_eq!(read(&buf, 2).0.unwrap(), Dump::Done(false));
    }

    #[test]
    fn an_interrupted_dump_and_an_error_are_reported() {
        let mut buf = chain(3, "ldsaref", "output", NLM_F_DUMP_INTR);
        buf.extend(netlink::request(NLMSG_DONE, 2, 3, &0i32.to_ne_bytes()));
        assert_eq!(read(&buf, 3).0.unwrap(), Dump::Done(true));
        let mut err = (-libc::EPERM).to_ne_bytes().to_vec();
        err.extend_from_slice(&[0; 16]);
        let buf = netlink::request(netlink::NLMSG_ERROR, 0, 4, &err);
        assert_eq!(
            read(&buf, 4).0.unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
    }
}
