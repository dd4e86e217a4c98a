//! Backups: a round trip, a wrong passphrase, tampering, bounds, and arbitrary bytes.

use proptest::prelude::*;
use zeroize::Zeroizing;

use crate::backup::{Contents, HEADER_LEN, Header, MAGIC, open, parse, seal_with};

/// Small parameters, so tests are quick; new backups use MEMORY_KIB and PASSES.
fn header() -> Header {
    Header { memory_kib: 64, passes: 1, lanes: 1, salt: [1; 16], nonce: [2; 24] }
}

fn contents() -> Contents {
    Contents {
        identity_file: Zeroizing::new(b"kolokol-identity-v1\nsecret".to_vec()),
        database: Zeroizing::new(vec![0x53; 1000]),
    }
}

#[test]
fn a_backup_opens_with_its_passphrase_only_and_not_once_changed() {
    let file = seal_with(b"correct horse", &contents(), header()).unwrap();
    assert!(file.starts_with(MAGIC));
    assert_eq!(file.len(), HEADER_LEN + 16 + 1000 + 26 + 16);
    assert_eq!(open(b"correct horse", &file).unwrap(), contents());
    let wrong = open(b"correct horsE", &file).unwrap_err().to_string();
    assert!(wrong.contains("wrong passphrase"), "{wrong}");
    // Every byte is covered: the header as associated data, the rest by the tag.
    for at in [MAGIC.len(), MAGIC.len() + 20, HEADER_LEN - 1, HEADER_LEN + 5, file.len() - 1] {
        let mut changed = file.clone();
        changed[at] ^= 1;
        assert!(open(b"correct horse", &changed).is_err(), "byte {at}");
    }
    assert!(open(b"correct horse", &file[..file.len() - 1]).is_err());
}

#[test]
fn the_header_is_checked_before_any_key_work() {
    assert!(parse(b"hello").unwrap_err().to_string().contains("not a kolokol backup"));
    let file = seal_with(b"p", &contents(), header()).unwrap();
    let mut greedy = file.clone();
    // Ask for 4 TiB of memory: refused by parse, never allocated.
    greedy[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(parse(&greedy).unwrap_err().to_string().contains("out of bounds"));
    assert!(parse(&file[..HEADER_LEN]).is_err());
    let (parsed, sealed) = parse(&file).unwrap();
    assert_eq!(parsed, header());
    assert_eq!(sealed.len(), file.len() - HEADER_LEN);
}

#[test]
fn contents_refuse_lengths_past_their_end_and_trailing_bytes() {
    let bytes = contents().encode();
    assert_eq!(Contents::decode(&bytes).unwrap(), contents());
    assert!(Contents::decode(&bytes[..bytes.len() - 1]).is_err());
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(Contents::decode(&longer).is_err());
    let mut lying = bytes.to_vec();
    lying[..8].copy_from_slice(&u64::MAX.to_be_bytes());
    assert!(Contents::decode(&lying).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    /// Any contents round-trip, through the plaintext encoding and the sealed file.
    #[test]
    fn backups_round_trip(
        identity in prop::collection::vec(any::<u8>(), 0..200),
        database in prop::collection::vec(any::<u8>(), 0..2000),
        passphrase in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        let c = Contents { identity_file: Zeroizing::new(identity), database: Zeroizing::new(database) };
        prop_assert_eq!(Contents::decode(&c.encode()).unwrap(), c.clone());
        let file = seal_with(&passphrase, &c, header()).unwrap();
        prop_assert_eq!(open(&passphrase, &file).unwrap(), c);
    }

    /// Arbitrary bytes never panic the parser or the contents decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse(&bytes);
        let _ = Contents::decode(&bytes);
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&bytes);
        let _ = parse(&file);
    }
}
