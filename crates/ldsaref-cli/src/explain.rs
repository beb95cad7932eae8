//! `ldsaref explain`: which rule decides for a destination, and what the
//! library tells the kernel. Uses the same policy and the same kernel
//! descriptions as the library.

use std::net::{IpAddr, SocketAddr};

use clap::Args;
use ldsaref_kernel::op::{Describe, Target, Verdict};
use ldsaref_rules::settings::{Mode, Settings};
use ldsaref_rules::{Policy, Proto};

use crate::settings;
use crate::SteerOpts;

#[derive(Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    steer: SteerOpts,
    /// tcp or udp (default: both)
    #[arg(long, value_parser = ["tcp", "udp"])]
    proto: Option<String>,
    // Help as an attribute: as a doc comment, rustdoc reads the brackets
    // as a link and clap would print the escapes.
    #[arg(
        value_name = "ADDR[:PORT]",
        help = "The remote end: ADDR, ADDR:PORT, [IPV6]:PORT"
    )]
    destination: String,
}

/// `ADDR`, `ADDR:PORT`, `[V6]`, `[V6]:PORT`; port 0 when absent.
fn parse_destination(s: &str) -> Option<(IpAddr, u16)> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some((sa.ip(), sa.port()));
    }
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>().ok().map(|ip| (ip, 0))
}

pub fn explain(args: &ExplainArgs) -> u8 {
    let Some((ip, port)) = parse_destination(&args.destination) else {
        eprintln!(
            "ldsaref: \"{}\" is not an address (ADDR, ADDR:PORT or [IPV6]:PORT)",
            args.destination
        );
        return 2;
    };
    let ov = match settings::overrides(&args.steer) {
        Ok(ov) => ov,
        Err(e) => {
            eprintln!("ldsaref: {e}");
            return 1;
        }
    };
    let (settings, policy) = match settings::validate(&ov) {
        Ok(x) => x,
        Err(problems) => {
            for p in problems {
                eprintln!("ldsaref: {p}");
            }
            eprintln!("ldsaref: with this configuration the library refuses every inet connect and send (LDSAREF_ON_ERROR=fail) or steers nothing (warn)");
            return 1;
        }
    };
    let protos: &[Proto] = match args.proto.as_deref() {
        Some("tcp") => &[Proto::Tcp],
        Some("udp") => &[Proto::Udp],
        _ => &[Proto::Tcp, Proto::Udp],
    };
    for (i, &proto) in protos.iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_one(&settings, &policy, ip, port, proto);
    }
    0
}

fn print_one(settings: &Settings, policy: &Policy, ip: IpAddr, port: u16, proto: Proto) {
    let shown = SocketAddr::new(ip, port);
    println!(
        "destination: {} {proto}{}",
        if port == 0 {
            ip.to_string()
        } else {
            shown.to_string()
        },
        if port == 0 {
            " (no port given: rules with a port do not match)"
        } else {
            ""
        }
    );
    let ip = ip.to_canonical();
    let Some(d) = policy.decide(ip, proto, port) else {
        println!(
            "decided by:  no rule{}",
            if policy.catch_all().is_some() {
                " (IPSEC_SAREF applies to IPv4 only)"
            } else {
                ""
            }
        );
        println!("kernel:      nothing: the traffic is sent as the program makes it");
        return;
    };
    match &d.source {
        ldsaref_rules::DecisionSource::Rule(r) => {
            println!("decided by:  {}: {}", d.source, r.rule())
        }
        ldsaref_rules::DecisionSource::CatchAll => {
            println!(
                "decided by:  IPSEC_SAREF (catch-all): saref {}",
                policy
                    .catch_all()
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )
        }
    }
    match Verdict::of(d.action, settings.mode) {
        Verdict::Steer(steer) => {
            if matches!(steer, ldsaref_kernel::op::Steer::Saref(_))
                && matches!(ip, IpAddr::V6(_))
                && settings.mode == Mode::Klips
            {
                println!("kernel:      none possible: KLIPS SArefs are IPv4 only; the call fails with EAFNOSUPPORT (LDSAREF_ON_ERROR=fail) or goes unsteered (warn)");
                return;
            }
            let targets: &[(&str, Target)] = match proto {
                Proto::Tcp => &[("connect", Target::Socket(Proto::Tcp))],
                Proto::Udp => &[
                    ("connect", Target::Socket(Proto::Udp)),
                    ("sendto", Target::Datagram),
                ],
            };
            for (k, (call, target)) in targets.iter().enumerate() {
                let label = if k == 0 { "kernel:" } else { "" };
                println!(
                    "{label:<12} {call}: {}",
                    Describe {
                        steer,
                        target: *target,
                        abi: settings.abi
                    }
                );
            }
        }
        Verdict::Pass => {
            println!("kernel:      nothing: the socket is left as the program made it")
        }
        Verdict::Deny => println!("kernel:      nothing is sent: connect/send fails with EACCES"),
        Verdict::Reflect => {
            println!("kernel:      UDP replies go back through the SA the peer's last datagram came in on")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_destination;

    #[test]
    fn destinations() {
        assert_eq!(
            parse_destination("192.0.2.1:22"),
            Some(("192.0.2.1".parse().unwrap(), 22))
        );
        assert_eq!(
            parse_destination("192.0.2.1"),
            Some(("192.0.2.1".parse().unwrap(), 0))
        );
        assert_eq!(
            parse_destination("[2001:db8::1]:443"),
            Some(("2001:db8::1".parse().unwrap(), 443))
        );
        assert_eq!(
            parse_destination("2001:db8::1"),
            Some(("2001:db8::1".parse().unwrap(), 0))
        );
        assert_eq!(
            parse_destination("[2001:db8::1]"),
            Some(("2001:db8::1".parse().unwrap(), 0))
        );
        assert_eq!(parse_destination("host.example"), None);
    }
}
