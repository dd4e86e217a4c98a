//! The chat screen on ratatui's test backend: what it draws for given states, and what keys
//! and daemon events do to it, for one-to-one conversations and for groups.

use kolokol_protocol::control::{
    Chat, ChatEntry, ChatSummary, Event, GroupChat, GroupDelivery, GroupEvent, GroupInfo,
    GroupText, MessageState, StateChange,
};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::chat::{Action, App, Conversation, Open, Target, status_line};

fn summary(name: &str, unread: u32) -> ChatSummary {
    summary_at(name, unread, 0)
}

fn summary_at(name: &str, unread: u32, at_ms: u64) -> ChatSummary {
    ChatSummary {
        name: Some(name.into()),
        peer_id: format!("12D3KooW{name}"),
        unread,
        waiting: 0,
        last_at_ms: Some(at_ms),
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
        chats: vec![Conversation::Peer(summary("alice", 2)), Conversation::Peer(summary("bob", 0))],
        selected: 0,
        open: Some(Open::Peer(Chat {
            name: Some("alice".into()),
            peer_id: "12D3KooWalice".into(),
            entries: vec![
                entry("a1", "hi bob\nsecond line", false, None),
                entry("b1", "hello alice", true, Some(MessageState::Sent)),
            ],
            verified: true,
        })),
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
    assert_eq!(app.key(key(KeyCode::Enter)), Action::Open(Target::Peer("bob".into())));
    // Esc clears what is typed, then quits; Ctrl-C quits at once.
    app.key(key(KeyCode::Char('x')));
    assert_eq!(app.key(key(KeyCode::Esc)), Action::None);
    assert_eq!(app.key(key(KeyCode::Esc)), Action::Quit);
    assert_eq!(app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Action::Quit);
}

#[test]
fn a_request_cannot_be_answered_before_it_is_accepted() {
    let mut app = app();
    if let Some(Open::Peer(open)) = &mut app.open {
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
    app.set_chats(vec![summary("carol", 1), summary("alice", 0), summary("bob", 0)], vec![]);
    assert_eq!(app.chats[app.selected], Conversation::Peer(summary("bob", 0)));
    app.set_chats(vec![], vec![]);
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

const FAMILY: &str = "5f0c7a1e9b2d4c3e8a6f1b0d2c4e6a8b";

fn group(name: &str, unread: u64, at_ms: u64) -> GroupInfo {
    GroupInfo {
        id: FAMILY.into(),
        name: name.into(),
        status: "member".into(),
        admin: true,
        members: 3,
        admins: 1,
        unread,
        last_at_ms: Some(at_ms),
        changes: 3,
        version: 2,
        heads: vec![],
    }
}

fn text(id: &str, from: &str, text: &str, delivered: Option<u32>) -> GroupText {
    GroupText {
        id: format!("{id:0<32}"),
        group: FAMILY.into(),
        group_name: "family".into(),
        from: from.into(),
        from_peer_id: format!("12D3KooW{from}"),
        from_me: from == "me",
        text: text.into(),
        seq: 1,
        sent_at_ms: 0,
        received_at_ms: 0,
        read_at_ms: None,
        missing_before: 0,
        delivered,
        recipients: delivered.map(|_| 2),
        truncated: false,
    }
}

/// A group open beside two contacts: the group's newest text is newer than either's.
fn group_app() -> App {
    let mut app = App::default();
    app.set_chats(
        vec![summary_at("alice", 0, 10), summary_at("bob", 1, 30)],
        vec![group("family", 2, 20)],
    );
    let mut carol = text("c1", "carol", "dinner at eight?", None);
    carol.missing_before = 1;
    app.set_open(Open::Group(GroupChat {
        group: group("family", 0, 20),
        messages: vec![
            text("b1", "bob", "hello everyone\nsecond line", None),
            text("m1", "me", "hi both", Some(1)),
            carol,
        ],
    }));
    app
}

#[test]
fn groups_are_listed_among_the_conversations_marked_with_their_unread_counts() {
    let app = group_app();
    let rows = screen(&app);
    let all = rows.join("\n");
    // The most recent first, whatever the kind; the open group is the selected line.
    assert!(rows[1].contains("  bob (1)"), "{all}");
    assert!(rows[2].contains("> # family (2)"), "{all}");
    assert!(rows[3].contains("  alice") && !rows[3].contains("alice ("), "{all}");
    assert!(rows[0].contains("# family · 3 members"), "{all}");
    // A group that is no longer yours says so.
    let mut app = App::default();
    let mut left = group("family", 0, 0);
    left.status = "left".into();
    app.set_chats(vec![], vec![left]);
    assert!(screen(&app)[1].contains("# family (left)"));
}

#[test]
fn an_open_group_shows_each_text_with_its_writer_and_how_many_members_have_ours() {
    let all = screen(&group_app()).join("\n");
    let bob = all.find("bob: hello everyone").expect(&all);
    let second = all.find("│ second line").expect(&all);
    let mine = all.find("you: hi both  ✓ delivered to 1 of 2").expect(&all);
    let gap = all.find("… 1 earlier message from carol not arrived yet").expect(&all);
    let carol = all.find("carol: dinner at eight?").expect(&all);
    assert!(bob < second && second < mine && mine < gap && gap < carol, "{all}");
}

#[test]
fn enter_opens_a_group_and_the_compose_line_sends_to_it() {
    let mut app = group_app();
    app.compose.clear();
    app.key(key(KeyCode::Up));
    app.key(key(KeyCode::Down));
    assert_eq!(app.key(key(KeyCode::Enter)), Action::Open(Target::Group(FAMILY.into())));
    for c in "on my way".chars() {
        app.key(key(KeyCode::Char(c)));
    }
    // By id: `send` takes a group's id, and a contact's name cannot shadow it.
    assert_eq!(
        app.key(key(KeyCode::Enter)),
        Action::Send { to: FAMILY.into(), text: "on my way".into() }
    );
    // A group you left takes no more texts.
    if let Some(Open::Group(chat)) = &mut app.open {
        chat.group.status = "removed".into();
    }
    app.compose = "still there?".into();
    assert_eq!(app.key(key(KeyCode::Enter)), Action::None);
    assert_eq!(app.compose, "still there?");
    assert!(screen(&app)[15].starts_with("you are not a member of family any more (removed)"));
}

#[test]
fn group_events_reload_the_list_and_deliveries_reload_the_open_group() {
    let mut app = group_app();
    let delivery = |id: &str, group: &str| {
        Event::GroupDelivery(GroupDelivery {
            group: group.into(),
            group_name: "family".into(),
            id: format!("{id:0<32}"),
            member: "carol".into(),
            member_peer_id: "12D3KooWcarol".into(),
            state: MessageState::Delivered,
            at_ms: 1,
        })
    };
    assert_eq!(app.event(&delivery("m1", FAMILY)), Action::ReloadOpen);
    assert_eq!(app.event(&delivery("m1", &"e".repeat(32))), Action::None, "another group");
    assert_eq!(app.event(&delivery("f1", FAMILY)), Action::None, "a text not on the screen");
    let change = Event::Group(GroupEvent {
        group: FAMILY.into(),
        group_name: "family".into(),
        change: "member_added".into(),
        member: Some("dave".into()),
        member_peer_id: None,
        at_ms: 2,
    });
    assert_eq!(app.event(&change), Action::Refresh);
    assert_eq!(app.event(&Event::GroupMessage(text("c2", "carol", "yes", None))), Action::Refresh);
    // The reload brings the daemon's count, and the list keeps the group selected.
    let mut reloaded = group("family", 0, 40);
    reloaded.members = 4;
    app.set_chats(
        vec![summary_at("alice", 0, 10), summary_at("bob", 1, 30)],
        vec![reloaded.clone()],
    );
    assert!(matches!(app.chats[app.selected], Conversation::Group(ref g) if g.id == FAMILY));
    app.set_open(Open::Group(GroupChat {
        group: reloaded,
        messages: vec![text("m1", "me", "hi both", Some(2))],
    }));
    let rows = screen(&app);
    assert!(rows[0].contains("# family · 4 members"), "{}", rows.join("\n"));
    assert!(rows.join("\n").contains("you: hi both  ✓✓ delivered to all 2"));
}
