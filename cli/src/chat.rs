//! `kolokol chat`: a terminal chat screen. The conversation list with unread counts on the
//! left (one-to-one conversations and groups, most recent first), the open conversation on the
//! right with each message's delivery state (in a group, each text with its writer's name and
//! how many members have ours), a compose line under it, and a status line saying how the
//! node is connected.
//!
//! [`App`] is the screen's state and holds no I/O: keys go in through [`App::key`], daemon
//! events through [`App::event`], and each says what the driver must do ([`Action`]);
//! [`App::render`] draws it. The driver, [`run`], owns the terminal and the control-socket
//! connections, so the screen is tested on ratatui's `TestBackend` with no terminal or daemon.

use std::time::Duration;

use anyhow::Context;
use kolokol_protocol::control::{
    Chat, ChatSummary, Event, GroupChat, GroupInfo, GroupReadResult, GroupText, InboxReadResult,
    MessageState, SendResult, Status, method,
};
use kolokol_protocol::message::MAX_READ_IDS;
use ratatui::Frame;
use ratatui::crossterm::event::{self as term, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Wrap};
use serde_json::json;

use crate::client::Client;
use crate::output;

/// How many messages of the open conversation the screen holds.
pub const CHAT_LIMIT: u32 = 200;

/// The longest message the compose line takes, in bytes: the daemon's own limit.
pub const MAX_COMPOSE_LEN: usize = kolokol_protocol::message::MAX_TEXT_LEN;

/// How often the status line is refreshed and the terminal polled while nothing happens.
const TICK: Duration = Duration::from_millis(100);

/// How many ticks between two refreshes of the status line.
const STATUS_TICKS: u32 = 50;

/// What the driver must do after a key or an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing beyond drawing again.
    None,
    /// Load this conversation and open it.
    Open(Target),
    /// Send this text to the open conversation, with `send` (as `kolokol send NAME` does).
    Send {
        /// A contact's name, or a group's id: `send` writes to a group when no contact has
        /// that name, and no contact name is a group's 32 hex digits by accident.
        to: String,
        /// The text.
        text: String,
    },
    /// Reload the conversation list and the open conversation.
    Refresh,
    /// Reload the open group soon: a member's copy of one of our texts in it changed state.
    /// The driver folds a burst of these (one per member) into one reload per tick.
    ReloadOpen,
    /// Leave the screen.
    Quit,
}

/// A conversation to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// With a peer: a contact's name or a peer id.
    Peer(String),
    /// A group, by its id.
    Group(String),
}

/// One line of the conversation list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Conversation {
    /// With one peer, as `chats` returns it.
    Peer(ChatSummary),
    /// A group, as `group.list` returns it.
    Group(GroupInfo),
}

impl Conversation {
    /// What opens it.
    pub fn target(&self) -> Target {
        match self {
            Conversation::Peer(c) => {
                Target::Peer(c.name.clone().unwrap_or_else(|| c.peer_id.clone()))
            }
            Conversation::Group(g) => Target::Group(g.id.clone()),
        }
    }

    /// Whether `open` is this conversation.
    fn is(&self, open: &Open) -> bool {
        match (self, open) {
            (Conversation::Peer(c), Open::Peer(chat)) => c.peer_id == chat.peer_id,
            (Conversation::Group(g), Open::Group(chat)) => g.id == chat.group.id,
            _ => false,
        }
    }

    /// The same conversation, whatever changed in it since.
    fn same(&self, other: &Conversation) -> bool {
        match (self, other) {
            (Conversation::Peer(a), Conversation::Peer(b)) => a.peer_id == b.peer_id,
            (Conversation::Group(a), Conversation::Group(b)) => a.id == b.id,
            _ => false,
        }
    }

    fn last_at_ms(&self) -> u64 {
        match self {
            Conversation::Peer(c) => c.last_at_ms.unwrap_or(0),
            Conversation::Group(g) => g.last_at_ms.unwrap_or(0),
        }
    }
}

/// The open conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Open {
    /// With one peer.
    Peer(Chat),
    /// A group.
    Group(GroupChat),
}

/// The screen's state.
#[derive(Debug, Default)]
pub struct App {
    /// The conversations: `chats` and `group.list` together, the most recent first.
    pub chats: Vec<Conversation>,
    /// The selected conversation in the list.
    pub selected: usize,
    /// The open conversation.
    pub open: Option<Open>,
    /// What is being typed.
    pub compose: String,
    /// How the node is connected, one line.
    pub status: String,
    /// A short notice (an error, a hint) shown above the status.
    pub notice: Option<String>,
}

impl App {
    /// Handles one key press.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.kind != KeyEventKind::Press {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c' | 'q') if ctrl => Action::Quit,
            KeyCode::Esc if self.compose.is_empty() => Action::Quit,
            KeyCode::Esc => {
                self.compose.clear();
                Action::None
            }
            KeyCode::Up => {
                self.selected = self.selected.saturating_sub(1);
                Action::None
            }
            KeyCode::Down => {
                if self.selected + 1 < self.chats.len() {
                    self.selected += 1;
                }
                Action::None
            }
            KeyCode::Enter if self.compose.trim().is_empty() || self.open.is_none() => {
                self.notice = None;
                match self.chats.get(self.selected) {
                    Some(c) => Action::Open(c.target()),
                    None => Action::None,
                }
            }
            KeyCode::Enter => {
                let to = match &self.open {
                    None => return Action::None,
                    Some(Open::Peer(chat)) => match &chat.name {
                        Some(name) => name.clone(),
                        None => {
                            self.notice = Some(
                                "not a contact: accept them first (kolokol contacts accept PEER_ID NAME)"
                                    .into(),
                            );
                            return Action::None;
                        }
                    },
                    Some(Open::Group(chat)) if chat.group.status != "member" => {
                        self.notice = Some(format!(
                            "you are not a member of {} any more ({})",
                            output::visible(&chat.group.name),
                            chat.group.status
                        ));
                        return Action::None;
                    }
                    Some(Open::Group(chat)) => chat.group.id.clone(),
                };
                Action::Send { to, text: std::mem::take(&mut self.compose) }
            }
            KeyCode::Backspace => {
                self.compose.pop();
                Action::None
            }
            KeyCode::Char(c) if !ctrl => {
                if self.compose.len() + c.len_utf8() <= MAX_COMPOSE_LEN {
                    self.compose.push(c);
                }
                Action::None
            }
            KeyCode::F(5) => Action::Refresh,
            _ => Action::None,
        }
    }

    /// Handles one daemon event: a state change updates the open conversation in place; a new
    /// message, or a change to a group, asks for the lists to be loaded again; a member's copy
    /// of one of our texts in the open group asks for that group to be loaded again.
    pub fn event(&mut self, event: &Event) -> Action {
        match event {
            Event::State(change) => {
                if let Some(Open::Peer(open)) = &mut self.open
                    && let Some(entry) = open.entries.iter_mut().find(|e| e.id == change.id)
                {
                    entry.state = Some(change.state);
                    if change.detail.is_some() || change.state == MessageState::Failed {
                        entry.detail = change.detail.clone();
                    }
                    return Action::None;
                }
                Action::Refresh
            }
            Event::Message(_)
            | Event::GroupMessage(_)
            | Event::Group(_)
            | Event::Rekeyed(_)
            | Event::Lagged { .. } => Action::Refresh,
            // A file's progress shows in `kolokol files`; its line enters the conversation as a
            // message once it is saved.
            Event::File(_) => Action::None,
            // The count of members who have a text is the daemon's (a copy acknowledged after
            // the group was loaded may already be in it), so the group is loaded again rather
            // than counted here; other groups' lines in the list do not show deliveries.
            Event::GroupDelivery(delivery) => match &self.open {
                Some(Open::Group(chat))
                    if chat.group.id == delivery.group
                        && chat.messages.iter().any(|m| m.id == delivery.id) =>
                {
                    Action::ReloadOpen
                }
                _ => Action::None,
            },
        }
    }

    /// Takes a fresh conversation list (`chats` and `group.list`), the most recent first,
    /// keeping the selection on the same conversation.
    pub fn set_chats(&mut self, chats: Vec<ChatSummary>, groups: Vec<GroupInfo>) {
        let selected = self.chats.get(self.selected).cloned();
        let mut list: Vec<Conversation> = chats
            .into_iter()
            .map(Conversation::Peer)
            .chain(groups.into_iter().map(Conversation::Group))
            .collect();
        // Stable: each kind keeps the daemon's order among equals.
        list.sort_by_key(|c| std::cmp::Reverse(c.last_at_ms()));
        self.chats = list;
        self.selected = selected
            .and_then(|old| self.chats.iter().position(|c| c.same(&old)))
            .unwrap_or(0)
            .min(self.chats.len().saturating_sub(1));
    }

    /// Makes `open` the open conversation and selects it in the list.
    pub fn set_open(&mut self, open: Open) {
        if let Some(i) = self.chats.iter().position(|c| c.is(&open)) {
            self.selected = i;
        }
        self.open = Some(open);
    }

    /// Draws the screen.
    pub fn render(&self, frame: &mut Frame) {
        let rows = Layout::default()
            .direction(Direction::Vertical)
            .constraints([Constraint::Min(3), Constraint::Length(3), Constraint::Length(1)])
            .split(frame.area());
        let columns = Layout::default()
            .direction(Direction::Horizontal)
            .constraints([Constraint::Percentage(30), Constraint::Percentage(70)])
            .split(rows[0]);

        let items: Vec<ListItem> = self
            .chats
            .iter()
            .map(|c| {
                let (name, unread) = match c {
                    Conversation::Peer(c) => (peer_label(c), u64::from(c.unread)),
                    Conversation::Group(g) => (group_label(g), g.unread),
                };
                let unread = if unread > 0 { format!(" ({unread})") } else { String::new() };
                let style = if !unread.is_empty() {
                    Style::default().add_modifier(Modifier::BOLD)
                } else {
                    Style::default()
                };
                ListItem::new(Line::from(Span::styled(format!("{name}{unread}"), style)))
            })
            .collect();
        let mut state = ListState::default();
        if !self.chats.is_empty() {
            state.select(Some(self.selected));
        }
        let list = List::new(items)
            .block(Block::default().borders(Borders::ALL).title("conversations"))
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED))
            .highlight_symbol("> ");
        frame.render_stateful_widget(list, columns[0], &mut state);

        let (title, lines) = match &self.open {
            None => (
                "no conversation open".to_owned(),
                vec![Line::from("select one with ↑ ↓ and press Enter")],
            ),
            Some(Open::Peer(chat)) => (
                match &chat.name {
                    Some(n) if chat.verified => format!("{} ✓ verified", output::visible(n)),
                    Some(n) => output::visible(n),
                    None => format!("{} (not a contact)", chat.peer_id),
                },
                chat_lines(chat),
            ),
            Some(Open::Group(chat)) => {
                let mut title = format!(
                    "# {} · {}",
                    output::visible(&chat.group.name),
                    output::count(u64::from(chat.group.members), "member", "members")
                );
                if chat.group.status != "member" {
                    title.push_str(&format!(" · {}", chat.group.status));
                }
                (title, group_lines(chat))
            }
        };
        // Show the end of the conversation: as many of its last lines as fit.
        let height = columns[1].height.saturating_sub(2) as usize;
        let skip = lines.len().saturating_sub(height);
        let messages = Paragraph::new(lines.into_iter().skip(skip).collect::<Vec<_>>())
            .block(Block::default().borders(Borders::ALL).title(title));
        frame.render_widget(messages, columns[1]);

        let compose =
            Paragraph::new(output::visible(&self.compose)).wrap(Wrap { trim: false }).block(
                Block::default()
                    .borders(Borders::ALL)
                    .title("message (Enter sends, Esc clears or quits, ↑ ↓ Enter opens another)"),
            );
        frame.render_widget(compose, rows[1]);

        let status = match &self.notice {
            Some(n) => format!("{n} · {}", self.status),
            None => self.status.clone(),
        };
        frame.render_widget(Paragraph::new(status), rows[2]);
    }
}

/// A one-to-one conversation's line in the list: its contact name, or its peer id's start.
fn peer_label(c: &ChatSummary) -> String {
    match (&c.name, c.request) {
        (Some(n), _) if c.verified => format!("{} ✓", output::visible(n)),
        (Some(n), _) => output::visible(n),
        (None, true) => format!("{}… (request)", &c.peer_id[..c.peer_id.len().min(16)]),
        (None, false) => format!("{}…", &c.peer_id[..c.peer_id.len().min(16)]),
    }
}

/// A group's line in the list: `#` marks it a group, and a status other than member shows.
fn group_label(g: &GroupInfo) -> String {
    match g.status.as_str() {
        "member" => format!("# {}", output::visible(&g.name)),
        status => format!("# {} ({status})", output::visible(&g.name)),
    }
}

/// The lines of a group: one per text line, the first with time, writer and, for ours, how
/// many members have it; a line where a writer's earlier texts have not arrived.
fn group_lines(chat: &GroupChat) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if chat.messages.is_empty() {
        lines.push(Line::from("no messages yet"));
    }
    for m in &chat.messages {
        if m.missing_before > 0 {
            let n = output::count(m.missing_before, "earlier message", "earlier messages");
            lines.push(Line::from(format!(
                "  … {n} from {} not arrived yet",
                output::visible(&m.from)
            )));
        }
        let who = if m.from_me { "you".to_owned() } else { output::visible(&m.from) };
        let at = output::time(if m.from_me { m.sent_at_ms } else { m.received_at_ms });
        let ticks = group_ticks(m);
        text_lines(&mut lines, &at, &who, &m.text, &ticks);
    }
    lines
}

/// What one of our group texts looks like beside it: how many members' nodes have it.
fn group_ticks(m: &GroupText) -> String {
    match (m.delivered, m.recipients) {
        (_, Some(0)) | (_, None) | (None, _) => String::new(),
        (Some(d), Some(r)) if d >= r => format!("✓✓ delivered to all {r}"),
        (Some(d), Some(r)) => format!("✓ delivered to {d} of {r}"),
    }
}

/// Pushes one message's lines: the first with time, writer, text and state, each further
/// line of the text indented behind `│ `.
fn text_lines(lines: &mut Vec<Line<'static>>, at: &str, who: &str, text: &str, ticks: &str) {
    let mut text = text.split('\n');
    let first = output::visible(text.next().unwrap_or_default());
    let mut head = vec![Span::raw(format!("{} {who}: ", &at[11..16])), Span::raw(first)];
    if !ticks.is_empty() {
        head.push(Span::styled(format!("  {ticks}"), Style::default().add_modifier(Modifier::DIM)));
    }
    lines.push(Line::from(head));
    for more in text.take(output::SHOWN_LINES) {
        lines.push(Line::from(format!("      │ {}", output::visible(more))));
    }
}

/// The lines of a conversation: one per message line, the first with time, writer and state.
fn chat_lines(chat: &Chat) -> Vec<Line<'static>> {
    let name = chat.name.clone().unwrap_or_else(|| "them".into());
    let mut lines = Vec::new();
    for e in &chat.entries {
        if e.missing_before > 0 {
            let n = output::count(e.missing_before, "earlier message", "earlier messages");
            let what = if e.missing_for_good { "never arrived" } else { "not arrived yet" };
            lines.push(Line::from(format!("  … {n} {what}")));
        }
        let who = if e.from_me { "you".to_owned() } else { output::visible(&name) };
        let at = output::time(e.received_at_ms.unwrap_or(e.sent_at_ms));
        text_lines(&mut lines, &at, &who, &e.text, &output::ticks(e));
    }
    lines
}

/// The status line: how the node is connected.
pub fn status_line(s: &Status) -> String {
    let reach = match s.reachability.as_str() {
        "public" => "reachable directly".to_owned(),
        "relayed" => format!(
            "reachable through {}",
            output::count(s.relay_reservations.len() as u64, "relay", "relays")
        ),
        _ => "not reachable: no relay reservation yet".to_owned(),
    };
    let mut line =
        format!("{reach} · {} connected", output::count(s.connected_peers as u64, "peer", "peers"));
    if s.queued_messages + s.stored_messages > 0 {
        line.push_str(&format!(
            " · {} queued, {} in mailboxes",
            s.queued_messages, s.stored_messages
        ));
    }
    line
}

/// Runs the chat screen on the terminal until the user quits.
pub async fn run(dir: &std::path::Path, with: Option<String>) -> anyhow::Result<()> {
    // The screen reads keys from standard input and draws on standard output; without a
    // terminal on both it can do neither, and the terminal library's own error ("No such
    // device or address") would not say why.
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "kolokol chat needs a terminal; from a script, use `kolokol read NAME`, `kolokol send NAME TEXT` and `kolokol inbox --follow`"
        );
    }
    let mut events = Client::connect(dir).await?;
    let _: bool = events.call(method::SUBSCRIBE, json!({})).await?;
    let mut client = Client::connect(dir).await?;
    let mut app = App::default();
    reload(&mut client, &mut app).await?;
    if let Some(with) = with {
        // A contact's name (or a peer id) wins over a group's, as for `kolokol send`; when it
        // is neither, the contact's error is the one to report.
        if let Err(not_a_contact) = open(&mut client, &mut app, &Target::Peer(with.clone())).await {
            open(&mut client, &mut app, &Target::Group(with)).await.map_err(|_| not_a_contact)?;
        }
    }
    app.status = status_line(&client.call(method::STATUS, json!({})).await?);

    let mut terminal = ratatui::try_init().context("cannot take over the terminal")?;
    let result = drive(&mut terminal, &mut client, &mut events, &mut app).await;
    ratatui::restore();
    result
}

/// The screen's loop: draw, then wait for a key, a daemon event or a tick.
async fn drive(
    terminal: &mut ratatui::DefaultTerminal,
    client: &mut Client,
    events: &mut Client,
    app: &mut App,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(TICK);
    let mut ticks = 0u32;
    // Set by `ReloadOpen`, cleared by the next tick's one reload of the open group.
    let mut open_stale = false;
    loop {
        terminal.draw(|frame| app.render(frame)).context("cannot draw")?;
        let action = tokio::select! {
            event = events.next_event() => app.event(&event?),
            _ = tick.tick() => {
                ticks += 1;
                if ticks.is_multiple_of(STATUS_TICKS) {
                    match client.call::<Status>(method::STATUS, json!({})).await {
                        Ok(status) => app.status = status_line(&status),
                        Err(e) => app.status = format!("the daemon does not answer: {e}"),
                    }
                }
                if std::mem::take(&mut open_stale) && let Some(target) = open_target(app) {
                    open(client, app, &target).await?;
                }
                let mut action = Action::None;
                // Every key that is waiting, without blocking the async threads.
                while action == Action::None
                    && term::poll(Duration::ZERO).context("cannot read the terminal")?
                {
                    if let term::Event::Key(key) = term::read().context("cannot read the terminal")? {
                        action = app.key(key);
                    }
                }
                action
            }
        };
        match action {
            Action::None => {}
            Action::Quit => return Ok(()),
            Action::Refresh => reload(client, app).await?,
            Action::ReloadOpen => open_stale = true,
            Action::Open(target) => open(client, app, &target).await?,
            Action::Send { to, text } => {
                // The call `kolokol send` makes: a contact's text comes back queued, a group's
                // once every member's copy had its first attempt.
                match client
                    .call::<SendResult>(
                        method::SEND,
                        json!({ "to": to, "text": text, "wait": false }),
                    )
                    .await
                {
                    Ok(_) => app.notice = None,
                    Err(e) => {
                        app.notice = Some(format!("not sent: {e}"));
                        app.compose = text;
                    }
                }
                reload(client, app).await?;
            }
        }
    }
}

/// What opens the open conversation again.
fn open_target(app: &App) -> Option<Target> {
    match app.open.as_ref()? {
        Open::Peer(chat) => Some(Target::Peer(chat.name.clone().unwrap_or(chat.peer_id.clone()))),
        Open::Group(chat) => Some(Target::Group(chat.group.id.clone())),
    }
}

/// Loads the conversation list, and the open conversation again (marking what it shows read).
async fn reload(client: &mut Client, app: &mut App) -> anyhow::Result<()> {
    let chats: Vec<ChatSummary> = client.call(method::CHATS, json!({})).await?;
    let groups: Vec<GroupInfo> = client.call(method::GROUP_LIST, json!({})).await?;
    app.set_chats(chats, groups);
    if let Some(target) = open_target(app) {
        open(client, app, &target).await?;
    }
    Ok(())
}

/// Opens a conversation and marks its messages read, as `kolokol read` (or `kolokol group
/// show`) does.
async fn open(client: &mut Client, app: &mut App, target: &Target) -> anyhow::Result<()> {
    let (open, marked) = match target {
        Target::Peer(with) => {
            let chat: Chat =
                client.call(method::CHAT, json!({ "with": with, "limit": CHAT_LIMIT })).await?;
            let unread: Vec<String> = chat
                .entries
                .iter()
                .filter(|e| !e.from_me && e.read_at_ms.is_none())
                .map(|e| e.id.clone())
                .collect();
            for ids in unread.chunks(MAX_READ_IDS) {
                let _: InboxReadResult =
                    client.call(method::INBOX_READ, json!({ "ids": ids })).await?;
            }
            (Open::Peer(chat), !unread.is_empty())
        }
        Target::Group(group) => {
            let chat: GroupChat = client
                .call(method::GROUP_MESSAGES, json!({ "group": group, "limit": CHAT_LIMIT }))
                .await?;
            let marked = chat.group.unread > 0;
            if marked {
                let _: GroupReadResult =
                    client.call(method::GROUP_READ, json!({ "group": chat.group.id })).await?;
            }
            (Open::Group(chat), marked)
        }
    };
    if marked {
        let chats: Vec<ChatSummary> = client.call(method::CHATS, json!({})).await?;
        let groups: Vec<GroupInfo> = client.call(method::GROUP_LIST, json!({})).await?;
        app.set_chats(chats, groups);
    }
    app.set_open(open);
    Ok(())
}

#[cfg(test)]
mod tests;
