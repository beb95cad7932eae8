//! One updown call, as the IKE daemon makes it: its verb, the connection,
//! the traffic selector and the SA, read from the variables pluto
//! (libreswan, Openswan) or charon (strongSwan) exports. Pure: the
//! variables come through a closure, so the unit tests replay recordings
//! of the real daemons (`tests/fixtures/updown/`).

use std::net::IpAddr;

use ldsaref_rules::Saref;

/// The variables of the call.
pub type Vars<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What a verb means for the connection's rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An SA is up (`up-client`, `up-host`).
    Up,
    /// The last call for an SA (`down-client`, `down-host`).
    Down,
    /// The policy is in place, with or without an SA (`route-client`):
    /// traffic is held or triggers the SA, never sent in the clear.
    Route,
    /// The policy is gone (`unroute-client`).
    Unroute,
    /// Anything else (`prepare-client`, `update-client`, …).
    Ignore,
}

/// The verb's kind; `-v6` forms are the same verbs.
pub fn kind(verb: &str) -> Kind {
    match verb.strip_suffix("-v6").unwrap_or(verb) {
        "up-client" | "up-host" => Kind::Up,
        "down-client" | "down-host" => Kind::Down,
        "route-client" | "route-host" => Kind::Route,
        "unroute-client" | "unroute-host" => Kind::Unroute,
        _ => Kind::Ignore,
    }
}

/// Which daemon made the call, for the file's header and messages.
pub fn daemon(get: Vars) -> &'static str {
    // charon exports PLUTO_UNIQUEID and PLUTO_VERSION=1.1; pluto neither.
    if get("PLUTO_UNIQUEID").is_some() || get("PLUTO_VERSION").as_deref() == Some("1.1") {
        "charon"
    } else {
        "pluto"
    }
}

/// The traffic an SA carries, as far as ldsaref steers it: the remote
/// network, protocol and port, and the local network (which only tells
/// two subnet pairs with the same remote network apart).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// `PLUTO_MY_CLIENT`, `-` when the daemon gives none.
    pub mine: String,
    /// `PLUTO_PEER_CLIENT` as a CIDR.
    pub peer: String,
    /// 0 (any), 6 or 17.
    pub proto: u8,
    /// 0 (any) or the remote port.
    pub port: u16,
}

impl Selector {
    /// `PLUTO_PEER_CLIENT` as an address and a prefix length (a host
    /// without one has its full length).
    pub fn peer_net(&self) -> Result<(IpAddr, u8), String> {
        let (net, len) = match self.peer.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (self.peer.as_str(), None),
        };
        let addr: IpAddr = net
            .parse()
            .map_err(|_| format!("PLUTO_PEER_CLIENT={}: not a network", self.peer))?;
        let full = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l
                .parse()
                .ok()
                .filter(|l| *l <= full)
                .ok_or_else(|| format!("PLUTO_PEER_CLIENT={}: bad prefix length", self.peer))?,
            None => full,
        };
        Ok((addr, len))
    }

    /// The rule's fields after the destination: `tcp 22`, `53`, or ``.
    pub fn fields(&self) -> String {
        let proto = match self.proto {
            6 => "tcp",
            17 => "udp",
            _ => "",
        };
        match (proto, self.port) {
            (p, 0) => p.to_owned(),
            ("", port) => port.to_string(),
            (p, port) => format!("{p} {port}"),
        }
    }

    /// The rule's destination and fields: `198.18.0.0/24 tcp 22`.
    pub fn rule_prefix(&self) -> String {
        let f = self.fields();
        if f.is_empty() {
            self.peer.clone()
        } else {
            format!("{} {f}", self.peer)
        }
    }
}

/// `VAR` as a CIDR (`a.b.c.d/n`; a bare address is a host).
fn cidr(var: &str, text: &str) -> Result<String, String> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{var}={text:?}: not an address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len {
        Some(l) => l
            .parse()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("{var}={text:?}: bad prefix length"))?,
        None => max,
    };
    Ok(format!("{ip}/{len}"))
}

/// The selector of the call; `PLUTO_PEER_CLIENT` is required.
pub fn selector(get: Vars) -> Result<Selector, String> {
    let peer = get("PLUTO_PEER_CLIENT")
        .filter(|c| !c.is_empty())
        .ok_or("PLUTO_PEER_CLIENT is not set (the peer's client network, e.g. 192.0.2.0/24)")?;
    let peer = cidr("PLUTO_PEER_CLIENT", &peer)?;
    let mine = match get("PLUTO_MY_CLIENT").filter(|c| !c.is_empty()) {
        Some(c) => cidr("PLUTO_MY_CLIENT", &c)?,
        None => "-".to_owned(),
    };
    let num = |var: &str, max: u32| -> Result<u32, String> {
        match get(var) {
            None => Ok(0),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| format!("{var}={v:?}: not a number in 0..{max}")),
        }
    };
    let proto = match num("PLUTO_PEER_PROTOCOL", 255)? {
        n @ (0 | 6 | 17) => n as u8,
        n => {
            return Err(format!(
                "PLUTO_PEER_PROTOCOL={n}: ldsaref steers TCP (6) and UDP (17) only; 0 means any"
            ))
        }
    };
    let port = num("PLUTO_PEER_PORT", 65535)? as u16;
    Ok(Selector {
        mine,
        peer,
        proto,
        port,
    })
}

/// How the call names the SA that traffic must go through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sa {
    /// KLIPS/mast: `PLUTO_PEER_REF`.
    Saref(Saref),
    /// XFRM marks: `--mark`, `CONNMARK_OUT` (libreswan `mark=`),
    /// `PLUTO_MARK_OUT` (strongSwan `mark_out`).
    Mark {
        /// The bits set.
        value: u32,
        /// The bits owned.
        mask: u32,
    },
    /// xfrm interfaces: `PLUTO_IF_ID_OUT` (strongSwan `if_id_out`); the
    /// rule is `dev` of the interface with that id.
    IfId(u32),
    /// xfrm interfaces by name: `PLUTO_VIRT_INTERFACE` (libreswan
    /// `ipsec-interface=`, which makes the interface itself).
    Dev(String),
}

impl Sa {
    /// The rule's action; `ifname` is the name of the interface of an
    /// `IfId` (see `kernel::xfrm_interface`).
    pub fn action(&self, ifname: Option<&str>) -> String {
        match self {
            Sa::Saref(s) => format!("saref {s}"),
            Sa::Mark { value, mask } if *mask == u32::MAX => format!("mark {value:#x}"),
            Sa::Mark { value, mask } => format!("mark {value:#x}/{mask:#x}"),
            Sa::IfId(id) => match ifname {
                Some(name) => format!("dev {name}"),
                None => format!("dev <if_id {id}>"),
            },
            Sa::Dev(name) => format!("dev {name}"),
        }
    }
}

/// A number as the daemons write them: decimal or `0x` hex, 32 bits.
fn number(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => text.parse().ok(),
    }
}

/// `N[/MASK]`, decimal or `0x` hex (charon writes `1/0xffffffff`).
pub fn parse_mark(var: &str, text: &str) -> Result<Sa, String> {
    let bad =
        || format!("{var}={text:?}: not a mark N[/MASK] (decimal or 0x hex, at most 32 bits)");
    let (value, mask) = match text.split_once('/') {
        Some((v, m)) => (number(v).ok_or_else(bad)?, number(m).ok_or_else(bad)?),
        None => (number(text).ok_or_else(bad)?, u32::MAX),
    };
    if mask == 0 || value & !mask != 0 {
        return Err(format!(
            "{var}={text:?}: the value has bits outside the mask (or the mask is 0)"
        ));
    }
    Ok(Sa::Mark { value, mask })
}

/// SAref values pluto passes when the SA has none a socket could use:
/// `IPSEC_SAREF_NULL` (0, or all ones in old versions) and `IPSEC_SAREF_NA`.
const SAREF_NONE: [u64; 3] = [0, 0xffff_ffff, 0xffff_0001];

/// The SA of the call: `--mark`, else the SAref, else a mark the daemon
/// exports, else an xfrm interface id; `Ok(None)` when there is none.
pub fn sa(mark_option: Option<&str>, get: Vars) -> Result<Option<Sa>, String> {
    if let Some(m) = mark_option {
        return parse_mark("--mark", m).map(Some);
    }
    if let Some(r) = get("PLUTO_PEER_REF").filter(|r| !r.is_empty()) {
        let n: u64 = r
            .parse()
            .map_err(|_| format!("PLUTO_PEER_REF={r:?}: not a number"))?;
        if !SAREF_NONE.contains(&n) {
            let saref: Saref = r.parse().map_err(|e| format!("PLUTO_PEER_REF: {e}"))?;
            return Ok(Some(Sa::Saref(saref)));
        }
    }
    for var in ["CONNMARK_OUT", "PLUTO_MARK_OUT"] {
        if let Some(m) = get(var).filter(|m| !m.is_empty()) {
            return parse_mark(var, &m).map(Some);
        }
    }
    if let Some(id) = get("PLUTO_IF_ID_OUT").filter(|v| !v.is_empty()) {
        let n = number(&id).ok_or_else(|| format!("PLUTO_IF_ID_OUT={id:?}: not a number"))?;
        if n != 0 {
            return Ok(Some(Sa::IfId(n)));
        }
    }
    // pluto says NULL when the connection has no interface of its own;
    // on KLIPS (another stack) the name is its ipsecN device, not an xfrm
    // interface.
    let xfrm = !matches!(get("PLUTO_STACK"), Some(s) if s != "xfrm");
    if let Some(dev) = get("PLUTO_VIRT_INTERFACE").filter(|d| xfrm && !d.is_empty() && d != "NULL")
    {
        return Ok(Some(Sa::Dev(dev)));
    }
    Ok(None)
}

/// Why there is no SA, when [`sa`] finds none.
pub fn no_sa(get: Vars) -> String {
    let refnote = match get("PLUTO_PEER_REF").filter(|r| !r.is_empty()) {
        Some(r) => format!("PLUTO_PEER_REF={r} (the SA has no SAref)"),
        None => "PLUTO_PEER_REF is unset".to_owned(),
    };
    format!(
        "no SA to name: {refnote}, and none of CONNMARK_OUT, PLUTO_MARK_OUT, PLUTO_IF_ID_OUT, PLUTO_VIRT_INTERFACE is set; give --mark N[/MASK] for a mark-based setup"
    )
}

/// The connection a call is about: libreswan names the connections it
/// makes of one `conn` with several subnets (`rightsubnets={a b}`) `NAME/0x1`,
/// `NAME/0x2`…; they are the one connection `NAME` the operator wrote, whose
/// programs run with `--profile NAME`.
pub fn base_connection(conn: &str) -> &str {
    match conn.rsplit_once("/0x") {
        Some((base, n))
            if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            base
        }
        _ => conn,
    }
}

/// The connection name as a file and profile name: what the rules accept
/// in a section header (`A-Z a-z 0-9 _ . -`), every other character `_`,
/// never a hidden file (the rules loader skips those).
pub fn sanitise(conn: &str) -> Result<String, String> {
    let mut s: String = conn
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with('.') {
        s.replace_range(..1, "_");
    }
    if s.is_empty() {
        return Err("PLUTO_CONNECTION is empty".to_owned());
    }
    if s.len() > 64 {
        return Err(format!(
            "PLUTO_CONNECTION={conn:?}: the name is longer than 64 characters, the longest profile name"
        ));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    pub(crate) fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn verbs() {
        assert_eq!(kind("up-client"), Kind::Up);
        assert_eq!(kind("up-host-v6"), Kind::Up);
        assert_eq!(kind("route-client-v6"), Kind::Route);
        assert_eq!(kind("down-client-v6"), Kind::Down);
        assert_eq!(kind("unroute-client"), Kind::Unroute);
        assert_eq!(kind("prepare-host"), Kind::Ignore);
        assert_eq!(kind("prepare-client-v6"), Kind::Ignore);
        assert_eq!(kind("up-clientx"), Kind::Ignore);
    }

    #[test]
    fn subnet_aliases_are_their_connection() {
        assert_eq!(base_connection("c1/0x1"), "c1");
        assert_eq!(base_connection("c1/0x1f"), "c1");
        assert_eq!(base_connection("c1"), "c1");
        assert_eq!(base_connection("a/b"), "a/b");
        assert_eq!(base_connection("/0x1"), "/0x1");
        assert_eq!(base_connection("c1/0x"), "c1/0x");
        assert_eq!(base_connection("rw[3]"), "rw[3]");
    }

    #[test]
    fn names() {
        assert_eq!(sanitise("client1").unwrap(), "client1");
        assert_eq!(sanitise("conn/1x2").unwrap(), "conn_1x2");
        assert_eq!(sanitise("..").unwrap(), "_.");
        assert_eq!(sanitise("a b[3]").unwrap(), "a_b_3_");
        assert!(sanitise("").is_err());
        assert!(sanitise(&"x".repeat(65)).is_err());
    }

    #[test]
    fn marks() {
        let m = |t| parse_mark("v", t).map(|sa| sa.action(None));
        assert_eq!(m("1001/0xffffffff").unwrap(), "mark 0x3e9");
        // charon: decimal value, hex mask.
        assert_eq!(m("1/0xffffffff").unwrap(), "mark 0x1");
        assert_eq!(m("0x200/0xff00").unwrap(), "mark 0x200/0xff00");
        assert_eq!(m("7").unwrap(), "mark 0x7");
        assert!(m("x").unwrap_err().starts_with("v=\"x\""));
        assert!(m("1/").is_err());
        assert!(m("4294967296").is_err());
        assert!(m("0x300/0xff").unwrap_err().contains("outside the mask"));
        assert!(m("0/0").is_err());
    }

    #[test]
    fn the_sa_comes_from_the_option_the_saref_a_mark_or_an_interface() {
        let sa_of = |pairs: &[(&str, &str)]| sa(None, &env(pairs));
        assert_eq!(
            sa_of(&[("PLUTO_PEER_REF", "101")])
                .unwrap()
                .unwrap()
                .action(None),
            "saref 101"
        );
        assert_eq!(
            sa_of(&[("PLUTO_PEER_REF", "0"), ("CONNMARK_OUT", "5/0xffffffff")])
                .unwrap()
                .unwrap()
                .action(None),
            "mark 0x5"
        );
        assert_eq!(
            sa_of(&[("PLUTO_MARK_OUT", "16/0xff")]).unwrap(),
            Some(Sa::Mark {
                value: 16,
                mask: 0xff
            })
        );
        assert_eq!(
            sa_of(&[("PLUTO_IF_ID_OUT", "2"), ("PLUTO_IF_ID_IN", "2")]).unwrap(),
            Some(Sa::IfId(2))
        );
        assert_eq!(Sa::IfId(2).action(Some("ipsec2")), "dev ipsec2");
        assert_eq!(sa_of(&[("PLUTO_IF_ID_OUT", "0")]).unwrap(), None);
        // libreswan names its interface; NULL when there is none.
        assert_eq!(
            sa_of(&[("PLUTO_STACK", "xfrm"), ("PLUTO_VIRT_INTERFACE", "ipsec2")]).unwrap(),
            Some(Sa::Dev("ipsec2".into()))
        );
        assert_eq!(sa_of(&[("PLUTO_VIRT_INTERFACE", "NULL")]).unwrap(), None);
        assert_eq!(
            sa_of(&[("PLUTO_STACK", "klips"), ("PLUTO_VIRT_INTERFACE", "ipsec0")]).unwrap(),
            None
        );
        assert!(sa_of(&[("PLUTO_IF_ID_OUT", "x")])
            .unwrap_err()
            .contains("PLUTO_IF_ID_OUT"));
        let g = env(&[("PLUTO_PEER_REF", "4294901761")]);
        assert_eq!(sa(None, &g), Ok(None));
        let e = no_sa(&g);
        assert!(
            e.contains("PLUTO_PEER_REF=4294901761") && e.contains("--mark"),
            "{e}"
        );
        assert!(sa_of(&[("PLUTO_PEER_REF", "40000")])
            .unwrap_err()
            .contains("PLUTO_PEER_REF"));
        assert!(sa_of(&[("PLUTO_PEER_REF", "x")])
            .unwrap_err()
            .contains("PLUTO_PEER_REF=\"x\""));
        assert_eq!(
            sa(Some("0x7"), &env(&[("PLUTO_PEER_REF", "101")]))
                .unwrap()
                .unwrap()
                .action(None),
            "mark 0x7"
        );
    }

    #[test]
    fn selectors() {
        let g = env(&[
            ("PLUTO_PEER_CLIENT", "192.0.2.0/24"),
            ("PLUTO_MY_CLIENT", "203.0.113.1/32"),
            ("PLUTO_PEER_PROTOCOL", "6"),
            ("PLUTO_PEER_PORT", "22"),
        ]);
        let s = selector(&g).unwrap();
        assert_eq!(s.rule_prefix(), "192.0.2.0/24 tcp 22");
        assert_eq!(s.mine, "203.0.113.1/32");
        let only = |pairs: &[(&str, &str)]| {
            let mut v = vec![("PLUTO_PEER_CLIENT", "192.0.2.0/24")];
            v.extend_from_slice(pairs);
            selector(&env(&v))
        };
        assert_eq!(
            only(&[("PLUTO_PEER_PROTOCOL", "0"), ("PLUTO_PEER_PORT", "0")])
                .unwrap()
                .rule_prefix(),
            "192.0.2.0/24"
        );
        assert_eq!(only(&[("PLUTO_PEER_PORT", "53")]).unwrap().fields(), "53");
        assert_eq!(only(&[]).unwrap().mine, "-");
        assert!(only(&[("PLUTO_PEER_PROTOCOL", "1")])
            .unwrap_err()
            .contains("PLUTO_PEER_PROTOCOL=1"));
        assert!(only(&[("PLUTO_PEER_PORT", "70000")])
            .unwrap_err()
            .contains("PLUTO_PEER_PORT"));
        let peer = |p: &str| selector(&env(&[("PLUTO_PEER_CLIENT", p)])).map(|s| s.peer);
        assert_eq!(peer("2001:db8::/32").unwrap(), "2001:db8::/32");
        assert_eq!(peer("198.51.100.7").unwrap(), "198.51.100.7/32");
        assert!(peer("192.0.2.0/33")
            .unwrap_err()
            .contains("PLUTO_PEER_CLIENT"));
        assert!(selector(&env(&[]))
            .unwrap_err()
            .contains("PLUTO_PEER_CLIENT"));
    }

    #[test]
    fn daemons() {
        assert_eq!(daemon(&env(&[("PLUTO_VERSION", "1.1")])), "charon");
        assert_eq!(daemon(&env(&[("PLUTO_UNIQUEID", "3")])), "charon");
        assert_eq!(daemon(&env(&[("PLUTO_VERSION", "2.0")])), "pluto");
    }
}
