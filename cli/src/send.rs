//! `kolokol send`, of a text or a file: the text comes from the command line or standard input;
//! the message is committed first, so its id is known as soon as it is safe, then the command
//! follows its first delivery attempt (a file: its progress) through `state` events, and Ctrl-C
//! at any point says what became of it.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use kolokol_protocol::control::{
    Event, FileState, FileTransfer, MessageStatus, SendResult, method,
};
use serde_json::json;

use crate::args::MAX_LIST_LIMIT;
use crate::client::Client;
use crate::failure::{Refused, json_error};
use crate::{output, print_json};

/// The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
const INTERRUPTED: u8 = 130;

/// The text of `kolokol send NAME TEXT...`: its words joined with single spaces, or with `-`
/// alone, standard input without its final newlines. An empty text is refused before the
/// daemon is asked.
pub(crate) fn message_text(text: &[String]) -> anyhow::Result<String> {
    let text = if text.len() == 1 && text[0] == "-" {
        if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            eprintln!("type the message, then Ctrl-D");
        }
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .context("cannot read the message from standard input")?;
        buf.trim_end_matches('\n').to_owned()
    } else {
        text.join(" ")
    };
    if text.trim().is_empty() {
        return Err(Refused { code: "bad_message", message: "the message is empty".into() }.into());
    }
    Ok(text)
}

/// `kolokol send`: commits the message (`send` with `wait: false`, so the id is known as soon
/// as the message is safe), then waits for the first delivery attempt's outcome through
/// `state` events. Ctrl-C at any point says what became of the message: committed and still
/// going out, or not confirmed yet.
pub(crate) async fn send(
    dir: &std::path::Path,
    name: &str,
    text: String,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    // Registered before anything is asked of the daemon, so no Ctrl-C goes unanswered.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot install the Ctrl-C handler")?;
    // Subscribed before sending, so no state change of the new message is missed.
    let mut events = Client::connect(dir).await?;
    let _: bool = events.call(method::SUBSCRIBE, json!({})).await?;
    let mut client = Client::connect(dir).await?;
    let committed: SendResult = {
        let call = client.call(method::SEND, json!({ "to": name, "text": text, "wait": false }));
        tokio::pin!(call);
        tokio::select! {
            result = &mut call => result?,
            _ = interrupt.recv() => {
                // The daemon answers a commit at once; the answer says whether it happened.
                match tokio::time::timeout(COMMIT_WAIT, &mut call).await {
                    Ok(Ok(committed)) => return interrupted(&committed, dir, json_out),
                    _ => {
                        let message = format!(
                            "interrupted before the daemon confirmed the message: it may or may not be in the outbox; see: kolokol --data-dir {} outbox",
                            dir.display()
                        );
                        return Ok(interrupted_exit(&message, json_out));
                    }
                }
            }
        }
    };
    // A group text comes back with its first attempts made (its summed state, or `queued`
    // with a detail); a contact's text comes back `queued` with none, and its first attempt's
    // outcome follows as events.
    let result = if committed.state != "queued" || committed.detail.is_some() {
        committed
    } else {
        tokio::select! {
            result = first_outcome(&mut events, &mut client, &committed.id) => result?,
            _ = interrupt.recv() => return interrupted(&committed, dir, json_out),
        }
    };
    if json_out {
        print_json(&result)?;
    } else {
        match (&result.detail, result.state.as_str()) {
            (None, _) => say!("{} {}", result.id, result.state)?,
            (Some(why), "failed") => {
                say!("{} failed", result.id)?;
                eprintln!("error: message not delivered: {}", output::visible(why));
            }
            (Some(why), "queued") => {
                say!("{} {} (will retry: {})", result.id, result.state, output::visible(why))?
            }
            (Some(detail), _) => {
                say!("{} {} ({})", result.id, result.state, output::visible(detail))?
            }
        }
    }
    // A message the recipient refused for good is a failed command; a queued one is not:
    // the outbox delivers it later.
    Ok(if result.state == "failed" { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// `send --file`: records the file in the daemon, then follows its `file` events with a
/// progress bar (on a terminal) until the recipient has it whole (exit 0), refused it (exit 1),
/// or an attempt failed without moving the file on and the daemon will try again (exit 0, as
/// for a queued text; a drop mid-way is only noted, since the next attempt goes on from there).
/// Ctrl-C stops the command, never the transfer (exit 130).
pub(crate) async fn send_file(
    dir: &std::path::Path,
    name: &str,
    path: &std::path::Path,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot install the Ctrl-C handler")?;
    // The daemon reads the file, so it gets a path that does not depend on our directory.
    let path = std::path::absolute(path)
        .with_context(|| format!("cannot resolve the path {}", path.display()))?;
    let mut events = Client::connect(dir).await?;
    let _: bool = events.call(method::SUBSCRIBE, json!({})).await?;
    let mut client = Client::connect(dir).await?;
    let started: FileTransfer = client
        .call(method::FILE_SEND, json!({ "to": name, "path": path.display().to_string() }))
        .await?;
    let bar = if json_out {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::with_draw_target(
            Some(started.size),
            indicatif::ProgressDrawTarget::stderr(),
        )
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(output::visible(&started.name));
    let id = started.id.clone();
    // What the recipient held when the last attempt failed: a failure that moved nothing since
    // ends the wait.
    let mut progress_at_failure = started.done;
    let last = loop {
        let event = tokio::select! {
            event = events.next_event() => event?,
            _ = interrupt.recv() => {
                bar.finish_and_clear();
                let message = format!(
                    "interrupted: file {id} is committed and will still go out (the daemon goes on where it stopped, across restarts); follow it with: kolokol --data-dir {} files",
                    dir.display()
                );
                return Ok(interrupted_exit(&message, json_out));
            }
        };
        let transfer = match event {
            Event::File(t) if t.id == id => t,
            // Events were dropped: the daemon's list says where the file is.
            Event::Lagged { .. } => {
                let files: Vec<FileTransfer> =
                    client.call(method::FILES, json!({ "limit": MAX_LIST_LIMIT })).await?;
                match files.into_iter().find(|t| t.id == id) {
                    Some(t) => t,
                    None => continue,
                }
            }
            _ => continue,
        };
        bar.set_position(transfer.done);
        match transfer.state {
            FileState::Delivered | FileState::Failed => break transfer,
            // An attempt failed. If it had moved the file on (a connection dropped mid-way),
            // the daemon's next attempt goes on from there soon: keep following. If it moved
            // nothing (the recipient is away), stop, as `send` does for a queued text.
            FileState::Queued if transfer.detail.is_some() => {
                if transfer.done <= progress_at_failure {
                    break transfer;
                }
                progress_at_failure = transfer.done;
                bar.suspend(|| {
                    eprintln!(
                        "note: {}; the daemon goes on from byte {}",
                        output::visible(transfer.detail.as_deref().unwrap_or("the attempt failed")),
                        transfer.done
                    )
                });
            }
            _ => {}
        }
    };
    // The line that follows says how it ended; the bar would share its terminal line.
    bar.finish_and_clear();
    if json_out {
        print_json(&last)?;
    } else {
        match (last.state, &last.detail) {
            (FileState::Failed, why) => {
                say!("{} failed", last.id)?;
                let why = why.as_deref().unwrap_or("no reason given");
                eprintln!("error: file not delivered: {}", output::visible(why));
            }
            (FileState::Queued, Some(why)) => say!(
                "{} queued, {} of {} bytes delivered (will retry: {})",
                last.id,
                last.done,
                last.size,
                output::visible(why)
            )?,
            _ => say!("{} delivered ({} bytes)", last.id, last.size)?,
        }
    }
    Ok(if last.state == FileState::Failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// How long `send`, interrupted while committing, waits for the daemon's answer: a commit is
/// one database transaction, so the answer is normally there within milliseconds.
const COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Says that `send` was interrupted after the message was committed: its id on stdout (or the
/// `queued` result with `--json`), that it will still go out on stderr; exit 130.
fn interrupted(
    committed: &SendResult,
    dir: &std::path::Path,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    if json_out {
        print_json(committed)?;
    } else {
        say!("{} queued", committed.id)?;
    }
    let message = format!(
        "interrupted: message {} is committed to the outbox and will still go out (the daemon retries it for up to 14 days); follow it with: kolokol --data-dir {} status {}",
        committed.id,
        dir.display(),
        committed.id
    );
    Ok(interrupted_exit(&message, json_out))
}

/// Says on stderr, as JSON with `--json`, what an interrupted command leaves behind; the
/// exit status for it.
fn interrupted_exit(message: &str, json_out: bool) -> ExitCode {
    if json_out {
        eprintln!("{}", json_error("interrupted", None, message));
    } else {
        eprintln!("{message}");
    }
    ExitCode::from(INTERRUPTED)
}

/// The outcome of a message's first delivery attempt, from `state` events: sent, stored,
/// failed, or queued again with the reason the attempt failed (a `queued` without a detail is
/// only the commit). If events were dropped, the message's own state answers instead.
async fn first_outcome(
    events: &mut Client,
    client: &mut Client,
    id: &str,
) -> anyhow::Result<SendResult> {
    loop {
        match events.next_event().await? {
            Event::State(change) if change.id == id => {
                if change.state == "queued" && change.detail.is_none() {
                    continue;
                }
                // A direct acknowledgement makes a text sent and delivered in one commit, and
                // the two events follow each other: the message's state says where it is.
                if change.state == "sent" {
                    let status: MessageStatus =
                        client.call(method::MESSAGE, json!({ "id": id })).await?;
                    let m = status.message;
                    return Ok(SendResult { id: id.to_owned(), state: m.state, detail: m.detail });
                }
                return Ok(SendResult {
                    id: id.to_owned(),
                    state: change.state,
                    detail: change.detail,
                });
            }
            Event::Lagged { .. } => {
                let status: MessageStatus =
                    client.call(method::MESSAGE, json!({ "id": id })).await?;
                let m = status.message;
                if m.state != "queued" || m.attempts > 0 {
                    return Ok(SendResult { id: id.to_owned(), state: m.state, detail: m.detail });
                }
            }
            _ => {}
        }
    }
}
