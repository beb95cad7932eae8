//! `ldsaref updown`: keeps one rules file per IPsec connection in a rules
//! directory, from the variables pluto gives its updown script, so that a
//! tunnel's SA is named in the rules while the tunnel is up.
//!
//! The file for connection `CONN` is `DIR/CONN.rules` (the name sanitised):
//!
//! ```text
//! # ldsaref updown: connection "CONN" (up-client); rewritten on up, removed on down
//! [CONN]
//! 192.168.0.0/24 tcp 22 saref 101
//! ```
//!
//! Every change is a complete file renamed into place, under an exclusive
//! lock on the directory, so a reader (the library reloading, `check`)
//! sees the old rules or the new ones, never half a file, and concurrent
//! invocations never lose each other's work.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use clap::Args;
use ldsaref_rules::files::{self, Location};
use ldsaref_rules::{RuleSet, Saref};

#[derive(Args, Debug)]
pub struct UpdownArgs {
    /// The rules directory the files are written to
    #[arg(long, value_name = "DIR", default_value = files::SYSTEM_DIR)]
    pub dir: PathBuf,
    /// Steer with this mark instead of the SAref (mark-based XFRM setups);
    /// decimal or 0x hex. Default: PLUTO_PEER_REF, else CONNMARK_OUT
    /// (libreswan mark=), else PLUTO_MARK_OUT (strongSwan mark_out)
    #[arg(long, value_name = "N[/MASK]")]
    pub mark: Option<String>,
    /// Write the rule outside any section, for every wrapped program, not
    /// only for LDSAREF_PROFILE=CONN
    #[arg(long)]
    pub global: bool,
    /// What down-client and unroute-client leave: remove the file; deny
    /// (the connection's client network refused, also to programs already
    /// running); empty (its section without rules: the global rules apply)
    #[arg(long = "on-down", value_enum, default_value_t = OnDown::Remove)]
    pub on_down: OnDown,
}

/// What a connection going down leaves in the rules directory.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnDown {
    /// No file: new programs with LDSAREF_PROFILE=CONN refuse to start (an
    /// unknown profile); running ones keep the rules they had, since the
    /// library keeps its previous rules when the new ones lack its profile.
    Remove,
    /// `CLIENT deny` in the section: nothing reaches the connection's
    /// client network until the connection is up again.
    Deny,
    /// The section without rules: the global rules decide.
    Empty,
}

/// What a verb asks for.
#[derive(Debug, PartialEq, Eq)]
enum Verb {
    Install,
    Remove,
    Ignore,
}

fn classify(verb: &str) -> Verb {
    let base = verb.strip_suffix("-v6").unwrap_or(verb);
    match base {
        "up-client" | "route-client" | "up-host" | "route-host" => Verb::Install,
        "down-client" | "unroute-client" | "down-host" | "unroute-host" => Verb::Remove,
        _ => Verb::Ignore,
    }
}

/// SAref values pluto passes when the SA has none a socket could use:
/// `IPSEC_SAREF_NULL` (0, or all ones in old versions) and `IPSEC_SAREF_NA`.
const SAREF_NONE: [u64; 3] = [0, 0xffff_ffff, 0xffff_0001];

/// The connection name as a file and profile name: what the rules accept
/// in a section header (`A-Z a-z 0-9 _ . -`), every other character `_`,
/// never a hidden file (the rules loader skips those).
fn sanitise(conn: &str) -> Result<String, String> {
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

/// `N[/MASK]`, decimal or `0x` hex, as the rules write it.
fn parse_mark(var: &str, text: &str) -> Result<String, String> {
    let num = |t: &str| -> Option<u32> {
        match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(h) => u32::from_str_radix(h, 16).ok(),
            None => t.parse().ok(),
        }
    };
    let bad =
        || format!("{var}={text:?}: not a mark N[/MASK] (decimal or 0x hex, at most 32 bits)");
    let (v, m) = match text.split_once('/') {
        Some((v, m)) => (num(v).ok_or_else(bad)?, Some(num(m).ok_or_else(bad)?)),
        None => (num(text).ok_or_else(bad)?, None),
    };
    Ok(match m {
        Some(m) if m != u32::MAX => format!("mark {v:#x}/{m:#x}"),
        _ => format!("mark {v:#x}"),
    })
}

/// The rule's action: `--mark`, else the SAref, else a mark pluto exports;
/// `Err(None)` when there is none of them.
fn action(
    args: &UpdownArgs,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Option<String>> {
    if let Some(m) = &args.mark {
        return parse_mark("--mark", m).map_err(Some);
    }
    if let Some(r) = get("PLUTO_PEER_REF").filter(|r| !r.is_empty()) {
        let n: u64 = r
            .parse()
            .map_err(|_| Some(format!("PLUTO_PEER_REF={r:?}: not a number")))?;
        if !SAREF_NONE.contains(&n) {
            let saref: Saref = r
                .parse()
                .map_err(|e| Some(format!("PLUTO_PEER_REF: {e}")))?;
            return Ok(format!("saref {saref}"));
        }
    }
    for var in ["CONNMARK_OUT", "PLUTO_MARK_OUT"] {
        if let Some(m) = get(var).filter(|m| !m.is_empty()) {
            return parse_mark(var, &m).map_err(Some);
        }
    }
    Err(None)
}

/// Why there is no action, when [`action`] finds none.
fn no_sa(get: &dyn Fn(&str) -> Option<String>) -> String {
    let refnote = match get("PLUTO_PEER_REF").filter(|r| !r.is_empty()) {
        Some(r) => format!("PLUTO_PEER_REF={r} (the SA has no SAref)"),
        None => "PLUTO_PEER_REF is unset".to_owned(),
    };
    format!(
        "no SA to name: {refnote}, and neither CONNMARK_OUT nor PLUTO_MARK_OUT is set; give --mark N[/MASK] for a mark-based setup"
    )
}

/// `PLUTO_PEER_CLIENT` as a rule destination.
fn destination(get: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let c = get("PLUTO_PEER_CLIENT")
        .filter(|c| !c.is_empty())
        .ok_or("PLUTO_PEER_CLIENT is not set (the peer's client network, e.g. 192.0.2.0/24)")?;
    let (addr, len) = match c.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (c.as_str(), None),
    };
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("PLUTO_PEER_CLIENT={c:?}: not an address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = match len {
        Some(l) => l
            .parse()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("PLUTO_PEER_CLIENT={c:?}: bad prefix length"))?,
        None => max,
    };
    Ok(format!("{ip}/{len}"))
}

/// `PLUTO_PEER_PROTOCOL` and `PLUTO_PEER_PORT` as rule fields; unset means 0
/// (any), as pluto means it.
fn proto_port(get: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
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
        0 => "",
        6 => "tcp",
        17 => "udp",
        n => {
            return Err(format!(
                "PLUTO_PEER_PROTOCOL={n}: ldsaref steers TCP (6) and UDP (17) only; 0 means any"
            ))
        }
    };
    let port = num("PLUTO_PEER_PORT", 65535)?;
    let mut f = proto.to_owned();
    if port != 0 {
        if !f.is_empty() {
            f.push(' ');
        }
        f.push_str(&port.to_string());
    }
    Ok(f)
}

/// The file's text. The first line records the unsanitised connection
/// name, so that two names that sanitise alike are told apart.
fn render(conn: &str, section: Option<&str>, verb: &str, rule: Option<&str>) -> String {
    let mut s = format!(
        "# ldsaref updown: connection {conn:?} ({verb}); written by pluto's updown, do not edit\n"
    );
    if let Some(name) = section {
        s.push_str(&format!("[{name}]\n"));
    }
    match rule {
        Some(rule) => {
            s.push_str(rule);
            s.push('\n');
        }
        None => s.push_str("# connection down: no rules\n"),
    }
    s
}

/// The connection an existing file was written for, as its first line
/// quotes it (`{:?}`).
fn owner(text: &str) -> Option<&str> {
    let rest = text
        .lines()
        .next()?
        .strip_prefix("# ldsaref updown: connection ")?;
    rest.rsplit_once(" (").map(|(quoted, _)| quoted)
}

/// Holds an exclusive `flock` on the rules directory until dropped.
struct DirLock(File);

impl DirLock {
    fn take(dir: &Path) -> Result<DirLock, String> {
        let f = File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        loop {
            // SAFETY: flock only takes a descriptor number and a flag; the
            // descriptor is open and owned by `f` for the whole call.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(DirLock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(format!("{}: cannot lock: {e}", dir.display()));
            }
        }
    }

    fn sync(&self) -> std::io::Result<()> {
        self.0.sync_all()
    }
}

/// Would the directory still load with `file` holding `text` (or gone)?
fn check_directory(dir: &Path, file: &Path, text: Option<&str>) -> Result<(), String> {
    let mut names = Location::Explicit(dir.to_path_buf()).files()?;
    names.retain(|f| f != file);
    if text.is_some() {
        names.push(file.to_path_buf());
        names.sort();
    }
    let mut b = RuleSet::builder();
    for f in &names {
        let name = f.display().to_string();
        if f == file {
            b.add_source(text.unwrap_or_default(), &name)
        } else {
            let bytes = fs::read(f).map_err(|e| format!("{name}: {e}"))?;
            b.add_bytes(&bytes, &name)
        }
        .map_err(|e| e.to_string())?;
    }
    b.build().map(drop).map_err(|e| e.to_string())
}

/// Writes `text` to `file` atomically: a hidden temporary file in the same
/// directory, fsynced, renamed over it, then the directory fsynced.
fn write_atomically(dir: &DirLock, file: &Path, text: &str) -> Result<(), String> {
    let parent = file.parent().unwrap_or(Path::new("/"));
    let base = file.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(".{base}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            // Fixed, not from the umask: the loader refuses files that
            // others may write.
            .mode(0o644)
            .open(&tmp)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, file)?;
        dir.sync()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        format!("{}: cannot write: {e}", file.display())
    })
}

fn create_dir(dir: &Path) -> Result<(), String> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(|e| format!("{}: cannot create the rules directory: {e}", dir.display()))
}

/// `ldsaref updown`, with the environment read through `get`.
pub fn updown_with(args: &UpdownArgs, get: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
    let verb = get("PLUTO_VERB").filter(|v| !v.is_empty()).ok_or(
        "PLUTO_VERB is not set: run this as pluto's updown script (leftupdown=), which sets PLUTO_VERB, PLUTO_CONNECTION, PLUTO_PEER_CLIENT...",
    )?;
    let todo = classify(&verb);
    if todo == Verb::Ignore {
        return Ok(());
    }
    if !args.dir.is_absolute() {
        return Err(format!(
            "--dir {}: must be an absolute path",
            args.dir.display()
        ));
    }
    let conn = get("PLUTO_CONNECTION").ok_or("PLUTO_CONNECTION is not set")?;
    let name = sanitise(&conn)?;
    let file = args.dir.join(format!("{name}.{}", files::EXTENSION));

    let text = match todo {
        Verb::Install => {
            let fields = proto_port(get)?;
            let dest = destination(get)?;
            let act = match action(args, get) {
                Ok(a) => a,
                Err(Some(e)) => return Err(e),
                // A routed connection has no SA until it is up: the rule
                // comes with up-client. Failing would make pluto fail the
                // route.
                Err(None) if verb.starts_with("route-") => {
                    println!("ldsaref: {verb} {conn:?}: no SA yet, nothing written (up-client writes the rule)");
                    return Ok(());
                }
                Err(None) => return Err(no_sa(get)),
            };
            let rule = format!(
                "{dest} {fields}{}{act}",
                if fields.is_empty() { "" } else { " " },
            );
            let section = (!args.global).then_some(name.as_str());
            let text = render(&conn, section, &verb, Some(&rule));
            // The rule alone first, so that an error points at pluto's
            // values rather than at the directory.
            RuleSet::parse(&text, &file.display().to_string()).map_err(|e| {
                format!(
                    "{e} (from PLUTO_PEER_CLIENT, PLUTO_PEER_PROTOCOL, PLUTO_PEER_PORT and the SA)"
                )
            })?;
            Some(text)
        }
        _ => match args.on_down {
            OnDown::Remove => None,
            OnDown::Empty if args.global => None,
            OnDown::Empty => Some(render(&conn, Some(&name), &verb, None)),
            OnDown::Deny => {
                let rule = format!("{} deny", destination(get)?);
                let section = (!args.global).then_some(name.as_str());
                Some(render(&conn, section, &verb, Some(&rule)))
            }
        },
    };

    if text.is_some() {
        create_dir(&args.dir)?;
    } else if !args.dir.is_dir() {
        return Ok(());
    }
    let lock = DirLock::take(&args.dir)?;

    if let Ok(old) = fs::read_to_string(&file) {
        if let Some(other) = owner(&old).filter(|o| *o != format!("{conn:?}")) {
            return Err(format!(
                "{}: written for connection {other}, whose name gives the same file name as {conn:?}; rename one of the connections",
                file.display()
            ));
        }
    } else if text.is_none() {
        return Ok(());
    }

    match text {
        Some(text) => {
            if let Err(e) = check_directory(&args.dir, &file, Some(&text)) {
                return Err(format!(
                    "not written, {} would no longer load: {e}",
                    args.dir.display()
                ));
            }
            write_atomically(&lock, &file, &text)?;
            let rule = match text.lines().last() {
                Some(l) if !l.starts_with('#') => l,
                _ => "no rules (connection down)",
            };
            println!(
                "ldsaref: {}: {}{rule}",
                file.display(),
                if args.global {
                    String::new()
                } else {
                    format!("[{name}] ")
                }
            );
        }
        None => {
            match fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: cannot remove: {e}", file.display())),
            }
            lock.sync()
                .map_err(|e| format!("{}: {e}", args.dir.display()))?;
            println!("ldsaref: {}: removed", file.display());
        }
    }
    Ok(())
}

/// `ldsaref updown`: exit 0 done (or nothing to do), 1 with a message.
pub fn updown(args: &UpdownArgs) -> u8 {
    let get = |k: &str| std::env::var(k).ok();
    match updown_with(args, &get) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ldsaref updown: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    fn args() -> UpdownArgs {
        UpdownArgs {
            dir: PathBuf::from("/nonexistent"),
            mark: None,
            global: false,
            on_down: OnDown::Remove,
        }
    }

    #[test]
    fn verbs() {
        assert_eq!(classify("up-client"), Verb::Install);
        assert_eq!(classify("route-client-v6"), Verb::Install);
        assert_eq!(classify("up-host"), Verb::Install);
        assert_eq!(classify("down-client-v6"), Verb::Remove);
        assert_eq!(classify("unroute-client"), Verb::Remove);
        assert_eq!(classify("prepare-host"), Verb::Ignore);
        assert_eq!(classify("prepare-client-v6"), Verb::Ignore);
        assert_eq!(classify("up-clientx"), Verb::Ignore);
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
        assert_eq!(parse_mark("v", "1001/0xffffffff").unwrap(), "mark 0x3e9");
        assert_eq!(
            parse_mark("v", "0x200/0xff00").unwrap(),
            "mark 0x200/0xff00"
        );
        assert_eq!(parse_mark("v", "7").unwrap(), "mark 0x7");
        assert!(parse_mark("v", "x").unwrap_err().starts_with("v=\"x\""));
        assert!(parse_mark("v", "1/").is_err());
        assert!(parse_mark("v", "4294967296").is_err());
    }

    #[test]
    fn the_sa_comes_from_the_option_the_saref_or_a_mark() {
        let a = args();
        assert_eq!(
            action(&a, &env(&[("PLUTO_PEER_REF", "101")])).unwrap(),
            "saref 101"
        );
        assert_eq!(
            action(
                &a,
                &env(&[("PLUTO_PEER_REF", "0"), ("CONNMARK_OUT", "5/0xffffffff")])
            )
            .unwrap(),
            "mark 0x5"
        );
        assert_eq!(
            action(&a, &env(&[("PLUTO_MARK_OUT", "0x10/0xff")])).unwrap(),
            "mark 0x10/0xff"
        );
        let g = env(&[("PLUTO_PEER_REF", "4294901761")]);
        assert_eq!(action(&a, &g), Err(None));
        let e = no_sa(&g);
        assert!(
            e.contains("PLUTO_PEER_REF=4294901761") && e.contains("--mark"),
            "{e}"
        );
        assert!(action(&a, &env(&[("PLUTO_PEER_REF", "40000")]))
            .unwrap_err()
            .unwrap()
            .contains("PLUTO_PEER_REF"));
        assert!(action(&a, &env(&[("PLUTO_PEER_REF", "x")]))
            .unwrap_err()
            .unwrap()
            .contains("PLUTO_PEER_REF=\"x\""));
        let m = UpdownArgs {
            mark: Some("0x7".into()),
            ..args()
        };
        assert_eq!(
            action(&m, &env(&[("PLUTO_PEER_REF", "101")])).unwrap(),
            "mark 0x7"
        );
    }

    #[test]
    fn fields() {
        let g = env(&[
            ("PLUTO_PEER_CLIENT", "192.0.2.0/24"),
            ("PLUTO_PEER_PROTOCOL", "6"),
            ("PLUTO_PEER_PORT", "22"),
        ]);
        assert_eq!(destination(&g).unwrap(), "192.0.2.0/24");
        assert_eq!(proto_port(&g).unwrap(), "tcp 22");
        assert_eq!(
            proto_port(&env(&[
                ("PLUTO_PEER_PROTOCOL", "0"),
                ("PLUTO_PEER_PORT", "0")
            ]))
            .unwrap(),
            ""
        );
        assert_eq!(
            proto_port(&env(&[
                ("PLUTO_PEER_PROTOCOL", "0"),
                ("PLUTO_PEER_PORT", "53")
            ]))
            .unwrap(),
            "53"
        );
        assert!(proto_port(&env(&[("PLUTO_PEER_PROTOCOL", "1")]))
            .unwrap_err()
            .contains("PLUTO_PEER_PROTOCOL=1"));
        assert!(proto_port(&env(&[("PLUTO_PEER_PORT", "70000")]))
            .unwrap_err()
            .contains("PLUTO_PEER_PORT"));
        assert_eq!(
            destination(&env(&[("PLUTO_PEER_CLIENT", "2001:db8::/32")])).unwrap(),
            "2001:db8::/32"
        );
        assert_eq!(
            destination(&env(&[("PLUTO_PEER_CLIENT", "198.51.100.7")])).unwrap(),
            "198.51.100.7/32"
        );
        assert!(destination(&env(&[]))
            .unwrap_err()
            .contains("PLUTO_PEER_CLIENT"));
        assert!(destination(&env(&[("PLUTO_PEER_CLIENT", "192.0.2.0/33")]))
            .unwrap_err()
            .contains("PLUTO_PEER_CLIENT"));
    }

    #[test]
    fn owner_round_trips() {
        for conn in ["client1", "a\"b\\c (", "conn/1x1"] {
            let t = render(conn, Some("x"), "up-client", Some("any pass"));
            assert_eq!(owner(&t), Some(format!("{conn:?}").as_str()));
        }
        assert_eq!(owner("10.0.0.0/8 pass\n"), None);
    }
}
