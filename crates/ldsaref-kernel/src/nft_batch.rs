//! Changes of an nf_tables table's set elements and empty chains, sent
//! over netlink as one batch (`NFNL_MSG_BATCH_BEGIN` … `END`): one
//! transaction, all of it or nothing, as `nft -f` makes. `ldsaref apply`
//! replaces a section of its table this way when only elements change (a
//! connection's up or down), without an `nft` process, whose start alone
//! costs an emulated or busy gateway more than the change.
//!
//! Only what that needs: flushing a set, adding interval elements
//! (address → mark), verdict elements (mark → `goto CHAIN`) and plain
//! 64-bit keys (cgroup ids), deleting those keys, adding and deleting
//! chains without rules. The encoding is pure ([`Batch::encode`], checked
//! by unit tests against the layout `nft --debug=netlink` shows);
//! [`Batch::commit`] is the only code that talks to the kernel.

use std::io;

use crate::netlink::{self, Socket, NLM_F_ACK, NLM_F_REQUEST};
use crate::nftables::{
    nfgenmsg, nul_terminated, NETLINK_NETFILTER, NFNL_SUBSYS_NFTABLES, NFTA_CHAIN_NAME,
    NFTA_CHAIN_TABLE, NFT_MSG_NEWCHAIN,
};

/// Acknowledgements and errors without the request's payload (an element
/// message can be 64 KiB).
const NETLINK_CAP_ACK: libc::c_int = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// `NFT_GOTO` (-4), as the kernel reads it: big-endian.
const NFT_GOTO: i32 = -4;
/// The element that ends an interval (`NFT_SET_ELEM_INTERVAL_END`).
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
/// nft's element user data saying an interval runs to the end of the key
/// space (`NFTNL_UDATA_SET_ELEM_FLAGS` = `NFTNL_SET_ELEM_F_INTERVAL_OPEN`):
/// what `nft list` needs to show it as nft wrote it.
const OPEN_INTERVAL: u32 = 1;
/// An attribute's length is 16 bits: a message's element list stays
/// below it.
const ELEMENTS_PER_MESSAGE_BYTES: usize = 60_000;

/// The key width of an interval set: IPv4 or IPv6 addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addr {
    V4,
    V6,
}

impl Addr {
    fn key(self, k: u128) -> Vec<u8> {
        match self {
            // Network byte order, as `ip daddr` loads it.
            Addr::V4 => u32::try_from(k).unwrap_or(u32::MAX).to_be_bytes().to_vec(),
            Addr::V6 => k.to_be_bytes().to_vec(),
        }
    }

    fn max(self) -> u128 {
        match self {
            Addr::V4 => u128::from(u32::MAX),
            Addr::V6 => u128::MAX,
        }
    }
}

/// One message of the batch, before its header: its type (within
/// nf_tables), flags, body, and what it does (for an error's message).
#[derive(Debug)]
struct Command {
    kind: u16,
    flags: u16,
    body: Vec<u8>,
    what: String,
}

/// The changes of one table, in order, committed in one transaction.
#[derive(Debug)]
pub struct Batch {
    family: u8,
    table: String,
    commands: Vec<Command>,
}

impl Batch {
    /// An empty batch for table `family` `table`.
    pub fn new(family: u8, table: &str) -> Batch {
        Batch {
            family,
            table: table.to_owned(),
            commands: Vec::new(),
        }
    }

    /// The number of messages between the batch's begin and end.
    pub fn len(&self) -> usize {
        self.commands.len()
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty()
    }

    /// Every element of set (or map) `set` removed.
    pub fn flush_set(&mut self, set: &str) {
        let body = self.set_body(set);
        self.commands.push(Command {
            kind: NFT_MSG_DELSETELEM,
            flags: NLM_F_REQUEST,
            body,
            what: format!("emptying map {set}"),
        });
    }

    /// Interval elements `(first, last, mark)` (disjoint, in order) added
    /// to map `set` (`type ipv4_addr : mark` or `ipv6_addr : mark`, flags
    /// interval), into an empty map, as nft writes them for the kernel's
    /// interval tree: an end element at 0 when the first interval starts
    /// after it, then each interval's first address with the mark and an
    /// end element at the address after its last (also where the next
    /// interval starts there), unless it runs to the end of the key space.
    pub fn add_intervals(&mut self, set: &str, addr: Addr, elements: &[(u128, u128, u32)]) {
        let mut out = Vec::with_capacity(2 * elements.len() + 1);
        let end = |k: u128| element(&addr.key(k), Some(NFT_SET_ELEM_INTERVAL_END), None, None);
        if elements.first().is_some_and(|(lo, ..)| *lo > 0) {
            out.push(end(0));
        }
        for &(lo, hi, mark) in elements {
            let open = hi >= addr.max();
            out.push(element(
                &addr.key(lo),
                None,
                Some(&value(&mark.to_ne_bytes())),
                open.then(open_interval_udata).as_deref(),
            ));
            if !open {
                out.push(end(hi + 1));
            }
        }
        self.elements(NFT_MSG_NEWSETELEM, set, out, "adding elements to map");
    }

    /// Elements `mark → goto CHAIN` added to map `set` (`type mark :
    /// verdict`).
    pub fn add_gotos(&mut self, set: &str, elements: &[(u32, String)]) {
        let out = elements
            .iter()
            .map(|(mark, chain)| {
                let mut verdict = Vec::new();
                netlink::put_attribute(&mut verdict, NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes());
                netlink::put_attribute(&mut verdict, NFTA_VERDICT_CHAIN, &nul_terminated(chain));
                let mut data = Vec::new();
                netlink::put_attribute(&mut data, NFTA_DATA_VERDICT | NLA_F_NESTED, &verdict);
                element(&mark.to_ne_bytes(), None, Some(&data), None)
            })
            .collect();
        self.elements(NFT_MSG_NEWSETELEM, set, out, "adding elements to map");
    }

    /// 64-bit keys in host byte order (cgroup ids: `type cgroupsv2`)
    /// added to set `set`.
    pub fn add_ids(&mut self, set: &str, ids: &[u64]) {
        self.elements(
            NFT_MSG_NEWSETELEM,
            set,
            id_elements(ids),
            "adding elements to set",
        );
    }

    /// The same keys deleted from set `set` (each must be there).
    pub fn delete_ids(&mut self, set: &str, ids: &[u64]) {
        self.elements(
            NFT_MSG_DELSETELEM,
            set,
            id_elements(ids),
            "deleting elements of set",
        );
    }

    /// A chain without rules nor hook added.
    pub fn add_chain(&mut self, name: &str) {
        let body = self.chain_body(name);
        self.commands.push(Command {
            kind: NFT_MSG_NEWCHAIN,
            flags: NLM_F_REQUEST | NLM_F_CREATE,
            body,
            what: format!("adding chain {name}"),
        });
    }

    /// A chain deleted (it must have no rules and nothing may jump to it).
    pub fn delete_chain(&mut self, name: &str) {
        let body = self.chain_body(name);
        self.commands.push(Command {
            kind: NFT_MSG_DELCHAIN,
            flags: NLM_F_REQUEST,
            body,
            what: format!("deleting chain {name}"),
        });
    }

    fn chain_body(&self, name: &str) -> Vec<u8> {
        let mut body = nfgenmsg(self.family, 0);
        netlink::put_attribute(&mut body, NFTA_CHAIN_TABLE, &nul_terminated(&self.table));
        netlink::put_attribute(&mut body, NFTA_CHAIN_NAME, &nul_terminated(name));
        body
    }

    fn set_body(&self, set: &str) -> Vec<u8> {
        let mut body = nfgenmsg(self.family, 0);
        netlink::put_attribute(
            &mut body,
            NFTA_SET_ELEM_LIST_TABLE,
            &nul_terminated(&self.table),
        );
        netlink::put_attribute(&mut body, NFTA_SET_ELEM_LIST_SET, &nul_terminated(set));
        body
    }

    /// Element messages of `kind` for `set`: as many as the elements need
    /// (an attribute holds at most 64 KiB).
    fn elements(&mut self, kind: u16, set: &str, elements: Vec<Vec<u8>>, what: &str) {
        let flags = if kind == NFT_MSG_NEWSETELEM {
            NLM_F_REQUEST | NLM_F_CREATE
        } else {
            NLM_F_REQUEST
        };
        let mut list: Vec<u8> = Vec::new();
        let flush = |list: &mut Vec<u8>, commands: &mut Vec<Command>| {
            if list.is_empty() {
                return;
            }
            let mut body = self.set_body(set);
            netlink::put_attribute(&mut body, NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, list);
            list.clear();
            commands.push(Command {
                kind,
                flags,
                body,
                what: format!("{what} {set}"),
            });
        };
        let mut commands = Vec::new();
        for e in elements {
            if list.len() + e.len() > ELEMENTS_PER_MESSAGE_BYTES {
                flush(&mut list, &mut commands);
            }
            list.extend_from_slice(&e);
        }
        flush(&mut list, &mut commands);
        self.commands.extend(commands);
    }

    /// The batch as sent, its messages numbered from `seq`: the begin
    /// message, the commands (the last one asks for an acknowledgement;
    /// an error is answered whatever the flags), the end. Also the
    /// sequence number of the last command.
    pub fn encode(&self, seq: u32) -> (Vec<u8>, u32) {
        let mut out = Vec::new();
        let batch = nfgenmsg(libc::AF_UNSPEC as u8, NFNL_SUBSYS_NFTABLES);
        out.extend(netlink::request(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            seq,
            &batch,
        ));
        let mut last = seq;
        for (i, c) in self.commands.iter().enumerate() {
            last = seq + 1 + i as u32;
            let ack = if i + 1 == self.commands.len() {
                NLM_F_ACK
            } else {
                0
            };
            out.extend(netlink::request(
                NFNL_SUBSYS_NFTABLES << 8 | c.kind,
                c.flags | ack,
                last,
                &c.body,
            ));
        }
        out.extend(netlink::request(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            last + 1,
            &batch,
        ));
        (out, last)
    }

    /// Sends the batch and waits for its outcome: `Ok` once the kernel
    /// committed it, the first error otherwise (nothing changed then),
    /// saying which change it refused. Needs `CAP_NET_ADMIN`. A batch
    /// larger than the socket may send at once is refused (`EMSGSIZE`)
    /// before anything is sent.
    pub fn commit(&self) -> io::Result<()> {
        if self.commands.is_empty() {
            return Ok(());
        }
        let sock = Socket::open(NETLINK_NETFILTER)?;
        sock.set_int_option(libc::SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
        sock.set_recv_timeout(std::time::Duration::from_secs(10))?;
        let first = 1;
        let (bytes, last) = self.encode(first);
        // The whole batch goes in one datagram (the kernel reads a batch
        // from one); the send buffer must hold it. SO_SNDBUFFORCE needs
        // CAP_NET_ADMIN, which the batch needs too; the kernel doubles it.
        let want = libc::c_int::try_from(bytes.len() + 4096).unwrap_or(libc::c_int::MAX);
        if sock
            .set_int_option(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want)
            .is_err()
        {
            sock.set_int_option(libc::SOL_SOCKET, libc::SO_SNDBUF, want)?;
        }
        sock.send(&bytes)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = sock.recv(&mut buf)?;
            for m in netlink::messages(&buf[..n])? {
                match m.error() {
                    Some(0) if m.seq == last => return Ok(()),
                    Some(err) if err != 0 => {
                        let e = io::Error::from_raw_os_error(-err);
                        let what = m
                            .seq
                            .checked_sub(first + 1)
                            .and_then(|i| self.commands.get(i as usize))
                            .map_or("committing", |c| c.what.as_str());
                        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// One `NFTA_LIST_ELEM`: its key, flags, data and user data.
fn element(key: &[u8], flags: Option<u32>, data: Option<&[u8]>, udata: Option<&[u8]>) -> Vec<u8> {
    let mut e = Vec::new();
    netlink::put_attribute(&mut e, NFTA_SET_ELEM_KEY | NLA_F_NESTED, &value(key));
    if let Some(flags) = flags {
        netlink::put_attribute(&mut e, NFTA_SET_ELEM_FLAGS, &flags.to_be_bytes());
    }
    if let Some(data) = data {
        netlink::put_attribute(&mut e, NFTA_SET_ELEM_DATA | NLA_F_NESTED, data);
    }
    if let Some(udata) = udata {
        netlink::put_attribute(&mut e, NFTA_SET_ELEM_USERDATA, udata);
    }
    let mut out = Vec::new();
    netlink::put_attribute(&mut out, NFTA_LIST_ELEM | NLA_F_NESTED, &e);
    out
}

/// Elements of 64-bit keys in host byte order, without data.
fn id_elements(ids: &[u64]) -> Vec<Vec<u8>> {
    ids.iter()
        .map(|id| element(&id.to_ne_bytes(), None, None, None))
        .collect()
}

/// `NFTA_DATA_VALUE` holding `bytes`.
fn value(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    netlink::put_attribute(&mut v, NFTA_DATA_VALUE, bytes);
    v
}

/// nft's user data of an open interval: type, length, flags.
fn open_interval_udata() -> Vec<u8> {
    let mut u = vec![1u8, 4];
    u.extend_from_slice(&OPEN_INTERVAL.to_ne_bytes());
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nftables::INET;

    /// The elements of every element message of `b`: (key, flags, data,
    /// user data), each as raw attribute payloads.
    #[allow(clippy::type_complexity)]
    fn elements_of(b: &Batch) -> Vec<(Vec<u8>, Option<u32>, Option<Vec<u8>>, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        for c in &b.commands {
            for (kind, list) in netlink::attributes(&c.body[4..]) {
                if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
                    continue;
                }
                for (_, e) in netlink::attributes(list) {
                    let (mut key, mut flags, mut data, mut udata) = (Vec::new(), None, None, None);
                    for (k, v) in netlink::attributes(e) {
                        match k {
                            NFTA_SET_ELEM_KEY => {
                                key = netlink::attributes(v).next().unwrap().1.to_vec()
                            }
                            NFTA_SET_ELEM_FLAGS => {
                                flags = Some(u32::from_be_bytes(v.try_into().unwrap()))
                            }
                            NFTA_SET_ELEM_DATA => data = Some(v.to_vec()),
                            NFTA_SET_ELEM_USERDATA => udata = Some(v.to_vec()),
                            _ => panic!("unexpected attribute {k}"),
                        }
                    }
                    out.push((key, flags, data, udata));
                }
            }
        }
        out
    }

    fn mark(data: &Option<Vec<u8>>) -> u32 {
        let d = data.as_ref().unwrap();
        let (kind, v) = netlink::attributes(d).next().unwrap();
        assert_eq!(kind, NFTA_DATA_VALUE);
        u32::from_ne_bytes(v.try_into().unwrap())
    }

    #[test]
    fn intervals_are_starts_and_ends_as_nft_writes_them() {
        // What `nft --debug=netlink` sends for
        // { 192.0.2.0/24 : 5, 198.51.100.0-198.51.100.9 : 7,
        //   198.51.100.10/31 : 8, 255.255.255.0/24 : 9 } into an empty
        //   map.
        let ip = |a: [u8; 4]| u128::from(u32::from_be_bytes(a));
        let mut b = Batch::new(INET, "ldsaref");
        b.add_intervals(
            "p0_4",
            Addr::V4,
            &[
                (ip([192, 0, 2, 0]), ip([192, 0, 2, 255]), 5),
                (ip([198, 51, 100, 0]), ip([198, 51, 100, 9]), 7),
                (ip([198, 51, 100, 10]), ip([198, 51, 100, 11]), 8),
                (ip([255, 255, 255, 0]), ip([255, 255, 255, 255]), 9),
            ],
        );
        let got = elements_of(&b);
        let keys: Vec<(Vec<u8>, Option<u32>)> =
            got.iter().map(|(k, f, ..)| (k.clone(), *f)).collect();
        assert_eq!(
            keys,
            vec![
                (vec![0, 0, 0, 0], Some(1)),
                (vec![192, 0, 2, 0], None),
                (vec![192, 0, 3, 0], Some(1)),
                (vec![198, 51, 100, 0], None),
                // Adjacent: an end and a start at the same address.
                (vec![198, 51, 100, 10], Some(1)),
                (vec![198, 51, 100, 10], None),
                (vec![198, 51, 100, 12], Some(1)),
                (vec![255, 255, 255, 0], None),
            ]
        );
        let marks: Vec<u32> = got
            .iter()
            .filter(|(_, f, ..)| f.is_none())
            .map(|(_, _, d, _)| mark(d))
            .collect();
        assert_eq!(marks, [5, 7, 8, 9]);
        assert!(got[..7].iter().all(|e| e.3.is_none()));
        assert_eq!(got[7].3.as_deref(), Some(&[1u8, 4, 1, 0, 0, 0][..]));
        assert!(got.iter().filter(|e| e.1.is_some()).all(|e| e.2.is_none()));
    }

    #[test]
    fn an_interval_from_zero_has_no_end_before_it_and_ipv6_keys_are_16_bytes() {
        let mut b = Batch::new(INET, "ldsaref");
        let net: u128 = 0x2001_0db8 << 96;
        b.add_intervals("p0_6", Addr::V6, &[(0, 9, 1), (net, net + 0xff, 2)]);
        let got = elements_of(&b);
        assert_eq!(got.len(), 4);
        assert_eq!((got[0].0.as_slice(), got[0].1), (&[0u8; 16][..], None));
        assert_eq!(got[1].0, 10u128.to_be_bytes());
        assert_eq!(got[1].1, Some(1));
        assert_eq!(got[2].0, net.to_be_bytes());
        assert_eq!(got[3].0, (net + 0x100).to_be_bytes());
    }

    #[test]
    fn gotos_ids_and_chains() {
        let mut b = Batch::new(INET, "ldsaref");
        b.add_gotos("p0_d", &[(0x7ffe_0000, "deny".to_owned())]);
        b.add_ids("absent", &[0x5a6c]);
        b.delete_ids("absent", &[7]);
        b.delete_chain("sum_p0_absent");
        b.add_chain("sum_p0_00ff");
        b.flush_set("p0_4");
        let kinds: Vec<(u16, u16)> = b.commands.iter().map(|c| (c.kind, c.flags)).collect();
        assert_eq!(
            kinds,
            [
                (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE),
                (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE),
                (NFT_MSG_DELSETELEM, NLM_F_REQUEST),
                (NFT_MSG_DELCHAIN, NLM_F_REQUEST),
                (NFT_MSG_NEWCHAIN, NLM_F_REQUEST | NLM_F_CREATE),
                (NFT_MSG_DELSETELEM, NLM_F_REQUEST),
            ]
        );
        let got = elements_of(&b);
        assert_eq!(got[0].0, 0x7ffe_0000u32.to_ne_bytes());
        let data = got[0].2.clone().unwrap();
        let (kind, verdict) = netlink::attributes(&data).next().unwrap();
        assert_eq!(kind, NFTA_DATA_VERDICT);
        let v: Vec<_> = netlink::attributes(verdict).collect();
        assert_eq!(v[0], (NFTA_VERDICT_CODE, &(-4i32).to_be_bytes()[..]));
        assert_eq!(v[1], (NFTA_VERDICT_CHAIN, &b"deny\0"[..]));
        assert_eq!(got[1].0, 0x5a6cu64.to_ne_bytes());
        assert_eq!(got[2].0, 7u64.to_ne_bytes());
        // A flush names the set and has no element list.
        let flush: Vec<_> = netlink::attributes(&b.commands[5].body[4..]).collect();
        assert_eq!(
            flush,
            [
                (NFTA_SET_ELEM_LIST_TABLE, &b"ldsaref\0"[..]),
                (NFTA_SET_ELEM_LIST_SET, &b"p0_4\0"[..])
            ]
        );
    }

    #[test]
    fn the_batch_is_framed_and_only_its_last_command_asks_for_an_ack() {
        let mut b = Batch::new(INET, "ldsaref");
        b.flush_set("p0_4");
        b.add_chain("x");
        let (bytes, last) = b.encode(7);
        let msgs = netlink::messages(&bytes).unwrap();
        let framing: Vec<(u16, u16, u32)> = msgs.iter().map(|m| (m.kind, m.flags, m.seq)).collect();
        assert_eq!(
            framing,
            [
                (NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 7),
                (0x0a00 | NFT_MSG_DELSETELEM, NLM_F_REQUEST, 8),
                (
                    0x0a00 | NFT_MSG_NEWCHAIN,
                    NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
                    9
                ),
                (NFNL_MSG_BATCH_END, NLM_F_REQUEST, 10),
            ]
        );
        assert_eq!(last, 9);
        // The batch's resource id is nf_tables, big-endian.
        assert_eq!(msgs[0].payload, &[0, 0, 0, 10]);
        assert_eq!(msgs[1].payload[..4], [INET, 0, 0, 0]);
    }

    #[test]
    fn many_elements_are_split_across_messages_under_64k() {
        let mut b = Batch::new(INET, "ldsaref");
        let elements: Vec<(u128, u128, u32)> =
            (0..10_000u128).map(|i| (i * 4, i * 4 + 1, 1)).collect();
        b.add_intervals("p0_4", Addr::V4, &elements);
        assert!(b.len() > 1);
        assert!(b.commands.iter().all(|c| c.body.len() < 65_535));
        // Every start and end is there, in order: 1 start + 1 end each
        // (the first starts at 0).
        let got = elements_of(&b);
        assert_eq!(got.len(), 20_000);
        assert_eq!(got[19_999].0, 39_998u32.to_be_bytes());
        assert_eq!(got[19_999].1, Some(1));
    }
}
