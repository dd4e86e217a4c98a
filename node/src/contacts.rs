//! Contacts: adding one from their invite (which starts the conversation with them), listing,
//! removing (their messages stay), and the safety number to compare with them.

use std::collections::HashSet;
use std::sync::Arc;

use kolokol_protocol::control;
use kolokol_protocol::invite::Invite;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::conversations::Conversations;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::store::{ContactRow, ConversationWrite, Store};

/// Longest contact name, in bytes.
pub const MAX_CONTACT_NAME_LEN: usize = 64;

/// The contact book.
#[derive(Clone)]
pub(crate) struct Contacts {
    /// The contacts' peer ids, for the swarm task, which never limits them like strangers.
    pub(crate) peers: Arc<watch::Sender<Arc<HashSet<PeerId>>>>,
    pub(crate) store: Store,
    pub(crate) keys: Keys,
    pub(crate) conversations: Conversations,
    pub(crate) clock: Clock,
}

impl Contacts {
    /// Adds a contact from their invite code and starts the conversation with them.
    pub(crate) fn add(&self, name: &str, invite_text: &str) -> Result<control::Contact> {
        check_name(name)?;
        let (invite, peer) = Invite::from_text(invite_text, self.clock.now_secs())?;
        if peer == self.keys.peer_id() {
            return Err(Error::ContactExists("that invite is your own".into()));
        }
        let addresses = invite
            .addresses
            .iter()
            .map(|bytes| {
                Multiaddr::try_from(bytes.clone()).map_err(|e| {
                    Error::Protocol(kolokol_protocol::Error::Invite(format!(
                        "carries an unreadable address: {e}"
                    )))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let row = ContactRow {
            name: name.to_owned(),
            peer_id: peer,
            device_key: invite.certificate.device_key,
            addresses,
            added_at_ms: self.clock.now_ms(),
        };
        let start = self.conversations.first_state(invite.certificate)?;
        let first =
            ConversationWrite { peer: &peer, state: &start.state, key_ids: Some(&start.key_ids) };
        self.store.add_contact_with(&row, Some(&first))?;
        self.publish()?;
        Ok(contact_view(row))
    }

    /// All contacts, by name.
    pub(crate) fn list(&self) -> Result<Vec<control::Contact>> {
        Ok(self.store.contacts()?.into_iter().map(contact_view).collect())
    }

    /// Removes a contact; messages to and from them stay.
    pub(crate) fn remove(&self, name: &str) -> Result<control::Contact> {
        let removed = self
            .store
            .remove_contact(name)?
            .map(contact_view)
            .ok_or_else(|| Error::UnknownContact(name.to_owned()))?;
        self.publish()?;
        Ok(removed)
    }

    /// Tells the swarm task who the contacts are now.
    fn publish(&self) -> Result<()> {
        let peers = self.store.contacts()?.into_iter().map(|c| c.peer_id).collect();
        self.peers.send_replace(Arc::new(peers));
        Ok(())
    }

    /// The contact with this name.
    pub(crate) fn get(&self, name: &str) -> Result<ContactRow> {
        self.store.contact(name)?.ok_or_else(|| Error::UnknownContact(name.to_owned()))
    }

    /// The safety number shared with a contact, from both identity keys.
    pub(crate) fn verify(&self, name: &str) -> Result<control::SafetyNumber> {
        let contact = self.get(name)?;
        let own = self.keys.peer_id();
        Ok(control::SafetyNumber {
            name: contact.name,
            peer_id: contact.peer_id.to_string(),
            own_peer_id: own.to_string(),
            safety_number: kolokol_protocol::safety::safety_number_of_peers(
                &own,
                &contact.peer_id,
            )?,
        })
    }
}

fn check_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(Error::BadMessage("a contact name cannot be empty".into()));
    }
    if name.len() > MAX_CONTACT_NAME_LEN {
        return Err(Error::BadMessage(format!(
            "a contact name can be at most {MAX_CONTACT_NAME_LEN} bytes"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::BadMessage("a contact name cannot contain control characters".into()));
    }
    Ok(())
}

fn contact_view(c: ContactRow) -> control::Contact {
    control::Contact {
        name: c.name,
        peer_id: c.peer_id.to_string(),
        addresses: c.addresses.iter().map(ToString::to_string).collect(),
        added_at_ms: c.added_at_ms,
    }
}
