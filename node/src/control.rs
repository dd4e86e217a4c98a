//! The control-API server: newline-delimited JSON-RPC 2.0 on `control.sock` (mode 0600).
//!
//! One task accepts connections; each connection gets its own task that reads request lines
//! (at most [`MAX_LINE_LEN`] bytes each), answers them in order, and, after `subscribe`,
//! interleaves event notifications. Malformed input gets a JSON-RPC error, never a dropped
//! daemon; a line over the limit is answered and the connection closed, because the rest of it
//! cannot be told apart from the next request.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kolokol_protocol::control::FileSendParams;
use kolokol_protocol::control::{
    ChatParams, ContactAcceptParams, ContactAddParams, ContactMarkParams, ContactNameParams,
    ContactRenameParams, Event, ImportParams, InboxParams, InboxReadParams, MAX_LINE_LEN,
    MessageParams, Notification, OutboxParams, PeerParams, Request, Response, SendParams, code,
    method,
};
use kolokol_protocol::control::{
    GroupAdminParams, GroupCreateParams, GroupInviteParams, GroupLeaveParams, GroupMemberParams,
    GroupMessagesParams, GroupParams, GroupRenameParams, GroupSendParams,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, broadcast, watch};
use tokio::task::JoinSet;

use crate::error::{Error, Result};
use crate::node::Node;

/// Control connections served at once; more wait in the kernel's accept queue.
pub const MAX_CONTROL_CONNECTIONS: usize = 64;

/// Default number of messages `inbox` and `outbox` return.
pub const DEFAULT_LIST_LIMIT: u32 = 100;

/// Binds the control socket, replacing a stale one (the caller holds the data dir lock, so no
/// other daemon can be using it), and restricts it to the owner.
pub(crate) fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        std::fs::remove_file(path).map_err(|e| Error::io("cannot remove stale socket", path, e))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| Error::io("cannot bind control socket", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io("cannot restrict control socket", path, e))?;
    Ok(listener)
}

/// Serves control connections until shutdown, then removes the socket file.
pub(crate) async fn serve(
    node: Node,
    listener: UnixListener,
    path: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONTROL_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let Ok(permit) = slots.clone().acquire_owned().await else { break };
                    let node = node.clone();
                    let shutdown = shutdown.clone();
                    connections.spawn(async move {
                        serve_connection(node, stream, shutdown).await;
                        drop(permit);
                    });
                }
                Err(e) => tracing::warn!(%e, "control socket accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    connections.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

/// Why a line could not be read.
enum LineError {
    TooLong,
    Io,
}

/// Reads one line into `buf` (without the newline), refusing to hold more than `max` bytes.
/// Cancel-safe: bytes read before a cancellation stay in `buf` for the next call.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
    max: usize,
) -> std::result::Result<Option<Vec<u8>>, LineError> {
    loop {
        let available = reader.fill_buf().await.map_err(|_| LineError::Io)?;
        if available.is_empty() {
            return Ok(None);
        }
        if let Some(pos) = available.iter().position(|b| *b == b'\n') {
            if buf.len() + pos > max {
                return Err(LineError::TooLong);
            }
            buf.extend_from_slice(&available[..pos]);
            reader.consume(pos + 1);
            return Ok(Some(std::mem::take(buf)));
        }
        let n = available.len();
        if buf.len() + n > max {
            return Err(LineError::TooLong);
        }
        buf.extend_from_slice(available);
        reader.consume(n);
    }
}

async fn serve_connection(node: Node, stream: UnixStream, mut shutdown: watch::Receiver<bool>) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    let mut events: Option<broadcast::Receiver<Event>> = None;
    loop {
        let out = tokio::select! {
            line = read_line(&mut reader, &mut buf, MAX_LINE_LEN) => match line {
                Ok(Some(line)) if line.iter().all(u8::is_ascii_whitespace) => continue,
                Ok(Some(line)) => match handle(&node, &line, &mut events).await {
                    Some(response) => serde_json::to_string(&response),
                    None => continue,
                },
                Ok(None) | Err(LineError::Io) => break,
                Err(LineError::TooLong) => {
                    let response = Response::err(
                        Value::Null,
                        code::INVALID_REQUEST,
                        format!("request line longer than {MAX_LINE_LEN} bytes; closing the connection"),
                    );
                    if let Ok(text) = serde_json::to_string(&response) {
                        let _ = write.write_all(format!("{text}\n").as_bytes()).await;
                    }
                    break;
                }
            },
            event = next_event(&mut events) => serde_json::to_string(&Notification::new(event)),
            _ = shutdown.changed() => break,
        };
        let Ok(mut text) = out else { break };
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            break;
        }
    }
}

/// The next event for a subscribed connection; never resolves for one that is not subscribed.
async fn next_event(events: &mut Option<broadcast::Receiver<Event>>) -> Event {
    let Some(rx) = events.as_mut() else { return std::future::pending().await };
    match rx.recv().await {
        Ok(event) => event,
        Err(broadcast::error::RecvError::Lagged(missed)) => Event::Lagged { missed },
        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
    }
}

/// Answers one request line; `None` for notifications (requests without an id).
async fn handle(
    node: &Node,
    line: &[u8],
    events: &mut Option<broadcast::Receiver<Event>>,
) -> Option<Response> {
    let request: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => {
            let (code, what) = if serde_json::from_slice::<Value>(line).is_ok() {
                (code::INVALID_REQUEST, "not a JSON-RPC 2.0 request")
            } else {
                (code::PARSE_ERROR, "not JSON")
            };
            return Some(Response::err(Value::Null, code, format!("{what}: {e}")));
        }
    };
    let id = request.id.clone().unwrap_or(Value::Null);
    if request.jsonrpc != "2.0" {
        return Some(Response::err(id, code::INVALID_REQUEST, "jsonrpc must be \"2.0\""));
    }
    let result = dispatch(node, &request, events).await;
    request.id.as_ref()?;
    Some(match result {
        Ok(value) => Response::ok(id, value),
        Err((code, message)) => Response::err(id, code, message),
    })
}

type Outcome = std::result::Result<Value, (i64, String)>;

fn params<T: DeserializeOwned>(request: &Request) -> std::result::Result<T, (i64, String)> {
    let value = if request.params.is_null() {
        Value::Object(Default::default())
    } else {
        request.params.clone()
    };
    serde_json::from_value(value)
        .map_err(|e| (code::INVALID_PARAMS, format!("bad params for {}: {e}", request.method)))
}

fn to_value<T: serde::Serialize>(v: T) -> Outcome {
    serde_json::to_value(v).map_err(|e| (code::INTERNAL_ERROR, e.to_string()))
}

fn failure(e: Error) -> (i64, String) {
    let code = match &e {
        Error::UnknownContact(_)
        | Error::UnknownRecipient(_)
        | Error::UnknownPeer(_)
        | Error::NoRequest(_) => code::UNKNOWN_CONTACT,
        Error::ContactExists(_) => code::CONTACT_EXISTS,
        Error::BadMessage(_) => code::BAD_MESSAGE,
        Error::UnknownMessage(_) => code::UNKNOWN_MESSAGE,
        Error::AmbiguousId(_) => code::AMBIGUOUS_ID,
        Error::UnknownGroup(_) => code::UNKNOWN_GROUP,
        Error::GroupRefused(_) | Error::LastAdmin { .. } => code::GROUP_REFUSED,
        Error::Protocol(kolokol_protocol::Error::Invite(_)) => code::BAD_INVITE,
        Error::Protocol(kolokol_protocol::Error::Bundle(_)) => code::BAD_BUNDLE,
        _ => code::INTERNAL_ERROR,
    };
    (code, e.to_string())
}

async fn dispatch(
    node: &Node,
    request: &Request,
    events: &mut Option<broadcast::Receiver<Event>>,
) -> Outcome {
    match request.method.as_str() {
        method::ID => to_value(node.id()),
        method::INVITE => to_value(node.invite().await.map_err(failure)?),
        method::CONTACTS_ADD => {
            let p: ContactAddParams = params(request)?;
            let contact = node.add_contact(&p.name, &p.invite).await.map_err(|e| match e {
                Error::Protocol(inner) => (code::BAD_INVITE, format!("invalid invite: {inner}")),
                other => failure(other),
            })?;
            to_value(contact)
        }
        method::CONTACTS_LIST => to_value(node.contacts().map_err(failure)?),
        method::CONTACTS_REMOVE => {
            let p: ContactNameParams = params(request)?;
            to_value(node.remove_contact(&p.name).map_err(failure)?)
        }
        method::CONTACTS_RENAME => {
            let p: ContactRenameParams = params(request)?;
            to_value(node.rename_contact(&p.name, &p.new_name).map_err(failure)?)
        }
        method::CONTACTS_MARK => {
            let p: ContactMarkParams = params(request)?;
            to_value(node.mark_contact(&p.name, p.verified).map_err(failure)?)
        }
        method::CONTACTS_REPLACE => {
            let p: ContactAddParams = params(request)?;
            let replaced = node.replace_contact(&p.name, &p.invite).await.map_err(|e| match e {
                Error::Protocol(inner) => (code::BAD_INVITE, format!("invalid invite: {inner}")),
                other => failure(other),
            })?;
            to_value(replaced)
        }
        method::CONTACTS_ACCEPT => {
            let p: ContactAcceptParams = params(request)?;
            to_value(node.accept_contact(&p.peer_id, &p.name).map_err(failure)?)
        }
        method::CONTACTS_BLOCK => {
            let p: PeerParams = params(request)?;
            to_value(node.block(&p.peer_id).map_err(failure)?)
        }
        method::CONTACTS_UNBLOCK => {
            let p: PeerParams = params(request)?;
            to_value(node.unblock(&p.peer_id).map_err(failure)?)
        }
        method::CONTACTS_BLOCKED => to_value(node.blocked().map_err(failure)?),
        method::CONTACTS_VERIFY => {
            let p: ContactNameParams = params(request)?;
            to_value(node.verify_contact(&p.name).map_err(failure)?)
        }
        method::SEND => {
            let p: SendParams = params(request)?;
            if p.wait.unwrap_or(true) {
                to_value(node.send(&p.to, &p.text).await.map_err(failure)?)
            } else {
                to_value(node.enqueue(&p.to, &p.text).await.map_err(failure)?)
            }
        }
        method::FILE_SEND => {
            let p: FileSendParams = params(request)?;
            to_value(node.send_file(&p.to, std::path::Path::new(&p.path)).await.map_err(failure)?)
        }
        method::FILES => {
            let p: OutboxParams = params(request)?;
            to_value(node.files(p.limit.unwrap_or(DEFAULT_LIST_LIMIT)).map_err(failure)?)
        }
        method::INBOX => {
            let p: InboxParams = params(request)?;
            to_value(node.inbox(p.limit.unwrap_or(DEFAULT_LIST_LIMIT)).map_err(failure)?)
        }
        method::INBOX_READ => {
            let p: InboxReadParams = params(request)?;
            to_value(node.mark_read(&p.ids).map_err(failure)?)
        }
        method::OUTBOX => {
            let p: OutboxParams = params(request)?;
            to_value(node.outbox(p.limit.unwrap_or(DEFAULT_LIST_LIMIT)).map_err(failure)?)
        }
        method::MESSAGE => {
            let p: MessageParams = params(request)?;
            to_value(node.message(&p.id).map_err(failure)?)
        }
        method::STATUS => to_value(node.status().await.map_err(failure)?),
        method::CHATS => to_value(node.chats().map_err(failure)?),
        method::BACKUP_SNAPSHOT => to_value(node.backup_snapshot().map_err(failure)?),
        method::CHAT => {
            let p: ChatParams = params(request)?;
            to_value(node.chat(&p.with, p.limit.unwrap_or(DEFAULT_LIST_LIMIT)).map_err(failure)?)
        }
        method::PEERS => to_value(node.peers().await.map_err(failure)?),
        method::DOCTOR => to_value(node.doctor().await.map_err(failure)?),
        method::PEERS_EXPORT => to_value(node.export_peers().map_err(failure)?),
        method::PEERS_IMPORT => {
            let p: ImportParams = params(request)?;
            // Whatever the protocol crate finds wrong with the text is the bundle's fault.
            let result = node.import_peers(&p.bundle).await.map_err(|e| match e {
                Error::Protocol(inner) => (code::BAD_BUNDLE, inner.to_string()),
                other => failure(other),
            })?;
            to_value(result)
        }
        method::GROUP_CREATE => {
            let p: GroupCreateParams = params(request)?;
            to_value(node.group_create(&p.name, p.as_name.as_deref()).await.map_err(failure)?)
        }
        method::GROUP_LIST => to_value(node.groups().map_err(failure)?),
        method::GROUP_INVITE => {
            let p: GroupInviteParams = params(request)?;
            let info = node
                .group_invite(&p.group, &p.members, p.name.as_deref(), p.admin)
                .await
                .map_err(|e| match e {
                    Error::Protocol(inner @ kolokol_protocol::Error::Invite(_)) => {
                        (code::BAD_INVITE, format!("invalid invite: {inner}"))
                    }
                    other => failure(other),
                })?;
            to_value(info)
        }
        method::GROUP_REMOVE => {
            let p: GroupMemberParams = params(request)?;
            to_value(node.group_remove(&p.group, &p.member).await.map_err(failure)?)
        }
        method::GROUP_LEAVE => {
            let p: GroupLeaveParams = params(request)?;
            to_value(node.group_leave(&p.group, p.force).await.map_err(failure)?)
        }
        method::GROUP_ADMIN => {
            let p: GroupAdminParams = params(request)?;
            to_value(node.group_admin(&p.group, &p.member, p.admin).await.map_err(failure)?)
        }
        method::GROUP_RENAME => {
            let p: GroupRenameParams = params(request)?;
            to_value(node.group_rename(&p.group, &p.name).await.map_err(failure)?)
        }
        method::GROUP_MEMBERS => {
            let p: GroupParams = params(request)?;
            to_value(node.group_members(&p.group).map_err(failure)?)
        }
        method::GROUP_SEND => {
            let p: GroupSendParams = params(request)?;
            to_value(node.group_send(&p.group, &p.text).await.map_err(failure)?)
        }
        method::GROUP_MESSAGES => {
            let p: GroupMessagesParams = params(request)?;
            let limit = p.limit.unwrap_or(DEFAULT_LIST_LIMIT);
            to_value(node.group_messages(&p.group, limit).map_err(failure)?)
        }
        method::GROUP_READ => {
            let p: GroupParams = params(request)?;
            to_value(node.group_read(&p.group).map_err(failure)?)
        }
        method::GROUP_INBOX => {
            let p: InboxParams = params(request)?;
            to_value(node.group_inbox(p.limit.unwrap_or(DEFAULT_LIST_LIMIT)).map_err(failure)?)
        }
        method::SUBSCRIBE => {
            *events = Some(node.subscribe());
            Ok(Value::Bool(true))
        }
        other => Err((code::METHOD_NOT_FOUND, format!("no method {other:?}"))),
    }
}
