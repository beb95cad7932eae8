//! What the kernel supports, asked once per process (and ABI) on a
//! throw-away socket, never guessed from each failed packet.

use std::sync::atomic::{AtomicI32, Ordering};

use ldsaref_kernel::probe;
use ldsaref_rules::settings::KlipsAbi;

use crate::config::Config;
use crate::sys::{Errno, NextCalls};
/// 0: not asked yet; -1: supported; > 0: the errno the kernel answered.
static SAREF_PROBE: [[AtomicI32; 2]; 2] = [
    [AtomicI32::new(0), AtomicI32::new(0)],
    [AtomicI32::new(0), AtomicI32::new(0)],
];
static MARK_PROBE: AtomicI32 = AtomicI32::new(0);

#[derive(Clone, Copy)]
pub(super) enum SarefOpt {
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

pub(super) fn saref_supported(cfg: &Config, which: SarefOpt) -> Result<(), Errno> {
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

pub(super) fn mark_cmsg_supported(cfg: &Config) -> Result<(), Errno> {
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
