//! The one error type of `kolokol-protocol`.

/// Everything that can go wrong while decoding, verifying, sealing or opening.
///
/// Each variant says what was wrong with the input, so the node can log it and the CLI can show
/// it as one line without further context.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The bytes are not a valid encoding of the expected wire type.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// The wire type that was being decoded.
        what: &'static str,
        /// What the decoder found wrong.
        detail: String,
    },
    /// A value is larger than the protocol allows.
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit in bytes.
        max: usize,
    },
    /// A public key is not a usable X25519 or Ed25519 key.
    #[error("invalid {what} key: {detail}")]
    InvalidKey {
        /// Which key.
        what: &'static str,
        /// Why it was refused.
        detail: &'static str,
    },
    /// A device certificate's signature does not verify under its identity key.
    #[error("device certificate signature does not verify")]
    BadCertificateSignature,
    /// A device certificate is outside its validity window at the time given.
    #[error("device certificate is not valid at {now} (valid from {not_before} to {not_after})")]
    CertificateNotValid {
        /// The time of the check, Unix seconds.
        now: u64,
        /// Start of validity, Unix seconds.
        not_before: u64,
        /// End of validity, Unix seconds.
        not_after: u64,
    },
    /// The invite text is not a Kolokol invite code.
    #[error("invite code {0}")]
    Invite(String),
    /// The envelope could not be opened: wrong recipient, tampered, or not for this protocol.
    #[error("envelope rejected: {0}")]
    Envelope(&'static str),
    /// The envelope was opened before: its initiator ephemeral key is in the replay cache of the
    /// key it was sent to. A relay or mailbox delivering the same envelope twice causes this, so
    /// the node treats it as "already have it", not as an attack to report.
    #[error("envelope replayed: this envelope was already accepted")]
    Replayed,
    /// A presence record is unusable.
    #[error("presence record {0}")]
    Presence(&'static str),
    /// A mailbox request or ownership proof is unusable.
    #[error("mailbox {0}")]
    Mailbox(&'static str),
    /// A bootstrap bundle is unusable.
    #[error("bootstrap bundle {0}")]
    Bundle(String),
    /// The Noise library refused an operation; this names the step.
    #[error("noise {step} failed: {detail}")]
    Noise {
        /// The step that failed (build, write, read).
        step: &'static str,
        /// snow's own description.
        detail: String,
    },
    /// A group change or group message is unusable; the text says why.
    #[error("group change {0}")]
    Group(&'static str),
    /// Signing with the identity key failed.
    #[error("signing failed: {0}")]
    Signing(String),
}
