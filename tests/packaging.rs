//! The systemd units the package ships (packaging/debian): `systemd-analyze
//! verify` finds nothing to say about them (with `ExecStart` pointed at the
//! built command, and the manual pages not looked up: they are checked
//! installed by .ci/steps/20-package), and they say what the README says.

mod common;

use std::process::Command;

use common::{cli_path, source_dir, TempDir};

#[test]
fn the_systemd_units_verify() {
    let units = source_dir().join("packaging/debian");
    let service = std::fs::read_to_string(units.join("ldsaref-apply.service")).unwrap();
    let path = std::fs::read_to_string(units.join("ldsaref-apply.path")).unwrap();
    for want in [
        "Type=oneshot",
        "After=nftables.service",
        "ExecStart=/usr/bin/ldsaref apply\n",
    ] {
        assert!(service.contains(want), "{want}: {service}");
    }
    for want in [
        "PathChanged=/etc/ldsaref/rules\n",
        "PathChanged=/etc/ldsaref/rules.d\n",
        "Unit=ldsaref-apply.service",
    ] {
        assert!(path.contains(want), "{want}: {path}");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED (no systemd-analyze): the_systemd_units_verify");
        return;
    }
    let d = TempDir::new("units");
    let s = d.write(
        "ldsaref-apply.service",
        service.replace("/usr/bin/ldsaref", cli_path().to_str().unwrap()),
    );
    let p = d.write("ldsaref-apply.path", &path);
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&s)
        .arg(&p)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
}
