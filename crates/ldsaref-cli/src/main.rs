//! `ldsaref`: run a program with its traffic steered into an IPsec SA,
//! check a rules file, explain a decision, probe the kernel.
//!
//! Exit codes (documented in `--help`):
//! 0 success; 1 invalid configuration (rules file, variable, profile);
//! 2 usage error; 126 the program cannot be run or would not be steered;
//! 127 the program was not found.

mod apply;
mod apply_queue;
mod cgroup;
mod closed_stdout;
mod explain;
mod index;
mod library;
mod nft;
mod probe;
mod run;
mod settings;
mod shell;
mod shellmode;
mod status;
mod syslog;
mod target;
mod updown;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit status:
  0    success
  1    invalid configuration: rules file (file:line:col: message), variable or profile;
       `run` with nothing to steer (no rules apply, no --saref or --cgroup --mark)
  2    usage error
  126  the program cannot be executed, or LD_PRELOAD would not reach it
  127  the program was not found";

#[derive(Parser)]
#[command(
    name = "ldsaref",
    version,
    about = "Put the traffic of unmodified programs into the IPsec SA you choose",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The steering options shared by `run` and `env`; each sets the variable
/// of the same meaning, overriding the environment.
#[derive(Args, Clone, Debug, Default)]
pub struct SteerOpts {
    /// Bind every AF_INET socket to this SAref (IPSEC_SAREF), 1..32767
    #[arg(long, value_name = "N")]
    pub saref: Option<String>,
    /// Rules file (LDSAREF_RULES); made absolute
    #[arg(long, value_name = "FILE")]
    pub rules: Option<PathBuf>,
    /// Profile section of the rules file (LDSAREF_PROFILE)
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// klips (IP_IPSEC_BINDREF/REFINFO) or nfmark (SO_MARK) (LDSAREF_MODE)
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// fail (default: refuse what cannot be protected) or warn (LDSAREF_ON_ERROR)
    #[arg(long = "on-error", value_name = "E")]
    pub on_error: Option<String>,
    /// error, warn, info, debug or trace (LDSAREF_LOG)
    #[arg(long, value_name = "LEVEL")]
    pub log: Option<String>,
    /// SAref option numbers: 30 (30/31, default) or 22 (legacy 22/23) (LDSAREF_KLIPS_ABI)
    #[arg(long = "klips-abi", value_name = "ABI")]
    pub klips_abi: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a program with the library preloaded (exec, no fork)
    #[command(after_help = EXIT_CODES)]
    Run {
        #[command(flatten)]
        steer: SteerOpts,
        /// Run the program even if LD_PRELOAD cannot reach it (static,
        /// setuid/setgid, file capabilities, other ELF class)
        #[arg(long = "allow-unsteered")]
        allow_unsteered: bool,
        /// Steer in the kernel instead (static binaries, io_uring, setuid
        /// programs): move into the profile's cgroup, whose rules
        /// `ldsaref apply` installed, and exec CMD without LD_PRELOAD
        #[arg(long, conflicts_with = "allow_unsteered")]
        cgroup: bool,
        /// With --cgroup: a catch-all mark, V or V/MASK (decimal or 0x
        /// hex, as a rule's `mark`): what the rules leave undecided, IPv4
        /// and IPv6, gets mark V (the library has no catch-all mark)
        #[arg(long, value_name = "V[/M]", conflicts_with = "saref")]
        mark: Option<String>,
        /// The program and its arguments
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<std::ffi::OsString>,
    },
    /// Validate a rules file (default: LDSAREF_RULES, else /etc/ldsaref/rules)
    #[command(after_help = EXIT_CODES)]
    Check {
        /// The rules file
        file: Option<PathBuf>,
        /// Then compile the rules' index, as `ldsaref compile` does
        #[arg(long)]
        compile: bool,
    },
    /// Compile the rules into the index every steered program maps
    /// (FILE.index beside the rules, /etc/ldsaref/rules.index for the
    /// system rules); run it after editing rules files by hand
    #[command(after_help = EXIT_CODES)]
    Compile {
        /// The rules file or directory (default: LDSAREF_RULES, else the
        /// system rules)
        #[arg(long, value_name = "F")]
        rules: Option<PathBuf>,
    },
    /// Show the rule that decides for a destination and the kernel operation
    #[command(after_help = EXIT_CODES)]
    Explain(explain::ExplainArgs),
    /// Report what this kernel and these privileges support
    #[command(after_help = EXIT_CODES)]
    Probe {
        /// SAref option numbers to probe: 30 or 22
        #[arg(long = "klips-abi", value_name = "ABI")]
        klips_abi: Option<String>,
    },
    /// Print `export` lines for eval, to steer a shell or an entrypoint
    #[command(after_help = EXIT_CODES)]
    Env {
        #[command(flatten)]
        steer: SteerOpts,
        /// Print the lines that undo it instead
        #[arg(long)]
        unset: bool,
    },
    /// Steer the programs of an interactive shell: eval "$(ldsaref shell on …)"
    #[command(subcommand, after_help = EXIT_CODES)]
    Shell(shellmode::ShellCmd),
    /// Install the rules in the kernel: nftables table inet ldsaref and
    /// one cgroup per profile, for `ldsaref run --cgroup` (root)
    #[command(after_help = EXIT_CODES)]
    Apply(apply::ApplyArgs),
    /// List the steered processes (both backends) and whether the table
    /// inet ldsaref is up to date with the rules
    #[command(after_help = EXIT_CODES)]
    Status(status::StatusArgs),
    /// Keep one rules file per IPsec connection, as pluto's updown script
    #[command(after_help = EXIT_CODES)]
    Updown(updown::UpdownArgs),
    /// Print a shell completion script (used to build the package)
    #[command(hide = true)]
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

/// `ldsaref updown ARGS`, parsed without building the other commands:
/// the IKE daemon runs it for every SA and waits (it holds the tunnel's
/// negotiation meanwhile), and building the whole command tree took a
/// fifth of a call in the emulated guest of the end-to-end test (33 ms of
/// 160). `None` for anything else, and for help or any error, which the
/// whole parser then prints as it always does.
fn updown_args(argv: impl Iterator<Item = std::ffi::OsString>) -> Option<updown::UpdownArgs> {
    use clap::FromArgMatches;
    let mut args = argv.skip(1);
    if args.next()? != "updown" {
        return None;
    }
    let rest: Vec<_> = args.collect();
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        return None;
    }
    let command =
        updown::UpdownArgs::augment_args(clap::Command::new("updown").no_binary_name(true));
    let matches = command.try_get_matches_from(rest).ok()?;
    updown::UpdownArgs::from_arg_matches(&matches).ok()
}

fn main() -> ExitCode {
    closed_stdout::install();
    if let Some(args) = updown_args(std::env::args_os()) {
        return ExitCode::from(updown::updown(&args));
    }
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run {
            steer,
            cgroup: true,
            mark,
            command,
            ..
        } => run::run_cgroup(&steer, mark.as_deref(), &command),
        Command::Run { mark: Some(_), .. } => {
            eprintln!(
                "ldsaref: --mark is a catch-all of the cgroup backend (run --cgroup --profile P \
                 --mark V[/M]); the library has no catch-all mark (its only one is --saref, \
                 IPSEC_SAREF)"
            );
            2
        }
        Command::Run {
            steer,
            allow_unsteered,
            cgroup: false,
            command,
            mark: None,
        } => run::run(&steer, allow_unsteered, &command),
        Command::Check { file, compile } => settings::check(file.as_deref(), compile),
        Command::Compile { rules } => settings::compile(&settings::location_of(rules.as_deref())),
        Command::Explain(args) => explain::explain(&args),
        Command::Probe { klips_abi } => probe::probe(klips_abi.as_deref()),
        Command::Env { steer, unset } => run::env(&steer, unset),
        Command::Shell(cmd) => shellmode::shell(&cmd),
        Command::Apply(args) => apply::apply(&args),
        Command::Status(args) => status::status(&args),
        Command::Updown(args) => updown::updown(&args),
        Command::Completions { shell } => shellmode::completions(shell),
    };
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The updown parser alone reads what the whole one reads, and leaves
    /// help and errors to it.
    #[test]
    fn updown_alone_parses_as_the_whole_command() {
        let argv = |a: &[&str]| -> Vec<std::ffi::OsString> {
            ["ldsaref", "updown"]
                .iter()
                .chain(a)
                .map(Into::into)
                .collect()
        };
        for a in [
            &[][..],
            &["--dir", "/etc/x", "--on-down", "deny", "--apply"],
            &[
                "--mark",
                "0x200/0xff00",
                "--global",
                "--no-guard",
                "--no-block-policy",
            ],
        ] {
            let alone = updown_args(argv(a).into_iter()).expect("parsed alone");
            let Command::Updown(whole) = Cli::try_parse_from(argv(a)).unwrap().command else {
                panic!("not updown");
            };
            assert_eq!(format!("{alone:?}"), format!("{whole:?}"), "{a:?}");
        }
        for a in [&["--help"][..], &["--on-down", "bogus"], &["extra"]] {
            assert!(updown_args(argv(a).into_iter()).is_none(), "{a:?}");
        }
        let run: Vec<std::ffi::OsString> = ["ldsaref", "run", "--", "updown"]
            .iter()
            .map(Into::into)
            .collect();
        assert!(updown_args(run.into_iter()).is_none());
    }
}
