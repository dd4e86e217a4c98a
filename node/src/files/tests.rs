//! Tests of the names received files are saved under: whatever a sender calls its file, it
//! lands inside the download directory, readable, bounded, and never over another file.

use std::path::Path;

use super::{MAX_SAVED_NAME_LEN, safe_name, size_text, unique_path};

#[test]
fn names_that_climb_out_or_hide_are_made_plain() {
    assert_eq!(safe_name("../../etc/passwd"), "passwd");
    assert_eq!(safe_name("..\\..\\windows\\system.ini"), "system.ini");
    assert_eq!(safe_name(".."), "file");
    assert_eq!(safe_name("/"), "file");
    assert_eq!(safe_name(".bashrc"), "bashrc");
    assert_eq!(safe_name("  ...  "), "file");
    assert_eq!(safe_name("report.pdf"), "report.pdf");
    assert_eq!(safe_name("отчёт 2026.pdf"), "отчёт 2026.pdf");
}

#[test]
fn control_and_direction_characters_are_replaced() {
    assert_eq!(safe_name("a\nb\u{1b}[31mc"), "a_b_[31mc");
    assert_eq!(safe_name("invoice\u{202e}fdp.exe"), "invoice_fdp.exe");
    assert_eq!(safe_name("nul\0byte"), "nul_byte");
}

#[test]
fn long_names_are_cut_keeping_the_extension() {
    let long = format!("{}.tar.gz", "я".repeat(300));
    let safe = safe_name(&long);
    assert!(safe.len() <= MAX_SAVED_NAME_LEN, "{}", safe.len());
    assert!(safe.ends_with(".gz"));
    assert!(safe.starts_with('я'));
}

#[test]
fn an_existing_name_gets_a_number() {
    let dir = tempfile::tempdir().unwrap();
    let id = [0xab; 16];
    assert_eq!(unique_path(dir.path(), "a.txt", &id), dir.path().join("a.txt"));
    std::fs::write(dir.path().join("a.txt"), b"1").unwrap();
    assert_eq!(unique_path(dir.path(), "a.txt", &id), dir.path().join("a (1).txt"));
    std::fs::write(dir.path().join("a (1).txt"), b"2").unwrap();
    assert_eq!(unique_path(dir.path(), "a.txt", &id), dir.path().join("a (2).txt"));
    assert_eq!(
        unique_path(Path::new("/nonexistent-kolokol"), "b", &id),
        Path::new("/nonexistent-kolokol/b")
    );
}

#[test]
fn sizes_read_as_people_say_them() {
    assert_eq!(size_text(10), "10 bytes");
    assert_eq!(size_text(2048), "2.0 KiB");
    assert_eq!(size_text(5 * 1024 * 1024), "5.0 MiB");
}

/// A receiving side on a real store and real directories, as the node builds it.
struct Receiver {
    dir: tempfile::TempDir,
    downloads: super::Downloads,
    store: crate::store::Store,
}

fn receiver(max_size: u64) -> Receiver {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(&dir.path().join("kolokol.db")).unwrap();
    let downloads = super::Downloads::new(super::DownloadsParts {
        store: store.clone(),
        events: crate::events::Events::new(store.clone()),
        clock: crate::clock::Clock::system(),
        dir: dir.path().join(super::DOWNLOADS_DIR),
        partial: dir.path().join(super::PARTIAL_DIR),
        max_size,
        finishing: Default::default(),
    });
    Receiver { dir, downloads, store }
}

/// A file's offer and its chunks' data, as a sender makes them; `sha256` as given, or the
/// file's own.
fn offer_and_chunks(
    name: &str,
    bytes: &[u8],
    sha256: Option<[u8; 32]>,
) -> (kolokol_protocol::file::FileOffer, Vec<Vec<u8>>) {
    use kolokol_protocol::file::{FileMessage, chunk, chunk_count, chunk_span};
    use sha2::Digest;
    let size = bytes.len() as u64;
    let offer = kolokol_protocol::file::FileOffer {
        name: name.into(),
        size,
        sha256: sha256.unwrap_or_else(|| sha2::Sha256::digest(bytes).into()),
    };
    let chunks = (0..chunk_count(size))
        .map(|i| {
            let (offset, len) = chunk_span(size, i).unwrap();
            match chunk(i, &bytes[offset as usize..offset as usize + len]).unwrap() {
                FileMessage::Chunk { data, .. } => data,
                FileMessage::Offer(_) => unreachable!(),
            }
        })
        .collect();
    (offer, chunks)
}

fn peer() -> libp2p::PeerId {
    kolokol_protocol::identity::Identity::from_secrets([4; 32], [5; 32]).peer_id()
}

#[test]
fn a_hostile_name_lands_inside_the_download_directory() {
    use crate::inbox::Received;
    let r = receiver(super::DEFAULT_MAX_FILE_SIZE);
    let bytes: Vec<u8> =
        (0..(kolokol_protocol::file::FILE_CHUNK_LEN + 100)).map(|i| i as u8).collect();
    let (offer, chunks) = offer_and_chunks("../../etc/passwd", &bytes, None);
    let id = [1; 16];
    assert_eq!(r.downloads.offered(&peer(), true, &id, &offer).unwrap(), Received::Accepted);
    // Out of order, and one twice: a repeat changes nothing but its count.
    assert_eq!(r.downloads.chunk(&peer(), true, &id, 1, &chunks[1]).unwrap(), Received::Accepted);
    assert_eq!(r.downloads.chunk(&peer(), true, &id, 1, &chunks[1]).unwrap(), Received::Accepted);
    assert_eq!(r.downloads.chunk(&peer(), true, &id, 0, &chunks[0]).unwrap(), Received::Accepted);
    let row = r.store.file_receive(&peer(), &id).unwrap().unwrap();
    assert_eq!(row.state, "received");
    assert_eq!(row.repeated, 1);
    let saved = std::path::PathBuf::from(row.path.unwrap());
    assert_eq!(saved, r.dir.path().join("downloads").join("passwd"));
    assert_eq!(std::fs::read(&saved).unwrap(), bytes);
    // The inbox has a line for it, and a late repeat is taken without harm.
    let line = r.store.inbox(10).unwrap().into_iter().find(|m| m.id == id).unwrap();
    assert!(line.text.contains("passwd") && line.text.contains("saved to"), "{}", line.text);
    assert_eq!(r.downloads.chunk(&peer(), true, &id, 0, &chunks[0]).unwrap(), Received::Accepted);
}

#[test]
fn malformed_chunks_are_refused_and_a_wrong_hash_removes_the_file() {
    use crate::inbox::Received;
    let r = receiver(super::DEFAULT_MAX_FILE_SIZE);
    let bytes = vec![7u8; 1000];
    let (offer, chunks) = offer_and_chunks("a.bin", &bytes, Some([0; 32]));
    let id = [2; 16];
    // A chunk before any offer.
    assert_eq!(r.downloads.chunk(&peer(), true, &id, 0, &chunks[0]).unwrap(), Received::Rejected);
    assert_eq!(r.downloads.offered(&peer(), true, &id, &offer).unwrap(), Received::Accepted);
    // An index past the file, short data, and padding that is not zero.
    assert_eq!(r.downloads.chunk(&peer(), true, &id, 1, &chunks[0]).unwrap(), Received::Rejected);
    assert_eq!(
        r.downloads.chunk(&peer(), true, &id, 0, &chunks[0][..10]).unwrap(),
        Received::Rejected
    );
    let mut padded = chunks[0].clone();
    padded[2000] = 1;
    assert_eq!(r.downloads.chunk(&peer(), true, &id, 0, &padded).unwrap(), Received::Rejected);
    // Every chunk in, but the offer's hash is not the file's: refused, failed, removed.
    assert_eq!(r.downloads.chunk(&peer(), true, &id, 0, &chunks[0]).unwrap(), Received::Rejected);
    let row = r.store.file_receive(&peer(), &id).unwrap().unwrap();
    assert_eq!(row.state, "failed");
    assert!(row.detail.unwrap().contains("hash"));
    assert_eq!(std::fs::read_dir(r.dir.path().join("partial")).unwrap().count(), 0);
    assert!(!r.dir.path().join("downloads").join("a.bin").exists());
    // The sender's next try is refused too.
    assert_eq!(r.downloads.offered(&peer(), true, &id, &offer).unwrap(), Received::Rejected);
}

#[test]
fn large_files_are_refused_and_strangers_files_wait() {
    use crate::inbox::Received;
    let r = receiver(500);
    let (offer, _) = offer_and_chunks("big", &[1u8; 501], None);
    assert_eq!(r.downloads.offered(&peer(), true, &[3; 16], &offer).unwrap(), Received::Rejected);
    assert!(r.store.file_receive(&peer(), &[3; 16]).unwrap().is_none());

    let (offer, chunks) = offer_and_chunks("small", &[1u8; 100], None);
    let id = [4; 16];
    // From a stranger: kept as a request, answered busy, chunks too.
    assert_eq!(r.downloads.offered(&peer(), false, &id, &offer).unwrap(), Received::OverQuota);
    assert_eq!(r.store.file_receive(&peer(), &id).unwrap().unwrap().state, "request");
    assert_eq!(r.downloads.chunk(&peer(), false, &id, 0, &chunks[0]).unwrap(), Received::OverQuota);
    // Once a contact, the offer's next try starts the transfer.
    assert_eq!(r.downloads.offered(&peer(), true, &id, &offer).unwrap(), Received::Accepted);
    assert_eq!(r.downloads.chunk(&peer(), true, &id, 0, &chunks[0]).unwrap(), Received::Accepted);
    assert_eq!(r.store.file_receive(&peer(), &id).unwrap().unwrap().state, "received");
}

#[test]
fn an_abandoned_transfer_is_given_up_and_its_partial_file_removed() {
    use crate::inbox::Received;
    let r = receiver(super::DEFAULT_MAX_FILE_SIZE);
    let (offer, chunks) = offer_and_chunks("half.bin", &vec![3u8; 3 * 62_720], None);
    let id = [5; 16];
    assert_eq!(r.downloads.offered(&peer(), true, &id, &offer).unwrap(), Received::Accepted);
    assert_eq!(r.downloads.chunk(&peer(), true, &id, 0, &chunks[0]).unwrap(), Received::Accepted);
    assert_eq!(std::fs::read_dir(r.dir.path().join("partial")).unwrap().count(), 1);
    // Nothing older than now: kept. Everything before a moment from now: given up.
    assert_eq!(r.downloads.purge(0).unwrap(), 0);
    let later = crate::clock::Clock::system().now_ms() + 1000;
    assert_eq!(r.downloads.purge(later).unwrap(), 1);
    let row = r.store.file_receive(&peer(), &id).unwrap().unwrap();
    assert_eq!(row.state, "failed");
    assert_eq!(std::fs::read_dir(r.dir.path().join("partial")).unwrap().count(), 0);
    // A chunk after that is refused: the sender hears the transfer is over.
    assert_eq!(r.downloads.chunk(&peer(), true, &id, 1, &chunks[1]).unwrap(), Received::Rejected);
}
