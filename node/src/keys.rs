//! The node's own keys over time: the identity, the device certificate (issued at start and
//! re-issued before it expires), the signed prekeys of format 3 and the hybrid prekeys of
//! format 4 (a new one of each weekly, old secrets deleted once no first contact sealed to them
//! can still arrive), and the mailbox key (made once, kept in the store), whose public half,
//! the mailbox address, only contacts learn.
//!
//! Everything time-dependent here reads the node's [`Clock`], so the slow schedules (a year's
//! certificate, a week's prekey) are tested with paused time.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use kolokol_protocol::envelope;
use kolokol_protocol::identity::{DeviceCertificate, Identity};
use kolokol_protocol::mailbox_key::{MailboxAddress, MailboxKey};
use kolokol_protocol::prekey::{HybridPrekey, HybridPrekeySecret, SignedPrekey};
use libp2p::PeerId;
use rand::RngCore;

use crate::clock::Clock;
use crate::error::Result;
use crate::store::Store;

/// Lifetime of a device certificate; one is issued at every start and renewed before it ends.
pub const CERTIFICATE_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A certificate with less than this left is re-issued (checked at every presence refresh).
pub const CERTIFICATE_RENEW_BEFORE: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// Clock skew tolerated by backdating the certificate's start.
pub const CERTIFICATE_BACKDATE: Duration = Duration::from_secs(24 * 60 * 60);

/// A new signed prekey is made when the newest is this old.
pub const PREKEY_ROTATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// How long a signed prekey is valid for senders (it overlaps the next one by a rotation).
pub const PREKEY_LIFETIME: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// How long after a prekey expires its secret is kept: a first contact sealed just before the
/// expiry may sit in a mailbox or outbox for up to the first-contact age limit.
pub const PREKEY_SECRET_GRACE: Duration =
    Duration::from_secs(kolokol_protocol::conversation::MAX_FIRST_CONTACT_AGE_SECS);

/// A cloneable handle to the node's keys.
#[derive(Clone)]
pub(crate) struct Keys(Arc<Inner>);

/// The name of the mailbox key's secret in the store's `secrets` table.
const MAILBOX_SECRET: &str = "mailbox";

struct Inner {
    identity: Identity,
    /// The mailbox key (mailbox protocol version 2): its address goes into invites and first
    /// contacts, its blinded keys sign fetches and deletions.
    mailbox: MailboxKey,
    /// The current device certificate; re-issued by [`Keys::renew_certificate`].
    certificate: RwLock<DeviceCertificate>,
    store: Store,
    clock: Clock,
}

impl Keys {
    /// Issues a fresh certificate for `identity` and makes a prekey if the newest is due.
    pub(crate) fn new(identity: Identity, store: Store, clock: Clock) -> Result<Self> {
        let certificate = issue(&identity, clock.now_secs())?;
        let mailbox = {
            let mut fresh = zeroize::Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(fresh.as_mut());
            let stored = store.keep_secret(MAILBOX_SECRET, fresh.as_slice())?;
            let secret: zeroize::Zeroizing<[u8; 32]> =
                zeroize::Zeroizing::new(stored.as_slice().try_into().map_err(|_| {
                    crate::error::Error::Protocol(kolokol_protocol::Error::InvalidKey {
                        what: "stored mailbox key",
                        detail: "not 32 bytes",
                    })
                })?);
            MailboxKey::from_secret(&secret)
        };
        let keys = Self(Arc::new(Inner {
            identity,
            mailbox,
            certificate: RwLock::new(certificate),
            store,
            clock,
        }));
        keys.rotate_prekeys()?;
        Ok(keys)
    }

    /// The long-term identity.
    pub(crate) fn identity(&self) -> &Identity {
        &self.0.identity
    }

    /// This node's peer id.
    pub(crate) fn peer_id(&self) -> PeerId {
        self.0.identity.peer_id()
    }

    /// Our mailbox address, which contacts deposit to.
    pub(crate) fn mailbox_address(&self) -> MailboxAddress {
        *self.0.mailbox.address()
    }

    /// The mailbox key, whose blinded keys sign our version 2 fetches and deletions.
    pub(crate) fn mailbox_key(&self) -> &MailboxKey {
        &self.0.mailbox
    }

    /// Our newest hybrid prekey, for invites, first contacts and the presence record.
    pub(crate) fn hybrid_prekey(&self) -> Result<Option<HybridPrekey>> {
        self.0.store.newest_hybrid_prekey()
    }

    /// The current device certificate.
    pub(crate) fn certificate(&self) -> DeviceCertificate {
        self.0.certificate.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-issues the device certificate when less than [`CERTIFICATE_RENEW_BEFORE`] of its
    /// life is left; returns whether it did.
    pub(crate) fn renew_certificate(&self) -> Result<bool> {
        let now = self.0.clock.now_secs();
        if self.certificate().not_after > now + CERTIFICATE_RENEW_BEFORE.as_secs() {
            return Ok(false);
        }
        let fresh = issue(&self.0.identity, now)?;
        *self.0.certificate.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        tracing::info!("renewed the device certificate");
        Ok(true)
    }

    /// Makes a new signed prekey and a new hybrid prekey when the newest of each is older than
    /// [`PREKEY_ROTATION`], and deletes the secrets of those expired longer than
    /// [`PREKEY_SECRET_GRACE`] ago.
    pub(crate) fn rotate_prekeys(&self) -> Result<()> {
        let store = &self.0.store;
        let now = self.0.clock.now_secs();
        let fresh = store
            .newest_prekey()?
            .is_some_and(|p| now.saturating_sub(p.created_at) < PREKEY_ROTATION.as_secs());
        if !fresh {
            let mut secret = zeroize::Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(secret.as_mut());
            let prekey = SignedPrekey::sign(
                &self.0.identity,
                &secret,
                now,
                now + PREKEY_LIFETIME.as_secs(),
            )?;
            let id = envelope::key_id(&prekey.public);
            store.save_prekey(&id, &secret, &prekey)?;
            tracing::info!("made a new signed prekey");
        }
        let hybrid_fresh = store
            .newest_hybrid_prekey()?
            .is_some_and(|p| now.saturating_sub(p.created_at) < PREKEY_ROTATION.as_secs());
        if !hybrid_fresh {
            let secret = HybridPrekeySecret {
                x25519: zeroize::Zeroizing::new([0u8; 32]),
                kem_seed: zeroize::Zeroizing::new([0u8; kolokol_protocol::kem::SEED_LEN]),
            };
            let mut secret = secret;
            rand::rngs::OsRng.fill_bytes(secret.x25519.as_mut());
            rand::rngs::OsRng.fill_bytes(secret.kem_seed.as_mut());
            let prekey = HybridPrekey::sign(
                &self.0.identity,
                &secret,
                now,
                now + PREKEY_LIFETIME.as_secs(),
            )?;
            let id = envelope::prekey_id(self.0.mailbox.address(), &prekey.public);
            store.save_hybrid_prekey(&id, &secret, &prekey)?;
            tracing::info!("made a new hybrid prekey");
        }
        store.delete_prekeys_expired_before(now.saturating_sub(PREKEY_SECRET_GRACE.as_secs()))?;
        Ok(())
    }
}

/// A device certificate valid from a day ago (clock skew) for [`CERTIFICATE_LIFETIME`].
fn issue(identity: &Identity, now: u64) -> Result<DeviceCertificate> {
    Ok(identity.certify(
        now.saturating_sub(CERTIFICATE_BACKDATE.as_secs()),
        now + CERTIFICATE_LIFETIME.as_secs(),
    )?)
}

#[cfg(test)]
mod tests;
