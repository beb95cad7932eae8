//! `ldsaref status`: which processes are steered, by which backend and
//! profile, and whether the installed table is the one the rules give.
//!
//! The cgroup backend's processes are the pids in the `cgroup.procs` of
//! `ldsaref.slice/ldsaref-P.slice` (and of the catch-all cgroups below
//! it); the library's are the processes whose `/proc/PID/maps` has
//! `libldsaref.so`, with `LDSAREF_PROFILE` and `IPSEC_SAREF` read from
//! `/proc/PID/environ` (the environment they started with). Reading other
//! users' processes takes root; what cannot be read is left out, and said.

use std::fs;
use std::path::PathBuf;

use clap::Args;
use ldsaref_nft::{CatchAll, SLICE};

use crate::cgroup::Cgroup2;
use crate::library::LIB_NAME;

/// `ldsaref status`'s options.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Rules file or directory to compare the table with (default:
    /// LDSAREF_RULES, else /etc/ldsaref/rules and rules.d)
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
}

/// How a process is steered.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Backend {
    /// In a cgroup of `ldsaref.slice`: the table steers it.
    Cgroup,
    /// `libldsaref.so` is mapped: the library steers it.
    Preload,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Cgroup => "cgroup",
            Backend::Preload => "preload",
        }
    }
}

/// One steered process.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Steered {
    /// Its profile; `None` for the global rules only.
    pub profile: Option<String>,
    /// Its PID.
    pub pid: u32,
    /// Which backend.
    pub backend: Backend,
    /// Its catch-all SAref (IPSEC_SAREF, or the catch-all cgroup's), or
    /// `mark=0xV` (a `run --cgroup --mark` catch-all cgroup).
    pub saref: Option<String>,
    /// `/proc/PID/comm`.
    pub command: String,
}

/// The table of this network namespace, compared with the rules.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Table {
    /// No `inet ldsaref` table.
    Absent,
    /// Installed, and the rules give the same.
    UpToDate {
        /// What the rules give.
        summary: String,
    },
    /// Installed, but the rules (or the cgroups' ids) changed since.
    Stale,
    /// Installed; the rules could not be compiled to compare.
    Unknown(String),
    /// The table could not be read (nft missing, not root).
    Unreadable(String),
}

/// The whole report, as printed.
pub fn format(table: &Table, cgroups: Option<&str>, procs: &[Steered], notes: &[String]) -> String {
    let mut s = String::from("table inet ldsaref: ");
    s.push_str(&match table {
        Table::Absent => {
            "not installed in this network namespace (`ldsaref apply` installs it)".to_owned()
        }
        Table::UpToDate { summary } => format!("installed, up to date with the rules ({summary})"),
        Table::Stale => {
            "installed, OLDER than the rules: run `ldsaref apply` (run --cgroup refuses until then)"
                .to_owned()
        }
        Table::Unknown(e) => format!("installed; cannot compare it with the rules: {e}"),
        Table::Unreadable(e) => format!("cannot read it: {e}"),
    });
    s.push('\n');
    if let Some(c) = cgroups {
        s.push_str(&format!("cgroups: {c}\n"));
    }
    let mut sorted: Vec<&Steered> = procs.iter().collect();
    // Per profile (the global-only ones last), then backend, then PID.
    sorted.sort_by(|a, b| {
        (a.profile.is_none(), &a.profile, a.backend, a.pid).cmp(&(
            b.profile.is_none(),
            &b.profile,
            b.backend,
            b.pid,
        ))
    });
    if sorted.is_empty() {
        s.push_str("no steered process found\n");
    } else {
        let rows: Vec<[String; 5]> = sorted
            .iter()
            .map(|p| {
                [
                    p.profile.clone().unwrap_or_else(|| "-".to_owned()),
                    p.pid.to_string(),
                    p.backend.name().to_owned(),
                    p.saref.clone().unwrap_or_else(|| "-".to_owned()),
                    p.command.clone(),
                ]
            })
            .collect();
        let header = ["PROFILE", "PID", "BACKEND", "SAREF", "COMMAND"].map(str::to_owned);
        let mut width = [0usize; 4];
        for r in std::iter::once(&header).chain(&rows) {
            for (w, c) in width.iter_mut().zip(r.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        for r in std::iter::once(&header).chain(&rows) {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i < 4 {
                    line.push_str(&format!("{c:<w$}  ", w = width[i]));
                } else {
                    line.push_str(c);
                }
            }
            s.push_str(line.trim_end());
            s.push('\n');
        }
    }
    for n in notes {
        s.push_str(&format!("note: {n}\n"));
    }
    s
}

/// A profile's name from its cgroup's directory name (the reverse of
/// [`ldsaref_nft::cgroup_name`]).
pub fn profile_of_dir(name: &str) -> Option<String> {
    let inner = name.strip_prefix("ldsaref-")?.strip_suffix(".slice")?;
    let b = inner.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 3 < b.len() {
            if let Ok(v) = u8::from_str_radix(&inner[i + 2..i + 4], 16) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The value of `NAME=` in a NUL-separated environment.
pub fn environ_var(environ: &[u8], name: &str) -> Option<String> {
    environ.split(|&b| b == 0).find_map(|e| {
        let rest = e.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(rest).into_owned())
    })
}

/// Whether a `/proc/PID/maps` text maps the library.
pub fn maps_library(maps: &str) -> bool {
    maps.lines().any(|l| {
        l.split_whitespace()
            .nth(5)
            .is_some_and(|p| p.rsplit('/').next() == Some(LIB_NAME))
    })
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".to_owned())
}

fn procs_of(dir: &std::path::Path) -> Vec<u32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The processes in the profiles' cgroups.
fn cgroup_processes(cg: &Cgroup2) -> Vec<Steered> {
    let mut v = Vec::new();
    let entry = |pid, profile: Option<String>, saref: Option<String>| Steered {
        profile,
        pid,
        backend: Backend::Cgroup,
        saref,
        command: comm(pid),
    };
    // Directly in ldsaref.slice: no profile (the table drops its output).
    for pid in procs_of(&cg.dir(SLICE)) {
        v.push(entry(pid, None, None));
    }
    for name in cg.children(SLICE) {
        let Some(profile) = profile_of_dir(&name) else {
            continue;
        };
        let rel = format!("{SLICE}/{name}");
        for pid in procs_of(&cg.dir(&rel)) {
            v.push(entry(pid, Some(profile.clone()), None));
        }
        for child in cg.children(&rel) {
            let saref = CatchAll::from_dir_name(&profile, &child).map(|c| c.kind.label());
            for pid in procs_of(&cg.dir(&format!("{rel}/{child}"))) {
                v.push(entry(pid, Some(profile.clone()), saref.clone()));
            }
        }
    }
    v
}

/// The processes with the library mapped; how many could not be read.
fn preload_processes() -> (Vec<Steered>, usize) {
    let mut v = Vec::new();
    let mut unreadable = 0;
    let Ok(entries) = fs::read_dir("/proc") else {
        return (v, 0);
    };
    let me = std::process::id();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let maps = match fs::read_to_string(format!("/proc/{pid}/maps")) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                unreadable += 1;
                continue;
            }
            Err(_) => continue,
        };
        if !maps_library(&maps) {
            continue;
        }
        let environ = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        v.push(Steered {
            profile: environ_var(&environ, "LDSAREF_PROFILE").filter(|p| !p.is_empty()),
            pid,
            backend: Backend::Preload,
            saref: environ_var(&environ, "IPSEC_SAREF").filter(|p| !p.is_empty()),
            command: comm(pid),
        });
    }
    (v, unreadable)
}

fn table_state(rules: Option<&std::path::Path>, cg: Option<&Cgroup2>) -> Table {
    let listing = match crate::nft::list_chains() {
        Ok(listing) => listing,
        Err(e) => return Table::Unreadable(e),
    };
    let Some(installed) = listing.fingerprint() else {
        return Table::Absent;
    };
    let desired = crate::apply::location(rules)
        .and_then(|l| crate::apply::compiled(&l))
        .and_then(|c| crate::apply::desired(c, cg, false, &listing));
    match desired {
        Err(e) => Table::Unknown(e),
        Ok(d) if d.fingerprint == installed => Table::UpToDate {
            summary: format!(
                "{} profile{}",
                d.compiled.profiles.len(),
                if d.compiled.profiles.len() == 1 {
                    ""
                } else {
                    "s"
                },
            ),
        },
        Ok(_) => Table::Stale,
    }
}

/// `ldsaref status`.
pub fn status(args: &StatusArgs) -> u8 {
    let cg = Cgroup2::find();
    let mut notes = Vec::new();
    let mut procs = Vec::new();
    let cgroups = match &cg {
        Ok(cg) => {
            procs.extend(cgroup_processes(cg));
            Some(cg.dir(SLICE).display().to_string())
        }
        Err(e) => {
            notes.push(format!(
                "the cgroup backend's processes are not listed: {e}"
            ));
            None
        }
    };
    let (pre, unreadable) = preload_processes();
    procs.extend(pre);
    if unreadable > 0 {
        notes.push(format!(
            "{unreadable} process{} could not be read (other users'; root sees them)",
            if unreadable == 1 { "" } else { "es" }
        ));
    }
    let table = table_state(args.rules.as_deref(), cg.as_ref().ok());
    print!("{}", format(&table, cgroups.as_deref(), &procs, &notes));
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(
        profile: Option<&str>,
        pid: u32,
        backend: Backend,
        saref: Option<&str>,
        cmd: &str,
    ) -> Steered {
        Steered {
            profile: profile.map(str::to_owned),
            pid,
            backend,
            saref: saref.map(str::to_owned),
            command: cmd.to_owned(),
        }
    }

    #[test]
    fn the_report_groups_by_profile() {
        let procs = [
            p(None, 7, Backend::Preload, Some("1234"), "curl"),
            p(Some("client2"), 30, Backend::Preload, None, "ssh"),
            p(Some("client1"), 1200, Backend::Preload, None, "python3"),
            p(
                Some("client1"),
                99999,
                Backend::Cgroup,
                Some("101"),
                "static-client",
            ),
            p(Some("client1"), 12, Backend::Cgroup, None, "sleep"),
        ];
        let text = format(
            &Table::UpToDate {
                summary: "2 profiles".to_owned(),
            },
            Some("/sys/fs/cgroup/unified/ldsaref.slice"),
            &procs,
            &["1 process could not be read".to_owned()],
        );
        assert_eq!(
            text,
            "table inet ldsaref: installed, up to date with the rules (2 profiles)\n\
             cgroups: /sys/fs/cgroup/unified/ldsaref.slice\n\
             PROFILE  PID    BACKEND  SAREF  COMMAND\n\
             client1  12     cgroup   -      sleep\n\
             client1  99999  cgroup   101    static-client\n\
             client1  1200   preload  -      python3\n\
             client2  30     preload  -      ssh\n\
             -        7      preload  1234   curl\n\
             note: 1 process could not be read\n"
        );
    }

    #[test]
    fn the_table_states() {
        let line = |t: &Table| format(t, None, &[], &[]);
        assert_eq!(
            line(&Table::Absent),
            "table inet ldsaref: not installed in this network namespace (`ldsaref apply` \
             installs it)\nno steered process found\n"
        );
        assert!(line(&Table::Stale).contains("OLDER than the rules: run `ldsaref apply`"));
        assert!(line(&Table::Unreadable("nft: permission".into())).contains("cannot read it"));
        assert!(line(&Table::Unknown("no rules file".into())).contains("cannot compare"));
    }

    #[test]
    fn profiles_from_cgroup_names() {
        for name in ["client1", "client-1", ".x.y", "a_b:c"] {
            assert_eq!(
                profile_of_dir(&ldsaref_nft::cgroup_name(name)).as_deref(),
                Some(name)
            );
        }
        assert_eq!(profile_of_dir("other.slice"), None);
        assert_eq!(profile_of_dir("ldsaref-x"), None);
    }

    #[test]
    fn environ_and_maps() {
        let env = b"PATH=/bin\0LDSAREF_PROFILE=client1\0IPSEC_SAREF=5\0X_LDSAREF_PROFILE=no\0";
        assert_eq!(
            environ_var(env, "LDSAREF_PROFILE").as_deref(),
            Some("client1")
        );
        assert_eq!(environ_var(env, "IPSEC_SAREF").as_deref(), Some("5"));
        assert_eq!(environ_var(env, "LDSAREF_RULES"), None);
        let maps = "7f00-7f10 r-xp 00000000 08:01 123   /usr/lib/x86_64-linux-gnu/libldsaref.so\n\
                    7f20-7f30 r-xp 00000000 08:01 124   /usr/lib/x86_64-linux-gnu/libc.so.6\n";
        assert!(maps_library(maps));
        assert!(!maps_library(
            "7f20-7f30 r-xp 00000000 08:01 124 /lib/libldsaref.so.bak\n"
        ));
        assert!(!maps_library("7f20-7f30 rw-p 00000000 00:00 0\n"));
    }
}
