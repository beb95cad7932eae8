//! The compiled index: written, read back, and refused whenever it does not
//! match the rules it was compiled from or is not whole.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ldsaref_rules::compiled::{AlignedBytes, Bytes, Refusal};
use ldsaref_rules::files::{self, Location};
use ldsaref_rules::{Policy, Proto, RuleSet};

const RULES: &str = "\
10.1.0.0/16 saref 1234
10.2.0.0/16 tcp 22 saref 2000
2001:db8::/32 mark 0x200/0xff00
192.168.0.0/16 deny
any udp 1701 reflect
198.51.100.7 dev ipsec1
[client1]
192.168.0.0/24 saref 101
[client2]
192.168.0.0/24 saref 202
";

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ldsaref-compiled-{tag}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn write(p: &Path, text: &str) {
    fs::write(p, text).unwrap();
    fs::set_permissions(p, fs::Permissions::from_mode(0o644)).unwrap();
}

fn bytes(b: &[u8]) -> Bytes {
    Arc::new(AlignedBytes::new(b))
}

fn compiled_bytes() -> Vec<u8> {
    RuleSet::parse(RULES, "rules")
        .unwrap()
        .compile(&[])
        .unwrap()
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn decisions(set: &RuleSet, profile: Option<&str>) -> Vec<String> {
    let policy = Policy::new(Some(set.clone()), profile, None).unwrap();
    let dests = [
        "10.1.2.3",
        "10.2.0.1",
        "2001:db8::5",
        "192.168.0.9",
        "192.168.1.9",
        "203.0.113.1",
        "198.51.100.7",
        "::ffff:10.1.0.1",
    ];
    let mut out = Vec::new();
    for d in dests {
        for proto in [Proto::Tcp, Proto::Udp] {
            for port in [22, 1701, 80] {
                let d: IpAddr = d.parse().unwrap();
                out.push(format!(
                    "{:?}",
                    policy.decide(d, proto, port).map(|x| x.to_string())
                ));
            }
        }
    }
    out
}

#[test]
fn reads_back_and_decides_alike() {
    let parsed = RuleSet::parse(RULES, "rules").unwrap();
    let set = RuleSet::from_index(bytes(&compiled_bytes()), &[]).unwrap();
    assert!(set.is_compiled());
    assert!(set.has_reflect());
    assert_eq!(set.len(), parsed.len());
    for profile in [None, Some("client1"), Some("client2")] {
        assert_eq!(decisions(&set, profile), decisions(&parsed, profile));
    }
    let p = Policy::new(Some(set), Some("client1"), None).unwrap();
    let d = p
        .decide("192.168.0.1".parse().unwrap(), Proto::Tcp, 80)
        .unwrap();
    assert_eq!(d.to_string(), "saref 101 (rules:8 [client1])");
    assert!(Policy::new(p.rules().cloned(), Some("nope"), None).is_err());
}

#[test]
fn format_and_structure_are_checked() {
    let good = compiled_bytes();
    let refuse = |b: &[u8]| RuleSet::from_index(bytes(b), &[]).unwrap_err();
    let mut b = good.clone();
    b[0] ^= 1;
    assert!(matches!(refuse(&b), Refusal::Format(m) if m.contains("not an ldsaref index")));
    let mut b = good.clone();
    b[8] += 1;
    let newer = format!("format version {}", ldsaref_rules::compiled::VERSION + 1);
    assert!(matches!(refuse(&b), Refusal::Format(m) if m.contains(&newer)));
    let mut b = good.clone();
    b[12..16].copy_from_slice(&0x0403_0201u32.to_ne_bytes());
    assert!(matches!(refuse(&b), Refusal::Format(m) if m.contains("another architecture")));
    let mut b = good.clone();
    b[16] ^= 0x20;
    assert!(matches!(refuse(&b), Refusal::Format(m) if m.contains("another architecture")));
    // Truncated anywhere, or grown.
    for len in [0, 1, 8, 100, good.len() / 2, good.len() - 1] {
        assert!(matches!(refuse(&good[..len]), Refusal::Corrupt(_)), "{len}");
    }
    let mut b = good.clone();
    b.extend_from_slice(&[0; 64]);
    assert!(matches!(refuse(&b), Refusal::Corrupt(_)));
    // Misaligned in memory.
    let mut shifted = vec![0u8; good.len() + 1];
    shifted[1..].copy_from_slice(&good);
    let owner: Bytes = Arc::new(ShiftedBy1(AlignedBytes::new(&shifted)));
    assert!(RuleSet::from_index(owner, &[]).is_err());
}

struct ShiftedBy1(AlignedBytes);
impl AsRef<[u8]> for ShiftedBy1 {
    fn as_ref(&self) -> &[u8] {
        &self.0.as_ref()[1..]
    }
}

/// Any single byte flipped past the header's checks: opening may refuse,
/// and a set that opens answers every question without panicking.
#[test]
fn flipped_bytes_never_panic() {
    let good = compiled_bytes();
    for at in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[at] ^= flip;
            if let Ok(set) = RuleSet::from_index(bytes(&b), &[]) {
                let names: Vec<String> = set.profile_names().map(str::to_owned).collect();
                let _ = set.rules().count();
                for profile in [None, Some("client1"), Some("client2")] {
                    if let Ok(policy) = Policy::new(Some(set.clone()), profile, None) {
                        for d in ["10.1.2.3", "192.168.0.9", "2001:db8::5", "1.2.3.4"] {
                            if let Some(x) = policy.decide(d.parse().unwrap(), Proto::Udp, 1701) {
                                let _ = x.to_string();
                            }
                        }
                    }
                }
                drop(names);
            }
        }
    }
}

#[test]
fn index_paths() {
    let p = |s: &str| Location::Explicit(PathBuf::from(s)).index_path();
    assert_eq!(p("/etc/x/rules"), PathBuf::from("/etc/x/rules.index"));
    assert_eq!(p("/etc/x/rules.d/"), PathBuf::from("/etc/x/rules.d.index"));
    assert_eq!(
        Location::System.index_path(),
        PathBuf::from("/etc/ldsaref/rules.index")
    );
}

fn load(loc: &Location) -> (RuleSet, Option<files::IndexNote>) {
    let (rules, note) = files::load_with_index(loc, |p| files::read_index(p, euid()));
    (rules.unwrap().unwrap(), note)
}

#[test]
fn compiled_for_a_directory_is_used_until_a_file_changes() {
    let d = tmpdir("dir");
    let rules = d.join("rules.d");
    fs::create_dir(&rules).unwrap();
    fs::set_permissions(&rules, fs::Permissions::from_mode(0o755)).unwrap();
    write(&rules.join("a.rules"), "[a]\n198.18.0.0/24 saref 101\n");
    write(&rules.join("b.rules"), "[b]\n198.18.0.0/24 saref 202\n");
    let loc = Location::Explicit(rules.clone());

    // No index yet: parsed, with a quiet note.
    let (set, note) = load(&loc);
    assert!(!set.is_compiled());
    let note = note.unwrap();
    assert!(
        !note.serious && note.message.contains("there is none"),
        "{note:?}"
    );

    let path = files::compile_for(&loc).unwrap();
    assert_eq!(path, d.join("rules.d.index"));
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    let (set, note) = load(&loc);
    assert!(set.is_compiled(), "{note:?}");
    assert_eq!(note, None);
    assert_eq!(set.profile_names().collect::<Vec<_>>(), ["a", "b"]);

    // A file changed (same size): stale, parsed, and the message names it.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&rules.join("b.rules"), "[b]\n198.18.0.0/24 saref 203\n");
    let (set, note) = load(&loc);
    assert!(!set.is_compiled());
    let note = note.unwrap();
    assert!(note.serious, "{note:?}");
    assert!(
        note.message.contains("stale") && note.message.contains("b.rules changed"),
        "{}",
        note.message
    );
    let policy = Policy::new(Some(set), Some("b"), None).unwrap();
    let decided = policy.decide("198.18.0.1".parse().unwrap(), Proto::Tcp, 1);
    assert_eq!(decided.unwrap().action.to_string(), "saref 203");

    // Compiled again: used again. Then a new file: stale.
    files::compile_for(&loc).unwrap();
    assert!(load(&loc).0.is_compiled());
    write(&rules.join("c.rules"), "[c]\n198.18.0.0/24 saref 303\n");
    let (set, note) = load(&loc);
    assert!(!set.is_compiled());
    assert!(note.unwrap().message.contains("c.rules is not among"));
    files::compile_for(&loc).unwrap();
    assert!(load(&loc).0.is_compiled());
    fs::remove_file(rules.join("a.rules")).unwrap();
    let (set, note) = load(&loc);
    assert!(!set.is_compiled());
    assert!(note.unwrap().message.contains("stale"));
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn unsafe_or_corrupt_index_files_are_refused() {
    let d = tmpdir("unsafe");
    let f = d.join("rules");
    write(&f, RULES);
    let loc = Location::Explicit(f.clone());
    let index = files::compile_for(&loc).unwrap();
    assert!(load(&loc).0.is_compiled());

    fs::set_permissions(&index, fs::Permissions::from_mode(0o664)).unwrap();
    let (set, note) = load(&loc);
    assert!(!set.is_compiled());
    assert!(note.unwrap().message.contains("unsafe"));
    fs::set_permissions(&index, fs::Permissions::from_mode(0o644)).unwrap();

    if euid() == 0 {
        std::os::unix::fs::chown(&index, Some(65534), None).unwrap();
        let (set, note) = load(&loc);
        assert!(!set.is_compiled());
        assert!(note.unwrap().message.contains("owned by uid 65534"));
        std::os::unix::fs::chown(&index, Some(0), None).unwrap();
    }
    assert!(load(&loc).0.is_compiled());

    // Truncated in place.
    let b = fs::read(&index).unwrap();
    fs::write(&index, &b[..b.len() - 64]).unwrap();
    let (set, note) = load(&loc);
    assert!(!set.is_compiled());
    assert!(note.unwrap().message.contains("corrupt"));
    fs::remove_dir_all(&d).unwrap();
}
