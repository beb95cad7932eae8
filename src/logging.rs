//! The library's log: `log` + `env_logger`, level from `LDSAREF_LOG` only
//! (never the host program's `RUST_LOG`), to stderr through the next
//! `write` so the library never re-enters its own hooks, each line
//! prefixed `ldsaref[pid]`.
//!
//! Causes of failure are logged once per process ([`once`]), not per
//! packet: a program sending a million datagrams on a kernel without SAref
//! support gets one line that says what to do.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use ldsaref_rules::settings::LogLevel;
use log::LevelFilter;

use crate::next;

/// Writes to fd 2 through the next `write`.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is a valid slice for its length.
        let n = unsafe { next::write(2, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Off => LevelFilter::Off,
        LogLevel::Error => LevelFilter::Error,
        LogLevel::Warn => LevelFilter::Warn,
        LogLevel::Info => LevelFilter::Info,
        LogLevel::Debug => LevelFilter::Debug,
        LogLevel::Trace => LevelFilter::Trace,
    }
}

/// Installs the logger; called once, when the configuration is loaded.
/// Also makes the library's panics (caught at the hook boundary and turned
/// into the `LDSAREF_ON_ERROR` outcome) one log line instead of the
/// default report. This std is the library's own copy: the host program's
/// panic hook, if it is Rust, is not touched.
pub fn init(level: LogLevel) {
    std::panic::set_hook(Box::new(|info| {
        log::error!("internal error: {info}");
    }));
    let _ = env_logger::Builder::new()
        .filter_level(filter(level))
        .format(|buf, record| {
            // SAFETY: getpid has no preconditions; read per line so that
            // forked children log their own pid.
            let pid = unsafe { libc::getpid() };
            writeln!(
                buf,
                "ldsaref[{pid}]: {}: {}",
                record.level().as_str().to_ascii_lowercase(),
                record.args()
            )
        })
        .target(env_logger::Target::Pipe(Box::new(Stderr)))
        .try_init();
}

/// Distinct causes of failure, each logged at most once per process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Cause {
    NoBindref,
    NoRefinfo,
    BindrefFailed,
    Ipv6Saref,
    MarkDenied,
    MarkFailed,
    DevMissing,
    DevDenied,
    DevFailed,
    ControlTooLarge,
    Denied,
    ReflectUnknown,
    ReflectSetup,
    Panic,
    Count,
}

static LOGGED: [AtomicBool; Cause::Count as usize] =
    [const { AtomicBool::new(false) }; Cause::Count as usize];

/// True the first time `cause` is seen in this process.
pub fn once(cause: Cause) -> bool {
    !LOGGED[cause as usize].swap(true, Ordering::Relaxed)
}

/// `strerror`-style text of an errno, e.g. "Protocol not available (ENOPROTOOPT)".
pub fn errno_text(e: i32) -> String {
    let text = std::io::Error::from_raw_os_error(e).to_string();
    let text = text.split(" (os error").next().unwrap_or(&text).to_string();
    match errno_name(e) {
        Some(n) => format!("{text} ({n})"),
        None => format!("{text} (errno {e})"),
    }
}

fn errno_name(e: i32) -> Option<&'static str> {
    Some(match e {
        libc::ENOPROTOOPT => "ENOPROTOOPT",
        libc::EINVAL => "EINVAL",
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::ENODEV => "ENODEV",
        libc::EAFNOSUPPORT => "EAFNOSUPPORT",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOTSOCK => "ENOTSOCK",
        _ => return None,
    })
}
