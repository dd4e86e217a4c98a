//! The façade: [`Node`], a cloneable handle to a running node with one method per thing the
//! control API, the demo and the tests ask of it. It holds no logic of its own beyond turning
//! rows into control-API views: each method hands the work to the room that owns it (contacts,
//! outbox, inbox, presence, mailbox, doctor, bootstrap). To add a control method, add it here
//! and in `control`; the work goes in its room.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kolokol_protocol::control::{self, Event, InboxMessage, MessageState};
use kolokol_protocol::invite::Invite;
use kolokol_protocol::message::MessageId;
use kolokol_protocol::presence::PresenceRecord;
use libp2p::PeerId;
use tokio::sync::{Notify, broadcast};

use crate::bootstrap::PeerBook;
use crate::chats::Chats;
use crate::clock::Clock;
use crate::config::Role;
use crate::contacts::Contacts;
use crate::doctor::{Doctor, count};
use crate::error::{Error, Result};
use crate::events::Events;
use crate::groups::Groups;
use crate::ids::{id_prefix, new_message_id};
use crate::inbox::{Inbox, inbox_view};
use crate::keys::Keys;
use crate::mailbox::Mailboxes;
use crate::outbox::{Outbox, outbox_view};
use crate::presence::{Presence, reachable_addresses};
use crate::store::Store;
use crate::swarm::{self, NetStatus};
use crate::workers::Workers;

/// How long `invite` waits for a first relay reservation.
pub const INVITE_WAIT: Duration = Duration::from_secs(10);

/// A cloneable handle to a running node.
#[derive(Clone)]
pub struct Node(Arc<Parts>);

/// Everything a node is made of, as `run` wires it together.
pub(crate) struct Parts {
    pub(crate) keys: Keys,
    pub(crate) store: Store,
    pub(crate) swarm: swarm::Client,
    pub(crate) events: Events,
    pub(crate) contacts: Contacts,
    pub(crate) chats: Chats,
    pub(crate) groups: Groups,
    pub(crate) outbox: Outbox,
    pub(crate) outbox_wake: Arc<Notify>,
    pub(crate) inbox: Inbox,
    pub(crate) presence: Presence,
    pub(crate) mailboxes: Mailboxes,
    pub(crate) peers: PeerBook,
    pub(crate) workers: Workers,
    pub(crate) clock: Clock,
    pub(crate) role: Role,
    pub(crate) data_dir: PathBuf,
    /// Whether any bootstrap source was known at start.
    pub(crate) has_bootstrap: bool,
    /// Whether reading messages queues read receipts (`Config::read_receipts`).
    pub(crate) read_receipts: bool,
}

impl Node {
    pub(crate) fn new(parts: Parts) -> Self {
        Self(Arc::new(parts))
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.0.keys.peer_id()
    }

    /// The answer to `id`.
    pub fn id(&self) -> control::IdInfo {
        control::IdInfo {
            peer_id: self.peer_id().to_string(),
            device_key: kolokol_protocol::identity::hex(self.0.keys.identity().device().public()),
        }
    }

    /// Subscribes to new-message and state-change events.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.0.events.subscribe()
    }

    /// Waits until the network state satisfies `ready`, for at most `timeout`; returns the
    /// state that satisfied it, or `None` on timeout.
    pub async fn wait_for_net(
        &self,
        timeout: Duration,
        ready: impl FnMut(&NetStatus) -> bool,
    ) -> Option<NetStatus> {
        self.0.swarm.wait_for(timeout, ready).await
    }

    /// The network state.
    pub async fn net_status(&self) -> Result<NetStatus> {
        self.0.swarm.status().await
    }

    /// The answer to `status`.
    pub async fn status(&self) -> Result<control::Status> {
        let net = self.net_status().await?;
        let role = self.0.role;
        let (queued, stored) = self.0.store.waiting_counts()?;
        Ok(control::Status {
            peer_id: self.peer_id().to_string(),
            role: role.as_str().into(),
            listen_addresses: net.listen.iter().map(ToString::to_string).collect(),
            external_addresses: net.external.iter().map(ToString::to_string).collect(),
            relay_reservations: net.reservations.iter().map(|(p, _)| p.to_string()).collect(),
            connected_peers: net.connected,
            routing_table_size: net.routing_table,
            queued_messages: queued,
            stored_messages: stored,
            queued_files: self.0.store.files_waiting()?,
            reachability: if net.public {
                "public".into()
            } else if !net.reservations.is_empty() {
                "relayed".into()
            } else {
                "unreachable".into()
            },
            known_relays: net.known_relays,
            bootstrap: if net.bootstrap_peers == 0 && role == Role::Relay {
                // As `doctor` says it: a relay is where others bootstrap from.
                "none configured: this relay is a bootstrap peer for others".into()
            } else if net.bootstrap_peers == 0 {
                "no bootstrap source (no --bootstrap, peer cache empty, no invite addresses)".into()
            } else if net.bootstrap_connected > 0 {
                format!(
                    "connected to {} of {} bootstrap peers",
                    net.bootstrap_connected, net.bootstrap_peers
                )
            } else {
                format!("not connected to any of {} bootstrap peers", net.bootstrap_peers)
            },
            presence: match &net.presence {
                None => "not published yet".into(),
                Some(Ok(())) => "published".into(),
                Some(Err(e)) => format!("not published: {e}"),
            },
            local_network: if net.mdns {
                format!("mDNS on, {} found", count(net.lan.len(), "peer", "peers"))
            } else {
                "mDNS off".into()
            },
        })
    }

    /// An invite carrying this node's certificate and the addresses it is reachable at:
    /// confirmed direct external addresses first, then relay circuits. A user node that has
    /// bootstrap peers but no reservation yet (it was just started) waits up to [`INVITE_WAIT`]
    /// for one, since an invite without addresses is of no use to the person receiving it.
    pub async fn invite(&self) -> Result<control::InviteInfo> {
        let mut net = self.net_status().await?;
        if self.0.role == Role::Node
            && self.0.has_bootstrap
            && net.reservations.is_empty()
            && net.external.is_empty()
            && let Some(ready) =
                self.wait_for_net(INVITE_WAIT, |s| !s.reservations.is_empty()).await
        {
            net = ready;
        }
        let addresses = reachable_addresses(&net);
        let invite = Invite {
            certificate: self.0.keys.certificate(),
            addresses: addresses.iter().map(|a| a.to_vec()).collect(),
        };
        // Version 2: the hybrid prekey and mailbox address make the first contact need no DHT
        // lookup while the prekey is valid (docs/PROTOCOL.md 4.4, 7.4).
        let text = match self.0.keys.hybrid_prekey()? {
            Some(prekey) => invite.to_text_v2(&kolokol_protocol::invite::InviteKeys {
                prekey,
                mailbox: self.0.keys.mailbox_address(),
            })?,
            None => invite.to_text()?,
        };
        Ok(control::InviteInfo {
            invite: text,
            addresses: addresses.iter().map(ToString::to_string).collect(),
        })
    }

    /// Adds a contact from their invite code; the relays its addresses go through become
    /// bootstrap peers.
    pub async fn add_contact(&self, name: &str, invite: &str) -> Result<control::Contact> {
        let row = self.0.contacts.add(name, invite)?;
        self.0.peers.learn_relays(&row.addresses).await;
        Ok(crate::contacts::contact_view(row))
    }

    /// All contacts.
    pub fn contacts(&self) -> Result<Vec<control::Contact>> {
        self.0.contacts.list()
    }

    /// Removes a contact; messages to and from them stay.
    pub fn remove_contact(&self, name: &str) -> Result<control::Contact> {
        self.0.contacts.remove(name)
    }

    /// Renames a contact.
    pub fn rename_contact(&self, name: &str, new_name: &str) -> Result<control::Contact> {
        self.0.contacts.rename(name, new_name)
    }

    /// Marks a contact verified (the safety numbers matched), or takes the mark away.
    pub fn mark_contact(&self, name: &str, verified: bool) -> Result<control::Contact> {
        self.0.contacts.mark(name, verified)
    }

    /// Puts the peer and key of a new invite in place of a contact who started over; the
    /// verified mark goes with the old key.
    pub async fn replace_contact(
        &self,
        name: &str,
        invite: &str,
    ) -> Result<control::ContactReplaced> {
        let (old, new) = self.0.contacts.replace(name, invite)?;
        self.0.peers.learn_relays(&new.addresses).await;
        Ok(control::ContactReplaced {
            old_peer_id: old.peer_id.to_string(),
            was_verified: old.verified_at_ms.is_some(),
            contact: crate::contacts::contact_view(new),
        })
    }

    /// Accepts a request: makes `peer` (who wrote to us) a contact named `name`.
    pub fn accept_contact(&self, peer: &str, name: &str) -> Result<control::Contact> {
        let peer = self.0.chats.peer(peer)?;
        self.0.contacts.accept(peer, name)
    }

    /// Blocks a peer that is not a contact: deletes its messages and drops what it sends.
    pub fn block(&self, peer: &str) -> Result<control::BlockResult> {
        let peer = self.0.chats.peer(peer)?;
        self.0.contacts.block(peer)
    }

    /// Unblocks a peer.
    pub fn unblock(&self, peer: &str) -> Result<control::BlockResult> {
        let peer = self.0.chats.peer(peer)?;
        self.0.contacts.unblock(peer)
    }

    /// The blocked peers.
    pub fn blocked(&self) -> Result<Vec<control::Blocked>> {
        self.0.contacts.blocked()
    }

    /// The safety number shared with a contact, from both identity keys.
    pub fn verify_contact(&self, name: &str) -> Result<control::SafetyNumber> {
        self.0.contacts.verify(name)
    }

    /// Sends a text to a contact: commits it to the outbox, then makes the first delivery
    /// attempt. Returns when that attempt has an answer; if it failed, the outbox keeps trying.
    /// A name that is no contact's but a group's sends to the group ([`Node::group_send`]),
    /// summed up as one state: `delivered` once every member's node has it, `stored` once the
    /// others' copies wait in their mailboxes, `failed` if every member refused it.
    pub async fn send(&self, to: &str, text: &str) -> Result<control::SendResult> {
        let recipient = match self.0.contacts.recipient(to) {
            Err(Error::UnknownContact(name)) => match self.0.groups.find(to) {
                Ok(_) => return self.group_send(to, text).await.map(group_send_summary),
                Err(_) => return Err(Error::UnknownRecipient(name)),
            },
            other => other?,
        };
        self.0.outbox.send(recipient, text).await
    }

    /// Commits a text to the outbox for a contact and returns at once, `queued` with no detail;
    /// the outbox makes the first attempt and `state` events tell how it goes (`send` with
    /// `wait: false`). A name that is a group's and no contact's is sent as [`Node::send`]
    /// does: the copies are committed and attempted together, and the answer is their summed
    /// state, which has a detail unless every member has it.
    pub async fn enqueue(&self, to: &str, text: &str) -> Result<control::SendResult> {
        let recipient = match self.0.contacts.recipient(to) {
            Err(Error::UnknownContact(name)) => match self.0.groups.find(to) {
                Ok(_) => return self.group_send(to, text).await.map(group_send_summary),
                Err(_) => return Err(Error::UnknownRecipient(name)),
            },
            other => other?,
        };
        self.0.outbox.enqueue(recipient, text).await
    }

    /// Sends a file to a contact: records it and returns at once, `queued`; the outbox sends its
    /// offer and chunks, and `file` events tell how it goes (`file.send`). Files go to one
    /// contact at a time: a group's name is refused with a clear error.
    pub async fn send_file(
        &self,
        to: &str,
        path: &std::path::Path,
    ) -> Result<control::FileTransfer> {
        let contact = match self.0.contacts.get(to) {
            Err(Error::UnknownContact(name)) => match self.0.groups.find(to) {
                Ok(_) => {
                    return Err(Error::BadMessage(format!(
                        "{to:?} is a group: files go to one contact at a time (send it to each \
                         member: kolokol send NAME --file PATH)"
                    )));
                }
                Err(_) => return Err(Error::UnknownContact(name)),
            },
            other => other?,
        };
        self.0.outbox.send_file(contact, path).await
    }

    /// File transfers either way, the newest first, at most `limit` in all.
    pub fn files(&self, limit: u32) -> Result<Vec<control::FileTransfer>> {
        let store = &self.0.store;
        let name = |peer: &PeerId| store.contact_by_peer(peer).ok().flatten().map(|c| c.name);
        let mut all: Vec<control::FileTransfer> = store
            .file_sends(limit)?
            .into_iter()
            .map(|row| {
                let contact = name(&row.peer_id);
                crate::files::send_view(row, contact)
            })
            .chain(store.file_receives(limit)?.into_iter().map(|row| {
                let contact = name(&row.peer_id);
                crate::files::receive_view(row, contact)
            }))
            .collect();
        all.sort_by_key(|t| std::cmp::Reverse(t.created_at_ms));
        all.truncate(limit as usize);
        Ok(all)
    }

    /// Every conversation, the most recent first, with its unread count.
    pub fn chats(&self) -> Result<Vec<control::ChatSummary>> {
        self.0.chats.list()
    }

    /// The newest `limit` messages with `with` (a contact's name, or a peer id), either way,
    /// in the order they were written.
    pub fn chat(&self, with: &str, limit: u32) -> Result<control::Chat> {
        let peer = self.0.chats.peer(with)?;
        self.0.chats.chat(&peer, limit)
    }

    /// Creates a private group with this node as its only member and admin.
    pub async fn group_create(
        &self,
        name: &str,
        as_name: Option<&str>,
    ) -> Result<control::GroupInfo> {
        self.0.groups.create(name, as_name).await
    }

    /// Every group this node knows.
    pub fn groups(&self) -> Result<Vec<control::GroupInfo>> {
        self.0.groups.list()
    }

    /// Adds members to a group (by an admin): contacts by name, others by invite code.
    pub async fn group_invite(
        &self,
        group: &str,
        members: &[String],
        name: Option<&str>,
        admin: bool,
    ) -> Result<control::GroupInfo> {
        self.0.groups.invite(group, members, name, admin).await
    }

    /// Removes a member from a group (by an admin).
    pub async fn group_remove(&self, group: &str, member: &str) -> Result<control::GroupInfo> {
        self.0.groups.remove(group, member).await
    }

    /// Leaves a group. Its last admin, while other members remain, is refused with
    /// [`Error::LastAdmin`] unless `force` (nobody could add, remove or rename after).
    pub async fn group_leave(&self, group: &str, force: bool) -> Result<control::GroupInfo> {
        self.0.groups.leave(group, force).await
    }

    /// Makes a member of a group an admin (`admin`), or a plain member again (by an admin).
    pub async fn group_admin(
        &self,
        group: &str,
        member: &str,
        admin: bool,
    ) -> Result<control::GroupInfo> {
        self.0.groups.set_admin(group, member, admin).await
    }

    /// Renames a group (by an admin).
    pub async fn group_rename(&self, group: &str, name: &str) -> Result<control::GroupInfo> {
        self.0.groups.rename(group, name).await
    }

    /// A group's members.
    pub fn group_members(&self, group: &str) -> Result<control::GroupMembers> {
        self.0.groups.members(group)
    }

    /// Writes a text to a group: one copy per member, each through its own conversation;
    /// returns once every copy had its first attempt.
    pub async fn group_send(&self, group: &str, text: &str) -> Result<control::GroupSendResult> {
        self.0.groups.send(group, text).await
    }

    /// A group's newest `limit` texts as a conversation, each with its writer's name.
    pub fn group_messages(&self, group: &str, limit: u32) -> Result<control::GroupChat> {
        self.0.groups.messages(group, limit)
    }

    /// Marks a group's texts read (members are not told).
    pub fn group_read(&self, group: &str) -> Result<control::GroupReadResult> {
        self.0.groups.read(group)
    }

    /// The newest `limit` texts of every group, oldest first.
    pub fn group_inbox(&self, limit: u32) -> Result<Vec<control::GroupText>> {
        self.0.groups.inbox(limit)
    }

    /// The newest `limit` received messages, oldest first.
    pub fn inbox(&self, limit: u32) -> Result<Vec<InboxMessage>> {
        Ok(self.0.store.inbox(limit)?.into_iter().map(inbox_view).collect())
    }

    /// Marks received messages read, the way the CLI does once it has shown them; `ids` are in
    /// the 32-hex-digit form. Each message is marked once, and the first time queues a read
    /// receipt through the outbox: one per sender who is a contact, none to strangers (see
    /// [`Store::mark_read`]), so they survive restarts and are retried like delivery receipts;
    /// with read receipts turned off, nothing is queued.
    pub fn mark_read(&self, ids: &[String]) -> Result<control::InboxReadResult> {
        let raw = ids
            .iter()
            .map(|id| match kolokol_protocol::message::parse_id(id.trim()) {
                Some(raw) => Ok(Some(raw)),
                // An abbreviated id names the one received message it starts; one that names
                // none is skipped, as a full id that names none is.
                None => {
                    let prefix = id_prefix(id).ok_or_else(|| Error::UnknownMessage(id.clone()))?;
                    match self.0.store.incoming_ids_with_prefix(&prefix, 2)?[..] {
                        [one] => Ok(Some(one)),
                        [] => Ok(None),
                        _ => Err(Error::AmbiguousId(id.clone())),
                    }
                }
            })
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>>>()?;
        let (marked, receipts) = self.0.store.mark_read(
            &raw,
            self.0.clock.now_ms(),
            self.0.read_receipts,
            new_message_id,
        )?;
        if !receipts.is_empty() {
            self.0.outbox_wake.notify_one();
        }
        Ok(control::InboxReadResult { marked, receipts: receipts.len() as u32 })
    }

    /// The state history of one of our messages.
    pub fn history(&self, id: &MessageId) -> Result<Vec<(MessageState, Option<String>, u64)>> {
        self.0.store.history(id)
    }

    /// The newest `limit` outgoing text messages, oldest first.
    pub fn outbox(&self, limit: u32) -> Result<Vec<control::OutboxMessage>> {
        Ok(self.0.store.outbox(limit)?.into_iter().map(outbox_view).collect())
    }

    /// One outgoing message with its full state history; `id` is the 32-hex-digit form.
    pub fn message(&self, id: &str) -> Result<control::MessageStatus> {
        let raw = self.outgoing_id(id)?;
        let unknown = || Error::UnknownMessage(id.to_owned());
        let message = self.0.store.outgoing(&raw)?.ok_or_else(unknown)?;
        let history = self
            .history(&raw)?
            .into_iter()
            .map(|(state, detail, at_ms)| control::StateEntry { state, detail, at_ms })
            .collect();
        Ok(control::MessageStatus { message: outbox_view(message), history })
    }

    /// The one text message of ours that `id` names: its 32 hex digits, or a unique start of
    /// them at least [`crate::ids::MIN_ID_PREFIX`] long.
    pub fn outgoing_id(&self, id: &str) -> Result<MessageId> {
        let prefix = id_prefix(id).ok_or_else(|| Error::UnknownMessage(id.to_owned()))?;
        match self.0.store.outgoing_ids_with_prefix(&prefix, 2)?[..] {
            [one] => Ok(one),
            [] => Err(Error::UnknownMessage(id.to_owned())),
            _ => Err(Error::AmbiguousId(id.to_owned())),
        }
    }

    /// The ids of our receive keys for the peer, as stored: what its envelopes may be sealed
    /// to. The store is opened in exclusive mode, so this is how tests and diagnostics see it.
    pub fn receive_key_ids(&self, peer: &PeerId) -> Result<Vec<[u8; 8]>> {
        self.0.store.receive_key_ids(peer)
    }

    /// The envelope format of our conversation with `peer`: 4 once we hold its hybrid prekey
    /// and mailbox address (from its version 2 invite or its format 4 first contact, which
    /// alone carry them), 3 otherwise; `None` without a conversation.
    pub fn conversation_format(&self, peer: &PeerId) -> Result<Option<u8>> {
        let Some(bytes) = self.0.store.conversation(peer)? else { return Ok(None) };
        let c = kolokol_protocol::conversation::Conversation::from_bytes(&bytes)?;
        Ok(Some(if c.peer_hybrid_prekey().is_some() && c.peer_mailbox().is_some() { 4 } else { 3 }))
    }

    /// How many items this node holds as a replica for `mailbox_id`.
    pub fn mailbox_items_held(&self, mailbox_id: &[u8; 32]) -> Result<u64> {
        self.0.mailboxes.held(mailbox_id)
    }

    /// A receiver that changes whenever the items this node holds as a replica do (a deposit,
    /// a handover, a delete, a purge); wait on it, then look with
    /// [`Node::mailbox_items_held`].
    pub fn mailbox_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.mailboxes.changes()
    }

    /// Fetches our mailboxes now; returns how many items were taken.
    pub async fn fetch_mailboxes(&self) -> usize {
        self.0.mailboxes.fetch_all(&self.0.inbox).await
    }

    /// Looks up a peer's presence record in the DHT; `None` if nobody has a valid one.
    pub async fn resolve(&self, peer: PeerId) -> Result<Option<PresenceRecord>> {
        self.0.presence.lookup(peer, false).await
    }

    /// Writes a consistent snapshot of the database into the data directory for a backup
    /// (`backup.snapshot`); the caller reads it, seals it and deletes it.
    pub fn backup_snapshot(&self) -> Result<control::SnapshotInfo> {
        let snapshot = crate::backup::snapshot(&self.0.store, &self.0.data_dir)?;
        Ok(control::SnapshotInfo {
            path: snapshot.path.to_string_lossy().into_owned(),
            key: snapshot.key.map(|k| k.to_hex().to_string()),
        })
    }

    /// The answer to `doctor`.
    pub async fn doctor(&self) -> Result<control::DoctorReport> {
        let parts = &self.0;
        Doctor {
            keys: parts.keys.clone(),
            swarm: parts.swarm.clone(),
            presence: parts.presence.clone(),
            mailboxes: parts.mailboxes.clone(),
            inbox: parts.inbox.clone(),
            workers: parts.workers.clone(),
            clock: parts.clock.clone(),
            role: parts.role,
            data_dir: parts.data_dir.clone(),
        }
        .report()
        .await
    }

    /// Connected, cached and local-network peers.
    pub async fn peers(&self) -> Result<control::PeersInfo> {
        self.0.peers.peers().await
    }

    /// A signed bootstrap bundle of the peers this node has reached.
    pub fn export_peers(&self) -> Result<control::BundleInfo> {
        self.0.peers.export()
    }

    /// Imports a bootstrap bundle: verifies it, caches its peers and dials them.
    pub async fn import_peers(&self, text: &str) -> Result<control::ImportResult> {
        self.0.peers.import(text).await
    }
}

/// A group send as the one state `send` answers with.
fn group_send_summary(r: control::GroupSendResult) -> control::SendResult {
    let state = if r.delivered == r.recipients {
        MessageState::Delivered
    } else if r.failed == r.recipients {
        MessageState::Failed
    } else if r.queued == 0 && r.failed == 0 {
        MessageState::Stored
    } else {
        MessageState::Queued
    };
    let detail = (r.delivered != r.recipients).then(|| {
        let mut parts = vec![format!("delivered to {} of {} members", r.delivered, r.recipients)];
        if r.stored > 0 {
            parts.push(format!("{} stored in their mailboxes", r.stored));
        }
        if r.failed > 0 {
            parts.push(format!("{} refused it", r.failed));
        }
        if let Some(why) = r.detail {
            parts.push(why);
        }
        parts.join("; ")
    });
    control::SendResult { id: r.id, state, detail }
}
