//! Gives the library its soname. Rust already exports only the
//! `#[no_mangle]` hooks from a cdylib; `tests/exports.rs` checks that.
fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libldsaref.so");
    println!("cargo:rerun-if-changed=build.rs");
}
