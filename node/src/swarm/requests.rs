//! The swarm task's side of the two request-response protocols: envelopes in and out
//! (`/kolokol/msg/1`, [`EventLoop::on_delivery`]) and mailbox frames of either version
//! ([`EventLoop::on_mailbox`]). Inbound requests are admitted, then queued for the node's
//! tasks in bounded channels (busy when full); outbound ones are matched to their callers.

use libp2p::kad;
use libp2p::request_response;
use tokio::sync::mpsc;

use crate::config::Role;
use crate::swarm::admission::Ask;
use crate::swarm::dialer::{failure, short_peer};
use crate::swarm::event_loop::{EventLoop, MailboxVersion, PendingDelivery};
use crate::swarm::{DeliveryFailure, Inbound, MailboxFailure, MailboxInbound, one_line};
use crate::wire::delivery::Ack;
use crate::wire::mailbox as mailbox_wire;

impl EventLoop {
    pub(super) fn on_delivery(&mut self, event: request_response::Event<Vec<u8>, Ack>) {
        match event {
            request_response::Event::Message { message, peer, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    if let Err(refusal) = self.admission.admit(&peer, Ask::Delivery) {
                        // Busy, not rejected: the sender's node tries again after the window.
                        tracing::debug!(%peer, %refusal, "refused a delivery");
                        let _ =
                            self.swarm.behaviour_mut().delivery.send_response(channel, Ack::Busy);
                        return;
                    }
                    let queue = usize::from(self.admission.is_contact(&peer));
                    match self.inbound[queue].try_send(Inbound { peer, envelope: request, channel })
                    {
                        Ok(()) => {}
                        Err(
                            mpsc::error::TrySendError::Full(i)
                            | mpsc::error::TrySendError::Closed(i),
                        ) => {
                            tracing::debug!(%peer, "inbound queue full; answering busy");
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .delivery
                                .send_response(i.channel, Ack::Busy);
                        }
                    }
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(PendingDelivery { reply, .. }) = self.pending.remove(&request_id) {
                        let _ = reply.send(match response {
                            Ack::Accepted => Ok(()),
                            // Why it was refused is for the outbox to say: it knows what it
                            // sent (one envelope, or the chunks of a long message).
                            Ack::Rejected => Err(DeliveryFailure::refused()),
                            // One byte answers every "not now": a full queue, the quota
                            // of what we may leave there, and a stranger's file waiting to
                            // be accepted, which a new user took for a busy node.
                            Ack::Busy => Err(DeliveryFailure::temporary(
                                "the recipient's node has not taken it yet (busy, at its limit                                  for you, or, for a file, waiting for them to accept you)",
                            )),
                        });
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, peer, .. } => {
                if let Some(PendingDelivery { reply, .. }) = self.pending.remove(&request_id) {
                    tracing::debug!(%peer, error = %one_line(&error), "delivery failed");
                    let reason = format!(
                        "cannot reach {}: {}",
                        short_peer(&peer),
                        failure::of_request(&error).text()
                    );
                    // The stream died with its connection (or was reset): another connection,
                    // or a new one, may carry it at once.
                    let failure = match error {
                        request_response::OutboundFailure::ConnectionClosed
                        | request_response::OutboundFailure::Io(_) => {
                            DeliveryFailure::interrupted(reason)
                        }
                        _ => DeliveryFailure::temporary(reason),
                    };
                    let _ = reply.send(Err(failure));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound delivery failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// A mailbox event of either version; `wrap` tags an inbound request with its version. The
    /// answer goes back through whichever behaviour: a response channel is the stream's own.
    pub(super) fn on_mailbox<R>(
        &mut self,
        version: MailboxVersion,
        event: request_response::Event<R, kolokol_protocol::mailbox::Response>,
        wrap: fn(R) -> mailbox_wire::MailboxRequest,
    ) {
        use kolokol_protocol::mailbox::Response;
        match event {
            request_response::Event::Message { peer, connection_id, message } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    // Only DHT servers are replicas: a depositor found us as one of the servers
                    // closest to the mailbox id, and a client would not be found again. A user
                    // node relaying for its contacts also keeps their mailboxes, for them alone:
                    // they deposit there what no replica took, and fetch what waits for them.
                    let for_contact = self.role == Role::Node
                        && self.swarm.behaviour().relay_server.is_enabled()
                        && self.admission.is_contact(&peer);
                    if self.swarm.behaviour_mut().kad.mode() != kad::Mode::Server && !for_contact {
                        let refused = Response::Refused { reason: "not a mailbox replica".into() };
                        let _ = self.swarm.behaviour_mut().mailbox.send_response(channel, refused);
                        return;
                    }
                    if let Err(refusal) = self.admission.admit(&peer, Ask::Mailbox) {
                        let refused = Response::Refused { reason: refusal.to_string() };
                        let _ = self.swarm.behaviour_mut().mailbox.send_response(channel, refused);
                        return;
                    }
                    if let Err(
                        mpsc::error::TrySendError::Full(i) | mpsc::error::TrySendError::Closed(i),
                    ) = self.mailbox_inbound.try_send(MailboxInbound {
                        peer,
                        source: self
                            .connections
                            .get(&connection_id)
                            .and_then(|c| crate::swarm::dht::address_group(&c.address)),
                        request: wrap(request),
                        channel,
                    }) {
                        let busy = Response::Refused { reason: "the replica is busy".into() };
                        let _ = self.swarm.behaviour_mut().mailbox.send_response(i.channel, busy);
                    }
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.mailbox_pending.remove(&(version, request_id)) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { request_id, error, peer, .. } => {
                if let Some(reply) = self.mailbox_pending.remove(&(version, request_id)) {
                    tracing::debug!(%peer, error = %one_line(&error), "mailbox request failed");
                    let reason = failure::of_request(&error).text().to_owned();
                    let _ = reply.send(Err(MailboxFailure::Unreachable { peer, reason }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound mailbox request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }
}
