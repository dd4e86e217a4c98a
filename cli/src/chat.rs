//! `kolokol chat`: a terminal chat screen. The conversation list with unread counts on the
//! left, the open conversation on the right with each message's delivery state, a compose line
//! under it, and a status line saying how the node is connected.
//!
//! [`App`] is the screen's state and holds no I/O: keys go in through [`App::key`], daemon
//! events through [`App::event`], and each says what the driver must do ([`Action`]);
//! [`App::render`] draws it. The driver, [`run`], owns the terminal and the control-socket
//! connections, so the screen is tested on ratatui's `TestBackend` with no terminal or daemon.

use std::time::Duration;

use anyhow::Context;
use kolokol_protocol::control::{
    Chat, ChatSummary, Event, InboxReadResult, MessageState, SendResult, Status, method,
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
    /// Load the conversation with this peer (a contact's name or a peer id) and open it.
    Open(String),
    /// Send this text to the open conversation's peer.
    Send {
        /// A contact's name.
        to: String,
        /// The text.
        text: String,
    },
    /// Reload the conversation list and the open conversation.
    Refresh,
    /// Leave the screen.
    Quit,
}

/// The screen's state.
#[derive(Debug, Default)]
pub struct App {
    /// The conversations, as `chats` returns them.
    pub chats: Vec<ChatSummary>,
    /// The selected conversation in the list.
    pub selected: usize,
    /// The open conversation.
    pub open: Option<Chat>,
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
                    Some(c) => Action::Open(c.name.clone().unwrap_or_else(|| c.peer_id.clone())),
                    None => Action::None,
                }
            }
            KeyCode::Enter => {
                let Some(open) = &self.open else { return Action::None };
                let Some(to) = open.name.clone() else {
                    self.notice = Some(
                        "not a contact: accept them first (kolokol contacts accept PEER_ID NAME)"
                            .into(),
                    );
                    return Action::None;
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
    /// message asks for the lists to be loaded again.
    pub fn event(&mut self, event: &Event) -> Action {
        match event {
            Event::State(change) => {
                if let Some(open) = &mut self.open
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
            Event::Message(_) | Event::Rekeyed(_) | Event::Lagged { .. } => Action::Refresh,
            // Group conversations are not shown here (`kolokol group show`).
            Event::GroupMessage(_) | Event::Group(_) | Event::GroupDelivery(_) => Action::None,
        }
    }

    /// Takes a fresh conversation list, keeping the selection on the same peer.
    pub fn set_chats(&mut self, chats: Vec<ChatSummary>) {
        let selected = self.chats.get(self.selected).map(|c| c.peer_id.clone());
        self.chats = chats;
        self.selected = selected
            .and_then(|peer| self.chats.iter().position(|c| c.peer_id == peer))
            .unwrap_or(0)
            .min(self.chats.len().saturating_sub(1));
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
                let name = match (&c.name, c.request) {
                    (Some(n), _) if c.verified => format!("{} ✓", output::visible(n)),
                    (Some(n), _) => output::visible(n),
                    (None, true) => format!("{}… (request)", &c.peer_id[..c.peer_id.len().min(16)]),
                    (None, false) => format!("{}…", &c.peer_id[..c.peer_id.len().min(16)]),
                };
                let unread = if c.unread > 0 { format!(" ({})", c.unread) } else { String::new() };
                let style = if c.unread > 0 {
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
            Some(chat) => (
                match &chat.name {
                    Some(n) if chat.verified => format!("{} ✓ verified", output::visible(n)),
                    Some(n) => output::visible(n),
                    None => format!("{} (not a contact)", chat.peer_id),
                },
                chat_lines(chat),
            ),
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
        let ticks = output::ticks(e);
        let mut text = e.text.split('\n');
        let first = output::visible(text.next().unwrap_or_default());
        let mut head = vec![Span::raw(format!("{} {who}: ", &at[11..16])), Span::raw(first)];
        if !ticks.is_empty() {
            head.push(Span::styled(
                format!("  {ticks}"),
                Style::default().add_modifier(Modifier::DIM),
            ));
        }
        lines.push(Line::from(head));
        for more in text.take(output::SHOWN_LINES) {
            lines.push(Line::from(format!("      │ {}", output::visible(more))));
        }
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
    let mut events = Client::connect(dir).await?;
    let _: bool = events.call(method::SUBSCRIBE, json!({})).await?;
    let mut client = Client::connect(dir).await?;
    let mut app = App::default();
    reload(&mut client, &mut app).await?;
    if let Some(with) = with {
        open(&mut client, &mut app, &with).await?;
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
            Action::Open(with) => open(client, app, &with).await?,
            Action::Send { to, text } => {
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

/// Loads the conversation list, and the open conversation again (marking what it shows read).
async fn reload(client: &mut Client, app: &mut App) -> anyhow::Result<()> {
    let chats: Vec<ChatSummary> = client.call(method::CHATS, json!({})).await?;
    app.set_chats(chats);
    if let Some(with) = app.open.as_ref().map(|c| c.name.clone().unwrap_or(c.peer_id.clone())) {
        open(client, app, &with).await?;
    }
    Ok(())
}

/// Opens a conversation and marks its messages read, as `kolokol read` does.
async fn open(client: &mut Client, app: &mut App, with: &str) -> anyhow::Result<()> {
    let chat: Chat =
        client.call(method::CHAT, json!({ "with": with, "limit": CHAT_LIMIT })).await?;
    let unread: Vec<String> = chat
        .entries
        .iter()
        .filter(|e| !e.from_me && e.read_at_ms.is_none())
        .map(|e| e.id.clone())
        .collect();
    for ids in unread.chunks(MAX_READ_IDS) {
        let _: InboxReadResult = client.call(method::INBOX_READ, json!({ "ids": ids })).await?;
    }
    if !unread.is_empty() {
        let chats: Vec<ChatSummary> = client.call(method::CHATS, json!({})).await?;
        app.set_chats(chats);
    }
    if let Some(i) = app.chats.iter().position(|c| c.peer_id == chat.peer_id) {
        app.selected = i;
    }
    app.open = Some(chat);
    Ok(())
}

#[cfg(test)]
mod tests;
