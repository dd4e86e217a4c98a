//! `kolokol demo`: a community relay and two users, Alice and Bob, on 127.0.0.1 in this
//! process. The users know only the relay's address and listen on nothing else, so every
//! message goes through the relay. They swap invites, send messages both ways, and wait for
//! the end-to-end receipts. Exit 0 only if every message arrived, decrypted, and was receipted.

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
    let step = |text: &str| {
        if json {
            println!("{}", serde_json::json!({ "step": text }));
        } else {
            println!("• {text}");
        }
    };

    let mut relay_config = Config::new(root.join("relay"), Role::Relay);
    relay_config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    let relay = RunningNode::start(relay_config).await.context("starting the relay")?;
    let net = relay
        .node()
        .wait_for_net(STEP_TIMEOUT, |s| !s.external.is_empty())
        .await
        .context("the relay did not start listening")?;
    let relay_addr: Multiaddr =
        format!("{}/p2p/{}", net.external[0], relay.node().peer_id()).parse()?;
    step(&format!("relay listening at {relay_addr}"));

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
        ));
    }

    let alice_invite = alice.node().invite().await?.invite;
    let bob_invite = bob.node().invite().await?.invite;
    bob.node().add_contact("alice", &alice_invite)?;
    alice.node().add_contact("bob", &bob_invite)?;
    step("alice and bob exchanged invite codes and added each other");

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

    for n in [alice, bob, relay] {
        n.shutdown().await;
    }
    if ok {
        step("every message arrived, decrypted, and was receipted");
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("some messages did not arrive")
    }
}

async fn start_user(root: &Path, name: &str, relay: &Multiaddr) -> anyhow::Result<RunningNode> {
    let mut config = Config::new(root.join(name), Role::Node);
    config.bootstrap = vec![relay.clone()];
    RunningNode::start(config).await.with_context(|| format!("starting {name}"))
}

/// Sends `text` from one user to another and waits for it to arrive and for the receipt.
async fn exchange(
    from: &Node,
    from_name: &str,
    to: &Node,
    to_name: &str,
    text: &str,
    step: &impl Fn(&str),
) -> anyhow::Result<bool> {
    let mut sender_events = from.subscribe();
    let mut receiver_events = to.subscribe();
    let sent = from.send(to_name, text).await?;
    step(&format!("{from_name} → {to_name}: message {} {}", sent.id, sent.state));
    let arrived = wait(&mut receiver_events, |e| match e {
        Event::Message(m) if m.id == sent.id => Some(m.text.clone()),
        _ => None,
    })
    .await;
    let Some(got) = arrived else {
        step(&format!("{to_name} did not receive the message within {STEP_TIMEOUT:?}"));
        return Ok(false);
    };
    step(&format!("{to_name} received and decrypted: {got:?}"));
    let delivered = wait(&mut sender_events, |e| match e {
        Event::State(s) if s.id == sent.id && s.state == "delivered" => Some(()),
        _ => None,
    })
    .await;
    if delivered.is_none() {
        step(&format!("{from_name} got no delivery receipt within {STEP_TIMEOUT:?}"));
        return Ok(false);
    }
    step(&format!("{from_name} got {to_name}'s end-to-end receipt: delivered"));
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
