//! The control API between the daemon and its clients (the CLI, bots, GUIs): newline-delimited
//! JSON-RPC 2.0 over the Unix socket `control.sock`.
//!
//! These are the only `serde` types in the project (peer wire types use bincode's `Encode`):
//! they are a public interface, documented in `docs/USAGE.md`, so fields are added, never renamed.

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod files;
mod groups;

pub use files::*;
pub use groups::*;

/// The longest request line the daemon reads, in bytes; a longer line is answered with an
/// error and the connection is closed, so a client cannot make the daemon buffer without end.
pub const MAX_LINE_LEN: usize = 8 * 1024 * 1024;

/// Method names.
pub mod method {
    /// Returns [`super::IdInfo`].
    pub const ID: &str = "id";
    /// Returns [`super::InviteInfo`].
    pub const INVITE: &str = "invite";
    /// Params [`super::ContactAddParams`]; returns [`super::Contact`].
    pub const CONTACTS_ADD: &str = "contacts.add";
    /// Returns a list of [`super::Contact`].
    pub const CONTACTS_LIST: &str = "contacts.list";
    /// Params [`super::ContactNameParams`]; returns the removed [`super::Contact`].
    pub const CONTACTS_REMOVE: &str = "contacts.remove";
    /// Params [`super::ContactNameParams`]; returns [`super::SafetyNumber`].
    pub const CONTACTS_VERIFY: &str = "contacts.verify";
    /// Params [`super::ContactRenameParams`]; returns the renamed [`super::Contact`].
    pub const CONTACTS_RENAME: &str = "contacts.rename";
    /// Params [`super::ContactMarkParams`]; returns the [`super::Contact`].
    pub const CONTACTS_MARK: &str = "contacts.mark";
    /// Params [`super::ContactAddParams`]; returns [`super::ContactReplaced`].
    pub const CONTACTS_REPLACE: &str = "contacts.replace";
    /// Params [`super::ContactAcceptParams`]; returns the new [`super::Contact`].
    pub const CONTACTS_ACCEPT: &str = "contacts.accept";
    /// Params [`super::PeerParams`]; returns [`super::BlockResult`].
    pub const CONTACTS_BLOCK: &str = "contacts.block";
    /// Params [`super::PeerParams`]; returns [`super::BlockResult`].
    pub const CONTACTS_UNBLOCK: &str = "contacts.unblock";
    /// Returns a list of [`super::Blocked`].
    pub const CONTACTS_BLOCKED: &str = "contacts.blocked";
    /// Params [`super::SendParams`]; returns [`super::SendResult`].
    pub const SEND: &str = "send";
    /// Params [`super::InboxParams`]; returns a list of [`super::InboxMessage`], oldest first.
    pub const INBOX: &str = "inbox";
    /// Params [`super::InboxReadParams`]; marks those received messages read and returns
    /// [`super::InboxReadResult`].
    pub const INBOX_READ: &str = "inbox.read";
    /// Returns [`super::Status`].
    pub const STATUS: &str = "status";
    /// Returns [`super::SnapshotInfo`]: a snapshot of the database for a backup.
    pub const BACKUP_SNAPSHOT: &str = "backup.snapshot";
    /// Returns a list of [`super::ChatSummary`], the most recent first.
    pub const CHATS: &str = "chats";
    /// Params [`super::ChatParams`]; returns [`super::Chat`].
    pub const CHAT: &str = "chat";
    /// Params [`super::OutboxParams`]; returns a list of [`super::OutboxMessage`], newest last.
    pub const OUTBOX: &str = "outbox";
    /// Params [`super::MessageParams`]; returns [`super::MessageStatus`].
    pub const MESSAGE: &str = "message";
    /// Returns [`super::DoctorReport`].
    pub const DOCTOR: &str = "doctor";
    /// Returns [`super::PeersInfo`].
    pub const PEERS: &str = "peers";
    /// Returns [`super::BundleInfo`].
    pub const PEERS_EXPORT: &str = "peers.export";
    /// Params [`super::ImportParams`]; returns [`super::ImportResult`].
    pub const PEERS_IMPORT: &str = "peers.import";
    /// Params [`super::GroupCreateParams`]; returns [`super::GroupInfo`].
    pub const GROUP_CREATE: &str = "group.create";
    /// Returns a list of [`super::GroupInfo`], the most recently active first.
    pub const GROUP_LIST: &str = "group.list";
    /// Params [`super::GroupInviteParams`]; returns [`super::GroupInfo`].
    pub const GROUP_INVITE: &str = "group.invite";
    /// Params [`super::GroupMemberParams`]; returns [`super::GroupInfo`].
    pub const GROUP_REMOVE: &str = "group.remove";
    /// Params [`super::GroupLeaveParams`]; returns [`super::GroupInfo`].
    pub const GROUP_LEAVE: &str = "group.leave";
    /// Params [`super::GroupAdminParams`]; returns [`super::GroupInfo`].
    pub const GROUP_ADMIN: &str = "group.admin";
    /// Params [`super::GroupRenameParams`]; returns [`super::GroupInfo`].
    pub const GROUP_RENAME: &str = "group.rename";
    /// Params [`super::GroupParams`]; returns [`super::GroupMembers`].
    pub const GROUP_MEMBERS: &str = "group.members";
    /// Params [`super::GroupSendParams`]; returns [`super::GroupSendResult`].
    pub const GROUP_SEND: &str = "group.send";
    /// Params [`super::GroupMessagesParams`]; returns [`super::GroupChat`].
    pub const GROUP_MESSAGES: &str = "group.messages";
    /// Params [`super::GroupParams`]; marks the group's texts read, returns
    /// [`super::GroupReadResult`].
    pub const GROUP_READ: &str = "group.read";
    /// Params [`super::InboxParams`]; returns a list of [`super::GroupText`]: the newest texts
    /// of every group, oldest first.
    pub const GROUP_INBOX: &str = "group.inbox";
    /// Returns `true`, then streams `event` notifications ([`super::Event`]) on this connection.
    pub const SUBSCRIBE: &str = "subscribe";
    /// Send a file to a contact (`FileSendParams` → `FileTransfer`, `queued`).
    pub const FILE_SEND: &str = "file.send";
    /// File transfers either way, the newest first (`OutboxParams` → `[FileTransfer]`).
    pub const FILES: &str = "files";
    /// The method name of event notifications sent after `subscribe`.
    pub const EVENT: &str = "event";
}

/// Error codes: the JSON-RPC 2.0 ones, then Kolokol's own (positive, stable).
pub mod code {
    /// The line is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a JSON-RPC 2.0 request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The params do not fit the method.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The daemon failed; the message says how.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// No contact has that name (or no peer has that id).
    pub const UNKNOWN_CONTACT: i64 = 1;
    /// The invite code could not be used.
    pub const BAD_INVITE: i64 = 2;
    /// A contact with that name, or that peer, already exists.
    pub const CONTACT_EXISTS: i64 = 3;
    /// The message is empty or too long.
    pub const BAD_MESSAGE: i64 = 4;
    /// No outgoing message has that id.
    pub const UNKNOWN_MESSAGE: i64 = 5;
    /// The bootstrap bundle could not be used.
    pub const BAD_BUNDLE: i64 = 6;
    /// A message id prefix names more than one message.
    pub const AMBIGUOUS_ID: i64 = 7;

    /// The stable name of a code, as `kolokol --json` prints it in errors: lower case words
    /// joined by `_`, never changed once published. An unknown code is `error`.
    pub fn name(code: i64) -> &'static str {
        match code {
            PARSE_ERROR => "parse_error",
            INVALID_REQUEST => "invalid_request",
            METHOD_NOT_FOUND => "method_not_found",
            INVALID_PARAMS => "invalid_params",
            INTERNAL_ERROR => "internal_error",
            UNKNOWN_CONTACT => "unknown_contact",
            BAD_INVITE => "bad_invite",
            CONTACT_EXISTS => "contact_exists",
            BAD_MESSAGE => "bad_message",
            UNKNOWN_MESSAGE => "unknown_message",
            BAD_BUNDLE => "bad_bundle",
            AMBIGUOUS_ID => "ambiguous_id",
            UNKNOWN_GROUP => "unknown_group",
            GROUP_REFUSED => "group_refused",
            _ => "error",
        }
    }
    /// No group has that name or id, or the name is shared by several groups.
    pub const UNKNOWN_GROUP: i64 = 20;
    /// The group change is not allowed: not an admin, not a member, already a member (or
    /// already an admin, or not one), too many members, or the last admin leaving while others
    /// remain, without force.
    pub const GROUP_REFUSED: i64 = 21;
}

/// A request line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Request {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// Echoed in the response. A request without an id is a notification: it is carried out
    /// and not answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    /// One of [`method`].
    pub method: String,
    /// Method parameters, an object; absent means none.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub params: Value,
}

/// A response line.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// The request's id (`null` if the request could not be read).
    pub id: Value,
    /// The result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// The error, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RpcError>,
}

/// A JSON-RPC error object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RpcError {
    /// One of [`code`].
    pub code: i64,
    /// One line a person can act on.
    pub message: String,
}

/// An event notification line, sent to subscribed connections.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Notification {
    /// Always `"2.0"`.
    pub jsonrpc: String,
    /// Always [`method::EVENT`].
    pub method: String,
    /// The event.
    pub params: Event,
}

/// Something that happened in the daemon.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A message arrived.
    Message(InboxMessage),
    /// An outgoing message changed state.
    State(StateChange),
    /// A text arrived in a group (or one of ours was written there from another connection).
    GroupMessage(GroupText),
    /// A group changed: created, joined, a member added, removed or gone, renamed, left.
    Group(GroupEvent),
    /// A member's copy of one of our group texts changed state.
    GroupDelivery(GroupDelivery),
    /// A conversation was re-keyed: both sides start fresh keys, and what was queued for the
    /// peer is sealed again under them (docs/PROTOCOL.md 8.9).
    Rekeyed(Rekey),
    /// A file transfer, either way, made progress or changed state.
    File(FileTransfer),
    /// The subscriber fell behind and missed this many events; re-read `inbox` or `outbox`.
    Lagged {
        /// How many events were dropped.
        missed: u64,
    },
}

/// A conversation's re-key, as the `rekeyed` event and `contacts` show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Rekey {
    /// The peer's id.
    pub peer_id: String,
    /// Its contact name, if it is a contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Why, in a sentence for the user.
    pub reason: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

/// The answer to `id`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdInfo {
    /// The node's peer id.
    pub peer_id: String,
    /// The X25519 device key, hex.
    pub device_key: String,
}

/// The answer to `invite`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InviteInfo {
    /// The invite code.
    pub invite: String,
    /// The addresses it carries.
    pub addresses: Vec<String>,
}

/// Params of `contacts.add`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactAddParams {
    /// The local name for the contact.
    pub name: String,
    /// Their invite code.
    pub invite: String,
}

/// Params naming one contact.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactNameParams {
    /// The contact's local name.
    pub name: String,
}

/// A contact.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Contact {
    /// The local name.
    pub name: String,
    /// Their peer id.
    pub peer_id: String,
    /// Addresses known for them.
    pub addresses: Vec<String>,
    /// When they were added, Unix milliseconds.
    pub added_at_ms: u64,
    /// Whether the user marked them verified (compared safety numbers and they matched).
    #[serde(default)]
    pub verified: bool,
    /// When the user marked them verified, Unix milliseconds; absent while not verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_at_ms: Option<u64>,
    /// When the conversation with them was last re-keyed, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekeyed_at_ms: Option<u64>,
    /// Why it was re-keyed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekey_reason: Option<String>,
}

/// Params of `contacts.rename`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactRenameParams {
    /// The contact's name now (any case).
    pub name: String,
    /// The name to give them.
    pub new_name: String,
}

/// Params of `contacts.mark`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactMarkParams {
    /// The contact's name (any case).
    pub name: String,
    /// `true`: the safety numbers were compared and matched; `false`: take the mark away.
    pub verified: bool,
}

/// Params of `contacts.accept`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactAcceptParams {
    /// The peer id (or a unique start of it) of someone who wrote to us.
    pub peer_id: String,
    /// The name to give them.
    pub name: String,
}

/// Params naming one peer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeerParams {
    /// A peer id, or a unique start of one among the peers that wrote to us.
    pub peer_id: String,
}

/// The answer to `contacts.replace`: the contact with its new key, and what was replaced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContactReplaced {
    /// The contact, now with the new peer id and key, not verified.
    pub contact: Contact,
    /// The peer id the contact had until now.
    pub old_peer_id: String,
    /// Whether the old key had been marked verified.
    pub was_verified: bool,
}

/// The answer to `contacts.block` and `contacts.unblock`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BlockResult {
    /// The peer.
    pub peer_id: String,
    /// `contacts.block`: how many of its messages were deleted; `contacts.unblock`: 0.
    pub removed_messages: u64,
    /// Whether the peer is blocked now.
    pub blocked: bool,
}

/// A blocked peer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Blocked {
    /// The peer.
    pub peer_id: String,
    /// When it was blocked, Unix milliseconds.
    pub blocked_at_ms: u64,
}

/// The answer to `contacts.verify`: the number both sides compare to confirm each holds the
/// other's real identity key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SafetyNumber {
    /// The contact's local name.
    pub name: String,
    /// The contact's peer id.
    pub peer_id: String,
    /// This node's peer id.
    pub own_peer_id: String,
    /// 12 groups of 5 digits separated by spaces; the contact sees the same digits.
    pub safety_number: String,
}

/// Params of `send`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendParams {
    /// The contact's local name.
    pub to: String,
    /// The text.
    pub text: String,
    /// Whether to wait for the first delivery attempt (the default). With `false` the call
    /// returns as soon as the message is committed, `queued`, and `state` events tell the rest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
}

/// The answer to `send`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SendResult {
    /// The new message's id, 32 hex digits.
    pub id: String,
    /// Its state when the call returned: `sent`, `stored` (in the recipient's mailbox), `queued`
    /// if the first attempt and the deposit failed, or `failed` if it was refused.
    pub state: MessageState,
    /// Why the first attempt failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Params of `inbox`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InboxParams {
    /// Return at most this many of the newest messages (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A received message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct InboxMessage {
    /// Message id, 32 hex digits.
    pub id: String,
    /// The sender's contact name, or `null` if the sender is not a contact.
    pub from: Option<String>,
    /// The sender's peer id.
    pub from_peer_id: String,
    /// The text.
    pub text: String,
    /// When the sender says it sent it, Unix milliseconds.
    pub sent_at_ms: u64,
    /// When this node stored it, Unix milliseconds.
    pub received_at_ms: u64,
    /// When the user first read it (`inbox.read`), Unix milliseconds; absent while unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at_ms: Option<u64>,
    /// Set in a `message` event whose text was longer than [`EVENT_TEXT_LEN`] bytes and was
    /// cut there (at a character boundary); `inbox` has the whole text. Absent otherwise.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// The most bytes of text a `message` event carries. Events wait in a buffer of their own
/// for slow subscribers, so a burst of long messages must not hold megabytes each there.
pub const EVENT_TEXT_LEN: usize = 16 * 1024;

/// The answer to `backup.snapshot`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Where the snapshot of the database is (in the data directory, mode 0600); the caller
    /// reads it and deletes it.
    pub path: String,
    /// For an encrypted store, the key (64 hex digits) the snapshot is encrypted under: made
    /// for this snapshot alone and told only to the caller, so no page of an encrypted store is
    /// ever on disk in plaintext. Absent for a plain store, whose snapshot is plain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One conversation in the list `chats` returns.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatSummary {
    /// The peer's contact name, or `null` if the peer is not a contact.
    pub name: Option<String>,
    /// The peer.
    pub peer_id: String,
    /// Messages from the peer not read yet.
    pub unread: u32,
    /// Messages from the peer that its later ones say were written before them and that have
    /// not arrived yet (within the last 14 days).
    pub waiting: u64,
    /// When the newest message either way was sent or received, Unix ms; absent if none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at_ms: Option<u64>,
    /// The newest message either way, cut after [`CHAT_PREVIEW_CHARS`] characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_text: Option<String>,
    /// Whether that newest message is ours.
    #[serde(default)]
    pub last_from_me: bool,
    /// A request: someone who is not a contact wrote to us (accept with `contacts.accept`,
    /// or refuse with `contacts.block`).
    #[serde(default)]
    pub request: bool,
    /// Whether the contact is marked verified.
    #[serde(default)]
    pub verified: bool,
}

/// The most characters of a message that a conversation list shows.
pub const CHAT_PREVIEW_CHARS: usize = 200;

/// Params of `chat`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatParams {
    /// A contact's name (in any case), or a peer id.
    pub with: String,
    /// At most this many of the newest messages (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One conversation, in the order it was written.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Chat {
    /// The peer's contact name, or `null` if the peer is not a contact.
    pub name: Option<String>,
    /// The peer.
    pub peer_id: String,
    /// The newest messages either way, oldest first, in the order they were written.
    pub entries: Vec<ChatEntry>,
    /// Whether the contact is marked verified.
    #[serde(default)]
    pub verified: bool,
}

/// One message of a conversation, either way.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChatEntry {
    /// Message id, 32 hex digits.
    pub id: String,
    /// Whether this node's user wrote it.
    pub from_me: bool,
    /// The text, exactly as written.
    pub text: String,
    /// When its writer sent it, Unix ms by the writer's clock.
    pub sent_at_ms: u64,
    /// When this node stored it (received messages only), Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at_ms: Option<u64>,
    /// When the user first read it (received messages only); absent while unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at_ms: Option<u64>,
    /// Where it is (our messages only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MessageState>,
    /// The state's detail (our messages only), as in [`OutboxMessage`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Its number in its writer's series, if numbered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// How many messages its writer numbered just before it that have not arrived (received
    /// messages only; 0 when none are missing).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missing_before: u64,
    /// Set when those missing messages were not there 14 days after this one arrived: its
    /// writer gave up on them, and they will not come.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing_for_good: bool,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Params of `inbox.read`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InboxReadParams {
    /// Ids of received messages the user has now seen, 32 hex digits each.
    pub ids: Vec<String>,
}

/// The answer to `inbox.read`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct InboxReadResult {
    /// How many of the messages were unread until now; messages already read, and ids that
    /// name no received message, are not counted.
    pub marked: u32,
    /// How many read receipts that queued: one per sender who is a contact (one per 256 of
    /// their messages), none to strangers, and none when read receipts are turned off.
    pub receipts: u32,
}

/// Where an outgoing message is. States only move forward, in the order
/// `queued → stored → sent → delivered → read`, or to `failed`; `read` and `failed` are final.
/// On the wire (JSON) each is its lower-case name.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// In the outbox, not yet acknowledged by the recipient's node.
    Queued,
    /// Not acknowledged directly, but held by enough mailbox replicas; direct delivery is still
    /// retried.
    Stored,
    /// The recipient's node acknowledged it over a direct or relayed connection.
    Sent,
    /// The recipient's end-to-end receipt arrived.
    Delivered,
    /// The recipient's end-to-end read receipt arrived: their user has seen it.
    Read,
    /// Given up; the detail says why.
    Failed,
}

impl MessageState {
    /// Every state, in the order a message goes through them (`failed` last).
    pub const ALL: [MessageState; 6] = [
        MessageState::Queued,
        MessageState::Stored,
        MessageState::Sent,
        MessageState::Delivered,
        MessageState::Read,
        MessageState::Failed,
    ];

    /// The lower-case name, as in JSON and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Queued => "queued",
            MessageState::Stored => "stored",
            MessageState::Sent => "sent",
            MessageState::Delivered => "delivered",
            MessageState::Read => "read",
            MessageState::Failed => "failed",
        }
    }

    /// The state with this lower-case name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether no later state can follow.
    pub fn is_final(self) -> bool {
        matches!(self, MessageState::Read | MessageState::Failed)
    }
}

impl std::fmt::Display for MessageState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lets a state be compared with its name, as scripts and tests that read JSON do.
impl PartialEq<&str> for MessageState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A state change of an outgoing message.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateChange {
    /// Message id, 32 hex digits.
    pub id: String,
    /// The recipient's contact name.
    pub to: String,
    /// The new state.
    pub state: MessageState,
    /// Why, for `queued` after a failed attempt and for `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

/// Params of `outbox`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxParams {
    /// Return at most this many of the newest outgoing messages (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// An outgoing text message and where it is.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutboxMessage {
    /// Message id, 32 hex digits.
    pub id: String,
    /// The recipient's contact name, or their peer id if they are no longer a contact.
    pub to: String,
    /// The text.
    pub text: String,
    /// Where it is now.
    pub state: MessageState,
    /// Why the last attempt failed, while queued; why it gave up, when failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When it was written to the outbox, Unix milliseconds.
    pub created_at_ms: u64,
}

/// Params of `message`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageParams {
    /// Message id, 32 hex digits.
    pub id: String,
}

/// One step of a message's history.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateEntry {
    /// The state entered.
    pub state: MessageState,
    /// Why, where there is a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

/// The answer to `message`: an outgoing message and every state it went through.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageStatus {
    /// The message.
    pub message: OutboxMessage,
    /// Its states, oldest first.
    pub history: Vec<StateEntry>,
}

/// The answer to `status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Status {
    /// The node's peer id.
    pub peer_id: String,
    /// `node` or `relay`.
    pub role: String,
    /// Addresses the node listens on, circuit addresses through relays included.
    pub listen_addresses: Vec<String>,
    /// Addresses confirmed as reachable from outside.
    pub external_addresses: Vec<String>,
    /// Relays this node holds a reservation on.
    pub relay_reservations: Vec<String>,
    /// Peers connected right now.
    pub connected_peers: usize,
    /// Peers in the Kademlia routing table.
    pub routing_table_size: usize,
    /// Outgoing text messages in state `queued`: not yet acknowledged by anyone.
    pub queued_messages: u64,
    /// Outgoing text messages in state `stored`: waiting in their recipients' mailboxes (and
    /// still retried directly) until the recipient fetches them.
    #[serde(default)]
    pub stored_messages: u64,
    /// Files this node sends that are not delivered yet (offered, being sent, or waiting for
    /// the recipient to accept the sender).
    #[serde(default)]
    pub queued_files: u64,
    /// `public` (a direct address is confirmed reachable), `relayed` (reachable through relay
    /// reservations) or `unreachable`.
    #[serde(default)]
    pub reachability: String,
    /// Relays known as candidates for reservations.
    #[serde(default)]
    pub known_relays: usize,
    /// How bootstrapping goes, in one line.
    #[serde(default)]
    pub bootstrap: String,
    /// Whether the presence record is published, in one line.
    #[serde(default)]
    pub presence: String,
    /// Whether mDNS looks for peers on the local network, and how many it found, in one line.
    #[serde(default)]
    pub local_network: String,
}

/// The answer to `doctor`: every check, in order.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DoctorReport {
    /// The checks.
    pub checks: Vec<DoctorCheck>,
}

/// One diagnostic check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DoctorCheck {
    /// What was checked.
    pub name: String,
    /// `ok`, `warn` or `fail`.
    pub status: String,
    /// What was found, in one line.
    pub detail: String,
    /// What to do about it, for `warn` and `fail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// The answer to `peers`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PeersInfo {
    /// Open connections, one entry per connection.
    pub connected: Vec<ConnectedPeerInfo>,
    /// The peer cache, relays and recent successes first.
    pub cached: Vec<CachedPeerInfo>,
    /// Whether the node looks for peers on the local network with mDNS (and announces itself
    /// there).
    #[serde(default)]
    pub mdns: bool,
    /// Peers found on the local network and not expired; empty when `mdns` is off.
    #[serde(default)]
    pub lan: Vec<LanPeerInfo>,
}

/// One peer found on the local network. It is remembered in memory only: a peer found this
/// way enters the peer cache, like any other, once the node has reached it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LanPeerInfo {
    /// The peer.
    pub peer_id: String,
    /// The addresses it announced on the local network.
    pub addresses: Vec<String>,
    /// How it was found: `mdns`.
    pub source: String,
}

/// One open connection.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectedPeerInfo {
    /// The peer.
    pub peer_id: String,
    /// `direct`, `relayed`, or `hole-punched` (direct, upgraded from relayed by DCUtR).
    pub via: String,
    /// The connection's remote address.
    pub address: String,
}

/// One peer of the peer cache.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedPeerInfo {
    /// The peer.
    pub peer_id: String,
    /// Addresses it was reached at, newest first.
    pub addresses: Vec<String>,
    /// Whether it serves as a relay.
    pub relay: bool,
    /// `connection` (we reached it) or `bundle` (imported).
    pub source: String,
    /// Last seen or imported, Unix milliseconds.
    pub last_seen_ms: u64,
    /// Last working connection, Unix milliseconds.
    pub last_success_ms: Option<u64>,
}

/// The answer to `peers.export`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundleInfo {
    /// The signed bundle text (`kolokolpeers1…`).
    pub bundle: String,
    /// How many peers it lists.
    pub peers: usize,
}

/// Params of `peers.import`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportParams {
    /// The bundle text.
    pub bundle: String,
}

/// The answer to `peers.import`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImportResult {
    /// Peers added to the peer cache and dialed.
    pub imported: usize,
    /// Who signed the bundle.
    pub exporter: String,
}

impl Request {
    /// A request with the given id, method and params.
    pub fn new(id: u64, method: &str, params: Value) -> Self {
        Self { jsonrpc: "2.0".into(), id: Some(Value::from(id)), method: method.into(), params }
    }
}

impl Response {
    /// A success response.
    pub fn ok(id: Value, result: Value) -> Self {
        Self { jsonrpc: "2.0".into(), id, result: Some(result), error: None }
    }

    /// An error response.
    pub fn err(id: Value, code: i64, message: impl Into<String>) -> Self {
        Self {
            jsonrpc: "2.0".into(),
            id,
            result: None,
            error: Some(RpcError { code, message: message.into() }),
        }
    }
}

impl Notification {
    /// Wraps an event.
    pub fn new(event: Event) -> Self {
        Self { jsonrpc: "2.0".into(), method: method::EVENT.into(), params: event }
    }
}
