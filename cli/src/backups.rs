//! `kolokol backup FILE` and `kolokol restore FILE`: one file, sealed with a passphrase, that
//! carries a node (identity, contacts, conversations, messages) to a new machine.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use kolokol_node::backup::Snapshot;
use kolokol_protocol::control::{SnapshotInfo, method};
use serde_json::json;

use crate::client::NoDaemon;
use crate::failure::Refused;
use crate::passphrases::passphrase;

/// The shortest passphrase a backup is sealed with: the key derivation slows guessing down,
/// it does not make a short passphrase strong.
pub const MIN_PASSPHRASE_CHARS: usize = 10;

/// The passphrase a backup is sealed with or opened by; none at all (an empty standard input,
/// as under a script) is said as such, not as a passphrase too short or a wrong one.
fn backup_passphrase(confirm: bool) -> anyhow::Result<zeroize::Zeroizing<String>> {
    let text = passphrase(confirm)?;
    if text.is_empty() {
        return Err(Refused {
            code: "no_passphrase",
            message: "no passphrase for the backup: type it at a terminal, or give it as the first line of standard input".into(),
        }
        .into());
    }
    Ok(text)
}

/// `kolokol backup FILE`.
pub async fn backup(
    dir: &Path,
    file: &Path,
    key_file: Option<&Path>,
    json_out: bool,
) -> anyhow::Result<()> {
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
    let passphrase = backup_passphrase(true)?;
    if passphrase.chars().count() < MIN_PASSPHRASE_CHARS {
        return Err(Refused {
            code: "bad_passphrase",
            message: format!("the passphrase is shorter than {MIN_PASSPHRASE_CHARS} characters; a few random words make a good one"),
        }
        .into());
    }
    // A snapshot through the daemon while it runs, else straight from the stopped node's
    // database (an encrypted one opened with its passphrase or key file). An encrypted store's
    // snapshot comes encrypted under a key of its own, and is decrypted only in memory here.
    let snapshot = match crate::rpc::<SnapshotInfo>(dir, method::BACKUP_SNAPSHOT, json!({})).await {
        Ok(info) => {
            // Whatever is refused here, the snapshot is not left behind.
            let path = std::path::PathBuf::from(info.path);
            let refuse = |e: anyhow::Error| {
                let _ = std::fs::remove_file(&path);
                Err(e)
            };
            let key = match info.key.as_deref() {
                None => None,
                Some(text) => match kolokol_node::store_key::StoreKey::from_hex(text) {
                    Some(key) => Some(key),
                    None => {
                        return refuse(anyhow::anyhow!(
                            "the daemon's snapshot key is not 64 hex digits"
                        ));
                    }
                },
            };
            // A daemon from before encrypted snapshots answers with no key and writes the copy
            // under the store's own key, which this CLI cannot read: said as such, not as a
            // missing identity file further on.
            let database = dir.join(kolokol_node::data_dir::DATABASE_FILE);
            let encrypted = match kolokol_node::store_key::is_encrypted(&database) {
                Ok(encrypted) => encrypted,
                Err(e) => return refuse(e.into()),
            };
            if key.is_none() && encrypted {
                return refuse(Refused {
                    code: "encrypted",
                    message: "the running daemon did not give a key for the snapshot of its encrypted store (it is older than this kolokol): restart it with this version, or back up while it is stopped".into(),
                }
                .into());
            }
            Snapshot { path, key }
        }
        Err(e) if e.downcast_ref::<NoDaemon>().is_some() => {
            let unlock = crate::passphrases::unlock(dir, key_file)?;
            kolokol_node::offline::Offline::open(dir, unlock.as_ref())?.snapshot()?
        }
        Err(e) => return Err(e),
    };
    let copy = snapshot.read()?;
    let identity = match copy.secret {
        Some(identity) => identity,
        None => {
            let identity_path = dir.join(kolokol_node::data_dir::IDENTITY_FILE);
            zeroize::Zeroizing::new(
                std::fs::read(&identity_path)
                    .with_context(|| format!("cannot read {}", identity_path.display()))?,
            )
        }
    };
    let sealed = kolokol_node::backup::seal(passphrase.as_bytes(), identity, copy.database)?;
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
    let passphrase = backup_passphrase(false)?;
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
