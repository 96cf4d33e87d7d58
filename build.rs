//! Link options for the release binary that `.cargo/config.toml` cannot
//! scope: its rustflags reach every artifact, the test harnesses among them,
//! and those unwind to report a failing test.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=release.ld");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let musl = env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|e| e == "musl");
    if !(release && musl) {
        return;
    }
    // Only bins (not tests or examples). `cargo test --release` would also
    // link the binary's own unit tests this way: a failing one there aborts
    // instead of reporting, since its unwind tables are gone.
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    println!("cargo:rustc-link-arg-bins=-T{dir}/release.ld");
}
