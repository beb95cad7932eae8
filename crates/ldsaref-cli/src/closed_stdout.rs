//! A reader that stops reading (`ldsaref status | head -1`) ends ldsaref
//! the way it ends other Unix tools: by SIGPIPE, silently.
//!
//! Rust ignores SIGPIPE, so a write to the closed pipe fails with `EPIPE`
//! and `println!` panics, with a message and a backtrace. SIGPIPE is not
//! simply set back to its default for the whole process: ldsaref writes
//! batches into `nft`'s standard input, and an `nft` that exits before
//! reading all of it must be an error that shows nft's message, not a
//! silent death. Only the panic of a print to a closed standard output is
//! turned into SIGPIPE.

/// Installs the panic hook (before anything prints).
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if is_closed_stdout(message) {
            die_of_sigpipe();
        }
        default(info);
    }));
}

/// Whether a panic message is std's for a print to a closed pipe.
fn is_closed_stdout(message: &str) -> bool {
    message.starts_with("failed printing to stdout")
        && message.contains(&format!("(os error {})", libc::EPIPE))
}

fn die_of_sigpipe() -> ! {
    // SAFETY: signal() and raise() with constant arguments; restoring the
    // default action of SIGPIPE and raising it ends the process, which is
    // what the reader's shell expects of a writer to a closed pipe.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Not reached; if SIGPIPE is blocked, the shell's code for it.
    std::process::exit(128 + libc::SIGPIPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_print_to_a_closed_pipe_is_recognised() {
        assert!(is_closed_stdout(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(!is_closed_stdout(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_closed_stdout(
            "failed printing to stderr: Broken pipe (os error 32)"
        ));
        assert!(!is_closed_stdout("index out of bounds"));
    }
}
