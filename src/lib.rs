//! `libldsaref.so`: an `LD_PRELOAD` library that puts the traffic of an
//! unmodified program into the IPsec SA the operator chooses.
//!
//! - [`hooks`]: the `extern "C"` symbols, thin and boring;
//! - [`ops`]: what each call must do (policy + fd state + kernel support;
//!   steering, the capability probe, reflect);
//! - [`config`]: environment and rules, loaded once, swapped atomically;
//! - [`fdtable`]: per-descriptor state, one atomic word each;
//! - [`peers`]: for `reflect`, the SA each peer's last datagram came in on;
//! - [`sys`], [`next`], [`addr`], [`errno`]: the thin layer over libc;
//! - [`logging`]: `LDSAREF_LOG`, one line per cause of failure.
//!
//! The rules language and matching live in `ldsaref-rules`, the option
//! numbers and cmsg layouts in `ldsaref-kernel`.

// A cdylib has no Rust API: these docs are for its developers
// (`cargo doc --document-private-items`), and link to private modules.
#![allow(rustdoc::private_intra_doc_links)]

mod addr;
mod config;
mod errno;
mod fdtable;
mod hooks;
mod logging;
mod next;
mod ops;
mod peers;
mod sys;
