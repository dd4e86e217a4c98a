//! The one error type of `kolokol-node`.

use std::path::PathBuf;

/// Everything the node can fail at, each variant worded so it can be shown to a user as is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory could not be read, written or created.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("cannot create data dir").
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Another daemon holds the data directory's lock.
    #[error(
        "another kolokol daemon is already running on {0} (stop it first, or use another --data-dir)"
    )]
    AlreadyRunning(PathBuf),
    /// The SQLite store failed.
    #[error("store {path}: {source}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// The store is encrypted and was not given what unlocks it, or was given the wrong kind
    /// (a passphrase for a key-file store).
    #[error("the store in {path} is encrypted: {detail}")]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// What it needs.
        detail: String,
    },
    /// The passphrase or key does not open the encrypted store; nothing was changed.
    #[error(
        "wrong passphrase or key for the encrypted store {0} (nothing was read or changed; a forgotten passphrase cannot be recovered)"
    )]
    WrongKey(PathBuf),
    /// A new passphrase is too short.
    #[error("the passphrase is shorter than {0} characters; a few random words make a good one")]
    WeakPassphrase(usize),
    /// `init --encrypt` on a store that is encrypted already.
    #[error(
        "the store in {0} is encrypted already (change its passphrase with: kolokol passphrase)"
    )]
    AlreadyEncrypted(PathBuf),
    /// A passphrase change on a store that is not encrypted.
    #[error("the store in {0} is not encrypted (encrypt it with: kolokol init --encrypt)")]
    NotEncrypted(PathBuf),
    /// A configured address is unusable.
    #[error("{0}")]
    Address(String),
    /// A configuration or key file in the data directory is unusable.
    #[error("config {path}: {detail}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// What is wrong, with the line where known.
        detail: String,
    },
    /// libp2p refused to build the swarm or to listen.
    #[error("network: {0}")]
    Network(String),
    /// Protocol-level failure (decoding, sealing, identity file).
    #[error(transparent)]
    Protocol(#[from] kolokol_protocol::Error),
    /// No contact has that name.
    #[error("no contact named {0:?} (see `kolokol contacts list`)")]
    UnknownContact(String),
    /// Neither a contact's name nor a peer id, nor the start of the id of a peer we have a
    /// chat with or blocked (the commands that take either: chat, accept, block, unblock).
    #[error(
        "no contact named {0:?}, and no peer id or start of one from `kolokol inbox` (see `kolokol contacts list`)"
    )]
    UnknownPeer(String),
    /// Accepting a peer that never wrote to us: there is no request, and no key of theirs.
    #[error(
        "{0} has not written to you, so there is no request to accept (a new contact is added from their invite: `kolokol contacts add NAME INVITE`)"
    )]
    NoRequest(String),
    /// No contact and no group has that name (a send, which goes to either).
    #[error(
        "no contact or group named {0:?} (see `kolokol contacts list` and `kolokol group list`)"
    )]
    UnknownRecipient(String),
    /// No outgoing message has that id.
    #[error(
        "no message has the id {0:?} (an id is the 32 hex digits `kolokol send` or `kolokol outbox` printed, or a unique start of them, at least 4)"
    )]
    UnknownMessage(String),
    /// An abbreviated message id names more than one message.
    #[error("the id {0:?} matches several messages; type more of its digits")]
    AmbiguousId(String),
    /// No group has that name or id (the text says which, and how to name it).
    #[error("{0}")]
    UnknownGroup(String),
    /// A group change or text is not allowed (not an admin, not a member, already a member).
    #[error("{0}")]
    GroupRefused(String),
    /// Leaving a group as its last admin while other members remain: nobody could add,
    /// remove or rename after, so it is done only when forced.
    #[error(
        "you are the last admin of {group:?}: make another member an admin first (kolokol group admin {} NAME), or leave anyway with --force (then nobody can add, remove or rename)",
        shell_word(.group)
    )]
    LastAdmin {
        /// The group's name.
        group: String,
    },
    /// A contact with that name or peer already exists.
    #[error("{0}")]
    ContactExists(String),
    /// The message cannot be sent as given.
    #[error("{0}")]
    BadMessage(String),
    /// The node is shutting down and cannot take the request.
    #[error("the node is shutting down")]
    ShuttingDown,
    /// A crypto worker panicked on this input: a bug, and the input is refused rather than
    /// retried for ever.
    #[error("a crypto worker failed on this input (a bug; the input is refused)")]
    WorkerPanicked,
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io { action, path: path.into(), source }
    }
}

/// `text` as one shell word: as it is when it needs no quoting, else in single quotes, so a
/// command an error suggests can be pasted as is.
fn shell_word(text: &str) -> String {
    let plain = |c: char| c.is_alphanumeric() || "-_.,:/@+=".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Short for `Result<T, node::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
