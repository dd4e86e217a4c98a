//! `kolokol inbox` and `kolokol read`. `inbox` alone lists the conversations and groups with
//! their unread counts; with `--messages` or `--follow` it shows the received messages and group
//! texts, in the order they were written, then (with `--follow`) each new one as it arrives.
//! `read` shows one conversation, both ways. The messages shown (not the list) are marked read
//! unless `--peek`.

use std::process::ExitCode;

use kolokol_protocol::control::{
    Chat, ChatSummary, Event, GroupInfo, GroupReadResult, GroupText, InboxMessage, InboxReadResult,
    method,
};
use kolokol_protocol::message::MAX_READ_IDS;
use serde_json::json;

use crate::client::Client;
use crate::{offline, output, print_json, rpc, show};

/// `kolokol inbox` alone: the conversations and groups, with their unread counts.
pub(crate) async fn conversations(
    dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    // Groups are listed with the one-to-one conversations; `--json` keeps the `chats`
    // answer as documented (groups are `group.list`'s), and a stopped node's groups
    // are not read from its database (resolving them needs the daemon's group code).
    let (chats, groups): (Vec<ChatSummary>, Vec<GroupInfo>) =
        match rpc(dir, method::CHATS, json!({})).await {
            Err(e) => (offline(dir, key_file, e, json_out)?.chats()?, Vec::new()),
            Ok(chats) if json_out => (chats, Vec::new()),
            Ok(chats) => (chats, rpc(dir, method::GROUP_LIST, json!({})).await?),
        };
    show(json_out, &chats, |c| output::chats(c, &groups))
}

pub(crate) async fn inbox(
    dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
    follow: bool,
    limit: u32,
    mark_read: bool,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let mut client = match Client::connect(dir).await {
        Ok(client) => client,
        Err(e) if !follow => {
            let messages = offline(dir, key_file, e, json_out)?.inbox(limit)?;
            return show(json_out, &messages, |messages| {
                if messages.is_empty() {
                    "no messages".into()
                } else {
                    messages.iter().map(output::message).collect::<Vec<_>>().join("\n")
                }
            });
        }
        Err(e) => return Err(e),
    };
    // Subscribing before reading the inbox means nothing arrives unseen in between; a message
    // that is in both is shown once.
    if follow {
        let _: bool = client.call(method::SUBSCRIBE, json!({})).await?;
    }
    let messages: Vec<InboxMessage> = client.call(method::INBOX, json!({ "limit": limit })).await?;
    // Group texts are shown with the one-to-one messages, each line naming its group; `--json`
    // keeps the `inbox` answer as documented (group texts are `group.inbox`'s).
    let group_texts: Vec<GroupText> = if json_out {
        Vec::new()
    } else {
        client.call(method::GROUP_INBOX, json!({ "limit": limit })).await?
    };
    if json_out && !follow {
        print_json(&messages)?;
        if mark_read {
            read(&mut client, &messages).await?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let show = |m: &InboxMessage| -> anyhow::Result<()> {
        if json_out {
            say!("{}", serde_json::to_string(m)?)?;
        } else {
            say!("{}", output::message(m))?;
        }
        Ok(())
    };
    if messages.is_empty() && group_texts.is_empty() && !follow && !json_out {
        say!("no messages")?;
    }
    let mut seen: std::collections::HashSet<String> =
        messages.iter().map(|m| m.id.clone()).collect();
    seen.extend(group_texts.iter().map(|m| m.id.clone()));
    // Both kinds, in the order they were written (by the sender's send time, then arrival), as
    // the daemon orders the one-to-one messages.
    let mut lines: Vec<((u64, u64), String)> = group_texts
        .iter()
        .map(|m| ((m.sent_at_ms, m.received_at_ms), output::group_message(m)))
        .collect();
    for m in &messages {
        if json_out {
            show(m)?;
        } else {
            lines.push(((m.sent_at_ms, m.received_at_ms), output::message(m)));
        }
    }
    lines.sort_by_key(|(at, _)| *at);
    for (_, line) in &lines {
        say!("{line}")?;
    }
    // What was shown has been read: the daemon marks it, and tells the senders who are
    // contacts, once per message (group texts are marked read without telling anyone).
    if mark_read {
        read(&mut client, &messages).await?;
        read_groups(&mut client, &group_texts).await?;
    }
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        tokio::select! {
            event = client.next_event() => match event? {
                Event::Message(m) if !seen.contains(&m.id) => {
                    // A long text comes cut short in the event; the inbox has all of it.
                    let m = if m.truncated {
                        let recent: Vec<InboxMessage> = client.call(method::INBOX, json!({ "limit": 64 })).await?;
                        recent.into_iter().find(|r| r.id == m.id).unwrap_or(m)
                    } else {
                        m
                    };
                    show(&m)?;
                    if mark_read {
                        read(&mut client, std::slice::from_ref(&m)).await?;
                    }
                }
                Event::GroupMessage(m) if !seen.contains(&m.id) && !m.from_me => {
                    if json_out {
                        say!("{}", serde_json::to_string(&m)?)?;
                    } else {
                        say!("{}", output::group_message(&m))?;
                    }
                    if mark_read {
                        read_groups(&mut client, std::slice::from_ref(&m)).await?;
                    }
                }
                Event::Lagged { missed } => eprintln!("warning: {} missed; run kolokol inbox to see everything", output::count(missed, "event was", "events were")),
                Event::Rekeyed(r) => println!("{}", output::rekey(&r)),
                _ => {}
            },
            _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
        }
    }
}

/// `kolokol read NAME`: one conversation, both ways, in the order it was written (from the
/// database when no daemon runs); what it shows is marked read unless `peek`.
pub(crate) async fn read_conversation(
    dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
    name: &str,
    limit: u32,
    full: bool,
    peek: bool,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let params = json!({ "with": name, "limit": limit });
    let mut client = match Client::connect(dir).await {
        Ok(client) => client,
        Err(e) => {
            let chat = offline(dir, key_file, e, json_out)?.chat(name, limit)?;
            return show(json_out, &chat, |c| output::chat(c, full));
        }
    };
    let chat: Chat = client.call(method::CHAT, params).await?;
    let code = show(json_out, &chat, |c| output::chat(c, full))?;
    // What was shown has been read: the daemon marks it and tells the writer, if a
    // contact, once per message.
    if !peek {
        let unread: Vec<&str> = chat
            .entries
            .iter()
            .filter(|e| !e.from_me && e.read_at_ms.is_none())
            .map(|e| e.id.as_str())
            .collect();
        for ids in unread.chunks(MAX_READ_IDS) {
            let _: InboxReadResult = client.call(method::INBOX_READ, json!({ "ids": ids })).await?;
        }
    }
    Ok(code)
}

/// Marks the messages read through `inbox.read`, in requests of at most [`MAX_READ_IDS`] ids
/// so that even the longest listing stays far below the control API's line limit. Messages
/// that are already read are skipped here, saving the daemon a lookup; it would skip them too.
async fn read(client: &mut Client, messages: &[InboxMessage]) -> anyhow::Result<()> {
    let unread: Vec<&str> =
        messages.iter().filter(|m| m.read_at_ms.is_none()).map(|m| m.id.as_str()).collect();
    for ids in unread.chunks(MAX_READ_IDS) {
        let _: InboxReadResult = client.call(method::INBOX_READ, json!({ "ids": ids })).await?;
    }
    Ok(())
}

/// Marks read the groups these texts belong to, once each.
async fn read_groups(client: &mut Client, texts: &[GroupText]) -> anyhow::Result<()> {
    let groups: std::collections::BTreeSet<&str> = texts
        .iter()
        .filter(|t| t.read_at_ms.is_none() && !t.from_me)
        .map(|t| t.group.as_str())
        .collect();
    for group in groups {
        let _: GroupReadResult = client.call(method::GROUP_READ, json!({ "group": group })).await?;
    }
    Ok(())
}
