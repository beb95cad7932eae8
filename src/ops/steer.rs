//! Telling the kernel which SA a socket or a datagram must use, and
//! undoing what the library set when a later destination needs none.

use std::net::IpAddr;

use ldsaref_kernel::cmsg::Tag;
use ldsaref_kernel::op::Steer;
use ldsaref_kernel::opts::{merge_mark, SOL_IP, SOL_SOCKET, SO_MARK};

use super::support::{mark_cmsg_supported, saref_supported, SarefOpt};
use super::{pure_ipv6, refuse, Send};
use crate::config::Config;
use crate::fdtable::FdState;
use crate::logging::Cause;
use crate::sys::{self, Errno};

pub(super) fn undo_bindref(fd: i32, st: FdState, cfg: &Config) -> FdState {
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

pub(super) fn undo_mark(fd: i32, st: FdState) -> FdState {
    if !st.shim_mark() || st.app_mark() {
        return st;
    }
    if let Err(e) = sys::set_int(fd, SOL_SOCKET, SO_MARK, 0) {
        log::debug!("fd={fd}: clearing SO_MARK failed: errno {e}");
        return st;
    }
    st.with_shim_mark(false)
}

pub(super) fn undo_dev(fd: i32, st: FdState) -> FdState {
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
pub(super) fn undo_all(fd: i32, st: FdState, cfg: &Config) -> FdState {
    undo_dev(fd, undo_mark(fd, undo_bindref(fd, st, cfg)))
}

/// Tells the kernel which SA the socket's traffic must use. Returns the new
/// state; `Err` only when the call must fail.
pub(super) fn apply_socket(
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

pub(super) fn mark_refused(cfg: &Config, e: Errno) -> Result<(), Errno> {
    if e == libc::EPERM {
        refuse(cfg, Cause::MarkDenied, e, || {
            "setting SO_MARK needs CAP_NET_ADMIN (or CAP_NET_RAW on Linux 5.17 and later), which this process does not have".to_string()
        })
    } else {
        refuse(cfg, Cause::MarkFailed, e, || {
            "setting SO_MARK failed".to_string()
        })
    }
}

pub(super) fn dev_refused(cfg: &Config, e: Errno, name: &str) -> Result<(), Errno> {
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

/// The cmsg for one datagram, unless the application already chose.
pub(super) fn datagram_tag(
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
