//! The control API's file types: the params of `file.send` and the transfers `files` lists,
//! both ways.

use serde::{Deserialize, Serialize};

/// Params of `file.send`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileSendParams {
    /// The contact's local name.
    pub to: String,
    /// The file, as a path the daemon can read (absolute: the daemon runs elsewhere).
    pub path: String,
}

/// Which way a file goes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileDirection {
    /// We send it.
    Out,
    /// We receive it.
    In,
}

/// Where a file transfer is. On the wire (JSON) each is its lower-case name.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FileState {
    /// Ours, being sent or waiting for the recipient (the detail says why, after a failed
    /// attempt).
    Queued,
    /// Ours, and the recipient's node has it whole, checked against its hash and saved.
    Delivered,
    /// Theirs, from someone who is not a contact: it waits until they are accepted.
    Request,
    /// Theirs, arriving.
    Receiving,
    /// Theirs, whole, checked and saved at `path`.
    Received,
    /// Given up; the detail says why.
    Failed,
}

/// A file transfer, either way, as `files` lists it and `file` events carry it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileTransfer {
    /// The transfer's id, 32 hex digits.
    pub id: String,
    /// Which way it goes.
    pub direction: FileDirection,
    /// The other side's peer id.
    pub peer_id: String,
    /// The other side's contact name, if they are a contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// The file's name: ours as sent, theirs as they named it (before it was made safe).
    pub name: String,
    /// Its length in bytes.
    pub size: u64,
    /// Bytes the recipient holds: acknowledged (ours) or written to disk (theirs).
    pub done: u64,
    /// Where it is.
    pub state: FileState,
    /// Why the last attempt failed, why it was given up, or what it waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Where a received file was saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How many chunks it travels in.
    pub chunks: u32,
    /// Chunks that travelled more than once: ours, deliveries that did not add an
    /// acknowledged chunk (a drop mid-chunk); theirs, chunks that arrived when already on disk.
    /// After a restart of either side, only the chunk in flight at the drop is sent again.
    pub repeats: u32,
    /// When it began, Unix ms.
    pub created_at_ms: u64,
    /// When it last changed, Unix ms.
    pub updated_at_ms: u64,
}
