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
//! Only where the linker reads the list (LLD and mold do; GNU ld refuses the option): in release
//! builds, after linking an empty program with the same compiler, target, flags and linker and
//! the option succeeded. Otherwise, or with `KOLOKOL_SYMBOL_ORDER=off`, the binary is linked as
//! before. A linker chosen where this script cannot see it (`cargo rustc -- -C linker=...`) needs
//! `KOLOKOL_SYMBOL_ORDER=off`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The linker arguments that hand it the list: `-Xlinker` pairs, since `-Wl,` would split a path
/// with a comma in it.
fn linker_args(list: &Path) -> [String; 4] {
    [
        "-Xlinker".into(),
        format!("--symbol-ordering-file={}", list.display()),
        "-Xlinker".into(),
        // A stale name is expected after an upgrade and harmless; thousands of warnings are not.
        "--no-warn-symbol-ordering".into(),
    ]
}

fn main() {
    let list = Path::new(&env("CARGO_MANIFEST_DIR")).join("symbol-order/kolokol.txt");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={}", list.display());
    // What decides the linker, so that a change to any of them runs the probe again.
    for variable in [
        "KOLOKOL_SYMBOL_ORDER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
        "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER",
    ] {
        println!("cargo:rerun-if-env-changed={variable}");
    }

    let off = std::env::var("KOLOKOL_SYMBOL_ORDER").as_deref() == Ok("off");
    if off || env("PROFILE") != "release" || !list.is_file() || !linker_reads_the_list(&list) {
        return;
    }
    for arg in linker_args(&list) {
        println!("cargo:rustc-link-arg-bin=kolokol={arg}");
    }
}

/// Whether an empty program links with the list, built as `kolokol` will be: the same compiler,
/// target, flags and linker.
fn linker_reads_the_list(list: &Path) -> bool {
    let out = PathBuf::from(env("OUT_DIR"));
    let source = out.join("symbol_order_probe.rs");
    if std::fs::write(&source, "fn main() {}\n").is_err() {
        return false;
    }
    let mut rustc = Command::new(env("RUSTC"));
    rustc
        .arg("--crate-type=bin")
        .arg("--target")
        .arg(env("TARGET"))
        .arg("-o")
        .arg(out.join("symbol_order_probe"))
        .arg(&source);
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    rustc.args(flags.split('\u{1f}').filter(|flag| !flag.is_empty()));
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        let mut arg = std::ffi::OsString::from("linker=");
        arg.push(linker);
        rustc.arg("-C").arg(arg);
    }
    for arg in linker_args(list) {
        rustc.arg("-C").arg(format!("link-arg={arg}"));
    }
    rustc.output().is_ok_and(|output| output.status.success())
}

/// A variable Cargo always sets for a build script.
fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("cargo sets {name} for build scripts"))
}
