//! The chat screen on ratatui's test backend: what it draws for given states, and what keys
//! and daemon events do to it.

use kolokol_protocol::control::{Chat, ChatEntry, ChatSummary, Event, MessageState, StateChange};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::chat::{Action, App, status_line};

fn summary(name: &str, unread: u32) -> ChatSummary {
    ChatSummary {
        name: Some(name.into()),
        peer_id: format!("12D3KooW{name}"),
        unread,
        waiting: 0,
        last_at_ms: Some(0),
        last_text: Some("hello".into()),
        last_from_me: false,
        request: false,
        verified: false,
    }
}

fn entry(id: &str, text: &str, from_me: bool, state: Option<MessageState>) -> ChatEntry {
    ChatEntry {
        id: format!("{id:0<32}"),
        from_me,
        text: text.into(),
        sent_at_ms: 0,
        received_at_ms: (!from_me).then_some(0),
        read_at_ms: None,
        state,
        detail: None,
        seq: None,
        missing_before: 0,
        missing_for_good: false,
    }
}

fn app() -> App {
    App {
        chats: vec![summary("alice", 2), summary("bob", 0)],
        selected: 0,
        open: Some(Chat {
            name: Some("alice".into()),
            peer_id: "12D3KooWalice".into(),
            entries: vec![
                entry("a1", "hi bob\nsecond line", false, None),
                entry("b1", "hello alice", true, Some(MessageState::Sent)),
            ],
            verified: true,
        }),
        compose: "typing".into(),
        status: "reachable through 1 relay · 2 peers connected".into(),
        notice: None,
    }
}

/// The screen as text, one string per row.
fn screen(app: &App) -> Vec<String> {
    let mut terminal = Terminal::new(TestBackend::new(100, 16)).expect("terminal");
    terminal.draw(|frame| app.render(frame)).expect("drawn");
    let buffer = terminal.backend().buffer().clone();
    (0..buffer.area.height)
        .map(|y| (0..buffer.area.width).map(|x| buffer[(x, y)].symbol().to_owned()).collect())
        .collect()
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

#[test]
fn the_screen_shows_the_list_the_open_conversation_the_compose_line_and_the_status() {
    let rows = screen(&app());
    let all = rows.join("\n");
    assert!(rows[1].contains("> alice (2)"), "{all}");
    assert!(rows[2].contains("bob") && !rows[2].contains("bob ("), "{all}");
    assert!(rows[0].contains("alice ✓ verified"), "{all}");
    assert!(all.contains("alice: hi bob"), "{all}");
    assert!(all.contains("│ second line"), "{all}");
    assert!(all.contains("you: hello alice  ✓ sent"), "{all}");
    assert!(rows[13].contains("typing"), "{all}");
    assert!(rows[15].starts_with("reachable through 1 relay · 2 peers connected"), "{all}");
}

#[test]
fn a_state_event_updates_the_ticks_live() {
    let mut app = app();
    let change = StateChange {
        id: format!("{:0<32}", "b1"),
        to: "alice".into(),
        state: MessageState::Read,
        detail: None,
        at_ms: 5,
    };
    assert_eq!(app.event(&Event::State(change)), Action::None);
    assert!(screen(&app).join("\n").contains("you: hello alice  ✓✓ read"));
    // A message, or a state of a message not on the screen, asks for a reload.
    let other = StateChange {
        id: "f".repeat(32),
        to: "bob".into(),
        state: MessageState::Delivered,
        detail: None,
        at_ms: 6,
    };
    assert_eq!(app.event(&Event::State(other)), Action::Refresh);
    assert_eq!(app.event(&Event::Lagged { missed: 3 }), Action::Refresh);
}

#[test]
fn keys_type_send_select_open_and_quit() {
    let mut app = app();
    app.compose.clear();
    for c in "see you".chars() {
        assert_eq!(app.key(key(KeyCode::Char(c))), Action::None);
    }
    app.key(key(KeyCode::Backspace));
    assert_eq!(
        app.key(key(KeyCode::Enter)),
        Action::Send { to: "alice".into(), text: "see yo".into() }
    );
    assert!(app.compose.is_empty());
    // With nothing typed, arrows select and Enter opens.
    app.key(key(KeyCode::Down));
    app.key(key(KeyCode::Down));
    assert_eq!(app.selected, 1, "stays on the last one");
    assert_eq!(app.key(key(KeyCode::Enter)), Action::Open("bob".into()));
    // Esc clears what is typed, then quits; Ctrl-C quits at once.
    app.key(key(KeyCode::Char('x')));
    assert_eq!(app.key(key(KeyCode::Esc)), Action::None);
    assert_eq!(app.key(key(KeyCode::Esc)), Action::Quit);
    assert_eq!(app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Action::Quit);
}

#[test]
fn a_request_cannot_be_answered_before_it_is_accepted() {
    let mut app = app();
    if let Some(open) = &mut app.open {
        open.name = None;
    }
    app.compose = "hi".into();
    assert_eq!(app.key(key(KeyCode::Enter)), Action::None);
    assert!(app.notice.as_deref().is_some_and(|n| n.contains("contacts accept")));
    assert!(screen(&app)[15].starts_with("not a contact"));
}

#[test]
fn a_reloaded_list_keeps_the_selection_on_the_same_peer() {
    let mut app = app();
    app.selected = 1;
    app.set_chats(vec![summary("carol", 1), summary("alice", 0), summary("bob", 0)]);
    assert_eq!(app.chats[app.selected].name.as_deref(), Some("bob"));
    app.set_chats(vec![]);
    assert_eq!(app.selected, 0);
}

#[test]
fn the_status_line_says_how_the_node_is_connected() {
    let status: kolokol_protocol::control::Status = serde_json::from_value(serde_json::json!({
        "peer_id": "12D3KooW", "role": "node", "listen_addresses": [], "external_addresses": [],
        "relay_reservations": ["12D3KooWrelay"], "connected_peers": 3, "routing_table_size": 1,
        "queued_messages": 1, "stored_messages": 2, "reachability": "relayed"
    }))
    .expect("a status");
    assert_eq!(
        status_line(&status),
        "reachable through 1 relay · 3 peers connected · 1 queued, 2 in mailboxes"
    );
}
