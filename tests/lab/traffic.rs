//! Real message traffic between the lab's daemons, and what became of each message.
//!
//! Every message's text starts with a tag line, `lab <scenario> <class> <seq> <from>><to>`, so
//! that its arrival can be recognised in the recipient's events and inbox. `send` blocks in the
//! daemon until the first delivery attempt ends (up to about a minute when the path is cut), so
//! every send runs on a thread of its own, at most [`MAX_IN_FLIGHT`] per sender.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clock::now_ms;
use crate::daemon::{Daemon, Endpoint};

/// The most `send` calls in flight per sending daemon: below the 64 connections a daemon serves,
/// leaving room for the event subscription and status polls.
pub const MAX_IN_FLIGHT: usize = 40;

/// The most messages one scenario may send; a long run of T3 sends 1,000.
pub const MAX_MESSAGES: usize = 20_000;

/// One message the lab sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Msg {
    pub seq: u64,
    /// What the message measures: `protected`, `domestic`, `foreign`, `control`, ...
    pub class: String,
    pub from: String,
    pub to: String,
    pub bytes: usize,
    /// When the lab called `send` (wall clock, ms).
    pub sent_ms: u64,
    /// The message id `send` returned.
    pub id: Option<String>,
    /// The state `send` returned (`sent`, `stored`, `queued`, `failed`).
    pub send_state: Option<String>,
    /// The error of the `send` call itself, if it failed.
    pub send_error: Option<String>,
    /// When the recipient's daemon received it (its clock, ms).
    pub delivered_ms: Option<u64>,
    /// The sender's outbox state at the end of the scenario.
    pub final_state: Option<String>,
}

impl Msg {
    /// The tag line the text starts with.
    fn tag(scenario: &str, class: &str, seq: u64, from: &str, to: &str) -> String {
        format!("lab {scenario} {class} {seq} {from}>{to}")
    }
}

#[derive(Default)]
struct Inflight {
    count: Mutex<HashMap<String, usize>>,
    freed: Condvar,
}

/// The scenario's messages.
#[derive(Clone)]
pub struct Traffic {
    scenario: String,
    msgs: Arc<Mutex<Vec<Msg>>>,
    tags: Arc<Mutex<HashMap<String, usize>>>,
    inflight: Arc<Inflight>,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Traffic {
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            msgs: Arc::default(),
            tags: Arc::default(),
            inflight: Arc::default(),
            threads: Arc::default(),
        }
    }

    /// Sends a message of about `bytes` bytes from `from` to its contact `to` (named as the
    /// recipient daemon is) on a thread of its own, and returns its sequence number, or None when
    /// the scenario reached [`MAX_MESSAGES`].
    pub fn send(&self, from: &Endpoint, to: &str, class: &str, bytes: usize) -> Option<u64> {
        self.send_unless(from, to, class, bytes, &AtomicBool::new(false))
    }

    /// [`Traffic::send`], unless `cancel` was set while it waited for a free slot.
    pub fn send_unless(
        &self,
        from: &Endpoint,
        to: &str,
        class: &str,
        bytes: usize,
        cancel: &AtomicBool,
    ) -> Option<u64> {
        // Wait for a free slot: a sender whose path is cut has many sends blocked at once.
        {
            let mut count = self.inflight.count.lock().unwrap_or_else(|p| p.into_inner());
            while count.get(&from.name).copied().unwrap_or(0) >= MAX_IN_FLIGHT {
                count = self.inflight.freed.wait(count).unwrap_or_else(|p| p.into_inner());
            }
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            *count.entry(from.name.clone()).or_default() += 1;
        }
        let (seq, text) = {
            let mut msgs = self.msgs.lock().unwrap_or_else(|p| p.into_inner());
            if msgs.len() >= MAX_MESSAGES {
                self.release(&from.name);
                return None;
            }
            let seq = msgs.len() as u64;
            let tag = Msg::tag(&self.scenario, class, seq, &from.name, to);
            let mut text = tag.clone();
            if bytes > text.len() + 1 {
                text.push('\n');
                // Filler that compresses poorly would not matter (envelopes are padded), but
                // printable text is what users send.
                let filler = "the quick brown fox jumps over the lazy dog ";
                while text.len() < bytes {
                    let room = bytes - text.len();
                    text.push_str(&filler[..room.min(filler.len())]);
                }
            }
            self.tags.lock().unwrap_or_else(|p| p.into_inner()).insert(tag, seq as usize);
            msgs.push(Msg {
                seq,
                class: class.to_owned(),
                from: from.name.clone(),
                to: to.to_owned(),
                bytes: text.len(),
                sent_ms: now_ms(),
                id: None,
                send_state: None,
                send_error: None,
                delivered_ms: None,
                final_state: None,
            });
            (seq, text)
        };
        let this = self.clone();
        let endpoint = from.clone();
        let to = to.to_owned();
        let handle = std::thread::spawn(move || {
            let result = endpoint.call("send", json!({"to": to, "text": text}));
            {
                let mut msgs = this.msgs.lock().unwrap_or_else(|p| p.into_inner());
                let m = &mut msgs[seq as usize];
                match result {
                    Ok(v) => {
                        m.id = v["id"].as_str().map(str::to_owned);
                        m.send_state = v["state"].as_str().map(str::to_owned);
                    }
                    Err(e) => m.send_error = Some(format!("{e:#}")),
                }
            }
            this.release(&endpoint.name);
        });
        self.threads.lock().unwrap_or_else(|p| p.into_inner()).push(handle);
        Some(seq)
    }

    fn release(&self, name: &str) {
        let mut count = self.inflight.count.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = count.get_mut(name) {
            *c = c.saturating_sub(1);
        }
        self.inflight.freed.notify_all();
    }

    /// Marks the messages whose tag is among `arrivals` delivered (first arrival wins).
    pub fn record_arrivals(&self, arrivals: &[crate::daemon::Arrival]) {
        // Always `msgs` before `tags`, as in `send`: the other order deadlocks against it.
        let mut msgs = self.msgs.lock().unwrap_or_else(|p| p.into_inner());
        let tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
        for a in arrivals {
            if let Some(&i) = tags.get(&a.head) {
                let m = &mut msgs[i];
                if m.delivered_ms.is_none_or(|d| a.received_at_ms < d) && a.received_at_ms > 0 {
                    m.delivered_ms = Some(a.received_at_ms);
                }
            }
        }
    }

    /// Collects arrivals from every daemon's event subscription.
    pub fn collect(&self, daemons: &BTreeMap<String, Daemon>) {
        for d in daemons.values() {
            self.record_arrivals(&d.arrivals());
        }
    }

    /// Whether every message of `classes` sent so far has arrived.
    pub fn all_delivered(&self, classes: &[&str]) -> bool {
        self.snapshot()
            .iter()
            .filter(|m| classes.contains(&m.class.as_str()))
            .all(|m| m.delivered_ms.is_some())
    }

    /// A copy of every message so far.
    pub fn snapshot(&self) -> Vec<Msg> {
        self.msgs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// At the end: reads every recipient's inbox (events may have been missed across a restart)
    /// and every sender's outbox (to tell messages still queued from messages the node gave up
    /// on), after waiting for the sends still in flight.
    pub fn reconcile(&self, daemons: &BTreeMap<String, Daemon>) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
        self.collect(daemons);
        for d in daemons.values() {
            if let Ok(heads) = d.inbox_heads() {
                self.record_arrivals(&heads);
            }
        }
        // Each sent message's state in its sender's outbox, found by its tag line: a `send` call
        // that timed out in the lab (a large message's first attempt can outlast it) still
        // committed the message, and the outbox has its id.
        let mut by_tag: HashMap<String, (String, String)> = HashMap::new();
        for d in daemons.values() {
            if let Ok(outbox) = d.call("outbox", json!({"limit": 10000}))
                && let Some(list) = outbox.as_array()
            {
                for m in list {
                    if let (Some(id), Some(state), Some(text)) =
                        (m["id"].as_str(), m["state"].as_str(), m["text"].as_str())
                    {
                        let tag = text.split('\n').next().unwrap_or_default().to_owned();
                        by_tag.insert(tag, (id.to_owned(), state.to_owned()));
                    }
                }
            }
        }
        let mut msgs = self.msgs.lock().unwrap_or_else(|p| p.into_inner());
        for m in msgs.iter_mut() {
            let tag = Msg::tag(&self.scenario, &m.class, m.seq, &m.from, &m.to);
            if let Some((id, state)) = by_tag.get(&tag) {
                m.id.get_or_insert_with(|| id.clone());
                m.final_state = Some(state.clone());
            }
        }
    }
}

/// A background sender: sends one message per `interval` for each pair in turn, until stopped.
pub struct Stream {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Stream {
    /// Starts sending. `pairs` are (sender endpoint, recipient name, class, bytes).
    pub fn start(
        traffic: &Traffic,
        pairs: Vec<(Endpoint, String, String, usize)>,
        interval: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let traffic = traffic.clone();
        let handle = std::thread::spawn(move || {
            let mut next = std::time::Instant::now();
            'outer: loop {
                for (from, to, class, bytes) in &pairs {
                    if flag.load(Ordering::Relaxed) {
                        break 'outer;
                    }
                    if traffic.send_unless(from, to, class, *bytes, &flag).is_none() {
                        break 'outer;
                    }
                    // Pacing a load generator, not synchronising: the schedule slips when the
                    // sender is at its in-flight limit, which the send times record.
                    next += interval;
                    let now = std::time::Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                }
            }
        });
        Self { stop, handle: Some(handle) }
    }

    /// Stops sending (the messages already sent go on). The thread may still wait for a free
    /// slot for a while, but sends nothing more.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.handle.take());
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What became of the messages of one class sent in a time window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Delivery {
    pub label: String,
    pub sent: usize,
    /// Arrived within the deadline after being sent.
    pub on_time: usize,
    /// Arrived at all by the end of the scenario.
    pub arrived: usize,
    /// Not arrived, but still queued or stored by the sender: not lost, not delivered.
    pub pending: usize,
    /// Given up by the sender (`failed`), or acknowledged but never in the recipient's inbox,
    /// or whose `send` call failed.
    pub lost: usize,
    pub deadline_s: f64,
    /// Median and 95th percentile of the delivery latency of the messages that arrived (s).
    pub p50_s: Option<f64>,
    pub p95_s: Option<f64>,
}

impl Delivery {
    /// The fraction delivered on time, 0 when nothing was sent.
    pub fn ratio(&self) -> f64 {
        if self.sent == 0 { 0.0 } else { self.on_time as f64 / self.sent as f64 }
    }

    /// Sums up `msgs` of `classes` sent in `[from_ms, to_ms)`.
    pub fn of(
        label: &str,
        msgs: &[Msg],
        classes: &[&str],
        from_ms: u64,
        to_ms: u64,
        deadline: Duration,
    ) -> Self {
        let chosen: Vec<&Msg> = msgs
            .iter()
            .filter(|m| {
                classes.contains(&m.class.as_str()) && m.sent_ms >= from_ms && m.sent_ms < to_ms
            })
            .collect();
        let deadline_ms = deadline.as_millis() as u64;
        let mut latencies: Vec<u64> = chosen
            .iter()
            .filter_map(|m| m.delivered_ms.map(|d| d.saturating_sub(m.sent_ms)))
            .collect();
        latencies.sort_unstable();
        let pct = |p: f64| -> Option<f64> {
            if latencies.is_empty() {
                return None;
            }
            let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
            Some((latencies[i] as f64 / 100.0).round() / 10.0)
        };
        // A `send` call that failed lost the message only if it never reached the outbox.
        let lost = chosen
            .iter()
            .filter(|m| {
                m.delivered_ms.is_none()
                    && match m.final_state.as_deref() {
                        Some(state) => matches!(state, "failed" | "delivered" | "read"),
                        None => m.send_error.is_some(),
                    }
            })
            .count();
        Self {
            label: label.to_owned(),
            sent: chosen.len(),
            on_time: chosen
                .iter()
                .filter(|m| {
                    m.delivered_ms.is_some_and(|d| d.saturating_sub(m.sent_ms) <= deadline_ms)
                })
                .count(),
            arrived: chosen.iter().filter(|m| m.delivered_ms.is_some()).count(),
            pending: chosen.iter().filter(|m| m.delivered_ms.is_none()).count() - lost,
            lost,
            deadline_s: deadline.as_secs_f64(),
            p50_s: pct(0.5),
            p95_s: pct(0.95),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64, class: &str, sent: u64, delivered: Option<u64>, state: Option<&str>) -> Msg {
        Msg {
            seq,
            class: class.into(),
            from: "a".into(),
            to: "b".into(),
            bytes: 10,
            sent_ms: sent,
            id: Some(format!("{seq}")),
            send_state: None,
            send_error: None,
            delivered_ms: delivered,
            final_state: state.map(str::to_owned),
        }
    }

    #[test]
    fn delivery_counts_on_time_late_pending_and_lost() {
        let msgs = vec![
            msg(0, "p", 1_000, Some(1_500), Some("delivered")),
            msg(1, "p", 2_000, Some(40_000), Some("delivered")),
            msg(2, "p", 3_000, None, Some("queued")),
            msg(3, "p", 4_000, None, Some("failed")),
            msg(4, "c", 4_000, None, Some("queued")),
            msg(5, "p", 99_000, None, Some("queued")),
        ];
        let d = Delivery::of("x", &msgs, &["p"], 0, 50_000, Duration::from_secs(30));
        assert_eq!((d.sent, d.on_time, d.arrived, d.pending, d.lost), (4, 1, 2, 1, 1));
        assert_eq!(d.ratio(), 0.25);
        assert_eq!(d.p50_s, Some(0.5));
        assert_eq!(d.p95_s, Some(38.0));
    }
}
