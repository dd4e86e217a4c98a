//! Sending the sealed parts of one outbox item to its recipient: only the parts the recipient
//! has not acknowledged, each with a time limit that grows with its size and the goodput
//! measured on the path, large ones one at a time per peer so that short messages are never
//! stuck behind them.
//!
//! The parts are the item's sealed envelopes as the store keeps them (`store/parts.rs`): sealed
//! once, sent as many times as it takes, each acknowledged part recorded as it is, so a retry
//! sends only the rest and burns no receive key. Anything that has an outbox id and sealed
//! envelopes can go this way: a message and its chunks. A file's chunks are sealed one at a
//! time instead, when it is their turn (`outbox/files.rs`), but take the same bulk lane and time
//! limits here.
//!
//! [`Paths`] is what the outbox knows of the path to each peer: the goodput of its last large
//! envelopes, the bulk lane, and whether it said the path looks throttled (once, not at every
//! retry).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::swarm::behaviour::{DELIVERY_TIMEOUT, MAX_DELIVERY_TIMEOUT};

/// The goodput assumed on a path before one was measured, in bytes per second (32 kbit/s):
/// low, so a first large envelope on a slow path is not given up too soon.
pub const MIN_GOODPUT: f64 = 4.0 * 1024.0;

/// How many times the expected transfer time a delivery is given, on top of
/// [`DELIVERY_TIMEOUT`]: loss and queues make a slow path slower still now and then.
pub const TIMEOUT_MARGIN: f64 = 3.0;

/// Envelopes larger than this (the two large buckets) take the bulk lane: at most one of them
/// is in flight to a peer at a time, so a short message waits behind at most one.
pub const BULK_ENVELOPE: usize = 16 * 1024;

/// Below this goodput (256 kbit/s), measured on a large envelope, the path looks throttled,
/// and the node says so once.
pub const THROTTLED_GOODPUT: f64 = 32.0 * 1024.0;

/// Peers whose path the outbox remembers; past this the map is emptied.
pub const MAX_TRACKED_PATHS: usize = 1024;

/// How fast the goodput estimate follows a new measurement: the weight of the newest.
const GOODPUT_WEIGHT: f64 = 0.5;

/// What the outbox knows of the path to one peer.
struct Path {
    /// Bytes per second measured on large envelopes, smoothed; `None` before the first.
    goodput: Option<f64>,
    /// The bulk lane: one permit.
    lane: Arc<Semaphore>,
    /// Whether the node said this path looks throttled (and has not seen it recover since).
    said_throttled: bool,
}

/// The paths to every peer the outbox sends to, bounded by [`MAX_TRACKED_PATHS`].
#[derive(Default)]
pub(crate) struct Paths(Mutex<HashMap<PeerId, Path>>);

impl Paths {
    fn with<T>(&self, peer: &PeerId, f: impl FnOnce(&mut Path) -> T) -> T {
        let mut paths = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !paths.contains_key(peer) && paths.len() >= MAX_TRACKED_PATHS {
            // Lanes in use keep working: their holders hold the semaphore, not the map.
            paths.clear();
        }
        let path = paths.entry(*peer).or_insert_with(|| Path {
            goodput: None,
            lane: Arc::new(Semaphore::new(1)),
            said_throttled: false,
        });
        f(path)
    }

    /// The time a delivery of `len` bytes to `peer` may take once it went out.
    pub(crate) fn timeout(&self, peer: &PeerId, len: usize) -> Duration {
        delivery_timeout(len, self.with(peer, |p| p.goodput))
    }

    /// The bulk lane to `peer`, for an envelope of `len` bytes: `None` for a small one, which
    /// needs no lane.
    pub(crate) fn lane(&self, peer: &PeerId, len: usize) -> Option<Arc<Semaphore>> {
        (len > BULK_ENVELOPE).then(|| self.with(peer, |p| p.lane.clone()))
    }

    /// Takes the time an envelope of `len` bytes took from going out to its acknowledgement
    /// into the estimate (large envelopes only: a small one measures the round trip, not the
    /// goodput). Returns the measured goodput when the path first looks throttled, for the one
    /// log line.
    pub(crate) fn measured(&self, peer: &PeerId, len: usize, took: Duration) -> Option<f64> {
        if len <= BULK_ENVELOPE {
            return None;
        }
        let sample = len as f64 / took.as_secs_f64().max(0.001);
        self.with(peer, |p| {
            let goodput = match p.goodput {
                Some(old) => old * (1.0 - GOODPUT_WEIGHT) + sample * GOODPUT_WEIGHT,
                None => sample,
            };
            p.goodput = Some(goodput);
            if goodput < THROTTLED_GOODPUT && !p.said_throttled {
                p.said_throttled = true;
                return Some(goodput);
            }
            if goodput > 2.0 * THROTTLED_GOODPUT {
                p.said_throttled = false;
            }
            None
        })
    }

    /// The goodput measured to `peer`, if any.
    #[cfg(test)]
    pub(crate) fn goodput(&self, peer: &PeerId) -> Option<f64> {
        self.with(peer, |p| p.goodput)
    }
}

/// The time a delivery of `len` bytes may take once it went out, on a path whose goodput is
/// `goodput` bytes per second (unknown: [`MIN_GOODPUT`]): [`DELIVERY_TIMEOUT`] plus
/// [`TIMEOUT_MARGIN`] times the transfer time, at most [`MAX_DELIVERY_TIMEOUT`]. A short
/// envelope gets about the base; a 64 KiB chunk on an unmeasured path about a minute, on a
/// measured 130 kbit/s one about 22 s.
pub fn delivery_timeout(len: usize, goodput: Option<f64>) -> Duration {
    let rate = goodput.unwrap_or(MIN_GOODPUT).max(MIN_GOODPUT);
    let transfer = Duration::from_secs_f64(TIMEOUT_MARGIN * len as f64 / rate);
    (DELIVERY_TIMEOUT + transfer).min(MAX_DELIVERY_TIMEOUT)
}

/// A stopwatch for one delivery, from the moment it may go out (its lane taken).
pub(crate) struct Stopwatch(Instant);

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Self(Instant::now())
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

#[cfg(test)]
mod tests;
