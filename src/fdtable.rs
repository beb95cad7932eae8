//! What the library knows about each file descriptor, one atomic word per fd.
//!
//! `write()` is called for every file a program touches, so deciding "is
//! this a UDP socket the library bound to an SAref?" must cost one load,
//! not a syscall. The table lives in `.bss` (untouched pages cost no
//! memory), needs no lock and no allocation, and is kept right by the
//! `socket`/`accept`/`close`/`dup*`/`close_range` hooks. A descriptor the
//! library has not seen is "unknown" and learned with `getsockopt` on first
//! use by a socket call.

use std::sync::atomic::{AtomicU32, Ordering};

/// Descriptors at or above this are never cached (always "unknown").
const SIZE: usize = 1 << 20;

static TABLE: [AtomicU32; SIZE] = [const { AtomicU32::new(0) }; SIZE];
/// One past the highest descriptor ever stored: `close_range(3, ~0)` only
/// needs to clear up to here.
static HIGH: AtomicU32 = AtomicU32::new(0);

/// Address family of a socket, as far as steering cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Inet4,
    Inet6,
    /// Any other family, or not a socket: never touched.
    Other,
}

/// Socket type, as far as steering cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Stream,
    Dgram,
    Other,
}

/// The packed state of one descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdState(u32);

const SAREF_MASK: u32 = 0x7fff;
const F_INET4: u32 = 1 << 15;
const F_INET6: u32 = 1 << 16;
const F_STREAM: u32 = 1 << 17;
const F_DGRAM: u32 = 1 << 18;
/// The application set `IP_IPSEC_BINDREF` itself.
const APP_BINDREF: u32 = 1 << 19;
/// The application set `SO_MARK` itself.
const APP_MARK: u32 = 1 << 20;
/// The application set `SO_BINDTODEVICE` itself.
const APP_DEV: u32 = 1 << 21;
/// The library set `SO_MARK` on this socket.
const SHIM_MARK: u32 = 1 << 22;
/// The library set `SO_BINDTODEVICE` on this socket.
const SHIM_DEV: u32 = 1 << 23;
/// The library asked the kernel for the SA of each received datagram
/// (`reflect`): `SO_RCVMARK`, or `IP_IPSEC_REFINFO` with [`REFLECT_SAREF`].
const REFLECT: u32 = 1 << 24;
const REFLECT_SAREF: u32 = 1 << 25;
/// The application asked for those receive cmsgs itself: do not hide them.
const APP_RCV: u32 = 1 << 26;
const KNOWN: u32 = 1 << 31;

impl FdState {
    /// A freshly learned socket.
    pub fn new(family: Family, kind: Kind) -> FdState {
        let mut v = KNOWN;
        v |= match family {
            Family::Inet4 => F_INET4,
            Family::Inet6 => F_INET6,
            Family::Other => 0,
        };
        v |= match kind {
            Kind::Stream => F_STREAM,
            Kind::Dgram => F_DGRAM,
            Kind::Other => 0,
        };
        FdState(v)
    }

    pub fn is_known(self) -> bool {
        self.0 & KNOWN != 0
    }

    pub fn family(self) -> Family {
        if self.0 & F_INET4 != 0 {
            Family::Inet4
        } else if self.0 & F_INET6 != 0 {
            Family::Inet6
        } else {
            Family::Other
        }
    }

    pub fn kind(self) -> Kind {
        if self.0 & F_STREAM != 0 {
            Kind::Stream
        } else if self.0 & F_DGRAM != 0 {
            Kind::Dgram
        } else {
            Kind::Other
        }
    }

    /// The packed word, for the memo to store and compare.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// The library put nothing on this socket (no SAref, mark or device of
    /// its own): leaving it as the application made it needs no call.
    pub fn untouched(self) -> bool {
        self.0 & (SAREF_MASK | SHIM_MARK | SHIM_DEV) == 0
    }

    /// The SAref the library bound this socket to (0: none).
    pub fn saref(self) -> u16 {
        (self.0 & SAREF_MASK) as u16
    }

    pub fn with_saref(self, saref: u16) -> FdState {
        FdState((self.0 & !SAREF_MASK) | (u32::from(saref) & SAREF_MASK))
    }

    fn flag(self, f: u32) -> bool {
        self.0 & f != 0
    }

    fn with(self, f: u32, on: bool) -> FdState {
        FdState(if on { self.0 | f } else { self.0 & !f })
    }

    pub fn app_bindref(self) -> bool {
        self.flag(APP_BINDREF)
    }
    pub fn app_mark(self) -> bool {
        self.flag(APP_MARK)
    }
    pub fn app_dev(self) -> bool {
        self.flag(APP_DEV)
    }
    pub fn shim_mark(self) -> bool {
        self.flag(SHIM_MARK)
    }
    pub fn shim_dev(self) -> bool {
        self.flag(SHIM_DEV)
    }
    pub fn reflect(self) -> bool {
        self.flag(REFLECT)
    }
    /// With [`FdState::reflect`]: the SA arrives as a REFINFO cmsg, not a mark.
    pub fn reflect_saref(self) -> bool {
        self.flag(REFLECT_SAREF)
    }
    pub fn app_rcv(self) -> bool {
        self.flag(APP_RCV)
    }
    pub fn with_reflect(self, saref: bool) -> FdState {
        self.with(REFLECT, true).with(REFLECT_SAREF, saref)
    }
    pub fn with_app_rcv(self) -> FdState {
        self.with(APP_RCV, true)
    }
    pub fn with_app_bindref(self) -> FdState {
        self.with(APP_BINDREF, true)
    }
    pub fn with_app_mark(self) -> FdState {
        self.with(APP_MARK, true)
    }
    pub fn with_app_dev(self) -> FdState {
        self.with(APP_DEV, true)
    }
    pub fn with_shim_mark(self, on: bool) -> FdState {
        self.with(SHIM_MARK, on)
    }
    pub fn with_shim_dev(self, on: bool) -> FdState {
        self.with(SHIM_DEV, on)
    }
}

fn slot(fd: i32) -> Option<&'static AtomicU32> {
    usize::try_from(fd).ok().and_then(|i| TABLE.get(i))
}

/// The cached state (unknown if never stored or out of range).
pub fn get(fd: i32) -> FdState {
    slot(fd).map_or(FdState(0), |s| FdState(s.load(Ordering::Acquire)))
}

/// Stores the state of `fd` (ignored out of range).
pub fn set(fd: i32, st: FdState) {
    if let Some(s) = slot(fd) {
        s.store(st.0, Ordering::Release);
        // Load first: `fetch_max` is a locked read-modify-write on every
        // new socket, and the mark rarely moves.
        if HIGH.load(Ordering::Relaxed) <= fd as u32 {
            HIGH.fetch_max(fd as u32 + 1, Ordering::Relaxed);
        }
    }
}

/// Forgets `fd`: it was closed, or is now something else.
pub fn clear(fd: i32) {
    if let Some(s) = slot(fd) {
        // Skip the store for descriptors never stored, so closing files
        // does not dirty pages of the table.
        if s.load(Ordering::Relaxed) != 0 {
            s.store(0, Ordering::Release);
        }
    }
}

/// `new` now refers to the same socket as `old` (dup).
pub fn copy(old: i32, new: i32) {
    let st = get(old);
    if st.is_known() {
        set(new, st);
    } else {
        clear(new);
    }
}

/// Forgets `first..=last` (close_range).
pub fn clear_range(first: u32, last: u32) {
    let end = HIGH.load(Ordering::Relaxed).min(last.saturating_add(1));
    for fd in first..end {
        clear(fd as i32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_roundtrip() {
        let s = FdState::new(Family::Inet6, Kind::Dgram).with_saref(32767);
        assert!(s.is_known());
        assert_eq!(s.family(), Family::Inet6);
        assert_eq!(s.kind(), Kind::Dgram);
        assert_eq!(s.saref(), 32767);
        let s = s.with_app_mark().with_shim_dev(true).with_saref(0);
        assert!(s.app_mark() && s.shim_dev() && !s.app_bindref());
        assert_eq!(s.saref(), 0);
        assert_eq!(s.family(), Family::Inet6);
    }

    #[test]
    fn table_bounds() {
        set(-1, FdState::new(Family::Inet4, Kind::Stream));
        assert!(!get(-1).is_known());
        set(SIZE as i32, FdState::new(Family::Inet4, Kind::Stream));
        assert!(!get(SIZE as i32).is_known());
        set(100, FdState::new(Family::Inet4, Kind::Stream));
        copy(100, 101);
        assert!(get(101).is_known());
        clear_range(100, u32::MAX);
        assert!(!get(100).is_known() && !get(101).is_known());
    }
}
