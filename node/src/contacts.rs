//! Contacts: adding one from their invite (which starts the conversation with them), listing,
//! removing (their messages stay), renaming, replacing their key when they started over, the
//! safety number to compare with them and the verified mark once it matched; and strangers:
//! accepting one who wrote first as a contact, or blocking them.

use std::collections::HashSet;
use std::sync::Arc;

use kolokol_protocol::control;
use kolokol_protocol::invite::Invite;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::conversations::{Conversations, FirstState};
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::store::{ContactRow, ConversationWrite, Store};

/// Longest contact name, in bytes.
pub const MAX_CONTACT_NAME_LEN: usize = 64;

/// Where a text to a contact goes: all that sending it needs from the contact's row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Recipient {
    /// Their peer id.
    pub(crate) peer_id: PeerId,
    /// Their X25519 device key.
    pub(crate) device_key: [u8; 32],
}

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
    pub(crate) fn add(&self, name: &str, invite_text: &str) -> Result<ContactRow> {
        let (row, start) = self.read_invite(name, invite_text)?;
        let first = ConversationWrite {
            peer: &row.peer_id,
            state: &start.state,
            key_ids: Some(&start.key_ids),
            rekeyed: None,
        };
        self.store.add_contact_with(&row, Some(&first))?;
        self.publish()?;
        Ok(row)
    }

    /// Reads an invite into the contact it makes, named `name`; refuses our own.
    fn read_invite(&self, name: &str, invite_text: &str) -> Result<(ContactRow, FirstState)> {
        check_name(name)?;
        let (invite, invite_keys, peer) =
            Invite::from_text_with_keys(invite_text, self.clock.now_secs())?;
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
            verified_at_ms: None,
            invite: Some(crate::store::without_whitespace(invite_text)),
            rekeyed: None,
        };
        let start = self.conversations.first_state(&invite, invite_keys.as_ref())?;
        Ok((row, start))
    }

    /// Puts a new invite's peer and key in place of the contact named `name` (they started
    /// over with a new identity), keeping the name; the verified mark goes, since it was for
    /// the old key. Messages stay with the peer they were exchanged with.
    pub(crate) fn replace(
        &self,
        name: &str,
        invite_text: &str,
    ) -> Result<(ContactRow, ContactRow)> {
        let old = self.get(name)?;
        let (new, start) = self.read_invite(&old.name, invite_text)?;
        if new.peer_id == old.peer_id {
            return Err(Error::ContactExists(format!(
                "that invite is {:?}'s current one: nothing to replace",
                old.name
            )));
        }
        let first = ConversationWrite {
            peer: &new.peer_id,
            state: &start.state,
            key_ids: Some(&start.key_ids),
            rekeyed: None,
        };
        self.store
            .replace_contact(name, &new, &first)?
            .ok_or_else(|| Error::UnknownContact(name.to_owned()))?;
        self.publish()?;
        Ok((old, new))
    }

    /// Renames a contact.
    pub(crate) fn rename(&self, name: &str, new_name: &str) -> Result<control::Contact> {
        check_name(new_name)?;
        self.store
            .rename_contact(name, new_name)?
            .map(contact_view)
            .ok_or_else(|| Error::UnknownContact(name.to_owned()))
    }

    /// Marks a contact verified, or takes the mark away.
    pub(crate) fn mark(&self, name: &str, verified: bool) -> Result<control::Contact> {
        let at = verified.then(|| self.clock.now_ms());
        self.store
            .set_verified(name, at)?
            .map(contact_view)
            .ok_or_else(|| Error::UnknownContact(name.to_owned()))
    }

    /// Makes someone who wrote to us a contact, named `name`, with the key their messages came
    /// from: accepting a request.
    pub(crate) fn accept(&self, peer: PeerId, name: &str) -> Result<control::Contact> {
        check_name(name)?;
        let certificate = self
            .conversations
            .peer_certificate(&peer)?
            .ok_or_else(|| Error::NoRequest(peer.to_string()))?;
        let row = ContactRow {
            name: name.to_owned(),
            peer_id: peer,
            device_key: certificate.device_key,
            addresses: Vec::new(),
            added_at_ms: self.clock.now_ms(),
            verified_at_ms: None,
            invite: None,
            rekeyed: None,
        };
        // The peer wrote first, so a conversation with them exists: none to start.
        self.store.add_contact_with(&row, None)?;
        self.publish()?;
        Ok(contact_view(row))
    }

    /// Blocks someone who is not a contact: their messages are deleted, and what they send
    /// from now on is taken and dropped.
    pub(crate) fn block(&self, peer: PeerId) -> Result<control::BlockResult> {
        if let Some(c) = self.store.contact_by_peer(&peer)? {
            return Err(Error::ContactExists(format!(
                "{peer} is your contact {:?}; remove the contact first (kolokol contacts remove)",
                c.name
            )));
        }
        let removed_messages = self.store.block(&peer, self.clock.now_ms())?;
        Ok(control::BlockResult { peer_id: peer.to_string(), removed_messages, blocked: true })
    }

    /// Unblocks a peer.
    pub(crate) fn unblock(&self, peer: PeerId) -> Result<control::BlockResult> {
        self.store.unblock(&peer)?;
        Ok(control::BlockResult { peer_id: peer.to_string(), removed_messages: 0, blocked: false })
    }

    /// The blocked peers.
    pub(crate) fn blocked(&self) -> Result<Vec<control::Blocked>> {
        Ok(self
            .store
            .blocked()?
            .into_iter()
            .map(|(peer, at)| control::Blocked { peer_id: peer.to_string(), blocked_at_ms: at })
            .collect())
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

    /// Where a text to the contact with this name goes (a lookup of [`Contacts::get`]'s, with
    /// only what sending needs read from the row).
    pub(crate) fn recipient(&self, name: &str) -> Result<Recipient> {
        match self.store.recipient(name)? {
            Some((peer_id, device_key)) => Ok(Recipient { peer_id, device_key }),
            None => Err(Error::UnknownContact(name.to_owned())),
        }
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

pub(crate) fn contact_view(c: ContactRow) -> control::Contact {
    control::Contact {
        name: c.name,
        peer_id: c.peer_id.to_string(),
        addresses: c.addresses.iter().map(ToString::to_string).collect(),
        added_at_ms: c.added_at_ms,
        verified: c.verified_at_ms.is_some(),
        verified_at_ms: c.verified_at_ms,
        rekeyed_at_ms: c.rekeyed.as_ref().map(|(at, _)| *at),
        rekey_reason: c.rekeyed.map(|(_, why)| why),
    }
}
