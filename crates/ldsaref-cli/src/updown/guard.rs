//! The netfilter guard behind a marked connection: a packet that carries
//! the connection's mark, to its client network, leaves only if IPsec
//! transformed it.
//!
//! # Why, beside the block policy
//!
//! The block policy (see `kernel`) only works if the kernel's XFRM lookup
//! picks it, and it has the lowest precedence there is: any other policy
//! that matches the packet wins. A daemon's may match every mark (libreswan
//! installs the shunt that holds a negotiation without the connection's
//! mark; with `negotiationshunt=passthrough` it lets everything through).
//! And a churn run in CI once saw a cleartext TCP FIN with a client's mark
//! leave, the block in place, while libreswan cleared the other client's
//! tunnel: cause not found.
//!
//! The guard does not depend on which policy the kernel picked. In
//! netfilter's postrouting hook, the packet's route says whether IPsec
//! transformed it (`rt ipsec`: the route is an XFRM bundle); a packet with
//! the mark, to the network, on a plain route is dropped (the sender's
//! call fails with `EPERM`, as with the block). The tunnel's own outer
//! packets (ESP, AH, IKE and NAT-T from ports 500 and 4500) pass: they
//! keep the inner packet's mark, and in a host-to-host tunnel they go to
//! an address inside the network.
//!
//! # The table
//!
//! `table inet ldsaref_guard`: one regular chain per guard, named after
//! what it guards (so that the table itself says which guards exist, read
//! over netlink without an `nft` process), a chain per mark that jumps to
//! that mark's guards, and a `postrouting` base chain that lets unmarked
//! packets and the tunnels' own packets through at once and sends the
//! rest to their mark's chain (`meta mark vmap`: one lookup, however many
//! connections). Like the block, a guard is never removed by updown: it
//! costs nothing while the tunnel is up and is what protects the network
//! while it is down. An up that finds its guard there changes nothing (no
//! `nft` runs); a new one rewrites every chain but the guards' from the
//! guard chains the table has, in one transaction.

use std::net::IpAddr;

use super::call::Selector;

/// The guard's table, in the `inet` family.
pub const TABLE: &str = "ldsaref_guard";

/// The base chain; the guard chains' names start with [`PREFIX`].
const BASE: &str = "postrouting";
const PREFIX: &str = "g_";

/// What one guard drops: packets whose mark is `value` under `mask`, to
/// `net`/`len`, of protocol `proto` to port `port` (0: any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guard {
    pub value: u32,
    pub mask: u32,
    pub net: IpAddr,
    pub len: u8,
    pub proto: u8,
    pub port: u16,
}

impl Guard {
    /// The guard for a mark rule on `sel`.
    pub fn new(sel: &Selector, value: u32, mask: u32) -> Result<Guard, String> {
        let (addr, len) = sel.peer_net()?;
        Ok(Guard {
            value,
            mask,
            net: network(addr, len),
            len,
            proto: sel.proto,
            port: if sel.proto != 0 { sel.port } else { 0 },
        })
    }

    /// The chain's name: every field, so that equal guards have equal
    /// names and the name alone says whether a guard is installed.
    pub fn chain(&self) -> String {
        let addr = match self.net {
            IpAddr::V4(a) => format!("{:08x}", u32::from(a)),
            IpAddr::V6(a) => format!("{:032x}", u128::from(a)),
        };
        format!(
            "{PREFIX}{:08x}_{:08x}_{addr}_{}_{}_{}",
            self.value, self.mask, self.len, self.proto, self.port
        )
    }

    /// The rule in the guard's chain.
    pub fn rule(&self) -> String {
        let mark = if self.mask == u32::MAX {
            format!("meta mark {:#x}", self.value)
        } else {
            format!("meta mark and {:#x} == {:#x}", self.mask, self.value)
        };
        let family = if self.net.is_ipv4() { "ip" } else { "ip6" };
        let mut r = format!("{mark} {family} daddr {}/{}", self.net, self.len);
        if self.proto != 0 {
            r += &format!(" meta l4proto {}", self.proto);
            if self.port != 0 {
                r += &format!(" th dport {}", self.port);
            }
        }
        r + " rt ipsec missing counter drop"
    }
}

/// `addr` with the bits past `len` cleared (nft refuses a prefix with host
/// bits).
fn network(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

/// The mark (value, mask) a guard chain's name says it guards.
fn mark_of(chain: &str) -> Option<(u32, u32)> {
    let mut f = chain.strip_prefix(PREFIX)?.split('_');
    let value = u32::from_str_radix(f.next()?, 16).ok()?;
    let mask = u32::from_str_radix(f.next()?, 16).ok()?;
    Some((value, mask))
}

/// The `nft -f` batch that installs `guard` into a table whose chains are
/// `chains` (`None`: no table yet), or `None` when it is installed already.
///
/// A marked packet reaches only its own mark's guards: the base chain maps
/// the mark (`meta mark vmap`, one lookup whatever the number of
/// connections) to a chain per mark, `m_VALUE`, which jumps to that mark's
/// guard chains (one per network of the connection). Guards of a partial
/// mask (`--mark V/M` with M short of 32 bits, rare) are jumped to from the
/// base chain one after the other. Every chain but the guards' is
/// rewritten from the guard chains the table has, with the new one.
pub fn batch(chains: Option<&[String]>, guard: &Guard) -> Option<String> {
    let name = guard.chain();
    let chains = chains.unwrap_or_default();
    if chains.contains(&name) && chains.iter().any(|c| c == BASE) {
        return None;
    }
    let t = format!("inet {TABLE}");
    let mut b = format!("add table {t}\n");
    b += &format!("add chain {t} {name}\nflush chain {t} {name}\n");
    b += &format!("add rule {t} {name} {}\n", guard.rule());
    let mut guards: Vec<&str> = chains
        .iter()
        .map(String::as_str)
        .filter(|c| c.starts_with(PREFIX) && *c != name)
        .collect();
    guards.push(&name);
    guards.sort_unstable();
    let mut by_mark: std::collections::BTreeMap<u32, Vec<&str>> = Default::default();
    let mut partial = Vec::new();
    for g in guards {
        match mark_of(g) {
            Some((value, u32::MAX)) => by_mark.entry(value).or_default().push(g),
            _ => partial.push(g),
        }
    }
    for (value, gs) in &by_mark {
        let m = format!("m_{value:08x}");
        b += &format!("add chain {t} {m}\nflush chain {t} {m}\n");
        for g in gs {
            b += &format!("add rule {t} {m} jump {g}\n");
        }
    }
    b += &format!(
        "add chain {t} {BASE} {{ type filter hook postrouting priority 0; policy accept; }}\n\
         flush chain {t} {BASE}\n\
         add rule {t} {BASE} meta mark 0 accept\n\
         add rule {t} {BASE} meta l4proto {{ esp, ah }} accept\n\
         add rule {t} {BASE} udp sport {{ 500, 4500 }} accept\n"
    );
    if !by_mark.is_empty() {
        let entries: Vec<String> = by_mark
            .keys()
            .map(|v| format!("{v:#x} : jump m_{v:08x}"))
            .collect();
        b += &format!(
            "add rule {t} {BASE} meta mark vmap {{ {} }}\n",
            entries.join(", ")
        );
    }
    for g in partial {
        b += &format!("add rule {t} {BASE} jump {g}\n");
    }
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn sel(peer: &str, proto: u8, port: u16) -> Selector {
        Selector {
            mine: "-".into(),
            peer: peer.into(),
            proto,
            port,
        }
    }

    /// The guard chains a batch's base chain reaches: through the mark's
    /// chain its vmap names, or directly.
    fn reachable(batch: &str) -> BTreeSet<String> {
        let rules = |chain: &str| -> Vec<String> {
            let p = format!("add rule inet ldsaref_guard {chain} ");
            batch
                .lines()
                .filter_map(|l| l.strip_prefix(&p).map(str::to_owned))
                .collect()
        };
        let mut out = BTreeSet::new();
        for rule in rules(BASE) {
            if let Some(g) = rule.strip_prefix("jump ") {
                out.insert(g.to_owned());
            }
            if let Some(map) = rule.strip_prefix("meta mark vmap { ") {
                for entry in map.trim_end_matches(" }").split(", ") {
                    let m = entry.split("jump ").nth(1).unwrap();
                    for r in rules(m) {
                        out.insert(r.strip_prefix("jump ").unwrap().to_owned());
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_guard_names_and_drops_what_its_selector_says() {
        let g = Guard::new(&sel("198.19.0.7/24", 0, 0), 1, u32::MAX).unwrap();
        assert_eq!(g.chain(), "g_00000001_ffffffff_c6130000_24_0_0");
        assert_eq!(
            g.rule(),
            "meta mark 0x1 ip daddr 198.19.0.0/24 rt ipsec missing counter drop"
        );
        let g = Guard::new(&sel("2001:db8:1::/48", 6, 22), 0x200, 0xff00).unwrap();
        assert_eq!(
            g.chain(),
            "g_00000200_0000ff00_20010db8000100000000000000000000_48_6_22"
        );
        assert_eq!(
            g.rule(),
            "meta mark and 0xff00 == 0x200 ip6 daddr 2001:db8:1::/48 meta l4proto 6 th dport 22 rt ipsec missing counter drop"
        );
        // A host: its full length.
        let g = Guard::new(&sel("198.19.0.5", 17, 0), 2, u32::MAX).unwrap();
        assert_eq!(g.len, 32);
        assert!(g
            .rule()
            .contains("ip daddr 198.19.0.5/32 meta l4proto 17 rt"));
        assert!(Guard::new(&sel("198.19.0.0/40", 0, 0), 1, 1)
            .unwrap_err()
            .contains("bad prefix length"));
    }

    #[test]
    fn the_batch_adds_a_new_guard_beside_the_others_and_nothing_twice() {
        let g = Guard::new(&sel("198.19.0.0/24", 0, 0), 1, u32::MAX).unwrap();
        let first = batch(None, &g).unwrap();
        assert!(first.starts_with("add table inet ldsaref_guard\n"));
        assert!(first.contains(
            "add chain inet ldsaref_guard postrouting { type filter hook postrouting priority 0; policy accept; }\n\
             flush chain inet ldsaref_guard postrouting\n"
        ));
        assert_eq!(reachable(&first), BTreeSet::from([g.chain()]), "{first}");
        // The exemptions come before the dispatch.
        let esp = first.find("esp, ah").unwrap();
        assert!(esp < first.find(" vmap ").unwrap());

        let installed: Vec<String> = ["postrouting", &g.chain()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(batch(Some(&installed), &g), None);
        // Without its base chain, the guard is installed again.
        assert!(batch(Some(&installed[1..]), &g).is_some());

        let g2 = Guard::new(&sel("198.19.0.0/24", 0, 0), 2, u32::MAX).unwrap();
        let second = batch(Some(&installed), &g2).unwrap();
        assert_eq!(reachable(&second), BTreeSet::from([g.chain(), g2.chain()]));
        assert!(
            second.contains("meta mark vmap { 0x1 : jump m_00000001, 0x2 : jump m_00000002 }"),
            "{second}"
        );
        // A partial mask is jumped to from the base chain.
        let g3 = Guard::new(&sel("198.19.0.0/24", 0, 0), 0x200, 0xff00).unwrap();
        let third = batch(Some(&installed), &g3).unwrap();
        let direct = format!(
            "add rule inet ldsaref_guard postrouting jump {}\n",
            g3.chain()
        );
        assert!(third.contains(&direct), "{third}");
        assert_eq!(reachable(&third), BTreeSet::from([g.chain(), g3.chain()]));
        // Only the new guard's chain is (re)written.
        assert!(!second.contains(&format!("flush chain inet ldsaref_guard {}", g.chain())));
        assert!(second.contains(&format!("flush chain inet ldsaref_guard {}", g2.chain())));
    }

    /// Every order of ups (4 guards, 6 calls: all 4096 sequences), the
    /// table simulated from the batches: after each call the base chain
    /// jumps to every guard seen so far, once, and a call that finds its
    /// guard installed asks for nothing.
    #[test]
    fn whatever_the_order_of_the_ups_every_guard_is_jumped_to_once() {
        let guards: Vec<Guard> = [
            ("198.19.0.0/24", 1),
            ("198.19.0.0/24", 2),
            ("198.18.0.0/24", 1),
            ("2001:db8::/32", 3),
        ]
        .iter()
        .map(|(net, mark)| Guard::new(&sel(net, 0, 0), *mark, u32::MAX).unwrap())
        .collect();
        for n in 0..4096usize {
            let mut chains: Option<Vec<String>> = None;
            let mut jumps = BTreeSet::new();
            let mut seen = BTreeSet::new();
            for k in 0..6 {
                let g = &guards[(n >> (2 * k)) & 3];
                let new = seen.insert(g.chain());
                match batch(chains.as_deref(), g) {
                    None => assert!(!new, "{n}: a new guard not installed"),
                    Some(b) => {
                        let c = chains.get_or_insert_with(Vec::new);
                        for line in b.lines() {
                            if let Some(rest) = line.strip_prefix("add chain inet ldsaref_guard ") {
                                let name = rest.split(' ').next().unwrap().to_owned();
                                if !c.contains(&name) {
                                    c.push(name);
                                }
                            }
                        }
                        jumps = reachable(&b);
                        let to_guards = b.lines().filter(|l| l.contains(" jump g_")).count();
                        assert_eq!(to_guards, jumps.len(), "{n}: a guard jumped to twice");
                    }
                }
                assert_eq!(jumps, seen, "{n} after call {k}");
            }
        }
    }
}
