//! Couriers: short-lived libp2p swarms, each under a fresh identity, that carry version 2
//! mailbox requests to replicas, so that a replica does not learn the node's peer id from the
//! connection a deposit or a fetch comes over (`docs/PROTOCOL.md` 11.7).
//!
//! A courier has only a transport (the main swarm's, so it dials what the main swarm can) and
//! `/kolokol/mailbox/2` as a client: no identify, Kademlia, ping, relay or mDNS, so it announces
//! nothing and serves nothing. Its own task owns its swarm; the [`Courier`] handle sends it
//! requests, and the task ends when the last handle is dropped. The replicas' addresses come
//! from the main swarm's lookup of the mailbox id, which names the id, not whose it is.

use std::collections::HashMap;

use futures::StreamExt;
use kolokol_protocol::mailbox::{RequestV2, Response};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, SwarmBuilder};
use tokio::sync::{mpsc, oneshot};

use crate::config::Policy;
use crate::error::{Error, Result};
use crate::swarm::{MailboxFailure, one_line};
use crate::wire::mailbox as mailbox_wire;

/// Requests waiting for a courier's task; senders wait when it is full.
pub const COURIER_QUEUE_LEN: usize = 64;

/// A courier holds no connection open for longer than this without a request on it.
pub const COURIER_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How a courier reaches replicas: the main swarm's transport choice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route {
    /// The transports the main swarm uses.
    pub(crate) policy: Policy,
    /// The in-memory transport of tests instead of the network.
    pub(crate) in_memory: bool,
}

/// One request for a courier, and where its answer goes.
struct Errand {
    peer: PeerId,
    addresses: Vec<Multiaddr>,
    request: RequestV2,
    reply: oneshot::Sender<std::result::Result<Response, MailboxFailure>>,
}

/// A handle to a courier: a swarm under an identity of its own, used for one deposit batch or
/// one fetch pass and then dropped.
#[derive(Clone)]
pub(crate) struct Courier {
    errands: mpsc::Sender<Errand>,
}

impl Courier {
    /// Whether two handles reach the same courier (the same swarm, under the same identity).
    #[cfg(test)]
    pub(crate) fn same(&self, other: &Courier) -> bool {
        self.errands.same_channel(&other.errands)
    }

    /// Starts a courier under a fresh Ed25519 identity, never the node's.
    pub(crate) fn start(route: Route) -> Result<Self> {
        let keypair = libp2p::identity::Keypair::generate_ed25519();
        let net = |e: &dyn std::fmt::Display| Error::Network(e.to_string());
        let swarm = SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_other_transport(|key| {
                // A cool-down of its own: what the main swarm's dials learned is not shared,
                // so nothing links the courier's dials to the node's.
                let shared = crate::transport::cooldown::Shared::default();
                if route.in_memory {
                    return crate::transport::memory(key, shared, Default::default());
                }
                crate::transport::build(key, route.policy, None, shared, Default::default())
            })
            .map_err(|e| net(&e))?
            .with_behaviour(|_| {
                request_response::Behaviour::<mailbox_wire::Codec<RequestV2>>::new(
                    [(mailbox_wire::PROTOCOL_NAME_V2, ProtocolSupport::Outbound)],
                    request_response::Config::default()
                        .with_request_timeout(mailbox_wire::REQUEST_TIMEOUT)
                        .with_max_concurrent_streams(mailbox_wire::MAX_STREAMS),
                )
            })
            .map_err(|e| net(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(COURIER_IDLE_TIMEOUT))
            .build();
        let (errands, queue) = mpsc::channel(COURIER_QUEUE_LEN);
        tokio::spawn(run(swarm, queue));
        Ok(Self { errands })
    }

    /// Sends one request to a replica, dialing `addresses` if not connected, and waits for its
    /// answer.
    pub(crate) async fn request(
        &self,
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        request: RequestV2,
    ) -> std::result::Result<Response, MailboxFailure> {
        let (reply, answer) = oneshot::channel();
        let errand = Errand { peer, addresses, request, reply };
        if self.errands.send(errand).await.is_err() {
            return Err(MailboxFailure::ShuttingDown);
        }
        answer.await.unwrap_or(Err(MailboxFailure::ShuttingDown))
    }
}

/// The courier's task: sends each errand, hands each answer back, and ends once every handle is
/// gone and nothing is in flight.
async fn run(
    mut swarm: libp2p::Swarm<request_response::Behaviour<mailbox_wire::Codec<RequestV2>>>,
    mut queue: mpsc::Receiver<Errand>,
) {
    type Reply = oneshot::Sender<std::result::Result<Response, MailboxFailure>>;
    // At most MAX_PENDING_REQUESTS: past it, new errands fail at once.
    let mut pending: HashMap<OutboundRequestId, Reply> = HashMap::new();
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            errand = queue.recv(), if open => match errand {
                Some(Errand { peer, addresses, request, reply }) => {
                    if pending.len() >= mailbox_wire::MAX_PENDING_REQUESTS {
                        let _ = reply.send(Err(MailboxFailure::TooManyInFlight));
                        continue;
                    }
                    let id =
                        swarm.behaviour_mut().send_request_with_addresses(&peer, request, addresses);
                    pending.insert(id, reply);
                }
                None => open = false,
            },
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, response },
                    ..
                }) => {
                    if let Some(reply) = pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure {
                    request_id,
                    peer,
                    error,
                    ..
                }) => {
                    if let Some(reply) = pending.remove(&request_id) {
                        tracing::debug!(%peer, error = %one_line(&error), "courier request failed");
                        let reason = crate::swarm::dialer::failure::of_request(&error).text().to_owned();
                        let _ = reply.send(Err(MailboxFailure::Unreachable { peer, reason }));
                    }
                }
                _ => {}
            },
        }
    }
}
