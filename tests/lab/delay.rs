//! The border's delay line: a fixed delay added to every packet the censor's iptables rule hands
//! to NFQUEUE, for the throttling profile's 150 ms (T9).
//!
//! This kernel has no netem qdisc and no `fq` (which would honour departure times set by BPF),
//! but it has NFQUEUE behind iptables' `NFQUEUE` target: a packet waits in the kernel until a
//! userspace program gives its verdict. This helper accepts each packet `delay` after it was
//! queued, in arrival order, so the link keeps its ordering, loses nothing on its own, and every
//! packet crosses it `delay` later (to the millisecond this loop sleeps). A packet past
//! [`MAX_HELD`] is accepted at once rather than dropped, and the kernel drops what overflows its
//! own queue of [`KERNEL_QUEUE_LEN`], as a congested link would.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Packets held at once. At 130 kbit/s and 150 ms each way a few dozen are in flight; this bound
/// only keeps a flood from growing the buffer without limit.
pub const MAX_HELD: usize = 16_384;

/// The kernel's queue for packets not yet read by this helper.
pub const KERNEL_QUEUE_LEN: u32 = 4096;

/// How long the loop sleeps when nothing is due and nothing has arrived.
const IDLE: Duration = Duration::from_millis(1);

/// Holds every packet of queue `queue_num` for `delay`, forever. Prints `ready` once bound.
pub fn run(queue_num: u16, delay: Duration) -> anyhow::Result<()> {
    let mut queue = nfq::Queue::open()?;
    queue.bind(queue_num)?;
    queue.set_queue_max_len(queue_num, KERNEL_QUEUE_LEN)?;
    // Only the verdict matters; the packet's bytes need not be copied up.
    queue.set_copy_range(queue_num, 64)?;
    queue.set_nonblocking(true);
    println!("ready");
    let mut held: VecDeque<(Instant, nfq::Message)> = VecDeque::new();
    loop {
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, mut msg)) = held.pop_front() {
                msg.set_verdict(nfq::Verdict::Accept);
                queue.verdict(msg)?;
            }
        }
        match queue.recv() {
            Ok(mut msg) if held.len() >= MAX_HELD => {
                msg.set_verdict(nfq::Verdict::Accept);
                queue.verdict(msg)?;
            }
            Ok(msg) => held.push_back((Instant::now() + delay, msg)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let next = held.front().map_or(IDLE, |(due, _)| due.saturating_duration_since(now));
                std::thread::sleep(next.min(IDLE));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The median time of `tries` TCP connects to `to` (one round trip each), in milliseconds.
pub fn round_trip_ms(to: std::net::SocketAddr, tries: usize) -> Option<u64> {
    let mut times: Vec<u64> = (0..tries)
        .filter_map(|_| {
            let start = Instant::now();
            std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))
                .ok()
                .map(|_| u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX))
        })
        .collect();
    times.sort_unstable();
    times.get(times.len() / 2).copied()
}
