//! `kolokol backup FILE` and `kolokol restore FILE`: one file, sealed with a passphrase, that
//! carries a node (identity, contacts, conversations, messages) to a new machine.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use kolokol_protocol::control::{SnapshotInfo, method};
use ratatui::crossterm::event::{self as term, KeyCode, KeyEventKind, KeyModifiers};
use serde_json::json;
use zeroize::Zeroizing;

use crate::Refused;
use crate::client::NoDaemon;

/// The shortest passphrase a backup is sealed with: the key derivation slows guessing down,
/// it does not make a short passphrase strong.
pub const MIN_PASSPHRASE_CHARS: usize = 10;

/// Reads a passphrase: at a terminal, typed without echo (twice with `confirm`); otherwise the
/// first line of standard input, for scripts.
fn passphrase(confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line).context("cannot read the passphrase")?;
        let trimmed = Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned());
        return Ok(trimmed);
    }
    let first = typed("passphrase: ")?;
    if confirm && *typed("the same passphrase again: ")? != *first {
        return Err(Refused {
            code: "bad_passphrase",
            message: "the two passphrases differ".into(),
        }
        .into());
    }
    Ok(first)
}

/// One line typed at the terminal without echo.
fn typed(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    ratatui::crossterm::terminal::enable_raw_mode()
        .context("cannot turn off the terminal's echo")?;
    let mut text = Zeroizing::new(String::new());
    let result = loop {
        match term::read() {
            Ok(term::Event::Key(key)) if key.kind == KeyEventKind::Press => match key.code {
                KeyCode::Enter => break Ok(()),
                KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                    break Err(
                        Refused { code: "interrupted", message: "interrupted".into() }.into()
                    );
                }
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            },
            Ok(_) => {}
            Err(e) => break Err(anyhow::Error::from(e).context("cannot read the terminal")),
        }
    };
    let _ = ratatui::crossterm::terminal::disable_raw_mode();
    eprintln!();
    result.map(|()| text)
}

/// `kolokol backup FILE`.
pub async fn backup(dir: &Path, file: &Path, json_out: bool) -> anyhow::Result<()> {
    if file.exists() {
        return Err(Refused {
            code: "exists",
            message: format!(
                "{} exists; choose another name (a backup never overwrites)",
                file.display()
            ),
        }
        .into());
    }
    let passphrase = passphrase(true)?;
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(Refused {
            code: "bad_passphrase",
            message: format!("the passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters; a few random words make a good one"),
        }
        .into());
    }
    // A snapshot through the daemon while it runs, else straight from the stopped node's
    // database.
    let snapshot = match crate::rpc::<SnapshotInfo>(dir, method::BACKUP_SNAPSHOT, json!({})).await {
        Ok(info) => std::path::PathBuf::from(info.path),
        Err(e) if e.downcast_ref::<NoDaemon>().is_some() => {
            kolokol_node::offline::Offline::open(dir, None).map_err(|_| e)?.snapshot()?
        }
        Err(e) => return Err(e),
    };
    let database = std::fs::read(&snapshot);
    let _ = std::fs::remove_file(&snapshot);
    let database = database.with_context(|| format!("cannot read {}", snapshot.display()))?;
    let identity_path = dir.join(kolokol_node::data_dir::IDENTITY_FILE);
    let identity = std::fs::read(&identity_path)
        .with_context(|| format!("cannot read {}", identity_path.display()))?;
    let sealed = kolokol_node::backup::seal(passphrase.as_bytes(), identity, database)?;
    let mut out = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    out.write_all(&sealed)
        .and_then(|()| out.sync_all())
        .with_context(|| format!("cannot write {}", file.display()))?;
    if json_out {
        crate::print_json(&json!({ "file": file, "bytes": sealed.len() }))?;
    } else {
        println!(
            "wrote {} ({} bytes): your identity, contacts, conversations and messages, sealed with the passphrase; keep the file and the passphrase apart",
            file.display(),
            sealed.len()
        );
    }
    Ok(())
}

/// `kolokol restore FILE`.
pub fn restore(dir: &Path, file: &Path, replace: bool, json_out: bool) -> anyhow::Result<()> {
    let sealed = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    kolokol_protocol::backup::parse(&sealed)?;
    let passphrase = passphrase(false)?;
    let contents = kolokol_protocol::backup::open(passphrase.as_bytes(), &sealed)?;
    let restored = kolokol_node::backup::restore(dir, &contents, replace)?;
    if json_out {
        crate::print_json(&json!({
            "peer_id": restored.peer_id,
            "data_dir": dir,
            "contacts": restored.contacts,
            "waiting_messages": restored.waiting,
        }))?;
    } else {
        println!(
            "restored {} into {}: {}, {} waiting to go out; start it with: kolokol --data-dir {} node",
            restored.peer_id,
            dir.display(),
            crate::output::count(restored.contacts as u64, "contact", "contacts"),
            crate::output::count(restored.waiting, "message", "messages"),
            dir.display()
        );
    }
    Ok(())
}
