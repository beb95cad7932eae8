//! What each intercepted call must do, decided from the fd's state, the
//! policy and the kernel's capabilities. The hooks only decode arguments,
//! call these, and apply the answer: carry on with the real call (`Ok`),
//! carry on with an extra cmsg (`Send::Tag`), or fail with an errno
//! (`Err`).
//!
//! Nothing here allocates or locks on the way to a decision; logging only
//! formats when its level is enabled, and causes of failure are logged
//! once per process.

use std::net::{IpAddr, SocketAddr};

use ldsaref_kernel::cmsg::Tag;
use ldsaref_kernel::op::{Describe, Steer, Target, Verdict};
use ldsaref_kernel::opts::{SOL_IP, SOL_SOCKET, SO_BINDTODEVICE, SO_MARK, SO_RCVMARK};
use ldsaref_rules::settings::OnError;
use ldsaref_rules::{Action, Decision, Proto};

use crate::addr::Key;
use crate::config::{self, Config, Snapshot};
use crate::fdtable::{self, Family, FdState, Kind};
use crate::logging::{self, Cause};
use crate::sys::{self, Errno};

pub(crate) mod memo;
mod reflect;
mod steer;
mod support;

use reflect::{enable_reflect, reflect_tag};
pub use reflect::{on_close, on_received, recv_mode, RecvMode};
use steer::{apply_socket, datagram_tag, undo_all};

/// `SO_BINDTOIFINDEX`: like `SO_BINDTODEVICE`, by index.
const SO_BINDTOIFINDEX: i32 = 62;

/// What a send must carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Send {
    /// Exactly what the application asked for.
    Plain,
    /// The application's call plus this cmsg.
    Tag(Tag),
}

/// The state of `fd`, learned from the kernel if this is the first time
/// the library sees it. `None`: not a socket (the real call will say so).
fn state(fd: i32) -> Option<FdState> {
    let st = fdtable::get(fd);
    if st.is_known() {
        return Some(st);
    }
    let (family, kind) = sys::socket_kind(fd).ok()?;
    let st = FdState::new(family, kind);
    fdtable::set(fd, st);
    Some(st)
}

/// The protocol steering cares about, or `None` for sockets it never touches.
fn proto_of(st: FdState) -> Option<Proto> {
    match (st.family(), st.kind()) {
        (Family::Other, _) => None,
        (_, Kind::Stream) => Some(Proto::Tcp),
        (_, Kind::Dgram) => Some(Proto::Udp),
        (_, Kind::Other) => None,
    }
}

fn pure_ipv6(ip: IpAddr) -> bool {
    matches!(ip.to_canonical(), IpAddr::V6(_))
}

/// The configuration in force, for calls that did not take a
/// `config::snapshot()` first (the decisions that did use
/// `config::in_force()`, which skips the second reload check).
fn config() -> arc_swap::Guard<std::sync::Arc<Config>> {
    config::current()
}

/// A rule that must be applied cannot be: fail the call with the kernel's
/// errno, or (warn) let it through unsteered. One log line per cause.
fn refuse(
    cfg: &Config,
    cause: Cause,
    errno: Errno,
    what: impl FnOnce() -> String,
) -> Result<(), Errno> {
    if logging::once(cause) {
        let err = logging::errno_text(errno);
        match cfg.on_error {
            OnError::Fail => log::error!(
                "{} ({err}); the call fails and nothing is sent (LDSAREF_ON_ERROR=fail; LDSAREF_ON_ERROR=warn sends without it)",
                what()
            ),
            OnError::Warn => log::warn!(
                "{} ({err}); sending without it (LDSAREF_ON_ERROR=warn)",
                what()
            ),
        }
    }
    match cfg.on_error {
        OnError::Fail => Err(errno),
        OnError::Warn => Ok(()),
    }
}

/// The configuration is unusable: refuse every inet connect and send, or
/// let it through. The reason was logged when it was loaded.
fn broken(cfg: &Config) -> Result<(), Errno> {
    match cfg.on_error {
        OnError::Fail => Err(libc::EACCES),
        OnError::Warn => Ok(()),
    }
}

fn deny(d: &Decision<'_>, dest: SocketAddr, proto: Proto) -> Errno {
    if logging::once(Cause::Denied) {
        log::warn!(
            "{} denies {proto} traffic to {dest}: refused with EACCES (further denials are logged at debug level)",
            d.source
        );
    }
    libc::EACCES
}

/// A panic inside the library: handled like any other failure to apply a
/// rule, never allowed to unwind into C or to skip the policy silently.
pub fn on_panic() -> Result<(), Errno> {
    // The panic hook (logging::init) said what happened, once. The mirror
    // of LDSAREF_ON_ERROR, not the configuration it may have panicked in.
    if config::warn_on_error() {
        Ok(())
    } else {
        Err(libc::EACCES)
    }
}

/// One debug line per decision; a load and a compare otherwise.
#[inline(always)]
fn log_decision(
    fd: i32,
    call: &str,
    dest: SocketAddr,
    proto: Proto,
    d: Option<&Decision<'_>>,
    op: &dyn Fn() -> String,
) {
    if log::log_enabled!(log::Level::Debug) {
        log_decision_line(fd, call, dest, proto, d, op);
    }
}

#[cold]
#[inline(never)]
fn log_decision_line(
    fd: i32,
    call: &str,
    dest: SocketAddr,
    proto: Proto,
    d: Option<&Decision<'_>>,
    op: &dyn Fn() -> String,
) {
    match d {
        Some(d) => log::debug!(
            "fd={fd} {call} dst={dest} proto={proto}: {} {} -> {}",
            d.source,
            d.action,
            op()
        ),
        None => log::debug!(
            "fd={fd} {call} dst={dest} proto={proto}: no rule -> {}",
            op()
        ),
    }
}

// ---------------------------------------------------------------------
// The decisions, one per kind of call.

/// After a successful `socket()`: remembers what it is, and says whether
/// [`on_socket`] has more to do (`snap()` has `reflect` rules and this is a
/// datagram socket, or an `IPSEC_SAREF` catch-all and an AF_INET socket).
/// Most sockets of most processes stop here, without the configuration.
#[inline]
pub fn new_socket(snap: impl FnOnce() -> Snapshot, fd: i32, domain: i32, ty: i32) -> bool {
    let family = sys::family_of(domain);
    let kind = sys::kind_of(ty);
    fdtable::set(fd, FdState::new(family, kind));
    // Unix sockets and the like, and IPv6 streams (see `on_socket`): not
    // even a look at the clock.
    if family == Family::Other || (family == Family::Inet6 && kind != Kind::Dgram) {
        return false;
    }
    let snap = snap();
    (kind == Kind::Dgram && snap.reflect()) || (family == Family::Inet4 && snap.catch_all())
}

/// After a successful `socket()` that [`new_socket`] says needs it: bind
/// AF_INET sockets to `IPSEC_SAREF` like Openswan's libsaref, so that
/// listeners and sockets that never connect are covered, and set datagram
/// sockets up for `reflect`.
pub fn on_socket(fd: i32, domain: i32, ty: i32) -> Result<(), Errno> {
    let family = sys::family_of(domain);
    let kind = sys::kind_of(ty);
    let mut st = FdState::new(family, kind);
    fdtable::set(fd, st);
    if family == Family::Other || (family == Family::Inet6 && kind != Kind::Dgram) {
        return Ok(());
    }
    let cfg = config::in_force();
    if kind == Kind::Dgram && cfg.reflect {
        st = enable_reflect(fd, st, &cfg);
        fdtable::set(fd, st);
    }
    if family != Family::Inet4 {
        return Ok(());
    }
    let Some(saref) = cfg.policy.as_ref().and_then(|p| p.catch_all()) else {
        return Ok(());
    };
    let Verdict::Steer(steer) = Verdict::of(Action::Saref(saref), cfg.mode) else {
        return Ok(());
    };
    let r = apply_socket(fd, st, steer, None, &cfg);
    if log::log_enabled!(log::Level::Debug) {
        let what = Describe {
            steer,
            target: Target::Socket(Proto::Tcp),
            abi: cfg.abi,
        };
        log::debug!(
            "fd={fd} socket: IPSEC_SAREF={saref} -> {what}: {}",
            outcome(&r)
        );
    }
    fdtable::set(fd, r?);
    Ok(())
}

fn outcome<T>(r: &Result<T, Errno>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("refused: {}", logging::errno_text(*e)),
    }
}

/// Before `connect()`: bind, rebind or unbind the socket for this
/// destination. `generation` is the one the hook read first (see
/// `config::Snapshot::generation`); "nothing to do" is filed under it.
pub fn before_connect(generation: u64, fd: i32, dest: SocketAddr) -> Result<(), Errno> {
    let cfg = config::in_force();
    if cfg.inert() {
        return Ok(());
    }
    let Some(st) = state(fd) else { return Ok(()) };
    connect_with(&cfg, fd, st, dest, "connect", Some(generation))
}

/// The test-only fault switch (see `Config::inject_panic`).
fn injected_panic(cfg: &Config) {
    if cfg.inject_panic {
        panic!("LDSAREF_TEST_PANIC: injected failure in the decision path");
    }
}

/// `memo`: the generation to file a "nothing to do" decision under, if
/// the caller may reuse it.
fn connect_with(
    cfg: &Config,
    fd: i32,
    st: FdState,
    dest: SocketAddr,
    call: &str,
    memo: Option<u64>,
) -> Result<(), Errno> {
    let Some(proto) = proto_of(st) else {
        return Ok(());
    };
    injected_panic(cfg);
    let Some(policy) = cfg.policy.as_ref() else {
        return broken(cfg);
    };
    let ip = dest.ip().to_canonical();
    let d = policy.decide(ip, proto, dest.port());
    let r = match d.as_ref().map(|d| (d, Verdict::of(d.action, cfg.mode))) {
        Some((_, Verdict::Steer(steer))) => {
            apply_socket(fd, st, steer, Some(ip), cfg).map(|s| (s, Some(steer)))
        }
        Some((d, Verdict::Deny)) => Err(deny(d, dest, proto)),
        None | Some((_, Verdict::Pass)) | Some((_, Verdict::Reflect)) => {
            Ok((undo_all(fd, st, cfg), None))
        }
    };
    log_decision(fd, call, dest, proto, d.as_ref(), &|| match &r {
        Ok((_, Some(steer))) => format!(
            "{}: ok",
            Describe {
                steer: *steer,
                target: Target::Socket(proto),
                abi: cfg.abi
            }
        ),
        Ok((_, None)) => "socket left as the application made it".to_string(),
        Err(e) => format!("refused: {}", logging::errno_text(*e)),
    });
    let (new, steer) = r?;
    if new != st {
        fdtable::set(fd, new);
    }
    // No steering, and the socket now carries nothing of the library's:
    // the next connect to this destination from a socket like this one
    // has nothing to do either.
    if let (Some(generation), None, true) = (memo, steer, new.untouched()) {
        if !log::log_enabled!(log::Level::Debug) {
            memo::put_connect_plain(generation, new, Key::of(dest));
        }
    }
    Ok(())
}

/// Before `sendto`/`sendmsg`/`sendmmsg`: what the datagram must carry,
/// for a datagram the hook did not find in the memo ([`memo::datagram`]).
/// `dest` is `None` on a connected socket, `key` its [`Key`];
/// `control` is the application's own control data, kept as it is.
pub fn plan_send(
    generation: u64,
    fd: i32,
    dest: Option<SocketAddr>,
    key: Option<Key>,
    flags: i32,
    control: &[u8],
) -> Result<Send, Errno> {
    // `generation` was read before the configuration below is loaded: see
    // `config::Snapshot::generation`.
    let memo_ok = control.is_empty() && !log::log_enabled!(log::Level::Debug);
    let key = key.filter(|_| memo_ok);
    let cfg = config::in_force();
    if cfg.inert() {
        return Ok(Send::Plain);
    }
    let Some(st) = state(fd) else {
        return Ok(Send::Plain);
    };
    let Some(proto) = proto_of(st) else {
        return Ok(Send::Plain);
    };
    injected_panic(&cfg);
    if proto == Proto::Tcp {
        // TCP Fast Open connects inside sendto/sendmsg: steer it like connect.
        if let (Some(dest), true) = (dest, flags & libc::MSG_FASTOPEN != 0) {
            connect_with(&cfg, fd, st, dest, "sendto(MSG_FASTOPEN)", None)?;
        }
        return Ok(Send::Plain);
    }
    let Some(dest) = dest else {
        return Ok(connected_tag_with(&cfg, st, control));
    };
    let Some(policy) = cfg.policy.as_ref() else {
        return broken(&cfg).map(|()| Send::Plain);
    };
    let ip = dest.ip().to_canonical();
    let d = policy.decide(ip, proto, dest.port());
    let verdict = d.as_ref().map(|d| Verdict::of(d.action, cfg.mode));
    let r = match (d.as_ref(), verdict) {
        (_, Some(Verdict::Steer(steer))) => datagram_tag(&cfg, fd, st, steer, ip, control),
        (Some(d), Some(Verdict::Deny)) => Err(deny(d, dest, proto)),
        (_, Some(Verdict::Reflect)) => reflect_tag(&cfg, fd, dest, control),
        _ => Ok(Send::Plain),
    };
    let reusable = match (verdict, &r) {
        (None | Some(Verdict::Pass), Ok(Send::Plain)) => true,
        (Some(Verdict::Steer(Steer::Saref(_))), Ok(Send::Tag(_))) => true,
        (Some(Verdict::Steer(Steer::Mark { mask, .. })), Ok(Send::Tag(_))) => mask == u32::MAX,
        _ => false,
    };
    if let (Some(key), true, Ok(send)) = (key, reusable, r) {
        memo::put(generation, fd, st, key, send);
    }
    log_decision(
        fd,
        "send",
        dest,
        proto,
        d.as_ref(),
        &|| match (&r, verdict) {
            (Ok(Send::Tag(_)), Some(Verdict::Steer(steer))) => {
                format!(
                    "{}: ok",
                    Describe {
                        steer,
                        target: Target::Datagram,
                        abi: cfg.abi
                    }
                )
            }
            (Ok(_), _) => "datagram sent as the application made it".to_string(),
            (Err(e), _) => format!("refused: {}", logging::errno_text(*e)),
        },
    );
    r
}

fn connected_tag_with(cfg: &Config, st: FdState, control: &[u8]) -> Send {
    if st.kind() != Kind::Dgram || st.saref() == 0 || st.app_bindref() {
        return Send::Plain;
    }
    let tag = Tag::refinfo(cfg.opts, st.saref());
    if tag.present_in(control) {
        Send::Plain
    } else {
        Send::Tag(tag)
    }
}

/// For `send`/`write`/`writev` on a connected UDP socket the library bound
/// to an SAref: the REFINFO cmsg every datagram must carry (a BINDREF alone
/// likely does not tag UDP datagrams on a KLIPS kernel). One table load for
/// every other descriptor.
pub fn connected_tag(fd: i32) -> Option<Tag> {
    let st = fdtable::get(fd);
    if !st.is_known() || st.kind() != Kind::Dgram || st.saref() == 0 {
        return None;
    }
    match connected_tag_with(&config(), st, &[]) {
        Send::Tag(t) => Some(t),
        Send::Plain => None,
    }
}

/// The tagged write found a stale entry (the descriptor is no longer a
/// socket): forget it.
pub fn not_a_socket(fd: i32) {
    fdtable::clear(fd);
}

/// Whether [`on_setsockopt`] may act on this option: the hook skips every
/// other one without a look at the configuration or `errno`. Keep the two
/// lists together.
pub fn setsockopt_watched(level: i32, opt: i32) -> bool {
    matches!(
        (level, opt),
        (SOL_SOCKET, SO_MARK)
            | (SOL_SOCKET, SO_RCVMARK)
            | (SOL_SOCKET, SO_BINDTODEVICE)
            | (SOL_SOCKET, SO_BINDTOIFINDEX)
            | (SOL_IP, 30)
            | (SOL_IP, 22)
            | (SOL_IP, 31)
            | (SOL_IP, 23)
    )
}

/// Before `setsockopt`: an application that sets the option the library
/// would use manages that socket itself, and wins over the rules.
pub fn on_setsockopt(fd: i32, level: i32, opt: i32) {
    let mark = match (level, opt) {
        (SOL_SOCKET, SO_MARK) => FdState::with_app_mark,
        (SOL_SOCKET, SO_RCVMARK) => FdState::with_app_rcv,
        (SOL_IP, 30) | (SOL_IP, 22) => {
            if config().opts.refinfo != opt {
                return;
            }
            FdState::with_app_rcv
        }
        (SOL_SOCKET, SO_BINDTODEVICE) | (SOL_SOCKET, SO_BINDTOIFINDEX) => FdState::with_app_dev,
        (SOL_IP, 31) | (SOL_IP, 23) => {
            if config().opts.bindref != opt {
                return;
            }
            FdState::with_app_bindref
        }
        _ => return,
    };
    if let Some(st) = state(fd) {
        fdtable::set(fd, mark(st));
    }
}

/// A control buffer could not be rewritten.
pub fn control_error(too_large: bool) -> Result<(), Errno> {
    let cfg = config();
    if too_large {
        refuse(&cfg, Cause::ControlTooLarge, libc::ENOBUFS, || {
            "the application's control data is too large to add the steering cmsg to".to_string()
        })
    } else {
        // The kernel rejects such a buffer too: fail like it would.
        Err(libc::EINVAL)
    }
}
