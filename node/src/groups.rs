//! Private groups with no server: this node's side of `kolokol_protocol::group`.
//!
//! A group is the set of signed changes its members hold; nobody holds it for the others. Every
//! group message goes to each member in its own envelope, through that member's conversation,
//! as an outbox row like any other ([`OutboxBody::Group`]): so a copy to a member who is away
//! waits in their mailbox, is retried, and is acknowledged, exactly like a one-to-one message,
//! and every property of the pairwise envelopes (forward secrecy per receive key, recovery, the
//! hybrid first contact, fixed sizes) holds for group messages too. The cost is one seal and
//! one delivery per member per message (docs/PROTOCOL.md section 14 measures it).
//!
//! What this room does: makes our changes (create, invite, remove, rename, make a member an
//! admin or not, leave) and sends them to those who need them; sends our texts to every member
//! we know of; takes changes, texts and requests from peers (`Groups::accept`, called by the
//! inbox, in `incoming`), keeps what it may, and asks for changes it lacks; shows groups,
//! members and texts (`views`). It decides who is a member only through `GroupLog::resolve`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kolokol_protocol::codec;
use kolokol_protocol::control::{self, Event, GroupEvent, MessageState};
use kolokol_protocol::group::{
    self, Action, GroupBody, GroupLog, GroupMessage, GroupOp, GroupState, IdentityKey,
    MAX_GROUP_MEMBERS, MAX_GROUP_NAME_LEN, MAX_MEMBER_NAME_LEN, MAX_OPS_PER_MESSAGE, OpId,
};
use kolokol_protocol::invite::Invite;
use kolokol_protocol::message::{Body, format_id};
use libp2p::{Multiaddr, PeerId};
use rand::RngCore;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::conversations::Conversations;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::ids::new_message_id;
use crate::keys::Keys;
use crate::outbox::{ATTEMPT_CLAIM, Outbox};
use crate::presence::Presence;
use crate::store::{
    GroupMemberRow, GroupRow, GroupStatus, GroupTextRow, GroupUpdate, MAX_GROUPS, OutboxBody,
    OutboxRow, Store, fold_name,
};

/// First attempts of one group message's copies made at once: enough to keep the crypto
/// workers and the network busy, few enough that a large group does not open hundreds of
/// streams at the same moment.
pub const SEND_IN_FLIGHT: usize = 32;

/// Encoded changes one message carries at most, so that it fits one envelope (a message from
/// a member who is not a contact may not come in chunks) with room for the envelope's own.
pub const MAX_OPS_BYTES: usize = 48 * 1024;

/// A peer is asked for missing changes of one group at most this often.
pub const WANT_INTERVAL: Duration = Duration::from_secs(10);

/// Peers whose last request time is remembered; the map is cleared when it reaches this.
pub const MAX_TRACKED_WANTS: usize = 1024;

/// The body a group copy in the outbox is sealed as.
pub(crate) fn body(encoded: &[u8]) -> std::result::Result<Body, kolokol_protocol::Error> {
    let message: GroupMessage = codec::decode_chunked("group message", encoded)?;
    Ok(Body::Group(message))
}

/// A cloneable handle to the groups.
#[derive(Clone)]
pub(crate) struct Groups(Arc<Inner>);

/// What the groups work with.
pub(crate) struct GroupsParts {
    pub(crate) store: Store,
    pub(crate) keys: Keys,
    pub(crate) conversations: Conversations,
    pub(crate) outbox: Outbox,
    pub(crate) presence: Presence,
    pub(crate) events: Events,
    pub(crate) clock: Clock,
}

struct Inner {
    parts: GroupsParts,
    /// Held while a group's changes are loaded, resolved and stored, and while one of our
    /// texts takes its number, so two of them never interleave. Never held across an await.
    lock: Mutex<()>,
    /// When each peer was last asked for each group's missing changes.
    wants: Mutex<HashMap<([u8; 16], PeerId), Instant>>,
}

/// The members of a group to send to, with their device keys.
type Recipients = Vec<(PeerId, [u8; 32])>;

/// What storing changes did.
struct Committed {
    row: GroupRow,
    state: Option<GroupState>,
    log: GroupLog,
    /// Members before, by peer id, with admin flags.
    before: BTreeMap<PeerId, bool>,
    name_before: Option<String>,
    status_before: Option<GroupStatus>,
}

impl Groups {
    pub(crate) fn new(parts: GroupsParts) -> Self {
        Self(Arc::new(Inner { parts, lock: Mutex::new(()), wants: Default::default() }))
    }

    fn store(&self) -> &Store {
        &self.0.parts.store
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        self.0.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn me(&self) -> IdentityKey {
        *self.0.parts.keys.identity().identity_key()
    }

    fn my_peer(&self) -> PeerId {
        self.0.parts.keys.peer_id()
    }

    /// The group's changes as stored (each was verified before it was stored).
    fn load(&self, group: &[u8; 16]) -> Result<GroupLog> {
        let mut log = GroupLog::new(*group);
        for bytes in self.store().group_ops(group)? {
            let op = GroupOp::from_bytes(&bytes)?;
            log.insert_verified(op)?;
        }
        Ok(log)
    }

    /// The group a user names: its exact name (if one group has it), else its name in any case
    /// (if one group has that), or its id or a unique start of it (at least 4 hex digits).
    pub(crate) fn find(&self, name: &str) -> Result<GroupRow> {
        let groups = self.store().groups()?;
        // The exact spelling first, then the name in any case, as a contact's name is found
        // (`store::contacts::fold_name`): "work" finds "Work" unless another group is "work".
        let mut named: Vec<&GroupRow> = groups.iter().filter(|g| g.name == name).collect();
        if named.is_empty() {
            let folded = fold_name(name);
            named = groups.iter().filter(|g| fold_name(&g.name) == folded).collect();
        }
        match named.as_slice() {
            [one] => return Ok((*one).clone()),
            [] => {}
            many => {
                return Err(Error::UnknownGroup(format!(
                    "{} groups are named {name:?}; name one by its id ({})",
                    many.len(),
                    many.iter().map(|g| format_id(&g.id)).collect::<Vec<_>>().join(", ")
                )));
            }
        }
        let prefix = name.trim().to_ascii_lowercase();
        if prefix.len() >= 4 && prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            let by_id: Vec<&GroupRow> =
                groups.iter().filter(|g| format_id(&g.id).starts_with(&prefix)).collect();
            if let [one] = by_id.as_slice() {
                return Ok((*one).clone());
            }
        }
        Err(Error::UnknownGroup(format!("no group named {name:?} (see `kolokol group list`)")))
    }

    /// Resolves `log`, stores what it resolves to with the changes `new_ops`, and returns what
    /// it was before and is now. The caller holds the lock.
    fn commit(
        &self,
        log: GroupLog,
        new_ops: &[(OpId, Vec<u8>)],
        from: &PeerId,
        receipt: Option<&OutboxRow>,
        conversation: Option<&crate::store::ConversationWrite<'_>>,
    ) -> Result<(Committed, Vec<GroupTextRow>)> {
        let group = log.group();
        let old = self.store().group(&group)?;
        let before: BTreeMap<PeerId, bool> = if old.is_some() {
            self.store().group_members(&group)?.into_iter().map(|m| (m.peer_id, m.admin)).collect()
        } else {
            BTreeMap::new()
        };
        let state = log.resolve();
        let me = self.me();
        let status = match &state {
            None => GroupStatus::Pending,
            Some(s) if s.member(&me).is_some() => GroupStatus::Member,
            Some(s) => {
                let mine = |f: &dyn Fn(&Action) -> bool| {
                    s.applied
                        .iter()
                        .filter_map(|id| log.get(id))
                        .any(|op| f(&op.body.action) && op.body.author == me)
                };
                if mine(&|a| matches!(a, Action::Leave)) {
                    GroupStatus::Left
                } else if old.as_ref().is_some_and(|g| g.status != GroupStatus::Pending)
                    || s.applied.iter().filter_map(|id| log.get(id)).any(|op| {
                        match &op.body.action {
                            Action::Add { member } => member.certificate.identity_key == me,
                            Action::Create { creator, .. } => {
                                creator.certificate.identity_key == me
                            }
                            _ => false,
                        }
                    })
                {
                    GroupStatus::Removed
                } else {
                    GroupStatus::Pending
                }
            }
        };
        let members: Vec<GroupMemberRow> = match &state {
            Some(s) => s
                .members
                .values()
                .filter_map(|m| {
                    Some(GroupMemberRow {
                        peer_id: m.certificate.claimed_peer_id().ok()?,
                        device_key: m.certificate.device_key,
                        name: m.name.clone(),
                        admin: m.admin,
                        contact: None,
                    })
                })
                .collect(),
            None => Vec::new(),
        };
        let name = state.as_ref().map(|s| s.name.clone()).unwrap_or_default();
        let update = GroupUpdate {
            group,
            new_ops,
            name: &name,
            status,
            members: &members,
            invited_by: from,
        };
        let promoted = self.store().group_update(
            &update,
            receipt,
            conversation,
            self.0.parts.clock.now_ms(),
        )?;
        // Every member gets a conversation now, so our first envelope to them is a proper first
        // contact (and theirs to us finds one). A certificate past its window cannot start one;
        // their own first envelope will.
        if let Some(s) = &state {
            for m in s.members.values() {
                let Ok(peer) = m.certificate.claimed_peer_id() else { continue };
                if peer == self.my_peer() {
                    continue;
                }
                if let Err(e) = self.0.parts.conversations.start(&peer, m.certificate.clone()) {
                    tracing::debug!(%peer, %e, "no conversation started with a group member");
                }
            }
        }
        let row = self.store().group(&group)?.ok_or_else(|| {
            Error::UnknownGroup("the group vanished from the store while it was updated".into())
        })?;
        Ok((
            Committed {
                row,
                state,
                log,
                before,
                name_before: old.as_ref().map(|g| g.name.clone()),
                status_before: old.map(|g| g.status),
            },
            promoted,
        ))
    }

    /// Tells subscribers what a commit changed.
    fn announce(&self, committed: &Committed, promoted: Vec<GroupTextRow>) {
        let now = self.0.parts.clock.now_ms();
        let group = format_id(&committed.row.id);
        let name = committed.row.name.clone();
        let names = self.names(&committed.row.id);
        let announced = std::cell::Cell::new(false);
        let event = |change: &str, member: Option<&PeerId>| {
            announced.set(true);
            self.0.parts.events.send(Event::Group(GroupEvent {
                group: group.clone(),
                group_name: name.clone(),
                change: change.into(),
                member: member.map(|p| names.of(p)),
                member_peer_id: member.map(ToString::to_string),
                at_ms: now,
            }))
        };
        let me = self.my_peer();
        let status = committed.row.status;
        if committed.status_before != Some(status) {
            match (committed.status_before, status) {
                (None, GroupStatus::Member) if committed.row.invited_by == me => {
                    event("created", None)
                }
                (_, GroupStatus::Member) => event("joined", None),
                (_, GroupStatus::Left) => event("left", None),
                (_, GroupStatus::Removed) => event("removed", None),
                (_, GroupStatus::Pending) => {}
            }
        }
        if committed.status_before.is_some()
            && committed.name_before.as_deref() != Some(name.as_str())
            && status != GroupStatus::Pending
        {
            event("renamed", None);
        }
        if committed.status_before.is_some_and(|s| s != GroupStatus::Pending) {
            let after: BTreeMap<PeerId, bool> = self
                .store()
                .group_members(&committed.row.id)
                .map(|ms| ms.into_iter().map(|m| (m.peer_id, m.admin)).collect())
                .unwrap_or_default();
            for (peer, admin) in &after {
                match committed.before.get(peer) {
                    None if *peer != me => event("member_added", Some(peer)),
                    Some(was) if was != admin => event("admin_changed", Some(peer)),
                    _ => {}
                }
            }
            for peer in committed.before.keys() {
                if !after.contains_key(peer) && *peer != me {
                    event("member_removed", Some(peer));
                }
            }
        }
        // Changes that altered nothing anyone sees (they lost to concurrent ones, or their
        // author had no right to make them) still make a new version of the record.
        if !announced.get() && status != GroupStatus::Pending {
            event("updated", None);
        }
        for text in promoted {
            self.0.parts.events.send(Event::GroupMessage(event_text(self.text_view(
                &text,
                &names,
                &committed.row.name,
            ))));
        }
    }

    /// Who to send a group's messages to: every member but us.
    fn recipients(&self, group: &[u8; 16]) -> Result<Recipients> {
        let me = self.my_peer();
        Ok(self
            .store()
            .group_members(group)?
            .into_iter()
            .filter(|m| m.peer_id != me)
            .map(|m| (m.peer_id, m.device_key))
            .collect())
    }

    /// The recipients of a state that are not in `except`.
    fn state_recipients(&self, state: &GroupState, except: &[IdentityKey]) -> Recipients {
        let me = self.me();
        state
            .members
            .values()
            .filter(|m| {
                m.certificate.identity_key != me && !except.contains(&m.certificate.identity_key)
            })
            .filter_map(|m| Some((m.certificate.claimed_peer_id().ok()?, m.certificate.device_key)))
            .collect()
    }

    /// One copy of `message` per recipient, as outbox rows.
    fn copies(&self, message: &GroupMessage, to: &Recipients) -> Result<Vec<OutboxRow>> {
        let encoded = codec::encode(message)?;
        let now = self.0.parts.clock.now_ms();
        Ok(to
            .iter()
            .map(|(peer, device_key)| OutboxRow {
                id: new_message_id(),
                peer_id: *peer,
                device_key: *device_key,
                body: OutboxBody::Group(encoded.clone()),
                created_at_ms: now,
                attempts: 0,
            })
            .collect())
    }

    /// Changes as messages that each fit one envelope.
    fn ops_messages(group: [u8; 16], ops: Vec<GroupOp>) -> Result<Vec<GroupMessage>> {
        let mut messages = Vec::new();
        let mut batch: Vec<GroupOp> = Vec::new();
        let mut size = 0;
        for op in ops {
            let len = op.to_bytes()?.len();
            if !batch.is_empty()
                && (size + len > MAX_OPS_BYTES || batch.len() >= MAX_OPS_PER_MESSAGE)
            {
                messages.push(GroupMessage {
                    group,
                    body: GroupBody::Ops { ops: std::mem::take(&mut batch) },
                });
                size = 0;
            }
            size += len;
            batch.push(op);
        }
        if !batch.is_empty() {
            messages.push(GroupMessage { group, body: GroupBody::Ops { ops: batch } });
        }
        Ok(messages)
    }

    /// Queues group messages (not texts) for their recipients, due now, and wakes the outbox;
    /// returns the rows, claimed for their first attempt if `claim` (the caller makes it).
    fn enqueue(
        &self,
        group: &[u8; 16],
        sends: Vec<(GroupMessage, Recipients)>,
        claim: bool,
    ) -> Result<Vec<OutboxRow>> {
        let mut rows = Vec::new();
        for (message, to) in sends {
            rows.extend(self.copies(&message, &to)?);
        }
        if rows.is_empty() {
            return Ok(rows);
        }
        let now = self.0.parts.clock.now_ms();
        let due = if claim { now + ATTEMPT_CLAIM.as_millis() as u64 } else { now };
        self.store().group_enqueue(group, &rows, due)?;
        if !claim {
            self.0.parts.outbox.wake();
        }
        Ok(rows)
    }

    /// Asks `peer` for the changes `ids` (and their missing ancestors), unless it was asked
    /// about this group less than [`WANT_INTERVAL`] ago.
    fn want(
        &self,
        group: &[u8; 16],
        peer: &PeerId,
        device_key: [u8; 32],
        ids: Vec<OpId>,
        heads: Vec<OpId>,
    ) -> Result<()> {
        if ids.is_empty() || *peer == self.my_peer() {
            return Ok(());
        }
        {
            let mut wants = self.0.wants.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if wants.get(&(*group, *peer)).is_some_and(|t| now.duration_since(*t) < WANT_INTERVAL) {
                return Ok(());
            }
            if wants.len() >= MAX_TRACKED_WANTS {
                wants.clear();
            }
            wants.insert((*group, *peer), now);
        }
        let ids: Vec<OpId> = ids.into_iter().take(group::MAX_WANTED).collect();
        let heads: Vec<OpId> = heads.into_iter().rev().take(group::MAX_PARENTS).collect();
        let message = GroupMessage { group: *group, body: GroupBody::Want { heads, ids } };
        self.enqueue(group, vec![(message, vec![(*peer, device_key)])], false)?;
        Ok(())
    }

    /// What we send after taking changes from a peer: a request for what they named and we
    /// lack, and, to each member someone else just added, the changes we hold that their adder
    /// did not (they came concurrently), so every member ends up with every change.
    fn follow_up(&self, committed: &Committed, from: &PeerId, device_key: [u8; 32]) -> Result<()> {
        let group = committed.row.id;
        let missing = committed.log.missing();
        let heads = committed.state.as_ref().map(|s| s.heads.clone()).unwrap_or_default();
        self.want(&group, from, device_key, missing, heads)?;
        let Some(state) = &committed.state else { return Ok(()) };
        if state.member(&self.me()).is_none() {
            return Ok(());
        }
        let mut sends = Vec::new();
        for id in &state.applied {
            let Some(op) = committed.log.get(id) else { continue };
            let Action::Add { member } = &op.body.action else { continue };
            let Ok(peer) = member.certificate.claimed_peer_id() else { continue };
            if op.body.author == self.me()
                || peer == self.my_peer()
                || committed.before.contains_key(&peer)
            {
                continue;
            }
            if state.member(&member.certificate.identity_key).is_none() {
                continue;
            }
            let extra = committed.log.not_ancestors_of(id);
            for message in Self::ops_messages(group, extra)? {
                sends.push((message, vec![(peer, member.certificate.device_key)]));
            }
        }
        self.enqueue(&group, sends, false)?;
        Ok(())
    }

    /// Makes our own change on top of the group's state: signs it, stores it, and returns
    /// the state before and after with the log. The caller holds the lock.
    fn change(
        &self,
        group: &[u8; 16],
        actions: Vec<Action>,
    ) -> Result<(GroupState, Committed, Vec<GroupOp>)> {
        let mut log = self.load(group)?;
        let before = log.resolve().ok_or_else(|| {
            Error::GroupRefused("this group's history has not arrived yet; try again later".into())
        })?;
        let identity = self.0.parts.keys.identity();
        let mut body = before.next(self.me(), Action::Leave);
        let mut ops = Vec::new();
        for action in actions {
            body.action = action;
            let op = GroupOp::sign(identity, body.clone())?;
            let id = op.verify()?;
            log.insert(op.clone())?;
            body = group::OpBody { parents: vec![id], lamport: body.lamport + 1, ..body };
            ops.push(op);
        }
        let new_ops: Vec<(OpId, Vec<u8>)> =
            ops.iter().map(|op| Ok((op.id()?, op.to_bytes()?))).collect::<Result<_>>()?;
        let (committed, promoted) = self.commit(log, &new_ops, &self.my_peer(), None, None)?;
        self.announce(&committed, promoted);
        Ok((before, committed, ops))
    }

    /// Creates a group with us as its only member and admin.
    pub(crate) async fn create(
        &self,
        name: &str,
        as_name: Option<&str>,
    ) -> Result<control::GroupInfo> {
        check_group_name(name)?;
        let own_name = as_name.unwrap_or_default();
        if own_name.len() > MAX_MEMBER_NAME_LEN || own_name.chars().any(char::is_control) {
            return Err(Error::BadMessage(format!(
                "the name you are listed under can be at most {MAX_MEMBER_NAME_LEN} bytes, without control characters"
            )));
        }
        let mut nonce = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let keys = &self.0.parts.keys;
        let op = group::create(keys.identity(), keys.certificate(), name, own_name, nonce)?;
        let group = op.group()?;
        let mut log = GroupLog::new(group);
        log.insert(op.clone())?;
        let committed = {
            let _guard = self.lock();
            if self.store().group_counts()?.0 >= MAX_GROUPS {
                return Err(Error::GroupRefused(format!(
                    "this node keeps at most {MAX_GROUPS} groups; leave one first"
                )));
            }
            let (committed, promoted) =
                self.commit(log, &[(op.id()?, op.to_bytes()?)], &self.my_peer(), None, None)?;
            self.announce(&committed, promoted);
            committed
        };
        self.info(&committed.row)
    }

    /// Adds members: contacts by name, or people by invite code. Sends the new changes to the
    /// members there were, and the whole history to each new one.
    pub(crate) async fn invite(
        &self,
        group: &str,
        who: &[String],
        name: Option<&str>,
        admin: bool,
    ) -> Result<control::GroupInfo> {
        if who.is_empty() {
            return Err(Error::BadMessage(
                "name at least one contact or invite code to add".into(),
            ));
        }
        let row = self.find(group)?;
        let listed = name.unwrap_or_default();
        if listed.len() > MAX_MEMBER_NAME_LEN || listed.chars().any(char::is_control) {
            return Err(Error::BadMessage(format!(
                "a member's name can be at most {MAX_MEMBER_NAME_LEN} bytes, without control characters"
            )));
        }
        let mut members = Vec::new();
        for w in who {
            let w = w.trim();
            let (certificate, listed_as) = if w.starts_with(kolokol_protocol::invite::INVITE_PREFIX)
            {
                let (invite, keys, peer) =
                    Invite::from_text_with_keys(w, self.0.parts.clock.now_secs())?;
                if peer == self.my_peer() {
                    return Err(Error::GroupRefused("that invite is your own".into()));
                }
                let addresses: Vec<Multiaddr> = invite
                    .addresses
                    .iter()
                    .filter_map(|a| Multiaddr::try_from(a.clone()).ok())
                    .collect();
                self.0.parts.presence.remember(&peer, addresses);
                self.0.parts.conversations.start_from_invite(&peer, &invite, keys.as_ref())?;
                (invite.certificate, listed.to_owned())
            } else {
                let contact =
                    self.store().contact(w)?.ok_or_else(|| Error::UnknownContact(w.to_owned()))?;
                let certificate = self
                    .0
                    .parts
                    .conversations
                    .with(&contact.peer_id, |c| {
                        Ok(c.as_ref().map(|c| c.peer_certificate().clone()))
                    })
                    .await??
                    .ok_or_else(|| {
                        Error::GroupRefused(format!(
                            "no conversation with {w} yet; send them a message first"
                        ))
                    })?;
                let listed_as =
                    if listed.is_empty() { contact.name.clone() } else { listed.to_owned() };
                (certificate, listed_as)
            };
            members.push(group::Member { certificate, name: listed_as, admin });
        }
        let (committed, ops, old) = {
            let _guard = self.lock();
            let log = self.load(&row.id)?;
            let state = log.resolve().ok_or_else(|| {
                Error::GroupRefused("this group's history has not arrived yet".into())
            })?;
            if !state.is_admin(&self.me()) {
                return Err(Error::GroupRefused(format!(
                    "only an admin can add members to {:?}; you are not one",
                    row.name
                )));
            }
            for m in &members {
                let key = m.certificate.identity_key;
                if state.member(&key).is_some_and(|old| old.admin == m.admin) {
                    let peer = m.certificate.claimed_peer_id()?;
                    return Err(Error::GroupRefused(format!(
                        "{} is already a member of {:?}",
                        self.names(&row.id).of(&peer),
                        row.name
                    )));
                }
            }
            let new = members
                .iter()
                .filter(|m| state.member(&m.certificate.identity_key).is_none())
                .count();
            if state.members.len() + new > MAX_GROUP_MEMBERS {
                return Err(Error::GroupRefused(format!(
                    "a group has at most {MAX_GROUP_MEMBERS} members"
                )));
            }
            let actions = members.iter().cloned().map(|member| Action::Add { member }).collect();
            let (before, committed, ops) = self.change(&row.id, actions)?;
            (committed, ops, before)
        };
        let state = committed
            .state
            .as_ref()
            .ok_or_else(|| Error::GroupRefused("the group does not resolve".into()))?;
        let added: Vec<IdentityKey> = members
            .iter()
            .map(|m| m.certificate.identity_key)
            .filter(|k| old.member(k).is_none())
            .collect();
        let mut sends = Vec::new();
        for message in Self::ops_messages(row.id, ops)? {
            sends.push((message, self.state_recipients(state, &added)));
        }
        let history = committed.log.all_in_order();
        for m in &members {
            if !added.contains(&m.certificate.identity_key) {
                continue;
            }
            let to = vec![(m.certificate.claimed_peer_id()?, m.certificate.device_key)];
            for message in Self::ops_messages(row.id, history.clone())? {
                sends.push((message, to.clone()));
            }
        }
        let rows = self.enqueue(&row.id, sends, true)?;
        self.0.parts.outbox.attempt_all(rows, SEND_IN_FLIGHT).await;
        self.info(&committed.row)
    }

    /// Removes a member (by an admin), or leaves when the member is us (refused, as
    /// [`Groups::leave`] without force, when we are its last admin).
    pub(crate) async fn remove(&self, group: &str, member: &str) -> Result<control::GroupInfo> {
        let row = self.find(group)?;
        let target = self.member(&row, member)?;
        if target == self.my_peer() {
            return self.leave(group, false).await;
        }
        let identity = kolokol_protocol::safety::identity_key(&target)?;
        let only = Some("remove members from");
        self.change_and_send(&row, Some(target), only, |_| Ok(Action::Remove { identity })).await
    }

    /// Renames a group (by an admin).
    pub(crate) async fn rename(&self, group: &str, name: &str) -> Result<control::GroupInfo> {
        check_group_name(name)?;
        let row = self.find(group)?;
        let action = Action::Rename { name: name.to_owned() };
        self.change_and_send(&row, None, Some("rename"), |_| Ok(action)).await
    }

    /// Makes a member an admin, or a plain member again (by an admin). The change is an
    /// addition of their entry as the group holds it, with only its admin flag changed, so
    /// their certificate and listed name stay as they are.
    pub(crate) async fn set_admin(
        &self,
        group: &str,
        member: &str,
        admin: bool,
    ) -> Result<control::GroupInfo> {
        let row = self.find(group)?;
        let target = self.member(&row, member)?;
        let identity = kolokol_protocol::safety::identity_key(&target)?;
        let me = self.my_peer();
        let shown = if target == me { "you".to_owned() } else { self.names(&row.id).of(&target) };
        let only = Some(if admin { "make members admins of" } else { "take admin rights away in" });
        self.change_and_send(&row, Some(target), only, |state| {
            let entry = state.member(&identity).ok_or_else(|| {
                Error::GroupRefused(format!("{shown} is not a member of {:?}", row.name))
            })?;
            if entry.admin == admin {
                return Err(Error::GroupRefused(format!(
                    "{shown} {} {} an admin of {:?}",
                    if target == me { "are" } else { "is" },
                    if admin { "already" } else { "not" },
                    row.name
                )));
            }
            // Giving up our own rights as the last admin would leave the group with nobody
            // who can add, remove or rename, for good.
            if !admin && target == me && admins(state) == 1 {
                return Err(Error::GroupRefused(format!(
                    "you are the last admin of {:?}: make another member an admin first",
                    row.name
                )));
            }
            Ok(Action::Add { member: group::Member { admin, ..entry.clone() } })
        })
        .await
    }

    /// Leaves a group: the others are told, and stop sending to us. The last admin of a group
    /// with other members is refused unless `force`, since nobody could add, remove or rename
    /// after; the last member leaves freely.
    pub(crate) async fn leave(&self, group: &str, force: bool) -> Result<control::GroupInfo> {
        let row = self.find(group)?;
        let me = self.me();
        self.change_and_send(&row, None, None, |state| {
            if !force && state.is_admin(&me) && admins(state) == 1 && state.members.len() > 1 {
                return Err(Error::LastAdmin { group: row.name.clone() });
            }
            Ok(Action::Leave)
        })
        .await
    }

    /// Makes one change and sends it to every member before it (so a removed member learns of
    /// their removal too). `action` makes the change from the group's current state, under the
    /// lock, so what it checks cannot change before the change is stored. `admin_only` says
    /// what only an admin may do, for a change that needs one.
    async fn change_and_send(
        &self,
        row: &GroupRow,
        target: Option<PeerId>,
        admin_only: Option<&str>,
        action: impl FnOnce(&GroupState) -> Result<Action>,
    ) -> Result<control::GroupInfo> {
        let (committed, ops, to) = {
            let _guard = self.lock();
            let log = self.load(&row.id)?;
            let state = log.resolve().ok_or_else(|| {
                Error::GroupRefused("this group's history has not arrived yet".into())
            })?;
            if state.member(&self.me()).is_none() {
                return Err(Error::GroupRefused(format!("you are not a member of {:?}", row.name)));
            }
            if let Some(what) = admin_only
                && !state.is_admin(&self.me())
            {
                return Err(Error::GroupRefused(format!(
                    "only an admin can {what} {:?}; you are not one",
                    row.name
                )));
            }
            if let Some(target) = target
                && state.member(&kolokol_protocol::safety::identity_key(&target)?).is_none()
            {
                return Err(Error::GroupRefused(format!(
                    "{target} is not a member of {:?}",
                    row.name
                )));
            }
            let action = action(&state)?;
            let to = self.state_recipients(&state, &[]);
            let (_, committed, ops) = self.change(&row.id, vec![action])?;
            (committed, ops, to)
        };
        let sends = Self::ops_messages(row.id, ops)?.into_iter().map(|m| (m, to.clone())).collect();
        let rows = self.enqueue(&row.id, sends, true)?;
        self.0.parts.outbox.attempt_all(rows, SEND_IN_FLIGHT).await;
        self.info(&committed.row)
    }

    /// The member a user names: a contact name, the name the group lists them under, or a
    /// peer id.
    fn member(&self, row: &GroupRow, name: &str) -> Result<PeerId> {
        let members = self.store().group_members(&row.id)?;
        let me = self.my_peer();
        let found: Vec<PeerId> = members
            .iter()
            .filter(|m| {
                m.contact.as_deref() == Some(name)
                    || m.name == name
                    || m.peer_id.to_string() == name
                    || (name == "me" && m.peer_id == me)
            })
            .map(|m| m.peer_id)
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(Error::GroupRefused(format!(
                "{name:?} is not a member of {:?} (see `kolokol group members`)",
                row.name
            ))),
            _ => Err(Error::GroupRefused(format!(
                "several members of {:?} go by {name:?}; name one by peer id",
                row.name
            ))),
        }
    }

    /// Writes a text to a group: one copy per member, each sealed in their conversation;
    /// returns once every copy had its first attempt.
    pub(crate) async fn send(&self, group: &str, text: &str) -> Result<control::GroupSendResult> {
        crate::outbox::check_text(text)?;
        let row = self.find(group)?;
        let (rows, id) = {
            let _guard = self.lock();
            let row = self.store().group(&row.id)?.unwrap_or_else(|| row.clone());
            if row.status != GroupStatus::Member {
                return Err(Error::GroupRefused(format!(
                    "you are not a member of {:?} ({})",
                    row.name,
                    row.status.as_str()
                )));
            }
            let heads = self.load(&row.id)?.resolve().map(|s| s.parents()).unwrap_or_default();
            let id = new_message_id();
            let now = self.0.parts.clock.now_ms();
            let own = GroupTextRow {
                group: row.id,
                sender: self.my_peer(),
                id,
                seq: row.next_seq,
                text: text.to_owned(),
                sent_at_ms: now,
                received_at_ms: now,
                read_at_ms: Some(now),
                missing_before: 0,
            };
            let message = GroupMessage {
                group: row.id,
                body: GroupBody::Text { id, seq: own.seq, heads, text: text.to_owned() },
            };
            let rows = self.copies(&message, &self.recipients(&row.id)?)?;
            // A long text goes in chunks, one envelope each: the claim grows with them.
            let claim = ATTEMPT_CLAIM.as_millis() as u64
                * rows.first().map(|r| crate::store::attempt_envelopes(&r.body)).unwrap_or(1);
            self.store().group_send(&own, &rows, now + claim)?;
            (rows, id)
        };
        let results = self.0.parts.outbox.attempt_all(rows.clone(), SEND_IN_FLIGHT).await;
        let mut result = control::GroupSendResult {
            id: format_id(&id),
            group: format_id(&row.id),
            recipients: rows.len() as u32,
            delivered: 0,
            stored: 0,
            queued: 0,
            failed: 0,
            detail: None,
        };
        for (state, detail) in results {
            match state {
                MessageState::Sent | MessageState::Delivered | MessageState::Read => {
                    result.delivered += 1
                }
                MessageState::Stored => result.stored += 1,
                MessageState::Queued => result.queued += 1,
                MessageState::Failed => result.failed += 1,
            }
            // A stored copy's detail (where it is stored) adds nothing to the counts; the
            // reason a copy is still queued, or was refused, does.
            if result.detail.is_none()
                && matches!(state, MessageState::Queued | MessageState::Failed)
            {
                result.detail = detail;
            }
        }
        Ok(result)
    }
}

/// The view of a text that goes into an event: cut to
/// [`kolokol_protocol::control::EVENT_TEXT_LEN`] bytes, so the event buffer stays small.
fn event_text(mut view: control::GroupText) -> control::GroupText {
    if view.text.len() > control::EVENT_TEXT_LEN {
        let mut end = control::EVENT_TEXT_LEN;
        while !view.text.is_char_boundary(end) {
            end -= 1;
        }
        view.text.truncate(end);
        view.truncated = true;
    }
    view
}

/// How many admins a group has.
fn admins(state: &GroupState) -> usize {
    state.members.values().filter(|m| m.admin).count()
}

fn check_group_name(name: &str) -> Result<()> {
    if name.trim().is_empty()
        || name.len() > MAX_GROUP_NAME_LEN
        || name.chars().any(char::is_control)
    {
        return Err(Error::BadMessage(format!(
            "a group name must be 1 to {MAX_GROUP_NAME_LEN} bytes, without control characters"
        )));
    }
    Ok(())
}

mod incoming;
#[cfg(test)]
mod tests;
mod views;
