//! Files between two real nodes: a file of several megabytes arrives byte for byte in the
//! recipient's download directory, with a line in its inbox; a transfer goes on where it stopped
//! after the recipient and then the sender restart mid-transfer, sending again only the chunk
//! that was in flight at each drop; a text sent during a transfer is not held up behind it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kolokol_node::{Node, Role, RunningNode};
use kolokol_protocol::control::{Event, FileDirection, FileState, FileTransfer};
use kolokol_protocol::file::{FILE_CHUNK_LEN, chunk_count};
use libp2p::Multiaddr;
use tokio::sync::broadcast;

use crate::support::{Net, introduce};

/// Time for a whole transfer of a few megabytes, with restarts and their retries, on a loaded
/// 2-core machine.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(180);

/// A user node that listens on 127.0.0.1 as well as holding a reservation on the relay, so the
/// two users reach each other directly; it saves received files in `downloads`, or in its data
/// directory's `downloads` if `None`.
async fn user(net: &Net, name: &str, relay: &Multiaddr, downloads: Option<&Path>) -> RunningNode {
    let mut config = net.config(name, Role::Node);
    config.download_dir = downloads.map(Path::to_path_buf);
    config.bootstrap = vec![relay.clone()];
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    let node = RunningNode::start(config).await.expect("the node starts");
    node.node()
        .wait_for_net(crate::support::TIMEOUT, |s| !s.reservations.is_empty())
        .await
        .unwrap_or_else(|| panic!("{name} got no relay reservation"));
    node
}

/// A file of `len` bytes that no two chunks of share content, so a chunk written at the wrong
/// place shows.
fn write_file(dir: &Path, name: &str, len: usize) -> (PathBuf, Vec<u8>) {
    let mut bytes = Vec::with_capacity(len);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("the file is written");
    (path, bytes)
}

/// Waits for a `file` event of transfer `id` that `pick` accepts.
async fn wait_file(
    events: &mut broadcast::Receiver<Event>,
    id: &str,
    pick: impl Fn(&FileTransfer) -> bool,
) -> FileTransfer {
    tokio::time::timeout(TRANSFER_TIMEOUT, async {
        loop {
            match events.recv().await {
                Ok(Event::File(t)) if t.id == id && pick(&t) => return t,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => panic!("the node stopped"),
            }
        }
    })
    .await
    .expect("the transfer got there in time")
}

/// Waits until transfer `id`, as `node` lists it or its events carry it, is as `pick` wants:
/// subscribed before the list is read, so nothing falls between the two.
async fn wait_until(node: &Node, id: &str, pick: impl Fn(&FileTransfer) -> bool) -> FileTransfer {
    let mut events = node.subscribe();
    match node.files(100).expect("files").into_iter().find(|t| t.id == id) {
        Some(t) if pick(&t) => t,
        _ => wait_file(&mut events, id, pick).await,
    }
}

/// Transfer `id` as `node` lists it.
fn listed(node: &Node, id: &str) -> FileTransfer {
    node.files(100).expect("files").into_iter().find(|t| t.id == id).expect("listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_of_several_megabytes_arrives_whole_with_a_line_in_the_inbox() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = user(&net, "alice", &relay_addr, None).await;
    let bob = user(&net, "bob", &relay_addr, None).await;
    introduce(&alice.node(), "alice", &bob.node(), "bob").await;
    let (a, b) = (alice.node(), bob.node());
    let files = tempfile::tempdir().expect("tempdir");
    // Not a multiple of the chunk length, so the last chunk is padded.
    let (path, bytes) = write_file(files.path(), "holiday photos.tar", 6 * 1024 * 1024 + 12_345);
    let started = a.send_file("bob", &path).await.expect("send_file");
    assert_eq!(started.state, FileState::Queued);
    assert_eq!(started.chunks, chunk_count(bytes.len() as u64));
    // While the file goes, a text overtakes it: chunks take the bulk lane, texts do not.
    let text = a.send("bob", "the photos are on their way").await.expect("send");
    assert_eq!(text.state, "delivered", "{:?}", text.detail);
    let file_then = b.files(100).expect("files").into_iter().find(|t| t.id == started.id);
    assert!(file_then.is_none_or(|t| t.state != FileState::Received), "the text waited");

    let sent = wait_until(&a, &started.id, |t| t.state != FileState::Queued).await;
    assert_eq!(sent.state, FileState::Delivered, "{:?}", sent.detail);
    assert_eq!(sent.done, bytes.len() as u64);
    // The nodes may first meet over the relay; when the direct connection replaces that one,
    // the chunk in flight on it is cut and sent again: at most one.
    assert!(sent.repeats <= 1, "{} chunks went twice", sent.repeats);
    let got = wait_until(&b, &started.id, |t| t.state == FileState::Received).await;
    assert_eq!(got.direction, FileDirection::In);
    assert_eq!(got.contact.as_deref(), Some("alice"));
    let saved = PathBuf::from(got.path.expect("saved somewhere"));
    assert_eq!(saved, net.data_dir("bob").join("downloads").join("holiday photos.tar"));
    assert!(std::fs::read(&saved).expect("the saved file") == bytes, "the file arrived changed");
    // No partial file is left, and the inbox has a line that says where the file went.
    let partial = std::fs::read_dir(net.data_dir("bob").join("partial")).expect("partial dir");
    assert_eq!(partial.count(), 0);
    let line = b.inbox(100).expect("inbox").into_iter().find(|m| m.id == started.id).expect("line");
    assert!(
        line.text.contains("holiday photos.tar") && line.text.contains("saved to"),
        "{}",
        line.text
    );

    // The same file again lands beside the first, under a name of its own.
    let again = a.send_file("bob", &path).await.expect("send_file");
    let got = wait_until(&b, &again.id, |t| t.state == FileState::Received).await;
    let saved_again = PathBuf::from(got.path.expect("saved"));
    assert_eq!(saved_again.file_name().and_then(|n| n.to_str()), Some("holiday photos (1).tar"));
    assert!(std::fs::read(&saved_again).expect("the second copy") == bytes);

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_goes_on_where_it_stopped_after_either_side_restarts() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = user(&net, "alice", &relay_addr, None).await;
    // Bob saves files where his configuration says.
    let files = tempfile::tempdir().expect("tempdir");
    let downloads = files.path().join("Bob's files");
    let bob = user(&net, "bob", &relay_addr, Some(&downloads)).await;
    introduce(&alice.node(), "alice", &bob.node(), "bob").await;
    let len = 8 * 1024 * 1024;
    let (path, bytes) = write_file(files.path(), "dump.bin", len);
    let count = chunk_count(len as u64);

    let mut b_events = bob.node().subscribe();
    let started = alice.node().send_file("bob", &path).await.expect("send_file");
    let id = started.id.clone();

    // The recipient stops a quarter of the way in, and comes back.
    let quarter = len as u64 / 4;
    wait_file(&mut b_events, &id, |t| t.done >= quarter).await;
    bob.shutdown().await;
    let bob = user(&net, "bob", &relay_addr, Some(&downloads)).await;
    let before = listed(&bob.node(), &id);
    assert!(before.done >= quarter, "what was written before the restart is kept");

    // The sender stops past the half, and comes back.
    let half = len as u64 / 2;
    wait_until(&bob.node(), &id, |t| t.done >= half).await;
    alice.shutdown().await;
    let resumed_at = listed(&bob.node(), &id).done;
    let alice = user(&net, "alice", &relay_addr, None).await;
    let resumed = listed(&alice.node(), &id);
    // The sender remembers what was acknowledged: all that Bob had written, but for the chunk
    // whose acknowledgement the shutdown may have cut off.
    assert!(resumed.done + FILE_CHUNK_LEN as u64 >= resumed_at, "{} < {resumed_at}", resumed.done);
    assert!(resumed.done + FILE_CHUNK_LEN as u64 >= half);

    let got = wait_until(&bob.node(), &id, |t| t.state == FileState::Received).await;
    let saved = PathBuf::from(got.path.expect("saved"));
    assert_eq!(saved, downloads.join("dump.bin"));
    assert!(std::fs::read(&saved).expect("the saved file") == bytes, "the file arrived changed");
    let sent = wait_until(&alice.node(), &id, |t| t.state == FileState::Delivered).await;
    // Only what was in flight at each drop went twice: at most one chunk per restart, seen
    // from either side.
    assert!(sent.repeats <= 2, "the sender sent {} chunks again", sent.repeats);
    assert!(got.repeats <= 2, "the recipient got {} chunks again", got.repeats);
    assert_eq!(got.chunks, count);

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_waits_for_an_offline_recipient_and_fails_visibly_if_it_changes_meanwhile() {
    let net = Net::new();
    let (relay, relay_addr) = net.relay("relay").await;
    let alice = user(&net, "alice", &relay_addr, None).await;
    let bob = user(&net, "bob", &relay_addr, None).await;
    introduce(&alice.node(), "alice", &bob.node(), "bob").await;
    bob.shutdown().await;
    let files = tempfile::tempdir().expect("tempdir");
    let (path, _) = write_file(files.path(), "draft.odt", 3 * FILE_CHUNK_LEN);

    // Bob is away: the first attempt fails, the file stays queued with the reason, and
    // nothing of it is left in a mailbox.
    let started = alice.node().send_file("bob", &path).await.expect("send_file");
    let waiting = wait_until(&alice.node(), &started.id, |t| t.detail.is_some()).await;
    assert_eq!(waiting.state, FileState::Queued);
    assert_eq!(waiting.done, 0);

    // The file is cut short before Bob is back: the transfer fails with a reason that says so,
    // rather than sending what would not match its hash.
    std::fs::write(&path, b"a much shorter draft").expect("rewritten");
    let bob = user(&net, "bob", &relay_addr, None).await;
    let failed = wait_until(&alice.node(), &started.id, |t| t.state == FileState::Failed).await;
    let detail = failed.detail.expect("a reason");
    assert!(detail.contains("changed since it was sent"), "{detail}");
    // Bob's node never took an offer for it.
    assert!(bob.node().files(100).expect("files").iter().all(|t| t.id != started.id));

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
}
