//! `ldsaref shell on|off|show`: steer every program started from an
//! interactive shell, like `. torsocks on`, with
//! `eval "$(ldsaref shell on --profile client1)"`.
//!
//! Unlike `ldsaref env`, which adds to whatever the shell already has,
//! `shell on` sets a whole state: the variables of the options given, and
//! unsets the others, so that switching from one profile to another never
//! keeps a stale `IPSEC_SAREF`. `ldsaref completions SHELL` lives here too.

use std::io::IsTerminal;
use std::path::Path;

use clap::{CommandFactory, Subcommand};
use ldsaref_rules::settings::vars;

use crate::{library, settings, shell, SteerOpts};

#[derive(Subcommand)]
pub enum ShellCmd {
    /// Print the lines that steer this shell's programs with exactly these options
    On {
        #[command(flatten)]
        steer: SteerOpts,
    },
    /// Print the lines that stop steering this shell's programs
    Off,
    /// Say whether programs started from this shell are steered, and how
    Show,
}

/// What the shell must `eval` on failure, so that `eval "$(…)"` fails too
/// instead of going on unsteered.
const FAILED: &str = "false";

/// Whether an `LD_PRELOAD` entry is a copy of the library, wherever it is.
fn is_ours(entry: &str) -> bool {
    Path::new(entry).file_name() == Some(library::LIB_NAME.as_ref())
}

/// The entries of `LD_PRELOAD` that are not the library.
fn others(preload: &str) -> Vec<&str> {
    preload
        .split([' ', ':'])
        .filter(|e| !e.is_empty() && !is_ours(e))
        .collect()
}

fn say(msg: &str) {
    // Only people read this; in a script it would be noise.
    if std::io::stderr().is_terminal() {
        eprintln!("ldsaref: {msg}");
    }
}

fn on(opts: &SteerOpts) -> u8 {
    let ov = match settings::overrides(opts) {
        Ok(ov) => ov,
        Err(e) => {
            eprintln!("ldsaref: {e}");
            println!("{FAILED}");
            return 1;
        }
    };
    let unset: Vec<&str> = vars::ALL
        .into_iter()
        .filter(|v| !ov.iter().any(|(k, _)| k == v))
        .collect();
    // Validate the state the shell will have, not this one's leftovers.
    // Still single-threaded here.
    for v in &unset {
        std::env::remove_var(v);
    }
    if let Err(problems) = settings::validate(&ov) {
        for p in problems {
            eprintln!("ldsaref: {p}");
        }
        eprintln!("ldsaref: this shell is left as it was");
        println!("{FAILED}");
        return 1;
    }
    let lib = match library::find() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ldsaref: {e}");
            println!("{FAILED}");
            return 126;
        }
    };
    if !unset.is_empty() {
        println!("unset {}", unset.join(" "));
    }
    for (k, v) in &ov {
        println!("export {k}={}", shell::quote(v));
    }
    let current = std::env::var("LD_PRELOAD").unwrap_or_default();
    let mut preload = vec![lib.to_string_lossy().into_owned()];
    preload.extend(others(&current).into_iter().map(str::to_owned));
    println!("export LD_PRELOAD={}", shell::quote(&preload.join(":")));
    let what: Vec<String> = ov.iter().map(|(k, v)| format!("{k}={v}")).collect();
    say(&format!(
        "programs started from this shell are now steered{}; eval \"$(ldsaref shell off)\" stops it",
        if what.is_empty() {
            " by the system rules".to_owned()
        } else {
            format!(" ({})", what.join(" "))
        }
    ));
    0
}

fn off() -> u8 {
    println!("unset {}", vars::ALL.join(" "));
    let current = std::env::var("LD_PRELOAD").unwrap_or_default();
    let rest = others(&current);
    if rest.is_empty() {
        println!("unset LD_PRELOAD");
    } else {
        println!("export LD_PRELOAD={}", shell::quote(&rest.join(":")));
    }
    say("programs started from this shell are no longer steered");
    0
}

fn show() -> u8 {
    let preload = std::env::var("LD_PRELOAD").unwrap_or_default();
    let lib = preload.split([' ', ':']).find(|e| is_ours(e));
    match lib {
        Some(lib) => {
            println!("steered: LD_PRELOAD has {lib}");
            for v in vars::ALL {
                if let Ok(val) = std::env::var(v) {
                    println!("{v}={}", shell::quote(&val));
                }
            }
            0
        }
        None => {
            println!("not steered: {} is not in LD_PRELOAD", library::LIB_NAME);
            1
        }
    }
}

/// `ldsaref shell …`.
pub fn shell(cmd: &ShellCmd) -> u8 {
    match cmd {
        ShellCmd::On { steer } => on(steer),
        ShellCmd::Off => off(),
        ShellCmd::Show => show(),
    }
}

/// `ldsaref completions SHELL`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> u8 {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(shell, &mut cmd, "ldsaref", &mut std::io::stdout());
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_library_wherever_it_is() {
        assert_eq!(
            others("/a.so /usr/lib/x86_64-linux-gnu/libldsaref.so:/opt/libldsaref.so:/b.so"),
            ["/a.so", "/b.so"]
        );
        assert!(others("").is_empty());
        assert!(!is_ours("/usr/lib/libldsaref.so.old"));
    }
}
