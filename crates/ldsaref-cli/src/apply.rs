//! `ldsaref apply`: the cgroup backend. Compiles the rules (every profile
//! and the global rules, read exactly as the library reads them) into the
//! nftables table `inet ldsaref`, replaced in one transaction, and creates
//! one cgroup per profile (`ldsaref.slice/ldsaref-P.slice`).

use std::path::PathBuf;

use clap::Args;
use ldsaref_nft::{compile, fingerprint, CatchAll, Compiled, SLICE};
use ldsaref_rules::files::Location;
use ldsaref_rules::settings::vars;

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
    /// The compiled rules.
    pub compiled: Compiled,
    /// The `nft -f` batch.
    pub batch: String,
    /// What the installed table must record to be this one: the rules'
    /// table and the ids of the cgroups it names (a cgroup made again has
    /// a new id, which `nft` must load again).
    pub fingerprint: String,
}

/// Loads and compiles the rules at `location`.
pub fn compiled(location: &Location) -> Result<Compiled, String> {
    let set = match settings::load_rules(location)? {
        Some(set) => set,
        None => {
            return Err(format!(
                "{}: no rules file: nothing to apply (`ldsaref apply --remove` takes the table \
                 away)",
                describe(location)
            ))
        }
    };
    compile(&set).map_err(|e| e.to_string())
}

/// The table of `compiled` for the cgroups of `cg`; creates them when
/// `create`.
pub fn desired(compiled: Compiled, cg: Option<&Cgroup2>, create: bool) -> Result<Desired, String> {
    let prefix = match cg {
        Some(cg) => cg.nft_prefix()?,
        None => String::new(),
    };
    let mut ids = String::new();
    let mut cgroups = vec![SLICE.to_owned()];
    cgroups.extend(compiled.profiles.iter().map(|p| p.cgroup()));
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
    // The catch-all cgroups (run --cgroup --saref) that exist keep their
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
    let fp = fingerprint(&format!("{}{ids}", compiled.render(&prefix, "", &[])));
    let batch = compiled.render(&prefix, &fp, &catch_alls);
    Ok(Desired {
        compiled,
        batch,
        fingerprint: fp,
    })
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
            1
        }
    }
}

fn apply_inner(args: &ApplyArgs) -> Result<(), String> {
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
        let d = desired(compiled(&location)?, cg.as_ref(), false)?;
        print!("{}", d.batch);
        return Ok(());
    }
    let c = compiled(&location)?;
    let cg = Cgroup2::find()?;
    let d = desired(c, Some(&cg), true)?;
    let installed = nft::installed_fingerprint()?;
    let summary = format!(
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
    if installed.as_deref() == Some(d.fingerprint.as_str()) {
        println!("ldsaref: table inet ldsaref is up to date ({summary}); nothing changed");
        return Ok(());
    }
    nft::run_batch(&d.batch)?;
    println!(
        "ldsaref: table inet ldsaref {} ({summary}); cgroups under {}/{SLICE}",
        if installed.is_some() {
            "replaced"
        } else {
            "installed"
        },
        cg.mount.display()
    );
    Ok(())
}
