//! Passphrases: typed at the terminal without echo, or read from a file or standard input for
//! scripts; and what unlocks an encrypted store (`kolokol init --encrypt`) for the commands
//! that open the data directory themselves (`node`, `relay`, the offline reads, `passphrase`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use kolokol_node::data_dir::DATABASE_FILE;
use kolokol_node::store_key::{self, Unlock};
use ratatui::crossterm::event::{self as term, KeyCode, KeyEventKind, KeyModifiers};
use zeroize::Zeroizing;

use crate::failure::Refused;

/// The environment variable naming a file whose first line is the store's passphrase: for a
/// daemon started by systemd or a script, which has no terminal to type it at.
pub const PASSPHRASE_FILE_VARIABLE: &str = "KOLOKOL_PASSPHRASE_FILE";

/// The same for the new passphrase of `kolokol passphrase` and `kolokol init --encrypt`.
pub const NEW_PASSPHRASE_FILE_VARIABLE: &str = "KOLOKOL_NEW_PASSPHRASE_FILE";

/// Reads a passphrase: at a terminal, typed without echo (twice with `confirm`); otherwise the
/// first line of standard input, for scripts.
pub fn passphrase(confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    if !std::io::stdin().is_terminal() {
        let mut line = Zeroizing::new(String::new());
        std::io::stdin().lock().read_line(&mut line).context("cannot read the passphrase")?;
        return Ok(Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned()));
    }
    typed_twice("passphrase: ", confirm)
}

/// What unlocks the store of `dir`: nothing for a plain store (or none yet); for an encrypted
/// one, `--key-file`, else the passphrase in the file [`PASSPHRASE_FILE_VARIABLE`] names,
/// else the passphrase typed at the terminal. Without any of these the command fails with one
/// line saying how to give it; standard input is not read, since a daemon's is often
/// `/dev/null`.
pub fn unlock(dir: &Path, key_file: Option<&Path>) -> anyhow::Result<Option<Unlock>> {
    if let Some(file) = key_file {
        return Ok(Some(Unlock::KeyFile(file.to_owned())));
    }
    // A database that is not plain SQLite but has no key parameters is damaged or has lost
    // them; asking for a passphrase would not help, and opening it says which.
    if !store_key::is_encrypted(&dir.join(DATABASE_FILE))?
        || !dir.join(store_key::KEY_PARAMS_FILE).exists()
    {
        return Ok(None);
    }
    if let Some(text) = from_file(PASSPHRASE_FILE_VARIABLE)? {
        return Ok(Some(Unlock::Passphrase(text)));
    }
    if std::io::stdin().is_terminal() {
        let prompt = format!("passphrase of {}: ", dir.display());
        return Ok(Some(Unlock::Passphrase(typed(&prompt)?)));
    }
    Err(Refused {
        code: "locked",
        message: format!(
            "the store in {} is encrypted: run at a terminal to type its passphrase, set {PASSPHRASE_FILE_VARIABLE} to a file that holds it, or give --key-file FILE",
            dir.display()
        ),
    }
    .into())
}

/// A new way to unlock a store, for `init --encrypt` and `passphrase`: `new_key_file` if
/// given, else the passphrase in the file [`NEW_PASSPHRASE_FILE_VARIABLE`] names, else typed
/// twice at the terminal, else the first line of standard input.
pub fn new_unlock(new_key_file: Option<&Path>) -> anyhow::Result<Unlock> {
    if let Some(file) = new_key_file {
        return Ok(Unlock::KeyFile(file.to_owned()));
    }
    if let Some(text) = from_file(NEW_PASSPHRASE_FILE_VARIABLE)? {
        return Ok(Unlock::Passphrase(text));
    }
    if std::io::stdin().is_terminal() {
        return Ok(Unlock::Passphrase(typed_twice("new passphrase: ", true)?));
    }
    let text = passphrase(false)?;
    if text.is_empty() {
        // Not a passphrase too short: none was given (standard input was empty, as under a
        // script or a service), so say every way to give one.
        anyhow::bail!(
            "no new passphrase: type it at a terminal, give it as the first line of standard input, set {NEW_PASSPHRASE_FILE_VARIABLE} to a file that holds it, or use a key file"
        );
    }
    Ok(Unlock::Passphrase(text))
}

/// The first line of the file the environment variable `variable` names, if it is set and not
/// empty.
fn from_file(variable: &str) -> anyhow::Result<Option<Zeroizing<String>>> {
    let Some(path) = std::env::var_os(variable).filter(|p| !p.is_empty()).map(PathBuf::from) else {
        return Ok(None);
    };
    let text = Zeroizing::new(
        std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {} ({variable})", path.display()))?,
    );
    let line = text.lines().next().unwrap_or_default();
    Ok(Some(Zeroizing::new(line.trim_end_matches('\r').to_owned())))
}

/// A passphrase typed at the terminal, twice with `confirm`.
fn typed_twice(prompt: &str, confirm: bool) -> anyhow::Result<Zeroizing<String>> {
    let first = typed(prompt)?;
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
