//! What `ldsaref updown` asks of the kernel's IPsec layer, through
//! iproute2's `ip` (on every IPsec gateway, and what the daemons' own
//! updown scripts use): the fallback block policy behind a marked
//! connection, and the name of the xfrm interface with a given id.
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
//! up and is what protects it while it is down.
//!
//! xfrm interfaces need none: a packet routed into one without a policy
//! is dropped by the interface.

use std::io::Write;
use std::process::{Command, Stdio};

use super::call::{Sa, Selector};

/// Lower precedence than any daemon's policy (pluto's are in the
/// thousands, charon's below 2^20, trap and fallback ones included).
pub const BLOCK_PRIORITY: u32 = 0xffff_ff00;

/// The kernel operations updown needs; a trait so that the command's
/// logic is tested without root.
pub trait Xfrm {
    /// Installs (or refreshes) the block policy behind `sel` for `sa`.
    fn block(&self, sel: &Selector, sa: &Sa) -> Result<(), String>;
    /// The name of the xfrm interface whose `if_id` is `id`.
    fn interface(&self, id: u32) -> Result<String, String>;
}

/// The block policies for a connection's network and mark: two, one per
/// half of the source address space, because a policy with the same
/// selector and mark as the daemon's would *replace* it (the kernel keys
/// policies by selector and mark, not priority), and no daemon installs
/// /1 source selectors.
pub fn block_commands(sel: &Selector, value: u32, mask: u32) -> Vec<Vec<String>> {
    let halves: [&str; 2] = if sel.peer.contains(':') {
        ["::/1", "8000::/1"]
    } else {
        ["0.0.0.0/1", "128.0.0.0/1"]
    };
    halves
        .iter()
        .map(|src| {
            let mut a: Vec<String> = ["xfrm", "policy", "update", "src", src, "dst", &sel.peer]
                .iter()
                .map(|s| s.to_string())
                .collect();
            // The selector's protocol and port come before `dir`.
            if sel.proto != 0 {
                a.extend(["proto".into(), sel.proto.to_string()]);
                if sel.port != 0 {
                    a.extend(["dport".into(), sel.port.to_string()]);
                }
            }
            a.extend(["dir".into(), "out".into()]);
            a.extend([
                "mark".into(),
                format!("{value:#x}"),
                "mask".into(),
                format!("{mask:#x}"),
                "action".into(),
                "block".into(),
                "priority".into(),
                BLOCK_PRIORITY.to_string(),
            ]);
            a
        })
        .collect()
}

/// The interface with `if_id` `id` in `ip -d -o link show type xfrm`'s
/// output (one interface a line: `12: ipsec1@s-c1: <…> … xfrm if_id 0x1 …`).
pub fn interface_in(listing: &str, id: u32) -> Option<String> {
    listing.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let name = words.nth(1)?.trim_end_matches(':');
        let name = name.split('@').next()?;
        let mut words = line.split_whitespace();
        words.find(|w| *w == "if_id")?;
        let v = words.next()?;
        let n = match v.strip_prefix("0x") {
            Some(h) => u32::from_str_radix(h, 16).ok()?,
            None => v.parse().ok()?,
        };
        (n == id).then(|| name.to_owned())
    })
}

/// The real kernel, through `ip`.
pub struct Ip;

impl Ip {
    fn path() -> &'static str {
        // The daemons give their scripts a minimal PATH, or none.
        ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .unwrap_or("ip")
    }

    /// Several commands in one `ip -batch -`: one process, not one each
    /// (the daemon waits for updown).
    fn batch(cmds: &[Vec<String>]) -> Result<(), String> {
        let ip = Ip::path();
        let mut child = Command::new(ip)
            .args(["-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{ip}: {e}"))?;
        let text: String = cmds.iter().map(|c| c.join(" ") + "\n").collect();
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .map_err(|e| format!("{ip}: {e}"))?;
        }
        let out = child.wait_with_output().map_err(|e| format!("{ip}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "ip -batch ({}): {}",
                text.trim_end().replace('\n', "; "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn run(args: &[String]) -> Result<String, String> {
        let ip = Ip::path();
        let out = Command::new(ip)
            .args(args)
            .output()
            .map_err(|e| format!("{ip}: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

impl Xfrm for Ip {
    fn block(&self, sel: &Selector, sa: &Sa) -> Result<(), String> {
        let Sa::Mark { value, mask } = *sa else {
            return Ok(());
        };
        Ip::batch(&block_commands(sel, value, mask))
    }

    fn interface(&self, id: u32) -> Result<String, String> {
        let args: Vec<String> = ["-d", "-o", "link", "show", "type", "xfrm"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let listing = Ip::run(&args)?;
        interface_in(&listing, id).ok_or_else(|| {
            format!("PLUTO_IF_ID_OUT={id}: no xfrm interface has if_id {id} (ip -d link show type xfrm)")
        })
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
        let cmds = block_commands(&sel, 0x8065_0000, u32::MAX);
        let text: Vec<String> = cmds.iter().map(|c| c.join(" ")).collect();
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
        let text = block_commands(&v6, 2, 0xff)[1].join(" ");
        assert_eq!(
            text,
            "xfrm policy update src 8000::/1 dst 2001:db8:1::/48 dir out mark 0x2 mask 0xff action block priority 4294967040"
        );
    }

    #[test]
    fn interfaces_are_found_by_id() {
        // As iproute2 6.1 prints them.
        let listing = "5: ipsec1@s-c1: <NOARP,UP,LOWER_UP> mtu 1500 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/none  promiscuity 0 minmtu 68 maxmtu 65535 \\    xfrm if_id 0x1 addrgenmode eui64 numtxqueues 1\n\
6: ipsec2@s-c2: <NOARP,UP,LOWER_UP> mtu 1500 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000\\    link/none  promiscuity 0 minmtu 68 maxmtu 65535 \\    xfrm if_id 0x2 addrgenmode eui64 numtxqueues 1\n\
7: ipsec10: <NOARP> mtu 1500 qdisc noop state DOWN\\    link/none \\    xfrm if_id 0x10 \n";
        assert_eq!(interface_in(listing, 2).as_deref(), Some("ipsec2"));
        assert_eq!(interface_in(listing, 1).as_deref(), Some("ipsec1"));
        assert_eq!(interface_in(listing, 16).as_deref(), Some("ipsec10"));
        assert_eq!(interface_in(listing, 3), None);
        assert_eq!(interface_in("", 1), None);
    }
}
