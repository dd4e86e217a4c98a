//! The control API's group types: the params and answers of the `group.*` methods, and the
//! group events.

use serde::{Deserialize, Serialize};

use super::MessageState;

/// Params of `group.create`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupCreateParams {
    /// The group's name, 1 to 64 bytes.
    pub name: String,
    /// The name the other members see you under, until they have a contact name for you
    /// (at most 64 bytes; default: none, so they see your peer id).
    #[serde(default, rename = "as", skip_serializing_if = "Option::is_none")]
    pub as_name: Option<String>,
}

/// Params naming one group.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupParams {
    /// The group's name, or its id (32 hex digits, or a unique start of at least 4).
    pub group: String,
}

/// Params of `group.invite`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupInviteParams {
    /// The group.
    pub group: String,
    /// Who to add: contact names, or invite codes (`kolokol1…`) of people who are not.
    pub members: Vec<String>,
    /// The name the members see someone added by invite code under (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Make them admins too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// Params of `group.remove`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupMemberParams {
    /// The group.
    pub group: String,
    /// The member: a contact name, the name the group lists them under, or a peer id.
    pub member: String,
}

/// Params of `group.leave`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupLeaveParams {
    /// The group.
    pub group: String,
    /// Leave even as the last admin while other members remain (then nobody can add, remove or
    /// rename); without it that is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}

/// Params of `group.admin`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupAdminParams {
    /// The group.
    pub group: String,
    /// The member: a contact name, the name the group lists them under, or a peer id.
    pub member: String,
    /// `true` to make them an admin, `false` to make them a plain member again.
    pub admin: bool,
}

/// Params of `group.rename`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupRenameParams {
    /// The group.
    pub group: String,
    /// Its new name, 1 to 64 bytes.
    pub name: String,
}

/// Params of `group.send`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupSendParams {
    /// The group.
    pub group: String,
    /// The text.
    pub text: String,
}

/// Params of `group.messages`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupMessagesParams {
    /// The group.
    pub group: String,
    /// At most this many of the newest texts (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A group as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's id, 32 hex digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// `member`, `left`, `removed` (by an admin), or `pending` (its history is still arriving).
    pub status: String,
    /// Whether you are an admin.
    pub admin: bool,
    /// How many members it has, you included.
    pub members: u32,
    /// How many of them are admins.
    pub admins: u32,
    /// Texts from others you have not read.
    pub unread: u64,
    /// When its newest text was written, Unix ms; absent if none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at_ms: Option<u64>,
    /// How many signed changes make up its membership record.
    pub changes: u64,
    /// The record's version: the largest Lamport number among its changes.
    #[serde(default)]
    pub version: u64,
    /// The ids of its newest changes (the heads of its graph), 64 hex digits each: two members
    /// with the same heads hold the same record.
    #[serde(default)]
    pub heads: Vec<String>,
}

/// A member of a group.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupMember {
    /// Their peer id.
    pub peer_id: String,
    /// The name to show: your contact name for them, else the one the group lists them under,
    /// else their peer id.
    pub name: String,
    /// The name the group lists them under (given by whoever added them); may be empty.
    pub listed_as: String,
    /// Your contact name for them, if they are a contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Whether they are an admin.
    pub admin: bool,
    /// Whether this is you.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub me: bool,
}

/// The answer to `group.members`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupMembers {
    /// The group.
    pub group: GroupInfo,
    /// Its members, admins first.
    pub members: Vec<GroupMember>,
}

/// A text of a group, yours or a member's.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupText {
    /// The text's id, 32 hex digits (the same for every member).
    pub id: String,
    /// The group's id.
    pub group: String,
    /// The group's name.
    pub group_name: String,
    /// The writer's name to show (as in [`GroupMember::name`]).
    pub from: String,
    /// The writer's peer id.
    pub from_peer_id: String,
    /// Whether you wrote it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub from_me: bool,
    /// The text.
    pub text: String,
    /// Its number among its writer's texts to the group.
    pub seq: u64,
    /// When its writer sent it, Unix ms by the writer's clock.
    pub sent_at_ms: u64,
    /// When this node stored it, Unix ms.
    pub received_at_ms: u64,
    /// When you first read it (others' texts); absent while unread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_at_ms: Option<u64>,
    /// How many texts its writer numbered just before it that have not arrived.
    #[serde(default, skip_serializing_if = "no_gap")]
    pub missing_before: u64,
    /// Your texts: how many members' nodes have it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<u32>,
    /// Your texts: how many members it was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipients: Option<u32>,
    /// Set in a `group_message` event whose text was cut at
    /// [`EVENT_TEXT_LEN`](crate::control::EVENT_TEXT_LEN) bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

fn no_gap(n: &u64) -> bool {
    *n == 0
}

/// The answer to `group.messages`: a group as a conversation.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupChat {
    /// The group.
    pub group: GroupInfo,
    /// Its newest texts, oldest first: each writer's in the order they wrote them.
    pub messages: Vec<GroupText>,
}

/// The answer to `group.read`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupReadResult {
    /// How many texts were unread until now. Members are not told (no read receipts in groups).
    pub marked: u64,
}

/// The answer to `group.send` (and to `send` naming a group).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupSendResult {
    /// The text's id, 32 hex digits.
    pub id: String,
    /// The group's id.
    pub group: String,
    /// How many members it was sent to (everyone but you).
    pub recipients: u32,
    /// How many members' nodes acknowledged it.
    pub delivered: u32,
    /// How many copies wait in members' mailboxes.
    pub stored: u32,
    /// How many copies wait in your outbox for another attempt.
    pub queued: u32,
    /// How many members refused it.
    pub failed: u32,
    /// Why the first copy that is still queued, or was refused, is so; absent if none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A change to a group, as an event.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupEvent {
    /// The group's id.
    pub group: String,
    /// The group's name now.
    pub group_name: String,
    /// `created`, `joined`, `member_added`, `member_removed` (by an admin, or left), `renamed`,
    /// `admin_changed`, `removed` (you were), `left` (you did), or `updated` (new changes
    /// arrived that altered nothing shown: they lost to concurrent ones, or their author had
    /// no right to make them).
    pub change: String,
    /// The member concerned, by the name to show, where there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The member's peer id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_peer_id: Option<String>,
    /// When, Unix ms.
    pub at_ms: u64,
}

/// A member's copy of one of our group texts changed state.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupDelivery {
    /// The group's id.
    pub group: String,
    /// The group's name.
    pub group_name: String,
    /// The text's id.
    pub id: String,
    /// The member, by contact name if a contact, else peer id.
    pub member: String,
    /// The member's peer id.
    pub member_peer_id: String,
    /// The new state of their copy.
    pub state: MessageState,
    /// When, Unix ms.
    pub at_ms: u64,
}
