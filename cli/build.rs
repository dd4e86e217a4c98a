//! Lays out the release `kolokol` binary's code by use: the linker places the functions a running
//! daemon executes (`symbol-order/kolokol.txt`, written by `symbol-order/collect.py`) first and
//! together.
//!
//! Why: Linux maps a binary's code 64 KiB around every page a process touches (fault-around), so
//! a daemon that runs a few thousand functions spread over 14 MB of code has nearly all of it
//! resident. Laid out together they are about 5 MB, and a daemon's resident size falls by the
//! rest (docs/BENCHMARKS.md, "Code laid out by use"). Nothing else changes: the same functions,
//! compiled the same way, at other addresses; a name the list has and the binary lacks (after a
//! dependency or toolchain upgrade) is skipped by the linker, and its function stays where it
//! would have been.
//!
//! Only where the linker is known to be LLD, which reads the list: release builds for
//! x86_64-unknown-linux-gnu with Rust 1.90 or later (whose default linker there is LLD) and no
//! linker chosen in the configuration. Elsewhere, or with `KOLOKOL_SYMBOL_ORDER=off`, the binary
//! is linked as before.

use std::path::Path;
use std::process::Command;

/// The first Rust release that links x86_64-unknown-linux-gnu with LLD by default.
const FIRST_RUST_WITH_LLD: u32 = 90;

fn main() {
    let list = Path::new(&env("CARGO_MANIFEST_DIR")).join("symbol-order/kolokol.txt");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", list.display());
    println!("cargo:rerun-if-env-changed=KOLOKOL_SYMBOL_ORDER");

    if !wanted(&list) {
        return;
    }
    println!("cargo:rustc-link-arg-bin=kolokol=-Wl,--symbol-ordering-file={}", list.display());
    // A stale name is expected after an upgrade and harmless; thousands of warnings are not.
    println!("cargo:rustc-link-arg-bin=kolokol=-Wl,--no-warn-symbol-ordering");
}

/// Whether the linker is known to read the list, and the list is there.
fn wanted(list: &Path) -> bool {
    if std::env::var("KOLOKOL_SYMBOL_ORDER").as_deref() == Ok("off") || env("PROFILE") != "release"
    {
        return false;
    }
    // LLD is the default linker of this target only, and from Rust 1.90 on.
    if env("TARGET") != "x86_64-unknown-linux-gnu"
        || rust_minor().is_none_or(|minor| minor < FIRST_RUST_WITH_LLD)
    {
        return false;
    }
    // A linker of the user's own (`target.<triple>.linker`, `-C linker=`, `-fuse-ld=`,
    // `-C linker-features=`) may not read it.
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if std::env::var_os("RUSTC_LINKER").is_some()
        || flags.contains("linker")
        || flags.contains("fuse-ld")
    {
        return false;
    }
    list.is_file()
}

/// The minor version of the compiler building this crate (90 for 1.90.0).
fn rust_minor() -> Option<u32> {
    let output = Command::new(env("RUSTC")).arg("--version").output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let version = text.split_whitespace().nth(1)?;
    let mut parts = version.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}

/// A variable Cargo always sets for a build script.
fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}
