//! Recent datagram and connect decisions, reused while nothing they
//! depend on has changed: a program sending datagram after datagram to the
//! same peer, or connecting again and again to the same server, pays a
//! table load and a compare instead of a rule lookup.
//!
//! A decision depends on the configuration (its generation), the socket's
//! state word (family, type, what the application or the library set) and
//! the destination. Only decisions that depend on nothing else are kept:
//! - datagrams: no rule or `pass`, and the cmsg of a `saref` or full-mask
//!   `mark` rule for a datagram without control data of the application's.
//!   Masked marks (read the socket's mark), `dev` (an interface index can
//!   change), `reflect` (the peer table), refusals and errors are decided
//!   every time;
//! - connects: only "nothing to apply" (no rule, `pass`, `reflect`) on a
//!   socket the library has put nothing on, which is then left alone.
//!
//! Nothing is reused while the debug log wants one line per decision.
//!
//! The entries are in two small process-wide tables: the last datagram of
//! each socket (by descriptor number) and recent connects (by
//! destination). Not thread-locals: in a shared library those go through
//! `__tls_get_addr`, whose instructions and cache lines (the thread's
//! vector, the loader's generation count) cost as much as the lookup, and
//! the kernel's work between two calls leaves every line cold. An entry is
//! one cache line; a datagram's cmsg, already encoded so that a hit hands
//! the kernel a copy of a few words, sits in a line of its own.
//!
//! Each entry is a sequence lock: a sequence number, odd while the entry
//! is written, that a lookup reads before and after the entry and a writer
//! takes with a compare-and-swap. A lookup that meets a write (another
//! thread's, or a signal handler's that interrupted it) misses; a writer
//! that meets one (including the one a signal handler interrupted) files
//! nothing. Nobody waits, so nothing can deadlock, in a signal handler or
//! after `fork`; a child forked in the middle of another thread's write
//! keeps that one entry odd and misses on it for good, which costs it a
//! rule lookup per call on that socket number, nothing else. Every field
//! is an atomic: reading one while another thread writes it is no data
//! race.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{fence, AtomicI32, AtomicU32, AtomicU64};

use ldsaref_kernel::cmsg::{self, Tag};

use super::Send;
use crate::addr::Key;
use crate::fdtable::FdState;

/// Words of an encoded cmsg: `CMSG_SPACE(20)` (an `in6_pktinfo`, the
/// largest payload a [`Tag`] holds) is 40 bytes.
pub const CONTROL_WORDS: usize = 5;

/// A remembered datagram decision, as a hook applies it.
#[derive(Clone, Copy)]
pub enum Hit {
    /// Send as the application asked.
    Plain,
    /// Send with this control data (`len` bytes) in place of none.
    Control(Control),
}

/// An encoded cmsg, aligned for the kernel.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct Control {
    pub words: [u64; CONTROL_WORDS],
    pub len: usize,
}

impl Control {
    /// `tag` alone, encoded.
    pub fn of(tag: Tag) -> Control {
        let (bytes, len) = tag.encode();
        let mut words = [0u64; CONTROL_WORDS];
        for (w, b) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            *w = u64::from_ne_bytes(a);
        }
        Control { words, len }
    }

    /// The cmsg as the `Tag` it was encoded from.
    fn tag(&self) -> Option<Tag> {
        let mut bytes = [0u8; CONTROL_WORDS * 8];
        for (b, w) in bytes.chunks_exact_mut(8).zip(self.words) {
            b.copy_from_slice(&w.to_ne_bytes());
        }
        let c = cmsg::iter(bytes.get(..self.len)?).next()?.ok()?;
        Tag::from_parts(c.level, c.ty, c.data)
    }
}

// `Control` holds any tag.
const _: () = assert!(cmsg::TAG_SPACE <= CONTROL_WORDS * 8);

/// Datagram entries, by descriptor number modulo the size.
const DATAGRAMS: usize = 1024;
/// Connect entries, by a hash of the destination.
const CONNECTS: usize = 256;

/// What a datagram lookup compares, in one cache line.
#[repr(C, align(64))]
struct Datagram {
    /// Odd while the entry (and its `CONTROL` line) is being written.
    seq: AtomicU32,
    fd: AtomicI32,
    state: AtomicU32,
    /// 0: [`Hit::Plain`]; else the length of the encoded cmsg in `CONTROL`.
    control_len: AtomicU32,
    generation: AtomicU64,
    key: [AtomicU64; 4],
}

#[repr(C, align(64))]
struct Words([AtomicU64; CONTROL_WORDS]);

#[repr(C, align(64))]
struct Connect {
    /// Odd while the entry is being written.
    seq: AtomicU32,
    state: AtomicU32,
    generation: AtomicU64,
    key: [AtomicU64; 4],
}

// The empty entries have state 0, which no lookup can match (a socket's
// state word has KNOWN set), and generation 0, under which nothing is
// filed. In `.bss`: pages never used cost no memory.
static DATAGRAM: [Datagram; DATAGRAMS] = [const {
    Datagram {
        seq: AtomicU32::new(0),
        fd: AtomicI32::new(-1),
        state: AtomicU32::new(0),
        control_len: AtomicU32::new(0),
        generation: AtomicU64::new(0),
        key: [const { AtomicU64::new(0) }; 4],
    }
}; DATAGRAMS];

static CONTROL: [Words; DATAGRAMS] =
    [const { Words([const { AtomicU64::new(0) }; CONTROL_WORDS]) }; DATAGRAMS];

static CONNECT: [Connect; CONNECTS] = [const {
    Connect {
        seq: AtomicU32::new(0),
        state: AtomicU32::new(0),
        generation: AtomicU64::new(0),
        key: [const { AtomicU64::new(0) }; 4],
    }
}; CONNECTS];

// Each entry is one line.
const _: () = assert!(std::mem::size_of::<Datagram>() == 64);
const _: () = assert!(std::mem::size_of::<Connect>() == 64);

fn datagram_slot(fd: i32) -> usize {
    fd as u32 as usize % DATAGRAMS
}

fn connect_slot(key: Key) -> usize {
    let [a, b, c, d] = key.0;
    let h = (a ^ b.rotate_left(17) ^ c.rotate_left(31) ^ d.rotate_left(47))
        .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 56) as usize % CONNECTS
}

fn key_is(stored: &[AtomicU64; 4], key: Key) -> bool {
    // No short-circuit needed: four loads and compares, no branches.
    (stored[0].load(Relaxed) ^ key.0[0])
        | (stored[1].load(Relaxed) ^ key.0[1])
        | (stored[2].load(Relaxed) ^ key.0[2])
        | (stored[3].load(Relaxed) ^ key.0[3])
        == 0
}

fn store_key(stored: &[AtomicU64; 4], key: Key) {
    for (s, k) in stored.iter().zip(key.0) {
        s.store(k, Relaxed);
    }
}

/// Runs `read` on an entry guarded by `seq`; `None` if it was being
/// written, before or meanwhile.
#[inline(always)]
fn read<T>(seq: &AtomicU32, read: impl FnOnce() -> Option<T>) -> Option<T> {
    let before = seq.load(Acquire);
    if before & 1 != 0 {
        return None;
    }
    let r = read()?;
    // The entry's loads before the second look at the sequence.
    fence(Acquire);
    (seq.load(Relaxed) == before).then_some(r)
}

/// Runs `write` on an entry guarded by `seq`, unless someone else is
/// writing it.
fn write(seq: &AtomicU32, write: impl FnOnce()) {
    let s = seq.load(Relaxed);
    if s & 1 != 0
        || seq
            .compare_exchange(s, s.wrapping_add(1), Acquire, Relaxed)
            .is_err()
    {
        return;
    }
    // The odd sequence before the entry's stores.
    fence(Release);
    write();
    seq.store(s.wrapping_add(2), Release);
}

/// The datagram decision filed for exactly this generation, socket, state
/// and destination, if any.
#[inline]
pub fn datagram(generation: u64, fd: i32, state: FdState, key: Key) -> Option<Hit> {
    let i = datagram_slot(fd);
    let d = &DATAGRAM[i];
    read(&d.seq, || {
        if d.generation.load(Relaxed) != generation
            || d.fd.load(Relaxed) != fd
            || d.state.load(Relaxed) != state.bits()
            || !key_is(&d.key, key)
        {
            return None;
        }
        let len = d.control_len.load(Relaxed) as usize;
        if len == 0 {
            return Some(Hit::Plain);
        }
        let mut c = Control {
            words: [0; CONTROL_WORDS],
            len,
        };
        for (w, s) in c.words.iter_mut().zip(&CONTROL[i].0) {
            *w = s.load(Relaxed);
        }
        Some(Hit::Control(c))
    })
}

/// [`datagram`] for the socket's current state, as the decision path
/// returns it (for `sendmmsg`, message after message).
pub fn send_of(generation: u64, fd: i32, key: Key) -> Option<Send> {
    get(generation, fd, crate::fdtable::get(fd), key)
}

fn get(generation: u64, fd: i32, state: FdState, key: Key) -> Option<Send> {
    match datagram(generation, fd, state, key)? {
        Hit::Plain => Some(Send::Plain),
        Hit::Control(c) => c.tag().map(Send::Tag),
    }
}

/// Files a datagram decision (see the module doc for which ones may be).
pub(super) fn put(generation: u64, fd: i32, state: FdState, key: Key, send: Send) {
    if generation == 0 {
        return;
    }
    let control = match send {
        Send::Tag(tag) => Some(Control::of(tag)),
        Send::Plain => None,
    };
    let i = datagram_slot(fd);
    let d = &DATAGRAM[i];
    write(&d.seq, || {
        d.generation.store(generation, Relaxed);
        d.fd.store(fd, Relaxed);
        d.state.store(state.bits(), Relaxed);
        store_key(&d.key, key);
        match control {
            // The words are only read when the length says so.
            None => d.control_len.store(0, Relaxed),
            Some(c) => {
                d.control_len.store(c.len as u32, Relaxed);
                for (s, w) in CONTROL[i].0.iter().zip(c.words) {
                    s.store(w, Relaxed);
                }
            }
        }
    });
}

/// Whether a connect to `key` from a socket in `state` was found to need
/// nothing under this generation.
#[inline]
pub fn connect_is_plain(generation: u64, state: FdState, key: Key) -> bool {
    let c = &CONNECT[connect_slot(key)];
    read(&c.seq, || {
        (c.generation.load(Relaxed) == generation
            && c.state.load(Relaxed) == state.bits()
            && key_is(&c.key, key))
        .then_some(())
    })
    .is_some()
}

/// Files "a connect to `key` from a socket in `state` needs nothing": the
/// caller checked that the decision was no steering and that `state`
/// carries nothing the library set.
pub(super) fn put_connect_plain(generation: u64, state: FdState, key: Key) {
    if generation == 0 {
        return;
    }
    let c = &CONNECT[connect_slot(key)];
    write(&c.seq, || {
        c.generation.store(generation, Relaxed);
        c.state.store(state.bits(), Relaxed);
        store_key(&c.key, key);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdtable::{Family, Kind};
    use ldsaref_kernel::opts::SarefOpts;
    use ldsaref_rules::settings::KlipsAbi;

    fn key(n: u64) -> Key {
        Key([n, 0, 0, 0])
    }

    #[test]
    fn datagram_roundtrip() {
        let st = FdState::new(Family::Inet4, Kind::Dgram);
        assert!(get(1, 5, st, key(2)).is_none());
        put(1, 5, st, key(2), Send::Plain);
        assert_eq!(get(1, 5, st, key(2)), Some(Send::Plain));
        assert!(get(2, 5, st, key(2)).is_none());
        assert!(get(1, 6, st, key(2)).is_none());
        // Another socket in the same slot.
        assert!(get(1, 5 + DATAGRAMS as i32, st, key(2)).is_none());
        assert!(get(1, 5, st.with_app_mark(), key(2)).is_none());
        assert!(get(1, 5, st, key(3)).is_none());

        for tag in [
            Tag::mark(0x4d),
            Tag::refinfo(SarefOpts::for_abi(KlipsAbi::Current), 101),
            Tag::pktinfo_v6(3),
        ] {
            put(1, 5, st, key(2), Send::Tag(tag));
            assert_eq!(get(1, 5, st, key(2)), Some(Send::Tag(tag)));
            let Some(Hit::Control(c)) = datagram(1, 5, st, key(2)) else {
                panic!("no control");
            };
            let mut expected = [0u8; 64];
            let n = tag.append_to(&mut expected, &[]).unwrap();
            assert_eq!(c.len, n);
            let bytes: Vec<u8> = c.words.iter().flat_map(|w| w.to_ne_bytes()).collect();
            assert_eq!(&bytes[..n], &expected[..n]);
        }
    }

    #[test]
    fn generation_zero_is_never_filed() {
        let st = FdState::new(Family::Inet4, Kind::Stream);
        put(0, 9, st, key(9), Send::Plain);
        assert!(get(0, 9, st, key(9)).is_none());
        put_connect_plain(0, st, key(9));
        assert!(!connect_is_plain(0, st, key(9)));
    }

    #[test]
    fn connect_roundtrip() {
        let st = FdState::new(Family::Inet4, Kind::Stream);
        assert!(!connect_is_plain(3, st, key(4)));
        put_connect_plain(3, st, key(4));
        assert!(connect_is_plain(3, st, key(4)));
        assert!(!connect_is_plain(4, st, key(4)));
        assert!(!connect_is_plain(3, st.with_saref(1), key(4)));
        assert!(!connect_is_plain(3, st, key(5)));
    }

    #[test]
    fn interrupted_write_is_not_read() {
        let st = FdState::new(Family::Inet4, Kind::Dgram);
        let fd = 700;
        let seq = &DATAGRAM[datagram_slot(fd)].seq;
        put(7, fd, st, key(1), Send::Plain);
        // As if a handler ran in the middle of a filing, or another thread
        // were filing: the sequence is odd.
        seq.fetch_add(1, Relaxed);
        assert!(get(7, fd, st, key(1)).is_none());
        put(8, fd, st, key(1), Send::Plain);
        seq.fetch_add(1, Relaxed);
        assert!(get(8, fd, st, key(1)).is_none());
        assert_eq!(get(7, fd, st, key(1)), Some(Send::Plain));
    }

    #[test]
    fn slots_stay_in_range() {
        for fd in [-1, 0, 1023, 1024, i32::MAX, i32::MIN] {
            assert!(datagram_slot(fd) < DATAGRAMS);
        }
        for n in [0, 1, u64::MAX] {
            assert!(connect_slot(Key([n, n, n, n])) < CONNECTS);
        }
    }
}
