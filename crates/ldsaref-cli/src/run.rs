//! `ldsaref run` and `ldsaref env`.

use std::ffi::{OsStr, OsString};
use std::os::unix::process::CommandExt;
use std::path::Path;

use ldsaref_rules::settings::vars;

use crate::settings::{self, Overrides};
use crate::{library, shell, target, SteerOpts};

/// `LD_PRELOAD` with `lib` first, once.
fn preload_with(lib: &Path, current: Option<&OsStr>) -> OsString {
    let mut v = OsString::from(lib.as_os_str());
    if let Some(cur) = current {
        let cur = cur.to_string_lossy();
        let lib = lib.to_string_lossy();
        for entry in cur.split([' ', ':']).filter(|e| !e.is_empty() && *e != lib) {
            v.push(":");
            v.push(entry);
        }
    }
    v
}

/// `LD_PRELOAD` without `lib`.
fn preload_without(lib: &Path, current: &str) -> String {
    let lib = lib.to_string_lossy();
    current
        .split([' ', ':'])
        .filter(|e| !e.is_empty() && *e != lib)
        .collect::<Vec<_>>()
        .join(":")
}

fn prepare(opts: &SteerOpts) -> Result<(Overrides, std::path::PathBuf), u8> {
    prepare_steering(opts, false)
}

/// The variables and the library; with `must_steer`, also refuses (1)
/// when nothing would be steered (see [`settings::nothing_to_steer`]).
fn prepare_steering(
    opts: &SteerOpts,
    must_steer: bool,
) -> Result<(Overrides, std::path::PathBuf), u8> {
    let ov = settings::overrides(opts).map_err(|e| {
        eprintln!("ldsaref: {e}");
        1
    })?;
    match settings::validate(&ov) {
        Err(problems) => {
            for p in problems {
                eprintln!("ldsaref: {p}");
            }
            eprintln!("ldsaref: not starting anything: the library could not know what to protect");
            return Err(1);
        }
        Ok((s, policy)) if must_steer => {
            if let Some(why) = settings::nothing_to_steer(&policy, &settings::settings_location(&s))
            {
                eprintln!("ldsaref: {why}");
                return Err(1);
            }
        }
        Ok(_) => {}
    }
    let lib = library::find().map_err(|e| {
        eprintln!("ldsaref: {e}");
        126
    })?;
    Ok((ov, lib))
}

/// Replaces this process with `command` (same PID: signals reach it and its
/// exit status is the caller's), with the library preloaded.
pub fn run(opts: &SteerOpts, allow_unsteered: bool, command: &[OsString]) -> u8 {
    let (ov, lib) = match prepare_steering(opts, true) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let program = &command[0];
    let resolved = match target::resolve(program) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ldsaref: {}: {e}", program.to_string_lossy());
            return 127;
        }
    };
    if let Err(why) = target::reachable(&resolved) {
        if allow_unsteered {
            eprintln!(
                "ldsaref: warning: {}: {why}; running it unsteered (--allow-unsteered)",
                resolved.display()
            );
        } else {
            eprintln!(
                "ldsaref: {}: {why}, so its traffic would not be steered; refusing to run it (`ldsaref run --cgroup` steers it in the kernel; --allow-unsteered runs it anyway)",
                resolved.display()
            );
            return 126;
        }
    }
    let mut cmd = std::process::Command::new(program);
    cmd.args(&command[1..]);
    for (k, v) in &ov {
        cmd.env(k, v);
    }
    cmd.env(
        "LD_PRELOAD",
        preload_with(&lib, std::env::var_os("LD_PRELOAD").as_deref()),
    );
    let err = cmd.exec();
    eprintln!("ldsaref: {}: {err}", program.to_string_lossy());
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// `ldsaref run --cgroup`: checks that the installed table is the one
/// the rules give, moves this process into the profile's cgroup and
/// replaces it with `command` (same PID, no LD_PRELOAD): the kernel steers
/// every socket of the program and its children, whatever creates them.
/// `mark`: `--mark V[/M]`, a catch-all mark instead of a catch-all SAref.
pub fn run_cgroup(opts: &SteerOpts, mark: Option<&str>, command: &[OsString]) -> u8 {
    match prepare_cgroup(opts, mark) {
        // A cgroup2 view ldsaref mounted for itself (under `ip netns
        // exec`) goes: the program sees the mounts it would have seen.
        Ok(cg) => cg.leave(),
        Err((code, e)) => {
            eprintln!("ldsaref: {e}");
            return code;
        }
    }
    let program = &command[0];
    let err = std::process::Command::new(program)
        .args(&command[1..])
        .exec();
    eprintln!("ldsaref: {}: {err}", program.to_string_lossy());
    if err.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// The catch-all of `run --cgroup`: `--mark` (read as a rules file's
/// `mark` action is, with its messages), else `--saref`/`IPSEC_SAREF` (as
/// the library reads `IPSEC_SAREF`).
fn catch_kind(
    opts: &SteerOpts,
    mark: Option<&str>,
) -> Result<Option<ldsaref_nft::CatchKind>, (u8, String)> {
    let saref = opts
        .saref
        .clone()
        .or_else(|| settings::get(&Overrides::new(), vars::IPSEC_SAREF));
    if let Some(text) = mark {
        if saref.is_some() {
            // (--saref with --mark is clap's usage error.)
            return Err((
                2,
                "--mark and IPSEC_SAREF (set in the environment) are both catch-alls: give \
                 one (unset IPSEC_SAREF, or drop --mark)"
                    .to_owned(),
            ));
        }
        let (value, _mask) =
            ldsaref_rules::Action::parse_mark(text).map_err(|e| (1, format!("--mark: {e}")))?;
        // What the library's `mark V/M` gives a socket without a mark,
        // and the table only reaches packets without one: V.
        if value == 0 {
            return Err((
                1,
                format!(
                    "--mark: mark value 0 would steer nothing ({text:?}: the packets it would \
                     mark have mark 0 already)"
                ),
            ));
        }
        return Ok(Some(ldsaref_nft::CatchKind::Mark(value)));
    }
    match saref {
        None => Ok(None),
        Some(v) => v
            .parse::<ldsaref_rules::Saref>()
            .map(|n| Some(ldsaref_nft::CatchKind::Saref(n.get())))
            .map_err(|e| (1, format!("--saref/IPSEC_SAREF: {e}"))),
    }
}

fn prepare_cgroup(
    opts: &SteerOpts,
    mark: Option<&str>,
) -> Result<crate::cgroup::Cgroup2, (u8, String)> {
    let none = Overrides::new();
    let preload_only = [
        ("--mode", opts.mode.is_some()),
        ("--on-error", opts.on_error.is_some()),
        ("--log", opts.log.is_some()),
        ("--klips-abi", opts.klips_abi.is_some()),
    ];
    if let Some((name, _)) = preload_only.iter().find(|(_, set)| *set) {
        return Err((
            2,
            format!("{name} is an option of the preload; it has no meaning with --cgroup"),
        ));
    }
    let catch = catch_kind(opts, mark)?;
    let saref = match catch {
        Some(ldsaref_nft::CatchKind::Saref(n)) => ldsaref_rules::Saref::new(u32::from(n)),
        _ => None,
    };
    let location = crate::apply::location(opts.rules.as_deref()).map_err(|e| (1, e))?;
    // Nothing to steer (no rules, or none for this profile, and no
    // catch-all): refused, as `run` without --cgroup refuses it. (A
    // catch-all mark steers whatever the rules say.)
    let set = settings::load_rules(&location).map_err(|e| (1, e))?;
    let profile_opt = opts
        .profile
        .clone()
        .or_else(|| settings::get(&none, vars::LDSAREF_PROFILE));
    let known = set.as_ref().is_some_and(|s| {
        profile_opt
            .as_deref()
            .is_some_and(|p| s.profile(p).is_some())
    });
    let mark_catch_all = matches!(catch, Some(ldsaref_nft::CatchKind::Mark(_)));
    if !mark_catch_all && (set.is_none() || known) {
        let policy =
            ldsaref_rules::Policy::new(set, profile_opt.as_deref().filter(|_| known), saref)
                .map_err(|e| (1, e.to_string()))?;
        if let Some(why) = settings::nothing_to_steer(&policy, &location) {
            return Err((1, why));
        }
    }
    let profile = profile_opt.ok_or((
        2,
        "--cgroup needs --profile (or LDSAREF_PROFILE): a process is steered by its \
             profile's cgroup (for --saref or --mark alone, an empty section `[NAME]` in the rules \
             will do)"
            .to_owned(),
    ))?;
    // The rules and the profile first: their errors say more.
    let found = crate::cgroup::Cgroup2::find();
    // The installed table, whose absent profiles (connections down) the
    // table the rules give keeps too.
    let listing = crate::nft::list_chains();
    let desired = crate::apply::compiled(&location)
        .and_then(|c| {
            let none = crate::nft::Chains::default();
            let installed = listing.as_ref().unwrap_or(&none);
            crate::apply::desired(c, found.as_ref().ok(), false, installed)
        })
        .map_err(|e| (1, e))?;
    let Some(maps) = desired.compiled.profiles.iter().find(|p| p.name == profile) else {
        let known: Vec<&str> = desired
            .compiled
            .profiles
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        return Err((
            1,
            format!(
                "unknown profile {profile:?} (the rules have: {})",
                if known.is_empty() {
                    "no profile sections".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
    };
    let rel = maps.cgroup();
    let cg = found.map_err(|e| (1, e))?;
    match listing.map_err(|e| (1, e))?.fingerprint() {
        None => {
            return Err((
                1,
                "no table inet ldsaref is installed in this network namespace, so nothing would \
                 steer the program: run `ldsaref apply` (as root) first"
                    .to_owned(),
            ))
        }
        Some(fp) if fp != desired.fingerprint || cg.id(&rel).is_none() => {
            return Err((
                1,
                "the installed table inet ldsaref is older than the rules (they changed, or a \
                 cgroup was made again since): run `ldsaref apply` to install them"
                    .to_owned(),
            ))
        }
        Some(_) => {}
    }
    let rel = match catch {
        None => rel,
        Some(kind) => {
            // Its own cgroup below the profile's, and its elements in the
            // table's catch-all maps (a path nft resolves now; `apply`
            // keeps the elements of the catch-all cgroups that exist).
            let c = ldsaref_nft::CatchAll {
                profile: profile.clone(),
                kind,
            };
            let rel = c.cgroup();
            cg.ensure(&rel).map_err(|e| (1, e))?;
            let prefix = cg.nft_prefix().map_err(|e| (1, e))?;
            let mut batch = String::new();
            for (map, wanted) in [
                (ldsaref_nft::CATCH_ALL_MAP, true),
                (ldsaref_nft::CATCH_ALL_MAP6, kind.ipv6()),
            ] {
                if wanted {
                    batch.push_str(&format!(
                        "add element {} {map} {{ \"{prefix}{rel}\" : {:#010x} }}\n",
                        ldsaref_nft::TABLE,
                        kind.mark()
                    ));
                }
            }
            crate::nft::run_batch(&batch).map_err(|e| (1, e))?;
            rel
        }
    };
    cg.join(&rel).map_err(|e| (1, e))?;
    Ok(cg)
}

/// Prints `export` lines (or `unset` lines) for `eval`.
pub fn env(opts: &SteerOpts, unset: bool) -> u8 {
    if unset {
        let lib = library::find().ok();
        let all = [
            vars::IPSEC_SAREF,
            vars::LDSAREF_RULES,
            vars::LDSAREF_PROFILE,
            vars::LDSAREF_MODE,
            vars::LDSAREF_ON_ERROR,
            vars::LDSAREF_LOG,
            vars::LDSAREF_KLIPS_ABI,
        ];
        println!("unset {}", all.join(" "));
        let current = std::env::var("LD_PRELOAD").unwrap_or_default();
        let rest = match &lib {
            Some(l) => preload_without(l, &current),
            None => current,
        };
        if rest.is_empty() {
            println!("unset LD_PRELOAD");
        } else {
            println!("export LD_PRELOAD={}", shell::quote(&rest));
        }
        return 0;
    }
    let (ov, lib) = match prepare(opts) {
        Ok(x) => x,
        Err(code) => return code,
    };
    for (k, v) in &ov {
        println!("export {k}={}", shell::quote(v));
    }
    let preload = preload_with(&lib, std::env::var_os("LD_PRELOAD").as_deref());
    println!(
        "export LD_PRELOAD={}",
        shell::quote(&preload.to_string_lossy())
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_puts_the_library_first_once() {
        let lib = Path::new("/opt/l/libldsaref.so");
        assert_eq!(
            preload_with(lib, None),
            OsString::from("/opt/l/libldsaref.so")
        );
        assert_eq!(
            preload_with(lib, Some(OsStr::new("/a.so /opt/l/libldsaref.so:/b.so"))),
            OsString::from("/opt/l/libldsaref.so:/a.so:/b.so")
        );
        assert_eq!(preload_without(lib, "/a.so:/opt/l/libldsaref.so"), "/a.so");
    }
}
