//! Sealing what the outbox sends: a row's body as one envelope or, when it does not fit one,
//! a chunk per envelope, all in one hold of the recipient's conversation; a first contact to
//! the recipient's prekey, found in the invite, the presence record or the DHT.

use kolokol_protocol::message::{Body, Content};
use libp2p::PeerId;

use super::{Outbox, Parts};
use crate::conversations::{Held, PeerPrekeys};
use crate::store::{OutboxBody, OutboxRow};
use crate::swarm::DeliveryFailure;

impl Outbox {
    /// Seals an outbox row for its recipient: one envelope, or one per chunk when the body does
    /// not fit one (`kolokol_protocol::chunk`), all sealed in one hold of the conversation;
    /// with `only`, just the parts it names. Each comes with its index.
    pub(super) async fn seal(
        &self,
        row: &OutboxRow,
        only: Option<&[u32]>,
    ) -> std::result::Result<Held<Parts>, DeliveryFailure> {
        let content = Content {
            id: row.id,
            sent_at_ms: row.created_at_ms,
            body: match &row.body {
                OutboxBody::Text(t) => Body::Text(t.clone()),
                OutboxBody::Numbered(n, t) => {
                    Body::NumberedText { series: n.series, seq: n.seq, text: t.clone() }
                }
                OutboxBody::Receipt(of) => Body::Receipt { of: *of },
                OutboxBody::Read(ids) => Body::Read { of: ids.clone() },
                OutboxBody::Group(message) => crate::groups::body(message)
                    .map_err(|e| DeliveryFailure::permanent(format!("cannot seal: {e}")))?,
            },
        };
        self.seal_content(&row.peer_id, row.device_key, content, only).await
    }

    /// Seals `content` for the peer (split into chunks if it is long; with `only`, just the
    /// chunks it names), first looking up the peer's prekey if the envelope would be a first
    /// contact without one. Each envelope comes with its index.
    pub(super) async fn seal_content(
        &self,
        peer: &PeerId,
        device_key: [u8; 32],
        content: Content,
        only: Option<&[u32]>,
    ) -> std::result::Result<Held<Parts>, DeliveryFailure> {
        let refused =
            |e: kolokol_protocol::Error| DeliveryFailure::permanent(format!("cannot seal: {e}"));
        let prekeys = self.0.presence.prekey_for_first_contact(peer, &self.0.conversations).await;
        // Chunks to a format 4 peer are shorter, so that one fits a format 4 first contact and a
        // long message can start a conversation (docs/PROTOCOL.md 6.7); the format of a
        // conversation does not go back, so every attempt splits a message alike. A peer whose
        // mailbox address we hold becomes format 4 with the hybrid prekey the lookup just
        // brought, in this very seal.
        let format_4 = self.0.conversations.is_format_4(peer)
            || (prekeys.hybrid.is_some() && self.0.conversations.peer_mailbox(peer).is_some());
        let chunk_len = if format_4 {
            kolokol_protocol::chunk::CHUNK_LEN_4
        } else {
            kolokol_protocol::chunk::CHUNK_LEN
        };
        let contents = kolokol_protocol::chunk::split_with(&content, chunk_len).map_err(refused)?;
        let (indexes, contents): (Vec<u32>, Vec<Content>) = contents
            .into_iter()
            .enumerate()
            .map(|(i, c)| (i as u32, c))
            .filter(|(i, _)| only.is_none_or(|only| only.contains(i)))
            .unzip();
        let held = self.seal_with_prekeys(peer, device_key, contents, prekeys).await?;
        let (envelopes, held) = held.split();
        Ok(held.with_value(indexes.into_iter().zip(envelopes).collect()))
    }

    /// Seals `contents` for the peer as they are, one envelope each, in one hold of the
    /// conversation, first looking up the peer's prekey if the envelopes would be first
    /// contacts without one.
    pub(crate) async fn seal_contents(
        &self,
        peer: &PeerId,
        device_key: [u8; 32],
        contents: Vec<Content>,
    ) -> std::result::Result<Held<Vec<Vec<u8>>>, DeliveryFailure> {
        let prekeys = self.0.presence.prekey_for_first_contact(peer, &self.0.conversations).await;
        self.seal_with_prekeys(peer, device_key, contents, prekeys).await
    }

    /// Seals `contents` for the peer with the prekeys a lookup found (if it made one).
    async fn seal_with_prekeys(
        &self,
        peer: &PeerId,
        device_key: [u8; 32],
        contents: Vec<Content>,
        prekeys: PeerPrekeys,
    ) -> std::result::Result<Held<Vec<Vec<u8>>>, DeliveryFailure> {
        let refused =
            |e: kolokol_protocol::Error| DeliveryFailure::permanent(format!("cannot seal: {e}"));
        // A format 4 first contact goes to a current hybrid prekey or waits for one: never to
        // the long-term device key (docs/PROTOCOL.md 7.4). The message stays queued with the
        // reason, and every attempt looks the peer's presence record up again.
        let now = self.0.clock.now_secs();
        if let Some(expired_at) = self.0.conversations.stale_prekey(peer)
            && prekeys.hybrid.as_ref().is_none_or(|p| p.expires_at < now)
        {
            return Err(DeliveryFailure::temporary(stale_prekey_reason(expired_at, now)));
        }
        self.0
            .conversations
            .seal(peer, device_key, contents, prekeys)
            .await
            .map_err(|e| DeliveryFailure::temporary(e.to_string()))?
            .map_err(refused)
    }
}

/// Why a message waits for the recipient's current prekey, in the words `kolokol outbox` shows:
/// the one we hold expired at `expired_at`, or (`None`) we hold none. Presence records do not
/// carry hybrid prekeys yet (`docs/CRYPTO_PHASE2.md`, status), so only a new invite or an
/// envelope from the recipient brings a current one.
fn stale_prekey_reason(expired_at: Option<u64>, now: u64) -> String {
    let Some(expired_at) = expired_at else {
        return "waiting for the recipient's current prekey: we hold none; ask them for a new \
                invite, or wait for a message from them, which carries it"
            .to_owned();
    };
    let hours = now.saturating_sub(expired_at) / 3600;
    let ago = match hours {
        0 => "less than an hour ago".to_owned(),
        1..=47 => format!("{hours} hours ago"),
        _ => format!("{} days ago", hours / 24),
    };
    format!(
        "waiting for the recipient's current prekey: the one from their invite expired {ago}; \
         ask them for a new invite, or wait for a message from them, which carries it"
    )
}
