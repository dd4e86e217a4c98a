//! `kolokol inbox --messages` and `--follow`: the received messages and group texts, in the
//! order they were written, then (with `--follow`) each new one as it arrives; what was shown is
//! marked read unless `--peek`. The conversation list (`kolokol inbox` alone) is one call in
//! `run`, in `main.rs`.

use std::process::ExitCode;

use kolokol_protocol::control::{
    Event, GroupReadResult, GroupText, InboxMessage, InboxReadResult, method,
};
use kolokol_protocol::message::MAX_READ_IDS;
use serde_json::json;

use crate::client::Client;
use crate::{offline, output, print_json, show};

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
