//! `kolokol init` and `kolokol passphrase`: make a data directory's store and identity, plain
//! or encrypted, and change the key of an encrypted store. Both open the data directory in this
//! process (`kolokol_node::data_dir`), never through a daemon.

use std::process::ExitCode;

use serde_json::json;

use crate::{passphrases, show};

/// `kolokol init [--encrypt]`.
pub(crate) fn init(
    dir: &std::path::Path,
    encrypt: bool,
    key_file: Option<&std::path::Path>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    if !encrypt {
        let unlock = passphrases::unlock(dir, key_file)?;
        let data_dir = kolokol_node::data_dir::DataDir::open(dir)?;
        let (_, identity) = data_dir.open_node_store(unlock.as_ref())?;
        let peer_id = identity.peer_id().to_string();
        return show(json_out, &json!({ "peer_id": peer_id, "data_dir": dir }), |_| {
            format!(
                "{} is ready, peer id {peer_id}; start it with: kolokol --data-dir {} node",
                dir.display(),
                dir.display()
            )
        });
    }
    let unlock = passphrases::new_unlock(key_file)?;
    let done = kolokol_node::data_dir::encrypt(dir, &unlock)?;
    let value = json!({ "peer_id": done.peer_id, "data_dir": dir, "migrated": done.migrated });
    show(json_out, &value, |_| {
        let shown = dir.display();
        let what = if done.migrated {
            format!(
                "encrypted the store in {shown}: every message and the identity are in it, and the plaintext database and identity.key are overwritten and gone"
            )
        } else {
            format!("created {shown} with an encrypted store and a new identity in it")
        };
        format!(
            "{what}; peer id {}. Start it with: kolokol --data-dir {shown} node (it asks for the passphrase). A forgotten passphrase cannot be recovered.",
            done.peer_id
        )
    })
}

/// `kolokol passphrase`.
pub(crate) fn change_passphrase(
    dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
    new_key_file: Option<&std::path::Path>,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    let database = dir.join(kolokol_node::data_dir::DATABASE_FILE);
    if !kolokol_node::store_key::is_encrypted(&database)? {
        return Err(kolokol_node::Error::NotEncrypted(dir.to_owned()).into());
    }
    let old = passphrases::unlock(dir, key_file)?
        .ok_or_else(|| kolokol_node::Error::NotEncrypted(dir.to_owned()))?;
    let new = passphrases::new_unlock(new_key_file)?;
    kolokol_node::data_dir::change_key(dir, &old, &new)?;
    show(json_out, &json!({ "data_dir": dir, "changed": true }), |_| {
        format!(
            "changed the key of the store in {}; the old passphrase no longer opens it",
            dir.display()
        )
    })
}
