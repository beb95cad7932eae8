//! Oracles shared by the fuzz targets: what must hold of any rule set the
//! parser accepts, checked against a deliberately naive reference.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ldsaref_rules::{
    Dest, ParseError, Policy, ProfileId, Proto, Rule, RuleSet, RuleSetBuilder, Saref,
};

/// The precedence of a matching rule within one set, higher wins. Written
/// from the README's words, not from the crate's placement code.
fn rank(r: &Rule) -> (u8, bool, bool) {
    (
        r.dest.prefix_len(),
        r.ports.is_some(),
        r.proto.is_specific(),
    )
}

/// Linear scan: the profile's rules, then the global ones; in each the
/// best rule by [`rank`], which must be unique since ties do not load.
pub fn naive_lookup(
    set: &RuleSet,
    profile: Option<ProfileId>,
    dest: IpAddr,
    proto: Proto,
    port: u16,
) -> Option<Rule> {
    let in_set = |p: Option<ProfileId>| {
        let mut best: Option<Rule> = None;
        for r in set.rules().filter(|r| r.profile == p) {
            if !r.matches(dest, proto, port) {
                continue;
            }
            match best {
                Some(b) if rank(&b) > rank(&r) => {}
                Some(b) if rank(&b) == rank(&r) => panic!(
                    "two rules that tie both loaded and both match {dest} {proto} {port}: \
                     line {} `{b}` and line {} `{r}`",
                    b.origin.line, r.origin.line
                ),
                _ => best = Some(r),
            }
        }
        best
    };
    profile
        .and_then(|p| in_set(Some(p)))
        .or_else(|| in_set(None))
}

/// The first and last address of a destination, and the addresses just
/// outside it: where off-by-one errors in a matcher show.
fn probes(dest: &Dest) -> Vec<IpAddr> {
    match *dest {
        Dest::Any => vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::BROADCAST),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::from(u128::MAX)),
        ],
        Dest::Net {
            addr: IpAddr::V4(a),
            len,
        } => {
            let base = u32::from(a);
            let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            let last = base | host;
            let mut v = vec![base, last, base.wrapping_sub(1), last.wrapping_add(1)];
            v.dedup();
            let mut out: Vec<IpAddr> = v.iter().map(|&x| IpAddr::V4(x.into())).collect();
            // The same, as a dual-stack socket would see them.
            out.extend(
                v.iter()
                    .map(|&x| IpAddr::V6(Ipv4Addr::from(x).to_ipv6_mapped())),
            );
            out
        }
        Dest::Net {
            addr: IpAddr::V6(a),
            len,
        } => {
            let base = u128::from(a);
            let host = u128::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            let last = base | host;
            [base, last, base.wrapping_sub(1), last.wrapping_add(1)]
                .iter()
                .map(|&x| IpAddr::V6(x.into()))
                .collect()
        }
    }
}

fn ports_of(r: &Rule) -> Vec<u16> {
    match r.ports {
        None => vec![0, 1, 22, 65535],
        Some(p) => vec![p.lo, p.hi, p.lo.saturating_sub(1), p.hi.saturating_add(1)],
    }
}

/// Everything that must hold of a set that loaded. `budget` bounds the
/// number of lookups, so that a big input stays fast enough to fuzz.
pub fn check_set(set: &RuleSet, budget: usize) {
    let profiles: Vec<Option<ProfileId>> = std::iter::once(None)
        .chain(set.profile_names().map(|n| set.profile(n)))
        .collect();
    for name in set.profile_names() {
        let id = set.profile(name).expect("a listed profile has an id");
        assert_eq!(set.profile_name(id), name);
    }
    let catch_all = Saref::new(4242);
    let policies: Vec<Policy> = profiles
        .iter()
        .map(|p| {
            let name = p.map(|p| set.profile_name(p));
            Policy::new(Some(set.clone()), name, catch_all).expect("a known profile")
        })
        .collect();
    let mut lookups = 0;
    for rule in set.rules() {
        round_trip(&rule);
        for dest in probes(&rule.dest) {
            for port in ports_of(&rule) {
                for proto in [Proto::Tcp, Proto::Udp] {
                    for (&profile, policy) in profiles.iter().zip(&policies) {
                        lookups += 1;
                        if lookups > budget {
                            return;
                        }
                        let fast = set.lookup(profile, dest, proto, port);
                        let slow = naive_lookup(set, profile, dest, proto, port);
                        assert_eq!(
                            fast.map(|r| r.origin),
                            slow.map(|r| r.origin),
                            "lookup({:?}, {dest}, {proto}, {port}) disagrees with the naive matcher: \
                             fast {:?}, naive {:?}",
                            profile.map(|p| set.profile_name(p)),
                            fast.map(|r| r.to_string()),
                            slow.map(|r| r.to_string()),
                        );
                        check_policy(policy, catch_all, dest, proto, port, fast.as_ref());
                    }
                }
            }
        }
    }
}

fn check_policy(
    policy: &Policy,
    catch_all: Option<Saref>,
    dest: IpAddr,
    proto: Proto,
    port: u16,
    expected: Option<&Rule>,
) {
    let decided = policy.decide(dest, proto, port);
    match (expected, decided) {
        (Some(r), Some(d)) => assert_eq!(d.action, r.action),
        (None, Some(d)) => {
            let v4 = match dest {
                IpAddr::V4(_) => true,
                IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
            };
            assert!(v4, "catch-all applied to IPv6 {dest}: {d}");
            assert_eq!(d.action, ldsaref_rules::Action::Saref(catch_all.unwrap()));
        }
        (None, None) => assert!(
            matches!(dest, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none()),
            "the catch-all must decide IPv4 {dest}"
        ),
        (Some(r), None) => panic!("the policy ignored rule `{r}` for {dest}"),
    }
}

/// The canonical text of a rule parses back to the same rule.
pub fn round_trip(rule: &Rule) {
    let text = rule.to_string();
    let again = RuleSet::parse(&text, "round-trip")
        .unwrap_or_else(|e| panic!("the canonical text {text:?} does not parse: {e}"));
    let r = again.rules().next().expect("one rule");
    assert_eq!(again.len(), 1);
    assert_eq!(
        (r.dest, r.proto, r.ports, r.action),
        (rule.dest, rule.proto, rule.ports, rule.action),
        "{text:?} changed on a round trip"
    );
    assert_eq!(r.to_string(), text);
}

/// An error must point inside the text it is about: one of `sources`
/// (file name, bytes), the last one unless it is a tie among the rules
/// of earlier sources, which comes first in load order.
pub fn check_error(e: &ParseError, sources: &[(&str, &[u8])]) {
    let (last, _) = sources.last().expect("at least one source");
    let (file, text) = sources
        .iter()
        .find(|(f, _)| *f == e.file)
        .unwrap_or_else(|| panic!("{e} names no source"));
    if file != last {
        assert!(e.message.contains("ties with"), "{e}: not about {last}");
    }
    assert!(e.line >= 1 && e.col >= 1, "{e}");
    let lines = text.iter().filter(|&&b| b == b'\n').count() + 1;
    assert!(
        e.line as usize <= lines,
        "{e} is past the last line ({lines})"
    );
    assert!(!e.message.is_empty());
    assert!(e
        .to_string()
        .starts_with(&format!("{file}:{}:{}: ", e.line, e.col)));
}

/// What a builder holds, as far as the public interface shows it.
pub fn snapshot(b: &RuleSetBuilder) -> Result<Vec<String>, String> {
    match b.clone().build() {
        Ok(set) => {
            let mut v: Vec<String> = set
                .rules()
                .map(|r| format!("{:?}", (r, set.file_name(r.origin))))
                .collect();
            v.extend(set.profile_names().map(str::to_owned));
            v.extend(set.file_names().map(str::to_owned));
            Ok(v)
        }
        Err(e) => Err(e.to_string()),
    }
}
