//! `ldsaref apply`: the cgroup backend. Compiles the rules (every profile
//! and the global rules, read exactly as the library reads them) into the
//! nftables table `inet ldsaref`, replaced in one transaction, and creates
//! one cgroup per profile (`ldsaref.slice/ldsaref-P.slice`).

use std::path::PathBuf;

use clap::Args;
use ldsaref_nft::{
    cgroup_path, compile, compile_sections, fingerprint, profile_of_chain, CatchAll, Compiled,
    Section, SECTION_CHAIN, SHAPE_CHAIN, SLICE,
};
use ldsaref_rules::files::{self, Location};
use ldsaref_rules::settings::vars;
use ldsaref_rules::RuleSet;

use crate::cgroup::Cgroup2;
use crate::nft;
use crate::settings::{self, Overrides};

/// `ldsaref apply`'s options.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Rules file or directory (default: LDSAREF_RULES, else /etc/ldsaref/rules and rules.d)
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Print the nft batch (the whole table) instead of applying it
    #[arg(long, conflicts_with = "remove")]
    pub print: bool,
    /// Remove the table, and the cgroups that no process uses
    #[arg(long)]
    pub remove: bool,
    /// Only keep an installed table current: with none in this network
    /// namespace, compile the index and change nothing else (ldsaref
    /// updown --apply runs it in the background after an up)
    #[arg(long, conflicts_with_all = ["print", "remove"])]
    pub if_installed: bool,
    /// Also send the outcome to syslog (facility daemon): for the runs
    /// nobody watches, such as updown's background apply
    #[arg(long, hide = true)]
    pub syslog: bool,
    /// updown's ticket (see apply_queue): nothing to do when an apply that
    /// read the rules after it was taken has installed them
    #[arg(long, hide = true, value_name = "N")]
    pub ticket: Option<u64>,
}

/// Where the rules are: `--rules`, else `LDSAREF_RULES`, else the system
/// file and directory — as `ldsaref run` and the library find them.
pub fn location(rules: Option<&std::path::Path>) -> Result<Location, String> {
    let ov: Overrides = match rules {
        Some(p) => settings::overrides(&crate::SteerOpts {
            rules: Some(p.to_path_buf()),
            ..Default::default()
        })?,
        None => Overrides::new(),
    };
    Ok(Location::from_setting(
        settings::get(&ov, vars::LDSAREF_RULES)
            .map(PathBuf::from)
            .as_deref(),
    ))
}

/// The table the rules give, and its fingerprint.
pub struct Desired {
    /// The compiled rules (their maps flattened only where asked: see
    /// [`compiled`]).
    pub compiled: Compiled,
    /// What the installed table must record to be this one: the shape
    /// and every section's fingerprint.
    pub fingerprint: String,
    /// The fingerprint of the table's shape: the cgroup prefix, the
    /// profiles and the ids of their cgroups (a cgroup made again has a
    /// new id, which `nft` must load again), the verdict chains.
    pub shape: String,
    prefix: String,
    catch_alls: Vec<CatchAll>,
}

impl Desired {
    /// The `nft -f` batch of the whole table (the compiled maps must be
    /// flattened: [`compile`]).
    pub fn batch(&self) -> String {
        self.compiled.render_full(
            &self.prefix,
            &self.fingerprint,
            &self.shape,
            &self.catch_alls,
        )
    }
}

/// Loads the rules at `location`.
pub fn load(location: &Location) -> Result<RuleSet, String> {
    match settings::load_rules(location)? {
        Some(set) => Ok(set),
        None => Err(format!(
            "{}: no rules file: nothing to apply (`ldsaref apply --remove` takes the table \
             away)",
            describe(location)
        )),
    }
}

/// The rules at `location` for a table that is kept current (updown, and
/// `apply --if-installed`): none once every connection is gone, an empty
/// set, whose table still drops what the profiles' cgroups send.
pub fn load_kept(location: &Location) -> Result<RuleSet, String> {
    match settings::load_rules(location)? {
        Some(set) => Ok(set),
        None => RuleSet::parse("", "(no rules)").map_err(|e| e.to_string()),
    }
}

/// Loads the rules at `location` and fingerprints their sections, without
/// flattening any map (enough for the fingerprint, the profiles and their
/// cgroups).
pub fn compiled(location: &Location) -> Result<Compiled, String> {
    compile_sections(&load(location)?, |_, _| false).map_err(|e| e.to_string())
}

/// The profiles of the installed table (`installed`: its chains) whose
/// cgroup still `exists`: the new table keeps their place (see
/// [`Compiled::absent`]) when the rules no longer have them.
fn kept(installed: &nft::Chains, exists: impl Fn(&str) -> bool) -> Vec<String> {
    installed
        .names()
        .iter()
        .filter_map(|c| profile_of_chain(c))
        .filter(|name| exists(&cgroup_path(name)))
        .collect()
}

/// The table of `compiled` for the cgroups of `cg`; creates them when
/// `create`. It keeps the place of the profiles of the `installed` table
/// (its chains; none for a table made from the rules alone) whose rules
/// are gone but whose cgroup is still there.
pub fn desired(
    mut compiled: Compiled,
    cg: Option<&Cgroup2>,
    create: bool,
    installed: &nft::Chains,
) -> Result<Desired, String> {
    let prefix = match cg {
        Some(cg) => cg.nft_prefix()?,
        None => String::new(),
    };
    if let Some(cg) = cg {
        compiled.keep(kept(installed, |rel| cg.id(rel).is_some()));
    }
    let mut ids = String::new();
    let mut cgroups = vec![SLICE.to_owned()];
    cgroups.extend(compiled.sections().iter().map(|p| p.cgroup()));
    for rel in &cgroups {
        let id = match cg {
            Some(cg) if create => Some(cg.ensure(rel)?),
            Some(cg) => cg.id(rel),
            None => None,
        };
        ids.push_str(&format!(
            "{rel} {}\n",
            id.map_or("-".to_owned(), |i| i.to_string())
        ));
    }
    // The catch-all cgroups (run --cgroup --saref/--mark) that exist keep their
    // map elements; they are the processes', not the rules', so they are
    // not in the fingerprint.
    let catch_alls: Vec<CatchAll> = match cg {
        Some(cg) => compiled
            .profiles
            .iter()
            .flat_map(|p| {
                cg.children(&p.cgroup())
                    .into_iter()
                    .filter_map(|name| CatchAll::from_dir_name(&p.name, &name))
            })
            .collect(),
        None => Vec::new(),
    };
    // Without the mount's prefix: the ids say which cgroups, and the same
    // table applied through `ip netns exec` (cgroup2 mounted by ldsaref on
    // /sys/fs/cgroup) or from the host (on a hybrid one, `unified/`) is
    // the same table.
    let shape = fingerprint(&format!(
        "layout {} {}\n{ids}chains {:?}\n",
        SECTION_CHAIN,
        ldsaref_nft::LAYOUT_VERSION,
        compiled.chains
    ));
    let mut all = format!("shape {shape}\nglobal {}\n", compiled.global_fingerprint);
    for p in compiled.sections() {
        all.push_str(&format!("{} {}\n", p.name(), p.fingerprint()));
    }
    Ok(Desired {
        fingerprint: fingerprint(&all),
        compiled,
        shape,
        prefix,
        catch_alls,
    })
}

/// What brings the installed table to a desired one by replacing only the
/// sections whose fingerprint changed (see [`update`]).
struct Update<'a> {
    d: &'a Desired,
    /// The desired description with those sections flattened.
    part: Compiled,
    /// Each changed section: its index (`None`: the global rules), and
    /// the installed table's port chains and fingerprint of it.
    changed: Vec<(Option<usize>, usize, String)>,
    /// The installed table's fingerprint.
    old: String,
}

impl Update<'_> {
    /// The table's fingerprint before and after each section's change:
    /// it changes with the last one.
    fn fingerprints(&self) -> Vec<(String, String)> {
        let n = self.changed.len();
        (0..n)
            .map(|k| {
                let after = if k + 1 == n {
                    &self.d.fingerprint
                } else {
                    &self.old
                };
                (self.old.clone(), after.clone())
            })
            .collect()
    }

    /// The update as changes of elements and empty chains alone, when no
    /// section's port chains change (see [`Compiled::element_update`]).
    fn elements(&self) -> Option<Vec<ldsaref_nft::Change>> {
        let mut all = Vec::new();
        for ((i, ports, old), (before, after)) in self.changed.iter().zip(self.fingerprints()) {
            all.extend(self.part.element_update(*i, *ports, old, &before, &after)?);
        }
        Some(all)
    }

    /// The update as one `nft -f` batch.
    fn text(&self) -> String {
        let mut batch = String::new();
        for ((i, ports, old), (before, after)) in self.changed.iter().zip(self.fingerprints()) {
            batch.push_str(&self.part.render_update(*i, *ports, old, &before, &after));
        }
        // Once, however many profiles went or came back.
        if self
            .changed
            .iter()
            .any(|(i, _, old)| self.part.absence_changed(*i, old))
        {
            batch.push_str(&self.part.render_absent(&self.d.prefix));
        }
        batch
    }
}

/// What brings the installed table (`listing`: its chains) to `d` by
/// replacing only the sections whose fingerprint changed, or `None` when
/// its shape differs (then the whole table is replaced).
fn update<'a>(
    set: &RuleSet,
    d: &'a Desired,
    listing: &nft::Chains,
) -> Result<Option<Update<'a>>, String> {
    let chains = listing.names();
    if !chains
        .iter()
        .any(|c| *c == format!("{SHAPE_CHAIN}{}", d.shape))
    {
        return Ok(None);
    }
    let Some(old_fp) = chains
        .iter()
        .find_map(|c| c.strip_prefix(ldsaref_nft::FINGERPRINT_CHAIN))
    else {
        return Ok(None);
    };
    let installed = |name: &str| -> Option<String> {
        chains
            .iter()
            .find_map(|c| c.strip_prefix(&format!("{SECTION_CHAIN}{name}_")))
            .map(str::to_owned)
    };
    let port_chains = |name: &str| {
        chains
            .iter()
            .filter(|c| {
                c.strip_prefix(&format!("{name}_x"))
                    .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
            })
            .count()
    };
    let mut changed: Vec<(Option<usize>, usize, String)> = Vec::new();
    let profiles = d.compiled.sections();
    let sections = std::iter::once((
        None,
        "global".to_owned(),
        d.compiled.global_fingerprint.as_str(),
    ))
    .chain(
        profiles
            .iter()
            .enumerate()
            .map(|(i, p)| (Some(i), format!("p{i}"), p.fingerprint())),
    );
    for (i, name, fp) in sections {
        match installed(&name) {
            None => return Ok(None),
            Some(old) if old == fp => {}
            Some(old) => changed.push((i, port_chains(&name), old)),
        }
    }
    // The sections to flatten: the global rules, the profiles with rules
    // (an absent one has no maps).
    let names: Vec<Option<String>> = changed
        .iter()
        .filter_map(|(i, ..)| match i.map(|i| profiles[i]) {
            None => Some(None),
            Some(Section::Rules(p)) => Some(Some(p.name.clone())),
            Some(Section::Absent(_)) => None,
        })
        .collect();
    let mut part = d.compiled.clone();
    part.flatten_sections(set, |name, _| names.iter().any(|n| n.as_deref() == name));
    Ok(Some(Update {
        d,
        part,
        changed,
        old: old_fp.to_owned(),
    }))
}

fn describe(location: &Location) -> String {
    match location {
        Location::Explicit(p) => p.display().to_string(),
        Location::System => format!(
            "{} and {}",
            ldsaref_rules::files::SYSTEM_FILE,
            ldsaref_rules::files::SYSTEM_DIR
        ),
    }
}

/// `ldsaref apply`.
pub fn apply(args: &ApplyArgs) -> u8 {
    match apply_inner(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ldsaref: {e}");
            if args.syslog {
                crate::syslog::error(&format!("apply: {e}"));
            }
            1
        }
    }
}

fn apply_inner(args: &ApplyArgs) -> Result<(), String> {
    // One change of this namespace's table at a time, each reading the
    // rules once it holds the lock: an apply that read older rules can
    // never land after one that read newer (updown's background applies
    // queue here).
    let started = std::time::Instant::now();
    let _serial = (!args.print).then(serialized).transpose()?;
    let timing = Timing {
        started,
        locked: started.elapsed(),
    };
    if args.remove {
        // Without the table nothing steers nor drops: a program still in
        // an ldsaref cgroup of this network namespace would send in the
        // clear.
        if let Ok(cg) = Cgroup2::find() {
            let here = cg.processes_in_this_netns(SLICE);
            if !here.is_empty() {
                let shown: Vec<String> = here.iter().take(10).map(ToString::to_string).collect();
                return Err(format!(
                    "not removing table inet ldsaref: {} process{} in {}/{SLICE} use{} it in this \
                     network namespace (PID {}); without the table {} would send unsteered: stop \
                     {} first",
                    here.len(),
                    if here.len() == 1 { "" } else { "es" },
                    cg.mount.display(),
                    if here.len() == 1 { "s" } else { "" },
                    shown.join(", "),
                    if here.len() == 1 { "it" } else { "they" },
                    if here.len() == 1 { "it" } else { "them" },
                ));
            }
        }
        let removed = nft::delete_table()?;
        println!(
            "{}",
            if removed {
                "ldsaref: table inet ldsaref removed"
            } else {
                "ldsaref: no table inet ldsaref to remove"
            }
        );
        if let Ok(cg) = Cgroup2::find() {
            for busy in cg.remove_empty(SLICE) {
                println!(
                    "ldsaref: {} kept: processes of another network namespace run in it",
                    busy.display()
                );
            }
        }
        return Ok(());
    }
    let location = location(args.rules.as_deref())?;
    if args.print {
        // Printing needs neither root nor the cgroups.
        let cg = Cgroup2::find()
            .map_err(|e| eprintln!("ldsaref: warning: {e}; the cgroup paths printed are relative to /sys/fs/cgroup"))
            .ok();
        let set = load(&location)?;
        let d = desired(
            compile(&set).map_err(|e| e.to_string())?,
            cg.as_ref(),
            false,
            &nft::Chains::default(),
        )?;
        print!("{}", d.batch());
        return Ok(());
    }
    // The tickets handed out so far, read before the rules are.
    let rules = location.index_path().display().to_string();
    let queue = crate::apply_queue::read();
    if let (Some(ticket), Some(q)) = (args.ticket, &queue) {
        if q.covers(ticket, &rules) {
            println!(
                "ldsaref: table inet ldsaref already follows the rules of ticket {ticket} (an \
                 apply that read them later installed them); nothing to do"
            );
            return Ok(());
        }
    }
    follow(args, &location, &timing)?;
    if let Some(q) = queue {
        crate::apply_queue::followed(q.handed_out, &rules);
    }
    Ok(())
}

/// When an apply started, and how long it waited for the table's lock:
/// what the syslog line says, for the background applies nobody watches.
struct Timing {
    started: std::time::Instant,
    locked: std::time::Duration,
}

impl Timing {
    /// `(waited N ms for the table's lock, M ms in all)`.
    fn describe(&self) -> String {
        format!(
            "(waited {} ms for the table's lock, {} ms in all)",
            self.locked.as_millis(),
            self.started.elapsed().as_millis()
        )
    }
}

/// Brings the table (and the index) to the rules at `location`, under the
/// table's lock.
fn follow(args: &ApplyArgs, location: &Location, timing: &Timing) -> Result<(), String> {
    // --if-installed: the table's chains first, since they decide whether
    // there is a table to keep current.
    let early = if args.if_installed {
        let listing = nft::list_chains()?;
        if !listing.installed() {
            println!(
                "ldsaref: no table inet ldsaref in this network namespace: nothing to keep current"
            );
            let (before, _) = files::fingerprints_now(location).unwrap_or_default();
            if !before.is_empty() {
                index_follows(location, &before);
            }
            return Ok(());
        }
        Some(listing)
    } else {
        None
    };
    // The files' fingerprints as they are read (not waited for: a file
    // changed in the last 50 ms is not trusted to show a later change).
    let (before, settled) = files::fingerprints_now(location).unwrap_or_default();
    let index = location.index_path();
    if settled {
        if let Some(summary) = recent::up_to_date(&before, early.as_ref()) {
            let done = format!("table inet ldsaref is up to date ({summary}); nothing changed");
            println!("ldsaref: {done}");
            if args.syslog {
                crate::syslog::info(&format!("apply: {done} {}", timing.describe()));
            }
            index_follows(location, &before);
            return Ok(());
        }
    }
    // The cgroups' view while this process has one thread (see
    // install_summary).
    let cg = Cgroup2::find()?;
    // The installed table's chains, listed while the rules are read.
    let listing = std::thread::spawn(move || match early {
        Some(listing) => Ok(listing),
        None => nft::list_chains(),
    });
    let set = if args.if_installed {
        load_kept(location)?
    } else {
        load(location)?
    };
    let listing = listing
        .join()
        .unwrap_or_else(|_| Err("listing the table's chains: the thread panicked".to_owned()))?;
    let compiled = std::thread::scope(|s| {
        // The preload's programs read the same rules: their index follows
        // (a failure only costs them speed: a stale index is never used),
        // compiled from the same set while nft loads the table.
        let compile = (!(before.is_empty() || settled && index_fresh(location, &before)))
            .then(|| s.spawn(|| crate::index::compile_loaded(location, &set, &before, settled)));
        let installed = install_summary(&set, &cg, listing);
        let compiled = compile.map(|h| {
            h.join()
                .unwrap_or_else(|_| Err("the compiler panicked".to_owned()))
        });
        installed.map(|done| (done, compiled))
    })?;
    let (
        Installed {
            fingerprint,
            summary,
            done,
        },
        compiled,
    ) = compiled;
    if settled {
        recent::record(&before, &fingerprint, &summary);
    }
    if args.syslog {
        crate::syslog::info(&format!("apply: {done} {}", timing.describe()));
    }
    match compiled {
        None => println!("ldsaref: {}: up to date", index.display()),
        Some(Ok(path)) => println!("ldsaref: {}: compiled", path.display()),
        Some(Err(e)) => eprintln!("ldsaref: warning: the index was not compiled: {e}"),
    }
    Ok(())
}

/// The index of `location` compiled unless it is fresh for `files`, and
/// what became of it printed: a failure only costs the preload's programs
/// speed (a stale index is never used).
fn index_follows(location: &Location, files: &[ldsaref_rules::compiled::Fingerprint]) {
    let index = location.index_path();
    if index_fresh(location, files) {
        println!("ldsaref: {}: up to date", index.display());
        return;
    }
    match crate::index::compile_for(location) {
        Ok(path) => println!("ldsaref: {}: compiled", path.display()),
        Err(e) => eprintln!("ldsaref: warning: the index was not compiled: {e}"),
    }
}

/// Whether the index of `location` is there and compiled from the files
/// as they are (`files`, their fingerprints now): its header and sources
/// checked, O(1) in the rules.
fn index_fresh(location: &Location, files: &[ldsaref_rules::compiled::Fingerprint]) -> bool {
    match ldsaref_kernel::mapped::map(&location.index_path()) {
        Ok(Some(bytes)) => !files.is_empty() && RuleSet::from_index(bytes, files).is_ok(),
        _ => false,
    }
}

/// What the last `ldsaref apply` in this network namespace installed, so
/// that applying unchanged files says "up to date" without reading them:
/// the table's fingerprint, and a key of what it was made from (the rules
/// files' fingerprints: path, device, inode, size, mtime, ctime; the
/// cgroups under `ldsaref.slice` and their ids; this build of ldsaref),
/// in `/run/ldsaref/apply-DEV-INO` (the network namespace's). Trusted
/// only when the installed table still has that fingerprint and the key
/// is the same, recorded only when the files' fingerprints were settled
/// when they were read (see `files::fingerprints_now`); anything else
/// reads the rules (the content's fingerprints decide, as without it).
mod recent {
    use std::fmt::Write as _;
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    use ldsaref_nft::{fingerprint, SLICE};
    use ldsaref_rules::compiled::Fingerprint;

    use crate::cgroup::Cgroup2;
    use crate::nft;

    fn path() -> Option<PathBuf> {
        let m = std::fs::metadata("/proc/self/ns/net").ok()?;
        Some(PathBuf::from(format!(
            "/run/ldsaref/apply-{}-{}",
            m.dev(),
            m.ino()
        )))
    }

    /// The lock every change of this network namespace's table holds
    /// (`/run/ldsaref/apply-DEV-INO.lock`), released when dropped; `None`
    /// for a process that may not create or open it (not root).
    pub fn lock() -> Result<Option<std::fs::File>, String> {
        locked("lock")
    }

    /// `/run/ldsaref/apply-DEV-INO.EXTENSION`, created (mode 0600) and
    /// locked exclusively until dropped; `None` for a process that may not
    /// create or open it (not root).
    pub fn locked(extension: &str) -> Result<Option<std::fs::File>, String> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = path()
            .ok_or("cannot read /proc/self/ns/net (is /proc mounted?)")?
            .with_extension(extension);
        let _ = std::fs::create_dir_all("/run/ldsaref");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path);
        let f = match f {
            Ok(f) => f,
            // Not root: this process cannot change the table either, and
            // says so where it tries (after the rules' own errors).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        crate::updown::fsio::lock_exclusive(&f)
            .map_err(|e| format!("{}: cannot lock: {e}", path.display()))?;
        Ok(Some(f))
    }

    fn key(files: &[Fingerprint]) -> Option<String> {
        let cg = Cgroup2::find().ok()?;
        let exe = std::fs::metadata(std::env::current_exe().ok()?).ok()?;
        let mut s = format!(
            "ldsaref {} {} {} {} {}\n",
            env!("CARGO_PKG_VERSION"),
            exe.dev(),
            exe.ino(),
            exe.size(),
            exe.mtime_nsec() + exe.mtime() * 1_000_000_000
        );
        for f in files {
            let _ = writeln!(
                s,
                "{:?} {} {} {} {} {}",
                f.path, f.dev, f.ino, f.size, f.mtime_ns, f.ctime_ns
            );
        }
        let _ = writeln!(s, "{SLICE} {:?}", cg.id(SLICE)?);
        for c in cg.children(SLICE) {
            let _ = writeln!(s, "{c} {:?}", cg.id(&format!("{SLICE}/{c}")));
        }
        Some(fingerprint(&s))
    }

    /// The summary recorded, when the table is up to date for `files`
    /// (`listing`: the table's chains, when the caller has them).
    pub fn up_to_date(files: &[Fingerprint], listing: Option<&nft::Chains>) -> Option<String> {
        let text = std::fs::read_to_string(path()?).ok()?;
        let (recorded_key, rest) = text.split_once(' ')?;
        let (table, summary) = rest.split_once(' ')?;
        if recorded_key != key(files)? {
            return None;
        }
        let installed = match listing {
            Some(listing) => listing.fingerprint()?,
            None => nft::list_chains().ok()?.fingerprint()?,
        };
        (installed == table).then(|| summary.trim_end().to_owned())
    }

    /// Records what the table `table` (fingerprint) was made from; a
    /// failure only costs the next apply the time to read the rules.
    pub fn record(files: &[Fingerprint], table: &str, summary: &str) {
        let (Some(path), Some(key)) = (path(), key(files)) else {
            return;
        };
        let _ = std::fs::create_dir_all("/run/ldsaref");
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        if std::fs::write(&tmp, format!("{key} {table} {summary}\n")).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

/// The lock every change of this network namespace's table holds while it
/// reads the table and the rules and installs (released when dropped).
pub fn serialized() -> Result<Option<std::fs::File>, String> {
    recent::lock()
}

/// This network namespace's `/run/ldsaref/apply-DEV-INO.EXTENSION`
/// (beside the table's lock), created and locked until dropped; `None`
/// when not root.
pub fn namespace_file_locked(extension: &str) -> Result<Option<std::fs::File>, String> {
    recent::locked(extension)
}

/// Installs the table of `set` (unless the installed one is it already:
/// only the sections that changed are replaced when the table's shape is
/// the same) and creates its cgroups; prints one line saying what was
/// done. `ldsaref updown` calls it after each change.
///
/// `listing` is the table's chains, which the caller (updown, which looks
/// first whether a table is there to keep current) has just read. The
/// caller holds [`serialized`] from before that listing until this
/// returns.
pub fn install_listed(set: &RuleSet, listing: nft::Chains) -> Result<(), String> {
    let cg = Cgroup2::find()?;
    install_summary(set, &cg, listing).map(|_| ())
}

/// What [`install_summary`] installed.
struct Installed {
    /// The table's fingerprint.
    fingerprint: String,
    /// The rules': profiles and rules.
    summary: String,
    /// What was done, as printed (without `ldsaref: `).
    done: String,
}

/// [`install_listed`], saying what it installed; `listing` is the table's
/// chains.
///
/// `cg` is found by the caller before it starts any thread: under `ip
/// netns exec` the view is a private mount, and unshare(CLONE_NEWNS)
/// fails (EINVAL) while another thread shares the file-system context,
/// which a thread just joined may still do for a moment (seen in the
/// emulated guest).
fn install_summary(set: &RuleSet, cg: &Cgroup2, listing: nft::Chains) -> Result<Installed, String> {
    // The fingerprints first: unchanged rules need nothing flattened.
    let lazy = compile_sections(set, |_, _| false).map_err(|e| e.to_string())?;
    let mut d = desired(lazy, Some(cg), true, &listing)?;
    let installed = listing.fingerprint();
    let summary = format!(
        "{} profile{}, {} rule{}",
        d.compiled.profiles.len(),
        if d.compiled.profiles.len() == 1 {
            ""
        } else {
            "s"
        },
        set.len(),
        if set.len() == 1 { "" } else { "s" },
    ) + &match d.compiled.absent.len() {
        0 => String::new(),
        1 => ", 1 profile without rules (its cgroup's packets dropped)".to_owned(),
        n => format!(", {n} profiles without rules (their cgroups' packets dropped)"),
    };
    let done = |d: &Desired, done: String| {
        println!("ldsaref: {done}");
        Ok(Installed {
            fingerprint: d.fingerprint.clone(),
            summary: summary.clone(),
            done,
        })
    };
    if installed.as_deref() == Some(d.fingerprint.as_str()) {
        return done(
            &d,
            format!("table inet ldsaref is up to date ({summary}); nothing changed"),
        );
    }
    if installed.is_some() {
        if let Some(u) = update(set, &d, &listing)? {
            let n = u.changed.len();
            let s = if n == 1 { "" } else { "s" };
            // Elements alone go over netlink (no nft process: what a
            // connection's up or down costs the IKE daemon's updown);
            // port chains, or a kernel that refuses that batch, through
            // nft. Either is one transaction: a refused one changed
            // nothing.
            let how = match u.elements() {
                Some(changes) => match nft::commit_changes(&changes, cg) {
                    Ok(()) => " (their elements, over netlink)".to_owned(),
                    Err(e) => {
                        nft::run_batch(&u.text())?;
                        format!(" (by nft: {e})")
                    }
                },
                None => {
                    nft::run_batch(&u.text())?;
                    String::new()
                }
            };
            return done(
                &d,
                format!("table inet ldsaref updated ({summary}): {n} section{s} replaced{how}"),
            );
        }
    }
    // Every section flattened, in the description whose fingerprints
    // (and kept profiles) were already made.
    d.compiled.flatten_sections(set, |_, _| true);
    let elements = format!(
        "{} profile{}, {} map element{}",
        d.compiled.profiles.len(),
        if d.compiled.profiles.len() == 1 {
            ""
        } else {
            "s"
        },
        d.compiled.len(),
        if d.compiled.len() == 1 { "" } else { "s" },
    );
    nft::run_batch(&d.batch())?;
    let line = format!(
        "table inet ldsaref {} ({elements}); cgroups under {}/{SLICE}{}",
        if installed.is_some() {
            "replaced"
        } else {
            "installed"
        },
        cg.mount.display(),
        if cg.private {
            " (cgroup2 mounted there by ldsaref for itself: none was visible)"
        } else {
            ""
        }
    );
    done(&d, line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldsaref_nft::{Change, MapElements};

    /// The chains of the table `batch` installs, as a listing shows them.
    fn listing(batch: &str) -> nft::Chains {
        let names: Vec<&str> = batch
            .lines()
            .filter_map(|l| l.strip_prefix("\tchain ")?.strip_suffix(" {"))
            .collect();
        nft::Chains::of(Some(&names))
    }

    fn set(text: &str) -> RuleSet {
        RuleSet::parse(text, "rules").unwrap()
    }

    /// The update of the table `listing` to `d`: its nft batch, the
    /// number of sections, and its changes of elements alone.
    #[allow(clippy::type_complexity)]
    fn update_of(
        set: &RuleSet,
        d: &Desired,
        listing: &nft::Chains,
    ) -> Option<(String, usize, Option<Vec<ldsaref_nft::Change>>)> {
        update(set, d, listing)
            .unwrap()
            .map(|u| (u.text(), u.changed.len(), u.elements()))
    }

    /// The table `install_summary` plans for `set` (fingerprints only,
    /// nothing flattened), keeping the places of `keep`.
    fn planned(set: &RuleSet, keep: Vec<String>) -> Desired {
        let mut c = compile_sections(set, |_, _| false).unwrap();
        c.keep(keep);
        desired(c, None, false, &nft::Chains::default()).unwrap()
    }

    #[test]
    fn a_connection_down_and_up_replaces_one_section() {
        let both = set("[a]\n198.18.1.0/24 saref 101\n[b]\n198.18.2.0/24 saref 102\n");
        let only_a = set("[a]\n198.18.1.0/24 saref 101\n");
        let none = nft::Chains::default();
        let full = desired(compile(&both).unwrap(), None, false, &none).unwrap();
        let installed = listing(&full.batch());
        assert_eq!(kept(&installed, |_| true), ["a".to_owned(), "b".to_owned()]);
        assert_eq!(
            kept(&installed, |rel| rel.ends_with("-a.slice")),
            ["a".to_owned()]
        );
        // b's file removed: b keeps its place, one section changes.
        let down = planned(&only_a, kept(&installed, |_| true));
        assert_eq!(down.shape, full.shape);
        let (batch, n, elements) = update_of(&only_a, &down, &installed).unwrap();
        assert_eq!(n, 1, "{batch}");
        assert!(
            batch.contains("add chain inet ldsaref sum_p1_absent\n"),
            "{batch}"
        );
        let b_cgroup = "ldsaref.slice/ldsaref-b.slice".to_owned();
        assert!(
            batch.contains(&format!(
                "add set inet ldsaref absent {{ type cgroupsv2; elements = {{ \"{b_cgroup}\" }} }}\n"
            )),
            "{batch}"
        );
        // The same as elements alone: b's maps emptied, its cgroup absent.
        let elements = elements.unwrap();
        assert!(elements.contains(&Change::Flush("p1_4".to_owned())));
        assert!(elements.contains(&Change::Absent {
            cgroup: b_cgroup.clone(),
            add: true
        }));
        assert!(!elements.iter().any(|c| matches!(c, Change::Add(..))));
        assert!(elements.contains(&Change::AddChain("sum_p1_absent".to_owned())));
        assert!(elements.contains(&Change::AddChain(format!("rules_{}", down.fingerprint))));
        // The table it leaves, as a listing shows it: b comes back.
        let mut after = compile(&only_a).unwrap();
        after.keep(["b".to_owned()]);
        let after = listing(&desired(after, None, false, &none).unwrap().batch());
        assert_eq!(after.fingerprint(), Some(down.fingerprint.clone()));
        let up = planned(&both, vec![]);
        assert_eq!(up.fingerprint, full.fingerprint);
        let (batch, n, elements) = update_of(&both, &up, &after).unwrap();
        assert_eq!(n, 1, "{batch}");
        assert!(batch.contains("198.18.2.0/24 : 0x80660000"), "{batch}");
        assert!(!batch.contains("198.18.1.0/24"), "{batch}");
        assert!(
            batch.contains("add set inet ldsaref absent { type cgroupsv2; }\n"),
            "{batch}"
        );
        let elements = elements.unwrap();
        let net = u128::from(u32::from_be_bytes([198, 18, 2, 0]));
        assert!(elements.contains(&Change::Add(
            "p1_4".to_owned(),
            MapElements::Marks {
                v6: false,
                elements: vec![(net, net + 255, 0x8066_0000)]
            }
        )));
        assert!(elements.contains(&Change::Absent {
            cgroup: b_cgroup.clone(),
            add: false
        }));
        // Both going at once: nft's form makes @absent again once.
        let empty = set("");
        let d = planned(&empty, kept(&installed, |_| true));
        let (batch, n, elements) = update_of(&empty, &d, &installed).unwrap();
        assert_eq!(n, 2, "{batch}");
        assert_eq!(batch.matches("delete set inet ldsaref absent").count(), 1);
        assert!(batch.contains(&format!(
            "elements = {{ \"ldsaref.slice/ldsaref-a.slice\", \"{b_cgroup}\" }}"
        )));
        let absent: Vec<_> = elements
            .unwrap()
            .into_iter()
            .filter(|c| matches!(c, Change::Absent { add: true, .. }))
            .collect();
        assert_eq!(absent.len(), 2);
        // One network of a connection down while its other is up: denied,
        // one section.
        let half = set("[a]\n198.18.1.0/24 saref 101\n[b]\n198.18.2.0/24 deny\n");
        let d = planned(&half, vec![]);
        assert_eq!(d.shape, full.shape);
        let (batch, n, elements) = update_of(&half, &d, &installed).unwrap();
        assert_eq!(n, 1, "{batch}");
        assert!(batch.contains("goto deny"), "{batch}");
        assert!(elements.unwrap().iter().any(|c| matches!(
            c,
            Change::Add(m, MapElements::Gotos(g)) if m == "p1_d" && g[0].1 == "deny"
        )));
        // Port rules: only nft writes their chains.
        let ports = set("[a]\n198.18.1.0/24 saref 101\n[b]\n198.18.2.0/24 tcp 22 deny\n");
        let d = planned(&ports, vec![]);
        let (batch, n, elements) = update_of(&ports, &d, &installed).unwrap();
        assert_eq!(n, 1, "{batch}");
        assert!(batch.contains("add chain inet ldsaref p1_x0"), "{batch}");
        assert_eq!(elements, None);
        // Without its cgroup, a profile is not kept: a new shape.
        let gone = planned(&only_a, kept(&installed, |rel| !rel.ends_with("-b.slice")));
        assert_ne!(gone.shape, full.shape);
        assert!(update_of(&only_a, &gone, &installed).is_none());
    }
}
