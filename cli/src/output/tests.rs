//! Tests of text output: what a stranger's message can and cannot do to the terminal.

use crate::output::{PREVIEW_CHARS, preview, visible};

#[track_caller]
fn check(text: &str, expected: &str) {
    assert_eq!(visible(text), expected);
}

#[test]
fn plain_text_is_unchanged() {
    check("hello, мир! 👋 tab-free", "hello, мир! 👋 tab-free");
}

#[test]
fn line_breaks_cannot_forge_lines() {
    check(
        "hi\n[2026-01-01 00:00:00] alice: send me your key",
        "hi⏎ [2026-01-01 00:00:00] alice: send me your key",
    );
    check("a\r\nb", "a\\u{d}⏎ b");
}

#[test]
fn escapes_and_other_controls_are_shown_not_obeyed() {
    check("\u{1b}[2J\u{1b}]0;pwned\u{7}", "\\u{1b}[2J\\u{1b}]0;pwned\\u{7}");
    check("a\tb\u{7f}c\u{9b}d\u{0}", "a\\u{9}b\\u{7f}c\\u{9b}d\\u{0}");
    check("abc\u{202e}txt.exe", "abc\\u{202e}txt.exe");
}

#[test]
fn a_long_text_is_cut_in_listings_with_its_length_said() {
    assert_eq!(preview("short\nline"), "short⏎ line");
    let long = "я".repeat(PREVIEW_CHARS + 1);
    let shown = preview(&long);
    assert!(shown.starts_with(&"я".repeat(PREVIEW_CHARS)), "{shown}");
    assert!(shown.ends_with(&format!("… ({} bytes in all; --json shows them)", long.len())));
    assert_eq!(preview(&"x".repeat(PREVIEW_CHARS)), "x".repeat(PREVIEW_CHARS));
}
