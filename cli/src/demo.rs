//! `kolokol demo`: a community relay and two users, Alice and Bob, on 127.0.0.1 in this
//! process. The users know only the relay's address and listen on nothing else, so every
//! message goes through the relay. They swap invites, send messages both ways, and wait for
//! the end-to-end receipts. Then the store-and-forward leg: Bob goes offline, Alice's message
//! is deposited in Bob's mailbox on the relay (the relay is the demo's only DHT server, so it is
//! stored on 1 of 1 replicas; with three or more servers a deposit needs 2 of the 3 closest),
//! Bob comes back from the same data directory, fetches it, and Alice gets the receipt. Exit 0
//! only if every message arrived, decrypted, and was receipted.
//!
//! mDNS is off for every node here: they all run on 127.0.0.1 in one process, and announcing
//! them on the user's LAN would tell the neighbours about nodes nobody there can use.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use kolokol_node::{Config, Multiaddr, Node, Role, RunningNode};
use kolokol_protocol::control::Event;
use tokio::sync::broadcast;

/// How long any one step may take before the demo gives up.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Removes the demo's data directories however the demo ends.
struct TempDirs(PathBuf);

impl Drop for TempDirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the demo, printing each step.
pub async fn run(json: bool) -> anyhow::Result<ExitCode> {
    let root = std::env::temp_dir().join(format!("kolokol-demo-{}", std::process::id()));
    let _cleanup = TempDirs(root.clone());
    // Returns the write error, so a reader that went away (`kolokol demo | head -1`) ends the
    // demo cleanly (its temporary directories removed) instead of panicking.
    let step = |text: &str| -> std::io::Result<()> {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", serde_json::json!({ "step": text }))
        } else {
            writeln!(out, "• {text}")
        }
    };

    let mut relay_config = Config::new(root.join("relay"), Role::Relay);
    relay_config.mdns = false;
    relay_config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    let relay = RunningNode::start(relay_config).await.context("starting the relay")?;
    let net = relay
        .node()
        .wait_for_net(STEP_TIMEOUT, |s| !s.external.is_empty())
        .await
        .context("the relay did not start listening")?;
    let relay_addr: Multiaddr =
        format!("{}/p2p/{}", net.external[0], relay.node().peer_id()).parse()?;
    step(&format!("relay listening at {relay_addr}"))?;

    let alice = start_user(&root, "alice", &relay_addr).await?;
    let bob = start_user(&root, "bob", &relay_addr).await?;
    for (name, user) in [("alice", &alice), ("bob", &bob)] {
        let net = user
            .node()
            .wait_for_net(STEP_TIMEOUT, |s| !s.reservations.is_empty())
            .await
            .with_context(|| format!("{name} got no relay reservation"))?;
        step(&format!(
            "{name} ({}) is reachable only through the relay: {}",
            user.node().peer_id(),
            net.reservations[0].1
        ))?;
    }

    let alice_invite = alice.node().invite().await?.invite;
    let bob_invite = bob.node().invite().await?.invite;
    bob.node().add_contact("alice", &alice_invite).await?;
    alice.node().add_contact("bob", &bob_invite).await?;
    step("alice and bob exchanged invite codes and added each other")?;

    let mut ok = true;
    ok &= exchange(
        &alice.node(),
        "alice",
        &bob.node(),
        "bob",
        "Hello Bob, this went through the relay, end-to-end encrypted.",
        &step,
    )
    .await?;
    ok &= exchange(
        &bob.node(),
        "bob",
        &alice.node(),
        "alice",
        "Hi Alice! Got it. The relay only saw ciphertext.",
        &step,
    )
    .await?;

    ok &= store_and_forward(&root, &relay_addr, &alice.node(), bob, &step).await?;

    for n in [alice, relay] {
        n.shutdown().await;
    }
    if ok {
        step("every message arrived, decrypted, and was receipted")?;
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("some messages did not arrive")
    }
}

async fn start_user(root: &Path, name: &str, relay: &Multiaddr) -> anyhow::Result<RunningNode> {
    let mut config = Config::new(root.join(name), Role::Node);
    // Off already in `Config::new`; said here so that no change of default can make the demo
    // announce its loopback nodes on the LAN.
    config.mdns = false;
    config.bootstrap = vec![relay.clone()];
    RunningNode::start(config).await.with_context(|| format!("starting {name}"))
}

/// Takes Bob offline, has Alice send to him (the message waits in his mailbox on the relay),
/// brings Bob back from the same data directory, and waits for the message and its receipt.
async fn store_and_forward(
    root: &Path,
    relay: &Multiaddr,
    alice: &Node,
    bob: RunningNode,
    step: &impl Fn(&str) -> std::io::Result<()>,
) -> anyhow::Result<bool> {
    bob.shutdown().await;
    step("bob went offline")?;
    let mut alice_events = alice.subscribe();
    let text = "Bob, this waited for you in your mailbox.";
    let sent = alice.send("bob", text).await?;
    step(&format!(
        "alice → bob: message {} {} ({})",
        sent.id,
        sent.state,
        sent.detail.as_deref().unwrap_or("no detail")
    ))?;
    if sent.state != "stored" {
        step("the message was not stored in bob's mailbox")?;
        return Ok(false);
    }
    let bob = start_user(root, "bob", relay).await?;
    let mut bob_events = bob.node().subscribe();
    step("bob came back (same data directory) and fetches his mailbox")?;
    let arrived = wait(&mut bob_events, |e| match e {
        Event::Message(m) if m.id == sent.id => Some(m.text.clone()),
        _ => None,
    })
    .await;
    let ok = match arrived {
        Some(got) => {
            step(&format!("bob received and decrypted: {got:?}"))?;
            let delivered = wait(&mut alice_events, |e| match e {
                Event::State(s) if s.id == sent.id && s.state == "delivered" => Some(()),
                _ => None,
            })
            .await;
            if delivered.is_some() {
                step("alice got bob's end-to-end receipt: delivered")?;
                let id = kolokol_protocol::message::parse_id(&sent.id).context("message id")?;
                let states: Vec<&str> =
                    alice.history(&id)?.into_iter().map(|h| h.0.as_str()).collect();
                step(&format!("alice's message went {}", states.join(" → ")))?;
            } else {
                step(&format!("alice got no delivery receipt within {STEP_TIMEOUT:?}"))?;
            }
            delivered.is_some() && got == text
        }
        None => {
            step(&format!("bob did not receive the message within {STEP_TIMEOUT:?}"))?;
            false
        }
    };
    bob.shutdown().await;
    Ok(ok)
}

/// Sends `text` from one user to another and waits for it to arrive and for the receipt.
async fn exchange(
    from: &Node,
    from_name: &str,
    to: &Node,
    to_name: &str,
    text: &str,
    step: &impl Fn(&str) -> std::io::Result<()>,
) -> anyhow::Result<bool> {
    let mut sender_events = from.subscribe();
    let mut receiver_events = to.subscribe();
    let sent = from.send(to_name, text).await?;
    step(&format!("{from_name} → {to_name}: message {} {}", sent.id, sent.state))?;
    let arrived = wait(&mut receiver_events, |e| match e {
        Event::Message(m) if m.id == sent.id => Some(m.text.clone()),
        _ => None,
    })
    .await;
    let Some(got) = arrived else {
        step(&format!("{to_name} did not receive the message within {STEP_TIMEOUT:?}"))?;
        return Ok(false);
    };
    step(&format!("{to_name} received and decrypted: {got:?}"))?;
    let delivered = wait(&mut sender_events, |e| match e {
        Event::State(s) if s.id == sent.id && s.state == "delivered" => Some(()),
        _ => None,
    })
    .await;
    if delivered.is_none() {
        step(&format!("{from_name} got no delivery receipt within {STEP_TIMEOUT:?}"))?;
        return Ok(false);
    }
    step(&format!("{from_name} got {to_name}'s end-to-end receipt: delivered"))?;
    Ok(got == text)
}

async fn wait<T>(
    events: &mut broadcast::Receiver<Event>,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> Option<T> {
    tokio::time::timeout(STEP_TIMEOUT, async {
        loop {
            match events.recv().await {
                Ok(e) => {
                    if let Some(v) = pick(&e) {
                        return Some(v);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}
