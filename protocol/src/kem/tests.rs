//! Tests of the ML-KEM wrapper, against RustCrypto's independent `ml-kem` implementation: the
//! same seed gives the same encapsulation key, and a ciphertext made by either decapsulates to
//! the same secret in the other.

use ml_kem::{DecapsulationKey, EncapsulationKey, KeyExport, MlKem768, kem::Decapsulate};

use crate::kem::{self, CIPHERTEXT_LEN, PUBLIC_KEY_LEN};

fn rustcrypto_pair(seed: &[u8; 64]) -> DecapsulationKey<MlKem768> {
    DecapsulationKey::<MlKem768>::from_seed((*seed).into())
}

#[test]
fn libcrux_and_rustcrypto_agree_on_keys_and_secrets() {
    let seed = [0x5a; 64];
    let ours = kem::public_key(&seed);
    let theirs = rustcrypto_pair(&seed);
    let theirs_public = theirs.encapsulation_key().to_bytes();
    assert_eq!(theirs_public.as_slice(), ours.as_slice());

    // Ours encapsulates, RustCrypto decapsulates.
    let (ct, psk) = kem::encapsulate(&ours, [7; 32]).unwrap();
    let shared = theirs.decapsulate(&ct.into());
    assert_eq!(*kem::psk(&shared.into(), &ct), *psk);

    // RustCrypto encapsulates (deterministically, same randomness), ours decapsulates.
    let ek = EncapsulationKey::<MlKem768>::new(&theirs_public).unwrap();
    let (their_ct, their_shared) = ek.encapsulate_deterministic(&[7; 32].into());
    let their_ct: [u8; CIPHERTEXT_LEN] = their_ct.into();
    assert_eq!(their_ct, ct, "FIPS 203 encapsulation is deterministic given its randomness");
    assert_eq!(*kem::decapsulate(&seed, &their_ct), *kem::psk(&their_shared.into(), &their_ct));
}

#[test]
fn a_forged_ciphertext_gives_an_unrelated_secret_and_a_bad_key_is_refused() {
    let seed = [3; 64];
    let public = kem::public_key(&seed);
    let (mut ct, psk) = kem::encapsulate(&public, [9; 32]).unwrap();
    ct[0] ^= 1;
    assert_ne!(*kem::decapsulate(&seed, &ct), *psk);
    // Every coefficient of a key must be below q = 3329; 0xff bytes make 4095.
    let bad = [0xff; PUBLIC_KEY_LEN];
    assert!(kem::check_public(&bad).is_err());
    assert!(kem::encapsulate(&bad, [1; 32]).is_err());
}
