//! End-to-end tests of Kolokol: real nodes (real libp2p swarms on 127.0.0.1, real SQLite files
//! in temporary directories, real control sockets), driven through the same API the daemon
//! serves. [`support`] is the harness; each scenario is a sibling module, and all of them build
//! into this one test binary.
//!
//! Tests wait for events with a timeout and never sleep to synchronise; they assert what
//! happened, never how fast.

pub mod scale;
pub mod support;
pub mod sybil;
pub mod tls_hello;

#[cfg(test)]
mod chunking;
#[cfg(test)]
mod contact_relay;
#[cfg(test)]
mod control_socket;
#[cfg(test)]
mod dht_back;
#[cfg(test)]
mod discovery;
#[cfg(test)]
mod files;
#[cfg(test)]
mod first_contact;
#[cfg(test)]
mod groups;
#[cfg(test)]
mod hole_punch;
#[cfg(test)]
mod key_schedule;
#[cfg(test)]
mod late_dials;
#[cfg(test)]
mod mailbox;
#[cfg(test)]
mod outbox_restart;
#[cfg(test)]
mod read_receipts;
#[cfg(test)]
mod rekey;
#[cfg(test)]
mod relay_delivery;
#[cfg(test)]
mod relay_limits;
#[cfg(test)]
mod standard_relay;
#[cfg(test)]
mod stealth_probes;
#[cfg(test)]
mod strangers;
#[cfg(test)]
mod timers;
#[cfg(test)]
mod volume_freeze;
