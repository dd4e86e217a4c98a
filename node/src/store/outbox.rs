//! The `outbox` and `message_states` tables: every outgoing item (texts and receipts) with its
//! state, retry schedule and mailbox deposit, and the history of each message's states.

use rusqlite::{OptionalExtension, params};

use kolokol_protocol::control::MessageState;
use libp2p::PeerId;

use super::parts::PartsDeletion;
use super::{CachedStatements, Number, Store, peer_column, peer_text};
use crate::error::Result;

/// The most outbox rows handed to one retry pass, so a huge backlog is worked through in slices
/// instead of loaded at once.
pub const OUTBOX_BATCH: usize = 64;

/// Failed tries after which a long message is no longer made due by its recipient coming back
/// (`wake_peer`), only by its own backoff or by the node's own connectivity returning.
pub(super) const WAKE_CHUNKED_ATTEMPTS: u32 = 3;

/// About how many envelopes an attempt of this body sends: one, or one per chunk of a long
/// text. The outbox claims a row for that many attempt periods.
pub fn attempt_envelopes(body: &OutboxBody) -> u64 {
    match body {
        OutboxBody::Text(t) | OutboxBody::Numbered(_, t) => {
            1 + (t.len() / kolokol_protocol::chunk::CHUNK_LEN_4) as u64
        }
        OutboxBody::Group(m) => 1 + (m.len() / kolokol_protocol::chunk::CHUNK_LEN_4) as u64,
        OutboxBody::Receipt(_) | OutboxBody::Read(_) => 1,
    }
}

/// What an outbox row carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxBody {
    /// A text message without a number: as written to the outbox before numbering (the store
    /// numbers it as it commits it, see [`Store::enqueue`]), or resent unnumbered to a peer
    /// whose node does not know numbered texts.
    Text(String),
    /// A text message with its number in our series for the recipient.
    Numbered(Number, String),
    /// A delivery receipt for the received message with this id.
    Receipt([u8; 16]),
    /// A read receipt for the received messages with these ids, all from the row's peer; at
    /// most [`kolokol_protocol::message::MAX_READ_IDS`] of them.
    Read(Vec<[u8; 16]>),
    /// One member's copy of a group message (a text, changes, a request): the encoded
    /// `kolokol_protocol::group::GroupMessage`, sealed as `Body::Group`. Stored as kind
    /// `receipt` with the `group_body` column, so lists and counts of the user's one-to-one
    /// texts leave it out; the room `groups` shows it.
    Group(Vec<u8>),
}

/// An outgoing item waiting for (or past) delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Message id.
    pub id: [u8; 16],
    /// The recipient.
    pub peer_id: PeerId,
    /// Recipient's X25519 device key.
    pub device_key: [u8; 32],
    /// What it carries.
    pub body: OutboxBody,
    /// When it was created, Unix ms; also the `sent_at_ms` inside the envelope.
    pub created_at_ms: u64,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// Where an outbox item was last deposited: the mailbox, and the replicas that acknowledged it
/// there. A later attempt deposits only on the replicas not listed (new closest peers), or on
/// all of them when the mailbox changed (a new period).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositRecord {
    /// The mailbox id.
    pub mailbox_id: [u8; 32],
    /// The replicas that stored the item.
    pub replicas: Vec<PeerId>,
}

impl DepositRecord {
    /// The column's text: the mailbox id in hex, then each replica's peer id, space-separated
    /// (the format of schema version 5, kept so stored records stay readable).
    fn to_column(&self) -> String {
        let mut text = kolokol_protocol::identity::hex(&self.mailbox_id);
        for replica in &self.replicas {
            text.push(' ');
            text.push_str(&replica.to_string());
        }
        text
    }

    /// Reads the column's text; the empty text (never deposited) and anything unreadable are
    /// `None`, which makes the next attempt deposit everywhere: the safe side.
    fn from_column(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let hex = words.next()?;
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut mailbox_id = [0u8; 32];
        for (byte, pair) in mailbox_id.iter_mut().zip(hex.as_bytes().chunks(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        let replicas = words.map(str::parse).collect::<Result<_, _>>().ok()?;
        Some(Self { mailbox_id, replicas })
    }
}

/// An outgoing text message as the user sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxView {
    /// Message id.
    pub id: [u8; 16],
    /// The recipient.
    pub peer_id: PeerId,
    /// The recipient's contact name, if still a contact.
    pub contact: Option<String>,
    /// The text.
    pub text: String,
    /// Current state.
    pub state: MessageState,
    /// Reason for the last failure or for giving up.
    pub detail: Option<String>,
    /// Attempts so far.
    pub attempts: u32,
    /// When created, Unix ms.
    pub created_at_ms: u64,
}

// The queries of the items still to send: each names the states `outbox_due` is restricted
// to (schema version 15), so SQLite finds them there (test
// `the_items_to_send_are_found_from_their_index`).
/// The items due to be sent at `?1`, at most `?2` of them, oldest first.
pub(super) const DUE_ITEMS: &str =
    "SELECT id, peer_id, device_key, kind, text, receipt_of, created_at_ms, attempts,
            read_of, group_body, series, seq
     FROM outbox WHERE state IN ('queued', 'stored') AND next_attempt_ms <= ?1
     ORDER BY created_at_ms, rowid LIMIT ?2";

/// The earliest time any queued or stored item is due.
pub(super) const NEXT_DUE: &str =
    "SELECT MIN(next_attempt_ms) FROM outbox WHERE state IN ('queued', 'stored')";

/// How many texts are queued, and how many stored in mailboxes.
pub(super) const WAITING_COUNTS: &str =
    "SELECT COALESCE(SUM(state = 'queued'), 0), COALESCE(SUM(state = 'stored'), 0)
     FROM outbox WHERE (kind = 'text' OR group_body IS NOT NULL) AND state IN ('queued', 'stored')";

/// How many texts are queued. The first condition is the one `outbox_due` is restricted to:
/// it lets SQLite count from that index instead of reading every item ever sent.
pub(super) const QUEUED_COUNT: &str = "SELECT COUNT(*) FROM outbox
     WHERE state IN ('queued', 'stored') AND state = 'queued' AND kind = 'text'";

impl Store {
    /// Puts an item in the outbox as `queued`, first due at `next_attempt_ms`, and records the
    /// state.
    pub fn enqueue(&self, row: &OutboxRow, next_attempt_ms: u64) -> Result<()> {
        self.enqueue_sealed(row, next_attempt_ms, None, &[])
    }

    /// [`Store::enqueue`], together with the row's sealed envelopes (its parts, see
    /// `store/parts.rs`) and the conversation state they were sealed with, in one
    /// transaction: all are stored before anything is sent. A numbered text takes its number
    /// ([`Store::peek_number`]) in the same transaction, so a number is neither lost nor given
    /// twice; the caller lets no other text to the peer be numbered between the peek and this.
    pub fn enqueue_sealed(
        &self,
        row: &OutboxRow,
        next_attempt_ms: u64,
        conversation: Option<&super::ConversationWrite<'_>>,
        parts: &[(u32, Vec<u8>)],
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        if let OutboxBody::Numbered(number, _) = &row.body {
            Self::take_number(&tx, &row.peer_id, *number).map_err(|e| self.err(e))?;
        }
        Self::insert_outbox(&tx, row, next_attempt_ms).map_err(|e| self.err(e))?;
        Self::insert_parts(&tx, &row.id, parts, row.created_at_ms).map_err(|e| self.err(e))?;
        let erased = match conversation {
            Some(write) => {
                Self::write_conversation(&tx, write, row.created_at_ms).map_err(|e| self.err(e))?
            }
            None => false,
        };
        tx.commit().map_err(|e| self.err(e))?;
        self.wrote_conversation(erased);
        Ok(())
    }

    /// Puts a text in the outbox as [`Store::enqueue`] does, numbered: in the same transaction
    /// it takes the next number of our series for the recipient (beginning series
    /// `new_series` if there is none yet), so no number is lost or given twice. The row's body
    /// becomes [`OutboxBody::Numbered`]; other bodies are enqueued as they are.
    pub fn enqueue_numbered(
        &self,
        row: &mut OutboxRow,
        new_series: u64,
        next_attempt_ms: u64,
    ) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        if let OutboxBody::Text(text) = &row.body {
            let number =
                Self::next_number(&tx, &row.peer_id, new_series).map_err(|e| self.err(e))?;
            row.body = OutboxBody::Numbered(number, text.clone());
        }
        Self::insert_outbox(&tx, row, next_attempt_ms).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    pub(super) fn insert_outbox(
        tx: &rusqlite::Transaction<'_>,
        row: &OutboxRow,
        next_attempt_ms: u64,
    ) -> rusqlite::Result<()> {
        let read_of: Option<Vec<u8>> = match &row.body {
            OutboxBody::Read(ids) => Some(ids.concat()),
            OutboxBody::Text(_)
            | OutboxBody::Numbered(..)
            | OutboxBody::Receipt(_)
            | OutboxBody::Group(_) => None,
        };
        let number = match &row.body {
            OutboxBody::Numbered(n, _) => Some(*n),
            _ => None,
        };
        let group_body: Option<&[u8]> = match &row.body {
            OutboxBody::Group(m) => Some(m),
            _ => None,
        };
        let (kind, text, receipt_of) = match &row.body {
            OutboxBody::Text(t) | OutboxBody::Numbered(_, t) => ("text", Some(t.as_str()), None),
            OutboxBody::Receipt(of) => ("receipt", None, Some(of.as_slice())),
            OutboxBody::Read(_) | OutboxBody::Group(_) => ("receipt", None, None),
        };
        // A row whose id is already there is left as it is: a receipt's id is derived from the
        // message it answers, so a message fetched again queues no second receipt.
        let inserted = tx.exec(
            "INSERT OR IGNORE INTO outbox (id, peer_id, device_key, kind, text, receipt_of, state,
                                  created_at_ms, attempts, next_attempt_ms, read_of, group_body,
                                  series, seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11, ?12, ?13)",
            params![
                row.id.as_slice(),
                peer_text(&row.peer_id),
                row.device_key.as_slice(),
                kind,
                text,
                receipt_of,
                MessageState::Queued.as_str(),
                row.created_at_ms as i64,
                next_attempt_ms as i64,
                read_of,
                group_body,
                number.map(|n| n.series as i64),
                number.map(|n| n.seq as i64)
            ],
        )?;
        if inserted > 0 {
            tx.exec(
                "INSERT INTO message_states (id, n, state, detail, at_ms)
                 VALUES (?1, (SELECT COALESCE(MAX(n) + 1, 0) FROM message_states WHERE id = ?1), ?2, NULL, ?3)",
                params![row.id.as_slice(), MessageState::Queued.as_str(), row.created_at_ms as i64],
            )?;
        }
        Ok(())
    }

    /// Moves an outbox item to `new_state` (recording the change), unless it is already in the
    /// same or a later state; returns whether it changed. States only move forward, in the
    /// order `queued → stored → sent → delivered → read`, or to `failed`: a `stored` message may
    /// become `sent`, but a late deposit ack never moves a `sent` one back. A `delivered` message
    /// may still become `read` (never `failed`), and `read` may follow any state before it,
    /// since the read receipt can overtake a lost or late delivery receipt; `read` and `failed`
    /// are final. A `stored` message is recorded as `stored` again when its detail changes (it was
    /// re-deposited on other replicas), so the history says where it is now.
    pub fn set_state(
        &self,
        id: &[u8; 16],
        new_state: MessageState,
        detail: Option<&str>,
        now_ms: u64,
    ) -> Result<bool> {
        self.set_states(id, &[new_state], detail, now_ms).map(|changed| !changed.is_empty())
    }

    /// Moves an outbox item through `states` in order, in one transaction, each as
    /// [`Store::set_state`] would (with the same `detail`); returns the states it entered.
    /// A direct acknowledgement of a text is `sent` and `delivered` at once.
    pub fn set_states(
        &self,
        id: &[u8; 16],
        states: &[MessageState],
        detail: Option<&str>,
        now_ms: u64,
    ) -> Result<Vec<MessageState>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let entered =
            Self::enter_states(&tx, id, states, detail, now_ms).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(entered)
    }

    /// Records a delivery receipt for an outgoing text: `delivered`, after `sent` when the
    /// text was still `queued` (the receipt can overtake the acknowledgement of the attempt
    /// that carried the text, which records both), in one transaction; returns the states it
    /// entered.
    pub fn receipt_delivered(&self, id: &[u8; 16], now_ms: u64) -> Result<Vec<MessageState>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let queued = tx
            .row("SELECT state = 'queued' FROM outbox WHERE id = ?1", [id.as_slice()], |r| {
                r.get::<_, bool>(0)
            })
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or(false);
        let states: &[MessageState] = if queued {
            &[MessageState::Sent, MessageState::Delivered]
        } else {
            &[MessageState::Delivered]
        };
        let entered = Self::enter_states(&tx, id, states, None, now_ms).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))?;
        Ok(entered)
    }

    /// Records that the recipient acknowledged the whole item: forgets its sealed parts and
    /// moves it through `states` as [`Store::set_states`] does, in one transaction. One commit
    /// instead of two on the sender's hot path (each commit writes and checksums WAL frames);
    /// the parts are dropped only together with the state that makes them useless.
    pub fn acknowledged(
        &self,
        id: &[u8; 16],
        states: &[MessageState],
        now_ms: u64,
    ) -> Result<Vec<MessageState>> {
        Ok(self.acknowledged_many(&[(*id, states, now_ms)])?.pop().unwrap_or_default())
    }

    /// [`Store::acknowledged`] for several items in one transaction: each item's parts are
    /// forgotten and it moves through its states; returns the states each entered, in order.
    /// Items in one commit share the pages they touch, so under load an acknowledgement costs
    /// a fraction of a commit (`outbox/acknowledgements.rs`).
    pub fn acknowledged_many(
        &self,
        items: &[([u8; 16], &[MessageState], u64)],
    ) -> Result<Vec<Vec<MessageState>>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let _fast = PartsDeletion::begin(&tx).map_err(|e| self.err(e))?;
            for (id, _, _) in items {
                tx.exec("DELETE FROM outbox_parts WHERE id = ?1", [id.as_slice()])
                    .map_err(|e| self.err(e))?;
            }
        }
        let mut entered = Vec::with_capacity(items.len());
        for (id, states, now_ms) in items {
            entered
                .push(Self::enter_states(&tx, id, states, None, *now_ms).map_err(|e| self.err(e))?);
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(entered)
    }

    fn enter_states(
        tx: &rusqlite::Transaction<'_>,
        id: &[u8; 16],
        states: &[MessageState],
        detail: Option<&str>,
        now_ms: u64,
    ) -> rusqlite::Result<Vec<MessageState>> {
        let mut entered = Vec::new();
        for new_state in states {
            let changed = tx.exec(
                "UPDATE outbox SET state = ?2, detail = ?3
                     WHERE id = ?1
                       AND ((CASE state WHEN 'queued' THEN 0 WHEN 'stored' THEN 1 WHEN 'sent' THEN 2
                             WHEN 'delivered' THEN 3 ELSE 9 END)
                          < (CASE ?2 WHEN 'stored' THEN 1 WHEN 'sent' THEN 2 WHEN 'delivered' THEN 3
                             WHEN 'failed' THEN 3 WHEN 'read' THEN 4 ELSE 0 END)
                         OR (state = 'stored' AND ?2 = 'stored' AND COALESCE(detail, '') != COALESCE(?3, '')))",
                params![id.as_slice(), new_state.as_str(), detail],
            )?;
            if changed > 0 {
                tx.exec(
                    "INSERT INTO message_states (id, n, state, detail, at_ms)
                     VALUES (?1, (SELECT COALESCE(MAX(n) + 1, 0) FROM message_states WHERE id = ?1), ?2, ?3, ?4)",
                    params![id.as_slice(), new_state.as_str(), detail, now_ms as i64],
                )?;
                entered.push(*new_state);
            }
        }
        Ok(entered)
    }

    /// Marks the receipts with these ids sent, in one transaction, as [`Store::set_state`] would
    /// one by one.
    pub fn set_sent(&self, ids: &[[u8; 16]], now_ms: u64) -> Result<()> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        for id in ids {
            let changed = tx
                .exec(
                    "UPDATE outbox SET state = 'sent', detail = NULL
                     WHERE id = ?1 AND state IN ('queued', 'stored')",
                    [id.as_slice()],
                )
                .map_err(|e| self.err(e))?;
            if changed > 0 {
                tx.exec(
                    "INSERT INTO message_states (id, n, state, detail, at_ms)
                     VALUES (?1, (SELECT COALESCE(MAX(n) + 1, 0) FROM message_states WHERE id = ?1), 'sent', NULL, ?2)",
                    params![id.as_slice(), now_ms as i64],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Records a failed attempt and when to try again; the item stays `queued` (or `stored`,
    /// whose detail, the replica count, is kept).
    pub fn reschedule(
        &self,
        id: &[u8; 16],
        attempts: u32,
        next_attempt_ms: u64,
        detail: &str,
    ) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE outbox SET attempts = ?2, next_attempt_ms = ?3,
                    detail = CASE WHEN state = 'stored' THEN detail ELSE ?4 END WHERE id = ?1",
                params![id.as_slice(), attempts, next_attempt_ms as i64, detail],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Makes every queued or stored item for `peer_id` due now (the peer just became
    /// reachable), except a long message (one sent in chunks) that already failed
    /// [`WAKE_CHUNKED_ATTEMPTS`] times: it keeps its backoff. Behind a censor that freezes a
    /// connection after some kilobytes (T10), each try of it fills the recipient's connection,
    /// which the recipient then replaces, which reconnects the peer, which would wake it again
    /// at once, and the loop would break every other message's circuit every few seconds.
    pub fn wake_peer(&self, peer: &PeerId, now_ms: u64) -> Result<usize> {
        self.conn()
            .exec(
                "UPDATE outbox SET next_attempt_ms = ?2 WHERE peer_id = ?1 AND state IN ('queued', 'stored') AND next_attempt_ms > ?2
                    AND (text IS NULL OR length(CAST(text AS BLOB)) <= ?3 OR attempts < ?4)",
                params![
                    peer_text(peer),
                    now_ms as i64,
                    kolokol_protocol::chunk::MAX_UNCHUNKED_LEN as i64,
                    WAKE_CHUNKED_ATTEMPTS
                ],
            )
            .map_err(|e| self.err(e))
    }

    /// Queued and stored items due at `now_ms`, oldest first, at most [`OUTBOX_BATCH`]; each is claimed
    /// until `claim_until_ms` (not due again before then) in the same transaction, so two
    /// retry passes never take the same item.
    pub fn due(&self, now_ms: u64, claim_until_ms: u64) -> Result<Vec<OutboxRow>> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let rows: Vec<OutboxRow> = {
            let mut stmt = tx.prepare_cached(DUE_ITEMS).map_err(|e| self.err(e))?;
            let rows = stmt
                .query_map(params![now_ms as i64, OUTBOX_BATCH as i64], |r| {
                    let id: Vec<u8> = r.get(0)?;
                    let key: Vec<u8> = r.get(2)?;
                    let kind: String = r.get(3)?;
                    let read_of: Option<Vec<u8>> = r.get(8)?;
                    let group_body: Option<Vec<u8>> = r.get(9)?;
                    let body = if let Some(message) = group_body {
                        OutboxBody::Group(message)
                    } else if let Some(ids) = read_of {
                        OutboxBody::Read(
                            ids.chunks_exact(16)
                                .map(|id| id.try_into().unwrap_or([0; 16]))
                                .collect(),
                        )
                    } else if kind == "receipt" {
                        let of: Vec<u8> = r.get(5)?;
                        OutboxBody::Receipt(of.try_into().unwrap_or([0; 16]))
                    } else {
                        let text = r.get::<_, Option<String>>(4)?.unwrap_or_default();
                        match (r.get::<_, Option<i64>>(10)?, r.get::<_, Option<i64>>(11)?) {
                            (Some(series), Some(seq)) => OutboxBody::Numbered(
                                Number { series: series as u64, seq: seq as u64 },
                                text,
                            ),
                            _ => OutboxBody::Text(text),
                        }
                    };
                    Ok(OutboxRow {
                        id: id.try_into().unwrap_or([0; 16]),
                        peer_id: peer_column(r, 1)?,
                        device_key: key.try_into().unwrap_or([0; 32]),
                        body,
                        created_at_ms: r.get::<_, i64>(6)? as u64,
                        attempts: r.get(7)?,
                    })
                })
                .map_err(|e| self.err(e))?;
            rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))?
        };
        let claim = claim_until_ms.saturating_sub(now_ms);
        for row in &rows {
            // A long text goes as one envelope per chunk, delivered one after the other, so its
            // attempt may take longer: the claim grows with the chunks.
            let until = now_ms.saturating_add(claim.saturating_mul(attempt_envelopes(&row.body)));
            tx.exec(
                "UPDATE outbox SET next_attempt_ms = ?2 WHERE id = ?1",
                params![row.id.as_slice(), until as i64],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Makes every queued or stored item due now; called at start, since no attempt survives a
    /// restart.
    pub fn wake_all(&self, now_ms: u64) -> Result<usize> {
        self.conn()
            .exec(
                "UPDATE outbox SET next_attempt_ms = ?1 WHERE state IN ('queued', 'stored')",
                params![now_ms as i64],
            )
            .map_err(|e| self.err(e))
    }

    /// The earliest time any queued or stored item is due, if any is.
    pub fn next_due(&self) -> Result<Option<u64>> {
        self.conn()
            .row(NEXT_DUE, [], |r| r.get::<_, Option<i64>>(0))
            .map(|v| v.map(|v| v as u64))
            .map_err(|e| self.err(e))
    }

    /// How many text messages the user sent wait for delivery: still `queued`, and `stored`
    /// in their recipients' mailboxes. A text to a contact counts once, a group text once for
    /// each member whose copy waits; receipts are not counted.
    pub fn waiting_counts(&self) -> Result<(u64, u64)> {
        self.conn()
            .row(WAITING_COUNTS, [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.err(e))
    }

    /// How many text messages the user sent are still queued (receipts are not counted).
    pub fn queued_count(&self) -> Result<u64> {
        self.conn()
            .row(QUEUED_COUNT, [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(|e| self.err(e))
    }

    /// How many text messages the user sent are in each state (receipts are not counted).
    pub fn message_counts(&self) -> Result<Vec<(MessageState, u64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached("SELECT state, COUNT(*) FROM outbox WHERE kind = 'text' GROUP BY state")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((state_column(r, 0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// The outbox item's recipient peer id, if the id names one of our text messages or a
    /// member's copy of one of our group messages (both are receipted).
    pub fn outgoing_text_peer(&self, id: &[u8; 16]) -> Result<Option<PeerId>> {
        self.conn()
            .row(
                "SELECT peer_id FROM outbox WHERE id = ?1 AND (kind = 'text' OR group_body IS NOT NULL)",
                [id.as_slice()],
                |r| peer_column(r, 0),
            )
            .optional()
            .map_err(|e| self.err(e))
    }

    /// The newest `limit` outgoing text messages, oldest first, with the recipient's contact
    /// name where they still are a contact.
    pub fn outbox(&self, limit: u32) -> Result<Vec<OutboxView>> {
        self.outbox_query("ORDER BY o.created_at_ms DESC, o.rowid DESC LIMIT ?1", params![limit])
            .map(|mut v| {
                v.reverse();
                v
            })
    }

    /// The newest `limit` text messages to `peer`, newest first.
    pub fn chat_outgoing(&self, peer: &PeerId, limit: u32) -> Result<Vec<OutboxView>> {
        self.outbox_query(
            "AND o.peer_id = ?1 ORDER BY o.created_at_ms DESC, o.rowid DESC LIMIT ?2",
            params![peer_text(peer), limit],
        )
    }

    /// One outgoing text message.
    pub fn outgoing(&self, id: &[u8; 16]) -> Result<Option<OutboxView>> {
        Ok(self.outbox_query("AND o.id = ?1", params![id.as_slice()])?.pop())
    }

    /// The state and detail of any outbox item: a text, a receipt or a member's copy of a
    /// group message (which [`Store::outgoing`], a view of the user's texts, leaves out).
    pub fn outbox_state(&self, id: &[u8; 16]) -> Result<Option<(MessageState, Option<String>)>> {
        self.conn()
            .row("SELECT state, detail FROM outbox WHERE id = ?1", [id.as_slice()], |r| {
                Ok((state_column(r, 0)?, r.get(1)?))
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    fn outbox_query(&self, tail: &str, args: impl rusqlite::Params) -> Result<Vec<OutboxView>> {
        let conn = self.conn();
        let sql = format!(
            "SELECT o.id, o.peer_id, c.name, o.text, o.state, o.detail, o.attempts, o.created_at_ms
             FROM outbox o LEFT JOIN contacts c ON c.peer_id = o.peer_id
             WHERE o.kind = 'text' {tail}"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(args, |r| {
                let id: Vec<u8> = r.get(0)?;
                Ok(OutboxView {
                    id: id.try_into().unwrap_or([0; 16]),
                    peer_id: peer_column(r, 1)?,
                    contact: r.get(2)?,
                    text: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    state: state_column(r, 4)?,
                    detail: r.get(5)?,
                    attempts: r.get(6)?,
                    created_at_ms: r.get::<_, i64>(7)? as u64,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// The ids of our text messages whose upper-case hex form starts with `prefix` (upper-case
    /// hex digits), at most `limit` of them: one means the prefix names a message.
    pub fn outgoing_ids_with_prefix(&self, prefix: &str, limit: u32) -> Result<Vec<[u8; 16]>> {
        self.ids_with_prefix(
            "SELECT id FROM outbox WHERE kind = 'text' AND hex(id) LIKE ?1 || '%' LIMIT ?2",
            prefix,
            limit,
        )
    }

    /// The state history of one message, oldest first.
    pub fn history(&self, id: &[u8; 16]) -> Result<Vec<(MessageState, Option<String>, u64)>> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT state, detail, at_ms FROM message_states WHERE id = ?1 ORDER BY at_ms, n",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([id.as_slice()], |r| {
                Ok((state_column(r, 0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))
    }

    /// Where an outbox item was last deposited, if it was.
    pub fn deposited(&self, id: &[u8; 16]) -> Result<Option<DepositRecord>> {
        let text: Option<String> = self
            .conn()
            .row("SELECT deposited FROM outbox WHERE id = ?1", [id.as_slice()], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(text.as_deref().and_then(DepositRecord::from_column))
    }

    /// Records where an outbox item is deposited (see [`Store::deposited`]).
    pub fn set_deposited(&self, id: &[u8; 16], record: &DepositRecord) -> Result<()> {
        self.conn()
            .exec(
                "UPDATE outbox SET deposited = ?2 WHERE id = ?1",
                params![id.as_slice(), record.to_column()],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// Reads a state column; a name this version does not know is a damaged row, not a panic.
fn state_column(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<MessageState> {
    let name: String = r.get(idx)?;
    MessageState::parse(&name).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("unknown message state {name:?}").into(),
        )
    })
}
