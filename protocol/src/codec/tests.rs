//! Property tests of the codec: every wire type decodes to what was encoded, one value has one
//! encoding (no trailing bytes), and the size limit holds.

use proptest::prelude::*;

use crate::Error;
use crate::codec::{MAX_DECODE_LEN, decode, encode};
use crate::envelope::{Advertisement, Payload, Sealed};
use crate::identity::{DeviceCertificate, Identity};
use crate::invite::{Invite, MAX_ADDRESS_LEN, MAX_INVITE_ADDRESSES};
use crate::message::{Body, Content, MAX_READ_IDS};

fn content() -> impl Strategy<Value = Content> {
    let body = prop_oneof![
        any::<String>().prop_map(Body::Text),
        any::<[u8; 16]>().prop_map(|of| Body::Receipt { of }),
        prop::collection::vec(any::<[u8; 16]>(), 0..=MAX_READ_IDS).prop_map(|of| Body::Read { of }),
        prop::collection::vec(any::<[u8; 16]>(), 0..=MAX_READ_IDS)
            .prop_map(|of| Body::Receipts { of }),
        (any::<u32>(), any::<u32>(), any::<u32>(), prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(index, count, body_len, data)| Body::Chunk {
                index,
                count,
                body_len,
                data
            }),
        (any::<u64>(), any::<u64>(), any::<String>())
            .prop_map(|(series, seq, text)| Body::NumberedText { series, seq, text }),
    ];
    (any::<[u8; 16]>(), any::<u64>(), body).prop_map(|(id, sent_at_ms, body)| Content {
        id,
        sent_at_ms,
        body,
    })
}

fn certificate() -> impl Strategy<Value = DeviceCertificate> {
    (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<u64>(), any::<u64>(), any::<[u8; 32]>()).prop_map(
        |(identity_key, device_key, not_before, not_after, half)| {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(&half);
            signature[32..].copy_from_slice(&identity_key);
            DeviceCertificate { identity_key, device_key, not_before, not_after, signature }
        },
    )
}

fn advertisement() -> impl Strategy<Value = Advertisement> {
    (any::<u32>(), any::<[u8; 32]>(), any::<[u8; 32]>())
        .prop_map(|(seq, public, seed)| Advertisement { seq, public, seed })
}

fn payload() -> impl Strategy<Value = Payload> {
    (prop::option::of(certificate()), prop::option::of(advertisement()), content()).prop_map(
        |(certificate, advertisement, content)| Payload::V1 { certificate, advertisement, content },
    )
}

fn addresses() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop::collection::vec(any::<u8>(), 0..=MAX_ADDRESS_LEN),
        0..=MAX_INVITE_ADDRESSES,
    )
}

#[track_caller]
fn check<T>(value: &T) -> Result<(), TestCaseError>
where
    T: bincode::Encode + bincode::Decode<()> + PartialEq + std::fmt::Debug,
{
    let bytes = encode(value).unwrap();
    prop_assert_eq!(&decode::<T>("value", &bytes).unwrap(), value);
    let mut longer = bytes.clone();
    longer.push(0);
    prop_assert!(decode::<T>("value", &longer).is_err());
    if !bytes.is_empty() {
        prop_assert!(decode::<T>("value", &bytes[..bytes.len() - 1]).is_err());
    }
    Ok(())
}

proptest! {
    #[test]
    fn content_round_trips(value in content()) {
        check(&value)?;
    }

    #[test]
    fn certificate_round_trips(value in certificate()) {
        check(&value)?;
    }

    #[test]
    fn advertisement_round_trips(value in advertisement()) {
        check(&value)?;
    }

    #[test]
    fn payload_round_trips(value in payload()) {
        check(&value)?;
    }

    #[test]
    fn sealed_round_trips(sender in certificate(), content in content()) {
        check(&Sealed { sender, content })?;
    }

    #[test]
    fn invite_round_trips_as_bytes_and_as_text(addresses in addresses(), seed in any::<u8>()) {
        let identity = Identity::from_secrets([seed; 32], [seed ^ 0x55; 32]);
        let certificate = identity.certify(10, 20).unwrap();
        let invite = Invite { certificate, addresses };
        check(&invite)?;
        let (back, peer) = Invite::from_text(&invite.to_text().unwrap(), 15).unwrap();
        prop_assert_eq!(back, invite);
        prop_assert_eq!(peer, identity.peer_id());
    }
}

#[test]
fn decoding_refuses_input_over_the_limit() {
    let huge = vec![0u8; MAX_DECODE_LEN + 1];
    assert!(matches!(decode::<Content>("content", &huge), Err(Error::TooLarge { .. })));
    // A length prefix claiming more than the limit is refused without allocating it.
    let mut claim = vec![0u8; 16 + 8 + 4];
    claim.extend_from_slice(&u64::MAX.to_be_bytes());
    assert!(decode::<Content>("content", &claim).is_err());
}
