//! The last datagram decision of each thread, reused while nothing it
//! depends on has changed: a program sending datagram after datagram to
//! the same peer pays one table load and a compare instead of a rule
//! lookup.
//!
//! A decision depends on the configuration (its generation), the socket's
//! state word (family, type, what the application or the library set) and
//! the destination. Only decisions that depend on nothing else are kept:
//! no rule or `pass`, and the cmsg of a `saref` or full-mask `mark` rule
//! for a datagram without control data of the application's. Masked marks
//! (read the socket's mark), `dev` (an interface index can change),
//! `reflect` (the peer table), refusals and errors are decided every time,
//! and nothing is reused while the debug log wants one line per decision.

use std::cell::Cell;
use std::net::SocketAddr;

use super::Send;
use crate::fdtable::FdState;

#[derive(Clone, Copy)]
struct Entry {
    generation: u64,
    fd: i32,
    state: FdState,
    dest: SocketAddr,
    send: Send,
}

thread_local! {
    // Const-initialised and `Copy`: no destructor to register, no
    // allocation, usable until the thread is gone.
    static LAST: Cell<Option<Entry>> = const { Cell::new(None) };
}

/// The decision filed for exactly this generation, socket state and
/// destination, if any.
pub(super) fn get(generation: u64, fd: i32, state: FdState, dest: SocketAddr) -> Option<Send> {
    let e = LAST.try_with(Cell::get).ok().flatten()?;
    (e.generation == generation && e.fd == fd && e.state == state && e.dest == dest)
        .then_some(e.send)
}

/// Files a decision (see the module doc for which ones may be).
pub(super) fn put(generation: u64, fd: i32, state: FdState, dest: SocketAddr, send: Send) {
    let _ = LAST.try_with(|c| {
        c.set(Some(Entry {
            generation,
            fd,
            state,
            dest,
            send,
        }))
    });
}
