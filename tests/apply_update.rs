//! `ldsaref apply` replaces only the sections whose rules changed (one
//! connection's profile, the global rules) when the table's shape is the
//! same, and the table it leaves is the one a fresh `apply` installs.
//! Root: in a network namespace of the test's own (the table goes with
//! it); the profiles' cgroups are the test's (`-t<PID>`), removed at the
//! end.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::bed::{cgroup2_mount, ldsaref_cgroup_name, Cgroups};
use common::{cli_path, run_with_timeout, Netns, RunOutput, TempDir};

/// `nft list WHAT…` in the test's namespace.
fn nft_list(ns: &Netns, what: &[&str]) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns.name(), "nft", "list"])
        .args(what)
        .output()
        .unwrap()
}

/// The table's lines, sorted (the kernel lists chains in creation order).
fn table(ns: &Netns) -> Vec<String> {
    let out = nft_list(ns, &["table", "inet", "ldsaref"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

#[test]
fn apply_replaces_only_what_changed() {
    require_root!();
    let Some(mount) = cgroup2_mount() else {
        eprintln!("SKIPPED (no cgroup v2): apply_replaces_only_what_changed");
        return;
    };
    let pid = std::process::id();
    let (a, b) = (format!("up-a-t{pid}"), format!("up-b-t{pid}"));
    let slice = mount.join("ldsaref.slice");
    let _cgroups = Cgroups(
        [&a, &b]
            .iter()
            .map(|p| slice.join(ldsaref_cgroup_name(p)))
            .collect(),
    );
    let ns = Netns::new();
    let d = TempDir::new("apply-update");
    let netns = format!("--net=/run/netns/{}", ns.name());
    let apply = |rules: &PathBuf| -> RunOutput {
        let mut c = Command::new("nsenter");
        c.arg(&netns)
            .arg(cli_path())
            .arg("apply")
            .arg("--rules")
            .arg(rules);
        common::clear_ldsaref_env(&mut c);
        run_with_timeout(&mut c, Duration::from_secs(60))
    };
    let global = "10.1.0.0/16 saref 1234\n10.2.0.0/16 tcp 22 saref 2000\n192.0.2.99 pass\n";
    let v1 = d.write(
        "v1",
        format!("{global}[{a}]\n198.18.7.0/24 saref 71\n198.18.8.0/24 tcp 22 saref 72\n[{b}]\n198.18.0.0/24 mark 2\n"),
    );
    // One connection changes: a port rule goes, a network and an IPv6
    // rule come (more port chains, then fewer).
    let v2 = d.write(
        "v2",
        format!("{global}[{a}]\n198.18.7.0/24 saref 71\n198.18.7.0/25 tcp 443 saref 75\n198.18.9.0/24 udp 53 pass\n198.18.9.0/25 udp 500-4500 saref 9\n2001:db8:9::/48 mark 0x33\n[{b}]\n198.18.0.0/24 mark 2\n"),
    );
    // And the global rules, with it.
    let v3 = d.write(
        "v3",
        format!("10.1.0.0/16 saref 1234\n10.3.0.0/16 saref 3\n[{a}]\n198.18.7.0/24 saref 71\n[{b}]\n198.18.0.0/24 mark 2\n"),
    );
    // The table `updated` is line for line the one a fresh install of
    // `rules` makes (which it leaves installed).
    let same_as_fresh = |rules: &PathBuf, updated: Vec<String>| {
        common::run_ok(
            "ip",
            &[
                "netns",
                "exec",
                ns.name(),
                "nft",
                "delete",
                "table",
                "inet",
                "ldsaref",
            ],
        );
        let out = apply(rules);
        assert!(out.stdout.contains("installed"), "{out}");
        assert_eq!(updated, table(&ns), "{}", rules.display());
    };
    let out = apply(&v1);
    assert!(out.stdout.contains("installed"), "{out}");
    for (rules, sections) in [(&v2, 1), (&v3, 2), (&v1, 2)] {
        let out = apply(rules);
        assert_eq!(out.code(), Some(0), "{out}");
        let s = if sections == 1 { "" } else { "s" };
        assert!(
            out.stdout
                .contains(&format!("): {sections} section{s} replaced")),
            "{out}"
        );
        let updated = table(&ns);
        let out = apply(rules);
        assert!(out.stdout.contains("up to date"), "{out}");
        same_as_fresh(rules, updated);
    }
    // One connection goes (its file removed, as updown's --on-down
    // remove does): its profile keeps its place while its cgroup is
    // there, dropping what the cgroup sends, and one section changes.
    // Empty when there is no such chain.
    let chain = |name: &str| {
        let out = nft_list(&ns, &["chain", "inet", "ldsaref", name]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };

    let fresh = table(&ns);
    let v5 = d.write(
        "v5",
        format!("{global}[{a}]\n198.18.7.0/24 saref 71\n198.18.8.0/24 tcp 22 saref 72\n"),
    );
    let out = apply(&v5);
    assert!(
        out.stdout.contains("updated (1 profile, 5 rules, 1 profile without rules (its cgroup's packets dropped)): 1 section replaced (their elements, over netlink)"),
        "{out}"
    );
    let down = table(&ns);
    // Its section emptied, its cgroup in @absent, which steer drops.
    let maps = nft_list(&ns, &["map", "inet", "ldsaref", "p1_4"]);
    let maps = String::from_utf8_lossy(&maps.stdout);
    assert!(!maps.contains("elements"), "{maps}");
    let absent = nft_list(&ns, &["set", "inet", "ldsaref", "absent"]);
    let absent = String::from_utf8_lossy(&absent.stdout);
    // (nft shows the cgroup's id where the path does not resolve: inside
    // `ip netns exec`, /sys is that of the network namespace.)
    let id = std::os::unix::fs::MetadataExt::ino(
        &std::fs::metadata(slice.join(ldsaref_cgroup_name(&b))).unwrap(),
    );
    assert!(
        absent.contains(&format!("elements = {{ {id} }}"))
            || absent.contains(&format!("{}\" }}", ldsaref_cgroup_name(&b))),
        "{absent}"
    );
    assert!(
        chain("steer").contains("socket cgroupv2 level 2 @absent goto absent"),
        "{}",
        chain("steer")
    );
    let out = apply(&v5);
    assert!(out.stdout.contains("up to date"), "{out}");
    // And comes back: one section again, the table a fresh one's.
    let out = apply(&v1);
    assert!(
        out.stdout.contains(
            "updated (2 profiles, 6 rules): 1 section replaced (their elements, over netlink)"
        ),
        "{out}"
    );
    assert_eq!(fresh, table(&ns));
    // Every kind of element (both families, adjacent intervals, an
    // interval to the end of the address space, codes to verdict chains)
    // written over netlink: the table a fresh install of the same rules
    // makes.
    let v6 = d.write(
        "v6",
        format!(
            "{global}[{a}]\n198.18.7.0/24 saref 71\n198.18.8.0/24 tcp 22 saref 72\n[{b}]\n\
             198.18.0.0/24 mark 2\n198.18.1.0/24 deny\n198.18.2.0/25 saref 5\n\
             198.18.2.128/25 saref 6\n240.0.0.0/4 pass\n2001:db8::/32 mark 7\n::/0 deny\n"
        ),
    );
    for rules in [&v6, &v1] {
        let out = apply(rules);
        assert!(
            out.stdout
                .contains("1 section replaced (their elements, over netlink)"),
            "{out}"
        );
        let updated = table(&ns);
        same_as_fresh(rules, updated);
    }
    assert_eq!(fresh, table(&ns));
    // With a port rule, nft writes the section (its port chain): b going
    // (@absent and steer made again: the same table as b's going over
    // netlink above) and coming back (the table a fresh install makes).
    let v7 = d.write(
        "v7",
        format!("{global}[{a}]\n198.18.7.0/24 saref 71\n198.18.8.0/24 tcp 22 saref 72\n[{b}]\n198.18.0.0/24 mark 2\n198.18.0.0/24 tcp 22 mark 3\n"),
    );
    for rules in [&v7, &v5, &v7, &v1] {
        let out = apply(rules);
        assert!(out.stdout.contains("1 section replaced\n"), "{out}");
        let updated = table(&ns);
        if rules == &v5 {
            assert_eq!(updated, down);
            continue;
        }
        same_as_fresh(rules, updated);
    }
    assert_eq!(fresh, table(&ns));
    // Without its cgroup, a profile's place is not kept: a new shape.
    std::fs::remove_dir(slice.join(ldsaref_cgroup_name(&b))).unwrap();
    let out = apply(&v5);
    assert!(out.stdout.contains("table inet ldsaref replaced"), "{out}");
    assert!(chain("p1").is_empty(), "{}", chain("p1"));
    // Back, in a cgroup made again (a new id): the whole table.
    let out = apply(&v1);
    assert!(out.stdout.contains("table inet ldsaref replaced"), "{out}");

    // A new verdict chain (a masked mark) changes the shape: the whole
    // table. Not deny, whose chain is always there (updown denies a
    // network of a connection while it is down).
    let v4 = d.write("v4", format!("{global}192.0.2.7 deny\n[{a}]\n[{b}]\n"));
    let out = apply(&v4);
    assert!(out.stdout.contains("): 3 sections replaced"), "{out}");
    let v4 = d.write(
        "v4",
        format!("{global}192.0.2.7 mark 0x20/0xf0\n[{a}]\n[{b}]\n"),
    );
    let out = apply(&v4);
    assert!(out.stdout.contains("replaced"), "{out}");
}
