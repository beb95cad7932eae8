//! The xfrm interface with a given `if_id`, found over netlink
//! (`NETLINK_ROUTE`, a dump of the links): what `ip -d link show type
//! xfrm` prints, without a process. `ldsaref updown` names the interface
//! in every up call of an xfrm-interface connection, while the IKE daemon
//! waits; an `ip` process cost most of such a call in the emulated guest
//! of the end-to-end test.

use std::io;

use crate::netlink::{self, Dump, Message, Socket, NLM_F_DUMP, NLM_F_REQUEST};

const NETLINK_ROUTE: libc::c_int = 0;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
/// `struct ifinfomsg`: family, pad, type, index, flags, change.
const IFINFOMSG: usize = 16;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_XFRM_IF_ID: u16 = 2;

/// The name of the xfrm interface whose `if_id` is `id` in this network
/// namespace; `None` when there is none (the first, in the kernel's order,
/// if several share it).
pub fn xfrm_interface(id: u32) -> io::Result<Option<String>> {
    // Retried when the links changed while the dump ran.
    Socket::open(NETLINK_ROUTE)?.dump(
        1..10,
        dump_request,
        |msgs, seq, found| read_links(msgs, seq, id, found),
        "the links kept changing while they were listed",
    )
}

/// `RTM_GETLINK`, a dump of every link.
fn dump_request(seq: u32) -> Vec<u8> {
    netlink::request(
        RTM_GETLINK,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        &[0; IFINFOMSG],
    )
}

/// Sets `found` to the first xfrm interface with `if_id` `id` among `msgs`
/// (one datagram of the dump `seq`), unless one was found already.
fn read_links(
    msgs: &[Message<'_>],
    seq: u32,
    id: u32,
    found: &mut Option<String>,
) -> io::Result<Dump> {
    netlink::dump_datagram(msgs, seq, |m| {
        if m.kind != RTM_NEWLINK || m.payload.len() < IFINFOMSG || found.is_some() {
            return;
        }
        let (mut name, mut if_id) = (None, None);
        for (kind, value) in netlink::attributes(&m.payload[IFINFOMSG..]) {
            match kind {
                IFLA_IFNAME => {
                    let text = value.split(|b| *b == 0).next().unwrap_or_default();
                    name = Some(String::from_utf8_lossy(text).into_owned());
                }
                IFLA_LINKINFO => if_id = xfrm_if_id(value),
                _ => {}
            }
        }
        if if_id == Some(id) {
            *found = name;
        }
    })
}

/// The `if_id` in an `IFLA_LINKINFO` whose kind is `xfrm`.
fn xfrm_if_id(linkinfo: &[u8]) -> Option<u32> {
    let mut xfrm = false;
    let mut id = None;
    for (kind, value) in netlink::attributes(linkinfo) {
        match kind {
            IFLA_INFO_KIND => xfrm = value.split(|b| *b == 0).next() == Some(b"xfrm"),
            IFLA_INFO_DATA => {
                id = netlink::attributes(value)
                    .find(|(k, _)| *k == IFLA_XFRM_IF_ID)
                    .and_then(|(_, v)| Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?)));
            }
            _ => {}
        }
    }
    id.filter(|_| xfrm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlink::{NLMSG_DONE, NLM_F_DUMP_INTR};

    /// An RTM_NEWLINK as the kernel sends it: ifinfomsg, name, and a link
    /// info of `kind` with `if_id` in its data.
    fn link(seq: u32, name: &str, kind: &str, if_id: Option<u32>, flags: u16) -> Vec<u8> {
        let mut body = vec![0u8; IFINFOMSG];
        body[4] = 7;
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        netlink::put_attribute(&mut body, IFLA_IFNAME, &n);
        netlink::put_attribute(&mut body, 4, &1500u32.to_ne_bytes());
        let mut info = Vec::new();
        let mut k = kind.as_bytes().to_vec();
        k.push(0);
        netlink::put_attribute(&mut info, IFLA_INFO_KIND, &k);
        if let Some(id) = if_id {
            let mut data = Vec::new();
            netlink::put_attribute(&mut data, 1, &3u32.to_ne_bytes());
            netlink::put_attribute(&mut data, IFLA_XFRM_IF_ID, &id.to_ne_bytes());
            netlink::put_attribute(&mut info, 0x8000 | IFLA_INFO_DATA, &data);
        }
        netlink::put_attribute(&mut body, 0x8000 | IFLA_LINKINFO, &info);
        netlink::request(RTM_NEWLINK, flags | 2, seq, &body)
    }

    fn done(seq: u32, flags: u16) -> Vec<u8> {
        netlink::request(NLMSG_DONE, flags | 2, seq, &0i32.to_ne_bytes())
    }

    fn read(buf: &[u8], seq: u32, id: u32) -> (io::Result<Dump>, Option<String>) {
        let mut found = None;
        let msgs = netlink::messages(buf).unwrap();
        (read_links(&msgs, seq, id, &mut found), found)
    }

    #[test]
    fn the_request_is_a_dump_of_links() {
        let m = dump_request(4);
        assert_eq!(m.len(), 16 + IFINFOMSG);
        assert_eq!(u16::from_ne_bytes([m[4], m[5]]), RTM_GETLINK);
        assert_eq!(u16::from_ne_bytes([m[6], m[7]]), 1 | 0x300);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 4);
    }

    #[test]
    fn the_xfrm_interface_is_found_by_its_id() {
        let mut buf = link(1, "lo", "", None, 0);
        // A vti or another kind with an attribute 2 of its own is not it.
        buf.extend(link(1, "vti2", "vti", Some(2), 0));
        buf.extend(link(1, "ipsec1", "xfrm", Some(1), 0));
        buf.extend(link(1, "ipsec2", "xfrm", Some(2), 0));
        buf.extend(link(9, "stale", "xfrm", Some(2), 0));
        let (dump, found) = read(&buf, 1, 2);
        assert_eq!(dump.unwrap(), Dump::More(false));
        assert_eq!(found.as_deref(), Some("ipsec2"));
        assert_eq!(read(&buf, 1, 1).1.as_deref(), Some("ipsec1"));
        assert_eq!(read(&buf, 1, 3).1, None);

        let mut end = link(1, "ipsec3", "xfrm", Some(3), NLM_F_DUMP_INTR);
        end.extend(done(1, 0));
        let (dump, found) = read(&end, 1, 3);
        assert_eq!(dump.unwrap(), Dump::Done(true));
        assert_eq!(found.as_deref(), Some("ipsec3"));
    }
}
