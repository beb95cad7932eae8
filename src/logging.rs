//! The library's log: the `log` facade with a logger of its own, level
//! from `LDSAREF_LOG` only (never the host program's `RUST_LOG`), to stderr
//! through the next `write` so the library never re-enters its own hooks,
//! each line prefixed `ldsaref[pid]`.
//!
//! Not `env_logger`: its output goes through a `Mutex`, and a child forked
//! while another thread held it would hang on its first log line. Here a
//! line is formatted on the stack (no allocation, no lock, cut at 1 KiB)
//! and written with one `write(2)`, so lines never mix either.
//!
//! Causes of failure are logged once per process ([`once`]), not per
//! packet: a program sending a million datagrams on a kernel without SAref
//! support gets one line that says what to do.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use ldsaref_rules::settings::LogLevel;
use log::{LevelFilter, Log, Metadata, Record};

use crate::next;

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

/// A line being formatted on the stack: no allocation, and above all no
/// lock, so a child forked while another thread was logging can log too.
struct Line {
    buf: [u8; 1024],
    len: usize,
}

impl std::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        // Keep room for the newline; a longer line is cut.
        let room = self.buf.len() - 1 - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

struct Logger;

impl Log for Logger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut line = Line {
            buf: [0; 1024],
            len: 0,
        };
        // SAFETY: getpid has no preconditions; read per line so that
        // forked children log their own pid.
        let pid = unsafe { libc::getpid() };
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warn",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let _ = write!(line, "ldsaref[{pid}]: {level}: {}", record.args());
        line.buf[line.len] = b'\n';
        line.len += 1;
        // One write per line: lines of threads and processes never mix.
        // SAFETY: the buffer is valid for `len` bytes.
        unsafe { next::write(2, line.buf.as_ptr().cast(), line.len) };
    }

    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

/// Installs the logger; called once, when the configuration is loaded.
/// Also makes the library's panics (caught at the hook boundary and turned
/// into the `LDSAREF_ON_ERROR` outcome) one log line, once per process.
pub fn init(level: LogLevel) {
    std::panic::set_hook(Box::new(|info| {
        if once(Cause::Panic) {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            let at = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            log::error!("internal error at {at}: {msg}; applying LDSAREF_ON_ERROR");
        }
    }));
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(filter(level));
    }
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
