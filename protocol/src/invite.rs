//! Invite codes: copy-pasteable text that lets one person add another as a contact.
//!
//! An invite carries the inviter's device certificate (and so its peer id and device key) and
//! the addresses at which it can be reached, typically relay circuit addresses. Its text form is
//! `kolokol1` followed by base58 (Bitcoin alphabet, no `0OIl`, so it survives being read aloud or
//! retyped) of `version || bincode(InviteBody) || checksum`, where the checksum is the first four
//! bytes of BLAKE2s-256 over the version and body. A typo is caught by the checksum before
//! anything else is looked at.

use bincode::{Decode, Encode};
use blake2::{Blake2s256, Digest};
use libp2p_identity::PeerId;

use crate::Error;
use crate::codec;
use crate::identity::DeviceCertificate;
use crate::mailbox_key::MailboxAddress;
use crate::prekey::HybridPrekey;

/// Every invite's text starts with this.
pub const INVITE_PREFIX: &str = "kolokol1";

/// Version byte of the first invite format: certificate and addresses.
pub const INVITE_VERSION: u8 = 1;

/// Version byte of the second invite format, which adds the inviter's hybrid prekey and its
/// mailbox address (see [`InviteKeys`]).
pub const INVITE_VERSION_2: u8 = 2;

/// Longest invite text accepted, in bytes; anything longer is refused before decoding. The
/// largest valid version 2 invite (eight addresses of the longest kind and a 1 296-byte hybrid
/// prekey) is about 4 900 bytes of text.
pub const MAX_INVITE_TEXT_LEN: usize = 8192;

/// Most addresses one invite may carry.
pub const MAX_INVITE_ADDRESSES: usize = 8;

/// Longest single address, in bytes of its binary multiaddr form.
pub const MAX_ADDRESS_LEN: usize = 256;

const CHECKSUM_LEN: usize = 4;
const CHECKSUM_CONTEXT: &[u8] = b"kolokol-invite-checksum";

/// The decoded contents of an invite.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Invite {
    /// The inviter's device certificate.
    pub certificate: DeviceCertificate,
    /// Addresses the inviter can be reached at, as binary multiaddrs (this crate does not parse
    /// them; the node does).
    pub addresses: Vec<Vec<u8>>,
}

/// What a version 2 invite adds: the inviter's hybrid prekey, so that the first contact needs
/// no DHT lookup while it is valid, and its mailbox address, which only those who hold an
/// invite (or a first contact) learn, so that only they can compute its mailbox ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InviteKeys {
    /// The inviter's hybrid prekey at the time of the invite.
    pub prekey: HybridPrekey,
    /// The inviter's mailbox address.
    pub mailbox: MailboxAddress,
}

/// The body of a version 2 invite, in this field order.
#[derive(Encode, Decode)]
struct InviteBodyV2 {
    certificate: DeviceCertificate,
    prekey: HybridPrekey,
    mailbox: MailboxAddress,
    addresses: Vec<Vec<u8>>,
}

impl Invite {
    /// Encodes the invite as version 1 text, refusing one that breaks the limits a reader would
    /// enforce.
    pub fn to_text(&self) -> Result<String, Error> {
        self.check_limits()?;
        let mut payload = vec![INVITE_VERSION];
        payload.extend_from_slice(&codec::encode(self)?);
        Ok(finish(payload))
    }

    /// Encodes the invite as version 2 text, with the inviter's hybrid prekey and mailbox
    /// address.
    pub fn to_text_v2(&self, keys: &InviteKeys) -> Result<String, Error> {
        self.check_limits()?;
        let body = InviteBodyV2 {
            certificate: self.certificate.clone(),
            prekey: keys.prekey.clone(),
            mailbox: keys.mailbox,
            addresses: self.addresses.clone(),
        };
        let mut payload = vec![INVITE_VERSION_2];
        payload.extend_from_slice(&codec::encode(&body)?);
        Ok(finish(payload))
    }

    /// Decodes invite text of either version and verifies the certificate at `now`; the
    /// version 2 keys are dropped (see [`Invite::from_text_with_keys`]).
    pub fn from_text(text: &str, now: u64) -> Result<(Self, PeerId), Error> {
        Self::from_text_with_keys(text, now).map(|(invite, _, peer)| (invite, peer))
    }

    /// Decodes invite text and verifies the certificate at `now` (Unix seconds); for version 2,
    /// also the hybrid prekey's signature by the certificate's identity and its lifetime bound.
    /// A prekey that has expired by `now` is still returned (the invite is still good for
    /// adding the contact; the first message then waits for a current prekey, section 7.4):
    /// the caller compares `expires_at` with its clock. Whitespace anywhere is ignored (base58
    /// has none): copy and paste adds it around the code, and chat and mail apps wrap a long
    /// code with line breaks or spaces inside.
    pub fn from_text_with_keys(
        text: &str,
        now: u64,
    ) -> Result<(Self, Option<InviteKeys>, PeerId), Error> {
        let text = without_whitespace(text);
        let text = text.as_str();
        if text.len() > MAX_INVITE_TEXT_LEN {
            return Err(Error::Invite(format!(
                "is {} bytes long, longer than the {MAX_INVITE_TEXT_LEN} an invite can be",
                text.len()
            )));
        }
        let Some(encoded) = text.strip_prefix(INVITE_PREFIX) else {
            return Err(Error::Invite(format!("does not start with {INVITE_PREFIX:?}")));
        };
        let payload = bs58::decode(encoded).into_vec().map_err(|e| match e {
            bs58::decode::Error::InvalidCharacter { character, index } => Error::Invite(format!(
                "has the character {character:?} at position {}, which no invite contains",
                index + INVITE_PREFIX.len() + 1
            )),
            other => Error::Invite(format!("is not valid base58: {other}")),
        })?;
        if payload.len() < 1 + CHECKSUM_LEN {
            return Err(Error::Invite("is too short: was it cut off when copying?".into()));
        }
        let (signed, sum) = payload.split_at(payload.len() - CHECKSUM_LEN);
        if checksum(signed) != sum {
            return Err(Error::Invite(
                "checksum does not match: the code was mistyped or cut off".into(),
            ));
        }
        let corrupted = |_| Error::Invite("is corrupted or cut short".into());
        let (invite, keys) = match signed[0] {
            INVITE_VERSION => {
                (codec::decode::<Invite>("invite", &signed[1..]).map_err(corrupted)?, None)
            }
            INVITE_VERSION_2 => {
                let body: InviteBodyV2 =
                    codec::decode("invite", &signed[1..]).map_err(corrupted)?;
                let keys = InviteKeys { prekey: body.prekey, mailbox: body.mailbox };
                (Invite { certificate: body.certificate, addresses: body.addresses }, Some(keys))
            }
            other => {
                return Err(Error::Invite(format!(
                    "has version {other}, this kolokol reads versions {INVITE_VERSION} and \
                     {INVITE_VERSION_2}: upgrade kolokol"
                )));
            }
        };
        invite.check_limits()?;
        let peer_id = invite
            .certificate
            .verify(now)
            .map_err(|e| Error::Invite(format!("carries an unusable certificate: {e}")))?;
        if let Some(keys) = &keys {
            keys.prekey
                .verify(&invite.certificate.identity_key, keys.prekey.created_at)
                .map_err(|e| Error::Invite(format!("carries an unusable prekey: {e}")))?;
            crate::mailbox_key::blinded_key(&keys.mailbox, 0)
                .map_err(|e| Error::Invite(format!("carries an unusable mailbox address: {e}")))?;
        }
        Ok((invite, keys, peer_id))
    }

    fn check_limits(&self) -> Result<(), Error> {
        if self.addresses.len() > MAX_INVITE_ADDRESSES {
            return Err(Error::Invite(format!(
                "carries {} addresses, more than the {MAX_INVITE_ADDRESSES} allowed",
                self.addresses.len()
            )));
        }
        if let Some(a) = self.addresses.iter().find(|a| a.len() > MAX_ADDRESS_LEN) {
            return Err(Error::Invite(format!(
                "carries a {}-byte address, longer than {MAX_ADDRESS_LEN}",
                a.len()
            )));
        }
        Ok(())
    }
}

/// `text` without any ASCII whitespace.
pub(crate) fn without_whitespace(text: &str) -> String {
    text.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

/// Appends the checksum and makes the text.
fn finish(mut payload: Vec<u8>) -> String {
    let checksum = checksum(&payload);
    payload.extend_from_slice(&checksum);
    format!("{INVITE_PREFIX}{}", bs58::encode(payload).into_string())
}

fn checksum(payload: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut hasher = Blake2s256::new();
    hasher.update(CHECKSUM_CONTEXT);
    hasher.update(payload);
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

#[cfg(test)]
mod tests;
