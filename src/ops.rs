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
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use ldsaref_kernel::cmsg::Tag;
use ldsaref_kernel::op::{Describe, Steer, Target, Verdict};
use ldsaref_kernel::opts::{merge_mark, SOL_IP, SOL_SOCKET, SO_BINDTODEVICE, SO_MARK, SO_RCVMARK};
use ldsaref_kernel::probe;
use ldsaref_rules::settings::{KlipsAbi, OnError};
use ldsaref_rules::{Action, Decision, Proto};

use crate::config::{self, Config};
use crate::fdtable::{self, Family, FdState, Kind};
use crate::logging::{self, Cause};
use crate::peers::{self, Seen};
use crate::sys::{self, Errno, NextCalls};

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

/// `LDSAREF_ON_ERROR=warn`, mirrored here so that a panic handler can
/// decide without touching the configuration it may have panicked in.
static WARN_ON_ERROR: AtomicBool = AtomicBool::new(false);

fn config() -> arc_swap::Guard<std::sync::Arc<Config>> {
    let cfg = config::current();
    let warn = cfg.on_error == OnError::Warn;
    // Load first: a store on every call would bounce the cache line
    // between threads.
    if WARN_ON_ERROR.load(Ordering::Relaxed) != warn {
        WARN_ON_ERROR.store(warn, Ordering::Relaxed);
    }
    cfg
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
    if logging::once(Cause::Panic) {
        log::error!("internal error in ldsaref; applying LDSAREF_ON_ERROR");
    }
    if WARN_ON_ERROR.load(Ordering::Relaxed) {
        Ok(())
    } else {
        Err(libc::EACCES)
    }
}

// ---------------------------------------------------------------------
// Kernel capabilities, asked once per process and ABI.

/// 0: not asked yet; -1: supported; > 0: the errno the kernel answered.
static SAREF_PROBE: [[AtomicI32; 2]; 2] = [
    [AtomicI32::new(0), AtomicI32::new(0)],
    [AtomicI32::new(0), AtomicI32::new(0)],
];
static MARK_PROBE: AtomicI32 = AtomicI32::new(0);

#[derive(Clone, Copy)]
enum SarefOpt {
    Bindref = 0,
    Refinfo = 1,
}

fn encode(s: probe::Support) -> i32 {
    match s {
        probe::Support::Yes => -1,
        probe::Support::No(e) => e.max(1),
    }
}

fn decode(v: i32) -> Result<(), Errno> {
    if v < 0 {
        Ok(())
    } else {
        Err(v)
    }
}

fn saref_supported(cfg: &Config, which: SarefOpt) -> Result<(), Errno> {
    if !cfg.probe {
        return Ok(());
    }
    let abi = match cfg.abi {
        KlipsAbi::Current => 0,
        KlipsAbi::Legacy => 1,
    };
    let slot = &SAREF_PROBE[abi][which as usize];
    let v = slot.load(Ordering::Relaxed);
    if v != 0 {
        return decode(v);
    }
    let s = probe::saref_support(&NextCalls, cfg.abi);
    SAREF_PROBE[abi][0].store(encode(s.bindref), Ordering::Relaxed);
    SAREF_PROBE[abi][1].store(encode(s.refinfo), Ordering::Relaxed);
    decode(slot.load(Ordering::Relaxed))
}

fn mark_cmsg_supported(cfg: &Config) -> Result<(), Errno> {
    if !cfg.probe {
        return Ok(());
    }
    let v = MARK_PROBE.load(Ordering::Relaxed);
    if v != 0 {
        return decode(v);
    }
    let v = encode(probe::mark_support(&NextCalls));
    MARK_PROBE.store(v, Ordering::Relaxed);
    decode(v)
}

// ---------------------------------------------------------------------
// Applying a steer to a socket.

fn undo_bindref(fd: i32, st: FdState, cfg: &Config) -> FdState {
    if st.saref() == 0 || st.app_bindref() {
        return st;
    }
    if let Err(e) = sys::set_int(fd, SOL_IP, cfg.opts.bindref, 0) {
        // Still bound to the previous SA: misrouted perhaps, but never sent
        // in the clear because of this.
        log::debug!("fd={fd}: unbinding SAref {} failed: errno {e}", st.saref());
        return st;
    }
    st.with_saref(0)
}

fn undo_mark(fd: i32, st: FdState) -> FdState {
    if !st.shim_mark() || st.app_mark() {
        return st;
    }
    if let Err(e) = sys::set_int(fd, SOL_SOCKET, SO_MARK, 0) {
        log::debug!("fd={fd}: clearing SO_MARK failed: errno {e}");
        return st;
    }
    st.with_shim_mark(false)
}

fn undo_dev(fd: i32, st: FdState) -> FdState {
    if !st.shim_dev() || st.app_dev() {
        return st;
    }
    if let Err(e) = sys::bind_device(fd, b"") {
        log::debug!("fd={fd}: unbinding the device failed: errno {e}");
        return st;
    }
    st.with_shim_dev(false)
}

/// Leaves the socket as the application made it: removes whatever the
/// library put on it for an earlier destination.
fn undo_all(fd: i32, st: FdState, cfg: &Config) -> FdState {
    undo_dev(fd, undo_mark(fd, undo_bindref(fd, st, cfg)))
}

/// Tells the kernel which SA the socket's traffic must use. Returns the new
/// state; `Err` only when the call must fail.
fn apply_socket(
    fd: i32,
    st: FdState,
    steer: Steer,
    dest: Option<IpAddr>,
    cfg: &Config,
) -> Result<FdState, Errno> {
    match steer {
        Steer::Saref(s) => {
            if st.app_bindref() {
                return Ok(st);
            }
            if dest.is_some_and(pure_ipv6) {
                refuse(cfg, Cause::Ipv6Saref, libc::EAFNOSUPPORT, || {
                    format!("SAref {s} cannot steer IPv6 traffic: KLIPS SArefs are IPv4 only (use a mark or dev rule)")
                })?;
                return Ok(st);
            }
            if let Err(e) = saref_supported(cfg, SarefOpt::Bindref) {
                refuse(cfg, Cause::NoBindref, e, || {
                    format!(
                        "this kernel has no SAref support (IP_IPSEC_BINDREF={}): it needs the Openswan SAref patches; LDSAREF_MODE=nfmark steers with SO_MARK instead",
                        cfg.opts.bindref
                    )
                })?;
                return Ok(st);
            }
            let mut st = st;
            if st.saref() != s.get() {
                if let Err(e) = sys::set_int(fd, SOL_IP, cfg.opts.bindref, i32::from(s.get())) {
                    refuse(cfg, Cause::BindrefFailed, e, || {
                        format!(
                            "binding a socket to SAref {s} (IP_IPSEC_BINDREF={}) failed",
                            cfg.opts.bindref
                        )
                    })?;
                    return Ok(st);
                }
                st = st.with_saref(s.get());
            }
            Ok(undo_dev(fd, undo_mark(fd, st)))
        }
        Steer::Mark { value, mask } => {
            if st.app_mark() {
                return Ok(st);
            }
            let set = if mask == u32::MAX {
                Ok(value)
            } else {
                sys::get_int(fd, SOL_SOCKET, SO_MARK).map(|cur| merge_mark(cur as u32, value, mask))
            }
            .and_then(|m| sys::set_int(fd, SOL_SOCKET, SO_MARK, m as i32));
            if let Err(e) = set {
                mark_refused(cfg, e)?;
                return Ok(st);
            }
            Ok(undo_dev(fd, undo_bindref(fd, st.with_shim_mark(true), cfg)))
        }
        Steer::Dev(name) => {
            if st.app_dev() {
                return Ok(st);
            }
            if let Err(e) = sys::bind_device(fd, name.as_bytes()) {
                dev_refused(cfg, e, name.as_str())?;
                return Ok(st);
            }
            Ok(undo_mark(fd, undo_bindref(fd, st.with_shim_dev(true), cfg)))
        }
    }
}

fn mark_refused(cfg: &Config, e: Errno) -> Result<(), Errno> {
    if e == libc::EPERM {
        refuse(cfg, Cause::MarkDenied, e, || {
            "setting SO_MARK needs CAP_NET_ADMIN, which this process does not have".to_string()
        })
    } else {
        refuse(cfg, Cause::MarkFailed, e, || {
            "setting SO_MARK failed".to_string()
        })
    }
}

fn dev_refused(cfg: &Config, e: Errno, name: &str) -> Result<(), Errno> {
    match e {
        libc::ENODEV => refuse(cfg, Cause::DevMissing, e, || {
            format!("interface \"{name}\" does not exist")
        }),
        libc::EPERM => refuse(cfg, Cause::DevDenied, e, || {
            format!("binding to interface \"{name}\" needs CAP_NET_RAW, which this process does not have")
        }),
        _ => refuse(cfg, Cause::DevFailed, e, || {
            format!("binding to interface \"{name}\" failed")
        }),
    }
}

fn log_decision(
    fd: i32,
    call: &str,
    dest: SocketAddr,
    proto: Proto,
    d: Option<&Decision<'_>>,
    op: &dyn Fn() -> String,
) {
    if log::log_enabled!(log::Level::Debug) {
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
}

// ---------------------------------------------------------------------
// The decisions, one per kind of call.

/// After a successful `socket()`: remember what it is, and bind AF_INET
/// sockets to `IPSEC_SAREF` like Openswan's libsaref, so that listeners and
/// sockets that never connect are covered.
pub fn on_socket(fd: i32, domain: i32, ty: i32) -> Result<(), Errno> {
    let family = sys::family_of(domain);
    let kind = sys::kind_of(ty);
    let mut st = FdState::new(family, kind);
    fdtable::set(fd, st);
    if family == Family::Other || (family == Family::Inet6 && kind != Kind::Dgram) {
        return Ok(());
    }
    let cfg = config();
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

/// Before `connect()` (and TCP Fast Open): bind, rebind or unbind the
/// socket for this destination.
pub fn before_connect(fd: i32, dest: SocketAddr) -> Result<(), Errno> {
    let cfg = config();
    if cfg.inert() {
        return Ok(());
    }
    let Some(st) = state(fd) else { return Ok(()) };
    connect_with(&cfg, fd, st, dest, "connect")
}

/// The test-only fault switch (see `Config::inject_panic`).
fn injected_panic(cfg: &Config) {
    if cfg.inject_panic {
        panic!("LDSAREF_TEST_PANIC: injected failure in the decision path");
    }
}

fn connect_with(
    cfg: &Config,
    fd: i32,
    st: FdState,
    dest: SocketAddr,
    call: &str,
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
    let (new, _) = r?;
    if new != st {
        fdtable::set(fd, new);
    }
    Ok(())
}

/// Before `sendto`/`sendmsg`/`sendmmsg`: what the datagram must carry.
/// `dest` is `None` on a connected socket; `control` is the application's
/// own control data, kept as it is.
pub fn plan_send(
    fd: i32,
    dest: Option<SocketAddr>,
    flags: i32,
    control: &[u8],
) -> Result<Send, Errno> {
    let cfg = config();
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
            connect_with(&cfg, fd, st, dest, "sendto(MSG_FASTOPEN)")?;
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

/// The reply to `dest` goes back the way its last datagram came in.
fn reflect_tag(cfg: &Config, fd: i32, dest: SocketAddr, control: &[u8]) -> Result<Send, Errno> {
    let tag = match peers::lookup(fd, dest) {
        // It came in without an SA: so does the reply.
        Some(Seen::Mark(0)) | Some(Seen::Saref(0)) => return Ok(Send::Plain),
        Some(Seen::Mark(m)) => {
            if let Err(e) = mark_cmsg_supported(cfg) {
                mark_refused(cfg, e)?;
                return Ok(Send::Plain);
            }
            Tag::mark(m)
        }
        Some(Seen::Saref(s)) => Tag::refinfo(cfg.opts, s),
        None => {
            refuse(cfg, Cause::ReflectUnknown, libc::EHOSTUNREACH, || {
                format!("reflect: no datagram from {dest} was seen on this socket, so the SA to reply through is unknown")
            })?;
            return Ok(Send::Plain);
        }
    };
    if tag.present_in(control) {
        return Ok(Send::Plain);
    }
    Ok(Send::Tag(tag))
}

/// The cmsg for one datagram, unless the application already chose.
fn datagram_tag(
    cfg: &Config,
    fd: i32,
    st: FdState,
    steer: Steer,
    ip: IpAddr,
    control: &[u8],
) -> Result<Send, Errno> {
    let tag = match steer {
        Steer::Saref(s) => {
            if st.app_bindref() {
                return Ok(Send::Plain);
            }
            if pure_ipv6(ip) {
                refuse(cfg, Cause::Ipv6Saref, libc::EAFNOSUPPORT, || {
                    format!("SAref {s} cannot steer IPv6 traffic: KLIPS SArefs are IPv4 only (use a mark or dev rule)")
                })?;
                return Ok(Send::Plain);
            }
            if let Err(e) = saref_supported(cfg, SarefOpt::Refinfo) {
                refuse(cfg, Cause::NoRefinfo, e, || {
                    format!(
                        "this kernel has no SAref support (IP_IPSEC_REFINFO={}): it needs the Openswan SAref patches; LDSAREF_MODE=nfmark steers with SO_MARK instead",
                        cfg.opts.refinfo
                    )
                })?;
                return Ok(Send::Plain);
            }
            Tag::refinfo(cfg.opts, s.get())
        }
        Steer::Mark { value, mask } => {
            if st.app_mark() {
                return Ok(Send::Plain);
            }
            if let Err(e) = mark_cmsg_supported(cfg) {
                mark_refused(cfg, e)?;
                return Ok(Send::Plain);
            }
            let mark = if mask == u32::MAX {
                value
            } else {
                match sys::get_int(fd, SOL_SOCKET, SO_MARK) {
                    Ok(cur) => merge_mark(cur as u32, value, mask),
                    Err(e) => {
                        mark_refused(cfg, e)?;
                        return Ok(Send::Plain);
                    }
                }
            };
            Tag::mark(mark)
        }
        Steer::Dev(name) => {
            if st.app_dev() {
                return Ok(Send::Plain);
            }
            match sys::if_index(name.as_bytes()) {
                Ok(i) if pure_ipv6(ip) => Tag::pktinfo_v6(i),
                Ok(i) => Tag::pktinfo_v4(i),
                Err(e) => {
                    dev_refused(cfg, e, name.as_str())?;
                    return Ok(Send::Plain);
                }
            }
        }
    };
    if tag.present_in(control) {
        return Ok(Send::Plain);
    }
    Ok(Send::Tag(tag))
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

// ---------------------------------------------------------------------
// reflect: learning the SA of received datagrams.

/// The receive cmsg that carries the SA of a datagram, on a socket where
/// the library asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMode {
    pub level: i32,
    pub ty: i32,
    /// Remove it before the application sees it (it did not ask for it).
    pub strip: bool,
    saref: bool,
}

/// Asks the kernel to report the SA of every datagram: REFINFO where the
/// kernel has SArefs and the mode is klips, else the mark (`SO_RCVMARK`).
fn enable_reflect(fd: i32, st: FdState, cfg: &Config) -> FdState {
    let saref = cfg.mode == ldsaref_rules::settings::Mode::Klips
        && saref_supported(cfg, SarefOpt::Refinfo).is_ok();
    let r = if saref {
        sys::set_int(fd, SOL_IP, cfg.opts.refinfo, 1)
    } else {
        sys::set_int(fd, SOL_SOCKET, SO_RCVMARK, 1)
    };
    match r {
        Ok(()) => st.with_reflect(saref),
        Err(e) => {
            // Replies will then find no peer and be refused (fail) or sent
            // unsteered (warn), with their own log line.
            if logging::once(Cause::ReflectSetup) {
                log::error!(
                    "reflect: cannot ask the kernel for the SA of received datagrams ({}): {}",
                    if saref {
                        "IP_IPSEC_REFINFO"
                    } else {
                        "SO_RCVMARK"
                    },
                    logging::errno_text(e)
                );
            }
            st
        }
    }
}

/// For `recvfrom`/`recvmsg`/`recvmmsg`: whether this socket reports the SA
/// of its datagrams, and in which cmsg. One table load for every socket
/// that is not a datagram socket of a process with `reflect` rules.
pub fn recv_mode(fd: i32) -> Option<RecvMode> {
    let st = fdtable::get(fd);
    if st.is_known() && (st.kind() != Kind::Dgram || st.family() == Family::Other) {
        return None;
    }
    if st.is_known() && st.reflect() {
        return Some(mode_of(st, &config()));
    }
    let cfg = config();
    if !cfg.reflect {
        return None;
    }
    let st = state(fd)?;
    if st.kind() != Kind::Dgram || st.family() == Family::Other {
        return None;
    }
    let st = enable_reflect(fd, st, &cfg);
    fdtable::set(fd, st);
    st.reflect().then(|| mode_of(st, &cfg))
}

fn mode_of(st: FdState, cfg: &Config) -> RecvMode {
    if st.reflect_saref() {
        RecvMode {
            level: SOL_IP,
            ty: cfg.opts.refinfo,
            strip: !st.app_rcv(),
            saref: true,
        }
    } else {
        RecvMode {
            level: SOL_SOCKET,
            ty: SO_MARK,
            strip: !st.app_rcv(),
            saref: false,
        }
    }
}

/// After a datagram from `peer` arrived with `data` as the payload of the
/// mode's cmsg (`None`: no such cmsg, it came in without an SA).
pub fn on_received(fd: i32, peer: SocketAddr, mode: RecvMode, data: Option<&[u8]>) {
    let word = |i: usize| -> u32 {
        data.and_then(|d| d.get(i * 4..i * 4 + 4))
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_ne_bytes)
    };
    let seen = if mode.saref {
        // REFINFO receive payload: refme, refhim; replies use refhim.
        Seen::Saref((word(1) & 0x7fff) as u16)
    } else {
        Seen::Mark(word(0))
    };
    log::trace!("fd={fd} received from {peer}: {seen:?}");
    peers::record(fd, peer, seen);
}

/// The socket is being closed: forget what it learned.
pub fn on_close(fd: i32) {
    let st = fdtable::get(fd);
    fdtable::clear(fd);
    if st.reflect() {
        peers::forget(fd);
    }
}
