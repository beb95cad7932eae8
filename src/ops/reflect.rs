//! `reflect`: learning the SA each peer's datagrams come in on, and
//! replying through it.

use std::net::SocketAddr;

use ldsaref_kernel::cmsg::Tag;
use ldsaref_kernel::opts::{SOL_IP, SOL_SOCKET, SO_MARK, SO_RCVMARK};

use super::steer::mark_refused;
use super::support::{mark_cmsg_supported, saref_supported, SarefOpt};
use super::{config, refuse, state, Send};
use crate::config::Config;
use crate::fdtable::{self, Family, FdState, Kind};
use crate::logging::{self, Cause};
use crate::peers::{self, Seen};
use crate::sys::{self, Errno};

/// The reply to `dest` goes back the way its last datagram came in.
pub(super) fn reflect_tag(
    cfg: &Config,
    fd: i32,
    dest: SocketAddr,
    control: &[u8],
) -> Result<Send, Errno> {
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
pub(super) fn enable_reflect(fd: i32, st: FdState, cfg: &Config) -> FdState {
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
    // Without `reflect` rules, a datagram socket's receives cost a look at
    // the snapshot word, not a load of the configuration.
    if !crate::config::snapshot().reflect() {
        return None;
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
