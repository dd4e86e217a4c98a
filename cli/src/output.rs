//! How results are shown: one human form, and `--json` (the control API's own JSON, one value
//! per command, stable and documented in docs/USAGE.md).

use kolokol_protocol::control::{
    Chat, ChatEntry, ChatSummary, Contact, DoctorCheck, GroupChat, GroupInfo, GroupMembers,
    GroupText, InboxMessage, MessageStatus, OutboxMessage, PeersInfo, SafetyNumber, Status,
};

/// Formats Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm), to avoid a date dependency for one line.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// What a line break inside a message looks like in text output.
pub const LINE_BREAK_MARK: &str = "⏎ ";

/// `text` made safe to print on one terminal line: a line break becomes [`LINE_BREAK_MARK`],
/// and every other control character (C0, DEL, C1, ESC among them) and every bidirectional
/// override becomes a `\u{..}` escape.
///
/// Message text comes from other people, strangers included. Printed raw, a newline would let
/// a sender forge further inbox lines ("[date] alice: ...") and an escape sequence could
/// recolour, retitle or rewrite the terminal; bidi overrides can make text read differently
/// from what it is. `--json` prints the exact text, since a program reading it escapes anyway.
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str(LINE_BREAK_MARK),
            c if c.is_control() || is_bidi_control(c) => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

/// The Unicode characters that reorder the text around them (embeddings, overrides, isolates).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// One inbox line.
pub fn message(m: &InboxMessage) -> String {
    let from = m.from.clone().unwrap_or_else(|| format!("unknown peer {}", m.from_peer_id));
    format!("[{}] {}: {}", time(m.received_at_ms), visible(&from), visible(&m.text))
}

/// One inbox line of a group text: the group's name, then the writer's.
pub fn group_message(m: &GroupText) -> String {
    format!(
        "[{}] {} / {}: {}",
        time(m.received_at_ms),
        visible(&m.group_name),
        visible(&m.from),
        visible(&m.text)
    )
}

/// One line of a group list.
pub fn group(g: &GroupInfo) -> String {
    let mut line = format!(
        "{}\t{}\t{}",
        visible(&g.name),
        g.id,
        count(u64::from(g.members), "member", "members")
    );
    if g.admin {
        line.push_str(", admin");
    }
    if g.status != "member" {
        line.push_str(&format!(", {}", g.status));
    }
    if g.unread > 0 {
        line.push_str(&format!(", {} unread", g.unread));
    }
    line
}

/// A group's members, one a line: name, peer id, and whether an admin or you.
pub fn group_members(m: &GroupMembers) -> String {
    let mut out = format!(
        "{} ({})\n",
        visible(&m.group.name),
        count(u64::from(m.group.members), "member", "members")
    );
    for member in &m.members {
        let mut line = format!("  {}\t{}", visible(&member.name), member.peer_id);
        if member.admin {
            line.push_str("\tadmin");
        }
        if member.me {
            line.push_str("\t(you)");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out.trim_end().to_owned()
}

/// A group as a conversation: each text with its writer's name, yours with how many members
/// have it, and a note where a writer's texts are missing.
pub fn group_chat(c: &GroupChat) -> String {
    let mut out = format!(
        "{} ({})",
        visible(&c.group.name),
        count(u64::from(c.group.members), "member", "members")
    );
    if c.group.status != "member" {
        out.push_str(&format!(", {}", c.group.status));
    }
    if c.messages.is_empty() {
        out.push_str("\nno messages yet");
    }
    for m in &c.messages {
        if m.missing_before > 0 {
            out.push_str(&format!(
                "\n  ({} from {} not arrived yet)",
                count(m.missing_before, "message", "messages"),
                visible(&m.from)
            ));
        }
        let from = if m.from_me { "me".to_owned() } else { visible(&m.from) };
        out.push_str(&format!("\n[{}] {}: {}", time(m.sent_at_ms), from, visible(&m.text)));
        if let (Some(delivered), Some(recipients)) = (m.delivered, m.recipients) {
            out.push_str(&format!("  ({delivered}/{recipients} delivered)"));
        }
    }
    out
}

/// `n` and the noun in the form that goes with it: "1 peer", "2 peers".
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A re-key as `kolokol inbox --follow` shows it.
pub fn rekey(r: &kolokol_protocol::control::Rekey) -> String {
    let who = r.contact.clone().unwrap_or_else(|| r.peer_id.clone());
    format!(
        "{}  conversation with {who} re-keyed: {}; messages waiting for them are sealed again",
        time(r.at_ms),
        r.reason
    )
}

/// One contact line (name, peer id, addresses, and `verified` when marked so), with a second
/// one when the conversation was re-keyed.
pub fn contact(c: &Contact) -> String {
    let mut line = format!(
        "{}\t{}\t{}{}",
        visible(&c.name),
        c.peer_id,
        count(c.addresses.len() as u64, "address", "addresses"),
        if c.verified { "\tverified" } else { "" }
    );
    if let (Some(at), Some(why)) = (c.rekeyed_at_ms, &c.rekey_reason) {
        line.push_str(&format!("\n\tconversation re-keyed {}: {why}", time(at)));
    }
    line
}

/// The status block.
pub fn status(s: &Status) -> String {
    let mut out = format!(
        "peer id:            {}\nrole:               {}\nreachability:       {}\nbootstrap:          {}\nlocal network:      {}\npresence record:    {}\nconnected peers:    {}\nrouting table:      {}\nknown relays:       {}\nrelay reservations: {}\nqueued messages:    {}\nstored messages:    {}\nqueued files:       {}\n",
        s.peer_id,
        s.role,
        s.reachability,
        s.bootstrap,
        s.local_network,
        s.presence,
        s.connected_peers,
        s.routing_table_size,
        s.known_relays,
        if s.relay_reservations.is_empty() {
            "none".to_owned()
        } else {
            s.relay_reservations.join(", ")
        },
        s.queued_messages,
        if s.stored_messages == 0 {
            "0".to_owned()
        } else {
            format!("{} (waiting in the recipients' mailboxes; still retried)", s.stored_messages)
        },
        s.queued_files,
    );
    out.push_str("listen addresses:\n");
    for a in &s.listen_addresses {
        out.push_str(&format!("  {a}\n"));
    }
    out.push_str("external addresses:\n");
    for a in &s.external_addresses {
        out.push_str(&format!("  {a}\n"));
    }
    out.trim_end().to_owned()
}

/// The most characters of a message's text that a listing line shows (the outbox, a message's
/// status); `--json` and the recipient's inbox have all of it.
pub const PREVIEW_CHARS: usize = 200;

/// The text as a listing shows it: visible, and cut after [`PREVIEW_CHARS`] characters with
/// its full length said, so one long message cannot flood a listing.
pub fn preview(text: &str) -> String {
    match text.char_indices().nth(PREVIEW_CHARS) {
        None => visible(text),
        Some((end, _)) => {
            format!("{}… ({} bytes in all; --json shows them)", visible(&text[..end]), text.len())
        }
    }
}

/// One outbox line: id, state, recipient, text.
pub fn outgoing(m: &OutboxMessage) -> String {
    let detail = match (&m.detail, m.state.as_str()) {
        (Some(d), "queued" | "stored" | "failed") => format!(" ({})", visible(d)),
        _ => String::new(),
    };
    format!(
        "{} {:<9} [{}] to {}: {}{detail}",
        m.id,
        m.state,
        time(m.created_at_ms),
        visible(&m.to),
        preview(&m.text)
    )
}

/// A message's state history, one line per state.
pub fn message_status(s: &MessageStatus) -> String {
    let mut out = format!(
        "message {} to {}: {}\n",
        s.message.id,
        visible(&s.message.to),
        preview(&s.message.text)
    );
    for h in &s.history {
        out.push_str(&format!("  {}  {}", time(h.at_ms), h.state));
        if let Some(d) = &h.detail {
            out.push_str(&format!(" ({})", visible(d)));
        }
        out.push('\n');
    }
    if s.message.state == "queued" && s.message.attempts > 0 {
        out.push_str(&format!(
            "  still queued after {}; it is retried until delivered or 14 days pass\n",
            count(u64::from(s.message.attempts), "attempt", "attempts")
        ));
    }
    if s.message.state == "stored" {
        out.push_str(
            "  waiting in the recipient's mailbox; direct delivery is retried until the receipt arrives\n",
        );
    }
    out.trim_end().to_owned()
}

/// The peers listing: connections, then the cache.
pub fn peers(p: &PeersInfo) -> String {
    let mut out = String::from("connected:\n");
    if p.connected.is_empty() {
        out.push_str("  none\n");
    }
    for c in &p.connected {
        out.push_str(&format!("  {}  {:<12} {}\n", c.peer_id, c.via, c.address));
    }
    out.push_str("found on the local network (mDNS):\n");
    if !p.mdns {
        out.push_str("  none (mDNS is off)\n");
    } else if p.lan.is_empty() {
        out.push_str("  none\n");
    }
    for l in &p.lan {
        out.push_str(&format!(
            "  {}  found via {}  {}\n",
            l.peer_id,
            l.source,
            l.addresses.join(" ")
        ));
    }
    out.push_str("cached:\n");
    if p.cached.is_empty() {
        out.push_str("  none\n");
    }
    for c in &p.cached {
        let last = match c.last_success_ms {
            Some(ms) => format!("last reached {}", time(ms)),
            None => "never reached".into(),
        };
        let kind = if c.relay { "relay" } else { "peer" };
        out.push_str(&format!(
            "  {}  {kind:<5} from {:<10} {last}  {}\n",
            c.peer_id,
            c.source,
            c.addresses.first().map(String::as_str).unwrap_or("")
        ));
    }
    out.trim_end().to_owned()
}

/// The safety number in three rows of four groups, easy to read aloud, and what to do with it.
pub fn safety_number(n: &SafetyNumber) -> String {
    let groups: Vec<&str> = n.safety_number.split(' ').collect();
    let mut out = format!("safety number with {} ({}):\n", n.name, n.peer_id);
    for row in groups.chunks(4) {
        out.push_str(&format!("  {}\n", row.join(" ")));
    }
    out.push_str(&format!(
        "compare it with {}'s (kolokol contacts verify <your name>) in person or on a call; \
         if the digits match, nobody swapped your keys in between",
        n.name
    ));
    out
}

/// The doctor's report: one line per check, its hint indented below when there is one.
pub fn doctor(checks: &[DoctorCheck]) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = match c.status.as_str() {
            "ok" => "[ok]  ",
            "warn" => "[warn]",
            _ => "[FAIL]",
        };
        out.push_str(&format!("{mark} {:<18} {}\n", c.name, c.detail));
        if let Some(hint) = &c.hint {
            out.push_str(&format!("       {:<18} hint: {hint}\n", ""));
        }
    }
    out.trim_end().to_owned()
}

/// The conversation list: one line per conversation (one-to-one, and each group, marked `#`),
/// the most recent first.
pub fn chats(list: &[ChatSummary], groups: &[GroupInfo]) -> String {
    if list.is_empty() && groups.is_empty() {
        return "no conversations yet (add a contact: kolokol contacts add NAME INVITE)".into();
    }
    let mut lines: Vec<(u64, String)> = list
        .iter()
        .map(|c| {
            let who = match &c.name {
                Some(name) if c.verified => format!("{} ✓", visible(name)),
                Some(name) => visible(name),
                None if c.request => format!("{} (request)", c.peer_id),
                None => format!("{} (not a contact)", c.peer_id),
            };
            let mut line = format!("{who:<20} {:>3} unread", c.unread);
            if c.waiting > 0 {
                line.push_str(&format!(
                    ", waiting for {}",
                    count(c.waiting, "message", "messages")
                ));
            }
            if let (Some(at), Some(text)) = (c.last_at_ms, &c.last_text) {
                let from = if c.last_from_me { "you: " } else { "" };
                let first: String =
                    text.lines().next().unwrap_or_default().chars().take(60).collect();
                let more = if first.len() < text.len() { "…" } else { "" };
                line.push_str(&format!("  [{}] {from}{}{more}", time(at), visible(&first)));
            }
            (c.last_at_ms.unwrap_or(0), line)
        })
        .collect();
    for g in groups {
        let who = format!("# {}", visible(&g.name));
        let mut line = format!(
            "{who:<20} {:>3} unread  {}",
            g.unread,
            count(u64::from(g.members), "member", "members")
        );
        if g.status != "member" {
            line.push_str(&format!(", {}", g.status));
        }
        if let Some(at) = g.last_at_ms {
            line.push_str(&format!("  [{}]", time(at)));
        }
        lines.push((g.last_at_ms.unwrap_or(0), line));
    }
    // Stable: the daemon's order among equal times is kept.
    lines.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let mut lines: Vec<String> = lines.into_iter().map(|(_, line)| line).collect();
    if list.iter().any(|c| c.request) {
        lines.push(
            "(a request is someone who is not your contact writing to you: accept with `kolokol contacts accept PEER_ID NAME`, or refuse with `kolokol contacts block PEER_ID`)"
                .into(),
        );
    }
    if !groups.is_empty() {
        lines.push("(# is a group: kolokol group show GROUP)".into());
    }
    lines.join("\n")
}

/// The most lines of one message `read` shows before cutting it (without `--full`).
pub const SHOWN_LINES: usize = 20;

/// The most characters of one message `read` shows before cutting it (without `--full`).
pub const SHOWN_CHARS: usize = 2000;

/// What a message's delivery state looks like beside it in a conversation.
pub fn ticks(e: &ChatEntry) -> String {
    match e.state.map(|s| s.as_str()) {
        Some("queued") => "· queued".into(),
        Some("stored") => "✓ stored in their mailbox".into(),
        Some("sent") => "✓ sent".into(),
        Some("delivered") => "✓✓ delivered".into(),
        Some("read") => "✓✓ read".into(),
        Some("failed") => match &e.detail {
            Some(why) => format!("✗ failed: {}", visible(why)),
            None => "✗ failed".into(),
        },
        _ => String::new(),
    }
}

/// One conversation, as `kolokol read` shows it: a line per message with its time, writer,
/// short id and text; line breaks kept, each further line of a message indented behind `│ `
/// (so no text can pass for a line of its own); long messages cut after [`SHOWN_LINES`] lines
/// or [`SHOWN_CHARS`] characters unless `full`; a line where earlier messages are missing.
pub fn chat(c: &Chat, full: bool) -> String {
    let name = c.name.clone().unwrap_or_else(|| "them".into());
    let mut out = match &c.name {
        Some(n) if c.verified => {
            format!("conversation with {} ({}), verified\n", visible(n), c.peer_id)
        }
        Some(n) => format!("conversation with {} ({})\n", visible(n), c.peer_id),
        None => format!(
            "conversation with {} (not a contact: kolokol contacts accept {} NAME, or block)\n",
            c.peer_id, c.peer_id
        ),
    };
    if c.entries.is_empty() {
        out.push_str("  no messages yet\n");
    }
    let mut cut = false;
    for e in &c.entries {
        if e.missing_before > 0 {
            let n = count(e.missing_before, "earlier message", "earlier messages");
            if e.missing_for_good {
                out.push_str(&format!("  … {n} from {} never arrived\n", visible(&name)));
            } else {
                out.push_str(&format!("  … waiting for {n} from {}\n", visible(&name)));
            }
        }
        let who = if e.from_me { "you".to_owned() } else { visible(&name) };
        let at = e.received_at_ms.unwrap_or(e.sent_at_ms);
        let unread = if !e.from_me && e.read_at_ms.is_none() { "* " } else { "" };
        let head = format!("[{}] {unread}{who:<8} {}  ", time(at), &e.id[..8]);
        let indent = " ".repeat(head.chars().count().saturating_sub(2));
        let (text, rest) = shown(&e.text, full);
        cut |= rest > 0;
        let mut lines = text.split('\n');
        out.push_str(&head);
        out.push_str(&visible(lines.next().unwrap_or_default()));
        let tick = ticks(e);
        for line in lines {
            out.push_str(&format!("\n{indent}│ {}", visible(line)));
        }
        if rest > 0 {
            out.push_str(&format!("\n{indent}… {rest} more bytes"));
        }
        if !tick.is_empty() {
            out.push_str(&format!("  ({tick})"));
        }
        out.push('\n');
    }
    if cut {
        out.push_str(
            "(long messages are cut; `--full` shows them whole, `--json` has the exact text)\n",
        );
    }
    out.trim_end().to_owned()
}

/// The part of a text `read` shows, and how many bytes it leaves out.
fn shown(text: &str, full: bool) -> (&str, usize) {
    if full {
        return (text, 0);
    }
    let mut end = text.len();
    if let Some((i, _)) = text.char_indices().nth(SHOWN_CHARS) {
        end = i;
    }
    if let Some((i, _)) = text.match_indices('\n').nth(SHOWN_LINES - 1) {
        end = end.min(i);
    }
    (&text[..end], text.len() - end)
}

#[cfg(test)]
mod tests;

/// One file transfer as `kolokol files` lists it: when it began, which way, with whom, the
/// name, how far it got, its state, and where a received file was saved.
pub fn file_transfer(t: &kolokol_protocol::control::FileTransfer) -> String {
    use kolokol_protocol::control::{FileDirection, FileState};
    let who = t.contact.clone().unwrap_or_else(|| t.peer_id.clone());
    let way = match t.direction {
        FileDirection::Out => format!("to {who}"),
        FileDirection::In => format!("from {who}"),
    };
    let percent = t.done.saturating_mul(100).checked_div(t.size).unwrap_or(100);
    let state = match t.state {
        FileState::Queued => "sending",
        FileState::Delivered => "delivered",
        FileState::Request => "request",
        FileState::Receiving => "receiving",
        FileState::Received => "received",
        FileState::Failed => "failed",
    };
    let mut line = format!(
        "[{}] {}  {way}  {}  {}/{} bytes ({percent}%)  {state}",
        time(t.created_at_ms),
        &t.id[..8.min(t.id.len())],
        visible(&t.name),
        t.done,
        t.size,
    );
    if let (FileDirection::In, Some(path)) = (t.direction, &t.path) {
        line.push_str(&format!("  saved to {}", visible(path)));
    }
    if let Some(detail) = &t.detail {
        line.push_str(&format!("  ({})", visible(detail)));
    }
    line
}
