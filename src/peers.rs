//! For `reflect`: which SA each peer's last datagram came in on, per
//! socket, so the reply can go back through it.
//!
//! A fixed table (no allocation, ever): 4096 entries in 512 sets of 8,
//! least recently used evicted first within a set. Each entry is guarded
//! by its own version counter (a seqlock written with a non-blocking
//! try-lock), so readers never wait and no lock can be inherited held
//! across `fork`: a writer that loses a race simply skips the update and
//! the peer's next datagram records it. Closing a socket forgets its peers.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Entries in the table; see the module doc.
pub const CAPACITY: usize = SETS * WAYS;
const SETS: usize = 512;
const WAYS: usize = 8;

/// What the last datagram from a peer came in with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Its `SO_MARK` (0: none).
    Mark(u32),
    /// Its REFINFO `refhim` (0: none).
    Saref(u16),
}

impl Seen {
    fn pack(self) -> u64 {
        match self {
            Seen::Mark(m) => u64::from(m),
            Seen::Saref(s) => (1 << 32) | u64::from(s),
        }
    }

    fn unpack(v: u64) -> Seen {
        if v & (1 << 32) != 0 {
            Seen::Saref(v as u16)
        } else {
            Seen::Mark(v as u32)
        }
    }
}

struct Slot {
    /// Even: stable; odd: being written. 0: never used.
    version: AtomicU32,
    /// Last use, for eviction.
    stamp: AtomicU32,
    /// `fd << 32 | port << 16 | 4 or 6`.
    key: AtomicU64,
    addr_hi: AtomicU64,
    addr_lo: AtomicU64,
    seen: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    version: AtomicU32::new(0),
    stamp: AtomicU32::new(0),
    key: AtomicU64::new(0),
    addr_hi: AtomicU64::new(0),
    addr_lo: AtomicU64::new(0),
    seen: AtomicU64::new(0),
};

static TABLE: [Slot; CAPACITY] = [EMPTY; CAPACITY];
static CLOCK: AtomicU32 = AtomicU32::new(1);

#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    head: u64,
    hi: u64,
    lo: u64,
}

fn key(fd: i32, peer: SocketAddr) -> Key {
    let (fam, bytes) = match peer.ip().to_canonical() {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[12..].copy_from_slice(&a.octets());
            (4u64, b)
        }
        IpAddr::V6(a) => (6u64, a.octets()),
    };
    Key {
        head: (u64::from(fd as u32) << 32) | (u64::from(peer.port()) << 16) | fam,
        hi: u64::from_ne_bytes(bytes[..8].try_into().unwrap_or_default()),
        lo: u64::from_ne_bytes(bytes[8..].try_into().unwrap_or_default()),
    }
}

fn set_of(k: &Key) -> &'static [Slot] {
    // A cheap mix; the table is not exposed to hash flooding beyond one
    // socket's own peers evicting each other.
    let h =
        (k.head ^ k.hi.rotate_left(17) ^ k.lo.rotate_left(41)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let s = (h >> 55) as usize % SETS;
    &TABLE[s * WAYS..(s + 1) * WAYS]
}

/// Reads a slot consistently, or `None` if it is being written.
fn read(slot: &Slot) -> Option<(Key, u64)> {
    let v1 = slot.version.load(Ordering::Acquire);
    if v1 == 0 || v1 & 1 == 1 {
        return None;
    }
    let k = Key {
        head: slot.key.load(Ordering::Relaxed),
        hi: slot.addr_hi.load(Ordering::Relaxed),
        lo: slot.addr_lo.load(Ordering::Relaxed),
    };
    let seen = slot.seen.load(Ordering::Relaxed);
    std::sync::atomic::fence(Ordering::Acquire);
    (slot.version.load(Ordering::Relaxed) == v1).then_some((k, seen))
}

/// The SA `peer`'s last datagram on `fd` came in with.
pub fn lookup(fd: i32, peer: SocketAddr) -> Option<Seen> {
    let k = key(fd, peer);
    for slot in set_of(&k) {
        if let Some((sk, seen)) = read(slot) {
            if sk == k {
                slot.stamp
                    .store(CLOCK.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
                return Some(Seen::unpack(seen));
            }
        }
    }
    None
}

/// Records what `peer`'s datagram on `fd` came in with.
pub fn record(fd: i32, peer: SocketAddr, seen: Seen) {
    let k = key(fd, peer);
    let set = set_of(&k);
    let victim = set
        .iter()
        .find(|s| read(s).is_some_and(|(sk, _)| sk == k))
        .unwrap_or_else(|| {
            set.iter()
                .min_by_key(|s| {
                    if s.version.load(Ordering::Relaxed) == 0 {
                        0
                    } else {
                        s.stamp.load(Ordering::Relaxed).max(1)
                    }
                })
                .unwrap_or(&set[0])
        });
    write(victim, Some((k, seen)));
}

/// Writes (or clears) a slot if no one else is writing it.
fn write(slot: &Slot, entry: Option<(Key, Seen)>) {
    let v = slot.version.load(Ordering::Relaxed);
    if v & 1 == 1
        || slot
            .version
            .compare_exchange(v, v | 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    match entry {
        Some((k, seen)) => {
            slot.key.store(k.head, Ordering::Relaxed);
            slot.addr_hi.store(k.hi, Ordering::Relaxed);
            slot.addr_lo.store(k.lo, Ordering::Relaxed);
            slot.seen.store(seen.pack(), Ordering::Relaxed);
            slot.stamp
                .store(CLOCK.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
            slot.version
                .store((v | 1).wrapping_add(1).max(2), Ordering::Release);
        }
        None => {
            slot.key.store(0, Ordering::Relaxed);
            slot.stamp.store(0, Ordering::Relaxed);
            // Back to "never used".
            slot.version.store(0, Ordering::Release);
        }
    }
}

/// Forgets every peer of `fd` (closed).
pub fn forget(fd: i32) {
    let want = u64::from(fd as u32);
    for slot in TABLE.iter() {
        if let Some((k, _)) = read(slot) {
            if k.head >> 32 == want {
                write(slot, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(i: u32) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0000 + i)), 5000)
    }

    #[test]
    fn remembers_per_socket_and_peer() {
        record(900, peer(1), Seen::Mark(0x8065_0000));
        record(900, peer(2), Seen::Saref(202));
        record(901, peer(1), Seen::Mark(7));
        assert_eq!(lookup(900, peer(1)), Some(Seen::Mark(0x8065_0000)));
        assert_eq!(lookup(900, peer(2)), Some(Seen::Saref(202)));
        assert_eq!(lookup(901, peer(1)), Some(Seen::Mark(7)));
        assert_eq!(lookup(902, peer(1)), None);
        record(900, peer(1), Seen::Mark(0x80ca_0000));
        assert_eq!(lookup(900, peer(1)), Some(Seen::Mark(0x80ca_0000)));
        forget(900);
        assert_eq!(lookup(900, peer(1)), None);
        assert_eq!(lookup(901, peer(1)), Some(Seen::Mark(7)));
    }

    #[test]
    fn v4_mapped_peers_are_the_same_peer() {
        let mapped: SocketAddr = "[::ffff:198.18.0.9]:5000".parse().unwrap();
        let plain: SocketAddr = "198.18.0.9:5000".parse().unwrap();
        record(903, mapped, Seen::Saref(5));
        assert_eq!(lookup(903, plain), Some(Seen::Saref(5)));
    }

    #[test]
    fn bounded_least_recently_used() {
        for i in 0..(CAPACITY as u32 * 2) {
            record(904, peer(1000 + i), Seen::Mark(i));
        }
        let kept = (0..(CAPACITY as u32 * 2))
            .filter(|i| lookup(904, peer(1000 + i)).is_some())
            .count();
        assert!(kept <= CAPACITY, "{kept}");
        // The most recent peer is always there.
        let last = CAPACITY as u32 * 2 - 1;
        assert_eq!(lookup(904, peer(1000 + last)), Some(Seen::Mark(last)));
    }
}
