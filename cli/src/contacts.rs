//! `kolokol contacts ...`: adding, listing, verifying, renaming, replacing, accepting, blocking,
//! unblocking and removing contacts. Each subcommand is at most one control-API call (`list`
//! reads the database when no daemon runs); the contacts' work is the daemon's.

use std::process::ExitCode;

use kolokol_protocol::control::{
    BlockResult, Blocked, Contact, ContactReplaced, SafetyNumber, method,
};
use serde_json::json;

use crate::args::ContactsCommand;
use crate::failure::Refused;
use crate::{offline, output, rpc, show};

/// `kolokol contacts ...`: each subcommand is at most one control-API call (`list` reads the
/// database when no daemon runs).
pub(crate) async fn contacts(
    dir: &std::path::Path,
    key_file: Option<&std::path::Path>,
    command: &ContactsCommand,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    match command {
        ContactsCommand::Add { name, invite } => {
            let contact: Contact =
                rpc(dir, method::CONTACTS_ADD, json!({ "name": name, "invite": invite })).await?;
            show(json_out, &contact, |c| format!("added {} ({})", c.name, c.peer_id))
        }
        ContactsCommand::List => {
            let contacts: Vec<Contact> = match rpc(dir, method::CONTACTS_LIST, json!({})).await {
                Err(e) => offline(dir, key_file, e, json_out)?.contacts()?,
                answer => answer?,
            };
            show(json_out, &contacts, |contacts| {
                if contacts.is_empty() {
                    "no contacts yet (add one with: kolokol contacts add NAME INVITE)".into()
                } else {
                    contacts.iter().map(output::contact).collect::<Vec<_>>().join("\n")
                }
            })
        }
        ContactsCommand::Verify { name, mark: false, unmark: false } => {
            let number: SafetyNumber =
                rpc(dir, method::CONTACTS_VERIFY, json!({ "name": name })).await?;
            show(json_out, &number, output::safety_number)
        }
        ContactsCommand::Verify { name, mark, .. } => {
            let contact: Contact =
                rpc(dir, method::CONTACTS_MARK, json!({ "name": name, "verified": mark })).await?;
            show(json_out, &contact, |c| {
                if c.verified {
                    format!("marked {} verified", output::visible(&c.name))
                } else {
                    format!("{} is no longer marked verified", output::visible(&c.name))
                }
            })
        }
        ContactsCommand::Rename { name, new_name } => {
            let contact: Contact =
                rpc(dir, method::CONTACTS_RENAME, json!({ "name": name, "new_name": new_name }))
                    .await?;
            show(json_out, &contact, |c| format!("renamed {name} to {}", output::visible(&c.name)))
        }
        ContactsCommand::Replace { name, invite, yes } => {
            replace_contact(dir, name, invite, *yes, json_out).await
        }
        ContactsCommand::Accept { peer_id, name } => {
            let contact: Contact =
                rpc(dir, method::CONTACTS_ACCEPT, json!({ "peer_id": peer_id, "name": name }))
                    .await?;
            show(json_out, &contact, |c| {
                format!("accepted {} ({}) as a contact", output::visible(&c.name), c.peer_id)
            })
        }
        ContactsCommand::Block { peer_id } => {
            let result: BlockResult =
                rpc(dir, method::CONTACTS_BLOCK, json!({ "peer_id": peer_id })).await?;
            show(json_out, &result, |r| {
                format!(
                    "blocked {} (deleted {})",
                    r.peer_id,
                    output::count(r.removed_messages, "message", "messages")
                )
            })
        }
        ContactsCommand::Unblock { peer_id } => {
            let result: BlockResult =
                rpc(dir, method::CONTACTS_UNBLOCK, json!({ "peer_id": peer_id })).await?;
            show(json_out, &result, |r| format!("unblocked {}", r.peer_id))
        }
        ContactsCommand::Blocked => {
            let list: Vec<Blocked> = rpc(dir, method::CONTACTS_BLOCKED, json!({})).await?;
            show(json_out, &list, |list| {
                if list.is_empty() {
                    "nobody is blocked".into()
                } else {
                    list.iter()
                        .map(|b| {
                            format!("{}\tblocked {}", b.peer_id, output::time(b.blocked_at_ms))
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }
            })
        }
        ContactsCommand::Remove { name } => {
            let contact: Contact =
                rpc(dir, method::CONTACTS_REMOVE, json!({ "name": name })).await?;
            show(json_out, &contact, |c| format!("removed {}", c.name))
        }
    }
}

/// `kolokol contacts replace NAME INVITE`: refused without `--yes`, saying whose identity
/// would replace the contact's; with it, the daemon replaces it, and a warning on stderr says
/// that the safety numbers are to be compared again.
async fn replace_contact(
    dir: &std::path::Path,
    name: &str,
    invite: &str,
    yes: bool,
    json_out: bool,
) -> anyhow::Result<ExitCode> {
    if !yes {
        let new =
            kolokol_protocol::invite::Invite::from_text(invite, kolokol_node::clock::unix_secs())
                .map(|(_, peer)| peer.to_string())
                .unwrap_or_else(|_| "an unreadable invite".into());
        return Err(Refused {
            code: "confirm",
            message: format!(
                "this replaces {name}'s identity with {new}: do it only if {name} told you, in person or over a channel you trust, that they started over; someone handing you an invite in their name could be impersonating them. Messages stay with the old identity, and the verified mark goes. Run again with --yes to replace"
            ),
        }
        .into());
    }
    let replaced: ContactReplaced =
        rpc(dir, method::CONTACTS_REPLACE, json!({ "name": name, "invite": invite })).await?;
    if !json_out {
        eprintln!(
            "warning: {}'s identity changed from {} to {}; compare safety numbers again (kolokol contacts verify {}){}",
            output::visible(&replaced.contact.name),
            replaced.old_peer_id,
            replaced.contact.peer_id,
            output::visible(&replaced.contact.name),
            if replaced.was_verified {
                ": the old one was marked verified, the new one is not"
            } else {
                ""
            }
        );
    }
    show(json_out, &replaced, |r| {
        format!("replaced {} ({})", output::visible(&r.contact.name), r.contact.peer_id)
    })
}
