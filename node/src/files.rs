//! Files we receive, and what both directions share: the views the control API shows.
//!
//! An offer from a contact starts a transfer: a partial file in `<data dir>/partial`, named by
//! the transfer's id, and a row in the store. Each chunk is checked against the offer, written
//! at its place in the partial file, and only then recorded (`file_chunks`) and acknowledged, so
//! after a drop or a restart of either side the sender goes on from the first chunk we do not
//! acknowledge, and a chunk that arrives twice changes nothing. When the last chunk is in, the
//! file is checked against the offer's SHA-256, moved to the download directory under its
//! sender's name made safe ([`safe_name`], [`unique_path`]), and a line for it goes into the
//! inbox. A mismatch removes the partial file and refuses the chunk, which fails the transfer on
//! both sides. An offer from someone who is not a contact is kept as a request (at most
//! [`crate::store::MAX_FILE_REQUESTS`]) and answered busy, so its sender keeps trying until
//! the user accepts them as a contact, as with long messages.
//!
//! Files are written with blocking calls on the opener's task, as the store is: one chunk is
//! 62 720 bytes, and hashing the whole file at the end reads it through a buffer of
//! [`HASH_BUFFER`] bytes.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kolokol_protocol::control::{Event, FileDirection, FileState, FileTransfer};
use kolokol_protocol::file::{FILE_CHUNK_LEN, FileOffer, check_chunk, chunk_count};
use kolokol_protocol::message::{MessageId, format_id};
use libp2p::PeerId;
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::inbox::Received;
use crate::store::{FileChunkOutcome, FileReceiveRow, FileSendRow, InboxRow, Store};

/// Where received files go unless `download_dir` says otherwise, in the data directory.
pub const DOWNLOADS_DIR: &str = "downloads";

/// Where files being received are kept until whole, in the data directory.
pub const PARTIAL_DIR: &str = "partial";

/// The largest file a node sends or takes unless `max_file_mib` says otherwise: 256 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 256 * 1024 * 1024;

/// The buffer a file is read through to hash it: a file is never read whole into memory.
pub const HASH_BUFFER: usize = 256 * 1024;

/// The longest name a received file is saved under, in bytes, before a unique suffix.
pub const MAX_SAVED_NAME_LEN: usize = 200;

/// Abandoned transfers given up in one purge; the rest go at the next.
const MAX_PURGED: u32 = 64;

/// How many numbered names (`name (1).ext`, ...) are tried before the transfer's id is used.
const MAX_NAME_SUFFIX: u32 = 999;

/// The receiving side of files.
#[derive(Clone)]
pub(crate) struct Downloads(Arc<DownloadsParts>);

/// What the receiving side works with.
pub(crate) struct DownloadsParts {
    pub(crate) store: Store,
    pub(crate) events: Events,
    pub(crate) clock: Clock,
    /// Where whole files go.
    pub(crate) dir: PathBuf,
    /// Where partial files are kept.
    pub(crate) partial: PathBuf,
    /// Offers of larger files are refused.
    pub(crate) max_size: u64,
    /// Held while a file is checked and moved, so two last chunks cannot both finish it.
    pub(crate) finishing: Mutex<()>,
}

impl Downloads {
    pub(crate) fn new(parts: DownloadsParts) -> Self {
        Self(Arc::new(parts))
    }

    /// The partial file of transfer `id` from `peer`.
    fn partial_path(&self, peer: &PeerId, id: &MessageId) -> PathBuf {
        // The peer is part of the name: two senders may pick the same id.
        let peer = peer.to_base58();
        let tail = &peer[peer.len().saturating_sub(12)..];
        self.0.partial.join(format!("{}-{tail}.part", format_id(id)))
    }

    /// An offer arrived: from a contact it starts the transfer, from anyone else it waits as a
    /// request (answered busy); one over the size limit is refused.
    pub(crate) fn offered(
        &self,
        sender: &PeerId,
        contact: bool,
        id: &MessageId,
        offer: &FileOffer,
    ) -> Result<Received> {
        let store = &self.0.store;
        let now = self.0.clock.now_ms();
        if offer.size > self.0.max_size {
            tracing::info!(%sender, size = offer.size, max = self.0.max_size, "refused a file over the size limit");
            return Ok(Received::Rejected);
        }
        if let Some(row) = store.file_receive(sender, id)? {
            return match row.state.as_str() {
                "request" if contact => {
                    if !store.accept_file_request(sender, id, now)? {
                        return Ok(Received::Busy);
                    }
                    self.create_partial(sender, id)?;
                    self.announce_receive(sender, id);
                    Ok(Received::Accepted)
                }
                "request" => Ok(Received::OverQuota),
                "failed" => Ok(Received::Rejected),
                _ => Ok(Received::Accepted),
            };
        }
        let row = FileReceiveRow {
            id: *id,
            peer_id: *sender,
            name: offer.name.clone(),
            size: offer.size,
            sha256: offer.sha256,
            state: if contact { "receiving" } else { "request" }.into(),
            detail: (!contact).then(|| {
                "from someone who is not a contact: accept them (kolokol contacts accept) to \
                 receive it"
                    .to_owned()
            }),
            received: 0,
            repeated: 0,
            path: None,
            created_at_ms: now,
            updated_at_ms: now,
        };
        if !store.add_file_receive(&row)? {
            tracing::info!(%sender, "deferred a file offer: too many files arriving or waiting");
            return Ok(if contact { Received::Busy } else { Received::OverQuota });
        }
        if contact {
            self.create_partial(sender, id)?;
        }
        self.announce_receive(sender, id);
        Ok(if contact { Received::Accepted } else { Received::OverQuota })
    }

    /// Creates (or empties) the partial file of a transfer that begins.
    fn create_partial(&self, sender: &PeerId, id: &MessageId) -> Result<()> {
        std::fs::create_dir_all(&self.0.partial).map_err(|e| {
            Error::io("cannot create the partial files directory", &self.0.partial, e)
        })?;
        let path = self.partial_path(sender, id);
        std::fs::File::create(&path)
            .map_err(|e| Error::io("cannot create partial file", &path, e))?;
        Ok(())
    }

    /// A chunk arrived: checked against its offer, written, recorded, and the file finished
    /// when it was the last.
    pub(crate) fn chunk(
        &self,
        sender: &PeerId,
        contact: bool,
        id: &MessageId,
        index: u32,
        data: &[u8],
    ) -> Result<Received> {
        let store = &self.0.store;
        let Some(row) = store.file_receive(sender, id)? else {
            tracing::info!(%sender, "refused a file chunk without an offer");
            return Ok(Received::Rejected);
        };
        match row.state.as_str() {
            "receiving" => {}
            "received" => return Ok(Received::Accepted),
            "request" if contact => return Ok(Received::Busy),
            "request" => return Ok(Received::OverQuota),
            _ => return Ok(Received::Rejected),
        }
        let (offset, len) = match check_chunk(row.size, index, data) {
            Ok(span) => span,
            Err(e) => {
                tracing::info!(%sender, %e, "refused a file chunk that does not fit its offer");
                return Ok(Received::Rejected);
            }
        };
        if store.has_file_chunk(sender, id, index)? {
            store.add_file_chunk(sender, id, index, self.0.clock.now_ms())?;
            // A repeat of the last chunk after a finish that could not complete tries again.
            if row.received >= chunk_count(row.size) {
                return self.finish(sender, id);
            }
            return Ok(Received::Accepted);
        }
        let path = self.partial_path(sender, id);
        if let Err(e) = write_at(&path, offset, &data[..len]) {
            let detail = write_failure(&e);
            tracing::error!(%sender, path = %path.display(), %e, "cannot write a file chunk");
            store.file_receive_detail(sender, id, Some(&detail))?;
            self.announce_receive(sender, id);
            return Ok(Received::Busy);
        }
        let FileChunkOutcome::Kept(received) =
            store.add_file_chunk(sender, id, index, self.0.clock.now_ms())?
        else {
            return Ok(Received::Accepted);
        };
        if row.detail.is_some() {
            store.file_receive_detail(sender, id, None)?;
        }
        if received >= chunk_count(row.size) {
            return self.finish(sender, id);
        }
        self.announce_receive(sender, id);
        Ok(Received::Accepted)
    }

    /// Every chunk is on disk: check the file against its hash, move it to the download
    /// directory and note it in the inbox; or, if it does not match, remove it and fail.
    fn finish(&self, sender: &PeerId, id: &MessageId) -> Result<Received> {
        let _finishing = self.0.finishing.lock().unwrap_or_else(|p| p.into_inner());
        let store = &self.0.store;
        let Some(row) = store.file_receive(sender, id)? else { return Ok(Received::Rejected) };
        if row.state != "receiving" {
            return Ok(if row.state == "received" {
                Received::Accepted
            } else {
                Received::Rejected
            });
        }
        let partial = self.partial_path(sender, id);
        let now = self.0.clock.now_ms();
        let digest = match hash_file(&partial) {
            Ok(digest) => digest,
            Err(e) => {
                tracing::error!(path = %partial.display(), %e, "cannot read a received file");
                store.file_receive_detail(sender, id, Some(&write_failure(&e)))?;
                return Ok(Received::Busy);
            }
        };
        if digest != row.sha256 {
            let _ = std::fs::remove_file(&partial);
            tracing::warn!(%sender, name = %row.name, "a received file does not match its hash: removed");
            store.end_file_receive(
                sender,
                id,
                "failed",
                Some("the file does not match the hash its sender sent (SHA-256): removed"),
                None,
                now,
            )?;
            self.announce_receive(sender, id);
            return Ok(Received::Rejected);
        }
        let saved = match self.save(&partial, &row.name, id) {
            Ok(saved) => saved,
            Err(e) => {
                tracing::error!(%e, "cannot save a received file");
                store.file_receive_detail(sender, id, Some(&e.to_string()))?;
                self.announce_receive(sender, id);
                return Ok(Received::Busy);
            }
        };
        let shown = saved.display().to_string();
        store.end_file_receive(sender, id, "received", None, Some(&shown), now)?;
        let line = InboxRow {
            id: *id,
            peer_id: *sender,
            contact: None,
            text: format!("file {} ({}) saved to {shown}", row.name, size_text(row.size)),
            sent_at_ms: row.created_at_ms,
            received_at_ms: now,
            read_at_ms: None,
            number: None,
        };
        if store.receive(&line, None, None)? {
            let contact = store.contact_by_peer(sender)?.map(|c| c.name);
            self.0
                .events
                .send(Event::Message(crate::inbox::inbox_view(InboxRow { contact, ..line })));
        }
        self.announce_receive(sender, id);
        Ok(Received::Accepted)
    }

    /// Moves a checked partial file to the download directory, under its name made safe and
    /// unique there; returns where it went.
    fn save(&self, partial: &Path, name: &str, id: &MessageId) -> Result<PathBuf> {
        let dir = &self.0.dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io("cannot create the download directory", dir, e))?;
        let target = unique_path(dir, &safe_name(name), id);
        // A rename within one file system; else a copy (the download directory may be on
        // another disk than the data directory).
        if std::fs::rename(partial, &target).is_err() {
            std::fs::copy(partial, &target)
                .map_err(|e| Error::io("cannot copy a received file to", &target, e))?;
            let _ = std::fs::remove_file(partial);
        }
        Ok(target)
    }

    /// Gives up files that nothing arrived for since `before_ms` (their senders stop trying
    /// after the same time): the partial file is removed and the transfer failed, so abandoned
    /// transfers do not hold the places of [`crate::store::MAX_PARTIAL_FILES`] for ever.
    /// Returns how many went.
    pub(crate) fn purge(&self, before_ms: u64) -> Result<usize> {
        let store = &self.0.store;
        let stale = store.stale_file_receives(before_ms, MAX_PURGED)?;
        let now = self.0.clock.now_ms();
        for row in &stale {
            let _ = std::fs::remove_file(self.partial_path(&row.peer_id, &row.id));
            store.end_file_receive(
                &row.peer_id,
                &row.id,
                "failed",
                Some("nothing arrived for 14 days: its sender gave up"),
                None,
                now,
            )?;
            self.announce_receive(&row.peer_id, &row.id);
        }
        Ok(stale.len())
    }

    /// Tells subscribers where a file we receive is.
    fn announce_receive(&self, sender: &PeerId, id: &MessageId) {
        if let Ok(Some(row)) = self.0.store.file_receive(sender, id) {
            let contact = self.0.store.contact_by_peer(sender).ok().flatten().map(|c| c.name);
            self.0.events.send(Event::File(receive_view(row, contact)));
        }
    }
}

/// Writes `bytes` at `offset` of the file at `path`. A partial file that went missing (removed
/// by hand) is created again: the chunks it held are then zeros, and the hash check fails the
/// transfer visibly instead of leaving it stuck.
fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    file.write_all(bytes)
}

/// What a failed write says to the user: a full disk by name.
fn write_failure(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::StorageFull {
        "cannot write the file: the disk is full; free some space and the sender's node goes on \
         where it stopped"
            .into()
    } else {
        format!("cannot write the file: {e}; the sender's node tries again")
    }
}

/// SHA-256 of the file at `path`, read through a buffer of [`HASH_BUFFER`] bytes.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<[u8; 32]> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BUFFER];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().into())
}

/// A file name a sender chose, made safe to save under: only its last path component (both
/// `/` and `\` count as separators), no control or bidirectional-override characters, no
/// leading dots (so no `..`, and no hidden files), at most [`MAX_SAVED_NAME_LEN`] bytes with
/// the extension kept, and `file` when nothing is left.
pub fn safe_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_control()
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | ':' | '\0')
            {
                '_'
            } else {
                c
            }
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    let mut name = if trimmed.is_empty() { "file".to_owned() } else { trimmed.to_owned() };
    if name.len() > MAX_SAVED_NAME_LEN {
        let extension = match name.rfind('.') {
            Some(dot) if name.len() - dot <= 16 && dot > 0 => name[dot..].to_owned(),
            _ => String::new(),
        };
        let mut end = MAX_SAVED_NAME_LEN - extension.len();
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name = format!("{}{extension}", &name[..end]);
    }
    name
}

/// A path in `dir` for `name` that names no existing file: `name`, else `stem (1).ext` up to
/// 999, else the transfer's id before the name.
pub fn unique_path(dir: &Path, name: &str, id: &MessageId) -> PathBuf {
    let first = dir.join(name);
    if !first.exists() {
        return first;
    }
    let (stem, extension) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (name, ""),
    };
    for n in 1..=MAX_NAME_SUFFIX {
        let candidate = dir.join(format!("{stem} ({n}){extension}"));
        if !candidate.exists() {
            return candidate;
        }
    }
    dir.join(format!("{}-{name}", format_id(id)))
}

/// A size for people: bytes, KiB or MiB.
pub(crate) fn size_text(size: u64) -> String {
    match size {
        0..1024 => format!("{size} bytes"),
        1024..1_048_576 => format!("{:.1} KiB", size as f64 / 1024.0),
        _ => format!("{:.1} MiB", size as f64 / 1_048_576.0),
    }
}

/// Bytes of a file of `size` bytes that `chunks` chunks hold.
fn bytes_of(size: u64, chunks: u32) -> u64 {
    (u64::from(chunks) * FILE_CHUNK_LEN as u64).min(size)
}

/// A file we send, as the control API shows it.
pub(crate) fn send_view(row: FileSendRow, contact: Option<String>) -> FileTransfer {
    let state = match row.state.as_str() {
        "delivered" => FileState::Delivered,
        "failed" => FileState::Failed,
        _ => FileState::Queued,
    };
    FileTransfer {
        id: format_id(&row.id),
        direction: FileDirection::Out,
        peer_id: row.peer_id.to_string(),
        contact,
        name: row.name,
        size: row.size,
        done: bytes_of(row.size, row.acked),
        state,
        detail: row.detail,
        path: Some(row.path),
        chunks: chunk_count(row.size),
        repeats: row.chunks_sent.saturating_sub(row.acked),
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
    }
}

/// A file we receive, as the control API shows it.
pub(crate) fn receive_view(row: FileReceiveRow, contact: Option<String>) -> FileTransfer {
    let state = match row.state.as_str() {
        "request" => FileState::Request,
        "received" => FileState::Received,
        "failed" => FileState::Failed,
        _ => FileState::Receiving,
    };
    let done =
        if state == FileState::Received { row.size } else { bytes_of(row.size, row.received) };
    FileTransfer {
        id: format_id(&row.id),
        direction: FileDirection::In,
        peer_id: row.peer_id.to_string(),
        contact,
        name: row.name,
        size: row.size,
        done,
        state,
        detail: row.detail,
        path: row.path,
        chunks: chunk_count(row.size),
        repeats: row.repeated,
        created_at_ms: row.created_at_ms,
        updated_at_ms: row.updated_at_ms,
    }
}

#[cfg(test)]
mod tests;
