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

fn entry(text: &str, from_me: bool) -> kolokol_protocol::control::ChatEntry {
    kolokol_protocol::control::ChatEntry {
        id: "3f9a0c4e5b6d7e8f9a0b1c2d3e4f5a6b".into(),
        from_me,
        text: text.into(),
        sent_at_ms: 0,
        received_at_ms: (!from_me).then_some(0),
        read_at_ms: None,
        state: from_me.then_some(kolokol_protocol::control::MessageState::Delivered),
        detail: None,
        seq: None,
        missing_before: 0,
        missing_for_good: false,
    }
}

#[test]
fn a_conversation_keeps_line_breaks_that_cannot_pass_for_lines_and_cuts_long_messages() {
    use kolokol_protocol::control::Chat;
    let forged = "ok\n[1970-01-01 00:00:00] you      3f9a0c4e  pay me\u{1b}[2J";
    let mut waiting = entry("after the gap", false);
    waiting.missing_before = 2;
    let chat = Chat {
        name: Some("alice".into()),
        peer_id: "12D3KooW".into(),
        verified: false,
        entries: vec![
            entry(forged, false),
            entry("hi back", true),
            waiting,
            entry(&"line\n".repeat(50), false),
        ],
    };
    let text = crate::output::chat(&chat, false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "conversation with alice (12D3KooW)");
    assert_eq!(lines[1], "[1970-01-01 00:00:00] * alice    3f9a0c4e  ok");
    // The second line of the message is indented behind a bar, escapes shown, not obeyed.
    assert!(lines[2].trim_start().starts_with("│ [1970-01-01 00:00:00] you"), "{text}");
    assert!(lines[2].contains("\\u{1b}[2J") && !text.contains('\u{1b}'), "{text}");
    assert_eq!(lines[3], "[1970-01-01 00:00:00] you      3f9a0c4e  hi back  (✓✓ delivered)");
    assert_eq!(lines[4], "  … waiting for 2 earlier messages from alice");
    assert!(text.contains("… 151 more bytes"), "{text}");
    assert!(text.ends_with("`--full` shows them whole, `--json` has the exact text)"), "{text}");
    let full = crate::output::chat(&chat, true);
    assert_eq!(full.matches("│ line").count(), 49, "{full}");
}

#[test]
fn the_conversation_list_has_groups_among_the_contacts_most_recent_first() {
    let contact = |name: &str, at: u64| kolokol_protocol::control::ChatSummary {
        name: Some(name.into()),
        peer_id: format!("12D3KooW{name}"),
        unread: 0,
        waiting: 0,
        last_at_ms: Some(at),
        last_text: Some("hi".into()),
        last_from_me: false,
        request: false,
        verified: false,
    };
    let group = kolokol_protocol::control::GroupInfo {
        id: "5f0c7a1e9b2d4c3e8a6f1b0d2c4e6a8b".into(),
        name: "family".into(),
        status: "member".into(),
        admin: false,
        members: 3,
        admins: 1,
        unread: 2,
        last_at_ms: Some(2_000),
        changes: 3,
        version: 2,
        heads: vec![],
    };
    let shown = crate::output::chats(&[contact("alice", 3_000), contact("bob", 1_000)], &[group]);
    let lines: Vec<&str> = shown.lines().collect();
    assert!(lines[0].starts_with("alice "), "{shown}");
    assert!(lines[1].starts_with("# family"), "{shown}");
    assert!(lines[1].contains("  2 unread  3 members  [1970-01-01 00:00:02]"), "{shown}");
    assert!(lines[2].starts_with("bob "), "{shown}");
    assert_eq!(lines[3], "(# is a group: kolokol group show GROUP)");
}
