//! The text of the table, for `nft -f`.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use ldsaref_rules::Proto;

use crate::{CatchAll, Compiled, Element, Maps, Verdict, SLICE, TABLE};

impl Verdict {
    /// The name of the verdict's chain (`pass` has none: it is `accept`).
    pub fn chain(self) -> Option<String> {
        Some(match self {
            Verdict::Pass => return None,
            Verdict::Deny => "deny".to_owned(),
            Verdict::Reflect => "reflect".to_owned(),
            Verdict::Saref(n) => format!("saref_{n}"),
            Verdict::Mark { value, mask } if mask == u32::MAX => format!("mark_{value:x}"),
            Verdict::Mark { value, mask } => format!("mark_{value:x}_{mask:x}"),
        })
    }

    /// The verdict as a map value.
    fn map_value(self) -> String {
        match self.chain() {
            None => "accept".to_owned(),
            Some(chain) => format!("goto {chain}"),
        }
    }

    /// The statements of the verdict's chain.
    fn statements(self) -> Vec<String> {
        match self {
            Verdict::Pass => vec![],
            // A reset answers the SYN at once (connect: ECONNREFUSED); a
            // plain drop would leave it retransmitting. A dropped datagram
            // fails its sendto with EPERM.
            Verdict::Deny => vec![
                "meta l4proto tcp reject with tcp reset".to_owned(),
                "drop".to_owned(),
            ],
            Verdict::Reflect => {
                vec!["ct direction reply ct mark != 0 meta mark set ct mark".to_owned()]
            }
            Verdict::Saref(n) => vec![format!("meta mark set {:#010x}", crate::mast_mark(n))],
            Verdict::Mark { value, mask } if mask == u32::MAX => {
                vec![format!("meta mark set {value:#010x}")]
            }
            Verdict::Mark { value, mask } => vec![format!(
                "meta mark set meta mark and {:#010x} or {value:#010x}",
                !mask
            )],
        }
    }
}

fn proto(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

/// `lo-hi`, or a prefix when the interval is one.
fn addr_range(lo: u128, hi: u128, v6: bool) -> String {
    let bits = if v6 { 128 } else { 32 };
    let show = |k: u128| {
        if v6 {
            Ipv6Addr::from(k).to_string()
        } else {
            Ipv4Addr::from(u32::try_from(k).unwrap_or(u32::MAX)).to_string()
        }
    };
    let size = hi.wrapping_sub(lo).wrapping_add(1);
    let full = lo == 0 && hi == u128::MAX;
    if full || (size.is_power_of_two() && lo & (size - 1) == 0) {
        let host = if full { bits } else { size.trailing_zeros() };
        if host <= bits {
            return format!("{}/{}", show(lo), bits - host);
        }
    }
    format!("{}-{}", show(lo), show(hi))
}

fn port_range(lo: u16, hi: u16) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

fn element(e: &Element, v6: bool) -> String {
    format!(
        "{} . {} . {} : {}",
        addr_range(e.addr_lo, e.addr_hi, v6),
        proto(e.proto),
        port_range(e.port_lo, e.port_hi),
        e.verdict.map_value()
    )
}

/// The IPv4 and IPv6 maps `NAME_v4`, `NAME_v6`.
fn write_maps(s: &mut String, name: &str, maps: &Maps) -> std::fmt::Result {
    for (family, elements, v6) in [
        ("ipv4_addr", &maps.v4, false),
        ("ipv6_addr", &maps.v6, true),
    ] {
        let suffix = if v6 { "v6" } else { "v4" };
        writeln!(s, "\tmap {name}_{suffix} {{")?;
        writeln!(s, "\t\ttype {family} . inet_proto . inet_service : verdict")?;
        writeln!(s, "\t\tflags interval")?;
        if !elements.is_empty() {
            writeln!(s, "\t\telements = {{")?;
            for e in elements {
                writeln!(s, "\t\t\t{},", element(e, v6))?;
            }
            writeln!(s, "\t\t}}")?;
        }
        writeln!(s, "\t}}")?;
    }
    Ok(())
}

/// A short, stable fingerprint of a text (64-bit FNV-1a, in hex): what
/// the table's comment records, to tell whether the installed table is
/// the one these rules give.
pub fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The table has an empty chain named this and the fingerprint, which
/// `nft list chains` shows cheaply.
pub const FINGERPRINT_CHAIN: &str = "rules_";

/// The map of the catch-all cgroups to their marks.
pub const CATCH_ALL_MAP: &str = "catchall";

/// The prefix of the table's comment; the fingerprint follows it.
pub const COMMENT_PREFIX: &str = "ldsaref rules ";

impl Compiled {
    /// The `nft -f` batch that replaces the table in one transaction: the
    /// table is added (so that deleting it cannot fail), deleted, and
    /// defined again. `cgroup_prefix` is the cgroup2 mount's path relative
    /// to `/sys/fs/cgroup` (where `nft` resolves cgroup paths) followed by
    /// `/`, or empty when cgroup2 is mounted there; `fingerprint` goes in
    /// the table's comment.
    /// `catch_alls` are the catch-all cgroups that exist (see
    /// [`CatchAll`]); `nft` refuses a path that does not.
    pub fn render(
        &self,
        cgroup_prefix: &str,
        fingerprint: &str,
        catch_alls: &[CatchAll],
    ) -> String {
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut s, cgroup_prefix, fingerprint, catch_alls);
        s
    }

    fn write(
        &self,
        s: &mut String,
        root: &str,
        fingerprint: &str,
        catch_alls: &[CatchAll],
    ) -> std::fmt::Result {
        writeln!(s, "# ldsaref: the cgroup backend's table (ldsaref apply)")?;
        writeln!(s, "table {TABLE}")?;
        writeln!(s, "delete table {TABLE}")?;
        writeln!(s, "table {TABLE} {{")?;
        writeln!(s, "\tcomment \"{COMMENT_PREFIX}{fingerprint}\"")?;
        // The same, where `nft list chains` shows it without the elements.
        writeln!(s, "\tchain {FINGERPRINT_CHAIN}{fingerprint} {{")?;
        writeln!(s, "\t}}")?;
        writeln!(s)?;
        writeln!(s, "\t# The global rules, after a profile's own.")?;
        write_maps(s, "global", &self.global)?;
        writeln!(s, "\tchain global {{")?;
        writeln!(s, "\t\tip daddr . meta l4proto . th dport vmap @global_v4")?;
        writeln!(s, "\t\tip6 daddr . meta l4proto . th dport vmap @global_v6")?;
        writeln!(
            s,
            "\t\tmeta nfproto ipv4 meta mark set socket cgroupv2 level 3 map @{CATCH_ALL_MAP}"
        )?;
        writeln!(s, "\t}}")?;
        writeln!(
            s,
            "\t# The catch-all SArefs of run --cgroup --saref, IPv4 only."
        )?;
        writeln!(s, "\tmap {CATCH_ALL_MAP} {{")?;
        writeln!(s, "\t\ttype cgroupsv2 : mark")?;
        if !catch_alls.is_empty() {
            writeln!(s, "\t\telements = {{")?;
            for c in catch_alls {
                writeln!(
                    s,
                    "\t\t\t\"{root}{}\" : {:#010x},",
                    c.cgroup(),
                    crate::mast_mark(c.saref)
                )?;
            }
            writeln!(s, "\t\t}}")?;
        }
        writeln!(s, "\t}}")?;
        for (i, p) in self.profiles.iter().enumerate() {
            writeln!(s)?;
            writeln!(s, "\t# [{}]: cgroup {}", p.name, p.cgroup())?;
            write_maps(s, &format!("p{i}"), &p.maps)?;
            writeln!(s, "\tchain p{i} {{")?;
            writeln!(s, "\t\tip daddr . meta l4proto . th dport vmap @p{i}_v4")?;
            writeln!(s, "\t\tip6 daddr . meta l4proto . th dport vmap @p{i}_v6")?;
            writeln!(s, "\t\tgoto global")?;
            writeln!(s, "\t}}")?;
        }
        let verdicts = self.verdicts();
        for v in &verdicts {
            let Some(name) = v.chain() else { continue };
            writeln!(s)?;
            writeln!(s, "\tchain {name} {{")?;
            for st in v.statements() {
                writeln!(s, "\t\t{st}")?;
            }
            writeln!(s, "\t}}")?;
        }
        writeln!(s)?;
        writeln!(s, "\t# A mark set by the program itself is left alone.")?;
        writeln!(s, "\tchain steer {{")?;
        writeln!(s, "\t\tmeta mark != 0 return")?;
        for (i, p) in self.profiles.iter().enumerate() {
            writeln!(
                s,
                "\t\tsocket cgroupv2 level 2 \"{root}{}\" goto p{i}",
                p.cgroup()
            )?;
        }
        writeln!(
            s,
            "\t\t# Fail closed: a cgroup whose profile has no rules here."
        )?;
        writeln!(s, "\t\toifname \"lo\" return")?;
        writeln!(s, "\t\tdrop")?;
        writeln!(s, "\t}}")?;
        writeln!(s)?;
        writeln!(s, "\tchain output {{")?;
        writeln!(
            s,
            "\t\ttype route hook output priority mangle; policy accept;"
        )?;
        writeln!(
            s,
            "\t\tsocket cgroupv2 level 1 \"{root}{SLICE}\" jump steer"
        )?;
        writeln!(s, "\t}}")?;
        if verdicts.contains(&Verdict::Reflect) {
            writeln!(s)?;
            writeln!(
                s,
                "\t# reflect: the mark a flow came in with, for its replies."
            )?;
            writeln!(s, "\tchain input {{")?;
            writeln!(
                s,
                "\t\ttype filter hook input priority mangle + 10; policy accept;"
            )?;
            writeln!(
                s,
                "\t\tct direction original ct mark 0 meta mark != 0 ct mark set meta mark"
            )?;
            writeln!(s, "\t}}")?;
        }
        writeln!(s, "}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_prefixes_when_they_can_be() {
        assert_eq!(addr_range(0, u128::from(u32::MAX), false), "0.0.0.0/0");
        assert_eq!(addr_range(0, u128::MAX, true), "::/0");
        assert_eq!(addr_range(0xc612_0000, 0xc612_00ff, false), "198.18.0.0/24");
        assert_eq!(addr_range(0xc612_0005, 0xc612_0005, false), "198.18.0.5/32");
        assert_eq!(
            addr_range(0xc612_0001, 0xc612_0005, false),
            "198.18.0.1-198.18.0.5"
        );
        assert_eq!(
            addr_range(1, u128::MAX, true),
            "::1-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        );
        assert_eq!(port_range(22, 22), "22");
        assert_eq!(port_range(0, 65535), "0-65535");
    }

    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(fingerprint(""), "cbf29ce484222325");
        assert_eq!(fingerprint("a"), "af63dc4c8601ec8c");
    }
}
