//! ML-KEM-768 (FIPS 203), the post-quantum half of the hybrid prekeys.
//!
//! A first contact (format 4) encapsulates a fresh secret to the recipient's ML-KEM key and mixes
//! it into the Noise handshake as a pre-shared key, beside the X25519 Diffie-Hellman results, so
//! that reading the envelope needs both X25519 and ML-KEM broken (see `docs/PROTOCOL.md`,
//! section 7.5). The implementation is Cryspen's `libcrux-ml-kem`, whose portable code is
//! formally verified; the tests open the golden vectors again with RustCrypto's `ml-kem`.
//!
//! Sans-IO like the rest of the crate: key generation and encapsulation take their randomness as
//! bytes. A decapsulation key is kept as its 64-byte FIPS 203 seed `d || z` and expanded when
//! used, so a stored secret is 64 bytes rather than 2 400.

use blake2::{Blake2s256, Digest};
use libcrux_ml_kem::mlkem768;
use zeroize::Zeroizing;

use crate::Error;

/// Length of an ML-KEM-768 encapsulation (public) key.
pub const PUBLIC_KEY_LEN: usize = 1184;

/// Length of an ML-KEM-768 ciphertext.
pub const CIPHERTEXT_LEN: usize = 1088;

/// Length of the seed a decapsulation key is made from (FIPS 203 `d || z`).
pub const SEED_LEN: usize = 64;

/// Domain-separation prefix of the pre-shared key derived from an encapsulated secret.
const PSK_CONTEXT: &[u8] = b"kolokol-hybrid-psk:v1";

/// An ML-KEM-768 encapsulation key, as it travels in a hybrid prekey.
pub type PublicKey = [u8; PUBLIC_KEY_LEN];

/// An ML-KEM-768 ciphertext, as it travels in a format 4 first contact.
pub type Ciphertext = [u8; CIPHERTEXT_LEN];

/// The encapsulation key of the decapsulation key made from `seed`.
pub fn public_key(seed: &[u8; SEED_LEN]) -> PublicKey {
    let pair = mlkem768::generate_key_pair(*seed);
    *pair.pk()
}

/// Refuses an encapsulation key that fails FIPS 203's modulus check (section 7.2): every
/// coefficient must be below q. A peer's key is checked before anything is encapsulated to it.
pub fn check_public(key: &PublicKey) -> Result<(), Error> {
    if mlkem768::validate_public_key(&mlkem768::MlKem768PublicKey::from(*key)) {
        Ok(())
    } else {
        Err(Error::InvalidKey { what: "ML-KEM-768", detail: "fails the modulus check" })
    }
}

/// Encapsulates to `key` with 32 bytes of caller randomness; returns the ciphertext and the
/// pre-shared key it yields (see [`psk`]).
pub fn encapsulate(
    key: &PublicKey,
    randomness: [u8; 32],
) -> Result<(Ciphertext, Zeroizing<[u8; 32]>), Error> {
    check_public(key)?;
    let (ciphertext, shared) =
        mlkem768::encapsulate(&mlkem768::MlKem768PublicKey::from(*key), randomness);
    let mut ct = [0u8; CIPHERTEXT_LEN];
    ct.copy_from_slice(ciphertext.as_slice());
    let shared = Zeroizing::new(shared);
    Ok((ct, psk(&shared, &ct)))
}

/// Decapsulates `ciphertext` with the key made from `seed` and returns the pre-shared key. A
/// wrong or forged ciphertext yields an unrelated key (ML-KEM's implicit rejection), so the
/// envelope then fails its AEAD check like any other tampering.
///
/// libcrux's key types do not wipe themselves; the expanded private key lives only for this
/// call, on the stack of a worker thread, and the seed it comes from is the caller's to wipe.
pub fn decapsulate(seed: &[u8; SEED_LEN], ciphertext: &Ciphertext) -> Zeroizing<[u8; 32]> {
    let pair = mlkem768::generate_key_pair(*seed);
    let shared = Zeroizing::new(mlkem768::decapsulate(
        pair.private_key(),
        &mlkem768::MlKem768Ciphertext::from(*ciphertext),
    ));
    psk(&shared, ciphertext)
}

/// The Noise PSK of a first contact: `BLAKE2s-256("kolokol-hybrid-psk:v1" || K || ct)`, with
/// `K` the ML-KEM shared secret. Hashing the ciphertext in as well binds the key to this very
/// encapsulation, as the X-Wing combiner does.
pub fn psk(shared: &[u8; 32], ciphertext: &Ciphertext) -> Zeroizing<[u8; 32]> {
    let mut hasher = Blake2s256::new();
    hasher.update(PSK_CONTEXT);
    hasher.update(shared);
    hasher.update(ciphertext);
    Zeroizing::new(hasher.finalize().into())
}

#[cfg(test)]
mod tests;
