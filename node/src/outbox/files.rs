//! Sending files: the outbox's other kind of item. A file is recorded in the store
//! (`file_sends`) before anything is sent, then its offer and its chunks go out one after the
//! other, each read from disk, sealed through the conversation and delivered like any
//! envelope ([`Outbox::seal_contents`], [`Outbox::deliver_one`]), and recorded as acknowledged
//! at once; a failed attempt is retried on the outbox's schedule ([`super::verdict`]), from the
//! first chunk the recipient has not acknowledged, across restarts of either side.
//!
//! What differs from a message, and why: a file's envelopes are not sealed ahead and kept as
//! parts (a 100 MB file would be 100 MB of envelopes in the store and in memory); each chunk is
//! read and sealed only when it is its turn, so at most [`MAX_FILE_SENDS_IN_FLIGHT`] chunks are
//! in memory at once. Every chunk is a 65 535-byte envelope and takes the peer's bulk lane
//! ([`super::transfer`]), so a short message to the same peer goes between two chunks, never
//! behind the whole file. A file goes directly only: it is not left in mailboxes, whose
//! quotas are for messages; it waits until the recipient is online.

use std::io::SeekFrom;
use std::path::Path;
use std::time::Duration;

use kolokol_protocol::control::{Event, FileTransfer};
use kolokol_protocol::file::{
    FileMessage, FileOffer, MAX_FILE_NAME_LEN, chunk, chunk_count, chunk_span,
};
use kolokol_protocol::message::{Body, Content};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::{Outbox, Verdict, verdict};
use crate::error::{Error, Result};
use crate::files::send_view;
use crate::ids::new_message_id;
use crate::store::{ContactRow, FileSendRow};
use crate::swarm::DeliveryFailure;

/// Files being sent at once, across all peers; each holds one chunk in memory.
pub const MAX_FILE_SENDS_IN_FLIGHT: usize = 4;

/// How long an attempt owns its file: the outbox leaves the file alone this long after the
/// attempt started or last had a chunk acknowledged (an attempt of a large file lasts as long
/// as the transfer).
pub const FILE_CLAIM: Duration = Duration::from_secs(10 * 60);

/// Why the recipient's node refused a file, for the user: its answer is one byte.
pub(crate) fn file_refusal() -> String {
    "the recipient's node refused the file: it is over their size limit (256 MiB unless they \
     set max_file_mib), or a chunk did not match the offer or the file did not match its hash \
     (kolokol files on their side says which)"
        .into()
}

impl Outbox {
    /// Records a file to send to a contact and returns at once, `queued`: the outbox makes the
    /// attempts, and `file` events tell how it goes. The file is read here once, to hash it,
    /// through a bounded buffer.
    pub(crate) async fn send_file(&self, contact: ContactRow, path: &Path) -> Result<FileTransfer> {
        let bad = |why: String| Error::BadMessage(why);
        let path = std::fs::canonicalize(path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let metadata = std::fs::metadata(&path)
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        if !metadata.is_file() {
            return Err(bad(format!("{} is not a file", path.display())));
        }
        let size = metadata.len();
        if size == 0 {
            return Err(bad(format!("{} is empty: there is nothing to send", path.display())));
        }
        if size > self.0.max_file_size {
            return Err(bad(format!(
                "{} is {size} bytes, over the limit of {} bytes ({} MiB; max_file_mib in \
                 kolokol.toml)",
                path.display(),
                self.0.max_file_size,
                self.0.max_file_size / (1024 * 1024)
            )));
        }
        let name = offer_name(&path);
        let hashed = path.clone();
        let sha256 = tokio::task::spawn_blocking(move || crate::files::hash_file(&hashed))
            .await
            .map_err(|_| Error::WorkerPanicked)?
            .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
        let now = self.0.clock.now_ms();
        let row = FileSendRow {
            id: new_message_id(),
            peer_id: contact.peer_id,
            device_key: contact.device_key,
            path: path.display().to_string(),
            name,
            size,
            sha256,
            state: "queued".into(),
            detail: None,
            offered: false,
            acked: 0,
            chunks_sent: 0,
            attempts: 0,
            created_at_ms: now,
            updated_at_ms: now,
        };
        self.0.store.add_file_send(&row)?;
        self.0.wake.notify_one();
        let view = send_view(row, Some(contact.name));
        self.0.events.send(Event::File(view.clone()));
        Ok(view)
    }

    /// One attempt of a file: the offer if the recipient has not accepted it yet, then every
    /// chunk from the first it lacks; records the outcome. A file already in flight is left
    /// alone.
    pub(crate) async fn attempt_file(&self, row: FileSendRow) {
        let Some(_flight) = self.take_off(&row.id) else { return };
        let outcome = self.send_file_chunks(&row).await;
        let now = self.0.clock.now_ms();
        let recorded = match verdict(&outcome, row.attempts, row.created_at_ms, now) {
            Verdict::Sent => self.0.store.end_file_send(&row.id, "delivered", None, now),
            Verdict::Failed { detail } => {
                let detail = match &outcome {
                    Err(f) if f.refused => file_refusal(),
                    _ => detail,
                };
                tracing::info!(id = %kolokol_protocol::message::format_id(&row.id), %detail, "a file was not delivered");
                self.0.store.end_file_send(&row.id, "failed", Some(&detail), now)
            }
            Verdict::Retry { attempts, at_ms } => {
                let reason = outcome.err().map(|f| f.reason).unwrap_or_default();
                self.0.store.reschedule_file_send(&row.id, attempts, at_ms, &reason, now)
            }
        };
        if let Err(e) = recorded {
            tracing::error!(%e, "cannot record a file delivery outcome");
        }
        self.announce_file(&row.id);
    }

    /// Sends what the recipient lacks of a file; the first failure is the attempt's outcome.
    async fn send_file_chunks(
        &self,
        row: &FileSendRow,
    ) -> std::result::Result<(), DeliveryFailure> {
        let gone = |e: std::io::Error| {
            DeliveryFailure::permanent(format!(
                "cannot read {}: {e}; the file was moved, removed or changed since it was sent",
                row.path
            ))
        };
        let mut file = tokio::fs::File::open(&row.path).await.map_err(gone)?;
        let len = file.metadata().await.map_err(gone)?.len();
        if len != row.size {
            return Err(gone(std::io::Error::other(format!(
                "it is {len} bytes now, {} when it was sent",
                row.size
            ))));
        }
        if !row.offered {
            let offer = FileOffer { name: row.name.clone(), size: row.size, sha256: row.sha256 };
            self.deliver_file_message(row, FileMessage::Offer(offer)).await?;
            if let Err(e) = self.0.store.file_offered(&row.id, self.0.clock.now_ms()) {
                tracing::error!(%e, "cannot record an accepted file offer");
            }
        }
        // One chunk's buffer, whatever the file's size.
        let mut buffer = vec![0u8; kolokol_protocol::file::FILE_CHUNK_LEN];
        let mut acked = row.acked;
        while acked < chunk_count(row.size) {
            let Some((offset, len)) = chunk_span(row.size, acked) else { break };
            file.seek(SeekFrom::Start(offset)).await.map_err(gone)?;
            file.read_exact(&mut buffer[..len]).await.map_err(gone)?;
            let message = chunk(acked, &buffer[..len])
                .map_err(|e| DeliveryFailure::permanent(format!("cannot make a chunk: {e}")))?;
            let delivered = self.deliver_file_message(row, message).await;
            let now = self.0.clock.now_ms();
            let recorded = match &delivered {
                Ok(()) => {
                    acked += 1;
                    self.0.store.file_chunk_acked(
                        &row.id,
                        acked,
                        now + FILE_CLAIM.as_millis() as u64,
                        now,
                    )
                }
                Err(_) => self.0.store.file_chunk_unacked(&row.id),
            };
            if let Err(e) = recorded {
                tracing::error!(%e, "cannot record a file chunk's delivery");
            }
            delivered?;
            self.announce_file(&row.id);
        }
        Ok(())
    }

    /// Seals one file message in the transfer's content and delivers it, looking the peer up
    /// afresh once if its addresses did not work. The conversation state it was sealed with is
    /// stored before it is sent.
    async fn deliver_file_message(
        &self,
        row: &FileSendRow,
        message: FileMessage,
    ) -> std::result::Result<(), DeliveryFailure> {
        let content =
            Content { id: row.id, sent_at_ms: row.created_at_ms, body: Body::File(message) };
        let held = self.seal_contents(&row.peer_id, row.device_key, vec![content]).await?;
        let envelopes = held.store().map_err(|e| DeliveryFailure::temporary(e.to_string()))?;
        let Some(envelope) = envelopes.into_iter().next() else {
            return Err(DeliveryFailure::temporary("sealing gave no envelope"));
        };
        let outcome = self.deliver_one(&row.peer_id, envelope.clone()).await;
        if matches!(&outcome, Err(f) if !f.permanent && !f.slow)
            && self.0.presence.refresh_addresses(&row.peer_id, &self.0.conversations).await
        {
            return self.deliver_one(&row.peer_id, envelope).await;
        }
        outcome
    }

    /// Tells subscribers where a file we send is.
    fn announce_file(&self, id: &[u8; 16]) {
        if let Ok(Some(row)) = self.0.store.file_send(id) {
            let contact = self.0.store.contact_by_peer(&row.peer_id).ok().flatten().map(|c| c.name);
            self.0.events.send(Event::File(send_view(row, contact)));
        }
    }

    /// Starts attempts of the files that are due, keeping at most
    /// [`MAX_FILE_SENDS_IN_FLIGHT`] under way in `attempts`.
    pub(crate) fn start_due_files(&self, attempts: &mut tokio::task::JoinSet<()>) {
        if attempts.len() >= MAX_FILE_SENDS_IN_FLIGHT {
            return;
        }
        let now = self.0.clock.now_ms();
        let claim = now + FILE_CLAIM.as_millis() as u64;
        match self.0.store.due_file_sends(now, claim, MAX_FILE_SENDS_IN_FLIGHT - attempts.len()) {
            Ok(rows) => {
                for row in rows {
                    if self.is_in_flight(&row.id) {
                        continue;
                    }
                    let outbox = self.clone();
                    attempts.spawn(async move { outbox.attempt_file(row).await });
                }
            }
            Err(e) => tracing::error!(%e, "cannot read the files to send"),
        }
    }
}

/// The name an offer carries for the file at `path`: its last component, cut to
/// [`MAX_FILE_NAME_LEN`] bytes at a character boundary.
fn offer_name(path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut name = if name.is_empty() { "file".to_owned() } else { name };
    if name.len() > MAX_FILE_NAME_LEN {
        let mut end = MAX_FILE_NAME_LEN;
        while !name.is_char_boundary(end) {
            end -= 1;
        }
        name.truncate(end);
    }
    name
}
